"""``torchrun`` this file instead of ``-m alexnet_triton.train``: the trainer, whose rank 1
finds the data damaged during its setup, after rank 0 has checked it (test_train_torchrun)."""
import os
import sys

from alexnet_triton import train
from alexnet_triton.errors import DataError
from alexnet_triton.training import setup

real_open_dataset = setup.open_dataset


def open_dataset(root):
    if os.environ["RANK"] == "1":
        raise DataError(f"{root}: damaged on rank 1's disk")
    return real_open_dataset(root)


setup.open_dataset = open_dataset
sys.exit(train.main())
