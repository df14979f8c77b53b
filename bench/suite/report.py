"""python -m bench.suite.report RESULTS.json [MORE.json ...]: the results as Markdown tables.

Reads the JSON that ``pytest bench/ --benchmark-only --benchmark-json=RESULTS.json`` writes
(several files are merged, a later file's result replacing an earlier one's for the same
case, so a suite run in pieces reports as one) and prints:

- the GPU's ceilings measured in the run (bf16 dense matmul rate, device copy bandwidth),
  beside the datasheet's for that GPU (bench/devices.py, chosen by the GPU's name, or by
  ``--device-model`` for results that name none);
- the whole model: time per step, images/s, peak memory, speed and memory against eager and
  torch.compile, and the model-FLOPs utilisation (MFU: 4.35 GFLOP per 224x224 image for a
  training step, a third of that for inference, against the measured bf16 matmul rate, or
  the datasheet's dense bf16 peak where the run measured none);
- every op: time per provider, ours against eager and torch.compile, memory against eager,
  and what ours achieves (TFLOP/s for the GEMMs, GB/s for the memory-bound ops, with the
  fraction of the measured ceiling);
- the targets of issue 5 (bf16), each with its measured value and whether it is met;
- the input pipeline's rates.

Every number is a median over the benchmark's rounds (pytest-benchmark's ``median``, seconds
per call), except the ceilings, which use the best round. A speedup is the baseline's time
over ours (above 1: ours is faster); a memory ratio is ours over the baseline's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from alexnet_triton.errors import UserError
from bench import devices

OURS = "triton"
DTYPE_ORDER = {"bf16": 0, "fp32": 1}
MODE_ORDER = {"fwd": 0, "fwd+bwd": 1}
MODEL_PROVIDERS = ["triton", "triton-2col", "eager", "compile"]
MODEL_LABELS = {"triton": "ours (devices=None)", "triton-2col": "ours (two columns, one GPU)",
                "eager": "reference, eager", "compile": "reference, torch.compile"}

# Issue 5's targets (bf16, batch 128, one H100).
STEP_SPEEDUP_EAGER = 1.5
STEP_SPEEDUP_COMPILE = 1.2
STEP_MEMORY_EAGER = 0.7
LRN_SPEEDUP = 5.0
POOL_SPEEDUP = 1.5
DROPOUT_BANDWIDTH = 0.8
CONV_SPEEDUP = 0.9
LOADER_IMAGES_PER_S = 1500.0
# Issue 19: the default loader path on one core against Pillow alone on the old store format.
LOADER_GAIN_OVER_PILLOW = 2.0
# Issue 19: the step fed from real data (GPU decoding) within 10% of the synthetic one.
REAL_DATA_SHARE = 0.9
STATIC_REPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "results", "static-sm90.json")


@dataclass
class Results:
    """The benchmarks of one run, sorted by what they measure."""

    ops: Dict[Tuple[str, str, str], Dict[str, dict]] = field(default_factory=dict)
    models: Dict[Tuple, Dict[str, dict]] = field(default_factory=dict)
    peaks: Dict[str, dict] = field(default_factory=dict)
    data: Dict[Tuple, dict] = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    datetime: Optional[str] = None
    # The GPU's row of bench/devices.py: by its name in machine_info, or --device-model;
    # None where the results name no GPU the table knows.
    device: Optional[devices.Device] = None

    @property
    def matmul_flops_per_s(self) -> Optional[float]:
        bench = self.peaks.get("matmul_bf16")
        return bench["extra_info"]["flops"] / bench["stats"]["min"] if bench else None

    @property
    def mfu_peak(self) -> Tuple[Optional[float], str]:
        """(FLOP/s, what it is) that MFU divides by: measured where the run has it."""
        if self.matmul_flops_per_s:
            return self.matmul_flops_per_s, "the measured bf16 matmul rate"
        if self.device is not None:
            return (self.device.bf16_flops,
                    f"the {self.device.name} datasheet's dense bf16 peak (no matmul measured)")
        return None, "no bf16 rate (none measured, GPU not in bench/devices.py)"

    @property
    def copy_bytes_per_s(self) -> Optional[float]:
        bench = self.peaks.get("copy")
        return bench["extra_info"]["bytes"] / bench["stats"]["min"] if bench else None


def load(paths: Sequence[Path]) -> List[dict]:
    return [json.loads(Path(path).read_text()) for path in paths]


def collect(documents: Iterable[dict]) -> Results:
    results = Results()
    for document in documents:
        results.machine = {**results.machine, **document.get("machine_info", {})}
        results.datetime = document.get("datetime", results.datetime)
        for bench in document.get("benchmarks", []):
            info = bench.get("extra_info", {})
            kind = info.get("kind")
            if kind == "op":
                key = (info["op"], info["mode"], info["dtype"])
                results.ops.setdefault(key, {})[info["provider"]] = bench
            elif kind == "model":
                key = (info["task"], info["precision"], info["device"], info["batch"],
                       info["image_size"])
                results.models.setdefault(key, {})[info["provider"]] = bench
            elif kind == "peak":
                results.peaks[info["peak"]] = bench
            elif kind == "data":
                key = (info["stage"], info["device"], info.get("image_size"))
                results.data[key] = bench
    results.device = devices.find(results.machine.get("gpu"))
    return results


# -- numbers ------------------------------------------------------------------------------

def seconds(bench: Optional[dict]) -> Optional[float]:
    return bench["stats"]["median"] if bench else None


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def speedup(ours: Optional[dict], baseline: Optional[dict]) -> Optional[float]:
    """The baseline's time over ours: above 1, ours is faster."""
    return ratio(seconds(baseline), seconds(ours))


