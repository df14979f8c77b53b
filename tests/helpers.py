"""Shared test vocabulary: precisions, their tolerances, poisoning, comparison.

The tolerance table, the error measures and the poisoning live in alexnet_triton.testing,
which the GPU check uses too; this module adds what only pytest needs.
"""
from __future__ import annotations

import pytest
import torch

from alexnet_triton.testing import (TOLERANCE, Poison, normwise_relative_error,  # noqa: F401
                                    tf32_tolerance)

# The precisions a GEMM kernel is tested in. "tf32" is float32 data with the tensor cores'
# 10-bit-mantissa products (torch's allow_tf32 flags on); "float32" has them off (ieee).
PRECISIONS = {"float32": torch.float32, "float64": torch.float64,
              "bfloat16": torch.bfloat16, "tf32": torch.float32}


def tolerance(dtype: torch.dtype) -> float:
    """The elementwise tolerance of results of `dtype` (relative to the largest expected
    magnitude). Float32 GEMMs are judged as float32: the suite runs them in ieee precision
    (conftest.py) and tests tf32 on its own (assert_precision_close)."""
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


def assert_precision_close(actual: torch.Tensor, expected: torch.Tensor, precision: str,
                           reduction: int, name: str = "") -> None:
    """A GEMM result against its float64 reference, judged as `precision` computes it:
    tf32 by the norm-wise error its mantissa allows over `reduction` products
    (alexnet_triton.testing.tf32_tolerance), the others elementwise by their dtype."""
    dtype = PRECISIONS[precision]
    if precision != "tf32":
        assert_close(actual, expected.to(dtype), tolerance(dtype), name)
        return
    assert actual.dtype == torch.float32, f"{name}: dtype {actual.dtype} != torch.float32"
    assert not torch.isnan(actual).any(), f"{name}: {int(torch.isnan(actual).sum())} NaN elements"
    error, allowed = normwise_relative_error(actual, expected), tf32_tolerance(reduction)
    assert error <= allowed, (f"{name}: norm-wise relative error {error:.3e} over the tf32 "
                              f"tolerance {allowed:.3e} (reduction {reduction})")


def use_precision(precision: str, device: torch.device) -> torch.dtype:
    """Skip what the interpreter cannot compute, switch tf32 on for "tf32", return the dtype.

    bf16 is wrong in Triton's interpreter (it computes on raw bit patterns), and tf32 is a
    tensor-core mode that the interpreter does not have (its float32 dot is exact, which
    the float32 cases test): both run on a GPU only.
    """
    if torch.device(device).type == "cpu" and precision in ("bfloat16", "tf32"):
        pytest.skip(f"{precision} is a GPU-only case: Triton's interpreter does not compute it")
    if precision == "tf32":  # conftest.ieee_float32 turns them off again after the test
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    return PRECISIONS[precision]


def skip_bf16_on_cpu(dtype: torch.dtype, device: torch.device) -> None:
    """bf16 cases run on a GPU only: Triton's interpreter computes bf16 on raw bit patterns."""
    if dtype == torch.bfloat16 and torch.device(device).type == "cpu":
        pytest.skip("bf16 is wrong in Triton's interpreter (GPU-only case)")


def one_row_png(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but whose (complete, valid) compressed
    stream holds one row: Pillow loaded it as a mostly black image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    row = b"\x00" + bytes([200, 50, 50]) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row)) + chunk(b"IEND", b""))
