"""The paper's metrics: top-1 and top-5 error (metrics.csv is ``training.run_dir``'s)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor


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


def mean_data_wait(history: list) -> float:
    """A run's share of training time spent waiting for batches, over the epochs that
    measured it (metrics rows' data_wait, weighted by the epochs' length)."""
    rows = [row for row in history if math.isfinite(row.get("data_wait", math.nan))]
    seconds = sum(row["epoch_seconds"] for row in rows)
    return (sum(row["data_wait"] * row["epoch_seconds"] for row in rows) / seconds
            if seconds > 0 else math.nan)
