"""Every fused op at AlexNet's real shapes: ours against eager PyTorch and torch.compile.

One pytest-benchmark group per op, mode and dtype, holding three providers:
``triton`` (alexnet_triton.functional), ``eager`` (what a user writes: F.conv2d as nn.Conv2d
calls it, through cuDNN, then ReLU; F.local_response_norm on each column's maps;
F.max_pool2d; F.dropout; F.linear as nn.Linear calls it, then ReLU and dropout as the model
applies them) and ``compile`` (torch.compile of the eager function).

Modes: ``fwd`` is the forward under torch.no_grad (what inference costs); ``fwd+bwd`` is
the forward with autograd recording and the backward to every input that needs a gradient in
AlexNet (all but the images into conv1), through torch.autograd.grad with a random output
gradient. Batch 128 unless ALEXNET_BENCH_BATCH says otherwise; both columns on one device,
as AlexNet(devices=None) runs them (groups=2 where the paper's columns do not exchange).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as TF

from alexnet_triton import functional as F
from alexnet_triton.paper import LRN
from alexnet_triton.shapes import (DROPOUT_P, LAYERS, Conv, FullyConnected, Layer, Pool,
                                   ResponseNorm)
from alexnet_triton.testing import max_relative_error
from bench.suite.timing import (cuda_timing, cycling, fresh_dynamo, measure, peak_memory,
                          rotation_count, tensor_bytes)

pytestmark = cuda_timing

BATCH = int(os.environ.get("ALEXNET_BENCH_BATCH", "128"))
COMPILE_MODE = os.environ.get("ALEXNET_BENCH_COMPILE_MODE") or None  # None: torch's default
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
MODES = ["fwd", "fwd+bwd"]
PROVIDERS = ["triton", "eager", "compile"]
# A sanity bound on ours against eager (same inputs), not a test tolerance: the test suite
# checks the kernels; this only stops a benchmark from timing garbage.
SANITY = {"bf16": 5e-2, "fp32": 1e-2}


@dataclass(frozen=True)
class Op:
    """One op of AlexNet at its place in the network."""

    name: str
    kind: str  # conv, lrn, pool, dropout, linear
    input: Tuple[int, ...]  # [N, C, H, W] or [N, features]
    weight: Optional[Tuple[int, ...]] = None  # [K, C / groups, R, S] or [out, in]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    relu: bool = False
    p: float = 0.0
    input_grad: bool = True  # conv1's input is the images: no gradient in training

    @property
    def output(self) -> Tuple[int, ...]:
        n = self.input[0]
        if self.kind == "conv":
            k, _, r, s = self.weight
            h, w = self.input[2:]
            return (n, k, (h + 2 * self.padding - r) // self.stride + 1,
                    (w + 2 * self.padding - s) // self.stride + 1)
        if self.kind == "pool":
            c, h, w = self.input[1:]
            return (n, c, (h - 3) // 2 + 1, (w - 3) // 2 + 1)
        if self.kind == "linear":
            return (n, self.weight[0])
        return self.input

    @property
    def deterministic(self) -> bool:
        return self.p == 0 and self.kind != "dropout"

    def flops(self, mode: str) -> int:
        """Multiply-adds x 2 of the GEMMs; the backward does two such GEMMs (input and
        weight gradient), one when the input needs no gradient."""
        if self.kind == "conv":
            n, k, p, q = self.output
            c_per_group, r, s = self.weight[1:]
            forward = 2 * n * k * p * q * c_per_group * r * s
        elif self.kind == "linear":
            forward = 2 * self.input[0] * self.weight[0] * self.weight[1]
        else:
            return 0
        return forward if mode == "fwd" else forward * (3 if self.input_grad else 2)

    def bytes(self, mode: str, element_size: int) -> int:
        """The fewest bytes a memory-bound op must move: each tensor read or written once.

        Forward: input in, output out. Backward: output gradient in, input gradient out,
        and for LRN the input again (its gradient depends on it); nothing else is counted,
        not argmax indices nor dropout masks, which a kernel may or may not keep.
        """
        if self.kind not in ("lrn", "pool", "dropout"):
            return 0
        numel_in, numel_out = math.prod(self.input), math.prod(self.output)
        forward = numel_in + numel_out
        backward = numel_out + numel_in + (numel_in if self.kind == "lrn" else 0)
        return element_size * (forward if mode == "fwd" else forward + backward)


def layer_op(name: str, layer: Layer, n: int) -> Op:
    """One layer of alexnet_triton/shapes.py as the op that computes it at batch n."""
    if isinstance(layer, Conv):
        return Op(name, "conv", layer.input(n), layer.weight, stride=layer.stride,
                  padding=layer.padding, groups=layer.groups, input_grad=name != "conv1")
    if isinstance(layer, ResponseNorm):
        return Op(name, "lrn", layer.input(n), groups=layer.groups)
    if isinstance(layer, Pool):
        return Op(name, "pool", layer.input(n))
    return Op(name, "linear", layer.input(n), layer.weight, relu=layer.relu,
              p=DROPOUT_P if layer.dropout else 0.0)


def alexnet_ops(n: int) -> List[Op]:
    """AlexNet's ops in network order at batch n (224x224 crops), fc6's and fc7's dropouts
    also on their own after them."""
    ops = []
    for name, layer in LAYERS.items():
        ops.append(layer_op(name, layer, n))
        if isinstance(layer, FullyConnected) and layer.dropout:
            ops.append(Op(f"dropout{name[2:]}", "dropout", layer.output(n), p=DROPOUT_P))
    # The dropouts above are 1 MB: all in L2 and launch-bound. Dropout's bandwidth target
    # is measured on a conv1-sized tensor, far larger than L2.
    return ops + [Op("dropout-large", "dropout", LAYERS["conv1"].output(n), p=DROPOUT_P)]


OPS = alexnet_ops(BATCH)


def triton_function(op: Op) -> Callable:
    if op.kind == "conv":
        return lambda x, w, b: F.conv2d_relu(x, w, b, op.stride, op.padding, op.groups)
    if op.kind == "lrn":
        return lambda x: F.local_response_norm(x, groups=op.groups, **LRN)
    if op.kind == "pool":
        return lambda x: F.max_pool2d(x, 3, 2)
    if op.kind == "dropout":
        return lambda x: F.dropout(x, op.p, True)
    if op.p:
        return lambda x, w, b: F.linear_relu_dropout(x, w, b, op.p, True)
    if op.relu:
        return F.linear_relu
    return F.linear


def eager_function(op: Op) -> Callable:
    if op.kind == "conv":
        return lambda x, w, b: TF.relu(TF.conv2d(x, w, b, op.stride, op.padding, 1, op.groups))
    if op.kind == "lrn":
        if op.groups == 1:
            return lambda x: TF.local_response_norm(x, **LRN)
        # As ReferenceAlexNet: each column's maps normalized on their own.
        return lambda x: torch.cat([TF.local_response_norm(part, **LRN)
                                    for part in x.chunk(op.groups, dim=1)], dim=1)
    if op.kind == "pool":
        return lambda x: TF.max_pool2d(x, 3, 2)
    if op.kind == "dropout":
        return lambda x: TF.dropout(x, op.p, True)

    def linear(x, w, b):
        y = TF.linear(x, w, b)
        if op.relu:
            y = TF.relu(y)
        if op.p:
            y = TF.dropout(y, op.p, True)
        return y

    return linear


def provider_function(op: Op, provider: str) -> Callable:
    if provider == "triton":
        return triton_function(op)
    if provider == "eager":
        return eager_function(op)
    fresh_dynamo()
    return torch.compile(eager_function(op), mode=COMPILE_MODE, dynamic=False)


@dataclass
class InputSet:
    args: Tuple[torch.Tensor, ...]  # what the op takes: (x,) or (x, w, b)
    grad_wrt: Tuple[torch.Tensor, ...]  # the leaves the backward differentiates
    grad_output: Optional[torch.Tensor]


def make_inputs(op: Op, dtype: torch.dtype, mode: str, device: torch.device,
                generator: torch.Generator) -> InputSet:
    """Random input, weight and bias (scaled as a trained layer's, unit-size outputs) and,
    for fwd+bwd, a random output gradient."""

    def randn(shape, scale=1.0):
        return (torch.randn(shape, device=device, dtype=torch.float32, generator=generator)
                * scale).to(dtype)

    backward = mode == "fwd+bwd"
    x = randn(op.input).requires_grad_(backward and op.input_grad)
    args, grad_wrt = (x,), ([x] if backward and op.input_grad else [])
    if op.weight is not None:
        fan_in = math.prod(op.weight[1:])
        w = randn(op.weight, fan_in ** -0.5).requires_grad_(backward)
        b = randn(op.weight[:1], 0.1).requires_grad_(backward)
        args = (x, w, b)
        if backward:
            grad_wrt += [w, b]
    grad_output = randn(op.output) if backward else None
    return InputSet(args, tuple(grad_wrt), grad_output)


def make_step(function: Callable, next_set: Callable[[], InputSet], mode: str) -> Callable:
    """One call of the op (and its backward) on the next input set; results are dropped,
    so memory is what one call needs."""
    if mode == "fwd":
        def step():
            inputs = next_set()
            with torch.no_grad():
                function(*inputs.args)
    else:
        def step():
            inputs = next_set()
            output = function(*inputs.args)
            torch.autograd.grad(output, inputs.grad_wrt, inputs.grad_output)
    return step


def check_against_eager(op: Op, dtype_name: str, inputs: InputSet, benchmark) -> None:
    """Ours against eager on one input set: no timing of a kernel that computes garbage."""
    if not op.deterministic:
        return
    with torch.no_grad():
        ours = triton_function(op)(*inputs.args)
        expected = eager_function(op)(*(a.float() for a in inputs.args))
    error = max_relative_error(ours, expected)
    benchmark.extra_info["relative_error_vs_eager"] = error
    assert error <= SANITY[dtype_name], (
        f"{op.name} {dtype_name}: ours differs from eager by {error:.3g} (relative to the "
        f"largest output) on the benchmark's inputs; not timing it")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_op(benchmark, cuda, op, dtype_name, mode, provider):
    dtype = DTYPES[dtype_name]
    benchmark.group = f"{op.name} {mode} {dtype_name}"
    generator = torch.Generator(cuda).manual_seed(OPS.index(op))
    first = make_inputs(op, dtype, mode, cuda, generator)
    set_bytes = tensor_bytes([*first.args, first.grad_output])
    # The same seed for every provider: all three see the same tensors.
    sets = [first] + [make_inputs(op, dtype, mode, cuda, generator)
                      for _ in range(rotation_count(set_bytes, cuda) - 1)]
    if provider == "triton":
        check_against_eager(op, dtype_name, first, benchmark)
    benchmark.extra_info.update(
        kind="op", op=op.name, op_kind=op.kind, order=OPS.index(op), mode=mode,
        dtype=dtype_name, provider=provider, batch=BATCH,
        shape="x".join(map(str, op.input)), output_shape="x".join(map(str, op.output)),
        weight_shape="x".join(map(str, op.weight)) if op.weight else None, groups=op.groups,
        flops=op.flops(mode), bytes=op.bytes(mode, dtype.itemsize), rotation=len(sets),
        compile_mode=(COMPILE_MODE or "default") if provider == "compile" else None)
    step = make_step(provider_function(op, provider), cycling(sets), mode)
    measure(benchmark, step, cuda)
    benchmark.extra_info.update(peak_memory(step, cuda))
