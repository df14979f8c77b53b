"""TensorBoard logging of python -m alexnet_triton.train (--tensorboard auto/on/off).

The event files are read back with TensorBoard's own reader, as the tensorboard command
would show them.
"""
from __future__ import annotations

import csv

import pytest
import torch

from alexnet_triton.training import tensorboard_log
from alexnet_triton.training.plots import kernel_grid
from train_support import QUICK_ARGS, train, use_reference_kernels

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def _events(run_dir):
    reader = event_accumulator.EventAccumulator(
        str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    reader.Reload()
    return reader


def _scalars(reader, tag):
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def test_a_run_logs_step_losses_epoch_errors_and_conv1_kernels(trained_run):
    run_dir = trained_run  # 1 epoch of 3 steps, --tensorboard auto
    reader = _events(run_dir)
    losses = _scalars(reader, "train/loss")
    assert [step for step, _ in losses] == [1, 2, 3]
    state = torch.load(run_dir / "latest.pt", weights_only=True)
    assert [value for _, value in _scalars(reader, "train/lr")] == pytest.approx([0.01] * 3)
    with open(run_dir / "metrics.csv") as file:
        row = next(csv.DictReader(file))
    # The epoch's mean training loss is the mean of the logged step losses, as metrics.csv
    # writes it: 6 significant digits, so within 5e-6 of it (1e-6 held only for some losses).
    assert float(row["train_loss"]) == pytest.approx(sum(v for _, v in losses) / 3, rel=5e-6)
    for key in ("train_loss", "val_loss", "val_top1_error", "val_top5_error"):
        [(step, value)] = _scalars(reader, f"epoch/{key}")
        assert step == 3 and value == pytest.approx(float(row[key]), rel=1e-5), key
    [image] = reader.Images("conv1_kernels")
    grid = kernel_grid(state["model"]["conv1.weight"], columns=2)
    scale = tensorboard_log.IMAGE_SCALE
    assert image.step == 3 and (image.height, image.width) == (grid.shape[0] * scale,
                                                               grid.shape[1] * scale)
    assert min(image.height, image.width) >= 300  # large enough to see the kernels


def test_a_resumed_run_hides_what_was_logged_after_its_checkpoint(tmp_path):
    """A run killed after logging steps 1-5 with its checkpoint at step 2: the resumed run
    logs from step 3 on and TensorBoard shows each step once, the resumed run's values."""
    log = tensorboard_log.TensorBoardLog(tmp_path)
    for step in range(1, 6):
        log.step(step, loss=10.0 + step, lr=0.01)
    log.close()
    resumed = tensorboard_log.TensorBoardLog(tmp_path, first_step=3)
    for step in (3, 4):
        resumed.step(step, loss=20.0 + step, lr=0.001)
    resumed.close()
    assert _scalars(_events(tmp_path), "train/loss") == [(1, 11.0), (2, 12.0), (3, 23.0),
                                                         (4, 24.0)]


def test_off_writes_no_event_files_and_on_without_the_package_is_refused(
        quick_dataset, tmp_path, capsys, monkeypatch):
    use_reference_kernels(monkeypatch)
    data = quick_dataset
    status, out, err = train(["--data", data, "--run-dir", tmp_path / "off", "--epochs", "1",
                              "--tensorboard", "off", *QUICK_ARGS], capsys)
    assert status == 0, err
    assert not (tmp_path / "off" / "tensorboard").exists() and "tensorboard:" not in out

    monkeypatch.setattr(tensorboard_log, "installed", lambda: False)
    status, out, err = train(["--data", data, "--run-dir", tmp_path / "on", "--tensorboard",
                              "on", *QUICK_ARGS], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "--tensorboard on needs the tensorboard package" in err
    assert not (tmp_path / "on").exists()


def test_the_header_says_where_tensorboard_logs(quick_dataset, tmp_path, capsys,
                                                monkeypatch):
    use_reference_kernels(monkeypatch)
    data = quick_dataset
    status, out, err = train(["--data", data, "--run-dir", tmp_path / "run", "--epochs", "1",
                              *QUICK_ARGS], capsys)
    assert status == 0, err
    assert f"tensorboard: {tmp_path / 'run' / 'tensorboard'}" in out
    assert f"tensorboard --logdir {tmp_path / 'run'}" in out
