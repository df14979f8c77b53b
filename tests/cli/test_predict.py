"""python -m alexnet_triton.predict: the top-5 classes of image files, with probabilities."""
from __future__ import annotations

import subprocess

import numpy as np
import torch
from PIL import Image

from alexnet_triton.training import checkpoint as ckpt
from alexnet_triton import figures, predict
from alexnet_triton.data import Augmenter, DatasetInfo, load_image
from alexnet_triton.models.build import build_model
from train_support import PYTHON, subprocess_env
from helpers import one_row_png


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
    one_row = tmp_path / "one_row.png"  # declares 9000 x 9000, holds one row
    one_row.write_bytes(one_row_png(9000, 9000))
    for bad, words in ((tmp_path / "missing.jpg", "is not a file"),
                       (truncated, "cannot read"),
                       (one_row, "truncated"),
                       (tmp_path, "is not a file")):
        status, out, err = _predict(["--checkpoint", run_dir, bad], capsys)
        assert status == 2 and out == "", err
        assert err.count("\n") == 1 and words in err
    status, _, err = _predict(["--checkpoint", tmp_path, truncated], capsys)
    assert status == 2 and "holds no checkpoint" in err


# ---------------------------------------------------------------------------------------
# at scale: batches stream through, memory stays flat
# ---------------------------------------------------------------------------------------

# Peak RSS of predict, each run in a fresh interpreter (a process's peak is for its whole
# life, and memory the allocator kept from a first run would hide a second run's growth).
_RSS_SCRIPT = """
import io, contextlib, resource, sys
from alexnet_triton import predict
checkpoint, image, count = sys.argv[1:]
with contextlib.redirect_stdout(io.StringIO()) as out:
    assert predict.main(["--checkpoint", checkpoint, "-j", "0"] + [image] * int(count)) == 0
assert out.getvalue().count(image) == int(count)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_stays_flat_from_10_to_1000_images(run_dir, quick_images, tmp_path):
    """The issue's measure: peak RSS at 1,000 images within 1.5x of 10 (measured here:
    1,003 and 1,003 MiB; one batch of the 1,000, as predict ran them before, 2,148 MiB).
    The fixed cost is not stable enough to bound a control run's growth (in one full-suite
    run both 10 images and one batch of 1,000 peaked at 2,531 MiB), so that predict streams
    is proven directly by test_images_stream_through_in_batches_of_batch_size."""
    # The run's checkpoint at 128 px (crops of 112): each image then costs ~1.2 MB in one
    # batch. The network takes any size.
    state = torch.load(run_dir / "best.pt", weights_only=True)
    del state["optimizer"]
    state["data"]["mean"] = torch.nn.functional.interpolate(
        state["data"]["mean"][None], size=(128, 128), mode="bilinear")[0]
    state["data"]["image_size"], state["data"]["crop_size"] = 128, 112
    torch.save(state, tmp_path / "big.pt")
    del state
    image = quick_images / "val" / "star" / "00000.jpg"

    def peak_mib(count):
        result = subprocess.run(
            [PYTHON, "-c", _RSS_SCRIPT, str(tmp_path / "big.pt"), str(image), str(count)],
            env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return int(result.stdout) / 1024

    ten, thousand = peak_mib(10), peak_mib(1000)
    assert thousand <= 1.5 * ten, (ten, thousand)


def test_images_stream_through_in_batches_of_batch_size(run_dir, quick_images, capsys,
                                                         monkeypatch):
    """No batch the network sees holds more than --batch-size images, and every image of
    the 200 is ranked, in order (predict used to run all of them as one batch)."""
    seen = []
    rank = predict.predict

    def counting(model, augmenter, pixels, ten_crop):
        seen.append(pixels.shape[0])
        return rank(model, augmenter, pixels, ten_crop)

    monkeypatch.setattr(predict, "predict", counting)
    files = [str(quick_images / "val" / name / "00000.jpg")
             for name in ("star", "disk", "ring", "stripes", "cross")] * 40
    status, out, err = _predict(["--checkpoint", run_dir, "-j", "0", "-b", "16", *files], capsys)
    assert status == 0, err
    assert max(seen) <= 16 and sum(seen) == len(files) == 200, seen
    assert [line for line in out.splitlines() if not line.startswith(" ")] == files


# ---------------------------------------------------------------------------------------
# --plot: the paper's figure 4 (left)
# ---------------------------------------------------------------------------------------


def picture_distance(png: np.ndarray, box, image: np.ndarray) -> float:
    """Mean absolute difference (0-255) between the PNG inside ``box`` (its frame left
    out) and ``image`` resized to the box."""
    left, top, right, bottom = box
    inner = png[top + 3:bottom - 3, left + 3:right - 3, :3].astype(np.float32)
    resized = np.asarray(Image.fromarray(image).resize((right - left, bottom - top),
                                                       Image.BILINEAR), np.float32)
    return float(np.abs(inner - resized[3:-3, 3:-3]).mean())


def assert_each_picture_is_its_image(png: np.ndarray, boxes, images) -> None:
    """Every image is drawn in its own box: nearer to it than to any other image."""
    for index, box in enumerate(boxes):
        distances = [picture_distance(png, box, image) for image in images]
        assert int(np.argmin(distances)) == index, (index, distances)
        assert distances[index] < 10, (index, distances)


def test_plot_draws_each_image_with_its_top_classes(run_dir, quick_images, tmp_path, capsys):
    files = [quick_images / "val" / name / "00000.jpg" for name in ("star", "disk", "ring",
                                                                      "stripes", "cross")]
    status, out, err = _predict(["--checkpoint", run_dir, "--plot", tmp_path / "fig4.png",
                                 *files], capsys)
    assert status == 0, err
    assert f"figure 4 (left): {tmp_path / 'fig4.png'}" in out
    png = np.asarray(Image.open(tmp_path / "fig4.png").convert("RGB"))
    assert (png.shape[1], png.shape[0]) == figures.prediction_layout(len(files))
    assert png.shape[:2] == (800, 1040)  # two rows of four panels, 2.6 x 4 inches each
    images = [load_image(path, 72) for path in files]  # as predict reads them
    assert_each_picture_is_its_image(png, figures.prediction_boxes(len(files)), images)


def test_plot_boxes_are_where_the_figure_draws(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(6)]
    ranked = [[("a", 0.5), ("b", 0.3)]] * 6
    boxes = figures.plot_predictions(images, list("uvwxyz"), ranked, tmp_path / "p.png")
    assert boxes == figures.prediction_boxes(6)
    rows = figures.plot_neighbours(images[:2], ["q1", "q2"], [images[2:5], images[3:6]],
                                   [["n"] * 3] * 2, tmp_path / "n.png")
    assert rows == figures.neighbour_boxes(2, 3)


def test_plot_needs_a_png_name(run_dir, quick_images, tmp_path, capsys):
    image = quick_images / "val" / "star" / "00000.jpg"
    status, out, err = _predict(["--checkpoint", run_dir, "--plot", tmp_path / "fig.jpg",
                                 image], capsys)
    assert status == 2 and out == "" and "ending in .png" in err


def test_an_image_over_the_decompression_bomb_limit_is_refused_in_one_line(run_dir, tmp_path,
                                                                           capsys):
    side = int(Image.MAX_IMAGE_PIXELS ** 0.5) + 100  # Pillow warns, and decodes it
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(one_row_png(side, side))
    status, out, err = _predict(["--checkpoint", run_dir, bomb], capsys)
    assert status == 2 and out == "", err
    assert err.count("\n") == 1 and "million pixels" in err, err
