"""The rules kernels/__init__.py states for TMA tensor descriptors: when a launch may use
them, and the scratch memory their launches need."""
import torch

from alexnet_triton import kernels


def test_available_under_the_interpreter():
    # tests run under TRITON_INTERPRET=1, which emulates descriptors: the kernels' TMA
    # paths are the ones these tests exercise unless a test asks for plain loads
    assert kernels.interpreting()
    assert kernels.tensor_descriptors_available()


def test_tma_compatible_follows_the_alignment_rules():
    weight = torch.empty(64, 40, dtype=torch.bfloat16)  # rows of 80 bytes: 16-byte multiples
    assert kernels.tma_compatible(weight, (64, 40), (40, 1))
    assert not kernels.tma_compatible(weight, (40, 64), (1, 40))  # innermost stride not 1
    odd = torch.empty(64, 44, dtype=torch.bfloat16)  # rows of 88 bytes
    assert not kernels.tma_compatible(odd, (64, 44), (44, 1))
    assert kernels.tma_compatible(odd.float(), (64, 44), (44, 1))  # 176 bytes
    shifted = torch.empty(64 * 40 + 1, dtype=torch.bfloat16)[1:].view(64, 40)
    assert not kernels.tma_compatible(shifted, (64, 40), (40, 1))  # base 2 bytes off
    assert not kernels.tma_compatible(weight, (64, 40), (1,))


def test_descriptor_scratch_lends_an_allocator_and_gives_the_callers_back(monkeypatch):
    from triton.runtime import _allocation

    def callers(size, alignment, stream):
        raise AssertionError("the caller's allocator was used inside")

    token = _allocation._allocator.set(callers)
    try:
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # the GPU's branch
        with kernels.descriptor_scratch(torch.device("cpu")):
            buffer = _allocation._allocator.get()(256, 128, None)
            assert buffer.numel() == 256 and buffer.device.type == "cpu"
        assert _allocation._allocator.get() is callers
    finally:
        _allocation._allocator.reset(token)
