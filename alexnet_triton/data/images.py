"""One image file -> the paper's S x S RGB uint8 array: shorter side rescaled to S, center crop.

Pillow opens any format it knows; grayscale, CMYK, palette and 16-bit images become RGB,
and images with transparency are laid on white first (their hidden pixels are often black
noise that would otherwise show). Truncated files raise (Pillow's LOAD_TRUNCATED_IMAGES
stays off), so the caller can skip them rather than train on half-grey pictures.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image

Source = Union[str, os.PathLike, bytes]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> "RGB"."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # 16-bit and float grayscale: Pillow's convert would clip at 255, so scale down.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Rescale so the shorter side is `size`, then cut the central size x size square."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(source: Source, size: int) -> np.ndarray:
    """A file path or encoded bytes -> uint8 [size, size, 3] (HWC, RGB); raises on bad files."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        # A JPEG can decode straight at 1/2, 1/4 or 1/8 scale: much faster for big photos;
        # draft keeps both sides >= size, so the shorter side still gets rescaled down.
        image.draft("RGB", (size, size))
        image.load()
        image = resize_center_crop(to_rgb(image), size)
        return np.asarray(image, dtype=np.uint8).copy()


# Chroma subsampling by name, as Pillow's JPEG encoder numbers it.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def encode_jpeg(pixels: np.ndarray, quality: int, subsampling: str = "4:4:4") -> bytes:
    """uint8 [S, S, 3] -> baseline JPEG bytes (the settings every decoder, GPUs' included,
    takes on its fast path)."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality,
                                        subsampling=SUBSAMPLING[subsampling])
    return out.getvalue()
