"""Compile every Triton kernel that the launchers launch, for an H100 (sm_90), with no GPU.

``python tests/gpu_compile.py VARIANT SCOPE REPORT.json`` runs, with TRITON_INTERPRET unset
(Triton picks interpreter or compiler at import, so one variant per process), the REAL
launchers of kernels/*.py on AlexNet-shaped CPU tensors: Triton specializes, compiles (to
PTX, and with its bundled ptxas to a cubin) and "launches" exactly what a GPU run would,
the autotuner included. Nothing executes. ``CompileOnlyDriver`` stands in for Triton's
active driver and plays an H100:

- ``get_current_target`` is GPUTarget("cuda", 90, 32), so the NVIDIA backend compiles;
- ``utils.get_device_properties`` gives the H100's 227 KiB of shared memory per block, so
  Triton's own check (CompiledKernel._init_handles) raises OutOfResources as on the GPU;
- ``launcher_cls`` records each launch (and checks the grid against CUDA's limits)
  instead of running it, so tensors are never read: they are ``torch.empty``;
- ``get_benchmarker`` is what ``triton.autotune`` times its configs with: it launches
  (compiles) a config once; a config that fails gets an infinite time, as OutOfResources
  does on a GPU, and the autotuner goes on, so every config it tries gets compiled. Any
  failure is recorded (on a GPU a compile error, unlike OutOfResources, would abort).

Hooks, all Triton extension points: ``driver.set_active``, JITFunction.add_pre_run_hook
(names the config being compiled), ``knobs.compilation.listener`` (reads the PTX) and,
for the quick scope, an autotuner's ``early_config_prune``. ``torch.cuda.get_device_properties``
is replaced (132 SMs) for conv2d_relu's split of the weight-gradient reduction.

Compiled kernels land in Triton's on-disk cache (keyed by kernel source, specialization
and target), so only kernels that changed are compiled again.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import traceback

# A variant is a tensor dtype and the tf32 switches the launchers read
# (linear: torch.backends.cuda.matmul.allow_tf32; conv: torch.backends.cudnn.allow_tf32).
VARIANTS = {  # name: (dtype, matmul.allow_tf32, cudnn.allow_tf32)
    "float32": ("float32", False, True),  # PyTorch's defaults: ieee linear, tf32 conv
    "bfloat16": ("bfloat16", False, True),
    "float64": ("float64", False, True),
    "float32-ieee": ("float32", False, False),
    "float32-tf32": ("float32", True, True),
    "float16": ("float16", False, True),
}

BATCH = 2  # only divisibility specializes (by 16, and == 1)

# AlexNet (paper, section 3.5): the inputs [N, C, H, W] and hyper-parameters of its layers.
CONVS = {  # name: (C, H, kernels K, kernel size R, stride, padding, groups)
    "conv1": (3, 224, 96, 11, 4, 2, 1),
    "conv2": (96, 27, 256, 5, 1, 2, 2),
    "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 256, 3, 1, 1, 2),
}
LRNS = {"lrn1": (96, 55, 2), "lrn2": (256, 27, 1)}  # name: (C, H, groups)
POOLS = {"pool1": (96, 55), "pool2": (256, 27), "pool5": (256, 13)}  # name: (C, H)
FCS = {"fc6": (9216, 4096, True), "fc7": (4096, 4096, True), "fc8": (4096, 1000, False)}
DROPOUT_P = 0.5
AUGMENT = (256, 224)  # the training images' side, and the crop's

# Two scopes. "full": every variant, every layer, every config the autotuner tries.
# "quick" (the default, about 2 minutes on 2 cores with a cold Triton cache): three
# variants; one layer per kernel code path (conv2: groups 2; fc6: bias, ReLU and dropout
# forward, masked and scaled backward; fc8: neither); and of each autotuner's configs the
# first (largest tile: the shared-memory limit) and the last (the small fallback).
SCOPES = {
    "quick": (("float32", "bfloat16", "float64"),
              ("conv2", "lrn1", "pool1", "fc6", "fc8", "dropout", "augment")),
    "full": (tuple(VARIANTS), (*CONVS, *LRNS, *POOLS, *FCS, "dropout", "augment")),
}


def launch_names(scope: str = "full") -> list[str]:
    """The launches of a scope, in order (importable without torch or triton)."""
    layers = SCOPES[scope][1]
    names = []
    for conv in CONVS:
        names += [f"{conv}.forward", f"{conv}.backward_input", f"{conv}.backward_weight"]
    for layer in (*LRNS, *POOLS):
        names += [f"{layer}.forward", f"{layer}.backward"]
    for fc in FCS:
        names += [f"{fc}.forward", f"{fc}.backward_input", f"{fc}.backward_weight"]
    names += ["dropout", "augment"]
    return [name for name in names if name.split(".")[0] in layers]


# --------------------------------------------------------------------------------------
# The stand-in driver (imports triton: only in the compiling process)
# --------------------------------------------------------------------------------------

H100_SHARED_MEMORY = 232448  # bytes per block, opt-in (cudaDevAttrMaxSharedMemoryPerBlockOptin)
H100_SMS = 132
GRID_LIMITS = (2**31 - 1, 65535, 65535)


class Recorder:
    """The attempts of the current launch: one per kernel launch or autotuner trial."""

    def __init__(self):
        self.attempts: list[dict] = []
        self.benchmarking = False
        self.ptx_by_hash: dict[str, str] = {}

    def start(self, fn, args, kwargs) -> None:
        """JITFunction pre-run hook: a launch of fn begins (it compiles if not cached)."""
        named = dict(zip(fn.arg_names, args), **kwargs)
        # The int constexprs (tile sizes, window sizes) and the autotuner's launch options.
        config = {p.name: named[p.name] for p in fn.params if p.is_constexpr
                  and type(named.get(p.name)) is int}
        config.update((k, named[k]) for k in ("num_warps", "num_stages") if k in named)
        self.attempts.append({"kernel": fn.__name__, "config": config,
                              "autotuner_trial": self.benchmarking, "outcome": None})

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
        """knobs.compilation.listener: the matrix instruction of each compiled kernel."""
        ptx = next((path for name, path in metadata_group.items() if name.endswith(".ptx")), None)
        with open(ptx) as f:
            self.ptx_by_hash[metadata["hash"]] = matrix_instruction(f.read())


def matrix_instruction(ptx: str) -> str:
    """The PTX's first tensor-core instruction, shortened (wgmma.m64n128k16.f32.bf16.bf16,
    mma.m16n8k8.f32.tf32.tf32.f32), else "fma" if it multiply-adds floats, else "-"."""
    found = re.search(r"\b(wgmma\.mma_async|mma\.sync)\.[\w.]*", ptx)
    if found:
        return ".".join(p for p in found.group(0).split(".")
                        if p not in ("mma_async", "sync", "aligned", "row", "col"))
    return "fma" if re.search(r"\bfma\.rn\.f(32|64)\b", ptx) else "-"


def make_driver(recorder: Recorder):
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
                            mma=recorder.ptx_by_hash.get(self.metadata.hash, "?"))

    class Utils:
        @staticmethod
        def get_device_properties(device):
            return {"max_shared_mem": H100_SHARED_MEMORY, "multiprocessor_count": H100_SMS,
                    "max_num_regs": 65536, "warpSize": 32}

        @staticmethod
        def load_binary(name, kernel, shared, device):
            # module, function, registers, spills, max threads per block: unknown here
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
            return GPUTarget("cuda", 90, 32)

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


def install(recorder: Recorder, scope: str) -> None:
    """Make this process compile for an H100 without one (see the module docstring)."""
    import types

    import torch
    import triton
    from triton import knobs
    from triton.runtime.driver import driver
    from triton.runtime.jit import JITFunction

    driver.set_active(make_driver(recorder))
    knobs.compilation.listener = recorder.on_compile
    torch.cuda.get_device_properties = lambda device=None: types.SimpleNamespace(
        multi_processor_count=H100_SMS, name="H100 (stand-in)")

    hooked = set()
    for module in kernel_modules():
        for value in vars(module).values():
            if isinstance(value, triton.runtime.Autotuner) and scope == "quick":
                value.early_config_prune = lambda configs, nargs, **_: [configs[0], configs[-1]]
            while isinstance(value, triton.runtime.Autotuner):
                value = value.fn
            if isinstance(value, JITFunction) and id(value) not in hooked:
                hooked.add(id(value))
                value.add_pre_run_hook(
                    lambda *args, _fn=value, **kwargs: recorder.start(_fn, args, kwargs))


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


# --------------------------------------------------------------------------------------
# The launches: the launchers on AlexNet's shapes
# --------------------------------------------------------------------------------------


def launches(dtype, scope: str):
    """{launch name: a function that calls the launcher}, as launch_names(scope)."""
    import torch
    from alexnet_triton.kernels import augment, conv2d_relu, dropout, linear, lrn, max_pool2d

    def empty(*shape, dtype=dtype):
        return torch.empty(shape, dtype=dtype)

    calls = {}
    for name, (c, h, k, r, stride, pad, groups) in CONVS.items():
        p = (h + 2 * pad - r) // stride + 1
        x, w, b = empty(BATCH, c, h, h), empty(k, c // groups, r, r), empty(k)
        y = empty(BATCH, k, p, p)  # the output, and the gradient of the output
        conv = ([stride, stride], [pad, pad], groups)
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, conv=conv: conv2d_relu.conv2d_relu_forward(x, w, b, *conv))
        calls[f"{name}.backward_input"] = (
            lambda y=y, w=w, x=x, conv=conv: conv2d_relu.conv2d_relu_backward_input(
                y, y, w, list(x.shape), *conv))
        calls[f"{name}.backward_weight"] = (
            lambda y=y, x=x, w=w, conv=conv: conv2d_relu.conv2d_relu_backward_weight(
                y, y, x, list(w.shape), *conv))
    for name, (c, h, groups) in LRNS.items():
        a = empty(BATCH, c, h, h)
        calls[f"{name}.forward"] = lambda a=a, g=groups: lrn.lrn_forward(a, 5, 1e-4, 0.75, 2.0, g)
        calls[f"{name}.backward"] = (
            lambda a=a, g=groups: lrn.lrn_backward(a, a, 5, 1e-4, 0.75, 2.0, g))
    for name, (c, h) in POOLS.items():
        x = empty(BATCH, c, h, h)
        o = (h - 3) // 2 + 1
        calls[f"{name}.forward"] = lambda x=x: max_pool2d.max_pool2d_forward(x, [3, 3], [2, 2])
        calls[f"{name}.backward"] = (
            lambda x=x, o=o: max_pool2d.max_pool2d_backward(
                empty(BATCH, x.shape[1], o, o), empty(BATCH, x.shape[1], o, o, dtype=torch.int8),
                list(x.shape), [3, 3], [2, 2]))
    seed = torch.zeros(1, dtype=torch.int64)
    for name, (k, n, relu) in FCS.items():
        x, w, b, y = empty(BATCH, k), empty(n, k), empty(n), empty(BATCH, n)
        # fc6, fc7: ReLU and dropout, whose backward masks with the output; fc8: neither.
        p, s, out = (DROPOUT_P, seed, y) if relu else (0.0, None, None)
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, relu=relu, p=p, s=s: linear.linear_forward(x, w, b, relu, p, s))
        calls[f"{name}.backward_input"] = (
            lambda y=y, out=out, w=w, p=p: linear.linear_backward_input(y, out, w, p))
        calls[f"{name}.backward_weight"] = (
            lambda y=y, out=out, x=x, p=p: linear.linear_backward_weight(y, out, x, p))
    calls["dropout"] = lambda: dropout.dropout(empty(BATCH, 4096), DROPOUT_P, seed)
    side, crop = AUGMENT  # uint8 images in, float32 out, whatever the variant
    offsets = torch.zeros(BATCH, dtype=torch.int32)  # read on the host: must be in range
    calls["augment"] = lambda: augment.augment(
        empty(BATCH, 3, side, side, dtype=torch.uint8), empty(3, side, side, dtype=torch.float32),
        offsets, offsets, offsets, empty(BATCH, 3, dtype=torch.float32), crop)
    return {name: calls[name] for name in launch_names(scope)}


def run_variant(variant: str, scope: str) -> dict:
    """Compile every launch of one variant: {"launches": {launch: {"attempts", "error",
    "seconds"}}, "kernels": kernel_names()}."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("gpu_compile needs TRITON_INTERPRET unset: it compiles for the GPU")
    import torch

    dtype, matmul_tf32, cudnn_tf32 = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    recorder = Recorder()
    install(recorder, scope)
    report = {}
    for name, call in launches(getattr(torch, dtype), scope).items():
        recorder.attempts = []
        error = None
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # the launch failed: its last (or only) config did
            recorder.fail(exc)
            error = "".join(traceback.format_exception_only(exc)).strip()
        report[name] = {"attempts": recorder.attempts, "error": error,
                        "seconds": round(time.perf_counter() - start, 1)}
    return {"launches": report, "kernels": kernel_names()}


