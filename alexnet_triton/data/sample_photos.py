"""python -m alexnet_triton.data.sample_photos DST: a small ImageFolder of real photographs.

Five classes, one photograph each from scikit-image's bundled samples (the astronaut,
Chelsea the cat, a coffee cup, a rocket, a motorcycle), shipped inside its wheel, so
nothing is downloaded. Each image of a class is a random crop of its photograph (40-90% of
the shorter side, anywhere in the frame, mirrored half the time, brightness x0.8-1.2): a
real-photo folder in the layout ``python -m alexnet_triton.prepare`` and ``train --data``
read (DST/train/<class>/*.jpg, DST/val/<class>/*.jpg), for trying the own-images workflow
and for measuring defaults on photographs rather than the built-in generated shapes.

Needs scikit-image (pip install scikit-image); without it, a one-line error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from alexnet_triton.errors import UserError

# class name -> the sample's loader in skimage.data
PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket",
          "motorcycle": "stereo_motorcycle"}
SIDE = 160  # of the saved JPEGs: prepare rescales them again


def _photo(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise UserError("the sample photos are scikit-image's: pip install scikit-image") from None
    image = getattr(data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity)
        image = image[0]
    return np.asarray(image, dtype=np.uint8)[..., :3]


def make_photo_folder(dst, train_per_class: int = 24, val_per_class: int = 6,
                      seed: int = 0) -> Path:
    """Write the folder (see the module's doc); returns DST. Deterministic from ``seed``."""
    dst = Path(dst)
    rng = np.random.default_rng(seed)
    for label, sample in PHOTOS.items():
        photo = Image.fromarray(_photo(sample))
        width, height = photo.size
        for split, count in (("train", train_per_class), ("val", val_per_class)):
            folder = dst / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                side = int(min(width, height) * rng.uniform(0.4, 0.9))
                left = int(rng.integers(0, width - side + 1))
                top = int(rng.integers(0, height - side + 1))
                crop = photo.crop((left, top, left + side, top + side)).resize((SIDE, SIDE),
                                                                               Image.BILINEAR)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                pixels = np.asarray(crop, dtype=np.float32) * rng.uniform(0.8, 1.2)
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    folder / f"{index:03d}.jpg", quality=92)
    return dst


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet_triton.data.sample_photos",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("dst", metavar="DST")
    parser.add_argument("--train-per-class", type=int, default=24)
    parser.add_argument("--val-per-class", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        make_photo_folder(args.dst, args.train_per_class, args.val_per_class, args.seed)
    except UserError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(PHOTOS)} classes x ({args.train_per_class} train + {args.val_per_class} "
          f"val) photo crops to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
