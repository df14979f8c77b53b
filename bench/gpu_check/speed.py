"""Phase 7: the benchmarks of bench/, in pieces that each fit what is left of the window.

The pieces run in order of what matters most: the GPU's ceilings and the bf16 training
step (ours on one device, ours in two columns, eager cuDNN in its faster memory format,
torch.compile of it), the fp32 step, every op's forward+backward in bf16 (ours and eager),
bf16 inference, then torch.compile of each op. Each piece is one pytest run of the
existing harness (bench/suite/timing.py: medians of back-to-back rounds, rotated inputs) with
the check's bounded autotuning; its pytest-benchmark JSON is merged into OUTDIR/bench.json
as soon as it ends, and `python -m bench.suite.report` turns that into OUTDIR/bench.md. A piece
that would not finish before the phase's deadline is not started.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gpu_check import bootstrap
from bench.gpu_check.cli import autotune_cache, phase_main
from bench.gpu_check.record import FAIL, PASS, SKIP, TIMEOUT, PhaseRecord, write_json

BENCH_JSON, BENCH_MARKDOWN = "bench.json", "bench.md"
MIN_PIECE_S = 20  # a piece started with less than this left would only be cut off


def model_ids(task: str, precision: str, providers=None) -> list:
    from bench.suite import bench_model

    return [f"bench/suite/bench_model.py::test_model[{task}-{precision}-{provider}]"
            for provider in providers or bench_model.PROVIDERS]


def op_ids(dtype: str, mode: str, providers) -> list:
    from bench.suite import bench_ops

    return [f"bench/suite/bench_ops.py::test_op[{op.name}-{dtype}-{mode}-{provider}]"
            for op in bench_ops.OPS for provider in providers]


def loader_cases() -> list:
    from bench.suite import bench_data

    return [f"{name}-{decoder}" for name, decoder in bench_data.READINGS]


def pieces(dry_run: bool) -> list:
    """(name, pytest node ids) in the order they run."""
    if dry_run:  # what runs without a GPU: the harness on the CPU benchmarks
        return [("cpu", ["bench/suite/bench_model.py::test_train_step_cpu",
                         "bench/suite/bench_data.py::test_augment_cpu"])]
    # torch.compile's case has a piece of its own: its compile can outlast a short window,
    # and a piece cut off by its deadline writes no results.
    return [
        ("peaks+train-bf16", ["bench/suite/bench_peak.py::test_matmul_bf16",
                              "bench/suite/bench_peak.py::test_copy",
                              *model_ids("train", "bf16", ["triton", "triton-2col", "eager"])]),
        # Issue 19: the input pipeline, on the GPU and on its host's cores.
        ("data", [*(f"bench/suite/bench_data.py::test_train_step_feed[{kind}]"
                    for kind in ("synthetic", "gpu-decode", "cpu-decode")),
                  "bench/suite/bench_data.py::test_gpu_decode",
                  "bench/suite/bench_data.py::test_default_path_against_pillow_per_core",
                  "bench/suite/bench_data.py::test_pillow_decode_alone_per_core",
                  *(f"bench/suite/bench_data.py::test_loader_images_per_core[{case}]"
                    for case in loader_cases()),
                  "bench/suite/bench_data.py::test_loader_workers[threads]",
                  "bench/suite/bench_data.py::test_loader_workers[processes]"]),
        ("train-bf16-compile", model_ids("train", "bf16", ["compile"])),
        ("train-fp32", model_ids("train", "fp32", ["triton", "triton-2col", "eager"])),
        ("train-fp32-compile", model_ids("train", "fp32", ["compile"])),
        ("ops-bf16-fwd+bwd", op_ids("bf16", "fwd+bwd", ["triton", "eager"])),
        ("infer-bf16", model_ids("infer", "bf16")),
        ("ops-bf16-fwd", op_ids("bf16", "fwd", ["triton", "eager"])),
        ("ops-bf16-compile", op_ids("bf16", "fwd+bwd", ["compile"])),
        ("ops-fp32-fwd+bwd", op_ids("fp32", "fwd+bwd", ["triton", "eager"])),
    ]


def merge(target: Path, piece: Path) -> int:
    """Append a piece's benchmarks to the merged pytest-benchmark JSON; returns its count."""
    document = json.loads(piece.read_text())
    if target.exists():
        merged = json.loads(target.read_text())
        merged["benchmarks"] += document.get("benchmarks", [])
    else:
        merged = document
    write_json(target, merged)
    return len(document.get("benchmarks", []))


def run(record: PhaseRecord, args) -> None:
    import torch

    out = Path(args.out)
    if not args.dry_run and not torch.cuda.is_available():
        record.check("cuda", FAIL, reason="no CUDA device: run with --dry-run on a CPU")
        return
    deadline = args.deadline or time.time() + 3600
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-bench-"))
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(bootstrap.ROOT)}
    if not args.dry_run:
        env["ALEXNET_AUTOTUNE_CACHE"] = str(autotune_cache(out))
    for index, (name, ids) in enumerate(pieces(args.dry_run)):
        left = deadline - time.time()
        if left < MIN_PIECE_S:
            record.check(name, SKIP, reason=f"{left:.0f} s left in the phase", cases=len(ids))
            continue
        piece_json = scratch / f"piece{index}.json"
        command = [sys.executable, "-m", "pytest", *ids, "--benchmark-only", "-q",
                   "-p", "no:cacheprovider", f"--benchmark-json={piece_json}"]
        start = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=bootstrap.ROOT, env=env, timeout=left - 5)
        except subprocess.TimeoutExpired:
            record.check(name, TIMEOUT, seconds=round(time.perf_counter() - start),
                         cases=len(ids))
            continue
        seconds = round(time.perf_counter() - start, 1)
        count = merge(out / BENCH_JSON, piece_json) if piece_json.exists() else 0
        record.check(name, PASS if result.returncode == 0 and count else FAIL,
                     returncode=result.returncode, benchmarks=count, cases=len(ids),
                     seconds=seconds)
    if (out / BENCH_JSON).exists():
        subprocess.run([sys.executable, "-m", "bench.suite.report", str(out / BENCH_JSON),
                        "--output", str(out / BENCH_MARKDOWN)], cwd=bootstrap.ROOT, env=env,
                       stdout=subprocess.DEVNULL, timeout=60)


if __name__ == "__main__":
    phase_main("speed", run)
