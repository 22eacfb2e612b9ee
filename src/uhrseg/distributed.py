"""Many images on a Ray cluster: ``uhrseg superpixels|segment ... --ray [ADDRESS]``.

The driver (the command) hands images to Ray actors, one image at a time to whichever worker is free. Each
worker (:class:`ImageWorker`, one CPU) builds the command's predictor once, with the command's own arguments,
and processes an image exactly as the single-machine command does (the same ``_process`` function: the same
streaming, the same files, byte for byte), writing straight into the output folder. On a multi-machine
cluster that folder and the inputs must be at the same path on every node (a shared file system).

Fault tolerance and resumption:

* A worker that dies mid-image (killed, out of memory, node lost) is restarted by Ray, which runs its
  pending image again (``max_restarts``, ``max_task_retries``); only that image is redone, and its files are
  written under temporary names and renamed when complete, so a half-written image leaves no output.
* After each image the worker records its ``summary.json`` entry in ``DIR/.uhrseg-ray/STEM.json``. A rerun
  of the same command skips every image whose record exists and whose listed outputs are all present, and
  ``summary.json`` lists every image once, in the order given.
* An image that fails for a reason of its own (a corrupt file) is reported like the single-machine command
  does (one line, exit code 2) and not retried.

Ray is an optional extra (``pip install "uhrseg[ray]"``); without ``--ray`` nothing here is imported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

from .errors import UhrsegError

__all__ = ["RECORDS", "ImageWorker", "process_on_ray", "run_on_ray"]

#: Folder (inside the output folder) of the per-image records of a Ray run.
RECORDS = ".uhrseg-ray"
#: Times Ray restarts a dead worker and reruns its image.
RETRIES = 3


class _NoBar:
    """Stands in for the progress bar inside a worker (the driver shows the progress)."""

    def set_postfix_str(self, text: str) -> None:
        pass


class ImageWorker:
    """A Ray actor that holds one command's predictor and processes images with it.

    Parameters
    ----------
    command : str
        The command's module (``uhrseg.cli.superpixels`` or ``uhrseg.cli.segment``).
    args : argparse.Namespace
        The command's parsed arguments.
    """

    def __init__(self, command: str, args: argparse.Namespace) -> None:
        from .cli.common import ImageOpener

        self.args = args
        self.error = None
        self.summary = None
        try:
            self._process, self.summary = importlib.import_module(command).prepare(args, ImageOpener([]))
        except (UhrsegError, ValueError) as e:  # bad weights or settings: told to the driver, not retried
            self.error = str(e)

    def header(self) -> dict:
        """The ``summary.json`` header, or ``{"error": message}`` if the predictor could not be built."""
        return {"error": self.error} if self.error is not None else self.summary

    def pid(self) -> int:
        """The worker's process id."""
        return os.getpid()

    def process(self, path: str, stem: str, inputs: set[Path]) -> dict:
        """Process one image; returns its ``summary.json`` entry, or ``{"file", "error"}`` when the image fails.

        The entry is also recorded in ``DIR/.uhrseg-ray/STEM.json`` (written to a temporary name, then renamed).
        """
        from .cli.common import error_message

        path = Path(path)
        try:
            entry = self._process(path, stem, inputs, _NoBar())
        except (UhrsegError, ValueError, MemoryError) as e:
            return {"file": str(path), "error": error_message(path, e)}
        records = Path(self.args.out) / RECORDS
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=records)
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, indent=2)
        os.replace(tmp, records / f"{stem}.json")
        return entry


def _completed(record: Path, path: Path) -> dict | None:
    """The recorded entry of an image if its record exists and every output it lists is present."""
    try:
        entry = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if entry.get("file") != str(path) or not all(Path(p).is_file() for p in entry.get("outputs", [])):
        return None
    return entry


