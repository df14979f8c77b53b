"""python -m alexnet_triton.prepare on a messy image folder (corrupt, truncated, grayscale,
CMYK, palette, transparent, 16-bit, PNG, odd sizes) and on bad input (exit status 2, one
line, nothing written).

``make_image_folder`` is shared with the other data tests (imported from here).
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet_triton import prepare as prepare_cli
from alexnet_triton.data import DataError, eval_loader, load_image, open_dataset
from alexnet_triton.data.convert import prepare, remove_stale_temporaries
from alexnet_triton.data.stats import DatasetStats
from alexnet_triton.data.store import SplitWriter
from helpers import one_row_png

REPO = Path(__file__).resolve().parents[2]


def _rgb(rng, height, width):
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(image: Image.Image, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def make_image_folder(root: Path, *, seed: int = 0, messy: bool = True, per_class: int = 3,
                      classes=("cat", "dog")) -> dict:
    """An ImageFolder with `per_class` good RGB JPEGs per class and split, and (messy) every
    awkward kind of file in train/cat. Returns {"good": {split: n}, "bad": [relative paths]}."""
    rng = np.random.default_rng(seed)
    good = {"train": 0, "val": 0}
    for split in ("train", "val"):
        for name in classes:
            for i in range(per_class):
                height, width = (40, 56) if i % 2 else (60, 36)  # landscape and portrait
                _save(Image.fromarray(_rgb(rng, height, width)), root / split / name / f"{i}.jpg", quality=95)
                good[split] += 1
    bad = []
    if messy:
        d = root / "train" / "cat"
        _save(Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8), "L"), d / "gray.jpg")
        _save(Image.fromarray(_rgb(rng, 40, 40)).convert("CMYK"), d / "cmyk.jpg")
        _save(Image.fromarray(_rgb(rng, 33, 47)), d / "plain.png")
        rgba = np.concatenate([_rgb(rng, 40, 40), rng.integers(0, 256, (40, 40, 1), dtype=np.uint8)], 2)
        _save(Image.fromarray(rgba, "RGBA"), d / "alpha.png")
        palette = Image.fromarray(_rgb(rng, 40, 40)).convert("P", palette=Image.ADAPTIVE, colors=16)
        palette.info["transparency"] = 0
        _save(palette, d / "palette.png", transparency=0)
        _save(Image.fromarray(rng.integers(0, 65536, (40, 40), dtype=np.uint16)), d / "sixteen.png")
        _save(Image.fromarray(_rgb(rng, 8, 8)), d / "tiny.bmp")  # upscaled to the store's size
        good["train"] += 7
        buffer = io.BytesIO()
        Image.fromarray(_rgb(rng, 64, 64)).save(buffer, format="JPEG")
        (d / "truncated.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        (d / "corrupt.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
        (d / "empty.png").write_bytes(b"")
        (d / "one_row.png").write_bytes(one_row_png(2000, 2000))
        (d / "README.txt").write_text("not an image, not a failure")
        (root / "val" / "dog" / "broken.jpeg").write_bytes(b"\xff\xd8\xff\xe0 nothing more")
        bad = ["train/cat/corrupt.jpg", "train/cat/empty.png", "train/cat/one_row.png",
               "train/cat/truncated.jpg", "val/dog/broken.jpeg"]
        _save(Image.fromarray(_rgb(rng, 30, 30)), root / "val" / "cat" / "sub" / "nested.jpg")
        good["val"] += 1
    return {"good": good, "bad": bad}


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    return root / "src", make_image_folder(root / "src")


def _snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# -- a messy folder prepares, skipping only the unreadable files ------------------------------

@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_messy_folder_prepares(messy, tmp_path, fmt, capsys):
    src, expected = messy
    dst = tmp_path / "store"
    assert prepare_cli.main([str(src), str(dst), "--size", "24", "--format", fmt, "--workers", "2",
                             "--no-progress"]) == 0
    assert "skipped" in capsys.readouterr().out
    info = json.loads((dst / "info.json").read_text())
    assert info["classes"] == ["cat", "dog"] and info["image_size"] == 24 and info["format"] == fmt
    assert (info["train"], info["val"]) == (expected["good"]["train"], expected["good"]["val"])
    assert info["skipped"] == len(expected["bad"])
    logged = sorted(f"{split}/{file}" for split, file, _ in
                    (line.split("\t") for line in (dst / "skipped.log").read_text().splitlines()))
    assert logged == expected["bad"]
    assert (dst / "classes.txt").read_text() == "cat\ndog\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folder left behind"
    dataset = open_dataset(dst)
    assert dataset.image_size == 24 and dataset.num_train == info["train"] and dataset.prepared
    files = (dst / "train" / "files.txt").read_text().splitlines()
    assert "cat/cmyk.jpg" in files and "cat/README.txt" not in files
    labels = np.load(dst / "train" / "labels.npy")
    assert [labels[i] for i, f in enumerate(files) if f.startswith("dog/")] == [1] * 3
    if fmt == "raw":
        pixels = np.load(dst / "train" / "images.npy", mmap_mode="r")
        assert pixels.shape == (info["train"], 3, 24, 24)  # shrunk past the skipped files
        for i, file in enumerate(files):
            assert np.array_equal(pixels[i], load_image(src / "train" / file, 24).transpose(2, 0, 1)), file


def test_store_reads_back_what_was_decoded(messy, tmp_path):
    """Every image of the store equals the source image rescaled and cropped (JPEG-close for
    the jpeg store at full chroma resolution, exact for raw), in files.txt order, with its
    label. (These images are pixel noise, which 4:2:0 subsampling, the default, smears by
    design: test_default_jpeg_settings states its cost on smooth images.)"""
    src, _ = messy
    for fmt in ("jpeg", "raw"):
        dst = tmp_path / fmt
        prepare(src, dst, size=20, fmt=fmt, workers=1, progress=False, quality=95,
                subsampling="4:4:4")
        files = (dst / "val" / "files.txt").read_text().splitlines()
        images, labels = zip(*eval_loader(open_dataset(dst), 4, workers=0))
        images, labels = np.concatenate(images), np.concatenate(labels)
        for i, file in enumerate(files):
            want = load_image(src / "val" / file, 20).transpose(2, 0, 1).astype(int)
            error = np.abs(images[i].astype(int) - want)
            assert (error.max() == 0) if fmt == "raw" else (error.mean() < 6), (fmt, file, error.mean())
            assert labels[i] == ("cat", "dog").index(file.split("/")[0])


def test_statistics_are_over_every_training_pixel(messy, tmp_path):
    src, _ = messy
    dst = tmp_path / "store"
    prepare(src, dst, size=16, fmt="raw", workers=2, progress=False)
    pixels = np.load(dst / "train" / "images.npy").astype(np.float64)  # [N, 3, S, S]
    stats = DatasetStats.load(dst)
    assert stats.images == len(pixels)
    np.testing.assert_allclose(stats.mean, pixels.mean(0), rtol=1e-5, atol=1e-4)
    rgb = pixels.transpose(0, 2, 3, 1).reshape(-1, 3) / 255
    cov = np.cov(rgb.T, bias=True)
    np.testing.assert_allclose(stats.rgb_cov, cov, atol=1e-10)
    # eigval/eigvec decompose it: V diag(lambda) V^T = C, V orthonormal, lambda descending.
    v, lam = stats.eigvec.astype(np.float64), stats.eigval.astype(np.float64)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.T, cov, atol=1e-6)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-6)
    assert lam[0] >= lam[1] >= lam[2] >= 0


def test_the_store_does_not_depend_on_the_worker_count(messy, tmp_path):
    src, _ = messy
    prepare(src, tmp_path / "one", size=20, workers=1, progress=False)
    prepare(src, tmp_path / "two", size=20, workers=2, progress=False)
    one, two = _snapshot(tmp_path / "one"), _snapshot(tmp_path / "two")
    assert one.keys() == two.keys()
    assert {k: v for k, v in one.items() if k != "info.json"} == \
           {k: v for k, v in two.items() if k != "info.json"}


def test_shards_split_at_the_size_limit(messy, tmp_path):
    src, _ = messy
    dst = tmp_path / "store"
    prepare(src, dst, size=20, workers=1, progress=False, shard_bytes=2000)
    shards = sorted((dst / "train").glob("shard-*.bin"))
    assert len(shards) > 2
    reference = tmp_path / "one-shard"
    prepare(src, reference, size=20, workers=1, progress=False)
    a = np.concatenate([x for x, _ in eval_loader(open_dataset(dst), 5, workers=0, split="train")])
    b = np.concatenate([x for x, _ in eval_loader(open_dataset(reference), 5, workers=0, split="train")])
    assert np.array_equal(a, b)


# -- replacing and interrupting ----------------------------------------------------------------

def test_force_replaces_an_existing_store(messy, tmp_path):
    src, _ = messy
    dst = tmp_path / "store"
    prepare(src, dst, size=16, progress=False, workers=1)
    assert prepare_cli.main([str(src), str(dst), "--size", "20", "--no-progress", "--workers", "1",
                             "--force"]) == 0
    assert open_dataset(dst).image_size == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_an_empty_destination_folder_is_used(messy, tmp_path):
    src, _ = messy
    (tmp_path / "store").mkdir()
    prepare(src, tmp_path / "store", size=16, progress=False, workers=1)
    assert open_dataset(tmp_path / "store").image_size == 16


def test_an_interrupted_run_leaves_nothing(messy, tmp_path, monkeypatch):
    src, _ = messy
    dst = tmp_path / "store"
    prepare(src, dst, size=16, progress=False, workers=1)
    before = _snapshot(dst)
    calls = []

    def interrupt(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(SplitWriter, "add", interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, dst, size=20, progress=False, workers=2, force=True)
    assert _snapshot(dst) == before  # the old store is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_any_file_name_round_trips_through_files_txt(tmp_path, capsys):
    """A name that is not UTF-8 crashed prepare (UnicodeEncodeError writing files.txt); a
    newline, tab or backslash in one would break the one-name-a-line files."""
    from alexnet_triton.data.store import decode_name, read_names
    src = tmp_path / "src"
    make_image_folder(src, messy=False, per_class=1)
    names = [os.fsdecode(b"caf\xe9.jpg"), "new\nline.jpg", "tab\there.jpg", "back\\slash.jpg"]
    good = (src / "train" / "cat" / "0.jpg").read_bytes()
    for name in names:
        (src / "train" / "cat" / name).write_bytes(good)
    broken = os.fsdecode(b"bro\xffken\n.jpg")
    (src / "train" / "dog" / broken).write_bytes(b"not an image")
    assert prepare_cli.main([str(src), str(tmp_path / "store"), "--size", "16", "--workers", "1",
                             "--no-progress"]) == 0
    files = read_names(tmp_path / "store" / "train" / "files.txt")
    assert sorted(files) == sorted(["cat/0.jpg", "dog/0.jpg"] + [f"cat/{name}" for name in names])
    assert len(np.load(tmp_path / "store" / "train" / "labels.npy")) == len(files)
    lines = (tmp_path / "store" / "skipped.log").read_bytes().split(b"\n")[:-1]
    assert [[decode_name(field) for field in line.split(b"\t")][:2] for line in lines] == [
        ["train", f"dog/{broken}"]]
    assert read_names(tmp_path / "store" / "classes.txt") == ["cat", "dog"]


@pytest.mark.parametrize("name", [b"\xffbad", b"two\nlines"])
def test_a_class_folder_name_that_is_not_text_is_refused_by_name(name, tmp_path, capsys):
    src = tmp_path / "src"
    make_image_folder(src, messy=False, per_class=1, classes=("cat", os.fsdecode(name)))
    assert prepare_cli.main([str(src), str(tmp_path / "store"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "class folder names must be printable" in err, err
    assert ascii(os.fsdecode(name)) in err and not (tmp_path / "store").exists()


# A prepare that builds its store forever: killed from outside with SIGKILL, it cannot clean up.
_STUCK_PREPARE = """
import sys, time
from alexnet_triton.data import convert
convert._build = lambda *args, **kwargs: time.sleep(600)
convert.prepare(sys.argv[1], sys.argv[2], size=16, progress=False, workers=1)
"""


def test_a_killed_prepares_partial_store_is_removed_by_the_next(messy, tmp_path, capfd):
    import signal
    import time
    src, _ = messy
    dst = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    stuck = subprocess.Popen([sys.executable, "-c", _STUCK_PREPARE, str(src), str(dst)], env=env)
    leftover = tmp_path / f".store.tmp-{stuck.pid}"
    deadline = time.monotonic() + 60
    while not leftover.is_dir():
        assert stuck.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    # While it runs, its folder is its own: another prepare of DST leaves it alone.
    assert remove_stale_temporaries(dst) == [] and leftover.is_dir()
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.wait(timeout=60)
    assert leftover.is_dir()  # what the kill leaves
    capfd.readouterr()
    prepare(src, dst, size=16, progress=False, workers=1)
    err = capfd.readouterr().err
    assert not leftover.exists()
    assert f"removed {leftover}" in err and f"pid {stuck.pid}, no longer running" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


# -- bad input: one line, exit status 2, nothing written ----------------------------------------

def _bad_inputs(tmp_path: Path) -> dict:
    (tmp_path / "empty").mkdir()
    (tmp_path / "no-val" / "train" / "a").mkdir(parents=True)
    for split in ("train", "val"):
        (tmp_path / "no-classes" / split).mkdir(parents=True)
        (tmp_path / "no-classes" / split / "loose.jpg").write_bytes(b"")
    make_image_folder(tmp_path / "different", messy=False, per_class=1)
    os.rename(tmp_path / "different" / "val" / "dog", tmp_path / "different" / "val" / "bird")
    make_image_folder(tmp_path / "no-images", messy=False, per_class=1)
    for f in (tmp_path / "no-images" / "val").rglob("*.jpg"):
        f.unlink()
    (tmp_path / "a-file").write_text("x")
    return {"missing": ("does-not-exist", "does not exist"), "empty": ("empty", "no train/ and no val/"),
            "no val": ("no-val", "no val/"), "no classes": ("no-classes", "no class subfolders"),
            "different classes": ("different", "only in train: dog; only in val: bird"),
            "no images": ("no-images", "no image files"), "a file": ("a-file", "not a folder")}


def test_bad_sources_fail_before_any_work(tmp_path, capsys):
    for label, (name, message) in _bad_inputs(tmp_path).items():
        before = sorted(p.name for p in tmp_path.iterdir())
        assert prepare_cli.main([str(tmp_path / name), str(tmp_path / "out")]) == 2, label
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (label, err)
        assert err.startswith("python -m alexnet_triton.prepare: error: "), (label, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before, label  # nothing written


def test_an_occupied_destination_is_refused(messy, tmp_path, capsys):
    src, _ = messy
    dst = tmp_path / "store"
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    assert prepare_cli.main([str(src), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err
    assert _snapshot(dst) == {"precious.txt": b"keep me"}
    (tmp_path / "file").write_text("x")
    assert prepare_cli.main([str(src), str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_open_dataset_refuses_bad_folders(tmp_path):
    for label, (name, message) in _bad_inputs(tmp_path).items():
        with pytest.raises(DataError, match=message.split(":")[0]):
            open_dataset(tmp_path / name)


def test_the_module_runs_as_a_program(messy, tmp_path):
    """The real entry point: exit statuses 0 and 2 (and argparse's 2 for a bad flag)."""
    src, _ = messy
    run = lambda *args: subprocess.run([sys.executable, "-m", "alexnet_triton.prepare", *args],  # noqa: E731
                                       capture_output=True, text=True, cwd=REPO, timeout=120)
    ok = run(str(src), str(tmp_path / "store"), "--size", "16", "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""  # output to a pipe, as to a log: no progress bar filling it
    bad = run(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
    assert run(str(src), str(tmp_path / "out"), "--size", "0").returncode == 2
    assert not (tmp_path / "out").exists()
    help_text = run("--help").stdout
    for word in ("--format", "raw", "jpeg", "shard", "stats.npz", "skipped.log", "--workers", "--size"):
        assert word in help_text, word
