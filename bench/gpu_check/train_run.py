"""Phase 5: a short real training run, `python -m alexnet_triton.train`, whose loss must fall.

The trainer's own command on its built-in dataset (generated on first use, no download),
for EPOCHS epochs of the paper's recipe on the GPU, in a scratch run directory (its
checkpoints are hundreds of MB and stay out of the output folder). Its metrics.csv is
copied to the output folder; the check passes when every epoch's training loss is finite
and the last epoch's is below the first's. The images/s the trainer measured are recorded.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.gpu_check import bootstrap
from bench.gpu_check.cli import phase_main
from bench.gpu_check.record import FAIL, PASS, SKIP, PhaseRecord

EPOCHS = 3
METRICS = "train-metrics.csv"


def read_metrics(path: Path) -> list:
    with open(path, newline="") as file:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(file)]


def judge(record: PhaseRecord, rows: list) -> None:
    losses = [row.get("train_loss", math.nan) for row in rows]
    record.info(train_loss=losses, val_top1_error=[r.get("val_top1_error") for r in rows],
                images_per_second=[r.get("images_per_second") for r in rows])
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    falls = finite and len(losses) >= 2 and losses[-1] < losses[0]
    record.check("loss falls", PASS if falls else FAIL, epochs=len(losses), train_loss=losses)


def run(record: PhaseRecord, args) -> None:
    import torch

    if args.dry_run or not torch.cuda.is_available():
        record.check("training", SKIP if args.dry_run else FAIL,
                     reason="a GPU run: on the CPU an epoch of the built-in data takes ~40 s")
        return
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-check-train-")) / "run"
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(bootstrap.ROOT)}
    command = [sys.executable, "-m", "bench.gpu_check.train_run", "--train",
               "--epochs", str(EPOCHS), "--run-dir", str(run_dir), "--devices", "cuda:0",
               "--tensorboard", "off"]
    record.info(command=" ".join(command[3:]))
    result = subprocess.run(command, cwd=bootstrap.ROOT, env=env)
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        shutil.copy(metrics, Path(args.out) / METRICS)
        judge(record, read_metrics(metrics))
    if result.returncode != 0 or not metrics.exists():
        record.check("trainer exit", FAIL, returncode=result.returncode,
                     metrics=str(metrics) if metrics.exists() else None)
    shutil.rmtree(run_dir.parent, ignore_errors=True)


def train(argv: list) -> None:
    """The trainer's CLI in this process, with the checkout importable and autotuning bound."""
    bootstrap.ensure_importable()
    from bench.gpu_check import autotune

    autotune.install_from_environment()
    from alexnet_triton import train as trainer

    sys.exit(trainer.main(argv))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--train"]:
        train(sys.argv[2:])
    else:
        phase_main("training", run)
