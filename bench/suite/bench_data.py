"""The input pipeline: the loader's images/s from each store format with each decoder, on
real photographs at the paper's 256 px, and the augmentation.

Photographs: scikit-image's sample photos as ``python -m alexnet_triton sample-photos`` makes
them (515 train images: 5 classes, random crops; generated photo-like images where
scikit-image is not installed, said in extra_info), prepared by ``prepare --size 256`` into
three stores: ``jpeg-q95-444`` (the JPEG store before issue 19: quality 95, full chroma),
``jpeg-q90-420`` (prepare's default now) and ``raw`` (pixels, memory-mapped).

Per core: the loader reads in this process (``workers=0``), pinned to one core with one torch
thread, and the time is this process's CPU time: what one loader worker (thread or process)
adds on a machine with cores to spare. Beside it, on that core, Pillow alone decoding the
old store's bytes (no loader): the issue's baseline. Then all cores: ``workers`` threads
against as many processes, wall time.

The rate the GPU's training step consumes stands beside these in ``python -m
bench.suite.report``: measured where the model benchmarks ran, else the static report's
prediction (bench/results/static-sm90.json).

The Augmenter (random crop, flip, PCA lighting, mean subtraction) runs its PyTorch reference
on the CPU, on batches of the store's size; on a GPU its fused Triton kernel, at the paper's
size (256 -> 224, batch 128), on images already on the device.
"""
from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.suite.timing import cuda_timing, cycling, measure
from alexnet_triton.data import Augmenter, DatasetInfo, builtin_dataset, open_dataset, train_loader
from alexnet_triton.data.convert import prepare
from alexnet_triton.data.reading import Reading

LOADER_BATCH = 128
CPU_AUGMENT_BATCH = 64
GPU_AUGMENT_BATCH = int(os.environ.get("ALEXNET_BENCH_BATCH", "128"))
PAPER_IMAGE_SIZE, PAPER_CROP = 256, 224
PHOTOS_PER_CLASS = {"train": 103, "val": 4}  # 515 train images: four batches of 128
# name -> prepare's settings
STORE_FORMATS = {
    "jpeg-q95-444": dict(fmt="jpeg", quality=95, subsampling="4:4:4"),
    "jpeg-q90-420": dict(fmt="jpeg", quality=90, subsampling="4:2:0"),
    "raw": dict(fmt="raw"),
}
DEFAULT_STORE = "jpeg-q90-420"
# The per-core rates: CPU time of this process (pinned to one core).
per_core_timing = pytest.mark.benchmark(timer=time.process_time)


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


def photo_folder(root: Path) -> str:
    """scikit-image's sample photos as sample-photos makes them; generated ones without it."""
    try:
        from alexnet_triton.data.sample_photos import make_photo_folder
        make_photo_folder(root, PHOTOS_PER_CLASS["train"], PHOTOS_PER_CLASS["val"])
        return "scikit-image sample photos"
    except Exception:  # noqa: BLE001 - no scikit-image: photo-like generated images
        rng = np.random.default_rng(0)
        for split, count in PHOTOS_PER_CLASS.items():
            for name in "abcde":
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    photo_like(rng, PAPER_IMAGE_SIZE).save(folder / f"{i}.jpg", quality=92)
        return "generated photo-like images (no scikit-image)"


@pytest.fixture(scope="session")
def photo_stores(tmp_path_factory):
    """{format name: DatasetInfo} of the same photographs, and what the photographs are."""
    root = tmp_path_factory.mktemp("photos")
    source = photo_folder(root / "images")
    stores = {name: open_dataset(prepare(root / "images", root / name, size=PAPER_IMAGE_SIZE,
                                         workers=os.cpu_count() or 1, progress=False,
                                         **settings) and root / name)
              for name, settings in STORE_FORMATS.items()}
    return stores, source


