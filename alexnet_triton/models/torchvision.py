"""torchvision's single-column AlexNet variant on the fused kernels, with its state-dict keys."""
from __future__ import annotations

import torch.fx
from torch import Tensor, nn

from alexnet_triton import layers
from alexnet_triton.models import pool5
from alexnet_triton.models.alexnet import check_images

__all__ = ["torchvision_alexnet"]

# A torch.fx trace keeps the image check as a node that runs with the graph (see alexnet.py).
torch.fx.wrap("check_images")


class _TorchvisionAlexNet(nn.Module):
    """torchvision's single-column AlexNet (64-192-384-256-256, no LRN, no groups).

    The fused ReLUs keep their torchvision slots as nn.Identity, so the state-dict keys are
    torchvision's own (features.0.weight ... classifier.6.bias).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            layers.Conv2dReLU(3, 64, kernel_size=11, stride=4, padding=2), nn.Identity(),
            layers.MaxPool2d(3, 2),
            layers.Conv2dReLU(64, 192, kernel_size=5, padding=2), nn.Identity(),
            layers.MaxPool2d(3, 2),
            layers.Conv2dReLU(192, 384, kernel_size=3, padding=1), nn.Identity(),
            layers.Conv2dReLU(384, 256, kernel_size=3, padding=1), nn.Identity(),
            layers.Conv2dReLU(256, 256, kernel_size=3, padding=1), nn.Identity(),
            layers.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            layers.Dropout(dropout), layers.LinearReLU(256 * 6 * 6, 4096), nn.Identity(),
            layers.Dropout(dropout), layers.LinearReLU(4096, 4096), nn.Identity(),
            layers.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = pool5.resize_to_pool5(self.features(check_images(x)))
        return self.classifier(x.flatten(1))


def torchvision_alexnet(num_classes: int = 1000, dropout: float = 0.5) -> nn.Module:
    """torchvision's ``alexnet`` architecture on the fused kernels, with its state-dict keys,
    so a torchvision checkpoint loads with strict=True and gives the same logits."""
    return _TorchvisionAlexNet(num_classes, dropout)
