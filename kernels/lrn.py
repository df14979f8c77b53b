"""Cross-channel local response normalization (AlexNet section 3.3), forward and backward.

``b_c = a_c / d_c ** beta`` with ``d_c = k + alpha / size * sum_j a_j ** 2`` over the
channels ``j = c - size // 2 ... c + (size - 1) // 2`` of the same group; channels outside
the group contribute zero. A program owns a [BLOCK_C channels, BLOCK_HW pixels] tile of one
image and one group and reads the channel-shifted tiles the window needs; the shifted reads
overlap the neighbouring tiles, so on a GPU they come from cache and each pass reads its
inputs from memory about once. The backward recomputes the denominators from the input
instead of having the forward store them.
"""
from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import accumulation_dtype, interpreting, launchable


@triton.jit
def _parameter(hi, lo, ACC: tl.constexpr):
    """A float parameter passed as hi + lo: float kernel arguments are float32 on a GPU,
    and float64 inputs need the parameter to more than float32's 24 bits."""
    return tl.cast(hi, ACC) + tl.cast(lo, ACC)


@triton.jit
def _load_shifted(slab_ptr, channel, SHIFT: tl.constexpr, channels_per_group, hw, pixel_in, HW,
                  ACC: tl.constexpr):
    """The [BLOCK_C, BLOCK_HW] tile of channels channel + SHIFT of one group's slab.

    Channels of the other group (or past the tensor) read as the zero padding. Every read
    of a shifted tile goes through here, so reads of the same shift are the same
    expression and the compiler merges them.
    """
    shifted = channel + SHIFT
    shifted_in = (shifted >= 0) & (shifted < channels_per_group)
    x = tl.load(slab_ptr + shifted[:, None] * HW + hw[None, :],
                mask=shifted_in[:, None] & pixel_in[None, :], other=0.0)
    return x.to(ACC)