@contextlib.contextmanager
def one_core():
    """This thread (and threads it starts) on one core, torch on one thread."""
    affinity, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(affinity)})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def random_images(n: int, size: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return images.to(device)


def store_bytes(info: DatasetInfo) -> float:
    return sum(f.stat().st_size for f in Path(info.root, "train").iterdir()
               if f.name.startswith(("shard-", "images.npy")))


def loader_epoch(info: DatasetInfo, workers: int, reading: Reading):
    """One pass over the store's batches. The loader is made once: its batch buffers are
    reused from pass to pass as they are from batch to batch within a long epoch (a
    4-batch epoch's fresh buffers would charge page faults that a real epoch pays once)."""
    loader = train_loader(info, LOADER_BATCH, epoch=0, seed=0, workers=workers, reading=reading)

    def epoch():
        for pixels, _ in loader:
            assert pixels.dtype == torch.uint8
    return epoch


READINGS = [(name, decoder) for name in STORE_FORMATS
            for decoder in (("simplejpeg", "pillow") if name != "raw" else ("none",))]


@per_core_timing
@pytest.mark.parametrize("store_format,decoder", READINGS, ids=[f"{n}-{d}" for n, d in READINGS])
def test_loader_images_per_core(benchmark, photo_stores, store_format, decoder):
    """One loader worker's rate: train_loader over the store, decoded in this process."""
    stores, source = photo_stores
    info = stores[store_format]
    reading = Reading(cpu_decoder=decoder if decoder != "none" else "auto")
    images = info.num_train // LOADER_BATCH * LOADER_BATCH
    benchmark.group = "data loader (one core)"
    default = store_format == DEFAULT_STORE and decoder == "simplejpeg"
    benchmark.extra_info.update(
        kind="data", stage=f"loader {store_format} {decoder}{' (default)' if default else ''}, "
                           f"one core", device="cpu", images_per_call=images,
        image_size=info.image_size, batch=LOADER_BATCH, photos=source,
        store=store_format, decoder=decoder, default_path=default,
        bytes_per_image=round(store_bytes(info) / info.num_train))
    with one_core():
        measure(benchmark, loader_epoch(info, 0, reading), torch.device("cpu"),
                warmup_calls=1, fixed_rounds=5)


@per_core_timing
def test_pillow_decode_alone_per_core(benchmark, photo_stores):
    """The baseline: Pillow alone decoding the old store format's bytes (q95 4:4:4), on one
    core, no loader around it."""
    stores, source = photo_stores
    info = stores["jpeg-q95-444"]
    decode_all, count = pillow_epoch(info)

    benchmark.group = "data loader (one core)"
    benchmark.extra_info.update(kind="data", stage="Pillow decode alone jpeg-q95-444, one core",
                                device="cpu", images_per_call=count,
                                image_size=info.image_size, photos=source,
                                store="jpeg-q95-444", decoder="pillow", baseline=True)
    with one_core():
        measure(benchmark, decode_all, torch.device("cpu"), warmup_calls=1, fixed_rounds=5)


def pillow_epoch(info: DatasetInfo):
    """Pillow alone decoding a JPEG store's training records, no loader around it."""
    index = np.load(Path(info.root, "train", "index.npy"))
    shard = Path(info.root, "train", "shard-00000.bin").read_bytes()
    records = [shard[offset:offset + length] for _, offset, length in index.tolist()]

    def decode_all():
        for data in records:
            with Image.open(io.BytesIO(data)) as image:
                np.asarray(image.convert("RGB"))
    return decode_all, len(records)


@per_core_timing
def test_default_path_against_pillow_per_core(benchmark, photo_stores):
    """Issue 19's goal as one measurement: on one core, rounds of the default path (the
    default store through the loader) alternate with rounds of Pillow alone on the old
    store, so that a busy neighbour or a clock change weighs on both alike; the timed rounds
    are the default path's, the ratio of the medians goes in extra_info."""
    stores, source = photo_stores
    default = stores[DEFAULT_STORE]
    pillow, pillow_images = pillow_epoch(stores["jpeg-q95-444"])
    loader = loader_epoch(default, 0, Reading())
    images = default.num_train // LOADER_BATCH * LOADER_BATCH

    with one_core():
        pillow()  # warm-up
        loader()
        rounds = []
        for _ in range(7):
            start = time.process_time()
            pillow()
            middle = time.process_time()
            loader()
            rounds.append((middle - start, time.process_time() - middle))
    pillow_rate = pillow_images / float(np.median([p for p, _ in rounds]))
    default_rate = images / float(np.median([d for _, d in rounds]))
    benchmark.group = "data loader (one core)"
    benchmark.extra_info.update(
        kind="data", stage=f"loader {DEFAULT_STORE} (default) against Pillow alone on "
                           f"jpeg-q95-444, alternating rounds, one core",
        device="cpu", images_per_call=images, image_size=default.image_size,
        batch=LOADER_BATCH, photos=source, pillow_images_per_s=round(pillow_rate),
        default_images_per_s=round(default_rate), gain_over_pillow=default_rate / pillow_rate)
    with one_core():
        measure(benchmark, loader, torch.device("cpu"), warmup_calls=0, fixed_rounds=3)


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_loader_workers(benchmark, photo_stores, loader):
    """The default store on every core: ``workers`` threads against as many processes."""
    stores, source = photo_stores
    info = stores[DEFAULT_STORE]
    workers = min(8, os.cpu_count() or 1)
    images = info.num_train // LOADER_BATCH * LOADER_BATCH
    benchmark.group = "data loader (all cores)"
    benchmark.extra_info.update(kind="data", stage=f"loader {DEFAULT_STORE} simplejpeg, "
                                                   f"{workers} {loader}",
                                device="cpu", images_per_call=images,
                                image_size=info.image_size, batch=LOADER_BATCH, photos=source,
                                workers=workers, loader=loader)
    measure(benchmark, loader_epoch(info, workers, Reading(loader=loader)), torch.device("cpu"),
            warmup_calls=1, fixed_rounds=3)


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


# -- the GPU: decoding there, and the training step fed from real data ---------------------

FEEDS = ["synthetic", "gpu-decode", "cpu-decode"]
FEED_STEPS = 8  # training steps a call: two epochs of the 512-image photo store


def records_batch(info: DatasetInfo, count: int):
    """The first ``count`` training records of a JPEG store as torchvision takes them."""
    index = np.load(Path(info.root, "train", "index.npy"))
    shard = Path(info.root, "train", "shard-00000.bin").read_bytes()
    return [torch.frombuffer(bytearray(shard[offset:offset + length]), dtype=torch.uint8)
            for _, offset, length in index[:count].tolist()]


@cuda_timing
def test_gpu_decode(benchmark, cuda, photo_stores):
    """torchvision.io.decode_jpeg on the GPU (nvJPEG), a batch of 128 stored records of the
    default store: the GPU decoder's images/s."""
    from alexnet_triton.data.gpu_decode import GpuDecoder, gpu_decode_unavailable

    reason = gpu_decode_unavailable(cuda)
    if reason is not None:
        pytest.skip(f"no GPU JPEG decoding here: {reason}")
    stores, source = photo_stores
    info = stores[DEFAULT_STORE]
    records = records_batch(info, LOADER_BATCH)
    decoder = GpuDecoder(info.image_size, cuda)
    benchmark.group = "data decode gpu"
    benchmark.extra_info.update(kind="data", stage=f"nvJPEG decode {DEFAULT_STORE}, batch "
                                                   f"{LOADER_BATCH}", device="cuda",
                                images_per_call=LOADER_BATCH, image_size=info.image_size,
                                batch=LOADER_BATCH, photos=source)
    measure(benchmark, lambda: torch.stack(decoder.decode(records)), cuda)


def feed(kind: str, info: DatasetInfo, device):
    """An endless stream of uint8 [B, 3, S, S] batches and labels: device-resident random
    ones (synthetic), or the photo store through the loader, decoded on the GPU or the CPU."""
    if kind == "synthetic":
        batches = [(random_images(LOADER_BATCH, PAPER_IMAGE_SIZE, device),
                    torch.randint(0, 5, (LOADER_BATCH,), device=device)) for _ in range(2)]
        while True:
            yield from batches
    reading = Reading(gpu_decode=kind == "gpu-decode")
    epoch = 0
    while True:
        yield from train_loader(info, LOADER_BATCH, epoch=epoch, seed=0,
                                workers=min(8, os.cpu_count() or 1), pin_memory=True,
                                reading=reading, device=device)
        epoch += 1


@cuda_timing
@pytest.mark.parametrize("kind", FEEDS)
def test_train_step_feed(benchmark, cuda, photo_stores, kind):
    """The bf16 training step (ours, both columns on one GPU, the Augmenter's fused kernel
    in front) fed from device-resident synthetic batches, or from the 256-px photo store
    through the loader with GPU or CPU decoding: side by side, the cost of real data."""
    from alexnet_triton.data.gpu_decode import gpu_decode_unavailable
    from alexnet_triton.model import AlexNet
    from alexnet_triton.training.engine import train_step

    if kind == "gpu-decode" and gpu_decode_unavailable(cuda) is not None:
        pytest.skip(f"no GPU JPEG decoding here: {gpu_decode_unavailable(cuda)}")
    stores, source = photo_stores
    info = stores[DEFAULT_STORE]
    torch.manual_seed(0)
    model = AlexNet(num_classes=len(info.classes)).to(cuda)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    augmenter = Augmenter(info, PAPER_CROP, device=cuda)
    generator = torch.Generator().manual_seed(0)
    batches = feed(kind, info, cuda)

    def steps():
        for _ in range(FEED_STEPS):
            images, labels = next(batches)
            train_step(model, optimizer, augmenter, generator, images, labels, cuda, True)

    benchmark.group = "train step feed"
    benchmark.extra_info.update(kind="data", stage=f"train step bf16 fed {kind}",
                                device="cuda", images_per_call=FEED_STEPS * LOADER_BATCH,
                                image_size=info.image_size, crop=PAPER_CROP,
                                batch=LOADER_BATCH, feed=kind, photos=source,
                                workers=min(8, os.cpu_count() or 1))
    measure(benchmark, steps, cuda, warmup_calls=2, fixed_rounds=5)
