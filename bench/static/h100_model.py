"""The H100/H200 (SXM) numbers the static report predicts with, and the arithmetic on them.

A prediction, not a measurement: a kernel takes at least the longest of the time its FLOPs
need at the tensor cores' peak, its bytes at HBM bandwidth, and its instructions at one
issue per scheduler per cycle. Nothing here models latency, occupancy stalls, caches or
bank conflicts, so the prediction is a lower bound on what the compiled code can do; the
floor (sass_predict.py) is max(FLOPs / peak, bytes / bandwidth) on all 132 SMs: what any code
could do at these shapes.
"""
from __future__ import annotations

import math
import re

SMS = 132
SCHEDULERS_PER_SM = 4
CLOCK_HZ = 1.98e9  # boost clock: the issue term's cycles
HBM_BYTES_PER_S = 4.3e12  # sustained, H200-class (the issue's figure)
# Sustained dense peaks (the issue's figures). FP32 on the CUDA cores: 128 FMA per cycle
# per SM against bf16's 2,048, so 1/16 of bf16's peak on the same footing.
PEAK_FLOPS = {"bf16": 790e12, "tf32": 395e12, "fp32": 790e12 * 128 / 2048}
# Dense FMA per cycle per SM (the tensor cores, or the CUDA cores for FFMA).
FMA_PER_CYCLE_PER_SM = {"bf16": 2048, "tf32": 1024, "fp32": 128}
REGISTERS_PER_SM = 65536
SHARED_PER_SM = 233472  # 228 KiB; each resident block also reserves 1 KiB
MAX_WARPS_PER_SM = 64
MAX_BLOCKS_PER_SM = 32


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


def resident_programs(registers: int, warps: int, shared_bytes: int) -> int:
    """Programs an SM holds at once: registers (allocated per warp in 256s), shared memory,
    warp slots and block slots, whichever runs out first."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    limits = [REGISTERS_PER_SM // max(per_warp * warps, 1), MAX_WARPS_PER_SM // warps,
              MAX_BLOCKS_PER_SM, SHARED_PER_SM // (shared_bytes + 1024)]
    return max(0, min(limits))


def predicted_seconds(flops: float, bytes_moved: float, math_precision: str | None,
                      issue_slots: float, programs: int) -> dict:
    """{"compute", "memory", "issue", "predicted"} in seconds.

    issue_slots: warp-instructions the whole launch issues; an SM's 4 schedulers issue one
    each per cycle, on min(programs, 132) SMs. The compute term is at the peak of the SMs
    in use too: a grid of 32 programs has 32 SMs' tensor cores (the floor has all 132).
    """
    sms = max(1, min(programs, SMS))
    compute = (flops / (PEAK_FLOPS[math_precision] * sms / SMS)
               if flops and math_precision else 0.0)
    memory = bytes_moved / HBM_BYTES_PER_S
    issue = issue_slots / SCHEDULERS_PER_SM / CLOCK_HZ / sms
    return {"compute": compute, "memory": memory, "issue": issue,
            "predicted": max(compute, memory, issue)}
