"""Cross-channel LRN: kernels/lrn.py against kernels/reference/lrn.py, and the reference itself.

The expected values come from the reference on float64 copies of the inputs. Inputs are
randn (the normalization is mild) and randn * 20 (alpha / size * sum a^2 is comparable to
k or larger, so both terms of the backward matter).
"""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from alexnet_triton.kernels import lrn
from alexnet_triton.kernels.reference import lrn as reference
from helpers import assert_close, skip_bf16_on_cpu, tolerance

DTYPES = [torch.float32, torch.float64, torch.bfloat16]

# (alpha, beta, k): AlexNet's, and a strong normalization with a beta other than 3/4.
ALEXNET = (1e-4, 0.75, 2.0)
STRONG = (1.0, 1.3, 0.5)




def _randn(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


def _check_forward(a: torch.Tensor, size: int, params, groups: int, poisoned) -> None:
    alpha, beta, k = params
    b = lrn.lrn_forward(a, size, alpha, beta, k, groups)
    assert poisoned.allocations > 0
    expected = reference.lrn_forward(a.double(), size, alpha, beta, k, groups).to(a.dtype)
    assert_close(b, expected, tolerance(a.dtype), "b")


def _check_backward(g: torch.Tensor, a: torch.Tensor, size: int, params, groups: int,
                    poisoned) -> None:
    alpha, beta, k = params
    grad_a = lrn.lrn_backward(g, a, size, alpha, beta, k, groups)
    assert poisoned.allocations > 0
    expected = reference.lrn_backward(g.double(), a.double(), size, alpha, beta, k,
                                      groups).to(a.dtype)
    assert_close(grad_a, expected, tolerance(a.dtype), "grad_a")


# (shape, size, groups, params, scale). AlexNet's LRN layers (after conv1 and conv2, one
# image, both columns as one tensor with groups=2 or as a single column), AlexNet's later
# shapes, then odd shapes: every size 1..6 (even sizes have the asymmetric window), windows
# wider than the group, one channel per group, and several blocks along both axes.
CASES = [
    ((1, 96, 55, 55), 5, 1, ALEXNET, 20.0),
    ((1, 96, 55, 55), 5, 2, ALEXNET, 20.0),
    ((1, 96, 55, 55), 5, 2, ALEXNET, 1.0),
    ((1, 256, 27, 27), 5, 1, ALEXNET, 20.0),
    ((1, 256, 27, 27), 5, 2, ALEXNET, 20.0),
    ((1, 256, 27, 27), 5, 1, ALEXNET, 1.0),
    ((2, 256, 13, 13), 5, 2, STRONG, 1.0),
    ((2, 384, 6, 6), 3, 2, ALEXNET, 20.0),
    *[((2, 7, 5, 3), size, 1, STRONG, 1.0) for size in range(1, 7)],
    *[((2, 12, 5, 3), size, 2, STRONG, 1.0) for size in range(1, 7)],
    *[((2, 12, 3, 5), size, 2, ALEXNET, 20.0) for size in (2, 5)],
    ((1, 3, 4, 4), 6, 1, STRONG, 1.0),
    ((1, 4, 2, 3), 5, 4, STRONG, 1.0),
    ((1, 70, 33, 35), 5, 1, STRONG, 1.0),
    ((1, 70, 33, 35), 4, 2, ALEXNET, 20.0),
]
CASE_IDS = [f"{'x'.join(map(str, shape))}-size{size}-groups{groups}-"
            f"{'alexnet' if params is ALEXNET else 'strong'}-scale{scale:g}"
            for shape, size, groups, params, scale in CASES]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, size, groups, params, scale", CASES, ids=CASE_IDS)
def test_forward(shape, size, groups, params, scale, dtype, device, poisoned):
    skip_bf16_on_cpu(dtype, device)
    a = _randn(shape, 0, scale).to(device=device, dtype=dtype)
    _check_forward(a, size, params, groups, poisoned)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, size, groups, params, scale", CASES, ids=CASE_IDS)
def test_backward(shape, size, groups, params, scale, dtype, device, poisoned):
    skip_bf16_on_cpu(dtype, device)
    a = _randn(shape, 1, scale).to(device=device, dtype=dtype)
    g = _randn(shape, 2).to(device=device, dtype=dtype)
    _check_backward(g, a, size, params, groups, poisoned)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_strided_inputs(dtype, device, poisoned):
    shape = (2, 10, 6, 7)
    a = _randn(shape, 3, 20.0).to(device=device, dtype=dtype)
    a = a.to(memory_format=torch.channels_last)
    g = _randn((2, 10, 7, 6), 4).to(device=device, dtype=dtype).transpose(2, 3)
    _check_forward(a, 5, ALEXNET, 2, poisoned)
    _check_backward(g, a, 5, ALEXNET, 2, poisoned)


# The layers between conv1 and pool5 hand each other channels_last activations; NCHW
# callers are converted. Both must compute the same function and keep their format. float32
# only: the layout is in the offsets, which do not depend on the dtype, and test_forward and
# test_backward take every dtype through the same kernels (float64 here doubled the file's time).
LAYOUT_CASES = [CASES[i] for i in (1, 4, 6, 7)] + [CASES[-1], CASES[-3], ((1, 24, 3, 1), 6, 3, STRONG, 20.0)]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32], ids=str)
@pytest.mark.parametrize("shape, size, groups, params, scale", LAYOUT_CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-size{c[1]}-groups{c[2]}" for c in LAYOUT_CASES])
def test_both_memory_formats(shape, size, groups, params, scale, dtype, layout, device, poisoned):
    alpha, beta, k = params
    a = _randn(shape, 11, scale).to(device=device, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    g = _randn(shape, 12).to(device=device, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    b = lrn.lrn_forward(a, size, alpha, beta, k, groups)
    grad_a = lrn.lrn_backward(g, a, size, alpha, beta, k, groups)
    assert poisoned.allocations > 0
    for result in (b, grad_a):
        assert result.is_contiguous(memory_format=LAYOUTS[layout])
    expected = reference.lrn_forward(a.double(), size, alpha, beta, k, groups)
    assert expected.is_contiguous(memory_format=LAYOUTS[layout])
    assert_close(b, expected.to(dtype), tolerance(dtype), "b")
    expected_grad = reference.lrn_backward(g.double(), a.double(), size, alpha, beta, k, groups)
    assert_close(grad_a, expected_grad.to(dtype), tolerance(dtype), "grad_a")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_group_boundary(dtype, device, poisoned):
    # Only the two channels at the boundary of groups=2 are large. Each group must be
    # normalized on its own: exactly torch's LRN of each half, and nothing of the other.
    size, (alpha, beta, k) = 5, STRONG
    a = _randn((2, 16, 5, 7), 5)
    a[:, 7:9] *= 30.0
    a = a.to(device=device, dtype=dtype)
    b = lrn.lrn_forward(a, size, alpha, beta, k, 2)
    assert poisoned.allocations > 0
    expected = torch.cat([F.local_response_norm(half, size, alpha, beta, k)
                          for half in a.double().chunk(2, dim=1)], dim=1).to(dtype)
    assert_close(b, expected, tolerance(dtype), "b")
    # Proves the test can tell: across the boundary the large channels would matter.
    ungrouped = F.local_response_norm(a.double(), size, alpha, beta, k).to(dtype)
    assert not torch.allclose(b[:, 5:11], ungrouped[:, 5:11], rtol=1e-2)

    # A gradient flowing into one group reaches only that group's inputs, exactly.
    for first, second in ((slice(0, 8), slice(8, 16)), (slice(8, 16), slice(0, 8))):
        g = _randn((2, 16, 5, 7), 6).to(device=device, dtype=dtype)
        g[:, second] = 0.0
        grad_a = lrn.lrn_backward(g, a, size, alpha, beta, k, 2)
        assert torch.equal(grad_a[:, second], torch.zeros_like(grad_a[:, second]))
        expected = reference.lrn_backward(g.double(), a.double(), size, alpha, beta, k,
                                          2).to(dtype)
        assert_close(grad_a, expected, tolerance(dtype), "grad_a")
        assert grad_a[:, first].abs().amin() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_channel_edges(dtype, device, poisoned):
    # Large first and last channels: the window is cut at both ends of the tensor, as in torch.
    size, (alpha, beta, k) = 5, STRONG
    a = _randn((1, 9, 4, 6), 7)
    a[:, [0, -1]] *= 30.0
    a = a.to(device=device, dtype=dtype)
    b = lrn.lrn_forward(a, size, alpha, beta, k, 1)
    assert poisoned.allocations > 0
    expected = F.local_response_norm(a.double(), size, alpha, beta, k).to(dtype)
    assert_close(b, expected, tolerance(dtype), "b")


# ------------------------------------------------------------------------------------------
# The oracle: the reference against torch, in float64
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, 7))
@pytest.mark.parametrize("params", [ALEXNET, STRONG], ids=["alexnet", "strong"])
def test_reference_forward_is_torch_lrn(size, params):
    alpha, beta, k = params
    a = _randn((2, 12, 5, 3), 8, 20.0)
    b = reference.lrn_forward(a, size, alpha, beta, k, 1)
    assert_close(b, F.local_response_norm(a, size, alpha, beta, k), tolerance(torch.float64),
                 "groups=1")
    b = reference.lrn_forward(a, size, alpha, beta, k, 2)
    halves = [F.local_response_norm(half, size, alpha, beta, k) for half in a.chunk(2, dim=1)]
    assert_close(b, torch.cat(halves, dim=1), tolerance(torch.float64), "groups=2")


@pytest.mark.parametrize("size", range(1, 7))
@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("params", [ALEXNET, STRONG], ids=["alexnet", "strong"])
def test_reference_backward_is_autograd(size, groups, params):
    alpha, beta, k = params
    a = _randn((2, 12, 4, 3), 9, 20.0).requires_grad_()
    g = _randn((2, 12, 4, 3), 10)
    (expected,) = torch.autograd.grad(reference.lrn_forward(a, size, alpha, beta, k, groups), a, g)
    grad_a = reference.lrn_backward(g, a.detach(), size, alpha, beta, k, groups)
    assert_close(grad_a, expected, tolerance(torch.float64), "grad_a")
    if groups == 1:
        # And against autograd through torch's own LRN, independently of our forward.
        (torch_grad,) = torch.autograd.grad(F.local_response_norm(a, size, alpha, beta, k), a, g)
        assert_close(grad_a, torch_grad, tolerance(torch.float64), "grad_a vs torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_the_hardware_log2_is_for_float32_on_a_gpu_only(dtype, device, monkeypatch):
    """FAST_LOG2 (lg2.approx.f32, PTX) on a GPU for 16- and 32-bit inputs; float64 and the
    interpreter (which cannot run PTX) take tl.log2: the interpreter's results above are
    tl.log2's, and the GPU check's correctness phase judges the fast one."""
    launched = []
    launchable = lrn.launchable

    def recording(kernel):
        launch = launchable(kernel)

        class Grid:
            def __getitem__(self, grid):
                def run(*args, **kwargs):
                    launched.append(kwargs["FAST_LOG2"])
                    return launch[grid](*args, **kwargs)
                return run
        return Grid()
    monkeypatch.setattr(lrn, "launchable", recording)
    x = torch.randn(1, 8, 3, 3, dtype=dtype, device=device)
    lrn.lrn_backward(x, lrn.lrn_forward(x, 5, *ALEXNET, 1), 5, *ALEXNET, 1)
    fast = device.type == "cuda" and dtype != torch.float64
    assert launched == [fast, fast]
