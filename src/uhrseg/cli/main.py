"""The ``uhrseg`` command: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input, settings or files (one line per error on stderr, naming the file); 130 when
interrupted (Ctrl-C), 143 when terminated (SIGTERM, as ``kill``, ``timeout`` and batch schedulers send): either way
the temporary files (a streamed image's work folder, outputs not yet renamed) are removed first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

from .. import __version__
from ..errors import UhrsegError

#: Sub-command -> (its module in ``uhrseg.cli``, one-line help). A command imports only its own module, and
#: that module loads the heavy libraries (torch, numba) only when it runs, after it has started reading the
#: first image.
COMMANDS = {
    "superpixels": ("superpixels", "superpixels for one or more images"),
    "segment": ("segment", "class maps (semantic segmentation) for one or more images"),
    "refine-classes": ("refine_classes", "sharpen a class map with full-resolution superpixels"),
    "evaluate": ("evaluate", "superpixel metrics over a dataset, plots and report"),
    "train": ("train", "train a superpixel or segmentation network"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every sub-command in full (``command`` None), or only ``command`` in full and the
    others listed by name and help, which is all ``uhrseg --help`` shows of them (any other string, e.g.
    ``"example-image"`` or ``""``, lists them all by name: no command module is imported)."""
    parser = argparse.ArgumentParser(
        prog="uhrseg", description="Superpixels and semantic segmentation for ultra-high-resolution images.")
    parser.add_argument("--version", action="version", version=f"uhrseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"{__package__}.{module}").add_parser(sub, text)
        else:
            sub.add_parser(name, help=text)
    example = sub.add_parser("example-image", help="print the path of the bundled example photograph",
                             description="Print the path of the bundled example photograph (2560 x 1600 JPEG, "
                                         "LGPL-3.0), e.g. uhrseg superpixels \"$(uhrseg example-image)\".")
    example.set_defaults(run=_print_example_image)
    return parser


def _print_example_image(args: argparse.Namespace) -> int:
    from ..data import example_image_path

    print(example_image_path())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code: 0, 2 for a refused
    input or setting (one ``uhrseg: error:`` line on stderr), 130 when interrupted, 143 when terminated (SIGTERM,
    with the executable's handler). Also the console script.
    argparse raises ``SystemExit`` itself for ``--help`` and ``--version`` (0) and unknown options (2)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    # Only the command's own module is imported: ``uhrseg --help``, ``--version``, ``example-image`` and a
    # mistyped command import none (``train``'s imports torch: 1.2-1.7 s for each of them before)
    args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    args.argv = argv
    try:
        return args.run(args)
    except (UhrsegError, ValueError) as e:
        print(f"uhrseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uhrseg: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("uhrseg: terminated", file=sys.stderr)
        return 143


class Terminated(BaseException):
    """Raised in the main thread by the ``uhrseg`` executable's SIGTERM handler, so that the stack unwinds as for
    Ctrl-C: every ``with`` and ``finally`` removes its temporary files (a BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` takes it for an image's error)."""


def _terminate(signum, frame) -> None:
    raise Terminated


def console() -> None:  # pragma: no cover - the installed ``uhrseg`` executable
    """Entry point of the ``uhrseg`` executable: :func:`main`, then exit without the interpreter's teardown.

    Every output is committed (renamed into place) before :func:`main` returns, so nothing is left to do but
    flush the standard streams. Skipping the teardown saves about 0.6 s per command (freeing the modules of
    torch, numba and OpenCV, measured on the 2-core CPU), a tenth of a 5K ``uhrseg superpixels``.
    """
    signal.signal(signal.SIGTERM, _terminate)  # the executable only: main() may run inside a host program
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
