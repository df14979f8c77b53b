"""The drop-in keeps torchvision's model contract, for every network of alexnet_triton.models.

As torchvision's own model tests state it: a torch.fx trace computes the eager logits (for
every input size) and keeps the eager errors; its nodes are filed under the state-dict
names, so fc7's features come out of a graph (create_feature_extractor where torchvision
imports, plain torch.fx always); torch.export's program survives save and load;
torch.compile(fullgraph=True) gives the eager logits; train and eval modes, the input
gradient and the state dict round trip. On the PyTorch reference kernels (a whole network
through Triton's interpreter takes minutes); the fx trace also under the interpreter.
"""
import io
import re
from pathlib import Path

import pytest
import torch
from torch import fx

from alexnet_triton.model import MIN_INPUT_SIZE, alexnet, torchvision_alexnet
from alexnet_triton.models import OneColumnAlexNet
from helpers import assert_close, tolerance
from train_support import use_reference_kernels

ROOT = Path(__file__).resolve().parent.parent.parent
PAPER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# torchvision's variant keeps torchvision's names: its conv and FC layers' slots.
TORCHVISION_LAYERS = ("features.0", "features.3", "features.6", "features.8", "features.10",
                      "classifier.1", "classifier.4", "classifier.6")
VARIANTS = {
    "one-device": (lambda: alexnet(weights=None, num_classes=10), PAPER_LAYERS),
    "two-columns": (lambda: alexnet(weights=None, num_classes=10, devices=("cpu", "cpu")),
                    PAPER_LAYERS),
    "one-column": (lambda: OneColumnAlexNet(num_classes=10), PAPER_LAYERS),
    "torchvision": (lambda: torchvision_alexnet(num_classes=10), TORCHVISION_LAYERS),
}
# 63 px leaves 1x1 maps after pool5 (fc6's folded weight), 99 px 2x2 (the adaptive pool).
SIZES = (MIN_INPUT_SIZE, 99)
F32 = tolerance(torch.float32)


@pytest.fixture
def reference_kernels(monkeypatch):
    use_reference_kernels(monkeypatch)


def _build(variant, seed=0):
    torch.manual_seed(seed)
    return VARIANTS[variant][0]()


