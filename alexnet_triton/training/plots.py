"""PNG plots of a run, refreshed every epoch: the learning curves and conv1's kernels.

``conv1_kernels.png`` is the paper's figure 3: conv1's 96 kernels of 11x11x3, each scaled
to the full colour range on its own, one block of rows per column (GPU in the paper): the
top 48 kernels are column 1's, the bottom 48 column 2's. In the paper column 1 learns
mostly colour-agnostic kernels and column 2 mostly colour-specific ones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

CURVES = "curves.png"
CONV1 = "conv1_kernels.png"
KERNELS_PER_ROW = 16


def _save(figure, path: Path, **kwargs) -> None:
    """savefig to a temporary file, then rename: a reader never sees half a PNG."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(temporary, dpi=100, **kwargs)
    plt.close(figure)
    os.replace(temporary, path)


def plot_curves(history: Sequence[dict], path: Path, num_classes: int = 1000) -> Path:
    """curves.png: ``curves_figure`` saved."""
    path = Path(path)
    _save(curves_figure(history, num_classes), path)
    return path


def curves_figure(history: Sequence[dict], num_classes: int = 1000):
    """Three panels: training and validation loss, validation top-1 / top-5 error, and the
    learning rate per epoch. With 5 classes or fewer the top-5 error is 0 by definition:
    not drawn."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, error_axes, lr_axes) = plt.subplots(1, 3, figsize=(15, 4))
    loss_axes.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axes.plot(epochs, [row["val_loss"] for row in history], "s--", label="validation")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    loss_axes.legend()
    error_axes.plot(epochs, [100 * row["val_top1_error"] for row in history], "o-",
                    label="top-1")
    if num_classes > 5:
        error_axes.plot(epochs, [100 * row["val_top5_error"] for row in history], "s--",
                        label="top-5")
    error_axes.set(xlabel="epoch", ylabel="error (%)", title="validation error", ylim=(0, 100))
    error_axes.legend()
    # The rate each epoch trained at (the paper's divisions by 10 show as steps).
    lr_axes.plot(epochs, [row["lr"] for row in history], "o-", drawstyle="steps-post")
    lr_axes.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    if history and min(row["lr"] for row in history) > 0:
        lr_axes.set_yscale("log")
    for axes in (loss_axes, error_axes, lr_axes):
        axes.grid(alpha=0.3)
        if epochs:
            axes.set_xticks(epochs if len(epochs) <= 20 else axes.get_xticks())
    figure.tight_layout()
    return figure


def kernel_grid(weight: torch.Tensor, columns: int) -> np.ndarray:
    """conv1 weights [K, 3, h, w] -> an RGB image of the kernels, one row block per column.

    Each kernel is scaled to [0, 1] by its own range (as the paper's figure), a 1-pixel
    white gap between kernels and a 3-pixel gap between column blocks.
    """
    weight = weight.detach().float().cpu()
    count, _, height, width = weight.shape
    low = weight.flatten(1).min(dim=1).values[:, None, None, None]
    high = weight.flatten(1).max(dim=1).values[:, None, None, None]
    scaled = ((weight - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    per_column = count // columns
    per_row = min(KERNELS_PER_ROW, per_column)
    rows_per_column = -(-per_column // per_row)
    gap, block_gap = 1, 3
    grid_height = columns * rows_per_column * (height + gap) + (columns - 1) * block_gap + gap
    grid_width = per_row * (width + gap) + gap
    grid = np.ones((grid_height, grid_width, 3), dtype=np.float32)
    for index in range(count):
        column, within = divmod(index, per_column)
        row, position = divmod(within, per_row)
        top = gap + column * (rows_per_column * (height + gap) + block_gap) + row * (height + gap)
        left = gap + position * (width + gap)
        grid[top:top + height, left:left + width] = scaled[index]
    return grid


def plot_conv1(weight: torch.Tensor, columns: int, path: Path, epoch: int) -> Path:
    """The paper's figure 3 from conv1's weight [96, 3, 11, 11] (or [48, ...] one-column)."""
    path = Path(path)
    grid = kernel_grid(weight, columns)
    figure = plt.figure(figsize=(grid.shape[1] / 16, grid.shape[0] / 16))
    axes = figure.add_axes([0, 0, 1, 1])
    axes.imshow(grid, interpolation="nearest")
    axes.set_axis_off()
    if columns == 2:
        title = (f"conv1: {weight.shape[0]} kernels after epoch {epoch}; "
                 f"top: column 1, bottom: column 2")
    else:
        title = f"conv1: {weight.shape[0]} kernels after epoch {epoch} (one column)"
    axes.set_title(title, fontsize=9)
    _save(figure, path, bbox_inches="tight", pad_inches=0.05)
    return path