def memory(bench: Optional[dict], key: str) -> Optional[float]:
    return bench["extra_info"].get(key) if bench else None


@dataclass
class OpRow:
    op: str
    kind: str  # conv, lrn, pool, dropout, linear
    shape: str
    mode: str
    dtype: str
    order: int
    seconds: Dict[str, Optional[float]]
    speedup_eager: Optional[float]
    speedup_compile: Optional[float]
    memory_eager: Optional[float]
    tflops: Optional[float]  # ours, TFLOP/s (GEMMs)
    gbps: Optional[float]  # ours, GB/s (memory-bound ops)
    fraction_of_peak: Optional[float]


def op_rows(results: Results) -> List[OpRow]:
    rows = []
    for (op, mode, dtype), providers in results.ops.items():
        ours = providers.get(OURS)
        any_bench = next(iter(providers.values()))
        info = any_bench["extra_info"]
        tflops = gbps = fraction = None
        if ours:
            if info.get("flops"):
                rate = info["flops"] / seconds(ours)
                tflops = rate / 1e12
                if dtype == "bf16":
                    fraction = ratio(rate, results.matmul_flops_per_s)
            elif info.get("bytes"):
                rate = info["bytes"] / seconds(ours)
                gbps = rate / 1e9
                fraction = ratio(rate, results.copy_bytes_per_s)
        rows.append(OpRow(
            op=op, kind=info.get("op_kind", ""), shape=info.get("shape", ""), mode=mode,
            dtype=dtype,
            order=info.get("order", 0),
            seconds={name: seconds(providers.get(name)) for name in ("triton", "eager", "compile")},
            speedup_eager=speedup(ours, providers.get("eager")),
            speedup_compile=speedup(ours, providers.get("compile")),
            memory_eager=ratio(memory(ours, "step_memory_bytes"),
                               memory(providers.get("eager"), "step_memory_bytes")),
            tflops=tflops, gbps=gbps, fraction_of_peak=fraction))
    rows.sort(key=lambda r: (DTYPE_ORDER.get(r.dtype, 9), r.order, MODE_ORDER.get(r.mode, 9)))
    return rows


@dataclass
class ModelRow:
    task: str
    precision: str
    device: str
    batch: int
    image_size: int
    provider: str
    seconds: float
    images_per_s: float
    peak_memory_bytes: Optional[int]
    speedup_eager: Optional[float]
    speedup_compile: Optional[float]
    memory_eager: Optional[float]
    mfu: Optional[float]
    note: str


