"""The Hopper (sm_90a) numbers the static report predicts with, per device, and the arithmetic.

A prediction, not a measurement: a kernel takes at least the longest of the time its FLOPs
need at the tensor cores' peak, its bytes at HBM bandwidth, and its instructions at one
issue per scheduler per cycle. Nothing here models latency, occupancy stalls, caches or
bank conflicts, so the prediction is a lower bound on what the compiled code can do; the
floor (sass_predict.py) is max(FLOPs / peak, bytes / bandwidth) on all the SMs: what any
code could do at these shapes.

The SASS is sm_90a's, the same for every Hopper part, so one compile predicts for each of
STATIC_DEVICES: only SMs, clock, peaks and bandwidth differ (bench/devices.py, NVIDIA's
figures). A kernel does not sustain a datasheet's peak: the model takes SUSTAINED_COMPUTE and
SUSTAINED_BANDWIDTH of it, the shares that issue 11's 790 TFLOP/s and 4.3 TB/s are of the
H200's datasheet 989 TFLOP/s and 4.8 TB/s. So the H200 model is issue 11's figures, and the
H100 SXM's is the same share of its own 3.35 TB/s: 3.0 TB/s.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bench import devices

# The devices the static report predicts for (sm_90a), the first one its main tables show.
STATIC_DEVICES = ("h100-sxm", "h200")
SUSTAINED_COMPUTE = 790e12 / devices.BY_KEY["h200"].bf16_flops  # 0.80
SUSTAINED_BANDWIDTH = 4.3e12 / devices.BY_KEY["h200"].memory_bytes_per_s  # 0.90

SCHEDULERS_PER_SM = 4
# Dense FMA per cycle per SM on Hopper (the tensor cores, or the CUDA cores for FFMA).
FMA_PER_CYCLE_PER_SM = {"bf16": 2048, "tf32": 1024, "fp32": 128}
# Per SM on compute capability 9.0 (CUDA C++ Programming Guide, technical specifications).
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32


@dataclass(frozen=True)
class Model:
    """What the prediction of one device uses: its SMs and clock, and the peaks and bandwidth
    the model takes as sustained (a share of the datasheet's, or measured ones)."""

    key: str
    name: str
    sms: int
    clock_hz: float  # the issue term's cycles: the SMs' boost clock
    peak_flops: dict  # {"bf16", "tf32", "fp32"}: FLOP/s
    bytes_per_s: float
    shared_per_sm: int
    basis: str  # where the peaks and the bandwidth come from

    @classmethod
    def of(cls, device: devices.Device) -> "Model":
        if device.capability != (9, 0):
            raise devices.UnknownDevice(
                f"the static report's SASS is sm_90a: it predicts for Hopper only ("
                + ", ".join(d.key for d in devices.DEVICES if d.capability == (9, 0))
                + f"), not {device.name} ({device.arch})")
        return cls(device.key, device.name, device.sms, device.boost_clock_hz,
                   {k: v * SUSTAINED_COMPUTE for k, v in device.peak_flops.items()},
                   device.memory_bytes_per_s * SUSTAINED_BANDWIDTH, device.shared_per_sm,
                   f"{SUSTAINED_COMPUTE:.0%} of the datasheet's peaks, "
                   f"{SUSTAINED_BANDWIDTH:.0%} of its bandwidth")

    def measured(self, bf16_flops: float | None, bytes_per_s: float | None) -> "Model":
        """This model with a GPU's measured ceilings in place of the datasheet shares where
        there are any: the bf16 matmul rate and the copy bandwidth (tf32 and fp32 are not
        measured and keep the datasheet share)."""
        peaks = dict(self.peak_flops, **({"bf16": bf16_flops} if bf16_flops else {}))
        return Model(self.key, self.name, self.sms, self.clock_hz, peaks,
                     bytes_per_s or self.bytes_per_s, self.shared_per_sm,
                     "measured " + " and ".join(
                         n for n, v in (("bf16 matmul", bf16_flops), ("copy", bytes_per_s))
                         if v))

    def figures(self) -> dict:
        """The model's numbers, as the report records them."""
        return {"name": self.name, "short": " ".join(self.name.split()[:2]), "sms": self.sms,
                "clock_hz": self.clock_hz,
                "peak_flops": self.peak_flops, "bytes_per_s": self.bytes_per_s,
                "basis": self.basis}


MODELS = {key: Model.of(devices.BY_KEY[key]) for key in STATIC_DEVICES}
DEFAULT = MODELS[STATIC_DEVICES[0]]
# The default device's figures, by their old names (the budgets count programs against SMs:
# 132 on every device of STATIC_DEVICES).
SMS = DEFAULT.sms
PEAK_FLOPS = DEFAULT.peak_flops
SHARED_PER_SM = DEFAULT.shared_per_sm


def precision(opcode: str) -> str | None:
    """Which peak a matrix opcode runs at: "bf16" (BF16/F16 tensor cores), "tf32", "fp32"
    (FFMA), or None (no floating-point math unit we model)."""
    if opcode == "FFMA":
        return "fp32"
    modifiers = opcode.split(".")
    if "TF32" in modifiers:
        return "tf32"
    if "BF16" in modifiers or "F16" in modifiers:
        return "bf16"
    return None


def fma_per_warp_instruction(opcode: str) -> int:
    """Multiply-adds one warp's instruction contributes.

    HGMMA.64x128x16 (wgmma) is issued by each of the 4 warps of a warpgroup and together
    they do one 64x128x16 product: a quarter each. HMMA.16816 (mma.sync) is one warp's
    16x8x16 product. FFMA: 32 lanes, one FMA each.
    """
    if opcode == "FFMA":
        return 32
    shape = opcode.split(".")[1] if "." in opcode else ""
    if opcode.startswith("HGMMA."):
        m, n, k = map(int, re.fullmatch(r"(\d+)x(\d+)x(\d+)", shape).groups())
        return m * n * k // 4
    if opcode.startswith("HMMA."):
        m, n, k = 16, 8, int(shape[3:])  # 16816 -> m16 n8 k16, 1688 -> k8
        return m * n * k
    raise ValueError(f"no FMA count for {opcode}")


def math_cycles(opcode: str) -> float:
    """Cycles one warp's instruction keeps its scheduler's math unit busy: a scheduler's
    share of the SM's rate is FMA_PER_CYCLE_PER_SM / 4. One m64n128k16: 64 cycles."""
    rate = FMA_PER_CYCLE_PER_SM[precision(opcode)] / SCHEDULERS_PER_SM
    return fma_per_warp_instruction(opcode) / rate


def issue_ratio(loop_instructions: int, math_opcodes: dict[str, int], warps: int) -> float | None:
    """(instructions x warps per scheduler) / (math-unit cycles of the loop's MMAs).

    Every warp of a program runs the loop, the warps share the 4 schedulers, and each warp's
    MMAs occupy its scheduler's tensor core (or CUDA cores, for FFMA): above 1 the
    schedulers cannot issue the loop as fast as the math units finish it.
    """
    per_scheduler = warps / SCHEDULERS_PER_SM
    cycles = sum(math_cycles(op) * count for op, count in math_opcodes.items()) * per_scheduler
    if cycles == 0:
        return None
    return loop_instructions * per_scheduler / cycles


def resident_programs(registers: int, warps: int, shared_bytes: int,
                      model: Model = DEFAULT) -> int:
    """Programs an SM holds at once: registers (allocated per warp in 256s), shared memory
    (each resident block also reserves 1 KiB), warp slots and block slots, whichever runs
    out first."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    limits = [REGISTERS_PER_SM // max(per_warp * warps, 1), MAX_WARPS_PER_SM // warps,
              MAX_BLOCKS_PER_SM, model.shared_per_sm // (shared_bytes + 1024)]
    return max(0, min(limits))


def predicted_seconds(flops: float, bytes_moved: float, math_precision: str | None,
                      issue_slots: float, programs: int, model: Model = DEFAULT) -> dict:
    """{"compute", "memory", "issue", "predicted"} in seconds on ``model``'s device.

    issue_slots: warp-instructions the whole launch issues; an SM's 4 schedulers issue one
    each per cycle, on min(programs, SMs) SMs. The compute term is at the peak of the SMs
    in use too: a grid of 32 programs has 32 SMs' tensor cores (the floor has all 132).
    """
    sms = max(1, min(programs, model.sms))
    compute = (flops / (model.peak_flops[math_precision] * sms / model.sms)
               if flops and math_precision else 0.0)
    memory = bytes_moved / model.bytes_per_s
    issue = issue_slots / SCHEDULERS_PER_SM / model.clock_hz / sms
    return {"compute": compute, "memory": memory, "issue": issue,
            "predicted": max(compute, memory, issue)}
