"""What a new user runs into: group signals, two runs on one directory, a full or unwritable
disk, a diverged run, a run that died before its first checkpoint. Nothing written is lost.

Runs use the tiny built-in image set and the PyTorch reference kernels (train_support.py).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton import evaluate, predict
from alexnet_triton.training import run_dir as run_dir_module
from alexnet_triton.training.run_dir import RunDirLock, read_metrics
from train_support import (PYTHON, QUICK_ARGS, ROOT, one_line_error, subprocess_env, train,
                           use_reference_kernels)


@pytest.fixture
def data(quick_dataset, monkeypatch):
    use_reference_kernels(monkeypatch)
    return quick_dataset


def _files(run_dir):
    return {path.relative_to(run_dir): path.read_bytes()
            for path in sorted(run_dir.rglob("*")) if path.is_file() and path.name != ".lock"}


# ---------------------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------------------


def test_sigterm_to_the_process_group_exits_130_with_a_checkpoint(tmp_path, quick_dataset):
    """As `timeout`, systemd and Slurm stop a job: SIGTERM to the trainer and its loader
    worker at once. The worker ignores it; the trainer writes a checkpoint and exits 130."""
    data = quick_dataset
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [PYTHON, "-m", "alexnet_triton.train", "--data", str(data), "--run-dir", str(run_dir),
         "--epochs", "3", "--batch-size", "10", "--workers", "1", "--sync-steps", "1",
         "--checkpoint-minutes", "1e-9", "--tensorboard", "off"],
        cwd=ROOT, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (run_dir / ckpt.LATEST).exists():  # training, with a loader worker running
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "stopped by SIGTERM" in out and f"--resume {run_dir}" in out, out
    assert out.count("SIGTERM: finishing at most 1 step and") == 1, out  # once, not per process
    assert "killed by signal" not in out
    state = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) > (0, 1)


def test_a_second_ctrl_c_while_the_checkpoint_is_written_waits_for_it(data, tmp_path, capsys,
                                                                       monkeypatch):
    """Ctrl-C after step 1, again while its checkpoint is written: KeyboardInterrupt
    from the signal handler broke off the write; now the checkpoint is finished first."""
    from alexnet_triton.training import checkpointing, trainer
    real_step, real_save = trainer.Trainer.train_step, checkpointing.save

    def step_then_ctrl_c(self, images, labels):
        loss = real_step(self, images, labels)
        os.kill(os.getpid(), signal.SIGINT)
        return loss

    def ctrl_c_then_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "train_step", step_then_ctrl_c)
    monkeypatch.setattr(checkpointing, "save", ctrl_c_then_save)
    run_dir = tmp_path / "run"
    try:
        status, out, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                                  "--sync-steps", "1", "--tensorboard", "off", *QUICK_ARGS],
                                 capsys)
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C broke off the checkpoint")
    assert status == 130, err
    assert "stopped by SIGINT at epoch 1, step 1" in out, out
    state = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    assert (state["epoch"], state["step_in_epoch"]) == (0, 1)


# ---------------------------------------------------------------------------------------
# one run per run directory
# ---------------------------------------------------------------------------------------


def test_a_second_run_on_a_run_dir_in_use_is_refused_naming_the_holder(data, tmp_path,
                                                                      trained_run, capsys):
    fresh = tmp_path / "fresh"
    holder = RunDirLock(fresh).acquire()
    try:
        status, _, err = train(["--data", data, "--run-dir", fresh, *QUICK_ARGS], capsys)
    finally:
        holder.release()
    one_line_error(status, err, f"--run-dir {fresh} is in use by pid {os.getpid()}")
    assert sorted(p.name for p in fresh.iterdir()) == [".lock"]

    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    before = _files(old)
    holder = RunDirLock(old).acquire()
    try:
        status, _, err = train(["--resume", old, "--epochs", "2"], capsys)
    finally:
        holder.release()
    one_line_error(status, err, "is in use by pid")
    assert _files(old) == before


def test_a_run_dir_that_cannot_be_written_is_refused_before_any_work(data, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status, _, err = train(["--data", data, "--run-dir", blocker / "run", *QUICK_ARGS], capsys)
    one_line_error(status, err, f"--run-dir {blocker / 'run'}: cannot write there")
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        status, _, err = train(["--data", data, "--run-dir", locked / "run", *QUICK_ARGS],
                               capsys)
        one_line_error(status, err, "cannot write there")


def test_a_run_dir_without_a_checkpoint_starts_again(data, tmp_path, capsys):
    """A run that died before its first checkpoint left config.json and a header-only
    metrics.csv: that directory is not a dead end."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}\n")
    (run_dir / "metrics.csv").write_text("epoch,train_loss\n")
    status, out, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                              "--tensorboard", "off", *QUICK_ARGS], capsys)
    assert status == 0, err
    assert [row["epoch"] for row in read_metrics(run_dir / "metrics.csv")] == [1]


# ---------------------------------------------------------------------------------------
# disk space
# ---------------------------------------------------------------------------------------


def _free_space(monkeypatch, free_after_calls):
    """shutil.disk_usage as the run directory sees it: plenty, then 1 MiB from call N on."""
    real = shutil.disk_usage
    calls = []

    def disk_usage(path):
        calls.append(path)
        usage = real(path)
        if len(calls) >= free_after_calls:
            return usage._replace(free=1 << 20)
        return usage

    monkeypatch.setattr(run_dir_module.shutil, "disk_usage", disk_usage)
    return calls


def test_too_little_space_for_a_checkpoint_is_refused_at_start(data, tmp_path, capsys,
                                                               monkeypatch):
    _free_space(monkeypatch, free_after_calls=1)
    status, _, err = train(["--data", data, "--run-dir", tmp_path / "run", *QUICK_ARGS],
                           capsys)
    one_line_error(status, err, "MiB free", "a checkpoint needs")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("failure", ["no room", "write error"])
