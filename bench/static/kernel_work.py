"""What one launch of each kernel of kernels/*.py does at its arguments: useful FLOPs and the
trip count of its main loop, from the runtime scalars and config the launch was given.

FLOPs are the convolution's or GEMM's own (2 per multiply-add, padding and masked taps not
counted), so the floor is what any implementation would need. The trip count is the
k-steps one program runs (the mean over programs where they differ), which is how many
times its compiled main loop runs when one SASS iteration is one k-step (python -m bench.static
corrects for an unrolled loop). These mirror the kernels' own loop bounds: a kernel whose
loop changes needs its entry here changed with it (tests/bench/test_sass.py runs every one).
"""
from __future__ import annotations

import math


def _conv_forward(a: dict) -> tuple[float, float]:
    # Every group: M x K_GROUP x (C_GROUP R S); the loop walks TAPS_H x TAPS_W taps of C_TAP
    # channels (conv1's copied image: 3 x 3 taps of 4 x 4 pixels' channels, or R taps of a
    # row of S pixels' channels: kernels.conv2d_relu.input_layout), or blocks of all the
    # taps' channels laid flat (FLAT_TAPS).
    flops = 2 * a["M"] * a["K"] * a["C_GROUP"] * a["R"] * a["S"]
    taps = a["TAPS_H"] * a["TAPS_W"]
    if a.get("FLAT_TAPS"):
        return flops, math.ceil(taps * a["C_TAP"] / a["BLOCK_K"])
    return flops, taps * math.ceil(a["C_TAP"] / a["BLOCK_K"])


def _conv_backward_input(a: dict) -> tuple[float, float]:
    sh, sw, ph, pw = a["stride_h"], a["stride_w"], a["pad_h"], a["pad_w"]
    flops = 2 * a["N"] * a["P"] * a["Q"] * a["K"] * a["C_GROUP"] * a["R"] * a["S"]
    # Each phase's programs reduce over K_GROUP x its taps (the kernel's taps_h, taps_w);
    # every phase launches as many programs, so the mean over phases is the mean trip.
    trips = []
    for phase_h in range(sh):
        for phase_w in range(sw):
            taps_h = (a["R"] - (phase_h + ph) % sh + sh - 1) // sh
            taps_w = (a["S"] - (phase_w + pw) % sw + sw - 1) // sw
            trips.append(math.ceil(a["K_GROUP"] * taps_h * taps_w / a["BLOCK_K"]))
    return flops, sum(trips) / len(trips)


def _conv_backward_weight(a: dict) -> tuple[float, float]:
    npq, chunk = a["NPQ"], a["CHUNK"]
    flops = 2 * npq * a["K"] * a["C_GROUP"] * a["R"] * a["S"]
    splits = math.ceil(npq / chunk)
    trips = [math.ceil(min(chunk, npq - s * chunk) / a["BLOCK_K"]) for s in range(splits)]
    return flops, sum(trips) / len(trips)


def _linear(a: dict) -> tuple[float, float]:
    # Split-K: program (i, j, s) runs the k-steps of [s * K_CHUNK, min((s + 1) * K_CHUNK, K)).
    k, chunk = a["K"], a["K_CHUNK"]
    splits = max(1, math.ceil(k / chunk))
    trips = [math.ceil(min(chunk, k - s * chunk) / a["BLOCK_K"]) for s in range(splits)]
    return 2 * a["M"] * a["N"] * k, sum(trips) / len(trips)


def _linear_epilogue(a: dict) -> tuple[float, float]:
    return 0, a["SPLIT"]


def _linear_masked_grad(a: dict) -> tuple[float, float]:
    return 0, math.ceil(a["M"] / a["BLOCK_ROWS"])


def _split_sum(a: dict) -> tuple[float, float]:
    return 0, a["SPLIT"]


WORK = {
    "conv2d_relu_forward_kernel": _conv_forward,
    "conv2d_relu_backward_input_kernel": _conv_backward_input,
    "conv2d_relu_backward_weight_kernel": _conv_backward_weight,
    "linear_kernel": _linear,
    "linear_epilogue_kernel": _linear_epilogue,
    "linear_masked_grad_kernel": _linear_masked_grad,
    "split_sum_kernel": _split_sum,
}


def work(kernel: str, scalars: dict, config: dict,
         options: dict | None = None) -> tuple[float, float | None]:
    """(FLOPs, main-loop trips per program) at a launch's runtime scalars, int constexprs
    (config) and string and bool constexprs (options); (0, None) for a kernel without a
    runtime loop (the element-wise and window kernels unroll theirs: tl.static_range)."""
    if kernel not in WORK:
        return 0, None
    return WORK[kernel]({**scalars, **(options or {}), **config})


def gemm_programs(kernel: str, scalars: dict, config: dict, grid: list[int]) -> int:
    """How many of a launch's programs run its GEMM loop: all of them, but for conv's
    weight gradient, whose first ceil(K_GROUP / BLOCK_M) programs of each grid row sum the
    bias gradient instead (a loop without MMAs)."""
    programs = math.prod(grid)
    if kernel == "conv2d_relu_backward_weight_kernel":
        a = {**scalars, **config}
        return programs - math.ceil(a["K_GROUP"] / a["BLOCK_M"]) * math.prod(grid[1:])
    return programs
