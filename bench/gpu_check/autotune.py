"""Bounded autotuning for a short GPU window: fewer candidates, short timings, a cache.

The launchers' autotuners try 5 (conv) or 9 (linear) tiles per shape, timed with Triton's
defaults (25 ms warm-up, 100 ms of repeats each). In a window of a few minutes that is too
much, so every process of the GPU check (and the benchmarks it starts) calls ``install``:

- each autotuner keeps only the candidates in CANDIDATES (the same list in the process that
  precompiles them, so the compiled kernels are the ones the GPU run asks for);
- a candidate is timed for ``rep_ms`` after ``warmup_ms`` instead of Triton's defaults;
- the chosen config of every (kernel, key) is read from and written back to a JSON cache,
  so later phases, and a later window given the same file, choose without timing again.

A cached choice is used only if it is still one of the kernel's candidates.
"""
from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

# Per autotuner: the tiles (BLOCK_M, BLOCK_N, BLOCK_K) kept, at most 4 configs each (one per
# precompile slice) but the conv forward's and weight gradient's 5 (slice 0 compiles two). Conv: the Hopper tiles
# their pruners choose from at AlexNet's shapes and the float64 one (kernels/conv2d_relu.py;
# not the small tiles of GPUs with less shared memory, nor the forward's 32-deep reduction
# block, which pads no AlexNet layer least; conv1's 64 + 32 kernels: 128 x 64 x 16 in tf32,
# 128 x 64 x 64 over its flat taps in bf16; conv2's masked input gradient: 128 x 32 x 64 with
# its 16-channel tail; conv3-5's bf16 weight gradients: 64 x 128 x 128 over shifted rows).
# Linear at M=128 (one
# autotuner per operand width, each named by its kernel and its module attribute): every tile
# of kernels/linear.py's lists, which hold only those that meet issue 11's budgets (the
# 32-bit tuner's pruner gives float64 its own tile).
LINEAR_TILES_16BIT = {(128, 64, 64), (64, 128, 64), (64, 64, 64), (128, 32, 64)}
LINEAR_TILES_32BIT = {(128, 128, 64), (64, 128, 64), (32, 32, 64)}
CONV_FORWARD_TILES = {(128, 128, 64), (128, 64, 64), (128, 128, 16), (128, 64, 16), (64, 64, 32)}
CONV_INPUT_GRAD_TILES = {(128, 128, 64), (128, 64, 64), (128, 32, 64), (64, 64, 32)}
CONV_WEIGHT_GRAD_TILES = {(128, 128, 128), (128, 128, 64), (64, 128, 128), (64, 64, 32)}
CANDIDATES = {
    "conv2d_relu_forward_kernel": CONV_FORWARD_TILES,
    "conv2d_relu_backward_input_kernel": CONV_INPUT_GRAD_TILES,
    "conv2d_relu_backward_weight_kernel": CONV_WEIGHT_GRAD_TILES,
    "linear_kernel:linear_kernel_autotuned": LINEAR_TILES_16BIT,
    "linear_kernel:linear_kernel_autotuned_32bit": LINEAR_TILES_32BIT,
}
WARMUP_MS, REP_MS = 5, 20


def autotuners() -> Dict[str, object]:
    """{name: triton.runtime.Autotuner} over kernels/*.py, every autotuner once."""
    import importlib
    import pkgutil

    import triton

    import alexnet_triton.kernels as package

    by_kernel: Dict[str, Dict[str, object]] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for attribute, value in vars(module).items():
            if isinstance(value, triton.runtime.Autotuner):
                by_kernel.setdefault(value.base_fn.__name__, {})[attribute] = value
    # A kernel's name alone where one autotuner wraps it; "kernel:attribute" where several do
    # (linear_kernel: one config list per operand width).
    found = {}
    for kernel, tuners in by_kernel.items():
        for attribute, tuner in tuners.items():
            found[kernel if len(tuners) == 1 else f"{kernel}:{attribute}"] = tuner
    return found


def tile(config) -> tuple:
    return tuple(config.kwargs.get(k) for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))


def restrict(tuners: Dict[str, object]) -> None:
    """Keep each autotuner's candidates (CANDIDATES); kernels not listed keep all."""
    for name, tuner in tuners.items():
        keep = CANDIDATES.get(name)
        if keep is None:
            continue
        if not hasattr(tuner, "all_configs"):
            tuner.all_configs = list(tuner.configs)
        tuner.configs = [c for c in tuner.all_configs if tile(c) in keep]
        if not tuner.configs:
            raise RuntimeError(f"{name}: none of its configs is among the candidates {keep}")


def _describe(config) -> dict:
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps,
            "num_stages": config.num_stages, "num_ctas": getattr(config, "num_ctas", 1)}


def _same(config, described: dict) -> bool:
    return _describe(config) == {**{"num_ctas": 1}, **described}


def load(tuners: Dict[str, object], path: Path) -> int:
    """Seed the autotuners' choices from ``path``; returns how many were taken."""
    if not path.exists():
        return 0
    taken = 0
    for name, entries in json.loads(path.read_text()).items():
        tuner = tuners.get(name)
        if tuner is None:
            continue
        for entry in entries:
            config = next((c for c in tuner.configs if _same(c, entry["config"])), None)
            if config is not None:
                tuner.cache[tuple(entry["key"])] = config
                taken += 1
    return taken


def save(tuners: Dict[str, object], path: Path) -> None:
    """Merge the autotuners' choices into ``path`` (earlier phases' entries are kept)."""
    merged: Dict[str, List[dict]] = json.loads(path.read_text()) if path.exists() else {}
    for name, tuner in tuners.items():
        entries = {json.dumps(e["key"]): e for e in merged.get(name, [])}
        for key, config in tuner.cache.items():
            entries[json.dumps(list(key))] = {"key": list(key), "config": _describe(config)}
        if entries:
            merged[name] = list(entries.values())
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(merged, indent=1, sort_keys=True))
    os.replace(temporary, path)


def short_timer(warmup_ms: int = WARMUP_MS, rep_ms: int = REP_MS) -> Callable:
    import triton.testing

    def do_bench(kernel_call, quantiles=None):
        return triton.testing.do_bench(kernel_call, warmup=warmup_ms, rep=rep_ms,
                                       quantiles=quantiles)
    return do_bench


def install(cache: Optional[Path], timer: Optional[Callable] = None) -> Dict[str, object]:
    """Bound every autotuner of this process (see the module docstring); the choices are
    saved to ``cache`` when the process exits."""
    tuners = autotuners()
    restrict(tuners)
    timer = timer or short_timer()
    for tuner in tuners.values():
        tuner._do_bench = timer  # Autotuner.do_bench reads it (triton 3.6 and 3.9)
    if cache is not None:
        cache = Path(cache)
        load(tuners, cache)
        atexit.register(save, tuners, cache)
    return tuners


def install_from_environment() -> None:
    """For processes the check starts (the benchmarks): ALEXNET_AUTOTUNE_CACHE=FILE."""
    path = os.environ.get("ALEXNET_AUTOTUNE_CACHE")
    if path:
        install(Path(path))
