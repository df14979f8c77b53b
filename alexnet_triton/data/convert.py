"""ImageFolder -> prepared store (see ``store.py`` for the layout): the work behind
``python -m alexnet_triton.prepare``.

Every image is decoded, rescaled (shorter side to S), center-cropped and re-encoded in a
pool of worker processes, in chunks, in file order; the parent only appends the results and
adds up the statistics, so the store's order is fixed whatever the number of workers.
Unreadable or truncated files are skipped, counted and listed in skipped.log. The store is
built in a temporary folder beside DST and renamed into place at the end, so an interrupted
run (Ctrl-C, a crash, a full disk) leaves nothing half-written at DST; the temporary folder
of a killed one (SIGKILL, which leaves no chance to clean up) is removed by the next
prepare of DST.
"""
from __future__ import annotations

import glob
import json
import multiprocessing
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from alexnet_triton.data.folder import SPLITS, DataError, scan_image_folder
from alexnet_triton.data.images import SUBSAMPLING, load_image
from alexnet_triton.data.stats import PixelStats
from alexnet_triton.errors import error_reason
from alexnet_triton.progress import progress_bar
from alexnet_triton.data.store import (DEFAULT_QUALITY, DEFAULT_SUBSAMPLING, FORMAT_VERSION,
                                       FORMATS, INFO_FILE, SHARD_BYTES, SplitWriter,
                                       encode_name, encode_payload, write_names)

CHUNK = 64  # images per task: big enough to amortize the pickling, small enough to balance


