"""python -m alexnet_triton.evaluate: the paper's top-1 / top-5 error from a checkpoint."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from alexnet_triton import evaluate
from alexnet_triton.training import engine
from alexnet_triton.training.run_dir import read_metrics


def _evaluate(argv, capsys):
    status = evaluate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_center_crop_error_matches_the_runs_last_validation(run_dir, quick_dataset, capsys):
    status, out, err = _evaluate(["--checkpoint", run_dir / "latest.pt", "--data",
                                  quick_dataset], capsys)
    assert status == 0, err
    assert err == ""  # not a terminal: no progress bar
    row = read_metrics(run_dir / "metrics.csv")[-1]
    assert f"top-1 error {100 * row['val_top1_error']:.2f}%" in out
    assert f"top-5 error {100 * row['val_top5_error']:.2f}%" in out
    assert "center crop of 63 px" in out and "10 images" in out


def test_ten_crops_and_the_trained_dataset_by_default(run_dir, capsys, monkeypatch):
    from alexnet_triton import progress
    monkeypatch.setattr(progress, "interactive", lambda: True)  # as on a terminal
    status, out, err = _evaluate(["--checkpoint", run_dir, "--ten-crop"], capsys)
    assert status == 0, err
    assert "evaluate: 100%" in err and "10/10" in err  # the progress bar, on stderr
    assert "best.pt" in out and "ten crops of 63 px" in out
    assert "top-1 error" in out and "top-5 error" in out


def test_ten_crop_averages_the_softmax_of_the_ten_crops():
    class Crops:
        def ten_crop(self, images):  # [10, N, 3, 1, 1]: crop c of image n holds c
            return torch.arange(10.0)[:, None, None, None, None].expand(10, len(images), 3, 1, 1)

    class Scores(nn.Module):
        def forward(self, x):  # crop c votes for class c % 3
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long() % 3, 3).float() * 50

    labels = torch.tensor([0, 1])
    result = engine.evaluate(Scores(), [(torch.zeros(2, 3, 8, 8), labels)], Crops(),
                             torch.device("cpu"), ten_crop=True)
    # Averaged softmax: class 0 gets 4 of the 10 votes, classes 1 and 2 three each.
    assert result["val_top1_error"] == 0.5
    assert result["val_loss"] == pytest.approx(-(torch.tensor([0.4, 0.3]).log().mean()).item(),
                                               rel=1e-4)


def test_bad_input_is_one_line_and_status_2(run_dir, tmp_path, capsys):
    status, _, err = _evaluate(["--checkpoint", tmp_path / "missing.pt", "--data", tmp_path],
                               capsys)
    assert status == 2 and err.count("\n") == 1 and "does not exist" in err
    status, _, err = _evaluate(["--checkpoint", run_dir, "--data", tmp_path / "nothing"], capsys)
    assert status == 2 and err.count("\n") == 1 and "does not exist" in err
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--data", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_dataset_with_other_classes_is_refused(run_dir, tmp_path, capsys):
    from PIL import Image
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("RGB", (72, 72), (200, 10, 10)).save(tmp_path / split / name / "a.png")
    status, _, err = _evaluate(["--checkpoint", run_dir, "--data", tmp_path], capsys)
    assert status == 2 and "classes" in err and err.count("\n") == 1
