"""PyTorch reference of kernels/linear.py."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from alexnet_triton.kernels.reference.dropout import dropout_scale, keep_mask


def linear_forward(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool, p: float,
                   seed: Optional[Tensor]) -> Tensor:
    """input [M, K], weight [N, K], bias [N] -> dropout(relu(input @ weight.T + bias)) [M, N]."""
    output = input @ weight.T  # [M, N]
    if bias is not None:
        output = output + bias
    if relu:
        output = torch.relu(output)
    if seed is not None:
        # The Philox mask of the flat index of the contiguous [M, N] output, bit for bit.
        keep = keep_mask(seed, p, output.numel(), output.device).reshape(output.shape)
        output = torch.where(keep, output * dropout_scale(p, output.dtype),
                             torch.zeros((), dtype=output.dtype))
    return output


def _masked_grad_output(grad_output: Tensor, output: Optional[Tensor], p: float) -> Tensor:
    """g' = grad_output / (1 - p) * (output > 0): ReLU's and dropout's backward in one."""
    grad = grad_output * dropout_scale(p, grad_output.dtype) if p > 0 else grad_output  # [M, N]
    if output is not None:
        grad = torch.where(output > 0, grad, torch.zeros((), dtype=grad.dtype))
    return grad


def linear_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                          p: float) -> Tensor:
    """grad_input [M, K] = g' @ weight."""
    return _masked_grad_output(grad_output, output, p) @ weight


def linear_backward_weight(grad_output: Tensor, output: Optional[Tensor], input: Tensor,
                           p: float) -> Tuple[Tensor, Tensor]:
    """grad_weight [N, K] = g'.T @ input and grad_bias [N] = g'.sum(0)."""
    grad = _masked_grad_output(grad_output, output, p)  # [M, N]
    return grad.T @ input, grad.sum(0)
