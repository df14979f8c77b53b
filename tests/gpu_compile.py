"""Compile every Triton kernel that the launchers launch, for an H100 (sm_90), with no GPU.

Run as ``python tests/gpu_compile.py VARIANT REPORT.json`` with TRITON_INTERPRET unset (one
variant per process: Triton picks interpreter or compiler at import). The process calls
the REAL launchers of kernels/*.py on AlexNet-shaped CPU tensors, so Triton specializes,
compiles (to PTX and, with the bundled ptxas, to a cubin) and "launches" exactly what a
GPU run would, autotuner included. Nothing executes: ``CompileOnlyDriver`` below stands
in for Triton's active driver and reports an H100:

- ``get_current_target`` says GPUTarget("cuda", 90, 32), so the NVIDIA backend compiles;
- ``utils.get_device_properties`` gives the H100's 227 KiB of shared memory per block, so
  Triton's own check (CompiledKernel._init_handles) raises OutOfResources as on the GPU;
- ``launcher_cls`` records the launch (and checks the grid against CUDA's limits) instead
  of running it; tensors are never read, so they are ``torch.empty`` and cost nothing;
- ``get_benchmarker`` is what ``triton.autotune`` times its configs with: it launches
  (= compiles) each config once and reports the failures, so every config the autotuner
  would try (after its pruning) is compiled. A config that fails gets an infinite time, as
  OutOfResources does on a GPU, so the autotuner goes on to the next one.

Hooks used, all public Triton extension points: ``driver.set_active``, a JITFunction's
``add_pre_run_hook`` (to name the config being compiled) and ``knobs.compilation.listener``
(to read each compiled kernel's PTX). Besides, ``torch.cuda.get_device_properties`` is
replaced (132 SMs) for conv2d_relu's split of the weight-gradient reduction.

The report is JSON: for each launch, the kernels it launched and, for each, every config
tried with its outcome ("ok", "out of resources", "error"), shared memory, and the matrix
instruction in its PTX (wgmma, mma.sync or fma).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import traceback

# What one variant is: the tensor dtype and the tf32 switches of torch.backends that the
# launchers read (linear: cuda.matmul.allow_tf32; conv: cudnn.allow_tf32).
VARIANTS = {
    "float32": ("float32", False),  # "ieee" float32 dots
    "float32-tf32": ("float32", True),
    "bfloat16": ("bfloat16", False),
    "float16": ("float16", False),
    "float64": ("float64", False),
}

BATCH = 2  # only divisibility specializes (by 16, and == 1); a real batch adds nothing here

# AlexNet (paper, section 3.5), as [N, C, H, W] inputs and the layers' hyper-parameters.
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


def launch_names() -> list[str]:
    """Every launch the report covers, in order (importable without torch or triton)."""
    names = []
    for conv in CONVS:
        names += [f"{conv}.forward", f"{conv}.backward_input", f"{conv}.backward_weight"]
    for lrn in LRNS:
        names += [f"{lrn}.forward", f"{lrn}.backward"]
    for pool in POOLS:
        names += [f"{pool}.forward", f"{pool}.backward"]
    for fc in FCS:
        names += [f"{fc}.forward", f"{fc}.backward_input", f"{fc}.backward_weight"]
    names += ["dropout"]
    return names


# --------------------------------------------------------------------------------------
# The stand-in driver (imports triton: only in the compiling process)
# --------------------------------------------------------------------------------------

H100_SHARED_MEMORY = 232448  # bytes per block with opt-in: 227 KiB (cudaDevAttrMaxSharedMemoryPerBlockOptin)
H100_SMS = 132
GRID_LIMITS = (2**31 - 1, 65535, 65535)


class Recorder:
    """The attempts (one per kernel launch or autotuner trial) of the current launch."""

    def __init__(self):
        self.attempts: list[dict] = []
        self.benchmarking = False
        self.ptx_by_hash: dict[str, dict] = {}

    def start(self, kernel_name: str, kwargs: dict) -> None:
        config = {k: v for k, v in kwargs.items()
                  if k.startswith("BLOCK") or k in ("num_warps", "num_stages")}
        self.attempts.append({"kernel": kernel_name, "config": config,
                              "autotuner_trial": self.benchmarking, "outcome": None})

    def finish(self, outcome: str, **fields) -> None:
        attempt = self.attempts[-1]
        if attempt["outcome"] is None:
            attempt.update(outcome=outcome, **fields)

    def fail(self, error: BaseException) -> None:
        from triton.runtime.errors import OutOfResources
        if isinstance(error, OutOfResources):
            self.finish("out of resources", shared=error.required, error=str(error))
        else:
            self.finish("error", error=f"{type(error).__name__}: {error}")

    def on_compile(self, *, src, metadata, metadata_group, **_):
        """knobs.compilation.listener: the PTX's matrix instruction, per compiled kernel."""
        ptx = next((path for name, path in metadata_group.items() if name.endswith(".ptx")), None)
        text = open(ptx).read() if ptx else ""
        self.ptx_by_hash[metadata["hash"]] = {"mma": matrix_instruction(text)}


def matrix_instruction(ptx: str) -> str:
    """The PTX's first tensor-core instruction (e.g. wgmma.m64n128k16.f32.bf16.bf16),
    else "fma" when it multiply-adds at all, else "-"."""
    found = re.search(r"\b(wgmma\.mma_async|mma\.sync)\.[\w.]*", ptx)
    if found:
        parts = [p for p in found.group(0).split(".")
                 if p not in ("mma_async", "sync", "aligned", "row", "col")]
        return ".".join(parts)
    return "fma" if re.search(r"\bfma\.rn\.f(32|64)\b", ptx) else "-"