def model_rows(results: Results) -> List[ModelRow]:
    rows = []
    peak = results.mfu_peak[0]
    for key in sorted(results.models, key=lambda k: (k[2] != "cuda", k[0] != "train",
                                                     DTYPE_ORDER.get(k[1], 9), k[3], k[4])):
        task, precision, device, batch, image_size = key
        providers = results.models[key]
        eager, compiled = providers.get("eager"), providers.get("compile")
        for provider in sorted(providers, key=lambda p: (MODEL_PROVIDERS.index(p)
                                                         if p in MODEL_PROVIDERS else 9, p)):
            bench = providers[provider]
            info = bench["extra_info"]
            images_per_s = batch / seconds(bench)
            flops = info.get("flops_per_image")
            rows.append(ModelRow(
                task=task, precision=precision, device=device, batch=batch,
                image_size=image_size, provider=provider, seconds=seconds(bench),
                images_per_s=images_per_s, peak_memory_bytes=info.get("peak_memory_bytes"),
                speedup_eager=speedup(bench, eager), speedup_compile=speedup(bench, compiled),
                memory_eager=ratio(info.get("peak_memory_bytes"),
                                   memory(eager, "peak_memory_bytes")),
                mfu=ratio(flops * images_per_s, peak) if flops and device == "cuda" else None,
                note=info.get("memory_format", "")))
    return rows


@dataclass
class TargetRow:
    target: str
    measured: str
    met: Optional[bool]


def _at_least(value: Optional[float], goal: float) -> Optional[bool]:
    return None if value is None else value >= goal


def target_rows(results: Results) -> List[TargetRow]:
    """Issue 5's goals (bf16, batch 128), each against what this run measured."""
    rows: List[TargetRow] = []
    ops = {(r.op, r.mode, r.dtype): r for r in op_rows(results)}
    steps = {(r.task, r.precision, r.device, r.provider): r for r in model_rows(results)}
    ours_step = steps.get(("train", "bf16", "cuda", OURS))
    if ours_step:
        rows.append(TargetRow(f"training step >= {STEP_SPEEDUP_EAGER}x eager images/s",
                              _x(ours_step.speedup_eager),
                              _at_least(ours_step.speedup_eager, STEP_SPEEDUP_EAGER)))
        rows.append(TargetRow(f"training step >= {STEP_SPEEDUP_COMPILE}x torch.compile images/s",
                              _x(ours_step.speedup_compile),
                              _at_least(ours_step.speedup_compile, STEP_SPEEDUP_COMPILE)))
        rows.append(TargetRow(f"training step peak memory <= {STEP_MEMORY_EAGER}x eager",
                              _x(ours_step.memory_eager),
                              None if ours_step.memory_eager is None
                              else ours_step.memory_eager <= STEP_MEMORY_EAGER))
    speedup_goals = {"conv": (CONV_SPEEDUP, "cuDNN"), "lrn": (LRN_SPEEDUP, "eager"),
                     "pool": (POOL_SPEEDUP, "eager")}
    for row in (r for r in ops.values() if r.dtype == "bf16"):
        if row.kind in speedup_goals and row.mode == "fwd+bwd":
            goal, baseline = speedup_goals[row.kind]
            rows.append(TargetRow(f"{row.op} fwd+bwd >= {goal}x {baseline}",
                                  _x(row.speedup_eager), _at_least(row.speedup_eager, goal)))
        elif row.op == "dropout-large":
            rows.append(TargetRow(
                f"{row.op} {row.mode} >= {DROPOUT_BANDWIDTH:.0%} of copy bandwidth",
                _percent(row.fraction_of_peak),
                _at_least(row.fraction_of_peak, DROPOUT_BANDWIDTH)))
    data = data_rows(results)
    default = next((r for r in data if r["default_path"]), None)
    baseline = next((r for r in data if r["baseline"]), None)
    if default is not None:
        rows.append(TargetRow(f"loader >= {LOADER_IMAGES_PER_S:,.0f} images/s per worker "
                              f"(256-pixel JPEG store, default path)",
                              f"{default['images_per_s']:,.0f}",
                              _at_least(default["images_per_s"], LOADER_IMAGES_PER_S)))
    feeds = {r["feed"]: r for r in data if r.get("feed")}
    for kind in ("gpu-decode", "cpu-decode"):
        if kind in feeds and "synthetic" in feeds:
            share = feeds[kind]["images_per_s"] / feeds["synthetic"]["images_per_s"]
            rows.append(TargetRow(f"loader: training step fed by {kind} >= "
                                  f"{REAL_DATA_SHARE:.0%} of the synthetic step's images/s",
                                  _percent(share), _at_least(share, REAL_DATA_SHARE)))
    paired = next((r for r in data if r["gain_over_pillow"] is not None), None)
    if paired is not None:  # measured in alternating rounds: the figure to judge by
        rows.append(TargetRow(f"loader's default path on one core >= {LOADER_GAIN_OVER_PILLOW}x "
                              f"Pillow alone on the old store (q95 4:4:4), alternating rounds",
                              _x(paired["gain_over_pillow"]),
                              _at_least(paired["gain_over_pillow"], LOADER_GAIN_OVER_PILLOW)))
    elif default is not None and baseline is not None:
        gain = default["images_per_s"] / baseline["images_per_s"]
        rows.append(TargetRow(f"loader's default path on one core >= {LOADER_GAIN_OVER_PILLOW}x "
                              f"Pillow alone on the old store (q95 4:4:4)", _x(gain),
                              _at_least(gain, LOADER_GAIN_OVER_PILLOW)))
    rows.sort(key=lambda r: _target_order(r.target))
    return rows


