"""A stand-in Triton driver that compiles every launch for an NVIDIA GPU and runs none.

Used by tests/ops/gpu_compile.py (does every kernel compile, for each target?), the static
report (what did it compile to, for sm_90a?) and the GPU check's precompile phase (sm_90a).
``CompileOnlyDriver`` stands in for Triton's active driver and plays a GPU of one compile
target of ``TARGETS`` (by default sm_90a, an H100: the file's name is from when that was the
only one):

- ``get_current_target`` is GPUTarget("cuda", arch, 32): the NVIDIA backend compiles for
  that capability (90: sm_90a, wgmma and TMA; 80: sm_80, mma.sync and cp.async), and the
  launchers choose their code paths from it (kernels.target_capability);
- ``utils.get_device_properties`` gives the target's shared memory per block (227 KiB on an
  H100), so Triton's own check (CompiledKernel._init_handles) raises OutOfResources as on
  the GPU;
- ``launcher_cls`` records each launch (and checks the grid against CUDA's limits)
  instead of running it, so tensors are never read: they can be ``torch.empty``;
- ``get_benchmarker`` is what ``triton.autotune`` times its configs with: it launches
  (compiles) a config once; a config that fails gets an infinite time, as OutOfResources
  does on a GPU, and the autotuner goes on, so every config it tries gets compiled. Every
  timing that succeeds is the same, so the autotuner keeps the FIRST config that compiles
  and fits: that is the config a stand-in launch uses.

Hooks, all Triton extension points: ``driver.set_active``, JITFunction.add_pre_run_hook
(names the config being compiled, and its arguments), ``knobs.compilation.listener``
(finds the PTX and cubin of each compiled kernel) and an autotuner's ``early_config_prune``
(for a scope that tries fewer configs). ``torch.cuda.get_device_properties`` is replaced
(the target's GPU's SMs) for conv2d_relu's split of the weight-gradient reduction.

Importing this module does not import torch or triton; install() does.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A GPU the stand-in driver plays: what Triton compiles for and what limits it checks."""
    capability: int  # major * 10 + minor: Triton's GPUTarget arch (>= 90 compiles sm_XXa)
    shared_memory: int  # bytes per block, opt-in (cudaDevAttrMaxSharedMemoryPerBlockOptin)
    sms: int  # of the GPU named: only the launchers' splits of long reductions read it
    gpu: str


# Every NVIDIA architecture since Ampere that Triton compiles for, named as Triton names the
# PTX target (sm_arch_from_capability: "a" from 9.0 on). Shared memory per block: the CUDA C++
# Programming Guide's table of compute capabilities (163 KiB for 8.0, 99 KiB for 8.6, 8.9 and
# 12.0, 227 KiB for 9.0 and 10.0); SMs: the named GPU's datasheet.
TARGETS = {
    "sm_80": Target(80, 166912, 108, "A100"),
    "sm_86": Target(86, 101376, 72, "A10"),
    "sm_89": Target(89, 101376, 58, "L4"),
    "sm_90a": Target(90, 232448, 132, "H100 SXM"),
    "sm_100a": Target(100, 232448, 148, "B200"),
    "sm_120a": Target(120, 101376, 170, "RTX 5090"),
}
DEFAULT_TARGET = "sm_90a"
GRID_LIMITS = (2**31 - 1, 65535, 65535)

# How many of an autotuner's configs a process compiles:
# "all": every config (as a GPU's autotuner would);
# "first_last": the first (largest tile: the shared-memory limit) and the last (the small
#   fallback): what the compile test needs to prove both ends compile;
# "first_fit": configs in the autotuner's order until one compiles and fits, which is the
#   one the launch then uses (see the module docstring): the cheapest way to get it.
PRUNES = ("all", "first_last", "first_fit")


class SkipConfig(Exception):
    """Raised by the pre-run hook to skip an autotuner trial without compiling it."""


