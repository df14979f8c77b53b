"""alexnet_triton.functional: autograd wiring, gradcheck, dispatch, autocast, compile, errors."""
import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as TF

from alexnet_triton import functional as F
from alexnet_triton.kernels import conv2d_relu as conv2d_relu_kernels
from alexnet_triton.kernels.reference import dropout as dropout_reference
from helpers import assert_close, tolerance


def _randn(*shape, seed=0, dtype=torch.float64, device="cpu", requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(device, dtype)
    return x.requires_grad_(requires_grad)


def _reseeded(fn, seed=123):
    """fn with torch's generator reset before each call, so dropout draws the same mask."""
    def call(*args):
        torch.manual_seed(seed)
        return fn(*args)
    return call


# ---------------------------------------------------------------------------------------
# gradcheck in float64 on tiny shapes, through the interpreted kernels
# ---------------------------------------------------------------------------------------

GRADCHECK_CASES = {
    "conv2d_relu": (
        lambda x, w, b: F.conv2d_relu(x, w, b, stride=2, padding=1, groups=2),
        lambda: (_randn(2, 4, 7, 6, seed=1), _randn(6, 2, 3, 3, seed=2), _randn(6, seed=3)),
    ),
    "conv2d_relu_no_bias": (
        lambda x, w: F.conv2d_relu(x, w, None, stride=1, padding=2),
        lambda: (_randn(1, 3, 5, 5, seed=4), _randn(5, 3, 5, 5, seed=5)),
    ),
    "linear": (
        F.linear,
        lambda: (_randn(3, 7, seed=6), _randn(5, 7, seed=7), _randn(5, seed=8)),
    ),
    "linear_relu": (
        F.linear_relu,
        lambda: (_randn(2, 3, 7, seed=9), _randn(5, 7, seed=10), _randn(5, seed=11)),
    ),
    "linear_relu_dropout": (
        _reseeded(lambda x, w, b: F.linear_relu_dropout(x, w, b, p=0.5)),
        lambda: (_randn(4, 9, seed=12), _randn(6, 9, seed=13), _randn(6, seed=14)),
    ),
    "local_response_norm": (
        lambda x: F.local_response_norm(x * 30, size=3, alpha=1e-2, beta=0.75, k=2.0, groups=2),
        lambda: (_randn(2, 6, 3, 4, seed=15),),
    ),
    "max_pool2d": (
        lambda x: F.max_pool2d(x, 3, 2),
        lambda: (_randn(2, 3, 7, 5, seed=16),),
    ),
    "max_pool2d padding ceil_mode": (
        lambda x: F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True),
        lambda: (_randn(2, 3, 6, 5, seed=18),),
    ),
    "max_pool2d dilation": (
        lambda x: F.max_pool2d(x, 2, 2, padding=1, dilation=2, ceil_mode=True),
        lambda: (_randn(2, 3, 7, 6, seed=21),),
    ),
    "max_pool2d channels_last": (
        lambda x: F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2),
        lambda: (_randn(2, 3, 7, 5, seed=19),),
    ),
    "dropout": (
        _reseeded(lambda x: F.dropout(x, 0.3)),
        lambda: (_randn(3, 50, seed=17),),
    ),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_CASES))
def test_gradcheck_float64(name):
    fn, make_inputs = GRADCHECK_CASES[name]
    assert torch.autograd.gradcheck(fn, make_inputs(), fast_mode=True)


# ---------------------------------------------------------------------------------------
# dropout through autograd
# ---------------------------------------------------------------------------------------


def test_dropout_is_reproducible_under_manual_seed():
    x = _randn(4, 1000, dtype=torch.float32, requires_grad=False)
    torch.manual_seed(0)
    first = F.dropout(x, 0.5)
    torch.manual_seed(0)
    again = F.dropout(x, 0.5)
    different = F.dropout(x, 0.5)  # the generator moved on: a new mask
    assert torch.equal(first, again)
    assert not torch.equal(first == 0, different == 0)


def test_dropout_backward_uses_the_forward_mask():
    x = _randn(8, 513, dtype=torch.float32).detach().abs().add(0.1).requires_grad_()
    y = F.dropout(x, 0.4)
    y.backward(torch.ones_like(y))
    scale = float(dropout_reference.dropout_scale(0.4, torch.float32))
    assert torch.equal(x.grad != 0, y != 0)
    assert torch.all(x.grad[y != 0] == scale)


