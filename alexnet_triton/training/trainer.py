"""One replica's training run from a ``Setup``: epochs, checks, signals, checkpoints, logs.

Rank 0 writes the run directory (main() holds its lock): the checkpoints itself, the other
files through ``training.run_dir.RunFiles``; every replica computes and joins the
collectives. The steps themselves and the evaluation are ``training.engine``'s.
"""
from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from alexnet_triton.data import Augmenter, eval_loader, train_loader
from alexnet_triton.models.build import build_model
from alexnet_triton.progress import plural, progress_bar
from alexnet_triton.runtime import describe_kernels
from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training import engine
from alexnet_triton.training.config import (BIAS_INIT_REASON, DEFAULT_BIAS_INIT,
                                            PAPER_BIAS_INIT, TrainConfig)
from alexnet_triton.training.distributed import Replicas
from alexnet_triton.training.metrics import percent
from alexnet_triton.training.run_dir import SKIPPED_LOG, RunDirError, RunFiles, check_free_space
from alexnet_triton.training.setup import Setup

PROG = "python -m alexnet_triton.train"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# A mean batch loss this many times chance's (ln of the class count) means the run has
# diverged (measured: --lr 100 reached 2.7e12 with finite weights of 1e12): it is stopped
# as a NaN is, and nothing trained past it is saved.
DIVERGED_LOSS_FACTOR = 100.0
# Without a progress bar (output not a terminal) and without --print-freq, a progress
# line this often.
LOG_SECONDS = 60.0
# Training images per second on the CPU by crop size, measured on 2 AVX2 cores (reference
# ops): 170 at the built-in dataset's 63-px crops (batch 128), ~70 at 112 (a 128-px store,
# batch 32), 2-3 at the paper's 224 (batch 16-128; the 224 path is far slower per FLOP).
# Between and beyond them the start-up estimate follows straight lines in log-log, scaled by
# the thread count; the first progress line then says what this machine measures.
CPU_RATE_POINTS = ((63, 170.0), (112, 70.0), (224, 2.5))
CPU_RATE_THREADS = 2


# ---------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------


class Diverged(RuntimeError):
    """A NaN, infinite or exploded loss or weight: the run cannot go on."""


class CheckpointWriteError(RuntimeError):
    """latest.pt could not be written (no room, an I/O error); the message is one line."""


