"""Batches of uint8 images for training and evaluation, decoded in DataLoader workers.

The order is a pure function of (seed, epoch, rank, world_size): no global RNG is touched,
so a resumed run rebuilds exactly the batches it would have seen, and ``start_batch`` skips
the ones already trained on without decoding them. Sharding follows DistributedSampler:
the epoch's permutation is cut to a multiple of world_size and rank r takes every
world_size-th index from position r, so replicas see disjoint images. ``batch_size`` is
the per-rank batch.

Workers receive whole batches of indices (one task per batch, not per image), read them
(JPEG decode or memory-map gather) and return one uint8 [B, 3, S, S] tensor; the trainer
moves it to the GPU (pinned when ``pin_memory``) and augments it there.
"""
from __future__ import annotations

import signal
from typing import Iterator, List, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from alexnet_triton.data.datasets import DatasetInfo, split_source


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave Ctrl-C and SIGTERM to the main process, which stops them itself.

    ``timeout``, systemd and Slurm signal the whole process group: a worker that died of
    the signal would end the main process's step with an error before it could write its
    checkpoint.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of n images in one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)])).permutation(n)


def shard(indices: np.ndarray, rank: int, world_size: int, even: bool) -> np.ndarray:
    """This rank's part: every world_size-th index from position rank (cut to a multiple of
    world_size first when ``even``, so all ranks run the same number of steps)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if even:
        indices = indices[:len(indices) // world_size * world_size]
    return indices[rank::world_size]


class BatchList(Sampler):
    """Yields lists of indices, one per batch, from ``start``."""

    def __init__(self, batches: List[np.ndarray], start: int = 0) -> None:
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self.batches[self.start:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return max(0, len(self.batches) - self.start)


class BatchDataset(Dataset):
    """dataset[list of indices] -> (uint8 [B, 3, S, S], int64 [B]): one read per batch."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: Sequence[int]):
        pixels, labels = self.source.read(indices)
        return torch.from_numpy(pixels), torch.from_numpy(np.asarray(labels, np.int64))


class Batches:
    """An epoch's batches: iterate for (images, labels); len() counts the whole epoch for
    this rank, including the ``start_batch`` batches that iteration skips."""

    def __init__(self, source, batches: List[np.ndarray], start_batch: int, workers: int,
                 pin_memory: bool) -> None:
        self.batches_per_epoch = len(batches)
        self.start_batch = start_batch
        self.num_images = sum(len(b) for b in batches)
        self._loader = DataLoader(BatchDataset(source), batch_size=None,
                                  sampler=BatchList(batches, start_batch), num_workers=workers,
                                  worker_init_fn=_ignore_stop_signals,
                                  pin_memory=pin_memory and torch.cuda.is_available(),
                                  # The loader draws its workers' base seed from this private
                                  # generator, not from torch's global one, which the trainer's
                                  # dropout and initialization use.
                                  generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        return iter(self._loader)


def _check(batch_size: int, workers: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")


def train_loader(info: DatasetInfo, batch_size: int, *, epoch: int, seed: int, workers: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False) -> Batches:
    """Shuffled training batches of epoch `epoch`, full batches only (drop_last)."""
    _check(batch_size, workers, world_size)
    source = split_source(info, "train")
    mine = shard(epoch_order(len(source), seed, epoch), rank, world_size, even=True)
    count = len(mine) // batch_size
    if count == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(mine)} training images "
                         f"of this rank ({len(source)} in all over {world_size} rank(s)): no full batch")
    batches = [mine[i * batch_size:(i + 1) * batch_size] for i in range(count)]
    if not 0 <= start_batch <= count:
        raise ValueError(f"start_batch must be in [0, {count}], got {start_batch}")
    return Batches(source, batches, start_batch, workers, pin_memory)


def eval_loader(info: DatasetInfo, batch_size: int, *, workers: int, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False, split: str = "val") -> Batches:
    """The validation images in file order, this rank's share, last batch possibly short."""
    _check(batch_size, workers, world_size)
    source = split_source(info, split)
    mine = shard(np.arange(len(source)), rank, world_size, even=False)
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    return Batches(source, batches, 0, workers, pin_memory)
