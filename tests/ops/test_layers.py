"""alexnet_triton.layers: torch.nn's parameters and state dicts, the fused kernels' forward."""
import inspect

import pytest
import torch
from torch import nn

from alexnet_triton import functional as F
from alexnet_triton import layers
from helpers import assert_close, tolerance

PAIRS = [
    (lambda: layers.Conv2dReLU(4, 6, 3, stride=2, padding=1, groups=2),
     lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 9, 9)),
    (lambda: layers.Linear(7, 5), lambda: nn.Linear(7, 5), (3, 7)),
    (lambda: layers.LinearReLU(7, 5), lambda: nn.Linear(7, 5), (3, 7)),
    (lambda: layers.LinearReLUDropout(7, 5), lambda: nn.Linear(7, 5), (3, 7)),
]


@pytest.mark.parametrize("ours, theirs, shape", PAIRS)
def test_parameters_and_state_dict_are_torch_nn(ours, theirs, shape):
    torch.manual_seed(0)
    module = ours()
    torch.manual_seed(0)
    reference = theirs()
    assert {k: v.shape for k, v in module.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    # Same initialization too, since the constructors are torch's.
    for key, value in reference.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)
    module.load_state_dict(reference.state_dict())


def test_conv2d_relu_module_runs_the_fused_op():
    torch.manual_seed(1)
    conv = layers.Conv2dReLU(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.randn(2, 4, 9, 9)
    expected = torch.relu(nn.functional.conv2d(x.double(), conv.weight.double(),
                                               conv.bias.double(), 2, 1, 1, 2))
    assert_close(conv(x), expected.float(), tolerance(torch.float32), "conv")


def test_lrn_pool_dropout_modules():
    torch.manual_seed(2)
    x = torch.randn(1, 8, 13, 13) * 10
    lrn = layers.LocalResponseNorm(5, k=2.0, groups=2)
    assert "groups=2" in repr(lrn)
    assert_close(lrn(x), F.local_response_norm(x, 5, 1e-4, 0.75, 2.0, 2), 0.0, "lrn")
    assert layers.MaxPool2d(3, 2)(x).shape == (1, 8, 6, 6)
    assert torch.equal(layers.MaxPool2d(3)(x), nn.MaxPool2d(3)(x))  # stride = kernel size
    pool = layers.MaxPool2d(3, 2, padding=1, dilation=2, ceil_mode=True)
    assert torch.equal(pool(x), nn.MaxPool2d(3, 2, padding=1, dilation=2, ceil_mode=True)(x))
    with_indices = layers.MaxPool2d(2, return_indices=True)(x)
    assert all(torch.equal(a, b) for a, b in zip(with_indices, nn.MaxPool2d(2, return_indices=True)(x)))
    dropout = layers.Dropout(0.5)
    assert (dropout(x) == 0).any()
    dropout.eval()
    assert dropout(x) is x


# Each layer's constructor: torch's parameters in torch's order with torch's defaults,
# then its own extras (LocalResponseNorm's groups).
LAYER_SIGNATURES = [
    (layers.LocalResponseNorm, nn.LocalResponseNorm, {"groups": 1}),
    (layers.MaxPool2d, nn.MaxPool2d, {}),
    (layers.Dropout, nn.Dropout, {}),
]


@pytest.mark.parametrize("ours, theirs, extra", LAYER_SIGNATURES,
                         ids=[c[0].__name__ for c in LAYER_SIGNATURES])
def test_constructor_signature_and_defaults_are_torch_nn(ours, theirs, extra):
    def parameters(cls):
        return [(name, p.default) for name, p in
                inspect.signature(cls.__init__).parameters.items() if name != "self"]

    torch_params = parameters(theirs)
    assert parameters(ours)[:len(torch_params)] == torch_params
    assert dict(parameters(ours)[len(torch_params):]) == extra


def test_fc_dropout_is_off_in_eval_mode():
    torch.manual_seed(3)
    fc = layers.LinearReLUDropout(7, 5, p=0.5).eval()
    x = torch.randn(3, 7)
    assert torch.equal(fc(x), F.linear_relu(x, fc.weight, fc.bias))


def test_unsupported_options_are_rejected():
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2dReLU(3, 4, 3, padding="same")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        layers.Dropout(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        layers.LinearReLUDropout(3, 4, p=-1)
    with pytest.raises(ValueError, match="inplace"):
        layers.Dropout(0.5, inplace=True)
