"""How the kernels are judged: one tolerance per dtype, the error measures, output poisoning.

Used by the test suite (tests/) and by the GPU check (bench/gpu_check), so that a kernel is
held to the same numbers on the CPU's interpreter and on a GPU. A tolerance comes from the
dtype alone, never from what a kernel happens to achieve.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

# Relative to the largest expected magnitude (see max_relative_error).
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-3,
    torch.bfloat16: 1e-2,
}

# tf32: what the tensor cores make of float32 operands (wgmma .tf32 reads the raw float32
# bits and ignores all but the top 10 of the 23 mantissa bits).
TF32_MANTISSA_BITS = 10
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


def tf32_tolerance(reduction: int) -> float:
    """The norm-wise relative error allowed to a float32 GEMM run on tf32 tensor cores.

    Derived, for a reduction of ``reduction`` products accumulated in float32:

    - each operand cut to 10 mantissa bits loses less than 2**-10 of itself (truncation;
      rounding would lose half that), so one product of two such operands is off by less
      than 2**-9 of itself. Writing the error of an output as sum_k delta_k a_k b_k with
      |delta_k| < 2**-9, its mean square is at most 2**-18 * sum_k (a_k b_k)**2, which is the
      mean square of the output itself when the products have random signs (as the tests'
      zero-mean random operands give): a norm-wise error below 2**-9;
    - float32 accumulation adds rounding errors that grow as a random walk over the
      reduction: sqrt(reduction) * 2**-24 relative.

    A kernel that drops or repeats one term of a reduction of n is off by about
    1 / sqrt(n) (a few percent at AlexNet's sizes), far above this.
    """
    if reduction < 1:
        raise ValueError(f"tf32_tolerance: reduction must be >= 1, got {reduction}")
    return 2.0 ** -(TF32_MANTISSA_BITS - 1) + math.sqrt(reduction) * FLOAT32_UNIT_ROUNDOFF


def tf32_truncate(t: torch.Tensor) -> torch.Tensor:
    """float32 ``t`` with each mantissa cut to tf32's 10 bits, as the tensor cores read it."""
    if t.dtype != torch.float32:
        raise TypeError(f"tf32_truncate: expected float32, got {t.dtype}")
    drop = 23 - TF32_MANTISSA_BITS
    return (t.contiguous().view(torch.int32) & ~((1 << drop) - 1)).view(torch.float32)


def _error_measure(measure: Callable[[torch.Tensor, torch.Tensor], float]):
    """``measure`` on both tensors in float64 (on actual's device), for tensors of one shape;
    inf when anything is not finite (an unwritten, NaN-poisoned element never passes), 0
    for empty ones."""
    @functools.wraps(measure)
    def error(actual: torch.Tensor, expected: torch.Tensor) -> float:
        actual = actual.detach().double()
        expected = expected.detach().to(actual.device).double()
        if actual.shape != expected.shape:
            raise ValueError(f"shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
        if not (torch.isfinite(actual).all() and torch.isfinite(expected).all()):
            return math.inf
        return measure(actual, expected) if actual.numel() else 0.0
    return error


@_error_measure
def scaled_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / (|expected| + max |expected|): the test suite's elementwise
    criterion (tests/helpers.assert_close passes when this is <= tol)."""
    scale = expected.abs() + expected.abs().max().clamp_min(1e-300)
    return float(((actual - expected).abs() / scale).max())


@_error_measure
def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-300))


@_error_measure
def normwise_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (Frobenius)."""
    norm = float(torch.linalg.vector_norm(expected))
    difference = float(torch.linalg.vector_norm(actual - expected))
    return difference / norm if norm > 0 else (0.0 if difference == 0 else math.inf)


class Poison:
    """Wraps torch allocation functions so that what they return is filled with poison:
    NaN for floating-point tensors, -1 for integer ones. An element a kernel fails to write
    then shows in the comparison; ``allocations`` proves the outputs came through here."""

    def __init__(self) -> None:
        self.allocations = 0

    def wrap(self, allocate: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def poisoned(*args, **kwargs):
            tensor = allocate(*args, **kwargs)
            if tensor.dtype.is_floating_point:
                tensor.fill_(float("nan"))
            elif tensor.dtype != torch.bool:
                tensor.fill_(-1)
            self.allocations += 1
            return tensor

        return poisoned


class poisoned_allocations:
    """``with poisoned_allocations() as poison:`` every torch.empty / torch.empty_like made
    inside is poisoned (see Poison); the originals are back on exit."""

    def __enter__(self) -> Poison:
        self.poison = Poison()
        self.saved = torch.empty, torch.empty_like
        torch.empty = self.poison.wrap(torch.empty)
        torch.empty_like = self.poison.wrap(torch.empty_like)
        return self.poison

    def __exit__(self, *exc) -> None:
        torch.empty, torch.empty_like = self.saved



# The ops torch's autocast runs in bf16 with bf16 operands (its lower-precision list, as far
# as AlexNet uses it), the package's GEMM ops, whose operands functional._autocast casts
# (alexnet_triton::conv2d_relu, ::linear), and their backward ops (named with these
# prefixes), whose saved operands are those casts: their floating-point inputs are rounded.
# (Autograd saves what it was given, above the rounding: without rounding them again the
# backward would read the unrounded float64 weights.)
_GEMM_OPS = ("convolution", "addmm", "mm", "bmm", "linear", "conv2d_relu")


def round_to_bfloat16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to the nearest bf16 values, kept in ``t``'s dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


class bfloat16_rounding:
    """``with bfloat16_rounding():`` every op on float64 tensors computes exactly (float64) and
    rounds its floating-point outputs to bf16 values, and the convolutions and matrix
    products also round their operands, as autocast casts them: the error that bf16 itself
    makes with one rounding per op, computed without any bf16 arithmetic.

    So it is the same on every CPU and GPU, unlike torch's bf16 on a CPU, whose error
    depends on oneDNN's path (AMX, AVX512_BF16 or none: issue 25). Views are left alone
    (their data is their base's, already rounded); in-place ops are rounded in place.
    """

    def __enter__(self) -> "bfloat16_rounding":
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_map

        def rounded(x):
            return round_to_bfloat16(x) if isinstance(x, torch.Tensor) and x.is_floating_point() \
                else x

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func.is_view:
                    return func(*args, **kwargs)
                if func._schema.name.split("::")[-1].startswith(_GEMM_OPS):
                    args, kwargs = tree_map(rounded, args), tree_map(rounded, kwargs)
                out = func(*args, **kwargs)
                if func._schema.is_mutable:
                    for t in out if isinstance(out, (tuple, list)) else (out,):
                        if isinstance(t, torch.Tensor) and t.is_floating_point():
                            t.copy_(round_to_bfloat16(t))
                    return out
                return tree_map(rounded, out)

        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.mode.__exit__(*exc)
