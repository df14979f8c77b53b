"""One replica's training run from a ``Setup``: the epochs, their checks, and signals.

Rank 0 writes the run directory (main() holds its lock): the checkpoints through
``training.checkpointing``, the other files through ``training.run_dir.RunFiles``, and it
prints what ``training.console`` words; every replica computes and joins the collectives.
The steps themselves and the evaluation are ``training.engine``'s.
"""
from __future__ import annotations

import math
import os
import random
import signal
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from alexnet_triton.data import Augmenter, DataError, eval_loader, train_loader
from alexnet_triton.models.build import build_model
from alexnet_triton.runtime import describe_kernels
from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training import checkpointing, engine
from alexnet_triton.training.checkpointing import CheckpointWriteError
from alexnet_triton.training.config import TrainConfig
from alexnet_triton.training.console import PROG, Console, Progress
from alexnet_triton.training.distributed import Replicas
from alexnet_triton.training.metrics import mean_data_wait
from alexnet_triton.training.run_dir import RunFiles
from alexnet_triton.training.setup import Setup

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# A mean batch loss this many times chance's (ln of the class count) means the run has
# diverged (measured: --lr 100 reached 2.7e12 with finite weights of 1e12): it is stopped
# as a NaN is, and nothing trained past it is saved.
DIVERGED_LOSS_FACTOR = 100.0


class Diverged(RuntimeError):
    """A NaN, infinite or exploded loss or weight: the run cannot go on."""


