"""alexnet_triton.testing: the tolerances and error measures every kernel is judged by.

The tf32 tolerance is derived, not fitted (see tf32_tolerance); here it is held against a
simulation of what the tensor cores compute: float32 operands with their mantissas cut to
10 bits, multiplied and summed exactly (float64). It must admit that on every AlexNet and
odd conv shape, in all three GEMMs, and still reject a kernel that drops one term.
"""
import math

import pytest
import torch

from alexnet_triton.kernels.reference import conv2d_relu as conv_reference
from alexnet_triton.kernels.reference import linear as linear_reference
from alexnet_triton.testing import (bfloat16_rounding, max_relative_error,
                                    normwise_relative_error, poisoned_allocations,
                                    round_to_bfloat16, scaled_error, tf32_tolerance,
                                    tf32_truncate)
from test_conv2d_relu import SHAPES, conv_inputs, float64, output_and_grad


def _tf32(t):
    return tf32_truncate(t).double()


def test_tf32_truncate_keeps_ten_mantissa_bits():
    x = torch.tensor([1 + 2**-10 + 2**-11 + 2**-23, -3.0, 0.0], dtype=torch.float32)
    assert tf32_truncate(x).tolist() == [1 + 2**-10, -3.0, 0.0]
    with pytest.raises(TypeError):
        tf32_truncate(x.double())


@pytest.mark.parametrize("conv", SHAPES.values(), ids=SHAPES.keys())
def test_tf32_tolerance_admits_simulated_tensor_cores_on_every_conv(conv):
    x, weight, bias = conv_inputs(conv, torch.float32, torch.device("cpu"))
    output, grad_output = output_and_grad(conv, x, weight, bias)
    stride, padding = list(conv.stride), list(conv.padding)
    exact = conv_reference.conv2d_relu_forward(x.double(), weight.double(), float64(bias),
                                               stride, padding, conv.groups)
    simulated = conv_reference.conv2d_relu_forward(_tf32(x), _tf32(weight), float64(bias),
                                                   stride, padding, conv.groups)
    errors = {"forward": normwise_relative_error(simulated, exact)}
    exact = conv_reference.conv2d_relu_backward_input(
        grad_output.double(), output.double(), weight.double(), conv.input_size, stride,
        padding, conv.groups)
    simulated = conv_reference.conv2d_relu_backward_input(
        _tf32(grad_output), output.double(), _tf32(weight), conv.input_size, stride, padding,
        conv.groups)
    errors["backward_input"] = normwise_relative_error(simulated, exact)
    exact, _ = conv_reference.conv2d_relu_backward_weight(
        grad_output.double(), output.double(), x.double(), conv.weight_size, stride, padding,
        conv.groups)
    simulated, _ = conv_reference.conv2d_relu_backward_weight(
        _tf32(grad_output), output.double(), _tf32(x), conv.weight_size, stride, padding,
        conv.groups)
    errors["backward_weight"] = normwise_relative_error(simulated, exact)
    for gemm, error in errors.items():
        allowed = tf32_tolerance(conv.reduction(gemm))
        # Truncation makes an error: a simulation that made none would test nothing.
        assert 1e-4 < error <= allowed, f"{gemm}: {error:.3e} vs {allowed:.3e}"


def test_tf32_tolerance_admits_simulated_tensor_cores_on_fc6():
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(4, 9216, generator=generator)
    weight = torch.randn(512, 9216, generator=generator) / 96
    exact = linear_reference.linear_forward(input.double(), weight.double(), None, False, 0.0,
                                            None)
    simulated = linear_reference.linear_forward(_tf32(input), _tf32(weight), None, False, 0.0,
                                                None)
    assert 1e-4 < normwise_relative_error(simulated, exact) <= tf32_tolerance(9216)


@pytest.mark.parametrize("conv", ["conv1-63", "conv3-13"])
def test_tf32_tolerance_rejects_a_dropped_term(conv):
    """A forward that skips the last tap of every kernel must fail the tf32 check."""
    conv = SHAPES[conv]
    x, weight, bias = conv_inputs(conv, torch.float32, torch.device("cpu"))
    stride, padding = list(conv.stride), list(conv.padding)
    exact = conv_reference.conv2d_relu_forward(x.double(), weight.double(), bias.double(),
                                               stride, padding, conv.groups)
    dropped = weight.double().clone()
    dropped[:, -1, -1, -1] = 0.0
    wrong = conv_reference.conv2d_relu_forward(x.double(), dropped, bias.double(), stride,
                                               padding, conv.groups)
    assert normwise_relative_error(wrong, exact) > 3 * tf32_tolerance(conv.reduction("forward"))


