"""AlexNet's layers, stated once: each layer's hyper-parameters and the shapes it sees.

The paper's network (section 3.5, figure 2) at its 224-pixel images, both columns on one
device as ``AlexNet(devices=None)`` runs them: groups=2 wherever a layer sees only its own
column's maps (conv2, conv4, conv5 and both response normalizations). bench/ reads its shapes
here (the benchmarked ops, the static report's launches, the GPU check's correctness and
precompile phases), so what one phase compiles is what another runs; tests/models/
test_shapes.py holds the table against the models. A leaf beside paper.py, not under models/
(whose package imports torch): the static report and the GPU check read it before torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple, Union

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class Conv:
    """A convolution and its ReLU on [N, in_channels, size, size] maps."""

    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    groups: int
    size: int

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def weight(self) -> Shape:
        """[K, C / groups, R, S]: each group's kernels see their own column's maps."""
        return (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel)

    def input(self, n: int) -> Shape:
        return (n, self.in_channels, self.size, self.size)

    def output(self, n: int) -> Shape:
        return (n, self.out_channels, self.out_size, self.out_size)


@dataclass(frozen=True)
class ResponseNorm:
    """Local response normalization (section 3.3) within each of ``groups`` columns."""

    channels: int
    size: int
    groups: int

    def input(self, n: int) -> Shape:
        return (n, self.channels, self.size, self.size)

    output = input


@dataclass(frozen=True)
class Pool:
    """Overlapping max pooling (section 3.4): 3x3 windows at stride 2."""

    channels: int
    size: int
    kernel: int = 3
    stride: int = 2

    @property
    def out_size(self) -> int:
        return (self.size - self.kernel) // self.stride + 1

    def input(self, n: int) -> Shape:
        return (n, self.channels, self.size, self.size)

    def output(self, n: int) -> Shape:
        return (n, self.channels, self.out_size, self.out_size)


@dataclass(frozen=True)
class FullyConnected:
    """A fully-connected layer; fc6 and fc7 are followed by a ReLU and dropout."""

    in_features: int
    out_features: int
    relu: bool

    @property
    def dropout(self) -> bool:
        return self.relu  # the paper drops out exactly the two hidden layers' outputs

    @property
    def weight(self) -> Shape:
        return (self.out_features, self.in_features)

    def input(self, n: int) -> Shape:
        return (n, self.in_features)

    def output(self, n: int) -> Shape:
        return (n, self.out_features)


Layer = Union[Conv, ResponseNorm, Pool, FullyConnected]

IMAGE_SIZE = 256  # the images, rescaled to 256 x 256 (section 2)
CROP_SIZE = 224  # the patches the network sees, cropped from them (section 4.1)
DROPOUT_P = 0.5  # on the outputs of fc6 and fc7 (section 4.2)
CLASSES = 1000  # ImageNet's; fc8's outputs

# In network order: each layer's input is the previous one's output (pool5's 256 x 6 x 6
# maps flattened are fc6's 9216 features).
LAYERS: Dict[str, Layer] = {
    "conv1": Conv(3, 96, kernel=11, stride=4, padding=2, groups=1, size=CROP_SIZE),
    "lrn1": ResponseNorm(96, size=55, groups=2),
    "pool1": Pool(96, size=55),
    "conv2": Conv(96, 256, kernel=5, stride=1, padding=2, groups=2, size=27),
    "lrn2": ResponseNorm(256, size=27, groups=2),
    "pool2": Pool(256, size=27),
    "conv3": Conv(256, 384, kernel=3, stride=1, padding=1, groups=1, size=13),
    "conv4": Conv(384, 384, kernel=3, stride=1, padding=1, groups=2, size=13),
    "conv5": Conv(384, 256, kernel=3, stride=1, padding=1, groups=2, size=13),
    "pool5": Pool(256, size=13),
    "fc6": FullyConnected(256 * 6 * 6, 4096, relu=True),
    "fc7": FullyConnected(4096, 4096, relu=True),
    "fc8": FullyConnected(4096, CLASSES, relu=False),
}


def of_kind(kind: type) -> Dict[str, Layer]:
    """The layers of one kind (Conv, ResponseNorm, Pool, FullyConnected), in network order."""
    return {name: layer for name, layer in LAYERS.items() if isinstance(layer, kind)}