def _sgd(parameters, config: TrainConfig) -> torch.optim.SGD:
    """torch's SGD with the paper's momentum and weight decay, fused where torch has it.

    The fused update is one kernel over all parameters: on the CPU it cuts the step of
    AlexNet's 57M parameters from ~0.6 s to ~0.1 s.
    """
    parameters = list(parameters)
    kwargs = dict(lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    try:
        return torch.optim.SGD(parameters, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device without the fused kernel
        return torch.optim.SGD(parameters, **kwargs)


class Trainer:
    """One replica's training run from a ``Setup``; rank 0 writes the run directory."""

    def __init__(self, setup: Setup, replicas: Optional[Replicas] = None) -> None:
        self.setup = setup
        self.config = config = setup.config
        self.replicas = replicas or Replicas()
        self.info = setup.info
        self.devices = setup.devices
        self.device = setup.devices[0]
        self.amp = setup.amp
        self.run_dir = setup.run_dir
        self.main = self.replicas.is_main
        self.console = Console(setup, self.replicas)
        rank = self.replicas.rank

        self.arch = checkpointing.architecture(config, len(self.info.classes))
        torch.manual_seed(config.seed)  # the initial weights: the same on every replica
        self.model = build_model(self.arch, self.devices if len(self.devices) > 1
                                 else self.device)
        # Each replica its own dropout masks, augmentation and (unused) Python/NumPy streams.
        torch.manual_seed(config.seed * 1_000_003 + 1 + rank)
        self.generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 2 + rank)
        random.seed(config.seed * 1_000_003 + 3 + rank)
        np.random.seed((config.seed * 1_000_003 + 4 + rank) % 2**32)

        # torch's SGD: v = m v + (g + wd w), w -= lr v. The paper's rule scales v by lr
        # before adding; they are the same while the learning rate is constant.
        self.optimizer = _sgd(self.model.parameters(), config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.patience,
            threshold=0.0)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.epoch_loss_steps = 0
        self.best = {"val_top1_error": math.inf, "epoch": 0}
        self.history: list[dict] = []
        self.cuda_devices = [d for d in self.devices if d.type == "cuda"]
        if setup.resume_state is not None:
            checkpointing.restore(self, setup.resume_state)

        self.network: nn.Module = self.model
        if self.replicas.distributed:
            from torch.nn.parallel import DistributedDataParallel
            single_gpu = len(self.devices) == 1 and self.device.type == "cuda"
            self.network = DistributedDataParallel(
                self.model, device_ids=[self.device] if single_gpu else None)
        self.forward = torch.compile(self.network) if config.compile else self.network
        self.augmenter = Augmenter(self.info, config.crop_size, config.pca_sigma,
                                   device=self.device)
        self.per_replica_batch = config.batch_size // self.replicas.world_size
        self.stop_signal: Optional[int] = None
        # A second Ctrl-C stops at once, but never within a checkpoint's writing (or its
        # gathering: every replica must join it): then it stops right after.
        self.stop_at_once, self.saving = False, False
        # Forked loader workers inherit the signal handler; only this process acts on it.
        self.pid = os.getpid()
        # The run directory's files but the checkpoints: rank 0's.
        self.files: Optional[RunFiles] = (
            RunFiles(self.run_dir, 1 if config.one_column else 2, self.console.log, PROG,
                     len(self.info.classes)) if self.main else None)
        self.last_checkpoint = time.monotonic()
        self.epoch_clock = time.monotonic()
        self.epoch_rate: Optional[float] = None  # images/s, smoothed over the last epoch
        self.loss_limit = DIVERGED_LOSS_FACTOR * math.log(max(len(self.info.classes), 2))
        # --ten-crop evaluates the best weights at the end on every replica: kept here when
        # they are this run's, as no replica may count on reading best.pt (rank 0 writes it,
        # maybe on a disk the others do not see).
        self.best_weights: Optional[dict] = None

    def save_checkpoint(self, best: bool = False) -> Path:
        """latest.pt (and best.pt); every replica must call it (it gathers RNG states) and
        every replica returns once it is written. Raises Diverged for non-finite weights,
        CheckpointWriteError when rank 0 could not write it (the earlier one is kept)."""
        self._check_weights()
        self.saving = True  # a second Ctrl-C meanwhile waits for the checkpoint
        try:
            rng = self.replicas.gather(ckpt.capture_rng(self.generator, self.cuda_devices))
            self.last_checkpoint = time.monotonic()
            return checkpointing.save(self, rng, best)
        finally:
            self.saving = False

    @torch.no_grad()
    def _check_weights(self) -> None:
        finite = torch.stack([p.isfinite().all().to(self.device)
                              for p in self.model.parameters()]).all()
        if not bool(finite):
            raise Diverged(f"the weights hold NaN or infinite values at epoch "
                           f"{self.epoch + 1}, step {self.step_in_epoch}")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        config, console = self.config, self.console
        if self.epoch >= config.epochs:
            console.already_finished(self.epoch)
            return EXIT_OK
        if self.files is not None:  # main() holds the run directory's lock
            self.files.start(self._config_record(), self.info.skipped, self.history,
                             self.setup.tensorboard, first_step=self.global_step + 1)
        console.header(sum(p.numel() for p in self.model.parameters()), self.lr, self.epoch,
                       self.files.tensorboard if self.files is not None else None)
        self.epoch_clock = time.monotonic()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        started = time.monotonic()
        try:
            while self.epoch < config.epochs:
                status = self.train_epoch()
                if status == "interrupted":
                    self.save_checkpoint()
                    console.stopped(self.stop_signal, self.epoch + 1, self.step_in_epoch)
                    return EXIT_INTERRUPTED
                self.end_epoch()
                if self.stop_signal is not None:
                    console.stopped(self.stop_signal, self.epoch, None)
                    return EXIT_INTERRUPTED
        except Diverged as error:
            console.diverged(error, self.best)
            return EXIT_FAILED
        except CheckpointWriteError as error:
            console.failed(error)
            return EXIT_FAILED
        except DataError as error:  # a batch none of whose images could be read
            console.failed(error, own=True)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:  # a second Ctrl-C
            console.stopped_at_once(self.best)
            return EXIT_INTERRUPTED
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.files is not None:
                self.files.close()
        self._finish(time.monotonic() - started)
        return EXIT_OK

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            # A loader worker (Ctrl-C reaches the whole process group): the main process
            # stops and ends it; a second message from here would only repeat its own.
            return
        if self.stop_signal is None:
            self.stop_signal = signum
            self.console.signal_received(signum)
        elif signum == signal.SIGINT and not self.stop_at_once:
            # A second Ctrl-C: stop now, without this checkpoint. Another SIGTERM changes
            # nothing: a scheduler's may come with the one of the torchrun launcher's death,
            # and its SIGKILL follows anyway.
            self.stop_at_once = True
            if not self.saving:
                raise KeyboardInterrupt

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One SGD step on a uint8 batch; returns the batch's mean loss (a 0-d tensor)."""
        return engine.train_step(self.forward, self.optimizer, self.augmenter, self.generator,
                                 images, labels, self.device, self.amp)

    def train_epoch(self) -> str:
        """The rest of epoch ``self.epoch``: 'done' or 'interrupted' (raises Diverged)."""
        config, epoch = self.config, self.epoch
        loader = train_loader(self.info, self.per_replica_batch, epoch=epoch, seed=config.seed,
                              workers=config.workers, start_batch=self.step_in_epoch,
                              rank=self.replicas.rank, world_size=self.replicas.world_size,
                              pin_memory=self.device.type == "cuda",
                              reading=self.setup.reading, device=self.device)
        steps = len(loader)
        bar = self.console.bar(steps, epoch, self.step_in_epoch)
        # The DataLoader draws its workers' seed from torch's global generator; the batches
        # do not depend on it, and forking keeps the dropout stream independent of when an
        # epoch's iterator was made (so a resumed run draws what an uninterrupted one does).
        with torch.random.fork_rng(devices=[]):
            batches = iter(loader)
        self.model.train()
        # The steps' losses stay on the device until the next host read, every
        # --sync-steps steps and at the epoch's end: reading each one would make Python
        # wait for every step's kernels on a GPU.
        pending: list[torch.Tensor] = []
        self._rate, self._tick = None, time.monotonic()
        # Time spent waiting for the next batch: since the last host read, and this epoch's
        # (the share of the epoch's training time: metrics.csv's data_wait).
        self._waited, self.epoch_waited, self.epoch_train_seconds = 0.0, 0.0, 0.0
        started = time.monotonic()
        self.console.start_epoch(started)
        try:
            while self.step_in_epoch < steps:
                asked = time.monotonic()
                try:
                    images, labels = next(batches)
                except StopIteration:
                    break
                except Exception:
                    if self.stop_signal is not None:  # a loader worker stopped by the signal
                        return "interrupted"
                    raise
                self._waited += time.monotonic() - asked
                pending.append(self.train_step(images, labels))
                self.step_in_epoch += 1
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                print_due = (config.print_freq is not None
                             and self.step_in_epoch % config.print_freq == 0)
                if (len(pending) < config.sync_steps and self.step_in_epoch < steps
                        and not print_due):
                    continue
                stop, due = self._read_device(pending, steps, bar, print_due)
                pending = []
                if stop:
                    if self.stop_signal is None:
                        self.stop_signal = signal.SIGTERM  # another replica was stopped
                    return "interrupted"
                if due and self.step_in_epoch < steps:
                    self.save_checkpoint()
                    if self.stop_at_once:  # a second Ctrl-C while it was written
                        raise KeyboardInterrupt
        finally:
            if bar is not None:
                bar.close()
            del batches
            self.epoch_train_seconds = time.monotonic() - started
            self._report_skipped("train", loader)
        self.epoch_rate = self._rate
        return "done"

    def _report_skipped(self, split: str, loader) -> None:
        """Damaged records the loader left out: rank 0 lists its own in skipped.log."""
        if loader.skipped and self.files is not None:
            self.console.skipped(split, loader.skipped, self.files.skipped(split, loader.skipped))

    def _read_device(self, losses: list, steps: int, bar,
                     print_due: bool = False) -> tuple[bool, bool]:
        """The host read after ``losses``' steps: check them, log them, and agree across the
        replicas on (stop for a signal, write a checkpoint now). Raises Diverged."""
        world = self.replicas.world_size
        due = time.monotonic() - self.last_checkpoint >= self.config.checkpoint_minutes * 60
        values = torch.stack(losses).float().cpu()  # waits for the device, once
        flags = torch.cat([values, torch.tensor([float(self.stop_signal is not None),
                                                 float(due and self.main)])])
        self.replicas.sum_(flags)
        *losses_, stop, due_ = (flags / torch.tensor([world] * len(losses) + [1, 1])).tolist()
        first_step = self.step_in_epoch - len(losses_) + 1
        for offset, loss in enumerate(losses_):
            if not math.isfinite(loss) or loss > self.loss_limit:
                chance = self.loss_limit / DIVERGED_LOSS_FACTOR
                what = "" if not math.isfinite(loss) else (
                    f", over {DIVERGED_LOSS_FACTOR:g}x chance's {chance:.2f}: diverged")
                raise Diverged(f"the loss is {loss:.4g} at epoch {self.epoch + 1}, step "
                               f"{first_step + offset} (learning rate {self.lr:g}){what}")
        self.epoch_loss_sum += sum(losses_)
        self.epoch_loss_steps += len(losses_)
        if self.files is not None:
            self.files.steps(self.global_step - len(losses_) + 1, losses_, self.lr)
        now = time.monotonic()
        interval = max(now - self._tick, 1e-9)
        batch_rate = self.config.batch_size * len(losses_) / interval
        data_wait = min(self._waited / interval, 1.0)
        self.epoch_waited += self._waited
        self._tick, self._waited = now, 0.0
        self._rate = batch_rate if self._rate is None else 0.9 * self._rate + 0.1 * batch_rate
        progress = Progress(self.epoch + 1, self.step_in_epoch, steps,
                            self.epoch_loss_sum / self.epoch_loss_steps, self._rate, self.lr,
                            data_wait)
        self.console.progress(progress, bar, print_due, now)
        self.console.input_bound(self.epoch_waited, self.step_in_epoch, now)
        return stop > 0, due_ > 0

    def validate(self, ten_crop: bool = False) -> dict:
        loader = eval_loader(self.info, self.per_replica_batch, workers=self.config.workers,
                             rank=self.replicas.rank, world_size=self.replicas.world_size,
                             pin_memory=self.device.type == "cuda",
                             reading=self.setup.reading, device=self.device)
        with torch.random.fork_rng(devices=[]):
            result = engine.evaluate(self.model, loader, self.augmenter, self.device,
                                     ten_crop=ten_crop, amp=self.amp, reduce=self.replicas.sum_)
        self._report_skipped("val", loader)
        return result

    def end_epoch(self) -> None:
        result = self.validate()
        lr = self.lr
        self.scheduler.step(result["val_top1_error"])
        improved = result["val_top1_error"] < self.best["val_top1_error"]
        self.epoch += 1
        seconds = time.monotonic() - self.epoch_clock
        row = {"epoch": self.epoch,
               "train_loss": self.epoch_loss_sum / max(self.epoch_loss_steps, 1),
               "val_loss": result["val_loss"], "val_top1_error": result["val_top1_error"],
               "val_top5_error": result["val_top5_error"], "lr": lr,
               "epoch_seconds": seconds,
               "images_per_second": self.epoch_rate or math.nan,
               "data_wait": self.epoch_waited / max(self.epoch_train_seconds, 1e-9)}
        self.history.append(row)
        if improved:
            self.best = {"val_top1_error": result["val_top1_error"], "epoch": self.epoch}
            if self.config.ten_crop:
                self.best_weights = ckpt.model_state(self.model)
        self.step_in_epoch, self.epoch_loss_sum, self.epoch_loss_steps = 0, 0.0, 0
        self.save_checkpoint(best=improved)
        self.epoch_clock = time.monotonic()
        if self.files is None:
            return
        conv1 = self.model.conv1.state_dict()["weight"]  # [96, 3, 11, 11], both columns
        self.files.epoch(row, self.history, conv1, self.global_step)
        self.console.epoch(row, improved, self.lr)

    def _finish(self, seconds: float) -> None:
        summary = {"epochs": self.epoch, "seconds": round(seconds, 1),
                   "data_wait": mean_data_wait(self.history),
                   "best_epoch": self.best["epoch"],
                   "best_val_top1_error": self.best["val_top1_error"],
                   "best_val_top5_error": next(
                       (row["val_top5_error"] for row in self.history
                        if row["epoch"] == self.best["epoch"]), math.nan)}
        if self.config.ten_crop and self.best["epoch"]:
            weights = self.best_weights
            if weights is None:  # the best epoch is a resumed run's: rank 0 has best.pt
                weights = self.replicas.broadcast(
                    ckpt.load(self.run_dir / ckpt.BEST)["model"] if self.main else None)
            self.model.load_state_dict(weights)
            result = self.validate(ten_crop=True)
            summary.update(ten_crop_val_top1_error=result["val_top1_error"],
                           ten_crop_val_top5_error=result["val_top5_error"])
            self.console.ten_crop(self.best["epoch"], result)
        if self.files is None:
            return
        self.files.summary(summary)
        self.console.finish(seconds, summary)

    def _config_record(self) -> dict:
        """config.json: the configuration, and what it resolved to."""
        record = self.config.to_dict()
        record["resolved"] = {
            "devices": [str(d) for d in self.devices], "amp_bf16": self.amp,
            "kernels": describe_kernels(self.device), "world_size": self.replicas.world_size,
            "batch_per_replica": self.per_replica_batch, "dataset": str(self.info.root),
            "builtin_dataset": self.setup.builtin, "classes": list(self.info.classes),
            "image_size": self.info.image_size, "architecture": self.arch,
            "torch": torch.__version__}
        return record
