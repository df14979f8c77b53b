"""torchrun on CPU processes (gloo): DDP replicas, a launcher killed under its ranks, a
scheduler's stop, a rank that cannot start, an elastic restart. Every test runs real torchrun
processes; they share one uninterrupted run (the ``torchrun_run`` fixture), so they live in one
module (pytest-xdist keeps a module on one worker, and each worker builds its own session
fixtures).

Runs use the tiny built-in image set and the PyTorch reference kernels (train_support.py).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time

import torch

from alexnet_triton.training import checkpoint as ckpt
from train_support import (PYTHON, QUICK_ARGS, ROOT, TORCHRUN_ARGS, subprocess_env,
                           torchrun_command, use_reference_kernels)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _evaluate_ten_crop(checkpoint, data):
    from alexnet_triton import evaluate
    return evaluate.run(evaluate.build_parser().parse_args(
        ["--checkpoint", str(checkpoint), "--data", str(data), "--ten-crop", "--workers", "0"]))


def test_torchrun_two_replicas_of_two_columns_on_gloo(quick_dataset, torchrun_run, capsys,
                                                     monkeypatch):
    """DDP over 2 CPU processes (gloo), each replica itself two columns (cpu, cpu), with
    --ten-crop: every replica evaluates the best weights (which only rank 0 writes to
    best.pt) and their sums are those of a single process on best.pt."""
    use_reference_kernels(monkeypatch)
    run_dir, result = torchrun_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("device: cpu, cpu") == 1  # rank 0 alone prints
    assert "2 DDP replicas (gloo)" in result.stdout
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["world_size"] == 2 and config["resolved"]["batch_per_replica"] == 5
    state = _weights(run_dir / "latest.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["augment"], state["rng"][1]["augment"])
    assert state["global_step"] == 3  # 30 images / (2 replicas x 5)
    with open(run_dir / "metrics.csv") as file:
        assert len(list(csv.DictReader(file))) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    single = _evaluate_ten_crop(run_dir / ckpt.BEST, quick_dataset)
    capsys.readouterr()
    assert summary["ten_crop_val_top1_error"] == single["val_top1_error"]
    assert summary["ten_crop_val_top5_error"] == single["val_top5_error"]





def _alive_descendants(root_pid, known=()):
    """Processes below ``root_pid`` (and the ``known`` ones, orphaned since), not zombies."""
    parents, states = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        states[int(entry)], parents[int(entry)] = fields[0], int(fields[1])
    found, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {pid for pid in found | set(known) if states.get(pid, "Z") != "Z"}


def test_ranks_and_their_loaders_exit_when_the_torchrun_launcher_dies(tmp_path,
                                                                       quick_dataset):
    data = quick_dataset
    run_dir = tmp_path / "run"
    launcher = subprocess.Popen(
        [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "alexnet_triton.train", "--data", str(data), "--run-dir", str(run_dir),
         # Loader processes, which could outlive their rank (threads cannot).
         "--epochs", "20", "--batch-size", "10", "--workers", "1", "--loader", "processes",
         "--sync-steps", "1",
         "--checkpoint-minutes", "1e-9", "--tensorboard", "off"],
        cwd=ROOT, env=subprocess_env(OMP_NUM_THREADS=1), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    below = set()
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / ckpt.LATEST).exists():  # both ranks and their loaders run
            assert launcher.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        below = _alive_descendants(launcher.pid)
        assert len(below) >= 4, below  # 2 ranks, each with a loader worker
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 60
        while _alive_descendants(launcher.pid, below) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive_descendants(launcher.pid, below)
    finally:  # torchrun starts each rank in a session of its own: kill them one by one
        for pid in [launcher.pid, *_alive_descendants(launcher.pid, below)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _torchrun(args, log, torchrun_args=()):
    """torchrun with 2 CPU ranks (gloo) running ``args``, all output into the file ``log``,
    in a session of its own. (A rank sent SIGABRT writes its threads' stacks there.)"""
    with open(log, "w") as file:
        return subprocess.Popen(
            torchrun_command(*args, torchrun_args=torchrun_args), cwd=ROOT,
            env=subprocess_env(OMP_NUM_THREADS=1, PYTHONFAULTHANDLER=1), stdout=file,
            stderr=subprocess.STDOUT, start_new_session=True)


def _stacks_of_the_stuck(processes, log):
    """The Python stacks of the ``processes`` still alive (SIGABRT: faulthandler), from
    ``log``: what a failed wait for them reports."""
    for pid in processes:
        os.kill(pid, signal.SIGABRT)
    time.sleep(2)
    return log.read_text()[-6000:]


def _wait_for(condition, process, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None or condition()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_scheduler_stopping_ranks_and_killing_their_launcher_leaves_a_checkpoint(
        tmp_path, quick_dataset):
    """As a scheduler ends a job: SIGTERM to each rank and SIGKILL to torchrun, whose death
    sends every rank a second SIGTERM. The second raised KeyboardInterrupt from the signal
    handler (tracebacks, and no checkpoint of the stop); now every rank finishes its step
    and latest.pt holds where they stopped."""
    run_dir, log = tmp_path / "run", tmp_path / "log"
    launcher = _torchrun(
        ["-m", "alexnet_triton.train", "--data", quick_dataset, "--run-dir", run_dir,
         "--epochs", "20", "--batch-size", "10", "--workers", "0", "--sync-steps", "1",
         "--print-freq", "1", "--checkpoint-minutes", "1000", "--tensorboard", "off"], log)
    ranks = set()
    try:
        _wait_for(lambda: " step 1/3: " in log.read_text(), launcher)
        ranks = _alive_descendants(launcher.pid)
        assert len(ranks) == 2, ranks
        for rank in ranks:
            os.kill(rank, signal.SIGTERM)
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 180
        while _alive_descendants(launcher.pid, ranks) and time.monotonic() < deadline:
            time.sleep(0.1)
        stuck = _alive_descendants(launcher.pid, ranks)
        assert not stuck, _stacks_of_the_stuck(stuck, log)
    finally:
        for pid in [launcher.pid, *_alive_descendants(launcher.pid, ranks)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = log.read_text()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    (stopped,) = [line for line in out.splitlines() if line.startswith("stopped by SIGTERM")]
    state = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    epoch, step = state["epoch"], state["step_in_epoch"]
    assert (f"at epoch {epoch + 1}, step {step}:" in stopped if step else
            f"after epoch {epoch}:" in stopped), (stopped, epoch, step)


def test_a_rank_that_fails_its_setup_is_named_with_its_reason(tmp_path, quick_dataset):
    """Rank 1 finds the data damaged after rank 0 checked it: it exited 2 saying nothing,
    and rank 0 died in its next collective with gloo's "Connection closed by peer"."""
    log = tmp_path / "log"
    launcher = _torchrun([ROOT / "tests" / "training" / "rank_one_fails.py", "--data",
                          quick_dataset, "--run-dir", tmp_path / "run",
                          "--epochs", "1", "--tensorboard", "off", *QUICK_ARGS], log)
    try:
        launcher.wait(timeout=180)
    finally:
        launcher.kill()
    out = log.read_text()
    errors = [line for line in out.splitlines() if line.startswith(
        "python -m alexnet_triton.train: error: ")]
    assert errors == [f"python -m alexnet_triton.train: error: rank 1: {quick_dataset}: "
                      f"damaged on rank 1's disk"], out
    assert launcher.returncode != 0 and "Connection closed" not in out, out
    assert "exitcode  : 2" in out and "exitcode  : 1" not in out, out  # no rank crashed


def _rank_pid(launcher, rank):
    for pid in _alive_descendants(launcher.pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                if f"RANK={rank}".encode() in file.read().split(b"\0"):
                    return pid
        except OSError:
            pass
    return None


def test_torchrun_restarts_a_killed_rank_from_the_latest_checkpoint(tmp_path, quick_dataset,
                                                                    torchrun_run):
    """torchrun --max-restarts 1, rank 1 killed with -9 after the checkpoint of step 1: the
    restarted group continues from latest.pt without --resume (the restart was refused: a
    run directory that already held a run; on torch 2.13 gloo could not even connect), to
    the weights of the uninterrupted ``torchrun_run``, bit for bit."""
    straight, _ = torchrun_run
    run_dir, log = tmp_path / "run", tmp_path / "log"
    launcher = _torchrun(["-m", "alexnet_triton.train", "--data", quick_dataset, "--run-dir",
                          run_dir, *TORCHRUN_ARGS, "--sync-steps", "1", "--checkpoint-minutes",
                          "1e-9", "--tensorboard", "off"],
                         log, torchrun_args=["--max-restarts", "1"])
    try:
        _wait_for(lambda: (run_dir / ckpt.LATEST).exists(), launcher)
        os.kill(_rank_pid(launcher, 1), signal.SIGKILL)
        assert launcher.wait(timeout=300) == 0, log.read_text()
    finally:
        for pid in [launcher.pid, *_alive_descendants(launcher.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out = log.read_text()
    assert f"torchrun restart 1: continuing from {run_dir / ckpt.LATEST}" in out, out
    assert "Traceback" not in out, out
    restarted = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    reference = torch.load(straight / ckpt.LATEST, weights_only=True)
    assert restarted["global_step"] == reference["global_step"] == 3
    for name, weight in reference["model"].items():
        assert torch.equal(restarted["model"][name], weight), name
