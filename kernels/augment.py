"""Fused training augmentation: crop, horizontal flip, PCA colour shift, mean subtraction and
the uint8 -> float32 cast, in one pass over a uint8 batch.

out[n, c, i, j] = float(images[n, c, r, q]) - mean[c, r, q] + shift[n, c]
    with r = top[n] + i and q = left[n] + (crop - 1 - j if flip[n] else j).

The random parameters (top, left, flip, and the per-image RGB shift of the paper's PCA
lighting) are drawn on the host, so the kernel is a pure function of its inputs and a run is
reproducible whatever the device. The mean image is subtracted at the source pixel, before
the crop moves it: the paper subtracts the mean activity of the 256x256 images.

The kernel is memory-bound (1 byte of image, 4 of mean read and 4 of output written per
output element), so it is built for wide accesses: a program takes a [planes, rows,
window] tile (the grid and aranges give plane, row and column: no per-element div/mod),
and offsets inside a plane are int32. The output rows are contiguous, so its stores are
16 bytes per thread. The reads are the hard part: the crop's row segment starts at a
random column `left` (and runs backwards when flipped), while a vector load must be
aligned. So each row reads the aligned 16-byte words covering the segment, a window of
WINDOW >= crop + 15 columns from the 16-column boundary at or before `left` (16-byte
loads of uint8 and of float32 when S is a multiple of 16, as AlexNet's 256 is), and the
crop's columns are picked from the window in registers (tl.gather: warp shuffles). At
AlexNet's 224 crop the window is 256 columns, so about 12% of the lanes of the store and
of the window's tail are masked. The per-plane scalars come as one 16-byte record per
plane (pack_params: top, left, flip, shift's bits; the Augmenter packs them on the host and
copies them in one transfer), read in one 16-byte load per thread.

Not done here: writing the augmented batch directly in conv1's folded input layout
(kernels/conv2d_relu.py copies the images once into a zero-padded, 4-channel-per-pixel
buffer) would save that copy, but it changes this op's contract (float32 [N, 3, crop,
crop]) and conv1's, so it is left for a change to both.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from alexnet_triton.kernels import interpreting, launchable


@triton.jit
def augment_kernel(images_ptr, mean_ptr, params_ptr, out_ptr, planes, S, CROP,
                   PLANES: tl.constexpr, ROWS: tl.constexpr, WINDOW: tl.constexpr,
                   COPIES: tl.constexpr):
    # One program per (PLANES image planes n * 3 + c, ROWS crop rows): a [PLANES, ROWS,
    # WINDOW] tile, so planes, rows and columns come from the grid and aranges, with no
    # per-element div/mod. PLANES is 1 at AlexNet's crop; small crops take several.
    plane = tl.program_id(0) * PLANES + tl.arange(0, PLANES)  # [PLANES]
    plane_ok = plane < planes
    n = plane // 3
    channel = plane - n * 3
    # The plane's 16-byte record (top, left, flip, shift's float32 bits), read whole by
    # COPIES threads per plane, one 16-byte load each: a [PLANES, 4] tile would spread its
    # words over threads, 4 bytes apiece. The max over the copies (all equal) hands every
    # thread all four words.
    word = tl.arange(0, 4)[None, None, :]
    copy = tl.arange(0, COPIES)[None, :, None]
    record = tl.load(params_ptr + plane[:, None, None] * 4 + copy * 0 + word,
                     mask=plane_ok[:, None, None], other=0)  # [PLANES, COPIES, 4]
    record = tl.max(record, axis=1)  # [PLANES, 4]
    # [PLANES, 2, 2] split on its last axis: words (0, 2) and (1, 3).
    top_flip, left_shift = tl.split(tl.reshape(record, (PLANES, 2, 2)))
    top, flip = tl.split(top_flip)
    left, shift = tl.split(left_shift)
    shift = shift.to(tl.float32, bitcast=True)
    i = tl.program_id(1) * ROWS + tl.arange(0, ROWS)  # [ROWS] crop rows
    w = tl.arange(0, WINDOW)  # [WINDOW] window columns, and output columns
    rows_ok = plane_ok[:, None] & (i < CROP)[None, :]  # [PLANES, ROWS]
    # Clamped so that even wrong offsets never address outside the image.
    row = tl.minimum(tl.maximum(top[:, None] + i[None, :], 0), S - 1)  # [PLANES, ROWS]
    left = tl.minimum(tl.maximum(left, 0), S - CROP)
    # The crop's row segment starts at a random column, and vector loads must be aligned:
    # read the aligned 16-byte words covering it (the window starts at the 16-column
    # boundary at or before `left`, and WINDOW >= CROP + 15 columns), then pick the crop's
    # columns out of the window in registers (tl.gather: warp shuffles on sm_90).
    start = (left // 16) * 16  # [PLANES]
    column = start[:, None, None] + w[None, None, :]  # [PLANES, 1, WINDOW]
    inside = rows_ok[:, :, None] & (column < S)
    # The planes' bases in int64 (one per plane), the offsets inside a plane in int32.
    image = images_ptr + plane.to(tl.int64) * S * S
    centre = mean_ptr + channel.to(tl.int64) * S * S
    source = row[:, :, None] * S + column  # [PLANES, ROWS, WINDOW]
    pixel = tl.load(image[:, None, None] + source, mask=inside, other=0)
    mean = tl.load(centre[:, None, None] + source, mask=inside, other=0.0)
    value = pixel.to(tl.float32) - mean  # the mean subtracted at the source pixel
    col_ok = w < CROP
    offset = (left - start)[:, None]  # [PLANES, 1]
    pick = tl.where((flip != 0)[:, None], offset + CROP - 1 - w[None, :], offset + w[None, :])
    pick = tl.where(col_ok[None, :], pick, 0)  # [PLANES, WINDOW]
    picked = tl.gather(value, tl.broadcast_to(pick[:, None, :], (PLANES, ROWS, WINDOW)), axis=2)
    out = out_ptr + plane.to(tl.int64) * CROP * CROP
    target = out[:, None, None] + (i[:, None] * CROP + w[None, :])[None, :, :]
    tl.store(target, picked + shift[:, None, None],
             mask=rows_ok[:, :, None] & col_ok[None, None, :])


NUM_WARPS = 4


def _tile(crop_size: int) -> tuple[int, int, int]:
    """(PLANES, ROWS, WINDOW): 16 rows of 256 columns at AlexNet's crop (4 warps: per thread
    two 16-byte image loads, eight 16-byte mean loads and eight 16-byte output stores); small
    crops take several planes. 16 rows rather than 8 from bench/static's static model, not a
    GPU timing: 913 instead of 578 instructions per thread for twice the tile, predicted
    issue 18.8 instead of 23.8 us at batch 128 against 24.0 us of memory traffic, with 96
    registers (5 programs per SM). The interpreter pays per program: its tiles are larger."""
    window = triton.next_power_of_2(crop_size + 15)  # the crop's row plus alignment slack
    elements = 16384 if interpreting() else 4096
    rows = min(triton.next_power_of_2(crop_size), max(1, elements // window))
    planes = max(1, elements // (rows * window))
    return planes, rows, window


def pack_params(top: Tensor, left: Tensor, flip: Tensor, shift: Tensor) -> Tensor:
    """top/left/flip int32 [N], shift float32 [N, 3] -> the kernel's per-plane records,
    int32 [N, 3, 4]: plane (n, c) is (top[n], left[n], flip[n], shift[n, c]'s bits), 16
    bytes read in one load. On the tensors' device (the Augmenter packs on the host and
    copies the records once)."""
    n = top.shape[0] if top.dim() == 1 else -1
    for name, t in (("top", top), ("left", left), ("flip", flip)):
        if t.shape != (n,) or t.dtype != torch.int32:
            raise ValueError(f"augment: {name} must be int32 [{n}], got {t.dtype} {tuple(t.shape)}")
    if shift.shape != (n, 3) or shift.dtype != torch.float32:
        raise ValueError(f"augment: shift must be float32 [{n}, 3], got {shift.dtype} {tuple(shift.shape)}")
    per_image = torch.stack([top, left, flip], dim=1)[:, None, :].expand(n, 3, 3)
    return torch.cat([per_image, shift.view(torch.int32)[:, :, None]], dim=2).contiguous()


def unpack_params(params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """pack_params's inverse: (top, left, flip) int32 [N] and shift float32 [N, 3], views."""
    return params[:, 0, 0], params[:, 0, 1], params[:, 0, 2], params[:, :, 3].view(torch.float32)


