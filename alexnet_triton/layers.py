"""nn.Module forms of alexnet_triton.functional.

Each subclasses its torch.nn counterpart, so parameter names, shapes, initialization,
repr and state_dict are exactly torch's; only forward runs the fused kernels. Options
the kernels do not implement (in-place dropout, string padding) raise ValueError.
"""
from __future__ import annotations

from torch import Tensor, nn

from alexnet_triton import checks
from alexnet_triton import functional as F

__all__ = ["Conv2dReLU", "Linear", "LinearReLU", "LinearReLUDropout", "LocalResponseNorm",
           "MaxPool2d", "Dropout"]


class Conv2dReLU(nn.Conv2d):
    """``nn.Conv2d`` followed by ReLU, fused: conv + bias + ReLU in one kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 groups: int = 1, bias: bool = True, device=None, dtype=None) -> None:
        if isinstance(padding, str):
            raise ValueError("Conv2dReLU: padding must be an int or a pair of ints, not a string")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         groups=groups, bias=bias, device=device, dtype=dtype)

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d_relu(input, self.weight, self.bias, self.stride, self.padding,
                             self.groups)


class Linear(nn.Linear):
    """``nn.Linear`` on the Triton GEMM."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)


class LinearReLU(nn.Linear):
    """``nn.Linear`` followed by ReLU, fused into the GEMM's epilogue."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear_relu(input, self.weight, self.bias)


class LinearReLUDropout(nn.Linear):
    """``nn.Linear``, ReLU and dropout in one GEMM: AlexNet's fc6 and fc7."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.5,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        checks.dropout_p("LinearReLUDropout", p)
        self.p = p

    def forward(self, input: Tensor) -> Tensor:
        return F.linear_relu_dropout(input, self.weight, self.bias, self.p, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class LocalResponseNorm(nn.LocalResponseNorm):
    """``nn.LocalResponseNorm`` (its signature and defaults) with ``groups``: windows never
    cross a group boundary. AlexNet's values are ``LocalResponseNorm(**paper.LRN)``."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 groups: int = 1) -> None:
        super().__init__(size, alpha, beta, k)
        self.groups = groups

    def forward(self, input: Tensor) -> Tensor:
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k,
                                     self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={self.groups}"


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` with its signature and defaults (stride=None: the kernel size).
    AlexNet's overlapping pool is ``MaxPool2d(3, 2)``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)

    def forward(self, input: Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, self.return_indices)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a Philox mask regenerated in the backward instead of stored;
    ``inplace=True`` is refused."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        checks.dropout_p("Dropout", p)
        if inplace:
            raise ValueError("Dropout: inplace=True is not implemented")
        super().__init__(p, inplace)

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)
