"""PyTorch reference of kernels/max_pool2d.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet_triton.kernels.max_pool2d import output_size


def _window_corners(oh: int, ow: int, stride: list[int], padding: list[int],
                    device) -> tuple[Tensor, Tensor]:
    """Row and column of each window's top-left corner in the input, [OH, 1] and [1, OW];
    negative inside the left and top padding."""
    rows = torch.arange(oh, device=device) * stride[0] - padding[0]
    cols = torch.arange(ow, device=device) * stride[1] - padding[1]
    return rows[:, None], cols[None, :]


def _memory_format(t: Tensor) -> torch.memory_format:
    channels_last = not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def max_pool2d_forward(input: Tensor, kernel_size: list[int], stride: list[int],
                       padding: list[int] = (0, 0), dilation: list[int] = (1, 1),
                       ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    output, flat_index = F.max_pool2d(input, kernel_size, stride, padding, dilation,
                                      ceil_mode=ceil_mode, return_indices=True)
    w = input.shape[3]
    rows, cols = _window_corners(*output.shape[2:], stride, padding, input.device)
    kh = (flat_index // w - rows) // dilation[0]
    kw = (flat_index % w - cols) // dilation[1]
    argmax = (kh * kernel_size[1] + kw).to(torch.int8)
    layout = _memory_format(input)
    return output.contiguous(memory_format=layout), argmax.contiguous(memory_format=layout)


def max_pool2d_backward(grad_output: Tensor, argmax: Tensor, input_size: list[int],
                        kernel_size: list[int], stride: list[int],
                        padding: list[int] = (0, 0), dilation: list[int] = (1, 1),
                        ceil_mode: bool = False) -> Tensor:
    n, c, h, w = input_size
    oh, ow = (output_size(size, k, s, p, d, ceil_mode)
              for size, k, s, p, d in zip((h, w), kernel_size, stride, padding, dilation))
    if tuple(grad_output.shape) != (n, c, oh, ow):
        raise ValueError(f"max_pool2d_backward: grad_output shape {tuple(grad_output.shape)} "
                         f"is not the pooled shape {(n, c, oh, ow)} of input {input_size}")
    window = argmax.to(torch.int64)
    rows, cols = _window_corners(oh, ow, stride, padding, grad_output.device)
    flat_index = ((rows + window // kernel_size[1] * dilation[0]) * w
                  + cols + window % kernel_size[1] * dilation[1])
    grad_input = torch.zeros((n, c, h * w), device=grad_output.device, dtype=grad_output.dtype)
    grad_input.scatter_add_(2, flat_index.reshape(n, c, -1), grad_output.reshape(n, c, -1))
    return grad_input.reshape(n, c, h, w).contiguous(memory_format=_memory_format(argmax))
