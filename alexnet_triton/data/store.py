"""The prepared store: what ``python -m alexnet_triton.prepare`` writes and the loaders read.

Layout of a store folder DST (every image already S x S, RGB)::

    DST/info.json          {"format": "jpeg" | "raw", "format_version": 1, "image_size": S,
                            "classes": [...], "train": N_train, "val": N_val, "skipped": K, ...}
    DST/stats.npz          mean [3, S, S] float32 (0..255), eigval [3], eigvec [3, 3] (columns),
                           rgb_mean [3], rgb_cov [3, 3] (0..1 scale), images
    DST/classes.txt        one class name per line, label order
    DST/skipped.log        split <TAB> file <TAB> reason, one line per unreadable file
    DST/<split>/labels.npy int64 [N]
    DST/<split>/files.txt  the source file of each image, relative to SRC/<split>, one a line

Names in the text files are the file system's bytes (``os.fsencode``: a name that is not
UTF-8 round-trips), with a backslash, newline, carriage return and tab written as \\, \n,
\r and \t so that one line is one name (``write_names``, ``read_names``).
    jpeg:  DST/<split>/shard-00000.bin ...  concatenated baseline JPEG files (quality and
                                            chroma subsampling in info.json)
           DST/<split>/index.npy            int64 [N, 3]: shard, byte offset, byte length
    raw:   DST/<split>/images.npy           uint8 [N, 3, S, S], read as a memory map

Why: JPEG shards are ~10x smaller than pixels and decode at thousands of images/s per core
(alexnet_triton/data/decoders.py); a few big files instead of a million small ones keep the
file system out of the way. ``raw`` trades disk for zero decoding (a memory-mapped .npy that
numpy opens directly). Readers open files lazily, so a split object pickles cheaply into
DataLoader worker processes.

A batch is read into a buffer the loader gives (``read_into``), in the store's own layout:
JPEG images decode to rows of [S, S, 3] (the decoder's order: no transposing copy on the
host, the device makes the batch contiguous), raw images are gathered as [3, S, S].
"""
from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from alexnet_triton.data.folder import DataError
from alexnet_triton.errors import error_reason
from alexnet_triton.data.images import SUBSAMPLING, encode_jpeg

FORMAT_VERSION = 1
INFO_FILE = "info.json"
FORMATS = ("jpeg", "raw")
SHARD_BYTES = 1 << 30
# prepare's defaults for a JPEG store: see the README's "Large datasets" for what they cost
# in size and pixels, and what they buy in decoding speed.
DEFAULT_QUALITY = 90
DEFAULT_SUBSAMPLING = "4:2:0"


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


# -- names in text files -----------------------------------------------------------------

