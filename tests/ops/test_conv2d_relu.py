"""kernels/conv2d_relu.py against its PyTorch reference, and the reference against autograd."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import alexnet_triton.kernels as kernel_package
from alexnet_triton.kernels import conv2d_relu as kernels
from alexnet_triton.kernels.reference import conv2d_relu as reference
from helpers import PRECISIONS, assert_close, assert_precision_close, tolerance, use_precision


@dataclass(frozen=True)
class Conv:
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    stride: tuple
    padding: tuple
    groups: int
    bias: bool = True

    @property
    def input_size(self) -> list[int]:
        return [self.n, self.c, self.h, self.w]

    @property
    def weight_size(self) -> list[int]:
        return [self.k, self.c // self.groups, self.r, self.s]

    @property
    def output_size(self) -> list[int]:
        p = (self.h + 2 * self.padding[0] - self.r) // self.stride[0] + 1
        q = (self.w + 2 * self.padding[1] - self.s) // self.stride[1] + 1
        return [self.n, self.k, p, q]

    def reduction(self, gemm: str) -> int:
        """The longest sum of products behind one element of each GEMM's result."""
        if gemm == "forward":
            return self.c // self.groups * self.r * self.s
        if gemm == "backward_input":  # the taps of one stride phase
            taps = -(-self.r // self.stride[0]) * -(-self.s // self.stride[1])
            return self.k // self.groups * taps
        n, _, p, q = self.output_size
        return n * p * q


# AlexNet's layers at their real channel counts. conv1 runs on a 63x63 image (15x15 out)
# for all three passes; at its real 224x224 (55x55 out) only the forward and weight
# gradient, since nothing needs the image's gradient and the interpreter would take 20 s.
ALEXNET = {
    "conv1-63": Conv(1, 3, 63, 63, 96, 11, 11, (4, 4), (2, 2), 1),
    "conv2-27": Conv(1, 96, 27, 27, 256, 5, 5, (1, 1), (2, 2), 2),
    "conv3-13": Conv(2, 256, 13, 13, 384, 3, 3, (1, 1), (1, 1), 1),
    "conv4-13": Conv(1, 384, 13, 13, 384, 3, 3, (1, 1), (1, 1), 2),
    "conv5-13": Conv(2, 384, 13, 13, 256, 3, 3, (1, 1), (1, 1), 2),
}
CONV1_224 = Conv(1, 3, 224, 224, 96, 11, 11, (4, 4), (2, 2), 1)
# Odd sizes: batches and widths that are not multiples of any tile, non-square strides and
# padding, groups 3, no bias, kernels narrower than the stride (input-gradient phases
# that no tap reaches), a kernel as large as the padded input.
ODD = {
    "odd-groups3-nobias": Conv(2, 6, 9, 7, 9, 3, 2, (2, 3), (1, 0), 3, bias=False),
    "stride2": Conv(3, 5, 11, 10, 7, 3, 3, (2, 2), (1, 1), 1),
    "1x1-stride2-nobias": Conv(2, 4, 5, 6, 6, 1, 1, (2, 2), (0, 0), 1, bias=False),
    "2x1-stride3x2": Conv(2, 4, 8, 7, 6, 2, 1, (3, 2), (1, 0), 2),
    "stride4-pad2": Conv(2, 3, 19, 17, 20, 5, 7, (4, 4), (2, 3), 1),
    "kernel-covers-input": Conv(3, 4, 4, 3, 5, 6, 5, (1, 1), (1, 1), 1),
    # Channels-last blocks: channels per group not a multiple of the channel block (nor of
    # 8, so no 16-byte rows), with and without groups; the folded few-channel path with
    # conv1's 11x11 stride-4 kernel on a small image and channels not a multiple of 4.
    "c20-stride2x1": Conv(2, 20, 6, 7, 12, 3, 3, (2, 1), (1, 1), 1),
    "groups2-c21": Conv(2, 42, 5, 6, 10, 3, 3, (1, 1), (1, 1), 2),
    "conv1-like-c5": Conv(2, 5, 19, 18, 9, 11, 11, (4, 4), (2, 2), 1),
    # 2 x 8 x 8 = 128 output pixels and 16 channels: whole tiles of the interpreter's blocks,
    # the weight gradient's unmasked (EVEN_K, EVEN_N) path.
    "whole-tiles": Conv(2, 16, 8, 8, 16, 3, 3, (1, 1), (1, 1), 1),
}
SHAPES = {**ALEXNET, **ODD}




def conv_inputs(conv: Conv, dtype: torch.dtype, device: torch.device, seed: int = 0):
    """Zero-mean input, weight and bias, scaled so about half the pre-activations are negative."""
    generator = torch.Generator().manual_seed(seed)
    fan_in = conv.weight_size[1] * conv.r * conv.s
    x = torch.randn(conv.input_size, generator=generator, dtype=torch.float64)
    weight = torch.randn(conv.weight_size, generator=generator, dtype=torch.float64) / fan_in**0.5
    bias = (torch.randn(conv.k, generator=generator, dtype=torch.float64) * 0.1
            if conv.bias else None)
    return tuple(None if t is None else t.to(device=device, dtype=dtype) for t in (x, weight, bias))


def float64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.double()


def output_and_grad(conv: Conv, x, weight, bias, seed: int = 1):
    """The ReLU output that the backward reads its mask from, and a random grad_output."""
    output = reference.conv2d_relu_forward(float64(x), float64(weight), float64(bias),
                                           list(conv.stride), list(conv.padding), conv.groups)
    generator = torch.Generator().manual_seed(seed)
    grad_output = torch.randn(output.shape, generator=generator, dtype=torch.float64)
    return output.to(x.dtype), grad_output.to(device=x.device, dtype=x.dtype)


def check_forward(conv: Conv, precision: str, device, poisoned,
                  tensor_descriptors: bool | None = None) -> None:
    dtype = PRECISIONS[precision]
    x, weight, bias = conv_inputs(conv, dtype, device)
    stride, padding = list(conv.stride), list(conv.padding)
    expected = reference.conv2d_relu_forward(float64(x), float64(weight), float64(bias), stride,
                                             padding, conv.groups)
    actual = kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                         tensor_descriptors=tensor_descriptors)
    assert poisoned.allocations > 0
    assert_precision_close(actual, expected, precision, conv.reduction("forward"), "output")
    # The ReLU must matter: a fair share of the outputs is clipped, a fair share is not.
    assert 0.25 < float((expected == 0).double().mean()) < 0.75


