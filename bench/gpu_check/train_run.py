"""Phase 5: a short real training run, `python -m alexnet_triton.train`, whose loss must fall.

The trainer's own command on its built-in dataset (generated on first use, no download),
for EPOCHS epochs of the paper's recipe on the GPU, in a scratch run directory (its
checkpoints are hundreds of MB and stay out of the output folder). Its metrics.csv is
copied to the output folder; the check passes when every epoch's training loss is finite
and the last epoch's is below the first's. The images/s the trainer measured are recorded.
With --dry-run the same command runs on the CPU for an epoch of a tiny store of the
built-in images (30 training, 10 validation, batches of 10): the losses must be finite.
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
from bench.gpu_check.record import FAIL, PASS, PhaseRecord

EPOCHS = 3
METRICS = "train-metrics.csv"
DRY_RUN = {"epochs": 1, "train_per_class": 3, "val_per_class": 1,
           "flags": ["--batch-size", "10", "--workers", "0", "--devices", "cpu"]}


def read_metrics(path: Path) -> list:
    with open(path, newline="") as file:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
                for row in csv.DictReader(file)]


def judge(record: PhaseRecord, rows: list, must_fall: bool) -> None:
    losses = [row.get("train_loss", math.nan) for row in rows]
    record.info(train_loss=losses, val_top1_error=[r.get("val_top1_error") for r in rows],
                images_per_second=[r.get("images_per_second") for r in rows])
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    record.check("losses finite", PASS if finite else FAIL, epochs=len(losses))
    if must_fall:
        falls = finite and len(losses) >= 2 and losses[-1] < losses[0]
        record.check("loss falls", PASS if falls else FAIL, train_loss=losses)


def tiny_store(folder: Path) -> Path:
    """A prepared store of a few built-in images, for the CPU's dry run."""
    from alexnet_triton.data.builtin import IMAGE_SIZE, generate_images
    from alexnet_triton.data.convert import prepare

    generate_images(folder / "images", train_per_class=DRY_RUN["train_per_class"],
                    val_per_class=DRY_RUN["val_per_class"], workers=1)
    prepare(folder / "images", folder / "store", size=IMAGE_SIZE, workers=1, progress=False)
    return folder / "store"


def run(record: PhaseRecord, args) -> None:
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        record.check("cuda", FAIL, reason="no CUDA device: run with --dry-run on a CPU")
        return
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-train-"))
    run_dir = scratch / "run"
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(bootstrap.ROOT)}
    if args.dry_run:
        flags = ["--data", str(tiny_store(scratch)), "--epochs", str(DRY_RUN["epochs"]),
                 *DRY_RUN["flags"]]
    else:
        flags = ["--epochs", str(EPOCHS), "--devices", "cuda:0"]
    command = [sys.executable, "-m", "bench.gpu_check.train_run", "--train", *flags,
               "--run-dir", str(run_dir), "--tensorboard", "off"]
    record.info(command=" ".join(command[3:]))
    result = subprocess.run(command, cwd=bootstrap.ROOT, env=env)
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        shutil.copy(metrics, Path(args.out) / METRICS)
        judge(record, read_metrics(metrics), must_fall=not args.dry_run)
    record.check("trainer exit", PASS if result.returncode == 0 and metrics.exists() else FAIL,
                 returncode=result.returncode)
    shutil.rmtree(scratch, ignore_errors=True)


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
