"""--resume under another placement, flags and run directory: nothing already written is lost.

Runs use the tiny built-in image set and the PyTorch reference kernels (train_support.py).
"""
from __future__ import annotations

import shutil

import pytest
import torch

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton import train as train_module
from alexnet_triton.training.config import parse_args
from alexnet_triton.training.distributed import Replicas
from alexnet_triton.training.run_dir import read_metrics
from alexnet_triton.model import alexnet
from train_support import one_line_error, train, use_reference_kernels


@pytest.fixture
def run_copy(tmp_path, trained_run, monkeypatch):
    """A private copy of the one-epoch trained run, to resume (and damage)."""
    use_reference_kernels(monkeypatch)
    copy = tmp_path / "old"
    shutil.copytree(trained_run, copy)
    return copy


def _files(run_dir):
    """Every file of a run directory and its bytes (but the lock's holder line)."""
    return {path.relative_to(run_dir): path.read_bytes()
            for path in sorted(run_dir.rglob("*")) if path.is_file() and path.name != ".lock"}


def test_flags_given_at_their_default_value_count_as_given():
    _, given = parse_args(["--resume", "r", "--amp", "auto", "--devices", "auto",
                           "--tensorboard", "auto"])
    assert given == {"resume", "amp", "devices", "tensorboard"}
    _, given = parse_args(["--resume", "r"])
    assert given == {"resume"}


def test_resume_starts_the_process_group_on_the_checkpoints_devices(run_copy, monkeypatch):
    """The run trained on --devices cpu; resuming without --devices on a machine with a GPU
    must start the process group for the CPU, as the trainer will run there."""
    state = torch.load(run_copy / ckpt.LATEST, weights_only=True)
    state["config"]["devices"] = "cpu"
    torch.save(state, run_copy / ckpt.LATEST)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    started = []

    class Started(Exception):
        pass

    def record(self, device):
        started.append(device)
        raise Started

    monkeypatch.setattr(Replicas, "start", record)
    with pytest.raises(Started):
        train_module.main(["--resume", str(run_copy)])
    assert started == [torch.device("cpu")]


@pytest.mark.parametrize("source, target", [("cpu", ("cpu", "cpu")), (("cpu", "cpu"), "cpu")])
def test_optimizer_state_moves_between_placements(source, target, monkeypatch):
    """Momentum saved from one placement (16 whole tensors or 30 column halves) loads into the
    other and saves back bit-identical."""
    use_reference_kernels(monkeypatch)

    def model_and_optimizer(devices):
        torch.manual_seed(0)
        model = alexnet(num_classes=10, devices=devices)
        return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    model, optimizer = model_and_optimizer(source)
    torch.manual_seed(1)
    model(torch.randn(2, 3, 63, 63)).square().sum().backward()
    optimizer.step()
    saved = ckpt.optimizer_state(model, optimizer)
    assert set(saved["state"]) == set(model.state_dict())  # whole-tensor names
    assert saved["param_groups"][0]["params"] == list(model.state_dict())

    moved, moved_optimizer = model_and_optimizer(target)
    moved.load_state_dict(model.state_dict())
    ckpt.load_optimizer_state(moved, moved_optimizer, saved)
    again = ckpt.optimizer_state(moved, moved_optimizer)
    for key, entry in saved["state"].items():
        assert torch.equal(entry["momentum_buffer"], again["state"][key]["momentum_buffer"]), key
    assert again["param_groups"] == saved["param_groups"]


def test_a_one_device_run_resumes_on_two_columns(run_copy, capsys):
    status, out, err = train(["--resume", run_copy, "--epochs", "2", "--devices", "cpu,cpu"],
                             capsys)
    assert status == 0, err
    assert "two columns on cpu and cpu" in out
    assert [row["epoch"] for row in read_metrics(run_copy / "metrics.csv")] == [1, 2]


def test_resuming_from_best_refuses_without_run_dir_and_changes_nothing(run_copy, capsys):
    before = _files(run_copy)
    status, _, err = train(["--resume", run_copy / ckpt.BEST, "--epochs", "2"], capsys)
    one_line_error(status, err, "best.pt", "--run-dir")
    assert _files(run_copy) == before


@pytest.mark.parametrize("source", ["run", "best.pt"])
def test_resume_with_run_dir_writes_there_and_leaves_the_old_run_alone(source, run_copy,
                                                                       tmp_path, capsys):
    before = _files(run_copy)
    new = tmp_path / "new"
    resume = run_copy if source == "run" else run_copy / ckpt.BEST
    status, out, err = train(["--resume", resume, "--run-dir", new, "--epochs", "2",
                              "--tensorboard", "off"], capsys)
    assert status == 0, err
    assert f"run dir: {new}" in out
    assert _files(run_copy) == before
    assert [row["epoch"] for row in read_metrics(new / "metrics.csv")] == [1, 2]
    state = torch.load(new / ckpt.LATEST, weights_only=True)
    assert state["epoch"] == 2 and state["config"]["run_dir"] == str(new)


