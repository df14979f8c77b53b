"""The static report: every kernel of a training step compiled for sm_90a and read from its SASS.

    python -m bench.static            # the configs the launchers use (240 CPU-s cold, ~30 s warm)
    python -m bench.static --full     # and every autotune candidate (~220 s mostly warm)
    python -m bench.static --launches conv2.forward fc6.forward --out /tmp/sass
                                    # some launches only, with their budgets printed
    python -m bench.static --device-model h100-pcie h200 --out /tmp/sass
                                    # predicted for other Hopper GPUs (bench/devices.py)

No GPU needed. Each launcher of kernels/*.py is called at AlexNet's batch-128 shapes, in
bf16, in fp32 (PyTorch's defaults: tf32 convolutions, ieee linear) and in tf32 (fp32
tensors, tf32 linear too), under the stand-in H100 driver of bench/static/sm90_driver.py; the
cubins Triton compiles are read with the CUDA tools in Triton's wheel (registers, spills,
shared memory, the SASS's main loop) and bench/static/h100_model.py turns them into a predicted
time per kernel and per training step, beside the physical floor, for an H100 SXM and an H200
side by side (the same SASS; their SMs, clocks, peaks and bandwidth from bench/devices.py).
Writes OUT/static-sm90.json and OUT/static-sm90.md (OUT = bench/results). A PREDICTION from
compiled code, not a measurement.

Compiles run in at most --jobs processes at once (each kernel costs 1-2 CPU-seconds; Triton's
on-disk cache, and cubin_tools' cache of what cuobjdump and nvdisasm print, make a rerun of
unchanged kernels fast).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import devices
from bench.static import h100_model, sass_budgets, sass_predict, sass_table
from bench.static.alexnet_launches import launch_names
from bench.static.sass_compile import BATCH, VARIANTS

RESULTS = Path(__file__).resolve().parents[1] / "results"
SCOPES = {"quick": "first_fit", "full": "all"}  # scope: which autotuner configs compile


def _jobs(scope: str, chunks: int, names: list[str]) -> list[tuple[str, list[str]]]:
    """(variant, launches) per compiling process: each variant's launches dealt round-robin
    into chunks, so the costly convolutions spread over the processes."""
    return [(variant, names[i::chunks]) for variant in VARIANTS for i in range(chunks)
            if names[i::chunks]]


def compile_all(scope: str, jobs: int, work_dir: str, sass_dir: str | None = None,
                names: list[str] | None = None) -> dict:
    """{variant: [worker outputs]}: at most `jobs` compiling processes at a time."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if sass_dir:
        env["BENCH_SASS_DIR"] = sass_dir
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    names = launch_names() if names is None else names
    pending = list(enumerate(_jobs(scope, 2 if scope == "quick" else 4, names)))
    running, outputs = [], {variant: [] for variant in VARIANTS}
    while pending or running:
        while pending and len(running) < jobs:
            index, (variant, names) = pending.pop(0)
            out = os.path.join(work_dir, f"{index}.json")
            log = open(os.path.join(work_dir, f"{index}.log"), "w")
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.static.sass_compile", variant, SCOPES[scope], out,
                 *names],
                env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
            running.append((process, log, variant, out))
        time.sleep(0.2)
        for item in [r for r in running if r[0].poll() is not None]:
            process, log, variant, out = item
            running.remove(item)
            log.close()
            if process.returncode != 0:
                tail = Path(log.name).read_text()[-3000:]
                for other, *_ in running:
                    other.kill()
                raise RuntimeError(f"compiling {variant} exited with {process.returncode}:\n{tail}")
            outputs[variant].append(json.loads(Path(out).read_text()))
    return outputs


