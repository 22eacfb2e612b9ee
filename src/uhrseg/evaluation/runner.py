"""Benchmark runs: dataset x methods x superpixel counts -> one row of metrics per (image, ground truth).

Every method goes through :class:`uhrseg.SuperpixelPredictor`, so the same connectivity step is applied to all.
Label maps made elsewhere (``labels_dir``) are only made connected and contiguous (each 4-connected piece of a
label becomes its own superpixel, no merging).

The run is resumable: rows are appended to ``OUT/runs/METHOD/SETTING.csv`` one image at a time (all of its
ground truths in one write), and images already there are skipped when the run starts again. A folder that
kept only its ``pairs.csv`` (the reports in ``docs/results/``) has its shards rebuilt from it first, so adding a
method to a stored report runs only that method; ``redo`` names methods whose finished cells are dropped and
computed again (new weights, changed code). ``jobs > 1`` spreads images over worker processes; each measures its
own seconds and peak memory per image.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..datasets.readers import read_label_map
from ..defaults import check_precision_name
from ..errors import UhrsegError
from ..grid.connectivity import enforce_connectivity
from ..inference.predictor import METHODS, SuperpixelPredictor
from ..io.outputs import prepare_output_dir
from ..memory import peak_rss_bytes, reset_peak_rss
from ..metrics.superpixel import superpixel_metrics

__all__ = [
    "PAIR_FIELDS",
    "EvaluationPlan",
    "Setting",
    "parse_counts",
    "parse_method_spec",
    "read_pairs",
    "run_evaluation",
]

#: Columns of the per-pair CSV.
PAIR_FIELDS = ["method", "setting", "image", "gt", "n_requested", "k", "br", "bp", "asa", "ue", "ev", "co",
               "tolerance", "seconds", "peak_rss_bytes"]


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: a fixed superpixel count ``n``, or a scale ``s`` (SCN papers' convention) that
    asks ``round(s^2 H W / 256)`` superpixels of an ``H x W`` image (the grid cells of SCN at scale ``s``)."""

    n: int | None = None
    scale: float | None = None

    @property
    def name(self) -> str:
        if self.n is not None:
            return f"n{self.n}"
        return f"scale{self.scale:g}" if self.scale is not None else "given"

    def n_for(self, shape: tuple[int, ...]) -> int:
        if self.n is not None:
            return self.n
        return max(1, round(self.scale**2 * shape[0] * shape[1] / 256))


def parse_counts(text: str, kind: type = int) -> list:
    """Parse ``"200,400,600"``, ``"200,400,...,1200"`` (step from the first two) or ``"200:1200:200"`` into a list
    of ``kind`` (``int`` for superpixel counts, ``float`` for SCN-style scales).

    Raises
    ------
    ValueError
        On malformed text (a step of 0 included) or values that are not positive and finite (NaN included).
    """
    text = text.strip()
    try:
        if ":" in text:
            start, stop, step = (kind(v) for v in text.split(":"))
            values = list(np.arange(start, stop + step / 2, step))
        else:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if "..." in parts:
                i = parts.index("...")
                if i < 2 or i != len(parts) - 2:
                    raise ValueError
                a, b, last = kind(parts[0]), kind(parts[1]), kind(parts[-1])
                values = [kind(p) for p in parts[:i]]
                step = b - a
                if step <= 0:
                    raise ValueError
                while values[-1] + step <= last + (step / 1e6 if kind is float else 0):
                    values.append(values[-1] + step)
            else:
                values = [kind(p) for p in parts]
    except (ValueError, ZeroDivisionError):  # np.arange raises the latter for a step of 0
        raise ValueError(f"cannot read {text!r}: use a comma list (200,400,600), 200,400,...,1200, "
                         "or start:stop:step") from None
    values = [kind(round(v, 6)) if kind is float else kind(v) for v in values]
    if not values or not all(0 < v < math.inf for v in values):  # NaN too
        raise ValueError(f"{text!r}: values must be positive and finite")
    return values


