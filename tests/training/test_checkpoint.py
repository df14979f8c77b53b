"""alexnet_triton.training.checkpoint: atomic writes, weights_only loading, RNG states, metrics, plots."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton.training import plots
from alexnet_triton.training.metrics import Totals, topk_correct
from alexnet_triton.training.run_dir import MetricsFile, read_metrics
from alexnet_triton.models import OneColumnAlexNet, build_model
from helpers import assert_close, tolerance


ARCH = {"name": "alexnet", "num_classes": 1, "dropout": 0.5, "lrn": True,
        "overlapping_pool": True, "bias_init": 1.0, "weight_std": 0.01}


def _state(**extra):
    data = {"image_size": 72, "crop_size": 63, "mean": torch.zeros(3, 72, 72),
            "eigval": torch.zeros(3), "eigvec": torch.eye(3)}
    return {"format": ckpt.FORMAT, "version": ckpt.VERSION, "arch": ARCH, "classes": ["a"],
            "data": data, "model": {"w": torch.arange(4.0)}, **extra}


def test_save_replaces_atomically_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ckpt.save(_state(epoch=1), path)
    assert ckpt.load(path)["epoch"] == 1

    def crash_halfway(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(_state(epoch=2), path)
    monkeypatch.undo()
    assert ckpt.load(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]  # no temporary left


def test_best_keeps_its_contents_when_latest_is_replaced(tmp_path):
    ckpt.save(_state(epoch=1), tmp_path / ckpt.LATEST)
    ckpt.link_atomically(tmp_path / ckpt.LATEST, tmp_path / ckpt.BEST)
    ckpt.save(_state(epoch=2), tmp_path / ckpt.LATEST)
    assert ckpt.load(tmp_path, names=(ckpt.BEST,))["epoch"] == 1
    assert ckpt.load(tmp_path)["epoch"] == 2


class Payload:
    """Anything that is not a tensor or a plain value."""

    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save(_state(extra=Payload()), path)
    with pytest.raises(ckpt.CheckpointError, match=r"weights_only=True.*pickled object"):
        ckpt.load(path)
    assert "would run" not in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ({"conv1.weight": torch.zeros(1)}, "not an alexnet_triton checkpoint"),
    ([1, 2, 3], "not an alexnet_triton checkpoint"),
    (None, "not a readable checkpoint"),
])
def test_files_that_are_not_checkpoints_are_refused(tmp_path, content, message):
    path = tmp_path / "file.pt"
    if content is None:
        path.write_bytes(b"\x00garbage" * 10)
    else:
        torch.save(content, path)
    with pytest.raises(ckpt.CheckpointError, match=message):
        ckpt.load(path)


def test_a_newer_version_is_refused(tmp_path):
    torch.save({**_state(), "version": ckpt.VERSION + 1}, tmp_path / "latest.pt")
    with pytest.raises(ckpt.CheckpointError, match="version"):
        ckpt.load(tmp_path)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    generator = torch.Generator().manual_seed(7)
    torch.manual_seed(3)
    random.seed(4)
    np.random.seed(5)
    np.random.normal()  # a cached Gaussian in NumPy's state
    ckpt.save(_state(rng=[ckpt.capture_rng(generator)]), tmp_path / "latest.pt")

    def draws():
        return (torch.rand(3).tolist(), torch.rand(3, generator=generator).tolist(),
                random.random(), np.random.normal(), np.random.rand())

    expected = draws()
    draws()
    ckpt.restore_rng(ckpt.load(tmp_path)["rng"][0], generator)
    assert draws() == expected


def test_trainer_checkpoints_hold_only_plain_data(trained_run):
    state = torch.load(trained_run / ckpt.LATEST, weights_only=True)
    assert state["format"] == ckpt.FORMAT
    assert state["data"]["mean"].shape == (3, 72, 72) and state["data"]["crop_size"] == 63
    assert set(state["rng"][0]) == {"torch", "cuda", "augment", "python", "numpy"}
    model = build_model(state["arch"])
    ckpt.load_model_state(model, state)


def test_a_checkpoint_of_another_network_is_refused_by_name():
    state = _state()
    state["arch"] = {"name": "alexnet"}
    state["model"] = OneColumnAlexNet(num_classes=10).state_dict()
    with pytest.raises(ckpt.CheckpointError, match="different network.*conv1.weight"):
        ckpt.load_model_state(build_model({"name": "alexnet", "num_classes": 10,
                                           "dropout": 0.5, "lrn": True,
                                           "overlapping_pool": True, "bias_init": 1.0,
                                           "weight_std": 0.01}), state)


# ---------------------------------------------------------------------------------------
# the one-column ablation, metrics and plots
# ---------------------------------------------------------------------------------------


def test_one_column_net_is_the_papers_one_gpu_net():
    model = OneColumnAlexNet(num_classes=1000)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["conv1.weight"] == (48, 3, 11, 11)
    assert shapes["conv2.weight"] == (128, 48, 5, 5)
    assert shapes["conv3.weight"] == (192, 128, 3, 3)
    assert shapes["conv4.weight"] == (192, 192, 3, 3)
    assert shapes["conv5.weight"] == (256, 192, 3, 3)  # not halved, as the footnote says
    assert shapes["fc6.weight"] == (4096, 9216) and shapes["fc7.weight"] == (4096, 4096)
    assert model.conv3.bias.eq(0).all() and model.conv2.bias.eq(1).all()
    assert abs(model.fc7.weight.std().item() - 0.01) < 1e-4


@pytest.mark.parametrize("size", [127, 67])  # 67: 1x1 pool5 maps, fc6 folds its weight
def test_one_column_net_computes_the_plain_pytorch_net(size, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the ops' PyTorch references
    torch.manual_seed(0)
    model = OneColumnAlexNet(num_classes=10).eval()
    w = {name: p.detach().double() for name, p in model.named_parameters()}
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))

    def conv(h, layer, padding, stride=1):
        return torch.relu(TF.conv2d(h, w[f"{layer}.weight"], w[f"{layer}.bias"], stride, padding))

    def lrn_pool(h):
        return TF.max_pool2d(TF.local_response_norm(h, 5, 1e-4, 0.75, 2.0), 3, 2)

    h = lrn_pool(conv(lrn_pool(conv(x.double(), "conv1", 2, 4)), "conv2", 2))
    h = TF.max_pool2d(conv(conv(conv(h, "conv3", 1), "conv4", 1), "conv5", 1), 3, 2)
    h = TF.adaptive_avg_pool2d(h, 6).flatten(1)
    h = torch.relu(TF.linear(h, w["fc6.weight"], w["fc6.bias"]))
    h = torch.relu(TF.linear(h, w["fc7.weight"], w["fc7.bias"]))
    expected = TF.linear(h, w["fc8.weight"], w["fc8.bias"])
    with torch.no_grad():
        assert_close(model(x), expected.float(), tolerance(torch.float32), "one column")


def test_topk_counts():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_correct(logits, labels, ks=(1, 2, 5)).tolist() == [1, 2, 3]
    totals = Totals()
    totals.add(torch.tensor(3.0), logits, labels)
    result = totals.result()
    assert result["val_top1_error"] == pytest.approx(2 / 3) and result["val_loss"] == 1.0


def test_metrics_file_appends_and_rewrites(tmp_path):
    metrics = MetricsFile(tmp_path / "metrics.csv")
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0, "val_top1_error": 0.5,
             "val_top5_error": 0.1, "lr": 0.01, "epoch_seconds": 3.0,
             "images_per_second": 100.0} for e in (1, 2, 3)]
    for row in rows:
        metrics.append(row)
    assert [row["epoch"] for row in read_metrics(metrics.path)] == [1, 2, 3]
    metrics.rewrite(rows[:1])  # a run resumed from its epoch-1 checkpoint
    assert [row["epoch"] for row in read_metrics(metrics.path)] == [1]


def test_conv1_grid_puts_each_column_in_its_own_row_block(tmp_path):
    weight = torch.zeros(96, 3, 11, 11)
    weight[:48, 0] = torch.linspace(0, 1, 11)  # column 1: red ramps; column 2: green ramps
    weight[48:, 1] = torch.linspace(0, 1, 11)
    grid = plots.kernel_grid(weight, columns=2)
    rows = 3 * 12  # per column: 3 rows of 16 kernels, 11 px + a 1 px gap each
    assert grid.shape == (1 + rows + 3 + rows, 1 + 16 * 12, 3)  # a 3 px gap between blocks
    top, bottom = grid[1:1 + rows], grid[1 + rows + 3:]
    assert top[..., 0].max() == 1 and top[..., 1][top[..., 1] < 1].max() == 0
    assert bottom[..., 1].max() == 1 and bottom[..., 0][bottom[..., 0] < 1].max() == 0
    path = plots.plot_conv1(weight, 2, tmp_path / "conv1.png", epoch=3)
    assert path.read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------
# malformed records: refused on load, in one line
# ---------------------------------------------------------------------------------------


def _system_payload():
    import os

    class System:
        def __reduce__(self):
            return (os.system, ("touch executed",))
    return System()


def test_a_blocked_global_is_named_whatever_torchs_wording(tmp_path, monkeypatch):
    """torch 2.13 says "unsupported GLOBAL posix.system whose module posix is blocked"."""
    monkeypatch.chdir(tmp_path)
    torch.save(_state(extra=_system_payload()), tmp_path / "evil.pt")
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load(tmp_path / "evil.pt")
    assert "pickled object (posix.system)" in str(error.value), error.value
    assert not (tmp_path / "executed").exists()


@pytest.mark.parametrize("damage, words", [
    (lambda state: state["data"].pop("mean"), ["data record", "'mean'"]),
    (lambda state: state["arch"].update(name="resnet50"), ["unknown architecture 'resnet50'"]),
    (lambda state: state["arch"].pop("lrn"), ["arch record", "'lrn'"]),
    (lambda state: state.update(classes=state["classes"][:3]), ["3 class names", "10 outputs"]),
    (lambda state: state["data"].update(mean=torch.zeros(3, 8, 8)), ["mean", "72"]),
])
def test_a_malformed_checkpoint_is_refused_on_load(damage, words, tmp_path, trained_run):
    state = torch.load(trained_run / ckpt.LATEST, weights_only=True)
    damage(state)
    torch.save(state, tmp_path / ckpt.LATEST)
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load(tmp_path)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_curves_show_the_learning_rate_and_top5_only_beyond_5_classes(tmp_path):
    rows = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e, "val_top1_error": 0.5 / e,
             "val_top5_error": 0.1 / e, "lr": lr} for e, lr in ((1, 0.01), (2, 0.01),
                                                                 (3, 0.001))]
    for classes, error_curves in ((10, 2), (5, 1)):
        figure = plots.curves_figure(rows, num_classes=classes)
        loss_axes, error_axes, lr_axes = figure.axes
        assert len(error_axes.get_lines()) == error_curves, classes
        assert lr_axes.get_title() == "learning rate"
        assert list(lr_axes.get_lines()[0].get_ydata()) == [0.01, 0.01, 0.001]
        plots.plt.close(figure)
    path = plots.plot_curves(rows, tmp_path / "curves.png", num_classes=5)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_history_rows_from_before_data_wait_resume(tmp_path, trained_run):
    """metrics.csv's data_wait came later: rows of older checkpoints lack it."""
    state = torch.load(trained_run / ckpt.LATEST, weights_only=True)
    for row in state["history"]:
        row.pop("data_wait", None)
    torch.save(state, tmp_path / ckpt.LATEST)
    ckpt.check_resumable(ckpt.load(tmp_path))


