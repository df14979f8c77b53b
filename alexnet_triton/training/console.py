"""What a training run prints: the header, the CPU notice, the progress and epoch lines, the
ten-crop and finish lines, and the messages of a run that stops early.

Rank 0 prints; on the other replicas every line is dropped. The words are all here, the
figures they report are the trainer's. A new figure on the progress line is a field of
``Progress`` and its words in ``Progress.fields`` (the bar's postfix shows the same fields);
one on the epoch line is an entry of ``epoch_line``'s fields, from the metrics row.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import torch

from alexnet_triton.data.decoders import cpu_decoder
from alexnet_triton.data.store import read_info
from alexnet_triton.progress import plural, progress_bar
from alexnet_triton.runtime import describe_kernels
from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training.config import (BIAS_INIT_REASON, DEFAULT_BIAS_INIT,
                                            PAPER_BIAS_INIT, TrainConfig)
from alexnet_triton.training.distributed import Replicas
from alexnet_triton.training.metrics import percent
from alexnet_triton.training.run_dir import SKIPPED_LOG
from alexnet_triton.training.setup import Setup

PROG = "python -m alexnet_triton.train"
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


def cpu_images_per_second(crop_size: int, threads: int) -> float:
    """The expected training speed on the CPU (see CPU_RATE_POINTS): a rough guide only."""
    points = CPU_RATE_POINTS
    segment = next((i for i in range(len(points) - 2) if crop_size < points[i + 1][0]),
                   len(points) - 2)
    (small, fast), (large, slow) = points[segment], points[segment + 1]
    exponent = math.log(fast / slow) / math.log(large / small)
    return fast * (small / crop_size) ** exponent * max(threads, 1) / CPU_RATE_THREADS


def duration(seconds: float) -> str:
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


def header_lines(setup: Setup, replicas: Replicas, parameters: int, lr: float,
                 tensorboard) -> list[str]:
    """The run's header: device, kernels, data, model, recipe, run directory and what else
    the user should know before the first step."""
    config, info, devices = setup.config, setup.info, setup.devices
    placement = ("one column (the paper's one-GPU net)" if config.one_column else
                 "two columns on " + (" and ".join(map(str, devices))
                                      if len(devices) > 1 else "one device"))
    threads = (f" ({plural(torch.get_num_threads(), 'thread')})"
               if devices[0].type == "cpu" else "")
    ddp = (f", {replicas.world_size} DDP replicas ({replicas.backend})"
           if replicas.distributed else "")
    source = "built-in dataset" if setup.builtin else "dataset"
    lines = [
        f"device: {', '.join(map(str, devices))}{threads}{ddp}; "
        f"mixed precision: {'bf16' if setup.amp else 'off (float32)'}",
        f"kernels: {describe_kernels(devices[0])}",
        f"data: {source} {info.root}: {len(info.classes)} classes, {info.num_train} train / "
        f"{info.num_val} val images of {info.image_size} px, crops of {config.crop_size}; "
        f"{setup.reading.describe(config.workers, info.format)}",
        f"model: AlexNet, {placement}, {parameters:,} parameters"
        f"{'' if config.lrn else ', no LRN'}"
        f"{'' if config.overlapping_pool else ', 2x2 pooling'}; init N(0, "
        f"{config.weight_std:g}), {bias_init_note(config.bias_init)}; dropout "
        f"{config.dropout:g}",
        f"recipe: SGD momentum {config.momentum:g}, batch {config.batch_size}, weight decay "
        f"{config.weight_decay:g}, lr {lr:g} (x{config.lr_factor:g} after "
        f"{plural(config.patience + 1, 'epoch')} without a better val error), "
        f"{plural(config.epochs, 'epoch')}, "
        f"PCA colour noise {config.pca_sigma:g}, seed {config.seed}",
        f"run dir: {setup.run_dir}",
    ]
    if tensorboard is not None:
        lines.append(f"tensorboard: {tensorboard.directory} (view with: tensorboard "
                     f"--logdir {setup.run_dir})")
    elif config.tensorboard == "auto" and not setup.tensorboard:
        lines.append("tensorboard: off (pip install tensorboard to log there too)")
    if info.skipped:
        shown = ", ".join(path for path, _ in info.skipped[:5])
        lines.append(f"data: skipped {len(info.skipped)} unreadable images ({shown}"
                     f"{', ...' if len(info.skipped) > 5 else ''}): listed in "
                     f"{setup.run_dir / SKIPPED_LOG}")
    if setup.resume_state is not None:
        lines.append(f"resumed from {ckpt.describe(setup.resume_state)}")
        saved = setup.resume_state.get("world_size", 1)
        if saved != replicas.world_size:
            lines.append(
                f"note: the checkpoint was written by {plural(saved, 'replica')}, this run "
                f"has {replicas.world_size}: every step trains on the images it would have "
                f"(the batch order is a function of seed, epoch and step), but the crops, "
                f"flips, colour noise and dropout are drawn per replica, from new random "
                f"streams: not bit-identical to an uninterrupted run (resume with "
                f"{plural(saved, 'replica')} for that)")
    lines.extend(setup.notes)
    return lines


# A run whose steps wait for their batches this share of the time (over at least this many
# steps of an epoch) is told, once, that it is input-bound and what would help.
INPUT_BOUND_SHARE = 0.2
INPUT_BOUND_MIN_STEPS = 20


def input_advice(setup: Setup) -> list[str]:
    """The switches that feed the GPU faster from where this run stands, best first."""
    config, info, reading = setup.config, setup.info, setup.reading
    cores = os.cpu_count() or 1
    device = setup.devices[0]
    advice = []
    if info.format == "folder":
        advice.append("prepare the folder once (python -m alexnet_triton.prepare SRC DST, then "
                      "--data DST): a store reads several times faster than image files")
    if info.format == "jpeg" and not reading.gpu_decode and device.type == "cuda":
        advice.append("--decode gpu (nvJPEG, needs torchvision: pip install -e "
                      "'.[gpu-decode]'): the GPU decodes, the host only copies bytes")
    if config.workers < cores:
        advice.append(f"-j {min(cores, max(2 * config.workers, 1))} (more loader workers: "
                      f"{config.workers} of {cores} cores read now)")
    if info.format in ("jpeg", "folder") and not reading.gpu_decode:
        if cpu_decoder(reading.cpu_decoder).name == "pillow":
            advice.append("pip install simplejpeg (libjpeg-turbo straight into the batch: "
                          "~2x Pillow's images/s)")
    if info.format == "jpeg":
        store = read_info(info.root)
        if (store.get("jpeg_quality"), store.get("jpeg_subsampling")) != (90, "4:2:0"):
            advice.append("prepare the store again with the default --quality 90 "
                          "--subsampling 4:2:0 (decodes ~1.5x faster than q95 4:4:4)")
        advice.append("prepare --format raw when the raw store fits in this machine's memory "
                      "(no decoding: README, Large datasets)")
    return advice


def cpu_notice(config: TrainConfig, images: int, epochs: int) -> str:
    """Training on the CPU: said at the start, with the time ``epochs`` epochs of ``images``
    training images should take."""
    rate = cpu_images_per_second(config.crop_size, torch.get_num_threads())
    return (f"training on the CPU: expect about {duration(images / rate)} an epoch "
            f"({images:,} images at ~{rate:.3g} img/s for {config.crop_size}-px "
            f"crops, from measurements on 2 cores), {duration(epochs * images / rate)} for "
            f"{plural(epochs, 'epoch')}; the first progress line gives this machine's own "
            f"figure. A GPU is much faster; on a CPU, smaller images (prepare --size) and "
            f"fewer --epochs cut the time (README: Training on your images)")


@dataclasses.dataclass(frozen=True)
class Progress:
    """Where an epoch stands at a host read: its progress line and the bar's postfix."""
    epoch: int  # 1-based
    step: int
    steps: int
    loss: float  # the epoch's mean batch loss so far
    rate: float  # images/s, smoothed
    lr: float
    data_wait: float  # the share of the time since the last read spent waiting for a batch

    def fields(self) -> str:
        return ", ".join([f"loss {self.loss:.4f}", f"{self.rate:.0f} img/s", f"lr {self.lr:g}",
                          f"data wait {self.data_wait:.0%}"])

    def line(self) -> str:
        return f"  epoch {self.epoch} step {self.step}/{self.steps}: {self.fields()}"