@triton.jit
def _denominator(a_slab, channel, SHIFT: tl.constexpr, channels_per_group, hw, pixel_in, HW,
                 alpha_over_size, k, SIZE: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    """d_c = k + alpha / size * sum_j a_j^2 for the channels c = channel + SHIFT."""
    sum_sq = tl.zeros((BLOCK_C, BLOCK_HW), ACC)
    for p in tl.static_range(SIZE):
        # j = c - SIZE // 2 ... c + (SIZE - 1) // 2
        a_j = _load_shifted(a_slab, channel, SHIFT + p - SIZE // 2, channels_per_group, hw,
                            pixel_in, HW, ACC)
        sum_sq += a_j * a_j
    return k + alpha_over_size * sum_sq


@triton.jit
def lrn_forward_kernel(a_ptr, b_ptr, C, HW, channels_per_group, groups,
                       alpha_over_size_hi, alpha_over_size_lo, beta_hi, beta_lo, k_hi, k_lo,
                       SIZE: tl.constexpr, FP64: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    if FP64:
        ACC: tl.constexpr = tl.float64
    else:
        ACC: tl.constexpr = tl.float32
    alpha_over_size = _parameter(alpha_over_size_hi, alpha_over_size_lo, ACC)
    beta = _parameter(beta_hi, beta_lo, ACC)
    k = _parameter(k_hi, k_lo, ACC)
    hw = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # within the group
    image_group = tl.program_id(2)
    image, group = image_group // groups, image_group % groups
    # Offsets inside one group's slab fit int32 (the launcher checks); the slab's start may not.
    slab = (image.to(tl.int64) * C + group * channels_per_group) * HW
    pixel_in = hw < HW
    d = _denominator(a_ptr + slab, channel, 0, channels_per_group, hw, pixel_in, HW,
                     alpha_over_size, k, SIZE, ACC, BLOCK_C, BLOCK_HW)  # [BLOCK_C, BLOCK_HW]
    a = _load_shifted(a_ptr + slab, channel, 0, channels_per_group, hw, pixel_in, HW, ACC)
    # d >= k > 0, so d^-beta = 2^(-beta * log2(d)).
    b = a * tl.exp2(-beta * tl.log2(d))
    channel_in = channel < channels_per_group
    tl.store(b_ptr + slab + channel[:, None] * HW + hw[None, :], b.to(b_ptr.dtype.element_ty),
             mask=channel_in[:, None] & pixel_in[None, :])


@triton.jit
def lrn_backward_kernel(g_ptr, a_ptr, grad_a_ptr, C, HW, channels_per_group, groups,
                        alpha_over_size_hi, alpha_over_size_lo, beta_hi, beta_lo, k_hi, k_lo,
                        SIZE: tl.constexpr, FP64: tl.constexpr,
                        BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr):
    # grad_a_i = g_i * d_i^-beta
    #          - 2 * alpha * beta / size * a_i * sum_{c : i in window(c)} g_c * a_c * d_c^(-beta-1)
    # and i is in the window of c = i - (SIZE - 1) // 2 ... i + SIZE // 2.
    if FP64:
        ACC: tl.constexpr = tl.float64
    else:
        ACC: tl.constexpr = tl.float32
    alpha_over_size = _parameter(alpha_over_size_hi, alpha_over_size_lo, ACC)
    beta = _parameter(beta_hi, beta_lo, ACC)
    k = _parameter(k_hi, k_lo, ACC)
    hw = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    channel = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # i, within the group
    image_group = tl.program_id(2)
    image, group = image_group // groups, image_group % groups
    slab = (image.to(tl.int64) * C + group * channels_per_group) * HW
    pixel_in = hw < HW
    a_slab = a_ptr + slab
    g_slab = g_ptr + slab

    neighbours = tl.zeros((BLOCK_C, BLOCK_HW), ACC)
    # The c == i terms, taken from the loop (names made in a static loop do not outlive it).
    g_i = tl.zeros((BLOCK_C, BLOCK_HW), ACC)
    a_i = tl.zeros((BLOCK_C, BLOCK_HW), ACC)
    d_i_pow = tl.zeros((BLOCK_C, BLOCK_HW), ACC)
    for o in tl.static_range(SIZE):
        shift = o - (SIZE - 1) // 2  # c = i + shift
        # Outside the group g_c = a_c = 0, so such a c adds nothing. The d_c windows of
        # neighbouring c overlap: their reads of a are merged into 2 * SIZE - 1 shifts.
        g_c = _load_shifted(g_slab, channel, shift, channels_per_group, hw, pixel_in, HW, ACC)
        a_c = _load_shifted(a_slab, channel, shift, channels_per_group, hw, pixel_in, HW, ACC)
        d_c = _denominator(a_slab, channel, shift, channels_per_group, hw, pixel_in, HW,
                           alpha_over_size, k, SIZE, ACC, BLOCK_C, BLOCK_HW)
        d_c_pow = tl.exp2((-beta - 1.0) * tl.log2(d_c))  # d_c^(-beta-1)
        neighbours += g_c * a_c * d_c_pow
        if shift == 0:  # c == i
            g_i = g_c
            a_i = a_c
            d_i_pow = d_c * d_c_pow  # d_i^-beta
    grad_a = g_i * d_i_pow - (2.0 * alpha_over_size * beta) * a_i * neighbours
    channel_in = channel < channels_per_group
    tl.store(grad_a_ptr + slab + channel[:, None] * HW + hw[None, :],
             grad_a.to(grad_a_ptr.dtype.element_ty),
             mask=channel_in[:, None] & pixel_in[None, :])


def _configs(blocks):
    return [triton.Config({"BLOCK_C": c, "BLOCK_HW": hw}, num_warps=w) for c, hw, w in blocks]


# Hopper: the shifted reads of a tile and its neighbours stay in L1/L2, so modest tiles with
# many programs in flight keep HBM busy. Pixels run along the contiguous axis (coalesced);
# the backward holds more live tiles (3 * SIZE - 1 reads, SIZE denominators), so smaller ones.
lrn_forward_autotuned = triton.autotune(
    configs=_configs([(8, 256, 4), (16, 128, 4), (16, 256, 8), (32, 128, 8)]),
    key=["channels_per_group", "HW", "SIZE"],
)(lrn_forward_kernel)
lrn_backward_autotuned = triton.autotune(
    configs=_configs([(4, 256, 4), (8, 128, 4), (8, 256, 8), (16, 128, 8)]),
    key=["channels_per_group", "HW", "SIZE"],
)(lrn_backward_kernel)

# Under the interpreter a program costs per op, not per element: few, big tiles.
_INTERPRETER_BLOCKS = {"BLOCK_C": 64, "BLOCK_HW": 1024}


def _check(name: str, input: Tensor, size: int, groups: int) -> None:
    if input.dim() != 4:
        raise ValueError(f"{name}: input must be [N, C, H, W], got shape {tuple(input.shape)}")
    channels = input.shape[1]
    if size < 1 or groups < 1 or channels % groups:
        raise ValueError(f"{name}: size={size}, groups={groups} do not fit {channels} channels")
    if channels // groups * input.shape[2] * input.shape[3] >= 2**31:
        raise ValueError(f"{name}: one group's channels exceed the int32 offsets")
    if input.shape[0] * groups > 65535:
        raise ValueError(f"{name}: {input.shape[0]} images x {groups} groups exceed the grid's "
                         "third dimension (65535)")


def _split(x: float) -> tuple[float, float]:
    """x as the float32 pair (hi, lo) with hi + lo = x to about 48 bits."""
    hi = struct.unpack("f", struct.pack("f", x))[0]
    return hi, x - hi


def _launch(kernel, autotuned, tensors, input: Tensor, size: int, alpha: float, beta: float,
            k: float, groups: int) -> None:
    n, channels, h, w = input.shape
    channels_per_group, hw = channels // groups, h * w
    args = (*tensors, channels, hw, channels_per_group, groups,
            *_split(alpha / size), *_split(beta), *_split(k))
    fp64 = accumulation_dtype(input.dtype) == torch.float64
    if interpreting():
        blocks = _INTERPRETER_BLOCKS
        grid = (triton.cdiv(hw, blocks["BLOCK_HW"]),
                triton.cdiv(channels_per_group, blocks["BLOCK_C"]), n * groups)
        launchable(kernel)[grid](*args, SIZE=size, FP64=fp64, **blocks)
    else:
        def grid(meta):
            return (triton.cdiv(hw, meta["BLOCK_HW"]),
                    triton.cdiv(channels_per_group, meta["BLOCK_C"]), n * groups)

        launchable(autotuned)[grid](*args, SIZE=size, FP64=fp64)


def lrn_forward(input: Tensor, size: int, alpha: float, beta: float, k: float,
                groups: int) -> Tensor:
    """b = a / (k + alpha / size * windowed sum of a^2) ** beta; input [N, C, H, W]."""
    _check("lrn_forward", input, size, groups)
    a = input.contiguous()
    b = torch.empty_like(a)
    if a.numel():
        _launch(lrn_forward_kernel, lrn_forward_autotuned, (a, b), a, size, alpha, beta, k, groups)
    return b


def lrn_backward(grad_output: Tensor, input: Tensor, size: int, alpha: float, beta: float, k: float,
                 groups: int) -> Tensor:
    """grad_input [N, C, H, W] of lrn_forward, recomputing the denominators from input."""
    _check("lrn_backward", input, size, groups)
    if grad_output.shape != input.shape:
        raise ValueError(f"lrn_backward: grad_output shape {tuple(grad_output.shape)} != "
                         f"input shape {tuple(input.shape)}")
    g = grad_output.contiguous()
    a = input.contiguous()
    grad_a = torch.empty_like(a)
    if a.numel():
        _launch(lrn_backward_kernel, lrn_backward_autotuned, (g, a, grad_a), a, size, alpha, beta,
                k, groups)
    return grad_a