def check_backward_input(conv: Conv, precision: str, device, poisoned,
                         tensor_descriptors: bool | None = None) -> None:
    dtype = PRECISIONS[precision]
    x, weight, bias = conv_inputs(conv, dtype, device)
    output, grad_output = output_and_grad(conv, x, weight, bias)
    stride, padding = list(conv.stride), list(conv.padding)
    expected = reference.conv2d_relu_backward_input(
        float64(grad_output), float64(output), float64(weight), conv.input_size, stride, padding,
        conv.groups)
    actual = kernels.conv2d_relu_backward_input(grad_output, output, weight, conv.input_size,
                                                stride, padding, conv.groups,
                                                tensor_descriptors=tensor_descriptors)
    assert poisoned.allocations > 0
    assert_precision_close(actual, expected, precision, conv.reduction("backward_input"),
                           "grad_input")


def check_backward_weight(conv: Conv, precision: str, device, poisoned) -> None:
    dtype = PRECISIONS[precision]
    x, weight, bias = conv_inputs(conv, dtype, device)
    output, grad_output = output_and_grad(conv, x, weight, bias)
    stride, padding = list(conv.stride), list(conv.padding)
    expected_weight, expected_bias = reference.conv2d_relu_backward_weight(
        float64(grad_output), float64(output), float64(x), conv.weight_size, stride, padding,
        conv.groups)
    grad_weight, grad_bias = kernels.conv2d_relu_backward_weight(
        grad_output, output, x, conv.weight_size, stride, padding, conv.groups)
    assert poisoned.allocations > 0
    assert_precision_close(grad_weight, expected_weight, precision,
                           conv.reduction("backward_weight"), "grad_weight")
    # A plain sum of grad_output as loaded: no tensor-core products, so never tf32.
    assert_close(grad_bias, expected_bias.to(dtype), tolerance(dtype), "grad_bias")


@pytest.fixture
def launches(monkeypatch):
    """The keyword arguments of every kernel launch the conv launchers make, in order, but
    the copy of a few-channel input (input_layout), which precedes conv1's GEMMs."""
    recorded = []
    launchable = kernels.launchable

    class Recording:
        def __init__(self, kernel):
            self.kernel = launchable(kernel)
            self.folds = kernel in (kernels.fold_pixels_kernel, kernels.space_to_depth_kernel)

        def __getitem__(self, grid):
            launch = self.kernel[grid]

            def record(*args, **kwargs):
                if not self.folds:
                    recorded.append(kwargs)
                return launch(*args, **kwargs)
            return record

    monkeypatch.setattr(kernels, "launchable", Recording)
    return recorded


# The weight tiles come through TMA descriptors by default (the interpreter emulates them)
# wherever the weight's rows are whole 16-byte multiples: the forward's rows are a tap's
# C_TAP channels, the input gradient's a group's kernels. Elsewhere the plain loads.
ALIGNED_GROUPS = {"groups2-c16-k20": Conv(1, 32, 7, 7, 40, 3, 3, (1, 1), (1, 1), 2)}
WEIGHT_PATHS = {  # name, precision: (forward, backward_input) through descriptors
    ("whole-tiles", "float32"): (True, True),  # 16 channels, 16 kernels: 64-byte rows
    ("c20-stride2x1", "float32"): (True, True),  # 20 channels: 80 bytes; 12 kernels: 48
    ("groups2-c21", "float32"): (False, False),  # 21 channels: 84 bytes; 5 kernels: 20
    ("groups2-c21", "float64"): (False, False),  # 168 bytes; 40
    ("odd-groups3-nobias", "float64"): (True, False),  # 2 channels: 16 bytes; 3 kernels: 24
    ("conv1-like-c5", "float32"): (True, False),  # folded: 96-wide taps; 9 kernels: 36 bytes
    ("conv2-27", "float32"): (True, True),  # 48 channels, 128 kernels per group
    # 3 channels (conv1's): the input gradient's plain loads, though its 20 kernels make
    # 80-byte rows (with descriptors conv1's spills)
    ("stride4-pad2", "float32"): (True, False),
    # groups of 16 channels (64 bytes) and 20 kernels (80), which end inside a column tile
    ("groups2-c16-k20", "float32"): (True, True),
    ("groups2-c16-k20", "float64"): (True, True),
}
NAMES = {conv: name for name, conv in {**SHAPES, **ALIGNED_GROUPS}.items()}