def _tensors(value):
    """Every tensor in nested dicts and lists (a checkpoint's state)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def _architecture(config: TrainConfig, num_classes: int) -> dict:
    return {"name": "alexnet-one-column" if config.one_column else "alexnet",
            "num_classes": num_classes, "dropout": config.dropout, "lrn": config.lrn,
            "overlapping_pool": config.overlapping_pool, "bias_init": config.bias_init,
            "weight_std": config.weight_std}


def cpu_images_per_second(crop_size: int, threads: int) -> float:
    """The expected training speed on the CPU (see CPU_RATE_POINTS): a rough guide only."""
    points = CPU_RATE_POINTS
    segment = next((i for i in range(len(points) - 2) if crop_size < points[i + 1][0]),
                   len(points) - 2)
    (small, fast), (large, slow) = points[segment], points[segment + 1]
    exponent = math.log(fast / slow) / math.log(large / small)
    return fast * (small / crop_size) ** exponent * max(threads, 1) / CPU_RATE_THREADS


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def bias_init_note(bias_init: float) -> str:
    """Why the run's bias init is what it is (the header says it)."""
    if bias_init == DEFAULT_BIAS_INIT:
        return f"bias {bias_init:g} ({BIAS_INIT_REASON})"
    if bias_init == PAPER_BIAS_INIT:
        return (f"bias {bias_init:g} (the paper's; if the loss explodes or stays at chance, "
                f"the default {DEFAULT_BIAS_INIT:g} trains)")
    return f"bias {bias_init:g} (--bias-init)"


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
        self.log = print if self.main else (lambda *args, **kwargs: None)
        rank = self.replicas.rank

        self.arch = _architecture(config, len(self.info.classes))
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
            saved = setup.resume_state["arch"]
            differ = sorted(k for k in set(saved) | set(self.arch)
                            if saved.get(k) != self.arch.get(k))
            if differ:  # edited by hand, or another program's
                raise ckpt.CheckpointError(
                    f"{setup.resume_state['path']}: its arch record is not the network its "
                    f"configuration builds ({', '.join(differ)} differ)")
            self._restore(setup.resume_state)

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
        # Forked loader workers inherit the signal handler; only this process acts on it.
        self.pid = os.getpid()
        self.cpu_estimate_due = False
        # The run directory's files but the checkpoints: rank 0's.
        self.files: Optional[RunFiles] = (RunFiles(self.run_dir, self._columns(), self.log, PROG,
                                                   len(self.info.classes))
                                          if self.main else None)
        self.last_checkpoint = time.monotonic()
        self.epoch_clock = time.monotonic()
        self.epoch_rate: Optional[float] = None  # images/s, smoothed over the last epoch
        self.loss_limit = DIVERGED_LOSS_FACTOR * math.log(max(len(self.info.classes), 2))
        # --ten-crop evaluates the best weights at the end on every replica: kept here when
        # they are this run's, as no replica may count on reading best.pt (rank 0 writes it,
        # maybe on a disk the others do not see).
        self.best_weights: Optional[dict] = None

    # -- state ---------------------------------------------------------------------------

    def _restore(self, state: dict) -> None:
        ckpt.load_model_state(self.model, state)
        ckpt.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.epoch_loss_sum = state["epoch_loss_sum"]
        self.epoch_loss_steps = state["epoch_loss_steps"]
        self.best = dict(state["best"])
        self.history = [dict(row) for row in state["history"]]
        rng = state["rng"]
        if state.get("world_size", 1) == self.replicas.world_size:
            ckpt.restore_rng(rng[self.replicas.rank], self.generator, self.cuda_devices)
        elif self.step_in_epoch:
            # Another sharding: this epoch's remaining batches differ; start it over.
            self.step_in_epoch, self.epoch_loss_sum, self.epoch_loss_steps = 0, 0.0, 0

    def _state(self, rng: list) -> dict:
        data = {"image_size": self.info.image_size, "crop_size": self.config.crop_size,
                "mean": self.info.mean.float().cpu(), "eigval": self.info.eigval.float().cpu(),
                "eigvec": self.info.eigvec.float().cpu()}
        return {
            "format": ckpt.FORMAT, "version": ckpt.VERSION, "arch": self.arch,
            "classes": list(self.info.classes), "data": data,
            "model": ckpt.model_state(self.model),
            "config": self.config.to_dict(),
            "optimizer": ckpt.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_steps": self.epoch_loss_steps, "best": dict(self.best),
            "history": [dict(row) for row in self.history],
            "world_size": self.replicas.world_size, "rng": rng,
        }

    def save_checkpoint(self, best: bool = False) -> Path:
        """latest.pt (and best.pt); every replica must call it (it gathers RNG states) and
        every replica returns once it is written. Raises Diverged for non-finite weights,
        CheckpointWriteError when rank 0 could not write it (the earlier one is kept)."""
        self._check_weights()
        rng = self.replicas.gather(ckpt.capture_rng(self.generator, self.cuda_devices))
        self.last_checkpoint = time.monotonic()
        path, error = self.run_dir / ckpt.LATEST, None
        if self.main:
            try:
                error = self._write_checkpoint(self._state(rng), best)
            finally:  # the other replicas wait for this answer: it must always come
                error = self.replicas.broadcast(error)
        else:
            error = self.replicas.broadcast(None)
        if error is not None:
            raise CheckpointWriteError(error)
        return path

    def _write_checkpoint(self, state: dict, best: bool) -> Optional[str]:
        """Write latest.pt (and best.pt); the reason as one line if it could not be."""
        size = sum(value.numel() * value.element_size() for value in _tensors(state))
        try:
            weights = sum(value.numel() * value.element_size()
                          for value in _tensors(state["model"]))  # best_weights.pt
            check_free_space(self.run_dir, size + (weights if best else 0),
                             f"a checkpoint of epoch {self.epoch + 1}")
            path = ckpt.save(state, self.run_dir / ckpt.LATEST)
            if best:
                ckpt.link_atomically(path, self.run_dir / ckpt.BEST)
                # The weights alone, a plain state dict: what torchvision-style code loads
                # (model.load_state_dict(torch.load(...))).
                ckpt.save(state["model"], self.run_dir / ckpt.BEST_WEIGHTS)
            if self.config.keep_checkpoints and self.step_in_epoch == 0:
                ckpt.keep_epoch(path, self.epoch, self.config.keep_checkpoints)
        except RunDirError as error:
            return str(error)
        except (OSError, RuntimeError) as error:  # a full disk mid-write, a quota, EIO
            text = str(error).strip().splitlines()
            return (f"writing {self.run_dir / ckpt.LATEST} failed: "
                    f"{text[0] if text else type(error).__name__}")
        return None

    @torch.no_grad()
    def _check_weights(self) -> None:
        finite = torch.stack([p.isfinite().all().to(self.device)
                              for p in self.model.parameters()]).all()
        if not bool(finite):
            raise Diverged(f"the weights hold NaN or infinite values at epoch "
                           f"{self.epoch + 1}, step {self.step_in_epoch}")

    def checkpoint_bytes(self) -> int:
        """About the size of one checkpoint: the weights and as much momentum."""
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return 2 * weights + self.info.mean.numel() * 4

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    # -- the run -------------------------------------------------------------------------

    def run(self) -> int:
        config = self.config
        if self.epoch >= config.epochs:
            self.log(f"{PROG}: {self.run_dir} already finished its "
                     f"{plural(self.epoch, 'epoch')} "
                     f"(pass --epochs N with N > {self.epoch} to train longer)")
            return EXIT_OK
        if self.files is not None:  # main() holds the run directory's lock
            self.files.start(self._config_record(), self.info.skipped, self.history,
                             self.setup.tensorboard, first_step=self.global_step + 1)
        self._print_header()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        started = time.monotonic()
        try:
            while self.epoch < config.epochs:
                status = self.train_epoch()
                if status == "interrupted":
                    path = self.save_checkpoint()
                    self.log(f"stopped by {signal.Signals(self.stop_signal).name} at epoch "
                             f"{self.epoch + 1}, step {self.step_in_epoch}: checkpoint "
                             f"{path}; continue with --resume {self.run_dir}", flush=True)
                    return EXIT_INTERRUPTED
                self.end_epoch()
                if self.stop_signal is not None:
                    self.log(f"stopped by {signal.Signals(self.stop_signal).name} after epoch "
                             f"{self.epoch}: checkpoint {self.run_dir / ckpt.LATEST}; continue "
                             f"with --resume {self.run_dir}", flush=True)
                    return EXIT_INTERRUPTED
        except Diverged as error:
            self.log(f"{PROG}: error: {error}; stopping, nothing after the last check is "
                     f"saved. {self._usable_checkpoints()} Try a lower --lr.",
                     file=sys.stderr, flush=True)
            return EXIT_FAILED
        except CheckpointWriteError as error:
            latest = self.run_dir / ckpt.LATEST
            kept = (f"the previous {latest} is kept" if latest.exists() else
                    "no checkpoint had been written yet")
            self.log(f"{PROG}: error: {error}; stopping ({kept})", file=sys.stderr, flush=True)
            return EXIT_FAILED
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.files is not None:
                self.files.close()
        self._finish(time.monotonic() - started)
        return EXIT_OK

    def _usable_checkpoints(self) -> str:
        latest, best = self.run_dir / ckpt.LATEST, self.run_dir / ckpt.BEST
        if not latest.exists():
            return "No checkpoint had been written yet."
        text = f"{latest} resumes from before it"
        if best.exists() and self.best["epoch"]:
            text += (f"; {best} holds the best validated weights (epoch {self.best['epoch']}, "
                     f"top-1 error {percent(self.best['val_top1_error'])}): use it")
        return text + "."

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            # A loader worker (Ctrl-C reaches the whole process group): the main process
            # stops and ends it; a second message from here would only repeat its own.
            return
        if self.stop_signal is not None:  # a second Ctrl-C: stop now, no checkpoint
            raise KeyboardInterrupt
        self.stop_signal = signum
        self.log(f"\n{signal.Signals(signum).name}: finishing at most "
                 f"{plural(self.config.sync_steps, 'step')} and writing a checkpoint (press "
                 f"Ctrl-C again to stop at once)",
                 file=sys.stderr, flush=True)

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
                              pin_memory=self.device.type == "cuda")
        steps = len(loader)
        bar = progress_bar(steps, f"epoch {epoch + 1}/{config.epochs}", "batch",
                           initial=self.step_in_epoch, enabled=self.main)
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
        self._rate, self._last_log, self._tick = None, time.monotonic(), time.monotonic()
        try:
            while self.step_in_epoch < steps:
                try:
                    images, labels = next(batches)
                except StopIteration:
                    break
                except Exception:
                    if self.stop_signal is not None:  # a loader worker stopped by the signal
                        return "interrupted"
                    raise
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
        finally:
            if bar is not None:
                bar.close()
            del batches
        self.epoch_rate = self._rate
        return "done"

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
        batch_rate = self.config.batch_size * len(losses_) / max(now - self._tick, 1e-9)
        self._tick = now
        self._rate = batch_rate if self._rate is None else 0.9 * self._rate + 0.1 * batch_rate
        mean_loss = self.epoch_loss_sum / self.epoch_loss_steps
        line = (f"  epoch {self.epoch + 1} step {self.step_in_epoch}/{steps}: loss "
                f"{mean_loss:.4f}, {self._rate:.0f} img/s, lr {self.lr:g}")
        if self.main and self.cpu_estimate_due:
            self.cpu_estimate_due = False
            line += (f"; measured here: about "
                     f"{_duration(steps * self.config.batch_size / self._rate)} an epoch")
            print_due = True
        if bar is not None:
            bar.set_postfix_str(f"loss {mean_loss:.4f}, {self._rate:.0f} img/s, "
                                f"lr {self.lr:g}", refresh=True)
            if print_due and self.main:
                bar.write(line, file=sys.stdout)
        elif self.main and (print_due or (self.config.print_freq is None
                                          and now - self._last_log >= LOG_SECONDS)):
            self._last_log = now
            self.log(line, flush=True)
        return stop > 0, due_ > 0

    def validate(self, ten_crop: bool = False) -> dict:
        loader = eval_loader(self.info, self.per_replica_batch, workers=self.config.workers,
                             rank=self.replicas.rank, world_size=self.replicas.world_size,
                             pin_memory=self.device.type == "cuda")
        with torch.random.fork_rng(devices=[]):
            return engine.evaluate(self.model, loader, self.augmenter, self.device,
                                   ten_crop=ten_crop, amp=self.amp, reduce=self.replicas.sum_)

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
               "images_per_second": self.epoch_rate or math.nan}
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
        note = ""
        if self.lr < lr:
            note = (f"  -> lr {self.lr:g} (no improvement for "
                    f"{plural(self.config.patience + 1, 'epoch')})")
        self.log(f"epoch {self.epoch:3d}/{self.config.epochs}  train loss {row['train_loss']:.4f}"
                 f"  val loss {row['val_loss']:.4f}  top-1 error "
                 f"{percent(row['val_top1_error'])}  top-5 error "
                 f"{percent(row['val_top5_error'])}  lr {lr:g}  {seconds:.0f}s"
                 f"{'  (best)' if improved else ''}{note}", flush=True)

    def _columns(self) -> int:
        return 1 if self.config.one_column else 2

    def _finish(self, seconds: float) -> None:
        summary = {"epochs": self.epoch, "seconds": round(seconds, 1),
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
            self.log(f"ten crops, best checkpoint (epoch {self.best['epoch']}): top-1 error "
                     f"{percent(result['val_top1_error'])}  top-5 error "
                     f"{percent(result['val_top5_error'])}", flush=True)
        if self.files is None:
            return
        self.files.summary(summary)
        minutes, rest = divmod(seconds, 60)
        self.log(f"done in {int(minutes)}m{rest:02.0f}s: best val top-1 error "
                 f"{percent(summary['best_val_top1_error'])} (top-1 accuracy "
                 f"{percent(1 - summary['best_val_top1_error'])}), top-5 error "
                 f"{percent(summary['best_val_top5_error'])}, at epoch {self.best['epoch']}; "
                 f"checkpoints, metrics.csv and plots in {self.run_dir}", flush=True)

    # -- what the user sees first ----------------------------------------------------------

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

    def _cpu_notice(self) -> str:
        """Training on the CPU: said at the start, with the time an epoch should take."""
        rate = cpu_images_per_second(self.config.crop_size, torch.get_num_threads())
        images = self.info.num_train
        epochs = self.config.epochs - self.epoch
        return (f"training on the CPU: expect about {_duration(images / rate)} an epoch "
                f"({images:,} images at ~{rate:.3g} img/s for {self.config.crop_size}-px "
                f"crops, from measurements on 2 cores), {_duration(epochs * images / rate)} for "
                f"{plural(epochs, 'epoch')}; the first progress line gives this machine's own "
                f"figure. A GPU is much faster; on a CPU, smaller images (prepare --size) and "
                f"fewer --epochs cut the time (README: Training on your images)")

    def _print_header(self) -> None:
        config, info = self.config, self.info
        placement = ("one column (the paper's one-GPU net)" if config.one_column else
                     "two columns on " + (" and ".join(map(str, self.devices))
                                          if len(self.devices) > 1 else "one device"))
        threads = (f" ({plural(torch.get_num_threads(), 'thread')})"
                   if self.device.type == "cpu" else "")
        replicas = (f", {self.replicas.world_size} DDP replicas ({self.replicas.backend})"
                    if self.replicas.distributed else "")
        source = "built-in dataset" if self.setup.builtin else "dataset"
        parameters = sum(p.numel() for p in self.model.parameters())
        lines = [
            f"device: {', '.join(map(str, self.devices))}{threads}{replicas}; "
            f"mixed precision: {'bf16' if self.amp else 'off (float32)'}",
            f"kernels: {describe_kernels(self.device)}",
            f"data: {source} {info.root}: {len(info.classes)} classes, {info.num_train} train / "
            f"{info.num_val} val images of {info.image_size} px, crops of {config.crop_size}, "
            f"loader workers: {config.workers}",
            f"model: AlexNet, {placement}, {parameters:,} parameters"
            f"{'' if config.lrn else ', no LRN'}"
            f"{'' if config.overlapping_pool else ', 2x2 pooling'}; init N(0, "
            f"{config.weight_std:g}), {bias_init_note(config.bias_init)}; dropout "
            f"{config.dropout:g}",
            f"recipe: SGD momentum {config.momentum:g}, batch {config.batch_size}, weight decay "
            f"{config.weight_decay:g}, lr {self.lr:g} (x{config.lr_factor:g} after "
            f"{plural(config.patience + 1, 'epoch')} without a better val error), "
            f"{plural(config.epochs, 'epoch')}, "
            f"PCA colour noise {config.pca_sigma:g}, seed {config.seed}",
            f"run dir: {self.run_dir}",
        ]
        tensorboard = self.files.tensorboard if self.files is not None else None
        if tensorboard is not None:
            lines.append(f"tensorboard: {tensorboard.directory} (view with: tensorboard "
                         f"--logdir {self.run_dir})")
        elif self.config.tensorboard == "auto" and not self.setup.tensorboard:
            lines.append("tensorboard: off (pip install tensorboard to log there too)")
        if info.skipped:
            shown = ", ".join(path for path, _ in info.skipped[:5])
            lines.append(f"data: skipped {len(info.skipped)} unreadable images ({shown}"
                         f"{', ...' if len(info.skipped) > 5 else ''}): listed in "
                         f"{self.run_dir / SKIPPED_LOG}")
        if self.setup.resume_state is not None:
            lines.append(f"resumed from {ckpt.describe(self.setup.resume_state)}")
        lines.extend(self.setup.notes)
        self.cpu_estimate_due = self.device.type == "cpu" and self.main
        if self.cpu_estimate_due:
            lines.append(self._cpu_notice())
        for line in lines:
            self.log(line, flush=True)
        self.epoch_clock = time.monotonic()
