"""The network a checkpoint's arch record describes."""
from __future__ import annotations

from torch import nn

from alexnet_triton.models.alexnet import AlexNet
from alexnet_triton.models.one_column import OneColumnAlexNet


def build_model(arch: dict, devices=None) -> nn.Module:
    """The network an ``arch`` record describes (see ``alexnet_triton.training.checkpoint``).

    arch: {"name": "alexnet" | "alexnet-one-column", "num_classes", "dropout", "lrn",
    "overlapping_pool", "bias_init", "weight_std"}; devices: None, one device, or a pair
    of column devices (AlexNet only; the one-column net takes the first).
    """
    common = dict(num_classes=arch["num_classes"], dropout=arch["dropout"],
                  bias_init=arch["bias_init"], weight_std=arch["weight_std"], lrn=arch["lrn"],
                  overlapping_pool=arch["overlapping_pool"])
    if arch["name"] == "alexnet-one-column":
        if isinstance(devices, (list, tuple)):
            devices = devices[0]
        return OneColumnAlexNet(device=devices, **common)
    if arch["name"] == "alexnet":
        return AlexNet(devices=devices, **common)
    raise ValueError(f"unknown architecture {arch['name']!r}")