def run_on_ray(command: str, args: argparse.Namespace, images: list[Path], desc: str) -> int:
    """The body of ``--ray``: distribute ``images`` over Ray workers running ``command``'s ``prepare``.

    Returns
    -------
    int
        The exit code: 0, or 2 when any image failed.

    Raises
    ------
    uhrseg.errors.UhrsegError
        Ray not installed, a cluster that cannot be reached, ``--ray-workers`` below 1, or a predictor the
        workers cannot build (bad weights).
    """
    try:
        import ray
    except ImportError as e:
        raise UhrsegError("--ray needs Ray: pip install 'uhrseg[ray]'") from e
    from tqdm import tqdm

    from .cli.common import check_ray_options, check_summary_target, finish_batch, output_stems
    from .io import prepare_output_dir

    check_ray_options(args)
    check_summary_target(Path(args.out), {p.resolve() for p in images})
    made = not Path(args.out).exists()
    out = prepare_output_dir(args.out).resolve()
    records = out / RECORDS
    made_records = not records.exists()
    records.mkdir(exist_ok=True)
    stems = output_stems(images)
    images = [p.resolve() for p in images]  # workers may run in another folder, or on another node
    inputs = set(images)
    args = argparse.Namespace(**vars(args))
    args.out = out
    if args.weights is not None and Path(str(args.weights)).is_file():
        args.weights = type(args.weights)(Path(str(args.weights)).resolve())
    entries: dict[str, dict] = {}
    todo = []
    for path, stem in zip(images, stems):
        entry = _completed(records / f"{stem}.json", path)
        if entry is not None:
            entries[stem] = entry
        else:
            todo.append((path, stem))
    def remove_made_folders() -> None:  # nothing was written: the folders made here go again
        for folder, ours in ((records, made_records), (out, made)):
            if ours and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    started = not ray.is_initialized()
    if started:
        try:
            if args.ray == "local":
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            else:
                ray.init(address=args.ray, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            remove_made_folders()
            raise UhrsegError(f"--ray {args.ray}: cannot start or join the Ray cluster ({e})") from e
    try:
        failed: dict[str, dict] = {}
        worker_class = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(ImageWorker)
        n_workers = args.ray_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        workers = [worker_class.remote(command, args) for _ in range(max(1, min(n_workers, len(todo) or 1)))]
        header = ray.get(workers[0].header.remote())
        if "error" in header:  # e.g. missing weights
            remove_made_folders()
            raise UhrsegError(header["error"])
        bar = tqdm(total=len(images), initial=len(entries), unit="image", disable=args.quiet,
                   desc=f"{desc} on Ray ({len(workers)} workers)", file=sys.stderr)
        queue = list(todo)
        running: dict = {}

        def give(worker) -> None:
            if queue:
                path, stem = queue.pop(0)
                running[worker.process.remote(str(path), stem, inputs)] = (worker, path, stem)

        for worker in workers:
            give(worker)
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            worker, path, stem = running.pop(ready[0])
            try:
                entry = ray.get(ready[0])
            except ray.exceptions.RayError as e:  # the worker died more often than Ray retries
                entry = {"file": str(path), "error": f"{path}: the worker processing it died ({type(e).__name__})"}
            if "error" in entry:
                failed[stem] = entry
                tqdm.write(f"uhrseg: error: {entry['error']}", file=sys.stderr)
            else:
                entries[stem] = entry
            bar.update(1)
            give(worker)
        bar.close()
    finally:
        if started:
            ray.shutdown()
    _remove_leftovers(out)
    done = [entries[s] for s in stems if s in entries]
    return finish_batch(out, header, done, [failed[s] for s in stems if s in failed], len(images))


def _remove_leftovers(out: Path) -> None:
    """Remove what killed workers left: temporary outputs (``.STEM.*.part*``) and work folders."""
    import shutil

    for p in out.glob(".*.part*"):
        p.unlink(missing_ok=True)
    for p in out.glob(".uhrseg-work-*"):
        shutil.rmtree(p, ignore_errors=True)


def process_on_ray(command: str, images: list, out, *options: str, address: str | None = None,
                   workers: int | None = None) -> int:
    """Python equivalent of ``uhrseg COMMAND IMAGE... --out OUT OPTIONS... --ray [ADDRESS]``.

    Parameters
    ----------
    command : str
        ``"superpixels"`` or ``"segment"``.
    images : list of path-like
    out : path-like
        Output folder.
    *options : str
        The command's other options, as on the command line (e.g. ``"-n", "5000"``).
    address : str, optional
        A Ray cluster to join (``"auto"``, ``"10.0.0.5:6379"``); default: a local Ray instance.
    workers : int, optional
        Workers (default one per CPU of the cluster).

    Returns
    -------
    int
        The exit code: 0, or 2 when any image failed.

    Raises
    ------
    ValueError
        If ``command`` is neither ``"superpixels"`` nor ``"segment"``.
    """
    from .cli.main import main

    if command not in ("superpixels", "segment"):
        raise ValueError(f"command must be superpixels or segment, got {command!r}")
    argv = [command, *map(str, images), "--out", str(out), *options, "--ray", *([address] if address else [])]
    if workers is not None:
        argv += ["--ray-workers", str(workers)]
    return main(argv)
