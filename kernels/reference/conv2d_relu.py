"""PyTorch reference of kernels/conv2d_relu.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def conv2d_relu_forward(input: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                        padding: list[int], groups: int) -> Tensor:
    """relu(conv2d(input, weight, bias, stride, padding, groups)): [N, C, H, W] -> [N, K, P, Q]."""
    return torch.relu(F.conv2d(input, weight, bias, stride, padding, groups=groups))


def _relu_masked(grad_output: Tensor, output: Tensor) -> Tensor:
    # The ReLU passes gradient only where it passed input: output > 0.
    return torch.where(output > 0, grad_output, torch.zeros((), dtype=grad_output.dtype))


def conv2d_relu_backward_input(grad_output: Tensor, output: Tensor | None, weight: Tensor,
                               input_size: list[int], stride: list[int], padding: list[int],
                               groups: int) -> Tensor:
    """The input gradient of conv2d for grad_output * (output > 0): [N, C, H, W]; output
    None: grad_output is masked already."""
    masked = grad_output if output is None else _relu_masked(grad_output, output)
    return torch.nn.grad.conv2d_input(input_size, weight, masked, stride, padding,
                                      groups=groups)


def conv2d_relu_backward_weight(grad_output: Tensor, output: Tensor, input: Tensor,
                                weight_size: list[int], stride: list[int], padding: list[int],
                                groups: int, *, masked_grad_output: bool = False) -> tuple:
    """The weight and bias gradients for grad_output * (output > 0): ([K, C/groups, R, S], [K]),
    and with ``masked_grad_output`` that masked gradient [N, K, P, Q] too."""
    grad_masked = _relu_masked(grad_output, output)  # [N, K, P, Q]
    grad_weight = torch.nn.grad.conv2d_weight(input, weight_size, grad_masked, stride, padding,
                                              groups=groups)
    gradients = grad_weight, grad_masked.sum(dim=(0, 2, 3))
    return (*gradients, grad_masked) if masked_grad_output else gradients