def make_driver(recorder: Recorder):
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class CompileOnlyLauncher:
        """launcher_cls: built once per loaded kernel; a call is one launch, not run."""

        def __init__(self, src, metadata):
            self.metadata = metadata

        def __call__(self, grid_0, grid_1, grid_2, *_):
            grid = (grid_0, grid_1, grid_2)
            if any(g > limit for g, limit in zip(grid, GRID_LIMITS)):
                raise RuntimeError(f"grid {grid} exceeds CUDA's limits {GRID_LIMITS}")
            ptx = recorder.ptx_by_hash.get(self.metadata.hash, {"mma": "?"})
            recorder.finish("ok", shared=self.metadata.shared, grid=grid, **ptx)

    class Utils:
        @staticmethod
        def get_device_properties(device):
            return {"max_shared_mem": H100_SHARED_MEMORY, "multiprocessor_count": H100_SMS,
                    "max_num_regs": 65536, "warpSize": 32}

        @staticmethod
        def load_binary(name, kernel, shared, device):
            # module, function, registers, spills, max threads per block (not known here)
            return object(), 0, 0, 0, 1024

        @staticmethod
        def unload_module(module):
            pass

    def benchmark(kernel_call, quantiles=None, **_):
        """The autotuner's timer: compile and "launch" one config; failures time as inf."""
        recorder.benchmarking = True
        try:
            kernel_call()
            return [1.0, 1.0, 1.0]
        except Exception as error:  # every failing config is reported, not just the first
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

        def get_device_interface(self):
            import torch
            return torch.cuda

        def map_python_to_cpp_type(self, ty):
            raise NotImplementedError

        def get_benchmarker(self):
            return benchmark

        def get_empty_cache_for_benchmark(self):
            raise NotImplementedError

        def clear_cache(self, cache):
            pass

    return CompileOnlyDriver()


def install(recorder: Recorder) -> None:
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

    from alexnet_triton.kernels import conv2d_relu, dropout, linear, lrn, max_pool2d
    seen = set()
    for module in (conv2d_relu, dropout, linear, lrn, max_pool2d):
        for value in vars(module).values():
            while isinstance(value, triton.runtime.Autotuner):
                value = value.fn
            if isinstance(value, JITFunction) and id(value) not in seen:
                seen.add(id(value))
                value.add_pre_run_hook(
                    lambda *args, _name=value.__name__, **kwargs: recorder.start(_name, kwargs))


# --------------------------------------------------------------------------------------
# The launches: the launchers on AlexNet's shapes
# --------------------------------------------------------------------------------------


def launches(dtype):
    """{launch name: a function that calls the launcher}, in launch_names() order."""
    import torch
    from alexnet_triton.kernels import conv2d_relu, dropout, linear, lrn, max_pool2d

    def empty(*shape, dtype=dtype):
        return torch.empty(shape, dtype=dtype)

    calls = {}
    for name, (c, h, k, r, stride, pad, groups) in CONVS.items():
        p = (h + 2 * pad - r) // stride + 1
        x, w, b = empty(BATCH, c, h, h), empty(k, c // groups, r, r), empty(k)
        y = empty(BATCH, k, p, p)
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
                empty(*x.shape[:2], o, o), empty(*x.shape[:2], o, o, dtype=torch.int8),
                list(x.shape), [3, 3], [2, 2]))
    seed = torch.zeros(1, dtype=torch.int64)
    for name, (k, n, relu) in FCS.items():
        x, w, b, y = empty(BATCH, k), empty(n, k), empty(n), empty(BATCH, n)
        p, s = (DROPOUT_P, seed) if relu else (0.0, None)
        out = y if relu else None
        calls[f"{name}.forward"] = (
            lambda x=x, w=w, b=b, relu=relu, p=p, s=s: linear.linear_forward(x, w, b, relu, p, s))
        calls[f"{name}.backward_input"] = (
            lambda y=y, out=out, w=w, p=p: linear.linear_backward_input(y, out, w, p))
        calls[f"{name}.backward_weight"] = (
            lambda y=y, out=out, x=x, p=p: linear.linear_backward_weight(y, out, x, p))
    calls["dropout"] = lambda: dropout.dropout(empty(BATCH, 4096), DROPOUT_P, seed)
    assert list(calls) == launch_names()
    return calls


def run_variant(variant: str) -> dict:
    """Compile every launch of one variant; {launch name: {"attempts": [...], "error": ...}}."""
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("gpu_compile needs TRITON_INTERPRET unset: it compiles for the GPU")
    import torch

    dtype_name, tf32 = VARIANTS[variant]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    recorder = Recorder()
    install(recorder)
    report = {}
    for name, call in launches(getattr(torch, dtype_name)).items():
        recorder.attempts = []
        error = None
        try:
            call()
        except Exception as exc:
            recorder.fail(exc)  # a launch's final run failing: every config failed
            error = "".join(traceback.format_exception_only(exc)).strip()
        report[name] = {"attempts": recorder.attempts, "error": error}
    return report


if __name__ == "__main__":
    variant, path = sys.argv[1:]
    with open(path, "w") as f:
        json.dump(run_variant(variant), f, indent=1)
