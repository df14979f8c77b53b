"""bench/gpu_check: the one-call GPU check, exercised where there is no GPU.

The dry run goes through every phase's process, time box and output file with the GPU
parts skipped; the pieces that decide whether a GPU window is well spent (time boxes that
keep earlier results, the autotune cache, importing a bare checkout, the sanitizer's
summary) are tested on their own.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from bench.gpu_check import autotune, orchestrate, precompile, sanitize
from bench.gpu_check.orchestrate import Phase

ROOT = Path(__file__).resolve().parents[2]


def _run(command, **kwargs):
    """``command`` as a user's shell runs it: without the interpreter, and without pytest's
    own variables (an xdist worker's PYTEST_XDIST_WORKER makes pytest-benchmark in the speed
    phase's pytest refuse to measure)."""
    env = {k: v for k, v in os.environ.items()
           if k != "TRITON_INTERPRET" and not k.startswith("PYTEST_")}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, **kwargs)


def test_dry_run_goes_through_every_phase(tmp_path):
    out = tmp_path / "out"
    result = _run([sys.executable, "-m", "bench.gpu_check", str(out), "--dry-run"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "gpu-check.json").read_text())
    statuses = {name: record["status"] for name, record in results["phases"].items()}
    assert statuses == {"environment": "skip", "precompile": "pass", "correctness": "pass",
                        "model": "pass", "training": "pass", "sanitize": "skip",
                        "speed": "pass"}
    phases = results["phases"]
    assert phases["precompile"]["info"]["compiled"] > 0
    # the sliced launch's own candidate is over the H100's shared memory: it fell back
    assert phases["precompile"]["info"]["out_of_resources"] >= 1
    # Real checks ran: kernels through the interpreter, the model on the references.
    assert sum(c["status"] == "pass" for c in phases["correctness"]["checks"]) >= 10
    # and the plain-load fallback of the GEMMs once more (TMA descriptors are the default)
    plain = {c["name"] for c in phases["correctness"]["checks"] if c["status"] == "pass"
             and ".plain-loads." in c["name"]}
    assert {"conv3.float32.plain-loads.forward", "fc8.float32.plain-loads.forward"} <= plain
    assert sum(c["status"] == "pass" for c in phases["model"]["checks"]) >= 60
    for name in ("gpu-check.log", "summary.md", "bench.json", "bench.md"):
        assert (out / name).exists(), name
    # The device tool returns the end of the output: the summary must be last.
    summary = (out / "summary.md").read_text()
    assert result.stdout.rstrip().endswith(summary.rstrip())
    assert "| correctness | pass |" in summary


FAKE_PHASE = """
import sys, time
from bench.gpu_check.cli import phase_main
from bench.gpu_check.record import PASS

def run(record, args):
    record.check("first", PASS)
    time.sleep(float(sys.argv[-1]) if sys.argv[-1].replace('.', '').isdigit() else {sleep})
    record.check("second", PASS)

if __name__ == "__main__":
    phase_main("{name}", run)
"""


def test_a_time_box_stops_its_phase_and_keeps_what_it_finished(tmp_path, monkeypatch):
    for name, sleep in (("quick_phase", 0), ("slow_phase", 60)):
        (tmp_path / f"{name}.py").write_text(FAKE_PHASE.format(name=name, sleep=sleep))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    # An early phase's unused time goes to the next: keep the first one's budget short.
    phases = [Phase("quick", "quick_phase", 1), Phase("slow", "slow_phase", 3),
              Phase("after", "quick_phase", 30)]
    out = tmp_path / "out"
    results = orchestrate.orchestrate(out, phases, dry_run=True, budget_s=100)
    slow = results["phases"]["slow"]
    assert slow["status"] == "timeout" and slow["wall_seconds"] < 20
    assert [c["name"] for c in slow["checks"]] == ["first", "slow time box"]
    assert results["phases"]["quick"]["status"] == "pass"
    assert results["phases"]["after"]["status"] == "pass"  # the check went on
    on_disk = json.loads((out / "gpu-check.json").read_text())
    assert list(on_disk["phases"]) == ["quick", "slow", "after"]


def test_the_whole_budget_is_kept(tmp_path, monkeypatch):
    (tmp_path / "slow_phase.py").write_text(FAKE_PHASE.format(name="slow_phase", sleep=60))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    phases = [Phase("a", "slow_phase", 60), Phase("b", "slow_phase", 60)]
    results = orchestrate.orchestrate(tmp_path / "out", phases, dry_run=True,
                                      budget_s=orchestrate.SUMMARY_RESERVE_S + 8)
    seconds = sum(r.get("wall_seconds", 0) for r in results["phases"].values())
    assert seconds < 12 and results["phases"]["a"]["status"] == "timeout"


