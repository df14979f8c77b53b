"""kernels.check_int32_offsets: the one refusal of tensors the int32-offset kernels cannot address."""
import pytest
import torch

from alexnet_triton import kernels
from alexnet_triton.kernels import dropout, lrn


def test_tensors_of_2_31_elements_are_refused_by_name():
    small = torch.empty(4)
    kernels.check_int32_offsets("op", input=small, output=torch.empty(1).expand(2**31 - 1))
    huge = torch.empty(1, dtype=torch.int8).expand(2**31)  # no memory: a broadcast view
    with pytest.raises(ValueError, match=r"op: output \(2147483648,\) has 2147483648 elements"):
        kernels.check_int32_offsets("op", input=small, output=huge)


def test_every_int32_launcher_refuses_before_launching():
    huge = torch.empty(1, 1, 1, 1).expand(2**29, 2, 2, 1)  # 2**31 elements, one in memory
    with pytest.raises(ValueError, match="int32 offsets"):
        lrn.lrn_forward(huge, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1)
    with pytest.raises(ValueError, match="int32 offsets"):
        dropout.dropout(huge, 0.5, torch.zeros(1, dtype=torch.int64))
