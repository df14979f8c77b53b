"""The fused FC-layer GEMMs of kernels/linear.py against kernels/reference/linear.py."""
import pytest
import torch
import triton

import alexnet_triton.kernels as kernel_package
from alexnet_triton.kernels import dropout as dropout_kernels
from alexnet_triton.kernels import linear as linear_kernels
from alexnet_triton.kernels.reference import linear as linear_reference
from alexnet_triton.kernels.reference.dropout import keep_mask
from helpers import PRECISIONS, assert_close, assert_precision_close, tolerance, use_precision


# (batch M, in_features K, out_features N): sizes that are not multiples of any tile, and
# fc6 (9216 -> 4096) with its output cut to 256 features so the interpreter stays quick.
SHAPES = {"odd": (5, 300, 77), "fc6-like": (2, 9216, 256)}
# A batch long enough to split grad_weight's reduction over it.
SPLIT_SHAPE = (40, 300, 77)

P = 0.5  # AlexNet's dropout




def _randn(generator, *shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(
        dtype=dtype, device=device)


def _layer(shape, dtype, device, seed=0):
    """input [M, K], weight [N, K] (nn.Linear's init scale), bias [N], grad_output [M, N]."""
    M, K, N = shape
    generator = torch.Generator().manual_seed(seed)
    input = _randn(generator, M, K, dtype=dtype, device=device)
    weight = _randn(generator, N, K, dtype=dtype, device=device, scale=K ** -0.5)
    bias = _randn(generator, N, dtype=dtype, device=device)
    grad_output = _randn(generator, M, N, dtype=dtype, device=device)
    return input, weight, bias, grad_output


def _seed(device, value=1234):
    return torch.tensor([value], dtype=torch.int64, device=device)


def _float64(*tensors):
    return tuple(None if t is None else t.double() for t in tensors)


def _relu_dropout_output(input, weight, bias, device):
    """An fc6/fc7 output (ReLU then dropout, so zeros from both) to mask the backward with."""
    return linear_reference.linear_forward(input, weight, bias, True, P, _seed(device))


# --------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_forward_odd(poisoned, device, precision, has_bias, relu, dropout):
    dtype = use_precision(precision, device)
    input, weight, bias, _ = _layer(SHAPES["odd"], dtype, device)
    bias = bias if has_bias else None
    seed = _seed(device) if dropout else None
    output = linear_kernels.linear_forward(input, weight, bias, relu, P, seed)
    assert poisoned.allocations > 0
    expected = linear_reference.linear_forward(*_float64(input, weight, bias), relu, P, seed)
    assert_precision_close(output, expected, precision, input.shape[1], "output")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_forward_fc6_like(poisoned, device, precision):
    dtype = use_precision(precision, device)
    input, weight, bias, _ = _layer(SHAPES["fc6-like"], dtype, device)
    seed = _seed(device)
    output = linear_kernels.linear_forward(input, weight, bias, True, P, seed)
    assert poisoned.allocations > 0
    expected = linear_reference.linear_forward(*_float64(input, weight, bias), True, P, seed)
    assert_precision_close(output, expected, precision, input.shape[1], "output")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_forward_dropout_mask_is_standalone_dropouts(device, p):
    """Without ReLU only dropout makes zeros: they must be exactly the standalone mask."""
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float32, device)
    seed = _seed(device, 987654321)
    output = linear_kernels.linear_forward(input, weight, bias, False, p, seed)
    M, N = output.shape
    standalone = dropout_kernels.dropout(torch.ones(M, N, device=device), p, seed)
    assert torch.equal(output != 0, standalone != 0)
    assert torch.equal(output != 0, keep_mask(seed, p, M * N, device).reshape(M, N))


