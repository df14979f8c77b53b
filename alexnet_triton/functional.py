"""AlexNet's fused ops as differentiable functions, named like torch.nn.functional.

Each op is a ``torch.library.triton_op`` whose autograd formula calls the backward op,
so ``torch.compile`` traces the kernels without graph breaks. This module only wires
forward to backward; the work is in ``alexnet_triton.kernels`` (Triton) and
``alexnet_triton.kernels.reference`` (plain PyTorch, the same launchers by name).

Dispatch: CUDA tensors run the compiled Triton kernels. CPU tensors run the PyTorch
reference, unless ``TRITON_INTERPRET=1`` is set, in which case the Triton kernels run
through Triton's interpreter on the CPU tensors.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.library import triton_op

from alexnet_triton import checks
from alexnet_triton.dispatch import on_triton_device as _on_triton_device
from alexnet_triton.dispatch import pick as _pick
from alexnet_triton.dispatch import uses_triton
from alexnet_triton.kernels import conv2d_relu as conv2d_relu_kernels
from alexnet_triton.kernels import dropout as dropout_kernels
from alexnet_triton.kernels import linear as linear_kernels
from alexnet_triton.kernels import lrn as lrn_kernels
from alexnet_triton.kernels import max_pool2d as max_pool2d_kernels
from alexnet_triton.kernels.reference import conv2d_relu as conv2d_relu_reference
from alexnet_triton.kernels.reference import dropout as dropout_reference
from alexnet_triton.kernels.reference import linear as linear_reference
from alexnet_triton.kernels.reference import lrn as lrn_reference
from alexnet_triton.kernels.reference import max_pool2d as max_pool2d_reference

__all__ = [
    "conv2d_relu",
    "linear",
    "linear_relu",
    "linear_relu_dropout",
    "local_response_norm",
    "max_pool2d",
    "dropout",
    "uses_triton",
]


def _autocast(*tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """Cast GEMM operands to the autocast dtype, as autocast does for conv2d and linear.

    Runs before the argument checks, which then see what the kernels will see; anything
    that is not a floating-point tensor is left for the checks to reject.
    """
    first = tensors[0]
    if not isinstance(first, Tensor) or first.device.type not in ("cuda", "cpu"):
        return tensors
    if not torch.is_autocast_enabled(first.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(first.device.type)
    return tuple(t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t
                 for t in tensors)


# torch 2.13's triton_op searches the source of every function an op's body reaches for the
# Triton kernels it launches (for AOTAutograd's cache key), importing torch._inductor to
# parse it: about 4 s at every import of this module on 2 cores, in every CLI, DataLoader
# worker and torchrun rank. Our bodies launch through kernels.launchable(kernel), where the
# search finds no kernel, for every op (tests/ops/test_functional.py runs the search on
# each body and fails once it finds one). So the ops register with what the search returns,
# an empty list, without running it; a torch without the search registers as it would.
_OP_BODIES: Dict[str, Callable] = {}  # what each triton_op runs, for that test


def _finds_no_kernels(fn: Callable) -> list:
    return []


def _triton_op(name: str, mutates_args=()):
    """``torch.library.triton_op(name, mutates_args=...)`` without the kernel search."""
    def register(body: Callable):
        _OP_BODIES[name] = body
        # where triton_op looks the search up when it registers (its module's globals)
        namespace = getattr(triton_op, "__globals__", {})
        search = namespace.get("get_inner_triton_kernels")
        if search is None:
            return triton_op(name, mutates_args=mutates_args)(body)
        namespace["get_inner_triton_kernels"] = _finds_no_kernels
        try:
            return triton_op(name, mutates_args=mutates_args)(body)
        finally:
            namespace["get_inner_triton_kernels"] = search
    return register


# --------------------------------------------------------------------------------------
# conv2d + bias + ReLU
# --------------------------------------------------------------------------------------


@_triton_op("alexnet_triton::conv2d_relu_fold_input", mutates_args=())
def _conv2d_relu_fold_input(input: Tensor, weight_size: List[int], stride: List[int],
                            padding: List[int], groups: int) -> Tensor:
    ops = _pick(input, conv2d_relu_kernels, conv2d_relu_reference)
    return ops.conv2d_relu_fold_input(input, weight_size, stride, padding, groups)


@_triton_op("alexnet_triton::conv2d_relu", mutates_args=())
def _conv2d_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                 padding: List[int], groups: int, folded_input: Optional[Tensor]) -> Tensor:
    ops = _pick(input, conv2d_relu_kernels, conv2d_relu_reference)
    return ops.conv2d_relu_forward(input, weight, bias, stride, padding, groups,
                                   folded_input=folded_input)


@_triton_op("alexnet_triton::conv2d_relu_backward_input", mutates_args=())
def _conv2d_relu_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                                input_size: List[int], stride: List[int], padding: List[int],
                                groups: int) -> Tensor:
    ops = _pick(grad_output, conv2d_relu_kernels, conv2d_relu_reference)
    return ops.conv2d_relu_backward_input(grad_output, output, weight, input_size, stride,
                                          padding, groups)


@_triton_op("alexnet_triton::conv2d_relu_backward_weight", mutates_args=())
def _conv2d_relu_backward_weight(grad_output: Tensor, output: Tensor, input: Tensor,
                                 weight_size: List[int], stride: List[int], padding: List[int],
                                 groups: int, folded_input: Optional[Tensor]
                                 ) -> Tuple[Tensor, Tensor]:
    ops = _pick(grad_output, conv2d_relu_kernels, conv2d_relu_reference)
    return ops.conv2d_relu_backward_weight(grad_output, output, input, weight_size, stride,
                                           padding, groups, folded_input=folded_input)


@_triton_op("alexnet_triton::conv2d_relu_backward_weight_and_mask", mutates_args=())
def _conv2d_relu_backward_weight_and_mask(
        grad_output: Tensor, output: Tensor, input: Tensor, weight_size: List[int],
        stride: List[int], padding: List[int], groups: int,
        folded_input: Optional[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    ops = _pick(grad_output, conv2d_relu_kernels, conv2d_relu_reference)
    return ops.conv2d_relu_backward_weight(grad_output, output, input, weight_size, stride,
                                           padding, groups, masked_grad_output=True,
                                           folded_input=folded_input)


def _conv2d_relu_setup_context(ctx, inputs, output):
    input, weight, bias, stride, padding, groups, folded_input = inputs
    ctx.save_for_backward(input, weight, output, folded_input)
    ctx.conv = (stride, padding, groups)
    ctx.has_bias = bias is not None


def _conv2d_relu_backward(ctx, grad_output):
    input, weight, output, folded_input = ctx.saved_tensors
    stride, padding, groups = ctx.conv
    grad_input = grad_weight = grad_bias = None
    conv = (stride, padding, groups)
    wants_input = ctx.needs_input_grad[0]
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        if wants_input:
            # The weight gradient writes the masked grad_output as it sums the bias
            # gradient, and the input gradient reads it without output: a lighter loop.
            grad_weight, grad_bias, masked = _conv2d_relu_backward_weight_and_mask(
                grad_output, output, input, list(weight.shape), *conv, folded_input)
            grad_input = _conv2d_relu_backward_input(masked, None, weight, list(input.shape),
                                                     *conv)
        else:
            grad_weight, grad_bias = _conv2d_relu_backward_weight(
                grad_output, output, input, list(weight.shape), *conv, folded_input)
    elif wants_input:
        grad_input = _conv2d_relu_backward_input(grad_output, output, weight,
                                                 list(input.shape), *conv)
    if not ctx.has_bias:
        grad_bias = None
    return grad_input, grad_weight, grad_bias, None, None, None, None


_conv2d_relu.register_autograd(_conv2d_relu_backward, setup_context=_conv2d_relu_setup_context)


def conv2d_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0,
                groups: int = 1) -> Tensor:
    """``relu(conv2d(input, weight, bias, stride, padding, groups=groups))`` in one kernel.

    input [N, C, H, W] (either layout), weight [K, C/groups, R, S], bias [K]; returns
    [N, K, P, Q] in channels_last memory (NHWC), as is the input gradient.
    The Triton forward is an implicit GEMM (no im2col buffer); the backward computes the
    input and weight gradients as implicit GEMMs with the ReLU mask applied as the output
    gradient is loaded, and the bias gradient in the weight-gradient pass. An input of few
    channels (conv1's image) is copied once into the layout the kernels read, and that copy
    serves the forward and the weight gradient.
    """
    stride = checks.pair(stride, "conv2d_relu: stride")
    padding = checks.pair(padding, "conv2d_relu: padding")
    input, weight, bias = _autocast(input, weight, bias)
    checks.conv2d_relu(input, weight, bias, stride, padding, groups)
    folded_input = None
    if conv2d_relu_kernels.folds(list(input.shape), groups) and _on_triton_device(input):
        # A layout copy that no gradient flows through: the input's own goes through the conv.
        folded_input = _conv2d_relu_fold_input(input.detach(), list(weight.shape), stride,
                                               padding, groups)
    return _conv2d_relu(input, weight, bias, stride, padding, groups, folded_input)


# --------------------------------------------------------------------------------------
# linear + bias (+ ReLU) (+ dropout)
# --------------------------------------------------------------------------------------


@_triton_op("alexnet_triton::linear", mutates_args=())
def _linear(input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool, p: float,
            seed: Optional[Tensor]) -> Tensor:
    ops = _pick(input, linear_kernels, linear_reference)
    return ops.linear_forward(input, weight, bias, relu, p, seed)


@_triton_op("alexnet_triton::linear_backward_input", mutates_args=())
def _linear_backward_input(grad_output: Tensor, output: Optional[Tensor], weight: Tensor,
                           p: float) -> Tensor:
    ops = _pick(grad_output, linear_kernels, linear_reference)
    return ops.linear_backward_input(grad_output, output, weight, p)


@_triton_op("alexnet_triton::linear_backward_weight", mutates_args=())
def _linear_backward_weight(grad_output: Tensor, output: Optional[Tensor], input: Tensor,
                            p: float) -> Tuple[Tensor, Tensor]:
    ops = _pick(grad_output, linear_kernels, linear_reference)
    return ops.linear_backward_weight(grad_output, output, input, p)


def _linear_setup_context(ctx, inputs, output):
    input, weight, bias, relu, p, seed = inputs
    # With a ReLU the output is its own mask: a kept, positive pre-activation is the only
    # way to a positive output, so dropout's mask needs neither storing nor regenerating.
    # (Hence dropout is only ever fused after a ReLU.)
    ctx.save_for_backward(input, weight, output if relu else None)
    ctx.p = p if seed is not None else 0.0
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad_output):
    input, weight, output = ctx.saved_tensors
    grad_input = grad_weight = grad_bias = None
    if ctx.needs_input_grad[0]:
        grad_input = _linear_backward_input(grad_output, output, weight, ctx.p)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        grad_weight, grad_bias = _linear_backward_weight(grad_output, output, input, ctx.p)
    if not ctx.has_bias:
        grad_bias = None
    return grad_input, grad_weight, grad_bias, None, None, None


_linear.register_autograd(_linear_backward, setup_context=_linear_setup_context)


def _linear_2d(name: str, input: Tensor, weight: Tensor, bias: Optional[Tensor], relu: bool,
               p: float, training: bool) -> Tensor:
    input, weight, bias = _autocast(input, weight, bias)
    checks.linear(name, input, weight, bias)
    leading = input.shape[:-1]
    seed = _dropout_seed(input) if training and p > 0 else None
    output = _linear(input.reshape(-1, input.shape[-1]), weight, bias, relu, float(p), seed)
    return output.reshape(*leading, weight.shape[0])


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``input @ weight.T + bias``; input [*, in_features], weight [out, in], bias [out]."""
    return _linear_2d("linear", input, weight, bias, relu=False, p=0.0, training=False)


def linear_relu(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``relu(input @ weight.T + bias)`` with the ReLU in the GEMM's epilogue."""
    return _linear_2d("linear_relu", input, weight, bias, relu=True, p=0.0, training=False)


def linear_relu_dropout(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                        p: float = 0.5, training: bool = True) -> Tensor:
    """``dropout(relu(input @ weight.T + bias), p, training)`` in one GEMM: AlexNet's fc6 and fc7.

    The dropout mask is the one ``dropout`` draws for the same seed (Philox on the
    element's flat index), so the fused and unfused forms agree bit for bit.
    """
    checks.dropout_p("linear_relu_dropout", p)
    return _linear_2d("linear_relu_dropout", input, weight, bias, relu=True, p=p,
                      training=training)


# --------------------------------------------------------------------------------------
# cross-channel local response normalization
# --------------------------------------------------------------------------------------


@_triton_op("alexnet_triton::local_response_norm", mutates_args=())
def _local_response_norm(input: Tensor, size: int, alpha: float, beta: float, k: float,
                         groups: int) -> Tensor:
    ops = _pick(input, lrn_kernels, lrn_reference)
    return ops.lrn_forward(input, size, alpha, beta, k, groups)


@_triton_op("alexnet_triton::local_response_norm_backward", mutates_args=())
def _local_response_norm_backward(grad_output: Tensor, input: Tensor, size: int, alpha: float,
                                  beta: float, k: float, groups: int) -> Tensor:
    ops = _pick(grad_output, lrn_kernels, lrn_reference)
    return ops.lrn_backward(grad_output, input, size, alpha, beta, k, groups)


def _local_response_norm_setup_context(ctx, inputs, output):
    input, *ctx.lrn = inputs
    ctx.save_for_backward(input)


def _local_response_norm_backward_formula(ctx, grad_output):
    (input,) = ctx.saved_tensors
    grad_input = _local_response_norm_backward(grad_output, input, *ctx.lrn)
    return grad_input, None, None, None, None, None


_local_response_norm.register_autograd(_local_response_norm_backward_formula,
                                       setup_context=_local_response_norm_setup_context)


def local_response_norm(input: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0, groups: int = 1) -> Tensor:
    """Cross-channel local response normalization (AlexNet section 3.3), with torch's
    signature and defaults (AlexNet's values are paper.LRN: size 5, k=2).

    ``b_c = a_c / (k + alpha / size * sum_j a_j ** 2) ** beta`` over the channels
    ``j = c - size // 2 ... c + (size - 1) // 2``; channels outside the tensor contribute
    zero. This is torch.nn.functional.local_response_norm's convention and what
    Krizhevsky's cuda-convnet computes; the paper's printed formula omits the ``1 / size``
    (with alpha=1e-4 read as already divided it would be a 5x stronger normalization).

    ``groups`` splits the channels into that many equal blocks and a window never crosses
    a block boundary: with groups=2 each of AlexNet's two GPU columns normalizes only its
    own maps. The backward recomputes the denominators instead of storing them. The
    result keeps the input's memory format (channels_last or NCHW).
    """
    checks.local_response_norm(input, size, alpha, beta, k, groups)
    return _local_response_norm(input, size, float(alpha), float(beta), float(k), groups)


# --------------------------------------------------------------------------------------
# max pool
# --------------------------------------------------------------------------------------


@_triton_op("alexnet_triton::max_pool2d", mutates_args=())
def _max_pool2d(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                dilation: List[int], ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    ops = _pick(input, max_pool2d_kernels, max_pool2d_reference)
    return ops.max_pool2d_forward(input, kernel_size, stride, padding, dilation, ceil_mode)


@_triton_op("alexnet_triton::max_pool2d_backward", mutates_args=())
def _max_pool2d_backward(grad_output: Tensor, argmax: Tensor, input_size: List[int],
                         kernel_size: List[int], stride: List[int], padding: List[int],
                         dilation: List[int], ceil_mode: bool) -> Tensor:
    ops = _pick(grad_output, max_pool2d_kernels, max_pool2d_reference)
    return ops.max_pool2d_backward(grad_output, argmax, input_size, kernel_size, stride,
                                   padding, dilation, ceil_mode)


def _max_pool2d_setup_context(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, ceil_mode = inputs
    _, argmax = output
    ctx.mark_non_differentiable(argmax)
    ctx.save_for_backward(argmax)
    ctx.pool = (list(input.shape), kernel_size, stride, padding, dilation, ceil_mode)


def _max_pool2d_backward_formula(ctx, grad_output, _grad_argmax):
    (argmax,) = ctx.saved_tensors
    return _max_pool2d_backward(grad_output, argmax, *ctx.pool), None, None, None, None, None


_max_pool2d.register_autograd(_max_pool2d_backward_formula,
                              setup_context=_max_pool2d_setup_context)


def _torch_indices(argmax: Tensor, width: int, kernel_size: List[int], stride: List[int],
                   padding: List[int], dilation: List[int]) -> Tensor:
    """torch's return_indices (flat h * W + w of each winner, int64) from the int8 argmax."""
    oh, ow = argmax.shape[-2:]
    rows = torch.arange(oh, device=argmax.device)[:, None] * stride[0] - padding[0]
    cols = torch.arange(ow, device=argmax.device)[None, :] * stride[1] - padding[1]
    window = argmax.to(torch.int64)
    return ((rows + window // kernel_size[1] * dilation[0]) * width
            + cols + window % kernel_size[1] * dilation[1])


def max_pool2d(input: Tensor, kernel_size: int | Sequence[int],
               stride: int | Sequence[int] | None = None, padding: int | Sequence[int] = 0,
               dilation: int | Sequence[int] = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Tensor | Tuple[Tensor, Tensor]:
    """torch.nn.functional.max_pool2d with its signature and defaults (stride=None means the
    kernel size): -inf padding of at most half the window, dilation, floor or ceil mode, input
    [N, C, H, W] or [C, H, W]; the result keeps the input's memory format (channels_last
    or NCHW). AlexNet's overlapping pool is max_pool2d(x, 3, 2).

    The forward stores the winner's position inside its window as int8 (not int64 as
    PyTorch), and the backward gathers from it without atomics, so it is deterministic.
    Ties go to the first position in row-major order, and NaN wins, as in PyTorch.
    ``return_indices=True`` also returns torch's int64 flat indices (computed from the
    int8 argmax).
    """
    kernel_size = checks.pair(kernel_size, "max_pool2d: kernel_size")
    stride = kernel_size if stride is None else checks.pair(stride, "max_pool2d: stride")
    padding = checks.pair(padding, "max_pool2d: padding")
    dilation = checks.pair(dilation, "max_pool2d: dilation")
    unbatched = isinstance(input, Tensor) and input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    checks.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    output, argmax = _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)
    if unbatched:
        output, argmax = output.squeeze(0), argmax.squeeze(0)
    if not return_indices:
        return output
    return output, _torch_indices(argmax, input.shape[-1], kernel_size, stride, padding,
                                  dilation)


# --------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------


def _dropout_seed(input: Tensor) -> Tensor:
    """A Philox seed drawn from the default generator of the input's device.

    It stays a one-element device tensor that the kernels read, so drawing it costs no
    host synchronisation and ``torch.manual_seed`` makes a run reproducible.
    """
    return dropout_kernels.random_seed(input.device)


@_triton_op("alexnet_triton::dropout", mutates_args=())
def _dropout(input: Tensor, p: float, seed: Tensor) -> Tensor:
    ops = _pick(input, dropout_kernels, dropout_reference)
    return ops.dropout(input, p, seed)


def _dropout_setup_context(ctx, inputs, output):
    _, ctx.p, seed = inputs
    ctx.save_for_backward(seed)


def _dropout_backward(ctx, grad_output):
    # Dropout is linear in its input: the gradient is the same mask and scale applied
    # to grad_output, regenerated from the seed rather than stored.
    (seed,) = ctx.saved_tensors
    return _dropout(grad_output, ctx.p, seed), None, None


_dropout.register_autograd(_dropout_backward, setup_context=_dropout_setup_context)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    torch's signature and defaults; ``inplace=True`` is refused (ValueError). The mask
    comes from Philox on (seed, flat element index), with the seed drawn from the default
    generator of the input's device; it is regenerated in the backward and never stored.
    In eval mode or with p=0 the input is returned unchanged.
    """
    checks.tensor(input, "dropout: input")
    checks.dropout_p("dropout", p)
    if inplace:
        raise ValueError("dropout: inplace=True is not implemented (the result is a new tensor)")
    if not training or p == 0:
        return input
    return _dropout(input, float(p), _dropout_seed(input))


# --------------------------------------------------------------------------------------
# torch.fx
# --------------------------------------------------------------------------------------

# The public ops check their arguments' shapes, dtypes and devices and draw dropout's seed
# in Python, none of which a torch.fx Proxy has. Wrapped, each op is one call_function node
# of a traced graph, as torch.nn.functional.conv2d is, and its checks run when the graph
# runs: the same errors as eager. (torch.compile and torch.export trace through them to the
# triton_ops, alexnet_triton::conv2d_relu ...) Calls through this module
# (``F.conv2d_relu``) see the wrapping; a name imported elsewhere would need its own.
for _op in ("conv2d_relu", "linear", "linear_relu", "linear_relu_dropout",
            "local_response_norm", "max_pool2d", "dropout"):
    torch.fx.wrap(_op)
del _op
