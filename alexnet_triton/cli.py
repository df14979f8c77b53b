"""What the command-line tools share: bad input is one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from alexnet_triton.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line (no usage block), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def checkpoint_parser(prog: str, doc: str) -> OneLineParser:
    """The parser of a tool that reads a trained network: its description from the module
    docstring's first two paragraphs, and --checkpoint."""
    description = " ".join(doc.split("\n\n")[:2]).replace("\n", " ")
    parser = OneLineParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="a checkpoint file, or a run directory (its best.pt, else latest.pt)")
    return parser


def add_reading_flags(parser: argparse.ArgumentParser) -> None:
    """-j/--workers, --loader, --decode and --cpu-decoder: a tool reads its dataset as
    training does (alexnet_triton/data/reading.py; the trainer's --help explains each)."""
    from alexnet_triton.data.decoders import CPU_DECODERS
    from alexnet_triton.data.reading import DECODE_CHOICES, LOADERS
    parser.add_argument("-j", "--workers", type=int, default=None, metavar="N",
                        help="data loader workers (default: as training)")
    parser.add_argument("--loader", choices=LOADERS, default="threads",
                        help="loader workers as threads or processes (default: threads)")
    parser.add_argument("--decode", choices=DECODE_CHOICES, default="auto",
                        help="where a JPEG store is decoded: the GPU (nvJPEG), the CPU, or "
                             "'auto', the GPU where it can (default: auto)")
    parser.add_argument("--cpu-decoder", choices=CPU_DECODERS, default="auto",
                        help="the CPU's JPEG decoder: simplejpeg (libjpeg-turbo) or Pillow; "
                             "'auto' takes simplejpeg where installed (default: auto)")


def run_cli(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
            argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv and run; a configuration, data or checkpoint error ends with exit status 2."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except UserError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