def first_config_table(reports: dict) -> str:
    """Markdown: per launch, kernel and variant, the matrix instruction of the first config
    that fits, and the shared memory of the first config (marked "over" if it does not)."""
    rows = {}
    for variant, report in reports.items():
        for launch, entry in report.items():
            by_kernel = {}
            for attempt in entry["attempts"]:
                by_kernel.setdefault(attempt["kernel"], []).append(attempt)
            for kernel, attempts in by_kernel.items():
                first = attempts[0]
                fits = next((a for a in attempts if a["outcome"] == "ok"), None)
                shared = "?" if first.get("shared") is None else round(first["shared"] / 1024)
                over = " over" if first["outcome"] == "out of resources" else ""
                rows.setdefault((launch, kernel), {})[variant] = (
                    f"{fits['mma'] if fits else first['outcome']}; {shared} KiB{over}")
    variants = list(reports)
    lines = ["| launch | kernel | " + " | ".join(variants) + " |",
             "|---" * (len(variants) + 2) + "|"]
    for (launch, kernel), cells in rows.items():
        lines.append(f"| {launch} | {kernel} | "
                     + " | ".join(cells.get(v, "") for v in variants) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    variant, scope, path = sys.argv[1:]
    with open(path, "w") as f:
        json.dump(run_variant(variant, scope), f, indent=1)
