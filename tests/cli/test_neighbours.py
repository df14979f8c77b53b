"""python -m alexnet_triton.neighbours: the paper's figure 4 (right) from fc7 features."""
from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from alexnet_triton import figures, neighbours
from alexnet_triton.data import open_dataset
from alexnet_triton.data.datasets import split_source
from alexnet_triton.training import checkpoint as ckpt
from test_predict import assert_each_picture_is_its_image


def _neighbours(argv, capsys):
    status = neighbours.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_each_query_with_its_nearest_training_images_by_fc7_distance(run_dir, quick_dataset,
                                                                    tmp_path, capsys):
    out_png = tmp_path / "fig4-right.png"
    status, out, err = _neighbours(["--checkpoint", run_dir, "--data", quick_dataset,
                                    "--queries", "3", "-k", "4", "-b", "7", "-j", "0",
                                    "--out", out_png], capsys)
    assert status == 0, err
    # The printed neighbours are the brute-force nearest by fc7 distance.
    state = ckpt.load(run_dir, names=(ckpt.BEST,))
    model, augmenter = ckpt.load_network(state, [torch.device("cpu")])
    info = open_dataset(quick_dataset)
    train, val = split_source(info, "train"), split_source(info, "val")
    train_pixels, train_labels = train.read(range(len(train)))
    query_picks = [0, 4, 9]  # 3 spread over the 10 validation images
    query_pixels, _ = val.read(query_picks)
    features = neighbours.fc7_features(model, augmenter, torch.from_numpy(train_pixels))
    queries = neighbours.fc7_features(model, augmenter, torch.from_numpy(query_pixels))
    expected = torch.cdist(queries, features).argsort(dim=1, stable=True)[:, :4]
    printed = [[int(i) for i in re.findall(r"train #(\d+)", block)]
               for block in out.split("val #")[1:]]
    assert printed == expected.tolist(), out
    assert [int(m) for m in re.findall(r"^val #(\d+)", out, re.M)] == query_picks
    # The figure: one row per query, the query first, then its neighbours, in order.
    png = np.asarray(Image.open(out_png).convert("RGB"))
    assert (png.shape[1], png.shape[0]) == figures.neighbours_layout(3, 4)
    for row, box_row in enumerate(figures.neighbour_boxes(3, 4)):
        pictures = [query_pixels[row]] + [train_pixels[i] for i in expected[row].tolist()]
        pictures = [picture.transpose(1, 2, 0) for picture in pictures]
        distinct = [0] + [1 + i for i in range(4)
                          if not any(np.array_equal(pictures[1 + i], pictures[j])
                                     for j in range(1 + i))]
        assert_each_picture_is_its_image(png, [box_row[i] for i in distinct],
                                         [pictures[i] for i in distinct])


def test_the_running_top_k_equals_the_whole_ranking():
    generator = torch.Generator().manual_seed(0)
    queries, features = torch.randn(3, 16, generator=generator), torch.randn(50, 16,
                                                                           generator=generator)
    nearest = neighbours.NearestTraining(queries, k=5)
    for start in range(0, 50, 7):  # batches of 7, the last one short
        nearest.add(features[start:start + 7], start)
    distances = torch.cdist(queries, features)
    assert torch.equal(nearest.indices, distances.argsort(dim=1, stable=True)[:, :5])
    assert torch.allclose(nearest.distances, distances.sort(dim=1).values[:, :5])


def test_query_files_and_bad_input(run_dir, quick_dataset, quick_images, tmp_path, capsys):
    files = [quick_images / "val" / name / "00000.jpg" for name in ("star", "disk")]
    status, out, err = _neighbours(["--checkpoint", run_dir, "--data", quick_dataset, "-k", "2",
                                    "-j", "0", "--out", tmp_path / "n.png", *files], capsys)
    assert status == 0, err
    assert out.count("  1. train #") == 2 and "00000.jpg" in out
    png = Image.open(tmp_path / "n.png")
    assert png.size == figures.neighbours_layout(2, 2)
    for argv, words in ((["--out", tmp_path / "n.jpg"], "ending in .png"),
                        (["-k", "0"], "-k must be >= 1"),
                        ([tmp_path / "missing.jpg"], "is not a file")):
        status, out, err = _neighbours(["--checkpoint", run_dir, "--data", quick_dataset,
                                        *argv], capsys)
        assert status == 2 and err.count("\n") == 1 and words in err, err
