"""The training configuration resolved against the checkpoint, the run directory and the
data, into a ``Setup``: everything checked before the first step.

Order (``python -m alexnet_triton.train``'s): ``resolve_config`` (on --resume the
checkpoint's configuration and records), then the devices and the process group, then
``claim_run_dir`` (the lock, before anything is written) and ``resolve_setup`` (the data).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from alexnet_triton.data import DataError, DatasetInfo, builtin_dataset, open_dataset
from alexnet_triton.data.gpu_decode import resolve_reading
from alexnet_triton.data.reading import Reading
from alexnet_triton.errors import CheckpointError, ConfigError, RunDirError
from alexnet_triton.runtime import default_workers, resolve_amp
from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training import tensorboard_log
from alexnet_triton.training.config import (BUILTIN_EPOCHS, MIN_CROP_SIZE, PAPER_CROP_SIZE,
                                            PAPER_EPOCHS, PAPER_IMAGE_SIZE, RESUME_OVERRIDES,
                                            TrainConfig, validate)
from alexnet_triton.training.distributed import Replicas
from alexnet_triton.training.run_dir import (RunDirLock, check_free_space, new_run_dir,
                                             run_checkpoint)


def auto_crop_size(image_size: int) -> int:
    """224 for the paper's 256-px images, else about 7/8 of the side (>= 63)."""
    if image_size == PAPER_IMAGE_SIZE:
        return PAPER_CROP_SIZE
    return max(MIN_CROP_SIZE, image_size - image_size // 8)


@dataclasses.dataclass
class Setup:
    """Everything resolved before the first step: any error so far left nothing behind."""
    config: TrainConfig
    info: DatasetInfo
    devices: list
    amp: bool
    run_dir: Path
    builtin: bool
    tensorboard: bool = False
    resume_state: Optional[dict] = None
    notes: tuple = ()
    reading: Reading = Reading()  # how the loaders read (threads, decoder, GPU decoding)


def resolve_config(config: TrainConfig, given: set) -> tuple[TrainConfig, Optional[dict], tuple]:
    """The run's configuration: the command line's, or on --resume the checkpoint's with the
    flags that may change overriding it. Returns (config, the resumed state or None, notes).

    ``config.run_dir`` comes out as the directory this run will write (None: a new
    runs/<timestamp>/). A resumed run continues in its own directory only from that
    directory's latest.pt: from any other checkpoint (best.pt, a copy) continuing there
    would overwrite the history written after it, so that needs --run-dir.
    """
    if config.resume is None:
        return config, None, ()
    state = ckpt.load(config.resume)
    ckpt.check_resumable(state)
    source = Path(state["path"])
    base = TrainConfig.from_dict(state["config"])
    overrides = {name: getattr(config, name) for name in RESUME_OVERRIDES if name in given}
    notes = []
    ignored = sorted(given - set(RESUME_OVERRIDES) - {"resume", "run_dir"})
    if ignored:
        notes.append("resuming with the run's own configuration; ignored: "
                     + ", ".join("--" + name.replace("_", "-") for name in ignored))
    own_run = source.parent if source.name == ckpt.LATEST else None
    if "run_dir" in given:
        run_dir = Path(config.run_dir)
        if own_run is None and run_dir.resolve() == source.parent.resolve():
            raise ConfigError(f"--resume {source}: continuing in {run_dir} would overwrite "
                              f"its later checkpoints and metrics; choose another --run-dir")
    elif own_run is not None:
        run_dir = own_run
    else:
        raise ConfigError(f"--resume {source}: continuing from {source.name} in "
                          f"{source.parent} would overwrite its later checkpoints and "
                          f"metrics; pass --run-dir NEW to continue in a new run directory")
    if run_dir.resolve() != source.parent.resolve():
        notes.append(f"continuing {source} in the new run directory {run_dir}")
    try:
        config = validate(dataclasses.replace(base, resume=config.resume, run_dir=str(run_dir),
                                              **overrides))
    except TypeError as error:  # a setting of another type: a number stored as a string
        raise CheckpointError(f"{source}: its config record is malformed ({error})") from None
    return config, state, tuple(notes)


def elastic_restart(config: TrainConfig, given: set, environ=None
                    ) -> tuple[TrainConfig, set, tuple]:
    """Under ``torchrun --max-restarts N``: a restarted group (TORCHELASTIC_RESTART_COUNT
    > 0) continues from its run directory's latest.pt, as ``--resume RUN_DIR`` with the
    same flags would. Returns (config, given, notes).

    torchrun starts a restarted group with the first one's command line, so the run
    directory must be named on it (a new runs/<timestamp>/ each start would find nothing
    to continue): without --run-dir or --resume a group that may be restarted is refused
    at its first start (ConfigError). A restart before the first checkpoint starts over.
    """
    environ = os.environ if environ is None else environ
    if int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) <= 0:
        return config, given, ()
    if config.run_dir is None:
        if config.resume is None:
            raise ConfigError("torchrun --max-restarts: pass --run-dir DIR, where a restarted "
                              "group finds the checkpoint to continue from")
        return config, given, ()  # --resume RUN: a restart reads RUN's latest.pt again
    restart = int(environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
    latest = Path(config.run_dir) / ckpt.LATEST
    if restart == 0 or not latest.exists():
        return config, given, ()
    # The command line's other flags are the run's own: not "ignored", as --resume says.
    given = (given & set(RESUME_OVERRIDES)) | {"resume", "run_dir"}
    return (dataclasses.replace(config, resume=str(config.run_dir)), given,
            (f"torchrun restart {restart}: continuing from {latest}",))


def claim_run_dir(config: TrainConfig, state: Optional[dict]) -> RunDirLock:
    """Lock this run's directory (made if needed) before anything else is done.

    Raises RunDirError when it cannot be written, is another run's, or holds a run that
    this one does not continue. A directory without a checkpoint (a run that died before
    its first one) is free to start again.
    """
    run_dir = Path(config.run_dir) if config.run_dir is not None else new_run_dir()
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--run-dir {run_dir} exists and is not a folder")
    lock = RunDirLock(run_dir).acquire()
    continued = state is not None and Path(state["path"]).parent.resolve() == run_dir.resolve()
    if not continued and run_checkpoint(run_dir) is not None:
        lock.release()
        raise RunDirError(f"--run-dir {run_dir} already holds a run: continue it with "
                          f"--resume {run_dir}, or choose another --run-dir")
    if state is not None:  # at least the checkpoint's size must fit
        try:
            check_free_space(run_dir, Path(state["path"]).stat().st_size, "a checkpoint")
        except RunDirError:
            lock.release(remove_if_created=True)
            raise
    return lock


def resolve_setup(config: TrainConfig, state: Optional[dict], devices: list,
                  replicas: Replicas, run_dir: Path, notes: tuple = ()) -> Setup:
    """Check and resolve the data against the configuration; raises ConfigError, DataError
    or CheckpointError. Writes nothing except the built-in dataset's cache (or a raw
    folder's, DATA's business).
    """
    amp = resolve_amp(config.amp, devices[0])
    try:
        tensorboard = tensorboard_log.wanted(config.tensorboard)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    builtin = config.data is None
    info = builtin_dataset() if builtin else open_dataset(config.data)
    if state is not None:
        if tuple(info.classes) != tuple(state["classes"]):
            raise DataError(f"{info.root} now has classes {list(info.classes)[:4]}... but the "
                            f"checkpoint was trained on {list(state['classes'])[:4]}...")
        if info.image_size != state["data"]["image_size"]:
            raise DataError(f"{info.root} now stores {info.image_size}-px images; the "
                            f"checkpoint was trained on {state['data']['image_size']}-px images")
    if info.image_size < MIN_CROP_SIZE:
        raise DataError(f"{info.root} stores {info.image_size}-px images; AlexNet needs at "
                        f"least {MIN_CROP_SIZE}")
    crop_size = config.crop_size if config.crop_size is not None else auto_crop_size(
        info.image_size)
    if crop_size > info.image_size:
        raise ConfigError(f"--crop-size {crop_size} is larger than the dataset's "
                          f"{info.image_size}-px images")
    if config.batch_size % replicas.world_size:
        raise ConfigError(f"--batch-size {config.batch_size} does not split evenly over "
                          f"{replicas.world_size} replicas")
    per_replica = config.batch_size // replicas.world_size
    if info.num_train // replicas.world_size < per_replica:
        raise DataError(f"{info.root} has {info.num_train} training images, fewer than one "
                        f"batch of {config.batch_size}")
    if info.num_val < 1:
        raise DataError(f"{info.root} has no validation images")
    config = dataclasses.replace(
        config,
        epochs=config.epochs if config.epochs is not None else (
            BUILTIN_EPOCHS if builtin else PAPER_EPOCHS),
        crop_size=crop_size,
        workers=config.workers if config.workers is not None else default_workers(devices[0]),
        run_dir=str(run_dir))
    reading = resolve_reading(config.loader, config.cpu_decoder, config.decode, devices[0],
                              info.format)
    return Setup(config, info, devices, amp, Path(run_dir), builtin, tensorboard, state,
                 tuple(notes), reading)