def test_forward_strided_operands(poisoned, device):
    """Transposed and sliced operands are read through their strides, not copied."""
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float64, device)
    input_strided = input.t().contiguous().t()  # [M, K] with column-major strides
    weight_strided = torch.cat([weight, weight], dim=1)[:, ::2]  # [N, K], stride 2 in K
    weight_strided.copy_(weight)
    output = linear_kernels.linear_forward(input_strided, weight_strided, bias, True, 0.0, None)
    assert poisoned.allocations > 0
    expected = linear_reference.linear_forward(input, weight, bias, True, 0.0, None)
    assert_close(output, expected, tolerance(torch.float64), "output")


def test_empty_reduction(poisoned, device):
    """K = 0 leaves the bias; a batch of 0 gives zero weight and bias gradients."""
    weight = torch.randn(7, 0, dtype=torch.float64, device=device)
    bias = torch.randn(7, dtype=torch.float64, device=device)
    output = linear_kernels.linear_forward(torch.randn(3, 0, dtype=torch.float64, device=device),
                                           weight, bias, False, 0.0, None)
    assert_close(output, bias.expand(3, 7), tolerance(torch.float64), "output")
    grad_weight, grad_bias = linear_kernels.linear_backward_weight(
        torch.randn(0, 7, dtype=torch.float64, device=device), None,
        torch.randn(0, 5, dtype=torch.float64, device=device), 0.0)
    assert poisoned.allocations > 0
    assert_close(grad_weight, torch.zeros(7, 5, dtype=torch.float64), 0.0, "grad_weight")
    assert_close(grad_bias, torch.zeros(7, dtype=torch.float64), 0.0, "grad_bias")


def test_no_output_features(poisoned, device):
    """out_features = 0: an empty output, and an input gradient of zeros (an empty sum)."""
    input = torch.randn(3, 5, dtype=torch.float64, device=device)
    weight = torch.randn(0, 5, dtype=torch.float64, device=device)
    output = linear_kernels.linear_forward(input, weight, None, True, 0.0, None)
    assert output.shape == (3, 0)
    grad_output = torch.randn(3, 0, dtype=torch.float64, device=device)
    grad_input = linear_kernels.linear_backward_input(grad_output, output, weight, 0.5)
    assert poisoned.allocations > 0
    assert_close(grad_input, torch.zeros(3, 5, dtype=torch.float64), 0.0, "grad_input")


# --------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------

# (masked by the output, the forward's dropout p): a plain linear (fc8), a ReLU (dropout
# off), and ReLU + dropout (fc6, fc7 in training).
BACKWARD_CASES = {"linear": (False, 0.0), "relu": (True, 0.0), "relu-dropout": (True, P)}


def _backward_inputs(shape, dtype, device, masked, seed=0):
    input, weight, bias, grad_output = _layer(shape, dtype, device, seed)
    output = _relu_dropout_output(input, weight, bias, device) if masked else None
    return input, weight, grad_output, output


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", ["odd", "fc6-like"])
@pytest.mark.parametrize("case", list(BACKWARD_CASES))
def test_backward_input(poisoned, device, precision, shape, case):
    dtype = use_precision(precision, device)
    masked, p = BACKWARD_CASES[case]
    input, weight, grad_output, output = _backward_inputs(SHAPES[shape], dtype, device, masked)
    grad_input = linear_kernels.linear_backward_input(grad_output, output, weight, p)
    assert poisoned.allocations > 0
    expected = linear_reference.linear_backward_input(*_float64(grad_output, output, weight), p)
    assert_precision_close(grad_input, expected, precision, weight.shape[0], "grad_input")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", ["odd", "fc6-like"])
@pytest.mark.parametrize("case", list(BACKWARD_CASES))
def test_backward_weight(poisoned, device, precision, shape, case):
    dtype = use_precision(precision, device)
    masked, p = BACKWARD_CASES[case]
    input, weight, grad_output, output = _backward_inputs(SHAPES[shape], dtype, device, masked)
    grad_weight, grad_bias = linear_kernels.linear_backward_weight(grad_output, output, input, p)
    assert poisoned.allocations > 0
    expected_weight, expected_bias = linear_reference.linear_backward_weight(
        *_float64(grad_output, output, input), p)
    assert_precision_close(grad_weight, expected_weight, precision, input.shape[0],
                           "grad_weight")
    # A plain sum of grad_output as loaded: no tensor-core products, so never tf32.
    assert_close(grad_bias, expected_bias.to(dtype), tolerance(dtype), "grad_bias")