def epoch_line(row: dict, epochs: int, best: bool, note: str = "") -> str:
    """An epoch's line from its metrics row (``lr`` the rate it trained at)."""
    fields = [f"train loss {row['train_loss']:.4f}", f"val loss {row['val_loss']:.4f}",
              f"top-1 error {percent(row['val_top1_error'])}",
              f"top-5 error {percent(row['val_top5_error'])}", f"lr {row['lr']:g}",
              f"{row['epoch_seconds']:.0f}s", f"data wait {row['data_wait']:.0%}"]
    return (f"epoch {row['epoch']:3d}/{epochs}  {'  '.join(fields)}"
            f"{'  (best)' if best else ''}{note}")


def usable_checkpoints(run_dir: Path, best: dict) -> str:
    """After a divergence: which of the run's checkpoints to use."""
    latest, best_path = run_dir / ckpt.LATEST, run_dir / ckpt.BEST
    if not latest.exists():
        return "No checkpoint had been written yet."
    text = f"{latest} resumes from before it"
    if best_path.exists() and best["epoch"]:
        text += (f"; {best_path} holds the best validated weights (epoch {best['epoch']}, "
                 f"top-1 error {percent(best['val_top1_error'])}): use it")
    return text + "."


def rank_prefix(replicas: Replicas) -> str:
    """'rank R: ' under torchrun, where each rank's own error is its own line; else ''."""
    return f"rank {replicas.rank}: " if replicas.distributed else ""


