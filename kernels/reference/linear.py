"""PyTorch reference of kernels/linear.py.

It computes as the kernels do: operands read in their dtype, products summed and the
epilogue (bias, ReLU, dropout's scale) applied in the accumulation dtype (float32 for
bf16), the result rounded to the output's dtype once. Rounding ``input @ weight.T`` to bf16
before adding the bias moved pre-activations near the ReLU's threshold by up to 2**-9 (with
AlexNet's bias of 1 those are where ``input @ weight.T`` is near -1) and flipped the ReLU
of some of them, which doubled fc6's and fc7's bf16 gradient error (issue 25).
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from alexnet_triton.kernels import accumulation_dtype
from alexnet_triton.kernels.reference.dropout import dropout_scale, keep_mask


def _without_autocast(function):
    """``function`` run with autocast off on its first argument's device.

    A bf16 model calls the reference inside autocast (functional._autocast has cast the
    operands already), and autocast would cast the float32 GEMMs back to bf16, rounding
    ``input @ weight.T`` before the bias after all.
    """
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        device = args[0].device.type
        if device not in ("cuda", "cpu") or not torch.is_autocast_enabled(device):
            return function(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return function(*args, **kwargs)
    return wrapped


def _wide(t: Tensor) -> Tensor:
    """t in its accumulation dtype: bf16 values are exact in float32, and so are products
    of two of them, so a float32 GEMM of them is the kernels' bf16 GEMM."""
    return t.to(accumulation_dtype(t.dtype))


@_without_autocast
def linear_forward(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool, p: float,
                   seed: Optional[Tensor]) -> Tensor:
    """input [M, K], weight [N, K], bias [N] -> dropout(relu(input @ weight.T + bias)) [M, N]."""
    output = _wide(input) @ _wide(weight).T  # [M, N]
    if bias is not None:
        output = output + _wide(bias)
    if relu:
        output = torch.relu(output)
    if seed is not None:
        # The Philox mask of the flat index of the contiguous [M, N] output, bit for bit.
        keep = keep_mask(seed, p, output.numel(), output.device).reshape(output.shape)
        output = torch.where(keep, output * dropout_scale(p, output.dtype),
                             torch.zeros((), dtype=output.dtype))
    return output.to(input.dtype)


def _masked_grad_output(grad_output: Tensor, output: Optional[Tensor]) -> Tensor:
    """grad_output * (output > 0), ReLU's and dropout's mask (exact in any dtype), widened;
    dropout's scale 1/(1-p) is applied to the sums, as the kernels do."""
    grad = _wide(grad_output)  # [M, N]
    if output is not None:
        grad = torch.where(output > 0, grad, torch.zeros((), dtype=grad.dtype))
    return grad


def _scaled(sums: Tensor, p: float, dtype: torch.dtype) -> Tensor:
    return (sums * dropout_scale(p, sums.dtype) if p > 0 else sums).to(dtype)


@_without_autocast
def linear_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                          p: float) -> Tensor:
    """grad_input [M, K] = g' @ weight, g' = grad_output / (1 - p) * (output > 0)."""
    sums = _masked_grad_output(grad_output, output) @ _wide(weight)
    return _scaled(sums, p, grad_output.dtype)


@_without_autocast
def linear_backward_weight(grad_output: Tensor, output: Optional[Tensor], input: Tensor,
                           p: float) -> Tuple[Tensor, Tensor]:
    """grad_weight [N, K] = g'.T @ input and grad_bias [N] = g'.sum(0)."""
    grad = _masked_grad_output(grad_output, output)  # [M, N]
    return (_scaled(grad.T @ _wide(input), p, grad_output.dtype),
            _scaled(grad.sum(0), p, grad_output.dtype))
