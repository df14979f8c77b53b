"""python -m alexnet_triton.predict --checkpoint C IMAGE...: the five most likely classes.

Each image is read as the training data was prepared (any Pillow format, converted to RGB,
shorter side rescaled to the checkpoint's image size, center square), then its center crop,
minus the training mean, goes through the network; the class names come from the
checkpoint. Images stream through in batches of --batch-size, decoded by --workers loader
processes, so memory stays flat for any number of images. Every image is read before any
result is printed: one unreadable file is a one-line error and exit status 2.
``--plot FILE.png`` draws the paper's figure 4 (left): each image with its top classes.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from alexnet_triton.cli import checkpoint_parser, run_cli
from alexnet_triton.errors import CheckpointError, ConfigError, DataError

PROG = "python -m alexnet_triton.predict"
# --plot draws at most this many images (the first ones): a figure of thousands is no use.
PLOT_LIMIT = 64


def build_parser() -> argparse.ArgumentParser:
    parser = checkpoint_parser(PROG, __doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many classes to list per image (default: 5)")
    parser.add_argument("--ten-crop", action="store_true",
                        help="average the softmax over ten crops instead of the center crop")
    parser.add_argument("-b", "--batch-size", type=int, default=64, metavar="N",
                        help="images per forward pass; memory grows with it, not with the "
                             "number of images (default: 64)")
    parser.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                        help="loader processes decoding the images (default: as training: "
                             "1 on the CPU, up to 8 with a GPU)")
    parser.add_argument("--plot", metavar="FILE.png", default=None,
                        help=f"also draw the paper's figure 4 (left): each image with its top "
                             f"classes as bars (the first {PLOT_LIMIT} images)")
    parser.add_argument("--devices", default="auto",
                        help="'auto' (a GPU if there is one, else the CPU), 'cpu' or 'cuda:N' "
                             "(default: auto)")
    return parser


@torch.no_grad()
def predict(model: torch.nn.Module, augmenter, pixels: torch.Tensor,
            ten_crop: bool = False) -> torch.Tensor:
    """uint8 [N, 3, S, S] images -> class probabilities [N, num_classes] (float32, CPU)."""
    from alexnet_triton.training.engine import ten_crop_probabilities
    model.eval()
    if ten_crop:
        return ten_crop_probabilities(model, augmenter, pixels).cpu()
    return model(augmenter.center(pixels)).float().softmax(dim=1).cpu()


def image_batches(files: Sequence[str], size: int, batch_size: int, workers: int,
                  pin_memory: bool = False):
    """(uint8 [B, 3, S, S], indices [B]) in file order, read as training reads its data
    (loader threads into one batch buffer); raises DataError for a bad file."""
    from alexnet_triton.data.datasets import ImageFiles
    from alexnet_triton.data.loaders import Batches
    source = ImageFiles(files, size)
    order = np.arange(len(files))
    loader = Batches(source, [order[i:i + batch_size] for i in range(0, len(files), batch_size)],
                     0, workers, pin_memory)
    batches = iter(loader)
    while True:
        try:
            pixels, indices = next(batches)
        except StopIteration:
            return
        except DataError:  # a batch of nothing but bad files
            if not loader.skipped:
                raise
        if loader.skipped:
            index, error = loader.skipped[0]
            raise DataError(f"cannot read {files[index]} as an image: {error}")
        yield pixels, indices


def run(args: argparse.Namespace) -> list:
    from alexnet_triton.progress import progress_bar
    from alexnet_triton.runtime import default_workers, resolve_devices
    from alexnet_triton.training import checkpoint as ckpt

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if args.plot is not None and not args.plot.lower().endswith(".png"):
        raise ConfigError(f"--plot writes a PNG file: give it a name ending in .png, got "
                          f"{args.plot!r}")
    if "," in args.devices:
        raise ConfigError(f"--devices: predict runs on one device, got {args.devices!r}")
    state = ckpt.load(args.checkpoint, names=(ckpt.BEST, ckpt.LATEST), mmap=True)
    size = state["data"]["image_size"]
    for name in args.images:
        if not Path(name).is_file():
            raise DataError(f"{name} is not a file")
    devices = resolve_devices(args.devices)[:1]
    # Not runtime.keep_freed_memory as training: glibc then keeps every block it ever
    # held, and flat memory is the point here.
    model, augmenter = ckpt.load_network(state, devices)
    classes = state["classes"]
    top = min(args.top, len(classes))
    workers = args.workers if args.workers is not None else default_workers(devices[0])
    # Only the ranked classes are kept per image (and the pictures --plot draws), never
    # the batch: memory is the same for 10 images or a million.
    results, pictures = [], []
    bar = progress_bar(len(args.images), "predict", "img")
    with warnings.catch_warnings():
        # load_image refuses an image over Pillow's decompression-bomb limit in one line;
        # Pillow's own warning about it, from the loader threads, would be two more.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            for pixels, indices in image_batches(args.images, size, args.batch_size, workers,
                                                 pin_memory=devices[0].type == "cuda"):
                probabilities = predict(model, augmenter, pixels, args.ten_crop)
                if not bool(probabilities.isfinite().all()):
                    raise CheckpointError(f"{state['path']}: the network's outputs are not finite "
                                          f"(NaN or infinite probabilities): its weights are unusable")
                values, order = probabilities.topk(top, dim=1)
                for index, row_values, row_order in zip(indices.tolist(), values.tolist(),
                                                        order.tolist()):
                    results.append((args.images[index],
                                    [(classes[i], float(p)) for p, i in zip(row_values, row_order)]))
                if args.plot is not None and len(pictures) < PLOT_LIMIT:
                    keep = pixels[:PLOT_LIMIT - len(pictures)].permute(0, 2, 3, 1).numpy()
                    pictures.extend(image.copy() for image in keep)
                if bar is not None:
                    bar.update(len(indices))
        finally:
            if bar is not None:
                bar.close()
    for name, ranked in results:
        print(name)
        for label, probability in ranked:
            print(f"  {100 * probability:6.2f}%  {label}")
    if args.plot is not None:
        from alexnet_triton.figures import plot_predictions
        drawn = results[:len(pictures)]
        plot_predictions(pictures, ["/".join(Path(name).parts[-2:]) for name, _ in drawn],
                         [ranked for _, ranked in drawn], args.plot)
        more = (f" (the first {len(pictures)} of {len(results)} images)"
                if len(results) > len(pictures) else "")
        print(f"figure 4 (left){more}: {args.plot}")
    sys.stdout.flush()
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
