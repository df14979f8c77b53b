"""kernels/max_pool2d.py against its reference, and the reference against PyTorch."""
import pytest
import torch
import torch.nn.functional as F

from alexnet_triton.kernels import max_pool2d as kernels
from alexnet_triton.kernels.reference import max_pool2d as reference
from helpers import assert_close, skip_bf16_on_cpu, tolerance

# (input [N, C, H, W], kernel_size, stride, padding, dilation, ceil_mode): AlexNet's three pools,
# non-overlapping pooling (the paper's ablation), odd shapes off the block size, then
# padding and ceil mode (Caffe's AlexNet pools in ceil mode): windows cut by the bottom and
# right edges, -inf padding on every side, a ceil-mode window that would start in the right
# padding (torch drops it), channel counts that are not powers of two, and dilation.
SHAPES = [
    ((2, 96, 55, 55), [3, 3], [2, 2], [0, 0], [1, 1], False),   # pool1
    ((2, 256, 27, 27), [3, 3], [2, 2], [0, 0], [1, 1], False),  # pool2
    ((2, 256, 13, 13), [3, 3], [2, 2], [0, 0], [1, 1], False),  # pool5
    ((1, 5, 6, 6), [2, 2], [2, 2], [0, 0], [1, 1], False),
    ((3, 7, 11, 9), [3, 2], [2, 3], [0, 0], [1, 1], False),
    ((1, 3, 10, 8), [2, 3], [4, 4], [0, 0], [1, 1], False),     # stride larger than the window
    ((2, 3, 5, 7), [5, 7], [1, 1], [0, 0], [1, 1], False),      # window as large as the input
    ((2, 96, 54, 54), [3, 3], [2, 2], [0, 0], [1, 1], True),    # ceil mode: a last window cut short
    ((2, 12, 10, 11), [3, 3], [2, 2], [1, 1], [1, 1], False),   # padding on every side
    ((1, 6, 10, 9), [3, 2], [2, 2], [1, 1], [1, 1], True),      # both, on a 3x2 window
    ((2, 5, 7, 7), [2, 2], [2, 2], [1, 1], [1, 1], True),       # ceil drops a window in the padding
    ((1, 17, 9, 12), [4, 3], [3, 2], [2, 1], [1, 1], True),
    ((1, 4, 3, 3), [3, 3], [1, 1], [1, 1], [1, 1], False),      # every window touches the padding
    ((2, 8, 11, 10), [3, 3], [2, 2], [0, 0], [2, 2], False),    # dilation
    ((1, 6, 12, 9), [3, 2], [1, 2], [1, 1], [2, 3], True),      # dilation, padding, ceil mode
    ((1, 3, 9, 9), [2, 3], [3, 1], [1, 0], [3, 2], False),      # dilation wider than the stride
    # the paper's window in blocks of two with padding and ceil mode on odd sizes: blocks
    # cut by every edge, windows past the output
    ((1, 10, 9, 8), [3, 3], [2, 2], [1, 1], [1, 1], True),
]
SHAPE_IDS = [f"{'x'.join(map(str, shape))}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{p[0]}x{p[1]}"
             f"-d{d[0]}x{d[1]}{'-ceil' if ceil else ''}" for shape, k, s, p, d, ceil in SHAPES]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _is_channels_last(t: torch.Tensor) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape, kernel_size, stride, padding, dilation, ceil_mode", SHAPES,
                         ids=SHAPE_IDS)
def test_forward_and_backward_match_reference(shape, kernel_size, stride, padding, dilation,
                                              ceil_mode, dtype, layout, device, poisoned):
    skip_bf16_on_cpu(dtype, device)
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    gen = torch.Generator().manual_seed(hash((shape, dtype)) % 2**31)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    x = x.contiguous(memory_format=LAYOUTS[layout])
    output, argmax = kernels.max_pool2d_forward(x, *window)
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64).to(device, dtype)
    grad_input = kernels.max_pool2d_backward(grad_output, argmax, list(shape), *window)
    assert poisoned.allocations >= 3
    # Results come back in the input's memory format; the backward reads the forward
    # input's from argmax (a 1x1 output is both, and its gradient comes back NCHW).
    for result in (output, argmax):
        assert result.is_contiguous(memory_format=LAYOUTS[layout])
    assert grad_input.is_contiguous(
        memory_format=torch.channels_last if _is_channels_last(argmax) else torch.contiguous_format)

    expected, expected_argmax = reference.max_pool2d_forward(x.double(), *window)
    assert argmax.dtype == torch.int8
    assert torch.equal(argmax.cpu(), expected_argmax.cpu())
    assert_close(output, expected.to(dtype), 0.0, "output")  # a max is exact
    expected_grad = reference.max_pool2d_backward(grad_output.double(), expected_argmax,
                                                  list(shape), *window)
    assert_close(grad_input, expected_grad.to(dtype), tolerance(dtype), "grad_input")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_windows_of_minus_inf_name_their_first_input_not_the_padding(layout, device, poisoned):
    # All -inf but one value: windows that hold only -inf must route to their first input
    # position (torch's index), never to a padded one.
    x = torch.full((1, 3, 5, 5), float("-inf"))
    x[0, :, 4, 4] = 1.0
    x = x.to(device).contiguous(memory_format=LAYOUTS[layout])
    window = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    output, argmax = kernels.max_pool2d_forward(x, *window)
    expected, expected_argmax = reference.max_pool2d_forward(x.cpu(), *window)
    assert torch.equal(argmax.cpu(), expected_argmax) and torch.equal(output.cpu(), expected)
    x_leaf = x.cpu().clone().requires_grad_()
    F.max_pool2d(x_leaf, 3, 2, 1, ceil_mode=True).backward(torch.ones(output.shape))
    grad = kernels.max_pool2d_backward(torch.ones_like(output), argmax, list(x.shape), *window)
    assert torch.equal(grad.cpu(), x_leaf.grad)


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


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, kernel_size, stride, padding, dilation, ceil_mode", SHAPES[2:],
                         ids=SHAPE_IDS[2:])
