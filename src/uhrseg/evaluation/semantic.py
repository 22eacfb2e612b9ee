"""Semantic-segmentation benchmark: a second task of the resumable runner (:mod:`uhrseg.evaluation.runner`).

Every model runs through :class:`uhrseg.SemanticPredictor`, exactly as users run it, on every image of a
labelled dataset. Per image, the shard ``OUT/runs/LABEL.csv`` gets one row with the seconds the predictor
took, the peak RSS, the ``C x C`` confusion matrix and the boundary-IoU counts (integers, so the metrics of the
whole dataset are exact sums; no prediction is kept). Images already in a shard are skipped when the command
runs again; a folder that kept only its ``per_image.csv`` has its shards rebuilt from it, and ``redo`` drops
the finished cells of the models it names (:func:`uhrseg.evaluation.runner.prepare_shards`).

Outputs: ``per_image.csv``, ``summary.csv`` (per model: mIoU, pixel accuracy, frequency-weighted IoU, boundary
IoU, seconds per image, peak RSS), ``per_class.csv``, ``per_class_iou.png``, ``examples.png`` (image, ground
truth and every model's class map for a few images) and ``report.md``.
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets.classes import ClassTable
from ..defaults import MODES
from ..errors import UhrsegError
from ..io.outputs import prepare_output_dir
from ..memory import peak_rss_bytes, reset_peak_rss
from ..metrics.semantic import (
    DEFAULT_BOUNDARY_TOLERANCE,
    SegmentationScores,
    boundary_iou_counts,
    confusion_matrix,
)
from .runner import done_images, prepare_shards, run_shards

__all__ = ["SEMANTIC_FIELDS", "ModelSpec", "SemanticPlan", "check_models", "parse_model_specs", "read_semantic_rows",
           "run_semantic_evaluation", "summarize_semantic", "write_examples", "write_semantic_report"]

#: Columns of a semantic shard and of ``per_image.csv``.
SEMANTIC_FIELDS = ["model", "image", "width", "height", "seconds", "peak_rss_bytes", "confusion",
                   "boundary_intersection", "boundary_union"]


@dataclass(frozen=True)
class ModelSpec:
    """One row of the benchmark: a report label, a model name, its weights (packaged name or file) and, for
    MagNet, settings of its loop (``scales``, ``selection``, ``points``, ``fast_patches``)."""

    label: str
    model: str
    weights: str
    options: tuple[tuple[str, str], ...] = ()


def _scales(value: str) -> int | tuple[float, ...]:
    """``N`` (scales a factor of 2 apart up to full resolution) or factors ``F/F/...`` (e.g. ``0.25`` alone)."""
    if "/" in value or "." in value:
        return tuple(float(v) for v in value.split("/"))
    return int(value)


#: Settings a MagNet model spec may carry (``@key=value``) and their types.
MAGNET_OPTIONS = {"scales": _scales, "selection": str, "points": float, "fast_patches": int}
#: Settings of the full-resolution refinement any model spec may carry (:class:`uhrseg.semantic.ClassRefinement`).
REFINE_OPTIONS = {"refine": str, "superpixels": str, "n": int, "confidence": float, "oversegment": float,
                  "texture": float}


def parse_model_specs(text: str) -> list[ModelSpec]:
    """Parse ``[LABEL=]MODEL[:WEIGHTS][@KEY=VALUE...],...`` (e.g.
    ``isdnet:drone,baseline=deeppath:runs/base/last.pt,2 scales=magnet:drone@scales=2``).

    WEIGHTS defaults to ``drone``; LABEL to the spec itself. ``@KEY=VALUE`` settings (MagNet only): ``scales``
    (a count, or the factors themselves as ``0.25/0.5/1``; ``@scales=0.25`` is the backbone alone at the coarsest
    scale), ``selection`` (``both``, ``running``, ``refined``), ``points``, ``fast_patches``. Any model:
    ``refine`` (``none``, ``bilinear``, ``guided``, ``superpixels``), ``superpixels`` (the method), ``n`` (their
    count), ``confidence``, ``oversegment`` and ``texture`` (its ``merge_texture_weight``;
    :class:`uhrseg.semantic.ClassRefinement`), e.g.
    ``isdnet:drone@refine=superpixels@n=4000``.

    Raises
    ------
    ValueError
        On an unknown model or setting, a setting of the superpixel refinement without
        ``@refine=superpixels``, an empty list or a repeated label.
    """
    from ..inference.semantic import MAGNET_MODELS, SEMANTIC_MODELS

    specs = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        stops = [i for i in (item.find(":"), item.find("@")) if i >= 0]
        eq = item.find("=")
        if 0 <= eq < min(stops, default=len(item)):
            label, rest = item[:eq], item[eq + 1 :]
        else:
            label, rest = "", item
        head, *settings = rest.split("@")
        model, _, weights = head.partition(":")
        if model not in SEMANTIC_MODELS:
            raise ValueError(f"model spec {item!r}: unknown model {model!r}; choose one of "
                             f"{', '.join(SEMANTIC_MODELS)} (as [LABEL=]MODEL[:WEIGHTS][@KEY=VALUE])")
        options = []
        for setting in settings:
            key, _, value = setting.partition("=")
            known = {**REFINE_OPTIONS, **(MAGNET_OPTIONS if model in MAGNET_MODELS else {})}
            if key not in known or not value:
                raise ValueError(f"model spec {item!r}: @{setting} is not a setting of {model} (it takes "
                                 f"{', '.join(f'@{k}=' for k in known)})")
            try:
                known[key](value)
            except ValueError:
                raise ValueError(f"model spec {item!r}: @{setting}: not a valid value") from None
            options.append((key, value))
        given = dict(options)
        loose = [f"@{k}=" for k in REFINE_OPTIONS if k != "refine" and k in given]
        if loose and given.get("refine") != "superpixels":  # they would be ignored: say so, as segment does
            raise ValueError(f"model spec {item!r}: {', '.join(loose)} set the superpixel refinement; add "
                             "@refine=superpixels" + (f" (not {given['refine']})" if "refine" in given else ""))
        weights = weights or "drone"
        specs.append(ModelSpec(label or rest, model, weights, tuple(options)))
    if not specs:
        raise ValueError("no model to evaluate")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must differ: {labels}")
    return specs


@dataclass
class SemanticPlan:
    """What to run.

    Attributes
    ----------
    models : list of ModelSpec
        The models.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    jobs : int
        Worker processes over images (use 1 for timings).
    tolerance : int
        Boundary IoU band half-width in pixels.
    mode : str
        Inference mode (``auto`` picks sliding windows for full-resolution networks).

    Raises
    ------
    ValueError
        If a model is given twice, ``tolerance`` is negative, ``jobs`` below 1 or ``mode`` not one of
        :data:`uhrseg.defaults.MODES` (at construction, before any image is segmented).
    """

    models: list[ModelSpec]
    device: str = "cpu"
    jobs: int = 1
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE
    mode: str = "auto"

    def __post_init__(self) -> None:
        labels = [spec.label for spec in self.models]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:  # each would be computed and counted twice over
            raise ValueError(f"model given more than once: {', '.join(twice)}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {self.tolerance}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")


_worker_predictors: dict = {}


def _predictor(spec: ModelSpec, plan: SemanticPlan):
    from ..inference.semantic import SemanticPredictor

    if spec not in _worker_predictors:
        _worker_predictors.clear()
        magnet = refine = None
        given = dict(spec.options)
        if "refine" in given:
            from ..semantic import ClassRefinement

            refine = ClassRefinement(given["refine"], superpixels=given.get("superpixels", "pcnet"),
                                     n_segments=int(given["n"]) if "n" in given else None,
                                     confidence=float(given.get("confidence", 0.9)),
                                     oversegmentation=float(given["oversegment"]) if "oversegment" in given
                                     else None,
                                     merge_texture_weight=float(given["texture"]) if "texture" in given else None)
        if spec.model in ("magnet", "magnet-fast"):
            from ..inference.magnet import MagNetSettings

            opts = {k: MAGNET_OPTIONS[k](v) for k, v in spec.options if k in MAGNET_OPTIONS}
            scales = opts.pop("scales", 3)
            if isinstance(scales, tuple):
                opts["scales"] = scales
                scales = len(scales)
            magnet = MagNetSettings.for_model(spec.model, scales, **opts)
        _worker_predictors[spec] = SemanticPredictor(spec.model, weights=spec.weights, device=plan.device,
                                                     mode="auto" if magnet else plan.mode, magnet=magnet,
                                                     refine=refine)
    return _worker_predictors[spec]


def check_models(plan: SemanticPlan, table: ClassTable, dataset_label: str) -> None:
    """Load every model once and check that it has the dataset's classes.

    Raises
    ------
    UhrsegError
        If a model has another number of classes than the dataset.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        Missing or unusable weights.
    """
    for spec in plan.models:
        model = _predictor(spec, plan).model
        if model.n_classes != table.n_classes:
            raise UhrsegError(f"{spec.weights}: weights for {model.n_classes} classes "
                              f"({', '.join(model.class_names[:3])}, ...), but {dataset_label} has "
                              f"{table.n_classes} ({', '.join(table.names[:3])}, ...)")


def _evaluate_image(task: tuple) -> str:
    dataset, plan, spec, name = task
    predictor = _predictor(spec, plan)
    image = dataset.image(name)
    target = dataset.class_map(name)
    reset_peak_rss()
    t0 = time.perf_counter()
    classes = predictor.predict(image)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    n = predictor.model.n_classes
    matrix = confusion_matrix(classes, target, n)
    inter, union = boundary_iou_counts(classes, target, n, plan.tolerance)
    out = io.StringIO()
    csv.writer(out).writerow([spec.label, name, image.shape[1], image.shape[0], f"{seconds:.4f}", peak,
                              " ".join(map(str, matrix.ravel())), " ".join(map(str, inter)),
                              " ".join(map(str, union))])
    return out.getvalue()


def read_semantic_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a semantic shard or ``per_image.csv`` with numeric values and arrays."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if None not in r.values() and len(r) == len(SEMANTIC_FIELDS)]
    for r in rows:
        for key in ("width", "height", "peak_rss_bytes"):
            r[key] = int(r[key])
        r["seconds"] = float(r["seconds"])
        m = np.array(r["confusion"].split(), dtype=np.int64)
        n = int(round(np.sqrt(m.size)))
        r["confusion"] = m.reshape(n, n)
        r["boundary_intersection"] = np.array(r["boundary_intersection"].split(), dtype=np.int64)
        r["boundary_union"] = np.array(r["boundary_union"].split(), dtype=np.int64)
    return rows


def run_semantic_evaluation(dataset, plan: SemanticPlan, out_dir: str | os.PathLike,
                            progress: bool = True, redo=()) -> list[dict]:
    """Run (or resume) every (model, image) cell; write ``OUT/per_image.csv`` and return its rows.

    Parameters
    ----------
    dataset : ColourTableFolder or DeepGlobe
        Has ``names``, ``image(name)``, ``class_map(name)`` and ``class_table``.
    plan : SemanticPlan
        Models and options.
    out_dir : path-like
        Output folder; ``runs/`` inside it holds the resumable shards.
    progress : bool
        Show a progress bar (images done, ETA).
    redo : iterable of str
        Labels of ``plan.models`` whose finished cells are dropped and computed again.

    Raises
    ------
    UhrsegError, uhrseg.errors.CheckpointError
        As :func:`check_models`; UhrsegError also when ``redo`` names a label that is not among the models, and
        :class:`uhrseg.errors.OutputError` when ``out_dir`` cannot be made or written (after every check, so that
        a refused run leaves no folder).
    """
    out_dir = Path(out_dir)
    labels = [spec.label for spec in plan.models]
    unknown = [r for r in redo if r not in labels]
    if unknown:
        raise UhrsegError(f"--redo: {', '.join(unknown)} not among the models of this run ({', '.join(labels)})")
    check_models(plan, dataset.class_table, dataset.label)
    prepare_output_dir(out_dir)  # after every check, so that a refused run leaves no folder
    prepare_shards(out_dir, "per_image.csv", lambda row: out_dir / "runs" / f"{_safe(row[0])}.csv",
                   [out_dir / "runs" / f"{_safe(r)}.csv" for r in redo])
    work = []
    for spec in plan.models:
        shard = out_dir / "runs" / f"{_safe(spec.label)}.csv"
        done = done_images(shard, len(SEMANTIC_FIELDS), 1)
        work.append((shard, [(dataset, plan, spec, name) for name in dataset.names if name not in done]))
    run_shards(work, _evaluate_image, SEMANTIC_FIELDS, plan.jobs, progress, lambda t: t[2].label)
    rows = []
    for spec in plan.models:
        rows.extend(read_semantic_rows(out_dir / "runs" / f"{_safe(spec.label)}.csv"))
    tmp = out_dir / "per_image.csv.part"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(SEMANTIC_FIELDS)
        for r in rows:
            writer.writerow([r["model"], r["image"], r["width"], r["height"], f"{r['seconds']:.4f}",
                             r["peak_rss_bytes"], " ".join(map(str, r["confusion"].ravel())),
                             " ".join(map(str, r["boundary_intersection"])), " ".join(map(str, r["boundary_union"]))])
    os.replace(tmp, out_dir / "per_image.csv")
    return rows


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def summarize_semantic(rows: list[dict], table: ClassTable, tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
                       order: list[str] | None = None) -> list[dict]:
    """Per model: the metrics of the summed counts (:class:`uhrseg.metrics.SegmentationScores`), the mean
    seconds per image, the median, and the largest peak RSS (MB)."""
    labels = order or list(dict.fromkeys(r["model"] for r in rows))
    out = []
    for label in labels:
        items = [r for r in rows if r["model"] == label]
        if not items:
            continue
        scores = SegmentationScores(table.n_classes, table.evaluated, tolerance)
        for r in items:
            scores.add_counts(r["confusion"], r["boundary_intersection"], r["boundary_union"])
        s = scores.summary()
        secs = [r["seconds"] for r in items]
        out.append({"model": label, "images": len(items), "miou": s["miou"], "pixel_accuracy": s["pixel_accuracy"],
                    "fw_iou": s["fw_iou"], "boundary_iou": s["boundary_iou"],
                    "seconds_per_image": float(np.mean(secs)), "median_seconds": float(np.median(secs)),
                    "peak_rss_mb": max(r["peak_rss_bytes"] for r in items) / 2**20,
                    "iou": s["iou"], "boundary_iou_per_class": s["boundary_iou_per_class"]})
    return out


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def write_semantic_report(summary: list[dict], table: ClassTable, out_dir: str | os.PathLike, *, title: str,
                          command: str, notes: list[str]) -> list[Path]:
    """Write ``summary.csv``, ``per_class.csv``, ``per_class_iou.png`` and ``report.md`` (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    keys = ["model", "images", "miou", "pixel_accuracy", "fw_iou", "boundary_iou", "seconds_per_image",
            "median_seconds", "peak_rss_mb"]
    paths.append(_write_csv(out_dir / "summary.csv", keys, [[r[k] for k in keys] for r in summary]))
    evaluated = list(table.evaluated)
    paths.append(_write_csv(out_dir / "per_class.csv", ["model"] + [table.names[c] for c in evaluated],
                            [[r["model"]] + [r["iou"][c] for c in evaluated] for r in summary]))

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(evaluated) + 2), 4.5))
    width = 0.8 / max(1, len(summary))
    for i, r in enumerate(summary):
        ax.bar(np.arange(len(evaluated)) + i * width, [r["iou"][c] or 0 for c in evaluated], width, label=r["model"])
    ax.set_xticks(np.arange(len(evaluated)) + 0.4 - width / 2)
    ax.set_xticklabels([table.names[c] for c in evaluated], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    paths.append(out_dir / "per_class_iou.png")
    tmp = out_dir / "per_class_iou.part.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, paths[-1])

    lines = [f"# {title}", "", "Command:", "", "```bash", command, "```", ""] + notes + [""]
    lines += ["| model | images | mIoU (%) | pixel acc. (%) | fwIoU (%) | boundary IoU (%) | s / image | "
              "peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in summary:
        lines.append(f"| {r['model']} | {r['images']} | {_pct(r['miou'])} | {_pct(r['pixel_accuracy'])} | "
                     f"{_pct(r['fw_iou'])} | {_pct(r['boundary_iou'])} | {r['seconds_per_image']:.3f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += ["", "## IoU per class (%)", "", "| class | " + " | ".join(r["model"] for r in summary) + " |",
              "|---|" + "---|" * len(summary)]
    for c in evaluated:
        lines.append(f"| {table.names[c]} | " + " | ".join(_pct(r["iou"][c]) for r in summary) + " |")
    lines += ["", "![IoU per class](per_class_iou.png)", ""]
    if (out_dir / "examples.png").is_file():
        lines += ["![examples](examples.png)", ""]
    path = out_dir / "report.md"
    tmp = out_dir / "report.md.part"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    paths.append(path)
    return paths


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v) for v in row])
    os.replace(tmp, path)
    return path


