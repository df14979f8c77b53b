"""TensorBoard event files of a training run (RUN_DIR/tensorboard/), when tensorboard is installed.

Everything is logged against the global step (SGD steps since the run began), so the
per-epoch validation errors line up with the per-step training loss. A resumed run starts
its event file with ``purge_step`` = the first step it will train: whatever a killed
predecessor logged after the checkpoint it resumes from is hidden, so the curves show the
run the checkpoints describe and never the same step twice.

``python -m alexnet_triton.train --tensorboard auto`` (the default) logs when the package
is importable; ``on`` makes a missing package an error before any work; ``off`` never logs.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

CHOICES = ("auto", "on", "off")
SUBDIRECTORY = "tensorboard"
# The per-epoch values of a metrics.csv row that become scalars, under "epoch/".
EPOCH_SCALARS = ("train_loss", "val_loss", "val_top1_error", "val_top5_error",
                 "images_per_second")
# conv1's kernel grid is ~193x76 px, 11 px a kernel: TensorBoard shows images at their own
# size, so each grid pixel becomes a 4x4 block (772x304 px).
IMAGE_SCALE = 4


def installed() -> bool:
    """Whether torch.utils.tensorboard can work: it needs the tensorboard package."""
    return importlib.util.find_spec("tensorboard") is not None


def wanted(choice: str) -> bool:
    """--tensorboard auto/on/off -> log or not; 'on' without the package is a ValueError."""
    if choice not in CHOICES:
        raise ValueError(f"--tensorboard must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "on" and not installed():
        raise ValueError("--tensorboard on needs the tensorboard package "
                         "(pip install tensorboard, or --tensorboard off)")
    return choice == "on" or (choice == "auto" and installed())


class TensorBoardLog:
    """One SummaryWriter over RUN_DIR/tensorboard; ``first_step`` > 1 for a resumed run."""

    def __init__(self, run_dir: Path, first_step: int = 1) -> None:
        from torch.utils.tensorboard import SummaryWriter
        self.directory = Path(run_dir) / SUBDIRECTORY
        # purge_step hides earlier files' events at steps >= it: those of a killed
        # predecessor past its checkpoint, or of a run that died before its first one.
        self.writer = SummaryWriter(str(self.directory), purge_step=first_step)

    def step(self, global_step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, global_step)
        self.writer.add_scalar("train/lr", lr, global_step)

    def epoch(self, global_step: int, row: dict, conv1_grid: np.ndarray) -> None:
        """An epoch's metrics row (as metrics.csv) and conv1's kernels, an RGB [H, W, 3] grid."""
        for key in EPOCH_SCALARS:
            self.writer.add_scalar(f"epoch/{key}", row[key], global_step)
        self.writer.add_scalar("epoch/epoch", row["epoch"], global_step)
        large = np.repeat(np.repeat(conv1_grid, IMAGE_SCALE, axis=0), IMAGE_SCALE, axis=1)
        self.writer.add_image("conv1_kernels", large, global_step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
