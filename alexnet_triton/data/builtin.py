"""The built-in dataset: 10 classes of procedurally drawn shapes and textures, made locally.

Why: ``python -m alexnet_triton.train`` with no data and no GPU must still show AlexNet
learning, in minutes, with nothing downloaded. The classes are told apart by shape or
texture only; colours, sizes, positions, rotations and backgrounds are random, so the
network cannot shortcut through a colour and the paper's crops, flips and colour noise do
not change the answer.

Classes: checkerboard, crescent, cross, disk, dots, ring, square, star, stripes, triangle.
Shapes are one big object (lighter than its background) on a gentle colour gradient; textures
fill the image with two colours at a random angle and a period of their own. 600 train and 50
val images per class, 72x72 (AlexNet's smallest input is 63x63). Each image is drawn at 4x
and downsampled (anti-aliased edges), then lightly noised, from its own seed (split, class,
index), so the dataset is the same on every machine and independent of the process count.

It is written once as JPEG files (an ImageFolder, CACHE/images) and prepared into a raw store
(CACHE/store, uint8 pixels) by the same code as user data; later calls only open the store. A file lock
lets several processes (torchrun ranks) ask at once: one generates, the others wait.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

from alexnet_triton.data.folder import DataError

VERSION = "builtin-v3"  # bump whenever the drawing or the store changes: older caches are not reused
IMAGE_SIZE = 72          # stored side; crops of 63-64 are AlexNet's smallest input
TRAIN_PER_CLASS = 600
VAL_PER_CLASS = 50
QUICK_TRAIN_PER_CLASS = 8
QUICK_VAL_PER_CLASS = 4
SEED = 20121203          # NIPS 2012
SUPERSAMPLE = 4
# Difficulty, tuned so that AlexNet learns the set within minutes on a CPU (measured: with
# small shapes of either polarity, val accuracy after 250 SGD steps was 29%; with these, 69%).
SHAPE_RADIUS = (0.32, 0.44)  # of the image side: big enough to survive the random crops
MIN_CONTRAST = 160           # RGB distance between the two colours of an image
LIGHT_ON_DARK = True         # shapes lighter than their background: one polarity to learn
# Each texture at its own scale (period over the image side), so scale tells them apart
# as well as structure (measured: with one shared range stripes were the last class learned).
# Stripes: wide bands; checkerboard: small cells; dots in between (a cycle is two stripes,
# or two cells). Measured: with stripes and checkerboard at one scale they were confused.
TEXTURE_PERIOD = {"stripes": (0.28, 0.36), "checkerboard": (0.07, 0.1), "dots": (0.11, 0.15)}
CROSS_ARM = 0.42             # half-width of the cross's arms over its radius: chunky, unlike a star
CLASSES = ("checkerboard", "crescent", "cross", "disk", "dots", "ring", "square", "star",
           "stripes", "triangle")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "alexnet_triton" / VERSION


# -- drawing ---------------------------------------------------------------------------------

def _luma(colour) -> float:
    return float(np.dot(colour, (0.299, 0.587, 0.114)))


def _colour_pair(rng: np.random.Generator):
    """(foreground, background): random RGB colours far enough apart to see the shape."""
    while True:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        if np.linalg.norm(a - b) > MIN_CONTRAST:
            if LIGHT_ON_DARK and _luma(a) < _luma(b):
                a, b = b, a
            return a, b


def _polygon(cx, cy, radii, angle, count):
    step = 2 * math.pi / count
    return [(cx + r * math.cos(angle + k * step), cy + r * math.sin(angle + k * step))
            for k, r in zip(range(count), radii)]


def _shape_mask(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Coverage of one shape, float32 [size, size] in 0..1, drawn at SUPERSAMPLE x and
    box-filtered down (anti-aliased edges)."""
    big = size * SUPERSAMPLE
    r = rng.uniform(*SHAPE_RADIUS) * big
    cx, cy = rng.uniform(r, big - r, 2)
    angle = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if name == "disk":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif name == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        inner = r * rng.uniform(0.5, 0.65)
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=0)
    elif name == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        bite, off = r * 0.85, r * rng.uniform(0.45, 0.6)
        bx, by = cx + off * math.cos(angle), cy + off * math.sin(angle)
        draw.ellipse((bx - bite, by - bite, bx + bite, by + bite), fill=0)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, [r] * 4, angle, 4), fill=255)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.1] * 3, angle, 3), fill=255)
    elif name == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.1, r * 0.45] * 5, angle, 10), fill=255)
    elif name == "cross":
        w = r * CROSS_ARM
        arm = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w),
               (-r, w), (-w, w), (-w, r)]
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + u * c - v * s, cy + u * s + v * c) for u, v in arm], fill=255)
    else:
        raise ValueError(name)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def _texture_mask(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Coverage of a two-colour texture over the whole image, float32 [size, size] in 0..1."""
    big = size * SUPERSAMPLE
    period = rng.uniform(*TEXTURE_PERIOD[name]) * big
    angle = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:big, 0:big].astype(np.float32)
    u = (x * math.cos(angle) + y * math.sin(angle)) / period + rng.uniform(0, 1)
    v = (-x * math.sin(angle) + y * math.cos(angle)) / period + rng.uniform(0, 1)
    if name == "stripes":
        on = (u % 1.0) < 0.5
    elif name == "checkerboard":
        on = (np.floor(u) + np.floor(v)) % 2 == 0
    elif name == "dots":
        on = np.hypot(u % 1.0 - 0.5, v % 1.0 - 0.5) < rng.uniform(0.22, 0.32)
    else:
        raise ValueError(name)
    return on.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean((1, 3), dtype=np.float32)


def draw_image(label: int, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One image of class CLASSES[label] -> uint8 [size, size, 3]."""
    name = CLASSES[label]
    fg, bg = _colour_pair(rng)
    if name in ("stripes", "checkerboard", "dots"):
        mask = _texture_mask(name, rng, size)
        background = np.broadcast_to(bg.astype(np.float32), (size, size, 3))
    else:
        mask = _shape_mask(name, rng, size)
        # A linear colour gradient, so the background is not one flat colour.
        ramp = rng.uniform(-40, 40, 3).astype(np.float32)
        direction = rng.uniform(0, 2 * math.pi)
        y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
        t = x * math.cos(direction) + y * math.sin(direction)  # [-0.7, 0.7]
        background = bg.astype(np.float32) + t[..., None] * ramp
    image = background + mask[..., None] * (fg.astype(np.float32) - background)
    image += rng.normal(0, 6, image.shape).astype(np.float32)  # sensor-like noise
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _image_seed(split: str, label: int, index: int):
    return [SEED, 0 if split == "train" else 1, label, index]


def _write_class(task) -> int:
    """Worker: draw and save every image of one (split, class)."""
    folder, split, label, count, size = task
    out = Path(folder) / split / CLASSES[label]
    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = np.random.default_rng(_image_seed(split, label, index))
        Image.fromarray(draw_image(label, rng, size), "RGB").save(
            out / f"{index:05d}.jpg", format="JPEG", quality=95, subsampling=0)
    return count


def generate_images(folder: Path, *, train_per_class: int, val_per_class: int,
                    size: int = IMAGE_SIZE, workers: Optional[int] = None) -> None:
    """Write the ImageFolder at `folder` (built beside it, then renamed into place)."""
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tasks = [(str(tmp), split, label, count, size)
             for split, count in (("train", train_per_class), ("val", val_per_class))
             for label in range(len(CLASSES))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    try:
        if workers > 1:
            with multiprocessing.Pool(workers) as pool:
                pool.map(_write_class, tasks, chunksize=1)
        else:
            for task in tasks:
                _write_class(task)
        if folder.exists():
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (a no-op where fcntl does not exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def builtin_dataset(cache_dir=None, *, quick: bool = False, workers: Optional[int] = None,
                    verbose: Optional[bool] = None):
    """The built-in dataset's DatasetInfo, generating and preparing it on first use.

    cache_dir: where it lives (default ~/.cache/alexnet_triton/builtin-v3, or under
    $XDG_CACHE_HOME). quick=True: 8 train and 4 val images per class, for tests.
    """
    from alexnet_triton.data.datasets import open_dataset

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    suffix = "-quick" if quick else ""
    store, images = cache / f"store{suffix}", cache / f"images{suffix}"
    if verbose is None:
        verbose = not quick
    try:
        _make(cache, store, images, quick, workers, verbose)
    except OSError as error:
        raise DataError(f"cannot write the built-in dataset to {cache}: {error.strerror or error}") from None
    return open_dataset(store)


def _make(cache: Path, store: Path, images: Path, quick: bool, workers: Optional[int], verbose: bool):
    from alexnet_triton.data.convert import prepare
    from alexnet_triton.data.store import is_store

    with _locked(cache / f".lock{'-quick' if quick else ''}"):
        if not is_store(store):
            start = time.perf_counter()
            if verbose:
                print(f"generating the built-in dataset (first use) in {cache}", file=sys.stderr, flush=True)
            train, val = ((QUICK_TRAIN_PER_CLASS, QUICK_VAL_PER_CLASS) if quick
                          else (TRAIN_PER_CLASS, VAL_PER_CLASS))
            generate_images(images, train_per_class=train, val_per_class=val, workers=workers)
            # raw: 100 MB of pixels read by memory map, so on a 2-core CPU the loader does not
            # take time from the training threads to decode JPEGs (0.5 ms an image here).
            prepare(images, store, size=IMAGE_SIZE, fmt="raw", workers=workers, force=True,
                    progress=verbose)
            if verbose:
                print(f"built-in dataset ready in {time.perf_counter() - start:.1f} s: "
                      f"{train * len(CLASSES)} train and {val * len(CLASSES)} val images, "
                      f"{IMAGE_SIZE}x{IMAGE_SIZE}", file=sys.stderr, flush=True)
