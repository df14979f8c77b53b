"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values only (no pickled objects), so
loading one can never run code:

    format, version         "alexnet_triton-checkpoint", 1
    arch                    what network: {"name", "num_classes", "dropout", "lrn",
                            "overlapping_pool", "bias_init", "weight_std"}
    classes                 the class names, index order
    data                    {"image_size", "crop_size", "mean" [3, S, S] float32, "eigval",
                            "eigvec"}: what evaluate/predict need to feed the network
    model                   the state dict, whole tensors on the CPU (any placement loads it)
    config                  the resolved TrainConfig as a dict
    optimizer               the optimizer's state by whole-tensor name, as the model's
                            (``optimizer_state``): any placement loads it
    scheduler               its state dict
    epoch, step_in_epoch    where training resumes: the next batch is batch step_in_epoch
                            of epoch `epoch` (0-based; step 0 of the next epoch at an epoch end)
    global_step, epoch_loss_sum, epoch_loss_steps, best, history
    rng                     one dict per rank: torch CPU and CUDA states, the augmentation
                            generator, Python's random and NumPy's (all as tensors)

Writes go to a temporary file in the same folder, are flushed to disk, then renamed over
the target (os.replace), so a crash at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import errno
import io
import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from alexnet_triton.data import Augmenter, DatasetInfo
from alexnet_triton.errors import CheckpointError
from alexnet_triton.models.build import build_model
from alexnet_triton.models.columns import COLUMNS, whole_name

FORMAT = "alexnet_triton-checkpoint"
VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
# best.pt's weights alone: the model's state dict as a plain file (no records around it).
BEST_WEIGHTS = "best_weights.pt"
# --keep-checkpoints N: the checkpoints of the last N epoch ends, epoch-001.pt, ...
EPOCH_CHECKPOINT = "epoch-{:03d}.pt"
PathLike = Union[str, os.PathLike]
ARCH_NAMES = ("alexnet", "alexnet-one-column")
ARCH_FIELDS = ("name", "num_classes", "dropout", "lrn", "overlapping_pool", "bias_init",
               "weight_std")
DATA_FIELDS = ("image_size", "crop_size", "mean", "eigval", "eigvec")
RESUME_RECORDS = ("config", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step",
                  "epoch_loss_sum", "epoch_loss_steps", "best", "history", "rng")
_BLOCKED_GLOBAL = re.compile(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)")
# A history row (metrics.csv's): the numbers every row has; data_wait came later (rows of
# older checkpoints lack it).
HISTORY_FIELDS = ("train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr",
                  "epoch_seconds", "images_per_second")
HISTORY_OPTIONAL = ("data_wait",)
# Python's random.getstate(): version 3, 624 words and the position.
PYTHON_RNG_WORDS = 625
NUMPY_RNG_WORDS = 624


# ---------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFull(OSError):
    """A write that failed for want of room (ENOSPC, EDQUOT), however torch reported it."""


class _Recording(io.RawIOBase):
    """A file that remembers the OSError its last write raised: torch.save reports a failed
    write as "[enforce fail at inline_container.cc:...] unexpected pos ...", without the
    errno that says the disk was full."""

    def __init__(self, file) -> None:
        super().__init__()
        self.file = file
        self.error: Optional[OSError] = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as error:
            self.error = error
            raise


def _is_disk_full(error: BaseException, recorded: Optional[OSError]) -> bool:
    """Whether ``error`` (or the OSError under it) is a full disk or quota."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return recorded is not None and recorded.errno in (errno.ENOSPC, errno.EDQUOT)


def save(state: dict, path: PathLike) -> Path:
    """torch.save ``state`` to ``path`` atomically: temporary file, fsync, rename. A write
    that fails for want of room raises DiskFull, whatever torch made of it."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    recording = None
    try:
        try:
            with open(temporary, "wb") as file:
                recording = _Recording(file)
                torch.save(state, recording)
                recording.flush()
                os.fsync(file.fileno())
        except (OSError, RuntimeError) as error:  # closing the file flushes too
            if _is_disk_full(error, recording.error if recording is not None else None):
                raise DiskFull(errno.ENOSPC, "disk full") from None
            raise
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_dir(path.parent)
    return path


def link_atomically(source: PathLike, target: PathLike) -> None:
    """Make ``target`` the same file as ``source`` (a hard link, else a copy), atomically.

    best.pt is latest.pt at the epoch it was written; since every save replaces latest.pt
    with a new file, the link keeps the old contents.
    """
    source, target = Path(source), Path(target)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_dir(target.parent)


def keep_epoch(latest: PathLike, epoch: int, keep: int) -> Path:
    """latest.pt as written at the end of ``epoch`` kept as epoch-NNN.pt (a hard link:
    no copy until latest.pt is replaced); only the last ``keep`` epochs' stay."""
    latest = Path(latest)
    target = latest.with_name(EPOCH_CHECKPOINT.format(epoch))
    link_atomically(latest, target)
    kept = sorted(latest.parent.glob("epoch-[0-9][0-9][0-9]*.pt"),
                  key=lambda path: int(re.sub(r"\D", "", path.stem) or 0))
    for old in kept[:-keep] if keep else kept:
        old.unlink(missing_ok=True)
    return target


def resolve(path: PathLike, names: Sequence[str] = (LATEST,)) -> Path:
    """A checkpoint file, or the first of ``names`` inside a run directory."""
    path = Path(path)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path} holds no checkpoint ({' or '.join(names)})")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    return path


def load(path: PathLike, names: Sequence[str] = (LATEST,), mmap: bool = False) -> dict:
    """Read a checkpoint (a file or a run directory) with weights_only=True, onto the CPU.

    Anything that is not an alexnet_triton checkpoint, including a file that would need to
    unpickle an object, raises CheckpointError. ``mmap`` maps the file instead of reading
    it: what is never touched (the optimizer's momentum, for evaluate and predict) costs no
    memory.
    """
    path = resolve(path, names)
    # torch's warnings are held back until the file has proved a checkpoint: for a file
    # that is none (another program's pickle) torch warns in two lines about the pickle
    # protocol before it fails, and the failure is what the user is told, in one line.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = _torch_load(path, mmap)
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not an alexnet_triton checkpoint (no '{FORMAT}' "
                                  f"record; a bare state dict or another program's file?)")
        if state.get("version") != VERSION:
            raise CheckpointError(f"{path} is checkpoint version {state.get('version')}, "
                                  f"this program reads version {VERSION}")
        check_records(state, path)
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
    state["path"] = str(path)
    return state


def _torch_load(path: Path, mmap: bool):
    """torch.load onto the CPU, weights only; anything unreadable raises CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        # torch words it "Unsupported global: GLOBAL mod.name was not an allowed global"
        # or (2.13) "unsupported GLOBAL mod.name whose module mod is blocked".
        globals_ = _BLOCKED_GLOBAL.findall(str(error))
        if not globals_:
            raise CheckpointError(f"{path} is not a readable checkpoint (it does not unpickle "
                                  f"as tensors and plain values)") from None
        raise CheckpointError(f"{path} was refused by torch.load(weights_only=True): it holds "
                              f"a pickled object ({globals_[0]}); a checkpoint may hold only "
                              f"tensors and plain values") from None
    # Junk bytes fail inside the unpickler as anything: KeyError 101 for "hello world".
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, (KeyError, IndexError, TypeError, AttributeError)):
            first = f"{type(error).__name__}: {first}"
        raise CheckpointError(f"{path} is not a readable checkpoint: {first}") from None


def check_records(state: dict, path: PathLike) -> None:
    """Raise CheckpointError (one line) unless the records that evaluate, predict and a
    resume read are all there and agree with each other."""
    for key in ("arch", "classes", "data", "model"):
        if not isinstance(state.get(key), (dict, list)):
            raise CheckpointError(f"{path} lacks its '{key}' record")
    arch, data, classes, model = state["arch"], state["data"], state["classes"], state["model"]
    for name, record, fields in (("arch", arch, ARCH_FIELDS), ("data", data, DATA_FIELDS)):
        missing = [field for field in fields if field not in record]
        if missing:
            raise CheckpointError(f"{path}: its {name} record lacks "
                                  f"{', '.join(repr(field) for field in missing)}")
    if arch["name"] not in ARCH_NAMES:
        raise CheckpointError(f"{path}: unknown architecture {arch['name']!r} (this program "
                              f"builds {' and '.join(ARCH_NAMES)})")
    outputs = arch["num_classes"]
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        raise CheckpointError(f"{path}: its class list is not a list of names")
    if len(classes) != outputs:
        raise CheckpointError(f"{path} holds {len(classes)} class names for a network of "
                              f"{outputs} outputs")
    if not isinstance(outputs, int) or isinstance(outputs, bool) or outputs < 1:
        raise CheckpointError(f"{path}: its arch record's num_classes {outputs!r} is not a "
                              f"positive whole number")
    _check_weights(model, path)
    fc8 = model.get("fc8.weight")
    if isinstance(fc8, torch.Tensor) and fc8.shape[0] != outputs:
        raise CheckpointError(f"{path}: its fc8 has {fc8.shape[0]} outputs, its arch record "
                              f"says {outputs}")
    size = data["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise CheckpointError(f"{path}: its data record's image size {size!r} is not a "
                              f"positive whole number")
    for field, shape in (("mean", (3, size, size)), ("eigval", (3,)), ("eigvec", (3, 3))):
        value = data[field]
        if (not isinstance(value, torch.Tensor) or tuple(value.shape) != shape
                or not value.is_floating_point()):
            got = (f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor)
                   else type(value).__name__)
            raise CheckpointError(f"{path}: its data record's {field} is {got}, not "
                                  f"{list(shape)} for {size}-px images")
    if not isinstance(data["crop_size"], int) or not 0 < data["crop_size"] <= size:
        raise CheckpointError(f"{path}: its data record's crop size {data['crop_size']!r} does "
                              f"not fit {size}-px images")


def check_resumable(state: dict) -> None:
    """Raise CheckpointError unless ``state`` holds what a training run resumes from, each
    record of the type and shape a resume reads (a wrong one would fail mid-run, or as a
    crash in a kernel: a momentum buffer of another shape)."""
    path = state["path"]
    for key in RESUME_RECORDS:
        if key not in state:
            raise CheckpointError(f"{path} lacks its '{key}' record: it cannot be resumed")
    for key in ("config", "optimizer", "scheduler", "best"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: its '{key}' record is a "
                                  f"{type(state[key]).__name__}, not a dict")
    for key in ("epoch", "step_in_epoch", "global_step", "epoch_loss_steps"):
        if not _is_count(state[key]):
            raise CheckpointError(f"{path}: its '{key}' record {state[key]!r} is not a whole "
                                  f"number >= 0")
    if not _is_number(state["epoch_loss_sum"]):
        raise CheckpointError(f"{path}: its 'epoch_loss_sum' record "
                              f"{state['epoch_loss_sum']!r} is not a number")
    _check_history(state, path)
    rng = state["rng"]
    if not isinstance(rng, list) or not rng:
        raise CheckpointError(f"{path}: its 'rng' record is not a list of random states")
    for rank, record in enumerate(rng):
        _check_rng(record, f"{path}: its random state of rank {rank}")


def check_optimizer(state: dict) -> None:
    """The optimizer record against the weights (each momentum buffer its weight's shape and
    dtype: another shape crashes the fused SGD step). Called once the weights are known to
    be the network's, so that a checkpoint of another network is called that, not this."""
    _check_optimizer(state["optimizer"], state["model"], state["path"])


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_weights(model: dict, path: PathLike) -> None:
    """The model record: floating-point tensors by name (a string in place of a weight, an
    integer tensor, would fail deep in loading or in a kernel)."""
    for key, value in model.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: its model record's {key!r} is a "
                                  f"{type(value).__name__}, not a tensor")
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: its model record's {key} is {value.dtype}, not "
                                  f"floating point")


def _check_history(state: dict, path: PathLike) -> None:
    """history: one row per finished epoch (1, 2, ...) with metrics.csv's numbers, and the
    best epoch one of them (the summary reads its top-5 error there)."""
    history, best = state["history"], state["best"]
    if not isinstance(history, list):
        raise CheckpointError(f"{path}: its 'history' record is not a list of epoch rows")
    for number, row in enumerate(history, 1):
        where = f"{path}: its history row {number}"
        if not isinstance(row, dict) or row.get("epoch") != number:
            raise CheckpointError(f"{where} is not epoch {number}'s "
                                  f"({type(row).__name__}: {str(row)[:60]})")
        for field in HISTORY_FIELDS + HISTORY_OPTIONAL:
            if (field in row or field not in HISTORY_OPTIONAL) and not _is_number(row.get(field)):
                raise CheckpointError(f"{where} has no number {field} ({row.get(field)!r})")
    if len(history) != state["epoch"]:
        raise CheckpointError(f"{path}: its history has {len(history)} rows for "
                              f"{state['epoch']} finished epochs")
    if not _is_count(best.get("epoch")) or best["epoch"] > len(history) \
            or not _is_number(best.get("val_top1_error")):
        raise CheckpointError(f"{path}: its 'best' record {best!r} is not an epoch of its "
                              f"history and its top-1 error")


def _check_optimizer(saved: dict, model: dict, path: PathLike) -> None:
    """The optimizer record against the model record: each state tensor (momentum) of its
    parameter's shape and dtype, each group's parameters named. An SGD step on a momentum
    buffer of another shape crashes the process (exit 139, no message)."""
    where = f"{path}: its optimizer record"
    state, groups = saved.get("state"), saved.get("param_groups")
    if not isinstance(state, dict) or not isinstance(groups, list):
        raise CheckpointError(f"{where} lacks its state or param_groups")
    for key, fields in state.items():
        weight = model.get(key)
        if weight is None or not isinstance(fields, dict):
            raise CheckpointError(f"{where} holds state for {key!r}, which is no weight of "
                                  f"the model")
        for field, value in fields.items():
            if not isinstance(value, torch.Tensor):
                if _is_number(value):
                    continue
                raise CheckpointError(f"{where}'s {field} of {key} is a "
                                      f"{type(value).__name__}, not a tensor")
            if value.dim() and (value.shape != weight.shape or value.dtype != weight.dtype):
                raise CheckpointError(f"{where}'s {field} of {key} is {list(value.shape)} "
                                      f"{value.dtype}, its weight {list(weight.shape)} "
                                      f"{weight.dtype}")
    for group in groups:
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or not all(name in model for name in params):
            raise CheckpointError(f"{where} has a parameter group of no model weights")
        for name, value in group.items():
            if name != "params" and not (_is_number(value) or value is None
                                         or isinstance(value, (bool, str))):
                raise CheckpointError(f"{where}: its group's {name} is a "
                                      f"{type(value).__name__}")


def _check_rng(record, where: str) -> None:
    """One rank's random streams as ``capture_rng`` writes them."""
    def fail(what):
        raise CheckpointError(f"{where} is malformed ({what})")

    if not isinstance(record, dict):
        fail(f"a {type(record).__name__}")
    for key in ("torch", "augment"):
        value = record.get(key)
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 1:
            fail(f"its {key} state is not a byte tensor")
    cuda = record.get("cuda")
    if not isinstance(cuda, dict) or not all(
            isinstance(value, torch.Tensor) and value.dtype == torch.uint8
            for value in cuda.values()):
        fail("its cuda states are not byte tensors")
    python = record.get("python")
    if (not isinstance(python, dict) or not isinstance(python.get("version"), int)
            or not isinstance(python.get("state"), torch.Tensor)
            or tuple(python["state"].shape) != (PYTHON_RNG_WORDS,)
            or not (python.get("gauss") is None or _is_number(python.get("gauss")))):
        fail("its Python state")
    numpy = record.get("numpy")
    if (not isinstance(numpy, dict) or numpy.get("name") != "MT19937"
            or not isinstance(numpy.get("keys"), torch.Tensor)
            or tuple(numpy["keys"].shape) != (NUMPY_RNG_WORDS,)
            or not all(isinstance(numpy.get(key), int) for key in ("pos", "has_gauss"))
            or not _is_number(numpy.get("gauss"))):
        fail("its NumPy state")


def load_model_state(model: torch.nn.Module, state: dict) -> None:
    """Load the checkpoint's weights into ``model``; a mismatch or a NaN or infinite weight
    (a diverged run's) raises CheckpointError."""
    _check_weights(state["model"], state.get("path", "checkpoint"))
    for key, value in state["model"].items():
        if value.is_floating_point() and not bool(value.isfinite().all()):
            raise CheckpointError(f"{state.get('path', 'checkpoint')} holds NaN or infinite "
                                  f"weights ({key}): the run had diverged; use an earlier "
                                  f"checkpoint")
    expected = model_state_shapes(model)
    for key, value in state["model"].items():
        if key in expected and (tuple(value.shape), value.dtype) != expected[key]:
            shape, dtype = expected[key]
            raise CheckpointError(f"{state.get('path', 'checkpoint')} holds a different "
                                  f"network than {state['arch'].get('name')!r} describes: "
                                  f"its {key} is {list(value.shape)} {value.dtype}, the "
                                  f"network's {list(shape)} {dtype}")
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise CheckpointError(f"{state.get('path', 'checkpoint')} holds a different network "
                              f"than {state['arch'].get('name')!r} describes: {detail}") from None


def model_state_shapes(model: torch.nn.Module) -> dict:
    """Each state-dict tensor's (shape, dtype), whole (a two-column layer's halves joined)."""
    return {key: (tuple(value.shape), value.dtype) for key, value in model.state_dict().items()}


def load_network(state: dict, devices: Sequence[torch.device]
                 ) -> tuple[torch.nn.Module, Augmenter]:
    """The checkpoint's network on ``devices`` (weights checked and loaded, in eval mode),
    and the Augmenter that feeds it as training did: the checkpoint's crop size and
    training-set mean, no colour noise."""
    model = build_model(state["arch"], list(devices) if len(devices) > 1 else devices[0])
    load_model_state(model, state)
    data = state["data"]
    trained_on = DatasetInfo(Path(state["path"]), tuple(state["classes"]), data["image_size"],
                             data["mean"], data["eigval"], data["eigvec"], 0, 0)
    return model.eval(), Augmenter(trained_on, data["crop_size"], 0.0, device=devices[0])


def model_state(model: torch.nn.Module) -> dict:
    """The state dict with every tensor copied to the CPU (placement-free)."""
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state keyed by the model's state-dict names, whole tensors on the CPU.

    torch keys it by parameter position, and a two-column placement has 30 parameters (each
    column's half of a layer) where one device has 16: by name, with the halves joined as
    the model's state dict joins them, the state loads into any placement.
    """
    raw = optimizer.state_dict()
    names = [whole_name(name) for name, _ in model.named_parameters()]
    parts: dict = {}
    for index, entry in raw["state"].items():
        key, column = names[index]
        for field, value in entry.items():
            parts.setdefault(key, {}).setdefault(field, {})[column or 0] = value
    state = {key: {field: _joined(pieces) for field, pieces in fields.items()}
             for key, fields in parts.items()}
    groups = [{**{k: v for k, v in group.items() if k != "params"},
               "params": list(dict.fromkeys(names[i][0] for i in group["params"]))}
              for group in raw["param_groups"]]
    return {"state": state, "param_groups": groups}


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         saved: dict) -> None:
    """Load ``optimizer_state``'s record into ``optimizer`` of ``model``, whatever its placement."""
    names = [whole_name(name) for name, _ in model.named_parameters()]
    try:
        state = {}
        for index, (key, column) in enumerate(names):
            if key in saved["state"]:
                state[index] = {field: _part(value, column)
                                for field, value in saved["state"][key].items()}
        groups = [{**{k: v for k, v in group.items() if k != "params"},
                   "params": [i for i, (key, _) in enumerate(names) if key in group["params"]]}
                  for group in saved["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"its optimizer record does not fit the network "
                              f"({type(error).__name__}: {error})") from None


def _joined(pieces: dict):
    """One state field of a layer from its columns' parts (a scalar is the same in each)."""
    first = pieces[0]
    if isinstance(first, torch.Tensor) and first.dim() > 0 and len(pieces) > 1:
        return torch.cat([pieces[c].detach().cpu() for c in sorted(pieces)])
    return first.detach().to("cpu", copy=True) if isinstance(first, torch.Tensor) else first


def _part(value, column: Optional[int]):
    if column is None or not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    return value.chunk(COLUMNS)[column]


# ---------------------------------------------------------------------------------------
# random number generator states, as tensors and plain values
# ---------------------------------------------------------------------------------------


def capture_rng(generator: torch.Generator, cuda_devices: Sequence[torch.device] = ()) -> dict:
    """Every random stream a training step draws from, in weights_only-safe form."""
    python_version, python_state, python_gauss = random.getstate()
    numpy_name, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": {str(device): torch.cuda.get_rng_state(device) for device in cuda_devices},
        "augment": generator.get_state(),
        "python": {"version": python_version,
                   "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss": python_gauss},
        "numpy": {"name": numpy_name, "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
                  "pos": int(numpy_pos), "has_gauss": int(numpy_has_gauss),
                  "gauss": float(numpy_gauss)},
    }


def restore_rng(state: dict, generator: torch.Generator,
                cuda_devices: Sequence[torch.device] = ()) -> None:
    """Put back ``capture_rng``'s streams; a state they refuse raises CheckpointError."""
    _check_rng(state, "the checkpoint's random state")
    try:
        _set_rng(state, generator, cuda_devices)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise CheckpointError(f"the checkpoint's random state is malformed "
                              f"({type(error).__name__}: {str(error).splitlines()[0]})") from None


def _set_rng(state: dict, generator: torch.Generator, cuda_devices: Sequence[torch.device]
             ) -> None:
    torch.set_rng_state(state["torch"])
    for device in cuda_devices:
        if str(device) in state["cuda"]:
            torch.cuda.set_rng_state(state["cuda"][str(device)], device)
    generator.set_state(state["augment"])
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))


def describe(state: dict) -> str:
    """One line: where a checkpoint stands."""
    where = f"epoch {state.get('epoch', 0) + 1}"
    if state.get("step_in_epoch"):
        where += f", step {state['step_in_epoch']}"
    else:
        where = f"end of epoch {state.get('epoch', 0)}"
    return f"{state.get('path', 'checkpoint')} ({where})"