_ESCAPES = {b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t"}
_UNESCAPES = {escaped[1:]: raw for raw, escaped in _ESCAPES.items()}


def encode_name(name: str) -> bytes:
    """A file or class name as one field of a line: its bytes on the file system (a name
    that is not UTF-8 comes back from os.fsdecode the same), the separators escaped."""
    return re.sub(rb"[\\\n\r\t]", lambda match: _ESCAPES[match.group()], os.fsencode(name))


def decode_name(field: bytes) -> str:
    """``encode_name``'s inverse."""
    return os.fsdecode(re.sub(rb"\\(.)", lambda match: _UNESCAPES[match.group(1)], field))


def write_names(path: Path, names: Sequence[str]) -> None:
    Path(path).write_bytes(b"".join(encode_name(name) + b"\n" for name in names))


def read_names(path: Path) -> List[str]:
    """files.txt's or classes.txt's names, in order."""
    return [decode_name(line) for line in Path(path).read_bytes().split(b"\n")[:-1]]


# -- writing ----------------------------------------------------------------------------

def encode_payload(pixels: np.ndarray, fmt: str, quality: int = DEFAULT_QUALITY,
                   subsampling: str = DEFAULT_SUBSAMPLING):
    """uint8 [S, S, 3] -> what ``SplitWriter.add`` takes. Called in the worker processes,
    so the JPEG encoding is spread over all cores, not done by the writing process."""
    return pixels if fmt == "raw" else encode_jpeg(pixels, quality, subsampling)


class SplitWriter:
    """Appends images of one split in order; ``close`` writes labels, index and file list."""

    def __init__(self, directory: Path, fmt: str, size: int, capacity: int,
                 shard_bytes: int = SHARD_BYTES) -> None:
        self.directory, self.fmt, self.size = Path(directory), fmt, size
        self.shard_bytes = shard_bytes
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
        write_names(self.directory / "files.txt", self.files)
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


def _gigabytes(count: int) -> str:
    return f"{count / 1e9:.3g} GB" if count >= 1e9 else f"{count / 1e6:.3g} MB"


def store_sizes(root, info: dict) -> str:
    """What the store takes on disk, what the other format would take, and which to use."""
    root = Path(root)
    images = info["train"] + info["val"]
    raw = images * 3 * info["image_size"] ** 2
    if info["format"] == "raw":
        return (f"store: {_gigabytes(raw)} of raw pixels (a JPEG store would be ~10x smaller "
                f"and cost decoding: prepare without --format raw when this does not fit "
                f"in the training machine's memory)")
    jpeg = sum(f.stat().st_size for split in ("train", "val")
               for f in (root / split).glob("shard-*.bin"))
    return (f"store: {_gigabytes(jpeg)} of JPEG (quality {info['jpeg_quality']}, "
            f"{info['jpeg_subsampling']}); as raw pixels (--format raw) it would take "
            f"{_gigabytes(raw)} ({raw / max(jpeg, 1):.0f}x) and be read without decoding, "
            f"~5x the images/s per core: the better choice when it fits in the training "
            f"machine's memory (README: Large datasets)")


# -- reading ----------------------------------------------------------------------------

def _map_file(path: Path) -> memoryview:
    """The whole file as read-only bytes, mapped (empty files cannot be mapped)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))


class StoredSplit:
    """One split of a store: ``labels``, ``len()``, ``read_into(indices, out, decoder)``,
    ``records(indices)`` (a JPEG store's bytes, for a GPU decoder) and ``read(indices)``."""

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

    @property
    def pixel_shape(self) -> Tuple[int, int, int]:
        """One image as ``read_into`` writes it: [S, S, 3] (JPEG) or [3, S, S] (raw)."""
        return (self.size, self.size, 3) if self.fmt == "jpeg" else (3, self.size, self.size)

    def _open(self) -> dict:
        if self._maps is None:
            if self.fmt == "raw":
                self._maps = {"pixels": np.load(self.directory / "images.npy", mmap_mode="r")}
            else:
                # memoryviews of mmaps: a record is a slice that costs no copy and ~100x
                # less Python work than a numpy memmap's.
                self._maps = {shard: _map_file(self.directory / f"shard-{shard:05d}.bin")
                              for shard in np.unique(self.index[:, 0]).tolist()}
        return self._maps

    def record(self, i: int) -> memoryview:
        """Image i's JPEG bytes: a view of the memory-mapped shard (raises DataError when the
        index points past the shard's end, as a truncated shard makes it)."""
        shard, offset, length = self.index[int(i)].tolist()
        data = self._open().get(shard)
        if data is None or offset < 0 or length <= 0 or offset + length > len(data):
            raise DataError(f"record {int(i)} (shard {shard}, bytes {offset}..{offset + length}) "
                            f"lies outside its shard: the store is damaged")
        return data[offset:offset + length]

    def read_into(self, indices: Sequence[int], out: np.ndarray, decoder) -> List[Tuple[int, str]]:
        """Images ``indices`` into out[k] (``pixel_shape`` each); returns (k, reason) for
        each record that could not be read (its row is left as it was)."""
        maps = self._open()
        if self.fmt == "raw":
            np.take(maps["pixels"], np.asarray(indices, np.int64), axis=0, out=out)
            return []
        failed = []
        for row, i in enumerate(indices):
            try:
                decoder.decode_into(self.record(i), out[row])
            except Exception as error:  # noqa: BLE001 - a damaged record, whatever the decoder says
                failed.append((row, error_reason(error)))
        return failed

    def read(self, indices: Sequence[int], decoder=None) -> np.ndarray:
        """uint8 [B, 3, S, S], contiguous; raises DataError on a damaged record."""
        from alexnet_triton.data.decoders import cpu_decoder
        out = np.empty((len(indices),) + self.pixel_shape, np.uint8)
        failed = self.read_into(indices, out, decoder or cpu_decoder())
        if failed:
            row, reason = failed[0]
            raise DataError(f"{self.directory}: image {int(indices[row])} cannot be read ({reason})")
        return out if self.fmt == "raw" else np.ascontiguousarray(out.transpose(0, 3, 1, 2))
