"""The GPUs the benchmarks know: one table of NVIDIA's published figures, and how to pick a row.

Used by the static report (bench/static: its prediction per device), the benchmark report
(bench/suite/report.py: the datasheet beside what a run measured) and the GPU check
(bench/gpu_check: which device it ran on, and the prediction for it). Imports neither torch
nor triton, so anything may import it.

Every figure is NVIDIA's own: the product datasheet for the peaks and the memory bandwidth,
the architecture whitepaper (or, for B200, the CUDA device query) for SMs, L2 and clocks,
and the CUDA C++ Programming Guide's table of compute capabilities for shared memory. The
tensor peaks are DENSE: datasheets print the 2:4-sparse figure, twice the dense one, and
AlexNet's GEMMs are dense. These are peaks on paper, not what a kernel sustains: the static
model takes a share of them (bench/static/h100_model.py), and the GPU check measures its own
ceilings where it has a GPU.

A device is chosen by the name CUDA gives it (``torch.cuda.get_device_name()``, the name
nvidia-smi prints), or by its key here (``--device-model h100-sxm``) where there is no GPU.
An unknown name is an error naming the known ones: no silent nearest guess, since an H100
PCIe has 60% of an H100 SXM's bandwidth and a wrong row would be a wrong prediction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from alexnet_triton.errors import UserError

# Sources (each row's `sources` names the ones its figures come from).
HOPPER_DATASHEET = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
HOPPER_WHITEPAPER = "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper"
H200_PAGE = "https://www.nvidia.com/en-us/data-center/h200/"
A100_DATASHEET = ("https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
                  "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf")
AMPERE_WHITEPAPER = ("https://images.nvidia.com/aem-dam/en-zz/Solutions/data-center/"
                     "nvidia-ampere-architecture-whitepaper.pdf")
L4_DATASHEET = "https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet"
ADA_WHITEPAPER = ("https://images.nvidia.com/aem-dam/Solutions/geforce/ada/"
                  "nvidia-ada-gpu-architecture.pdf")
HGX_PAGE = "https://www.nvidia.com/en-us/data-center/hgx/"  # HGX B200: eight GPUs' totals
# B200's SMs and L2 as CUDA's device query reports them (cudaGetDeviceProperties), quoted in
# pytorch/ao's roofline tables: NVIDIA's Blackwell pages do not print them.
B200_DEVICE_QUERY = "https://github.com/pytorch/ao/pull/4002"
CUDA_GUIDE = ("https://docs.nvidia.com/cuda/cuda-c-programming-guide/"
              "#features-and-technical-specifications")

KIB, MIB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Device:
    """One GPU's published figures. Rates in FLOP/s and bytes/s, sizes in bytes."""

    key: str  # what --device-model takes
    name: str  # as people write it
    cuda_names: tuple  # what torch.cuda.get_device_name() returns for it
    capability: tuple  # (major, minor)
    arch: str  # the target Triton compiles for (sm_90a: Hopper's wgmma/TMA)
    sms: int
    boost_clock_hz: float  # the SMs' maximum clock (nvidia-smi's clocks.max.sm)
    bf16_flops: float  # dense, tensor cores, fp32 accumulation
    tf32_flops: float  # dense, tensor cores
    fp32_flops: float  # CUDA cores (FFMA), no tensor cores
    memory_bytes_per_s: float
    memory_bytes: int
    l2_bytes: int
    shared_per_sm: int  # the SM's shared memory, all resident blocks together
    shared_per_block: int  # one block's maximum (opt-in: cudaDevAttrMaxSharedMemoryPerBlockOptin)
    sources: tuple  # the URLs its figures come from

    @property
    def peak_flops(self) -> dict:
        """{"bf16", "tf32", "fp32"}: FLOP/s, the three rates AlexNet's kernels run at."""
        return {"bf16": self.bf16_flops, "tf32": self.tf32_flops, "fp32": self.fp32_flops}

    def describe(self) -> str:
        return (f"{self.name} ({self.arch}, {self.sms} SMs, {self.bf16_flops / 1e12:,.0f} "
                f"TFLOP/s dense bf16, {self.memory_bytes_per_s / 1e12:.2f} TB/s)")


def _hopper(key, name, cuda_names, sms, clock, bf16, tf32, fp32, bandwidth, memory_gb,
            sources):
    return Device(key, name, cuda_names, (9, 0), "sm_90a", sms, clock, bf16, tf32, fp32,
                  bandwidth, memory_gb * 10**9, 50 * MIB, 228 * KIB, 227 * KIB,
                  sources + (HOPPER_WHITEPAPER, CUDA_GUIDE))


def _a100(key, name, cuda_names, bandwidth, memory_gb, form):
    # A100's whitepaper: 108 SMs, 1,410 MHz boost, 40 MB L2; datasheet: 312 / 156 / 19.5
    # TFLOP/s for every form factor, the bandwidth per form factor and memory size.
    return Device(key, f"A100 {form} {memory_gb} GB", cuda_names, (8, 0), "sm_80", 108, 1.41e9,
                  312e12, 156e12, 19.5e12, bandwidth, memory_gb * 10**9, 40 * MIB, 164 * KIB,
                  163 * KIB, (A100_DATASHEET, AMPERE_WHITEPAPER, CUDA_GUIDE))


