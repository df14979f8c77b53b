"""How the benchmarks time GPU work under pytest-benchmark.

pytest-benchmark reads a host clock around each round of ``iterations`` calls. GPU benchmarks
give it ``cuda_timer`` (a ``pytest.mark.benchmark(timer=...)``), which synchronises before it
reads the clock: a round queues its launches back to back and is charged until the last one
has finished, so the reported time per iteration is device time plus whatever launch overhead
the host cannot hide (a real cost of an op, the same for every provider). The first calls,
which compile (torch.compile), autotune (Triton) and search algorithms (cudnn.benchmark), run
before any timing. Inputs are fresh random tensors, rotated through enough copies that the set
being read is never the one left in L2 by the previous call.
"""
from __future__ import annotations

import itertools
import math
import time
from typing import Callable, List, Optional, Sequence

import pytest
import torch

# Enough copies that the rotation spans this many L2 caches.
ROTATION_L2_MULTIPLE = 3
MAX_ROTATION = 64
# Used when the device does not say (an H100's L2).
DEFAULT_L2_BYTES = 50 * 2**20


def cuda_timer() -> float:
    """``time.perf_counter`` once the GPU has finished everything queued so far."""
    torch.cuda.synchronize()
    return time.perf_counter()


# pytest-benchmark's documented hook for another clock.
cuda_timing = pytest.mark.benchmark(timer=cuda_timer)


def l2_bytes(device: torch.device) -> int:
    properties = torch.cuda.get_device_properties(device)
    return int(getattr(properties, "L2_cache_size", 0) or DEFAULT_L2_BYTES)


def rotation_count(set_bytes: int, device: torch.device) -> int:
    """How many copies of an input set to cycle through so L2 never holds the next one."""
    if device.type != "cuda":
        return 1
    wanted = ROTATION_L2_MULTIPLE * l2_bytes(device)
    return max(1, min(MAX_ROTATION, math.ceil(wanted / max(set_bytes, 1))))


def tensor_bytes(tensors: Sequence[Optional[torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def cycling(items: List) -> Callable[[], object]:
    """A function returning the items in turn, forever."""
    iterator = itertools.cycle(items)
    return lambda: next(iterator)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(benchmark, step: Callable[[], None], device: torch.device, *, warmup_calls: int = 3,
            round_s: float = 0.02, budget_s: float = 1.0, min_rounds: int = 5,
            max_rounds: int = 50, fixed_rounds: Optional[int] = None) -> None:
    """Warm ``step`` up, then time it with ``benchmark.pedantic``.

    Iterations per round are chosen so that a round lasts about ``round_s`` (launch gaps
    and the final synchronisation amortised over many calls), rounds so that the timing
    takes about ``budget_s``. ``fixed_rounds`` skips that calibration: that many rounds of
    one call each, after the warm-up (for slow CPU steps). On the CPU pytest-benchmark's
    own clock times the rounds.
    """
    for _ in range(warmup_calls):
        step()
    if fixed_rounds is not None:
        benchmark.extra_info["rounds_x_iterations"] = f"{fixed_rounds}x1"
        benchmark.pedantic(step, rounds=fixed_rounds, iterations=1)
        return
    synchronize(device)
    probe_calls = 3
    start = time.perf_counter()
    for _ in range(probe_calls):
        step()
    synchronize(device)
    per_call = max((time.perf_counter() - start) / probe_calls, 1e-7)
    iterations = max(1, min(1000, round(round_s / per_call)))
    rounds = max(min_rounds, min(max_rounds, int(budget_s / (per_call * iterations))))
    benchmark.extra_info["rounds_x_iterations"] = f"{rounds}x{iterations}"
    benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=1)


def peak_memory(step: Callable[[], None], device: torch.device) -> dict:
    """Memory of one call of ``step`` (already warmed up) on a CUDA device.

    ``peak_memory_bytes`` is torch.cuda.max_memory_allocated during the call;
    ``step_memory_bytes`` the part of it above what was allocated before the call
    (outputs, saved activations, gradients and workspaces: the memory the call itself needs).
    """
    synchronize(device)
    resident = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_memory_bytes": peak, "step_memory_bytes": peak - resident,
            "resident_memory_bytes": resident}


def fresh_dynamo() -> None:
    """Forget every graph compiled so far, so each compiled case starts from its own cache
    entry and never falls back to eager by hitting the recompile limit."""
    torch._dynamo.reset()
