"""Pieces shared by the image-processing commands (``superpixels``, ``segment``): unique output names, the
never-overwrite-an-input check, and the batch loop (progress bar, one error line per failed image, summary).

The image readers and writers (:mod:`uhrseg.io`: NumPy, OpenCV, Pillow, tifffile) are imported where they are
used, so that a command's parser, and ``uhrseg COMMAND --help``, loads none of them."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UhrsegError

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["ImageOpener", "add_ray_options", "check_ray_options", "check_summary_target", "check_targets",
           "error_message", "export_writers", "folder_path", "output_stems", "finish_batch", "parse_exports",
           "process_batch"]


def add_ray_options(parser) -> None:
    """``--ray [ADDRESS]`` and ``--ray-workers N`` of the image commands (:mod:`uhrseg.distributed`)."""
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="distribute the images over a Ray cluster: alone, a local Ray instance on this machine; "
                             "with an address (e.g. 10.0.0.5:6379 or auto) join that cluster. Resumable: a rerun "
                             "skips images whose outputs are complete (pip install 'uhrseg[ray]')")
    parser.add_argument("--ray-workers", type=int, metavar="N",
                        help="--ray: workers, each holding the model once (default: one per CPU of the cluster)")


def check_ray_options(args) -> None:
    """Refuse ``--ray-workers`` without ``--ray`` (it was ignored) and below 1.

    Raises
    ------
    UhrsegError
        Naming the flag.
    """
    if args.ray_workers is not None and args.ray is None:
        raise UhrsegError("--ray-workers applies only with --ray")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise UhrsegError(f"--ray-workers must be >= 1, got {args.ray_workers}")


def error_message(path: Path, error: BaseException) -> str:
    """The one-line error of a failed image, starting with its path."""
    return str(error) if str(error).startswith(str(path)) else f"{path}: {error}"


def parse_exports(text: str | None) -> tuple[str, ...]:
    """``--export polygons,table,csv`` as a tuple of names (empty without the option).

    Raises
    ------
    UhrsegError
        For a name that is not one of :data:`uhrseg.defaults.EXPORTS`.
    """
    from ..defaults import EXPORTS

    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    bad = [n for n in names if n not in EXPORTS]
    if bad:
        raise UhrsegError(f"--export {','.join(bad)}: choose from {', '.join(EXPORTS)}")
    return names


def export_writers(out: Path, stem: str, exports: tuple[str, ...], labels, source, n_regions: int, *, classes=None,
                   class_names=None, georeference=None) -> dict[Path, Callable[[Path], None]]:
    """Writers for the region exports of one image (for :func:`uhrseg.io.commit_files`): ``STEM_regions.gpkg``
    (polygons with the table's columns), ``STEM_regions.parquet`` and ``STEM_regions.csv``.

    The table (:func:`uhrseg.io.regions.region_table`) is computed here, once, when any export is asked for;
    the polygons when their file is written.
    """
    if not exports:
        return {}
    from ..io.regions import region_polygons, region_table, write_polygons, write_table

    table = region_table(labels, source, n_regions, classes=classes, class_names=class_names,
                         georeference=georeference)
    writers: dict[Path, Callable[[Path], None]] = {}
    if "polygons" in exports:
        crs = georeference.crs if georeference is not None else None
        writers[out / f"{stem}_regions.gpkg"] = lambda p: write_polygons(
            p, region_polygons(labels, n_regions, georeference=georeference), table, crs=crs)
    if "table" in exports:
        writers[out / f"{stem}_regions.parquet"] = lambda p: write_table(p, table, "parquet")
    if "csv" in exports:
        writers[out / f"{stem}_regions.csv"] = lambda p: write_table(p, table, "csv")
    return writers


class ImageOpener:
    """Opens the batch's images (:func:`uhrseg.io.open_image`), the first one in a background thread.

    Made before the command loads torch, numba and the model: decoding the first image (0.3-0.55 s for a 5K
    JPEG on the 2-core CPU; Pillow releases the GIL while it decodes, and :func:`uhrseg.io.read_image` hands it
    the whole file in one call so that the imports do not hold it up) then overlaps that start-up instead of
    following it.
    Later images are opened when they are processed, so at most one decoded image waits in memory.

    Parameters
    ----------
    images : list of Path
        The batch, in order.
    """

    def __init__(self, images: list[Path]) -> None:
        self._first = images[0] if images else None
        self._future = None
        if self._first is not None:
            from concurrent.futures import ThreadPoolExecutor  # here: every command's parser imports this module

            from ..io import open_image

            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uhrseg-read")
            self._future = pool.submit(open_image, self._first)
            pool.shutdown(wait=False)

    def open(self, path: Path):
        """The image source of ``path`` (see :func:`uhrseg.io.open_image`).

        Raises
        ------
        uhrseg.errors.ImageReadError
            As :func:`uhrseg.io.open_image`, also for the image decoded in the background.
        """
        if self._future is not None and path == self._first:
            future, self._future = self._future, None
            return future.result()
        from ..io import open_image

        return open_image(path)


def output_stems(images: list[Path]) -> list[str]:
    """One unique output stem per input, in order: the file's stem, or ``stem-2``, ``stem-3``, ... when an earlier
    input took it. A generated name never repeats another input's own stem (``c.png c.jpg c-2.png`` gives ``c``,
    ``c-2``, ``c-2-2``), so no image's outputs replace another's."""
    taken: set[str] = set()
    stems = []
    for path in images:
        stem, k = path.stem, 1
        while (stem if k == 1 else f"{path.stem}-{k}") in taken:
            k += 1
        stem = stem if k == 1 else f"{path.stem}-{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def folder_path(text: str) -> Path:
    """argparse ``type`` of ``--out``: the folder's path; an empty one (``-o ""``, e.g. an unset shell variable)
    is refused rather than taken as the current folder.

    Raises
    ------
    argparse.ArgumentTypeError
        If ``text`` is empty or blank.
    """
    import argparse

    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name (is a shell variable unset?)")
    return Path(text)


def check_targets(path: Path, outputs, inputs: set[Path]) -> None:
    """Raise UhrsegError if an output path is one of the input images.

    Raises
    ------
    UhrsegError
        Naming the input and the output that would overwrite it.
    """
    for target in outputs:
        if Path(target).resolve() in inputs:
            raise UhrsegError(f"{path}: output {target} would overwrite an input file; choose another --out")


def check_summary_target(out: Path, inputs: set[Path]) -> None:
    """Raise UhrsegError, before any image is processed, if the batch's ``out/summary.json`` is one of the
    ``inputs`` (resolved paths), which it would overwrite at the end.

    Raises
    ------
    UhrsegError
        Naming that input.
    """
    summary = (Path(out) / "summary.json").resolve()
    if summary in inputs:
        raise UhrsegError(f"{summary}: the batch's summary.json would overwrite this input; choose another --out")


def process_batch(images: list[Path], out: Path, process: Callable[[Path, str, set[Path], tqdm], dict],
                  summary: dict, desc: str, quiet: bool, created_out: bool = False) -> int:
    """Run ``process(path, stem, inputs, bar)`` for every image, report failures, write ``summary.json``.

    Each image's errors (:class:`uhrseg.errors.UhrsegError`, ``ValueError``, ``MemoryError``) are printed as one
    line naming the file, and the batch goes on. ``summary.json`` (``summary`` plus ``images`` and
    ``failed``) is written atomically when at least one image succeeded. When none did and ``created_out``
    (this command made ``out``), the folder is removed again if it is still empty.

    Returns
    -------
    int
        The exit code: 0, or 2 when any image failed.
    """
    from tqdm import tqdm  # here, not at the top: the first image decodes while it loads

    inputs = {p.resolve() for p in images}
    check_summary_target(out, inputs)
    done: list[dict] = []
    failed: list[dict] = []
    bar = tqdm(zip(images, output_stems(images)), total=len(images), unit="image", disable=quiet, desc=desc,
               file=sys.stderr)
    for path, stem in bar:
        try:
            done.append(process(path, stem, inputs, bar))
        except (UhrsegError, ValueError, MemoryError) as e:
            message = error_message(path, e)
            failed.append({"file": str(path), "error": message})
            tqdm.write(f"uhrseg: error: {message}", file=sys.stderr)
    bar.close()
    return finish_batch(out, summary, done, failed, len(images), created_out)


def finish_batch(out: Path, summary: dict, done: list[dict], failed: list[dict], n_images: int,
                 created_out: bool = False) -> int:
    """Write ``summary.json`` (when an image succeeded), report the count and the failures; returns the exit
    code (0, or 2 when any image failed). With no image done, an empty ``out`` this command created is removed."""
    if done:
        from ..io import commit_files

        text = json.dumps({**summary, "images": done, "failed": failed}, indent=2)
        commit_files({out / "summary.json": lambda p: p.write_text(text + "\n")})
    if not done and created_out and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
        print(f"uhrseg: 0 of {n_images} images written; removed the empty folder {out} made for them",
              file=sys.stderr)
    else:
        print(f"uhrseg: {len(done)} of {n_images} images written to {out}", file=sys.stderr)
    if failed:
        print(f"uhrseg: {len(failed)} failed:", file=sys.stderr)
        for f in failed:
            print(f"  {f['error']}", file=sys.stderr)
        return 2
    return 0