def test_another_programs_pickle_is_refused_without_torchs_warning(tmp_path, recwarn):
    """torch warns in two lines about the pickle protocol before it fails to read it."""
    import pickle
    (tmp_path / "other.pt").write_bytes(pickle.dumps({"weights": [1.0]}, protocol=4))
    with pytest.raises(ckpt.CheckpointError, match="not a readable checkpoint"):
        ckpt.load(tmp_path / "other.pt")
    assert [str(warning.message) for warning in recwarn] == []


# ---------------------------------------------------------------------------------------
# a full disk
# ---------------------------------------------------------------------------------------


def _epoch_end_state(epoch):
    """A checkpoint as an epoch's end writes it: epoch counts the finished ones, step 0."""
    return _state(epoch=epoch, step_in_epoch=0)


def test_a_real_enospc_during_a_write_says_disk_full(tmp_path):
    """torch.save turns the kernel's ENOSPC into "[enforce fail at inline_container.cc]
    unexpected pos": the temporary file is /dev/full here, where every write is ENOSPC."""
    import os
    from alexnet_triton.training.checkpointing import write
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    (tmp_path / f".{ckpt.LATEST}.tmp-{os.getpid()}").symlink_to("/dev/full")
    state = _epoch_end_state(2)
    state["model"] = {"w": torch.zeros(1 << 20)}  # past any write buffer
    message = write(state, tmp_path, best=False, keep=0)
    assert message is not None and "disk full (" in message and "MiB free" in message, message
    assert "end of epoch 2" in message and "enforce fail" not in message, message
    assert not (tmp_path / ckpt.LATEST).exists()


def test_too_little_room_names_the_epoch_that_just_ended(tmp_path, monkeypatch):
    """The checkpoint at the end of epoch 2 of a 2-epoch run said "epoch 3"."""
    import shutil
    from alexnet_triton.training.checkpointing import write
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1 << 20))
    message = write(_epoch_end_state(2), tmp_path, best=False, keep=0)
    assert "the checkpoint of the end of epoch 2 needs" in message, message
    message = write(_state(epoch=1, step_in_epoch=7), tmp_path, best=False, keep=0)
    assert "the checkpoint of epoch 2, step 7 needs" in message, message
