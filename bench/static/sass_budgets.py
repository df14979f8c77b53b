"""The budgets of issue 11, section 2, checked on the static report's chosen configs.

- no_spills: every kernel of the launch spills nothing (spill_bytes == 0);
- issue_ratio: the GEMM's main loop issues no slower than its tensor cores retire it: issue
  ratio <= 1.0 (bf16 and tf32, each against its own rate). An ieee fp32 loop (FFMA, the FC
  layers of the fp32 variant) issues every multiply-add itself, one slot per FFMA, so its
  ratio is over 1 by construction: 1 + (everything else in the loop) / FFMA, at least 1.06
  for the 8 x 8 outputs per thread of a 128 x 128 tile on 8 warps (16 operands, 4 LDS.128,
  per 64 FFMA). Its budget is MAX_FFMA_ISSUE_RATIO = 1.15: at least 87% of the loop's issue
  slots are FFMA (a decision of this project, not the issue's text, which is silent on ieee);
- loads_16B: every global load in the GEMM's main loop moves 16 bytes per thread (LDG.128,
  LDGSTS.128) or is a TMA copy: its operand tiles are contiguous in memory;
- programs: the GEMM launches at least one program per SM (>= 132);
- access_16B (the memory-bound launches: LRN, pools, dropout, augmentation): every kernel
  of the launch moves 16 bytes per thread with each global access it repeats per tile.
  Precisely, from the SASS: every global load of the kernel's main body (its main loop,
  or its whole code when it has none: bench/static/sass_parse.main_loop) is LDG.128 / LDGSTS.128
  or a TMA copy, and every global store of its whole code is STG.128 or a TMA copy (a
  memory-bound kernel writes each output once, often after its loop). A kernel with no
  global load or no global store there misses it (nothing to measure). There is no
  exception for narrow loads of per-program scalars (the augmentation's crop offsets):
  the SASS does not tell them from tile loads, and the measured text lists every width.
  It checks access widths only, not the issue's "one read of each input and one write
  of each output", which the widths cannot show.

``python -m bench.static.sass_budgets REPORT.json`` prints the budgets each launch misses, in the
form of tests/bench/test_sass.py's table of expected failures.
"""
from __future__ import annotations

import json
import sys

from bench.static import h100_model

BUDGETS = ("no_spills", "issue_ratio", "loads_16B", "programs")  # the GEMM launches'
MEMORY_BUDGETS = ("no_spills", "access_16B")  # the other launches'
WIDE = ("16", "tma")
MAX_ISSUE_RATIO = 1.0
MAX_FFMA_ISSUE_RATIO = 1.15


def is_gemm_launch(launch: str) -> bool:
    """The convolutions and FC layers: launches whose main kernel is a GEMM (not the copy
    of conv1's folded image, conv1.fold_input)."""
    return launch.startswith(("conv", "fc")) and not launch.endswith(".fold_input")


def budgets_of(launch: str) -> tuple[str, ...]:
    return BUDGETS if is_gemm_launch(launch) else MEMORY_BUDGETS


def _narrow(widths: dict) -> str:
    return ", ".join(f"{n} of {w} B" for w, n in widths.items() if w not in WIDE)


def _access_16B(row: dict) -> tuple[bool, str]:
    """(met, what was measured) of access_16B for one kernel (one report row)."""
    loads = row["main_loop"]["loads"] if row["main_loop"] else row["kernel_loads"]
    stores = row["kernel_stores"]
    narrow_loads, narrow_stores = _narrow(loads), _narrow(stores)
    problems = [f"no global {kind}" for kind, widths in (("load", loads), ("store", stores))
                if not widths]
    problems += [f"loads {narrow_loads}"] if narrow_loads else []
    problems += [f"stores {narrow_stores}"] if narrow_stores else []
    return not problems, "; ".join(problems) or "all 16 B or TMA"


def _gemm(rows: list[dict]) -> dict:
    gemms = [r for r in rows if r["flops"]]
    if len(gemms) != 1:
        raise ValueError(f"expected one GEMM kernel, found {[r['kernel'] for r in gemms]}")
    return gemms[0]


def check(budget: str, rows: list[dict]) -> tuple[bool, str]:
    """(met, what was measured) for one launch's chosen rows (all its kernels)."""
    if budget == "no_spills":
        spills = {r["kernel"]: r["spill_bytes"] for r in rows if r["spill_bytes"]}
        return not spills, ", ".join(f"{k} spills {v} B" for k, v in spills.items()) or "0 B"
    if budget == "access_16B":
        checked = {r["kernel"]: _access_16B(r) for r in rows}
        met = all(ok for ok, _ in checked.values())
        if len(checked) == 1:
            return met, next(iter(checked.values()))[1]
        return met, ", ".join(f"{kernel}: {text}" for kernel, (_, text) in checked.items())
    gemm = _gemm(rows)
    if budget == "issue_ratio":
        ratio = gemm["issue_ratio"]
        loop = gemm["main_loop"]
        text = (f"issue ratio {ratio:.2f} ({loop['instructions']} instructions per "
                f"{sum(loop['math'].values())} {gemm['matrix_instruction']})"
                if ratio is not None else "no main loop with MMAs")
        limit = (MAX_FFMA_ISSUE_RATIO if gemm["matrix_instruction"] == "FFMA"
                 else MAX_ISSUE_RATIO)
        return ratio is not None and ratio <= limit, text + (f" (FFMA budget {limit})"
                                                             if limit != MAX_ISSUE_RATIO else "")
    if budget == "loads_16B":
        loads = (gemm["main_loop"] or {}).get("loads", {})
        narrow = {w: n for w, n in loads.items() if w not in ("16", "tma")}
        text = ", ".join(f"{n} loads of {w} B" for w, n in narrow.items()) or "all 16 B or TMA"
        return bool(loads) and not narrow, text
    if budget == "programs":
        return (gemm["programs"] >= h100_model.SMS,
                f"{gemm['programs']} programs on {h100_model.SMS} SMs")
    raise ValueError(f"unknown budget {budget!r}")


def misses(row: dict) -> list[str]:
    """The budgets one kernel (a report row: a chosen config or an autotuner candidate)
    misses on its own: a GEMM's four, any other kernel's memory budgets."""
    return [budget for budget in (BUDGETS if row["flops"] else MEMORY_BUDGETS)
            if not check(budget, [row])[0]]


def evaluate(report: dict) -> dict:
    """{(variant, launch, budget): (met, measured)} over the chosen configs."""
    by_launch: dict = {}
    for r in report["kernels"]:
        if r["chosen"]:
            by_launch.setdefault((r["variant"], r["launch"]), []).append(r)
    return {(variant, launch, budget): check(budget, rows)
            for (variant, launch), rows in by_launch.items() for budget in budgets_of(launch)}


def missed_table(report: dict) -> str:
    """The missed budgets as lines of a Python dict literal."""
    lines = [f'    ("{v}", "{launch}", "{budget}"):\n        "{measured}",'
             for (v, launch, budget), (met, measured) in evaluate(report).items() if not met]
    return "\n".join(lines)


if __name__ == "__main__":
    print(missed_table(json.loads(open(sys.argv[1]).read())))
