"""Max pooling (no padding, floor mode) with an int8 argmax and an atomic-free backward."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulator, interpreting, launchable


@triton.jit
def max_pool2d_forward_kernel(x_ptr, y_ptr, argmax_ptr, numel, H, W, OH, OW,
                              KH: tl.constexpr, KW: tl.constexpr,
                              SH: tl.constexpr, SW: tl.constexpr, BLOCK: tl.constexpr):
    # One lane per output element of the flattened [N * C, OH, OW] grid.
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    ow = offsets % OW
    oh = (offsets // OW) % OH
    plane = offsets // (OW * OH)
    window = x_ptr + plane * H * W + (oh * SH) * W + ow * SW
    # Compared in the input's own dtype: a max needs no rounding.
    best = tl.full((BLOCK,), float("-inf"), y_ptr.dtype.element_ty)
    best_at = tl.zeros((BLOCK,), tl.int32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            value = tl.load(window + kh * W + kw, mask=in_bounds, other=float("-inf"))
            # Strictly greater keeps the first maximum in row-major order on ties, and a
            # NaN wins, as in PyTorch.
            take = (value > best) | (value != value)
            best = tl.where(take, value, best)
            best_at = tl.where(take, kh * KW + kw, best_at)
    tl.store(y_ptr + offsets, best.to(y_ptr.dtype.element_ty), mask=in_bounds)
    tl.store(argmax_ptr + offsets, best_at.to(tl.int8), mask=in_bounds)


@triton.jit
def max_pool2d_backward_kernel(grad_y_ptr, argmax_ptr, grad_x_ptr, numel, H, W, OH, OW,
                               KH: tl.constexpr, KW: tl.constexpr,
                               SH: tl.constexpr, SW: tl.constexpr, ACC: tl.constexpr,
                               BLOCK: tl.constexpr):
    # One lane per input element: it gathers from the (at most ceil(K/S) per axis) windows
    # that contain it, so no two lanes write the same place and no atomics are needed.
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    w = offsets % W
    h = (offsets // W) % H
    plane = offsets // (W * H)
    grad = tl.zeros((BLOCK,), ACC)
    for i in tl.static_range((KH + SH - 1) // SH):
        oh = h // SH - i
        kh = h - oh * SH
        row_ok = (oh >= 0) & (oh < OH) & (kh < KH)
        for j in tl.static_range((KW + SW - 1) // SW):
            ow = w // SW - j
            kw = w - ow * SW
            ok = in_bounds & row_ok & (ow >= 0) & (ow < OW) & (kw < KW)
            at = plane * OH * OW + oh * OW + ow
            winner = tl.load(argmax_ptr + at, mask=ok, other=-1).to(tl.int32)
            routed = ok & (winner == kh * KW + kw)
            grad += tl.load(grad_y_ptr + at, mask=routed, other=0.0).to(ACC)
    tl.store(grad_x_ptr + offsets, grad.to(grad_x_ptr.dtype.element_ty), mask=in_bounds)


def _block() -> int:
    return 4096 if interpreting() else 1024


def max_pool2d_forward(input: Tensor, kernel_size: list[int], stride: list[int]) -> tuple[Tensor, Tensor]:
    """input [N, C, H, W] -> (output [N, C, OH, OW], argmax int8 [N, C, OH, OW]).

    argmax is the winner's position inside its window, kh * KW + kw.
    """
    (kh, kw), (sh, sw) = kernel_size, stride
    if kh * kw > 127:
        raise ValueError(f"max_pool2d: a {kh}x{kw} window does not fit an int8 argmax")
    x = input.contiguous()
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: a {kh}x{kw} window is larger than the {h}x{w} input")
    output = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype)
    argmax = torch.empty((n, c, oh, ow), device=x.device, dtype=torch.int8)
    numel = output.numel()
    block = _block()
    launchable(max_pool2d_forward_kernel)[(triton.cdiv(numel, block),)](
        x, output, argmax, numel, h, w, oh, ow, KH=kh, KW=kw, SH=sh, SW=sw, BLOCK=block)
    return output, argmax


def max_pool2d_backward(grad_output: Tensor, argmax: Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int]) -> Tensor:
    """grad_output [N, C, OH, OW], argmax int8 -> grad_input [N, C, H, W]."""
    (kh, kw), (sh, sw) = kernel_size, stride
    if argmax.dtype != torch.int8 or argmax.shape != grad_output.shape:
        raise ValueError("max_pool2d_backward: argmax must be int8 with grad_output's shape")
    grad_y = grad_output.contiguous()
    n, c, h, w = input_size
    oh, ow = grad_y.shape[2:]
    grad_input = torch.empty((n, c, h, w), device=grad_y.device, dtype=grad_y.dtype)
    numel = grad_input.numel()
    block = _block()
    launchable(max_pool2d_backward_kernel)[(triton.cdiv(numel, block),)](
        grad_y, argmax.contiguous(), grad_input, numel, h, w, oh, ow,
        KH=kh, KW=kw, SH=sh, SW=sw, ACC=accumulator(grad_y.dtype), BLOCK=block)
    return grad_input
