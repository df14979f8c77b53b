"""python -m alexnet_triton.predict: the top-5 classes of image files, with probabilities."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton import predict
from alexnet_triton.data import Augmenter, DatasetInfo, load_image
from alexnet_triton.models.build import build_model


def _predict(argv, capsys):
    status = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_top5_classes_with_probabilities_of_any_format(run_dir, quick_images, tmp_path,
                                                       capsys):
    jpeg = quick_images / "val" / "star" / "00000.jpg"
    pixels = np.asarray(Image.open(jpeg).convert("RGB"))
    png, gray, cmyk = tmp_path / "star.png", tmp_path / "gray.jpg", tmp_path / "cmyk.jpg"
    Image.fromarray(pixels).resize((150, 100)).save(png)  # not square, other size: rescaled
    Image.fromarray(pixels).convert("L").save(gray)
    Image.fromarray(pixels).convert("CMYK").save(cmyk)
    status, out, err = _predict(["--checkpoint", run_dir, jpeg, png, gray, cmyk], capsys)
    assert status == 0, err
    blocks = out.strip().split("\n")
    assert len(blocks) == 4 * 6
    classes = torch.load(run_dir / "best.pt", weights_only=True)["classes"]
    for image in range(4):
        lines = blocks[image * 6:(image + 1) * 6]
        assert lines[0] == str([jpeg, png, gray, cmyk][image])
        probabilities = [float(line.split("%")[0]) for line in lines[1:]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 100.01
        assert all(line.split("%  ")[1] in classes for line in lines[1:])


def test_probabilities_are_the_networks_softmax_on_the_center_crop(run_dir, quick_images,
                                                                   capsys):
    jpeg = quick_images / "val" / "disk" / "00000.jpg"
    state = ckpt.load(run_dir, names=(ckpt.BEST,))
    model = build_model(state["arch"])
    ckpt.load_model_state(model, state)
    model.eval()
    saved = state["data"]
    info = DatasetInfo(run_dir, tuple(state["classes"]), 72, saved["mean"], saved["eigval"],
                       saved["eigvec"], 0, 0)
    pixels = torch.from_numpy(load_image(jpeg, 72)).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = model(Augmenter(info, 63, 0.0).center(pixels)).softmax(1)[0]
    status, out, _ = _predict(["--checkpoint", run_dir, "--top", "3", jpeg], capsys)
    assert status == 0
    values, indices = expected.topk(3)
    lines = out.strip().split("\n")[1:]
    assert [line.split("%  ")[1] for line in lines] == [state["classes"][i] for i in indices]
    assert [line.split("%")[0].strip() for line in lines] == \
        [f"{100 * v:.2f}" for v in values.tolist()]


def test_unreadable_or_missing_images_stop_before_any_prediction(run_dir, tmp_path, capsys):
    truncated = tmp_path / "truncated.jpg"
    Image.new("RGB", (80, 80), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    for bad, words in ((tmp_path / "missing.jpg", "is not a file"),
                       (truncated, "cannot read"),
                       (tmp_path, "is not a file")):
        status, out, err = _predict(["--checkpoint", run_dir, bad], capsys)
        assert status == 2 and out == "", err
        assert err.count("\n") == 1 and words in err
    status, _, err = _predict(["--checkpoint", tmp_path, truncated], capsys)
    assert status == 2 and "holds no checkpoint" in err
