"""The input pipeline: decoding from a prepared JPEG store, and the augmentation.

The loader's rate is measured with ``workers=0``: one process reading and decoding, which is
the rate each worker process adds (worker start-up and the transfer between processes are
left out). Two JPEG stores, written once per session to a temporary directory: the built-in
generated dataset (``builtin_dataset(quick=True)``, 72-pixel images) and a paper-sized one
(256 pixels, prepared by ``python -m alexnet_triton.prepare`` from generated photo-like
images: smooth colour fields with noise, about as costly to decode as photographs at the
store's JPEG quality). The image size goes in extra_info beside the rate.

The Augmenter (random crop, flip, PCA lighting, mean subtraction) runs its PyTorch reference
on the CPU, on batches of the store's size; on a GPU its fused Triton kernel, at the paper's
size (256 -> 224, batch 128), on images already on the device.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.suite.timing import cuda_timing, cycling, measure

try:
    from alexnet_triton.data import (Augmenter, DatasetInfo, builtin_dataset, open_dataset,
                                     train_loader)
    from alexnet_triton.prepare import main as prepare_main
except ImportError:  # issue 4's data package not there yet
    DATA_AVAILABLE = False
else:
    DATA_AVAILABLE = True

pytestmark = pytest.mark.skipif(not DATA_AVAILABLE, reason="alexnet_triton.data not available")

LOADER_BATCH = 32
CPU_AUGMENT_BATCH = 64
GPU_AUGMENT_BATCH = int(os.environ.get("ALEXNET_BENCH_BATCH", "128"))
PAPER_IMAGE_SIZE, PAPER_CROP = 256, 224
PAPER_STORE_IMAGES = {"train": 48, "val": 8}  # per class, two classes


def auto_crop(image_size: int) -> int:
    """The trainer's default crop: 224 for 256-pixel stores, else an eighth off (>= 63)."""
    return PAPER_CROP if image_size == PAPER_IMAGE_SIZE else max(63, image_size - image_size // 8)


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    return builtin_dataset(tmp_path_factory.mktemp("builtin"), quick=True)


def photo_like(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth random colour field plus pixel noise: JPEG sizes like a photograph's."""
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (size, size), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.float32) + rng.normal(0.0, 12.0, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def paper_store(tmp_path_factory):
    """A 256-pixel JPEG store prepared by the CLI, from a generated ImageFolder."""
    root = tmp_path_factory.mktemp("paper")
    rng = np.random.default_rng(0)
    for split, count in PAPER_STORE_IMAGES.items():
        for name in ("a", "b"):
            folder = root / "images" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                photo_like(rng, PAPER_IMAGE_SIZE).save(folder / f"{i}.jpg", quality=95)
    status = prepare_main([str(root / "images"), str(root / "store"), "--size",
                           str(PAPER_IMAGE_SIZE), "--workers", "1", "--no-progress"])
    assert status == 0
    return open_dataset(root / "store")


@pytest.fixture(params=["builtin", "paper"])
def jpeg_store(request):
    return request.getfixturevalue("store" if request.param == "builtin" else "paper_store")


def random_images(n: int, size: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return images.to(device)


def test_loader_images_per_worker(benchmark, jpeg_store):
    """One pass over the store's training split, decoded in this process (workers=0)."""
    store = jpeg_store
    benchmark.group = "data loader"
    batch = min(LOADER_BATCH, store.num_train)
    loader = train_loader(store, batch, epoch=0, seed=0, workers=0)
    images = len(loader) * batch

    def epoch():
        for pixels, _ in loader:
            assert pixels.dtype == torch.uint8

    benchmark.extra_info.update(kind="data", stage="loader (per worker)", device="cpu",
                                images_per_call=images, image_size=store.image_size,
                                batch=batch)
    measure(benchmark, epoch, torch.device("cpu"), warmup_calls=1, fixed_rounds=5)


def test_augment_cpu(benchmark, store):
    """Augmenter.train on the CPU: the PyTorch reference of the fused kernel."""
    benchmark.group = "data augment cpu"
    crop = auto_crop(store.image_size)
    augmenter = Augmenter(store, crop, device="cpu")
    images = random_images(CPU_AUGMENT_BATCH, store.image_size, "cpu")
    generator = torch.Generator().manual_seed(0)
    benchmark.extra_info.update(kind="data", stage="augment", device="cpu",
                                images_per_call=CPU_AUGMENT_BATCH, image_size=store.image_size,
                                crop=crop, batch=CPU_AUGMENT_BATCH)
    measure(benchmark, lambda: augmenter.train(images, generator), torch.device("cpu"),
            warmup_calls=1, fixed_rounds=5)


def paper_sized_info(root: Path) -> "DatasetInfo":
    """Statistics of the right shapes for 256-pixel images, random but plausible."""
    generator = torch.Generator().manual_seed(0)
    eigvec, _ = torch.linalg.qr(torch.randn(3, 3, generator=generator))
    return DatasetInfo(root=root, classes=("a", "b"), image_size=PAPER_IMAGE_SIZE,
                       mean=torch.rand(3, PAPER_IMAGE_SIZE, PAPER_IMAGE_SIZE,
                                       generator=generator) * 255,
                       eigval=torch.tensor([0.2175, 0.0188, 0.0045]), eigvec=eigvec,
                       num_train=0, num_val=0)


@cuda_timing
def test_augment_gpu(benchmark, cuda, tmp_path):
    """Augmenter.train on the GPU at the paper's size: host draws plus one fused launch."""
    benchmark.group = "data augment gpu"
    augmenter = Augmenter(paper_sized_info(tmp_path), PAPER_CROP, device=cuda)
    # Two batches of 25 MB each: not both in L2.
    batches = [random_images(GPU_AUGMENT_BATCH, PAPER_IMAGE_SIZE, cuda) for _ in range(2)]
    generator = torch.Generator().manual_seed(0)
    next_batch = cycling(batches)

    def step():
        augmenter.train(next_batch(), generator)

    benchmark.extra_info.update(kind="data", stage="augment", device="cuda",
                                images_per_call=GPU_AUGMENT_BATCH,
                                image_size=PAPER_IMAGE_SIZE, crop=PAPER_CROP,
                                batch=GPU_AUGMENT_BATCH,
                                # each uint8 crop read once, each float32 output written
                                # once, the float32 mean read once
                                bytes=3 * PAPER_CROP**2 * (5 * GPU_AUGMENT_BATCH + 4))
    measure(benchmark, step, cuda)
