"""python -m alexnet_triton.neighbours --checkpoint C --out FILE.png: the paper's figure 4 (right).

For a few query images (files given on the command line, or by default --queries images
spread over the dataset's validation split), finds the training images whose fc7 feature
vectors (the 4096 activations of the last hidden layer, center crops) are nearest in
Euclidean distance, prints them and draws one row per query: the query, then its -k
nearest training images. The training split streams through in batches (--batch-size),
keeping only each query's k best so far: memory does not grow with the dataset. Images are
fed as in training: the checkpoint's crop size and training-set mean. The dataset is the one
the checkpoint was trained on unless --data names another (the built-in one without --data).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from alexnet_triton.cli import add_reading_flags, checkpoint_parser, run_cli
from alexnet_triton.errors import ConfigError, DataError

PROG = "python -m alexnet_triton.neighbours"


def build_parser() -> argparse.ArgumentParser:
    parser = checkpoint_parser(PROG, __doc__)
    parser.add_argument("images", nargs="*", metavar="IMAGE",
                        help="query image files (default: --queries validation images)")
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="dataset whose training images are searched (and whose val/ gives "
                             "the default queries); default: the checkpoint's")
    parser.add_argument("--queries", type=int, default=5, metavar="N",
                        help="without IMAGE: this many validation images, spread over the "
                             "split (default: 5)")
    parser.add_argument("-k", "--neighbours", type=int, default=6, metavar="K",
                        help="nearest training images per query (default: 6, as the paper's "
                             "figure)")
    parser.add_argument("--out", metavar="FILE.png", default="neighbours.png",
                        help="the figure (default: neighbours.png)")
    parser.add_argument("-b", "--batch-size", type=int, default=64, metavar="N",
                        help="images per forward pass (default: 64)")
    add_reading_flags(parser)
    parser.add_argument("--devices", default="auto",
                        help="'auto' (a GPU if there is one, else the CPU), 'cpu' or 'cuda:N' "
                             "(default: auto)")
    return parser


@torch.no_grad()
def fc7_features(model: torch.nn.Module, augmenter, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> fc7 activations float32 [N, 4096] of their center crops."""
    model.eval()
    return model.fc7_features(augmenter.center(pixels)).float()


class NearestTraining:
    """The k nearest training images of each query seen so far, by Euclidean distance."""

    def __init__(self, queries: torch.Tensor, k: int) -> None:
        self.queries = queries  # [Q, 4096]
        self.k = k
        empty = torch.empty(len(queries), 0)
        self.distances, self.indices = empty, empty.long()

    def add(self, features: torch.Tensor, first_index: int) -> None:
        """A batch of training features [B, 4096], images first_index... first_index+B-1."""
        distances = torch.cdist(self.queries, features.to(self.queries.device)).cpu()
        indices = torch.arange(first_index, first_index + len(features)).expand_as(distances)
        distances = torch.cat([self.distances, distances], dim=1)
        indices = torch.cat([self.indices, indices], dim=1)
        keep = min(self.k, distances.shape[1])
        # stable: the first image wins a tie, whatever the batch size
        order = distances.argsort(dim=1, stable=True)[:, :keep]
        self.distances, self.indices = distances.gather(1, order), indices.gather(1, order)