class Recorder:
    """The attempts of the current launch: one per kernel launch or autotuner trial."""

    def __init__(self, prune: str = "all"):
        if prune not in PRUNES:
            raise ValueError(f"prune={prune!r}: expected one of {PRUNES}")
        self.prune = prune
        self.attempts: list[dict] = []
        self.benchmarking = False
        # {kernel: [config values]}: autotuner configs tried only while no earlier trial of
        # the same tuning compiled and fit (bench/gpu_check/precompile.py's fallbacks)
        self.fallbacks: dict[str, list[dict]] = {}
        self.ptx_by_hash: dict[str, str] = {}
        self.cubin_by_hash: dict[str, str] = {}

    def start(self, fn, args, kwargs) -> None:
        """JITFunction pre-run hook: a launch of fn begins (it compiles if not cached)."""
        if (self.prune == "first_fit" and self.benchmarking
                and any(a["kernel"] == fn.__name__ and a["outcome"] == "ok"
                        for a in self.attempts if a["autotuner_trial"])):
            raise SkipConfig(fn.__name__)
        named = dict(zip(fn.arg_names, args), **kwargs)
        if (self.benchmarking and self.tuning_fits(fn.__name__)
                and any(all(named.get(k) == v for k, v in values.items())
                        for values in self.fallbacks.get(fn.__name__, ()))):
            raise SkipConfig(fn.__name__)
        constexprs = {p.name for p in fn.params if p.is_constexpr}
        # The int constexprs (tile sizes, window sizes) and the autotuner's launch options.
        config = {name: named[name] for name in constexprs if type(named.get(name)) is int}
        config = {p.name: config[p.name] for p in fn.params if p.name in config}
        config.update((k, named[k]) for k in ("num_warps", "num_stages") if k in named)
        # The string and bool constexprs: INPUT_PRECISION ("tf32" or "ieee") says which peak
        # applies, a flag such as FLAT_TAPS which loop the kernel runs (bench/static/kernel_work).
        options = {name: named[name] for name in constexprs
                   if type(named.get(name)) in (str, bool)}
        # The runtime scalars (shapes, strides) and the bytes of every distinct tensor
        # argument: what the launch's work and memory traffic are computed from.
        scalars = {name: value for name, value in named.items()
                   if name not in constexprs and type(value) in (int, float)}
        tensors = {}
        for value in named.values():
            if hasattr(value, "data_ptr") and hasattr(value, "nbytes"):
                tensors[value.data_ptr()] = value.nbytes  # a tensor passed twice counts once
        self.attempts.append({"kernel": fn.__name__, "config": config,
                              "autotuner_trial": self.benchmarking, "outcome": None,
                              "options": options, "scalars": scalars,
                              "tensor_bytes": sum(tensors.values())})

    def tuning_fits(self, kernel: str) -> bool:
        """Whether a trial of the autotuner now tuning ``kernel`` compiled and fit: the
        trailing run of its trials (an autotuner tries its configs one after another)."""
        for attempt in reversed(self.attempts):
            if attempt["kernel"] != kernel or not attempt["autotuner_trial"]:
                return False
            if attempt["outcome"] == "ok":
                return True
        return False

    def finish(self, outcome: str, **fields) -> None:
        attempt = self.attempts[-1]
        if attempt["outcome"] is None:
            attempt.update(outcome=outcome, **fields)

    def fail(self, error: BaseException) -> None:
        from triton.runtime.errors import OutOfResources
        if not self.attempts:
            return
        if isinstance(error, OutOfResources):
            self.finish("out of resources", shared=error.required, error=str(error))
        else:
            self.finish("error", error=f"{type(error).__name__}: {error}")

    def on_compile(self, *, src, metadata, metadata_group, **_):
        """knobs.compilation.listener (also called on a cache hit): PTX and cubin files."""
        ptx = next((path for name, path in metadata_group.items() if name.endswith(".ptx")), None)
        cubin = next((path for name, path in metadata_group.items() if name.endswith(".cubin")),
                     None)
        if ptx is not None:
            with open(ptx) as f:
                self.ptx_by_hash[metadata["hash"]] = matrix_instruction(f.read())
        if cubin is not None:
            self.cubin_by_hash[metadata["hash"]] = cubin


def matrix_instruction(ptx: str) -> str:
    """The PTX's first tensor-core instruction, shortened (wgmma.m64n128k16.f32.bf16.bf16,
    mma.m16n8k8.f32.tf32.tf32.f32), else "fma" if it multiply-adds floats, else "-"."""
    found = re.search(r"\b(wgmma\.mma_async|mma\.sync)\.[\w.]*", ptx)
    if found:
        return ".".join(p for p in found.group(0).split(".")
                        if p not in ("mma_async", "sync", "aligned", "row", "col"))
    return "fma" if re.search(r"\bfma\.rn\.f(32|64)\b", ptx) else "-"


def target(name: str) -> Target:
    """TARGETS[name], or a ValueError naming the known ones."""
    if name not in TARGETS:
        raise ValueError(f"unknown compile target {name!r}: expected one of {list(TARGETS)}")
    return TARGETS[name]


