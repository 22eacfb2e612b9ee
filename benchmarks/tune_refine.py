"""Grid search of the full-resolution refinement's settings for a superpixel network, on a labelled split.

For every image the network's connected labels are computed once (``refine_iterations=0``; with the
predictor's default ``oversegmentation``, 1.5 n cells merged to n since the twelfth session); each setting of
``(passes, compactness m, smoothness lambda)`` of :func:`uhrseg.grid.refine_boundaries` is then applied to
them and scored against every ground truth with the benchmark's metrics (BR and BP at the tolerance
``--tolerance``, default ``round(0.0025 x diagonal)``, ASA; :mod:`uhrseg.metrics.superpixel`). The means over
all (image, ground truth) pairs go to ``OUT.csv`` and the BR-BP plane to ``OUT.png`` (one point per setting,
the current defaults marked).

Usage::

    python benchmarks/tune_refine.py --dataset bsds500:val --weights src/uhrseg/weights/pcnet.pt \\
        --n-segments 600 --passes 4,8 --compactness 2.5,5,10 --smoothness 0,50,100,200 --jobs 2 \\
        --out docs/results/refine-tuning/pcnet-ft-val

Use a split the weights were not trained on (the packaged ``pcnet.pt``: its last 5000 iterations never saw BSDS500 val).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
from pathlib import Path

from _scoring import pair_sums, split_parser, summed_over_images, write_means  # benchmarks/_scoring.py


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


# Per worker process: one predictor per weights file, built on the first image the process scores.
_PREDICTORS: dict = {}


def _score_image(task: tuple) -> tuple[str, list[list[float]]]:
    """Worker: one image -> per setting [sum BR, sum BP, sum ASA, K, pairs]."""
    spec, root, method, weights, n_segments, settings, tolerance, name = task
    import torch

    from uhrseg.datasets.readers import open_dataset
    from uhrseg.grid.refine import refine_boundaries
    from uhrseg.inference.predictor import SuperpixelPredictor

    torch.set_num_threads(1)
    dataset = open_dataset(spec, root)
    image, gts = dataset.image(name), dataset.ground_truths(name)
    if (method, weights) not in _PREDICTORS:
        _PREDICTORS[method, weights] = SuperpixelPredictor(method, device="cpu", weights=weights, refine_iterations=0)
    predictor = _PREDICTORS[method, weights]
    raw = predictor.predict(image, n_segments)
    rows = []
    for passes, m, lam in settings:
        labels = refine_boundaries(image, raw, int(passes), m, lam) if passes else raw
        rows.append(pair_sums(labels, gts, tolerance))
    return rows


def main() -> None:
    parser = split_parser(__doc__)
    parser.add_argument("--method", default="pcnet", choices=("pcnet", "scn"), help="the network (default pcnet)")
    parser.add_argument("--weights", default=None, help="its checkpoint (default: the packaged one)")
    parser.add_argument("--passes", default="4,8")
    parser.add_argument("--compactness", default="2.5,5,10")
    parser.add_argument("--smoothness", default="0,50,100,200")
    parser.add_argument("--out", type=Path, required=True, help="output stem: OUT.csv and OUT.png")
    parser.add_argument("--compare", type=Path, default=None,
                        help="summary.csv of `uhrseg evaluate` on the same split: its methods are drawn as crosses")
    parser.add_argument("--replot", action="store_true", help="only redraw OUT.png from an existing OUT.csv")
    args = parser.parse_args()
    if args.replot:
        plot(args, read_rows(args.out.with_suffix(".csv")))
        return

    from uhrseg.datasets.readers import open_dataset

    settings = [(0, 0.0, 0.0)] + list(itertools.product([int(v) for v in _floats(args.passes)],
                                                        _floats(args.compactness), _floats(args.smoothness)))
    names = open_dataset(args.dataset, args.bsds500_root).names[: args.images]
    tasks = [(args.dataset, args.bsds500_root, args.method, args.weights, args.n_segments, settings, args.tolerance, n)
             for n in names]
    totals = summed_over_images(_score_image, tasks, args.jobs, len(settings))
    write_means(args.out, ["passes", "compactness", "smoothness"], settings, totals, len(names))
    plot(args, read_rows(args.out.with_suffix(".csv")))


def read_rows(path: Path) -> list[dict]:
    """The rows of OUT.csv as dicts of floats."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def plot(args: argparse.Namespace, rows: list[dict]) -> None:
    """BR against BP, one point per setting (in red the default for labels not upsampled, ``f <= 1``: on larger
    images the default lambda is lower, :func:`uhrseg.defaults.resolution_smoothness`), and the ``--compare``
    methods as crosses."""
    from uhrseg.defaults import DEFAULT_REFINE_ITERATIONS
    from uhrseg.grid.refine import DEFAULT_COMPACTNESS, DEFAULT_SMOOTHNESS

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter([r["bp"] for r in rows], [r["br"] for r in rows], c="tab:blue", s=18, label="PCNet: passes/m/lambda")
    for r in rows:
        passes, m, lam, x, y = int(r["passes"]), r["compactness"], r["smoothness"], r["bp"], r["br"]
        label = "raw" if passes == 0 else f"{passes}/{m:g}/{lam:g}"
        is_default = (passes, m, lam) == (DEFAULT_REFINE_ITERATIONS, DEFAULT_COMPACTNESS, DEFAULT_SMOOTHNESS)
        ax.annotate(label + (" (default at f <= 1)" if is_default else ""), (x, y), fontsize=6,
                    color="tab:red" if is_default else "black")
    if args.compare is not None:
        with open(args.compare, newline="") as f:
            other = list(csv.DictReader(f))
        ax.scatter([float(r["bp"]) for r in other], [float(r["br"]) for r in other], marker="x", c="tab:green",
                   label="classical methods (K)")
        for r in other:
            ax.annotate(f"{r['method']} ({float(r['k']):.0f})", (float(r["bp"]), float(r["br"])), fontsize=7,
                        color="tab:green")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_xlabel("boundary precision BP")
    ax.set_ylabel("boundary recall BR")
    r = "0.0025 x diagonal" if args.tolerance is None else f"{args.tolerance} px"
    ax.set_title(f"PCNet refinement settings, {args.dataset}, n = {args.n_segments}, r = {r}", fontsize=9)
    fig.tight_layout()
    tmp_png = args.out.with_name(args.out.name + ".part.png")
    fig.savefig(tmp_png, dpi=120)
    os.replace(tmp_png, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