def test_a_failed_checkpoint_write_stops_in_one_line_and_keeps_the_last_one(
        failure, data, tmp_path, capsys, monkeypatch):
    """The checkpoint after step 1 is written; the one after step 2 finds the disk full
    (or torch.save fails in the middle, as on a full disk): one line, exit 1, step 1's
    checkpoint intact."""
    if failure == "no room":
        _free_space(monkeypatch, free_after_calls=3)  # the start, step 1, then full
    else:
        real_save = torch.save
        saves = []

        def full_disk(state, file, *args, **kwargs):
            saves.append(1)
            if len(saves) == 2:
                file.write(b"half")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected "
                                   "pos 4096 vs 2048\nmore detail")
            return real_save(state, file, *args, **kwargs)

        monkeypatch.setattr(torch, "save", full_disk)
    run_dir = tmp_path / "run"
    status, _, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                            "--batch-size", "10", "--workers", "0", "--sync-steps", "1",
                            "--checkpoint-minutes", "1e-9", "--tensorboard", "off"], capsys)
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m alexnet_triton.train: error: ")
    assert ("MiB free" if failure == "no room" else "unexpected pos") in lines[0]
    assert f"the previous {run_dir / ckpt.LATEST} is kept" in lines[0]
    monkeypatch.undo()
    kept = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    assert (kept["epoch"], kept["step_in_epoch"]) == (0, 1)
    assert sorted(p.name for p in run_dir.glob(".*.tmp-*")) == []


# ---------------------------------------------------------------------------------------
# a diverged run
# ---------------------------------------------------------------------------------------


def test_a_diverging_run_stops_before_saving_exploded_weights(data, tmp_path, capsys):
    """--lr 100: the loss grows past any finite bound within a few steps, with weights that
    are still finite. Nothing trained past the first check over the bound is saved."""
    run_dir = tmp_path / "run"
    status, _, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "2",
                            "--lr", "100", "--batch-size", "10", "--workers", "0",
                            "--sync-steps", "1", "--checkpoint-minutes", "1e-9",
                            "--tensorboard", "off"], capsys)
    assert status == 1, err
    assert "diverged" in err and "Try a lower --lr" in err, err
    if (run_dir / ckpt.LATEST).exists():
        kept = torch.load(run_dir / ckpt.LATEST, weights_only=True)
        assert max(value.abs().max().item() for value in kept["model"].values()) < 1e3


@pytest.fixture
def broken_run(tmp_path, trained_run, monkeypatch):
    """A copy of the trained run whose best.pt is replaced by ``break_(state)``'s."""
    use_reference_kernels(monkeypatch)
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)

    def break_(change):
        state = torch.load(copy / ckpt.BEST, weights_only=True)
        change(state["model"])
        (copy / ckpt.BEST).unlink()  # a hard link to latest.pt: leave that one alone
        torch.save(state, copy / ckpt.BEST)
        return copy
    return break_


@pytest.mark.parametrize("damage, words", [
    (lambda model: model["fc8.weight"].view(-1)[0].fill_(float("nan")),
     ["NaN or infinite weights", "fc8.weight"]),
    # finite weights whose fc8 sums overflow for every image: fc7's outputs of 3e38 times
    # fc8's weights made all positive (with signed weights a sum may stay in range)
    (lambda model: (model["fc7.bias"].fill_(3e38), model["fc8.weight"].abs_()),
     ["outputs are not finite"]),
])
def test_evaluate_and_predict_refuse_weights_that_give_no_number(damage, words, broken_run,
                                                                 quick_images, capsys):
    run_dir = broken_run(damage)
    status = evaluate.main(["--checkpoint", str(run_dir)])
    out, err = capsys.readouterr()
    one_line_error(status, err, *words, prog=evaluate.PROG)
    assert "%" not in out
    image = quick_images / "val" / "star" / "00000.jpg"
    status = predict.main(["--checkpoint", str(run_dir), str(image)])
    out, err = capsys.readouterr()
    one_line_error(status, err, *words, prog=predict.PROG)
    assert "%" not in out


# ---------------------------------------------------------------------------------------
# a malformed checkpoint
# ---------------------------------------------------------------------------------------


def test_a_momentum_buffer_of_another_shape_is_refused_not_a_crash(tmp_path, trained_run):
    """The first SGD step on it died with exit 139 and no message: in a process of its own,
    so a crash fails this test rather than ending the session."""
    run_dir = tmp_path / "run"  # its latest.pt alone
    run_dir.mkdir()
    state = torch.load(trained_run / ckpt.LATEST, weights_only=True)
    state["optimizer"]["state"]["conv1.weight"]["momentum_buffer"] = torch.zeros(7)
    torch.save(state, run_dir / ckpt.LATEST)
    result = subprocess.run([PYTHON, "-m", "alexnet_triton.train", "--resume", str(run_dir),
                             "--epochs", "2"], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    one_line_error(result.returncode, result.stderr, "momentum_buffer of conv1.weight", "[7]")


def test_predict_refuses_a_string_in_place_of_a_weight(data, trained_run, quick_images,
                                                       tmp_path, capsys):
    state = torch.load(trained_run / ckpt.BEST, weights_only=True)
    state["model"]["conv1.weight"] = "junk"
    torch.save(state, tmp_path / ckpt.BEST)
    image = quick_images / "val" / "star" / "00000.jpg"
    status = predict.main(["--checkpoint", str(tmp_path / ckpt.BEST), str(image)])
    _, err = capsys.readouterr()
    one_line_error(status, err, "conv1.weight", "not a tensor", prog=predict.PROG)
