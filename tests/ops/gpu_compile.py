"""Compile every Triton kernel that the launchers launch, for one NVIDIA target, with no GPU.

``python tests/ops/gpu_compile.py VARIANT SCOPE TARGET REPORT.json`` (TARGET: sm_80,
sm_86, sm_89, sm_90a, sm_100a or sm_120a: bench/static/sm90_driver.py's TARGETS) runs, with
TRITON_INTERPRET unset (Triton picks interpreter or compiler at import, so one variant and
one target per process), the REAL launchers of kernels/*.py on AlexNet-shaped CPU tensors
(bench/static/alexnet_launches.py): Triton specializes, compiles (to PTX, and with its
bundled ptxas to a cubin) and "launches" exactly what a GPU run would on that target, the
autotuner included. Nothing executes: bench/static/sm90_driver.py's ``CompileOnlyDriver``
stands in for Triton's active driver and plays a GPU of the target (its docstring says how).
Any failure is recorded (on a GPU a compile error, unlike OutOfResources, would abort the
autotuner).

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
from bench.static.sm90_driver import (DEFAULT_TARGET, TARGETS, Recorder, install,  # noqa: E402
                                      kernel_names)

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

# Four scopes. "full": every variant, every layer, every config the autotuner tries.
# "quick" (about 2 minutes on 2 cores with a cold Triton cache): three variants; one layer
# per kernel code path (conv1: the folded image, fold_pixels_kernel; conv2: groups 2; fc6:
# bias, ReLU and dropout forward, masked and scaled backward; fc8: neither); and of each autotuner's configs the first (largest tile:
# the shared-memory limit) and the last (the small fallback). "arch": of quick's, the
# launches whose code depends on the target's architecture (the GEMMs: their matrix
# instruction, TMA descriptors or plain loads, the packed bf16 ReLU mask, which tiles fit
# the shared memory) in the two variants where it does most (bf16; tf32 for conv and
# linear, whose operands are staged through registers), fc6 alone for the linear kernels
# (fc8 differs from it in flags that no target changes); float64's DMMA and ieee float32's
# FMA are the same code on every target, and the element-wise kernels (LRN, pooling,
# dropout, augmentation) choose nothing by target. "precisions": arch's launches in bf16,
# ieee float32 and tf32: what every target is checked in (ALEXNET_GPU_TARGETS=all
# ALEXNET_GPU_COMPILE=precisions; README: what runs where).
SCOPES = {
    "quick": (("float32", "bfloat16", "float64"),
              ("conv1", "conv2", "lrn1", "pool1", "fc6", "fc8", "dropout", "augment")),
    "arch": (("bfloat16", "float32-tf32"), ("conv2", "fc6")),
    "precisions": (("bfloat16", "float32-ieee", "float32-tf32"), ("conv2", "fc6")),
    "full": (tuple(VARIANTS), LAYERS),
}
# The scopes that launch every kernel of kernels/*.py (test_every_kernel_is_launched).
COMPLETE_SCOPES = ("quick", "full")
# which autotuner configs get compiled
PRUNE = {"quick": "first_last", "arch": "first_last", "precisions": "first_last", "full": "all"}


# What tests/ops/test_gpu_compile.py compiles unless told otherwise (CI): (target, scope).
# sm_90a, the GPU the kernels are tuned on, in the quick scope; sm_80, the oldest
# architecture the project supports, in the arch scope (quick for sm_80 costs 190
# CPU-seconds with a cold Triton cache, arch about 50).
DEFAULT_PLAN = (("sm_90a", "quick"), ("sm_80", "arch"))


def plan(targets: str | None = None, scope: str | None = None) -> list[tuple[str, str]]:
    """[(target, scope)] to compile: DEFAULT_PLAN when neither is given; else every target of
    ``targets`` (comma-separated names of TARGETS, or "all"; default sm_90a and sm_80) in
    ``scope`` (default "quick"). ValueError for an unknown name."""
    if not targets and not scope:
        return list(DEFAULT_PLAN)
    scope = scope or "quick"
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: expected one of {list(SCOPES)}")
    if targets == "all":
        names = list(TARGETS)
    else:
        names = [name.strip() for name in (targets or "sm_90a,sm_80").split(",")
                 if name.strip()]
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise ValueError(f"unknown targets {unknown or targets!r}: expected names of "
                         f"{list(TARGETS)}, comma-separated, or 'all'")
    return [(name, scope) for name in names]


# Launches beyond AlexNet's: kernels the launchers offer that the network's shapes never
# take, compiled wherever their layer is in scope. {launch name: layer}.
# pool1.backward_2s2: max_pool2d's general backward (every window but the paper's 3x3/2,
# which takes max_pool2d_backward_3s2_kernel), on pool1's maps with 2x2/2 windows.
# conv1.fold_input_3x3s1: the copy of a few-channel input that an unstrided conv reads
# (fold_pixels_kernel; conv1's stride 4 takes space_to_depth_kernel), conv1's image for a
# 3x3 kernel at stride 1.
BEYOND_ALEXNET = {"pool1.backward_2s2": "pool1", "conv1.fold_input_3x3s1": "conv1"}


def launch_names(scope: str = "full") -> list[str]:
    """The launches of a scope, in order (importable without torch or triton)."""
    layers = SCOPES[scope][1]
    return (alexnet_launches.launch_names(layers)
            + [name for name, layer in BEYOND_ALEXNET.items() if layer in layers])


def _beyond_alexnet(dtype) -> dict:
    """{launch name: a function that calls the launcher} for BEYOND_ALEXNET."""
    import torch
    from alexnet_triton.kernels import conv2d_relu, max_pool2d

    pool1 = alexnet_launches.POOLS["pool1"]
    n, c, h, w = pool1.input(BATCH)
    window = ([2, 2], [2, 2])
    out = (n, c, h // 2, w // 2)
    conv1 = alexnet_launches.CONVS["conv1"]
    image = torch.empty(conv1.input(BATCH), dtype=dtype)
    return {"pool1.backward_2s2": lambda: max_pool2d.max_pool2d_backward(
        torch.empty(out, dtype=dtype).to(memory_format=torch.channels_last),
        torch.empty(out, dtype=torch.int8).to(memory_format=torch.channels_last),
        [n, c, h, w], *window),
        "conv1.fold_input_3x3s1": lambda: conv2d_relu.conv2d_relu_fold_input(
            image, [conv1.out_channels, conv1.in_channels, 3, 3], [1, 1], [1, 1], 1)}


def launches(dtype, scope: str):
    """{launch name: a function that calls the launcher}, as launch_names(scope)."""
    calls = {**alexnet_launches.launches(dtype, SCOPES[scope][1], batch=BATCH),
             **_beyond_alexnet(dtype)}
    return {name: calls[name] for name in launch_names(scope)}


def run_variant(variant: str, scope: str, target: str = DEFAULT_TARGET) -> dict:
    """Compile every launch of one variant for one target: {"launches": {launch:
    {"attempts", "error", "seconds"}}, "kernels": kernel_names()}."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("gpu_compile needs TRITON_INTERPRET unset: it compiles for the GPU")
    import torch

    dtype, matmul_tf32, cudnn_tf32 = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    recorder = Recorder(PRUNE[scope])
    install(recorder, target)
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
    variant, scope, target, path = sys.argv[1:]
    with open(path, "w") as f:
        json.dump(run_variant(variant, scope, target), f, indent=1)
