"""PyTorch reference of kernels/dropout.py, bit for bit.

It reimplements the Philox4x32-10 stream behind Triton's ``tl.rand(seed, offset)``, so a
CPU run without the interpreter draws exactly the masks the Triton kernels draw.
"""
from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
# Triton's uint_to_uniform_float: the largest scale with (2**31 - 1) * scale < 1 in float32.
_UNIFORM_SCALE = 4.6566127342e-10


def _mulhilo(a: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """High and low 32 bits of a * x for a 32-bit constant a and uint32 values x in int64.

    The 64-bit product can pass int64's range; the multiply wraps modulo 2**64 as the
    hardware does, which leaves both 32-bit halves intact (the kernel tests compare every
    bit with tl.rand). One multiply instead of four half-width ones: this runs on every
    dropout of a CPU training step.
    """
    product = x * a
    return (product >> 32) & _MASK32, product & _MASK32


def philox_uniform(seed: int | Tensor, offsets: Tensor) -> Tensor:
    """``tl.rand(seed, offsets)`` for int32 offsets: float32 uniforms in [0, 1).

    seed may be a one-element int64 tensor: it is never read back to the host, so the
    reference traces under torch.compile like the kernels.
    """
    c0 = offsets.to(torch.int64) & _MASK32
    c1 = torch.zeros_like(c0)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        hi_b, lo_b = _mulhilo(_ROUND_B, c2)
        hi_a, lo_a = _mulhilo(_ROUND_A, c0)
        hi_b ^= c1
        hi_b ^= k0
        hi_a ^= c3
        hi_a ^= k1
        c0, c1, c2, c3 = hi_b, lo_b, hi_a, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    as_int32 = torch.where(c0 >= 2**31, c0 - 2**32, c0)
    as_int32 = torch.where(as_int32 < 0, -as_int32 - 1, as_int32)
    return as_int32.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def keep_mask(seed: Tensor, p: float, numel: int, device: torch.device) -> Tensor:
    """Which of ``numel`` flat elements survive dropout with probability p of dropping."""
    offsets = torch.arange(numel, device=device, dtype=torch.int64)
    return philox_uniform(seed.reshape(()), offsets) >= torch.tensor(p, dtype=torch.float32)


def accumulator(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def dropout_scale(p: float, dtype: torch.dtype) -> Tensor:
    """1 / (1 - p) in the accumulation dtype of `dtype`, from p rounded to float32."""
    one_minus_p = 1 - torch.tensor(p, dtype=torch.float32).to(accumulator(dtype))
    return 1 / one_minus_p


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    keep = keep_mask(seed, p, input.numel(), input.device).reshape(input.shape)
    scaled = (input.to(accumulator(input.dtype)) * dropout_scale(p, input.dtype)).to(input.dtype)
    return torch.where(keep, scaled, torch.zeros((), dtype=input.dtype))
