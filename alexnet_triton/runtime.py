"""The machine a run uses: its devices, mixed precision, loader processes and kernels.

A leaf under the CLIs and the trainer (it imports only torch, the ops and the errors), so
train, evaluate and predict resolve ``--devices`` and ``--amp`` the same way.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch

from alexnet_triton import functional as F
from alexnet_triton.errors import ConfigError


def parse_devices(text: str) -> Optional[list[str]]:
    """'auto' -> None; else a list of one or two device names, checked for syntax only."""
    if text == "auto":
        return None
    names = [part.strip() for part in text.split(",")]
    if not 1 <= len(names) <= 2 or not all(names):
        raise ConfigError(f"--devices takes 'auto', one device or two devices separated by a "
                          f"comma, got {text!r}")
    for name in names:
        kind, _, index = name.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()) \
                or (kind == "cpu" and index):
            raise ConfigError(f"--devices: {name!r} is not a device (use cpu, cuda or cuda:N)")
    return names


def resolve_devices(text: str, one_column: bool = False, local_rank: int = 0,
                    ) -> list[torch.device]:
    """--devices -> the column devices (one, or two for one column per device).

    Under torchrun, CUDA indices are per replica: replica r adds r * len(devices).
    """
    names = parse_devices(text)
    if names is None:
        names = [f"cuda:{local_rank}"] if torch.cuda.is_available() else ["cpu"]
        local_rank = 0  # already applied
    if one_column and len(names) > 1:
        raise ConfigError("--one-column trains one column on one device; --devices names two")
    devices = []
    for name in names:
        device = torch.device(name)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"--devices {text}: CUDA is not available on this machine")
            index = (device.index or 0) + local_rank * len(names)
            if index >= torch.cuda.device_count():
                raise ConfigError(f"--devices {text}: cuda:{index} does not exist "
                                  f"({torch.cuda.device_count()} GPUs)")
            device = torch.device("cuda", index)
        devices.append(device)
    return devices


def resolve_amp(text: str, device: torch.device) -> bool:
    """Whether to autocast to bfloat16: 'auto' means on a GPU that supports it."""
    if text == "off":
        return False
    if text == "bf16":
        if device.type != "cuda":
            raise ConfigError("--amp bf16 needs a CUDA device (use --amp off on the CPU)")
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on a CUDA device when asked, else nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_kernels(device: torch.device) -> str:
    """Which implementation the fused ops run on tensors of ``device``."""
    if not F.uses_triton(torch.empty(1, device=device)):
        return ("PyTorch reference (the kernels' plain PyTorch twins; TRITON_INTERPRET=1 "
                "runs the Triton kernels through Triton's CPU interpreter instead, slowly)")
    if device.type == "cuda":
        return f"Triton, compiled for {torch.cuda.get_device_name(device)}"
    return "Triton through its CPU interpreter (TRITON_INTERPRET=1: exact but slow)"


def default_workers(device: torch.device) -> int:
    """Loader processes: plenty on a GPU; on the CPU one, as the cores are busy training."""
    cores = os.cpu_count() or 1
    return min(8, cores) if device.type == "cuda" else 1


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks for reuse instead of unmapping them.

    By default every block over 128 KiB is a fresh mmap, so each CPU training step pays
    page faults on ~300 MB of new gradients and activations (measured: 76,000 faults and
    0.25 s of system time a step at batch 128). Kept blocks are reused by the next step.
    Returns whether it applied (glibc only; elsewhere the allocator stays as it is).
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 2**31 - 1))
