"""PyTorch reference of kernels/dropout.py, bit for bit.

It reimplements the Philox4x32-10 stream behind Triton's ``tl.randint4x(seed, counter)``
and its mapping to uniforms, so a CPU run without the interpreter draws exactly the masks
the Triton kernels draw: element i keeps output i % 4 of counter i // 4.
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


def philox_words(seed: int | Tensor, counters: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``tl.randint4x(seed, counters)`` for int32 counters: its four uint32 words, in int64.

    uint32 words live in int64. Each round's two 32x32-bit products are one int64 multiply
    apiece: it wraps modulo 2**64 as the hardware does, which leaves both 32-bit halves
    intact (the kernel tests compare every bit with Triton's Philox). The low halves pass
    to the next round unmasked, as only their low 32 bits reach an output (through an xor
    that is masked, or the final mask): 10 tensor ops a round instead of 12, as this runs
    on every CPU dropout.

    seed may be a one-element int64 tensor: it is never read back to the host, so the
    reference traces under torch.compile like the kernels.
    """
    c0 = counters.to(torch.int64) & _MASK32
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
    return c0, c1 & _MASK32, c2, c3 & _MASK32


def uniform(word: Tensor) -> Tensor:
    """Triton's uint_to_uniform_float of uint32 words (in int64): float32 in [0, 1)."""
    # Triton reads the word as int32 x and maps x < 0 to -x - 1, i.e. 2**32 - 1 - word.
    folded = torch.where(word >= 2**31, word ^ _MASK32, word)
    return folded.to(torch.float32) * torch.tensor(_UNIFORM_SCALE, dtype=torch.float32)


def philox_uniform(seed: int | Tensor, offsets: Tensor) -> Tensor:
    """``tl.rand(seed, offsets)`` for int32 offsets: the uniform of Philox's first word."""
    return uniform(philox_words(seed, offsets)[0])


def keep_mask(seed: Tensor, p: float, numel: int, device: torch.device) -> Tensor:
    """Which of ``numel`` flat elements survive dropout with probability p of dropping.

    Element i draws output i % 4 of Philox(seed, counter i // 4), as kernels/dropout.py's
    dropout_keep (and the fused mask of kernels/linear.py, which calls it).
    """
    counters = torch.arange((numel + 3) // 4, device=device, dtype=torch.int64)
    words = torch.stack(philox_words(seed.reshape(()), counters), dim=1)  # [numel / 4, 4]
    survives = uniform(words) >= torch.tensor(p, dtype=torch.float32)
    return survives.reshape(-1)[:numel]


def dropout_scale(p: float, dtype: torch.dtype) -> Tensor:
    """1 / (1 - p) in the accumulation dtype of `dtype`, from p rounded to float32."""
    one_minus_p = 1 - torch.tensor(p, dtype=torch.float32).to(accumulation_dtype(dtype))
    return 1 / one_minus_p


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    keep = keep_mask(seed, p, input.numel(), input.device).reshape(input.shape)
    scaled = (input.to(accumulation_dtype(input.dtype)) * dropout_scale(p, input.dtype)).to(input.dtype)
    dropped = torch.where(keep, scaled, torch.zeros((), dtype=input.dtype))
    channels_last = (input.dim() == 4 and not input.is_contiguous()
                     and input.is_contiguous(memory_format=torch.channels_last))
    return dropped.contiguous(memory_format=torch.channels_last) if channels_last else dropped
