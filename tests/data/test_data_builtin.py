"""The built-in dataset: deterministic, cached, written where it is told, a prepared store."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_triton.data import builtin, builtin_dataset, open_dataset
from alexnet_triton.data.builtin import CLASSES, IMAGE_SIZE, draw_image


def test_quick_dataset_is_a_prepared_store(tmp_path):
    info = builtin_dataset(tmp_path, quick=True)
    assert info.classes == tuple(sorted(CLASSES)) and len(info.classes) == 10
    assert info.image_size == IMAGE_SIZE >= 63
    assert info.num_train == 10 * builtin.QUICK_TRAIN_PER_CLASS
    assert info.num_val == 10 * builtin.QUICK_VAL_PER_CLASS
    assert info.prepared and info.root == tmp_path / "store-quick"
    assert info.mean.shape == (3, IMAGE_SIZE, IMAGE_SIZE) and 20 < float(info.mean.mean()) < 235
    assert torch.allclose(info.eigvec.T @ info.eigvec, torch.eye(3), atol=1e-5)
    assert (info.eigval > 0).all() and (info.eigval[:-1] >= info.eigval[1:]).all()
    again = open_dataset(info.root)
    assert again.num_train == info.num_train and torch.equal(again.mean, info.mean)
    # Only tmp_path was written.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock-quick", "images-quick", "store-quick"]


def test_second_call_reuses_the_cache(tmp_path, monkeypatch):
    first = builtin_dataset(tmp_path, quick=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("generated twice")

    monkeypatch.setattr(builtin, "generate_images", forbidden)
    second = builtin_dataset(tmp_path, quick=True)
    assert torch.equal(first.mean, second.mean)


def test_generation_is_deterministic(tmp_path):
    a = builtin_dataset(tmp_path / "a", quick=True, workers=1)
    b = builtin_dataset(tmp_path / "b", quick=True, workers=2)
    for split in ("train", "val"):
        for name in ("labels.npy", "images.npy"):  # a raw store: pixels, no JPEG shards
            assert (a.root / split / name).read_bytes() == (b.root / split / name).read_bytes()


def test_every_class_draws_distinct_random_images():
    for label in range(len(CLASSES)):
        first = draw_image(label, np.random.default_rng([1, label]))
        assert first.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and first.dtype == np.uint8
        assert np.array_equal(first, draw_image(label, np.random.default_rng([1, label])))
        second = draw_image(label, np.random.default_rng([2, label]))
        assert np.abs(first.astype(int) - second).mean() > 10
        assert first.std() > 15  # something is drawn: not a flat colour


def test_default_cache_honours_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert builtin.default_cache_dir() == tmp_path / "alexnet_triton" / builtin.VERSION


def test_an_unwritable_cache_is_a_data_error(tmp_path):
    from alexnet_triton.data import DataError
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write the built-in dataset"):
        builtin_dataset(tmp_path / "file" / "cache", quick=True)
