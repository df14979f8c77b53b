"""PyTorch reference of kernels/dropout.py, bit for bit.

It reimplements the Philox4x32-10 stream behind Triton's ``tl.rand(seed, offset)``, so a
CPU run without the interpreter draws exactly the masks the Triton kernels draw.
"""
from __future__ import annotations

import torch
from torch import Tensor

from alexnet_triton.kernels import accumulation_dtype

_MASK32 = 0xFFFFFFFF
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
# Triton's uint_to_uniform_float: the largest scale with (2**31 - 1) * scale < 1 in float32.
_UNIFORM_SCALE = 4.6566127342e-10


def philox_uniform(seed: int | Tensor, offsets: Tensor) -> Tensor:
    """``tl.rand(seed, offsets)`` for int32 offsets: float32 uniforms in [0, 1).

    uint32 words live in int64. Each round's two 32x32-bit products are one int64 multiply
    apiece: it wraps modulo 2**64 as the hardware does, which leaves both 32-bit halves
    intact (the kernel tests compare every bit with tl.rand). The low halves pass to the
    next round unmasked, as only their low 32 bits reach an output (through an xor that is
    masked): 10 tensor ops a round instead of 12, as this runs on every CPU dropout.

    seed may be a one-element int64 tensor: it is never read back to the host, so the
    reference traces under torch.compile like the kernels.
    """
    c0 = offsets.to(torch.int64) & _MASK32
    c1 = torch.zeros_like(c0)  # low half of the last round's product with c2 (unmasked)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)  # low half of the last round's product with c0 (unmasked)
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    for _ in range(10):
        product_b, product_a = c2 * _ROUND_B, c0 * _ROUND_A
        c0 = (product_b >> 32).bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(_MASK32)
        c2 = (product_a >> 32).bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(_MASK32)
        c1, c3 = product_b, product_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    # Triton reads the word as int32 x and maps x < 0 to -x - 1, i.e. 2**32 - 1 - word.
    folded = torch.where(c0 >= 2**31, c0 ^ _MASK32, c0)
    return folded.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def keep_mask(seed: Tensor, p: float, numel: int, device: torch.device) -> Tensor:
    """Which of ``numel`` flat elements survive dropout with probability p of dropping."""
    offsets = torch.arange(numel, device=device, dtype=torch.int64)
    return philox_uniform(seed.reshape(()), offsets) >= torch.tensor(p, dtype=torch.float32)


def dropout_scale(p: float, dtype: torch.dtype) -> Tensor:
    """1 / (1 - p) in the accumulation dtype of `dtype`, from p rounded to float32."""
    one_minus_p = 1 - torch.tensor(p, dtype=torch.float32).to(accumulation_dtype(dtype))
    return 1 / one_minus_p


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    keep = keep_mask(seed, p, input.numel(), input.device).reshape(input.shape)
    scaled = (input.to(accumulation_dtype(input.dtype)) * dropout_scale(p, input.dtype)).to(input.dtype)
    return torch.where(keep, scaled, torch.zeros((), dtype=input.dtype))
