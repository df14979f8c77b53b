"""One image file -> the paper's S x S RGB uint8 array: shorter side rescaled to S, center crop.

Pillow opens any format it knows; grayscale, CMYK, palette and 16-bit images become RGB,
and images with transparency are laid on white first (their hidden pixels are often black
noise that would otherwise show). Truncated files raise (Pillow's LOAD_TRUNCATED_IMAGES
stays off, and a PNG whose pixel data ends early, which Pillow takes as complete, is
checked here), so the caller can skip them rather than train on half-grey pictures; so do
images over Pillow's decompression-bomb limit, which Pillow itself only warns about.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
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
        check_pixel_count(image)
        if image.format == "PNG":  # before decoding: a truncated one may declare any size
            check_png_complete(source if isinstance(source, bytes) else _read(source))
        # A JPEG can decode straight at 1/2, 1/4 or 1/8 scale: much faster for big photos;
        # draft keeps both sides >= size, so the shorter side still gets rescaled down.
        image.draft("RGB", (size, size))
        image.load()
        image = resize_center_crop(to_rgb(image), size)
        return np.asarray(image, dtype=np.uint8).copy()


def check_pixel_count(image: Image.Image) -> None:
    """Refuse an image of more pixels than Pillow's decompression-bomb limit (89 million:
    a 9,500 x 9,500 picture, ~270 MB decoded). Pillow only warns up to twice that, and
    decodes it: a few such files in a folder stall a preparation or exhaust its memory."""
    width, height = image.size
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError(
            f"{width} x {height} is {width * height / 1e6:.0f} million pixels, over the "
            f"limit of {Image.MAX_IMAGE_PIXELS / 1e6:.0f} million (a decompression bomb?)")


def _read(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


# PNG colour type -> samples per pixel (grey, -, RGB, palette, grey + alpha, -, RGBA).
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 interlacing: (first column, first row, column step, row step) of each pass.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def check_png_complete(data: bytes) -> None:
    """Raise OSError unless the PNG's pixel data fills its declared size.

    Pillow's PNG decoder takes the end of the compressed stream as the end of the image:
    a file that declares 9000 x 9000 pixels but whose stream ends after one row loads
    without an error, the rest black (LOAD_TRUNCATED_IMAGES or not). So the stream is
    inflated once more here, counting bytes (never holding them), against what the header
    declares.
    """
    header, idat, offset = None, [], 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        offset += 12 + length
    if header is None:
        return  # Pillow read it: nothing here to hold it to
    width, height, depth, colour, _, _, interlaced = header
    bits = depth * _PNG_SAMPLES.get(colour, 4)
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    expected = 0
    for column, row, column_step, row_step in passes:
        pass_width = max(0, (width - column + column_step - 1) // column_step)
        pass_height = max(0, (height - row + row_step - 1) // row_step)
        if pass_width and pass_height:
            expected += pass_height * (1 + (pass_width * bits + 7) // 8)
    inflated, stream = 0, zlib.decompressobj()
    try:
        for chunk in idat:
            while chunk and inflated < expected:
                inflated += len(stream.decompress(chunk, 1 << 20))
                chunk = stream.unconsumed_tail
    except zlib.error as error:
        raise OSError(f"broken PNG data ({error})") from None
    if inflated < expected:
        raise OSError(f"image file is truncated: its PNG data ends after {inflated} of the "
                      f"{expected} bytes its {width} x {height} pixels take")


# Chroma subsampling by name, as Pillow's JPEG encoder numbers it.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}


def encode_jpeg(pixels: np.ndarray, quality: int, subsampling: str = "4:4:4") -> bytes:
    """uint8 [S, S, 3] -> baseline JPEG bytes (the settings every decoder, GPUs' included,
    takes on its fast path)."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="JPEG", quality=quality,
                                        subsampling=SUBSAMPLING[subsampling])
    return out.getvalue()
