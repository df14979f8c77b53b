"""PyTorch reference of kernels/augment.py."""
from __future__ import annotations

import torch
from torch import Tensor


def augment(images: Tensor, mean: Tensor, top: Tensor, left: Tensor, flip: Tensor, shift: Tensor,
            crop_size: int) -> Tensor:
    """images uint8 [N, 3, S, S], mean float32 [3, S, S], top/left/flip int32 [N],
    shift float32 [N, 3] -> float32 [N, 3, crop, crop] (pixel - mean + shift, 0..255 units)."""
    n, _, s, _ = images.shape
    if not 1 <= crop_size <= s:
        raise ValueError(f"augment: crop {crop_size} does not fit {s}x{s} images")
    if n and (int(top.min()) < 0 or int(left.min()) < 0 or int(top.max()) > s - crop_size
              or int(left.max()) > s - crop_size):
        raise ValueError(f"augment: crop offsets must lie in [0, {s - crop_size}]")
    j = torch.arange(crop_size, device=images.device)
    row = top.long()[:, None] + j  # [N, crop]
    col = left.long()[:, None] + torch.where(flip[:, None] != 0, crop_size - 1 - j, j)  # [N, crop]
    image = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(3, device=images.device)[None, :, None, None]
    rows, cols = row[:, None, :, None], col[:, None, None, :]
    pixel = images[image, channel, rows, cols].to(torch.float32)  # [N, 3, crop, crop]
    return pixel - mean[channel, rows, cols] + shift[:, :, None, None]
