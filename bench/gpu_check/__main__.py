"""``python3 -m bench.gpu_check OUTDIR``: the whole GPU check in one call (see __init__.py)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.gpu_check.orchestrate import PHASE_NAMES, PHASES, orchestrate
from bench.gpu_check.record import ERROR, FAIL, TIMEOUT

DEFAULT_BUDGET_S = 540  # 9 minutes: a lent call may run 10


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description="Prove and measure alexnet_triton on a GPU in one call: environment, "
                    "precompile, kernel correctness, model, training, sanitizers, speed.")
    parser.add_argument("out", type=Path, help="output folder (the device tool's $OUT)")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: run every phase's plumbing on the CPU, skip GPU parts")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"seconds for the whole check (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--phases", default=",".join(PHASE_NAMES),
                        help=f"comma-separated subset, in order (default: all of "
                             f"{','.join(PHASE_NAMES)})")
    parser.add_argument("--autotune-cache", type=Path, default=None,
                        help="autotune choices from an earlier window (its OUTDIR/"
                             "autotune.json): those shapes are not tuned again")
    args = parser.parse_args(argv)
    unknown = set(args.phases.split(",")) - set(PHASE_NAMES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {PHASE_NAMES}")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    wanted = args.phases.split(",")
    phases = [phase for phase in PHASES if phase.name in wanted]
    results = orchestrate(args.out, phases, args.dry_run, args.budget_s, args.autotune_cache)
    bad = [n for n, r in results["phases"].items() if r["status"] in (ERROR, FAIL, TIMEOUT)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
