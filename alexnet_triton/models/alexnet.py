"""AlexNet exactly as Krizhevsky, Sutskever and Hinton (2012) built it, on the fused kernels.

Two columns, as the paper's figure 2: each holds half the kernels of every conv layer
(48, 128, 192, 192, 128) and half the neurons of fc6 and fc7. conv2, conv4 and conv5 see
only their own column's maps; conv3 and the FC layers see both columns, and those are the
only places where the columns exchange data. ``devices=("cuda:0", "cuda:1")`` pins each
column to its own GPU; ``devices=None`` (or one device) keeps both columns on one device
and runs each grouped layer as one grouped launch.

Beyond the paper, ``alexnet_triton.models.torchvision`` builds torchvision's single-column
variant on the same kernels with torchvision's state-dict keys.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
from torch import Tensor, nn

from alexnet_triton import checks
from alexnet_triton import functional as F
from alexnet_triton.models.columns import COLUMNS, ColumnConv2dReLU, ColumnLinear
# fc6_operands and resize_to_pool5 are re-exported: they lived here first.
from alexnet_triton.models.pool5 import POOL5_SIZE, fc6_operands, resize_to_pool5  # noqa: F401
from alexnet_triton.paper import LRN

__all__ = ["AlexNet", "alexnet", "MIN_INPUT_SIZE", "PAPER_INPUT_SIZE"]

PAPER_INPUT_SIZE = 224
# The smallest image that still leaves a 1x1 map after pool5 (conv1 11/4 pad 2, three 3/2 pools).
MIN_INPUT_SIZE = 63
DeviceLike = Union[str, torch.device]


def check_images(x: Tensor) -> Tensor:
    """x itself, once it is [N, 3, H, W] floating-point images the network takes.

    It returns x so that a torch.fx trace keeps it as a node the network's work depends on
    (``torch.fx.wrap`` below: traced, it runs when the graph runs, with these errors).
    """
    expected = f"[N, 3, H, W] floating-point images with H, W >= {MIN_INPUT_SIZE}"
    if not isinstance(x, Tensor):
        raise ValueError(f"AlexNet expects {expected}, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"AlexNet expects {expected}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"AlexNet expects {expected}, got dtype {x.dtype}")
    if min(x.shape[2:]) < MIN_INPUT_SIZE:
        raise ValueError(f"AlexNet expects {expected} (the paper's is 224), got "
                         f"{x.shape[2]}x{x.shape[3]}")
    return x


# The checks read the shape and dtype, which a torch.fx Proxy does not have: traced, the
# check is one node. torch.fx patches the name in the globals of the module that wraps it,
# so a module that imports check_images wraps it again (torchvision.py).
torch.fx.wrap("check_images")


def _resolve_devices(devices) -> Tuple[Optional[Tuple[torch.device, torch.device]],
                                       Optional[torch.device]]:
    """(column devices for the two-column path or None, the single device or None)."""
    if devices is None:
        return None, None
    if isinstance(devices, (str, torch.device)):
        return None, torch.device(devices)
    devices = tuple(torch.device(d) for d in devices)
    if len(devices) == 1:
        return None, devices[0]
    if len(devices) != COLUMNS:
        raise ValueError(f"devices must be None, one device or a pair (one per column), "
                         f"got {len(devices)}")
    return devices, None


class AlexNet(nn.Module):
    """The 2012 network: 5 conv + 3 FC layers, 60,965,224 parameters at 1000 classes.

    Args:
        num_classes: outputs of fc8.
        dropout: dropout probability on the outputs of fc6 and fc7 (the paper's 0.5).
        devices: None or one device for both columns on one device; a pair of devices for
            one column per device (the pair may name the same device twice).
        bias_init: the bias of conv2, conv4, conv5 and the FC layers. The paper's 1 "provides
            the ReLUs with positive inputs"; Caffe's reference model reports a flat loss with
            it and used 0.1, so it is an option.
        weight_std: standard deviation of the N(0, std) weights, the paper's 0.01.
        lrn: local response normalization after conv1 and conv2 (off: the paper's ablation).
        overlapping_pool: 3x3 stride-2 pooling; False gives the paper's 2x2 stride-2 ablation.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5,
                 devices: Union[None, DeviceLike, Sequence[DeviceLike]] = None,
                 bias_init: float = 1.0, weight_std: float = 0.01, lrn: bool = True,
                 overlapping_pool: bool = True) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        checks.dropout_p("AlexNet", dropout)
        self.column_devices, single_device = _resolve_devices(devices)
        self.use_lrn = lrn
        self.pool_kernel = 3 if overlapping_pool else 2
        self.dropout = dropout
        split = self.column_devices
        self.conv1 = ColumnConv2dReLU(3, 96, 11, stride=4, padding=2, devices=split)
        self.conv2 = ColumnConv2dReLU(96, 256, 5, padding=2, sees_other_column=False, devices=split)
        self.conv3 = ColumnConv2dReLU(256, 384, 3, padding=1, devices=split)
        self.conv4 = ColumnConv2dReLU(384, 384, 3, padding=1, sees_other_column=False, devices=split)
        self.conv5 = ColumnConv2dReLU(384, 256, 3, padding=1, sees_other_column=False, devices=split)
        self.fc6 = ColumnLinear(256 * POOL5_SIZE * POOL5_SIZE, 4096, relu=True, dropout=dropout,
                                devices=split, pool5_maps=True)
        self.fc7 = ColumnLinear(4096, 4096, relu=True, dropout=dropout, devices=split)
        # fc8 is not split: it lives on column 0, which returns the logits.
        self.fc8 = ColumnLinear(4096, num_classes, relu=False)
        if split is not None:
            self.fc8.to(split[0])
        self.reset_parameters(bias_init, weight_std)
        if single_device is not None:
            self.to(single_device)
        self._transfers: Optional[List[Tuple[str, torch.device, torch.device]]] = None

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .cpu() on a two-column model move the columns' parameters; the
        # columns then live where their parameters went (both on one device after
        # .to("cuda:0")), so the forward's transfers follow them.
        result = super()._apply(fn, *args, **kwargs)
        if self.column_devices is not None:
            self.column_devices = tuple(self.conv1.column_weight(c).device
                                        for c in range(COLUMNS))
        return result

    @torch.no_grad()
    def reset_parameters(self, bias_init: float = 1.0, weight_std: float = 0.01) -> None:
        """The paper's initialization: N(0, weight_std) weights; biases 0 in conv1 and conv3
        and ``bias_init`` elsewhere. Drawn whole, so every placement gets the same weights
        from the same seed."""
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            bias = 0.0 if name in ("conv1", "conv3") else bias_init
            getattr(self, name).init_paper(weight_std, bias)

    # -- forward -------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        """x [N, 3, H, W] (224 in the paper) -> logits [N, num_classes] on column 0's device."""
        return self.fc8(self.fc7_features(x))

    def fc7_features(self, x: Tensor) -> Tensor:
        """x [N, 3, H, W] -> fc7's 4096 activations [N, 4096] (after its ReLU, and its
        dropout in training mode) on column 0's device: the feature vectors whose Euclidean
        distances the paper's figure 4 (right) ranks images by."""
        x = check_images(x)
        if self.column_devices is None:
            return self._fc7_one_device(x)
        return self._fc7_two_columns(x)

    # Every layer runs as a module call (self.conv1(x), ...), never through its weights
    # from here, so a torch.fx trace files each layer's nodes under its state-dict name.

    def _normalize_and_pool(self, x: Tensor, groups: int) -> Tensor:
        if self.use_lrn:
            x = F.local_response_norm(x, **LRN, groups=groups)
        return F.max_pool2d(x, self.pool_kernel, 2)

    def _fc7_one_device(self, x: Tensor) -> Tensor:
        # Both columns at once: the LRN's groups keep each column's maps to itself.
        x = self._normalize_and_pool(self.conv1(x), COLUMNS)  # [N, 96, 27, 27]
        x = self._normalize_and_pool(self.conv2(x), COLUMNS)  # [N, 256, 13, 13]
        x = self.conv5(self.conv4(self.conv3(x)))  # [N, 256, 13, 13]
        x = self.fc6(F.max_pool2d(x, self.pool_kernel, 2))  # pool5's maps -> [N, 4096]
        return self.fc7(x)  # [N, 4096]

    def _fc7_two_columns(self, x: Tensor) -> Tensor:
        # A split layer takes each column's input and gives both_columns(...) of its output:
        # h[c] is column c's tensor, on column c's device.
        columns = range(COLUMNS)
        h = [self._transfer(x, column, "input") for column in columns]
        h = self.conv1(h)
        h = [self._normalize_and_pool(h[c], 1) for c in columns]
        h = self.conv2(h)
        h = [self._normalize_and_pool(h[c], 1) for c in columns]
        # conv3 sees the maps of both columns: the first exchange.
        h = self.conv5(self.conv4(self.conv3([self._gather(h, c, "conv3") for c in columns])))
        h = [F.max_pool2d(h[c], self.pool_kernel, 2) for c in columns]  # 2 x [N, 128, h, w]
        h = self.fc6([self._gather(h, c, "fc6") for c in columns])
        h = self.fc7([self._gather(h, c, "fc7") for c in columns])
        return self._gather(h, 0, "fc8")  # both halves of fc7, for fc8

    # -- the only places where data crosses between columns -----------------------------

    def _gather(self, per_column: Sequence[Tensor], column: int, site: str) -> Tensor:
        """Both columns' tensors, concatenated along channels/features on ``column``."""
        # Indexed, not iterated: traced, per_column is one both_columns node.
        return torch.cat([self._transfer(per_column[c], column, site) for c in range(COLUMNS)],
                         dim=1)

    def _transfer(self, x: Tensor, column: int, site: str) -> Tensor:
        device = self.column_devices[column]
        if self._transfers is not None:
            self._transfers.append((site, x.device, device))
        return x.to(device, non_blocking=True)

    @contextlib.contextmanager
    def record_transfers(self) -> Iterator[List[Tuple[str, torch.device, torch.device]]]:
        """Record (site, from, to) for every tensor the two-column forward moves to a column.

        Sites are "input", "conv3", "fc6", "fc7" and "fc8": the paper's exchanges.
        """
        self._transfers = []
        try:
            yield self._transfers
        finally:
            self._transfers = None


def alexnet(*, weights=None, progress: bool = True, **kwargs) -> AlexNet:
    """``AlexNet(**kwargs)`` with torchvision's builder signature.

    Args:
        weights: None (the paper's random initialization), or the path of a local file: an
            alexnet_triton checkpoint (a run's best.pt or latest.pt), its weights alone
            (best_weights.pt, any plain state dict of this network) or a dict with a
            "state_dict" entry. num_classes (and, from a checkpoint, lrn and
            overlapping_pool) follow the file unless given. Nothing is ever downloaded:
            torchvision's weight names and enums, and URLs, raise ValueError.
        progress: accepted for torchvision's signature; there is no download to show.
        **kwargs: ``AlexNet``'s arguments (devices, dropout, bias_init, ...).
    """
    del progress  # no download, so no progress bar
    if weights is None:
        return AlexNet(**kwargs)
    from alexnet_triton.models.weights import load_weights, needs_download
    reason = needs_download(weights)
    if reason:
        raise ValueError(f"{reason}: alexnet_triton downloads no weights; pass weights=None "
                         f"or the path of a local checkpoint (a training run's best.pt or "
                         f"best_weights.pt)")
    state, arch = load_weights(weights)
    if arch is not None and arch.get("name") != "alexnet":
        raise ValueError(f"{weights} holds a {arch.get('name')!r} network, not the two-column "
                         f"AlexNet (alexnet_triton.models.OneColumnAlexNet builds the "
                         f"one-column one)")
    fc8 = state.get("fc8.weight")
    if fc8 is None:
        raise ValueError(f"{weights} is not this AlexNet's state dict (no fc8.weight; "
                         f"torchvision's layout loads into torchvision_alexnet())")
    num_classes = int(fc8.shape[0])
    if kwargs.setdefault("num_classes", num_classes) != num_classes:
        raise ValueError(f"num_classes={kwargs['num_classes']} but {weights} has "
                         f"{num_classes} outputs")
    for name in ("lrn", "overlapping_pool"):
        if arch is not None and name in arch:
            kwargs.setdefault(name, arch[name])
    model = AlexNet(**kwargs)
    model.load_state_dict(state, strict=True)
    return model
