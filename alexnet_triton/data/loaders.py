"""Batches of uint8 images for training and evaluation, read ahead of the step that uses them.

The order is a pure function of (seed, epoch, rank, world_size): no global RNG is touched,
so a resumed run rebuilds exactly the batches it would have seen, and ``start_batch`` skips
the ones already trained on without decoding them. Sharding follows DistributedSampler:
the epoch's permutation is cut to a multiple of world_size and rank r takes every
world_size-th index from position r, so replicas see disjoint images. ``batch_size`` is
the per-rank batch.

Three ways to read a batch (``loader=``), chosen by measurement (README: Large datasets):
- "threads" (the default): ``workers`` threads of this process decode each batch, split
  between them, straight into one batch buffer (pinned when the batch goes to a GPU): no
  per-image copy, no transposing copy (a JPEG batch stays [B, S, S, 3] in memory and is
  handed on as a [B, 3, S, S] view; the device makes it contiguous), no copy between
  processes. libjpeg-turbo (simplejpeg) and Pillow release the GIL while they decode.
  ``prefetch`` batches are in flight while the step runs; ``workers=0`` reads each batch
  in the calling thread when it is asked for.
- "processes": torch's DataLoader with ``workers`` processes, one whole batch per task (the
  batch crosses to this process through shared memory).
- decode="gpu": the JPEG bytes only (one pinned buffer a batch), decoded on the GPU by
  ``alexnet_triton.data.gpu_decode``.

A record that cannot be read (a damaged shard) is left out of its batch and listed in
``Batches.skipped`` as (image index, reason); a batch none of whose images can be read
stops the epoch with a DataError.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from alexnet_triton.data.datasets import DatasetInfo, split_source
from alexnet_triton.data.decoders import cpu_decoder
from alexnet_triton.data.reading import LOADERS, Reading  # noqa: F401 - LOADERS re-exported
from alexnet_triton.errors import DataError


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A loader worker ignores Ctrl-C, and SIGTERM from anyone but its trainer process.

    ``timeout``, systemd and Slurm signal the whole process group: a worker that died of
    the signal would end the trainer's step with an error (under torchrun, on one rank
    only) before it could write its checkpoint; the trainer stops and ends its workers
    itself. A SIGTERM from the trainer process is how it ends one that does not finish
    (torch's DataLoader shutdown, multiprocessing at the trainer's exit): that one is
    obeyed, as is any SIGTERM once the trainer is gone, so no worker can outlive it or
    hold up its exit. (A signal's sender is only known to ``sigwaitinfo``: SIGTERM is
    blocked in this process and a thread waits for it.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    trainer = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait_for_sigterm() -> None:
        while True:
            sender = signal.sigwaitinfo({signal.SIGTERM}).si_pid
            if sender == trainer or os.getppid() != trainer:
                os._exit(128 + signal.SIGTERM)  # as a shell reports death by SIGTERM

    threading.Thread(target=wait_for_sigterm, name="alexnet-loader-sigterm",
                     daemon=True).start()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of n images in one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch)])).permutation(n)


def shard(indices: np.ndarray, rank: int, world_size: int, even: bool) -> np.ndarray:
    """This rank's part: every world_size-th index from position rank (cut to a multiple of
    world_size first when ``even``, so all ranks run the same number of steps).

    With per-rank batches of B / world_size, step k's batches of all ranks together are
    positions [k B, (k + 1) B) of the epoch's order, whatever the world size: a run resumed
    with another one trains each step on the same images."""
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


def batch_buffer(count: int, pixel_shape, pin_memory: bool) -> torch.Tensor:
    """An uninitialised uint8 [count, *pixel_shape] batch, in pinned memory when asked."""
    return torch.empty((count,) + tuple(pixel_shape), dtype=torch.uint8, pin_memory=pin_memory)


class BatchBuffers:
    """Batch buffers reused once their batch is dropped, so decoding writes to pages that
    are already mapped: a fresh 25 MB buffer a batch costs ~6,000 page faults, and measured
    on one core it slowed decoding by a third. Pinned buffers come from torch's caching
    host allocator, which already reuses them once their copies to the device are done.
    A buffer is free when nothing but this pool refers to its array: every tensor made from
    it with torch.from_numpy holds a reference until it is freed."""

    def __init__(self, pixel_shape, pin_memory: bool, keep: int) -> None:
        self.pixel_shape, self.pin_memory, self.keep = tuple(pixel_shape), pin_memory, keep
        self.arrays: List[np.ndarray] = []

    def take(self, count: int) -> Tuple[torch.Tensor, np.ndarray]:
        """(a batch buffer, the numpy array over the same memory that decoders write)."""
        if self.pin_memory:
            buffer = batch_buffer(count, self.pixel_shape, True)
            return buffer, buffer.numpy()
        for array in self.arrays:
            # Three references: this pool's list, the loop's name and getrefcount's argument.
            if len(array) == count and sys.getrefcount(array) == 3:
                return torch.from_numpy(array), array
        array = np.empty((count,) + self.pixel_shape, np.uint8)
        self.arrays = (self.arrays + [array])[-self.keep:]
        return torch.from_numpy(array), array


def as_images(buffer: torch.Tensor) -> torch.Tensor:
    """A batch buffer as [B, 3, S, S] (a view: [B, S, S, 3] buffers come channels-last)."""
    return buffer.permute(0, 3, 1, 2) if buffer.shape[-1] == 3 and buffer.shape[1] != 3 else buffer


def read_part(source, indices, out: np.ndarray, decoder, first_row: int = 0):
    """One thread's share of a batch; returns the (row, reason) of unreadable records."""
    return [(first_row + row, reason) for row, reason in source.read_into(indices, out, decoder)]


