"""``DatasetInfo`` and ``open_dataset``: a prepared store, or a raw ImageFolder read on the fly.

A raw ImageFolder (ROOT/train/<class>/..., ROOT/val/<class>/...) is usable without running
``prepare``: images are decoded, rescaled and center-cropped in the loader workers on every
read (slower), and the statistics come from a fixed sample of training images instead of
all of them. Nothing is written into the user's folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import torch

from alexnet_triton.data.folder import DataError, list_split, scan_image_folder
from alexnet_triton.errors import first_line
from alexnet_triton.data.images import load_image
from alexnet_triton.data.stats import DatasetStats, PixelStats
from alexnet_triton.data.store import StoredSplit, is_store, read_info

PAPER_IMAGE_SIZE = 256
STATS_SAMPLE = 500  # training images behind a raw folder's statistics


@dataclass(frozen=True, eq=False)
class DatasetInfo:
    """What the trainer needs to know about a dataset (compared by identity: it holds tensors)."""
    root: Path                 # the prepared store, or the raw ImageFolder
    classes: Tuple[str, ...]   # sorted class names, label order
    image_size: int            # S: every image the loaders yield is [3, S, S]
    mean: torch.Tensor         # float32 [3, S, S], mean training image, 0..255
    eigval: torch.Tensor       # float32 [3], eigenvalues of the RGB covariance (0..1 scale)
    eigvec: torch.Tensor       # float32 [3, 3], columns are the eigenvectors
    num_train: int
    num_val: int
    # A raw folder's files that do not decode, left out: (path under root, reason).
    skipped: Tuple[Tuple[str, str], ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def prepared(self) -> bool:
        """False for a raw ImageFolder decoded on the fly."""
        return is_store(self.root)

    @property
    def format(self) -> str:
        """"jpeg" or "raw" (a prepared store's), "folder" (a raw ImageFolder)."""
        return read_info(self.root)["format"] if self.prepared else "folder"


def open_dataset(path, *, image_size: int = PAPER_IMAGE_SIZE) -> DatasetInfo:
    """A prepared store (has info.json) or a raw ImageFolder -> DatasetInfo.

    image_size applies to a raw folder only (a store has its own). Raises DataError naming
    the problem, before any decoding, on a missing or malformed folder.
    """
    root = Path(path).expanduser()
    if is_store(root):
        info = read_info(root)
        try:
            stats = DatasetStats.load(root)
        except (OSError, KeyError, ValueError) as error:
            raise DataError(f"prepared store {root} has no readable statistics ({error})") from None
        return _info(root, info["classes"], info["image_size"], stats, info["train"], info["val"])
    if image_size < 1:
        raise DataError(f"image size must be positive, got {image_size}")
    classes, listed_train, listed_val = scan_image_folder(root)
    # As prepare does: every file is decoded once, those that fail are left out and listed
    # (a stand-in image would count one image twice), and a class needs readable images.
    skipped = []
    readable = {}
    for split, items in (("train", listed_train), ("val", listed_val)):
        readable[split] = []
        for item in items:
            try:
                load_image(root / split / item[0], image_size)
            except Exception as error:  # noqa: BLE001 - any undecodable file is skipped
                skipped.append((f"{split}/{item[0]}", first_line(error)))
                continue
            readable[split].append(item)
        counts = np.bincount([label for _, label in readable[split]], minlength=len(classes))
        for label in np.flatnonzero(counts == 0).tolist():
            raise DataError(f"{root / split / classes[label]} has no readable images: every "
                            f"class needs {split} images")
    train_items, val_items = readable["train"], readable["val"]
    # The loaders (and their forked workers) reuse this listing instead of walking again.
    _LISTINGS[(str(root), "train", classes)] = train_items
    _LISTINGS[(str(root), "val", classes)] = val_items
    stats = _sample_stats(root / "train", train_items, image_size)
    return _info(root, classes, image_size, stats, len(train_items), len(val_items),
                 tuple(skipped))


def _info(root, classes, size, stats: DatasetStats, num_train, num_val,
          skipped=()) -> DatasetInfo:
    return DatasetInfo(Path(root), tuple(classes), int(size), torch.from_numpy(stats.mean),
                       torch.from_numpy(stats.eigval), torch.from_numpy(stats.eigvec),
                       int(num_train), int(num_val), skipped)


def _sample_stats(split_dir: Path, items, size: int) -> DatasetStats:
    """Statistics of up to STATS_SAMPLE evenly spaced training images (every class)."""
    stats = PixelStats(size)
    picks = np.unique(np.linspace(0, len(items) - 1, min(STATS_SAMPLE, len(items))).round().astype(int))
    for i in picks.tolist():
        try:
            stats.add(load_image(split_dir / items[i][0], size))
        except Exception:  # noqa: BLE001 - unreadable files are the loader's business
            continue
    if stats.images == 0:
        raise DataError(f"none of the {len(picks)} sampled images of {split_dir} could be read")
    return stats.finish()


# -- the image sources the loaders read from -----------------------------------------------

class FolderSplit:
    """One split of a raw ImageFolder, decoded on every read.

    ``open_dataset`` has left out the files that did not decode; one that stops decoding
    during the run (changed on disk) is an error, never replaced by another image.
    """

    def __init__(self, root: Path, split: str, classes: Tuple[str, ...], size: int) -> None:
        self.directory = Path(root) / split
        self.size = size
        items = _listing(str(root), split, tuple(classes))
        self.files = [f for f, _ in items]
        self.labels = np.asarray([label for _, label in items], np.int64)
        self.format = "folder"

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def pixel_shape(self) -> Tuple[int, int, int]:
        return (self.size, self.size, 3)  # load_image's order: no transposing copy

    def read_into(self, indices: Sequence[int], out: np.ndarray, decoder=None):
        """Images ``indices`` into out[k] ([S, S, 3] each); (k, reason) of those that no
        longer decode (changed on disk since training started)."""
        failed = []
        for row, i in enumerate(indices):
            path = self.directory / self.files[int(i)]
            try:
                out[row] = load_image(path, self.size)
            except Exception as error:  # noqa: BLE001 - any undecodable file
                failed.append((row, f"{path} could be read when training started but not "
                                    f"now: {first_line(error)}"))
        return failed

    def read(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 [B, 3, S, S] and int64 [B]; raises DataError on an unreadable file."""
        out = np.empty((len(indices),) + self.pixel_shape, np.uint8)
        failed = self.read_into(indices, out)
        if failed:
            raise DataError(failed[0][1])
        return (np.ascontiguousarray(out.transpose(0, 3, 1, 2)),
                self.labels[np.asarray(indices, np.int64)])


class ImageFiles:
    """Image files of any size and format, each read as the store holds images (rescaled,
    center-cropped): what predict reads. The labels are the files' positions."""

    format = "files"

    def __init__(self, files: Sequence, size: int) -> None:
        self.files, self.size = [str(f) for f in files], size
        self.labels = np.arange(len(self.files), dtype=np.int64)
        self.pixel_shape = (size, size, 3)

    def __len__(self) -> int:
        return len(self.files)

    def read_into(self, indices: Sequence[int], out: np.ndarray, decoder=None):
        failed = []
        for row, i in enumerate(indices):
            try:
                out[row] = load_image(self.files[int(i)], self.size)
            except Exception as error:  # noqa: BLE001 - any undecodable file
                failed.append((row, first_line(error)))
        return failed


_LISTINGS: dict = {}


def _listing(root: str, split: str, classes: Tuple[str, ...]):
    key = (root, split, classes)
    if key not in _LISTINGS:
        _LISTINGS[key] = list_split(Path(root) / split, classes)
    return _LISTINGS[key]


class StoreSource:
    """StoredSplit with the FolderSplit interface: read -> (pixels, labels)."""

    def __init__(self, split: StoredSplit) -> None:
        self.split = split
        self.labels = split.labels
        self.pixel_shape = split.pixel_shape
        self.read_into, self.record = split.read_into, split.record
        self.format = split.fmt

    def __len__(self) -> int:
        return len(self.split)

    def read(self, indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        return self.split.read(indices), self.labels[np.asarray(indices, np.int64)]


def split_source(info: DatasetInfo, split: str):
    """The readable images of one split: StoreSource or FolderSplit, both picklable."""
    if info.prepared:
        meta = read_info(info.root)
        return StoreSource(StoredSplit(info.root, split, meta["format"], meta["image_size"]))
    return FolderSplit(info.root, split, info.classes, info.image_size)
