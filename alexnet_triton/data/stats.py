"""The training-set statistics the paper's recipe needs, accumulated image by image.

- the mean image, [3, S, S] in 0..255: "subtracting the mean activity over the training set
  from each pixel";
- the eigen-decomposition of the 3x3 covariance of RGB pixel values over all training
  pixels (values in 0..1), for the PCA colour augmentation (section 4.1).

Sums are kept in int64 / float64 so a million images add up without rounding drift, and
partial sums from worker processes merge by addition.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

STATS_FILE = "stats.npz"


class PixelStats:
    """Running sums over uint8 [S, S, 3] images; ``merge`` adds another PixelStats."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images = 0
        self.image_sum = np.zeros((size, size, 3), np.int64)  # [S, S, 3]
        self.rgb_sum = np.zeros(3, np.float64)                # sum of pixels, 0..1 scale
        self.rgb_outer = np.zeros((3, 3), np.float64)         # sum of pixel outer products

    def add(self, pixels: np.ndarray) -> None:
        self.images += 1
        self.image_sum += pixels
        rgb = pixels.reshape(-1, 3).astype(np.float64) / 255.0  # [S*S, 3]
        self.rgb_sum += rgb.sum(0)
        self.rgb_outer += rgb.T @ rgb

    def merge(self, other: "PixelStats") -> None:
        self.images += other.images
        self.image_sum += other.image_sum
        self.rgb_sum += other.rgb_sum
        self.rgb_outer += other.rgb_outer

    def finish(self) -> "DatasetStats":
        if self.images == 0:
            raise ValueError("no readable training image to compute statistics from")
        pixels = self.images * self.size * self.size
        rgb_mean = self.rgb_sum / pixels
        rgb_cov = self.rgb_outer / pixels - np.outer(rgb_mean, rgb_mean)
        eigval, eigvec = np.linalg.eigh(rgb_cov)
        # Largest first, as the paper lists principal components; a tiny negative rounding
        # residue on a degenerate (e.g. grayscale) dataset becomes 0.
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
        mean = (self.image_sum / self.images).transpose(2, 0, 1)  # [3, S, S]
        return DatasetStats(mean.astype(np.float32), eigval.astype(np.float32),
                            eigvec.astype(np.float32), rgb_mean, rgb_cov, self.images)


@dataclass(frozen=True, eq=False)
class DatasetStats:
    mean: np.ndarray      # float32 [3, S, S], 0..255
    eigval: np.ndarray    # float32 [3], descending, 0..1 scale
    eigvec: np.ndarray    # float32 [3, 3], columns
    rgb_mean: np.ndarray  # float64 [3], 0..1
    rgb_cov: np.ndarray   # float64 [3, 3], 0..1
    images: int

    def save(self, directory: Path) -> None:
        np.savez(Path(directory) / STATS_FILE, mean=self.mean, eigval=self.eigval,
                 eigvec=self.eigvec, rgb_mean=self.rgb_mean, rgb_cov=self.rgb_cov,
                 images=np.int64(self.images))

    @staticmethod
    def load(directory: Path) -> "DatasetStats":
        with np.load(Path(directory) / STATS_FILE) as f:
            return DatasetStats(f["mean"], f["eigval"], f["eigvec"], f["rgb_mean"], f["rgb_cov"],
                                int(f["images"]))