def readable_rows(indices, failed, skipped: list) -> List[int]:
    """The rows of a batch that were read; the others are listed in ``skipped`` as (image
    index, reason). A batch with no readable image is a DataError."""
    bad = {row for row, _ in failed}
    for row, reason in sorted(failed):
        skipped.append((int(indices[row]), reason))
    if len(bad) == len(indices):
        raise DataError(f"none of the {len(indices)} images of a batch could be read "
                        f"(image {int(indices[0])}: {failed[0][1]}): the data is damaged; "
                        f"prepare the store again")
    return [row for row in range(len(indices)) if row not in bad]


def drop_unreadable(source, indices, buffer: torch.Tensor, failed, skipped: list):
    """The batch without its unreadable rows (listed in ``skipped``): (buffer, labels)."""
    labels = np.asarray(source.labels[np.asarray(indices, np.int64)], np.int64)
    if not failed:
        return buffer, torch.from_numpy(labels)
    keep = readable_rows(indices, failed, skipped)
    kept = buffer[keep]
    if buffer.is_pinned():
        kept = kept.pin_memory()
    return kept, torch.from_numpy(labels[keep])


class BatchDataset(Dataset):
    """dataset[list of indices] -> (uint8 [B, 3, S, S], int64 [B], unreadable, None), or
    (None, None, unreadable, the DataError's message) for a batch with no readable image:
    one read a batch, in a DataLoader worker process."""

    def __init__(self, source, decoder_name: str) -> None:
        self.source, self.decoder_name = source, decoder_name
        self._decoder = None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: Sequence[int]):
        if self._decoder is None:
            self._decoder = cpu_decoder(self.decoder_name)
        buffer = batch_buffer(len(indices), self.source.pixel_shape, False)
        failed = read_part(self.source, indices, buffer.numpy(), self._decoder)
        skipped: list = []
        try:
            buffer, labels = drop_unreadable(self.source, indices, buffer, failed, skipped)
        except DataError as error:
            # Handed over as a value: the DataLoader would re-raise it with the worker's
            # traceback in its message, not the one line it is.
            return None, None, skipped, str(error)
        return as_images(buffer), labels, skipped, None


