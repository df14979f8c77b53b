"""alexnet_triton.model against the torch.nn reference model, in both placements."""
import io

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from alexnet_triton import functional as F
from alexnet_triton.model import MIN_INPUT_SIZE, AlexNet, alexnet, torchvision_alexnet
from alexnet_triton.models.reference import ReferenceAlexNet
from helpers import assert_close, tolerance

PARAMETER_NAMES = [f"{layer}.{kind}" for layer in
                   ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
                   for kind in ("weight", "bias")]
PARAMETER_SHAPES = {
    "conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
    "fc7": (4096, 4096), "fc8": (1000, 4096),
}
PLACEMENTS = {"one-device": None, "two-columns": ("cpu", "cpu")}


@pytest.fixture
def reference_kernels(monkeypatch):
    """Route CPU tensors to the PyTorch references instead of the interpreter.

    A whole AlexNet through Triton's interpreter takes about a minute forward and backward;
    the tests that need many passes use the references, which compute the same function
    (the kernel tests prove that), and a few tests below run the interpreted kernels.
    """
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not F.uses_triton(torch.ones(1))


def _images(n, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen)


def _pair(devices, num_classes=1000, dropout=0.5, seed=0):
    """Our model and the reference with the same weights."""
    torch.manual_seed(seed)
    model = AlexNet(num_classes=num_classes, dropout=dropout, devices=devices)
    reference = ReferenceAlexNet(num_classes=num_classes, dropout=dropout)
    reference.load_state_dict(model.state_dict())
    return model, reference


# ---------------------------------------------------------------------------------------
# the paper's facts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_parameter_count_names_and_shapes(devices):
    model = AlexNet(devices=devices)
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    state = model.state_dict()
    assert list(state) == PARAMETER_NAMES
    for layer, shape in PARAMETER_SHAPES.items():
        assert tuple(state[f"{layer}.weight"].shape) == shape
        assert tuple(state[f"{layer}.bias"].shape) == shape[:1]
    assert alexnet(num_classes=10).fc8.weight_shape == (10, 4096)


def test_paper_initialization():
    torch.manual_seed(0)
    state = AlexNet().state_dict()
    for layer in PARAMETER_SHAPES:
        weight = state[f"{layer}.weight"]
        # N(0, 0.01): with >= 34,848 samples the sample std is within 2% and the mean within
        # 3 standard errors.
        assert abs(weight.std().item() - 0.01) < 2e-4, layer
        assert abs(weight.mean().item()) < 3 * 0.01 / weight.numel() ** 0.5, layer
        expected_bias = 0.0 if layer in ("conv1", "conv3") else 1.0
        assert torch.all(state[f"{layer}.bias"] == expected_bias), layer
    caffe = AlexNet(bias_init=0.1).state_dict()
    assert torch.all(caffe["fc6.bias"] == 0.1) and torch.all(caffe["conv1.bias"] == 0)


def test_placements_draw_the_same_weights_from_the_same_seed():
    torch.manual_seed(3)
    one = AlexNet(num_classes=10).state_dict()
    torch.manual_seed(3)
    two = AlexNet(num_classes=10, devices=("cpu", "cpu")).state_dict()
    for name in PARAMETER_NAMES:
        assert torch.equal(one[name], two[name]), name


# ---------------------------------------------------------------------------------------
# the same function as the reference model
# ---------------------------------------------------------------------------------------


