"""PyTorch reference of kernels/lrn.py."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from alexnet_triton.kernels import accumulation_dtype


def _window_sum(x: Tensor, before: int, after: int) -> Tensor:
    """sum_{j = c - before}^{c + after} x_j along dim 2 of [N, G, C/G, H, W], zeros outside."""
    padded = F.pad(x, (0, 0, 0, 0, before, after))  # pads W, H, then the channels
    return padded.unfold(2, before + after + 1, 1).sum(-1)


def _denominator(a: Tensor, size: int, alpha: float, k: float) -> Tensor:
    """d_c = k + alpha / size * sum_{j = c - size // 2}^{c + (size - 1) // 2} a_j^2."""
    return k + alpha / size * _window_sum(a * a, size // 2, (size - 1) // 2)


def _grouped(input: Tensor, groups: int) -> Tensor:
    n, channels, h, w = input.shape
    return input.to(accumulation_dtype(input.dtype)).reshape(n, groups, channels // groups, h, w)


def _memory_format(t: Tensor) -> torch.memory_format:
    """channels_last if t is that and not also NCHW-contiguous, as kernels/lrn.py returns."""
    channels_last = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def lrn_forward(input: Tensor, size: int, alpha: float, beta: float, k: float,
                groups: int) -> Tensor:
    a = _grouped(input, groups)  # [N, G, C/G, H, W]
    d = _denominator(a, size, alpha, k)
    b = (a * d.pow(-beta)).reshape(input.shape).to(input.dtype)
    return b.contiguous(memory_format=_memory_format(input))


def lrn_backward(grad_output: Tensor, input: Tensor, size: int, alpha: float, beta: float, k: float,
                 groups: int) -> Tensor:
    a = _grouped(input, groups)  # [N, G, C/G, H, W]
    g = _grouped(grad_output, groups)
    d = _denominator(a, size, alpha, k)
    # a_i is in the window of c = i - (size - 1) // 2 ... i + size // 2.
    neighbours = _window_sum(g * a * d.pow(-beta - 1), (size - 1) // 2, size // 2)
    grad_a = g * d.pow(-beta) - 2 * alpha * beta / size * a * neighbours
    return grad_a.reshape(input.shape).to(input.dtype).contiguous(
        memory_format=_memory_format(input))
