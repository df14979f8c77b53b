"""python -m alexnet_triton [COMMAND [ARGS...]]: the commands, listed, or one of them run.

``python -m alexnet_triton train --data DST`` is ``python -m alexnet_triton.train --data
DST``; without a command it lists them (also installed as the ``alexnet-triton`` script).
"""
from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# name -> (module, what it does), in the order a user meets them
COMMANDS = {
    "prepare": ("alexnet_triton.prepare",
                "convert an image folder (train/<class>/, val/<class>/) into a prepared store"),
    "train": ("alexnet_triton.train",
              "train AlexNet with the paper's recipe (no --data: the built-in dataset)"),
    "evaluate": ("alexnet_triton.evaluate",
                 "top-1 / top-5 error of a checkpoint on a validation split (--ten-crop)"),
    "predict": ("alexnet_triton.predict",
                "the top-5 classes of image files (--plot: the paper's figure 4, left)"),
    "neighbours": ("alexnet_triton.neighbours",
                   "nearest training images by fc7 features (the paper's figure 4, right)"),
    "sample-photos": ("alexnet_triton.data.sample_photos",
                      "write a small 5-class folder of real photos (needs scikit-image)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python -m alexnet_triton COMMAND [ARGS...]   (or: alexnet-triton COMMAND)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "python -m alexnet_triton COMMAND --help explains a command's flags; "
              "python -m alexnet_triton.COMMAND runs it too."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"python -m alexnet_triton: error: unknown command {name!r} (commands: "
              f"{', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    # Imported by name only when asked: the listing answers without loading torch.
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
