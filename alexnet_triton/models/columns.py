"""AlexNet's layers as the paper splits them between two GPU columns.

A column layer holds the weight and bias of one conv or FC layer either whole, on one
device (both columns computed by one grouped launch), or split by output rows between two
columns, each half on its column's device. Either way its state dict is the whole tensor in
torch.nn's layout (``conv2.weight`` is [256, 48, 5, 5]), so a checkpoint moves freely
between placements.

Called as a module, a layer computes all of its output maps: from one tensor when whole,
from a sequence of each column's input (on that column's device) when split, giving
``both_columns(column 0's maps, column 1's maps)``. So a torch.fx trace holds each layer's
work under its state-dict name (``conv1`` ... ``fc8``), and its last node is the layer's
whole output: what torchvision's ``create_feature_extractor`` returns for ``"conv1"``.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Tuple

import torch
import torch.fx
from torch import Tensor, nn

from alexnet_triton import functional as F
from alexnet_triton.models import pool5

COLUMNS = 2
_COLUMN_SUFFIX = re.compile(r"^(.*)_column(\d+)$")


def whole_name(parameter_name: str) -> tuple[str, Optional[int]]:
    """A parameter's state-dict key and which column's rows it holds (None: all of them).

    ``conv2.weight_column1`` -> (``conv2.weight``, 1); ``conv1.weight`` -> (``conv1.weight``, None).
    """
    match = _COLUMN_SUFFIX.match(parameter_name)
    if match is None:
        return parameter_name, None
    return match.group(1), int(match.group(2))


def both_columns(*per_column: Tensor) -> Tuple[Tensor, ...]:
    """A split layer's output: each column's maps, on that column's device."""
    return per_column


# One node holding both columns' maps, so the layer's last traced node is its whole output
# (a tuple of the columns' maps is no node: its last would be column 1's half).
torch.fx.wrap("both_columns")


