"""The ``uhrseg`` command: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input, settings or files (one line per error on stderr, naming the file).
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..data import example_image_path
from ..errors import UhrsegError
from . import evaluate, refine_classes, segment, superpixels, train


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="uhrseg", description="Superpixels and semantic segmentation for ultra-high-resolution images.")
    parser.add_argument("--version", action="version", version=f"uhrseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    superpixels.add_parser(sub)
    segment.add_parser(sub)
    refine_classes.add_parser(sub)
    evaluate.add_parser(sub)
    train.add_parser(sub)
    example = sub.add_parser("example-image", help="print the path of the bundled example photograph",
                             description="Print the path of the bundled example photograph (2560 x 1600 JPEG, "
                                         "LGPL-3.0), e.g. uhrseg superpixels \"$(uhrseg example-image)\".")
    example.set_defaults(run=_print_example_image)
    return parser


def _print_example_image(args: argparse.Namespace) -> int:
    print(example_image_path())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used as the console script)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (UhrsegError, ValueError) as e:
        print(f"uhrseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uhrseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
