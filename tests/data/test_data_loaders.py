"""train_loader / eval_loader: order fixed by (seed, epoch), exact resume with start_batch,
disjoint rank shards, worker processes changing nothing, and raw folders read on the fly."""
from __future__ import annotations

import warnings

import pytest
import torch

from alexnet_triton.data import DataError, builtin_dataset, eval_loader, open_dataset, train_loader
from alexnet_triton.data.loaders import epoch_order
from test_prepare import make_image_folder


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    return builtin_dataset(tmp_path_factory.mktemp("cache"), quick=True)


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _labels(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_train_batches_are_full_and_typed(info):
    loader = train_loader(info, 16, epoch=0, seed=0, workers=0)
    assert len(loader) == info.num_train // 16
    batches = _batches(loader)
    assert len(batches) == len(loader)
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape == (16, 3, info.image_size, info.image_size)
        assert y.dtype == torch.int64 and y.shape == (16,)
        assert 0 <= int(y.min()) and int(y.max()) < len(info.classes)


def test_order_is_a_function_of_seed_and_epoch(info):
    a = _labels(train_loader(info, 8, epoch=3, seed=7, workers=0))
    assert a == _labels(train_loader(info, 8, epoch=3, seed=7, workers=0))
    assert a != _labels(train_loader(info, 8, epoch=4, seed=7, workers=0))
    assert a != _labels(train_loader(info, 8, epoch=3, seed=8, workers=0))
    # A permutation: each image at most once per epoch.
    order = epoch_order(info.num_train, 7, 3)
    assert sorted(order.tolist()) == list(range(info.num_train))


def test_workers_change_nothing(info):
    plain = _batches(train_loader(info, 12, epoch=1, seed=3, workers=0))
    parallel = _batches(train_loader(info, 12, epoch=1, seed=3, workers=2, pin_memory=True))
    assert len(plain) == len(parallel)
    for (x0, y0), (x1, y1) in zip(plain, parallel):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_start_batch_resumes_exactly(info):
    full = _batches(train_loader(info, 8, epoch=2, seed=5, workers=0))
    resumed_loader = train_loader(info, 8, epoch=2, seed=5, workers=0, start_batch=3)
    assert len(resumed_loader) == len(full)  # len() is the whole epoch
    resumed = _batches(resumed_loader)
    assert len(resumed) == len(full) - 3
    for (x0, y0), (x1, y1) in zip(full[3:], resumed):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert _batches(train_loader(info, 8, epoch=2, seed=5, workers=0, start_batch=len(full))) == []
    with pytest.raises(ValueError, match="start_batch"):
        train_loader(info, 8, epoch=2, seed=5, workers=0, start_batch=len(full) + 1)


def test_ranks_get_disjoint_shards(info):
    world, batch = 3, 5
    order = epoch_order(info.num_train, 1, 0)
    seen = []
    for rank in range(world):
        loader = train_loader(info, batch, epoch=0, seed=1, workers=0, rank=rank, world_size=world)
        per_rank = info.num_train // world
        assert len(loader) == per_rank // batch
        ids = _image_ids(info, loader)
        expected = order[:per_rank * world][rank::world][:len(loader) * batch]
        assert ids == expected.tolist()
        seen += ids
    assert len(seen) == len(set(seen))


def _image_ids(info, loader):
    """Index of each yielded image in the training split (images are distinct)."""
    everything = torch.cat([x for x, _ in eval_loader(info, 64, workers=0, split="train")])
    lookup = {bytes(everything[i].flatten().numpy()): i for i in range(len(everything))}
    return [lookup[bytes(img.flatten().numpy())] for x, _ in loader for img in x]


def test_eval_loader_covers_val_once_in_order(info):
    loader = eval_loader(info, 7, workers=0)
    assert len(loader) == -(-info.num_val // 7)
    sizes = [len(y) for _, y in loader]
    assert sum(sizes) == info.num_val and sizes[-1] == (info.num_val % 7 or 7)
    labels = _labels(loader)
    assert labels == sorted(labels)  # file order: class by class
    shards = [_labels(eval_loader(info, 4, workers=0, rank=r, world_size=3)) for r in range(3)]
    assert sum(len(s) for s in shards) == info.num_val
    merged = [None] * info.num_val
    for r, s in enumerate(shards):
        merged[r::3] = s
    assert merged == labels


def test_raw_folder_reads_on_the_fly_skipping_and_listing_unreadable_files(tmp_path):
    """Unreadable files are left out and listed when the folder is opened (as prepare does),
    never replaced by a neighbour: each validation image is counted once."""
    made = make_image_folder(tmp_path / "src", per_class=4)
    info = open_dataset(tmp_path / "src", image_size=32)
    assert not info.prepared and info.image_size == 32 and info.classes == ("cat", "dog")
    assert info.mean.shape == (3, 32, 32) and info.eigvec.shape == (3, 3)
    assert sorted(path for path, _ in info.skipped) == made["bad"]
    assert (info.num_train, info.num_val) == (made["good"]["train"], made["good"]["val"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val = _batches(eval_loader(info, 3, workers=0))
        batches = _batches(train_loader(info, 4, epoch=0, seed=0, workers=0))
    images = torch.cat([x for x, _ in val])
    assert len(images) == info.num_val
    assert len({image.numpy().tobytes() for image in images}) == info.num_val  # no duplicate
    assert len(batches) == info.num_train // 4
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.uint8


@pytest.mark.parametrize("case", ["empty folder", "only unreadable files"])
def test_a_class_without_readable_images_is_refused(case, tmp_path):
    make_image_folder(tmp_path / "src", per_class=2, messy=False)
    for split in ("train", "val"):
        (tmp_path / "src" / split / "bird").mkdir()
    if case == "only unreadable files":
        (tmp_path / "src" / "train" / "bird" / "0.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="bird has no (image files|readable images)"):
        open_dataset(tmp_path / "src", image_size=32)


def test_bad_arguments(info, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        train_loader(info, 0, epoch=0, seed=0, workers=0)
    with pytest.raises(ValueError, match="no full batch"):
        train_loader(info, info.num_train + 1, epoch=0, seed=0, workers=0)
    with pytest.raises(ValueError, match="rank"):
        train_loader(info, 4, epoch=0, seed=0, workers=0, rank=2, world_size=2)
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "info.json").write_text("{")
    with pytest.raises(DataError, match="not a readable prepared store"):
        open_dataset(tmp_path / "broken")


def test_loaders_leave_the_global_generator_alone(info):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for workers in (0, 1):
        for _ in train_loader(info, 8, epoch=0, seed=0, workers=workers):
            pass
        for _ in eval_loader(info, 8, workers=workers):
            pass
    assert torch.equal(torch.rand(3), expected)
