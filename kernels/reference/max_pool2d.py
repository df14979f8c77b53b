"""PyTorch reference of kernels/max_pool2d.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _window_origins(oh: int, ow: int, w: int, stride: list[int], device) -> Tensor:
    """Flat input index (h * W + w) of each window's top-left corner, [OH, OW]."""
    rows = torch.arange(oh, device=device) * stride[0]
    cols = torch.arange(ow, device=device) * stride[1]
    return rows[:, None] * w + cols[None, :]


def max_pool2d_forward(input: Tensor, kernel_size: list[int], stride: list[int]) -> tuple[Tensor, Tensor]:
    output, flat_index = F.max_pool2d(input, kernel_size, stride, return_indices=True)
    w = input.shape[3]
    offset = flat_index - _window_origins(*output.shape[2:], w, stride, input.device)
    argmax = (offset // w) * kernel_size[1] + offset % w  # kh * KW + kw
    return output, argmax.to(torch.int8)


def max_pool2d_backward(grad_output: Tensor, argmax: Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int]) -> Tensor:
    n, c, h, w = input_size
    window = argmax.to(torch.int64)
    origin = _window_origins(*grad_output.shape[2:], w, stride, grad_output.device)
    flat_index = origin + (window // kernel_size[1]) * w + window % kernel_size[1]
    grad_input = torch.zeros((n, c, h * w), device=grad_output.device, dtype=grad_output.dtype)
    grad_input.scatter_add_(2, flat_index.reshape(n, c, -1), grad_output.reshape(n, c, -1))
    return grad_input.reshape(n, c, h, w)