def _target_order(name: str) -> Tuple[int, str]:
    for i, prefix in enumerate(("training", "conv", "lrn", "pool", "dropout", "loader")):
        if name.startswith(prefix):
            return i, name
    return 9, name


def data_rows(results: Results) -> List[dict]:
    rows = []
    for (stage, device, image_size), bench in sorted(results.data.items(),
                                                     key=lambda kv: tuple(map(str, kv[0]))):
        info = bench["extra_info"]
        rows.append({"stage": stage, "device": device, "image_size": image_size,
                     "crop": info.get("crop"), "batch": info.get("batch"),
                     "images_per_s": info["images_per_call"] / seconds(bench),
                     "default_path": bool(info.get("default_path")),
                     "feed": info.get("feed"),
                     "gain_over_pillow": info.get("gain_over_pillow"),
                     "baseline": bool(info.get("baseline"))})
    return rows


def step_consumption(results: Results) -> Optional[str]:
    """What the bf16 training step eats, for the loader rates to be read against: measured
    where the model benchmarks ran on a GPU, else the static report's prediction (for this
    run's GPU where the report predicts for it, else for every device it predicts for)."""
    steps = [r for r in model_rows(results)
             if (r.task, r.precision, r.device, r.provider) == ("train", "bf16", "cuda", OURS)]
    if steps:
        return (f"The bf16 training step (ours, batch {steps[0].batch}) consumes "
                f"{_number(steps[0].images_per_s)} images/s, measured in this run.")
    try:
        with open(STATIC_REPORT) as f:
            static = json.load(f)
        by_device = {key: (static["devices"][key], steps["bf16"])
                     for key, steps in static["step_by_device"].items()}
    except (OSError, KeyError, ValueError):
        return None
    if results.device is not None and results.device.key in by_device:
        by_device = {results.device.key: by_device[results.device.key]}
    rates = [f"~{_number(static['batch'] / step['predicted_ms'] * 1e3)} images/s on an "
             f"{figures['short']} ({step['predicted_ms']:.2f} ms a step)"
             for figures, step in by_device.values()]
    return (f"The bf16 training step consumes {' and '.join(rates)} at batch "
            f"{static['batch']} (predicted by the static report; no GPU step in this run): "
            f"that many images/s from the loaders, over all their workers, keeps the GPU busy.")


# -- formatting ---------------------------------------------------------------------------

def _number(value: float) -> str:
    """Three significant digits, without exponents: 0.0123, 4.56, 78.9, 1,234."""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}"


def _ms(value: Optional[float]) -> str:
    return "—" if value is None else _number(value * 1e3)


