"""The paper's figure 4 as PNG files.

- ``plot_predictions`` (figure 4, left): each image with its five most probable classes as
  bars, the true class (when known) in red, as the paper marks it.
- ``plot_neighbours`` (figure 4, right): one row per query image, the query first, then
  the training images whose fc7 feature vectors are nearest to it in Euclidean distance.

Each figure is laid out on a fixed grid of inches and saved at ``DPI`` without cropping,
so the image size is known in advance, and both functions return where each picture was
drawn, in the PNG's pixels (left, top, right, bottom): the tests read the PNGs back there.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
Box = Tuple[int, int, int, int]  # left, top, right, bottom in the PNG's pixels

# figure 4 left: a panel per image, PANELS_PER_ROW to a row (inches)
PANELS_PER_ROW = 4
PANEL_WIDTH, PANEL_HEIGHT = 2.6, 4.0
PICTURE = 2.2  # the square picture of a panel, and its margins
PICTURE_LEFT, PICTURE_TOP = 0.2, 0.35
BARS_HEIGHT = 1.0
# figure 4 right: a row per query (inches)
THUMB, THUMB_GAP, QUERY_GAP, ROW_HEIGHT, ROW_TOP = 1.2, 0.08, 0.35, 1.6, 0.2


def _save(figure, path: Path) -> Path:
    """savefig to a temporary file, then rename: a reader never sees half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    figure.savefig(temporary, dpi=DPI)
    plt.close(figure)
    os.replace(temporary, path)
    return path


class _Canvas:
    """A figure of ``width`` x ``height`` inches where axes are placed in inches from the
    top-left corner, and the PNG box of each is known."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = width, height
        self.figure = plt.figure(figsize=(width, height), dpi=DPI)

    def axes(self, left: float, top: float, width: float, height: float):
        return self.figure.add_axes([left / self.width, 1 - (top + height) / self.height,
                                     width / self.width, height / self.height])

    def picture(self, image: np.ndarray, left: float, top: float, side: float,
                title: str = "", below: str = "", colour: str = "black") -> Box:
        axes = self.axes(left, top, side, side)
        axes.imshow(image, interpolation="bilinear", aspect="auto")
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(colour)
        if title:
            axes.set_title(_short(title, 30), fontsize=7, pad=3)
        if below:
            axes.set_xlabel(below, fontsize=6, labelpad=2)
        return _box(left, top, side)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def prediction_layout(count: int) -> Tuple[int, int]:
    """Figure 4 (left)'s size in pixels (width, height) for ``count`` images."""
    per_row = min(PANELS_PER_ROW, count)
    return (round(per_row * PANEL_WIDTH * DPI),
            round(math.ceil(count / per_row) * PANEL_HEIGHT * DPI))


def _box(left: float, top: float, side: float) -> Box:
    return (round(left * DPI), round(top * DPI), round((left + side) * DPI),
            round((top + side) * DPI))


def _panel_origin(index: int, count: int) -> Tuple[float, float]:
    row, column = divmod(index, min(PANELS_PER_ROW, count))
    return column * PANEL_WIDTH + PICTURE_LEFT, row * PANEL_HEIGHT + PICTURE_TOP


def _thumb_left(position: int) -> float:
    """Left edge of a neighbours row's picture: 0 the query, 1... its neighbours."""
    if position == 0:
        return 0.15
    return 0.15 + THUMB + QUERY_GAP + (position - 1) * (THUMB + THUMB_GAP)


def prediction_boxes(count: int) -> List[Box]:
    """Where figure 4 (left) draws each of ``count`` pictures, in the PNG's pixels."""
    return [_box(*_panel_origin(index, count), PICTURE) for index in range(count)]


def neighbour_boxes(queries: int, k: int) -> List[List[Box]]:
    """Where figure 4 (right) draws each query (first) and its k neighbours, per row."""
    return [[_box(_thumb_left(position), row * ROW_HEIGHT + ROW_TOP, THUMB)
             for position in range(k + 1)] for row in range(queries)]


def neighbours_layout(queries: int, k: int) -> Tuple[int, int]:
    """Figure 4 (right)'s size in pixels (width, height): ``queries`` rows of 1 + k."""
    return (round(_neighbours_width(k) * DPI), round(_neighbours_height(queries) * DPI))


def _neighbours_width(k: int) -> float:
    return 0.15 + THUMB + QUERY_GAP + k * (THUMB + THUMB_GAP) + 0.1


def _neighbours_height(queries: int) -> float:
    return queries * ROW_HEIGHT + 0.1


def plot_predictions(images: Sequence[np.ndarray], titles: Sequence[str],
                     ranked: Sequence[Sequence[Tuple[str, float]]], path,
                     true_labels: Optional[Sequence[Optional[str]]] = None) -> List[Box]:
    """Figure 4, left: uint8 [S, S, 3] images, each with its ranked (class, probability)
    pairs as horizontal bars; returns each picture's box in the PNG."""
    count = len(images)
    if count == 0:
        raise ValueError("plot_predictions needs at least one image")
    per_row = min(PANELS_PER_ROW, count)
    rows = math.ceil(count / per_row)
    canvas = _Canvas(per_row * PANEL_WIDTH, rows * PANEL_HEIGHT)
    boxes = []
    for index, (image, title, classes) in enumerate(zip(images, titles, ranked)):
        left, top = _panel_origin(index, count)
        truth = true_labels[index] if true_labels is not None else None
        boxes.append(canvas.picture(image, left, top, PICTURE, title,
                                    below=f"true: {truth}" if truth else ""))
        bars = canvas.axes(left, top + PICTURE + 0.15, PICTURE, BARS_HEIGHT)
        names = [name for name, _ in classes]
        values = [100 * probability for _, probability in classes]
        positions = np.arange(len(classes))
        colours = ["tab:red" if name == truth else "tab:blue" for name in names]
        bars.barh(positions, values, color=colours, alpha=0.55, height=0.8)
        for position, name, value in zip(positions, names, values):
            bars.text(1, position, f"{_short(name, 22)}  {value:.1f}%", va="center",
                      fontsize=6.5)
        bars.set(xlim=(0, 100), ylim=(len(classes) - 0.5, -0.5))
        bars.set_yticks([])
        bars.tick_params(axis="x", labelsize=6)
    _save(canvas.figure, path)
    return boxes


def plot_neighbours(queries: Sequence[np.ndarray], query_titles: Sequence[str],
                    neighbours: Sequence[Sequence[np.ndarray]],
                    neighbour_titles: Sequence[Sequence[str]], path) -> List[List[Box]]:
    """Figure 4, right: a row per query, the query then its nearest training images;
    returns, per row, the boxes of the query and of each neighbour in the PNG."""
    if not queries:
        raise ValueError("plot_neighbours needs at least one query")
    k = max(len(row) for row in neighbours)
    canvas = _Canvas(_neighbours_width(k), _neighbours_height(len(queries)))
    boxes = []
    for row, (query, title, found, found_titles) in enumerate(
            zip(queries, query_titles, neighbours, neighbour_titles)):
        top = row * ROW_HEIGHT + ROW_TOP
        row_boxes = [canvas.picture(query, _thumb_left(0), top, THUMB, title,
                                    colour="tab:red")]
        for index, (image, name) in enumerate(zip(found, found_titles)):
            row_boxes.append(canvas.picture(image, _thumb_left(index + 1), top, THUMB,
                                            below=name))
        boxes.append(row_boxes)
    _save(canvas.figure, path)
    return boxes
