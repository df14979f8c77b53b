"""Inverted dropout with a Philox mask regenerated from (seed, flat index), never stored."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulator, interpreting, launchable


@triton.jit
def dropout_keep(seed, offsets, p):
    """Whether the elements at these flat offsets survive: U(0, 1) >= p, Philox on (seed, offset).

    A GPU launch passes a Python float as float32 and the interpreter as float64; p is
    rounded to float32 here so that both, and the reference, draw the same mask.
    """
    return tl.rand(seed, offsets) >= tl.cast(p, tl.float32)


@triton.jit
def dropout_scale(p, ACC: tl.constexpr):
    """1 / (1 - p) in the accumulation dtype, correctly rounded, from the float32 p."""
    one = tl.full((), 1.0, ACC)
    one_minus_p = one - tl.cast(tl.cast(p, tl.float32), ACC)
    if ACC == tl.float64:
        scale = one / one_minus_p
    else:
        # A plain float32 division may be approximate on a GPU; the reference rounds exactly.
        scale = tl.math.div_rn(one, one_minus_p)
    return scale


@triton.jit
def dropout_kernel(x_ptr, y_ptr, seed_ptr, numel, p, ACC: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    keep = dropout_keep(tl.load(seed_ptr), offsets, p)
    x = tl.load(x_ptr + offsets, mask=in_bounds, other=0.0)
    y = tl.where(keep, x.to(ACC) * dropout_scale(p, ACC), 0.0)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=in_bounds)


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    """Zero each element with probability p, scale survivors by 1/(1-p); seed is int64 [1]."""
    if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != input.device:
        raise ValueError("dropout: seed must be a one-element int64 tensor on the input's device")
    if input.numel() >= 2**31:
        raise ValueError(f"dropout: {input.numel()} elements exceed the int32 Philox offsets")
    x = input.contiguous()
    y = torch.empty_like(x)
    numel = x.numel()
    block = 4096 if interpreting() else 1024
    grid = (triton.cdiv(numel, block),)
    launchable(dropout_kernel)[grid](x, y, seed, numel, float(p), ACC=accumulator(x.dtype),
                                        BLOCK=block)
    return y