def _x(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _percent(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.0%}"


def _gib(value: Optional[float]) -> str:
    return "—" if value is None else f"{value / 2**30:.2f} GiB"


def _met(value: Optional[bool]) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_line(results: Results) -> str:
    m = results.machine
    parts = [m.get("gpu") or f"no GPU ({m.get('cpu', {}).get('brand_raw', 'CPU')})"]
    for name in ("torch", "triton", "cuda", "cudnn"):
        if m.get(name):
            parts.append(f"{name} {m[name]}")
    if results.datetime:
        parts.append(results.datetime[:10])
    return " · ".join(str(p) for p in parts)


def render(results: Results) -> str:
    out = ["# alexnet_triton benchmarks", "", machine_line(results), "",
           "Medians of pytest-benchmark's rounds. Speedup: the baseline's time over ours "
           "(above 1, ours is faster). Memory: ours over eager's (peak for the model, the "
           "call's own allocations for an op).", ""]
    if results.peaks:
        device = results.device
        out += ["## Ceilings measured in this run", ""]
        if device is None:
            out += [f"No datasheet figures: {results.machine.get('gpu') or 'the GPU'} is not in "
                    "bench/devices.py (give --device-model).", ""]
        out += table(["measure", "size", "rate", "datasheet", "share of datasheet"], [
            [name, bench["extra_info"].get("shape", ""), _number(rate / scale) + unit,
             "—" if paper is None else _number(paper / scale) + unit,
             "—" if paper is None else _percent(rate / paper)]
            for name, bench, rate, paper, scale, unit in (
                ("bf16 dense matmul", results.peaks.get("matmul_bf16"),
                 results.matmul_flops_per_s or 0, device and device.bf16_flops, 1e12,
                 " TFLOP/s"),
                ("device-to-device copy (read + write)", results.peaks.get("copy"),
                 results.copy_bytes_per_s or 0, device and device.memory_bytes_per_s, 1e9,
                 " GB/s"))
            if bench])
        out.append("")
    models = model_rows(results)
    if models:
        out += ["## Whole model", "",
                "MFU: 4.35 GFLOP per 224x224 image for a training step (1.45 for inference) "
                f"over {results.mfu_peak[1]}, for every precision.", ""]
        out += table(["step", "precision", "batch", "model", "ms", "images/s", "peak memory",
                      "vs eager", "vs compile", "memory vs eager", "MFU"],
                     [[f"{r.task} ({r.device}, {r.image_size}px)", r.precision, str(r.batch),
                       MODEL_LABELS.get(r.provider, r.provider) + (f", {r.note}" if r.note else ""),
                       _ms(r.seconds), _number(r.images_per_s), _gib(r.peak_memory_bytes),
                       _x(r.speedup_eager), _x(r.speedup_compile), _x(r.memory_eager),
                       _percent(r.mfu)] for r in models])
        out.append("")
    ops = op_rows(results)
    for dtype in sorted({r.dtype for r in ops}, key=lambda d: DTYPE_ORDER.get(d, 9)):
        out += [f"## Ops, {dtype}", "",
                "ours achieved: TFLOP/s for the GEMMs (share of the bf16 matmul rate for "
                "bf16), GB/s for the memory-bound ops (share of the copy bandwidth; the "
                "fewest bytes: each tensor read or written once).", ""]
        out += table(["op", "input", "mode", "ours ms", "eager ms", "compile ms", "vs eager",
                      "vs compile", "memory vs eager", "ours achieved"],
                     [[r.op, r.shape, r.mode, _ms(r.seconds["triton"]), _ms(r.seconds["eager"]),
                       _ms(r.seconds["compile"]), _x(r.speedup_eager), _x(r.speedup_compile),
                       _x(r.memory_eager), _achieved(r)] for r in ops if r.dtype == dtype])
        out.append("")
    targets = target_rows(results)
    if targets:
        out += ["## Targets (issue 5: bf16, batch 128, one H100; the loader per CPU worker)",
                ""]
        out += table(["target", "measured", "met"],
                     [[t.target, t.measured, _met(t.met)] for t in targets])
        out.append("")
    data = data_rows(results)
    if data:
        out += ["## Input pipeline", ""]
        out += table(["stage", "device", "image size", "crop", "batch", "images/s"],
                     [[d["stage"], d["device"], str(d["image_size"] or "—"),
                       str(d["crop"] or "—"), str(d["batch"] or "—"),
                       _number(d["images_per_s"])] for d in data])
        out.append("")
        consumption = step_consumption(results)
        if consumption:
            out += [consumption, ""]
    return "\n".join(out)


def _achieved(row: OpRow) -> str:
    share = f" ({_percent(row.fraction_of_peak)})" if row.fraction_of_peak is not None else ""
    if row.tflops is not None:
        return f"{_number(row.tflops)} TFLOP/s{share}"
    if row.gbps is not None:
        return f"{_number(row.gbps)} GB/s{share}"
    return "—"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="pytest-benchmark JSON files (--benchmark-json); later ones win")
    parser.add_argument("--output", type=Path, help="also write the Markdown to this file")
    parser.add_argument("--device-model", metavar="KEY",
                        help="the GPU's row of bench/devices.py (e.g. h100-sxm, h200) when the "
                             "results name none or another; default: chosen by the GPU's name")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.results if not p.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        model = devices.lookup(args.device_model) if args.device_model else None
        results = collect(load(args.results))
        results.device = model or results.device
        text = render(results)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        print(f"error: not pytest-benchmark JSON from bench/ ({error!r})", file=sys.stderr)
        return 2
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
