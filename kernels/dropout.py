"""Inverted dropout with a Philox mask regenerated from (seed, flat index), never stored.

The mask of flat element i is output ``i % 4`` of Philox4x32-10 on (seed, counter ``i // 4``):
one Philox call yields the uniforms of four consecutive elements, so the standalone kernel
draws each of its calls' four outputs (``tl.randint4x``) instead of keeping one of four as
``tl.rand`` would. ``dropout_keep`` evaluates the same rule for any tile of flat offsets
(kernels/linear.py's fused fc6/fc7 epilogue calls it on its [BLOCK_M, BLOCK_N] tile), so the
fused and standalone masks are one definition; kernels/reference/dropout.py draws it bit for
bit on the CPU.

The seed is a one-element int64 device tensor (drawing it costs no host sync). The kernel
reads it in one 16-byte load where the seed's storage holds a 16-byte record (seed, pad)
from it: ``seed_tensor`` and ``random_seed`` make seeds so, and kernels/linear.py, which
reads the first word, takes them as they are. A bare 8-byte seed is read in one 8-byte
load (the same stream: only the access width differs, as with an unaligned record, for
which Triton's pointer specialisation also splits the load).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulator, check_int32_offsets, interpreting, launchable


@triton.jit
def _survives(word, p):
    """U(0, 1) >= p for one Philox output word, U as tl.rand maps a word to [0, 1).

    A GPU launch passes a Python float as float32 and the interpreter as float64; p is
    rounded to float32 here so that both, and the reference, draw the same mask.
    """
    return tl.uint_to_uniform_float(word) >= tl.cast(p, tl.float32)


@triton.jit
def dropout_keep(seed, offsets, p):
    """Whether the elements at these flat offsets (int32, >= 0, any shape) survive dropout.

    Element i keeps output i % 4 of Philox(seed, counter i // 4): a pure function of
    (seed, i, p), whatever tile the caller evaluates it on. A caller that owns all four
    elements of a counter should draw the four outputs once instead (dropout_kernel).
    """
    offsets = offsets.to(tl.int32)
    r0, r1, r2, r3 = tl.randint4x(seed, offsets >> 2)
    lane = offsets & 3
    word = tl.where(lane < 2, tl.where(lane == 0, r0, r1), tl.where(lane == 2, r2, r3))
    return _survives(word, p)


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
def dropout_kernel(x_ptr, y_ptr, seed_ptr, numel, p, SEED_RECORD: tl.constexpr,
                   ACC: tl.constexpr, BLOCK: tl.constexpr):
    # One Philox call per four elements: counter j covers elements 4j ... 4j + 3, and
    # counter [r, s] of this [BLOCK / 8, 2] tile is j = 2r + s. A row is the 8 elements
    # of one thread's 16-byte bf16 vector, so at bf16 the mask needs no exchange between
    # threads (at fp32, two 4-element vectors a thread, it goes through shared memory:
    # bench/sass predicts the kernel memory-bound either way).
    row = tl.arange(0, BLOCK // 8)[:, None]  # [BLOCK / 8, 1]
    pair = tl.arange(0, 2)[None, :]  # [1, 2]
    counter = tl.program_id(0) * (BLOCK // 4) + row * 2 + pair  # [BLOCK / 8, 2]
    if SEED_RECORD:
        # Every row reads the 16-byte record (seed, pad): one vector load per thread at
        # 4 warps (BLOCK / 8 = 128 rows). A 2-element tensor would be spread over two
        # threads, 8 bytes each, and ptxas narrows a vector load whose second word is
        # unused to 8 bytes: volatile keeps it whole (an L1-bypassing 16-byte read per
        # thread, the same line for the whole program, served by L2). The row's own copy
        # of the seed is the same register for both counters of the row.
        record = tl.load(seed_ptr + row * 0 + pair, volatile=True)  # [BLOCK / 8, 2]
        seed = tl.sum(tl.where(pair == 0, record, 0), axis=1)[:, None]  # [BLOCK / 8, 1]
    else:
        seed = tl.load(seed_ptr)
    r0, r1, r2, r3 = tl.randint4x(seed, counter)  # [BLOCK / 8, 2] each
    # tl.join stacks along a new last axis: [BLOCK / 8, 2, 2, 2] with [r, s, b, a] = output
    # 2b + a of counter 2r + s, which flattened row-major is element 4(2r + s) + 2b + a.
    words = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (BLOCK,))
    keep = _survives(words, p)
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    x = tl.load(x_ptr + offsets, mask=in_bounds, other=0.0)
    y = tl.where(keep, x.to(ACC) * dropout_scale(p, ACC), 0.0)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=in_bounds)


def seed_tensor(seed: int, device: torch.device | str) -> Tensor:
    """The Philox seed `seed` as the kernels read it: a one-element int64 tensor, the first
    word of a 16-byte record (seed, 0) of its own."""
    return torch.tensor([seed, 0], dtype=torch.int64, device=device)[:1]


def random_seed(device: torch.device | str) -> Tensor:
    """A seed in [0, 2**31 - 1) from the default generator of `device`, laid out as
    seed_tensor's (the record's second word is drawn too, and never read)."""
    return torch.randint(0, 2**31 - 1, (2,), device=device, dtype=torch.int64)[:1]


def _is_record(seed: Tensor) -> bool:
    """Whether seed's storage holds the 16 bytes of a record from it. Metadata only: no
    sync, and fake tensors answer it under torch.compile."""
    return seed.untyped_storage().nbytes() - seed.storage_offset() * seed.element_size() >= 16


def dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    """Zero each element with probability p, scale survivors by 1/(1-p); seed is int64 [1]
    (one 16-byte load where it is a record: seed_tensor, random_seed)."""
    if seed.dtype != torch.int64 or seed.numel() != 1 or seed.device != input.device:
        raise ValueError("dropout: seed must be a one-element int64 tensor on the input's device")
    check_int32_offsets("dropout", input=input)  # the Philox counters too
    # The mask is one of logical flat indices (NCHW order for a 4-D tensor), whatever the
    # strides; a channels_last input is read in that order and its result returned
    # channels_last (dropout is not among the channels_last layers, so this costs copies
    # only for callers that bring one).
    x = input.contiguous()
    y = torch.empty_like(x)
    numel = x.numel()
    block = 4096 if interpreting() else 1024
    grid = (triton.cdiv(numel, block),)
    launchable(dropout_kernel)[grid](x, y, seed, numel, float(p), SEED_RECORD=_is_record(seed),
                                     ACC=accumulator(x.dtype), BLOCK=block, num_warps=4)
    channels_last = (input.dim() == 4 and not input.is_contiguous()
                     and input.is_contiguous(memory_format=torch.channels_last))
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y
