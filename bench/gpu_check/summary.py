"""The check's closing table: per phase pass/fail, what failed, the training step's speed.

Printed last (the device tool returns the end of the output) and written to
OUTDIR/summary.md, ready to paste under bench/results/.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.gpu_check import bootstrap
from bench.gpu_check.record import PASS, SKIP

SUMMARY = "summary.md"
MAX_LISTED = 30
STATIC_REPORT = bootstrap.ROOT / "bench" / "results" / "static-sm90.json"
# bench_ops' standalone dropouts run the launch the static report calls "dropout".
STATIC_LAUNCH = {"dropout6": "dropout", "dropout7": "dropout"}


def _value(check: dict) -> str:
    if "value" in check:
        value, limit = check["value"], check.get("limit")
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        return shown + (f" (limit {limit:.3g})" if isinstance(limit, float) else "")
    for key in ("error", "reason", "returncode", "failures", "failed"):
        if key in check:
            return f"{key}: {str(check[key])[:200]}"
    return ""


def _environment_line(results: dict) -> str:
    info = results["phases"].get("environment", {}).get("info", {})
    smi = info.get("nvidia_smi_before", {})
    parts = [info.get("gpu", "no GPU"), f"{info.get('sms', '?')} SMs",
             f"driver {smi.get('driver_version', '?')}", f"torch {info.get('torch', '?')}",
             f"triton {info.get('triton', '?')}", f"CUDA {info.get('torch_cuda', '?')}",
             f"python {info.get('python', '?')}"]
    line = ", ".join(parts)
    if "matmul_bf16_tflops" in info:
        line += (f"; measured ceilings: bf16 matmul {info['matmul_bf16_tflops']:.0f} TFLOP/s, "
                 f"copy {info['copy_tb_per_s']:.2f} TB/s")
    return line


def phase_table(results: dict) -> list:
    lines = ["| phase | status | seconds | time box | checks passed |", "|---|---|---|---|---|"]
    for name, record in results["phases"].items():
        checks = record.get("checks", [])
        passed = sum(c["status"] == PASS for c in checks)
        lines.append(f"| {name} | {record.get('status')} | {record.get('wall_seconds', '—')} "
                     f"| {record.get('time_box_s', '—')} | {passed}/{len(checks)} |")
    return lines


def problems(results: dict) -> list:
    found = [(name, check) for name, record in results["phases"].items()
             for check in record.get("checks", []) if check["status"] not in (PASS, SKIP)]
    lines = [f"- {name}: {c['name']}: {c['status']} {_value(c)}" for name, c in found]
    if len(lines) > MAX_LISTED:
        lines = lines[:MAX_LISTED] + [f"- ... {len(found) - MAX_LISTED} more in gpu-check.json"]
    return lines or ["- none"]


def predicted_us(static: dict, variant: str, op: str, mode: str):
    """The static report's predicted time of one bench_ops case (its chosen configs), or None."""
    layer = STATIC_LAUNCH.get(op, op)
    rows = [k for k in static["kernels"] if k["variant"] == variant and k.get("chosen")
            and k["launch"].split(".")[0] == layer]
    if layer == op:  # a layer's launches: forward alone, or all that training runs
        rows = [k for k in rows if (k["launch"].endswith(".forward") if mode == "fwd"
                                    else k.get("in_step"))]
    total = sum(k["predicted_us"]["predicted"] for k in rows)
    if layer != op and mode == "fwd+bwd":
        total *= 2  # dropout's backward is the same launch on the gradient
    return total or None


def predicted_table(results, static: dict) -> list:
    """Per op and the training step: the static prediction beside what was measured."""
    from bench.suite import report

    lines = ["| op | mode | dtype | predicted (static) us | measured us | measured / predicted |",
             "|---|---|---|---|---|---|"]
    for row in report.op_rows(results):
        measured = row.seconds.get(report.OURS)
        predicted = predicted_us(static, row.dtype, row.op, row.mode)
        if measured is None or predicted is None:
            continue
        lines.append(f"| {row.op} | {row.mode} | {row.dtype} | {predicted:,.0f} "
                     f"| {measured * 1e6:,.0f} | {measured * 1e6 / predicted:.2f} |")
    for row in report.model_rows(results):
        step = static.get("step", {}).get(row.precision)
        if row.task == "train" and row.provider == report.OURS and row.device == "cuda" and step:
            lines.append(f"| training step (kernels only predicted) | fwd+bwd | {row.precision} "
                         f"| {step['predicted_ms'] * 1e3:,.0f} | {row.seconds * 1e6:,.0f} "
                         f"| {row.seconds * 1e6 / (step['predicted_ms'] * 1e3):.2f} |")
    return lines if len(lines) > 2 else []


def speed_table(out: Path) -> list:
    path = out / "bench.json"
    if not path.exists():
        return ["(no benchmark ran)"]
    from bench.suite import report

    results = report.collect([json.loads(path.read_text())])
    lines = ["| step | provider | ms | images/s | vs eager | vs compile |",
             "|---|---|---|---|---|---|"]
    for row in report.model_rows(results):
        if row.device != "cuda":
            continue
        lines.append(f"| {row.task} {row.precision} b{row.batch} | {row.provider} "
                     f"| {row.seconds * 1e3:.2f} | {row.images_per_s:,.0f} "
                     f"| {report._x(row.speedup_eager)} | {report._x(row.speedup_compile)} |")
    targets = report.target_rows(results)
    if targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t.target} | {t.measured} | {'—' if t.met is None else t.met} |"
                  for t in targets]
    if STATIC_REPORT.exists():
        static = json.loads(STATIC_REPORT.read_text())
        predicted = predicted_table(results, static)
        if predicted:
            lines += ["", f"Predicted from compiled code ({STATIC_REPORT.name}, triton "
                          f"{static.get('triton')}) beside measured:", *predicted]
    return lines


def render(results: dict, out: Path) -> str:
    title = "GPU check (dry run, no GPU)" if results["dry_run"] else "GPU check"
    lines = [f"## {title}, {results['started']}", "", _environment_line(results), "",
             *phase_table(results), "", "Not passed:", *problems(results), "",
             "Speed (medians; OUTDIR/bench.md has every table):", *speed_table(out)]
    return "\n".join(lines) + "\n"