class Console:
    """One replica's terminal: rank 0 prints, the others say nothing."""

    def __init__(self, setup: Setup, replicas: Replicas) -> None:
        self.setup = setup
        self.config = setup.config
        self.replicas = replicas
        self.run_dir = setup.run_dir
        self.main = replicas.is_main
        self.log = print if self.main else (lambda *args, **kwargs: None)
        # On the CPU the first progress line says how long an epoch takes here.
        self.cpu_estimate_due = False
        self.last_log = self.last_epoch_start = 0.0
        self.input_bound_said = False

    # -- the start -----------------------------------------------------------------------

    def already_finished(self, epoch: int) -> None:
        self.log(f"{PROG}: {self.run_dir} already finished its {plural(epoch, 'epoch')} "
                 f"(pass --epochs N with N > {epoch} to train longer)")

    def header(self, parameters: int, lr: float, epoch: int, tensorboard) -> None:
        """The run's header, and on the CPU the time it should take (from epoch ``epoch``
        on). ``tensorboard``: RunFiles' log, or None."""
        lines = header_lines(self.setup, self.replicas, parameters, lr, tensorboard)
        self.cpu_estimate_due = self.setup.devices[0].type == "cpu" and self.main
        if self.cpu_estimate_due:
            lines.append(cpu_notice(self.config, self.setup.info.num_train,
                                    self.config.epochs - epoch))
        for line in lines:
            self.log(line, flush=True)

    # -- an epoch ------------------------------------------------------------------------

    def bar(self, steps: int, epoch: int, initial: int):
        """Epoch ``epoch``'s (0-based) progress bar on a terminal, else None."""
        return progress_bar(steps, f"epoch {epoch + 1}/{self.config.epochs}", "batch",
                            initial=initial, enabled=self.main)

    def start_epoch(self, now: float) -> None:
        self.last_log = self.last_epoch_start = now

    def progress(self, progress: Progress, bar, print_due: bool, now: float) -> None:
        """After a host read: the bar's postfix, and the progress line when it is due
        (--print-freq's step, the first read on the CPU, or every LOG_SECONDS without a bar
        and --print-freq)."""
        line = progress.line()
        if self.main and self.cpu_estimate_due:
            self.cpu_estimate_due = False
            line += (f"; measured here: about "
                     f"{duration(progress.steps * self.config.batch_size / progress.rate)}"
                     f" an epoch")
            print_due = True
        if bar is not None:
            bar.set_postfix_str(progress.fields(), refresh=True)
            if print_due and self.main:
                bar.write(line, file=sys.stdout)
        elif self.main and (print_due or (self.config.print_freq is None
                                          and now - self.last_log >= LOG_SECONDS)):
            self.last_log = now
            self.log(line, flush=True)

    def input_bound(self, waited: float, steps: int, now: float) -> None:
        """Said once a run, when this epoch's first ``steps`` steps (at least
        INPUT_BOUND_MIN_STEPS: the first batches wait for the loader to start) waited for
        their batches ``waited`` seconds, INPUT_BOUND_SHARE of the time or more."""
        seconds = now - self.last_epoch_start
        if self.input_bound_said or steps < INPUT_BOUND_MIN_STEPS or seconds <= 0:
            return
        share = waited / seconds
        if share < INPUT_BOUND_SHARE:
            return
        self.input_bound_said = True
        advice = input_advice(self.setup)
        help_ = f" What would help: {'; '.join(advice)}" if advice else ""
        self.log(f"{PROG}: note: this run is input-bound: over {plural(steps, 'step')} "
                 f"{share:.0%} of the time went to waiting for the next batch, not to "
                 f"training.{help_}", flush=True)

    def skipped(self, split: str, records: list, log: Path) -> None:
        self.log(f"data: {plural(len(records), 'damaged image')} of {split} left out "
                 f"(image {records[0][0]}: {records[0][1]}); listed in {log}", flush=True)

    def epoch(self, row: dict, best: bool, lr: float) -> None:
        """An epoch's line; ``lr`` the rate the next epoch trains at."""
        note = ""
        if lr < row["lr"]:
            note = (f"  -> lr {lr:g} (no improvement for "
                    f"{plural(self.config.patience + 1, 'epoch')})")
        self.log(epoch_line(row, self.config.epochs, best, note), flush=True)

    # -- the end -------------------------------------------------------------------------

    def ten_crop(self, epoch: int, result: dict) -> None:
        self.log(f"ten crops, best checkpoint (epoch {epoch}): top-1 error "
                 f"{percent(result['val_top1_error'])}  top-5 error "
                 f"{percent(result['val_top5_error'])}", flush=True)

    def finish(self, seconds: float, summary: dict) -> None:
        minutes, rest = divmod(seconds, 60)
        self.log(f"done in {int(minutes)}m{rest:02.0f}s: best val top-1 error "
                 f"{percent(summary['best_val_top1_error'])} (top-1 accuracy "
                 f"{percent(1 - summary['best_val_top1_error'])}), top-5 error "
                 f"{percent(summary['best_val_top5_error'])}, at epoch "
                 f"{summary['best_epoch']}; checkpoints, metrics.csv and plots in "
                 f"{self.run_dir}", flush=True)

    def signal_received(self, signum: int) -> None:
        self.log(f"\n{signal.Signals(signum).name}: finishing at most "
                 f"{plural(self.config.sync_steps, 'step')} and writing a checkpoint (press "
                 f"Ctrl-C again to stop at once)",
                 file=sys.stderr, flush=True)

    def stopped(self, signum: int, epoch: int, step: Optional[int]) -> None:
        """Stopped by ``signum``: mid-epoch at (``epoch``, ``step``), 1-based, or after
        epoch ``epoch`` when ``step`` is None."""
        name = signal.Signals(signum).name
        if step is None:
            where = f"after epoch {epoch}"
        else:
            where = f"at epoch {epoch}, step {step}"
        self.log(f"stopped by {name} {where}: checkpoint {self.run_dir / ckpt.LATEST}; "
                 f"continue with --resume {self.run_dir}", flush=True)

    def stopped_at_once(self, best: dict) -> None:
        self.log(f"stopped at once by a second Ctrl-C, without a checkpoint of the last "
                 f"steps. {usable_checkpoints(self.run_dir, best)}", flush=True)

    def diverged(self, error: Exception, best: dict) -> None:
        self.log(f"{PROG}: error: {error}; stopping, nothing after the last check is "
                 f"saved. {usable_checkpoints(self.run_dir, best)} Try a lower --lr.",
                 file=sys.stderr, flush=True)

    def failed(self, error: Exception, own: bool = False) -> None:
        """A checkpoint that could not be written (every replica is told: rank 0 says it),
        or, ``own``, this replica's error (data it could not read): said by each replica
        that meets it, under torchrun naming its rank."""
        latest = self.run_dir / ckpt.LATEST
        kept = (f"the previous {latest} is kept" if latest.exists() else
                "no checkpoint had been written yet")
        line = f"{PROG}: error: {rank_prefix(self.replicas)}{error}; stopping ({kept})"
        if own:
            print(line, file=sys.stderr, flush=True)
        else:
            self.log(line, file=sys.stderr, flush=True)
