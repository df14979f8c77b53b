"""The paper's metrics (top-1 and top-5 error) and the run directory's metrics.csv."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

# One row per epoch. Errors are fractions (0.25 = 25%), as the paper's tables in percent.
FIELDS = ("epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr",
          "epoch_seconds", "images_per_second")


def topk_correct(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """How many rows have their label among the k highest scores, for each k: int64 [len(ks)].

    k larger than the class count counts every row (the top-5 error of a 3-class problem
    is 0).
    """
    largest = min(max(ks), logits.shape[1])
    top = logits.topk(largest, dim=1).indices  # [N, largest]
    hit = top == labels[:, None]
    return torch.stack([hit[:, :min(k, largest)].any(dim=1).sum() for k in ks])


class Totals:
    """Running sums over an evaluation: loss, top-1 and top-5 hits, image count."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        # float64: exact counts for any realistic validation set, and sums reduce across ranks.
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    def add(self, loss_sum: Tensor, logits_or_probs: Tensor, labels: Tensor) -> None:
        hits = topk_correct(logits_or_probs, labels).to(self.sums)
        count = torch.tensor([labels.numel()], dtype=torch.float64, device=self.sums.device)
        self.sums += torch.cat([loss_sum.detach().double().reshape(1).to(self.sums.device),
                                hits, count])

    def result(self) -> dict:
        loss, top1, top5, count = self.sums.tolist()
        if count == 0:
            return {"val_loss": math.nan, "val_top1_error": math.nan,
                    "val_top5_error": math.nan, "images": 0}
        return {"val_loss": loss / count, "val_top1_error": 1 - top1 / count,
                "val_top5_error": 1 - top5 / count, "images": int(count)}


def percent(error: float) -> str:
    return f"{100 * error:.2f}%"


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
        return [{key: (int(value) if key == "epoch" else float(value))
                 for key, value in row.items()} for row in csv.DictReader(file)]


def _formatted(row: dict) -> dict:
    return {key: (f"{value:.6g}" if isinstance(value, float) else value)
            for key, value in row.items()}
