"""The training step and the evaluation as plain functions (as timm's train_one_epoch and
validate): the trainer loops over them, evaluate and predict call them directly.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as TF
from torch import nn

from alexnet_triton.runtime import autocast
from alexnet_triton.training.metrics import Totals


def train_step(network: nn.Module, optimizer: torch.optim.Optimizer, augmenter,
               generator: torch.Generator, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device, amp: bool) -> torch.Tensor:
    """One SGD step on a uint8 batch; returns the batch's mean loss, a 0-d tensor left on
    the device (reading it would make the host wait for the step)."""
    x = augmenter.train(images, generator)  # [N, 3, crop, crop] on the device
    labels = labels.to(device, non_blocking=True)
    with autocast(device, amp):
        logits = network(x)
    loss = TF.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def ten_crop_probabilities(model: nn.Module, augmenter, images: torch.Tensor) -> torch.Tensor:
    """The softmax averaged over the ten crops (4 corners + center, and their flips), as
    the paper reports: uint8 [N, 3, S, S] -> float32 [N, classes]."""
    crops = augmenter.ten_crop(images)  # [10, N, 3, crop, crop]
    return torch.stack([model(crop).float().softmax(dim=1) for crop in crops]).mean(dim=0)


@torch.no_grad()
def evaluate(model: nn.Module, loader, augmenter, device: torch.device, *,
             ten_crop: bool = False, amp: bool = False,
             reduce: Optional[Callable[[torch.Tensor], None]] = None,
             progress: Optional[Callable[[int], None]] = None) -> dict:
    """Mean loss, top-1 and top-5 error over ``loader``'s (uint8 images, labels).

    Center crop: the loss is the cross-entropy of the logits. Ten crops: the loss is -log
    of the averaged probability of the label. ``reduce`` sums the totals across DDP ranks
    (in place).
    """
    was_training = model.training
    model.eval()
    totals = Totals(device)
    try:
        for images, labels in loader:
            labels = labels.to(device, non_blocking=True)
            with autocast(device, amp):
                if ten_crop:
                    probabilities = ten_crop_probabilities(model, augmenter, images)
                    picked = probabilities.gather(1, labels[:, None]).clamp_min(1e-12)
                    totals.add(-picked.log().sum(), probabilities, labels)
                else:
                    logits = model(augmenter.center(images)).float()
                    totals.add(TF.cross_entropy(logits, labels, reduction="sum"), logits, labels)
            if progress is not None:
                progress(labels.numel())
    finally:
        model.train(was_training)
    if reduce is not None:
        reduce(totals.sums)
    return totals.result()
