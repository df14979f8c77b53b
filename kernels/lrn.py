"""Cross-channel local response normalization (AlexNet section 3.3), forward and backward.

``b_c = a_c / d_c ** beta`` with ``d_c = k + alpha / size * sum_j a_j ** 2`` over the
channels ``j = c - size // 2 ... c + (size - 1) // 2`` of the same group; channels outside
the group contribute zero.

The kernels work on channels_last memory (NHWC with the NCHW shape, torch's
memory_format=torch.channels_last), where a pixel's channels are contiguous. A program owns
BLOCK_P pixels (one per thread) and one group, and each thread slides the window along its
pixel's channels: it reads the group's channels once, CHUNK at a time (16-byte loads for
bf16), splits each chunk into per-channel registers, and every window sum is then a sum of
registers, with no load per window position. The channel loop is unrolled (the group's
size is a compile-time constant), and outputs are written CHUNK channels at a time as soon
as the window has passed them, so only a window's worth of channels is live.

NCHW inputs are accepted: the launchers convert them to channels_last once and convert the
result back, so outputs and gradients come back in the input's memory format. The backward
recomputes the denominators from the input instead of having the forward store them.
"""
from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulation_dtype, check_int32_offsets, interpreting, launchable

CHUNK = 8  # channels per load: 16 bytes of bf16


@triton.jit
def _parameter(hi, lo, ACC: tl.constexpr):
    """A float parameter passed as hi + lo: float kernel arguments are float32 on a GPU,
    and float64 inputs need the parameter to more than float32's 24 bits."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _log2(x, FAST: tl.constexpr):
    """log2(x) of float32 x > 0. With FAST the hardware's lg2.approx.f32 (MUFU.LG2, one
    instruction, absolute error at most 2^-22.6 by the PTX ISA), where tl.log2 compiles to
    a software log2 of about 20 instructions: lrn2's forward issued 4,960 a warp for 128
    channels (39 an element) and was issue-bound on an H200 (bench.static). Through
    d^-beta = 2^(-beta log2 d) that error is a relative 1e-7 at beta = 0.75, under
    float32's tolerance. Without FAST (float64, or the interpreter, which cannot run PTX)
    tl.log2."""
    if FAST:
        return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x],
                                         dtype=tl.float32, is_pure=True, pack=1)
    return tl.log2(x)


@triton.jit
def _load_chunk(ptr, pixel_base, pixel_in, chunk: tl.constexpr, CPG: tl.constexpr,
                ACC: tl.constexpr):
    """Channels chunk * 8 ... chunk * 8 + 7 of each pixel's group, as 8 [BLOCK_P] tensors
    (channel order); channels past the group read as zero."""
    channel = chunk * 8 + tl.arange(0, 8)
    x = tl.load(ptr + pixel_base[:, None] + channel[None, :],
                mask=pixel_in[:, None] & (channel < CPG)[None, :], other=0.0).to(ACC)
    # [BLOCK_P, 8] -> [BLOCK_P, 2, 2, 2] with channel 4a + 2b + c at [p, a, b, c]; each
    # split takes the last axis, which lies in the thread's registers.
    x = tl.reshape(x, (x.shape[0], 2, 2, 2))
    even, odd = tl.split(x)  # [p, a, b]: channels 4a + 2b, 4a + 2b + 1
    e0, e1 = tl.split(even)  # [p, a]: 4a, 4a + 2
    o0, o1 = tl.split(odd)   # 4a + 1, 4a + 3
    c0, c4 = tl.split(e0)
    c2, c6 = tl.split(e1)
    c1, c5 = tl.split(o0)
    c3, c7 = tl.split(o1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _store_chunk(ptr, pixel_base, pixel_in, chunk: tl.constexpr, CPG: tl.constexpr,
                 c0, c1, c2, c3, c4, c5, c6, c7):
    """The inverse of _load_chunk: 8 channels' [BLOCK_P] tensors stored as one vector."""
    even = tl.join(tl.join(c0, c4), tl.join(c2, c6))  # [p, a, b]: channel 4a + 2b
    odd = tl.join(tl.join(c1, c5), tl.join(c3, c7))
    x = tl.reshape(tl.join(even, odd), (c0.shape[0], 8))
    channel = chunk * 8 + tl.arange(0, 8)
    tl.store(ptr + pixel_base[:, None] + channel[None, :], x.to(ptr.dtype.element_ty),
             mask=pixel_in[:, None] & (channel < CPG)[None, :])


@triton.jit
def _window_sum(x, c: tl.constexpr, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                CPG: tl.constexpr, zero):
    """sum of x[j] for j = c - BEFORE ... c + AFTER inside the group; x a tuple of [BLOCK_P]."""
    total = zero
    for o in tl.static_range(BEFORE + AFTER + 1):
        if c + o - BEFORE >= 0:
            if c + o - BEFORE < CPG:
                total = total + x[c + o - BEFORE]
    return total