def test_tf32_tolerance_grows_with_the_reduction_and_refuses_nonsense():
    assert 2**-9 < tf32_tolerance(1) < tf32_tolerance(10**6) < 2**-9 + 1e-4
    with pytest.raises(ValueError):
        tf32_tolerance(0)


def test_error_measures():
    expected = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    actual = torch.tensor([1.0, -2.0, 4.4], dtype=torch.float32)
    assert max_relative_error(actual, expected) == pytest.approx(0.1, rel=1e-6)
    assert normwise_relative_error(actual, expected) == pytest.approx(0.4 / 21**0.5, rel=1e-6)
    assert scaled_error(actual, expected) == pytest.approx(0.4 / 8, rel=1e-6)
    for poisoned in (torch.tensor([1.0, math.nan, 4.0]), torch.tensor([1.0, math.inf, 4.0])):
        assert max_relative_error(poisoned, expected) == math.inf
        assert normwise_relative_error(poisoned, expected) == math.inf
        assert scaled_error(poisoned, expected) == math.inf
    with pytest.raises(ValueError):
        normwise_relative_error(actual[:2], expected)


def test_scaled_error_is_the_suites_criterion():
    """scaled_error(a, e) <= tol exactly when helpers.assert_close(a, e, tol) passes."""
    from helpers import assert_close

    generator = torch.Generator().manual_seed(5)
    expected = torch.randn(50, generator=generator, dtype=torch.float64)
    actual = expected + 1e-6 * torch.randn(50, generator=generator, dtype=torch.float64)
    error = scaled_error(actual, expected)
    assert_close(actual, expected, error * 1.0001)
    with pytest.raises(AssertionError):
        assert_close(actual, expected, error * 0.999)


def test_poisoned_allocations_poison_and_restore():
    empty = torch.empty
    with poisoned_allocations() as poison:
        floats, ints = torch.empty(3), torch.empty_like(torch.ones(2, dtype=torch.int32))
        assert torch.isnan(floats).all() and (ints == -1).all()
    assert poison.allocations == 2 and torch.empty is empty


def test_bfloat16_rounding_rounds_each_op_once_and_the_gemm_operands():
    """The model check's bf16 baseline (issue 25): float64 ops, each output rounded to bf16
    once, conv and matmul operands rounded as autocast casts them, backward included;
    views share their base's data and in-place ops are rounded in place. (About 0.1 s; 4 s
    more where it is the first to enter a dispatch mode, which imports torch._dynamo.)"""
    R = round_to_bfloat16
    generator = torch.Generator().manual_seed(0)
    x, w, b, v = (torch.randn(*shape, generator=generator, dtype=torch.float64)
                  for shape in ((2, 3, 7, 7), (4, 3, 3, 3), (4,), (100, 5)))
    w.requires_grad_()
    with bfloat16_rounding():
        y = torch.nn.functional.conv2d(x, w, b).relu()
        flat = y.flatten(1)  # a view: no copy
        (flat @ v / 3).sum().backward()
        bumped = y.detach().clone().add_(1e-3)
    expected = R(torch.nn.functional.conv2d(R(x), R(w.detach()), R(b))).relu()
    assert torch.equal(y, expected) and flat._base is y
    assert not torch.equal(expected, torch.nn.functional.conv2d(x, w.detach(), b).relu())
    # conv's weight gradient from the rounded gradient of y, rounded once
    grad_y = R(R(torch.ones(2, 5, dtype=torch.float64) / 3) @ R(v).T).reshape(y.shape) * (y > 0)
    grad_w = torch.nn.grad.conv2d_weight(R(x), w.shape, grad_y)
    assert torch.equal(w.grad, R(grad_w)) and w.grad.abs().sum() > 0
    assert torch.equal(bumped, R(y.detach() + 1e-3))