def test_dropout_eval_and_p_zero_return_the_input():
    x = _randn(3, 5, dtype=torch.float32)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert torch.equal(F.linear_relu_dropout(x, _randn(4, 5, seed=1, dtype=torch.float32),
                                             None, p=0.5, training=False),
                       F.linear_relu(x, _randn(4, 5, seed=1, dtype=torch.float32)))


def test_fused_fc_dropout_draws_the_standalone_mask():
    x = _randn(6, 33, dtype=torch.float32, requires_grad=False)
    w = _randn(40, 33, seed=1, dtype=torch.float32, requires_grad=False)
    b = _randn(40, seed=2, dtype=torch.float32, requires_grad=False)
    torch.manual_seed(5)
    fused = F.linear_relu_dropout(x, w, b, p=0.5)
    torch.manual_seed(5)
    unfused = F.dropout(F.linear_relu(x, w, b), 0.5)
    assert_close(fused, unfused, tolerance(torch.float32), "fc dropout")
    assert torch.equal(fused == 0, unfused == 0)


# ---------------------------------------------------------------------------------------
# a small AlexNet-shaped chain against torch.nn.functional, forward and backward
# ---------------------------------------------------------------------------------------


def _chain(ops, x, conv_w, conv_b, fc_w, fc_b):
    y = ops["conv"](x, conv_w, conv_b)
    y = ops["lrn"](y)
    y = ops["pool"](y)
    return ops["fc"](y.flatten(1), fc_w, fc_b)


TRITON_OPS = {
    "conv": lambda x, w, b: F.conv2d_relu(x, w, b, stride=4, padding=2, groups=1),
    "lrn": lambda y: F.local_response_norm(y, 5, 1e-4, 0.75, 2.0, groups=2),
    "pool": lambda y: F.max_pool2d(y, 3, 2),
    "fc": F.linear_relu,
}
TORCH_OPS = {
    "conv": lambda x, w, b: TF.relu(TF.conv2d(x, w, b, stride=4, padding=2)),
    "lrn": lambda y: torch.cat([TF.local_response_norm(h, 5, 1e-4, 0.75, 2.0)
                                for h in y.chunk(2, dim=1)], dim=1),
    "pool": lambda y: TF.max_pool2d(y, 3, 2),
    "fc": lambda x, w, b: TF.relu(TF.linear(x, w, b)),
}


def test_conv_lrn_pool_fc_chain_matches_torch():
    x = _randn(2, 3, 35, 35, seed=20, dtype=torch.float32)
    params = [_randn(16, 3, 11, 11, seed=21, dtype=torch.float32),
              _randn(16, seed=22, dtype=torch.float32),
              _randn(10, 16 * 3 * 3, seed=23, dtype=torch.float32),
              _randn(10, seed=24, dtype=torch.float32)]
    out = _chain(TRITON_OPS, x, *params)
    grads = torch.autograd.grad(out.sum(), [x, *params])
    leaves = [t.detach().double().requires_grad_() for t in (x, *params)]
    expected = _chain(TORCH_OPS, *leaves)
    expected_grads = torch.autograd.grad(expected.sum(), leaves)
    assert_close(out, expected.float(), tolerance(torch.float32), "output")
    for name, got, want in zip(["x", "conv_w", "conv_b", "fc_w", "fc_b"], grads, expected_grads):
        assert_close(got, want.float(), tolerance(torch.float32), name)


# ---------------------------------------------------------------------------------------
# dispatch, autocast, torch.compile
# ---------------------------------------------------------------------------------------


def test_cpu_tensors_run_the_triton_kernels_exactly_when_interpreting():
    # The suite runs interpreted on CPU machines and compiled (TRITON_INTERPRET=0) on a GPU.
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"
    assert F.uses_triton(torch.ones(1)) is interpreting
    if torch.cuda.is_available():
        assert F.uses_triton(torch.ones(1, device="cuda"))


def _run_python(code: str, interpret: str) -> str:
    env = {**os.environ, "TRITON_INTERPRET": interpret}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def test_without_interpreter_cpu_runs_the_reference_and_compiles_without_graph_breaks():
    out = _run_python("""
        import torch
        from alexnet_triton import functional as F
        x = torch.randn(2, 3, 19, 19, requires_grad=True)
        w = torch.randn(8, 3, 5, 5, requires_grad=True)
        b = torch.randn(8, requires_grad=True)
        fw = torch.randn(10, 8 * 4 * 4, requires_grad=True)

        def net(x):
            y = F.conv2d_relu(x, w, b, stride=2, padding=2)
            y = F.local_response_norm(y, 5, 1e-4, 0.75, 2.0, groups=2)
            y = F.max_pool2d(y, 3, 2)
            return F.linear(F.dropout(y.flatten(1), 0.5), fw)

        assert not F.uses_triton(x)
        torch.manual_seed(0)
        eager = net(x)
        eager.sum().backward()
        eager_grads = [t.grad.clone() for t in (x, w, b, fw)]
        for t in (x, w, b, fw):
            t.grad = None
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        torch.manual_seed(0)
        out = compiled(x)
        out.sum().backward()
        torch.testing.assert_close(out, eager)
        for got, want in zip((x.grad, w.grad, b.grad, fw.grad), eager_grads):
            torch.testing.assert_close(got, want)
        print("ok")
    """, interpret="0")
    assert out.strip() == "ok"