class Batches:
    """An epoch's batches: iterate for (images uint8 [B, 3, S, S], labels int64 [B]); len()
    counts the whole epoch for this rank, including the ``start_batch`` batches that
    iteration skips. ``skipped`` lists the unreadable records met so far. With
    ``reading.gpu_decode`` the images arrive on ``device``, decoded there."""

    def __init__(self, source, batches: List[np.ndarray], start_batch: int, workers: int,
                 pin_memory: bool, reading: Reading = Reading(), device=None) -> None:
        self.source, self.batches, self.reading = source, batches, reading
        self.batches_per_epoch = len(batches)
        self.start_batch = start_batch
        self.num_images = sum(len(b) for b in batches)
        self.workers, self.prefetch = workers, reading.prefetch
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self.decoder = cpu_decoder(reading.cpu_decoder)  # a missing library: refused now
        self.skipped: List[Tuple[int, str]] = []
        # Kept across passes over these batches (an evaluation loader read every epoch).
        self.buffers = BatchBuffers(source.pixel_shape, self.pin_memory, keep=self.prefetch + 3)
        self.gpu_decoder = None
        if reading.gpu_decode:
            from alexnet_triton.data.gpu_decode import GpuDecoder
            self.gpu_decoder = GpuDecoder.for_source(source, device)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        if self.gpu_decoder is not None:
            return self.gpu_decoder.decoded(self._records(), self.skipped)
        if self.reading.loader == "processes":
            return self._processes()
        return self._threads()

    def _records(self):
        """(JPEG records of a batch in one pinned buffer, their offsets, labels, image
        indices), in order; records outside their shard left out and listed."""
        for indices in self.batches[self.start_batch:]:
            records, failed = [], []
            for row, i in enumerate(indices):
                try:
                    records.append(self.source.record(i))
                except DataError as error:
                    failed.append((row, str(error)))
            buffer = batch_buffer(sum(len(r) for r in records), (), self.pin_memory)
            offsets = np.cumsum([0] + [len(r) for r in records])
            array = buffer.numpy()
            for record, start in zip(records, offsets[:-1].tolist()):
                array[start:start + len(record)] = np.frombuffer(record, np.uint8)
            keep = np.asarray(indices, np.int64)[readable_rows(indices, failed, self.skipped)]
            yield buffer, offsets, torch.from_numpy(np.asarray(self.source.labels[keep],
                                                               np.int64)), keep

    def _threads(self):
        source, decoder = self.source, self.decoder
        pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="alexnet-loader")
                if self.workers > 0 else None)
        buffers = self.buffers
        todo = iter(self.batches[self.start_batch:])
        in_flight: deque = deque()

        def submit() -> None:
            indices = next(todo, None)
            if indices is None:
                return
            buffer, array = buffers.take(len(indices))
            if pool is None:
                in_flight.append((indices, buffer, array, None))
                return
            # Each thread one contiguous share of the batch: every thread busy on every batch.
            bounds = np.linspace(0, len(indices), min(self.workers, len(indices)) + 1).astype(int)
            parts = [pool.submit(read_part, source, indices[a:b], array[a:b], decoder, a)
                     for a, b in zip(bounds[:-1], bounds[1:])]
            in_flight.append((indices, buffer, array, parts))

        try:
            for _ in range(self.prefetch if pool is not None else 1):
                submit()
            while in_flight:
                indices, buffer, array, parts = in_flight.popleft()
                if parts is None:
                    failed = read_part(source, indices, array, decoder)
                else:
                    failed = [item for part in parts for item in part.result()]
                del array  # the buffer's own reference keeps it from reuse from here on
                submit()
                buffer, labels = drop_unreadable(source, indices, buffer, failed, self.skipped)
                yield as_images(buffer), labels
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _processes(self):
        loader = DataLoader(BatchDataset(self.source, self.decoder.name), batch_size=None,
                            sampler=BatchList(self.batches, self.start_batch),
                            num_workers=self.workers,
                            worker_init_fn=_leave_stop_signals_to_the_trainer,
                            pin_memory=self.pin_memory,
                            prefetch_factor=self.prefetch if self.workers else None,
                            # The loader draws its workers' base seed from this private
                            # generator, not from torch's global one, which the trainer's
                            # dropout and initialization use.
                            generator=torch.Generator().manual_seed(0))
        batches = iter(loader)
        try:
            for images, labels, skipped, error in batches:
                self.skipped.extend(skipped)
                if error is not None:
                    raise DataError(error)
                yield images, labels
        finally:
            # Now, not when the iterator is collected: an error's traceback keeps it (and
            # its workers) alive until the interpreter's exit, where multiprocessing waits
            # for them.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()


def _check(batch_size: int, workers: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if world_size < 1:
        raise ValueError(f"world_size must be positive, got {world_size}")


def train_loader(info: DatasetInfo, batch_size: int, *, epoch: int, seed: int, workers: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, reading: Reading = Reading(),
                 device=None) -> Batches:
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
    return Batches(source, batches, start_batch, workers, pin_memory, reading, device)


def eval_loader(info: DatasetInfo, batch_size: int, *, workers: int, rank: int = 0,
                world_size: int = 1, pin_memory: bool = False, split: str = "val",
                reading: Reading = Reading(), device=None) -> Batches:
    """The validation images in file order, this rank's share, last batch possibly short."""
    _check(batch_size, workers, world_size)
    source = split_source(info, split)
    mine = shard(np.arange(len(source)), rank, world_size, even=False)
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    return Batches(source, batches, 0, workers, pin_memory, reading, device)
