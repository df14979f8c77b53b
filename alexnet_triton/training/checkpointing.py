"""A training run's checkpoints: its state as the format records it, written to the run
directory (latest.pt, best.pt, best_weights.pt, epoch-NNN.pt) after a check for room, and
put back into a resumed run.

The format, and the reading and atomic writing of one file, are ``checkpoint``'s (what
evaluate and predict read too); this is the trainer's side of it. ``trainer`` below is the
``Trainer`` (not imported: it imports this): its model, optimizer, scheduler and counters.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import torch

from alexnet_triton.data import DatasetInfo
from alexnet_triton.errors import RunDirError
from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training.config import TrainConfig
from alexnet_triton.training.run_dir import check_free_space


class CheckpointWriteError(RuntimeError):
    """latest.pt could not be written (no room, an I/O error); the message is one line."""


def architecture(config: TrainConfig, num_classes: int) -> dict:
    """The checkpoint's arch record: what network ``config`` builds."""
    return {"name": "alexnet-one-column" if config.one_column else "alexnet",
            "num_classes": num_classes, "dropout": config.dropout, "lrn": config.lrn,
            "overlapping_pool": config.overlapping_pool, "bias_init": config.bias_init,
            "weight_std": config.weight_std}


def state(trainer, rng: list) -> dict:
    """The run's checkpoint; ``rng`` every replica's random streams (rank order)."""
    info = trainer.info
    data = {"image_size": info.image_size, "crop_size": trainer.config.crop_size,
            "mean": info.mean.float().cpu(), "eigval": info.eigval.float().cpu(),
            "eigvec": info.eigvec.float().cpu()}
    return {
        "format": ckpt.FORMAT, "version": ckpt.VERSION, "arch": trainer.arch,
        "classes": list(info.classes), "data": data,
        "model": ckpt.model_state(trainer.model),
        "config": trainer.config.to_dict(),
        "optimizer": ckpt.optimizer_state(trainer.model, trainer.optimizer),
        "scheduler": trainer.scheduler.state_dict(),
        "epoch": trainer.epoch, "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step, "epoch_loss_sum": trainer.epoch_loss_sum,
        "epoch_loss_steps": trainer.epoch_loss_steps, "best": dict(trainer.best),
        "history": [dict(row) for row in trainer.history],
        "world_size": trainer.replicas.world_size, "rng": rng,
    }