def write_examples(dataset, plan: SemanticPlan, names: list[str], path: str | os.PathLike,
                   max_side: int = 480) -> Path:
    """A figure with, per image, the image, its ground truth and every model's class map (palette colours).

    ``dataset`` gives the images and class maps of ``names``; ``plan`` the models (their class maps are computed
    here); the PNG is written to ``path`` (returned), each image resized so that its longer side is ``max_side``
    pixels.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io.images import to_uint8

    palette = dataset.class_table.palette()
    cols = 2 + len(plan.models)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.8 * cols, 2.2 * len(names) + 0.3), squeeze=False)
    for i, name in enumerate(names):
        image = to_uint8(dataset.image(name))
        scale = max_side / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        panels = [("image", cv2.resize(image, size, interpolation=cv2.INTER_AREA)),
                  ("ground truth", palette[cv2.resize(dataset.class_map(name), size,
                                                      interpolation=cv2.INTER_NEAREST)])]
        for spec in plan.models:
            classes = _predictor(spec, plan).predict(image)
            panels.append((spec.label, palette[cv2.resize(classes, size, interpolation=cv2.INTER_NEAREST)]))
        for ax, (label, rgb) in zip(axes[i], panels):
            ax.imshow(rgb)
            ax.set_title(f"{label}" if i == 0 else "", fontsize=8)
            ax.axis("off")
        axes[i][0].set_ylabel(name)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_suffix(".part.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
