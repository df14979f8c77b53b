"""PyTorch reference of kernels/conv2d_relu.py."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alexnet_triton.kernels.conv2d_relu import folds, input_layout


def conv2d_relu_fold_input(input: Tensor, weight_size: list[int], stride: list[int],
                           padding: list[int], groups: int) -> Tensor:
    """The kernels' copy of input [N, C', H', W'] (channels_last; input_layout): blocks of
    stride pixels, or zero-padded pixels of C' channels."""
    if input.dim() != 4 or not folds(list(input.shape), groups):
        raise ValueError(f"conv2d_relu_fold_input: input {tuple(input.shape)} with "
                         f"groups={groups} is not folded")
    kind, (n, c_out, h_out, w_out), *_ = input_layout(list(input.shape), weight_size, stride,
                                                       padding, groups)
    _, c, h, w = input.shape
    (ph, pw) = padding
    if kind == "space_to_depth":  # [N, C', HS, SH, WS, SW] -> [N, HS, WS, C', SH, SW]
        sh, sw = stride
        c_pixel = c_out // (sh * sw)
        image = torch.zeros((n, c_pixel, h_out * sh, w_out * sw), dtype=input.dtype,
                            device=input.device)
        rows, columns = min(h, h_out * sh - ph), min(w, w_out * sw - pw)
        image[:, :c, ph:ph + rows, pw:pw + columns] = input[:, :, :rows, :columns]
        blocks = image.view(n, c_pixel, h_out, sh, w_out, sw).permute(0, 2, 4, 1, 3, 5)
        return blocks.reshape(n, h_out, w_out, c_out).permute(0, 3, 1, 2)
    folded = torch.zeros((n, h_out, w_out, c_out), dtype=input.dtype, device=input.device)
    folded[:, ph:ph + h, pw:pw + w, :c] = input.permute(0, 2, 3, 1)
    return folded.permute(0, 3, 1, 2)


def conv2d_relu_forward(input: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int],
                        padding: list[int], groups: int, *,
                        folded_input: Tensor | None = None) -> Tensor:
    """relu(conv2d(input, weight, bias, stride, padding, groups)): [N, C, H, W] -> [N, K, P, Q].
    ``folded_input``: the kernels' copy of input, which the reference does not read."""
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
                                groups: int, *, masked_grad_output: bool = False,
                                folded_input: Tensor | None = None) -> tuple:
    """The weight and bias gradients for grad_output * (output > 0): ([K, C/groups, R, S], [K]),
    and with ``masked_grad_output`` that masked gradient [N, K, P, Q] too. ``folded_input``:
    as conv2d_relu_forward's."""
    grad_masked = _relu_masked(grad_output, output)  # [N, K, P, Q]
    grad_weight = torch.nn.grad.conv2d_weight(input, weight_size, grad_masked, stride, padding,
                                              groups=groups)
    gradients = grad_weight, grad_masked.sum(dim=(0, 2, 3))
    return (*gradients, grad_masked) if masked_grad_output else gradients
