"""A run directory: its ownership and room, and the files a run writes there.

``RunFiles`` writes everything but the checkpoints (``training.checkpoint``): config.json,
skipped.log, metrics.csv, the plots (``training.plots``), TensorBoard's event files
(``training.tensorboard_log``) and summary.json. Only rank 0 has one.

``RunDirLock`` takes an exclusive advisory lock (``fcntl.flock``) on RUN_DIR/.lock before
anything else is done, so two trainings started on one directory at the same moment (or
two ``--resume`` of one run) cannot both write it: the second is refused, naming the
holder. The kernel drops the lock when the process ends, however it ends, so a killed run
never leaves a stale lock behind. Creating the lock file is also the writability check: a
read-only, immutable or below-a-file run directory is refused before the data and the
model are built.
"""
from __future__ import annotations

import csv
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from alexnet_triton.errors import RunDirError
from alexnet_triton.progress import rounded
from alexnet_triton.training import plots, tensorboard_log
from alexnet_triton.training.checkpoint import BEST, LATEST

LOCK = ".lock"
CONFIG = "config.json"
METRICS = "metrics.csv"
SUMMARY = "summary.json"
# A raw --data folder's unreadable files, as prepare lists them, and the damaged records the
# loaders left out (split, image index, reason).
SKIPPED_LOG = "skipped.log"
# metrics.csv: one row per epoch. Errors are fractions (0.25 = 25%), as the paper's tables
# in percent.
# data_wait: the share of the epoch's training time spent waiting for the next batch (as
# timm's data time; empty in rows of runs from before it was measured).
FIELDS = ("epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr",
          "epoch_seconds", "images_per_second", "data_wait")
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


class MetricsFile:
    """metrics.csv: a header, then one row per epoch, appended as epochs finish."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def rewrite(self, history: Iterable[dict]) -> None:
        """The file from a history (a resumed run drops rows past its checkpoint)."""
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in history:
                writer.writerow(_formatted(row))
        temporary.replace(self.path)

    def append(self, row: dict) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as file:
            writer = csv.DictWriter(file, FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(_formatted(row))


def read_metrics(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return [{key: (int(value) if key == "epoch" else float(value) if value else math.nan)
                 for key, value in row.items()} for row in csv.DictReader(file)]


def _formatted(row: dict) -> dict:
    return {key: (f"{value:.6g}" if isinstance(value, float) else value)
            for key, value in row.items()}


def _write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=1) + "\n")


class RunFiles:
    """The files rank 0 writes into ``run_dir`` as a run goes, besides the checkpoints.

    ``columns`` is the network's (conv1's kernels are drawn one block per column);
    ``log(text, file=..., flush=...)`` prints; ``prog`` names the program in warnings.
    A plot or TensorBoard that fails is a warning: it never stops training.
    """

    def __init__(self, run_dir: Path, columns: int, log: Callable[..., None],
                 prog: str, num_classes: int = 1000) -> None:
        self.run_dir = Path(run_dir)
        self.columns = columns
        self.num_classes = num_classes
        self.log = log
        self.prog = prog
        self.metrics = MetricsFile(self.run_dir / METRICS)
        self.tensorboard: Optional[tensorboard_log.TensorBoardLog] = None

    def start(self, config: dict, skipped: Sequence[tuple], history: Sequence[dict],
              tensorboard: bool, first_step: int) -> None:
        """A run's first writes: config.json, skipped.log, metrics.csv up to ``history``
        (a resumed run drops rows past its checkpoint) and, with ``tensorboard``, the event
        file from ``first_step`` on."""
        for stale in self.run_dir.glob(".*.pt.tmp-*"):  # a run killed mid-write
            stale.unlink(missing_ok=True)
        temporary = self.run_dir / f".{CONFIG}.tmp"
        _write_json(temporary, config)
        temporary.replace(self.run_dir / CONFIG)
        if skipped:
            (self.run_dir / SKIPPED_LOG).write_text(
                "".join(f"{path}\t{reason}\n" for path, reason in skipped))
        self.metrics.rewrite(history)
        if tensorboard:
            self.tensorboard = self._open_tensorboard(first_step)

    def _open_tensorboard(self, first_step: int) -> Optional[tensorboard_log.TensorBoardLog]:
        try:
            return tensorboard_log.TensorBoardLog(self.run_dir, first_step=first_step)
        except Exception as error:  # noqa: BLE001 - logging is optional, training is not
            self.log(f"{self.prog}: warning: no TensorBoard logging ({type(error).__name__}: "
                     f"{error})", file=sys.stderr, flush=True)
            return None

    def steps(self, first_step: int, losses: Sequence[float], lr: float) -> None:
        """The training loss of the steps from ``first_step`` on (TensorBoard)."""
        if self.tensorboard is not None:
            for offset, loss in enumerate(losses):
                self.tensorboard.step(first_step + offset, loss, lr)

    def epoch(self, row: dict, history: Sequence[dict], conv1: torch.Tensor,
              global_step: int) -> None:
        """An epoch's end: its metrics.csv row, the plots of ``history`` and of conv1's
        weight, TensorBoard's epoch scalars and kernels."""
        self.metrics.append(row)
        try:
            plots.plot_curves(history, self.run_dir / plots.CURVES, self.num_classes)
            plots.plot_conv1(conv1, self.columns, self.run_dir / plots.CONV1, row["epoch"])
        except Exception as error:  # noqa: BLE001 - a plot must never stop training
            self.log(f"  (plots not updated: {type(error).__name__}: {error})", file=sys.stderr)
        if self.tensorboard is not None:
            self.tensorboard.epoch(global_step, row, plots.kernel_grid(conv1, self.columns))

    def skipped(self, split: str, records: Sequence[tuple]) -> Path:
        """Damaged records a loader left out: appended to skipped.log, once each."""
        path = self.run_dir / SKIPPED_LOG
        listed = set(path.read_text().splitlines()) if path.exists() else set()
        lines = [line for line in dict.fromkeys(f"{split}\timage {index}\t{reason}"
                                                 for index, reason in records)
                 if line not in listed]
        with open(path, "a") as file:
            file.write("".join(line + "\n" for line in lines))
        return path

    def summary(self, record: dict) -> None:
        _write_json(self.run_dir / SUMMARY, rounded(record))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
