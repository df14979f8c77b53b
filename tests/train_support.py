"""Shared setup of the trainer's tests: a tiny built-in dataset and one short trained run.

Both are made once per test session (they are the slow part), by the session fixtures
``quick_dataset``, ``quick_images`` and ``trained_run`` of conftest.py, and reused by
training/ and cli/. Whole-model runs use the PyTorch reference kernels
(TRITON_INTERPRET=0): the kernel tests prove they compute what the Triton kernels do, and a
whole AlexNet through the interpreter takes minutes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# Tiny but whole: the built-in dataset's 10 classes, 3 train and 1 val image of each, 72 px
# (crops of 63): batches of 10 give 3 steps per epoch. Whole-AlexNet steps cost about a
# second here, mostly fc6/fc7 and their dropout masks, so the tests keep batches small.
TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 1
QUICK_ARGS = ("--batch-size", "10", "--checkpoint-minutes", "1000", "--workers", "0")


def make_quick_dataset(folder: Path) -> Path:
    """A prepared store of the built-in dataset's images, 30 train and 10 val: FOLDER/store,
    made from the images in FOLDER/images (the ``quick_dataset`` fixture's)."""
    from alexnet_triton.data.builtin import IMAGE_SIZE, generate_images
    from alexnet_triton.data.convert import prepare
    generate_images(folder / "images", train_per_class=TRAIN_PER_CLASS,
                    val_per_class=VAL_PER_CLASS, workers=1)
    prepare(folder / "images", folder / "store", size=IMAGE_SIZE, workers=1, progress=False)
    return folder / "store"


def use_reference_kernels(monkeypatch) -> None:
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    from alexnet_triton import functional as F
    assert not F.uses_triton(torch.ones(1))


def train(argv, capsys=None) -> tuple[int, str, str]:
    """python -m alexnet_triton.train ARGV in this process: (exit status, stdout, stderr)."""
    from alexnet_triton import train as train_module
    try:
        status = train_module.main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return status, out, err


def poison_batch(monkeypatch, number: int) -> None:
    """Make the ``number``-th training batch (1-based) all NaN, as a diverged step makes it."""
    from alexnet_triton.data import Augmenter
    real_train = Augmenter.train
    calls = []

    def poisoned(self, images, generator):
        calls.append(1)
        x = real_train(self, images, generator)
        return x * float("nan") if len(calls) == number else x

    monkeypatch.setattr(Augmenter, "train", poisoned)


def one_line_error(status, err, *words, prog="python -m alexnet_triton.train"):
    """A user error: exit status 2 and one line on stderr naming the program and ``words``."""
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])


def make_trained_run(run_dir: Path, data: Path) -> Path:
    """One epoch of AlexNet on the quick dataset ``data`` (3 steps of 10) into ``run_dir``
    (the ``trained_run`` fixture's), on the reference kernels."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "0")
        status, _, _ = train(["--data", data, "--run-dir", run_dir, "--epochs", "1",
                              *QUICK_ARGS])
    assert status == 0
    return run_dir


# One epoch of 2 replicas under torchrun (gloo), each itself two columns (cpu, cpu), with
# --ten-crop: the ``torchrun_run`` fixture's run, and what the elastic restart test repeats.
TORCHRUN_ARGS = ("--epochs", "1", "--batch-size", "10", "--workers", "0", "--devices",
                 "cpu,cpu", "--ten-crop")


def torchrun_command(*args, torchrun_args=()) -> list:
    """torchrun with 2 CPU ranks, running ``args`` (a script, or -m and a module, then its
    arguments)."""
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            *torchrun_args, *[str(a) for a in args]]


def make_torchrun_run(run_dir: Path, data: Path):
    """The ``torchrun_run`` fixture's run into ``run_dir``: the finished process."""
    return run_to_the_end(
        torchrun_command("-m", "alexnet_triton.train", "--data", data, "--run-dir", run_dir,
                         *TORCHRUN_ARGS),
        timeout=300, env=subprocess_env(OMP_NUM_THREADS=1))


def run_to_the_end(command, timeout: float, env: dict):
    """subprocess.run(command) with its output captured, in a session of its own; one still
    running after ``timeout`` seconds raises, with every process of the session listed and
    each Python one's stacks (faulthandler, on SIGABRT) in the message: a hang says where."""
    import signal
    import subprocess
    process = subprocess.Popen(command, cwd=ROOT, env={**env, "PYTHONFAULTHANDLER": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        listing = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "-s",
                                  str(process.pid)], capture_output=True, text=True).stdout
        for line in listing.splitlines()[1:]:
            pid = int(line.split()[0])
            if "python" in line:
                try:
                    os.kill(pid, signal.SIGABRT)
                except ProcessLookupError:
                    pass
        try:
            out, err = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        raise RuntimeError(f"still running after {timeout} s: {command}\n{listing}\n"
                           f"stdout (end):\n{out[-3000:]}\nstderr, with each Python "
                           f"process's stacks (end):\n{err[-20000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def subprocess_env(**extra) -> dict:
    """Environment of a CLI subprocess: the reference kernels, and this process's threads
    (a run with another thread count sums in another order: not bit-identical)."""
    env = dict(os.environ)
    env["TRITON_INTERPRET"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update({key: str(value) for key, value in extra.items()})
    return env


PYTHON = sys.executable