@dataclass
class EvaluationPlan:
    """What to run.

    Attributes
    ----------
    methods : list of str
        Method specs, ``METHOD`` or e.g. ``METHOD:refine=N:smoothness=L`` (see :func:`parse_method_spec`); ignored when
        ``labels_dir`` is set.
    settings : list of Setting
        Superpixel counts or scales to sweep.
    weights : dict of str to path
        Checkpoints for network methods (default: packaged weights).
    labels_dir : path, optional
        Evaluate label maps found here as ``NAME.{png,tif,npy,csv}`` instead of running methods.
    tolerance : int, optional
        Boundary tolerance in pixels (default: the benchmark's 0.0025 x diagonal).
    device : str
        Device for network methods.
    jobs : int
        Worker processes over images.

    Raises
    ------
    ValueError
        If a method or setting is given twice, ``tolerance`` is negative or ``jobs`` is below 1 (at construction,
        before any image is segmented).
    """

    methods: list[str]
    settings: list[Setting]
    weights: dict[str, Path] = field(default_factory=dict)
    labels_dir: Path | None = None
    tolerance: int | None = None
    device: str = "cpu"
    jobs: int = 1

    def __post_init__(self) -> None:
        for what, names in (("method", list(self.methods)), ("setting", [s.name for s in self.settings])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:  # each would be computed and counted twice over
                raise ValueError(f"{what} given more than once: {', '.join(twice)}")
        if self.tolerance is not None and self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {self.tolerance}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")


_SPEC_OPTIONS = {"refine": ("refine_iterations", int), "compactness": ("refine_compactness", float),
                 "smoothness": ("refine_smoothness", float), "oversegment": ("oversegmentation", float),
                 "mergeboundary": ("merge_boundary_weight", float), "texture": ("merge_texture_weight", float),
                 "precision": ("precision", str)}
_SPEC_SYNTAX = ("METHOD[:refine=N][:compactness=M][:smoothness=L][:oversegment=R][:mergeboundary=B][:texture=W]"
                "[:precision=P]")


def parse_method_spec(spec: str) -> tuple[str, dict]:
    """Split an evaluation method spec
    ``METHOD[:refine=N][:compactness=M][:smoothness=L][:oversegment=R][:mergeboundary=B][:texture=W][:precision=P]``.

    ``refine=N`` sets the passes of full-resolution boundary refinement (0: none), ``compactness`` and
    ``smoothness`` its ``m`` and ``lambda`` (:func:`uhrseg.grid.refine_boundaries`), ``oversegment`` the factor
    of extra cells merged away (``oversegmentation``; 1: none, so ``pcnet:refine=0:oversegment=1`` is the
    network's own labels), ``mergeboundary`` the weight of the shared boundary in that merge
    (``merge_boundary_weight``; 0: Ward's cost), ``texture`` the weight of the texture feature in it
    (``merge_texture_weight``; 0: colour alone, the default before 2026-12-07), ``precision`` the network's
    arithmetic (``fp32``, ``bf16``, ``fp16``; the evaluation runs the torch backend); what is not given keeps the
    method's default (see :class:`uhrseg.SuperpixelPredictor`). The spec is the row label.

    Returns
    -------
    (str, dict)
        The method and the :class:`uhrseg.SuperpixelPredictor` keyword arguments the options set
        (``refine_iterations``, ``refine_compactness``, ``refine_smoothness``, ``oversegmentation``,
        ``merge_boundary_weight``, ``merge_texture_weight``, ``precision``).

    Raises
    ------
    ValueError
        If the method is unknown, an option is not one of these, a value is not a finite number >= 0 (an integer
        for ``refine``; ``oversegment`` below 1 is refused when the predictor is made) or a precision is not one
        of :data:`uhrseg.defaults.INFERENCE_PRECISIONS`.
    """
    method, *options = spec.split(":")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose among {', '.join(METHODS)}")
    kwargs = {}
    for option in options:
        key, eq, value = option.partition("=")
        if key not in _SPEC_OPTIONS or not eq:
            raise ValueError(f"method spec {spec!r}: expected {_SPEC_SYNTAX}")
        name, kind = _SPEC_OPTIONS[key]
        if kind is str:
            try:
                kwargs[name] = check_precision_name(value)
            except ValueError as e:
                raise ValueError(f"method spec {spec!r}: {e}") from None
            continue
        try:
            number = kind(value)
        except ValueError:
            number = -1
        if not 0 <= number < math.inf:  # NaN and infinity too
            raise ValueError(f"method spec {spec!r}: {key} must be {'an integer' if kind is int else 'a number'} "
                             f">= 0, got {value!r}")
        kwargs[name] = number
    return method, kwargs


# Per worker process: the predictor of the method being run (built once per process and method).
_worker_predictors: dict[str, SuperpixelPredictor] = {}


def _predictor(spec: str, plan: EvaluationPlan) -> SuperpixelPredictor:
    if spec not in _worker_predictors:
        _worker_predictors.clear()
        method, options = parse_method_spec(spec)
        _worker_predictors[spec] = SuperpixelPredictor(method, device=plan.device, weights=plan.weights.get(method),
                                                       **options)
    return _worker_predictors[spec]


def _find_label_map(folder: Path, name: str) -> Path | None:
    """The label map of image ``name`` in ``folder`` (``NAME`` or ``NAME_labels`` with a label-map suffix), or
    None."""
    for suffix in (".png", ".tif", ".tiff", ".npy", ".csv"):
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}_labels{suffix}"):
            if candidate.is_file():
                return candidate
    return None