# 127: pool5 maps of 3x3 averaged up to 6x6; 67: maps of 1x1, where fc6 folds its weight.
@pytest.mark.parametrize("size", [224, 127, 67])
@pytest.mark.parametrize("devices", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_logits_equal_the_reference_model(reference_kernels, devices, size):
    model, reference = _pair(devices)
    x = _images(2, size)
    with torch.no_grad():
        logits = model.eval()(x)
        expected = reference.eval().double()(x.double())
    assert logits.shape == (2, 1000)
    assert_close(logits, expected.float(), tolerance(torch.float32), "logits")


@pytest.mark.parametrize("size", [99, 67])
@pytest.mark.parametrize("devices", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_gradients_equal_the_reference_model(reference_kernels, devices, size):
    model, reference = _pair(devices, num_classes=10, dropout=0.0)
    reference.double()
    x = _images(2, size, seed=1)
    target = torch.tensor([3, 7])
    nn.functional.cross_entropy(model.train()(x), target).backward()
    nn.functional.cross_entropy(reference.train()(x.double()), target).backward()
    grads = _gathered_grads(model)
    for name, param in reference.named_parameters():
        assert_close(grads[name], param.grad.float(), tolerance(torch.float32), name)


def _gathered_grads(model: AlexNet) -> dict:
    """Each parameter's gradient under its state-dict name, columns concatenated."""
    grads = {}
    for layer in PARAMETER_SHAPES:
        module = getattr(model, layer)
        for kind in ("weight", "bias"):
            if module.split:
                parts = [getattr(module, f"{kind}_column{c}").grad for c in range(2)]
                grads[f"{layer}.{kind}"] = torch.cat(parts)
            else:
                grads[f"{layer}.{kind}"] = getattr(module, kind).grad
    return grads


def test_interpreted_kernels_give_the_reference_logits_in_both_placements():
    # The Triton kernels themselves (through the interpreter) on the whole network.
    torch.manual_seed(4)
    one = AlexNet(num_classes=10).eval()
    two = AlexNet(num_classes=10, devices=("cpu", "cpu")).eval()
    two.load_state_dict(one.state_dict())
    reference = ReferenceAlexNet(num_classes=10).eval().double()
    reference.load_state_dict(one.state_dict())
    # Small images (pool5 gives 1x1, which the average pool before fc6 spreads to 6x6): each
    # kernel at AlexNet's full size is tests/ops' (test_conv1_full_size, conv2-27, ...); 224
    # here took 24 s of the interpreter's time for no code path those do not take.
    x, small = _images(1, 67, seed=2), _images(1, 71, seed=3)
    with torch.no_grad():
        assert_close(one(x), reference(x.double()).float(), tolerance(torch.float32),
                     "one device")
        assert_close(two(small), reference(small.double()).float(), tolerance(torch.float32),
                     "two columns")


def test_interpreted_kernels_give_the_reference_gradients():
    torch.manual_seed(5)
    model = AlexNet(num_classes=10, dropout=0.0)
    reference = ReferenceAlexNet(num_classes=10, dropout=0.0).double()
    reference.load_state_dict(model.state_dict())
    x = _images(1, 67, seed=4)
    model(x).sum().backward()
    reference(x.double()).sum().backward()
    grads = _gathered_grads(model)
    for name, param in reference.named_parameters():
        assert_close(grads[name], param.grad.float(), tolerance(torch.float32), name)


def test_eval_turns_dropout_off(reference_kernels):
    model, _ = _pair(None, num_classes=10)
    x = _images(2, 67)
    with torch.no_grad():
        train = [model.train()(x) for _ in range(2)]
        evaluated = [model.eval()(x) for _ in range(2)]
    assert not torch.equal(train[0], train[1])
    assert torch.equal(evaluated[0], evaluated[1])


def test_channels_last_input(reference_kernels):
    model, _ = _pair(None, num_classes=10)
    x = _images(2, 67)
    with torch.no_grad():
        model.eval()
        assert_close(model(x.to(memory_format=torch.channels_last)), model(x),
                     tolerance(torch.float32), "channels_last")


# ---------------------------------------------------------------------------------------
# where the columns exchange data
# ---------------------------------------------------------------------------------------


class _MoveRecorder(TorchFunctionMode):
    """Counts every call that can move a tensor between devices made while active.

    Both columns sit on the CPU here, so a move is recognised by the call, not by its
    effect: Tensor.to with a device, copy_, cuda and cpu.
    """

    ALWAYS = {torch.Tensor.copy_, torch.Tensor.cuda, torch.Tensor.cpu}

    def __init__(self):
        super().__init__()
        self.moves = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.ALWAYS:
            self.moves += 1
        elif func is torch.Tensor.to:
            if "device" in kwargs or any(isinstance(a, (torch.device, str)) for a in args[1:]):
                self.moves += 1
        return func(*args, **kwargs)


def test_columns_exchange_data_only_where_the_paper_does(reference_kernels):
    model, _ = _pair(("cpu", "cpu"), num_classes=10, dropout=0.0)
    x = _images(2, 67)
    with model.record_transfers() as transfers, _MoveRecorder() as recorder:
        model(x).sum().backward()
    sites = [site for site, _, _ in transfers]
    # The image to each column; both columns' maps to each column at conv3, fc6 and fc7;
    # column 1's fc7 output to column 0 for fc8 (and column 0's to itself).
    assert sites == ["input"] * 2 + ["conv3"] * 4 + ["fc6"] * 4 + ["fc7"] * 4 + ["fc8"] * 2
    # Nothing else in the forward or the backward moved a tensor.
    assert recorder.moves == len(transfers)


def test_moving_a_two_column_model_moves_its_columns(reference_kernels):
    model, _ = _pair(("cpu", "cpu"), num_classes=10, dropout=0.0)
    model.to("meta")  # a device the forward's transfers must now follow
    assert model.column_devices == (torch.device("meta"),) * 2
    assert all(p.device.type == "meta" for p in model.parameters())
    model.to_empty(device="cpu").double()
    assert model.column_devices == (torch.device("cpu"),) * 2
    assert model(_images(1, 67).double()).dtype == torch.float64


def test_one_device_placement_moves_nothing(reference_kernels):
    model, _ = _pair(None, num_classes=10)
    with _MoveRecorder() as recorder:
        model(_images(1, 67)).sum().backward()
    assert recorder.moves == 0


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------


def test_state_dict_round_trips_between_placements():
    torch.manual_seed(6)
    two = AlexNet(num_classes=10, devices=("cpu", "cpu"))
    buffer = io.BytesIO()
    torch.save(two.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    one = AlexNet(num_classes=10)
    one.load_state_dict(saved, strict=True)
    back = AlexNet(num_classes=10, devices=("cpu", "cpu"), bias_init=0.5)
    back.load_state_dict(one.state_dict(), strict=True)
    for name, value in back.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert torch.equal(back.conv2.weight_column1, saved["conv2.weight"][128:])


def test_load_state_dict_reports_missing_unexpected_and_mismatched_keys():
    model = AlexNet(num_classes=10, devices=("cpu", "cpu"))
    state = model.state_dict()
    state["conv1.extra"] = torch.zeros(1)
    del state["fc8.bias"]
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc8.bias"] and result.unexpected_keys == ["conv1.extra"]
    with pytest.raises(RuntimeError, match="size mismatch for fc8.weight"):
        AlexNet(num_classes=5).load_state_dict(AlexNet(num_classes=10).state_dict())


# ---------------------------------------------------------------------------------------
# torchvision's variant
# ---------------------------------------------------------------------------------------


def _torchvision_alexnet_in_torch_nn(num_classes):
    """torchvision.models.alexnet's architecture, written out (torchvision is not on CI)."""
    model = nn.Module()
    model.features = nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )
    model.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    model.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model


@pytest.mark.parametrize("size", [224, 100])
def test_torchvision_alexnet_loads_a_torchvision_checkpoint(reference_kernels, size):
    torch.manual_seed(7)
    theirs = _torchvision_alexnet_in_torch_nn(1000).eval()
    ours = torchvision_alexnet(1000).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = _images(2, size)
    with torch.no_grad():
        expected = theirs.double()(x.double()).float()
        assert_close(ours(x), expected, tolerance(torch.float32), "logits")


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------

BAD_IMAGES = {
    "rank": torch.randn(3, 224, 224),
    "channels": torch.randn(1, 1, 224, 224),
    "too small": torch.randn(1, 3, MIN_INPUT_SIZE - 1, 224),
    "integer": torch.zeros(1, 3, 224, 224, dtype=torch.uint8),
}


@pytest.mark.parametrize("name", BAD_IMAGES)
def test_bad_images_raise_naming_the_expected_shape(name):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        AlexNet(num_classes=10)(BAD_IMAGES[name])


def test_smallest_input_is_accepted(reference_kernels):
    logits = AlexNet(num_classes=10).eval()(_images(1, MIN_INPUT_SIZE))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="pair"):
        AlexNet(devices=("cpu", "cpu", "cpu"))
    with pytest.raises(ValueError, match="num_classes"):
        AlexNet(num_classes=0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        AlexNet(dropout=1.0)


# ---------------------------------------------------------------------------------------
# torch.compile and autocast
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_compiles_without_graph_breaks(reference_kernels, devices):
    model, _ = _pair(devices, num_classes=10, dropout=0.0)
    x = _images(2, 67)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    logits = compiled(x)
    assert_close(logits, model(x), tolerance(torch.float32), "compiled logits")
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_autocast_runs_the_gemms_in_the_autocast_dtype(reference_kernels):
    model, _ = _pair(None, num_classes=10)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.eval()(_images(2, 67))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


# ---------------------------------------------------------------------------------------
# fc7 features and torchvision's builder signature
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("devices", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_fc7_features_are_the_reference_models_fc7_activations(reference_kernels, devices):
    torch.manual_seed(0)
    model = AlexNet(num_classes=10, devices=devices).eval()
    reference = ReferenceAlexNet(num_classes=10).eval()
    reference.load_state_dict(model.state_dict())
    reference.double()
    activations = {}
    reference.fc7.register_forward_hook(lambda module, inputs, output:
                                        activations.update(fc7=torch.relu(output)))
    x = _images(3, 67)
    with torch.no_grad():
        logits = reference(x.double()).float()
        features = model.fc7_features(x)
    assert features.shape == (3, 4096)
    assert_close(features, activations["fc7"].float(), tolerance(torch.float32), "fc7")
    assert_close(model.fc8(features), logits, tolerance(torch.float32), "logits")


def test_alexnet_builder_takes_torchvisions_weights_and_progress(tmp_path, reference_kernels):
    torch.manual_seed(0)
    trained = AlexNet(num_classes=7)
    torch.save(trained.state_dict(), tmp_path / "best_weights.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()},
                "epoch": 3}, tmp_path / "model_best.pth.tar")  # pytorch/examples' DDP file
    torch.save({"format": "alexnet_triton-checkpoint", "model": trained.state_dict(),
                "arch": {"name": "alexnet", "lrn": False, "overlapping_pool": True}},
               tmp_path / "best.pt")
    x = _images(2, 67)
    expected = trained.eval()(x)
    for name in ("best_weights.pt", "model_best.pth.tar", "best.pt"):
        model = alexnet(weights=tmp_path / name, progress=False)
        assert model.fc8.weight.shape == (7, 4096), name  # num_classes from the file
        assert model.use_lrn == (name != "best.pt"), name  # a checkpoint's arch is kept
        if name != "best.pt":
            assert torch.equal(model.eval()(x), expected), name
    assert alexnet(weights=None, progress=True, num_classes=3).fc8.weight.shape == (3, 4096)


@pytest.mark.parametrize("weights, words", [
    ("IMAGENET1K_V1", "would need a download"),
    ("DEFAULT", "would need a download"),
    ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "is a URL"),
    (object(), "is not a path"),
])
def test_alexnet_builder_downloads_nothing(weights, words):
    with pytest.raises(ValueError, match="downloads no weights") as error:
        alexnet(weights=weights)
    assert words in str(error.value)


def test_alexnet_builder_refuses_weights_of_another_network(tmp_path):
    torch.save(torchvision_alexnet(num_classes=5).state_dict(), tmp_path / "tv.pt")
    with pytest.raises(ValueError, match="no fc8.weight"):
        alexnet(weights=tmp_path / "tv.pt")
    torch.save(AlexNet(num_classes=5).state_dict(), tmp_path / "five.pt")
    with pytest.raises(ValueError, match="num_classes=9 but"):
        alexnet(weights=tmp_path / "five.pt", num_classes=9)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="does not load as weights"):
        alexnet(weights=tmp_path / "junk.pt")