def build_report(scope: str, outputs: dict, seconds: float,
                 models: tuple = tuple(h100_model.MODELS.values())) -> dict:
    from importlib.metadata import version

    kernels, failures = [], []
    for variant, parts in outputs.items():
        for part in parts:
            found, failed = sass_predict.rows(variant, part, models)
            kernels += found
            failures += failed
    order = {name: i for i, name in enumerate(launch_names())}
    kernels.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), order[r["launch"]],
                                not r["chosen"]))
    return {
        "what": "PREDICTION from compiled code (sm_90a SASS), not a measurement",
        "scope": scope, "batch": BATCH, "target": "cuda sm_90a (H100/H200 model)",
        # the prediction's devices, the first one the rows' main columns (predicted_us, ...)
        "device": models[0].key,
        "devices": {model.key: model.figures() for model in models},
        "triton": version("triton"), "torch": version("torch"),
        "variants": {v: {"dtype": d, "matmul_allow_tf32": m, "cudnn_allow_tf32": c}
                     for v, (d, m, c) in VARIANTS.items()},
        "chosen_config": sass_predict.CHOSEN_CONFIG,
        "compile_seconds": round(seconds, 1),
        # Per launch: the seconds its compiling process spent in it (cached kernels: ~0).
        "launch_seconds": {variant: {name: entry["seconds"] for part in parts
                                     for name, entry in part["launches"].items()}
                           for variant, parts in outputs.items()},
        "step": sass_predict.step_totals([r for r in kernels if r["chosen"]]),
        "step_by_device": {m.key: sass_predict.step_totals([r for r in kernels if r["chosen"]],
                                                           m.key) for m in models},
        "kernels": kernels, "failures": failures,
    }


def dumps(report: dict) -> str:
    """JSON with one line per kernel row: readable in a diff, a third of indent=1's size."""
    head = {k: v for k, v in report.items() if k not in ("kernels", "failures")}
    text = json.dumps(head, indent=1)[:-2]
    for key in ("kernels", "failures"):
        rows = ",\n".join("  " + json.dumps(row) for row in report[key])
        text += f',\n "{key}": [\n{rows}\n ]'
    return text + "\n}\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m bench.static", description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="every autotune candidate too")
    parser.add_argument("--jobs", type=int, default=2, help="compiling processes at once")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the report")
    parser.add_argument("--sass-dir", help="also keep each kernel's SASS text here")
    parser.add_argument("--launches", nargs="+", metavar="LAUNCH", choices=launch_names(),
                        help="only these launches (e.g. conv2.forward), their budgets "
                             "printed; needs --out, since the report is partial")
    parser.add_argument("--device-model", nargs="+", metavar="KEY",
                        default=list(h100_model.STATIC_DEVICES),
                        help="the Hopper GPUs of bench/devices.py to predict for, the first "
                             "in the main columns (default: %(default)s; also h100-pcie)")
    args = parser.parse_args(argv)
    try:
        models = tuple(h100_model.Model.of(devices.lookup(key)) for key in args.device_model)
    except devices.UnknownDevice as error:
        parser.error(str(error))
    if args.launches and args.out == RESULTS:
        parser.error("--launches writes a partial report: give --out elsewhere than "
                     f"{RESULTS}")
    scope = "full" if args.full else "quick"
    if args.sass_dir:
        os.makedirs(args.sass_dir, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        outputs = compile_all(scope, args.jobs, work_dir, args.sass_dir, args.launches)
    report = build_report(scope, outputs, time.perf_counter() - start, models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "static-sm90.json").write_text(dumps(report))
    (args.out / "static-sm90.md").write_text(sass_table.markdown(report))
    for key, steps in report["step_by_device"].items():
        for variant, t in steps.items():
            print(f"{report['devices'][key]['short']} {variant}: predicted step "
                  f"{t['predicted_ms']:.2f} ms, floor {t['floor_ms']:.2f} ms")
    if args.launches:
        for (variant, launch, budget), (met, measured) in sass_budgets.evaluate(report).items():
            print(f"{variant} {launch} {budget}: {'met' if met else 'MISSED'} ({measured})")
    print(f"wrote {args.out / 'static-sm90.json'} and .md in {report['compile_seconds']} s")
    return report


if __name__ == "__main__":
    main()