def test_reference_matches_pytorch(shape, kernel_size, stride, padding, dilation, ceil_mode,
                                   layout):
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x.contiguous(memory_format=LAYOUTS[layout]).requires_grad_()
    output, argmax = reference.max_pool2d_forward(x, *window)
    torch_output = F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode)
    assert torch.equal(output, torch_output)
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64)
    (expected,) = torch.autograd.grad(torch_output, x, grad_output)
    actual = reference.max_pool2d_backward(grad_output, argmax, list(shape), *window)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation", [
    (55, 3, 2, 0, 1), (54, 3, 2, 0, 1), (7, 2, 2, 1, 1), (10, 3, 2, 1, 1), (9, 4, 3, 2, 1),
    (5, 5, 1, 2, 1), (11, 3, 2, 0, 2), (12, 3, 2, 1, 3), (9, 2, 3, 1, 4)])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_output_size_is_torch(size, kernel, stride, padding, dilation, ceil_mode):
    x = torch.zeros(1, 1, size, size)
    expected = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode).shape[-1]
    assert kernels.output_size(size, kernel, stride, padding, dilation, ceil_mode) == expected


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, kernel_size, stride, padding, dilation, ceil_mode",
                         [SHAPES[2], SHAPES[7], SHAPES[9], SHAPES[14]],
                         ids=[SHAPE_IDS[2], SHAPE_IDS[7], SHAPE_IDS[9], SHAPE_IDS[14]])
def test_bf16_forward_is_bit_exact(shape, kernel_size, stride, padding, dilation, ceil_mode,
                                   layout, device, poisoned):
    # The forward compares bf16 in float32, widened and narrowed by moving bits (integer
    # ops, exact in the interpreter too, so this runs on the CPU): every value comes back
    # bit for bit, signed zeros included, and ties go to the first tap.
    window = (kernel_size, stride, padding, dilation, ceil_mode)
    gen = torch.Generator().manual_seed(13)
    x = torch.randint(-2, 3, shape, generator=gen).to(torch.bfloat16) * 0.375
    x = torch.where(torch.rand(shape, generator=gen) < 0.3, -x, x)  # -0.0 and 0.0 both
    x = x.to(device).contiguous(memory_format=LAYOUTS[layout])
    output, argmax = kernels.max_pool2d_forward(x, *window)
    assert poisoned.allocations >= 2
    expected, expected_argmax = reference.max_pool2d_forward(x.cpu(), *window)
    assert torch.equal(argmax.cpu(), expected_argmax)
    assert torch.equal(output.cpu().view(torch.int16), expected.view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_nan_wins_its_window_as_in_pytorch(dtype, device, poisoned):
    gen = torch.Generator().manual_seed(17)
    x = torch.randn(2, 16, 13, 13, generator=gen).to(dtype)
    x[torch.rand(x.shape, generator=gen) < 0.05] = float("nan")
    output, argmax = kernels.max_pool2d_forward(x.to(device), [3, 3], [2, 2])
    expected, expected_argmax = reference.max_pool2d_forward(x, [3, 3], [2, 2])
    assert torch.equal(argmax.cpu(), expected_argmax)
    assert torch.equal(output.cpu().isnan(), expected.isnan()) and expected.isnan().any()
    assert torch.equal(output.cpu().nan_to_num(), expected.nan_to_num())


def test_the_papers_windows_take_the_backward_in_blocks_of_two():
    """3x3 windows at stride 2, undilated: max_pool2d_backward_3s2_kernel (AlexNet's three
    pools, and SHAPES' padded and ceil-mode ones); any other window the general kernel."""
    assert kernels._blocks_of_two([3, 3], [2, 2], [1, 1])
    assert not kernels._blocks_of_two([3, 3], [2, 2], [2, 2])
    assert not kernels._blocks_of_two([3, 2], [2, 2], [1, 1])
    assert not kernels._blocks_of_two([3, 3], [1, 1], [1, 1])


def test_windows_inside_the_input_are_told_apart():
    # The forward drops its per-tap bounds tests where every window lies in the input.
    assert kernels._inside(55, 27, 3, 2, 0, 1)  # pool1
    assert kernels._inside(13, 6, 3, 2, 0, 1)  # pool5
    assert not kernels._inside(54, kernels.output_size(54, 3, 2, 0, 1, True), 3, 2, 0, 1)
    assert not kernels._inside(10, kernels.output_size(10, 3, 2, 1, 1, False), 3, 2, 1, 1)
    assert kernels._inside(11, kernels.output_size(11, 3, 2, 0, 2, False), 3, 2, 0, 2)
