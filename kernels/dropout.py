"""Inverted dropout with a Philox mask regenerated from (seed, flat index), never stored."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton

from alexnet_triton.kernels import accumulator, interpreting


@triton.jit
def dropout_kernel(x_ptr, y_ptr, seed_ptr, numel, p, scale, ACC: tl.constexpr,
                   BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    seed = tl.load(seed_ptr)
    # A GPU launch passes Python floats as float32 and the interpreter as float64: round
    # here so that both (and the reference) keep and scale alike.
    p = tl.cast(p, tl.float32)
    scale = tl.cast(scale, tl.float32)
    # The same rule as the FC epilogue in linear.py: keep where U(0, 1) >= p.
    keep = tl.rand(seed, offsets) >= p
    x = tl.load(x_ptr + offsets, mask=in_bounds, other=0.0)
    y = tl.where(keep, x.to(ACC) * scale, 0.0)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=in_bounds)


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    """Zero each element with probability p, scale survivors by 1/(1-p); seed is int64 [1].

    p and the scale reach the kernel as float32 scalars; the reference rounds them the same way.
    """
    if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != input.device:
        raise ValueError("dropout: seed must be a one-element int64 tensor on the input's device")
    if input.numel() >= 2**31:
        raise ValueError(f"dropout: {input.numel()} elements exceed the int32 Philox offsets")
    x = input.contiguous()
    y = torch.empty_like(x)
    numel = x.numel()
    block = 4096 if interpreting() else 1024
    grid = (triton.cdiv(numel, block),)
    wrap_triton(dropout_kernel)[grid](x, y, seed, numel, float(p), 1.0 / (1.0 - p),
                                        ACC=accumulator(x.dtype), BLOCK=block)
    return y