def _set_defaults(monkeypatch, function, **changes) -> None:
    """Give ``function``'s parameters other defaults (by name, whatever their position)."""
    import inspect
    parameters = [p for p in inspect.signature(function).parameters.values()
                  if p.default is not inspect.Parameter.empty]
    positional = [p for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert set(changes) <= {p.name for p in parameters}, (function, changes)
    monkeypatch.setattr(function, "__defaults__",
                        tuple(changes.get(p.name, p.default) for p in positional))
    if function.__kwdefaults__:
        monkeypatch.setattr(function, "__kwdefaults__", {
            name: changes.get(name, value) for name, value in function.__kwdefaults__.items()})


def test_the_models_pass_the_papers_lrn_and_pool_values_explicitly(reference_kernels,
                                                                   monkeypatch):
    """The networks never lean on the ops' defaults: built and run with torch's defaults
    in their place (LRN k=1, pooling stride = the kernel size), every model computes the
    same logits from the same seed."""
    from alexnet_triton import layers
    from alexnet_triton.models.one_column import OneColumnAlexNet
    x = _images(2, 99)

    def logits():
        builders = [lambda: AlexNet(num_classes=5),
                    lambda: AlexNet(num_classes=5, devices=("cpu", "cpu")),
                    lambda: OneColumnAlexNet(num_classes=5),
                    lambda: torchvision_alexnet(num_classes=5)]
        outputs = []
        for build in builders:
            torch.manual_seed(0)
            with torch.no_grad():
                outputs.append(build().eval()(x))
        return outputs

    before = logits()
    _set_defaults(monkeypatch, F.local_response_norm, k=1.0)
    _set_defaults(monkeypatch, F.max_pool2d, stride=None)
    _set_defaults(monkeypatch, layers.LocalResponseNorm.__init__, k=1.0)
    _set_defaults(monkeypatch, layers.MaxPool2d.__init__, stride=None)
    for index, (old, new) in enumerate(zip(before, logits())):
        assert torch.equal(old, new), index