def test_candidates_are_among_each_kernels_configs():
    tuners = autotune.autotuners()
    autotune.restrict(tuners)
    for name, tiles in autotune.CANDIDATES.items():
        assert {autotune.tile(c) for c in tuners[name].configs} == tiles, name


def test_every_autotuner_is_found_once():
    """Two autotuners of one kernel (linear_kernel's per operand width) both get a name:
    keyed by the kernel's name alone, the second one hid the first."""
    import importlib
    import pkgutil

    import triton

    import alexnet_triton.kernels as package
    expected = {id(value) for info in pkgutil.iter_modules(package.__path__) if not info.ispkg
                for value in vars(importlib.import_module(f"{package.__name__}.{info.name}")).values()
                if isinstance(value, triton.runtime.Autotuner)}
    assert {id(tuner) for tuner in autotune.autotuners().values()} == expected
    assert set(autotune.CANDIDATES) <= set(autotune.autotuners())


def test_autotune_choices_survive_a_round_trip(tmp_path):
    tuners = autotune.autotuners()
    autotune.restrict(tuners)
    conv = tuners["conv2d_relu_forward_kernel"]
    key = (128 * 27 * 27, 128, 1200, 5, 5, "torch.bfloat16", "torch.bfloat16")
    saved = dict(conv.cache)
    try:
        conv.cache[key] = conv.configs[-1]
        path = tmp_path / "autotune.json"
        autotune.save(tuners, path)
        conv.cache.clear()
        assert autotune.load(tuners, path) >= 1
        assert conv.cache[key] is conv.configs[-1]
        # A choice that is no longer a candidate is not taken.
        document = json.loads(path.read_text())
        document["conv2d_relu_forward_kernel"][0]["config"]["kwargs"]["BLOCK_M"] = 7
        path.write_text(json.dumps(document))
        conv.cache.clear()
        autotune.load(tuners, path)
        assert key not in conv.cache
    finally:
        conv.cache.clear()
        conv.cache.update(saved)


