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
# Cycles from a global copy's issue to its data in shared memory, as a loop that waits for it
# sees them: an assumption, not a measurement (no GPU has checked it yet). Published
# microbenchmarks put an idle H100's L2 hit near 260 cycles and an HBM access near 500-600;
# the operand tiles of a convolution mostly hit L2, and a loaded memory system queues: 600.
LOAD_LATENCY_CYCLES = 600


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

    def tensor_share(self, math_precision: str) -> float:
        """The share of the math units' rate at the SMs' clock (FMA_PER_CYCLE_PER_SM) that
        the model takes as sustained, as its peak_flops do: the cycles of issued MMA work
        count 1 / share times as many (0.74 for bf16 at 790 TFLOP/s and 1.98 GHz)."""
        rate = 2 * FMA_PER_CYCLE_PER_SM[math_precision] * self.sms * self.clock_hz
        return self.peak_flops[math_precision] / rate

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


def copies_ahead(copies: dict | None, num_stages: int) -> int | None:
    """Iterations between a main loop's copies leaving and the wait that needs them
    (bench/static/sass_parse.copy_pipeline): cp.async's from its wait, TMA's num_stages - 1
    (Triton's pipeliner); the fewer where a loop has both. None: no asynchronous copies."""
    if not copies:
        return None
    ahead = [copies["cp_async_ahead"]] if copies["cp_async_ahead"] else []
    if copies["tma_loads"]:
        ahead.append(max(1, num_stages - 1))
    return min(ahead) if ahead else None


def busiest_sm(*, programs: int, mma_programs: int, resident: int, iterations: float,
               mma_cycles: float, loop_issue: float, other_issue: float, ahead: int | None,
               issued_at: float, model: Model = DEFAULT) -> dict:
    """Cycles the busiest SM needs for its share of a launch: {"tensor", "issue", "chain"},
    its programs, and what sets the pace of each iteration of the chain ("per_iteration").

    Programs are dealt to SMs in turn, so one SM runs ceil(programs / SMs) of them (3 of
    338 on 132 SMs, where 2.56 would be the average: wave quantization), at most
    ``resident`` at once. Per main-loop iteration a program keeps the tensor cores busy for
    ``mma_cycles`` (the MMA work it issues, padding included) and the schedulers for
    ``loop_issue``; ``other_issue`` is its code outside the loop. The SM is done after the
    longest of
    - tensor: its GEMM programs' MMA work at the tensor cores' rate;
    - issue: every instruction of its programs, 4 schedulers issuing one each per cycle;
    - chain: each program's own dependency chain, ceil(programs / resident) of them one
      after another: its code outside the loop, one load latency to fill the pipeline,
      then per iteration the slowest of its MMAs, its issue and its copies' latency: a
      copy issued ``issued_at`` cycles into an iteration and waited for ``ahead``
      iterations later cannot come sooner than (issued_at + latency) / ahead per
      iteration.
    """
    per_sm = math.ceil(programs / model.sms)
    mma_per_sm = math.ceil(mma_programs / model.sms)
    # Every program of a GEMM launch holds a slot of its SM while it runs, those without
    # MMAs too (conv's bias-gradient programs stream as many grad_output tiles as a GEMM
    # program reduces): the rounds count them all, each as long as a GEMM program.
    rounds = math.ceil(per_sm / max(1, min(resident, per_sm))) if mma_per_sm else 0
    latency = (issued_at + LOAD_LATENCY_CYCLES) / ahead if ahead else 0.0
    fill = LOAD_LATENCY_CYCLES if ahead else 0.0
    per_iteration = {"compute": mma_cycles, "issue": loop_issue, "latency": latency}
    return {
        "programs_per_sm": per_sm,
        "tensor": mma_per_sm * iterations * mma_cycles,
        "issue": per_sm * (iterations * loop_issue + other_issue),
        "chain": rounds * (other_issue + fill + iterations * max(per_iteration.values())),
        "per_iteration": max(per_iteration, key=per_iteration.get),
    }


def issued_seconds(cycles: dict, bytes_moved: float, model: Model = DEFAULT) -> dict:
    """{"compute", "issue", "latency", "memory", "predicted"} in seconds from busiest_sm's
    cycles: the longest of them at the SMs' clock, or the bytes at the bandwidth. A chain
    longer than the tensor and issue terms is "latency" where the copies' latency lengthens
    it (busiest_sm's per_iteration), else the term its iterations are bounded by."""
    clock = model.clock_hz
    memory = bytes_moved / model.bytes_per_s
    terms = {"compute": cycles["tensor"] / clock, "issue": cycles["issue"] / clock,
             "memory": memory}
    chain = cycles["chain"] / clock
    terms["latency"] = 0.0
    if chain > max(terms.values()):  # one program after another, each at its own pace
        terms[cycles["per_iteration"]] = chain
    return {**terms, "predicted": max(terms.values())}
