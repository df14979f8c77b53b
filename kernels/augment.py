"""Fused training augmentation: crop, horizontal flip, PCA colour shift, mean subtraction and
the uint8 -> float32 cast, in one pass over a uint8 batch.

out[n, c, i, j] = float(images[n, c, r, q]) - mean[c, r, q] + shift[n, c]
    with r = top[n] + i and q = left[n] + (crop - 1 - j if flip[n] else j).

The random parameters (top, left, flip, and the per-image RGB shift of the paper's PCA
lighting) are drawn on the host, so the kernel is a pure function of its inputs and a run is
reproducible whatever the device. The mean image is subtracted at the source pixel, before
the crop moves it: the paper subtracts the mean activity of the 256x256 images.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import interpreting, launchable


@triton.jit
def augment_kernel(images_ptr, mean_ptr, top_ptr, left_ptr, flip_ptr, shift_ptr, out_ptr,
                   numel, S, CROP, BLOCK: tl.constexpr):
    # One lane per output element of the flattened [N, 3, CROP, CROP] batch; per-image
    # parameters are gathered per lane (a few distinct addresses per block, cache hits).
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_bounds = offsets < numel
    j = offsets % CROP
    i = (offsets // CROP) % CROP
    plane = offsets // (CROP * CROP)  # n * 3 + c
    channel = plane % 3
    n = plane // 3
    top = tl.load(top_ptr + n, mask=in_bounds, other=0).to(tl.int64)
    left = tl.load(left_ptr + n, mask=in_bounds, other=0).to(tl.int64)
    flip = tl.load(flip_ptr + n, mask=in_bounds, other=0)
    # Clamped so that even wrong offsets never address outside the image.
    row = tl.minimum(tl.maximum(top + i, 0), S - 1)
    col = tl.minimum(tl.maximum(left + tl.where(flip != 0, CROP - 1 - j, j), 0), S - 1)
    pixel = tl.load(images_ptr + plane * S * S + row * S + col, mask=in_bounds, other=0)
    mean = tl.load(mean_ptr + channel * S * S + row * S + col, mask=in_bounds, other=0.0)
    shift = tl.load(shift_ptr + plane, mask=in_bounds, other=0.0)
    tl.store(out_ptr + offsets, pixel.to(tl.float32) - mean + shift, mask=in_bounds)


def _block() -> int:
    return 4096 if interpreting() else 1024


def augment(images: Tensor, mean: Tensor, top: Tensor, left: Tensor, flip: Tensor, shift: Tensor,
            crop_size: int) -> Tensor:
    """images uint8 [N, 3, S, S], mean float32 [3, S, S], top/left/flip int32 [N],
    shift float32 [N, 3] -> float32 [N, 3, crop, crop] (pixel - mean + shift, 0..255 units)."""
    n, channels, s, s2 = images.shape
    if images.dtype != torch.uint8 or channels != 3 or s != s2:
        raise ValueError(f"augment: images must be uint8 [N, 3, S, S], got {images.dtype} {tuple(images.shape)}")
    if not 1 <= crop_size <= s:
        raise ValueError(f"augment: crop {crop_size} does not fit {s}x{s} images")
    if mean.shape != (3, s, s) or mean.dtype != torch.float32:
        raise ValueError(f"augment: mean must be float32 [3, {s}, {s}], got {mean.dtype} {tuple(mean.shape)}")
    for name, t in (("top", top), ("left", left), ("flip", flip)):
        if t.shape != (n,) or t.dtype != torch.int32:
            raise ValueError(f"augment: {name} must be int32 [{n}], got {t.dtype} {tuple(t.shape)}")
    if shift.shape != (n, 3) or shift.dtype != torch.float32:
        raise ValueError(f"augment: shift must be float32 [{n}, 3], got {shift.dtype} {tuple(shift.shape)}")
    # A crop past the edge would read another image. Checked where it costs no device
    # sync (the Augmenter draws them in range on the host); the kernel also clamps.
    if n and not top.is_cuda and (int(top.min()) < 0 or int(left.min()) < 0 or int(top.max()) > s - crop_size
              or int(left.max()) > s - crop_size):
        raise ValueError(f"augment: crop offsets must lie in [0, {s - crop_size}]")
    images, mean, shift = images.contiguous(), mean.contiguous(), shift.contiguous()
    out = torch.empty((n, 3, crop_size, crop_size), device=images.device, dtype=torch.float32)
    numel = out.numel()
    if numel == 0:
        return out
    block = _block()
    launchable(augment_kernel)[(triton.cdiv(numel, block),)](
        images, mean, top.contiguous(), left.contiguous(), flip.contiguous(), shift, out,
        numel, s, crop_size, BLOCK=block)
    return out
