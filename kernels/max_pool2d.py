"""Max pooling (-inf padding, dilation, floor or ceil mode) with an int8 argmax and an atomic-free
backward.

The kernels work on channels_last memory (NHWC with the NCHW shape, torch's
memory_format=torch.channels_last): a program owns a [BLOCK_P pixels, BLOCK_C channels] tile,
the channel axis contiguous, so every load and store of a window tap moves whole vectors
along C (16 bytes), and the pixel coordinates are decomposed once per tile row, in int32.
The launchers take either layout: an NCHW-contiguous input is converted to channels_last
once and its results converted back, so outputs (and gradients) come back in the input's
memory format. The argmax is stored in that format too and tells the backward which one
the forward's input had. The paper's 3x3 windows at stride 2 have a backward of their own
(max_pool2d_backward_3s2_kernel): a lane per 2x2 block of inputs reads the four windows
that hold them once, not each input its four.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulator, check_int32_offsets, interpreting, launchable


@triton.jit
def max_pool2d_forward_kernel(x_ptr, y_ptr, argmax_ptr, pixels, C, H, W, OH, OW,
                              KH: tl.constexpr, KW: tl.constexpr,
                              SH: tl.constexpr, SW: tl.constexpr,
                              PH: tl.constexpr, PW: tl.constexpr,
                              DH: tl.constexpr, DW: tl.constexpr,
                              INSIDE: tl.constexpr, EVEN_C: tl.constexpr, ACC: tl.constexpr,
                              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # x [N, H, W, C], y and argmax [N, OH, OW, C] in memory; pixels = N * OH * OW.
    # Tap (kh, kw) of a window reads input (h0 + kh * DH, w0 + kw * DW).
    # INSIDE: every window lies in the input (no padding, no ceil-mode overhang, as at
    # AlexNet's pools), so a tap needs no bounds test: one mask per pixel, not one per
    # tap, which keeps ptxas from spilling the predicates of 16 elements x 9 taps.
    # EVEN_C: BLOCK_C divides C, no channel mask.
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # output pixel (n, oh, ow)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_in = p < pixels
    if EVEN_C:
        channel_in = tl.full((BLOCK_C,), True, tl.int1)
    else:
        channel_in = c < C
    ow = p % OW
    oh = (p // OW) % OH
    n = p // (OW * OH)
    h0 = oh * SH - PH  # the window's top-left corner, maybe in the padding
    w0 = ow * SW - PW
    corner = ((n * H + h0) * W + w0) * C  # [BLOCK_P], int32 (the launcher checks)
    # Compared in ACC (float32 for 16- and 32-bit inputs), into which the inputs widen
    # exactly: a max needs no rounding, and the winner is stored back bit for bit.
    best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), ACC)
    # Padding is -inf and never wins; a window of -inf inputs names its first tap inside
    # the input, as PyTorch does (its argmax starts at the clipped window's corner).
    if INSIDE:
        best_at = tl.zeros((BLOCK_P, BLOCK_C), tl.int32)
    else:
        first = ((tl.maximum(-h0, 0) + DH - 1) // DH) * KW + (tl.maximum(-w0, 0) + DW - 1) // DW
        best_at = tl.zeros((BLOCK_P, BLOCK_C), tl.int32) + first[:, None]
    for kh in tl.static_range(KH):
        if INSIDE:
            row_ok = pixel_in
        else:
            row_ok = pixel_in & (h0 + kh * DH >= 0) & (h0 + kh * DH < H)
        for kw in tl.static_range(KW):
            if INSIDE:
                ok = row_ok
            else:
                ok = row_ok & (w0 + kw * DW >= 0) & (w0 + kw * DW < W)
            tap = corner + (kh * DH * W + kw * DW) * C
            value = tl.load(x_ptr + tap[:, None] + c[None, :],
                            mask=ok[:, None] & channel_in[None, :], other=float("-inf"))
            if x_ptr.dtype.element_ty == tl.bfloat16:
                # Widened by moving its bits (a bf16 is the top half of its float32): a
                # plain conversion LLVM folds back into bf16 compares, which cost ptxas
                # half as much again per element (pairs of predicates to split and merge).
                value = (value.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(
                    tl.float32, bitcast=True)
            else:
                value = value.to(ACC)
            # Strictly greater keeps the first maximum in row-major order on ties, and a
            # NaN wins, as in PyTorch.
            take = (value > best) | (value != value)
            best = tl.where(take, value, best)
            best_at = tl.where(take, kh * KW + kw, best_at)
    at = p[:, None] * C + c[None, :]
    out = pixel_in[:, None] & channel_in[None, :]
    if x_ptr.dtype.element_ty == tl.bfloat16:
        best = (best.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16,
                                                                          bitcast=True)
    tl.store(y_ptr + at, best.to(y_ptr.dtype.element_ty), mask=out)
    # FORWARD_TILE / FORWARD_WARPS: 16 int8 a thread, one 16-byte store.
    tl.store(argmax_ptr + at, best_at.to(tl.int8), mask=out)


@triton.jit
def _routed(grad_y_ptr, argmax_ptr, n, oh, ow, tap, ok, c, channel_in, C, OH, OW,
            ACC: tl.constexpr):
    """grad_y of window (n, oh, ow) where its winner is this tap (tap: [BLOCK_P, 1] or a
    constant), else 0; [BLOCK_P, BLOCK_C]."""
    at = (((n * OH + oh) * OW + ow) * C)[:, None] + c[None, :]
    window_ok = ok[:, None] & channel_in[None, :]
    winner = tl.load(argmax_ptr + at, mask=window_ok, other=-1).to(tl.int32)
    # Loaded under the row's mask, not the winner's: a mask that varies along C would
    # split the vector loads into scalar ones. The rereads of a window's grad_y by its
    # other inputs hit the cache.
    g = tl.load(grad_y_ptr + at, mask=window_ok, other=0.0).to(ACC)
    return tl.where(winner == tap, g, 0.0)


@triton.jit
def max_pool2d_backward_kernel(grad_y_ptr, argmax_ptr, grad_x_ptr, pixels, C, H, W, OH, OW,
                               KH: tl.constexpr, KW: tl.constexpr,
                               SH: tl.constexpr, SW: tl.constexpr,
                               PH: tl.constexpr, PW: tl.constexpr,
                               DH: tl.constexpr, DW: tl.constexpr, ACC: tl.constexpr,
                               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # One lane per input element: it gathers from the windows that contain it (at most
    # ceil(K/S) per axis without dilation; with it, the taps whose window starts on the
    # stride), so no two lanes write the same place and no atomics are needed.
    # grad_y, argmax [N, OH, OW, C] and grad_x [N, H, W, C] in memory; pixels = N * H * W.
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # input pixel (n, h, w)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    pixel_in = p < pixels
    channel_in = c < C
    w = p % W + PW  # in the padded input's coordinates, >= 0
    h = (p // W) % H + PH
    n = p // (W * H)
    grad = tl.zeros((BLOCK_P, BLOCK_C), ACC)
    if DH == 1 and DW == 1:
        for i in tl.static_range((KH + SH - 1) // SH):
            oh = h // SH - i
            kh = h - oh * SH
            row_ok = pixel_in & (oh >= 0) & (oh < OH) & (kh < KH)
            for j in tl.static_range((KW + SW - 1) // SW):
                ow = w // SW - j
                kw = w - ow * SW
                ok = row_ok & (ow >= 0) & (ow < OW) & (kw < KW)
                grad += _routed(grad_y_ptr, argmax_ptr, n, oh, ow, (kh * KW + kw)[:, None], ok,
                                c, channel_in, C, OH, OW, ACC)
    else:
        for kh in tl.static_range(KH):
            # The window whose tap kh is this row starts at h - kh * DH, if on the stride.
            start_h = h - kh * DH
            oh = start_h // SH
            row_ok = pixel_in & (start_h >= 0) & (start_h % SH == 0) & (oh < OH)
            for kw in tl.static_range(KW):
                start_w = w - kw * DW
                ow = start_w // SW
                ok = row_ok & (start_w >= 0) & (start_w % SW == 0) & (ow < OW)
                grad += _routed(grad_y_ptr, argmax_ptr, n, oh, ow, kh * KW + kw, ok, c,
                                channel_in, C, OH, OW, ACC)
    tl.store(grad_x_ptr + p[:, None] * C + c[None, :], grad.to(grad_x_ptr.dtype.element_ty),
             mask=pixel_in[:, None] & channel_in[None, :])


@triton.jit
def _window(grad_y_ptr, argmax_ptr, n, oh, ow, block_in, c, channel_in, C, OH, OW,
            ACC: tl.constexpr):
    """(winner tap, grad_y) of window (n, oh, ow), [BLOCK_P, BLOCK_C] each: tap -1 and 0
    where the window is not in the output."""
    ok = block_in & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
    at = (((n * OH + oh) * OW + ow) * C)[:, None] + c[None, :]
    mask = ok[:, None] & channel_in[None, :]
    winner = tl.load(argmax_ptr + at, mask=mask, other=-1).to(tl.int32)
    return winner, tl.load(grad_y_ptr + at, mask=mask, other=0.0).to(ACC)


@triton.jit
def max_pool2d_backward_3s2_kernel(grad_y_ptr, argmax_ptr, grad_x_ptr, blocks, C, H, W, OH, OW,
                                   BH, BW, PH: tl.constexpr, PW: tl.constexpr,
                                   ACC: tl.constexpr, BLOCK_P: tl.constexpr,
                                   BLOCK_C: tl.constexpr):
    # The paper's overlapping pool (3x3 windows, stride 2, no dilation): one lane per 2x2
    # block of the padded input, rows 2 bi and 2 bi + 1, columns 2 bj and 2 bj + 1. Its four
    # elements lie in windows (bi, bj), (bi, bj - 1), (bi - 1, bj) and (bi - 1, bj - 1) only:
    # the block's odd row and column only in (bi, bj), at tap 1, its even ones also in the
    # window before, at tap 2. So a lane reads four windows for four elements and makes 9
    # comparisons (1 + 2 + 2 + 4), where a lane per element read four windows for each.
    # grad_y, argmax [N, OH, OW, C] and grad_x [N, H, W, C] in memory; blocks = N * BH * BW.
    b = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # block (n, bi, bj)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    block_in = b < blocks
    channel_in = c < C
    bj = b % BW
    bi = (b // BW) % BH
    n = b // (BW * BH)
    # taps kh * 3 + kw of the four windows; summed in the order the general kernel sums
    here, here_g = _window(grad_y_ptr, argmax_ptr, n, bi, bj, block_in, c, channel_in, C,
                           OH, OW, ACC)
    left, left_g = _window(grad_y_ptr, argmax_ptr, n, bi, bj - 1, block_in, c, channel_in, C,
                           OH, OW, ACC)
    up, up_g = _window(grad_y_ptr, argmax_ptr, n, bi - 1, bj, block_in, c, channel_in, C,
                       OH, OW, ACC)
    corner, corner_g = _window(grad_y_ptr, argmax_ptr, n, bi - 1, bj - 1, block_in, c,
                               channel_in, C, OH, OW, ACC)
    even_even = (tl.where(here == 0, here_g, 0.0) + tl.where(left == 2, left_g, 0.0)
                 + tl.where(up == 6, up_g, 0.0) + tl.where(corner == 8, corner_g, 0.0))
    even_odd = tl.where(here == 1, here_g, 0.0) + tl.where(up == 7, up_g, 0.0)
    odd_even = tl.where(here == 3, here_g, 0.0) + tl.where(left == 5, left_g, 0.0)
    odd_odd = tl.where(here == 4, here_g, 0.0)
    h = 2 * bi - PH  # the block's first row and column in the input
    w = 2 * bj - PW
    rows = (block_in & (h >= 0) & (h < H), block_in & (h + 1 < H))
    columns = ((w >= 0) & (w < W), w + 1 < W)
    at = ((n * H + h) * W + w) * C  # [BLOCK_P]
    out = grad_x_ptr.dtype.element_ty
    tl.store(grad_x_ptr + at[:, None] + c[None, :], even_even.to(out),
             mask=(rows[0] & columns[0])[:, None] & channel_in[None, :])
    tl.store(grad_x_ptr + (at + C)[:, None] + c[None, :], even_odd.to(out),
             mask=(rows[0] & columns[1])[:, None] & channel_in[None, :])
    tl.store(grad_x_ptr + (at + W * C)[:, None] + c[None, :], odd_even.to(out),
             mask=(rows[1] & columns[0])[:, None] & channel_in[None, :])
    tl.store(grad_x_ptr + (at + W * C + C)[:, None] + c[None, :], odd_odd.to(out),
             mask=(rows[1] & columns[1])[:, None] & channel_in[None, :])


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                ceil_mode: bool) -> int:
    """torch's pooled length: floor or ceil of (size + 2 * padding - dilation * (kernel - 1)
    - 1) / stride, plus one; in ceil mode the last window must start inside the input or its
    left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _blocks(channels: int, elements: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of a tile of `elements` elements on a GPU, the channel tile a
    power of two that divides C where one does (no masked lanes at AlexNet's 96 and 256).
    Under the interpreter, which costs per op and not per element: one tile across all
    channels and 32,768 elements, so that few programs run."""
    if interpreting():
        block_c = min(256, triton.next_power_of_2(channels))
        return 32768 // block_c, block_c
    lowest_bit = channels & -channels
    block_c = min(64, lowest_bit if lowest_bit >= 8 else triton.next_power_of_2(channels))
    return max(1, elements // block_c), block_c


# Elements per program: 16 per thread in both, at FORWARD_WARPS = 2 and BACKWARD_WARPS = 4.
# The forward's int8 argmax is then one 16-byte store per thread (at 8 a thread it was 8
# bytes); its window loads are 16 bytes each, 9 or 18 a thread in flight at once. The
# backward's per-pixel index arithmetic (three divisions by runtime sizes) costs half as
# much per element as at 8. The backward in blocks of two: 16 lanes (blocks) a thread, whose
# argmax loads are 16 bytes (at 8 they were 4 of 8 bytes: issue 11's budget missed); 130
# registers, no spills, 18 us of issue against 34 of memory for pool1 in bf16 (bench.static,
# H100 SXM), where the general kernel's 669 instructions a warp took 47.
FORWARD_TILE, BACKWARD_TILE, BLOCKS_OF_TWO_TILE = 1024, 2048, 2048
FORWARD_WARPS, BACKWARD_WARPS = 2, 4


def _blocks_of_two(kernel_size: list[int], stride: list[int], dilation: list[int]) -> bool:
    """Whether the backward takes max_pool2d_backward_3s2_kernel: the paper's 3x3 windows at
    stride 2, undilated (any padding, either mode)."""
    return (list(kernel_size), list(stride), list(dilation)) == ([3, 3], [2, 2], [1, 1])


def _inside(size: int, out: int, kernel: int, stride: int, padding: int, dilation: int) -> bool:
    """Whether every window along this axis lies inside the input (no padding, and the last
    window, ceil mode's included, ends in it)."""
    return padding == 0 and (out - 1) * stride + (kernel - 1) * dilation < size


def _is_channels_last(t: Tensor) -> bool:
    """Whether t's results should be channels_last: it is, and not also NCHW-contiguous
    (with C == 1 or H == W == 1 both hold, and NCHW is the answer that is both)."""
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def _in_format(t: Tensor, channels_last: bool) -> Tensor:
    return t if channels_last else t.contiguous()


def max_pool2d_forward(input: Tensor, kernel_size: list[int], stride: list[int],
                       padding: list[int] = (0, 0), dilation: list[int] = (1, 1),
                       ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    """input [N, C, H, W] -> (output [N, C, OH, OW], argmax int8 [N, C, OH, OW]), both in
    the input's memory format (channels_last, else NCHW-contiguous).

    argmax is the winner's tap inside its window, kh * KW + kw (input row h0 + kh * DH),
    counted from the window's corner in the padded input.
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    if dh < 1 or dw < 1:
        raise ValueError(f"max_pool2d: dilation {dilation} must be positive")
    if kh * kw > 127:
        raise ValueError(f"max_pool2d: a {kh}x{kw} window does not fit an int8 argmax")
    if ph < 0 or pw < 0 or 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"max_pool2d: padding {padding} must be >= 0 and at most half of "
                         f"the {kh}x{kw} window")
    channels_last = _is_channels_last(input)
    x = input.contiguous(memory_format=torch.channels_last)
    n, c, h, w = x.shape
    oh = output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = output_size(w, kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: a {kh}x{kw} window with padding {padding} is larger "
                         f"than the {h}x{w} input")
    output = torch.empty((n, c, oh, ow), device=x.device, dtype=x.dtype,
                         memory_format=torch.channels_last)
    argmax = torch.empty((n, c, oh, ow), device=x.device, dtype=torch.int8,
                         memory_format=torch.channels_last)
    check_int32_offsets("max_pool2d", input=x, output=output)
    if output.numel():
        block_p, block_c = _blocks(c, FORWARD_TILE)
        grid = (triton.cdiv(n * oh * ow, block_p), triton.cdiv(c, block_c))
        launchable(max_pool2d_forward_kernel)[grid](
            x, output, argmax, n * oh * ow, c, h, w, oh, ow, KH=kh, KW=kw, SH=sh, SW=sw,
            PH=ph, PW=pw, DH=dh, DW=dw,
            INSIDE=_inside(h, oh, kh, sh, ph, dh) and _inside(w, ow, kw, sw, pw, dw),
            EVEN_C=c % block_c == 0, ACC=accumulator(x.dtype),
            BLOCK_P=block_p, BLOCK_C=block_c, num_warps=FORWARD_WARPS)
    return _in_format(output, channels_last), _in_format(argmax, channels_last)


def max_pool2d_backward(grad_output: Tensor, argmax: Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int],
                        padding: list[int] = (0, 0), dilation: list[int] = (1, 1),
                        ceil_mode: bool = False) -> Tensor:
    """grad_output [N, C, OH, OW], argmax int8 -> grad_input [N, C, H, W], in argmax's
    memory format (the forward input's)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    if argmax.dtype != torch.int8 or argmax.shape != grad_output.shape:
        raise ValueError("max_pool2d_backward: argmax must be int8 with grad_output's shape")
    n, c, h, w = input_size
    oh = output_size(h, kh, sh, ph, dh, ceil_mode)
    ow = output_size(w, kw, sw, pw, dw, ceil_mode)
    if tuple(grad_output.shape) != (n, c, oh, ow):
        raise ValueError(f"max_pool2d_backward: grad_output shape {tuple(grad_output.shape)} "
                         f"is not the pooled shape {(n, c, oh, ow)} of input {input_size}")
    channels_last = _is_channels_last(argmax)
    grad_y = grad_output.contiguous(memory_format=torch.channels_last)
    winners = argmax.contiguous(memory_format=torch.channels_last)
    grad_input = torch.empty((n, c, h, w), device=grad_y.device, dtype=grad_y.dtype,
                             memory_format=torch.channels_last)
    check_int32_offsets("max_pool2d_backward", grad_input=grad_input, grad_output=grad_y)
    if grad_input.numel() and _blocks_of_two(kernel_size, stride, dilation):
        bh, bw = triton.cdiv(h + ph, 2), triton.cdiv(w + pw, 2)
        block_p, block_c = _blocks(c, BLOCKS_OF_TWO_TILE)
        grid = (triton.cdiv(n * bh * bw, block_p), triton.cdiv(c, block_c))
        launchable(max_pool2d_backward_3s2_kernel)[grid](
            grad_y, winners, grad_input, n * bh * bw, c, h, w, oh, ow, bh, bw, PH=ph, PW=pw,
            ACC=accumulator(grad_y.dtype), BLOCK_P=block_p, BLOCK_C=block_c,
            num_warps=BACKWARD_WARPS)
    elif grad_input.numel():
        block_p, block_c = _blocks(c, BACKWARD_TILE)
        grid = (triton.cdiv(n * h * w, block_p), triton.cdiv(c, block_c))
        launchable(max_pool2d_backward_kernel)[grid](
            grad_y, winners, grad_input, n * h * w, c, h, w, oh, ow,
            KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw, DH=dh, DW=dw,
            ACC=accumulator(grad_y.dtype),
            BLOCK_P=block_p, BLOCK_C=block_c, num_warps=BACKWARD_WARPS)
    return _in_format(grad_input, channels_last)
