"""The ImageFolder layout (ROOT/train/<class>/<image>, ROOT/val/<class>/<image>): checked and listed.

Everything here runs before any real work, so a bad folder fails in a second with one line
naming the problem (``DataError``) instead of halfway through a long preparation or training.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import List, Tuple

from PIL import Image

from alexnet_triton.errors import DataError  # re-exported by alexnet_triton.data

SPLITS = ("train", "val")

@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset:
    """File name endings Pillow can open (.jpg, .jpeg, .png, .bmp, .webp, .tif, ...)."""
    Image.init()
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in image_extensions()


def class_names(split_dir: Path) -> List[str]:
    """Sorted names of the class subfolders of one split (hidden folders are not classes)."""
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if entry.is_dir() and not entry.name.startswith("."))


def list_split(split_dir: Path, classes: Tuple[str, ...]) -> List[Tuple[str, int]]:
    """[(path relative to split_dir, label)] of every image file, sorted: a fixed order.

    Files whose extension Pillow does not know (README.txt, .DS_Store) are not images and
    are left out silently; files with an image extension that fail to decode are the
    preparation's business (skipped and logged there).
    """
    items = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(split_dir / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = os.path.relpath(dirpath, split_dir)
            items.extend((os.path.join(rel, f), label) for f in sorted(filenames)
                         if not f.startswith(".") and is_image_name(f))
    return items


def scan_image_folder(root) -> Tuple[Tuple[str, ...], List[Tuple[str, int]], List[Tuple[str, int]]]:
    """(classes, train items, val items) of an ImageFolder ROOT, or DataError naming the problem."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data folder {root} is not a folder")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(f"data folder {root} has no {' and no '.join(m + '/' for m in missing)} "
                        f"subfolder (expected {root}/train/<class>/<image> and {root}/val/<class>/<image>)")
    per_split = {s: class_names(root / s) for s in SPLITS}
    for split, names in per_split.items():
        if not names:
            raise DataError(f"{root / split} has no class subfolders (expected {root / split}/<class>/<image>)")
    if per_split["train"] != per_split["val"]:
        only_train = sorted(set(per_split["train"]) - set(per_split["val"]))
        only_val = sorted(set(per_split["val"]) - set(per_split["train"]))
        parts = []
        if only_train:
            parts.append(f"only in train: {_few(only_train)}")
        if only_val:
            parts.append(f"only in val: {_few(only_val)}")
        raise DataError(f"train and val of {root} have different classes ({'; '.join(parts)})")
    classes = tuple(per_split["train"])
    check_class_names(root, classes)
    items = {s: list_split(root / s, classes) for s in SPLITS}
    for split, listed in items.items():
        if not listed:
            raise DataError(f"{root / split} has class subfolders but no image files")
        present = {label for _, label in listed}
        for label, name in enumerate(classes):
            if label not in present:  # a class nothing can be learned or measured on
                raise DataError(f"{root / split / name} has no image files: every class "
                                f"needs {split} images")
    return classes, items["train"], items["val"]


def check_class_names(root: Path, classes: Tuple[str, ...]) -> None:
    """Refuse class folder names that are not printable text: a name that is not UTF-8 (a
    file system allows any bytes) or holds a control character (a newline) would travel
    into checkpoints, predictions, plots and JSON, where it cannot be printed or one line
    is meant to be one name. They are listed, to be renamed."""
    bad = [name for name in classes if not _printable(name)]
    if bad:
        raise DataError(f"{root}: class folder names must be printable UTF-8 text, without "
                        f"control characters; rename {_few([ascii(name) for name in bad])}")


def _printable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode's surrogates: bytes that are not UTF-8
        return False
    return name.isprintable()


def _few(names: List[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
