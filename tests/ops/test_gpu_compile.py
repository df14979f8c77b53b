"""Every kernel the launchers launch compiles for an H100 (sm_90), on this machine or any.

The interpreter hides GPU compile errors (constexpr reassignment, tl.dot tiles < 16,
shared-memory overflow, dtype errors in tl.math, ...). Here subprocesses with
TRITON_INTERPRET unset call the real launchers on AlexNet's shapes with a stand-in
driver that compiles for sm_90 and launches nothing (see gpu_compile.py). For each launch:
no config may fail for any reason other than out-of-resources (on a GPU the autotuner
would abort on it), and at least one config must compile and fit (the launch succeeds).

Scope: ALEXNET_GPU_COMPILE=quick (the default: float32, bfloat16, float64; one layer per
kernel code path; each autotuner's first and last configs) or =full (six variants, every
layer, every config). Compiled kernels stay in Triton's on-disk cache, so a rerun only
compiles the kernels that changed. `pytest -s tests/ops/test_gpu_compile.py` prints the table
of matrix instructions and shared memory.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gpu_compile
from bench.static.sm90_driver import missing_toolchain  # gpu_compile put the repository on sys.path

SCOPE = os.environ.get("ALEXNET_GPU_COMPILE", "quick")
if SCOPE not in gpu_compile.SCOPES:
    raise ValueError(f"ALEXNET_GPU_COMPILE={SCOPE!r}: expected one of {list(gpu_compile.SCOPES)}")
VARIANTS = gpu_compile.SCOPES[SCOPE][0]
TIMEOUT_S = 900 if SCOPE == "quick" else 7200

pytestmark = pytest.mark.skipif(missing_toolchain() is not None,
                                reason=str(missing_toolchain()))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """{variant: report}: one compiling subprocess per variant, all at once."""
    out = tmp_path_factory.mktemp("gpu_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gpu_compile.py")
    processes = {}
    for variant in VARIANTS:
        log = open(out / f"{variant}.log", "w")
        processes[variant] = (subprocess.Popen(
            [sys.executable, str(script), variant, SCOPE, str(out / f"{variant}.json")],
            env=env, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for variant, (process, log) in processes.items():
        try:
            process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        path = out / f"{variant}.json"
        if process.returncode == 0 and path.exists():
            results[variant] = json.loads(path.read_text())
        else:
            tail = (out / f"{variant}.log").read_text()[-3000:]
            results[variant] = RuntimeError(
                f"compiling {variant} exited with {process.returncode}:\n{tail}")
    return results


def _describe(attempt):
    config = ", ".join(f"{k}={v}" for k, v in attempt["config"].items())
    return f"{attempt['kernel']}[{config}]: {attempt.get('error')}"


@pytest.mark.parametrize("launch", gpu_compile.launch_names(SCOPE))
@pytest.mark.parametrize("variant", VARIANTS)
def test_compiles_for_sm90(reports, variant, launch):
    report = reports[variant]
    if isinstance(report, Exception):
        raise report
    entry = report["launches"][launch]
    errors = [_describe(a) for a in entry["attempts"] if a["outcome"] == "error"]
    assert not errors, f"{launch} ({variant}) fails to compile for sm_90:\n" + "\n".join(errors)
    assert entry["error"] is None, f"{launch} ({variant}) failed (no config fits): {entry['error']}"
    assert entry["attempts"], f"{launch} ({variant}) launched no kernel"
    assert all(a["outcome"] in ("ok", "out of resources") for a in entry["attempts"])
    too_big = [_describe(a) for a in entry["attempts"] if a["outcome"] == "out of resources"]
    if too_big:  # reported, not a failure: the autotuner skips these configs on a GPU
        print(f"\n{launch} ({variant}): configs over the H100's shared memory:\n  "
              + "\n  ".join(too_big))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_kernel_is_launched(reports, variant):
    """A kernel added to kernels/*.py needs a launch in gpu_compile.launches."""
    report = reports[variant]
    if isinstance(report, Exception):
        raise report
    launched = {a["kernel"] for entry in report["launches"].values() for a in entry["attempts"]}
    missing = sorted(set(report["kernels"]) - launched)
    assert not missing, f"kernels never launched by tests/ops/gpu_compile.py ({SCOPE}): {missing}"


def test_print_table(reports):
    """The first config of each kernel: its matrix instruction and shared memory."""
    done = {v: r["launches"] for v, r in reports.items() if not isinstance(r, Exception)}
    print("\n" + gpu_compile.first_config_table(done))
    seconds = {v: round(sum(e["seconds"] for e in r.values())) for v, r in done.items()}
    print(f"compile seconds per variant ({SCOPE}): {seconds}")
