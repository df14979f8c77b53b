"""The static report as Markdown: one table per variant of the configs the launchers use,
the training-step totals, and (full scope) every autotune candidate."""
from __future__ import annotations

from bench.static import h100_model, sass_budgets


def config_text(config: dict) -> str:
    if "BLOCK_M" in config:
        text = f"{config['BLOCK_M']}x{config['BLOCK_N']}x{config['BLOCK_K']}"
    else:
        text = " ".join(f"{k}={v}" for k, v in config.items()
                        if k.startswith("BLOCK"))
    return f"{text} w{config['num_warps']} s{config['num_stages']}"


def _widths(counts: dict) -> str:
    return " ".join(f"{width}B:{n}" if width != "tma" else f"tma:{n}"
                    for width, n in sorted(counts.items(), key=lambda kv: kv[0])) or "-"


def _number(value, digits=1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _short_kernel(kernel: str) -> str:
    return kernel.removesuffix("_kernel").replace("conv2d_relu_", "conv_")


def _loop_text(loop: dict | None) -> str:
    if loop is None:
        return "-"
    text = f"{loop['instructions']}"
    if loop["conditional"]:
        text += f" ({loop['conditional']} in an if)"
    if loop["local_memory"]:
        text += f", {loop['local_memory']} LDL/STL"
    return text


def _percent(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def kernel_table(rows: list[dict], candidates: bool = False) -> list[str]:
    """One line per kernel; ``candidates``: with the budgets each misses on its own."""
    lines = [
        "| launch | kernel | config | regs | spill B | smem KiB | programs | busiest SM "
        "| MMA | loop instr | MMA (FFMA)/iter | loads in loop (bytes:count) | copies ahead "
        "| int div (32-bit / 64-bit calls) | issue ratio | useful / issued MMA "
        "| predicted us | bound | floor us | previous model us |"
        + (" budgets missed |" if candidates else ""),
        "|---" * (20 + candidates) + "|"]
    for r in rows:
        loop = r["main_loop"]
        scope = loop if loop else {"instructions": None, "mma": None,
                                   "loads": r["kernel_loads"], "divisions": r["kernel_divisions"]}
        divisions = scope["divisions"]
        step = "" if r["in_step"] else " (not in step)"
        lines.append(
            f"| {r['launch']}{step} | {_short_kernel(r['kernel'])} | {config_text(r['config'])} "
            f"| {r['registers']} | {r['spill_bytes']} | {r['shared_bytes'] / 1024:.0f} "
            f"| {r['programs']:,} | {r['programs_per_sm']} | {r['matrix_instruction']} "
            f"| {_loop_text(loop)} "
            f"| {'-' if loop is None else (loop['mma'] or sum(loop['math'].values()))} "
            f"| {_widths(scope['loads'])}{'' if loop else ' (kernel)'} "
            f"| {r['copies_ahead'] or '-'} "
            f"| {divisions['runtime_32']} / {divisions['calls_64']} "
            f"| {_number(r['issue_ratio'], 2)} | {_percent(r['useful_share'])} "
            f"| {_number(r['predicted_us']['predicted'])} "
            f"| {r['bound']} | {_number(r['floor_us'])} | {_number(r['previous_us'])} |"
            + (f" {', '.join(sass_budgets.misses(r)) or 'none'} |" if candidates else ""))
    return lines


def _devices(report: dict) -> list[tuple[str, str]]:
    """(key, name) of each device the report predicts for, its main columns' first."""
    return [(key, figures["short"]) for key, figures in report["devices"].items()]


def summary_table(report: dict) -> list[str]:
    """Per launch of the training step (its kernels summed), predicted beside floor, in
    microseconds, and the step's total, on the report's first device, with the other
    devices' predictions beside: the table the README shows."""
    # A partial report (--launches) may hold no launch of the step: no variant to total.
    variants = [v for v in report["variants"] if v in report["step"]]
    first, *others = _devices(report)
    cells: dict = {}
    for r in report["kernels"]:
        if r["chosen"] and r["in_step"]:
            cell = cells.setdefault(r["launch"], {}).setdefault(
                r["variant"], [0.0, 0.0, {}, {key: 0.0 for key, _ in others}, 0.0, 0.0])
            cell[0] += r["predicted_us"]["predicted"]
            cell[1] += r["floor_us"]
            cell[4] += r["flops"]
            cell[5] += r["issued_flops"]
            cell[2][r["bound"]] = cell[2].get(r["bound"], 0.0) + r["predicted_us"]["predicted"]
            for key, _ in others:
                cell[3][key] += r["by_device"][key]["predicted_us"]["predicted"]
    header = "| launch | " + " | ".join(
        f"{v} predicted us | {v} floor us | {v} / floor | {v} bound | {v} useful MMA"
        + "".join(f" | {v} {name} us" for _, name in others) for v in variants) + " |"
    lines = [f"{first[1]}: predicted, floor, their ratio and bound; useful MMA: the share "
             "of the MMA work the launch issues that the layer needs; "
             + ", ".join(name for _, name in others) + ": predicted.", "",
             header, "|---" * (1 + (5 + len(others)) * len(variants)) + "|"]
    for launch, by_variant in cells.items():
        row = [launch]
        for v in variants:
            predicted, floor, bounds, other, flops, issued = by_variant[v]
            row += [f"{predicted:,.1f}", f"{floor:,.1f}", f"{predicted / floor:.2f}",
                    max(bounds, key=bounds.get), _percent(flops / issued if issued else None)]
            row += [f"{other[key]:,.1f}" for key, _ in others]
        lines.append("| " + " | ".join(row) + " |")
    total = ["**step**"]
    for v in variants:
        t = report["step"][v]
        total += [f"**{t['predicted_ms'] * 1e3:,.0f}**", f"**{t['floor_ms'] * 1e3:,.0f}**",
                  f"{t['predicted_ms'] / t['floor_ms']:.2f}", "", ""]
        total += [f"**{report['step_by_device'][key][v]['predicted_ms'] * 1e3:,.0f}**"
                  for key, _ in others]
    lines.append("| " + " | ".join(total) + " |")
    return lines


def best_candidate_table(chosen: list[dict], candidates: list[dict]) -> list[str]:
    """Per autotuned kernel launch: the chosen config's prediction beside the lowest
    predicted time among its candidates (what a timer agreeing with the model would pick)."""
    by_kernel: dict = {}
    for r in candidates:
        by_kernel.setdefault((r["variant"], r["launch"], r["kernel"]), []).append(r)
    lines = ["| variant | launch | kernel | chosen | predicted us | fastest predicted | "
             "predicted us |", "|---" * 7 + "|"]
    for r in chosen:
        options = by_kernel.get((r["variant"], r["launch"], r["kernel"]))
        if not options or len(options) < 2:
            continue
        best = min(options, key=lambda o: o["predicted_us"]["predicted"])
        lines.append(f"| {r['variant']} | {r['launch']} | {_short_kernel(r['kernel'])} "
                     f"| {config_text(r['config'])} | {r['predicted_us']['predicted']:,.1f} "
                     f"| {config_text(best['config'])} "
                     f"| {best['predicted_us']['predicted']:,.1f} |")
    return lines


def markdown(report: dict) -> str:
    chosen = [r for r in report["kernels"] if r["chosen"]]
    out = [
        "# Static report: AlexNet's Triton kernels compiled for sm_90a (H100/H200), batch 128, "
        "predicted for " + " and ".join(name for _, name in _devices(report)),
        "",
        "**A PREDICTION from compiled code, not a measurement.** Regenerate with "
        f"`python -m bench.static{' --full' if report['scope'] == 'full' else ''}` (no GPU needed; "
        f"Triton {report['triton']}, torch {report['torch']}).",
        "",
        f"- Config of each launch: {report['chosen_config']}.",
        "- Predicted time (issue 21's model): the work each launch issues, padding included, "
        "on its busiest SM. Programs are dealt to SMs in turn, so one SM runs ceil(programs / "
        "SMs) of them, at most as many at once as fit its registers and shared memory; it "
        "takes the longest of (1) its MMA work at the tensor cores' rate, (2) all its "
        "instructions at 4 schedulers x 1 per cycle, (3) its programs' dependency chains one "
        "round after another: the code outside the loop, one load latency to fill the "
        "pipeline, and per iteration the slowest of its MMAs, its issue and its copies' "
        "latency (a copy issued c cycles into an iteration and waited for n iterations later "
        f"costs at least (c + {h100_model.LOAD_LATENCY_CYCLES} cycles) / n per iteration; "
        f"{h100_model.LOAD_LATENCY_CYCLES} cycles is an assumption, not a measurement); or "
        "its bytes at the bandwidth. Floor = max(useful FLOPs / peak on all SMs, bytes / "
        "bandwidth). Bytes: each distinct tensor the kernel is given, read or written once.",
        "- Previous model (the reports before issue 21, kept beside for this report): max(useful "
        "FLOPs / peak of the SMs in use, bytes / bandwidth, instructions averaged over "
        "min(programs, SMs)), no padding, waves or latency.",
        "- Same SASS (sm_90a) on every device; their figures (bench/devices.py: NVIDIA's "
        "datasheets, the model taking "
        f"{h100_model.SUSTAINED_COMPUTE:.0%} of the peaks and "
        f"{h100_model.SUSTAINED_BANDWIDTH:.0%} of the bandwidth as sustained):",
        "",
        "| device | SMs | clock GHz | bf16 TFLOP/s | tf32 TFLOP/s | fp32 (FFMA) TFLOP/s "
        "| bandwidth TB/s |",
        "|---|---|---|---|---|---|---|",
        *(f"| {d['name']} | {d['sms']} | {d['clock_hz'] / 1e9:g} "
          f"| {d['peak_flops']['bf16'] / 1e12:,.1f} | {d['peak_flops']['tf32'] / 1e12:,.1f} "
          f"| {d['peak_flops']['fp32'] / 1e12:,.1f} | {d['bytes_per_s'] / 1e12:.2f} |"
          for d in report["devices"].values()),
        "",
        "- Issue ratio = main-loop instructions x warps per scheduler / tensor-core cycles of "
        "the loop's MMAs (2,048 dense bf16 FMA per cycle per SM, tf32 half that; FFMA "
        "128); above 1 the schedulers, not the tensor cores, set the pace.",
        "- Main loop: found from the SASS's back edges (the innermost loop with MMAs, else the "
        "longest); loads are global loads (LDG, LDGSTS, TMA) by bytes per thread.",
        "",
        "## One training step (every layer forward and backward, and the augmentation)",
        "",
        "| variant | kernels | " + " | ".join(
            f"{name} predicted ms | {name} floor ms | {name} predicted / floor | "
            f"{name} images/s | {name} previous model ms" for _, name in _devices(report))
        + " |",
        "|---|---" + "|---" * 5 * len(report["devices"]) + "|",
    ]
    for variant, t in report["step"].items():
        cells = [variant, str(t["kernels"])]
        for key, _ in _devices(report):
            step = report["step_by_device"][key][variant]
            cells += [f"{step['predicted_ms']:.2f}", f"{step['floor_ms']:.2f}",
                      f"{step['predicted_ms'] / step['floor_ms']:.1f}x",
                      f"{report['batch'] / step['predicted_ms'] * 1e3:,.0f}",
                      f"{step['previous_ms']:.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Per launch of the step: predicted and floor", ""]
    out += summary_table(report)
    for variant in report["variants"]:
        out += ["", f"## {variant}: the configs the launchers use", ""]
        out += kernel_table([r for r in chosen if r["variant"] == variant])
    candidates = [r for r in report["kernels"] if not r["chosen"]]
    if report["scope"] == "full" and candidates:
        out += ["", "## Chosen config against the candidate the model predicts fastest", ""]
        out += best_candidate_table(chosen, candidates)
        out += ["", "## Every autotune candidate that compiles and fits", ""]
        for variant in report["variants"]:
            out += ["", f"### {variant}", ""]
            out += kernel_table([r for r in candidates if r["variant"] == variant],
                                candidates=True)
    if report["failures"]:
        out += ["", "## Configs that do not compile or fit (the autotuner skips those out of "
                "resources, as on a GPU)", ""]
        for f in report["failures"]:
            config = config_text(f["config"]) if "config" in f else ""
            needs = f" ({f['shared'] / 1024:.0f} KiB of shared memory)" if f.get("shared") else ""
            out.append(f"- {f['variant']} {f['launch']} {f.get('kernel', '')} {config}: "
                       f"{f.get('outcome', 'launch failed')}{needs}")
    return "\n".join(out) + "\n"