def _evaluate_image(task: tuple) -> str:
    """Worker: superpixels for one image (or its given label map), metrics for each ground truth -> CSV text."""
    dataset, plan, method, setting, name = task
    image = dataset.image(name)
    gts = dataset.ground_truths(name)
    reset_peak_rss()
    t0 = time.perf_counter()
    try:
        if plan.labels_dir is not None:
            labels = enforce_connectivity(read_label_map(_find_label_map(plan.labels_dir, name)), 0, None)
            n = int(labels.max()) + 1
        else:
            n = setting.n_for(image.shape)
            labels = _predictor(method, plan).predict(image, n)
    except ValueError as e:  # e.g. n above a quarter of this image's pixels: say which image and cell
        raise UhrsegError(f"{dataset.label}, image {name}, {method} at {setting.name}: {e}") from None
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    out = io.StringIO()
    writer = csv.writer(out)
    for g, gt in enumerate(gts):
        if gt.shape != labels.shape:
            raise ValueError(f"{name}: ground truth {g} is {gt.shape}, labels are {labels.shape}")
        m = superpixel_metrics(labels, gt, image=image, tolerance=plan.tolerance)
        writer.writerow([method, setting.name, name, g, n, m["k"], *(f"{m[k]:.6f}" for k in
                         ("br", "bp", "asa", "ue", "ev", "co")), m["tolerance"], f"{seconds:.4f}", peak])
    return out.getvalue()


def done_images(shard: Path, n_fields: int, image_column: int) -> set[str]:
    """Images whose rows are complete in a shard (a last line cut short by a kill is dropped from the file)."""
    if not shard.is_file():
        return set()
    text = shard.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        shard.write_text(text)
    rows = list(csv.reader(io.StringIO(text)))
    return {r[image_column] for r in rows[1:] if len(r) == n_fields}


