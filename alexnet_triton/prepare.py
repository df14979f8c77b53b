"""python -m alexnet_triton.prepare SRC DST: convert an image folder into a prepared store.

SRC is an ImageFolder: SRC/train/<class>/<image> and SRC/val/<class>/<image>, any format
Pillow reads (JPEG, PNG, ...; grayscale, CMYK, palette and transparent images become RGB).
Each image's shorter side is rescaled to --size (the paper's 256) and the central square cut
out. DST receives (details in alexnet_triton/data/store.py):

  info.json     format, image size, classes, image counts
  stats.npz     mean image [3, S, S] and the RGB covariance's eigenvalues/eigenvectors
                over every training pixel (for the paper's PCA colour augmentation)
  classes.txt   the class names in label order
  skipped.log   unreadable or truncated files: split, file, reason (skipped, never fatal)
  train/, val/  jpeg: shard-NNNNN.bin (concatenated JPEGs) + index.npy [N, 3] (shard,
                offset, length); raw: images.npy, uint8 [N, 3, S, S] (memory-mapped);
                both: labels.npy [N] and files.txt (each image's source file)

The store is built in a temporary folder beside DST and renamed into place when complete.
Bad input (missing or empty SRC, no class subfolders, train and val with different classes,
a non-empty DST without --force) stops with a one-line error and exit status 2 before any work.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from alexnet_triton.cli import OneLineParser, run_cli
from alexnet_triton.data.convert import prepare
from alexnet_triton.data.images import SUBSAMPLING
from alexnet_triton.data.store import DEFAULT_QUALITY, DEFAULT_SUBSAMPLING, FORMATS, store_sizes

PROG = "python -m alexnet_triton.prepare"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _quality(text: str) -> int:
    value = _positive(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"JPEG quality must be in 1..100, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC", help="image folder with train/<class>/ and val/<class>/ subfolders")
    p.add_argument("dst", metavar="DST", help="where to write the prepared store (must not exist, or be empty)")
    p.add_argument("--size", type=_positive, default=256,
                   help="side S of the stored square images (default: 256, the paper's; "
                        "training crops 224 px from them. On a CPU that trains at ~2-3 "
                        "images/s on 2 cores: --size 128 (crops of 112) is over 10x "
                        "faster)")
    p.add_argument("--format", choices=FORMATS, default="jpeg",
                   help="jpeg: shards of JPEG files, compact, decoded by the loader workers; "
                        "raw: uint8 pixels in one .npy per split, no decoding but ~10x the disk "
                        "(default: jpeg)")
    p.add_argument("--quality", type=_quality, default=DEFAULT_QUALITY,
                   help=f"JPEG quality of the stored images (default: {DEFAULT_QUALITY}; 95 "
                        f"is ~1.3x the bytes and decodes ~1.2x slower)")
    p.add_argument("--subsampling", choices=tuple(SUBSAMPLING), default=DEFAULT_SUBSAMPLING,
                   help=f"chroma subsampling of the stored JPEGs (default: {DEFAULT_SUBSAMPLING}, "
                        f"what cameras write: decodes fastest; 4:4:4 keeps full colour "
                        f"resolution at ~1.3x the bytes and ~1.5x the decoding time; README: "
                        f"Large datasets)")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help=f"worker processes decoding images (default: all {os.cpu_count()} CPU cores)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing non-empty DST (the old one is removed only after the new one is complete)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# At this size and above, a CPU trains at a few images per second (224-px crops at 256).
CPU_NOTE_SIZE = 160


def run(args: argparse.Namespace) -> dict:
    info = prepare(args.src, args.dst, size=args.size, fmt=args.format, workers=args.workers,
                   quality=args.quality, subsampling=args.subsampling, force=args.force,
                   progress=not args.no_progress)
    print(f"prepared {info['train']} train and {info['val']} val images of {len(info['classes'])} "
          f"classes at {info['image_size']}x{info['image_size']} into {args.dst} "
          f"({info['skipped']} skipped, listed in {os.path.join(args.dst, 'skipped.log')})")
    print(store_sizes(args.dst, info))
    if args.size >= CPU_NOTE_SIZE:
        import torch
        if not torch.cuda.is_available():
            print(f"note: this machine has no GPU; training on {args.size}-px images on a CPU "
                  f"is slow (224-px crops: ~2-3 images/s on 2 cores). For a CPU run, prepare "
                  f"with --size 128 and train fewer --epochs (README: Training on your "
                  f"images)")
    return info


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return run_cli(PROG, parser(), run, argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: nothing was written to the destination", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