def make_driver(recorder: Recorder, plays: Target):
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class CompileOnlyLauncher:
        """launcher_cls: made once per loaded kernel; a call is a launch, not run."""

        def __init__(self, src, metadata):
            self.metadata = metadata

        def __call__(self, grid_0, grid_1, grid_2, *_):
            grid = (grid_0, grid_1, grid_2)
            if any(g > limit for g, limit in zip(grid, GRID_LIMITS)):
                raise RuntimeError(f"grid {grid} exceeds CUDA's limits {GRID_LIMITS}")
            recorder.attempts[-1]["config"].setdefault("num_warps", self.metadata.num_warps)
            recorder.attempts[-1]["config"].setdefault("num_stages", self.metadata.num_stages)
            recorder.finish("ok", shared=self.metadata.shared, grid=grid,
                            mma=recorder.ptx_by_hash.get(self.metadata.hash, "?"),
                            hash=self.metadata.hash,
                            cubin=recorder.cubin_by_hash.get(self.metadata.hash))

    class Utils:
        @staticmethod
        def get_device_properties(device):
            return {"max_shared_mem": plays.shared_memory, "multiprocessor_count": plays.sms,
                    "max_num_regs": 65536, "warpSize": 32}

        @staticmethod
        def load_binary(name, kernel, shared, device):
            # module, function, registers, spills, max threads per block: unknown here
            # (bench/static/cubin_tools.py reads registers and spills from the cubin itself)
            return object(), 0, 0, 0, 1024

        @staticmethod
        def unload_module(module):
            pass

    def benchmark(kernel_call, quantiles=None, **_):
        """The autotuner's timer: compile and "launch" one config; a failure times inf."""
        recorder.benchmarking = True
        try:
            kernel_call()
            return [1.0, 1.0, 1.0]
        except SkipConfig:
            return [math.inf, math.inf, math.inf]
        except Exception as error:  # report every failing config, not just the first
            recorder.fail(error)
            return [math.inf, math.inf, math.inf]
        finally:
            recorder.benchmarking = False

    class CompileOnlyDriver(DriverBase):
        launcher_cls = CompileOnlyLauncher
        utils = Utils()

        @staticmethod
        def is_active():
            return False

        def get_current_target(self):
            return GPUTarget("cuda", plays.capability, 32)

        def get_current_device(self):
            return 0

        def set_current_device(self, device):
            pass

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            import torch
            return torch.device("cpu")

        def map_python_to_cpp_type(self, ty):
            raise NotImplementedError

        def get_benchmarker(self):
            return benchmark

    return CompileOnlyDriver()


def missing_toolchain() -> str | None:
    """Why NVIDIA targets cannot be compiled here (no NVIDIA backend, no ptxas), or None."""
    try:
        from triton.backends import backends
        if "nvidia" not in backends:
            return "Triton's NVIDIA backend is not installed"
        from triton import knobs
        knobs.nvidia.ptxas.path  # raises when no ptxas is found
    except Exception as error:  # noqa: BLE001 - any failure means: cannot compile here
        return f"no ptxas for Triton's NVIDIA backend ({type(error).__name__}: {error})"
    return None


def install(recorder: Recorder, target_name: str = DEFAULT_TARGET) -> None:
    """Make this process compile for ``TARGETS[target_name]`` (an H100 by default) without
    a GPU (see the module docstring)."""
    import types

    import torch
    import triton
    from triton import knobs
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    plays = target(target_name)
    driver.set_active(make_driver(recorder, plays))
    knobs.compilation.listener = recorder.on_compile
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        multi_processor_count=plays.sms, name=f"{plays.gpu} (stand-in)")

    hooked = set()
    for module in kernel_modules():
        for value in vars(module).values():
            if (isinstance(value, triton.runtime.Autotuner) and recorder.prune == "first_last"
                    and not getattr(value, "first_last", False)):
                # of the configs the kernel's own pruner keeps for these arguments
                own = value.early_config_prune
                value.early_config_prune = (
                    lambda configs, nargs, _own=own, **kwargs: _first_last(
                        _own(configs, nargs, **kwargs) if _own else configs))
                value.first_last = True
            while isinstance(value, triton.runtime.Autotuner):
                value = value.fn
            if isinstance(value, JITFunction) and id(value) not in hooked:
                hooked.add(id(value))
                value.add_pre_run_hook(
                    lambda *args, _fn=value, **kwargs: recorder.start(_fn, args, kwargs))


def _first_last(configs: list) -> list:
    return [configs[0], configs[-1]] if len(configs) > 1 else list(configs)


def kernel_modules() -> list:
    """The modules kernels/*.py (alexnet_triton.kernels.*, without the references)."""
    import importlib
    import pkgutil

    import alexnet_triton.kernels as package
    return [importlib.import_module(f"{package.__name__}.{info.name}")
            for info in pkgutil.iter_modules(package.__path__) if not info.ispkg]


def kernel_names() -> list[str]:
    """The @triton.jit functions of kernels/*.py that are kernels (named *_kernel), not
    the helpers they call."""
    from triton.runtime.jit import JITFunction
    return sorted({value.__name__ for module in kernel_modules()
                   for value in vars(module).values()
                   if isinstance(value, JITFunction) and value.__name__.endswith("_kernel")})
