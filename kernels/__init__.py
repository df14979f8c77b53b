"""The Triton kernels of alexnet_triton, one op per module.

Each module holds its ``@triton.jit`` kernels and then the launchers that check their
arguments and pick the grid. ``reference/`` holds a plain PyTorch version of every
launcher under the same name; ``alexnet_triton.functional`` dispatches between the two.
"""
import os

import torch
import triton.language as tl
from torch import Tensor
from torch.library import wrap_triton


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def launchable(kernel):
    """``kernel`` ready for ``[grid](...)``, traceable by torch.compile (wrap_triton).

    Under the interpreter the kernel is launched as it is: torch.compile never traces it
    there (fake CPU tensors take the reference path), and torch 2.11's wrap_triton refuses
    the interpreter's InterpretedFunction (2.13 passes it through unwrapped).
    """
    return kernel if interpreting() else wrap_triton(kernel)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """What a kernel over `dtype` data accumulates in: float64 for float64, else float32.

    The one statement of the rule: the kernels take it as ``accumulator``'s Triton dtype, the
    references of ``reference/`` compute in it.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def accumulator(dtype: torch.dtype) -> tl.dtype:
    """``accumulation_dtype(dtype)`` as a Triton dtype: a kernel's ACC constexpr."""
    return tl.float64 if accumulation_dtype(dtype) == torch.float64 else tl.float32


def check_int32_offsets(op: str, **tensors: Tensor) -> None:
    """Refuse tensors the kernels cannot address: they compute offsets in int32 (cheaper
    address arithmetic), so every tensor they index must hold fewer than 2**31 elements."""
    for name, tensor in tensors.items():
        if tensor.numel() >= 2**31:
            raise ValueError(f"{op}: {name} {tuple(tensor.shape)} has {tensor.numel()} elements; "
                             f"the kernels' int32 offsets address fewer than 2**31")
