"""Rows of the static report: each compiled kernel launch joined with its SASS analysis,
its work (kernel_work.py) and the prediction for each Hopper device (h100_model.py)."""
from __future__ import annotations

import math

from bench.static import h100_model, kernel_work
from bench.static.alexnet_launches import training_step_launches

# How the config of a launch is chosen without a GPU (bench/static/sm90_driver.py): stated in
# every report so that no one reads it as the autotuner's measured winner.
CHOSEN_CONFIG = (
    "the autotuner's first config (in kernels/*.py's order) among those its pruner keeps for "
    "the launch (the conv kernels': their element size's tiles, padding the GEMM's columns "
    "and reduction block least) that compiles for sm_90a and fits the H100's 227 KiB of "
    "shared memory per block: with no GPU every config that launches 'times' the same, so "
    "Triton's autotuner keeps the first; kernels without an autotuner use the launcher's "
    "own config")


def _floor_precision(variant: str, options: dict) -> str:
    """The peak any implementation of this op has: bf16 tensor cores for bf16, tf32 where
    the variant's flags allow it (convolutions; the FCs too in tf32), fp32 CUDA cores for
    ieee fp32 (the FCs of fp32)."""
    if variant == "bf16":
        return "bf16"
    return "tf32" if options.get("INPUT_PRECISION") == "tf32" else "fp32"


def _unroll(loop_math: dict, config: dict, warps: int) -> int:
    """k-steps per SASS iteration: the loop's multiply-adds over one k-step's tile."""
    # conv's forward: TAIL_N more columns of the tile (kernels/conv2d_relu.py)
    columns = config.get("BLOCK_N", 0) + config.get("TAIL_N", 0)
    tile = config.get("BLOCK_M", 0) * columns * config.get("BLOCK_K", 0)
    if not loop_math or not tile:
        return 1
    per_warp = sum(h100_model.fma_per_warp_instruction(op) * n for op, n in loop_math.items())
    return max(1, round(per_warp * warps / tile))


def bytes_per_load(loads: dict) -> float | None:
    """Mean bytes per thread of a global load instruction (TMA copies not counted)."""
    counted = {int(w): n for w, n in loads.items() if w != "tma"}
    total = sum(counted.values())
    return sum(w * n for w, n in counted.items()) / total if total else None


def row(variant: str, launch: str, attempt: dict, cubin: dict,
        models: tuple = tuple(h100_model.MODELS.values())) -> dict:
    """One kernel launch (or autotuner trial) that compiled and fits, predicted on each of
    ``models``' devices (the first one's in the main columns)."""
    config, resources, sass = attempt["config"], cubin["resources"], cubin["sass"]
    warps = config["num_warps"]
    programs = math.prod(attempt["grid"])
    loop = sass["main_loop"]
    flops, trips = kernel_work.work(attempt["kernel"], attempt["scalars"], config,
                                    attempt.get("options", {}))
    kernel_instructions = sass["kernel"]["instructions"]
    issue_ratio = unroll = None
    if loop is None:
        per_warp = kernel_instructions  # straight-line code: every instruction once
    else:
        unroll = _unroll(loop["math"], config, warps)
        iterations = 1 if trips is None else trips / unroll
        per_warp = kernel_instructions + loop["instructions"] * (iterations - 1)
        issue_ratio = h100_model.issue_ratio(loop["instructions"], loop["math"], warps)
    # The matrix instruction of a GEMM; element-wise kernels multiply-add too, but do no GEMM.
    math_opcode = sass["matrix_instruction"] if flops else "-"
    compute_precision = h100_model.precision(math_opcode) if flops else None
    shared = attempt["shared"] + resources["static_shared_bytes"]
    resident = h100_model.resident_programs(resources["registers"], warps, shared)
    found = {
        "variant": variant, "launch": launch, "kernel": attempt["kernel"],
        "chosen": not attempt["autotuner_trial"], "in_step": launch in training_step_launches(),
        "config": config, "options": attempt.get("options", {}), "hash": attempt["hash"],
        "registers": resources["registers"], "spill_bytes": resources["spill_bytes"],
        "local_instructions": sass["kernel"]["local_memory"],
        "shared_bytes": shared, "grid": attempt["grid"], "programs": programs,
        "resident_per_sm": resident,
        "waves": programs / (h100_model.SMS * resident) if resident else None,
        "matrix_instruction": math_opcode, "kernel_instructions": kernel_instructions,
        "kernel_loads": sass["kernel"]["loads"], "kernel_stores": sass["kernel"]["stores"],
        "kernel_divisions": sass["kernel"]["divisions"],
        # the memory-bound kernels' figure: of the main loop, or of the whole straight-line code
        "bytes_per_load": bytes_per_load((loop or sass["kernel"])["loads"]),
        "main_loop": loop, "loop_trips": trips, "loop_unroll": unroll,
        "issue_ratio": issue_ratio, "instructions_per_warp": per_warp,
        "flops": flops, "bytes": attempt["tensor_bytes"],
        "compute_precision": compute_precision,
        "floor_precision": _floor_precision(variant, attempt.get("options", {})),
    }
    found.update(_issued_work(found, attempt, loop, config, warps))
    by_device = {model.key: predict(found, model) for model in models}
    # predicted_us, bound, floor_us: the first device's (the tables' main columns)
    return {**found, **by_device[models[0].key], "by_device": by_device}


