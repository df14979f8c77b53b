"""Phase 6: compute-sanitizer's memcheck and racecheck over every kernel, at a small batch.

The target is the correctness phase's run of every launcher (forward and backward) at
batch 2 in bf16, with every autotune candidate launched exactly once (the autotuner's timer
replaced by a single call), so each compiled variant is checked, not only the winner. The
interpreter cannot see either class of bug: it has no bounds checks and runs programs one
after another. Where the tool refuses the device (as on one of the lent runtimes) the check
is skipped with the tool's own words.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gpu_check import bootstrap
from bench.gpu_check.cli import phase_arguments, phase_main
from bench.gpu_check.record import ERROR, FAIL, PASS, SKIP, TIMEOUT, PhaseRecord, read_json

BATCH = 2
TOOLS = {"memcheck": ["--tool", "memcheck", "--leak-check", "no"],
         "racecheck": ["--tool", "racecheck", "--racecheck-report", "hazard"]}
REFUSED = ("Device not supported", "not supported on", "Error 999", "CUDA_ERROR_UNKNOWN")


def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda", "/opt/nvidia/cuda"):
        if root and (Path(root) / "bin" / "compute-sanitizer").exists():
            return str(Path(root) / "bin" / "compute-sanitizer")
    return None


def summary_count(output: str, tool: str) -> int | None:
    """The error (memcheck) or hazard (racecheck) count of the tool's closing summary."""
    word = "RACECHECK SUMMARY" if tool == "racecheck" else "ERROR SUMMARY"
    found = re.findall(rf"{word}: (\d+) (?:error|hazard)", output)
    return int(found[-1]) if found else None


def sanitize(record: PhaseRecord, tool: str, sanitizer: str, out: Path,
             timeout_s: float) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"gpu-check-{tool}-"))
    command = [sanitizer, *TOOLS[tool], "--print-limit", "20", sys.executable, "-m",
               "bench.gpu_check.sanitize", "--target", "--out", str(out),
               "--result", str(scratch / "target.json")]
    try:
        result = subprocess.run(command, cwd=bootstrap.ROOT, capture_output=True, text=True,
                                timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        tail = expired.stdout or ""
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        record.check(tool, TIMEOUT, seconds=round(timeout_s), output_tail=tail[-2000:])
        return
    output = result.stdout + result.stderr
    print(output[-20000:])
    if any(words in output for words in REFUSED) and summary_count(output, tool) is None:
        record.check(tool, SKIP, reason="compute-sanitizer refused the device",
                     output_tail=output[-1500:])
        return
    count = summary_count(output, tool)
    target = scratch / "target.json"
    launched = len(read_json(target)["checks"]) if target.exists() else 0
    if count is None:
        record.check(tool, ERROR, reason="no summary line in the tool's output",
                     returncode=result.returncode, output_tail=output[-3000:])
        return
    findings = re.findall(r"^=+ (?:Invalid|Race|Error|Warning).*$", output, flags=re.M)[:20]
    record.check(tool, PASS if count == 0 else FAIL, count=count, checks_run=launched,
                 returncode=result.returncode, findings=findings)


def run(record: PhaseRecord, args) -> None:
    import torch

    sanitizer = find_sanitizer()
    record.info(sanitizer=sanitizer, batch=BATCH)
    if args.dry_run or not torch.cuda.is_available():
        record.check("sanitizers", SKIP, reason="no GPU" + (" (dry run)" if args.dry_run else ""),
                     sanitizer_found=sanitizer is not None)
        return
    if sanitizer is None:
        record.check("sanitizers", SKIP, reason="compute-sanitizer is not on this machine")
        return
    deadline = args.deadline or time.time() + 600
    for index, tool in enumerate(TOOLS):
        # Each tool gets an equal share of what is left, so the last one runs at all.
        share = (deadline - time.time() - 2) / (len(TOOLS) - index)
        record.guarded(tool, lambda: sanitize(record, tool, sanitizer, Path(args.out), share))


def target() -> None:
    """What runs under the sanitizer: every kernel once per candidate, bf16, batch 2."""
    import torch

    from bench.gpu_check import autotune
    from bench.gpu_check.correctness import run_layers

    args = phase_arguments(sys.argv[2:])
    bootstrap.ensure_importable()
    autotune.install(None, timer=lambda kernel_call, quantiles=None: (kernel_call(),
                                                                      [1.0, 1.0, 1.0])[1])
    record = PhaseRecord("sanitizer target", args.result)
    run_layers(record, torch.device("cuda"), BATCH, precisions=("bfloat16",))
    torch.cuda.synchronize()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--target"]:
        target()
    else:
        phase_main("sanitize", run)
