"""A run directory's ownership and room: one training run writes it at a time.

``RunDirLock`` takes an exclusive advisory lock (``fcntl.flock``) on RUN_DIR/.lock before
anything else is done, so two trainings started on one directory at the same moment (or
two ``--resume`` of one run) cannot both write it: the second is refused, naming the
holder. The kernel drops the lock when the process ends, however it ends, so a killed run
never leaves a stale lock behind. Creating the lock file is also the writability check: a
read-only, immutable or below-a-file run directory is refused before the data and the
model are built.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import socket
from datetime import datetime
from pathlib import Path
from typing import Optional

from alexnet_triton.training.checkpoint import BEST, LATEST
from alexnet_triton.errors import RunDirError

LOCK = ".lock"
# Room kept free beyond a checkpoint's own size (the file system's metadata, config.json,
# metrics.csv, plots).
SPARE_BYTES = 16 << 20


def new_run_dir(root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path, suffix = root / stamp, 1
    while path.exists():
        path, suffix = root / f"{stamp}-{suffix}", suffix + 1
    return path


def run_checkpoint(run_dir: Path) -> Optional[Path]:
    """The checkpoint a run directory holds (latest.pt, else best.pt), or None."""
    for name in (LATEST, BEST):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return None


class RunDirLock:
    """The exclusive right to write ``run_dir``; ``release`` (or the process's end) gives it up."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._file = None
        self._created: list[Path] = []

    def acquire(self) -> "RunDirLock":
        """Create the folder if needed and lock it; raises RunDirError (one line)."""
        missing = []
        folder = self.run_dir
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._created = missing
            self._file = open(self.run_dir / LOCK, "a+")
        except OSError as error:
            self._remove_created()
            raise RunDirError(f"--run-dir {self.run_dir}: cannot write there "
                              f"({error.strerror or error})") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            raise RunDirError(f"--run-dir {self.run_dir} is in use by {holder}: one run "
                              f"writes a run directory at a time") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{datetime.now().isoformat(timespec='seconds')}\n")
        self._file.flush()
        return self

    def release(self, remove_if_created: bool = False) -> None:
        """Unlock; with ``remove_if_created``, also remove the folders ``acquire`` made
        (a run refused before it wrote anything leaves nothing behind)."""
        if self._file is None:
            return
        if remove_if_created and self._created:
            (self.run_dir / LOCK).unlink(missing_ok=True)
            self._remove_created()
        self._file.close()
        self._file = None

    def _remove_created(self) -> None:
        for folder in self._created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []


def check_free_space(run_dir: Path, needed: int, what: str) -> None:
    """Raise RunDirError unless ``run_dir``'s file system has room for ``needed`` bytes."""
    free = shutil.disk_usage(run_dir).free
    if free < needed + SPARE_BYTES:
        raise RunDirError(f"{run_dir} has {free / 2**20:.0f} MiB free, {what} needs "
                          f"{(needed + SPARE_BYTES) / 2**20:.0f} MiB")
