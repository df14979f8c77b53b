"""alexnet_triton/shapes.py, the table bench/ reads AlexNet's shapes from, against the models:
a forward of the torch.nn twin, every layer's input and output seen through hooks, and the
fused model's own layers (their weights, strides, paddings and groups)."""
import torch

from alexnet_triton.models import AlexNet, ReferenceAlexNet
from alexnet_triton.models.columns import COLUMNS
from alexnet_triton.shapes import (CROP_SIZE, LAYERS, Conv, FullyConnected, Pool, ResponseNorm,
                                   of_kind)

BATCH = 2
KIND = {Conv: "conv", ResponseNorm: "lrn", Pool: "pool", FullyConnected: "fc"}


def test_every_layer_of_a_forward_sees_the_tables_shapes():
    model = ReferenceAlexNet().eval()
    seen = []

    def record(kind):
        return lambda module, inputs, output: seen.append(
            (kind, tuple(inputs[0].shape), tuple(output.shape)))

    for name in (*of_kind(Conv), *of_kind(FullyConnected)):
        getattr(model, name).register_forward_hook(record(name))
    model.lrn.register_forward_hook(record("lrn"))  # one module for lrn1 and lrn2
    model.pool.register_forward_hook(record("pool"))  # and for pool1, pool2, pool5
    with torch.no_grad():
        model(torch.zeros(BATCH, 3, CROP_SIZE, CROP_SIZE))
    expected = [(name if KIND[type(layer)] in ("conv", "fc") else KIND[type(layer)],
                 layer.input(BATCH), layer.output(BATCH)) for name, layer in LAYERS.items()]
    assert seen == expected


def test_the_reference_models_layers_are_the_tables():
    model = ReferenceAlexNet()
    for name, conv in of_kind(Conv).items():
        module = getattr(model, name)
        assert (tuple(module.weight.shape), module.stride, module.padding, module.groups) == (
            conv.weight, (conv.stride,) * 2, (conv.padding,) * 2, conv.groups), name
    for name, fc in of_kind(FullyConnected).items():
        assert tuple(getattr(model, name).weight.shape) == fc.weight, name
    assert {norm.groups for norm in of_kind(ResponseNorm).values()} == {model.lrn.columns}
    assert {(pool.kernel, pool.stride) for pool in of_kind(Pool).values()} == {
        (model.pool.kernel_size, model.pool.stride)}


def test_the_fused_models_layers_are_the_tables():
    model = AlexNet()
    for name, conv in of_kind(Conv).items():
        module = getattr(model, name)
        assert (tuple(module.weight.shape), module.stride, module.padding, module.groups) == (
            conv.weight, conv.stride, conv.padding, conv.groups), name
    for name, fc in of_kind(FullyConnected).items():
        module = getattr(model, name)
        assert (tuple(module.weight.shape), module.relu, module.dropout > 0) == (
            fc.weight, fc.relu, fc.dropout), name
    # On one device both LRNs normalize each column apart: groups=COLUMNS.
    assert {norm.groups for norm in of_kind(ResponseNorm).values()} == {COLUMNS}
    assert {pool.kernel for pool in of_kind(Pool).values()} == {model.pool_kernel}
