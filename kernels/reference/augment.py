"""PyTorch reference of kernels/augment.py."""
from __future__ import annotations

import torch
from torch import Tensor

from alexnet_triton.kernels.augment import check_params, unpack_params


def augment(images: Tensor, mean: Tensor, params: Tensor, crop_size: int) -> Tensor:
    """images uint8 [N, 3, S, S], mean float32 [3, S, S], params int32 [N, 3, 4]
    (pack_params(top, left, flip, shift)) -> float32 [N, 3, crop, crop] (pixel - mean +
    shift, 0..255 units)."""
    n, _, s, _ = images.shape
    if not 1 <= crop_size <= s:
        raise ValueError(f"augment: crop {crop_size} does not fit {s}x{s} images")
    check_params(params, n)
    top, left, flip, shift = unpack_params(params)
    if n and (int(top.min()) < 0 or int(left.min()) < 0 or int(top.max()) > s - crop_size
              or int(left.max()) > s - crop_size):
        raise ValueError(f"augment: crop offsets must lie in [0, {s - crop_size}]")
    # One slice per image: the crop is a view, so only the output is written (a gather
    # over 4-D index tensors costs ~20x more, and this runs on every CPU training step).
    out = torch.empty(n, 3, crop_size, crop_size, dtype=torch.float32, device=images.device)
    for i, (y, x, flipped) in enumerate(zip(top.tolist(), left.tolist(), flip.tolist())):
        rows, cols = slice(y, y + crop_size), slice(x, x + crop_size)
        centred = images[i, :, rows, cols].to(torch.float32) - mean[:, rows, cols]  # [3, crop, crop]
        if flipped:
            centred = centred.flip(-1)
        torch.add(centred, shift[i, :, None, None], out=out[i])
    return out
