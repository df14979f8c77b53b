"""One file -> S x S RGB: every Pillow mode becomes RGB, shorter side to S, central square."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from alexnet_triton.data.images import load_image, resize_center_crop, to_rgb


def _png(image: Image.Image, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **kwargs)
    return out.getvalue()


def test_grayscale_becomes_three_equal_channels():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = load_image(_png(Image.fromarray(gray, "L")), 8)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(rgb[..., c], gray)


def test_cmyk_jpeg_becomes_rgb():
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[..., 0] = 200  # red
    out = io.BytesIO()
    Image.fromarray(colour).convert("CMYK").save(out, format="JPEG", quality=100)
    rgb = load_image(out.getvalue(), 16).astype(int)
    assert abs(rgb[..., 0].mean() - 200) < 4 and rgb[..., 1:].mean() < 4


def test_transparency_is_laid_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255          # red where opaque
    rgba[:2, :, 3] = 255        # top half opaque, bottom half fully transparent (black)
    rgb = load_image(_png(Image.fromarray(rgba, "RGBA")), 4)
    assert (rgb[:2] == [255, 0, 0]).all()
    assert (rgb[2:] == 255).all()


def test_palette_with_transparency():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    rgb = load_image(_png(palette, transparency=0), 4)
    assert (rgb[0, 0] == 255).all()             # the transparent index: white
    assert (rgb[1, 1] == [10, 200, 30]).all()    # an opaque palette colour


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 65535], [32896, 257]], np.uint16)
    rgb = load_image(_png(Image.fromarray(values)), 2)
    assert rgb[..., 0].tolist() == [[0, 255], [128, 1]]


@pytest.mark.parametrize("width, height", [(60, 30), (30, 60), (31, 31), (7, 5)])
def test_shorter_side_rescaled_then_center_cropped(width, height):
    # Columns (or rows) coloured by position: the crop must keep the middle.
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[..., 0] = (np.arange(width) * 255 // max(width - 1, 1))[None, :]
    pixels[..., 1] = (np.arange(height) * 255 // max(height - 1, 1))[:, None]
    image = resize_center_crop(Image.fromarray(pixels), 16)
    assert image.size == (16, 16)
    out = np.asarray(image).astype(int)
    # Symmetric around the middle: the central square of a ramp averages to mid-grey.
    assert abs(out[..., 0].mean() - 127.5) < 10 and abs(out[..., 1].mean() - 127.5) < 10
    # Exactly the middle of the rescaled image (the shorter side is 16 after rescaling).
    scale = 16 / min(width, height)
    resized = np.asarray(Image.fromarray(pixels).resize(
        (round(width * scale), round(height * scale)), Image.BILINEAR)).astype(int)
    top, left = (resized.shape[0] - 16) // 2, (resized.shape[1] - 16) // 2
    assert np.array_equal(out, resized[top:top + 16, left:left + 16])


def test_to_rgb_keeps_rgb_untouched():
    image = Image.fromarray(np.zeros((3, 3, 3), np.uint8))
    assert to_rgb(image) is image


def test_truncated_file_raises():
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(out, "JPEG")
    with pytest.raises(OSError):
        load_image(out.getvalue()[:600], 32)


def test_a_png_whose_data_ends_after_one_row_raises():
    """It declares 9000 x 9000 pixels; Pillow took the end of its compressed stream for the
    end of the image and returned it black below the first row."""
    from helpers import one_row_png
    with pytest.raises(OSError, match="truncated"):
        load_image(one_row_png(9000, 9000), 32)


def test_an_image_over_the_decompression_bomb_limit_raises(recwarn):
    """Pillow only warns up to twice its limit (and then decodes the whole picture)."""
    from helpers import one_row_png
    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) + 100  # over the limit, under twice it
    with pytest.raises(Image.DecompressionBombError, match="million pixels"):
        load_image(one_row_png(side, side), 32)