class ColumnLayer(nn.Module):
    """Weight [out, ...] and bias [out], whole or split by rows over ``devices``.

    ``devices=None`` keeps them whole as ``weight`` and ``bias``; two devices split them
    into ``weight_column0``, ``weight_column1`` (and biases), the first half of the output
    rows in column 0.
    """

    def __init__(self, weight_shape: Sequence[int], devices: Optional[Sequence[torch.device]],
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.weight_shape = tuple(weight_shape)
        self.split = devices is not None
        if not self.split:
            self.weight = nn.Parameter(torch.empty(self.weight_shape, dtype=dtype))
            self.bias = nn.Parameter(torch.empty(self.weight_shape[0], dtype=dtype))
            return
        rows = self.weight_shape[0]
        if rows % COLUMNS:
            raise ValueError(f"{rows} output rows cannot be split between {COLUMNS} columns")
        half = (rows // COLUMNS, *self.weight_shape[1:])
        for column, device in enumerate(devices):
            self.register_parameter(f"weight_column{column}",
                                    nn.Parameter(torch.empty(half, device=device, dtype=dtype)))
            self.register_parameter(f"bias_column{column}",
                                    nn.Parameter(torch.empty(half[0], device=device, dtype=dtype)))

    def column_weight(self, column: int) -> Tensor:
        return getattr(self, f"weight_column{column}")

    def column_bias(self, column: int) -> Tensor:
        return getattr(self, f"bias_column{column}")

    def _whole(self, name: str) -> Tensor:
        if not self.split:
            return getattr(self, name)
        parts = [getattr(self, f"{name}_column{column}") for column in range(COLUMNS)]
        return torch.cat([part.to(parts[0].device) for part in parts])

    @torch.no_grad()
    def set_whole(self, name: str, value: Tensor) -> None:
        """Copy a whole [out, ...] tensor into the parameter, splitting it between columns."""
        if not self.split:
            getattr(self, name).copy_(value)
            return
        for column, part in enumerate(value.chunk(COLUMNS)):
            getattr(self, f"{name}_column{column}").copy_(part)

    def init_paper(self, weight_std: float, bias: float) -> None:
        """Weights from N(0, weight_std), biases constant, drawn whole so placements agree."""
        weight = torch.empty(self.weight_shape).normal_(0.0, weight_std)
        self.set_whole("weight", weight)
        self.set_whole("bias", torch.full((self.weight_shape[0],), float(bias)))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name in ("weight", "bias"):
            value = self._whole(name)
            destination[prefix + name] = value if keep_vars else value.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        expected_shapes = {"weight": self.weight_shape, "bias": self.weight_shape[:1]}
        for name, shape in expected_shapes.items():
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value = state_dict[key]
            if tuple(value.shape) != tuple(shape):
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{tuple(value.shape)}, the shape in this model is {tuple(shape)}.")
                continue
            self.set_whole(name, value)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key[len(prefix):] not in expected_shapes \
                        and "." not in key[len(prefix):]:
                    unexpected_keys.append(key)


class ColumnConv2dReLU(ColumnLayer):
    """A conv + ReLU layer of both columns.

    ``sees_other_column=False`` (conv2, conv4, conv5) means each column's kernels see only
    their own column's input maps: a groups=2 convolution when both columns share a device.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, sees_other_column: bool = True,
                 devices: Optional[Sequence[torch.device]] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        self.groups = 1 if sees_other_column else COLUMNS
        super().__init__((out_channels, in_channels // self.groups, kernel_size, kernel_size),
                         devices, dtype)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        """Whole: both columns in one grouped launch, x [N, C, H, W] -> [N, K, P, Q].
        Split: each column's input maps -> ``both_columns`` of its [N, K/2, P, Q]."""
        if not self.split:
            return F.conv2d_relu(x, self.weight, self.bias, self.stride, self.padding,
                                 self.groups)
        return both_columns(*[self.forward_column(x[column], column)
                              for column in range(COLUMNS)])

    def forward_column(self, x: Tensor, column: int) -> Tensor:
        """One column's half of the output maps from that column's input (on its device)."""
        return F.conv2d_relu(x, self.column_weight(column), self.column_bias(column),
                             self.stride, self.padding, 1)

    def extra_repr(self) -> str:
        out, per_group, kh, kw = self.weight_shape
        return (f"{per_group * self.groups}, {out}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, split={self.split}")


class ColumnLinear(ColumnLayer):
    """A fully connected layer, optionally with ReLU and dropout fused (fc6, fc7) or plain (fc8).

    ``pool5_maps=True`` (fc6) takes pool5's maps [N, C, h, w] of any input size: see
    ``pool5.fc6_operands``.
    """

    def __init__(self, in_features: int, out_features: int, relu: bool, dropout: float = 0.0,
                 devices: Optional[Sequence[torch.device]] = None,
                 dtype: Optional[torch.dtype] = None, pool5_maps: bool = False) -> None:
        super().__init__((out_features, in_features), devices, dtype)
        if dropout and not relu:
            raise ValueError("ColumnLinear: dropout is fused only after a ReLU")
        self.relu, self.dropout, self.pool5_maps = relu, dropout, pool5_maps

    def _apply_linear(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.pool5_maps:
            x, weight = pool5.fc6_operands(x, weight)
        if self.dropout:
            return F.linear_relu_dropout(x, weight, bias, self.dropout, self.training)
        if self.relu:
            return F.linear_relu(x, weight, bias)
        return F.linear(x, weight, bias)

    def forward(self, x):
        """Whole: x [N, in] (or pool5's maps) -> [N, out]. Split: each column's input (both
        columns' features, on that column's device) -> ``both_columns`` of its [N, out/2]."""
        if not self.split:
            return self._apply_linear(x, self.weight, self.bias)
        return both_columns(*[self.forward_column(x[column], column)
                              for column in range(COLUMNS)])

    def forward_column(self, x: Tensor, column: int) -> Tensor:
        return self._apply_linear(x, self.column_weight(column), self.column_bias(column))

    def extra_repr(self) -> str:
        out, features = self.weight_shape
        return (f"in_features={features}, out_features={out}, relu={self.relu}, "
                f"dropout={self.dropout}, split={self.split}, pool5_maps={self.pool5_maps}")
