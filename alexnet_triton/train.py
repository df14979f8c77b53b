"""python -m alexnet_triton.train: AlexNet with the paper's recipe, on any image folder.

Without ``--data`` it trains on the built-in generated dataset (nothing is downloaded):
on a 2-core CPU without a GPU the bare command finishes in a few minutes and passes 90%
top-1 accuracy on that dataset's validation split. ``--help`` explains every flag; the
defaults are the paper's (``alexnet_triton.training.config``).

What a run leaves in its directory (default runs/<timestamp>/):
    config.json         the resolved configuration (and the devices, kernels, world size)
    metrics.csv         per epoch: train loss, val loss, val top-1 / top-5 error, lr, speed
    curves.png          loss and error curves;  conv1_kernels.png: the paper's figure 3
    latest.pt, best.pt  checkpoints (``alexnet_triton.training.checkpoint``); --resume DIR continues
    .lock               held while a run writes the directory (``alexnet_triton.training.run_dir``)
    tensorboard/        TensorBoard event files (--tensorboard; by default when the
                        tensorboard package is installed)

Exit status: 0 done; 2 bad input (one line on stderr, before any work; under torchrun
naming each rank that met it), including a run directory that another run holds or that
cannot be written, and a batch with no readable image (the data is damaged); 1 a NaN,
infinite or diverged loss (nothing after the last check is saved; the message says which
checkpoint to use), a checkpoint that could not be written (the previous one is kept) or,
under torchrun, another rank gone; 130 stopped by Ctrl-C or SIGTERM, also sent to the whole
process group or, under torchrun, on the launcher's death (a checkpoint of the last checked
step is written first; --resume continues from it exactly; a second Ctrl-C stops at once,
but not within a checkpoint's writing). Under ``torchrun --max-restarts N`` a restarted
group continues from --run-dir's latest.pt by itself.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from alexnet_triton.errors import UserError
from alexnet_triton.runtime import keep_freed_memory, resolve_devices
from alexnet_triton.training.checkpointing import checkpoint_bytes
from alexnet_triton.training.config import parse_args
from alexnet_triton.training.console import PROG
from alexnet_triton.training.distributed import Replicas, lost_peer
from alexnet_triton.training.run_dir import check_free_space
from alexnet_triton.training.setup import (claim_run_dir, elastic_restart, resolve_config,
                                           resolve_setup)
from alexnet_triton.training.trainer import EXIT_BAD_INPUT, EXIT_FAILED, Trainer


def main(argv: Optional[Sequence[str]] = None) -> int:
    config, given = parse_args(argv, PROG)
    replicas = Replicas.from_environment()
    # The configuration first (on --resume, the checkpoint's), then its devices, then the
    # process group for them: the backend and device must be the trainer's.
    try:
        config, given, restart_notes = elastic_restart(config, given)
        config, state, notes = resolve_config(config, given)
        devices = resolve_devices(config.devices, config.one_column, replicas.local_rank)
    except UserError as error:
        if replicas.is_main:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    notes = restart_notes + notes
    replicas.start(devices[0])
    if devices[0].type == "cpu":
        keep_freed_memory()
    lock, wrote = None, False
    try:
        # Rank 0 claims the run directory, checks (and builds the built-in dataset's
        # cache) first, then the others.
        setup, error = None, None
        if replicas.is_main:
            try:
                lock = claim_run_dir(config, state)
                setup = resolve_setup(config, state, devices, replicas, lock.run_dir, notes)
            except UserError as caught:
                error = str(caught)
        error, run_dir = replicas.broadcast(
            (error, str(setup.run_dir) if setup is not None else None))
        if error is not None:
            if replicas.is_main:
                print(f"{PROG}: error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        error = None
        if not replicas.is_main:
            try:
                setup = resolve_setup(config, state, devices, replicas, Path(run_dir), notes)
            except UserError as caught:
                error = str(caught)
        if _any_failed(replicas, error):
            return EXIT_BAD_INPUT
        try:
            # Builds the model and loads a resumed checkpoint into it: a checkpoint of
            # another network fails here, still before anything is written.
            trainer = Trainer(setup, replicas)
            if replicas.is_main:
                check_free_space(setup.run_dir, checkpoint_bytes(trainer.model, setup.info),
                                 "a checkpoint")
        except UserError as caught:
            error = str(caught)
        if _any_failed(replicas, error):
            return EXIT_BAD_INPUT
        wrote = True
        status = trainer.run()
        if status != EXIT_BAD_INPUT:  # a replica's own data error: the others are not told
            replicas.barrier()
        return status
    except RuntimeError as error:
        if not (replicas.distributed and lost_peer(error)):
            raise
        print(f"{PROG}: error: rank {replicas.rank}: stopping: another rank has gone (it "
              f"failed or was stopped; its own message says why)", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        if lock is not None:
            lock.release(remove_if_created=not wrote)
        replicas.finish()


def _any_failed(replicas: Replicas, error: Optional[str]) -> bool:
    """Whether any replica failed its setup, ``error`` being this one's reason (or None);
    rank 0 says each one's in a line. Every replica calls it: one that stopped alone would
    leave the others in a collective whose failure names no reason."""
    failed: dict = {}
    for rank, reason in enumerate(replicas.gather(error)):
        if reason is not None:
            failed.setdefault(reason, []).append(str(rank))
    if replicas.is_main:
        for reason, ranks in failed.items():
            who = (f"rank{'s' * (len(ranks) > 1)} {', '.join(ranks)}: "
                   if replicas.distributed else "")
            print(f"{PROG}: error: {who}{reason}", file=sys.stderr, flush=True)
    return bool(failed)


if __name__ == "__main__":
    sys.exit(main())