DEVICES = (
    # H100 SXM5: 989 bf16 / 494.5 tf32 dense (1,979 / 989 sparse), 67 fp32, 3.35 TB/s HBM3.
    _hopper("h100-sxm", "H100 SXM 80 GB", ("NVIDIA H100 80GB HBM3",), 132, 1.98e9,
            989.4e12, 494.7e12, 66.9e12, 3.35e12, 80, (HOPPER_DATASHEET,)),
    # H100 PCIe: 756 bf16 / 378 tf32 dense (1,513 / 756 sparse), 51 fp32, 2.0 TB/s HBM2e;
    # 114 SMs at 1,755 MHz (the whitepaper's H100 PCIe column).
    _hopper("h100-pcie", "H100 PCIe 80 GB", ("NVIDIA H100 PCIe",), 114, 1.755e9,
            756.5e12, 378e12, 51.2e12, 2.0e12, 80, (HOPPER_DATASHEET,)),
    # H200 SXM: the H100 SXM's chip (132 SMs, same clocks and peaks) with 141 GB of HBM3e
    # at 4.8 TB/s.
    _hopper("h200", "H200 SXM 141 GB", ("NVIDIA H200",), 132, 1.98e9,
            989.4e12, 494.7e12, 66.9e12, 4.8e12, 141, (H200_PAGE,)),
    _a100("a100-sxm-40gb", "A100 SXM 40 GB", ("NVIDIA A100-SXM4-40GB",), 1.555e12, 40, "SXM"),
    _a100("a100-sxm-80gb", "A100 SXM 80 GB", ("NVIDIA A100-SXM4-80GB",), 2.039e12, 80, "SXM"),
    _a100("a100-pcie-40gb", "A100 PCIe 40 GB", ("NVIDIA A100-PCIE-40GB",), 1.555e12, 40, "PCIe"),
    _a100("a100-pcie-80gb", "A100 PCIe 80 GB", ("NVIDIA A100 80GB PCIe",), 1.935e12, 80,
          "PCIe"),
    # L4 (AD104): datasheet 242 bf16 / 120 tf32 sparse -> 121 / 60 dense, 30.3 fp32, 300 GB/s
    # GDDR6, 24 GB; Ada whitepaper: 58 SMs, 2,040 MHz boost, 48 MB L2; sm_89 shared memory.
    Device("l4", "L4 24 GB", ("NVIDIA L4",), (8, 9), "sm_89", 58, 2.04e9, 121e12, 60e12,
           30.3e12, 300e9, 24 * 10**9, 48 * MIB, 100 * KIB, 99 * KIB,
           (L4_DATASHEET, ADA_WHITEPAPER, CUDA_GUIDE)),
    # B200: HGX B200's eight-GPU totals over 8 (BF16 36 PFLOP/s and TF32 18 sparse ->
    # 2.25 / 1.125 dense a GPU, FP32 600 -> 75; 8 TB/s and 180 GB a GPU). 148 SMs, 126.5 MB
    # L2 from the device query; the clock is the FP32 peak over 148 SMs x 128 FMA x 2.
    Device("b200", "B200 180 GB", ("NVIDIA B200",), (10, 0), "sm_100a", 148, 1.98e9, 2.25e15,
           1.125e15, 75e12, 8e12, 180 * 10**9, 126 * MIB + 512 * KIB, 228 * KIB, 227 * KIB,
           (HGX_PAGE, B200_DEVICE_QUERY, CUDA_GUIDE)),
)

BY_KEY = {device.key: device for device in DEVICES}


class UnknownDevice(UserError):
    """A GPU name or --device-model key that is not in the table."""


def _normal(name: str) -> str:
    """Case, spaces, hyphens and underscores ignored: "NVIDIA A100-SXM4-80GB" ==
    "nvidia a100 sxm4 80gb"."""
    return re.sub(r"[\s_-]+", " ", name.strip().lower())


_BY_NAME = {_normal(n): device for device in DEVICES for n in (device.key, *device.cuda_names)}


def known() -> str:
    """The keys and CUDA names the table knows, for an error message."""
    return "; ".join(f"{d.key} ({', '.join(d.cuda_names)})" for d in DEVICES)


def lookup(name: str) -> Device:
    """The row for a CUDA device name or a key; UnknownDevice (one line) otherwise."""
    device = _BY_NAME.get(_normal(name))
    if device is None:
        raise UnknownDevice(f"unknown GPU {name!r}: the device table (bench/devices.py) "
                            f"knows {known()}")
    return device


def find(name: str | None) -> Device | None:
    """The row for a CUDA device name, or None for no name or one not in the table: for a
    report that says 'no datasheet figures for this GPU' rather than stopping."""
    return _BY_NAME.get(_normal(name)) if name else None
