"""python -m alexnet_triton.evaluate --checkpoint C [--data D] [--ten-crop]: the paper's metrics.

Prints the top-1 and top-5 error of a trained network on a dataset's validation split,
from the center crop, or with ``--ten-crop`` from the softmax averaged over ten crops
(the four corners and the center, and their horizontal flips), as the paper reports.
Images are fed exactly as in training: the checkpoint's crop size and training-set mean.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from alexnet_triton.cli import add_reading_flags, checkpoint_parser, run_cli
from alexnet_triton.errors import CheckpointError, ConfigError, DataError

PROG = "python -m alexnet_triton.evaluate"


# ---------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = checkpoint_parser(PROG, __doc__)
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="dataset folder (a prepared store or a raw ImageFolder) whose val/ "
                             "split is evaluated; default: the dataset the checkpoint was "
                             "trained on (the built-in one when it had no --data)")
    parser.add_argument("--ten-crop", action="store_true",
                        help="average the softmax over ten crops (4 corners + center, and "
                             "their flips) instead of the center crop")
    parser.add_argument("-b", "--batch-size", type=int, default=128, metavar="N",
                        help="images per forward pass (default: 128)")
    add_reading_flags(parser)
    parser.add_argument("--devices", default="auto",
                        help="'auto' (a GPU if there is one, else the CPU), 'cpu', 'cuda:0', or "
                             "'cuda:0,cuda:1' for one column per GPU (default: auto)")
    parser.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                        help="bf16 autocast on a GPU that supports it ('auto'), or 'bf16', "
                             "'off' (default: auto)")
    return parser


def run(args: argparse.Namespace) -> dict:
    # Imported here so --help answers without loading torch and the data stack.
    from alexnet_triton.data import builtin_dataset, eval_loader, open_dataset
    from alexnet_triton.data.gpu_decode import resolve_reading
    from alexnet_triton.progress import progress_bar
    from alexnet_triton.runtime import (default_workers, describe_kernels, resolve_amp,
                                        resolve_devices)
    from alexnet_triton.training import checkpoint as ckpt
    from alexnet_triton.training import engine
    from alexnet_triton.training.metrics import percent

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {args.workers}")
    state = ckpt.load(args.checkpoint, names=(ckpt.BEST, ckpt.LATEST), mmap=True)
    devices = resolve_devices(args.devices, one_column=state["arch"]["name"] != "alexnet")
    device = devices[0]
    amp = resolve_amp(args.amp, device)
    data = args.data if args.data is not None else state["config"].get("data")
    info = open_dataset(data) if data is not None else builtin_dataset()
    if tuple(info.classes) != tuple(state["classes"]):
        raise DataError(f"{info.root} has classes {_few(info.classes)} but the checkpoint was "
                        f"trained on {_few(state['classes'])}")
    saved = state["data"]
    if info.image_size != saved["image_size"]:
        raise DataError(f"{info.root} stores {info.image_size}-px images but the checkpoint was "
                        f"trained on {saved['image_size']}-px images")
    # The network saw the training set's mean subtracted: the augmenter has the checkpoint's.
    model, augmenter = ckpt.load_network(state, devices)
    workers = args.workers if args.workers is not None else default_workers(device)
    reading = resolve_reading(args.loader, args.cpu_decoder, args.decode, device, info.format)
    loader = eval_loader(info, args.batch_size, workers=workers,
                         pin_memory=device.type == "cuda", reading=reading, device=device)
    print(f"{PROG}: {state['path']} on {info.root} val ({info.num_val} images)"
          f"{f', {len(info.skipped)} unreadable images skipped' if info.skipped else ''}, "
          f"{'ten crops' if args.ten_crop else 'center crop'} of {saved['crop_size']} px; "
          f"device {', '.join(map(str, devices))}, kernels: {describe_kernels(device)}; "
          f"data: {reading.describe(workers, info.format)}", flush=True)
    # A bar on a terminal (none in a log): the validation split can take minutes.
    bar = progress_bar(info.num_val, "evaluate", "img")
    try:
        result = engine.evaluate(model, loader, augmenter, device, ten_crop=args.ten_crop,
                                 amp=amp, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if not math.isfinite(result["val_loss"]):
        raise CheckpointError(f"{state['path']}: the network's outputs are not finite on "
                                   f"{info.root} (loss {result['val_loss']}): its weights "
                                   f"are unusable")
    if loader.skipped:
        print(f"{PROG}: {len(loader.skipped)} damaged images of {info.root} were left out "
              f"(image {loader.skipped[0][0]}: {loader.skipped[0][1]})", flush=True)
    print(f"top-1 error {percent(result['val_top1_error'])}  "
          f"top-5 error {percent(result['val_top5_error'])}  "
          f"(top-1 accuracy {percent(1 - result['val_top1_error'])}, loss "
          f"{result['val_loss']:.4f}, {result['images']} images)", flush=True)
    return result


def _few(names: Sequence[str], limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(PROG, build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
