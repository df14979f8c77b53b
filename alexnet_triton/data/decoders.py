"""Stored JPEG bytes -> RGB pixels on the CPU: libjpeg-turbo through simplejpeg, or Pillow.

Both run the same libjpeg-turbo (Pillow's wheels bundle it) with the same settings (the
accurate integer IDCT and fancy upsampling), so their pixels are bit-identical (tested on
every chroma subsampling the store writes). simplejpeg is faster per image: it decodes
straight into the caller's buffer (a row of the batch being built, pinned when it goes
to a GPU) and leaves out Pillow's image object, mode conversion and copy; and it releases
the GIL while decoding, so loader threads decode in parallel. Measured on one core of a
2-core EPYC, 256-px crops of real photographs, through the loader: stored q95 4:4:4, Pillow
1,295 images/s and simplejpeg 2,236; q90 4:2:0, 1,391 and 3,677
(bench/results/loader-cpu.md; ``pytest bench/ --benchmark-only -k loader`` measures them
here and now).

``cpu_decoder("auto")`` takes simplejpeg where it imports (a dependency of the package, with
wheels for Linux, macOS and Windows) and Pillow where it does not, and says which.
"""
from __future__ import annotations

import io
from typing import Tuple

import numpy as np
from PIL import Image

from alexnet_triton.errors import DataError

CPU_DECODERS = ("auto", "simplejpeg", "pillow")


class PillowDecoder:
    """The fallback: Pillow's JPEG plugin, one image object per decode."""

    name = "pillow"

    def decode_into(self, data, out: np.ndarray) -> None:
        """JPEG bytes -> out, uint8 [H, W, 3] (raises on a damaged or mis-sized image)."""
        with Image.open(io.BytesIO(data)) as image:
            if image.size != (out.shape[1], out.shape[0]):
                raise DataError(f"a {image.size[0]}x{image.size[1]} image where "
                                f"{out.shape[1]}x{out.shape[0]} was expected")
            if image.mode != "RGB":
                image = image.convert("RGB")
            image.load()
            out[...] = np.asarray(image)


class SimpleJpegDecoder:
    """libjpeg-turbo through simplejpeg, decoding into the caller's buffer without the GIL."""

    name = "simplejpeg"

    def __init__(self) -> None:
        import simplejpeg
        self._decode = simplejpeg.decode_jpeg
        self._header = simplejpeg.decode_jpeg_header

    def decode_into(self, data, out: np.ndarray) -> None:
        """JPEG bytes -> out, uint8 [H, W, 3] (raises on a damaged or mis-sized image)."""
        try:
            # strict: a truncated or corrupt stream raises instead of decoding to grey. An
            # image larger than out raises too; a smaller one fills out's first bytes.
            decoded = self._decode(data, "RGB", buffer=out, strict=True)
        except ValueError as error:
            try:
                height, width, _, _ = self._header(data)
            except ValueError:
                raise DataError(f"not a decodable JPEG ({error})") from None
            decoded = np.empty((height, width, 3), np.uint8)
            if decoded.nbytes <= out.nbytes:
                raise DataError(f"not a decodable JPEG ({error})") from None
        if decoded.shape != out.shape:
            raise DataError(f"a {decoded.shape[1]}x{decoded.shape[0]} image where "
                            f"{out.shape[1]}x{out.shape[0]} was expected")


def cpu_decoder(name: str = "auto"):
    """The decoder called ``name``: "auto" (simplejpeg, else Pillow), "simplejpeg" or
    "pillow". Asking for simplejpeg where it is not installed is an error, not a fallback."""
    if name not in CPU_DECODERS:
        raise ValueError(f"unknown CPU JPEG decoder {name!r} (choose from {', '.join(CPU_DECODERS)})")
    if name == "pillow":
        return PillowDecoder()
    try:
        return SimpleJpegDecoder()
    except ImportError:
        if name == "simplejpeg":
            raise DataError("the simplejpeg decoder is not installed (pip install simplejpeg; "
                            "or --cpu-decoder pillow)") from None
        return PillowDecoder()


def jpeg_settings(data: bytes) -> Tuple[bool, str]:
    """(baseline, chroma subsampling "4:4:4" | "4:2:2" | "4:2:0" | "other") of a JPEG
    stream: what decides whether a GPU decoder takes it on its fast path."""
    from PIL import JpegImagePlugin
    with Image.open(io.BytesIO(data)) as image:
        progressive = bool(image.info.get("progressive") or image.info.get("progression"))
        sampling = JpegImagePlugin.get_sampling(image)
    return not progressive, {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(sampling, "other")