def test_compiles_without_graph_breaks_under_the_interpreter():
    x = _randn(2, 4, 9, 9, dtype=torch.float32)
    w = _randn(6, 2, 3, 3, seed=1, dtype=torch.float32)

    def net(x):
        y = F.local_response_norm(F.conv2d_relu(x, w, None, padding=1, groups=2), 5, groups=2)
        return F.max_pool2d(y, 3, 2)

    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(net(x).sum(), x)
    assert_close(out, net(x), tolerance(torch.float32), "output")
    assert_close(grad, expected_grad, tolerance(torch.float32), "grad")


def test_an_image_is_folded_once_for_the_forward_and_the_weight_gradient(device, monkeypatch):
    """conv1's image (3 channels) is copied into the kernels' layout once a step: the forward
    makes the copy and the weight gradient reads it; the gradients are torch's, eager and
    compiled. (Compiled, a triton_op's body is traced on fake tensors, which take the
    references: only the eager run counts the kernels' copies.)"""
    folds = []
    fold = conv2d_relu_kernels.conv2d_relu_fold_input
    monkeypatch.setattr(conv2d_relu_kernels, "conv2d_relu_fold_input",
                        lambda *args: folds.append(args) or fold(*args))
    x = _randn(2, 3, 19, 21, dtype=torch.float32, device=device, requires_grad=False)
    w = _randn(8, 3, 11, 11, seed=1, dtype=torch.float32, device=device)
    b = _randn(8, seed=2, dtype=torch.float32, device=device)

    def net(x):
        return F.conv2d_relu(x, w, b, stride=4, padding=2)

    leaves = [t.detach().double().requires_grad_() for t in (w, b)]
    expected = torch.relu(TF.conv2d(x.double(), *leaves, stride=4, padding=2))
    expected_grads = torch.autograd.grad((expected * expected).sum(), leaves)
    for run in (net, torch.compile(net, backend="aot_eager", fullgraph=True)):
        folds.clear()
        out = run(x)
        grads = torch.autograd.grad((out * out).sum(), [w, b])
        if run is net:
            assert len(folds) == 1
        assert_close(out, expected.float(), tolerance(torch.float32), "output")
        for name, got, want in zip(("weight", "bias"), grads, expected_grads):
            assert_close(got, want.float(), tolerance(torch.float32), f"grad {name}")


def test_autocast_casts_gemm_operands_to_the_autocast_dtype():
    x = _randn(2, 3, 9, 9, dtype=torch.float32)
    w = _randn(4, 3, 3, 3, seed=1, dtype=torch.float32)
    fw = _randn(5, 4 * 7 * 7, seed=2, dtype=torch.float32)
    # float16 stands in for bfloat16, which Triton's interpreter cannot compute.
    with torch.autocast("cpu", dtype=torch.float16):
        y = F.conv2d_relu(x, w)
        logits = F.linear(y.flatten(1), fw)
    assert y.dtype == torch.float16 and logits.dtype == torch.float16
    # The reference sees the same float16 operands, and rounds y to float16 as autocast does.
    x16, w16, fw16 = (t.detach().half().double() for t in (x, w, fw))
    y16 = TF.relu(TF.conv2d(x16, w16)).half().double()
    assert_close(y, TF.relu(TF.conv2d(x16, w16)).half(), tolerance(torch.float16), "fp16 conv")
    assert_close(logits, TF.linear(y16.flatten(1), fw16).half(), tolerance(torch.float16),
                 "fp16 logits")
    logits.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32


# ---------------------------------------------------------------------------------------
# bad input: a clear ValueError or TypeError naming what was expected
# ---------------------------------------------------------------------------------------

_x = torch.randn(2, 4, 9, 9)
_w = torch.randn(6, 2, 3, 3)