def test_backward_strided_grad_output(poisoned, device):
    """A non-contiguous grad_output and output (as autograd may hand over) need no copy."""
    input, weight, grad_output, output = _backward_inputs(SHAPES["odd"], torch.float64, device,
                                                          masked=True)
    grad_output_strided = grad_output.t().contiguous().t()
    output_strided = output.t().contiguous().t()
    grad_input = linear_kernels.linear_backward_input(grad_output_strided, output_strided,
                                                      weight, 0.5)
    grad_weight, grad_bias = linear_kernels.linear_backward_weight(
        grad_output_strided, output_strided, input, 0.5)
    assert poisoned.allocations > 0
    tol = tolerance(torch.float64)
    expected = linear_reference.linear_backward_input(grad_output, output, weight, 0.5)
    assert_close(grad_input, expected, tol, "grad_input")
    expected_weight, expected_bias = linear_reference.linear_backward_weight(
        grad_output, output, input, 0.5)
    assert_close(grad_weight, expected_weight, tol, "grad_weight")
    assert_close(grad_bias, expected_bias, tol, "grad_bias")


# --------------------------------------------------------------------------------------
# the oracle: reference backward against autograd on the reference forward
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("relu,dropout", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("has_bias", [False, True])
def test_reference_backward_is_autograd(relu, dropout, has_bias):
    """The output-mask formula is the whole backward of bias, ReLU and dropout.

    Dropout without ReLU is not covered: there the output is not a mask, and the library
    never fuses it (linear_relu_dropout is the only caller with dropout).
    """
    input, weight, bias, grad_output = _layer(SHAPES["odd"], torch.float64, "cpu")
    input.requires_grad_()
    weight.requires_grad_()
    bias = bias.requires_grad_() if has_bias else None
    seed = _seed("cpu") if dropout else None
    output = linear_reference.linear_forward(input, weight, bias, relu, P, seed)
    output.backward(grad_output)

    output = output.detach()
    mask = output if relu else None
    p = P if dropout else 0.0
    tol = tolerance(torch.float64)
    grad_input = linear_reference.linear_backward_input(grad_output, mask, weight.detach(), p)
    assert_close(grad_input, input.grad, tol, "grad_input")
    grad_weight, grad_bias = linear_reference.linear_backward_weight(
        grad_output, mask, input.detach(), p)
    assert_close(grad_weight, weight.grad, tol, "grad_weight")
    if has_bias:
        assert_close(grad_bias, bias.grad, tol, "grad_bias")
    if relu:
        # The mask must have cut something, or the test would not tell ReLU from identity.
        assert 0 < int((output == 0).sum()) < output.numel()


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_reference_rounds_bf16_once_as_the_kernels(p):
    """In bf16 the reference rounds each output once, after bias, ReLU and dropout's scale,
    as the kernels' float32 epilogues do (issue 25): no rounding of ``input @ weight.T``
    before the bias is added, nor of g' * scale before its GEMM.

    Operands are small integers over 16, so every product and sum is exact in float32 and
    the expected value is the exact result rounded once, bit for bit. With AlexNet's bias
    of 1 the units near the ReLU's threshold are where ``input @ weight.T`` is near -1:
    rounding it first moves a pre-activation by up to 2**-9 and flips the ReLU there.
    """
    M, K, N = SHAPES["odd"]
    generator = torch.Generator().manual_seed(3)
    integers = lambda *shape: torch.randint(-8, 9, shape, generator=generator).double() / 16
    input, weight, grad_output = integers(M, K), integers(N, K), integers(M, N)
    bias = -(input @ weight.T)[0] + integers(N) / 64  # row 0's pre-activations near zero
    bf16 = [t.to(torch.bfloat16) for t in (input, weight, bias, grad_output)]
    exact = [t.double() for t in bf16]
    seed = _seed("cpu") if p else None
    once = linear_reference.linear_forward(*exact[:3], True, p, seed).to(torch.bfloat16)
    # Under autocast, as a bf16 model calls it: autocast must not cast its float32 GEMMs.
    with torch.autocast("cpu", torch.bfloat16):
        output = linear_reference.linear_forward(*bf16[:3], True, p, seed)
        grad_input = linear_reference.linear_backward_input(bf16[3], output, bf16[1], p)
        grad_weight, grad_bias = linear_reference.linear_backward_weight(bf16[3], output,
                                                                         bf16[0], p)
    assert torch.equal(output, once)
    assert 0 < int((output[0] == 0).sum()) < N  # row 0 straddles the ReLU's threshold
    assert torch.equal(grad_input, linear_reference.linear_backward_input(
        exact[3], output.double(), exact[1], p).to(torch.bfloat16))
    expected = linear_reference.linear_backward_weight(exact[3], output.double(), exact[0], p)
    assert torch.equal(grad_weight, expected[0].to(torch.bfloat16))
    assert torch.equal(grad_bias, expected[1].to(torch.bfloat16))


# --------------------------------------------------------------------------------------
# split-K: the reduction shared by several programs, summed in a fixed order
# --------------------------------------------------------------------------------------


def _splits(M, N, K, split):
    """How many splits the launcher really runs for a GEMM of this shape when told `split`
    (the interpreter's tiles decide how many whole k-steps there are to share)."""
    splits, _ = linear_kernels._plan(M, N, K, torch.float64, torch.device("cpu"), split)
    return splits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("fc,in_features,out_features", [
    ("fc6", 9216, 4096), ("fc7", 4096, 4096), ("fc8", 4096, 1000)])
def test_split_k_fills_the_sms_at_alexnets_batch(fc, in_features, out_features, dtype):
    """Issue 11's budget: every FC GEMM at batch 128 launches >= 1 program per SM of the
    tile it is planned for, and each split has work (no split of zero k-steps)."""
    sms, batch, align = 132, 128, linear_kernels._SPLIT_ALIGN
    tile_m, tile_n = linear_kernels._autotuned(dtype)[1]
    assert tile_m >= batch  # one row tile: each weight element read by one program
    gemms = {"forward": (batch, out_features, in_features),
             "backward_input": (batch, in_features, out_features),
             "backward_weight": (out_features, in_features, batch)}
    for name, (M, N, K) in gemms.items():
        tiles = triton.cdiv(M, tile_m) * triton.cdiv(N, tile_n)
        steps = triton.cdiv(K, align)
        split = linear_kernels.split_k(tiles, steps, sms)
        chunk = triton.cdiv(steps, split)
        assert triton.cdiv(steps, chunk) == split, (fc, name, "an empty split")
        assert tiles * split >= sms, (fc, name, tiles, split)
        if name == "backward_weight":
            assert split == 1, (fc, name, "the output tiles alone fill the SMs")


def test_float64_takes_its_own_tile_and_float32_the_others(monkeypatch):
    """The 32-bit tuner's pruner: float64 its one small tile; float32 the others, and on a
    GPU with less shared memory than Hopper's (an A100, L4, RTX 4090) that one too."""
    tuner = linear_kernels.linear_kernel_autotuned_32bit

    def tiles(dtype):
        named = {"a_ptr": torch.empty(1, dtype=dtype)}
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in
                tuner.early_config_prune(tuner.configs, named)]

    assert tiles(torch.float64) == [(32, 32)]
    assert tiles(torch.float32) == [(128, 128), (64, 128)]
    monkeypatch.setattr(kernel_package, "less_shared_memory_than_hopper", lambda: True)
    assert tiles(torch.float32) == [(128, 128), (64, 128), (32, 32)]
    assert tiles(torch.float64) == [(32, 32)]


