"""The prepared store: what ``python -m alexnet_triton.prepare`` writes and the loaders read.

Layout of a store folder DST (every image already S x S, RGB)::

    DST/info.json          {"format": "jpeg" | "raw", "format_version": 1, "image_size": S,
                            "classes": [...], "train": N_train, "val": N_val, "skipped": K, ...}
    DST/stats.npz          mean [3, S, S] float32 (0..255), eigval [3], eigvec [3, 3] (columns),
                           rgb_mean [3], rgb_cov [3, 3] (0..1 scale), images
    DST/classes.txt        one class name per line, label order
    DST/skipped.log        split <TAB> file <TAB> reason, one line per unreadable file
    DST/<split>/labels.npy int64 [N]
    DST/<split>/files.txt  the source file of each image, relative to SRC/<split>
    jpeg:  DST/<split>/shard-00000.bin ...  concatenated JPEG files (quality 95, 4:4:4)
           DST/<split>/index.npy            int64 [N, 3]: shard, byte offset, byte length
    raw:   DST/<split>/images.npy           uint8 [N, 3, S, S], read as a memory map

Why: JPEG shards are ~10x smaller than pixels and decode at thousands of images/s per core
in the loader workers; a few big files instead of a million small ones keep the file
system out of the way. ``raw`` trades disk for zero decoding (a memory-mapped .npy that
numpy opens directly). Readers open files lazily, so a split object pickles cheaply into
DataLoader worker processes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from alexnet_triton.data.folder import DataError
from alexnet_triton.data.images import decode_stored, encode_jpeg

FORMAT_VERSION = 1
INFO_FILE = "info.json"
FORMATS = ("jpeg", "raw")
SHARD_BYTES = 1 << 30


def is_store(path) -> bool:
    return (Path(path) / INFO_FILE).is_file()


def read_info(root: Path) -> dict:
    try:
        info = json.loads((Path(root) / INFO_FILE).read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{root} is not a readable prepared store ({INFO_FILE}: {error})") from None
    if info.get("format_version") != FORMAT_VERSION or info.get("format") not in FORMATS:
        raise DataError(f"{root} is a prepared store of an unknown format "
                        f"({info.get('format')!r} version {info.get('format_version')!r}); prepare it again")
    return info


# -- writing ----------------------------------------------------------------------------

def encode_payload(pixels: np.ndarray, fmt: str, quality: int = 95):
    """uint8 [S, S, 3] -> what ``SplitWriter.add`` takes. Called in the worker processes,
    so the JPEG encoding is spread over all cores, not done by the writing process."""
    return pixels if fmt == "raw" else encode_jpeg(pixels, quality)


class SplitWriter:
    """Appends images of one split in order; ``close`` writes labels, index and file list."""

    def __init__(self, directory: Path, fmt: str, size: int, capacity: int, quality: int = 95,
                 shard_bytes: int = SHARD_BYTES) -> None:
        self.directory, self.fmt, self.size = Path(directory), fmt, size
        self.quality, self.shard_bytes = quality, shard_bytes
        self.directory.mkdir(parents=True)
        self.labels: List[int] = []
        self.files: List[str] = []
        self.index: List[tuple] = []
        self._shard = None
        self._shard_number = -1
        if fmt == "raw":
            # Sized for every candidate file; skipped files shrink it at close().
            self.capacity = capacity
            self._pixels = np.lib.format.open_memmap(
                self.directory / "images.npy", mode="w+", dtype=np.uint8,
                shape=(max(capacity, 1), 3, size, size))

    def add(self, payload, label: int, file: str) -> None:
        """payload: what ``encode_payload`` returned for this image."""
        if self.fmt == "raw":
            self._pixels[len(self.labels)] = payload.transpose(2, 0, 1)
        else:
            self._append_jpeg(payload)
        self.labels.append(label)
        self.files.append(file)

    def _append_jpeg(self, data: bytes) -> None:
        if self._shard is None or self._shard.tell() + len(data) > self.shard_bytes:
            if self._shard is not None:
                self._shard.close()
            self._shard_number += 1
            self._shard = open(self.directory / f"shard-{self._shard_number:05d}.bin", "wb")
        self.index.append((self._shard_number, self._shard.tell(), len(data)))
        self._shard.write(data)

    def close(self) -> int:
        count = len(self.labels)
        if self.fmt == "raw":
            self._pixels.flush()
            del self._pixels
            _shrink_npy(self.directory / "images.npy", (count, 3, self.size, self.size))
        else:
            if self._shard is not None:
                self._shard.close()
            np.save(self.directory / "index.npy", np.asarray(self.index, np.int64).reshape(-1, 3))
        np.save(self.directory / "labels.npy", np.asarray(self.labels, np.int64))
        (self.directory / "files.txt").write_text("".join(f + "\n" for f in self.files))
        return count


def _shrink_npy(path: Path, shape: tuple) -> None:
    """Rewrite a uint8 .npy header in place for fewer rows and cut the file: no copy of the
    pixels (hundreds of GB for ImageNet). numpy pads its header with spaces, so a shorter
    header padded to the old length is still a valid .npy."""
    with open(path, "r+b") as f:
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        read_header(f)  # leaves the file at the first pixel
        data_start = f.tell()
        header = repr({"descr": "|u1", "fortran_order": False, "shape": tuple(shape)})
        prefix = b"\x93NUMPY" + bytes(version)
        length_bytes = 2 if version == (1, 0) else 4
        room = data_start - len(prefix) - length_bytes
        text = header.encode("latin1")
        text = text + b" " * (room - len(text) - 1) + b"\n"
        f.seek(0)
        f.write(prefix + room.to_bytes(length_bytes, "little") + text)
        f.truncate(data_start + int(np.prod(shape)))


# -- reading ----------------------------------------------------------------------------

class StoredSplit:
    """One split of a store: ``labels``, ``len()``, ``read(indices) -> uint8 [B, 3, S, S]``."""

    def __init__(self, root: Path, split: str, fmt: str, size: int) -> None:
        self.directory = Path(root) / split
        self.fmt, self.size = fmt, size
        try:
            self.labels = np.load(self.directory / "labels.npy")
            if fmt == "jpeg":
                self.index = np.load(self.directory / "index.npy")
        except OSError as error:
            raise DataError(f"prepared store {root} is incomplete ({split}: {error})") from None
        self._maps: Optional[dict] = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        # Memory maps are reopened in each worker process, never pickled.
        return {**self.__dict__, "_maps": None}

    def _open(self) -> dict:
        if self._maps is None:
            if self.fmt == "raw":
                self._maps = {"pixels": np.load(self.directory / "images.npy", mmap_mode="r")}
            else:
                self._maps = {shard: np.memmap(self.directory / f"shard-{shard:05d}.bin", np.uint8, "r")
                              for shard in np.unique(self.index[:, 0]).tolist()}
        return self._maps

    def read(self, indices: Sequence[int]) -> np.ndarray:
        maps = self._open()
        if self.fmt == "raw":
            return np.ascontiguousarray(maps["pixels"][np.asarray(indices, np.int64)])
        out = np.empty((len(indices), 3, self.size, self.size), np.uint8)
        for row, i in enumerate(indices):
            shard, offset, length = self.index[i].tolist()
            pixels = decode_stored(maps[shard][offset:offset + length].tobytes())
            if pixels.shape != (self.size, self.size, 3):
                raise DataError(f"{self.directory}: image {i} is {pixels.shape}, not the store's "
                                f"{self.size}x{self.size}x3")
            out[row] = pixels.transpose(2, 0, 1)
        return out
