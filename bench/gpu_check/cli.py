"""The command line every phase process shares: ``python -m bench.gpu_check.PHASE``.

``--out OUTDIR --result FILE [--dry-run]``: the phase writes its record to FILE (see
record.PhaseRecord) and anything bulky under OUTDIR. The orchestrator (``python -m
bench.gpu_check``) starts the phases; one can also be run alone, the same way.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable

from bench.gpu_check import bootstrap
from bench.gpu_check.record import ERROR, PhaseRecord

AUTOTUNE_CACHE = "autotune.json"


def phase_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True, help="the check's output folder")
    parser.add_argument("--result", type=Path, required=True, help="this phase's JSON record")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: exercise the plumbing, skip what needs one")
    parser.add_argument("--deadline", type=float, default=None,
                        help="time.time() by which the phase must have ended (its time box)")
    return parser.parse_args(argv)


def phase_main(name: str, run: Callable[[PhaseRecord, argparse.Namespace], None],
               argv=None) -> None:
    """Parse the arguments, make the checkout importable, run, record any crash."""
    args = phase_arguments(argv)
    bootstrap.ensure_importable()
    record = PhaseRecord(name, args.result)
    try:
        run(record, args)
    except Exception as error:  # noqa: BLE001 - the phase's own failure, recorded
        record.check(f"{name} phase", ERROR, error=f"{type(error).__name__}: {error}",
                     traceback=traceback.format_exc()[-4000:])
        traceback.print_exc()
    record.save()
    sys.stdout.flush()


def autotune_cache(out: Path) -> Path:
    return Path(out) / AUTOTUNE_CACHE
