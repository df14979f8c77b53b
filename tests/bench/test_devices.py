"""bench/devices.py: the one table of GPUs, how a device is chosen by name, and the static
model's use of it (an H200 step no slower than an H100's, from the same compiled rows)."""
import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import devices  # noqa: E402
from bench.static import h100_model, sass_predict  # noqa: E402

REQUIRED = ("h100-sxm", "h100-pcie", "h200", "a100-sxm-40gb", "a100-sxm-80gb", "l4", "b200")


def test_every_listed_device_has_every_figure_and_a_source():
    assert set(REQUIRED) <= set(devices.BY_KEY)
    for device in devices.DEVICES:
        for field in dataclasses.fields(device):
            value = getattr(device, field.name)
            assert value, (device.key, field.name)
            if isinstance(value, float):
                assert value > 0, (device.key, field.name)
        assert all(source.startswith("https://") for source in device.sources), device.key
        # dense tensor peaks: tf32 half of bf16, both far above the CUDA cores' fp32
        assert device.tf32_flops == pytest.approx(device.bf16_flops / 2, rel=0.01), device.key
        assert device.fp32_flops < device.tf32_flops, device.key
        assert device.shared_per_block < device.shared_per_sm, device.key
        assert device.arch.startswith(f"sm_{device.capability[0]}{device.capability[1]}")


def test_the_h100_is_not_the_h200():
    # issue 25: the H100 SXM's bandwidth is 3.35 TB/s, the H200's 4.8; same SMs and peaks
    h100, h200 = devices.BY_KEY["h100-sxm"], devices.BY_KEY["h200"]
    assert h100.memory_bytes_per_s == 3.35e12 and h200.memory_bytes_per_s == 4.8e12
    assert (h100.sms, h100.bf16_flops) == (h200.sms, h200.bf16_flops) == (132, 989.4e12)


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-sxm-40gb"), ("NVIDIA L4", "l4"), ("NVIDIA B200", "b200"),
    ("nvidia a100 sxm4 80gb", "a100-sxm-80gb"), ("h100-sxm", "h100-sxm"), (" H200 ", "h200")])
def test_the_name_cuda_gives_picks_the_row(name, key):
    assert devices.lookup(name).key == key
    assert devices.find(name).key == key


@pytest.mark.parametrize("name", ["NVIDIA H100", "NVIDIA H200 NVL", "NVIDIA GeForce RTX 4090",
                                  "H100 80GB", ""])
def test_an_unknown_name_is_a_one_line_error_naming_the_known_ones(name):
    with pytest.raises(devices.UnknownDevice) as error:
        devices.lookup(name)
    message = str(error.value)
    assert "\n" not in message and "h100-sxm" in message and "NVIDIA H200" in message
    assert devices.find(name) is None  # the reports' explicit 'not in the table' path


def test_the_static_model_predicts_for_hopper_only():
    assert h100_model.Model.of(devices.BY_KEY["h100-pcie"]).sms == 114
    with pytest.raises(devices.UnknownDevice, match="sm_90a"):
        h100_model.Model.of(devices.BY_KEY["a100-sxm-80gb"])


def test_the_h200_step_is_no_slower_than_the_h100s():
    """The committed report's rows predicted again per device: only bandwidth differs
    between the two, so every kernel and every step is at least as fast on the H200, the
    memory-bound ones faster, and the rows' own by_device figures are these."""
    report = json.loads((ROOT / "bench/results/static-sm90.json").read_text())
    h100, h200 = h100_model.MODELS["h100-sxm"], h100_model.MODELS["h200"]
    faster = 0
    for row in report["kernels"]:
        on_h100, on_h200 = sass_predict.predict(row, h100), sass_predict.predict(row, h200)
        assert on_h200["predicted_us"]["predicted"] <= on_h100["predicted_us"]["predicted"]
        faster += on_h200["predicted_us"]["predicted"] < on_h100["predicted_us"]["predicted"]
        assert row["by_device"]["h200"] == on_h200  # JSON floats round-trip exactly
        assert row["predicted_us"] == on_h100["predicted_us"]
    assert faster > 0
    for variant, step in report["step_by_device"]["h200"].items():
        assert step["predicted_ms"] < report["step_by_device"]["h100-sxm"][variant]["predicted_ms"]
    assert report["step"] == report["step_by_device"][report["device"]]
    # a measured bandwidth above the sustained share predicts a faster step
    measured = h100.measured(None, 2 * h100.bytes_per_s)
    assert measured.peak_flops == h100.peak_flops and "copy" in measured.basis
    rows = [dict(r, **sass_predict.predict(r, measured)) for r in report["kernels"] if r["chosen"]]
    assert (sass_predict.step_totals(rows)["bf16"]["predicted_ms"]
            < report["step_by_device"]["h100-sxm"]["bf16"]["predicted_ms"])
