"""Argument checks shared by every path of alexnet_triton.functional.

The Triton kernels have no bounds checking (a bad shape reads garbage or crashes the
process), so every public op validates its arguments here first and raises a ValueError
or TypeError that names what was expected.
"""
from __future__ import annotations

from typing import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def pair(value: int | Sequence[int], name: str) -> list[int]:
    """An int or a pair of ints as [h, w], like torch.nn.functional's conv and pool."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, int):
        return [value, value]
    values = list(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    return values


def tensor(value, name: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), "
            f"got {value.dtype}"
        )


def rank(value: torch.Tensor, name: str, expected: int, layout: str) -> None:
    if value.dim() != expected:
        raise ValueError(
            f"{name} must be {expected}-D {layout}, got shape {tuple(value.shape)}"
        )


def same_dtype_and_device(name: str, input: torch.Tensor, other: torch.Tensor | None,
                          other_name: str) -> None:
    if other is None:
        return
    if other.dtype != input.dtype:
        raise TypeError(
            f"{name}: {other_name} dtype {other.dtype} does not match input dtype {input.dtype}"
        )
    if other.device != input.device:
        raise ValueError(
            f"{name}: {other_name} is on {other.device} but input is on {input.device}"
        )


def positive(values: Sequence[int], name: str) -> None:
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {list(values)}")


def conv2d_relu(input, weight, bias, stride: list[int], padding: list[int], groups: int) -> None:
    tensor(input, "conv2d_relu: input")
    tensor(weight, "conv2d_relu: weight")
    rank(input, "conv2d_relu: input", 4, "[N, C, H, W]")
    rank(weight, "conv2d_relu: weight", 4, "[K, C/groups, R, S]")
    same_dtype_and_device("conv2d_relu", input, weight, "weight")
    if bias is not None:
        tensor(bias, "conv2d_relu: bias")
        same_dtype_and_device("conv2d_relu", input, bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"conv2d_relu: bias must have shape [{weight.shape[0]}] (one per kernel), "
                f"got {tuple(bias.shape)}"
            )
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"conv2d_relu: groups must be a positive int, got {groups!r}")
    positive(stride, "conv2d_relu: stride")
    if any(p < 0 for p in padding):
        raise ValueError(f"conv2d_relu: padding must be non-negative, got {padding}")
    n, c, h, w = input.shape
    k, c_per_group, r, s = weight.shape
    if k % groups:
        raise ValueError(f"conv2d_relu: {k} kernels cannot be split into groups={groups}")
    if c != c_per_group * groups:
        raise ValueError(
            f"conv2d_relu: input has {c} channels but weight expects "
            f"{c_per_group} x groups={groups} = {c_per_group * groups}"
        )
    if h + 2 * padding[0] < r or w + 2 * padding[1] < s:
        raise ValueError(
            f"conv2d_relu: a {r}x{s} kernel does not fit a {h}x{w} input with padding {padding}"
        )


def linear(name: str, input, weight, bias) -> None:
    tensor(input, f"{name}: input")
    tensor(weight, f"{name}: weight")
    if input.dim() < 1:
        raise ValueError(f"{name}: input must be [*, in_features], got a 0-D tensor")
    rank(weight, f"{name}: weight", 2, "[out_features, in_features]")
    same_dtype_and_device(name, input, weight, "weight")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"{name}: input has {input.shape[-1]} features but weight expects {weight.shape[1]}"
        )
    if bias is not None:
        tensor(bias, f"{name}: bias")
        same_dtype_and_device(name, input, bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"{name}: bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}"
            )


def dropout_p(name: str, p: float) -> None:
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p < 1.0:
        raise ValueError(f"{name}: p must be a probability in [0, 1), got {p!r}")


def local_response_norm(input, size: int, alpha: float, beta: float, k: float, groups: int) -> None:
    tensor(input, "local_response_norm: input")
    rank(input, "local_response_norm: input", 4, "[N, C, H, W]")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"local_response_norm: size must be a positive int, got {size!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"local_response_norm: groups must be a positive int, got {groups!r}")
    if input.shape[1] % groups:
        raise ValueError(
            f"local_response_norm: {input.shape[1]} channels cannot be split into groups={groups}"
        )
    if k <= 0:
        raise ValueError(f"local_response_norm: k must be positive, got {k!r}")
    if alpha < 0:
        raise ValueError(f"local_response_norm: alpha must be non-negative, got {alpha!r}")


def max_pool2d(input, kernel_size: list[int], stride: list[int], padding: list[int],
               dilation: list[int], ceil_mode: bool) -> None:
    tensor(input, "max_pool2d: input")
    rank(input, "max_pool2d: input", 4, "[N, C, H, W] (or [C, H, W])")
    positive(kernel_size, "max_pool2d: kernel_size")
    positive(stride, "max_pool2d: stride")
    positive(dilation, "max_pool2d: dilation")
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"max_pool2d: ceil_mode must be a bool, got {ceil_mode!r}")
    if kernel_size[0] * kernel_size[1] > 127:
        raise ValueError(
            f"max_pool2d: a {kernel_size[0]}x{kernel_size[1]} window has more positions than "
            "the int8 argmax can name (at most 127)"
        )
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel_size)):
        raise ValueError(
            f"max_pool2d: padding {padding} must be >= 0 and at most half of the "
            f"{kernel_size[0]}x{kernel_size[1]} window"
        )
    h, w = input.shape[2:]
    span_h, span_w = ((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
    if span_h > h + 2 * padding[0] or span_w > w + 2 * padding[1]:
        raise ValueError(
            f"max_pool2d: a {kernel_size[0]}x{kernel_size[1]} window (dilation {dilation}) is "
            f"larger than the {h}x{w} input with padding {padding}"
        )
