"""python -m alexnet_triton.predict --checkpoint C IMAGE...: the five most likely classes.

Each image is read as the training data was prepared (any Pillow format, converted to RGB,
shorter side rescaled to the checkpoint's image size, center square), then its center crop,
minus the training mean, goes through the network; the class names come from the
checkpoint. Every image is checked before any is classified: one unreadable file is a
one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from alexnet_triton.cli import OneLineParser, run_cli
from alexnet_triton.errors import CheckpointError, ConfigError, DataError

PROG = "python -m alexnet_triton.predict"


def build_parser() -> argparse.ArgumentParser:
    description = " ".join(__doc__.split("\n\n")[:2]).replace("\n", " ")
    parser = OneLineParser(prog=PROG, description=description, allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a checkpoint file, or a run directory (its best.pt, else latest.pt)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument("--top", type=int, default=5, metavar="K",
                        help="how many classes to list per image (default: 5)")
    parser.add_argument("--ten-crop", action="store_true",
                        help="average the softmax over ten crops instead of the center crop")
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


def run(args: argparse.Namespace) -> list:
    from alexnet_triton.data import load_image
    from alexnet_triton.runtime import resolve_devices
    from alexnet_triton.training import checkpoint as ckpt

    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    state = ckpt.load(args.checkpoint, names=(ckpt.BEST, ckpt.LATEST))
    saved = state["data"]
    size = saved["image_size"]
    images = []
    for name in args.images:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"{path} is not a file")
        try:
            images.append(torch.from_numpy(load_image(path, size)).permute(2, 0, 1))
        except Exception as error:  # noqa: BLE001 - any undecodable file
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(f"cannot read {path} as an image: {detail}") from None
    if "," in args.devices:
        raise ConfigError(f"--devices: predict runs on one device, got {args.devices!r}")
    model, augmenter = ckpt.load_network(state, resolve_devices(args.devices)[:1])
    probabilities = predict(model, augmenter, torch.stack(images), args.ten_crop)
    if not bool(probabilities.isfinite().all()):
        raise CheckpointError(f"{state['path']}: the network's outputs are not finite "
                                   f"(NaN or infinite probabilities): its weights are unusable")
    classes = state["classes"]
    top = min(args.top, len(classes))
    results = []
    for name, row in zip(args.images, probabilities):
        values, indices = row.topk(top)
        ranked = [(classes[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
        results.append((name, ranked))
        print(name)
        for label, probability in ranked:
            print(f"  {100 * probability:6.2f}%  {label}")
    sys.stdout.flush()
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