def test_first_configs_are_the_planned_tiles():
    """The autotuners' first configs (the static report's choice) are split_k's tiles."""
    for dtype in (torch.bfloat16, torch.float32):
        tuner, tile = linear_kernels._autotuned(dtype)
        first = tuner.configs[0].kwargs
        assert (first["BLOCK_M"], first["BLOCK_N"]) == tile
        for config in tuner.configs:
            assert linear_kernels._SPLIT_ALIGN % config.kwargs["BLOCK_K"] == 0


def test_split_k_shapes():
    assert linear_kernels.split_k(tiles=200, k_steps=144, sms=132) == 1
    assert linear_kernels.split_k(tiles=32, k_steps=1, sms=132) == 1
    # fc6 forward: 5 splits would leave a second wave of 28 programs of 29 steps each
    assert linear_kernels.split_k(tiles=32, k_steps=144, sms=132) == 8
    # a single tile with a short reduction: every k-step a split of its own
    assert linear_kernels.split_k(tiles=1, k_steps=10, sms=132) == 10


@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("dropout", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("has_bias", [False, True])
def test_forward_split_k(poisoned, device, split, has_bias, relu, dropout):
    """The epilogue (bias, ReLU, scale, mask) applies after the splits are summed."""
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float64, device)
    M, K = input.shape
    assert _splits(M, weight.shape[0], K, split) == split
    bias = bias if has_bias else None
    seed = _seed(device) if dropout else None
    output = linear_kernels.linear_forward(input, weight, bias, relu, P, seed, split=split)
    assert poisoned.allocations >= 2  # the output and the float64 partial sums
    expected = linear_reference.linear_forward(input, weight, bias, relu, P, seed)
    assert_close(output, expected, tolerance(torch.float64), "output")
    if dropout and not relu:
        assert torch.equal(output != 0, keep_mask(seed, P, output.numel(), device).reshape(
            output.shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_split_k_fc6_like(poisoned, device, dtype):
    input, weight, bias, _ = _layer(SHAPES["fc6-like"], dtype, device)
    M, K = input.shape
    assert _splits(M, weight.shape[0], K, 4) == 4
    seed = _seed(device)
    output = linear_kernels.linear_forward(input, weight, bias, True, P, seed, split=4)
    assert poisoned.allocations > 0
    expected = linear_reference.linear_forward(*_float64(input, weight, bias), True, P, seed)
    assert_close(output, expected.to(dtype), tolerance(dtype), "output")


def test_split_k_is_deterministic(device):
    """Same inputs, same bits: the partial sums are added in split order, not as they land."""
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float32, device)
    runs = [linear_kernels.linear_forward(input, weight, bias, True, P, _seed(device), split=3)
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("case", list(BACKWARD_CASES))
def test_backward_split_k(poisoned, device, split, case):
    masked, p = BACKWARD_CASES[case]
    input, weight, grad_output, output = _backward_inputs(SPLIT_SHAPE, torch.float64, device,
                                                          masked)
    M, K = input.shape
    N = weight.shape[0]
    assert _splits(M, K, N, split) == split  # grad_input reduces over the N outputs
    assert _splits(N, K, M, split) == split  # grad_weight over the batch
    grad_input = linear_kernels.linear_backward_input(grad_output, output, weight, p,
                                                      split=split)
    grad_weight, grad_bias = linear_kernels.linear_backward_weight(grad_output, output, input,
                                                                   p, split=split)
    assert poisoned.allocations > 0
    tol = tolerance(torch.float64)
    assert_close(grad_input, linear_reference.linear_backward_input(grad_output, output,
                                                                    weight, p), tol, "grad_input")
    expected_weight, expected_bias = linear_reference.linear_backward_weight(
        grad_output, output, input, p)
    assert_close(grad_weight, expected_weight, tol, "grad_weight")
    assert_close(grad_bias, expected_bias, tol, "grad_bias")


def test_bad_split(device):
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float64, device)
    with pytest.raises(ValueError, match="split_k must be >= 1"):
        linear_kernels.linear_forward(input, weight, bias, True, 0.0, None, split=0)


# --------------------------------------------------------------------------------------
# TMA tensor descriptors: both operands' tiles through descriptors, or plain loads
# --------------------------------------------------------------------------------------

DESCRIPTOR_FLAGS = ("A_DESCRIPTOR", "A_TRANSPOSED", "B_DESCRIPTOR", "B_TRANSPOSED")


def _flags(a, a_transposed, b, b_transposed):
    return dict(zip(DESCRIPTOR_FLAGS, (a, a_transposed, b, b_transposed)))


@pytest.fixture
def descriptor_flags(monkeypatch):
    """The descriptor flags of every GEMM launch of the test, in order (interpreted or
    compiled: the launchers' own `launchable` is wrapped)."""
    seen = []
    launchable = linear_kernels.launchable

    def spying(kernel):
        launcher = launchable(kernel)

        class Grid:
            def __getitem__(self, grid):
                launch = launcher[grid]

                def call(*args, **kwargs):
                    if "B_DESCRIPTOR" in kwargs:
                        seen.append({flag: kwargs[flag] for flag in DESCRIPTOR_FLAGS})
                    return launch(*args, **kwargs)
                return call
        return Grid()

    monkeypatch.setattr(linear_kernels, "launchable", spying)
    return seen


def _misaligned(tensor):
    """tensor's values in a view one element into its storage: a base TMA cannot use."""
    storage = torch.empty(tensor.numel() + 1, dtype=tensor.dtype, device=tensor.device)
    view = storage[1:].view(tensor.shape)
    view.copy_(tensor)
    return view


def _odd_rows(tensor):
    """tensor's values in a view whose rows are one element longer than they hold: a row
    stride that is no multiple of 16 bytes (301 float64 elements)."""
    wide = torch.empty(tensor.shape[0], tensor.shape[1] + 1, dtype=tensor.dtype,
                       device=tensor.device)
    wide[:, :-1].copy_(tensor)
    return wide[:, :-1]


# (shape, dtype): ragged tiles along M, N and K. The long fc6-like reduction goes through
# descriptors in the float64 cases of the tests above, which leave the choice to the launcher.
PATH_CASES = [pytest.param(shape, dtype, id=f"{shape}-{str(dtype)[6:]}")
              for shape, dtype in (("odd", torch.float32), ("odd", torch.float64))]


@pytest.mark.parametrize("tensor_descriptors", [True, False])
@pytest.mark.parametrize("shape,dtype", PATH_CASES)
def test_forward_load_paths(poisoned, device, descriptor_flags, shape, dtype,
                            tensor_descriptors):
    """The weight's tiles through a descriptor over the weight [N, K] itself (B = weight.T
    transposed back in shared memory), or plain loads: the same output."""
    input, weight, bias, _ = _layer(SHAPES[shape], dtype, device)
    seed = _seed(device)
    output = linear_kernels.linear_forward(input, weight, bias, True, P, seed,
                                           tensor_descriptors=tensor_descriptors)
    assert poisoned.allocations > 0
    on = tensor_descriptors
    assert descriptor_flags == [_flags(on, False, on, on)]
    expected = linear_reference.linear_forward(*_float64(input, weight, bias), True, P, seed)
    assert_close(output, expected.to(dtype), tolerance(dtype), "output")


@pytest.mark.parametrize("tensor_descriptors", [True, False])
@pytest.mark.parametrize("shape,dtype", PATH_CASES)
def test_backward_load_paths(poisoned, device, descriptor_flags, shape, dtype,
                             tensor_descriptors):
    """grad_input reads g' and the weight as they lie; grad_weight reads g'.T through a
    descriptor over g' (transposed back) and the input as it lies."""
    masked, p = BACKWARD_CASES["relu-dropout"]
    input, weight, grad_output, output = _backward_inputs(SHAPES[shape], dtype, device, masked)
    grad_input = linear_kernels.linear_backward_input(
        grad_output, output, weight, p, tensor_descriptors=tensor_descriptors)
    grad_weight, grad_bias = linear_kernels.linear_backward_weight(
        grad_output, output, input, p, tensor_descriptors=tensor_descriptors)
    assert poisoned.allocations > 0
    on = tensor_descriptors
    assert descriptor_flags == [_flags(on, False, on, False), _flags(on, on, on, False)]
    tol = tolerance(dtype)
    expected = linear_reference.linear_backward_input(*_float64(grad_output, output, weight), p)
    assert_close(grad_input, expected.to(dtype), tol, "grad_input")
    expected_weight, expected_bias = linear_reference.linear_backward_weight(
        *_float64(grad_output, output, input), p)
    assert_close(grad_weight, expected_weight.to(dtype), tol, "grad_weight")
    assert_close(grad_bias, expected_bias.to(dtype), tol, "grad_bias")


@pytest.mark.parametrize("precision,expected", [("float32", False), ("tf32", True),
                                                ("float64", True)])
def test_descriptors_by_default_except_for_fma(poisoned, device, descriptor_flags,
                                               precision, expected):
    """Left to the launcher, descriptors wherever the product runs on the tensor cores
    (tf32, float64's DMMA), not for ieee float32's FFMA (where they spill)."""
    dtype = PRECISIONS[precision]
    if precision == "tf32":  # the interpreter computes it exactly: only the choice differs
        torch.backends.cuda.matmul.allow_tf32 = True
    input, weight, bias, _ = _layer(SHAPES["odd"], dtype, device)
    output = linear_kernels.linear_forward(input, weight, bias, False, 0.0, None)
    on = expected and linear_kernels.tensor_descriptors_available()
    assert descriptor_flags == [_flags(on, False, on, on)]
    expected_output = linear_reference.linear_forward(*_float64(input, weight, bias), False,
                                                      0.0, None)
    assert_precision_close(output, expected_output, precision, input.shape[1], "output")


@pytest.mark.parametrize("layout", ["misaligned", "odd-rows"])
def test_weight_tma_cannot_read_takes_plain_loads(poisoned, device, descriptor_flags, layout):
    """A weight TMA cannot address (a base off 16 bytes, rows no multiple of 16 bytes
    apart) is read through plain loads, the other operand still through its descriptor;
    asked for descriptors regardless, the launcher says why not."""
    input, weight, bias, grad_output = _layer(SHAPES["odd"], torch.float64, device)
    awkward = {"misaligned": _misaligned, "odd-rows": _odd_rows}[layout](weight)
    output = linear_kernels.linear_forward(input, awkward, bias, True, 0.0, None)
    grad_input = linear_kernels.linear_backward_input(grad_output, output, awkward, 0.0)
    assert poisoned.allocations > 0
    other = linear_kernels.tensor_descriptors_available()
    assert descriptor_flags == [_flags(other, False, False, False)] * 2
    tol = tolerance(torch.float64)
    expected = linear_reference.linear_forward(input, weight, bias, True, 0.0, None)
    assert_close(output, expected, tol, "output")
    assert_close(grad_input, linear_reference.linear_backward_input(grad_output, expected,
                                                                    weight, 0.0),
                 tol, "grad_input")
    if other:
        with pytest.raises(ValueError, match="weight breaks TMA's alignment rules"):
            linear_kernels.linear_forward(input, awkward, bias, True, 0.0, None,
                                          tensor_descriptors=True)


def test_broadcast_grad_output_takes_plain_loads(poisoned, device, descriptor_flags):
    """A grad_output expanded from one row (stride 0), read as it is (no ReLU to mask with,
    80 outputs: no padded copy), goes through plain loads; the weight through TMA."""
    input, weight, _, grad_output = _layer((5, 300, 80), torch.float64, device)
    broadcast = grad_output[:1].expand(5, 80)
    grad_input = linear_kernels.linear_backward_input(broadcast, None, weight, 0.0)
    assert poisoned.allocations > 0
    available = linear_kernels.tensor_descriptors_available()
    assert descriptor_flags == [_flags(False, False, available, False)]
    expected = linear_reference.linear_backward_input(broadcast, None, weight, 0.0)
    assert_close(grad_input, expected, tolerance(torch.float64), "grad_input")
    if available:
        with pytest.raises(ValueError, match=r"grad_output is broadcast \(strides \(0, 1\)\)"):
            linear_kernels.linear_backward_input(broadcast, None, weight, 0.0,
                                                 tensor_descriptors=True)


def test_no_tensor_descriptors_plain_loads_or_a_clear_refusal(poisoned, device,
                                                              descriptor_flags, monkeypatch):
    """Where Triton or the GPU has no descriptors: plain loads, and True refused."""
    monkeypatch.setattr(linear_kernels, "tensor_descriptors_available", lambda: False)
    input, weight, bias, _ = _layer(SHAPES["odd"], torch.float64, device)
    with pytest.raises(ValueError, match="has no TMA tensor descriptors"):
        linear_kernels.linear_forward(input, weight, bias, False, 0.0, None,
                                      tensor_descriptors=True)
    output = linear_kernels.linear_forward(input, weight, bias, False, 0.0, None)
    assert descriptor_flags == [_flags(False, False, False, False)]
    expected = linear_reference.linear_forward(input, weight, bias, False, 0.0, None)
    assert_close(output, expected, tolerance(torch.float64), "output")


def test_descriptors_refused_for_an_empty_reduction(device):
    if not linear_kernels.tensor_descriptors_available():
        pytest.skip("no tensor descriptors here: refused for that reason instead")
    input = torch.randn(3, 0, dtype=torch.float64, device=device)
    weight = torch.randn(7, 0, dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match=r"input is empty \(3 x 0\)"):
        linear_kernels.linear_forward(input, weight, None, False, 0.0, None,
                                      tensor_descriptors=True)


def test_every_config_meets_tmas_block_rules():
    """Every block a descriptor may load (each operand, each orientation) from every
    autotune config, and from the interpreter's blocks, is one TMA takes."""
    assert not linear_kernels.tma_block_fits((16, 4), 2)  # 8 bytes innermost
    assert not linear_kernels.tma_block_fits((512, 64), 2)  # over 256 rows
    tuners = ((linear_kernels.linear_kernel_autotuned, (2,)),
              (linear_kernels.linear_kernel_autotuned_32bit, (4, 8)))
    tiles = [(tuner.configs, sizes) for tuner, sizes in tuners]
    interpreter = [triton.Config(linear_kernels._interpreter_blocks(K, split))
                   for K in (1, 5, 40, 300, 9216) for split in (1, 2, 3, 4)]
    tiles.append((interpreter, (4, 8)))
    for configs, sizes in tiles:
        for config in configs:
            blocks = linear_kernels.descriptor_blocks(
                config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.kwargs["BLOCK_K"])
            for (operand, transposed), block in blocks.items():
                for size in sizes:
                    assert linear_kernels.tma_block_fits(block, size), (
                        config, operand, transposed, size)


def test_autotune_keys_name_the_load_paths():
    """Descriptors change the shared memory a config needs: a choice made for one path is
    not reused for the other."""
    for tuner in (linear_kernels.linear_kernel_autotuned,
                  linear_kernels.linear_kernel_autotuned_32bit):
        assert set(DESCRIPTOR_FLAGS) <= set(tuner.keys)
