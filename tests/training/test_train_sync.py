"""The training loop reads the device from the host once every --sync-steps steps.

On a GPU each host read of a device tensor (``.item()``, ``.cpu()``, ``bool(t)``, an
all-reduce into a CPU tensor) waits for every kernel queued so far, so Python cannot run
ahead. On the CPU nothing waits, but the reads are the same calls: counting them per step
shows where a GPU run would stall.
"""
from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton import train as train_module
from alexnet_triton.training.distributed import Replicas
from train_support import poison_batch, train, use_reference_kernels

# Every Tensor method that hands a value to Python or copies to the host. (``.to("cpu")`` is
# left out: on the CPU it is also how a batch goes "to the device".)
HOST_READS = {torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy,
              torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
              torch.Tensor.__index__}


REFERENCE_KERNELS = "/kernels/reference/"


class HostReads(TorchFunctionMode):
    """Records, for every host read, how many training steps had been taken."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.at = steps, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The kernels' PyTorch stand-ins (the CPU's augmentation checks its crop offsets
        # with int()) are not what runs on a GPU: the Triton kernels read nothing back.
        if func in HOST_READS and REFERENCE_KERNELS not in sys._getframe(1).f_code.co_filename:
            self.at.append(self.steps[0])
        return func(*args, **(kwargs or {}))


@pytest.fixture
def data(quick_dataset, monkeypatch):
    use_reference_kernels(monkeypatch)
    return quick_dataset


@pytest.mark.parametrize("k, expected", [(2, [2, 4, 6]), (4, [4, 6]), (1, [1, 2, 3, 4, 5, 6])])
def test_the_host_reads_the_device_once_every_k_steps(k, expected, data, tmp_path, capsys,
                                                      monkeypatch):
    """One epoch of 6 steps: reads after every k-th step and at the epoch's end, none else."""
    steps = [0]
    reads = HostReads(steps)
    real_step, real_epoch = train_module.Trainer.train_step, train_module.Trainer.train_epoch
    real_sum = Replicas.sum_

    def counted_step(self, images, labels):
        loss = real_step(self, images, labels)
        steps[0] += 1
        return loss

    def watched_epoch(self):
        with reads:  # the training loop only; validation and the checkpoint come after
            return real_epoch(self)

    def counted_sum(self, tensor):  # an all-reduce waits for the device too
        reads.at.append(steps[0])
        return real_sum(self, tensor)

    monkeypatch.setattr(train_module.Trainer, "train_step", counted_step)
    monkeypatch.setattr(train_module.Trainer, "train_epoch", watched_epoch)
    monkeypatch.setattr(Replicas, "sum_", counted_sum)
    status, _, err = train(["--data", data, "--run-dir", tmp_path / "run", "--epochs", "1",
                            "--batch-size", "5", "--workers", "0", "--checkpoint-minutes",
                            "1000", "--tensorboard", "off", "--sync-steps", k], capsys)
    assert status == 0, err
    assert steps[0] == 6
    # Reads before the first step (the DataLoader drawing its seed) wait for nothing.
    assert sorted(set(reads.at) - {0}) == expected, reads.at


def test_a_nan_between_two_syncs_is_found_and_never_checkpointed(data, tmp_path, capsys,
                                                                 monkeypatch):
    """Epoch 2, step 2 poisoned, checks every 3 steps and a checkpoint due at every check:
    the error names the poisoned step, and latest.pt stays the end of epoch 1."""
    poison_batch(monkeypatch, 5)
    run_dir = tmp_path / "run"
    status, _, err = train(["--data", data, "--run-dir", run_dir, "--epochs", "2",
                            "--batch-size", "10", "--workers", "0", "--checkpoint-minutes",
                            "1e-9", "--tensorboard", "off", "--sync-steps", "3"], capsys)
    assert status == 1, err
    assert "the loss is nan at epoch 2, step 2" in err, err
    kept = torch.load(run_dir / ckpt.LATEST, weights_only=True)
    assert (kept["epoch"], kept["step_in_epoch"]) == (1, 0)
    assert all(torch.isfinite(value).all() for value in kept["model"].values())