def assert_weight_path(conv: Conv, precision: str, launches: list, gemm: int) -> None:
    """The last launch took the WEIGHT_PATHS path (gemm 0: forward, 1: input gradient)."""
    paths = WEIGHT_PATHS.get((NAMES[conv], precision))
    if paths is not None:
        expected = paths[gemm] and kernels.tensor_descriptors_available()
        assert launches[-1]["W_DESCRIPTOR"] == expected


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("conv", SHAPES.values(), ids=SHAPES.keys())
def test_forward(conv, precision, device, poisoned, launches):
    use_precision(precision, device)
    check_forward(conv, precision, device, poisoned)
    assert_weight_path(conv, precision, launches, 0)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("conv", SHAPES.values(), ids=SHAPES.keys())
def test_backward_input(conv, precision, device, poisoned, launches):
    use_precision(precision, device)
    check_backward_input(conv, precision, device, poisoned)
    assert_weight_path(conv, precision, launches, 1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_aligned_groups(precision, device, poisoned, launches):
    """Groups whose kernels end inside a column tile, through descriptors by default."""
    use_precision(precision, device)
    conv = ALIGNED_GROUPS["groups2-c16-k20"]
    check_forward(conv, precision, device, poisoned)
    assert_weight_path(conv, precision, launches, 0)
    check_backward_input(conv, precision, device, poisoned)
    assert_weight_path(conv, precision, launches, 1)


# A 32-bit forward's group of 65 to 96 kernels takes one 64-wide tile and a 32-wide tail
# (TAIL_N): 80 per group leaves 16 of the tail's columns past the group's end, and the
# second group's tail starts at kernel 80 + 64.
TAILS = {"groups2-k80": Conv(2, 12, 9, 8, 160, 3, 3, (1, 1), (1, 1), 2),
         "k96-stride2-pad0": Conv(1, 5, 13, 11, 96, 3, 5, (2, 2), (0, 0), 1)}


@pytest.mark.parametrize("tensor_descriptors", [None, False], ids=["default", "plain-loads"])
@pytest.mark.parametrize("conv", TAILS.values(), ids=TAILS.keys())
def test_forward_tail_of_32_kernels(conv, tensor_descriptors, device, poisoned, launches):
    use_precision("float32", device)
    assert kernels._tail_n(conv.k // conv.groups, 64, 4, flat=False) == 32
    check_forward(conv, "float32", device, poisoned, tensor_descriptors=tensor_descriptors)
    assert launches[-1]["BLOCK_N"] == 64


# Without padding (conv1's folded copy, a convolution that pads nothing) the forward lays
# its reduction flat over the taps (FLAT_TAPS), a block of channels spanning taps, where
# blocks of one tap's channels take more steps: conv1's 9 taps of 48 channels (80 for 5
# channels), and 9 taps of a group's 24 channels in blocks of 32 (7 blocks, not 9), the
# second group's columns 24 channels on. Forced off, the same launches take a tap at a time.
FLAT = {name: SHAPES[name] for name in ("conv1-63", "conv1-like-c5")}
FLAT["groups2-c24-pad0"] = Conv(2, 48, 7, 9, 20, 3, 3, (1, 1), (0, 0), 2)


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "tap-at-a-time"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("conv", FLAT.values(), ids=FLAT.keys())
def test_forward_flat_taps(conv, precision, flat, device, poisoned, monkeypatch):
    use_precision(precision, device)
    decided = []
    rule = kernels._flat_reduction

    def flat_reduction(*args):
        decided.append(rule(*args))
        return decided[-1] and flat
    monkeypatch.setattr(kernels, "_flat_reduction", flat_reduction)
    check_forward(conv, precision, device, poisoned)
    assert decided and all(decided)


def test_which_forwards_lay_their_taps_flat():
    assert kernels._flat_reduction(True, 9, 48, 64, 16)  # conv1 in bf16: 7 blocks, not 9
    assert not kernels._flat_reduction(True, 9, 48, 16, 16)  # 27 blocks either way
    assert not kernels._flat_reduction(False, 9, 48, 64, 16)  # padding: a mask per column
    assert not kernels._flat_reduction(True, 1, 48, 64, 16)  # one tap
    assert not kernels._flat_reduction(True, 9, 128, 64, 16)  # whole blocks per tap
    assert not kernels._flat_reduction(True, 9, 24, 64, 16)  # runs of 16 would cross taps


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("conv", SHAPES.values(), ids=SHAPES.keys())
def test_backward_weight(conv, precision, device, poisoned):
    use_precision(precision, device)
    check_backward_weight(conv, precision, device, poisoned)


# The plain loads on request, where the default takes descriptors: aligned groups, conv1's
# folded taps, channels that are not a multiple of the channel block, a stride larger than
# the kernel.
PLAIN_LOADS = {
    **ALIGNED_GROUPS,
    **{name: SHAPES[name] for name in ("conv1-like-c5", "c20-stride2x1", "stride4-pad2")},
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("conv", PLAIN_LOADS.values(), ids=PLAIN_LOADS.keys())
def test_plain_weight_loads(conv, precision, device, poisoned, launches):
    use_precision(precision, device)
    check_forward(conv, precision, device, poisoned, tensor_descriptors=False)
    check_backward_input(conv, precision, device, poisoned, tensor_descriptors=False)
    assert [launch["W_DESCRIPTOR"] for launch in launches] == [False, False]


def test_descriptors_refused_where_impossible(device, monkeypatch, launches):
    """tensor_descriptors=True says why it cannot be; None then takes the plain loads."""
    conv = SHAPES["groups2-c21"]  # 21 channels, 5 kernels per group
    x, weight, bias = conv_inputs(conv, torch.float32, device)
    output, grad_output = output_and_grad(conv, x, weight, bias)
    stride, padding = list(conv.stride), list(conv.padding)
    with pytest.raises(ValueError, match=r"tensor_descriptors=True.*21 x 4 = 84 bytes"):
        kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                    tensor_descriptors=True)
    with pytest.raises(ValueError, match=r"tensor_descriptors=True.*5 x 4 = 20 bytes"):
        kernels.conv2d_relu_backward_input(grad_output, output, weight, conv.input_size, stride,
                                           padding, conv.groups, tensor_descriptors=True)
    # Aligned rows (16 float64 channels) from a base 8 bytes off: a channels-last weight
    # whose [K, R, S, C] memory starts one element into its allocation.
    conv = SHAPES["whole-tiles"]
    x, weight, bias = conv_inputs(conv, torch.float64, device)
    k, c, r, s = conv.weight_size
    shifted = torch.empty(k * r * s * c + 1, dtype=weight.dtype, device=device)[1:]
    shifted = shifted.view(k, r, s, c).permute(0, 3, 1, 2)
    shifted.copy_(weight)
    stride, padding = list(conv.stride), list(conv.padding)
    expected = reference.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    tol = tolerance(torch.float64)
    with pytest.raises(ValueError, match=r"tensor_descriptors=True.*base address"):
        kernels.conv2d_relu_forward(x, shifted, bias, stride, padding, conv.groups,
                                    tensor_descriptors=True)
    actual = kernels.conv2d_relu_forward(x, shifted, bias, stride, padding, conv.groups)
    assert_close(actual, expected, tol, "output")
    assert [launch["W_DESCRIPTOR"] for launch in launches] == [False]
    # A Triton or a GPU without descriptors.
    monkeypatch.setattr(kernels, "tensor_descriptors_available", lambda: False)
    with pytest.raises(ValueError, match=r"tensor_descriptors=True.*no TMA tensor descriptors"):
        kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                    tensor_descriptors=True)
    actual = kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    assert_close(actual, expected, tol, "output")
    assert [launch["W_DESCRIPTOR"] for launch in launches] == [False, False]


def test_descriptor_blocks_meet_tma_rules():
    """Every weight tile a descriptor may copy: rows of >= 16 bytes in the narrowest dtype
    (bf16) and no block dimension over 256; the choice is in each autotuner's key."""
    configs = kernels._forward_autotuned.configs + kernels._backward_input_autotuned.configs
    for block_n, block_k in [(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in configs]:
        assert block_k * 2 >= 16 and block_n <= 256 and block_k <= 256
    for tuner in (kernels._forward_autotuned, kernels._backward_input_autotuned):
        assert "W_DESCRIPTOR" in tuner.keys


@pytest.mark.parametrize("precision", PRECISIONS)
def test_conv1_full_size(precision, device, poisoned):
    """conv1 on a 224x224 image: 55x55 outputs, weight gradient reduced over 3025 pixels."""
    use_precision(precision, device)
    check_forward(CONV1_224, precision, device, poisoned)
    check_backward_weight(CONV1_224, precision, device, poisoned)


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("conv", [
    Conv(2, 8, 20, 20, 12, 3, 3, (1, 1), (1, 1), 2),
    # 289 output pixels in splits of 128, 128 and 33; 64 channels a tap, two taps a program;
    # 27,648 weight elements: split_sum_kernel sums the weight in 7 programs of 4096 and the
    # bias in 1
    Conv(1, 64, 17, 17, 48, 3, 3, (1, 1), (1, 1), 1),
], ids=["groups2", "paired-taps"])
def test_backward_weight_split(conv, precision, device, poisoned, monkeypatch, launches):
    """The split-K path the GPU takes: float32 partial sums per split, the weight's and
    the bias's summed afterwards by one launch (split_sum_kernel).

    The interpreter runs one split; force three, the last one shorter than the others.
    """
    monkeypatch.setattr(kernels, "_weight_grad_split", lambda tiles, npq, device: 3)
    check_backward_weight(conv, precision, device, poisoned)
    assert [sorted(launch) == ["ACC_DTYPE", "BLOCK"] for launch in launches] == [False, True]


# The masked grad_output the weight gradient hands the input gradient (what the model's
# backward runs for every conv but conv1): odd sizes, groups, strides, and three splits.
MASKED = {name: SHAPES[name] for name in ("odd-groups3-nobias", "stride2", "2x1-stride3x2")}


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("conv", MASKED.values(), ids=MASKED.keys())
def test_masked_gradient_feeds_the_input_gradient(conv, precision, split, device, poisoned,
                                                  monkeypatch, launches):
    use_precision(precision, device)
    monkeypatch.setattr(kernels, "_weight_grad_split", lambda tiles, npq, device: split)
    dtype = PRECISIONS[precision]
    x, weight, bias = conv_inputs(conv, dtype, device)
    output, grad_output = output_and_grad(conv, x, weight, bias)
    stride, padding = list(conv.stride), list(conv.padding)
    grad_weight, grad_bias, masked = kernels.conv2d_relu_backward_weight(
        grad_output, output, x, conv.weight_size, stride, padding, conv.groups,
        masked_grad_output=True)
    # a select: exact, and every element written (poisoned: NaN where not)
    expected_masked = torch.where(output > 0, grad_output, torch.zeros_like(grad_output))
    assert torch.equal(masked, expected_masked)
    assert masked.is_contiguous(memory_format=torch.channels_last)
    assert (grad_output != 0).any() and (masked == 0).any() and (masked != 0).any()
    expected_weight, expected_bias = reference.conv2d_relu_backward_weight(
        float64(grad_output), float64(output), float64(x), conv.weight_size, stride, padding,
        conv.groups)
    assert_precision_close(grad_weight, expected_weight, precision,
                           conv.reduction("backward_weight"), "grad_weight")
    assert_close(grad_bias, expected_bias.to(dtype), tolerance(dtype), "grad_bias")
    grad_input = kernels.conv2d_relu_backward_input(masked, None, weight, conv.input_size,
                                                    stride, padding, conv.groups)
    assert launches[-1]["MASKED"] is True
    expected_input = reference.conv2d_relu_backward_input(
        float64(grad_output), float64(output), float64(weight), conv.input_size, stride,
        padding, conv.groups)
    assert_precision_close(grad_input, expected_input, precision,
                           conv.reduction("backward_input"), "grad_input")


# A masked grad_output's 33 to 48 channels a group take a 32-wide tile and a 16-wide tail
# (TAIL_N), whose weights come through plain loads whatever tensor_descriptors says:
# conv2 itself (48 a group, 5 x 5 taps), 40 a group (8 of the tail's columns past the
# group's end), and a non-square kernel and padding (conv2 in float32 only: 4 s a case
# under the interpreter).
TAILS_16 = {"groups2-c40-k12": Conv(3, 80, 7, 9, 24, 3, 3, (1, 1), (1, 1), 2),
            "c36-3x5-pad1x2": Conv(2, 36, 6, 5, 16, 3, 5, (1, 1), (1, 2), 1)}
TAIL_16_CASES = [pytest.param(conv, precision, id=f"{name}-{precision}")
                 for name, conv in TAILS_16.items() for precision in ("float32", "float64")]
TAIL_16_CASES.append(pytest.param(ALEXNET["conv2-27"], "float32", id="conv2-27-float32"))


@pytest.mark.parametrize("conv, precision", TAIL_16_CASES)
def test_masked_input_gradient_tail_of_16_channels(conv, precision, device, poisoned,
                                                   launches):
    use_precision(precision, device)
    dtype = PRECISIONS[precision]
    x, weight, bias = conv_inputs(conv, dtype, device)
    output, grad_output = output_and_grad(conv, x, weight, bias)
    masked = torch.where(output > 0, grad_output, torch.zeros_like(grad_output))
    stride, padding = list(conv.stride), list(conv.padding)
    grad_input = kernels.conv2d_relu_backward_input(masked, None, weight, conv.input_size,
                                                    stride, padding, conv.groups)
    assert poisoned.allocations > 0
    assert (launches[-1]["BLOCK_N"], launches[-1]["TAIL_N"]) == (32, 16)
    expected = reference.conv2d_relu_backward_input(
        float64(grad_output), float64(output), float64(weight), conv.input_size, stride,
        padding, conv.groups)
    assert_precision_close(grad_input, expected, precision, conv.reduction("backward_input"),
                           "grad_input")


# The weight gradient's shifted rows (SHIFTED_ROWS: stride 1, the output the input's size)
# against the stepped pixels they replace, on the same inputs: the taps' bits at both
# edges, groups, a non-square kernel and padding, 5 x 5 taps, and tap counts whose last
# pair's second tap is past the end (9, 15 and 25 taps in pairs).
# (Fewer channels a tap lay the taps flat, FLAT_TAPS, which keeps the stepped pixels.)
SHIFTED = {"groups2-c64": Conv(2, 128, 5, 6, 10, 3, 3, (1, 1), (1, 1), 2),
           "c64-3x5-pad1x2": Conv(2, 64, 6, 5, 16, 3, 5, (1, 1), (1, 2), 1),
           "c64-5x5-pad2": Conv(1, 64, 5, 6, 8, 5, 5, (1, 1), (2, 2), 1)}


@pytest.mark.parametrize("shifted", [True, False], ids=["shifted", "stepped"])
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("conv", SHIFTED.values(), ids=SHIFTED.keys())
def test_weight_gradient_rows_at_a_shift(conv, precision, shifted, device, poisoned,
                                         monkeypatch, launches):
    use_precision(precision, device)
    if not shifted:
        monkeypatch.setattr(kernels, "_shifted_rows", lambda *args: False)
    check_backward_weight(conv, precision, device, poisoned)
    assert launches[0]["SHIFTED_ROWS"] is shifted


def test_taps_in_image_records():
    """Bit r S + s of word 0: tap (r, s) of output pixel (p, q) inside the input, at stride 1."""
    p, q, r, s, padding = 4, 5, 3, 4, [1, 2]
    records = kernels._taps_in_image(p, q, r, s, padding, (4, 5), torch.device("cpu"))
    assert records.shape == (p * q, 4) and records.dtype == torch.int32
    assert (records[:, 1:] == 0).all()
    for pq in range(p * q):
        for tap in range(r * s):
            h = pq // q - padding[0] + tap // s
            w = pq % q - padding[1] + tap % s
            assert bool(records[pq, 0] >> tap & 1) == (0 <= h < 4 and 0 <= w < 5), (pq, tap)


def test_autotune_candidates_per_dtype_and_width(monkeypatch):
    """What a GPU's autotuner may time: float64 only its one tile, 16 and 32 bits never it
    on Hopper; narrower column tiles only where they pad a group's width less than 128
    (conv4's 192: 64; the input gradient's conv2's 48: 32 + 16), the input gradient's only
    for a grad_output masked already; on a GPU with less shared memory, the small tiles
    besides."""
    prune = kernels._backward_input_autotuned.early_config_prune
    configs = kernels._backward_input_autotuned.configs

    def tiles(dtype, width, masked):
        named = {"dy_ptr": torch.empty(1, dtype=dtype), "C_GROUP": width}
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"],
                 c.kwargs.get("TAIL_N", 0)) for c in prune(configs, named, MASKED=masked)]

    # conv2's 48 channels a group: 32 + 16 columns (TAIL_N), masked only
    assert tiles(torch.bfloat16, 48, True) == tiles(torch.float32, 40, True) == [
        (128, 32, 64, 16)]
    assert tiles(torch.bfloat16, 48, False) == [(128, 128, 64, 0)]
    assert tiles(torch.float32, 192, True) == [(128, 64, 64, 0)]  # 48 pads no less: the wider
    assert tiles(torch.bfloat16, 256, True) == [(128, 128, 64, 0)]  # 64 pads no less
    assert tiles(torch.float64, 48, True) == tiles(torch.float64, 256, False) == [
        (64, 64, 32, 0)]
    monkeypatch.setattr(kernel_package, "less_shared_memory_than_hopper", lambda: True)
    assert tiles(torch.float32, 48, False) == [(128, 128, 64, 0), (128, 64, 32, 0),
                                               (64, 64, 32, 0)]
    assert tiles(torch.float64, 48, False) == [(64, 64, 32, 0)]
    monkeypatch.undo()
    forward = kernels._forward_autotuned

    def forward_tiles(dtype, width, depth, in_image=False):
        named = {"x_ptr": torch.empty(1, dtype=dtype), "K_GROUP": width, "C_TAP": depth}
        return {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in
                forward.early_config_prune(forward.configs, named, IN_IMAGE=in_image,
                                           TAPS_H=3, TAPS_W=3, X_ALIGN=16)}

    assert forward_tiles(torch.bfloat16, 192, 192) == {(64, 64)}  # conv4
    # conv1's folded copy: 9 taps of 48 channels, 96 kernels. Laid flat (no padding), a
    # 64-wide tile's 32-kernel tail comes in bf16 too; a tap at a time, only in 32 bits.
    assert forward_tiles(torch.bfloat16, 96, 48, in_image=True) == {(64, 64)}
    assert forward_tiles(torch.bfloat16, 96, 48) == {(128, 16)}
    assert forward_tiles(torch.float32, 96, 48, in_image=True) == {(64, 16)}
    assert forward_tiles(torch.float32, 128, 256) == {(128, 64)}  # the widest block
    weight = kernels._backward_weight_autotuned
    for dtype, stages in ((torch.bfloat16, {3, 2}), (torch.float32, {3, 2})):
        named = {"dy_ptr": torch.empty(1, dtype=dtype)}
        kept = weight.early_config_prune(weight.configs, named, SHIFTED_ROWS=False)
        assert {c.num_stages for c in kept} == stages and kept[0].num_stages == 3
        assert all(c.kwargs["BLOCK_M"] == 128 for c in kept)
    # conv3 to conv5 in 16 bits: 64 kernel rows over shifted rows; in 32 bits as before
    shifted = [(c.kwargs["BLOCK_M"], c.num_warps) for c in weight.early_config_prune(
        weight.configs, {"dy_ptr": torch.empty(1, dtype=torch.bfloat16)}, SHIFTED_ROWS=True)]
    assert shifted == [(64, 4)]
    assert [c.kwargs["BLOCK_M"] for c in weight.early_config_prune(
        weight.configs, {"dy_ptr": torch.empty(1, dtype=torch.float32)},
        SHIFTED_ROWS=True)] == [128, 128, 128]