def test_a_bare_checkout_imports_its_own_kernels(tmp_path):
    """The GPU machine gets the repository without installing it."""
    copy = tmp_path / "checkout"
    for folder in ("alexnet_triton", "kernels", "bench"):
        shutil.copytree(ROOT / folder, copy / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "results"))
    code = textwrap.dedent("""
        from bench.gpu_check import bootstrap
        bootstrap.ensure_importable()
        import alexnet_triton.kernels.conv2d_relu as conv
        import alexnet_triton.kernels.reference.lrn as lrn
        print(conv.__file__); print(lrn.__file__)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True,
                            text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    for line in result.stdout.split():
        assert Path(line).resolve().is_relative_to(copy.resolve()), line


def test_precompile_covers_every_launch_in_every_precision():
    tasks = precompile.tasks(dry_run=False)
    names = set(precompile.launch_names())
    launched = {}
    for task in tasks:
        if task["kind"] == "launch":
            launched.setdefault((task["variant"], task["batch"]), set()).add(task["name"])
    assert launched == {("bfloat16", 128): names, ("float32-ieee", 128): names,
                        ("float32-tf32", 128): names, ("bfloat16", 2): names}
    models = {(t["placement"], t["precision"], t["batch"], t["image"], t["mode"])
              for t in tasks if t["kind"] == "model"}
    assert {m for m in models if m[0] == "two-columns"} == {
        ("two-columns", p, 128, 224, "train") for p in precompile.MODEL_PRECISIONS}
    # The trainer on the built-in data: 63-px crops; 500 validation images in 128s and 116.
    assert {m for m in models if m[0] == "one-device"} == {
        ("one-device", "bf16", 128, 63, "train"), ("one-device", "bf16", 128, 63, "eval"),
        ("one-device", "bf16", 116, 63, "eval")}
    slices = [t["slice"] for t in tasks if t["kind"] == "model"]
    assert sorted(set(slices)) == list(range(precompile.SLICES))
    shares = precompile.deal(tasks, 16)
    assert sorted(map(json.dumps, sum(shares, []))) == sorted(map(json.dumps, tasks))
    loads = [sum(map(precompile._cost, share)) for share in shares]
    longest = max(map(precompile._cost, tasks))
    assert max(loads) - min(loads) <= longest  # dealt longest first, to the lightest


def test_every_slice_holds_every_candidate_its_own_first():
    """Issue 25: a slice whose own candidates were all too large for a kernel's shared
    memory (or that had none) launched one that did not fit, and the rest of its model step
    never compiled. Now each slice tries its share, then the others as fallbacks, smallest
    first, each compiled only while nothing before it in the tuning fits."""
    from bench.static.sm90_driver import Recorder, SkipConfig

    tuners = autotune.autotuners()
    autotune.restrict(tuners)
    kernel_names = [tuner.base_fn.__name__ for tuner in tuners.values()]
    for name, tuner in tuners.items():
        candidates = list(tuner.configs)
        shares = []
        for index in range(precompile.SLICES):
            configs, fallbacks = precompile.slice_configs(candidates, index)
            share = configs[:len(configs) - len(fallbacks)]
            assert len(configs) == len(candidates) > 1, name  # one config is never tuned
            if kernel_names.count(tuner.base_fn.__name__) > 1:
                assert len(share) <= 1, name  # what _slice's fallback lookup relies on
            assert share == candidates[index::precompile.SLICES], name
            assert sorted(map(str, configs)) == sorted(map(str, candidates)), name
            sizes = [precompile._shared_estimate(c) for c in fallbacks]
            assert sizes == sorted(sizes), name  # the smallest fallback first
            shares += share
        assert sorted(map(str, shares)) == sorted(map(str, candidates)), name  # a partition

    # The recorder skips a fallback's trial once a trial of the same tuning fits.
    Kernel = types.SimpleNamespace(__name__="kernel", arg_names=["BLOCK_M"], params=[])

    recorder = Recorder()
    recorder.fallbacks = {"kernel": [{"BLOCK_M": 64, "num_warps": 4}]}
    recorder.benchmarking = True
    recorder.start(Kernel, (128,), {"num_warps": 8})
    recorder.finish("out of resources")
    recorder.start(Kernel, (64,), {"num_warps": 4})  # nothing fits yet: compiled
    recorder.finish("ok")
    with pytest.raises(SkipConfig):
        recorder.start(Kernel, (64,), {"num_warps": 4})
    recorder.benchmarking = False  # the launch of the chosen fallback is never skipped
    recorder.start(Kernel, (64,), {"num_warps": 4})


@pytest.mark.parametrize("tool,output,count", [
    ("memcheck", "========= COMPUTE-SANITIZER\n========= ERROR SUMMARY: 0 errors\n", 0),
    ("memcheck", "========= Invalid __global__ read of size 2 bytes\n"
                 "========= ERROR SUMMARY: 3 errors\n", 3),
    ("racecheck", "========= RACECHECK SUMMARY: 2 hazards displayed (0 errors, 2 warnings)\n", 2),
    ("racecheck", "========= Device not supported\n", None),
])
def test_sanitizer_summaries_are_read(tool, output, count):
    assert sanitize.summary_count(output, tool) == count


def test_summary_puts_the_static_prediction_beside_the_measurement(tmp_path):
    """From the committed static report and a synthetic benchmark run of conv2, dropout6 and
    the training step: predicted and measured side by side, with their ratio."""
    from bench.gpu_check import summary
    from test_bench_report import op, step

    static = json.loads(summary.STATIC_REPORT.read_text())
    chosen = [k for k in static["kernels"] if k["variant"] == "bf16" and k.get("chosen")]
    conv2 = sum(k["predicted_us"]["predicted"] for k in chosen
                if k["launch"].startswith("conv2.") and k["in_step"])
    dropout = sum(k["predicted_us"]["predicted"] for k in chosen if k["launch"] == "dropout")
    measured = {"benchmarks": [op("conv2", "conv", "fwd+bwd", "triton", 2 * conv2 * 1e-6, 0),
                               op("dropout6", "dropout", "fwd", "triton", 3 * dropout * 1e-6, 0),
                               step("triton", 0.02, 1)]}
    (tmp_path / "bench.json").write_text(json.dumps(measured))
    text = "\n".join(summary.speed_table(tmp_path))
    assert f"| conv2 | fwd+bwd | bf16 | {conv2:,.0f} | {2 * conv2:,.0f} | 2.00 |" in text
    assert f"| dropout6 | fwd | bf16 | {dropout:,.0f} | {3 * dropout:,.0f} | 3.00 |" in text
    predicted_step = static["step"]["bf16"]["predicted_ms"] * 1e3
    assert (f"| training step (kernels only predicted) | fwd+bwd | bf16 | {predicted_step:,.0f} "
            f"| 20,000 | {20000 / predicted_step:.2f} |") in text


def test_summary_predicts_for_the_gpu_it_ran_on(tmp_path):
    """An H200 by its CUDA name gets the static report's H200 column, then the same kernels
    predicted at the ceilings it measured (a copy at half the sustained 4.3 TB/s makes the
    memory-bound LRN slower); another Hopper gets the same rows predicted for it; a GPU the
    static model cannot predict for is named, with no column."""
    from bench.gpu_check import summary
    from test_bench_report import op

    static = json.loads(summary.STATIC_REPORT.read_text())
    lrn1 = [k for k in static["kernels"] if k["variant"] == "bf16" and k.get("chosen")
            and k["launch"].startswith("lrn1.") and k["in_step"]]
    h200 = sum(k["by_device"]["h200"]["predicted_us"]["predicted"] for k in lrn1)
    h100 = sum(k["by_device"]["h100-sxm"]["predicted_us"]["predicted"] for k in lrn1)
    assert h200 < h100
    measured = {"benchmarks": [op("lrn1", "lrn", "fwd+bwd", "triton", 2 * h200 * 1e-6, 0)]}
    (tmp_path / "bench.json").write_text(json.dumps(measured))
    info = {"gpu": "NVIDIA H200", "matmul_bf16_tflops": 700.0, "copy_tb_per_s": 2.15}
    lines = summary.speed_table(tmp_path, info)
    assert any("H200 SXM) beside measured" in line for line in lines)
    assert ("| op | mode | dtype | predicted (static, H200 SXM) us | predicted at measured "
            "ceilings us | measured us | measured / predicted |") in lines
    row = next(line for line in lines if line.startswith("| lrn1 |")).split(" | ")
    assert row[3] == f"{h200:,.0f}" and row[-1] == "2.00 |"
    assert float(row[4].replace(",", "")) > 1.5 * h200
    # another Hopper: the same rows predicted for it (the H100 PCIe's 2.0 TB/s: slower)
    lines = summary.speed_table(tmp_path, {"gpu": "NVIDIA H100 PCIe"})
    row = next(line for line in lines if line.startswith("| lrn1 |")).split(" | ")
    assert float(row[3].replace(",", "")) > h100
    text = "\n".join(summary.speed_table(tmp_path, {"gpu": "NVIDIA A100-SXM4-80GB"}))
    assert ("Predicted from compiled code: no prediction for NVIDIA A100-SXM4-80GB (sm_80, and "
            "the static report's SASS is sm_90a).") in text
    assert "| lrn1 | fwd+bwd | bf16 |" not in text


def test_every_benchmark_the_speed_phase_asks_for_exists():
    """A renamed benchmark would otherwise be found missing only inside a GPU window."""
    from bench.gpu_check import speed

    ids = [node for _, nodes in speed.pieces(dry_run=False) for node in nodes]
    result = _run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                   "no:cacheprovider", *ids])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert len(collected) == len(ids) == len(set(ids))


def test_the_gpu_decode_check_runs_and_fails_a_wrong_decoder(tmp_path, monkeypatch):
    """The correctness phase's --decode gpu check, with a CPU stand-in for nvJPEG: the
    right pixels pass, a decoder a few levels off fails (only a GPU runs the real one)."""
    import numpy as np
    import simplejpeg
    import torch

    from alexnet_triton.data import gpu_decode
    from bench.gpu_check import correctness
    from bench.gpu_check.record import PhaseRecord

    def stand_in(offset):
        def decode(records):
            return [torch.from_numpy(np.clip(simplejpeg.decode_jpeg(
                r.numpy().tobytes(), "RGB").astype(np.int16) + offset, 0, 255)
                .astype(np.uint8)).permute(2, 0, 1) for r in records]
        return lambda device: decode

    monkeypatch.setattr(gpu_decode, "gpu_decode_unavailable", lambda device: None)
    for offset, status in ((0, "pass"), (6, "fail")):
        monkeypatch.setattr(gpu_decode, "torchvision_decode", stand_in(offset))
        record = PhaseRecord("correctness", tmp_path / f"record-{offset}.json")
        correctness.gpu_decode_checks(torch.device("cpu"), record)
        (check,) = record.data["checks"]
        assert (check["name"], check["status"]) == ("gpu_decode.rms_levels", status), check
        assert check["images"] == 32 and (check["value"] == 0.0) == (offset == 0)
