"""The benchmarks' ops (bench/suite/bench_ops.py, which the GPU check's correctness phase runs)
and the static report's launches (bench/static/alexnet_launches.py, which its precompile phase
compiles) are the same layers: every launch is recorded as it calls its launcher and held
against the op of its layer. A drift between the two (lrn2 launched with groups=1 where the
model and the benchmarks use 2) would show on a GPU only as Triton cache misses."""
import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.static import alexnet_launches  # noqa: E402
from bench.suite.bench_ops import alexnet_ops  # noqa: E402

BATCH = 2


def _as_op(function: str, args: tuple, kwargs: dict) -> tuple:
    """A launcher's call as the layer it computes: (kind, input, weight, stride, padding,
    groups, relu, p), the fields of bench_ops.Op that a launch reads."""
    shape = tuple
    if function == "conv2d_relu_forward":
        x, w, _, stride, padding, groups = args
        return ("conv", shape(x.shape), shape(w.shape), stride[0], padding[0], groups)
    if function == "conv2d_relu_backward_input":
        _, _, w, x_shape, stride, padding, groups = args
        return ("conv", shape(x_shape), shape(w.shape), stride[0], padding[0], groups)
    if function == "conv2d_relu_fold_input":
        x, w_shape, stride, padding, groups = args
        return ("conv", shape(x.shape), shape(w_shape), stride[0], padding[0], groups)
    if function == "conv2d_relu_backward_weight":
        _, _, x, w_shape, stride, padding, groups = args
        return ("conv", shape(x.shape), shape(w_shape), stride[0], padding[0], groups)
    if function in ("lrn_forward", "lrn_backward"):
        return ("lrn", shape(args[0 if function == "lrn_forward" else 1].shape), kwargs["groups"])
    if function == "max_pool2d_forward":
        return ("pool", shape(args[0].shape))
    if function == "max_pool2d_backward":
        return ("pool", shape(args[2]))
    if function == "linear_forward":
        x, w, _, relu, p, _ = args
        return ("linear", shape(x.shape), shape(w.shape), relu, p)
    if function == "linear_backward_input":
        dy, out, w, p = args
        return ("linear", (dy.shape[0], w.shape[1]), shape(w.shape), out is not None, p)
    dy, out, x, p = args  # linear_backward_weight
    return ("linear", shape(x.shape), (dy.shape[1], x.shape[1]), out is not None, p)


def _op_as_launch(op) -> tuple:
    if op.kind == "conv":
        return ("conv", op.input, op.weight, op.stride, op.padding, op.groups)
    if op.kind == "lrn":
        return ("lrn", op.input, op.groups)
    if op.kind == "pool":
        return ("pool", op.input)
    return ("linear", op.input, op.weight, op.relu, op.p)


LAUNCHERS = {"conv2d_relu": ("conv2d_relu_fold_input", "conv2d_relu_forward",
                             "conv2d_relu_backward_input", "conv2d_relu_backward_weight"),
             "lrn": ("lrn_forward", "lrn_backward"),
             "max_pool2d": ("max_pool2d_forward", "max_pool2d_backward"),
             "linear": ("linear_forward", "linear_backward_input", "linear_backward_weight")}


@pytest.fixture
def recorded(monkeypatch) -> dict:
    """{launch name: what its launcher was called on}, the launchers replaced by recorders."""
    calls = []
    for module_name, functions in LAUNCHERS.items():
        module = importlib.import_module(f"alexnet_triton.kernels.{module_name}")
        for function in functions:
            monkeypatch.setattr(module, function, lambda *args, _f=function, **kwargs:
                                calls.append(_as_op(_f, args, kwargs)))
    launched = {}
    for name, launch in alexnet_launches.launches(torch.float32, batch=BATCH).items():
        if name.split(".")[0] in ("dropout", "augment"):
            continue
        calls.clear()
        launch()
        assert len(calls) == 1, (name, calls)
        launched[name] = calls[0]
    return launched


def test_every_launch_is_its_layers_benchmarked_op(recorded):
    ops = {op.name: _op_as_launch(op) for op in alexnet_ops(BATCH)}
    for name, call in recorded.items():
        layer = name.split(".")[0]
        assert call == ops[layer], f"{name} launches {call}, bench_ops has {ops[layer]}"


def test_the_launches_and_the_ops_are_the_same_layers(recorded):
    layers = {op.name for op in alexnet_ops(BATCH) if op.kind != "dropout"}
    assert {name.split(".")[0] for name in recorded} == layers
