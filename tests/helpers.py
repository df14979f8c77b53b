"""Shared test vocabulary: the tolerance table, poisoning, comparison."""
from __future__ import annotations

import pytest
import torch

# One table of tolerances, from the dtype alone (relative to the largest expected
# magnitude). Never widen an entry to make a test pass.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    "tf32": 3e-4,  # float32 GEMMs on tensor cores, the GPU default for convolutions
    torch.float16: 1e-3,
    torch.bfloat16: 1e-2,
}


def tolerance(dtype: torch.dtype, device: torch.device | str = "cpu", gemm: bool = False) -> float:
    """The tolerance for results of `dtype` computed on `device`.

    The interpreter computes a float32 tl.dot exactly in float32; on a GPU a float32 GEMM
    whose precision PyTorch leaves at tf32 is judged by the tf32 entry.
    """
    if gemm and dtype == torch.float32 and torch.device(device).type == "cuda":
        if torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32:
            return TOLERANCE["tf32"]
    return TOLERANCE[dtype]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float, name: str = "") -> None:
    """|actual - expected| <= tol * (|expected| + max|expected|), and no NaN anywhere.

    NaN in `actual` (an unwritten, poisoned element) always fails.
    """
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert not torch.isnan(actual).any(), f"{name}: {int(torch.isnan(actual).sum())} NaN elements"
    expected = expected.to(actual.device)
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1e-30),
                               msg=lambda m: f"{name}: {m}")


class Poison:
    """Wraps torch allocation functions so that what they return is filled with poison."""

    def __init__(self) -> None:
        self.allocations = 0

    def wrap(self, allocate):
        def poisoned(*args, **kwargs):
            tensor = allocate(*args, **kwargs)
            if tensor.dtype.is_floating_point:
                tensor.fill_(float("nan"))
            elif tensor.dtype != torch.bool:
                tensor.fill_(-1)
            self.allocations += 1
            return tensor

        return poisoned


def skip_bf16_on_cpu(dtype: torch.dtype, device: torch.device) -> None:
    """bf16 cases run on a GPU only: Triton's interpreter computes bf16 on raw bit patterns."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu":
        pytest.skip("bf16 is wrong in Triton's interpreter (GPU-only case)")
