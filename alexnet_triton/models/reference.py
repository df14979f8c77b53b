"""The same AlexNet in plain torch.nn: the tests' oracle and the benchmarks' baseline.

nn.Conv2d with groups, nn.LocalResponseNorm applied to each column's maps, nn.MaxPool2d,
nn.Dropout on the outputs of fc6 and fc7, nn.Linear. Its state dict is the one of
alexnet_triton.model.AlexNet, so either loads the other's checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from alexnet_triton.models.alexnet import POOL5_SIZE
from alexnet_triton.paper import LRN


class ColumnLocalResponseNorm(nn.LocalResponseNorm):
    """nn.LocalResponseNorm within each column: the window never reaches the other column."""

    def __init__(self, columns: int = 2) -> None:
        super().__init__(**LRN)
        self.columns = columns

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([super(ColumnLocalResponseNorm, self).forward(part)
                          for part in x.chunk(self.columns, dim=1)], dim=1)


class ReferenceAlexNet(nn.Module):
    """AlexNet (2012) in torch.nn, the state-dict twin of alexnet_triton.model.AlexNet."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, lrn: bool = True,
                 overlapping_pool: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6 = nn.Linear(256 * POOL5_SIZE * POOL5_SIZE, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.lrn = ColumnLocalResponseNorm() if lrn else nn.Identity()
        self.pool = nn.MaxPool2d(3 if overlapping_pool else 2, 2)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.avgpool = nn.AdaptiveAvgPool2d(POOL5_SIZE)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.lrn(self.relu(self.conv1(x))))
        x = self.pool(self.lrn(self.relu(self.conv2(x))))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        x = self.avgpool(self.pool(self.relu(self.conv5(x))))
        x = self.dropout(self.relu(self.fc6(x.flatten(1))))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)