def prepare_shards(out_dir: Path, table: str, shard_of: Callable[[list[str]], Path], redo: Iterable[Path] = ()
                   ) -> int:
    """Make ``OUT/runs/`` hold the finished cells to reuse, before a run.

    If ``OUT/runs/`` does not exist but ``OUT/TABLE`` does (a report kept without its shards, as the ones in
    ``docs/results/``), the table's rows are split back into their shards, header first. Then the shards in
    ``redo`` are deleted, so their cells run again (after the rebuild, so that a redo of a stored report's
    method does run again).

    Parameters
    ----------
    out_dir : Path
        The run's output folder.
    table : str
        File name of the concatenated table in ``out_dir`` (``pairs.csv``, ``per_image.csv``).
    shard_of : callable
        ``row (list of str) -> shard path`` under ``out_dir / "runs"``.
    redo : iterable of Path
        Shards to delete, or folders whose ``*.csv`` shards are all deleted (missing ones are ignored).

    Returns
    -------
    int
        Number of shards rebuilt from the table (0 when ``runs/`` existed or there is no table).
    """
    runs, source = out_dir / "runs", out_dir / table
    rebuilt = 0
    if not runs.exists() and source.is_file():
        groups: dict[Path, list[list[str]]] = {}
        with open(source, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            for row in reader:
                if header is not None and len(row) == len(header):
                    groups.setdefault(shard_of(row), []).append(row)
        for shard, rows in groups.items():
            shard.parent.mkdir(parents=True, exist_ok=True)
            tmp = shard.with_name(shard.name + ".part")
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(rows)
            os.replace(tmp, shard)
        rebuilt = len(groups)
    for target in redo:
        for shard in (sorted(target.glob("*.csv")) if target.is_dir() else [target]):
            shard.unlink(missing_ok=True)
    return rebuilt


def run_shards(work: list[tuple[Path, list[tuple]]], worker, fields: list[str], jobs: int, progress: bool,
               describe=lambda task: "") -> None:
    """Run every task and append its CSV text to its shard as it finishes (the resumable core of the runner).

    Parameters
    ----------
    work : list of (Path, list of tuple)
        For each shard, the tasks still to run; each task is one image.
    worker : callable
        A module-level function ``task -> CSV text`` (it runs in worker processes when ``jobs > 1``).
    fields : list of str
        The shard's header, written when the shard is new.
    jobs : int
        Worker processes at most (1 runs in this process). No more are started than the largest shard has
        tasks: the shards run one after another, so further workers would only idle (and each costs a
        process start and its imports).
    progress : bool
        Show a progress bar over all tasks (images done, ETA).
    describe : callable
        ``task -> str`` shown beside the bar.
    """
    total = sum(len(todo) for _, todo in work)
    bar = tqdm(total=total, unit="image", disable=not progress, desc="evaluate")
    # "spawn", not "fork": a parent that has run any parallel torch op holds an OpenMP thread pool, and forked
    # children deadlock on it.
    ctx = multiprocessing.get_context("spawn")
    workers = min(jobs, max((len(todo) for _, todo in work), default=0))
    pool = ctx.Pool(workers) if workers > 1 else None
    try:
        for shard, todo in work:
            if not todo:
                continue
            results: Iterable[str] = pool.imap_unordered(worker, todo) if pool else map(worker, todo)
            f = None  # opened at the first result: a cell whose first image fails leaves no header-only shard
            try:
                for text in results:
                    if f is None:
                        shard.parent.mkdir(parents=True, exist_ok=True)
                        new = not shard.is_file()
                        f = open(shard, "a", newline="")
                        if new:
                            csv.writer(f).writerow(fields)
                    f.write(text)
                    f.flush()
                    bar.set_postfix_str(describe(todo[0]), refresh=False)
                    bar.update(1)
            finally:
                if f is not None:
                    f.close()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()


def run_evaluation(dataset, plan: EvaluationPlan, out_dir: str | os.PathLike, progress: bool = True,
                   redo: Iterable[str] = ()) -> Path:
    """Run (or resume) every (method, setting, image) cell and write ``OUT/pairs.csv``.

    Finished cells in ``OUT/runs/`` (or, when that folder is missing, in an existing ``OUT/pairs.csv``; see
    :func:`prepare_shards`) are reused, except those of the methods in ``redo``.

    Parameters
    ----------
    dataset : BSDS500 or LabelledFolder
        Anything with ``names``, ``image(name)`` and ``ground_truths(name)``.
    plan : EvaluationPlan
        Methods, settings and options.
    out_dir : path-like
        Output folder; ``runs/`` inside it holds the resumable shards.
    progress : bool
        Show a progress bar (images done, ETA).
    redo : iterable of str
        Method specs of ``plan.methods`` (``labels`` with ``plan.labels_dir``) whose finished cells are dropped.

    Returns
    -------
    Path
        ``OUT/pairs.csv`` with :data:`PAIR_FIELDS` columns, all shards of this plan concatenated.

    Raises
    ------
    UhrsegError
        If ``redo`` names a method that is not in the plan or ``plan.labels_dir`` lacks an image's label map (both
        before ``out_dir`` is made), if ``out_dir`` cannot be made or written (:class:`uhrseg.errors.OutputError`),
        if a method fails on an image (the message names the image), or if ``plan.tolerance`` is set and a
        finished cell to reuse was scored at another tolerance.
    """
    out_dir = Path(out_dir)
    methods = ["labels"] if plan.labels_dir is not None else list(plan.methods)
    settings = [Setting()] if plan.labels_dir is not None else plan.settings  # Setting() = labels as given
    redo = list(redo)
    unknown = [m for m in redo if m not in methods]
    if unknown:
        raise UhrsegError(f"--redo: {', '.join(unknown)} not among the methods of this run ({', '.join(methods)})")
    if plan.labels_dir is not None:
        missing = [n for n in dataset.names if _find_label_map(plan.labels_dir, n) is None]
        if missing:
            more = ", ..." if len(missing) > 5 else ""
            raise UhrsegError(f"{plan.labels_dir}: no label map (NAME.png/.tif/.npy/.csv) for {len(missing)} of the "
                              f"{len(dataset.names)} images: {', '.join(missing[:5])}{more}")
    prepare_output_dir(out_dir)  # after every check, so that a refused run leaves no folder
    prepare_shards(out_dir, "pairs.csv", lambda row: out_dir / "runs" / row[0] / f"{row[1]}.csv",
                   [out_dir / "runs" / m for m in redo])
    work: list[tuple[Path, list[tuple]]] = []
    for method in methods:
        for setting in settings:
            shard = out_dir / "runs" / method / f"{setting.name}.csv"
            done = done_images(shard, len(PAIR_FIELDS), 2)
            if done and plan.tolerance is not None:
                other = sorted({r["tolerance"] for r in read_pairs(shard)} - {plan.tolerance})
                if other:
                    raise UhrsegError(f"{shard}: finished cells were scored at tolerance {other} px, this run "
                                     f"asks {plan.tolerance} px; use another output folder or redo {method}")
            work.append((shard, [(dataset, plan, method, setting, name) for name in dataset.names
                                 if name not in done]))
    run_shards(work, _evaluate_image, PAIR_FIELDS, plan.jobs, progress, lambda t: f"{t[2]} {t[3].name}")
    pairs = out_dir / "pairs.csv"
    rows = []
    for method in methods:
        for setting in settings:
            rows.extend(read_pairs(out_dir / "runs" / method / f"{setting.name}.csv"))
    tmp = pairs.with_suffix(".csv.part")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PAIR_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, pairs)
    return pairs


def read_pairs(path: str | os.PathLike) -> list[dict]:
    """Rows of a pairs CSV (or shard) as dicts with numeric values."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values() and len(r) == len(PAIR_FIELDS)]
    for r in rows:
        for key in ("gt", "n_requested", "k", "tolerance", "peak_rss_bytes"):
            r[key] = int(r[key])
        for key in ("br", "bp", "asa", "ue", "ev", "co", "seconds"):
            r[key] = float(r[key]) if r[key] not in ("", "nan") else math.nan
    return rows

