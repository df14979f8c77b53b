"""How the loaders read a JPEG store: every way (threads, processes, in the calling thread;
simplejpeg or Pillow; the GPU path's plumbing with a CPU stand-in for nvJPEG) gives the same
batches, buffers are reused only when free, and a damaged store is skipped and listed, or
stopped in one line, never a hang."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_triton.data import DataError, eval_loader, open_dataset, train_loader
from alexnet_triton.data.convert import prepare
from alexnet_triton.data.gpu_decode import GpuDecoder, resolve_decode
from alexnet_triton.data.loaders import BatchBuffers, Batches, Reading
from alexnet_triton.data.store import StoredSplit
from test_decoders import photo_like

SIZE = 40
BATCH = 8
pytest.importorskip("simplejpeg", reason="simplejpeg is not installed")


def make_store(root, fmt="jpeg", per_class=(21, 5)):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val"), per_class):
        for name in ("a", "b", "c"):
            folder = root / "src" / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(photo_like(rng, 48, 52)).save(folder / f"{i}.png")
    prepare(root / "src", root / "store", size=SIZE, fmt=fmt, workers=1, progress=False)
    return open_dataset(root / "store")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("reading"))


def reference_batches(info, epoch=2, seed=5, start_batch=0):
    """The batches as Pillow decodes them into contiguous [B, 3, S, S] arrays."""
    split = StoredSplit(info.root, "train", "jpeg", info.image_size)
    from alexnet_triton.data.decoders import cpu_decoder
    out = []
    loader = train_loader(info, BATCH, epoch=epoch, seed=seed, workers=0)
    for indices in loader.batches[start_batch:]:
        out.append((torch.from_numpy(split.read(indices, cpu_decoder("pillow"))),
                    torch.from_numpy(split.labels[indices])))
    return out


READINGS = {
    "threads-0": (0, Reading()),
    "threads-1": (1, Reading()),
    "threads-3": (3, Reading(prefetch=3)),
    "threads-pillow": (2, Reading(cpu_decoder="pillow")),
    "processes-0": (0, Reading(loader="processes")),
    "processes-2": (2, Reading(loader="processes")),
}


@pytest.mark.parametrize("name", list(READINGS))
def test_every_way_of_reading_gives_the_same_batches(store, name):
    workers, reading = READINGS[name]
    want = reference_batches(store)
    # Kept as yielded, not cloned: a reused buffer would overwrite a batch still held.
    got = list(train_loader(store, BATCH, epoch=2, seed=5, workers=workers, reading=reading))
    assert len(got) == len(want) == store.num_train // BATCH
    for (images, labels), (want_images, want_labels) in zip(got, want):
        assert images.shape == (BATCH, 3, SIZE, SIZE) and images.dtype == torch.uint8
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_start_batch_and_eval_read_the_same_way(store):
    want = reference_batches(store, start_batch=3)
    got = list(train_loader(store, BATCH, epoch=2, seed=5, workers=2, start_batch=3))
    assert [torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want)] \
        == [True] * len(want)
    val = torch.cat([x for x, _ in eval_loader(store, 4, workers=2)])
    assert val.shape == (store.num_val, 3, SIZE, SIZE)


def test_batch_buffers_are_reused_only_when_free():
    buffers = BatchBuffers((4, 4, 3), pin_memory=False, keep=3)
    first, array = buffers.take(2)
    assert np.shares_memory(first.numpy(), array)
    first.fill_(7)
    held = first.permute(0, 3, 1, 2)  # a view keeps the buffer in use
    del first, array
    second, _ = buffers.take(2)
    assert second.data_ptr() != held.data_ptr()
    del held
    third, _ = buffers.take(2)  # the first buffer is free again: reused, no new pages
    assert int(third.flatten()[0]) == 7
    assert buffers.take(3)[0].shape == (3, 4, 4, 3)  # another batch size: its own buffer


def test_the_gpu_path_plumbing_with_a_cpu_stand_in_for_nvjpeg(store):
    """The records' buffer, offsets and labels, decoded one batch ahead, give the CPU path's
    batches (a CPU decode in nvJPEG's place: the GPU check runs the real one)."""
    import simplejpeg

    def stand_in(records):
        return [torch.from_numpy(simplejpeg.decode_jpeg(r.numpy().tobytes(), "RGB")).permute(2, 0, 1)
                for r in records]
    loader = train_loader(store, BATCH, epoch=2, seed=5, workers=0)
    got = list(GpuDecoder(SIZE, "cpu", stand_in).decoded(loader._records(), loader.skipped))
    want = reference_batches(store)
    assert len(got) == len(want) and not loader.skipped
    for (images, labels), (want_images, want_labels) in zip(got, want):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_the_gpu_path_leaves_out_and_lists_damaged_records(store, tmp_path, how):
    """A batch the GPU decoder refuses is decoded record by record: the damaged ones are
    left out and listed, the rest arrive as the CPU path's (a CPU stand-in for nvJPEG,
    strict as nvJPEG is about a broken stream)."""
    import simplejpeg

    def stand_in(records):
        return [torch.from_numpy(simplejpeg.decode_jpeg(r.numpy().tobytes(), "RGB",
                                                        strict=True)).permute(2, 0, 1)
                for r in records]
    info = damage(store, tmp_path, how)
    bad = set(range(store.num_train - 5, store.num_train)) if how == "truncated" else {3, 11}
    loader = train_loader(info, BATCH, epoch=2, seed=5, workers=0)
    got = list(GpuDecoder(SIZE, "cpu", stand_in).decoded(loader._records(), loader.skipped))
    assert sorted(i for i, _ in loader.skipped) == sorted(
        i for b in loader.batches for i in b.tolist() if i in bad)
    for (images, labels), (want_images, want_labels), indices in zip(
            got, reference_batches(store), loader.batches):
        keep = [k for k, i in enumerate(indices.tolist()) if i not in bad]
        assert torch.equal(images, want_images[keep]) and torch.equal(labels, want_labels[keep])


def test_choosing_the_gpu_decoder(store, tmp_path):
    assert resolve_decode("cpu", "cpu", "jpeg") is False
    assert resolve_decode("auto", "cpu", "jpeg") is False  # no CUDA: the CPU decodes
    with pytest.raises(DataError, match="--decode gpu: JPEGs cannot be decoded on cpu: cpu is not a CUDA"):
        resolve_decode("gpu", "cpu", "jpeg")
    with pytest.raises(DataError, match="needs a JPEG store"):
        resolve_decode("gpu", "cuda", "raw")
    with pytest.raises(ValueError, match="unknown --decode 'fast'"):
        resolve_decode("fast", "cpu", "jpeg")
    with pytest.raises(ValueError, match="unknown loader 'fork'"):
        Reading(loader="fork")


def damage(info, tmp_path, how):
    """A copy of the store with its train shard damaged."""
    import shutil
    root = tmp_path / how
    shutil.copytree(info.root, root)
    shard = root / "train" / "shard-00000.bin"
    index = np.load(root / "train" / "index.npy")
    if how == "truncated":  # the last 5 records lie past the shard's end
        with open(shard, "r+b") as f:
            f.truncate(int(index[-5, 1]) + 10)
    elif how == "corrupt":  # records 3 and 11 overwritten with noise
        data = bytearray(shard.read_bytes())
        for i in (3, 11):
            _, offset, length = index[i].tolist()
            data[offset + 2:offset + length] = bytes(length - 2)
        shard.write_bytes(bytes(data))
    return open_dataset(root)


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
@pytest.mark.parametrize("reading", ["threads-3", "threads-0", "processes-2"])
def test_a_damaged_store_is_skipped_and_listed(store, tmp_path, how, reading):
    info = damage(store, tmp_path, how)
    bad = set(range(store.num_train - 5, store.num_train)) if how == "truncated" else {3, 11}
    workers, read = READINGS[reading]
    loader = train_loader(info, BATCH, epoch=2, seed=5, workers=workers, reading=read)
    batches = list(loader)
    assert sorted(i for i, _ in loader.skipped) == sorted(
        i for b in loader.batches for i in b.tolist() if i in bad)
    assert all(reason for _, reason in loader.skipped)
    want = reference_batches(store)
    for (images, labels), (want_images, want_labels), indices in zip(batches, want, loader.batches):
        keep = [k for k, i in enumerate(indices.tolist()) if i not in bad]
        assert torch.equal(images, want_images[keep]) and torch.equal(labels, want_labels[keep])


@pytest.mark.parametrize("loader", ["threads", "processes"])
def test_a_batch_with_no_readable_image_stops_in_one_line(store, tmp_path, loader):
    """One line also from a loader process (the DataLoader re-raised it with the worker's
    traceback in its message)."""
    info = damage(store, tmp_path, "truncated")
    split = StoredSplit(info.root, "train", "jpeg", info.image_size)
    batches = Batches(split, [np.array([store.num_train - 1, store.num_train - 2])], 0, 2,
                      False, Reading(loader=loader))
    with pytest.raises(DataError, match=r"^none of the 2 images of a batch could be read "
                                        r".*damaged; prepare the store again$"):
        list(batches)
    assert [i for i, _ in batches.skipped] == [store.num_train - 1, store.num_train - 2]


def _children():
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/children") as file:
        return {int(pid) for pid in file.read().split()}


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_loader_process_leaves_sigterm_to_its_trainer_unless_the_trainer_sends_it(store):
    """SIGTERM from elsewhere (`timeout`, Slurm: the whole group) is the trainer's to act
    on; from the trainer process itself (multiprocessing at its exit, torch ending a worker
    that does not finish) it ends the worker. A worker that ignored it held its trainer's
    exit forever."""
    before = _children()
    loader = train_loader(store, BATCH, epoch=0, seed=5, workers=1,
                          reading=Reading(loader="processes"))
    batches = iter(loader)
    next(batches)
    (worker,) = _children() - before
    subprocess.run(["kill", "-TERM", str(worker)], check=True)  # another process's
    next(batches)  # still serving
    assert _alive(worker)
    # torch's SIGCHLD handler would call the worker's end an error: set aside meanwhile
    torchs = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        os.kill(worker, signal.SIGTERM)  # this process's: the worker's trainer
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
        # Still without torch's handler: /proc shows a zombie before the kernel sends
        # SIGCHLD (and while the worker's other threads end), and once the loader is shut
        # down torch no longer counts the worker as its own.
        batches.close()
    finally:
        signal.signal(signal.SIGCHLD, torchs)


def test_what_the_run_header_says_of_the_reading():
    assert Reading().describe(8, "jpeg") == "JPEG decoded on the CPU by simplejpeg, 8 loader threads"
    assert Reading(cpu_decoder="pillow", loader="processes").describe(1, "jpeg") == \
        "JPEG decoded on the CPU by pillow, 1 loader process"
    assert Reading().describe(0, "raw") == "raw store (no decoding) in the training thread (--workers 0)"
    assert Reading().describe(2, "folder").startswith("image files decoded and rescaled on the CPU by Pillow")
    assert Reading(gpu_decode=True).describe(8, "jpeg").startswith("JPEG decoded on the GPU (nvJPEG")


def test_each_step_trains_on_the_same_images_whatever_the_world_size(store):
    """What a run resumed with another world size relies on (checkpointing.restore)."""
    def steps(world_size):
        loaders = [train_loader(store, BATCH // world_size, epoch=3, seed=5, workers=0,
                                rank=rank, world_size=world_size) for rank in range(world_size)]
        return [sorted(i for loader in loaders for i in loader.batches[k].tolist())
                for k in range(len(loaders[0]))]
    alone = steps(1)
    assert len(alone) == store.num_train // BATCH
    assert steps(2) == alone and steps(4) == alone and steps(8) == alone