def check_params(params: Tensor, n: int) -> None:
    """params must be pack_params's records of n images (their shape and dtype: reading
    the offsets is each caller's, where it costs no device sync)."""
    if params.shape != (n, 3, 4) or params.dtype != torch.int32:
        raise ValueError(f"augment: params must be int32 [{n}, 3, 4] (pack_params), got "
                         f"{params.dtype} {tuple(params.shape)}")


def augment(images: Tensor, mean: Tensor, params: Tensor, crop_size: int) -> Tensor:
    """images uint8 [N, 3, S, S], mean float32 [3, S, S], params int32 [N, 3, 4]
    (pack_params(top, left, flip, shift)) -> float32 [N, 3, crop, crop] (pixel - mean +
    shift, 0..255 units)."""
    n, channels, s, s2 = images.shape
    if images.dtype != torch.uint8 or channels != 3 or s != s2:
        raise ValueError(f"augment: images must be uint8 [N, 3, S, S], got {images.dtype} {tuple(images.shape)}")
    if not 1 <= crop_size <= s:
        raise ValueError(f"augment: crop {crop_size} does not fit {s}x{s} images")
    if mean.shape != (3, s, s) or mean.dtype != torch.float32:
        raise ValueError(f"augment: mean must be float32 [3, {s}, {s}], got {mean.dtype} {tuple(mean.shape)}")
    check_params(params, n)
    # A crop past the edge would read another image. Checked where it costs no device
    # sync (the Augmenter draws them in range on the host); the kernel also clamps.
    top, left, _, _ = unpack_params(params)
    if n and not params.is_cuda and (int(top.min()) < 0 or int(left.min()) < 0
                                     or int(top.max()) > s - crop_size
                                     or int(left.max()) > s - crop_size):
        raise ValueError(f"augment: crop offsets must lie in [0, {s - crop_size}]")
    # A 16-byte-aligned record needs a contiguous params on a fresh (aligned) allocation.
    images, mean, params = images.contiguous(), mean.contiguous(), params.contiguous()
    out = torch.empty((n, 3, crop_size, crop_size), device=images.device, dtype=torch.float32)
    if out.numel() == 0:
        return out
    planes, rows, window = _tile(crop_size)
    launchable(augment_kernel)[(triton.cdiv(n * 3, planes), triton.cdiv(crop_size, rows))](
        images, mean, params, out, n * 3, s, crop_size, PLANES=planes, ROWS=rows,
        WINDOW=window, COPIES=max(1, 32 * NUM_WARPS // planes), num_warps=NUM_WARPS)
    return out
