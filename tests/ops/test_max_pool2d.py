"""kernels/max_pool2d.py against its reference, and the reference against PyTorch."""
import pytest
import torch
import torch.nn.functional as F

from alexnet_triton.kernels import max_pool2d as kernels
from alexnet_triton.kernels.reference import max_pool2d as reference
from helpers import assert_close, skip_bf16_on_cpu, tolerance

# (input [N, C, H, W], kernel_size, stride): AlexNet's three pools, non-overlapping
# pooling (the paper's ablation), and odd shapes off the block size.
SHAPES = [
    ((2, 96, 55, 55), [3, 3], [2, 2]),   # pool1
    ((2, 256, 27, 27), [3, 3], [2, 2]),  # pool2
    ((2, 256, 13, 13), [3, 3], [2, 2]),  # pool5
    ((1, 5, 6, 6), [2, 2], [2, 2]),
    ((3, 7, 11, 9), [3, 2], [2, 3]),
    ((1, 3, 10, 8), [2, 3], [4, 4]),     # stride larger than the window: gaps
    ((2, 3, 5, 7), [5, 7], [1, 1]),      # window as large as the input
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kernel_size, stride", SHAPES)
def test_forward_and_backward_match_reference(shape, kernel_size, stride, dtype, device, poisoned):
    skip_bf16_on_cpu(dtype, device)
    gen = torch.Generator().manual_seed(hash((shape, dtype)) % 2**31)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    output, argmax = kernels.max_pool2d_forward(x, kernel_size, stride)
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    grad_input = kernels.max_pool2d_backward(grad_output, argmax, list(shape), kernel_size, stride)
    assert poisoned.allocations >= 3

    expected, expected_argmax = reference.max_pool2d_forward(x.double(), kernel_size, stride)
    assert argmax.dtype == torch.int8
    assert torch.equal(argmax.cpu(), expected_argmax.cpu())
    assert_close(output, expected.to(dtype), 0.0, "output")  # a max is exact
    expected_grad = reference.max_pool2d_backward(grad_output.double(), expected_argmax,
                                                  list(shape), kernel_size, stride)
    assert_close(grad_input, expected_grad.to(dtype), tolerance(dtype), "grad_input")


@pytest.mark.parametrize("kernel_size, stride", [([3, 3], [2, 2]), ([2, 2], [1, 1])])
def test_ties_route_to_first_in_row_major_order(kernel_size, stride, device, poisoned):
    gen = torch.Generator().manual_seed(7)
    # Three values only: most windows hold several copies of their maximum.
    x = torch.randint(0, 3, (2, 4, 13, 13), generator=gen).to(device, torch.float32)
    output, argmax = kernels.max_pool2d_forward(x, kernel_size, stride)
    _, expected_argmax = reference.max_pool2d_forward(x.cpu(), kernel_size, stride)
    assert torch.equal(argmax.cpu(), expected_argmax)
    grad_output = torch.ones_like(output)
    grad_input = kernels.max_pool2d_backward(grad_output, argmax, list(x.shape), kernel_size, stride)
    # Each window's gradient lands on exactly the element PyTorch's own backward picks.
    x_leaf = x.cpu().clone().requires_grad_()
    F.max_pool2d(x_leaf, kernel_size, stride).backward(torch.ones(output.shape))
    assert torch.equal(grad_input.cpu(), x_leaf.grad)


def test_backward_is_deterministic(device):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 27, 27, generator=gen).to(device)
    output, argmax = kernels.max_pool2d_forward(x, [3, 3], [2, 2])
    grad_output = torch.randn(output.shape, generator=gen).to(device)
    runs = [kernels.max_pool2d_backward(grad_output, argmax, list(x.shape), [3, 3], [2, 2])
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


def test_strided_input_is_accepted(device, poisoned):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 13, 13, 6, generator=gen).to(device).permute(0, 3, 1, 2)  # not contiguous
    output, argmax = kernels.max_pool2d_forward(x, [3, 3], [2, 2])
    expected, expected_argmax = reference.max_pool2d_forward(x, [3, 3], [2, 2])
    assert torch.equal(output, expected) and torch.equal(argmax, expected_argmax)


@pytest.mark.parametrize("shape, kernel_size, stride", SHAPES[2:])
def test_reference_matches_pytorch(shape, kernel_size, stride):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    output, argmax = reference.max_pool2d_forward(x, kernel_size, stride)
    assert torch.equal(output, F.max_pool2d(x, kernel_size, stride))
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad(F.max_pool2d(x, kernel_size, stride), x, grad_output)
    actual = reference.max_pool2d_backward(grad_output, argmax, list(shape), kernel_size, stride)
    assert torch.equal(actual, expected)
