"""The training run's place among torchrun's replicas (or alone, without torchrun).

Under ``torchrun`` (WORLD_SIZE > 1 in the environment) each process is one replica of a
DistributedDataParallel run: NCCL between GPUs, gloo on the CPU. Rank 0 alone prints,
writes the run directory and checkpoints; the others compute and join the collectives.
Without torchrun every method here is a cheap no-op, so the trainer has one code path.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, List

import torch
import torch.distributed as dist


def _stop_with_launcher() -> None:
    """Have the kernel send this rank SIGTERM when its torchrun launcher dies (Linux).

    Killing a rank ends the job (torchrun stops the others), but a killed launcher would
    leave its ranks and their loader workers running forever. SIGTERM lets the trainer
    stop as for Ctrl-C: the ranks, all signalled, agree to write a checkpoint and exit.
    """
    import ctypes
    import signal
    launcher = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: nothing to ask for
        return
    if os.getppid() != launcher:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _store_of_this_start(timeout: timedelta):
    """For a restarted torchrun group, torchrun's store with its keys under a prefix of this
    start; else None (the environment's, as init_process_group reads it).

    A group restarted by ``torchrun --max-restarts`` meets in the store of the first start
    (measured on torch 2.13, --standalone), where the first group's addresses still are:
    gloo connected to the killed ranks' ports and every restart failed ("Connection
    refused"). Under a prefix of their own the restarted ranks find only each other.
    """
    start = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True) or start == "0":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"alexnet_triton/start-{start}", store)


# What gloo and NCCL say when a peer process is gone (gloo raises a plain RuntimeError).
PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
             "NCCL communicator was aborted")


def lost_peer(error: BaseException) -> bool:
    """Whether ``error``, raised in a collective, means another rank has gone."""
    return isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(words in str(error) for words in PEER_LOST))


class Replicas:
    """rank, world size and the few collectives the trainer needs."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.backend = None

    @classmethod
    def from_environment(cls) -> "Replicas":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        """Join the process group: NCCL when this replica trains on a GPU, else gloo."""
        if not self.distributed or dist.is_initialized():
            return
        _stop_with_launcher()
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(minutes=30)
        dist.init_process_group(self.backend, rank=self.rank, world_size=self.world_size,
                                timeout=timeout, store=_store_of_this_start(timeout))

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce a tensor by summation, in place; returns it."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self._group_for(tensor))
        return tensor

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (a picklable Python object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group())
        return box[0]

    def gather(self, value: Any) -> List[Any]:
        """Every rank's value, in rank order (on every rank)."""
        if not self.distributed:
            return [value]
        values: List[Any] = [None] * self.world_size
        dist.all_gather_object(values, value, group=self._cpu_group())
        return values

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self._cpu_group())

    def finish(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # gloo carries CPU tensors and Python objects; the default group (NCCL on GPUs) the rest.
    _cpu = None

    def _cpu_group(self):
        if dist.get_backend() == "gloo":
            return None
        if self._cpu is None:
            self._cpu = dist.new_group(backend="gloo")
        return self._cpu

    def _group_for(self, tensor: torch.Tensor):
        return self._cpu_group() if tensor.device.type == "cpu" else None