@triton.jit
def _pixels(C, pixels, CPG: tl.constexpr, BLOCK_P: tl.constexpr):
    """(offset of each pixel's group start, in-bounds mask) of this program's pixels."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    return p * C + tl.program_id(1) * CPG, p < pixels


@triton.jit
def lrn_forward_kernel(a_ptr, b_ptr, C, pixels,
                       alpha_over_size_hi, alpha_over_size_lo, beta_hi, beta_lo, k_hi, k_lo,
                       SIZE: tl.constexpr, CPG: tl.constexpr, FP64: tl.constexpr,
                       FAST_LOG2: tl.constexpr, BLOCK_P: tl.constexpr):
    # a, b [N, H, W, C] in memory, C = groups * CPG; pixels = N * H * W.
    if FP64:
        ACC: tl.constexpr = tl.float64
    else:
        ACC: tl.constexpr = tl.float32
    alpha_over_size = _parameter(alpha_over_size_hi, alpha_over_size_lo, ACC)
    beta = _parameter(beta_hi, beta_lo, ACC)
    k = _parameter(k_hi, k_lo, ACC)
    BEFORE: tl.constexpr = SIZE // 2  # the window of c: c - BEFORE ... c + AFTER
    AFTER: tl.constexpr = (SIZE - 1) // 2
    CHUNKS: tl.constexpr = (CPG + 7) // 8
    LAG: tl.constexpr = (AFTER + 7) // 8  # chunks read ahead of the one written
    base, pixel_in = _pixels(C, pixels, CPG, BLOCK_P)
    zero = tl.zeros((BLOCK_P,), ACC)
    a = ()
    squares = ()
    for step in tl.static_range(CHUNKS + LAG):
        if step < CHUNKS:
            chunk = _load_chunk(a_ptr, base, pixel_in, step, CPG, ACC)
            a = a + chunk
            for i in tl.static_range(8):
                squares = squares + (chunk[i] * chunk[i],)
        if step >= LAG:
            # Written: chunk step - LAG. (Constexpr names cannot be rebound in an unrolled
            # loop, so the channel indices are written out.)
            b = ()
            for i in tl.static_range(8):
                d = k + alpha_over_size * _window_sum(squares, (step - LAG) * 8 + i, BEFORE,
                                                      AFTER, CPG, zero)
                # d >= k > 0, so d^-beta = 2^(-beta * log2(d)).
                b = b + (a[(step - LAG) * 8 + i] * tl.exp2(-beta * _log2(d, FAST_LOG2)),)
            _store_chunk(b_ptr, base, pixel_in, step - LAG, CPG, b[0], b[1], b[2], b[3], b[4],
                         b[5], b[6], b[7])


@triton.jit
def lrn_backward_kernel(g_ptr, a_ptr, grad_a_ptr, C, pixels,
                        alpha_over_size_hi, alpha_over_size_lo, beta_hi, beta_lo, k_hi, k_lo,
                        SIZE: tl.constexpr, CPG: tl.constexpr, FP64: tl.constexpr,
                        FAST_LOG2: tl.constexpr, BLOCK_P: tl.constexpr):
    # grad_a_i = g_i * d_i^-beta
    #          - 2 * alpha * beta / size * a_i * sum_{c : i in window(c)} g_c * a_c * d_c^(-beta-1)
    # and i is in the window of c = i - AFTER ... i + BEFORE. g, a, grad_a [N, H, W, C].
    if FP64:
        ACC: tl.constexpr = tl.float64
    else:
        ACC: tl.constexpr = tl.float32
    alpha_over_size = _parameter(alpha_over_size_hi, alpha_over_size_lo, ACC)
    beta = _parameter(beta_hi, beta_lo, ACC)
    k = _parameter(k_hi, k_lo, ACC)
    BEFORE: tl.constexpr = SIZE // 2
    AFTER: tl.constexpr = (SIZE - 1) // 2
    CHUNKS: tl.constexpr = (CPG + 7) // 8
    # d_c (and t_c) of a chunk needs a up to AFTER channels past it; grad_a of a chunk
    # needs t_c up to BEFORE channels past it.
    LAG_T: tl.constexpr = (AFTER + 7) // 8
    LAG_GRAD: tl.constexpr = LAG_T + (BEFORE + 7) // 8
    base, pixel_in = _pixels(C, pixels, CPG, BLOCK_P)
    zero = tl.zeros((BLOCK_P,), ACC)
    a = ()
    g = ()
    squares = ()
    t = ()  # g_c * a_c * d_c^(-beta-1)
    d_pow = ()  # d_c^-beta
    for step in tl.static_range(CHUNKS + LAG_GRAD):
        if step < CHUNKS:
            a_chunk = _load_chunk(a_ptr, base, pixel_in, step, CPG, ACC)
            a = a + a_chunk
            g = g + _load_chunk(g_ptr, base, pixel_in, step, CPG, ACC)
            for i in tl.static_range(8):
                squares = squares + (a_chunk[i] * a_chunk[i],)
        if step >= LAG_T:
            if step - LAG_T < CHUNKS:
                for i in tl.static_range(8):  # channel c = (step - LAG_T) * 8 + i
                    d = k + alpha_over_size * _window_sum(squares, (step - LAG_T) * 8 + i,
                                                          BEFORE, AFTER, CPG, zero)
                    d_c_pow = tl.exp2((-beta - 1.0) * _log2(d, FAST_LOG2))  # d_c^(-beta-1)
                    t = t + (g[(step - LAG_T) * 8 + i] * a[(step - LAG_T) * 8 + i] * d_c_pow,)
                    d_pow = d_pow + (d * d_c_pow,)
        if step >= LAG_GRAD:
            grad = ()
            for i in tl.static_range(8):  # channel i' = (step - LAG_GRAD) * 8 + i
                neighbours = _window_sum(t, (step - LAG_GRAD) * 8 + i, AFTER, BEFORE, CPG, zero)
                grad = grad + (g[(step - LAG_GRAD) * 8 + i] * d_pow[(step - LAG_GRAD) * 8 + i]
                               - (2.0 * alpha_over_size * beta) * a[(step - LAG_GRAD) * 8 + i]
                               * neighbours,)
            _store_chunk(grad_a_ptr, base, pixel_in, step - LAG_GRAD, CPG, grad[0], grad[1],
                         grad[2], grad[3], grad[4], grad[5], grad[6], grad[7])


# One pixel per thread, 4 warps: the unrolled channel loop keeps a window of a pixel's
# channels in registers. Under the interpreter a program costs per op, not per element.
_BLOCK_P = 128
_INTERPRETER_BLOCK_P = 4096


def _check(name: str, input: Tensor, size: int, groups: int) -> None:
    if input.dim() != 4:
        raise ValueError(f"{name}: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    channels = input.shape[1]
    if size < 1 or groups < 1 or channels % groups:
        raise ValueError(f"{name}: size={size}, groups={groups} do not fit {channels} channels")
    check_int32_offsets(name, input=input)
    if channels // groups > 1024:
        raise ValueError(f"{name}: {channels // groups} channels per group exceed the 1,024 "
                         "the unrolled channel loop is built for")


def _split(x: float) -> tuple[float, float]:
    """x as the float32 pair (hi, lo) with hi + lo = x to about 48 bits."""
    hi = struct.unpack("f", struct.pack("f", x))[0]
    return hi, x - hi


def _is_channels_last(t: Tensor) -> bool:
    """Whether t's results should be channels_last: it is, and not also NCHW-contiguous
    (with C == 1 or H == W == 1 both hold, and NCHW is the answer that is both)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _launch(kernel, tensors, input: Tensor, size: int, alpha: float, beta: float, k: float,
            groups: int) -> None:
    n, channels, h, w = input.shape
    block_p = _INTERPRETER_BLOCK_P if interpreting() else _BLOCK_P
    grid = (triton.cdiv(n * h * w, block_p), groups)
    fp64 = accumulation_dtype(input.dtype) == torch.float64
    launchable(kernel)[grid](
        *tensors, channels, n * h * w, *_split(alpha / size), *_split(beta), *_split(k),
        SIZE=size, CPG=channels // groups, FP64=fp64,
        FAST_LOG2=not fp64 and not interpreting(), BLOCK_P=block_p, num_warps=4)