def test_resume_into_a_run_dir_holding_another_run_is_refused(run_copy, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    before = _files(other)
    status, _, err = train(["--resume", run_copy, "--run-dir", other, "--epochs", "2"], capsys)
    one_line_error(status, err, "already holds a run")
    assert _files(other) == before


@pytest.mark.parametrize("damage, words", [
    (lambda state: state["arch"].update(lrn=False), ["arch record", "lrn"]),
    (lambda state: state.pop("optimizer"), ["lacks its 'optimizer' record", "cannot be resumed"]),
    # malformed records: each was a traceback (exit 1), or a wrong summary (a momentum
    # buffer of another shape crashed: test_train_faults runs that in a process of its own)
    (lambda state: state["model"].update({"fc8.bias": "junk"}), ["fc8.bias", "not a tensor"]),
    (lambda state: state["rng"][0]["python"].update(state=torch.zeros(3, dtype=torch.int64)),
     ["random state of rank 0", "Python"]),
    (lambda state: state.update(epoch="1"), ["'epoch' record '1'"]),
    (lambda state: state["history"].__setitem__(0, {"junk": 1}), ["history row 1"]),
])
def test_resume_refuses_a_checkpoint_whose_records_disagree(damage, words, trained_run,
                                                           tmp_path, capsys, monkeypatch):
    use_reference_kernels(monkeypatch)
    run_copy = tmp_path / "old"  # its latest.pt alone: 435 MB a case, not the whole run
    run_copy.mkdir()
    state = torch.load(trained_run / ckpt.LATEST, weights_only=True)
    damage(state)
    torch.save(state, run_copy / ckpt.LATEST)
    before = _files(run_copy)
    status, _, err = train(["--resume", run_copy, "--epochs", "2"], capsys)
    one_line_error(status, err, *words)
    assert _files(run_copy) == before


def test_a_run_of_two_replicas_resumes_alone_from_the_same_step_and_says_how(run_copy,
                                                                            capsys):
    """A checkpoint of 2 replicas, at epoch 2 step 1, resumed by one process: it trained
    epoch 2 again from its first step, saying nothing; now it goes on from step 2 (each
    step's images do not depend on the world size) and says what differs."""
    state = torch.load(run_copy / ckpt.LATEST, weights_only=True)
    state.update(world_size=2, rng=state["rng"] * 2, step_in_epoch=1,
                 global_step=state["global_step"] + 1, epoch_loss_sum=2.3, epoch_loss_steps=1)
    (run_copy / ckpt.LATEST).unlink()  # best.pt is a hard link to it: left alone
    torch.save(state, run_copy / ckpt.LATEST)
    status, out, err = train(["--resume", run_copy, "--epochs", "2", "--tensorboard", "off"],
                             capsys)
    assert status == 0, err
    (note,) = [line for line in out.splitlines() if line.startswith("note: the checkpoint")]
    assert "written by 2 replicas, this run has 1" in note and "not bit-identical" in note
    assert torch.load(run_copy / ckpt.LATEST, weights_only=True)["global_step"] == 6


def test_a_torchrun_group_that_may_be_restarted_continues_its_run_dir(tmp_path):
    """elastic_restart: what a start under torchrun --max-restarts resolves to."""
    from alexnet_triton.errors import ConfigError
    from alexnet_triton.training.setup import elastic_restart
    config, given = parse_args(["--epochs", "3", "--batch-size", "10"], "train")
    first, again = ({"TORCHELASTIC_MAX_RESTARTS": "2", "TORCHELASTIC_RESTART_COUNT": count}
                    for count in ("0", "1"))
    assert elastic_restart(config, given, {}) == (config, given, ())  # not torchrun's
    with pytest.raises(ConfigError, match="--max-restarts: pass --run-dir DIR"):
        elastic_restart(config, given, first)
    config, given = parse_args(["--epochs", "3", "--batch-size", "10", "--run-dir",
                                str(tmp_path)], "train")
    assert elastic_restart(config, given, first) == (config, given, ())
    assert elastic_restart(config, given, again) == (config, given, ())  # no checkpoint yet
    (tmp_path / ckpt.LATEST).write_bytes(b"")
    resumed, resumed_given, notes = elastic_restart(config, given, again)
    assert resumed.resume == str(tmp_path) and resumed_given == {"epochs", "resume", "run_dir"}
    assert notes == (f"torchrun restart 1: continuing from {tmp_path / ckpt.LATEST}",)