def _images(n=2, size=MIN_INPUT_SIZE, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _last_node_of(graph_module, layer):
    """The last node traced inside module ``layer``: what torchvision's feature extractor
    returns for the name ``layer`` (fx records the module path of every node it traces)."""
    nodes = [node for node in graph_module.graph.nodes
             if _module_path(node) == layer or _module_path(node).startswith(layer + ".")]
    assert nodes, f"no node traced inside {layer}"
    return nodes[-1]


def _module_path(node):
    """The path of the innermost module whose call traced ``node`` ("" at the top)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _returning(graph_module, node):
    """A GraphModule whose output is ``node``'s value (its unused nodes removed)."""
    graph = fx.Graph()
    copies = {}
    for original in graph_module.graph.nodes:
        if original.op == "output":
            break
        copies[original] = graph.node_copy(original, lambda n: copies[n])
        if original is node:
            break
    graph.output(copies[node])
    extractor = fx.GraphModule(graph_module, graph)
    extractor.graph.eliminate_dead_code()
    extractor.recompile()
    return extractor


# ---------------------------------------------------------------------------------------
# torch.fx
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_trace_gives_the_eager_logits_at_every_input_size(reference_kernels, variant):
    model = _build(variant).eval()
    traced = fx.symbolic_trace(model)
    for size in SIZES:  # one graph: the size-dependent steps are nodes that choose when run
        x = _images(size=size)
        with torch.no_grad():
            assert_close(traced(x), model(x), F32, f"traced logits at {size} px")


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_trace_keeps_the_eager_errors(variant):
    model = _build(variant)
    traced = fx.symbolic_trace(model)
    bad = {"rank": torch.randn(3, 64, 64), "channels": torch.randn(1, 1, 64, 64),
           "too small": torch.randn(1, 3, MIN_INPUT_SIZE - 1, 64)}
    if variant != "one-column":  # its check names no dtype
        bad["integer"] = torch.zeros(1, 3, 64, 64, dtype=torch.uint8)
    for name, x in bad.items():
        with pytest.raises(ValueError, match=r"\[N, 3, H, W\]") as eager:
            model(x)
        with pytest.raises(ValueError) as graph:
            traced(x)
        assert str(graph.value) == str(eager.value), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_trace_in_train_mode_draws_the_eager_dropout_and_input_gradient(reference_kernels,
                                                                             variant):
    model = _build(variant).train()
    traced = fx.symbolic_trace(model)  # a trace keeps the mode it was traced in
    x = _images()
    grads = []
    for run in (model, traced):
        torch.manual_seed(7)
        x_run = x.clone().requires_grad_()
        logits = run(x_run)
        logits.square().sum().backward()
        grads.append((logits.detach(), x_run.grad))
    assert_close(grads[1][0], grads[0][0], F32, "train-mode logits")
    assert_close(grads[1][1], grads[0][1], F32, "input gradient")
    with torch.no_grad():
        assert not torch.equal(fx.symbolic_trace(model.eval())(x), grads[0][0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_fx_nodes_are_filed_under_the_state_dict_names(reference_kernels, variant):
    """The last node under each layer's name is that layer's whole output, as a forward
    hook sees it: torchvision's feature extractor takes "conv1" ... "fc8" to it."""
    model = _build(variant).eval()
    layers = VARIANTS[variant][1]
    assert {name.rsplit(".", 1)[0] for name in model.state_dict()} == set(layers)
    traced = fx.symbolic_trace(model)
    outputs = {}
    for layer in layers:
        model.get_submodule(layer).register_forward_hook(
            lambda module, inputs, output, layer=layer: outputs.update({layer: output}))
    x = _images()
    with torch.no_grad():
        model(x)
        for layer in layers:
            value = _returning(traced, _last_node_of(traced, layer))(x)
            expected = outputs[layer]
            if isinstance(expected, tuple):  # a split layer: both columns' maps
                assert isinstance(value, tuple) and len(value) == len(expected), layer
                value, expected = torch.cat(value, 1), torch.cat(expected, 1)
            assert_close(value, expected, F32, layer)


@pytest.mark.parametrize("variant", ["one-device", "two-columns", "one-column"])
def test_fc7_features_through_plain_fx(reference_kernels, variant):
    """create_feature_extractor's {"fc7": ...} without torchvision: fx, then a GraphModule
    whose output is the fc7 node."""
    model = _build(variant).eval()
    traced = fx.symbolic_trace(model)
    extractor = _returning(traced, _last_node_of(traced, "fc7"))
    x = _images()
    with torch.no_grad():
        features = extractor(x)
        if isinstance(features, tuple):  # two columns: each column's half of fc7
            features = torch.cat(features, 1)
        assert features.shape == (2, 4096)
        assert_close(features, model.fc7_features(x), F32, "fc7 features")


def test_fx_graph_calls_the_fused_ops(reference_kernels):
    """The fused ops are call_function nodes, as torch.nn.functional's are; export goes on
    down to the triton_ops."""
    traced = fx.symbolic_trace(_build("one-device").eval())
    called = [node.target.__name__ for node in traced.graph.nodes if node.op == "call_function"]
    assert called.count("conv2d_relu") == 5 and called.count("linear_relu_dropout") == 2
    assert {"check_images", "local_response_norm", "max_pool2d", "fc6_operands",
            "linear"} <= set(called)


def test_fx_trace_under_the_interpreter():
    """The Triton kernels (TRITON_INTERPRET=1) behind a traced graph: the eager logits."""
    model = _build("one-column").eval()
    x = _images(n=1)
    with torch.no_grad():
        assert_close(fx.symbolic_trace(model)(x), model(x), F32, "interpreted traced logits")


# ---------------------------------------------------------------------------------------
# torchvision's feature extraction: the README's example
# ---------------------------------------------------------------------------------------


def _readme_example(marker):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    found = [block for block in blocks if marker in block]
    assert len(found) == 1, marker
    return found[0]


def test_readme_takes_fc7_features_through_create_feature_extractor(reference_kernels):
    pytest.importorskip("torchvision.models.feature_extraction",
                        reason="torchvision does not import beside this torch")
    namespace = {}
    exec(_readme_example("create_feature_extractor"), namespace)
    features = namespace["features"]
    assert features["fc7"].shape == (2, 4096)
    with torch.no_grad():
        expected = namespace["model"].fc7_features(namespace["images"])
    assert_close(features["fc7"], expected, F32, "fc7 features")


# ---------------------------------------------------------------------------------------
# torch.export, torch.compile, the state dict
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_exported_program_round_trips_save_and_load(reference_kernels, variant):
    model = _build(variant).eval()
    x = _images()
    program = torch.export.export(model, (x,))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    targets = {str(node.target) for node in loaded.graph.nodes}
    assert "alexnet_triton.conv2d_relu.default" in targets, targets
    with torch.no_grad():
        assert_close(loaded.module()(x), model(x), F32, "exported logits")


@pytest.mark.parametrize("variant", VARIANTS)
def test_compiles_fullgraph_to_the_eager_logits(reference_kernels, variant):
    model = _build(variant).eval()
    x = _images()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        assert_close(compiled(x), model(x), F32, "compiled logits")


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trips(reference_kernels, variant):
    model = _build(variant).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    other = _build(variant, seed=1).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    x = _images()
    with torch.no_grad():
        assert torch.equal(other(x), model(x))
