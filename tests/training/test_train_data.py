"""What the trainer says about its input: the data-wait share on every progress line, in
metrics.csv and summary.json, one plain note when a run is input-bound (with the switches
that would help), and damaged records skipped, listed and survived."""
from __future__ import annotations

import csv
import json
import os
import shutil
import time

import numpy as np
import pytest

from alexnet_triton.data.store import StoredSplit
from train_support import one_line_error, train, use_reference_kernels

ARGS = ("--checkpoint-minutes", "1000", "--workers", "0", "--epochs", "1", "--tensorboard", "off")


@pytest.fixture(autouse=True)
def reference_kernels(monkeypatch):
    use_reference_kernels(monkeypatch)


def metrics(run_dir):
    with open(run_dir / "metrics.csv") as file:
        return list(csv.DictReader(file))


def test_a_slow_loader_is_measured_and_called_input_bound_once(quick_dataset, tmp_path,
                                                                 monkeypatch, capsys):
    real_read = StoredSplit.read_into

    def slow_read(self, indices, out, decoder):
        time.sleep(0.1)  # a loader far slower than the step
        return real_read(self, indices, out, decoder)
    monkeypatch.setattr(StoredSplit, "read_into", slow_read)
    run_dir = tmp_path / "run"
    status, out, err = train(["--data", quick_dataset, "--run-dir", run_dir, "-b", "1",
                              "--print-freq", "10", *ARGS], capsys)
    assert status == 0, err
    progress = [line for line in out.splitlines() if line.startswith("  epoch 1 step")]
    assert len(progress) == 3 and all("data wait" in line for line in progress)
    notes = [line for line in out.splitlines() if "input-bound" in line]
    assert len(notes) == 1, out  # once a run, not at every read
    assert "of the time went to waiting for the next batch" in notes[0]
    assert "What would help: " in notes[0] and "-j " in notes[0]  # --workers 0 here
    (row,) = metrics(run_dir)
    assert float(row["data_wait"]) >= 0.2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data_wait"] == pytest.approx(float(row["data_wait"]), rel=1e-5)
    assert "data wait" in [line for line in out.splitlines() if line.startswith("epoch ")][0]


def test_a_fast_loader_is_not_called_input_bound(quick_dataset, tmp_path, capsys):
    run_dir = tmp_path / "run"
    status, out, err = train(["--data", quick_dataset, "--run-dir", run_dir, "-b", "1",
                              *ARGS], capsys)
    assert status == 0, err
    assert "input-bound" not in out
    (row,) = metrics(run_dir)
    assert 0 <= float(row["data_wait"]) < 0.2  # a 72-px JPEG decodes in ~0.1 ms, a step ~50


def test_damaged_records_are_left_out_listed_and_training_goes_on(quick_dataset, tmp_path,
                                                                   capsys):
    store = tmp_path / "store"
    shutil.copytree(quick_dataset, store)
    index = np.load(store / "train" / "index.npy")
    shard = store / "train" / f"shard-{int(index[4, 0]):05d}.bin"
    data = bytearray(shard.read_bytes())
    for i in (4, 17):  # the JPEG streams overwritten after their first bytes
        _, offset, length = index[i].tolist()
        data[offset + 2:offset + length] = bytes(length - 2)
    shard.write_bytes(bytes(data))
    run_dir = tmp_path / "run"
    status, out, err = train(["--data", store, "--run-dir", run_dir, "-b", "10", *ARGS], capsys)
    assert status == 0, err
    assert "2 damaged images of train left out" in out
    listed = (run_dir / "skipped.log").read_text().splitlines()
    assert sorted(line.split("\t")[1] for line in listed) == ["image 17", "image 4"]
    assert all(line.startswith("train\t") for line in listed)


def test_a_batch_with_no_readable_image_stops_the_run_in_one_line(quick_dataset, tmp_path,
                                                                   capsys):
    """A shard cut to 100 bytes (`truncate -s 100`): every record lies past its end. The
    run stopped with the loader's traceback (exit 1); the records are listed all the same."""
    store = tmp_path / "store"
    shutil.copytree(quick_dataset, store)
    os.truncate(store / "train" / "shard-00000.bin", 100)
    run_dir = tmp_path / "run"
    status, _, err = train(["--data", store, "--run-dir", run_dir, "-b", "10", *ARGS], capsys)
    one_line_error(status, err, "none of the 10 images of a batch could be read",
                   "lies outside its shard", "no checkpoint had been written yet")
    assert len((run_dir / "skipped.log").read_text().splitlines()) == 10
