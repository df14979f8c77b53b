"""python -m alexnet_triton.train: the command line, a whole run, resume, signals, bad input.

Runs use a tiny set of the built-in dataset's images (30 train / 10 val of 72 px) and the PyTorch
reference kernels (see train_support.py).
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training import tensorboard_log
from alexnet_triton import runtime
from alexnet_triton import train as train_module
from alexnet_triton.training import setup
from alexnet_triton.models import ReferenceAlexNet
from alexnet_triton.training.config import TrainConfig, build_parser, parse_args
from train_support import (PYTHON, QUICK_ARGS, ROOT, one_line_error, poison_batch, subprocess_env,
                           train, use_reference_kernels)

# Resume tests: 3 steps of 10 per epoch.
RESUME_ARGS = QUICK_ARGS


@pytest.fixture
def reference_kernels(monkeypatch):
    use_reference_kernels(monkeypatch)


@pytest.fixture(scope="module")
def data(quick_dataset):
    return quick_dataset


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _logged_losses(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    reader = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    return [(event.step, event.value) for event in reader.Scalars("train/loss")]


def _assert_same_training_state(a, b):
    """Two checkpoints hold bit-identical weights, momentum, schedule and RNG streams."""
    assert a["epoch"] == b["epoch"] and a["step_in_epoch"] == b["step_in_epoch"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"],
                           b["optimizer"]["state"][index]["momentum_buffer"]), index
    assert a["scheduler"] == b["scheduler"]
    assert torch.equal(a["rng"][0]["torch"], b["rng"][0]["torch"])
    assert torch.equal(a["rng"][0]["augment"], b["rng"][0]["augment"])
    timing = ("epoch_seconds", "images_per_second", "data_wait")  # measured times
    assert [{k: v for k, v in row.items() if k not in timing} for row in a["history"]] == \
           [{k: v for k, v in row.items() if k not in timing} for row in b["history"]]


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--run-dir", "--resume", "--epochs", "--batch-size", "--lr",
                 "--momentum", "--weight-decay", "--lr-factor", "--patience", "--bias-init",
                 "--weight-std", "--dropout", "--pca-sigma", "--crop-size", "--ten-crop",
                 "--no-lrn", "--non-overlapping-pool", "--one-column", "--seed", "--workers",
                 "--devices", "--amp", "--checkpoint-minutes", "--compile", "--tensorboard"):
        assert flag in out, flag
    assert "paper: 0.9" in out and "paper: 0.0005" in out and "paper: 128" in out


def test_every_config_field_is_a_flag_with_help():
    parser = build_parser()
    destinations = {action.dest: action for action in parser._actions}
    for field in TrainConfig.__dataclass_fields__.values():
        assert field.name in destinations, field.name
        assert len(destinations[field.name].help) > 20, field.name
    defaults = TrainConfig()
    assert (defaults.batch_size, defaults.lr, defaults.momentum, defaults.weight_decay,
            defaults.dropout, defaults.pca_sigma, defaults.weight_std, defaults.lr_factor) == \
        (128, 0.01, 0.9, 5e-4, 0.5, 0.1, 0.01, 0.1)


def test_the_flags_of_pytorch_examples_and_timm_are_accepted(capsys):
    config, given = parse_args(["-b", "32", "-j", "2", "--wd", "1e-4", "--log-interval", "7",
                                "--amp", "--keep-checkpoints", "3"])
    assert (config.batch_size, config.workers, config.weight_decay, config.print_freq,
            config.amp, config.keep_checkpoints) == (32, 2, 1e-4, 7, "bf16", 3)
    assert {"batch_size", "workers", "weight_decay", "print_freq", "amp"} <= given
    assert parse_args(["--print-freq", "5"])[0].print_freq == 5
    with pytest.raises(SystemExit):
        train_module.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for words in ("-b N, --batch-size N", "-j N, --workers N", "--wd X, --weight-decay X",
                  "--torchcompile is --compile", "bf16 autocast", "--log-interval"):
        assert words in out, words


def test_keep_checkpoints_keeps_the_last_n_epochs(tmp_path):
    latest = tmp_path / ckpt.LATEST
    for epoch in range(1, 6):
        new = tmp_path / "new"
        new.write_text(f"epoch {epoch}")
        new.replace(latest)  # a new file each epoch, as ckpt.save writes it
        ckpt.keep_epoch(latest, epoch, keep=2)
    kept = sorted(path.name for path in tmp_path.glob("epoch-*.pt"))
    assert kept == ["epoch-004.pt", "epoch-005.pt"]
    assert (tmp_path / "epoch-004.pt").read_text() == "epoch 4"


@pytest.mark.parametrize("argv, words", [
    (["--bogus"], ["unrecognized arguments: --bogus"]),
    (["--lr", "0"], ["--lr must be > 0"]),
    (["--lr", "nan"], ["--lr must be finite"]),
    (["--batch-size", "0"], ["--batch-size must be >= 1"]),
    (["--epochs", "two"], ["--epochs expects an integer"]),
    (["--momentum", "1"], ["--momentum must be < 1"]),
    (["--dropout", "1.5"], ["--dropout must be < 1"]),
    (["--weight-decay", "-1"], ["--weight-decay must be >= 0"]),
    (["--crop-size", "32"], ["--crop-size must be >= 63"]),
    (["--amp", "fp8"], ["--amp", "invalid choice"]),
    (["--tensorboard", "maybe"], ["--tensorboard", "invalid choice"]),
    (["--devices", "tpu:0"], ["--devices", "not a device"]),
    (["--devices", "cpu,cpu,cpu"], ["--devices"]),
    (["--devices", "cuda:0"], ["CUDA is not available"]),
    (["--amp", "bf16", "--devices", "cpu"], ["--amp bf16 needs a CUDA device"]),
    (["--one-column", "--devices", "cpu,cpu"], ["--one-column"]),
])
def test_bad_command_lines_fail_in_one_line_before_any_work(argv, words, capsys, tmp_path,
                                                            monkeypatch):
    if "CUDA is not available" in words and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    status, _, err = train(argv, capsys)
    one_line_error(status, err, *words)
    assert not (tmp_path / "runs").exists()


def _image_folder(root, train_classes, val_classes):
    from PIL import Image
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (80, 80), (10, 200, 30)).save(root / split / name / "a.png")


@pytest.mark.parametrize("case, words", [
    ("missing", ["does not exist"]),
    ("empty", ["no train/"]),
    ("no classes", ["no class subfolders"]),
    ("different classes", ["different classes", "only in val: dog"]),
    ("a file", ["is not a folder"]),
])
def test_bad_data_folders_fail_in_one_line(case, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "data"
    if case == "empty":
        folder.mkdir()
    elif case == "no classes":
        (folder / "train").mkdir(parents=True)
        (folder / "val").mkdir()
    elif case == "different classes":
        _image_folder(folder, ["cat"], ["cat", "dog"])
    elif case == "a file":
        folder.write_text("not a folder")
    status, _, err = train(["--data", folder, "--run-dir", tmp_path / "run"], capsys)
    one_line_error(status, err, *words)
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_crop_larger_than_the_images_is_refused(data, tmp_path, capsys):
    status, _, err = train(["--data", data, "--crop-size", "100", "--run-dir", tmp_path / "r"],
                           capsys)
    one_line_error(status, err, "--crop-size 100", "72-px")
    assert not (tmp_path / "r").exists()


def test_a_run_directory_holding_a_run_is_not_overwritten(data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "latest.pt").write_bytes(b"precious")
    status, _, err = train(["--data", data, "--run-dir", run_dir, *QUICK_ARGS], capsys)
    one_line_error(status, err, "already holds a run", "--resume")
    assert (run_dir / "latest.pt").read_bytes() == b"precious"


def test_resume_refuses_what_is_not_a_checkpoint_of_this_program(tmp_path, capsys):
    status, _, err = train(["--resume", tmp_path / "nowhere"], capsys)
    one_line_error(status, err, "does not exist")
    other = tmp_path / "torchvision.pt"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, other)
    status, _, err = train(["--resume", other], capsys)
    one_line_error(status, err, "not an alexnet_triton checkpoint")
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    status, _, err = train(["--resume", empty_run], capsys)
    one_line_error(status, err, "holds no checkpoint")


def test_resume_refuses_a_checkpoint_carrying_a_pickled_object(tmp_path, capsys):
    evil = tmp_path / "latest.pt"
    torch.save({"format": ckpt.FORMAT, "version": ckpt.VERSION,
                "payload": ckpt.CheckpointError("an object, not a tensor")}, evil)
    status, _, err = train(["--resume", tmp_path], capsys)
    one_line_error(status, err, "weights_only", "pickled object")


def test_resume_refuses_another_architecture(tmp_path, trained_run, capsys):
    state = torch.load(trained_run / "latest.pt", weights_only=True)
    state["model"]["conv1.weight"] = torch.zeros(64, 3, 11, 11)  # torchvision's conv1
    torch.save(state, tmp_path / "latest.pt")
    status, _, err = train(["--resume", tmp_path], capsys)
    one_line_error(status, err, "different network", "conv1.weight")


# ---------------------------------------------------------------------------------------
# a whole run
# ---------------------------------------------------------------------------------------


def test_a_run_leaves_metrics_config_plots_and_checkpoints(trained_run):
    run_dir = trained_run
    with open(run_dir / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [int(row["epoch"]) for row in rows] == [1]
    for key in ("train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr"):
        assert math.isfinite(float(rows[0][key])), key
    assert 0 <= float(rows[0]["val_top5_error"]) <= float(rows[0]["val_top1_error"]) <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 1 and config["batch_size"] == 10 and config["crop_size"] == 63
    assert config["bias_init"] == 0.1  # Caffe's, which trains; the paper's 1 is a flag away
    assert config["resolved"]["devices"] == ["cpu"]
    assert config["resolved"]["kernels"].startswith("PyTorch reference")
    for name in ("curves.png", "conv1_kernels.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    latest = _weights(run_dir / "latest.pt")  # weights_only loads it: plain data only
    best = _weights(run_dir / "best.pt")
    assert latest["epoch"] == 1 and latest["step_in_epoch"] == 0 and latest["global_step"] == 3
    assert latest["classes"] == ["checkerboard", "crescent", "cross", "disk", "dots", "ring",
                                 "square", "star", "stripes", "triangle"]
    assert latest["model"]["conv1.weight"].shape == (96, 3, 11, 11)
    assert torch.equal(latest["model"]["fc8.weight"], best["model"]["fc8.weight"])
    # best.pt's weights alone, a plain state dict: torch.nn code loads it as it is.
    weights = torch.load(run_dir / "best_weights.pt", weights_only=True)
    assert set(weights) == set(best["model"])
    reference = ReferenceAlexNet(num_classes=10)
    reference.load_state_dict(weights)
    assert torch.equal(reference.fc8.weight, best["model"]["fc8.weight"])
    assert latest["history"][0]["val_top1_error"] == float(rows[0]["val_top1_error"]) or \
        f"{latest['history'][0]['val_top1_error']:.6g}" == rows[0]["val_top1_error"]


def test_the_run_says_which_device_and_kernels_it_uses(data, tmp_path, capsys,
                                                      reference_kernels):
    status, out, err = train(["--data", data, "--run-dir", tmp_path / "run", "--epochs", "1",
                              "--one-column", "--no-lrn", "--non-overlapping-pool",
                              "--print-freq", "1", "--keep-checkpoints", "1",
                              *QUICK_ARGS], capsys)
    assert status == 0, err
    # --print-freq counts steps: a line for each of the epoch's 3 (no bar: not a terminal).
    for step in (1, 2, 3):
        assert f"  epoch 1 step {step}/3: loss " in out, step
    assert (tmp_path / "run" / "epoch-001.pt").is_file()  # --keep-checkpoints 1
    assert "device: cpu" in out
    assert "kernels: PyTorch reference" in out
    assert "one column (the paper's one-GPU net)" in out and "no LRN" in out
    assert "epoch   1/1  train loss" in out and "top-1 error" in out and "top-5 error" in out
    assert "done in" in out
    # The header says which bias init is in use and why, and what the CPU will cost.
    assert "bias 0.1 (Caffe's 0.1: with the paper's 1 the loss exploded" in out
    assert "--bias-init 1 for the paper's" in out
    assert "training on the CPU: expect about" in out and "an epoch" in out
    assert "measured here: about" in out  # the first progress line on the CPU
    assert ", 1 epoch, " in out and "1 epochs" not in out
    assert "(1 threads)" not in out
    arch = _weights(tmp_path / "run" / "latest.pt")["arch"]
    assert arch["name"] == "alexnet-one-column" and not arch["lrn"]
    assert not arch["overlapping_pool"]


# ---------------------------------------------------------------------------------------
# resume: equal to an uninterrupted run, bit for bit
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight_run(data, tmp_path_factory):
    """An uninterrupted run: (epoch-1 checkpoint, epoch-2 checkpoint).

    The second epoch is itself a resume at an epoch boundary (--epochs 2 on a finished
    1-epoch run), which a mid-epoch resume below must agree with.
    """
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        run_dir = tmp_path_factory.mktemp("straight") / "run"
        status, _, _ = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                              *RESUME_ARGS])
        assert status == 0
        first = run_dir.parent / "epoch1.pt"
        shutil.copy(run_dir / "latest.pt", first)
        status, _, _ = train(["--resume", run_dir, "--epochs", "2"])
        assert status == 0
    finally:
        if previous is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = previous
    return first, run_dir / "latest.pt"


def test_ctrl_c_writes_a_checkpoint_and_resume_equals_the_uninterrupted_run(
        data, straight_run, tmp_path, capsys, monkeypatch, reference_kernels):
    run_dir = tmp_path / "run"
    real_step = train_module.Trainer.train_step
    calls = []

    def step_then_ctrl_c(self, images, labels):
        loss = real_step(self, images, labels)
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C arrives during the second step of epoch 1
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    monkeypatch.setattr(train_module.Trainer, "train_step", step_then_ctrl_c)
    handler = signal.getsignal(signal.SIGINT)
    status, out, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "2",
                              "--sync-steps", "1", *RESUME_ARGS], capsys)
    assert status == 130, err
    assert "SIGINT" in err and f"--resume {run_dir}" in out
    stopped = _weights(run_dir / "latest.pt")
    assert (stopped["epoch"], stopped["step_in_epoch"]) == (0, 2)
    assert signal.getsignal(signal.SIGINT) is handler  # restored

    monkeypatch.setattr(train_module.Trainer, "train_step", real_step)
    status, out, err = train(["--resume", run_dir], capsys)
    assert status == 0, err
    assert "resumed from" in out
    _assert_same_training_state(_weights(run_dir / "latest.pt"), _weights(straight_run[1]))
    with open(run_dir / "metrics.csv") as file:
        assert [row["epoch"] for row in csv.DictReader(file)] == ["1", "2"]
    if tensorboard_log.installed():  # TensorBoard shows the same curve as the straight run's
        assert _logged_losses(run_dir) == _logged_losses(straight_run[1].parent)
        assert [step for step, _ in _logged_losses(run_dir)] == [1, 2, 3, 4, 5, 6]


def test_a_run_killed_mid_epoch_resumes_to_the_same_weights(data, straight_run, tmp_path):
    """kill -9 at a random point after the first mid-epoch checkpoint, then --resume."""
    run_dir = tmp_path / "run"
    env = subprocess_env()
    command = [PYTHON, "-m", "alexnet_triton.train", "--data", str(data), "--run-dir",
               str(run_dir), "--epochs", "1", "--batch-size", "10", "--workers", "0",
               "--checkpoint-minutes", "1e-9", "--sync-steps", "1"]  # latest.pt every step
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (run_dir / "latest.pt").exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    killed = _weights(run_dir / "latest.pt")  # intact: written atomically
    assert killed["epoch"] == 0 and 1 <= killed["step_in_epoch"] <= 2
    result = subprocess.run([PYTHON, "-m", "alexnet_triton.train", "--resume", str(run_dir)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    _assert_same_training_state(_weights(run_dir / "latest.pt"), _weights(straight_run[0]))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        data, tmp_path, capsys, monkeypatch, reference_kernels):
    poison_batch(monkeypatch, 3)
    run_dir = tmp_path / "run"
    status, out, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                              "--batch-size", "10", "--workers", "0", "--sync-steps", "1",
                              "--checkpoint-minutes", "1e-9"], capsys)
    assert status == 1
    assert "the loss is nan at epoch 1, step 3" in err, err
    assert f"{run_dir / 'latest.pt'} resumes from before it" in err
    kept = _weights(run_dir / "latest.pt")
    assert (kept["epoch"], kept["step_in_epoch"]) == (0, 2)
    assert all(torch.isfinite(value).all() for value in kept["model"].values())


# ---------------------------------------------------------------------------------------
# resolving the configuration
# ---------------------------------------------------------------------------------------


def test_auto_crop_size():
    assert setup.auto_crop_size(256) == 224
    assert setup.auto_crop_size(72) == 63
    assert setup.auto_crop_size(64) == 63
    assert setup.auto_crop_size(128) == 112


def test_device_resolution():
    assert runtime.resolve_devices("cpu") == [torch.device("cpu")]
    assert runtime.resolve_devices("cpu,cpu") == [torch.device("cpu")] * 2
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_devices("auto") == [torch.device(expected)]
    assert runtime.resolve_amp("off", torch.device("cpu")) is False
    assert runtime.resolve_amp("auto", torch.device("cpu")) is False


def test_cpu_runs_reuse_freed_memory_instead_of_faulting_it_in_again():
    """keep_freed_memory: a freed 64 MB block serves the next 48 MB tensor without page
    faults (glibc). A 48 MB request, not another 64 MB one: torch allocates with 64-byte
    alignment, so a freed block of exactly the size asked for before is ~100 bytes short of
    the same request again and is left in place whenever something small was allocated
    above it (that made an earlier same-size version of this test fail in about one run in
    three: 16,384 faults both ways)."""
    script = """
import resource, torch
from alexnet_triton.runtime import keep_freed_memory
def faults(numel):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(numel)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def reuse():
    faults(16 << 20)  # 64 MB, freed at once
    return faults(12 << 20)  # 48 MB
default = reuse()
applied = keep_freed_memory()
print(applied, default, reuse())
"""
    result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    applied, default, kept = result.stdout.split()
    if applied != "True":
        pytest.skip("not glibc: the allocator is left as it is")
    assert int(default) > 10_000, result.stdout  # a fresh mmap: 12,288 pages faulted in
    assert int(kept) < 1_000, result.stdout