def run(args: argparse.Namespace) -> list:
    from alexnet_triton.data import builtin_dataset, eval_loader, load_image, open_dataset
    from alexnet_triton.data.datasets import split_source
    from alexnet_triton.data.gpu_decode import resolve_reading
    from alexnet_triton.figures import plot_neighbours
    from alexnet_triton.progress import progress_bar
    from alexnet_triton.runtime import default_workers, resolve_devices
    from alexnet_triton.training import checkpoint as ckpt

    for flag, value, least in (("--queries", args.queries, 1), ("-k", args.neighbours, 1),
                               ("--batch-size", args.batch_size, 1)):
        if value < least:
            raise ConfigError(f"{flag} must be >= {least}, got {value}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    if not args.out.lower().endswith(".png"):
        raise ConfigError(f"--out writes a PNG file: give it a name ending in .png, got "
                          f"{args.out!r}")
    if "," in args.devices:
        raise ConfigError(f"--devices: neighbours runs on one device, got {args.devices!r}")
    state = ckpt.load(args.checkpoint, names=(ckpt.BEST, ckpt.LATEST), mmap=True)
    size = state["data"]["image_size"]
    data = args.data if args.data is not None else state["config"].get("data")
    info = open_dataset(data) if data is not None else builtin_dataset()
    if tuple(info.classes) != tuple(state["classes"]):
        raise DataError(f"{info.root} has other classes than the checkpoint was trained on")
    if info.image_size != size:
        raise DataError(f"{info.root} stores {info.image_size}-px images but the checkpoint was "
                        f"trained on {size}-px images")
    devices = resolve_devices(args.devices)[:1]
    model, augmenter = ckpt.load_network(state, devices)
    classes = state["classes"]

    # The queries: files, or validation images spread evenly over the split.
    if args.images:
        pictures = []
        for name in args.images:
            if not Path(name).is_file():
                raise DataError(f"{name} is not a file")
            try:
                pictures.append(load_image(name, size))
            except Exception as error:  # noqa: BLE001 - any undecodable file
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise DataError(f"cannot read {name} as an image: {detail}") from None
        query_pixels = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2)
        titles = [Path(name).name for name in args.images]
    else:
        val = split_source(info, "val")
        count = min(args.queries, len(val))
        picks = torch.linspace(0, len(val) - 1, count).round().long().unique().tolist()
        pixels, labels = val.read(picks)
        query_pixels = torch.from_numpy(pixels)
        titles = [f"val #{i} ({classes[label]})" for i, label in zip(picks, labels.tolist())]
    nearest = NearestTraining(fc7_features(model, augmenter, query_pixels), args.neighbours)

    workers = args.workers if args.workers is not None else default_workers(devices[0])
    reading = resolve_reading(args.loader, args.cpu_decoder, args.decode, devices[0],
                              info.format)
    loader = eval_loader(info, args.batch_size, workers=workers, split="train",
                         pin_memory=devices[0].type == "cuda", reading=reading,
                         device=devices[0])
    print(f"{PROG}: {len(query_pixels)} queries against the {info.num_train} training images "
          f"of {info.root}, fc7 features of {state['data']['crop_size']}-px center crops",
          flush=True)
    bar = progress_bar(info.num_train, "neighbours", "img")
    seen = 0
    try:
        for images, _ in loader:
            if loader.skipped:  # the batch's images would not be the ones counted
                index, reason = loader.skipped[0]
                raise DataError(f"{info.root}: training image {index} cannot be read "
                                f"({reason}): the data is damaged")
            nearest.add(fc7_features(model, augmenter, images), seen)
            seen += len(images)
            if bar is not None:
                bar.update(len(images))
    finally:
        if bar is not None:
            bar.close()

    train = split_source(info, "train")
    rows, found_pixels, found_titles = [], [], []
    for title, distances, indices in zip(titles, nearest.distances.tolist(),
                                         nearest.indices.tolist()):
        pixels, labels = train.read(indices)
        names = [classes[label] for label in labels.tolist()]
        found_pixels.append([image.transpose(1, 2, 0) for image in pixels])
        found_titles.append([f"{name} ({distance:.3g})" for name, distance in
                             zip(names, distances)])
        rows.append((title, list(zip(indices, names, distances))))
        print(title)
        for rank, (index, name, distance) in enumerate(rows[-1][1], 1):
            print(f"  {rank}. train #{index} ({name})  distance {distance:.4g}")
    plot_neighbours([image.permute(1, 2, 0).numpy() for image in query_pixels], titles,
                    found_pixels, found_titles, args.out)
    print(f"figure 4 (right): {args.out}")
    sys.stdout.flush()
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