BAD_INPUTS = [
    ("conv rank", lambda: F.conv2d_relu(torch.randn(4, 9, 9), _w, groups=2), ValueError, r"4-D \[N, C, H, W\]"),
    ("conv weight rank", lambda: F.conv2d_relu(_x, torch.randn(6, 2, 3), groups=2), ValueError, "4-D"),
    ("conv channels", lambda: F.conv2d_relu(_x, _w), ValueError, "4 channels but weight expects 2"),
    ("conv groups", lambda: F.conv2d_relu(_x, torch.randn(5, 2, 3, 3), groups=2), ValueError, "groups=2"),
    ("conv dtype", lambda: F.conv2d_relu(_x.double(), _w, groups=2), TypeError, "does not match input dtype"),
    ("conv int input", lambda: F.conv2d_relu(_x.long(), _w, groups=2), TypeError, "floating-point"),
    ("conv bias shape", lambda: F.conv2d_relu(_x, _w, torch.randn(5), groups=2), ValueError, r"shape \[6\]"),
    ("conv too small", lambda: F.conv2d_relu(torch.randn(1, 2, 2, 2), torch.randn(3, 2, 5, 5)), ValueError, "does not fit"),
    ("conv stride", lambda: F.conv2d_relu(_x, _w, stride=0, groups=2), ValueError, "stride must be positive"),
    ("conv padding type", lambda: F.conv2d_relu(_x, _w, padding="same", groups=2), TypeError, "pair of ints"),
    ("linear features", lambda: F.linear(torch.randn(2, 7), torch.randn(3, 8)), ValueError, "7 features but weight expects 8"),
    ("linear dtype", lambda: F.linear_relu(torch.randn(2, 8), torch.randn(3, 8).double()), TypeError, "dtype"),
    ("linear weight rank", lambda: F.linear(torch.randn(2, 8), torch.randn(8)), ValueError, "2-D"),
    ("linear int", lambda: F.linear(torch.ones(2, 8, dtype=torch.int32), torch.randn(3, 8)), TypeError, "floating-point"),
    ("dropout p=1", lambda: F.dropout(_x, 1.0), ValueError, r"\[0, 1\)"),
    ("dropout p<0", lambda: F.dropout(_x, -0.1), ValueError, r"\[0, 1\)"),
    ("fc dropout p", lambda: F.linear_relu_dropout(torch.randn(2, 8), torch.randn(3, 8), p=1.5), ValueError, r"\[0, 1\)"),
    ("dropout int", lambda: F.dropout(torch.ones(3, dtype=torch.int64)), TypeError, "floating-point"),
    ("lrn rank", lambda: F.local_response_norm(torch.randn(4, 9), 5), ValueError, "4-D"),
    ("lrn groups", lambda: F.local_response_norm(torch.randn(1, 5, 3, 3), 5, groups=2), ValueError, "groups=2"),
    ("lrn size", lambda: F.local_response_norm(_x, size=0), ValueError, "size"),
    ("lrn no size", lambda: F.local_response_norm(_x), TypeError, "size"),
    ("lrn int", lambda: F.local_response_norm(torch.ones(1, 4, 3, 3, dtype=torch.int32), 5), TypeError, "floating-point"),
    ("pool too big", lambda: F.max_pool2d(torch.randn(1, 2, 2, 2), 3, 2), ValueError, "larger than the 2x2 input"),
    ("pool rank", lambda: F.max_pool2d(torch.randn(9, 9), 3), ValueError, "4-D"),
    ("pool int", lambda: F.max_pool2d(torch.ones(1, 1, 5, 5, dtype=torch.uint8), 3), TypeError, "floating-point"),
    ("pool window", lambda: F.max_pool2d(torch.randn(1, 1, 20, 20), 12, 1), ValueError, "int8"),
    ("pool padding", lambda: F.max_pool2d(torch.randn(1, 1, 9, 9), 3, 2, padding=2), ValueError, "at most half"),
    ("pool dilation", lambda: F.max_pool2d(torch.randn(1, 1, 9, 9), 3, 2, dilation=0), ValueError, "dilation must be positive"),
    ("pool dilated too big", lambda: F.max_pool2d(torch.randn(1, 1, 9, 9), 3, 2, dilation=5), ValueError, "larger than"),
    ("pool no kernel", lambda: F.max_pool2d(torch.randn(1, 1, 9, 9)), TypeError, "kernel_size"),
    ("dropout inplace", lambda: F.dropout(_x, 0.5, inplace=True), ValueError, "inplace"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_a_clear_error(case):
    _, call, error, message = case
    with pytest.raises(error, match=message):
        call()


def test_interpreted_launches_need_no_wrap_triton(monkeypatch):
    """torch 2.11's wrap_triton refuses the interpreter's InterpretedFunction (2.13 passes it
    through): interpreted launches must not depend on it. Every wrap_triton the kernel
    modules can reach raises as 2.11's does; the interpreted ops still run."""
    import importlib
    import pkgutil

    import alexnet_triton.kernels as package

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("about the interpreter")

    def rejecting(kernel):
        if type(kernel).__name__ == "InterpretedFunction":
            raise RuntimeError("wrap_triton only works on functions annotated with triton.jit "
                               "or triton.autotune")
        return kernel

    modules = [package] + [importlib.import_module(f"{package.__name__}.{m.name}")
                           for m in pkgutil.iter_modules(package.__path__) if not m.ispkg]
    for module in modules:
        if hasattr(module, "wrap_triton"):
            monkeypatch.setattr(module, "wrap_triton", rejecting)
    x = torch.randn(2, 8, 9, 9)
    y = F.max_pool2d(F.local_response_norm(F.dropout(x, 0.5), 5, groups=2), 3, 2)
    w = torch.randn(8, 8, 3, 3, requires_grad=True)
    out = F.linear(F.conv2d_relu(y, w, padding=1).flatten(1), torch.randn(5, 8 * 16))
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(w.grad).all()


def test_the_skipped_kernel_search_would_find_no_kernel():
    """functional registers its triton_ops without torch's search of their bodies for
    kernels (4 s an import), with the empty list the search returns. Run it: once it finds
    a kernel in any op's body, that op must register what it finds."""
    import torch._library.triton as library

    search = getattr(library, "get_inner_triton_kernels", None)
    if search is None:
        pytest.skip(f"torch {torch.__version__} registers triton_ops without the search")
    registered = {name: kernels for name, kernels in library.triton_ops_to_kernels.items()
                  if name.startswith("alexnet_triton::")}
    assert set(F._OP_BODIES) == set(registered) and len(registered) == 13
    for name, body in F._OP_BODIES.items():
        assert registered[name] == [] and search(body) == [], name
    # the search is torch's own again after the registrations
    assert torch.library.triton_op.__globals__["get_inner_triton_kernels"] is search


# --------------------------------------------------------------------------------------
# torch.nn.functional's names, signatures and defaults (issue 14)
# --------------------------------------------------------------------------------------


def _parameters(function) -> dict:
    return {name: (p.kind, p.default) for name, p in inspect.signature(function).parameters.items()}


# torch's max_pool2d is a boolean dispatch over return_indices; _max_pool2d carries the
# signature both halves share.
TORCH_SIGNATURES = [
    ("local_response_norm", torch.nn.functional.local_response_norm, {"groups": 1}),
    ("max_pool2d", torch.nn.functional._max_pool2d, {}),
    ("dropout", torch.nn.functional.dropout, {}),
]


@pytest.mark.parametrize("name, theirs, extra", TORCH_SIGNATURES, ids=[c[0] for c in TORCH_SIGNATURES])
def test_signature_and_defaults_are_torch_functional(name, theirs, extra):
    ours = _parameters(getattr(F, name))
    torch_params = _parameters(theirs)
    # torch's parameters first, in torch's order, with torch's defaults; then our extras.
    assert list(ours)[:len(torch_params)] == list(torch_params)
    for param, (kind, default) in torch_params.items():
        assert ours[param][1] == default, f"{name}({param}=...): {ours[param][1]!r} != {default!r}"
    assert {p: d for p, (_, d) in list(ours.items())[len(torch_params):]} == extra


def test_torch_defaults_compute_torch_functions():
    # What a port from torch.nn.functional writes, with the defaults: the same function.
    x = _randn(2, 6, 9, 8, seed=20, dtype=torch.float32)
    torch_f = torch.nn.functional
    assert torch.equal(F.max_pool2d(x, 3), torch_f.max_pool2d(x, 3))
    assert torch.equal(F.max_pool2d(x, 2, padding=1, ceil_mode=True),
                       torch_f.max_pool2d(x, 2, padding=1, ceil_mode=True))
    assert_close(F.local_response_norm(x * 20, 3), torch_f.local_response_norm(x * 20, 3),
                 tolerance(torch.float32), "lrn defaults")
    ours, indices = F.max_pool2d(x, 3, 2, 1, 2, return_indices=True)
    theirs, torch_indices = torch_f.max_pool2d(x, 3, 2, 1, 2, return_indices=True)
    assert torch.equal(ours, theirs) and torch.equal(indices, torch_indices)
    assert torch.equal(F.max_pool2d(x[0], 3, 2), torch_f.max_pool2d(x[0], 3, 2))  # [C, H, W]
