"""The paper's one-GPU ablation net (section 6.1, ``--one-column``), and the model builder.

The paper compares its two-GPU net with "a net with half as many kernels in each
convolutional layer trained on one GPU", and its footnote adds that the one-GPU net keeps
the full final conv layer and the full fully-connected layers so that the two nets have
about the same number of parameters. So this is ONE column, no grouped convolutions:

    conv1 48 x 11x11/4  -> LRN -> pool        (the two-column net: 96)
    conv2 128 x 5x5     -> LRN -> pool        (256, grouped in two)
    conv3 192 x 3x3                           (384)
    conv4 192 x 3x3                           (384, grouped)
    conv5 256 x 3x3     -> pool               (256, grouped): not halved
    fc6 4096, fc7 4096 (ReLU + dropout), fc8  (the same)

The state-dict keys are AlexNet's (``conv1.weight`` ... ``fc8.bias``); the shapes differ.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx
from torch import Tensor, nn

from alexnet_triton import layers
from alexnet_triton import functional as F
from alexnet_triton.models import pool5
from alexnet_triton.models.alexnet import MIN_INPUT_SIZE
from alexnet_triton.paper import LRN

ONE_COLUMN_KERNELS = (48, 128, 192, 192, 256)


def check_one_column_images(x: Tensor) -> Tensor:
    """x itself, once it is [N, 3, H, W] images (returned: see alexnet.check_images)."""
    if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[2:]) < MIN_INPUT_SIZE:
        raise ValueError(f"OneColumnAlexNet expects [N, 3, H, W] images with H, W >= "
                         f"{MIN_INPUT_SIZE}, got shape {tuple(x.shape)}")
    return x


# Traced by torch.fx, the check is one node that runs with the graph (it reads the shape).
torch.fx.wrap("check_one_column_images")


class Pool5LinearReLUDropout(layers.LinearReLUDropout):
    """fc6 on pool5's maps [N, C, h, w] of any input size (``pool5.fc6_operands``), so its
    whole work is one module call: a torch.fx trace files it under ``fc6``."""

    def forward(self, input: Tensor) -> Tensor:
        features, weight = pool5.fc6_operands(input, self.weight)
        return F.linear_relu_dropout(features, weight, self.bias, self.p, self.training)


class OneColumnAlexNet(nn.Module):
    """The paper's one-GPU net on the fused kernels; arguments as ``AlexNet``'s."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5,
                 device: Optional[torch.device] = None, bias_init: float = 1.0,
                 weight_std: float = 0.01, lrn: bool = True,
                 overlapping_pool: bool = True) -> None:
        super().__init__()
        k1, k2, k3, k4, k5 = ONE_COLUMN_KERNELS
        self.use_lrn = lrn
        self.pool_kernel = 3 if overlapping_pool else 2
        self.conv1 = layers.Conv2dReLU(3, k1, 11, stride=4, padding=2)
        self.conv2 = layers.Conv2dReLU(k1, k2, 5, padding=2)
        self.conv3 = layers.Conv2dReLU(k2, k3, 3, padding=1)
        self.conv4 = layers.Conv2dReLU(k3, k4, 3, padding=1)
        self.conv5 = layers.Conv2dReLU(k4, k5, 3, padding=1)
        self.lrn = layers.LocalResponseNorm(**LRN)
        self.pool = layers.MaxPool2d(self.pool_kernel, 2)
        self.fc6 = Pool5LinearReLUDropout(k5 * pool5.POOL5_SIZE ** 2, 4096, p=dropout)
        self.fc7 = layers.LinearReLUDropout(4096, 4096, p=dropout)
        self.fc8 = layers.Linear(4096, num_classes)
        self.reset_parameters(bias_init, weight_std)
        if device is not None:
            self.to(device)

    @torch.no_grad()
    def reset_parameters(self, bias_init: float = 1.0, weight_std: float = 0.01) -> None:
        """The paper's initialization, as ``AlexNet.reset_parameters``."""
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layer = getattr(self, name)
            layer.weight.normal_(0.0, weight_std)
            layer.bias.fill_(0.0 if name in ("conv1", "conv3") else bias_init)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc8(self.fc7_features(x))

    def fc7_features(self, x: Tensor) -> Tensor:
        """x [N, 3, H, W] -> fc7's 4096 activations [N, 4096], as ``AlexNet.fc7_features``."""
        x = self.conv1(check_one_column_images(x))
        x = self.pool(self.lrn(x) if self.use_lrn else x)
        x = self.conv2(x)
        x = self.pool(self.lrn(x) if self.use_lrn else x)
        x = self.pool(self.conv5(self.conv4(self.conv3(x))))
        return self.fc7(self.fc6(x))  # fc6 takes pool5's maps of any size, as AlexNet's