def _issued_work(found: dict, attempt: dict, loop: dict | None, config: dict,
                 warps: int) -> dict:
    """What the launch issues, padding and all (the work its loops run, not the work the
    convolution needs): MMA FLOPs, the share of them that is useful, the per-iteration
    cycles of the tensor cores and schedulers, and how far ahead its copies run."""
    gemm = kernel_work.gemm_programs(attempt["kernel"], attempt["scalars"], config,
                                     attempt["grid"])
    schedulers = h100_model.SCHEDULERS_PER_SM
    iterations = (1 if found["loop_trips"] is None or loop is None
                  else found["loop_trips"] / found["loop_unroll"])
    math_ops = loop["math"] if loop and found["flops"] else {}
    fma = sum(h100_model.fma_per_warp_instruction(op) * n for op, n in math_ops.items()) * warps
    copies = loop.get("copies") if loop else None
    issued_flops = 2 * fma * iterations * gemm
    return {
        "gemm_programs": gemm if math_ops else 0,
        "issued_flops": issued_flops,
        "useful_share": found["flops"] / issued_flops if issued_flops else None,
        "mma_cycles": sum(h100_model.math_cycles(op) * n for op, n in math_ops.items())
        * warps / schedulers,
        "loop_iterations": iterations if loop else 0,
        "loop_issue_cycles": loop["instructions"] * warps / schedulers if loop else 0.0,
        # the code a program running the main loop can reach outside it (sass_parse's
        # path_outside): not a branch only other programs take
        "other_issue_cycles": (loop["path_outside"] if loop else found["kernel_instructions"])
        * warps / schedulers,
        "copies_ahead": h100_model.copies_ahead(copies, config["num_stages"]),
        "copies_issued_at_cycles": ((copies or {}).get("issued_at") or 0) * warps / schedulers,
    }


def predict(row: dict, model: h100_model.Model) -> dict:
    """{"predicted_us": {"compute", "issue", "latency", "memory", "predicted"}, "bound",
    "floor_us", "previous_us", "programs_per_sm"} of one report row on ``model``'s device:
    the SASS is the same, the device's rates and SMs differ.

    predicted_us: the work the launch issues, on its busiest SM (h100_model.busiest_sm), its
    MMA cycles at the sustained share of the tensor cores' rate, as the floor's.
    previous_us: the model of the reports before issue 21 (useful FLOPs at the peak of the
    SMs in use, instructions averaged over the SMs, no latency), kept beside it for one
    report so the change is visible."""
    warps = row["config"]["num_warps"]
    previous = h100_model.predicted_seconds(
        row["flops"], row["bytes"], row["compute_precision"],
        row["programs"] * warps * row["instructions_per_warp"], row["programs"], model)
    cycles = h100_model.busiest_sm(
        programs=row["programs"], mma_programs=row["gemm_programs"],
        resident=max(1, row["resident_per_sm"]), iterations=row["loop_iterations"],
        mma_cycles=(row["mma_cycles"] / model.tensor_share(row["compute_precision"])
                    if row["mma_cycles"] else 0.0),
        loop_issue=row["loop_issue_cycles"],
        other_issue=row["other_issue_cycles"],
        ahead=row["copies_ahead"] if row["gemm_programs"] else None,
        issued_at=row["copies_issued_at_cycles"], model=model)
    seconds = h100_model.issued_seconds(cycles, row["bytes"], model)
    floor = max(row["flops"] / model.peak_flops[row["floor_precision"]] if row["flops"] else 0.0,
                seconds["memory"])
    return {"predicted_us": {k: v * 1e6 for k, v in seconds.items()},
            "bound": max(("compute", "memory", "issue", "latency"), key=lambda k: seconds[k]),
            "floor_us": floor * 1e6, "previous_us": previous["predicted"] * 1e6,
            "programs_per_sm": cycles["programs_per_sm"]}


def rows(variant: str, compiled: dict,
         models: tuple = tuple(h100_model.MODELS.values())) -> tuple[list[dict], list[dict]]:
    """(rows, failures) of one worker's output (bench/static/sass_compile.py)."""
    found, failures = [], []
    for launch, entry in compiled["launches"].items():
        if entry["error"]:
            failures.append({"variant": variant, "launch": launch, "error": entry["error"]})
        for attempt in entry["attempts"]:
            if attempt["outcome"] == "ok" and attempt["hash"] in compiled["cubins"]:
                found.append(row(variant, launch, attempt, compiled["cubins"][attempt["hash"]],
                                 models))
            elif attempt["outcome"] != "ok":
                failures.append({"variant": variant, "launch": launch,
                                 "kernel": attempt["kernel"], "config": attempt["config"],
                                 "outcome": attempt["outcome"], "shared": attempt.get("shared"),
                                 "error": attempt.get("error")})
    return found, failures


def step_totals(chosen: list[dict], device: str | None = None) -> dict:
    """{variant: {"predicted_ms", "floor_ms", "kernels"}} over one training step, on
    ``device`` (a key of the rows' by_device; None: the rows' main columns)."""
    totals: dict = {}
    for r in chosen:
        if device is not None:
            r = {**r, **r["by_device"][device]}
        if r["in_step"]:
            t = totals.setdefault(r["variant"], {"predicted_ms": 0.0, "floor_ms": 0.0,
                                                 "previous_ms": 0.0, "kernels": 0})
            t["predicted_ms"] += r["predicted_us"]["predicted"] / 1e3
            t["floor_ms"] += r["floor_us"] / 1e3
            t["previous_ms"] += r["previous_us"] / 1e3
            t["kernels"] += 1
    return totals
