"""bench/suite/report.py's arithmetic and tables, on a small synthetic pytest-benchmark JSON."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.suite import report  # noqa: E402


def bench(median, extra, minimum=None):
    return {"group": "g", "name": "n", "extra_info": extra,
            "stats": {"median": median, "min": median if minimum is None else minimum}}


def op(name, kind, mode, provider, median, memory, flops=0, bytes=0, dtype="bf16", order=0):
    return bench(median, {"kind": "op", "op": name, "op_kind": kind, "mode": mode,
                          "dtype": dtype, "provider": provider, "order": order,
                          "shape": "128x3x224x224", "flops": flops, "bytes": bytes,
                          "step_memory_bytes": memory})


def step(provider, median, peak_memory, precision="bf16"):
    return bench(median, {"kind": "model", "task": "train", "precision": precision,
                          "provider": provider, "device": "cuda", "batch": 128,
                          "image_size": 224, "flops_per_image": 4.35e9,
                          "peak_memory_bytes": peak_memory})


def synthetic_run():
    """Ceilings of 500 TFLOP/s and 2,000 GB/s, and round numbers everywhere else."""
    return {
        "machine_info": {"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0", "triton": "3.6.0"},
        "datetime": "2026-05-01T12:00:00+00:00",
        "benchmarks": [
            # best rounds 2 ms and 1 ms; the medians are worse and must not be used
            bench(0.003, {"kind": "peak", "peak": "matmul_bf16", "flops": 1e12}, minimum=0.002),
            bench(0.002, {"kind": "peak", "peak": "copy", "bytes": 2e9}, minimum=0.001),
            op("conv1", "conv", "fwd+bwd", "triton", 0.004, 100, flops=1e12),
            op("conv1", "conv", "fwd+bwd", "eager", 0.006, 200, flops=1e12),
            op("conv1", "conv", "fwd+bwd", "compile", 0.005, 150, flops=1e12),
            op("lrn1", "lrn", "fwd+bwd", "triton", 0.001, 10, bytes=1e9, order=1),
            op("lrn1", "lrn", "fwd+bwd", "eager", 0.004, 40, bytes=1e9, order=1),
            op("dropout-large", "dropout", "fwd", "triton", 0.001, 10, bytes=1.8e9, order=15),
            op("pool1", "pool", "fwd", "triton", 0.001, 10, bytes=1e9, dtype="fp32", order=2),
            step("triton", 0.1, 7e9),
            step("eager", 0.2, 10e9),
            step("compile", 0.15, 9e9),
            bench(0.048, {"kind": "data", "stage": "loader (per worker)", "device": "cpu",
                          "image_size": 256, "images_per_call": 96, "batch": 32,
                          "default_path": True}),
            bench(0.1, {"kind": "data", "stage": "Pillow alone", "device": "cpu",
                        "image_size": 256, "images_per_call": 100, "baseline": True}),
            # the step fed from real data: 85% and 95% of the synthetic feed's images/s
            *(bench(0.1 / share, {"kind": "data", "stage": f"train step fed {feed}",
                                  "device": "cuda", "image_size": 256, "images_per_call": 1024,
                                  "feed": feed})
              for feed, share in (("synthetic", 1.0), ("gpu-decode", 0.95),
                                  ("cpu-decode", 0.85))),
        ],
    }


@pytest.fixture
def results():
    return report.collect([synthetic_run()])


def test_ceilings_use_the_best_round(results):
    assert results.matmul_flops_per_s == pytest.approx(5e14)
    assert results.copy_bytes_per_s == pytest.approx(2e12)


def test_op_rows_compare_ours_with_both_baselines(results):
    rows = {(r.op, r.mode, r.dtype): r for r in report.op_rows(results)}
    conv1 = rows[("conv1", "fwd+bwd", "bf16")]
    assert conv1.speedup_eager == pytest.approx(1.5)  # 6 ms / 4 ms: ours faster
    assert conv1.speedup_compile == pytest.approx(1.25)
    assert conv1.memory_eager == pytest.approx(0.5)
    assert conv1.tflops == pytest.approx(250.0)
    assert conv1.fraction_of_peak == pytest.approx(0.5)  # of the 500 TFLOP/s matmul
    assert conv1.gbps is None
    lrn1 = rows[("lrn1", "fwd+bwd", "bf16")]
    assert lrn1.speedup_eager == pytest.approx(4.0)
    assert lrn1.speedup_compile is None  # no compile result for it
    assert lrn1.gbps == pytest.approx(1000.0)
    assert lrn1.fraction_of_peak == pytest.approx(0.5)  # of the 2,000 GB/s copy
    # sorted by dtype (bf16 first), then network order
    assert [r.op for r in report.op_rows(results)] == ["conv1", "lrn1", "dropout-large", "pool1"]


def test_model_rows_give_images_per_second_ratios_and_mfu(results):
    rows = {r.provider: r for r in report.model_rows(results)}
    ours = rows["triton"]
    assert ours.images_per_s == pytest.approx(1280.0)
    assert ours.speedup_eager == pytest.approx(2.0)
    assert ours.speedup_compile == pytest.approx(1.5)
    assert ours.memory_eager == pytest.approx(0.7)
    assert ours.mfu == pytest.approx(4.35e9 * 1280 / 5e14)
    assert rows["eager"].speedup_eager == pytest.approx(1.0)


def test_targets_say_which_goals_are_met(results):
    met = {t.target: t.met for t in report.target_rows(results)}
    assert met["training step >= 1.5x eager images/s"] is True
    assert met["training step >= 1.2x torch.compile images/s"] is True
    assert met["training step peak memory <= 0.7x eager"] is True  # exactly 0.7
    assert met["conv1 fwd+bwd >= 0.9x cuDNN"] is True
    assert met["lrn1 fwd+bwd >= 5.0x eager"] is False  # 4x
    assert met["dropout-large fwd >= 80% of copy bandwidth"] is True  # 90%
    assert met["loader >= 1,500 images/s per worker (256-pixel JPEG store, default path)"] \
        is True  # 2,000
    # against Pillow's 1,000 images/s alone; separate rows, none in alternating rounds
    assert met["loader's default path on one core >= 2.0x Pillow alone on the old store "
               "(q95 4:4:4)"] is True
    assert met["loader: training step fed by gpu-decode >= 90% of the synthetic step's "
               "images/s"] is True
    assert met["loader: training step fed by cpu-decode >= 90% of the synthetic step's "
               "images/s"] is False


def test_the_loaders_gain_in_alternating_rounds_is_the_one_judged():
    run = synthetic_run()
    run["benchmarks"].append(bench(0.03, {"kind": "data", "stage": "alternating",
                                          "device": "cpu", "image_size": 256,
                                          "images_per_call": 96, "gain_over_pillow": 1.9}))
    met = {t.target: t.met for t in report.target_rows(report.collect([run]))}
    assert met["loader's default path on one core >= 2.0x Pillow alone on the old store "
               "(q95 4:4:4), alternating rounds"] is False
    assert not any(name.endswith("(q95 4:4:4)") for name in met)


def test_markdown_tables(tmp_path, capsys):
    path = tmp_path / "run.json"
    path.write_text(json.dumps(synthetic_run()))
    output = tmp_path / "run.md"
    assert report.main([str(path), "--output", str(output)]) == 0
    text = capsys.readouterr().out
    assert output.read_text() == text
    assert "NVIDIA H100 80GB HBM3 · torch 2.11.0 · triton 3.6.0 · 2026-05-01" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| op |"))
    assert lines[lines.index(header) + 1].count("---") == header.count("|") - 1
    conv1 = next(line for line in lines if line.startswith("| conv1 |"))
    assert conv1 == ("| conv1 | 128x3x224x224 | fwd+bwd | 4 | 6 | 5 | 1.50x | 1.25x | 0.50x "
                     "| 250 TFLOP/s (50%) |")
    step_row = next(line for line in lines if "ours (devices=None)" in line)
    assert "| 1,280 |" in step_row and "| 2.00x | 1.50x | 0.70x | 1% |" in step_row
    assert "| lrn1 fwd+bwd >= 5.0x eager | 4.00x | **no** |" in text
    assert "## Ops, fp32" in text and "| pool1 |" in text


def test_later_files_replace_earlier_results(tmp_path):
    first, second = synthetic_run(), synthetic_run()
    second["benchmarks"] = [op("conv1", "conv", "fwd+bwd", "triton", 0.002, 100, flops=1e12)]
    results = report.collect([first, second])
    conv1 = next(r for r in report.op_rows(results) if r.op == "conv1")
    assert conv1.speedup_eager == pytest.approx(3.0)  # the new 2 ms against eager's 6 ms


def test_missing_or_foreign_files_are_one_line_errors(tmp_path, capsys):
    assert report.main([str(tmp_path / "absent.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"benchmarks": [{"extra_info": {"kind": "op"}}]}))
    assert report.main([str(foreign)]) == 2
    assert "not pytest-benchmark JSON from bench/" in capsys.readouterr().err


def test_ceilings_beside_the_datasheet_of_the_gpu_by_its_name(tmp_path, capsys):
    """The run's GPU (NVIDIA H100 80GB HBM3: the H100 SXM's 989 TFLOP/s dense bf16 and
    3.35 TB/s) picks the datasheet column; --device-model picks another row; an unknown GPU
    says so; an unknown key is a one-line error (exit 2)."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps(synthetic_run()))
    assert report.main([str(path)]) == 0
    text = capsys.readouterr().out
    assert "| bf16 dense matmul |  | 500 TFLOP/s | 989 TFLOP/s | 51% |" in text
    assert "| device-to-device copy (read + write) |  | 2,000 GB/s | 3,350 GB/s | 60% |" in text
    assert report.main([str(path), "--device-model", "h200"]) == 0
    assert "| 2,000 GB/s | 4,800 GB/s | 42% |" in capsys.readouterr().out
    run = synthetic_run()
    run["machine_info"]["gpu"] = "NVIDIA GeForce RTX 4090"
    path.write_text(json.dumps(run))
    assert report.main([str(path)]) == 0
    assert "NVIDIA GeForce RTX 4090 is not in bench/devices.py" in capsys.readouterr().out
    assert report.main([str(path), "--device-model", "rtx-4090"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: unknown GPU 'rtx-4090'") and error.count("\n") == 1


def test_mfu_falls_back_to_the_datasheet_only_where_nothing_was_measured():
    run = synthetic_run()
    run["benchmarks"] = [b for b in run["benchmarks"] if b["extra_info"]["kind"] != "peak"]
    results = report.collect([run])
    assert results.mfu_peak[0] == 989.4e12 and "datasheet" in results.mfu_peak[1]
    ours = next(r for r in report.model_rows(results) if r.provider == "triton")
    assert ours.mfu == pytest.approx(4.35e9 * 1280 / 989.4e12)
    run["machine_info"]["gpu"] = "NVIDIA GeForce RTX 4090"
    results = report.collect([run])
    assert results.mfu_peak[0] is None
    assert next(r for r in report.model_rows(results) if r.provider == "triton").mfu is None