def test_weight_gradient_splits_against_waves():
    """Split-K of the weight gradient at AlexNet's batch-128 shapes on 132 SMs (programs per
    split: GEMM tiles and bias programs; 128-pixel blocks to reduce): at least one program
    per SM, whole blocks per split, and a critical path (programs on the busiest SM x blocks
    of a split and its fixed cost) no longer than the old rule's (two programs per SM)."""
    sms = 132
    for tiles, steps in ((7, 3025), (28, 729), (57, 169), (76, 169), (38, 169)):
        split = kernels.weight_grad_splits(tiles, steps, sms)
        chunk = -(-steps // split)
        assert -(-steps // chunk) == split and tiles * split >= sms and chunk >= 8
        old = min(-(-2 * sms // tiles), -(-steps // 8))
        old_chunk = -(-steps // old)
        old = -(-steps // old_chunk)

        def path(s, c):
            return -(-tiles * s // sms) * (c + kernels._PROGRAM_BLOCKS)
        assert path(split, chunk) <= path(old, old_chunk), (tiles, steps)
    # conv3: 9 splits, 513 programs, 4 of 19 blocks on the busiest SM, where the old rule's
    # 5 left 3 of 34
    assert kernels.weight_grad_splits(57, 169, sms) == 9
    assert kernels.weight_grad_splits(10, 5, sms) == 1  # too short to split


def test_weight_gradients_pair_taps_where_that_takes_fewer_column_tiles():
    """Two taps of 64 columns per program, not one of 128, where that covers a layer's
    taps x channels in fewer tiles: conv2's 48 channels (13 tiles, not 25), conv4's and
    conv5's 192 (3 x 5 = 15, not 2 x 9 = 18), but not conv3's 256 (20 against 18), nor one
    tap."""
    assert kernels._pairs_taps(48, 128, 25)
    assert kernels._pairs_taps(192, 128, 9)
    assert not kernels._pairs_taps(256, 128, 9)
    assert not kernels._pairs_taps(384, 128, 9)
    assert not kernels._pairs_taps(48, 128, 1)
    assert kernels._pairs_taps(21, 64, 9)  # the interpreter's block for 21 channels


def test_which_weight_gradients_lay_their_taps_side_by_side():
    """FLAT_TAPS where it takes at most 7/8 of the column tiles of one or two taps per
    program: conv1's 9 taps of 4 x 4 pixels (4 against 5), conv2's 25 taps of 48 (10 against 13),
    not conv4's 9 of 192 (14 against 15), conv3's 9 of 256 (18 either way) nor one tap;
    FLAT_MASK where there is padding (conv2: a mask per column). The shapes above that take
    them check their results against the reference."""
    def layout(conv):
        _, _, taps_h, taps_w, c_tap, _, pad, _, _ = kernels._channels_last_input(
            torch.randn(1, conv.c, conv.h, conv.w), conv.weight_size, list(conv.stride),
            list(conv.padding), conv.groups)
        args = {"C_TAP": c_tap, "BLOCK_N": 128, "TAPS_H": taps_h, "TAPS_W": taps_w,
                "pad_h": pad[0], "pad_w": pad[1]}
        heuristics = kernels._backward_weight_even.values
        return (heuristics["FLAT_TAPS"](args), heuristics["FLAT_MASK"](args),
                kernels._columns(args))
    assert layout(ALEXNET["conv1-63"]) == (True, False, 432)  # 3 x 3 blocks of 48: no pad
    assert layout(ALEXNET["conv2-27"]) == (True, True, 1200)
    assert layout(ALEXNET["conv4-13"]) == (False, False, 192)
    assert layout(ALEXNET["conv3-13"]) == (False, False, 256)
    assert layout(SHAPES["1x1-stride2-nobias"])[0] is False
    assert layout(SHAPES["whole-tiles"]) == (True, True, 144)  # 9 taps of 16


def test_strided_input(device, poisoned):
    """A channels-last input and a transposed weight give the same output as contiguous ones."""
    conv = ALEXNET["conv1-63"]
    x, weight, bias = conv_inputs(conv, torch.float32, device)
    stride, padding = list(conv.stride), list(conv.padding)
    expected = kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    strided_weight = weight.transpose(2, 3).contiguous().transpose(2, 3)
    actual = kernels.conv2d_relu_forward(x.to(memory_format=torch.channels_last), strided_weight,
                                         bias, stride, padding, conv.groups)
    assert_close(actual, expected, 0.0, "output")


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "channels_last"])
@pytest.mark.parametrize("shape,kernel,stride,padding,kind", [
    # conv1's channels, taps and stride: blocks of 4 x 4 pixels, 3 x 3 taps of 48
    ((2, 3, 19, 21), (11, 11), (4, 4), (2, 2), "space_to_depth"),
    # 5 channels in blocks of 2 x 2 (8 channels a pixel: 32); 1 in 2 x 4 (16), unpadded rows
    ((1, 5, 13, 12), (5, 5), (2, 2), (1, 1), "space_to_depth"),
    ((1, 1, 9, 20), (4, 8), (2, 4), (0, 3), "space_to_depth"),
    # unstrided: pixels of 8 channels (5 of them), unpadded columns; rows of two programs
    ((1, 5, 9, 7), (3, 5), (1, 1), (1, 0), "folded"),
    ((1, 3, 5, 260), (3, 3), (1, 1), (1, 5), "folded"),
], ids=["conv1-like", "c5-2x2", "c1-2x4", "c5", "wide"])
@pytest.mark.parametrize("precision", ["float32", "float64", "bfloat16"])
def test_the_copied_input_is_the_references(shape, kernel, stride, padding, kind,
                                            memory_format, precision, device, poisoned):
    """space_to_depth_kernel and fold_pixels_kernel write every element of the copy the
    kernels read (input_layout), as the reference lays it out: zero around the image and in
    the channels past C (which the zero-filled weight taps multiply), in either input
    layout. (The conv tests check the layouts against torch's convolution.)"""
    dtype = use_precision(precision, device)
    x = torch.randn(shape, dtype=dtype, device=device).contiguous(memory_format=memory_format)
    weight_size = [4, shape[1], *kernel]
    conv = (list(stride), list(padding), 1)
    layout, shape_out, *_ = kernels.input_layout(list(shape), weight_size, *conv)
    assert layout == kind
    copied = kernels.conv2d_relu_fold_input(x, weight_size, *conv)
    assert poisoned.allocations > 0
    assert list(copied.shape) == shape_out
    assert copied.is_contiguous(memory_format=torch.channels_last)
    assert_close(copied, reference.conv2d_relu_fold_input(x, weight_size, *conv), 0.0,
                 "copied input")
    if kind == "folded":  # the image moved by the padding into zeros
        n, c, h, w = shape
        expected = torch.zeros_like(copied.permute(0, 2, 3, 1))
        expected[:, padding[0]:padding[0] + h, padding[1]:padding[1] + w, :c] = (
            x.permute(0, 2, 3, 1))
        assert_close(copied.permute(0, 2, 3, 1), expected, 0.0, "folded input")


def test_a_folded_input_serves_the_forward_and_the_weight_gradient(device, poisoned):
    """Given conv2d_relu_fold_input's copy, the forward and the weight gradient fold
    nothing themselves and give what they give folding; a copy of another shape or layout,
    or one for a conv that is not folded, is refused."""
    conv = ALEXNET["conv1-63"]
    x, weight, bias = conv_inputs(conv, torch.float32, device)
    stride, padding = list(conv.stride), list(conv.padding)
    folded = kernels.conv2d_relu_fold_input(x, conv.weight_size, stride, padding, conv.groups)
    expected = kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    actual = kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                         folded_input=folded)
    assert_close(actual, expected, 0.0, "output")
    grad = torch.randn_like(expected)
    expected_grads = kernels.conv2d_relu_backward_weight(grad, expected, x, conv.weight_size,
                                                         stride, padding, conv.groups)
    folds = []
    fold = kernels.conv2d_relu_fold_input
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernels, "conv2d_relu_fold_input", lambda *a: folds.append(a) or fold(*a))
        grads = kernels.conv2d_relu_backward_weight(grad, expected, x, conv.weight_size, stride,
                                                    padding, conv.groups, folded_input=folded)
        kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                    folded_input=folded)
    assert folds == []
    for got, want, name in zip(grads, expected_grads, ("weight", "bias")):
        assert_close(got, want, 0.0, f"grad {name}")
    with pytest.raises(ValueError, match="folded_input"):
        kernels.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups,
                                    folded_input=folded.contiguous())
    with pytest.raises(ValueError, match="folded_input"):
        kernels.conv2d_relu_forward(x, weight, bias, stride, [1, 1], conv.groups,
                                    folded_input=folded)
    conv2 = SHAPES["groups2-c21"]
    x2, weight2, bias2 = conv_inputs(conv2, torch.float32, device)
    with pytest.raises(ValueError, match="do not fold"):
        kernels.conv2d_relu_forward(x2, weight2, bias2, list(conv2.stride),
                                    list(conv2.padding), conv2.groups, folded_input=folded)
    with pytest.raises(ValueError, match="not folded"):
        kernels.conv2d_relu_fold_input(x2, conv2.weight_size, list(conv2.stride),
                                       list(conv2.padding), conv2.groups)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", ["groups2-c21", "conv1-like-c5"])
def test_output_is_channels_last(name, memory_format, device, poisoned):
    """Either input layout gives the same values, written in channels_last (NHWC) memory."""
    conv = SHAPES[name]
    x, weight, bias = conv_inputs(conv, torch.float64, device)
    stride, padding = list(conv.stride), list(conv.padding)
    expected = reference.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    actual = kernels.conv2d_relu_forward(x.contiguous(memory_format=memory_format), weight,
                                         bias, stride, padding, conv.groups)
    assert actual.is_contiguous(memory_format=torch.channels_last)
    assert_close(actual, expected, tolerance(torch.float64), "output")


@pytest.mark.parametrize("conv", SHAPES.values(), ids=SHAPES.keys())
def test_reference_backward_matches_autograd(conv):
    """The oracle itself: the reference backward is autograd of the reference forward."""
    x, weight, bias = conv_inputs(conv, torch.float64, torch.device("cpu"))
    bias = torch.zeros(conv.k, dtype=torch.float64) if bias is None else bias
    x, weight, bias = (t.requires_grad_() for t in (x, weight, bias))
    stride, padding = list(conv.stride), list(conv.padding)
    output = reference.conv2d_relu_forward(x, weight, bias, stride, padding, conv.groups)
    grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64)
    output.backward(grad_output)
    output = output.detach()
    grad_input = reference.conv2d_relu_backward_input(grad_output, output, weight.detach(),
                                                      conv.input_size, stride, padding,
                                                      conv.groups)
    grad_weight, grad_bias = reference.conv2d_relu_backward_weight(
        grad_output, output, x.detach(), conv.weight_size, stride, padding, conv.groups)
    tol = tolerance(torch.float64)
    assert_close(grad_input, x.grad, tol, "grad_input")
    assert_close(grad_weight, weight.grad, tol, "grad_weight")
    assert_close(grad_bias, bias.grad, tol, "grad_bias")
