"""Phase 1: what the check runs on, and the GPU's two ceilings measured on it.

GPU name, multiprocessors, L2, memory, driver, torch/triton/CUDA/cuDNN versions and the
clocks nvidia-smi reads; the GPU's row of bench/devices.py, found by its name (a GPU the table
does not know is said so, by a skipped check naming the known ones, and the check goes on:
only the datasheet figures and the static prediction are missing then); then a [8192]^3
bf16 matmul (the dense bf16 rate) and a 1 GiB
device-to-device copy (bytes read plus written), each the median of timed repeats after a
warm-up, measured with CUDA events.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from bench.gpu_check.cli import phase_main
from bench.gpu_check.record import PASS, SKIP, PhaseRecord

SMI_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem",
              "power.draw", "power.limit", "temperature.gpu", "memory.total", "memory.used",
              "compute_mode")
MATMUL_SIZE = 8192
COPY_BYTES = 2**30


def nvidia_smi() -> dict:
    if shutil.which("nvidia-smi") is None:
        return {"error": "nvidia-smi is not on the PATH"}
    result = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return {"error": result.stderr.strip()[-500:]}
    first_gpu = result.stdout.strip().splitlines()[0]
    return dict(zip(SMI_FIELDS, (v.strip() for v in first_gpu.split(","))))


def median_ms(call, warmup: int, repeats: int) -> float:
    import torch

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def matmul_ms(device) -> float:
    import torch

    generator = torch.Generator(device).manual_seed(0)
    a, b = (torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=torch.bfloat16,
                        generator=generator) for _ in range(2))
    out = torch.empty_like(a)
    return median_ms(lambda: torch.mm(a, b, out=out), warmup=3, repeats=10)


def copy_ms(device) -> float:
    import torch

    source = torch.randn(COPY_BYTES // 4, device=device,
                         generator=torch.Generator(device).manual_seed(0))
    target = torch.empty_like(source)
    return median_ms(lambda: target.copy_(source), warmup=3, repeats=10)


def ceilings() -> dict:
    import torch

    device = torch.device("cuda")
    matmul, copy = matmul_ms(device), copy_ms(device)
    return {"matmul_bf16_tflops": 2 * MATMUL_SIZE**3 / matmul / 1e9,
            "copy_tb_per_s": 2 * COPY_BYTES / copy / 1e9,
            "matmul_bf16_ms": matmul, "copy_ms": copy}


def run(record: PhaseRecord, args) -> None:
    import numpy
    import torch
    import triton

    record.info(python=platform.python_version(), torch=torch.__version__,
                triton=triton.__version__, numpy=numpy.__version__,
                torch_cuda=torch.version.cuda, platform=platform.platform(),
                executable=sys.executable, cpu_count=os.cpu_count())
    if not torch.cuda.is_available():
        record.check("gpu", SKIP, reason="no CUDA device" + (" (dry run)" if args.dry_run else ""))
        return
    properties = torch.cuda.get_device_properties(0)
    record.info(gpu=properties.name, sms=properties.multi_processor_count,
                l2_bytes=getattr(properties, "L2_cache_size", None),
                gpu_memory_bytes=properties.total_memory,
                capability=f"{properties.major}.{properties.minor}",
                cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count(),
                nvidia_smi_before=nvidia_smi())
    record.check("gpu", PASS, gpu=properties.name)
    from bench import devices  # imports alexnet_triton: after phase_main's bootstrap

    try:
        device = devices.lookup(properties.name)
    except devices.UnknownDevice as unknown:
        record.check("device table", SKIP, reason=str(unknown))
    else:
        record.info(device_model=device.key, datasheet_bf16_tflops=device.bf16_flops / 1e12,
                    datasheet_tb_per_s=device.memory_bytes_per_s / 1e12)
        record.check("device table", PASS, device_model=device.key)
    measured = record.guarded("ceilings", ceilings)
    if measured is not None:
        record.info(**measured, nvidia_smi_after=nvidia_smi())
        record.check("ceilings", PASS, **{k: round(v, 3) for k, v in measured.items()})


if __name__ == "__main__":
    phase_main("environment", run)
