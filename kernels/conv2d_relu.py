"""Convolution + bias + ReLU (AlexNet's conv1 to conv5) as implicit GEMMs, forward and backward.

Channels-last (NHWC memory; torch.channels_last keeps the [N, C, H, W] shape): no im2col
buffer is ever built, every kernel reads its GEMM operand tiles straight from NHWC tensors,
where a pixel's channels are contiguous, so an activation tile is rows of consecutive
channels (16-byte loads, pipelined copies), and the zero padding is a per-row load mask
computed once per tap. Inputs of either layout are accepted (converted once here), outputs
and the input gradient are channels_last, the weight and its gradient keep the state
dict's [K, C/groups, R, S]. ``groups`` splits the channels into independent convolutions,
as the two GPU columns of the paper's figure 2 (conv2, conv4 and conv5 only see the kernel
maps of their own column). conv1's image is copied once into blocks of 4 x 4 pixels,
3 x 3 taps of 48 channels at stride 1 (input_layout). On Hopper the forward's and the
input gradient's weight tiles come through TMA tensor descriptors built on the device
(one bulk copy per tile, zero-filled past each dimension's end) wherever the weight's rows
are 16-byte aligned, plain masked loads elsewhere (_weight_descriptors).

- forward: GEMM over output pixels (n, p, q) x kernels, reducing over the R x S taps, each
  in blocks of contiguous channels; the epilogue adds the bias and applies the ReLU.
- backward, input: GEMM over input pixels (n, h, w) x channels, reducing over (taps, k);
  the ReLU's gradient mask (output > 0) is applied as grad_output is loaded. A strided
  convolution is split into stride_h x stride_w phases of input pixels, each reducing
  only over the taps that reach an output pixel from it.
- backward, weight: GEMM over kernels x (tap, channels), reducing over output pixels
  (n, p, q), with the bias gradient (sums of the masked grad_output) in programs of its
  own. The long reduction is split over programs that each write a float32 partial sum,
  summed after (the weight's and the bias's in one launch): deterministic, no atomics.
  Where a tap has at most half a column tile of channels (conv4, conv5: 192 in three 64s),
  a program reduces two taps against one grad_output tile; where laying every tap side by
  side takes fewer tiles still (conv1, conv2), it does that.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import (accumulation_dtype, accumulator, autotune_pruner,
                                    check_int32_offsets, config_key, descriptor_scratch,
                                    interpreting, launchable, nvidia_capability,
                                    tensor_descriptors_available, through_registers,
                                    tma_compatible)


@triton.jit
def _next_block(c0, s, r, CHANNELS, TAPS_W, BLOCK_K: tl.constexpr):
    """One step of the flat reduction loop over (tap row r, tap s, channel block c0): the
    next block of CHANNELS, else the first of the next tap along w, else of the next row."""
    c0 += BLOCK_K
    next_tap = c0 >= CHANNELS
    c0 = tl.where(next_tap, 0, c0)
    s = tl.where(next_tap, s + 1, s)
    next_row = s == TAPS_W
    s = tl.where(next_row, 0, s)
    r = tl.where(next_row, r + 1, r)
    return c0, s, r


@triton.jit
def conv2d_relu_forward_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, K, P, Q, stride_h, stride_w, pad_h, pad_w,
    x_stride_n, x_stride_h, x_stride_w, C_GROUP, C_TAP,
    M, K_GROUP, GROUPS,
    R: tl.constexpr, S: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr,
    X_ALIGN: tl.constexpr, HAS_BIAS: tl.constexpr, W_DESCRIPTOR: tl.constexpr,
    IN_IMAGE: tl.constexpr, ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    TAIL_N: tl.constexpr, FLAT_TAPS: tl.constexpr,
):
    """y[n, p, q, k] = relu(b[k] + sum_{r,s,c} x[n, p*sh-ph+r, q*sw-pw+s, c] w[k, r, s, c]).

    Channels-last implicit GEMM: rows are output pixels m = (n, p, q), columns the kernels
    of one group. The reduction runs over the R x S taps and, inside each tap, over blocks
    of C_TAP channels that lie contiguously in memory, so an input tile is BLOCK_M pixel
    rows of BLOCK_K consecutive channels (16-byte loads) and its row offsets and zero-padding
    mask are computed once per tap. One flat loop walks (tap, channel block), the tap
    advancing when the channels of the current one run out: nested loops pipeline worse.
    The weight is [K, TAPS_H, TAPS_W, C_TAP], the output [M, K] (NHWC): the R x S taps of
    C_TAP = C_GROUP channels, or for a copied input (input_layout) 3 x 3 taps of 4 x 4 pixels'
    channels (conv1) or R taps of a row of S pixels' channels; R x S is the kernel's size in
    every layout (its FLOPs). W_DESCRIPTOR: the weight tile comes through a TMA tensor
    descriptor over the weight seen as [GROUPS, K_GROUP, TAPS_H * TAPS_W, C_TAP]: its zero
    fill past each dimension's end is the plain load's mask (channels past C_TAP, kernels
    past K_GROUP read zeros, never the next tap's or group's weights), and the copy costs
    the loop one instruction, not an address and a predicate per 16 bytes.
    IN_IMAGE (no padding): every tap of an output pixel lies in the input, which needs no
    bounds test (conv1 on its zero-padded copy). TAIL_N (_tail_n): each program also
    computes the TAIL_N kernels after its BLOCK_N, a second accumulator beside the first:
    conv1's 96 kernels as 64 + 32 columns, all used, where a 128-wide tile used 75%.
    FLAT_TAPS (_flat_reduction, IN_IMAGE only): the reduction laid flat over every tap's
    C_TAP channels, column j being channel j % C_TAP of tap j // C_TAP, so a block spans
    taps and pads only the last: conv1's 9 taps of 48 in 7 blocks of 64 (432 of 448
    used), where blocks of one tap took 9 of 64 (75%) or 27 of 16, whose loop's fixed cost
    per MMA bound it. Without padding no tap needs a row mask: the block's columns alone
    move the pixel.
    """
    # Grouped launch order: GROUP_M row tiles share each column tile while it is in L2.
    pid = tl.program_id(0)
    group = tl.program_id(1)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(K_GROUP, BLOCK_N + TAIL_N)
    band = pid // (GROUP_M * tiles_n)
    first_m = band * GROUP_M
    band_m = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % band_m
    pid_n = (pid % (GROUP_M * tiles_n)) // band_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # output pixels (n, p, q)
    offs_n = pid_n * (BLOCK_N + TAIL_N) + tl.arange(0, BLOCK_N)  # kernels within the group
    offs_c = tl.arange(0, BLOCK_K)  # channels within the block
    m_mask = offs_m < M
    n_mask = offs_n < K_GROUP
    n = offs_m // (P * Q)
    pq = offs_m % (P * Q)
    h_start = (pq // Q) * stride_h - pad_h  # top-left input pixel of each receptive field
    w_start = (pq % Q) * stride_w - pad_w
    x_row = n * x_stride_n + h_start * x_stride_h + w_start * x_stride_w + group * C_GROUP
    x_row = tl.multiple_of(x_row, X_ALIGN)  # said here: the flat loop adds no tap to it
    kernel = group * K_GROUP + offs_n  # [BLOCK_N]
    w_col = kernel * (TAPS_H * TAPS_W * C_TAP)
    # The weight as the loop walks it: [GROUPS, K_GROUP, TAPS, C_TAP], or one flat tap of
    # every tap's channels (FLAT_TAPS, where r and s stay 0).
    if FLAT_TAPS:
        w_taps = 1
        w_channels = TAPS_H * TAPS_W * C_TAP
    else:
        w_taps = TAPS_H * TAPS_W
        w_channels = C_TAP
    if W_DESCRIPTOR:
        weight_tiles = _weight_tiles(w_ptr, GROUPS, K_GROUP, w_taps, w_channels, BLOCK_N,
                                     BLOCK_K)
    if TAIL_N > 0:
        offs_tail = pid_n * (BLOCK_N + TAIL_N) + BLOCK_N + tl.arange(0, TAIL_N)
        tail_mask = offs_tail < K_GROUP
        kernel_tail = group * K_GROUP + offs_tail  # [TAIL_N]
        w_col_tail = kernel_tail * (TAPS_H * TAPS_W * C_TAP)
        if W_DESCRIPTOR:
            tail_tiles = _weight_tiles(w_ptr, GROUPS, K_GROUP, w_taps, w_channels, TAIL_N,
                                       BLOCK_K)
        acc_tail = tl.zeros((BLOCK_M, TAIL_N), dtype=ACC_DTYPE)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    blocks = tl.cdiv(w_channels, BLOCK_K) * w_taps
    r = 0
    s = 0
    c0 = 0
    for _ in range(0, blocks):
        h = h_start + r
        w = w_start + s
        # Out-of-image taps read the zero padding: masked, never loaded.
        if IN_IMAGE:
            row_mask = m_mask
        else:
            row_mask = m_mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)  # [BLOCK_M]
        row = tl.multiple_of(x_row + (r * x_stride_h + s * x_stride_w), X_ALIGN)
        # c0 is loop-carried, which hides that it is a multiple of BLOCK_K: say so.
        c = tl.max_contiguous(tl.multiple_of(c0 + offs_c, BLOCK_K), BLOCK_K)
        c_mask = c < w_channels
        if FLAT_TAPS:  # column c reads channel c % C_TAP of tap c // C_TAP's pixel
            # C_TAP is a multiple of X_ALIGN (_flat_reduction): so is every run of one tap's
            # columns, each run contiguous in the input.
            tap = c // C_TAP
            x_c = (tap // TAPS_W) * x_stride_h + (tap % TAPS_W) * x_stride_w + c % C_TAP
            x_c = tl.max_contiguous(tl.multiple_of(x_c, X_ALIGN), X_ALIGN)
        else:
            x_c = c
        x = tl.load(x_ptr + row[:, None] + x_c[None, :],  # [BLOCK_M, BLOCK_K]
                    mask=row_mask[:, None] & c_mask[None, :], other=0.0)
        if W_DESCRIPTOR:
            weight = weight_tiles.load([group, pid_n * BLOCK_N, r * TAPS_W + s, c0])
            weight = weight.reshape(BLOCK_N, BLOCK_K).T  # [BLOCK_K, BLOCK_N]
        else:
            weight = tl.load(w_ptr + w_col[None, :] + ((r * TAPS_W + s) * C_TAP + c)[:, None],
                             mask=c_mask[:, None] & n_mask[None, :], other=0.0)
        acc = tl.dot(x, weight, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
        if TAIL_N > 0:
            if W_DESCRIPTOR:
                weight = tail_tiles.load([group, pid_n * (BLOCK_N + TAIL_N) + BLOCK_N,
                                          r * TAPS_W + s, c0])
                weight = weight.reshape(TAIL_N, BLOCK_K).T  # [BLOCK_K, TAIL_N]
            else:
                weight = tl.load(
                    w_ptr + w_col_tail[None, :] + ((r * TAPS_W + s) * C_TAP + c)[:, None],
                    mask=c_mask[:, None] & tail_mask[None, :], other=0.0)
            acc_tail = tl.dot(x, weight, acc_tail, input_precision=INPUT_PRECISION,
                              out_dtype=ACC_DTYPE)
        if FLAT_TAPS:
            c0 += BLOCK_K
        else:
            c0, s, r = _next_block(c0, s, r, C_TAP, TAPS_W, BLOCK_K)

    _bias_relu_store(acc, b_ptr, y_ptr, offs_m, m_mask, kernel, n_mask, K, HAS_BIAS, ACC_DTYPE)
    if TAIL_N > 0:
        _bias_relu_store(acc_tail, b_ptr, y_ptr, offs_m, m_mask, kernel_tail, tail_mask, K,
                         HAS_BIAS, ACC_DTYPE)


@triton.jit
def _weight_tiles(w_ptr, GROUPS, K_GROUP, TAPS, C_TAP, ROWS: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    """A TMA descriptor over the weight [GROUPS, K_GROUP, TAPS, C_TAP], tiles of ROWS
    kernels x BLOCK_K channels of one tap."""
    return tl.make_tensor_descriptor(
        w_ptr, shape=[GROUPS, K_GROUP, TAPS, C_TAP],
        strides=[K_GROUP * TAPS * C_TAP, TAPS * C_TAP, C_TAP, 1],
        block_shape=[1, ROWS, 1, BLOCK_K])


@triton.jit
def _bias_relu_store(acc, b_ptr, y_ptr, offs_m, m_mask, kernel, n_mask, K,
                     HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """relu(acc + b[kernel]) into the NHWC output's [M, K] rows offs_m, columns kernel."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + kernel, mask=n_mask, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]
    acc = tl.maximum(acc, 0.0)
    tl.store(y_ptr + (offs_m * K)[:, None] + kernel[None, :],
             acc.to(y_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


@triton.jit
def _relu_gradient(dy, y, PACKED_MASK: tl.constexpr):
    """where(y > 0, dy, 0): the ReLU passes gradient only where it passed input.

    On the GPU in bf16 two elements at once: set.gt.u32.bf16x2 writes 0xffff into each
    half where y > 0 (NaN and -0 compare false, as in tl.where), and the AND keeps dy's
    bits there. The plain select compiles to a compare, two selects and two byte
    permutes per pair; this is two instructions, in the backward GEMMs' main loops.
    set.bf16x2 is PTX for sm_90 and newer only, and the interpreter cannot run PTX: both
    take the select (PACKED_MASK False, _packed_mask).
    """
    if PACKED_MASK:
        masked = tl.inline_asm_elementwise(
            "{ .reg .b32 zero, keep; mov.b32 zero, 0; set.gt.u32.bf16x2 keep, $2, zero; "
            "and.b32 $0, $1, keep; }",
            "=r,r,r", [dy, y], dtype=tl.bfloat16, is_pure=True, pack=2)
    else:
        masked = tl.where(y > 0, dy, 0.0)
    return masked


@triton.jit
def conv2d_relu_backward_input_kernel(
    dy_ptr, y_ptr, w_ptr, dx_ptr,
    N, C, H, W, K, P, Q, stride_h, stride_w, pad_h, pad_w,
    C_GROUP, K_GROUP, GROUPS,
    R: tl.constexpr, S: tl.constexpr, PACKED_MASK: tl.constexpr, W_DESCRIPTOR: tl.constexpr,
    MASKED: tl.constexpr, ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    EVEN_K: tl.constexpr, TAP_BITS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr = 8, TAIL_N: tl.constexpr = 0,
):
    """dx[n, h, w, c] = sum_{r, s, k} [y > 0] dy[n, p, q, k] w[k, c, r, s], p = (h + ph - r) / sh.

    A tap r reaches an output row only where h + ph - r is a multiple of the stride, so
    the input pixels are split into stride_h x stride_w phases (h mod sh, w mod sw) and
    each program sums over the taps of its phase alone: r = r0 + i * sh. conv1 (11x11,
    stride 4) then reduces over 3 x 3 taps per kernel instead of 11 x 11 mostly masked ones.
    Channels-last: GEMM rows are the input pixels (n, hh, ww) of one phase,
    h = hh * sh + phase_h, columns the channels of one group; the reduction runs over the
    phase's taps (i, j) in an outer order and blocks of BLOCK_K kernels inside each, one
    flat loop, so a grad_output tile is BLOCK_M pixel rows of contiguous kernels (dy, y
    [N, P, Q, K]) whose offsets and mask are computed once per tap. The weight is
    [GROUPS, R, S, C_GROUP, K_GROUP] (kernels innermost), dx [N, H, W, C]. W_DESCRIPTOR:
    its tile comes through a TMA tensor descriptor over it seen as
    [GROUPS, R * S, C_GROUP, K_GROUP], whose zero fill is the plain load's mask (kernels
    past K_GROUP, channels past C_GROUP read zeros, never the next channel's or tap's).
    MASKED: dy is the masked gradient already (the weight gradient's bias programs wrote
    it), y is not read: a lighter loop, whose A tile goes straight to the tensor cores.
    TAIL_N (a config's): each program also computes the TAIL_N channels after its BLOCK_N,
    a second accumulator beside the first: conv2's 48 channels a group as 32 + 16, all
    used, where a 64-wide tile used 75%. Its weights come through plain loads whatever
    W_DESCRIPTOR says: two TMA copies a step cost the loop more instructions than three
    cp.async (bench.static, bf16: 218 against 183 per 16 HGMMA, where its MMAs take 192).
    The loop's cost per grad_output row is what bounds the narrow tile: each row keeps its
    pointer, which a tap moves by one offset for all rows, and, with TAP_BITS (R S < 32),
    a bit per tap saying whether that tap's output pixel lies in the image, computed once,
    so a row's mask is one test per step, not four compares (EVEN_K: K_GROUP a multiple of
    BLOCK_K, no kernel mask): conv4's loop 256 -> 151 instructions per 8 HGMMA.
    """
    group = tl.program_id(1) % GROUPS
    phase = tl.program_id(1) // GROUPS
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    # The phase's first tap and tap count, and the output row its tap i = 0 reaches.
    r0 = (phase_h + pad_h) % stride_h
    s0 = (phase_w + pad_w) % stride_w
    taps_h = (R - r0 + stride_h - 1) // stride_h
    taps_w = (S - s0 + stride_w - 1) // stride_w
    p_offset = (phase_h + pad_h) // stride_h
    q_offset = (phase_w + pad_w) // stride_w
    h_phase = (H - phase_h + stride_h - 1) // stride_h  # input rows in this phase
    w_phase = tl.maximum((W - phase_w + stride_w - 1) // stride_w, 1)  # >= 1: a divisor
    hw_phase = h_phase * w_phase
    # Grouped launch order: GROUP_M row tiles share each column tile (a tap's weights) and
    # each row tile's grad_output is read by its column tiles while it is in L2.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(N * hw_phase, BLOCK_M)
    tiles_n = tl.cdiv(C_GROUP, BLOCK_N + TAIL_N)
    first_m = (pid // (GROUP_M * tiles_n)) * GROUP_M
    band_m = tl.maximum(tl.minimum(tiles_m - first_m, GROUP_M), 1)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % band_m
    pid_n = (pid % (GROUP_M * tiles_n)) // band_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # input pixels (n, hh, ww) of the phase
    offs_n = pid_n * (BLOCK_N + TAIL_N) + tl.arange(0, BLOCK_N)  # channels within the group
    offs_k = tl.arange(0, BLOCK_K)  # kernels within the block
    m_mask = offs_m < N * hw_phase
    n_mask = offs_n < C_GROUP
    n = offs_m // tl.maximum(hw_phase, 1)
    hh = (offs_m % tl.maximum(hw_phase, 1)) // w_phase
    ww = offs_m % w_phase
    p_start = hh + p_offset  # the output pixel tap (i, j) = (0, 0) reaches
    q_start = ww + q_offset
    dy_row = (n * P * Q + p_start * Q + q_start) * K + group * K_GROUP  # [BLOCK_M]
    dy_rows = dy_ptr + dy_row
    y_rows = y_ptr + dy_row
    w_col = group * (R * S * C_GROUP * K_GROUP) + offs_n * K_GROUP  # [BLOCK_N]
    WEIGHT_TMA: tl.constexpr = W_DESCRIPTOR and TAIL_N == 0
    if WEIGHT_TMA:
        weight_tiles = tl.make_tensor_descriptor(
            w_ptr, shape=[GROUPS, R * S, C_GROUP, K_GROUP],
            strides=[R * S * C_GROUP * K_GROUP, C_GROUP * K_GROUP, K_GROUP, 1],
            block_shape=[1, 1, BLOCK_N, BLOCK_K])
    if TAIL_N > 0:
        offs_tail = pid_n * (BLOCK_N + TAIL_N) + BLOCK_N + tl.arange(0, TAIL_N)
        tail_mask = offs_tail < C_GROUP
        w_col_tail = group * (R * S * C_GROUP * K_GROUP) + offs_tail * K_GROUP  # [TAIL_N]
        acc_tail = tl.zeros((BLOCK_M, TAIL_N), dtype=ACC_DTYPE)

    if TAP_BITS:
        # bit i S + j: whether tap (i, j) of the phase reaches an output pixel in the image
        in_columns = tl.zeros_like(q_start)
        for j in tl.static_range(S):
            in_columns |= tl.where((q_start - j >= 0) & (q_start - j < Q) & (j < taps_w),
                                   1 << j, 0)
        taps_in_image = tl.zeros_like(p_start)
        for i in tl.static_range(R):
            taps_in_image |= tl.where((p_start - i >= 0) & (p_start - i < P) & (i < taps_h),
                                      in_columns << (i * S), 0)
        taps_in_image = tl.where(m_mask, taps_in_image, 0)  # [BLOCK_M]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    k_blocks = tl.cdiv(K_GROUP, BLOCK_K)
    i = 0
    j = 0
    k0 = 0
    for _ in range(0, taps_h * taps_w * k_blocks):
        if TAP_BITS:
            row_mask = (taps_in_image & (1 << (i * S + j))) != 0
        else:
            p = p_start - i
            q = q_start - j
            row_mask = m_mask & (p >= 0) & (p < P) & (q >= 0) & (q < Q)  # [BLOCK_M]
        # k0 is loop-carried, which hides that it is a multiple of BLOCK_K: say so.
        k = tl.max_contiguous(tl.multiple_of(k0 + offs_k, BLOCK_K), BLOCK_K)
        if EVEN_K:
            k_mask = tl.full((BLOCK_K,), True, tl.int1)
        else:
            k_mask = k < K_GROUP
        # The tap moves every row by the same offset: one add to each row's pointer.
        columns = (k - (i * Q + j) * K)[None, :]
        dy_mask = row_mask[:, None] & k_mask[None, :]
        dy = tl.load(dy_rows[:, None] + columns, mask=dy_mask, other=0.0)
        if not MASKED:
            y = tl.load(y_rows[:, None] + columns, mask=dy_mask, other=0.0)
            dy = _relu_gradient(dy, y, PACKED_MASK)
        tap = (r0 + i * stride_h) * S + s0 + j * stride_w
        if WEIGHT_TMA:
            weight = weight_tiles.load([group, tap, pid_n * BLOCK_N, k0])
            weight = weight.reshape(BLOCK_N, BLOCK_K).T  # [BLOCK_K, BLOCK_N]
        else:
            weight = tl.load(w_ptr + w_col[None, :] + (tap * (C_GROUP * K_GROUP) + k)[:, None],
                             mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        acc = tl.dot(dy, weight, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
        if TAIL_N > 0:  # plain loads (WEIGHT_TMA is False with a tail)
            weight = tl.load(
                w_ptr + w_col_tail[None, :] + (tap * (C_GROUP * K_GROUP) + k)[:, None],
                mask=k_mask[:, None] & tail_mask[None, :], other=0.0)
            acc_tail = tl.dot(dy, weight, acc_tail, input_precision=INPUT_PRECISION,
                              out_dtype=ACC_DTYPE)
        k0, j, i = _next_block(k0, j, i, K_GROUP, taps_w, BLOCK_K)

    # Phases without taps (a kernel narrower than the stride) store their zeros too.
    h = hh * stride_h + phase_h
    w = ww * stride_w + phase_w
    dx_row = ((n * H + h) * W + w) * C + group * C_GROUP
    tl.store(dx_ptr + dx_row[:, None] + offs_n[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=m_mask[:, None] & n_mask[None, :])
    if TAIL_N > 0:
        tl.store(dx_ptr + dx_row[:, None] + offs_tail[None, :],
                 acc_tail.to(dx_ptr.dtype.element_ty), mask=m_mask[:, None] & tail_mask[None, :])


@triton.jit
def _input_tile_product(x_ptrs, x_mask, dy, acc, STAGE_X_IN_REGISTERS: tl.constexpr,
                        INPUT_PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """acc + dy @ x, x the [BLOCK_K, TAP_N] input tile at x_ptrs (zero where masked)."""
    x = tl.load(x_ptrs, mask=x_mask, other=0.0)
    x = through_registers(x, STAGE_X_IN_REGISTERS)
    return tl.dot(dy, x, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)


@triton.jit
def conv2d_relu_backward_weight_kernel(
    dy_ptr, y_ptr, x_ptr, dw_ptr, db_ptr, masked_ptr, taps_ptr,
    H, W, K, P, Q, stride_h, stride_w, pad_h, pad_w,
    x_stride_n, x_stride_h, x_stride_w, C_GROUP, C_TAP,
    NPQ, K_GROUP, GROUPS, CHUNK,
    R: tl.constexpr, S: tl.constexpr, TAPS_H: tl.constexpr, TAPS_W: tl.constexpr,
    X_ALIGN: tl.constexpr, PACKED_MASK: tl.constexpr, STAGE_X_IN_REGISTERS: tl.constexpr,
    WRITE_MASKED: tl.constexpr,
    ACC_DTYPE: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_M: tl.constexpr, EVEN_N: tl.constexpr, EVEN_K: tl.constexpr,
    TAPS_PER_PROGRAM: tl.constexpr, FLAT_TAPS: tl.constexpr, FLAT_MASK: tl.constexpr,
    SHIFTED_ROWS: tl.constexpr = False,
):
    """dw[k, r, s, c] = sum_{n,p,q} [y > 0] dy[n, p, q, k] x[n, p*sh-ph+r, q*sw-pw+s, c].

    Channels-last: GEMM rows are the kernels of one group, columns C_TAP channels of one
    tap (r, s) (a copied input's tap is a block or a row of pixels, see input_layout), and the
    reduction runs over output pixels (n, p, q), CHUNK of them per split. Both operand tiles
    are contiguous along their GEMM dimension: dy [NPQ, K] along kernels, x along channels.
    The pixels' (n, p, q) are divided out once and then stepped by BLOCK_K without division.
    Split ``split`` writes its partial sums to dw[split] [K, TAPS_H, TAPS_W, C_TAP] and
    db[split];
    with one split those are the gradients themselves. The bias gradient
    db[k] = sum_{n,p,q} [y > 0] dy[n, p, q, k] has programs of its own (the first
    ceil(K_GROUP / BLOCK_M) of axis 0), so that the GEMM's loop carries no branch.
    WRITE_MASKED: those programs also write the masked gradient [y > 0] dy to masked
    [NPQ, K] (they read every element of dy and y once), which the input gradient then
    reads alone (conv2d_relu_backward_input with output None).
    EVEN_M, EVEN_N, EVEN_K (_backward_weight_even) say a dimension is a whole number of
    tiles: its bounds mask is constant true and the copies need no per-vector predicate.
    TAPS_PER_PROGRAM = 2 (_pairs_taps: where it takes fewer column tiles, as conv2's 48
    channels per group and conv4's and conv5's 192) splits the column tile into two taps of
    BLOCK_N / 2 channels, the tap and the next, both reduced against the same grad_output
    tile: the MMA work of a full tile per loop iteration, 48 of 64 columns used, not of 128.
    FLAT_TAPS (_flat_taps: where it takes fewer column tiles still) lays every tap's C_TAP
    channels side by side as TAPS_H x TAPS_W x C_TAP columns, column j being channel
    j % C_TAP of tap t = j // C_TAP, (r, s) = (t // TAPS_W, t % TAPS_W): conv1's 9 taps of 48
    in 4 tiles of 128 (84% used) where pairs of taps took 5, conv2's 25 taps of 48 in
    10 (94%) where pairs took 13 (72%). FLAT_MASK (padding): whether a tap's pixel is in the
    input then depends on the column as well as the output pixel, a mask per 16 bytes of a
    row; without padding every tap of an output pixel is in the input.
    SHIFTED_ROWS (_shifted_rows: stride 1, the output the input's size, conv3 to conv5):
    output pixel m's tap (r, s) is input row m + (r - ph) W + (s - pw), so an input tile's
    row address is one multiply-add of m, and whether the tap lies in the image is a bit
    of a 16-byte record per output pixel (p, q) (taps_ptr, _taps_in_image), looked up as
    (p, q) steps, where stepping h, w and n and testing both taps' pixels took about twice
    the instructions: bf16 conv4's 64-row tile 607 -> 470 per 16 HGMMA.64x64 (issue ratio
    1.19 -> 0.92), which lets its 192 kernels take three 64-row tiles, none padded.
    """
    pid = tl.program_id(0)
    group = tl.program_id(1) % GROUPS
    split = tl.program_id(1) // GROUPS
    tiles_k = tl.cdiv(K_GROUP, BLOCK_M)
    start = split * CHUNK
    end = tl.minimum(start + CHUNK, NPQ)
    offs_r = tl.arange(0, BLOCK_K)  # output pixels within the block
    if pid < tiles_k:
        offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # kernels within the group
        kernel = group * K_GROUP + offs_m
        m_mask = (offs_m < K_GROUP) | EVEN_M
        bias_acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=ACC_DTYPE)  # summed once, after
        for pixel in range(start, end, BLOCK_K):
            rows = pixel + offs_r
            dy_offsets = kernel[:, None] + (rows * K)[None, :]  # [BLOCK_M, BLOCK_K]
            dy_mask = m_mask[:, None] & ((rows < end) | EVEN_K)[None, :]
            dy = tl.load(dy_ptr + dy_offsets, mask=dy_mask, other=0.0)
            y = tl.load(y_ptr + dy_offsets, mask=dy_mask, other=0.0)
            masked = _relu_gradient(dy, y, PACKED_MASK)
            if WRITE_MASKED:
                tl.store(masked_ptr + dy_offsets, masked, mask=dy_mask)
            bias_acc += masked.to(ACC_DTYPE)
        tl.store(db_ptr + split * K + kernel, tl.sum(bias_acc, axis=1).to(db_ptr.dtype.element_ty),
                 mask=m_mask)
    else:
        tile = pid - tiles_k
        TAP_N: tl.constexpr = BLOCK_N // TAPS_PER_PROGRAM  # columns (channels) of one tap
        columns = TAPS_H * TAPS_W * C_TAP if FLAT_TAPS else C_TAP
        tiles_n = tl.cdiv(columns, TAP_N)
        pid_m = tile % tiles_k
        pid_n = (tile // tiles_k) % tiles_n
        tap = (tile // (tiles_k * tiles_n)) * TAPS_PER_PROGRAM
        r = tap // TAPS_W
        s = tap % TAPS_W
        # The second tap (TAPS_PER_PROGRAM = 2), as a move (dr, ds) from the first; past the
        # last tap (an odd tap count) it reads and writes nothing.
        second_valid = tap + 1 < TAPS_H * TAPS_W
        dr = tl.where(second_valid, (tap + 1) // TAPS_W - r, 0)
        ds = tl.where(second_valid, (tap + 1) % TAPS_W - s, 0)
        # ... as masks of vectors: the interpreter's & of a scalar mask and a vector mask
        # made from a constexpr is an int32 array, which tl.load refuses.
        second_rows = tap + 1 + 0 * offs_r < TAPS_H * TAPS_W  # [BLOCK_K]
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # kernels within the group
        offs_n = pid_n * TAP_N + tl.arange(0, TAP_N)  # channels of the tap
        kernel = group * K_GROUP + offs_m
        m_mask = (offs_m < K_GROUP) | EVEN_M
        n_mask = (offs_n < columns) | EVEN_N
        # The input pixel (h, w) each of the first block's output pixels (n, p, q) reads at
        # this tap, and how one step of BLOCK_K output pixels moves it: q by BLOCK_K % Q
        # (w by that many strides), carrying into p (h) past the last column, into n past
        # the last row. h and w are stepped themselves, not recomputed from p and q.
        first = start + offs_r
        n = first // (P * Q)
        h = ((first % (P * Q)) // Q) * stride_h - pad_h + r  # [BLOCK_K]
        w = (first % Q) * stride_w - pad_w + s
        step_w = (BLOCK_K % Q) * stride_w
        step_h = ((BLOCK_K // Q) % P) * stride_h
        step_n = BLOCK_K // (P * Q)
        w_end = Q * stride_w - pad_w + s  # w of the column q = Q: the row's end
        h_end = P * stride_h - pad_h + r
        if FLAT_TAPS:  # tap 0's pixel, column j at its tap (col_r, col_s)
            # A tap's C_TAP channels are a multiple of X_ALIGN (_alignment): so is every run
            # of columns of one tap, each run contiguous in the input.
            col_tap = offs_n // C_TAP
            col_r = tl.max_constancy(col_tap // TAPS_W, X_ALIGN)  # [TAP_N]
            col_s = tl.max_constancy(col_tap % TAPS_W, X_ALIGN)
            x_col = group * C_GROUP + col_r * x_stride_h + col_s * x_stride_w + offs_n % C_TAP
            x_col = tl.max_contiguous(tl.multiple_of(x_col, X_ALIGN), X_ALIGN)
        else:
            x_col = group * C_GROUP + offs_n  # [TAP_N]
        second_shift = dr * x_stride_h + ds * x_stride_w
        acc = tl.zeros((BLOCK_M, TAP_N), dtype=ACC_DTYPE)
        acc_second = tl.zeros((BLOCK_M, TAP_N), dtype=ACC_DTYPE)
        if SHIFTED_ROWS:
            shift = ((r - pad_h) * W + (s - pad_w)) * x_stride_w + group * C_GROUP
            pq = first % (P * Q)  # [BLOCK_K]
            step_pq = BLOCK_K % (P * Q)
            word = tl.arange(0, 4)
            tap_bit = 1 << tap
            second_bit = tl.where(second_valid, 2 << tap, 0)
        for pixel in range(start, end, BLOCK_K):
            rows = pixel + offs_r
            row_in = (rows < end) | EVEN_K
            dy_offsets = kernel[:, None] + (rows * K)[None, :]  # [BLOCK_M, BLOCK_K]
            dy_mask = m_mask[:, None] & row_in[None, :]
            dy = tl.load(dy_ptr + dy_offsets, mask=dy_mask, other=0.0)
            y = tl.load(y_ptr + dy_offsets, mask=dy_mask, other=0.0)
            dy = _relu_gradient(dy, y, PACKED_MASK)
            if SHIFTED_ROWS:
                record = tl.load(taps_ptr + tl.multiple_of(pq * 4, 4)[:, None] + word[None, :])
                bits = tl.sum(record, axis=1)  # [BLOCK_K]: words 1 to 3 are 0
                x_mask = row_in & ((bits & tap_bit) != 0)
                x_row = tl.multiple_of(rows * x_stride_w + shift, X_ALIGN)
                acc = _input_tile_product(x_ptr + x_row[:, None] + offs_n[None, :],
                                          x_mask[:, None] & n_mask[None, :], dy, acc,
                                          STAGE_X_IN_REGISTERS, INPUT_PRECISION, ACC_DTYPE)
                if TAPS_PER_PROGRAM == 2:
                    x_mask = row_in & ((bits & second_bit) != 0)
                    x_row = tl.multiple_of(x_row + second_shift, X_ALIGN)
                    acc_second = _input_tile_product(
                        x_ptr + x_row[:, None] + offs_n[None, :],
                        x_mask[:, None] & n_mask[None, :], dy, acc_second,
                        STAGE_X_IN_REGISTERS, INPUT_PRECISION, ACC_DTYPE)
                pq += step_pq
                pq = tl.where(pq >= P * Q, pq - P * Q, pq)
            else:
                # 0 <= h < H as one unsigned compare (a negative h wraps above H).
                x_mask = (row_in & (h.to(tl.uint32, bitcast=True) < H.to(tl.uint32))
                          & (w.to(tl.uint32, bitcast=True) < W.to(tl.uint32)))  # [BLOCK_K]
                x_row = tl.multiple_of(n * x_stride_n + h * x_stride_h + w * x_stride_w, X_ALIGN)
                if FLAT_MASK:  # [BLOCK_K, TAP_N]: each column's tap moves the pixel
                    x_mask = (row_in[:, None] & n_mask[None, :]
                              & ((h[:, None] + col_r[None, :]).to(tl.uint32, bitcast=True)
                                 < H.to(tl.uint32))
                              & ((w[:, None] + col_s[None, :]).to(tl.uint32, bitcast=True)
                                 < W.to(tl.uint32)))
                else:
                    x_mask = x_mask[:, None] & n_mask[None, :]
                acc = _input_tile_product(x_ptr + x_row[:, None] + x_col[None, :], x_mask, dy,
                                          acc, STAGE_X_IN_REGISTERS, INPUT_PRECISION,
                                          ACC_DTYPE)
                if TAPS_PER_PROGRAM == 2:
                    h_second = h + dr
                    w_second = w + ds
                    x_mask = (row_in & second_rows
                              & (h_second.to(tl.uint32, bitcast=True) < H.to(tl.uint32))
                              & (w_second.to(tl.uint32, bitcast=True) < W.to(tl.uint32)))
                    x_row = tl.multiple_of(x_row + second_shift, X_ALIGN)
                    acc_second = _input_tile_product(
                        x_ptr + x_row[:, None] + x_col[None, :],
                        x_mask[:, None] & n_mask[None, :], dy, acc_second,
                        STAGE_X_IN_REGISTERS, INPUT_PRECISION, ACC_DTYPE)
                w += step_w
                carry_q = w >= w_end
                w = tl.where(carry_q, w - Q * stride_w, w)
                h += step_h + tl.where(carry_q, stride_h, 0)
                carry_p = h >= h_end
                h = tl.where(carry_p, h - P * stride_h, h)
                n += step_n + carry_p.to(tl.int32)
        # dw[split, kernel, tap, channel]: [K, TAPS_H, TAPS_W, C_TAP] per split
        dw_row = (split * K + kernel) * (TAPS_H * TAPS_W * C_TAP) + tap * C_TAP
        tl.store(dw_ptr + dw_row[:, None] + offs_n[None, :], acc.to(dw_ptr.dtype.element_ty),
                 mask=m_mask[:, None] & n_mask[None, :])
        if TAPS_PER_PROGRAM == 2:
            tl.store(dw_ptr + (dw_row + C_TAP)[:, None] + offs_n[None, :],
                     acc_second.to(dw_ptr.dtype.element_ty),
                     mask=(m_mask & (tap + 1 + 0 * offs_m < TAPS_H * TAPS_W))[:, None]
                     & n_mask[None, :])


@triton.jit
def split_sum_kernel(partial_ptr, first_ptr, second_ptr, FIRST, SECOND, SPLIT, FIRST_PROGRAMS,
                     ACC_DTYPE: tl.constexpr, BLOCK: tl.constexpr):
    """first [FIRST], second [SECOND] = the sums over the leading axis of the two arrays laid
    end to end in partial, [SPLIT, FIRST] then [SPLIT, SECOND] (the weight's partial sums,
    then the bias's), in a fixed order: one launch for both. The first FIRST_PROGRAMS
    programs sum the first array, the others the second."""
    pid = tl.program_id(0)
    in_first = pid < FIRST_PROGRAMS
    offsets = tl.where(in_first, pid, pid - FIRST_PROGRAMS) * BLOCK + tl.arange(0, BLOCK)
    numel = tl.where(in_first, FIRST, SECOND)
    partial = partial_ptr + tl.where(in_first, 0, SPLIT * FIRST)
    in_bounds = offsets < numel
    acc = tl.zeros((BLOCK,), dtype=ACC_DTYPE)
    for split in range(SPLIT):
        acc += tl.load(partial + split * numel + offsets, mask=in_bounds, other=0.0)
    if in_first:
        tl.store(first_ptr + offsets, acc.to(first_ptr.dtype.element_ty), mask=in_bounds)
    else:
        tl.store(second_ptr + offsets, acc.to(second_ptr.dtype.element_ty), mask=in_bounds)


@triton.jit
def fold_pixels_kernel(x_ptr, out_ptr, C, H, W, H_OUT, W_OUT, out_stride_row,
                       stride_n, stride_c, stride_h, stride_w,
                       PH: tl.constexpr, PW: tl.constexpr, LEAD: tl.constexpr,
                       C_PIXEL: tl.constexpr, BLOCK_W: tl.constexpr):
    """out [N, H_OUT, W_OUT, C_PIXEL] = x [N, C, H, W] (any strides) moved by (PH, PW), zero
    outside x and past its C channels: a folded input (conv2d_relu_fold_input) in one pass,
    every element of out written once. A program per (row of out, BLOCK_W pixels of it):
    no division per pixel. Its columns start LEAD (a multiple of 8, >= PW) before a multiple
    of BLOCK_W in x, so that each channel's row is read in 16-byte pieces, and the pixels
    are written in 16-byte pieces too (PW even)."""
    row = tl.program_id(0)  # n * H_OUT + h_out
    n = row // H_OUT
    h = row % H_OUT - PH
    w = tl.program_id(1) * BLOCK_W - LEAD + tl.arange(0, BLOCK_W)
    c = tl.arange(0, C_PIXEL)
    h_row = h + 0 * w  # a vector: the interpreter refuses masks that mix in a scalar
    inside = (w >= 0) & (w < W) & (h_row >= 0) & (h_row < H)
    source = (x_ptr + n * stride_n + h * stride_h
              + c[:, None] * stride_c + w[None, :] * stride_w)  # [C_PIXEL, BLOCK_W]
    values = tl.load(source, mask=(c < C)[:, None] & inside[None, :], other=0.0)
    # Stored flat, pixel after pixel: vectors of 8 bf16 (a pixel is 4), with the row's bounds
    # as flat offsets whose 16-element multiples the compiler sees (out_stride_row).
    start = row * out_stride_row
    target = start + (tl.program_id(1) * BLOCK_W - LEAD + PW) * C_PIXEL + tl.arange(
        0, BLOCK_W * C_PIXEL)
    tl.store(out_ptr + target, tl.reshape(tl.trans(values), [BLOCK_W * C_PIXEL]),
             mask=(target >= start) & (target < start + out_stride_row))


@triton.jit
def space_to_depth_kernel(x_ptr, out_ptr, C, H, W, HS, WS, out_stride_row,
                          stride_n, stride_c, stride_h, stride_w,
                          PH: tl.constexpr, PW: tl.constexpr, LEAD: tl.constexpr,
                          SH: tl.constexpr, SW: tl.constexpr, C_POW2: tl.constexpr,
                          C_TAP: tl.constexpr, BLOCK_WS: tl.constexpr):
    """out [N, HS, WS, C_TAP] = x [N, C, H, W] (any strides) in blocks of SH x SW pixels: out
    pixel (hs, ws) holds x's pixels (hs SH + dy - PH, ws SW + dx - PW), channel c at
    c SH SW + dy SW + dx (zero outside x and past C). A program per row of out. The rows
    of x are read from LEAD (a multiple of 8, >= PW) columns before 0, in 16-byte pieces,
    and moved by LEAD - PW columns in registers (tl.gather)."""
    row = tl.program_id(0)  # n * HS + hs
    n = row // HS
    BLOCK: tl.constexpr = BLOCK_WS * SW
    i = tl.arange(0, BLOCK)
    c = tl.arange(0, C_POW2)[:, None, None]  # [C_POW2, 1, 1]
    h = ((row % HS) * SH - PH + tl.arange(0, SH))[None, :, None]  # [1, SH, 1]
    w = (i - LEAD)[None, None, :]  # [1, 1, BLOCK]
    zero = tl.zeros((C_POW2, SH, BLOCK), dtype=tl.int32)  # masks of one shape for the interpreter
    inside = ((c + zero) < C) & ((h + zero) >= 0) & ((h + zero) < H) & ((w + zero) >= 0) & (
        (w + zero) < W)
    window = tl.load(x_ptr + n * stride_n + c * stride_c + h * stride_h + w * stride_w,
                     mask=inside, other=0.0)  # [C_POW2, SH, BLOCK]
    moved = tl.gather(window, ((i + (LEAD - PW)) % BLOCK)[None, None, :] + zero, 2)
    blocks = tl.permute(tl.reshape(moved, [C_POW2, SH, BLOCK_WS, SW]), [2, 0, 1, 3])
    blocks = tl.reshape(blocks, [BLOCK_WS, C_POW2 * SH * SW])
    ws = tl.arange(0, BLOCK_WS)
    j = tl.arange(0, C_POW2 * SH * SW)
    tl.store(out_ptr + row * out_stride_row + ws[:, None] * C_TAP + j[None, :], blocks,
             mask=(ws < WS)[:, None] & (j < C_TAP)[None, :])

def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int, **extra):
    return triton.Config({"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, **extra},
                         num_warps=warps, num_stages=stages)


# float64's one tile: any larger one's float64 operands overflow shared memory, and at
# 16 and 32 bits this one misses issue 11's issue-ratio budget on every launch (bench.static).
_FLOAT64 = (64, 64, 32, 4, 2)
# Small tiles for 16- and 32-bit operands on GPUs with less shared memory per block than
# Hopper's 227 KiB (an A100's 163 KiB, an L4's or RTX 4090's 99 KiB), where the Hopper tiles
# may not fit (fp32 conv weight gradients need 209 KiB and more): there they are candidates
# too, beside the Hopper tiles that fit. On Hopper they are not: each misses issue 11's
# issue-ratio budget (1.14 to 2.14 at sm_90a), a Hopper budget.
_SMALL = [(128, 64, 32, 4, 4), _FLOAT64]


def _forward_configs() -> dict:
    """The forward's tiles per element size, the one the launcher uses first (bench.static).
    The 64-wide tile is for a group of kernels that 128-wide tiles pad (conv4's 192: three
    tiles of 64, not two of 128 of which a quarter is padding); the pruner
    (kernels.autotune_pruner) keeps it where it pads the least, and with conv1's tail
    (TAIL_N, 64 + 32 kernels) it takes 3 stages: at 4 its 113 KB of shared memory let one
    program on an SM, whose prologue and epilogue then ran alone (bench.static, bf16:
    68.9 us against 42.3; conv4's forward 37.8 at either, tf32 85.7 against 87.2). Every
    16- and 32-bit tile meets issue 11's budgets at every launch that keeps it
    (bench/results/static-sm90.md, every candidate)."""
    tiles = [(128, 128, 64, 8, 3), (128, 128, 32, 4, 4), (128, 64, 64, 4, 3),
             (128, 128, 16, 4, 4)]
    return {2: [_config(*t, GROUP_M=8) for t in tiles],
            4: [_config(*t, GROUP_M=8) for t in tiles + [(128, 64, 16, 4, 4)]],
            8: [_config(*_FLOAT64, GROUP_M=8)]}


def _backward_input_configs() -> dict:
    """The input gradient's tiles per (element size, MASKED), the launcher's first
    (bench.static) first. No 128x128 tile on 4 warps: its float32 accumulator and the
    masked grad_output tile in registers spill (conv4's weight gradient in tf32: 136
    bytes). 64-wide tiles, for groups of channels that 128 columns pad (conv2's 48 per
    group, conv4's and conv5's 192: kernels.autotune_pruner), only where grad_output comes
    masked:
    the ReLU mask, applied in registers, costs the same per grad_output element at any
    width, and at 64 columns the loop issued 1.5x what its MMAs take (bf16 128x64x64 on 4
    warps and 256x64x64 on 8: 386 instructions per 8 HGMMA.64x64x16, before the kernel's
    TAP_BITS and row pointers; issue 11's budget is 1.0); masked, 151 per 8 (0.59).
    256x64x64 on 8 warps: slower than 128x64x64 on 4 at every launch (bench.static), out
    of shared memory in 32 bits. Smaller tiles missed the budget at every launch (1.14 to
    2.14, measured before TAP_BITS; _SMALL's are not measured since) but one, added with
    TAP_BITS: 32 + 16 columns (TAIL_N) for a masked grad_output's groups of 33 to 48
    channels (conv2's 48, which 64 columns pad by a third): bf16 183 instructions per
    16 HGMMA (0.95 of its MMAs' 192 cycles), tf32 381 per 32 (0.99); bench.static's bf16
    conv2 input gradient 105.1 -> 78.8 us."""
    wide, narrow = [(128, 128, 64, 8, 3)], [(128, 64, 64, 4, 4)]
    configs = {}
    for size in (2, 4):
        configs[size, False] = [_config(*t) for t in wide]
        configs[size, True] = [_config(*t) for t in wide + narrow] + [
            _config(128, 32, 64, 4, 4, TAIL_N=16)]
    configs[8, False] = configs[8, True] = [_config(*_FLOAT64)]
    return configs


def _backward_weight_configs() -> dict:
    """The weight gradient's tiles per (element size, SHIFTED_ROWS). 16-bit shifted rows
    (conv3 to conv5): 64 kernel rows on 4 warps, which pad conv4's and conv5's 192 kernels
    not at all (two 128-row tiles used 75%); its loop meets issue 11's budget only with the
    shifted rows' lighter address and mask code (bench.static, bf16: conv4 62.1 -> 47.0 us,
    conv5 32.4 -> 29.6, conv3 58.9 -> 59.2 but its split sum 11.2 -> 2.9 at 2 splits, not
    9). Elsewhere: 128 pixels per step, which halves the
    loop's fixed cost per MMA (bf16 issue ratio 0.87-0.91 against 0.95-1.12 at 64, and what
    lets bf16 take two taps per program; conv1 and conv2 fit it in tf32 too, two taps of
    64 columns), 3 stages where they fit: with 2 the loop waits for every copy it issued,
    the iteration before, and the copies' latency sets its pace (bench.static: conv4 bf16
    105 us against 66 us of MMA work). 32-bit operands take 64-pixel steps where 128 do not
    fit in shared memory (fp32 conv3 to conv5)."""
    wide = [(128, 128, 128, 8, 3), (128, 128, 128, 8, 2)]
    configs = {(2, False): [_config(*t) for t in wide],
               (2, True): [_config(64, 128, 128, 4, 3)],
               (8, False): [_config(*_FLOAT64)]}
    configs[4, False] = [_config(*t) for t in wide + [(128, 128, 64, 8, 3)]]
    configs[4, True], configs[8, True] = configs[4, False], configs[8, False]
    return configs


def _every_config(by_size: dict, **extra) -> list:
    """The autotuner's list: every element size's configs once, in order, then the small
    tiles of GPUs with less shared memory (_SMALL, with ``extra`` constexprs)."""
    configs: list = []
    for size_configs in [*by_size.values(), [_config(*t, **extra) for t in _SMALL]]:
        seen = {config_key(c) for c in configs}
        configs += [c for c in size_configs if config_key(c) not in seen]
    return configs


# INPUT_PRECISION is in every key: a tile chosen for ieee float32 may not fit the shared
# memory of the tf32 code (tests/ops/test_autotune_keys.py). W_DESCRIPTOR too: the two
# weight paths are different code (TMA's barriers and swizzled tiles against cp.async).
_SMALL_CONFIGS = [_config(*t) for t in _SMALL]
_FORWARD_CONFIGS = _forward_configs()


def _flat_reduction(in_image: bool, taps: int, c_tap: int, block_k: int,
                    x_align: int) -> bool:
    """The forward's FLAT_TAPS: the reduction laid flat over the taps where that takes
    fewer blocks than blocks of one tap each (conv1's 9 taps of 48 channels: 7 blocks of
    64, not 9), and only without padding (IN_IMAGE), where no column needs a mask, and where
    a tap's channels are whole runs of X_ALIGN (the kernel's contiguity hint; every layout
    of _channels_last_input has them)."""
    return (bool(in_image) and c_tap % x_align == 0
            and triton.cdiv(taps * c_tap, block_k) < taps * triton.cdiv(c_tap, block_k))


def _tail_n(k_group: int, block_n: int, element_size: int, flat: bool) -> int:
    """The forward's TAIL_N: 32 more kernels per program of a 64-wide tile where 96-wide
    tiles pad the group's kernels less than 64-wide ones (conv1's 96 kernels: one tile of
    64 + 32, all used, where a 128-wide tile used 75%), else 0.
    - 32-bit operands (tf32): bench.static predicts conv1's forward 108.8 -> 81.6 us on the
      H100 SXM.
    - 16-bit operands only on a flat reduction (``flat``, _flat_reduction): over blocks of
      one tap (16 of conv1's 48 channels) the tail's loop issued 1.41x what its MMAs take
      (tensor cores twice as fast as tf32's, the same instructions), 57.5 us, slower than
      the 128-wide tile's 54.4; blocks of 64 spread the loop's fixed cost over 4x the MMAs.
      Not modelled: the tail's wgmmas read both operands from shared memory, the input
      tile twice, 149 bytes a cycle per SM at the MMAs' pace; if they share the 128 bytes
      a cycle of LDS (unmeasured), the MMAs take 1.17x as long, ~49 us, still below 54.4.
    - 64-wide tiles only: 128 + 64 (conv4's 192) takes 246 KB of shared memory in tf32, and
      in bf16 was predicted slower than three 64-wide tiles (48.0 against 37.8 us)."""
    if (block_n != 64 or not (element_size == 4 or (element_size == 2 and flat))
            or triton.cdiv(k_group, 96) * 96 >= triton.cdiv(k_group, 64) * 64):
        return 0
    return 32


def _forward_flat(a: dict) -> bool:
    """_flat_reduction at a launch's arguments and config."""
    return _flat_reduction(a["IN_IMAGE"], a["TAPS_H"] * a["TAPS_W"], a["C_TAP"], a["BLOCK_K"],
                           a["X_ALIGN"])


def _forward_tail(args: dict):
    """The pruner's view of _tail_n: (K_GROUP, a config's blocks) -> TAIL_N at the launch's
    arguments."""
    return lambda k_group, blocks: _tail_n(k_group, blocks["BLOCK_N"],
                                           args["x_ptr"].element_size(),
                                           _forward_flat({**args, **blocks}))


_forward_kernel = triton.heuristics({
    "FLAT_TAPS": _forward_flat,
    "TAIL_N": lambda a: _tail_n(a["K_GROUP"], a["BLOCK_N"], a["x_ptr"].element_size(),
                                a["FLAT_TAPS"])})(
    conv2d_relu_forward_kernel)
_forward_autotuned = triton.autotune(
    configs=_every_config(_FORWARD_CONFIGS, GROUP_M=8),
    key=["M", "H", "W", "K_GROUP", "GROUPS", "P", "Q", "stride_h", "stride_w", "pad_h", "pad_w",
         "C_TAP", "R", "S", "TAPS_H", "TAPS_W", "X_ALIGN", "W_DESCRIPTOR",
         "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": autotune_pruner(
        "conv2d_relu", _FORWARD_CONFIGS, "x_ptr", "K_GROUP", depth="C_TAP",
        small=_SMALL_CONFIGS, tail=_forward_tail)})(
        _forward_kernel)
_backward_input_kernel = triton.heuristics({
    "EVEN_K": lambda a: a["K_GROUP"] % a["BLOCK_K"] == 0,
    "TAP_BITS": lambda a: a["R"] * a["S"] < 32})(conv2d_relu_backward_input_kernel)
_BACKWARD_INPUT_CONFIGS = _backward_input_configs()
_backward_input_autotuned = triton.autotune(
    configs=_every_config(_BACKWARD_INPUT_CONFIGS),
    key=["N", "H", "W", "C_GROUP", "K_GROUP", "GROUPS", "P", "Q", "R", "S", "stride_h",
         "stride_w", "pad_h", "pad_w", "W_DESCRIPTOR", "MASKED", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": autotune_pruner(
        "conv2d_relu", _BACKWARD_INPUT_CONFIGS, "dy_ptr", "C_GROUP", "MASKED",
        small=_SMALL_CONFIGS,
        tail=lambda args: lambda c_group, blocks: blocks.get("TAIL_N", 0))})(
        _backward_input_kernel)


def _pairs_taps(c_tap: int, block_n: int, taps: int) -> bool:
    """Whether a weight-gradient program reduces two taps of BLOCK_N / 2 channels each (the
    tap and the next) rather than one of BLOCK_N: where that takes fewer column tiles.
    conv1's and conv2's 48 channels fill 64 columns, not 128; conv4's and conv5's 192 per
    tap take 3 x 5 = 15 tiles of two taps (90% of the columns used) where single taps took
    2 x 9 = 18 (75%); conv3's 256 stay single (18 against 20). At a 64-pixel step bf16's
    loop would then issue more than its MMAs take (issue ratio 1.04-1.12); the first
    config's 128-pixel step brings it to 0.90."""
    half = block_n // 2
    return taps > 1 and triton.cdiv(c_tap, half) * triton.cdiv(taps, 2) < (
        triton.cdiv(c_tap, block_n) * taps)


def _flat_taps(c_tap: int, block_n: int, taps: int) -> bool:
    """Whether the weight gradient lays every tap's channels side by side (FLAT_TAPS):
    where that takes at most 7/8 of the column tiles of one tap, or two, per program.
    conv1's 11 folded tap rows of 48: 5 tiles, not 6 pairs; conv2's 25 taps of 48: 10, not
    13. Not conv4's and conv5's 9 of 192 (14 against 15 pairs: bench.static predicts
    conv5 slower flat, 42.6 against 39.3 us, its mask per column and split-K over more
    programs costing more than the tile saves), nor conv3's 9 of 256 (18 either way)."""
    flat = triton.cdiv(taps * c_tap, block_n)
    single = taps * triton.cdiv(c_tap, block_n)
    pairs = triton.cdiv(c_tap, block_n // 2) * triton.cdiv(taps, 2)
    return taps > 1 and 8 * flat <= 7 * min(single, pairs)


def _flat(args) -> bool:
    return _flat_taps(args["C_TAP"], args["BLOCK_N"], args["TAPS_H"] * args["TAPS_W"])


def _taps_per_program(args) -> int:
    if _flat(args):
        return 1
    taps = args["TAPS_H"] * args["TAPS_W"]
    return 2 if _pairs_taps(args["C_TAP"], args["BLOCK_N"], taps) else 1


def _columns(args) -> int:
    """The weight gradient's GEMM columns per tap (per all taps, FLAT_TAPS)."""
    return args["C_TAP"] * (args["TAPS_H"] * args["TAPS_W"] if _flat(args) else 1)


def _weight_grad_programs(k_group: int, taps: int, c_tap: int, block_m: int,
                          block_n: int) -> int:
    """The weight gradient's programs along grid axis 0 at a tile: the bias programs, then
    the GEMM tiles of every tap (pair of taps; all taps at once: FLAT_TAPS), as that tile's
    heuristics lay the taps."""
    if _flat_taps(c_tap, block_n, taps):
        per_tap, width, pair = 1, taps * c_tap, 1
    else:
        pair = 2 if _pairs_taps(c_tap, block_n, taps) else 1
        per_tap, width = triton.cdiv(taps, pair), c_tap
    tiles_k = triton.cdiv(k_group, block_m)
    return tiles_k * (1 + triton.cdiv(width, block_n // pair) * per_tap)


# Which of the weight gradient's GEMM dimensions are whole tiles (at batch 128 the pixels
# always are, NPQ = 128 P Q; conv2, conv3 and conv5's kernels and conv3's channels too).
_backward_weight_even = triton.heuristics({
    "EVEN_M": lambda a: a["K_GROUP"] % a["BLOCK_M"] == 0,
    "EVEN_N": lambda a: _columns(a) % (a["BLOCK_N"] // _taps_per_program(a)) == 0,
    "EVEN_K": lambda a: a["NPQ"] % a["BLOCK_K"] == 0 and a["CHUNK"] % a["BLOCK_K"] == 0,
    "TAPS_PER_PROGRAM": _taps_per_program,
    "FLAT_TAPS": _flat,
    "FLAT_MASK": lambda a: _flat(a) and (a["pad_h"] != 0 or a["pad_w"] != 0),
})(conv2d_relu_backward_weight_kernel)
_BACKWARD_WEIGHT_CONFIGS = _backward_weight_configs()
_backward_weight_autotuned = triton.autotune(
    configs=_every_config(_BACKWARD_WEIGHT_CONFIGS),
    key=["NPQ", "H", "W", "K_GROUP", "GROUPS", "P", "Q", "stride_h", "stride_w", "pad_h",
         "pad_w", "C_TAP", "CHUNK", "R", "S", "TAPS_H", "TAPS_W", "X_ALIGN", "WRITE_MASKED",
         "SHIFTED_ROWS", "INPUT_PRECISION"],
    prune_configs_by={"early_config_prune": autotune_pruner(
        "conv2d_relu", _BACKWARD_WEIGHT_CONFIGS, "dy_ptr", flag="SHIFTED_ROWS",
        small=_SMALL_CONFIGS)})(
        _backward_weight_even)
# Every config's BLOCK_K divides 128, so the split boundaries (multiples of 128) are the
# same whichever config wins.
_SPLIT_ALIGN = 128


def _kernel_and_blocks(autotuned, kernel, n_gemm: int):
    """The autotuned kernel on CUDA; under the interpreter the raw kernel with big fixed tiles.

    Big tiles keep the interpreter's per-op cost down; the column tile shrinks to the GEMM's
    width (conv1's 3 input channels in the input gradient) but stays >= 16 for tl.dot.
    """
    if interpreting():
        block_n = max(16, min(128, triton.next_power_of_2(n_gemm)))
        return kernel, {"BLOCK_M": 128, "BLOCK_N": block_n, "BLOCK_K": 128}
    return autotuned, {}


def _packed_mask(dtype: torch.dtype) -> bool:
    """The backward kernels' ReLU mask in packed PTX (see _relu_gradient): bf16 on a target
    of compute capability 9.0 or newer, where set.bf16x2 exists (ptxas refuses it for sm_80
    to sm_89: A100, A10, L4, RTX 30xx and 40xx take the select). Not a plain select
    everywhere: for sm_90a the select's main loops are 21-26% longer (conv2's input gradient
    269 instructions per 4 HGMMA against 213, its weight gradient 555 per 16 against 459)."""
    return dtype == torch.bfloat16 and (nvidia_capability() or 0) >= 90


# The input gradient's fewest channels per group for which it takes descriptors by default.
_DESCRIPTOR_MIN_CHANNELS = 16


def _weight_descriptors(requested: bool | None, weight_taps: Tensor, shape: tuple,
                        strides: tuple) -> bool:
    """Whether a kernel reads its weight tiles through a TMA tensor descriptor over
    ``weight_taps`` seen as ``shape`` with ``strides`` (elements).

    None: wherever it can (tensor_descriptors_available and the view tma_compatible);
    False: the plain masked loads; True: descriptors, or a ValueError saying why not.
    Every candidate's block meets TMA's own rules (rows of >= 16 bytes, no dimension over
    256: tests/ops/test_conv2d_relu.py), so only the tensor's alignment can rule them out.
    """
    if requested is False:
        return False
    size = weight_taps.element_size()
    if not tensor_descriptors_available():
        why = ("this Triton or its target has no TMA tensor descriptors "
               "(tl.make_tensor_descriptor, compute capability 9.0 or newer)")
    elif not tma_compatible(weight_taps, shape, strides):
        rows = shape[-1] * size
        why = (f"the weight seen as {list(shape)} breaks TMA's 16-byte alignment: "
               + (f"rows of {shape[-1]} x {size} = {rows} bytes" if rows % 16
                  else "its base address"))
    else:
        return True
    if requested:
        raise ValueError(f"conv2d_relu: tensor_descriptors=True, but {why}")
    return False


def _input_precision(dtype: torch.dtype) -> str:
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


def _output_size(h: int, w: int, r: int, s: int, stride: list[int], padding: list[int]):
    return (h + 2 * padding[0] - r) // stride[0] + 1, (w + 2 * padding[1] - s) // stride[1] + 1


# What a weight-gradient program costs beyond its loop (its prologue and epilogue, the
# pipeline's first loads), in loop iterations: about 2 (bench.static, sm_90a: 2,900 issue
# cycles and a load latency against 1,390 per bf16 iteration).
_PROGRAM_BLOCKS = 2


def weight_grad_splits(tiles: int, steps: int, sms: int) -> int:
    """How many programs share each tile's reduction of ``steps`` blocks of _SPLIT_ALIGN
    output pixels (split-K), on ``sms`` SMs; ``tiles`` counts the bias programs too.

    At least one program per SM (issue 11's budget) and at most twice two per SM, but none
    shorter than 8 blocks (1024 pixels), which comes first: of those, the split whose
    critical path is the shortest (the programs of the busiest SM, ceil(programs / SMs),
    times the blocks of one split and _PROGRAM_BLOCKS), the fewest splits on a tie (each
    writes a float32 partial of the whole gradient, summed after). conv3 (57 programs per
    split, 169 blocks): 9 splits, 4 programs of 19 blocks on the busiest SM (84), where two
    programs per SM (5 splits) gave 3 of 34 (108); conv1 (6 per split, 3025 blocks): 22
    splits, 1 of 138 (140), where 44 gave 2 of 69 (142).
    """
    most = max(1, min(2 * triton.cdiv(2 * sms, tiles), triton.cdiv(steps, 8)))
    least = min(triton.cdiv(sms, tiles), most)  # fewer where the blocks run out first
    best, best_path = 1, None
    for split in range(least, most + 1):
        chunk = triton.cdiv(steps, split)
        real = triton.cdiv(steps, chunk)  # splits left once each has whole blocks
        path = triton.cdiv(real * tiles, sms) * (chunk + _PROGRAM_BLOCKS)
        if best_path is None or path < best_path:
            best, best_path = real, path
    return best


def _shifted_rows(kind: str, stride: list[int], output_size: tuple, input_size: tuple,
                  taps: int, flat: bool, dtype: torch.dtype) -> bool:
    """The weight gradient's SHIFTED_ROWS: where output pixel m's tap (r, s) is input row
    m + (r - ph) W + (s - pw) (an input of its own layout, stride 1, the output the input's
    size: conv3 to conv5), and where the taps are not laid flat. 16-bit operands only on
    the GPU: the 32-bit tiles' 8 warps load the 16-byte records 8 bytes a thread (issue
    11's budget); under the interpreter every dtype, which is how the CPU tests run it."""
    return (kind == "plain" and list(stride) == [1, 1] and tuple(output_size) == tuple(input_size)
            and 1 < taps < 32 and not flat
            and (torch.empty((), dtype=dtype).element_size() == 2 or interpreting()))


def _taps_in_image(p: int, q: int, r: int, s: int, padding: list[int], input_size: tuple,
                   device: torch.device) -> Tensor:
    """[P Q, 4] int32 records, one per output pixel (p, q) of an image: in word 0, bit
    r S + s says whether its tap (r, s) lies in the input (stride 1); words 1 to 3 are 0, so
    that a record is one 16-byte load."""
    h, w = input_size
    rows = torch.arange(p, device=device)[:, None, None, None] - padding[0]
    columns = torch.arange(q, device=device)[None, :, None, None] - padding[1]
    tap_r = torch.arange(r, device=device)[None, None, :, None]
    tap_s = torch.arange(s, device=device)[None, None, None, :]
    inside = ((rows + tap_r >= 0) & (rows + tap_r < h)
              & (columns + tap_s >= 0) & (columns + tap_s < w))  # [P, Q, R, S]
    bits = torch.arange(r * s, device=device, dtype=torch.int32)
    records = torch.zeros((p * q, 4), dtype=torch.int32, device=device)
    records[:, 0] = (inside.reshape(p * q, r * s).to(torch.int32) << bits).sum(1)
    return records


def _weight_grad_split(tiles: int, npq: int, device: torch.device) -> int:
    """weight_grad_splits on the device's SMs; one under the interpreter, where programs run
    one after another anyway."""
    if interpreting():
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return weight_grad_splits(tiles, triton.cdiv(npq, _SPLIT_ALIGN), sms)


# conv1's 3 channels are too few for a channel block: below this many channels per group
# (groups == 1 only) the input is copied once into a zero-padded NHWC buffer of channels
# rounded up to 4, where one tap row's S pixels x 4 channels lie contiguously, and that row
# is the reduction block (11 x 4 = 44 -> 48 for conv1: 11 row taps of 48, not 121 of 16).
_FOLD_BELOW_CHANNELS = 16
_FOLD_CHANNELS = 4
# fold_pixels_kernel's pixels per program: conv1's rows of 232 in one program
_FOLD_BLOCK_W = 256


def _alignment(*strides: int) -> int:
    """The largest power of two <= 16 dividing every stride: how many elements the kernel
    may assume every row offset is a multiple of (16-byte loads need 8 bf16 or 4 fp32)."""
    return math.gcd(16, *strides)


def _folds(channels: int, groups: int) -> bool:
    return groups == 1 and channels < _FOLD_BELOW_CHANNELS


def folds(input_size: list[int], groups: int) -> bool:
    """Whether the kernels read this conv's input as a copy (few channels, one group: conv1's
    image), which conv2d_relu_fold_input makes once for the forward and weight gradient."""
    return _folds(input_size[1], groups)


def _space_to_depth(weight_size: list[int], stride: list[int]) -> bool:
    """Whether a copied input is laid out in blocks of stride x stride pixels: strides of
    powers of two above 1, the kernel at least as large (conv1's 11x11 at 4)."""
    return all(st > 1 and st & (st - 1) == 0 and size >= st
               for st, size in zip(stride, weight_size[2:]))


def input_layout(input_size: list[int], weight_size: list[int], stride: list[int],
                 padding: list[int], groups: int) -> tuple:
    """(kind, [N, C', H', W'], TAPS_H, TAPS_W, C_TAP, stride, padding): the input as the
    kernels read it, and the convolution they compute on it.

    "plain": the input itself (channels_last), R x S taps of C_TAP = C / groups channels.
    A copy where folds() holds:
    "space_to_depth" (strided, _space_to_depth): pixels of SH x SW blocks of input pixels
    (space_to_depth_kernel; C' = C a pixel, SH SW C' a multiple of 16), read as a
    ceil(R / SH) x ceil(S / SW) convolution at stride 1 without padding: conv1's 3 x 3 taps
    of 48 (4 x 4 x 3), a reduction of 432 for its 363.
    "folded" (otherwise): zero-padded pixels of C' = C rounded up to 4 channels, read as R
    taps a row, each C_TAP = ceil(S C' / 16) x 16 contiguous (pixel, channel) pairs (a few
    pixels past the last tap), at the conv's stride without padding.
    _weight_taps zero-fills the weight to match: what lies past the receptive field counts
    nothing."""
    n, c, h, w = input_size
    _, c_group, r, s = weight_size
    if not _folds(c, groups):
        return "plain", [n, c, h, w], r, s, c // groups, list(stride), list(padding)
    if _space_to_depth(weight_size, stride):
        (sh, sw), (ph, pw) = stride, padding
        p, q = _output_size(h, w, r, s, stride, padding)
        taps_h, taps_w = triton.cdiv(r, sh), triton.cdiv(s, sw)
        whole = 16 // math.gcd(16, sh * sw)  # channels that make SH SW C' a multiple of 16
        c_pixel = triton.cdiv(c, whole) * whole
        return ("space_to_depth", [n, c_pixel * sh * sw, p + taps_h - 1, q + taps_w - 1],
                taps_h, taps_w, c_pixel * sh * sw, [1, 1], [0, 0])
    c_pixel = triton.cdiv(c, _FOLD_CHANNELS) * _FOLD_CHANNELS
    c_tap = triton.cdiv(s * c_pixel, 16) * 16
    extra = triton.cdiv(c_tap - s * c_pixel, c_pixel)  # pixels read past the last tap
    w_pad = triton.cdiv(w + 2 * padding[1] + extra, 4) * 4  # rows of 16-element multiples
    return ("folded", [n, c_pixel, h + 2 * padding[0], w_pad], r, 1, c_tap, list(stride),
            [0, 0])


def conv2d_relu_fold_input(input: Tensor, weight_size: list[int], stride: list[int],
                           padding: list[int], groups: int) -> Tensor:
    """The copy of input the kernels read where folds() holds ([N, C', H', W'] channels_last,
    input_layout): in blocks of pixels (space_to_depth_kernel) or zero-padded pixels of 4
    channels (fold_pixels_kernel). Passed as ``folded_input`` to conv2d_relu_forward and
    conv2d_relu_backward_weight, one copy serves both."""
    if input.dim() != 4 or not folds(list(input.shape), groups):
        raise ValueError(f"conv2d_relu_fold_input: input {tuple(input.shape)} with "
                         f"groups={groups} is not folded (fewer than {_FOLD_BELOW_CHANNELS} "
                         f"channels in one group are)")
    kind, (n, c_out, h_out, w_out), *_ = input_layout(list(input.shape), weight_size, stride,
                                                       padding, groups)
    _, c, h, w = input.shape
    x = torch.empty((n, h_out, w_out, c_out), dtype=input.dtype, device=input.device)
    check_int32_offsets("conv2d_relu", input=input, folded_input=x)
    lead = triton.cdiv(padding[1], 8) * 8
    if kind == "space_to_depth":
        (sh, sw), c_pixel = stride, c_out // (stride[0] * stride[1])
        block = triton.next_power_of_2(w_out * sw - padding[1] + lead)  # input columns
        launchable(space_to_depth_kernel)[(n * h_out,)](
            input, x, c, h, w, h_out, w_out, w_out * c_out, *input.stride(),
            PH=padding[0], PW=padding[1], LEAD=lead, SH=sh, SW=sw,
            C_POW2=triton.next_power_of_2(c_pixel), C_TAP=c_out, BLOCK_WS=block // sw,
            num_warps=4)
    else:
        grid = (n * h_out, triton.cdiv(w_out - padding[1] + lead, _FOLD_BLOCK_W))
        launchable(fold_pixels_kernel)[grid](
            input, x, c, h, w, h_out, w_out, w_out * c_out, *input.stride(),
            PH=padding[0], PW=padding[1], LEAD=lead, C_PIXEL=c_out, BLOCK_W=_FOLD_BLOCK_W,
            num_warps=4)
    return x.permute(0, 3, 1, 2)


def _channels_last_input(input: Tensor, weight_size: list[int], stride: list[int],
                         padding: list[int], groups: int, folded_input: Tensor | None = None):
    """(kind, x, TAPS_H, TAPS_W, C_TAP, stride, padding, H, W): input_layout with x, the
    input (channels_last: a copy only if it is not already) or its copy
    (conv2d_relu_fold_input, unless ``folded_input`` is that copy already)."""
    kind, shape, taps_h, taps_w, c_tap, step, pad = input_layout(
        list(input.shape), weight_size, stride, padding, groups)
    if kind == "plain":
        if folded_input is not None:
            raise ValueError(f"conv2d_relu: folded_input given for input {tuple(input.shape)} "
                             f"with groups={groups}, which the kernels do not fold")
        x = input.contiguous(memory_format=torch.channels_last)
    elif folded_input is None:
        x = conv2d_relu_fold_input(input, weight_size, stride, padding, groups)
    elif (list(folded_input.shape) != shape or folded_input.dtype != input.dtype
          or folded_input.device != input.device
          or not folded_input.permute(0, 2, 3, 1).is_contiguous()):
        raise ValueError(
            f"conv2d_relu: folded_input {tuple(folded_input.shape)} {folded_input.dtype} is "
            f"not conv2d_relu_fold_input's {tuple(shape)} {input.dtype} channels_last copy "
            f"of input {tuple(input.shape)}")
    else:
        x = folded_input
    return kind, x, taps_h, taps_w, c_tap, step, pad, shape[2], shape[3]


def _weight_taps(weight: Tensor, kind: str, taps_h: int, taps_w: int, c_tap: int,
                 block: list[int]) -> Tensor:
    """weight [K, C/groups, R, S] as the kernels' [K, TAPS_H, TAPS_W, C_TAP] for an input
    laid out as ``kind`` (input_layout; ``block``: a space_to_depth pixel's input pixels,
    the conv's stride), channels innermost, zero where the layout reads past the receptive
    field or the channels."""
    k, c_group, r, s = weight.shape
    if kind == "plain":
        return weight.permute(0, 2, 3, 1).contiguous()
    taps = torch.zeros((k, taps_h, taps_w, c_tap), dtype=weight.dtype, device=weight.device)
    if kind == "space_to_depth":  # channel c of block pixel (dy, dx) at (c SH + dy) SW + dx
        sh, sw = block
        padded = torch.zeros((k, c_tap // (sh * sw), taps_h * sh, taps_w * sw),
                             dtype=weight.dtype, device=weight.device)
        padded[:, :c_group, :r, :s] = weight
        return taps.copy_(padded.view(k, -1, taps_h, sh, taps_w, sw)
                          .permute(0, 2, 4, 1, 3, 5).reshape(k, taps_h, taps_w, c_tap))
    c_pixel = triton.cdiv(c_group, _FOLD_CHANNELS) * _FOLD_CHANNELS
    taps.view(k, r, c_tap)[:, :, :s * c_pixel].view(k, r, s, c_pixel)[..., :c_group] = (
        weight.permute(0, 2, 3, 1))
    return taps


def _unfold_weight_grad(taps: Tensor, weight_size: list[int], kind: str,
                        block: list[int]) -> Tensor:
    """The inverse of _weight_taps: [K, TAPS_H, TAPS_W, C_TAP] -> contiguous
    [K, C/groups, R, S]."""
    k, c_group, r, s = weight_size
    if kind == "plain":
        return taps.permute(0, 3, 1, 2).contiguous()
    _, taps_h, taps_w, c_tap = taps.shape
    if kind == "space_to_depth":
        sh, sw = block
        blocks = taps.reshape(k, taps_h, taps_w, c_tap // (sh * sw), sh, sw)
        pixels = blocks.permute(0, 3, 1, 4, 2, 5).reshape(k, -1, taps_h * sh, taps_w * sw)
        return pixels[:, :c_group, :r, :s].contiguous()
    c_pixel = triton.cdiv(c_group, _FOLD_CHANNELS) * _FOLD_CHANNELS
    rows = taps.reshape(k, r, -1)[:, :, :s * c_pixel].reshape(k, r, s, c_pixel)
    return rows[..., :c_group].permute(0, 3, 1, 2).contiguous()


def conv2d_relu_forward(input: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                        padding: list[int], groups: int, *,
                        tensor_descriptors: bool | None = None,
                        folded_input: Tensor | None = None) -> Tensor:
    """relu(conv2d(input, weight, bias, stride, padding, groups)): [N, C, H, W] -> [N, K, P, Q].

    Any input layout; the output is channels_last (NHWC memory). ``tensor_descriptors``: the
    weight tiles through TMA (None: where possible, see _weight_descriptors).
    ``folded_input``: conv2d_relu_fold_input's copy of input, where the kernels fold it
    (None: made here).
    """
    n, c, h, w = input.shape
    k, c_group, r, s = weight.shape
    if c != c_group * groups or k % groups:
        raise ValueError(f"conv2d_relu: channels {c}, kernels {k} and groups={groups} disagree")
    p, q = _output_size(h, w, r, s, stride, padding)
    # the convolution the kernel computes on x (R x S stay the kernel's size: its FLOPs)
    kind, x, taps_h, taps_w, c_tap, step, pad, h_x, w_x = _channels_last_input(
        input, list(weight.shape), stride, padding, groups, folded_input)
    weight_taps = _weight_taps(weight, kind, taps_h, taps_w, c_tap, stride)
    bias = None if bias is None else bias.contiguous()
    # [N, K, P, Q] with NHWC memory: the kernel's [M, K] rows.
    output = torch.empty((n, p, q, k), dtype=input.dtype, device=input.device).permute(0, 3, 1, 2)
    check_int32_offsets("conv2d_relu", input=x, output=output)
    x_stride_n, _, x_stride_h, x_stride_w = x.stride()
    # Every row offset is n sxn + h sxh + w sxw (+ group C_GROUP); w moves by the stride
    # alone when each row has a single tap (folded) and pads nothing.
    w_step = step[1] * x_stride_w if taps_w == 1 and pad[1] == 0 else x_stride_w
    x_align = _alignment(x_stride_n, x_stride_h, w_step, c_group if groups > 1 else 0)
    m, k_group = n * p * q, k // groups
    # [GROUPS, K_GROUP, TAPS_H * TAPS_W, C_TAP]: the descriptor's dimensions, each zero-filled
    # past its end (conv1's C_TAP of 48 channels is 96 bytes in bf16: TMA-aligned).
    taps = taps_h * taps_w
    descriptor_shape = (groups, k_group, taps, c_tap)
    descriptor_strides = (k_group * taps * c_tap, taps * c_tap, c_tap, 1)
    use_descriptors = _weight_descriptors(tensor_descriptors, weight_taps, descriptor_shape,
                                          descriptor_strides)
    kernel, blocks = _kernel_and_blocks(_forward_autotuned, _forward_kernel, k_group)
    if interpreting():  # the channel block no wider than a tap's channels; a tail where the
        # GPU's pruner would take one (conv1's 96 kernels: 64 + 32)
        blocks.update(BLOCK_K=max(16, min(128, triton.next_power_of_2(c_tap))), GROUP_M=8)
        narrow = blocks["BLOCK_N"] // 2
        flat = _flat_reduction(pad[0] == 0 and pad[1] == 0, taps_h * taps_w, c_tap,
                               blocks["BLOCK_K"], x_align)
        tail = _tail_n(k_group, narrow, input.element_size(), flat)
        if tail and narrow + tail >= k_group:
            blocks["BLOCK_N"] = narrow

    def grid(meta):
        columns = meta["BLOCK_N"] + meta["TAIL_N"]
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(k_group, columns), groups)

    with descriptor_scratch(input.device):
        launchable(kernel)[grid](
            x, weight_taps, weight if bias is None else bias, output,
            h_x, w_x, k, p, q, step[0], step[1], pad[0], pad[1],
            x_stride_n, x_stride_h, x_stride_w, c_group, c_tap,
            m, k_group, groups,
            R=r, S=s, TAPS_H=taps_h, TAPS_W=taps_w, X_ALIGN=x_align,
            HAS_BIAS=bias is not None,
            W_DESCRIPTOR=use_descriptors, IN_IMAGE=pad[0] == 0 and pad[1] == 0,
            ACC_DTYPE=accumulator(input.dtype), INPUT_PRECISION=_input_precision(input.dtype),
            **blocks,
        )
    return output


def conv2d_relu_backward_input(grad_output: Tensor, output: Tensor | None, weight: Tensor,
                               input_size: list[int], stride: list[int], padding: list[int],
                               groups: int, *,
                               tensor_descriptors: bool | None = None) -> Tensor:
    """The input gradient of conv2d for grad_output * (output > 0): [N, C, H, W].

    Any layout of grad_output and output (read channels_last); the gradient is channels_last.
    ``output`` None: grad_output is masked already (conv2d_relu_backward_weight's
    ``masked_grad_output``), and the loop reads it alone. ``tensor_descriptors``: the
    weight tiles through TMA (None: where possible, see _weight_descriptors), but for the
    32 + 16-channel tile of a masked grad_output (TAIL_N), whose loop loads them plainly.
    """
    n, c, h, w = input_size
    k, c_group, r, s = weight.shape
    p, q = _output_size(h, w, r, s, stride, padding)
    if tuple(grad_output.shape) != (n, k, p, q) or (
            output is not None and output.shape != grad_output.shape):
        raise ValueError(f"conv2d_relu: grad_output {tuple(grad_output.shape)} and output "
                         f"{None if output is None else tuple(output.shape)} must be "
                         f"[N, K, P, Q] = {[n, k, p, q]}")
    grad_output = grad_output.contiguous(memory_format=torch.channels_last)  # [N, P, Q, K]
    masked = output is None
    output = grad_output if masked else output.contiguous(memory_format=torch.channels_last)
    k_group = k // groups
    # [GROUPS, R, S, C/groups, K/groups]: each tap's [C, K] block, kernels innermost.
    weight_taps = weight.reshape(groups, k_group, c_group, r, s).permute(0, 3, 4, 2, 1).contiguous()
    grad_input = torch.empty((n, h, w, c), dtype=grad_output.dtype,
                             device=grad_output.device).permute(0, 3, 1, 2)
    check_int32_offsets("conv2d_relu", grad_output=grad_output, grad_input=grad_input)
    # By default not for a few channels (conv1's 3): the descriptor's box is then nearly all
    # zero fill, and at conv1's 11 x 11 taps the kernel spills (bf16: 112 B; plain: none).
    few_channels = c_group < _DESCRIPTOR_MIN_CHANNELS and tensor_descriptors is None
    use_descriptors = _weight_descriptors(
        False if few_channels else tensor_descriptors, weight_taps,
        (groups, r * s, c_group, k_group),
        (r * s * c_group * k_group, c_group * k_group, k_group, 1))
    # Phase 0 has the most input pixels: ceil(H / sh) x ceil(W / sw) per image.
    m, phases = n * triton.cdiv(h, stride[0]) * triton.cdiv(w, stride[1]), stride[0] * stride[1]
    kernel, blocks = _kernel_and_blocks(_backward_input_autotuned, _backward_input_kernel,
                                        c_group)
    if interpreting():  # the kernel block no wider than a group's kernels; conv2's tile
        # (masked, 32 + 16 columns) for its 33 to 48 channels a group
        blocks["BLOCK_K"] = max(16, min(128, triton.next_power_of_2(k_group)))
        if masked and blocks["BLOCK_N"] == 64 and c_group <= 48:
            blocks.update(BLOCK_N=32, TAIL_N=16)

    def grid(meta):  # row tiles of phase 0, the largest; smaller phases mask the rest
        columns = meta["BLOCK_N"] + meta.get("TAIL_N", 0)
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_group, columns),
                groups * phases)

    with descriptor_scratch(grad_output.device):
        launchable(kernel)[grid](
            grad_output, output, weight_taps, grad_input,
            n, c, h, w, k, p, q, stride[0], stride[1], padding[0], padding[1],
            c_group, k_group, groups,
            R=r, S=s, PACKED_MASK=_packed_mask(grad_output.dtype),
            W_DESCRIPTOR=use_descriptors, MASKED=masked,
            ACC_DTYPE=accumulator(grad_output.dtype),
            INPUT_PRECISION=_input_precision(grad_output.dtype),
            **blocks,
        )
    return grad_input


def conv2d_relu_backward_weight(grad_output: Tensor, output: Tensor, input: Tensor,
                                weight_size: list[int], stride: list[int], padding: list[int],
                                groups: int, *, masked_grad_output: bool = False,
                                folded_input: Tensor | None = None) -> tuple:
    """The weight and bias gradients for grad_output * (output > 0): ([K, C/groups, R, S], [K]).

    Any layout of the three tensors (read channels_last); the gradients are contiguous.
    ``masked_grad_output``: also the masked gradient grad_output * (output > 0) [N, K, P, Q]
    (channels_last), a third result, for conv2d_relu_backward_input to read without output.
    ``folded_input``: as conv2d_relu_forward's.
    """
    n, c, h, w = input.shape
    k, c_group, r, s = weight_size
    p, q = _output_size(h, w, r, s, stride, padding)
    if tuple(grad_output.shape) != (n, k, p, q) or output.shape != grad_output.shape:
        raise ValueError(f"conv2d_relu: grad_output {tuple(grad_output.shape)} and output "
                         f"{tuple(output.shape)} must be [N, K, P, Q] = {[n, k, p, q]}")
    grad_output = grad_output.contiguous(memory_format=torch.channels_last)  # [NPQ, K]
    output = output.contiguous(memory_format=torch.channels_last)
    # the convolution the kernel computes on x (R x S stay the kernel's size: its FLOPs)
    kind, x, taps_h, taps_w, c_tap, step, pad, h_x, w_x = _channels_last_input(
        input, weight_size, stride, padding, groups, folded_input)
    dtype, device = grad_output.dtype, grad_output.device
    npq, k_group = n * p * q, k // groups
    taps = taps_h * taps_w

    flat = _flat_taps(c_tap, 128, taps)
    columns = taps * c_tap if flat else c_tap
    # (the kernel takes x's rows as m W-strided: x is channels_last and dense)
    shifted = (_shifted_rows(kind, stride, (p, q), (h, w), taps, flat, dtype)
               and x.stride() == (h * w * c, 1, w * c, c))
    # the programs of the first config (kernel rows: 64 where the rows are shifted in 16
    # bits, else 128; 128 columns), the bias programs among them: each holds an SM as long
    # as it runs
    first = _BACKWARD_WEIGHT_CONFIGS[grad_output.element_size(), shifted][0].kwargs
    tiles = _weight_grad_programs(k_group, taps, c_tap, first["BLOCK_M"], 128) * groups
    split = _weight_grad_split(tiles, npq, device)
    chunk = triton.cdiv(triton.cdiv(npq, split), _SPLIT_ALIGN) * _SPLIT_ALIGN
    split = triton.cdiv(npq, chunk)
    weight_taps = torch.empty((1, k, taps_h, taps_w, c_tap), dtype=dtype, device=device)
    numel = weight_taps.numel()
    if split > 1:
        # Every (split, kernel, tap, channel) element is written by exactly one program: the
        # weight's partial sums, then the bias's, in one buffer that one launch sums.
        partials = torch.empty(split * (numel + k), dtype=accumulation_dtype(dtype),
                               device=device)
        weight_partial = partials[:split * numel].view(split, k, taps_h, taps_w, c_tap)
        bias_partial = partials[split * numel:].view(split, k)
    else:  # the single split is the sum
        weight_partial = weight_taps
        bias_partial = torch.empty((1, k), dtype=dtype, device=device)
    masked = torch.empty_like(grad_output) if masked_grad_output else None
    check_int32_offsets("conv2d_relu", input=x, grad_output=grad_output,
                        grad_weight=weight_partial)
    x_stride_n, _, x_stride_h, x_stride_w = x.stride()
    w_step = step[1] * x_stride_w if taps_w == 1 and pad[1] == 0 else x_stride_w
    x_align = _alignment(x_stride_n, x_stride_h, w_step, c_group if groups > 1 else 0)
    kernel, blocks = _kernel_and_blocks(_backward_weight_autotuned, _backward_weight_even,
                                        columns)
    if interpreting() and not flat and _pairs_taps(c_tap, 128, taps):  # two taps, as on the GPU
        blocks["BLOCK_N"] = 2 * min(64, blocks["BLOCK_N"])

    def grid(meta):  # the config's own layout of the taps, not the 128-wide one of ``flat``
        return (_weight_grad_programs(k_group, taps, c_tap, meta["BLOCK_M"], meta["BLOCK_N"]),
                groups * split)

    taps_in_image = _taps_in_image(p, q, r, s, padding, (h, w), device) if shifted else x
    launchable(kernel)[grid](
        grad_output, output, x, weight_partial, bias_partial,
        grad_output if masked is None else masked, taps_in_image,
        h_x, w_x, k, p, q, step[0], step[1], pad[0], pad[1],
        x_stride_n, x_stride_h, x_stride_w, c_group, c_tap,
        npq, k_group, groups, chunk,
        R=r, S=s, TAPS_H=taps_h, TAPS_W=taps_w, X_ALIGN=x_align,
        PACKED_MASK=_packed_mask(dtype),
        STAGE_X_IN_REGISTERS=_input_precision(dtype) == "tf32" and not interpreting(),
        WRITE_MASKED=masked is not None, SHIFTED_ROWS=shifted,
        ACC_DTYPE=accumulator(dtype), INPUT_PRECISION=_input_precision(dtype),
        **blocks,
    )
    grad_bias = bias_partial[0]
    if split > 1:
        grad_bias = torch.empty((k,), dtype=dtype, device=device)
        block = 4096 if interpreting() else 1024
        first_programs = triton.cdiv(numel, block)
        launchable(split_sum_kernel)[(first_programs + triton.cdiv(k, block),)](
            partials, weight_taps, grad_bias, numel, k, split, first_programs,
            ACC_DTYPE=accumulator(dtype), BLOCK=block)
    grad_weight = _unfold_weight_grad(weight_taps[0], weight_size, kind, stride)
    return (grad_weight, grad_bias) if masked is None else (grad_weight, grad_bias, masked)