def lrn_forward(input: Tensor, size: int, alpha: float, beta: float, k: float,
                groups: int) -> Tensor:
    """b = a / (k + alpha / size * windowed sum of a^2) ** beta; input [N, C, H, W], the
    result in the input's memory format."""
    _check("lrn_forward", input, size, groups)
    a = input.contiguous(memory_format=torch.channels_last)
    b = torch.empty_like(a)
    if a.numel():
        _launch(lrn_forward_kernel, (a, b), a, size, alpha, beta, k, groups)
    return b if _is_channels_last(input) else b.contiguous()


def lrn_backward(grad_output: Tensor, input: Tensor, size: int, alpha: float, beta: float, k: float,
                 groups: int) -> Tensor:
    """grad_input [N, C, H, W] of lrn_forward in the input's memory format, recomputing the
    denominators from input."""
    _check("lrn_backward", input, size, groups)
    if grad_output.shape != input.shape:
        raise ValueError(f"lrn_backward: grad_output shape {tuple(grad_output.shape)} != "
                         f"input shape {tuple(input.shape)}")
    g = grad_output.contiguous(memory_format=torch.channels_last)
    a = input.contiguous(memory_format=torch.channels_last)
    grad_a = torch.empty_like(a)
    if a.numel():
        _launch(lrn_backward_kernel, (g, a, grad_a), a, size, alpha, beta, k, groups)
    return grad_a if _is_channels_last(input) else grad_a.contiguous()
