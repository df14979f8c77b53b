"""Run the phases in order, each in its own process under its time box, and record them.

Every phase's record is merged into OUTDIR/gpu-check.json the moment the phase ends (or is
stopped), and its output appended to OUTDIR/gpu-check.log, so a window that runs out
still leaves everything finished before it. The summary (summary.py) is printed last,
since the device tool returns only the end of the output.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from bench.gpu_check import bootstrap
from bench.gpu_check.cli import AUTOTUNE_CACHE
from bench.gpu_check.record import ERROR, FAIL, PASS, SKIP, TIMEOUT, read_json, write_json

RESULTS, LOG = "gpu-check.json", "gpu-check.log"
SUMMARY_RESERVE_S = 10  # kept back from the last phase for the summary
MIN_PHASE_S = 5  # with less than this left of the budget, the remaining phases are skipped


@dataclass(frozen=True)
class Phase:
    name: str
    module: str
    budget_s: int  # on an H200 with a cold Triton cache (README: GPU check)
    interpret_dry_run: bool = False  # runs the Triton kernels through the interpreter


PHASES = (
    Phase("environment", "bench.gpu_check.environment", 20),
    Phase("precompile", "bench.gpu_check.precompile", 110),
    Phase("correctness", "bench.gpu_check.correctness", 70, interpret_dry_run=True),
    Phase("model", "bench.gpu_check.model_check", 110),
    Phase("training", "bench.gpu_check.train_run", 60),
    Phase("sanitize", "bench.gpu_check.sanitize", 60),
    Phase("speed", "bench.gpu_check.speed", 100),
)
PHASE_NAMES = [phase.name for phase in PHASES]


def status_of(record: dict) -> str:
    statuses = {check["status"] for check in record.get("checks", [])}
    for worst in (ERROR, TIMEOUT, FAIL):
        if worst in statuses:
            return worst
    return PASS if PASS in statuses else SKIP


def phase_env(phase: Phase, dry_run: bool, out: Path) -> Dict[str, str]:
    path = os.pathsep.join(p for p in (str(bootstrap.ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    env["TRITON_INTERPRET"] = "1" if dry_run and phase.interpret_dry_run else "0"
    if not dry_run:
        env["ALEXNET_AUTOTUNE_CACHE"] = str(out / AUTOTUNE_CACHE)
    return env


def run_phase(phase: Phase, out: Path, scratch: Path, dry_run: bool, timeout_s: float,
              log) -> dict:
    """One phase in its own process group (a time box stops its children too)."""
    result_path = scratch / f"{phase.name}.json"
    command = [sys.executable, "-m", phase.module, "--out", str(out),
               "--result", str(result_path), "--deadline", str(time.time() + timeout_s)]
    if dry_run:
        command.append("--dry-run")
    log.write(f"\n===== {phase.name} (time box {timeout_s:.0f} s) =====\n")
    log.flush()
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=bootstrap.ROOT, env=phase_env(phase, dry_run, out),
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    timed_out = False
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    seconds = time.perf_counter() - start
    record = read_json(result_path) if result_path.exists() else {"checks": []}
    if timed_out:
        record["checks"].append({"name": f"{phase.name} time box", "status": TIMEOUT,
                                 "seconds": round(seconds, 1)})
    elif process.returncode != 0:
        record["checks"].append({"name": f"{phase.name} process", "status": ERROR,
                                 "returncode": process.returncode})
    record.update(status=status_of(record), wall_seconds=round(seconds, 1),
                  time_box_s=round(timeout_s), budget_s=phase.budget_s)
    return record


def seed_autotune_cache(out: Path, given: Optional[Path]) -> None:
    """A cache from an earlier window (--autotune-cache) becomes this run's starting point."""
    if given is None:
        return
    if not given.exists():
        raise SystemExit(f"gpu_check: --autotune-cache {given} does not exist")
    target = out / AUTOTUNE_CACHE
    if target.resolve() != given.resolve():
        shutil.copy(given, target)


def orchestrate(out: Path, phases: List[Phase], dry_run: bool, budget_s: float,
                autotune_cache: Optional[Path] = None) -> dict:
    from bench.gpu_check import summary

    out.mkdir(parents=True, exist_ok=True)
    seed_autotune_cache(out, autotune_cache)
    deadline = time.time() + budget_s
    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "dry_run": dry_run, "budget_s": budget_s, "phases": {}}
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    slack = 0.0
    with open(out / LOG, "a") as log:
        for index, phase in enumerate(phases):
            last = index == len(phases) - 1
            left = deadline - time.time() - SUMMARY_RESERVE_S
            timeout_s = left if last else min(phase.budget_s + slack, left)
            if left < MIN_PHASE_S:
                record = {"checks": [], "status": SKIP, "reason": "no time left in the budget",
                          "budget_s": phase.budget_s}
            else:
                print(f"[gpu_check] {phase.name}: up to {timeout_s:.0f} s", flush=True)
                record = run_phase(phase, out, scratch, dry_run, timeout_s, log)
                slack = max(0.0, timeout_s - record["wall_seconds"]) if not last else 0.0
            results["phases"][phase.name] = record
            write_json(out / RESULTS, results)
            print(f"[gpu_check] {phase.name}: {record['status']} "
                  f"({record.get('wall_seconds', 0):.0f} s)", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    text = summary.render(results, out)
    (out / summary.SUMMARY).write_text(text)
    print(text, flush=True)
    return results
