"""What fc6 sees of pool5's maps, for every input size: the shared step of all the networks.

Both choices depend on the maps' size, which torch.fx cannot know while it traces, so both
functions are ``torch.fx.wrap``-ped: a traced graph holds one call to each and makes the
choice when it runs, so it is valid for every input size, like the eager model.
(``torch.compile`` and ``torch.export`` trace through them and guard on the size.)
"""
from __future__ import annotations

from typing import Tuple

import torch.fx
import torch.nn.functional as TF
from torch import Tensor

__all__ = ["POOL5_SIZE", "resize_to_pool5", "fc6_operands"]

POOL5_SIZE = 6


def resize_to_pool5(x: Tensor) -> Tensor:
    """Adaptive average pool to 6x6 for inputs other than 224; the identity at 224."""
    if tuple(x.shape[2:]) == (POOL5_SIZE, POOL5_SIZE):
        return x
    return TF.adaptive_avg_pool2d(x, POOL5_SIZE)


def fc6_operands(pool5: Tensor, weight: Tensor) -> Tuple[Tensor, Tensor]:
    """pool5's maps [N, C, h, w] and fc6's weight [out, C * 36] -> (features, weight) for fc6.

    At 1x1 maps (inputs of 63 to 78 px, as the built-in dataset's crops) the adaptive
    average pool copies each map's one value into all 36 positions, so fc6 is the weight
    summed over those positions [out, C] times the C values: the same function with 36x
    less work in fc6's three GEMMs, and its weight gradient is the same for all 36
    positions, as it is through the copies. Only the order of the float sums differs.
    """
    if tuple(pool5.shape[2:]) == (1, 1):
        n, channels = pool5.shape[:2]
        folded = weight.reshape(weight.shape[0], channels, POOL5_SIZE * POOL5_SIZE).sum(-1)
        return pool5.reshape(n, channels), folded
    return resize_to_pool5(pool5).flatten(1), weight


# torch.fx patches a wrapped name in this module's globals only: the models call these
# through this module (``pool5.fc6_operands``), never through a name imported elsewhere.
torch.fx.wrap("resize_to_pool5")
torch.fx.wrap("fc6_operands")
