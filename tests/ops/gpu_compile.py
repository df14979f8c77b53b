"""Compile every Triton kernel that the launchers launch, for an H100 (sm_90a), with no GPU.

``python tests/ops/gpu_compile.py VARIANT SCOPE REPORT.json`` runs, with TRITON_INTERPRET unset
(Triton picks interpreter or compiler at import, so one variant per process), the REAL
launchers of kernels/*.py on AlexNet-shaped CPU tensors (bench/static/alexnet_launches.py): Triton
specializes, compiles (to PTX, and with its bundled ptxas to a cubin) and "launches" exactly
what a GPU run would, the autotuner included. Nothing executes: bench/static/sm90_driver.py's
``CompileOnlyDriver`` stands in for Triton's active driver and plays an H100 (its docstring
says how). Any failure is recorded (on a GPU a compile error, unlike OutOfResources, would
abort the autotuner).

Compiled kernels land in Triton's on-disk cache (keyed by kernel source, specialization
and target), so only kernels that changed are compiled again.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

# Run as a script, this file's directory is on sys.path but the repository root is not.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.static import alexnet_launches  # noqa: E402
from bench.static.alexnet_launches import LAYERS  # noqa: E402
from bench.static.sm90_driver import Recorder, install, kernel_names  # noqa: E402

# A variant is a tensor dtype and the tf32 switches the launchers read
# (linear: torch.backends.cuda.matmul.allow_tf32; conv: torch.backends.cudnn.allow_tf32).
VARIANTS = {  # name: (dtype, matmul.allow_tf32, cudnn.allow_tf32)
    "float32": ("float32", False, True),  # PyTorch's defaults: ieee linear, tf32 conv
    "bfloat16": ("bfloat16", False, True),
    "float64": ("float64", False, True),
    "float32-ieee": ("float32", False, False),
    "float32-tf32": ("float32", True, True),
    "float16": ("float16", False, True),
}

BATCH = 2  # only divisibility specializes (by 16, and == 1)

# Two scopes. "full": every variant, every layer, every config the autotuner tries.
# "quick" (the default, about 2 minutes on 2 cores with a cold Triton cache): three
# variants; one layer per kernel code path (conv2: groups 2; fc6: bias, ReLU and dropout
# forward, masked and scaled backward; fc8: neither); and of each autotuner's configs the
# first (largest tile: the shared-memory limit) and the last (the small fallback).
SCOPES = {
    "quick": (("float32", "bfloat16", "float64"),
              ("conv2", "lrn1", "pool1", "fc6", "fc8", "dropout", "augment")),
    "full": (tuple(VARIANTS), LAYERS),
}
PRUNE = {"quick": "first_last", "full": "all"}  # which autotuner configs get compiled


def launch_names(scope: str = "full") -> list[str]:
    """The launches of a scope, in order (importable without torch or triton)."""
    return alexnet_launches.launch_names(SCOPES[scope][1])


def launches(dtype, scope: str):
    """{launch name: a function that calls the launcher}, as launch_names(scope)."""
    return alexnet_launches.launches(dtype, SCOPES[scope][1], batch=BATCH)


def run_variant(variant: str, scope: str) -> dict:
    """Compile every launch of one variant: {"launches": {launch: {"attempts", "error",
    "seconds"}}, "kernels": kernel_names()}."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("gpu_compile needs TRITON_INTERPRET unset: it compiles for the GPU")
    import torch

    dtype, matmul_tf32, cudnn_tf32 = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    recorder = Recorder(PRUNE[scope])
    install(recorder)
    report = {}
    for name, call in launches(getattr(torch, dtype), scope).items():
        recorder.attempts = []
        error = None
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # the launch failed: its last (or only) config did
            recorder.fail(exc)
            error = "".join(traceback.format_exception_only(exc)).strip()
        report[name] = {"attempts": recorder.attempts, "error": error,
                        "seconds": round(time.perf_counter() - start, 1)}
    return {"launches": report, "kernels": kernel_names()}


def first_config_table(reports: dict) -> str:
    """Markdown: per launch, kernel and variant, the matrix instruction of the first config
    that fits, and the shared memory of the first config (marked "over" if it does not)."""
    rows = {}
    for variant, report in reports.items():
        for launch, entry in report.items():
            by_kernel = {}
            for attempt in entry["attempts"]:
                by_kernel.setdefault(attempt["kernel"], []).append(attempt)
            for kernel, attempts in by_kernel.items():
                first = attempts[0]
                fits = next((a for a in attempts if a["outcome"] == "ok"), None)
                shared = "?" if first.get("shared") is None else round(first["shared"] / 1024)
                over = " over" if first["outcome"] == "out of resources" else ""
                rows.setdefault((launch, kernel), {})[variant] = (
                    f"{fits['mma'] if fits else first['outcome']}; {shared} KiB{over}")
    variants = list(reports)
    lines = ["| launch | kernel | " + " | ".join(variants) + " |",
             "|---" * (len(variants) + 2) + "|"]
    for (launch, kernel), cells in rows.items():
        lines.append(f"| {launch} | {kernel} | "
                     + " | ".join(cells.get(v, "") for v in variants) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    variant, scope, path = sys.argv[1:]
    with open(path, "w") as f:
        json.dump(run_variant(variant, scope), f, indent=1)
