"""The Triton kernels of alexnet_triton, one op per module.

Each module holds its ``@triton.jit`` kernels and then the launchers that check their
arguments and pick the grid. ``reference/`` holds a plain PyTorch version of every
launcher under the same name; ``alexnet_triton.functional`` dispatches between the two.
"""
import os

import torch
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def accumulator(dtype: torch.dtype) -> tl.dtype:
    """The accumulation dtype of a kernel over `dtype` data: float64 for float64, else float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32
