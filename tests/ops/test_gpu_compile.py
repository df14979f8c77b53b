"""Every kernel the launchers launch compiles for NVIDIA GPUs since Ampere, on this machine or any.

The interpreter hides GPU compile errors (constexpr reassignment, tl.dot tiles < 16,
shared-memory overflow, dtype errors in tl.math, PTX instructions a target lacks, ...).
Here subprocesses with TRITON_INTERPRET unset call the real launchers on AlexNet's shapes
with a stand-in driver that plays a GPU of one target, compiles for it and launches nothing
(see gpu_compile.py). For each launch: no config may fail for any reason other than
out-of-resources (on a GPU the autotuner would abort on it), and at least one config must
compile and fit (the launch succeeds).

What compiles (gpu_compile.plan), by default (CI): sm_90a (H100) in the quick scope
(float32, bfloat16, float64; one layer per kernel code path; each autotuner's first and last
configs) and sm_80 (A100) in the arch scope (bf16 and tf32, the GEMM launches of conv2 and
fc6: the code that depends on the target). Opt in to more with
ALEXNET_GPU_TARGETS=sm_80,sm_86,sm_89,sm_90a,sm_100a,sm_120a (or =all; default
sm_90a,sm_80) and ALEXNET_GPU_COMPILE=quick|arch|precisions|full (a scope for every target;
precisions: arch's launches in bf16, ieee float32 and tf32; full: six variants, every
layer, every config); setting either replaces the default plan. Compiled
kernels stay in Triton's on-disk cache, so a rerun only compiles the kernels that changed.
`pytest -s tests/ops/test_gpu_compile.py` prints the table of matrix instructions and
shared memory of each target.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpu_compile
from bench.static.sm90_driver import missing_toolchain  # gpu_compile put the repository on sys.path

PLAN = gpu_compile.plan(os.environ.get("ALEXNET_GPU_TARGETS"),
                        os.environ.get("ALEXNET_GPU_COMPILE"))
JOBS = [(target, scope, variant) for target, scope in PLAN
        for variant in gpu_compile.SCOPES[scope][0]]
TIMEOUT_S = {"quick": 900, "arch": 900, "precisions": 900, "full": 7200}  # per process

pytestmark = pytest.mark.skipif(missing_toolchain() is not None,
                                reason=str(missing_toolchain()))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """{(target, variant): report}: one compiling subprocess per target and variant, as many
    at once as there are cores (at least two)."""
    out = tmp_path_factory.mktemp("gpu_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).with_name("gpu_compile.py")
    pending, running, results = list(JOBS), [], {}

    def finish(job, process, log, started):
        target, scope, variant = job
        try:
            process.wait(timeout=max(1.0, TIMEOUT_S[scope] - (time.monotonic() - started)))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        path = out / f"{target}-{variant}.json"
        if process.returncode == 0 and path.exists():
            results[target, variant] = json.loads(path.read_text())
        else:
            tail = (out / f"{target}-{variant}.log").read_text()[-3000:]
            results[target, variant] = RuntimeError(
                f"compiling {variant} for {target} exited with {process.returncode}:\n{tail}")

    while pending or running:
        if pending and len(running) < max(2, os.cpu_count() or 1):
            target, scope, variant = job = pending.pop(0)
            log = open(out / f"{target}-{variant}.log", "w")
            running.append((job, subprocess.Popen(
                [sys.executable, str(script), variant, scope, target,
                 str(out / f"{target}-{variant}.json")],
                env=env, stdout=log, stderr=subprocess.STDOUT), log, time.monotonic()))
        else:
            finish(*running.pop(0))
    return results


def _describe(attempt):
    config = ", ".join(f"{k}={v}" for k, v in attempt["config"].items())
    return f"{attempt['kernel']}[{config}]: {attempt.get('error')}"


def _report(reports, target, variant):
    report = reports[target, variant]
    if isinstance(report, Exception):
        raise report
    return report


@pytest.mark.parametrize("target,variant,launch", [
    pytest.param(target, variant, launch, id=f"{target}-{variant}-{launch}")
    for target, scope, variant in JOBS for launch in gpu_compile.launch_names(scope)])
def test_compiles(reports, target, variant, launch):
    entry = _report(reports, target, variant)["launches"][launch]
    errors = [_describe(a) for a in entry["attempts"] if a["outcome"] == "error"]
    assert not errors, f"{launch} ({variant}) fails to compile for {target}:\n" + "\n".join(errors)
    assert entry["error"] is None, (
        f"{launch} ({variant}) failed for {target} (no config fits): {entry['error']}")
    assert entry["attempts"], f"{launch} ({variant}) launched no kernel"
    assert all(a["outcome"] in ("ok", "out of resources") for a in entry["attempts"])
    too_big = [_describe(a) for a in entry["attempts"] if a["outcome"] == "out of resources"]
    if too_big:  # reported, not a failure: the autotuner skips these configs on a GPU
        print(f"\n{launch} ({variant}): configs over {target}'s shared memory:\n  "
              + "\n  ".join(too_big))


# The arch and precisions scopes leave out the kernels that choose nothing by target.
@pytest.mark.parametrize("target,variant", [
    pytest.param(target, variant, id=f"{target}-{variant}")
    for target, scope, variant in JOBS if scope in gpu_compile.COMPLETE_SCOPES])
def test_every_kernel_is_launched(reports, target, variant):
    """A kernel added to kernels/*.py needs a launch in gpu_compile.launches."""
    report = _report(reports, target, variant)
    launched = {a["kernel"] for entry in report["launches"].values() for a in entry["attempts"]}
    missing = sorted(set(report["kernels"]) - launched)
    assert not missing, f"kernels never launched by tests/ops/gpu_compile.py ({target}): {missing}"


def test_print_table(reports):
    """Per target, the first config of each kernel: its matrix instruction and shared memory."""
    for target, _ in PLAN:
        done = {variant: report["launches"] for (t, variant), report in reports.items()
                if t == target and not isinstance(report, Exception)}
        print(f"\n{target}:\n" + gpu_compile.first_config_table(done))
        seconds = {v: round(sum(e["seconds"] for e in r.values())) for v, r in done.items()}
        print(f"compile seconds per variant ({target}): {seconds}")
