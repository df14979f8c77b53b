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
        if "datasheet_bf16_tflops" in info:
            line += (f" (datasheet, {info['device_model']}: "
                     f"{info['datasheet_bf16_tflops']:.0f} TFLOP/s dense bf16, "
                     f"{info['datasheet_tb_per_s']:.2f} TB/s)")
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


def _main_columns(row: dict) -> float:
    return row["predicted_us"]["predicted"]


def predicted_us(static: dict, variant: str, op: str, mode: str, predict=_main_columns):
    """The static report's predicted time of one bench_ops case (its chosen configs), or None.
    ``predict``: a row's predicted microseconds (default: the report's main columns)."""
    layer = STATIC_LAUNCH.get(op, op)
    rows = [k for k in static["kernels"] if k["variant"] == variant and k.get("chosen")
            and k["launch"].split(".")[0] == layer]
    if layer == op:  # a layer's launches: forward alone, or all that training runs
        rows = [k for k in rows if (k["launch"].endswith(".forward") if mode == "fwd"
                                    else k.get("in_step"))]
    total = sum(predict(k) for k in rows)
    if layer != op and mode == "fwd+bwd":
        total *= 2  # dropout's backward is the same launch on the gradient
    return total or None


def predictors(static: dict, info: dict) -> tuple[str, list]:
    """(which device, [(column, row -> predicted us)]) for the GPU the check ran on.

    The GPU is found in bench/devices.py by its name. Any Hopper GPU gets a prediction: the
    report's own column where it predicts for that device, else the same rows predicted for
    it here (one sm_90a SASS for all). Where the environment phase measured the GPU's
    ceilings, a second column predicts again with them in place of the datasheet shares:
    the check prefers what it measured. No GPU (a dry run): the report's main device. A GPU
    the table does not know, or not a Hopper: no column, said in the heading."""
    # bench.devices imports alexnet_triton: not at module level, before the checkout is
    # made importable (bootstrap.py)
    from bench import devices
    from bench.static import h100_model, sass_predict

    known = static.get("devices", {})
    if not known:  # a report from before the device table
        return "its main columns", [("predicted (static) us", _main_columns)]
    name = info.get("gpu")
    device = devices.find(name) if name else devices.BY_KEY[static["device"]]
    if device is None or device.capability != (9, 0):
        why = ("not in bench/devices.py" if device is None
               else f"{device.arch}, and the static report's SASS is sm_90a")
        return f"no prediction for {name} ({why})", []
    model = h100_model.Model.of(device)
    short = " ".join(device.name.split()[:2])
    if device.key in known:
        def static_us(row, key=device.key):
            return row["by_device"][key]["predicted_us"]["predicted"]
    else:
        def static_us(row):
            return sass_predict.predict(row, model)["predicted_us"]["predicted"]
    columns = [(f"predicted (static, {short}) us", static_us)]
    if "matmul_bf16_tflops" in info or "copy_tb_per_s" in info:
        measured = model.measured(info.get("matmul_bf16_tflops", 0) * 1e12 or None,
                                  info.get("copy_tb_per_s", 0) * 1e12 or None)
        columns.append(("predicted at measured ceilings us",
                        lambda row: sass_predict.predict(row, measured)["predicted_us"]
                        ["predicted"]))
    return short + ("" if name else " (no GPU: the report's main device)"), columns


def predicted_table(results, static: dict, info: dict | None = None) -> tuple[str, list]:
    """(which device, lines): per op and the training step, the static prediction for the
    GPU the check ran on beside what was measured; the ratio is measured over the first
    prediction column."""
    from bench.suite import report

    which, columns = predictors(static, info or {})
    if not columns:
        return which, []
    lines = ["| op | mode | dtype | " + " | ".join(c for c, _ in columns)
             + " | measured us | measured / predicted |", "|---" * (5 + len(columns)) + "|"]
    for row in report.op_rows(results):
        measured = row.seconds.get(report.OURS)
        predicted = [predicted_us(static, row.dtype, row.op, row.mode, f) for _, f in columns]
        if measured is None or predicted[0] is None:
            continue
        lines.append(f"| {row.op} | {row.mode} | {row.dtype} | "
                     + " | ".join(f"{p:,.0f}" for p in predicted)
                     + f" | {measured * 1e6:,.0f} | {measured * 1e6 / predicted[0]:.2f} |")
    for row in report.model_rows(results):
        chosen = [k for k in static["kernels"] if k["variant"] == row.precision
                  and k.get("chosen") and k.get("in_step")]
        if row.task == "train" and row.provider == report.OURS and row.device == "cuda" and chosen:
            predicted = [sum(f(k) for k in chosen) for _, f in columns]
            lines.append(f"| training step (kernels only predicted) | fwd+bwd | {row.precision} "
                         "| " + " | ".join(f"{p:,.0f}" for p in predicted)
                         + f" | {row.seconds * 1e6:,.0f} "
                         f"| {row.seconds * 1e6 / predicted[0]:.2f} |")
    return which, (lines if len(lines) > 2 else [])


def speed_table(out: Path, info: dict | None = None) -> list:
    """The speed phase's tables; ``info``: the environment phase's (the GPU's name and its
    measured ceilings), which picks the static prediction shown."""
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
        which, predicted = predicted_table(results, static, info)
        if predicted:
            lines += ["", f"Predicted from compiled code ({STATIC_REPORT.name}, triton "
                          f"{static.get('triton')}, {which}) beside measured:", *predicted]
        elif info and info.get("gpu"):
            lines += ["", f"Predicted from compiled code: {which}."]
    return lines


def render(results: dict, out: Path) -> str:
    title = "GPU check (dry run, no GPU)" if results["dry_run"] else "GPU check"
    lines = [f"## {title}, {results['started']}", "", _environment_line(results), "",
             *phase_table(results), "", "Not passed:", *problems(results), "",
             "Speed (medians; OUTDIR/bench.md has every table):",
             *speed_table(out, results["phases"].get("environment", {}).get("info", {}))]
    return "\n".join(lines) + "\n"