def check_destination(dst: Path, force: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise DataError(f"destination {dst} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise DataError(f"destination {dst} already exists and is not empty (pass --force to replace it)")


def _process_chunk(task) -> Tuple[list, Optional[PixelStats]]:
    """Worker: [(file, label)] -> ([(payload or None, label, file, error or None)], stats)."""
    split_dir, items, size, fmt, (quality, subsampling), with_stats = task
    stats = PixelStats(size) if with_stats else None
    results = []
    for file, label in items:
        try:
            with warnings.catch_warnings():
                # load_image refuses what Pillow only warns about. One thread decodes in
                # this process (a pool worker, or prepare's own with one worker), so the
                # process-wide filters are its alone.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                pixels = load_image(os.path.join(split_dir, file), size)
        except Exception as error:  # noqa: BLE001 - any undecodable file is skipped, never fatal
            results.append((None, label, file, error_reason(error)))
            continue
        if stats is not None:
            stats.add(pixels)
        results.append((encode_payload(pixels, fmt, quality, subsampling), label, file, None))
    if stats is not None:
        # A chunk's pixel sums fit 32 bits: half the bytes to send back to the parent.
        stats.image_sum = stats.image_sum.astype(np.uint32)
    return results, stats


def prepare(src, dst, *, size: int = 256, fmt: str = "jpeg", workers: Optional[int] = None,
            quality: int = DEFAULT_QUALITY, subsampling: str = DEFAULT_SUBSAMPLING,
            force: bool = False, progress: bool = True,
            shard_bytes: int = SHARD_BYTES) -> dict:
    """Convert the ImageFolder SRC into a prepared store at DST; returns its info.json dict.

    Raises DataError (before any work) on a bad SRC or an occupied DST.
    """
    src, dst = Path(src), Path(dst)
    if fmt not in FORMATS:
        raise DataError(f"unknown store format {fmt!r} (choose from {', '.join(FORMATS)})")
    if size < 1:
        raise DataError(f"image size must be positive, got {size}")
    if subsampling not in SUBSAMPLING:
        raise DataError(f"unknown chroma subsampling {subsampling!r} (choose from "
                        f"{', '.join(SUBSAMPLING)})")
    if not 1 <= quality <= 100:
        raise DataError(f"JPEG quality must be in 1..100, got {quality}")
    check_destination(dst, force)
    classes, train_items, val_items = scan_image_folder(src)
    workers = max(1, workers or os.cpu_count() or 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale, pid in remove_stale_temporaries(dst):
        print(f"removed {stale}, the partial store of a prepare that was killed (pid {pid}, "
              f"no longer running)", file=sys.stderr, flush=True)
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        info = _build(src, tmp, classes, {"train": train_items, "val": val_items}, size, fmt,
                      workers, (quality, subsampling), progress, shard_bytes)
        _move_into_place(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def remove_stale_temporaries(dst: Path) -> List[Tuple[Path, int]]:
    """Remove the temporary folders of earlier prepares of ``dst`` whose process is gone
    (.DST.tmp-PID, a partial store; .DST.old-PID, a replaced one); returns (folder, pid)
    of each.

    A killed prepare (SIGKILL, a crash of the machine) cannot clean up after itself, and
    its partial store may be as big as the finished one. A folder whose process still runs
    (another prepare of the same DST) or that belongs to another user's is left alone.
    (Its finished shards are not reused: which images they hold depends on the chunks in
    flight when it died, and the statistics over them died with it.)
    """
    removed = []
    for kind in ("tmp", "old"):
        for folder in dst.parent.glob(f".{glob.escape(dst.name)}.{kind}-*"):
            pid = folder.name.rpartition("-")[2]
            if not pid.isdigit() or int(pid) == os.getpid() or _running(int(pid)):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append((folder, int(pid)))
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _build(src: Path, out: Path, classes, items: dict, size: int, fmt: str, workers: int,
           jpeg: tuple, progress: bool, shard_bytes: int) -> dict:
    skipped: List[Tuple[str, str, str]] = []  # split, file, reason
    counts = {}
    stats = PixelStats(size)
    total = sum(len(v) for v in items.values())
    bar = _progress_bar(total, progress)
    pool = multiprocessing.Pool(workers, initializer=_leave_signals_to_the_parent) \
        if workers > 1 else None
    try:
        for split in SPLITS:
            writer = SplitWriter(out / split, fmt, size, len(items[split]), shard_bytes)
            tasks = [(str(src / split), items[split][i:i + CHUNK], size, fmt, jpeg, split == "train")
                     for i in range(0, len(items[split]), CHUNK)]
            results = pool.imap(_process_chunk, tasks) if pool else map(_process_chunk, tasks)
            for chunk, chunk_stats in results:
                for payload, label, file, error in chunk:
                    if error is None:
                        writer.add(payload, label, file)
                    else:
                        skipped.append((split, file, error))
                if chunk_stats is not None:
                    stats.merge(chunk_stats)
                bar.update(len(chunk))
                bar.set_postfix(skipped=len(skipped), refresh=False)
            counts[split] = writer.close()
            if counts[split] == 0:
                raise DataError(f"no readable image in {src / split} ({len(items[split])} files, all skipped)")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    stats.finish().save(out)
    info = {"format": fmt, "format_version": FORMAT_VERSION, "image_size": size,
            "classes": list(classes), "train": counts["train"], "val": counts["val"],
            "skipped": len(skipped), "jpeg_quality": jpeg[0] if fmt == "jpeg" else None,
            "jpeg_subsampling": jpeg[1] if fmt == "jpeg" else None,
            "source": str(src.resolve())}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    write_names(out / "classes.txt", classes)
    (out / "skipped.log").write_bytes(b"".join(b"\t".join(map(encode_name, fields)) + b"\n"
                                               for fields in skipped))
    return info


def _move_into_place(tmp: Path, dst: Path) -> None:
    """Rename the finished store onto DST; an old store there is moved aside first and
    deleted only once the new one is in place."""
    old = None
    if dst.exists() and any(dst.iterdir()):
        old = dst.parent / f".{dst.name}.old-{os.getpid()}"
        os.rename(dst, old)
    elif dst.exists():
        dst.rmdir()
    os.rename(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _leave_signals_to_the_parent() -> None:
    """Pool workers ignore Ctrl-C (sent to the whole process group): the parent stops them
    and says so once, instead of each worker printing a KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _progress_bar(total: int, enabled: bool):
    """A bar when asked and a person watches (stdout and stderr terminals), else none."""
    bar = progress_bar(total, "prepare", "img", enabled=enabled, leave=True)
    return _NoBar() if bar is None else bar


class _NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass
