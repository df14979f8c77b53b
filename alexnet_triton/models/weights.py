"""Weights from a local file, for ``alexnet(weights=PATH)``: nothing is ever downloaded.

Three kinds of file load, all read with ``torch.load(weights_only=True)`` (no code runs):
an alexnet_triton checkpoint (a run's best.pt / latest.pt: its "model" record and its
"arch"), a plain state dict (a run's best_weights.pt, or ``torch.save(model.state_dict())``),
or a dict holding one under "state_dict" (pytorch/examples' and timm's checkpoints; a
DistributedDataParallel "module." prefix is dropped).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

import torch

CHECKPOINT_FORMAT = "alexnet_triton-checkpoint"  # training.checkpoint.FORMAT


def needs_download(weights) -> str:
    """Why ``weights`` cannot be loaded here (the error's words), or "" if it is a path."""
    if isinstance(weights, (str, os.PathLike)):
        text = os.fspath(weights)
        if "://" in text:
            return f"weights={text!r} is a URL"
        if not Path(text).exists():
            return (f"weights={text!r} is not a local file (a torchvision name such as "
                    f"'DEFAULT' or 'IMAGENET1K_V1' would need a download)")
        return ""
    return f"weights={weights!r} ({type(weights).__name__}) is not a path"


def load_weights(path) -> Tuple[dict, Optional[dict]]:
    """(state dict, the checkpoint's arch record or None) from a local file; ValueError
    (one line) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file {path} is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling refused, not a torch file, ...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} does not load as weights (torch.load(weights_only=True): "
                         f"{first})") from None
    arch = None
    if isinstance(loaded, dict) and loaded.get("format") == CHECKPOINT_FORMAT:
        state, arch = loaded.get("model"), loaded.get("arch")
    elif isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        state = loaded["state_dict"]
    else:
        state = loaded
    if not isinstance(state, dict) or not state or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, a 'state_dict' "
                         f"entry, or an alexnet_triton checkpoint)")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state, arch