def restore(trainer, state: dict) -> None:
    """Put a resumed run's ``state`` (checkpoint.load's) back into ``trainer``; a checkpoint
    of another network raises CheckpointError."""
    saved = state["arch"]
    differ = sorted(k for k in set(saved) | set(trainer.arch)
                    if saved.get(k) != trainer.arch.get(k))
    if differ:  # edited by hand, or another program's
        raise ckpt.CheckpointError(
            f"{state['path']}: its arch record is not the network its "
            f"configuration builds ({', '.join(differ)} differ)")
    ckpt.load_model_state(trainer.model, state)
    ckpt.check_optimizer(state)
    ckpt.load_optimizer_state(trainer.model, trainer.optimizer, state["optimizer"])
    _check_scheduler(state["scheduler"], trainer.scheduler.state_dict(), state["path"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.epoch, trainer.step_in_epoch = state["epoch"], state["step_in_epoch"]
    trainer.global_step = state["global_step"]
    trainer.epoch_loss_sum = state["epoch_loss_sum"]
    trainer.epoch_loss_steps = state["epoch_loss_steps"]
    trainer.best = dict(state["best"])
    trainer.history = [dict(row) for row in state["history"]]
    # With another world size the run goes on from the same step: step k of an epoch
    # trains on the same images whatever the world size (loaders.shard). The random
    # streams are per replica, so there each replica keeps its own new ones (console's
    # header says the run is then not bit-identical to an uninterrupted one).
    if state.get("world_size", 1) == trainer.replicas.world_size:
        ckpt.restore_rng(state["rng"][trainer.replicas.rank], trainer.generator,
                         trainer.cuda_devices)


def _check_scheduler(saved: dict, own: dict, path: str) -> None:
    """The scheduler record: load_state_dict takes any dict into the scheduler's attributes,
    so a wrong one fails only at the epoch's end; its fields must be the scheduler's own,
    of their types."""
    for key, value in own.items():
        if key not in saved:
            raise ckpt.CheckpointError(f"{path}: its scheduler record lacks {key!r}")
        numeric = (int, float)
        same = (isinstance(saved[key], numeric) and isinstance(value, numeric)
                and isinstance(saved[key], bool) == isinstance(value, bool)) \
            or type(saved[key]) is type(value) or value is None or saved[key] is None
        if not same:
            raise ckpt.CheckpointError(f"{path}: its scheduler record's {key} is a "
                                       f"{type(saved[key]).__name__}, not a "
                                       f"{type(value).__name__}")


def save(trainer, rng: list, best: bool) -> Path:
    """Rank 0 writes the run's latest.pt (and best.pt); every replica calls it and returns
    once it is written. Raises CheckpointWriteError when it could not be (the earlier one
    is kept)."""
    replicas, error = trainer.replicas, None
    if replicas.is_main:
        try:
            error = write(state(trainer, rng), trainer.run_dir, best,
                          trainer.config.keep_checkpoints)
        finally:  # the other replicas wait for this answer: it must always come
            error = replicas.broadcast(error)
    else:
        error = replicas.broadcast(None)
    if error is not None:
        raise CheckpointWriteError(error)
    return trainer.run_dir / ckpt.LATEST


def write(state: dict, run_dir: Path, best: bool, keep: int) -> Optional[str]:
    """Write ``state`` as run_dir's latest.pt (and best.pt and best_weights.pt), keeping the
    last ``keep`` epoch ends' as well; the reason as one line if it could not be."""
    size = _bytes(state)
    needed = size
    try:
        weights = _bytes(state["model"])  # best_weights.pt
        needed = size + (weights if best else 0)
        check_free_space(run_dir, needed, f"the checkpoint of {_where(state)}")
        path = ckpt.save(state, run_dir / ckpt.LATEST)
        if best:
            ckpt.link_atomically(path, run_dir / ckpt.BEST)
            # The weights alone, a plain state dict: what torchvision-style code loads
            # (model.load_state_dict(torch.load(...))).
            ckpt.save(state["model"], run_dir / ckpt.BEST_WEIGHTS)
        if keep and state["step_in_epoch"] == 0:
            ckpt.keep_epoch(path, state["epoch"], keep)
    except RunDirError as error:
        return str(error)
    except ckpt.DiskFull:
        free = shutil.disk_usage(run_dir).free
        return (f"writing {run_dir / ckpt.LATEST} failed: disk full ({free / 2**20:.0f} MiB "
                f"free, the checkpoint of {_where(state)} needs {needed / 2**20:.0f} MiB)")
    except (OSError, RuntimeError) as error:  # a quota, EIO
        text = str(error).strip().splitlines()
        return (f"writing {run_dir / ckpt.LATEST} failed: "
                f"{text[0] if text else type(error).__name__}")
    return None


def _where(state: dict) -> str:
    """Where a checkpoint stands: "epoch 2, step 5", or "the end of epoch 2" (an epoch's
    end is saved with epoch counting the finished ones and step 0: not epoch 3)."""
    if state["step_in_epoch"] == 0 and state["epoch"] > 0:
        return f"the end of epoch {state['epoch']}"
    return f"epoch {state['epoch'] + 1}, step {state['step_in_epoch']}"


def checkpoint_bytes(model: torch.nn.Module, info: DatasetInfo) -> int:
    """About the size of one checkpoint: the weights and as much momentum."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return 2 * weights + info.mean.numel() * 4


def _bytes(value) -> int:
    """The bytes of every tensor in nested dicts and lists (a checkpoint's state)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in _tensors(value))


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
