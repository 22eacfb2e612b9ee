"""Shared by the tuning scripts: BR, BP and ASA of one label map summed over an image's ground truths."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def pair_sums(labels: np.ndarray, ground_truths: list[np.ndarray], tolerance: int | None) -> list[float]:
    """``[sum BR, sum BP, sum ASA, K, pairs]`` of ``labels`` against each ground truth (boundary tolerance
    ``tolerance`` pixels, None: the benchmark's ``round(0.0025 x diagonal)``; :mod:`uhrseg.metrics.superpixel`)."""
    from uhrseg.metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision

    sums = [0.0, 0.0, 0.0, float(labels.max() + 1), 0.0]
    for gt in ground_truths:
        br, bp = boundary_recall_precision(labels, gt, tolerance)
        sums[0] += br
        sums[1] += bp
        sums[2] += achievable_segmentation_accuracy(labels, gt)
        sums[4] += 1
    return sums


def summed_over_images(worker, tasks: list, jobs: int, n_rows: int) -> np.ndarray:
    """Run ``worker(task) -> n_rows x 5 sums`` (:func:`pair_sums` per setting) on each image's task in ``jobs``
    processes, with progress on stderr; returns the ``(n_rows, 5)`` totals."""
    import sys
    import time
    from concurrent.futures import ProcessPoolExecutor

    totals = np.zeros((n_rows, 5))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for i, rows in enumerate(pool.map(worker, tasks, chunksize=1), 1):
            totals += np.asarray(rows)
            print(f"\r{i}/{len(tasks)} images, {time.perf_counter() - t0:.0f} s", end="", file=sys.stderr)
    print(file=sys.stderr)
    return totals


def write_means(out, key_names: list[str], keys: list[tuple], totals: np.ndarray, n_images: int) -> None:
    """``OUT.csv``: one row per setting, its keys then the mean BR, BP, ASA over pairs, the mean K over images and
    the pair count (written to a temporary name, then renamed); printed too."""
    import csv
    import os

    pairs = totals[0, 4]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".csv.part")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*key_names, "br", "bp", "asa", "mean_k", "pairs"])
        for key, row in zip(keys, totals):
            writer.writerow([*key, f"{row[0] / pairs:.4f}", f"{row[1] / pairs:.4f}", f"{row[2] / pairs:.4f}",
                             f"{row[3] / n_images:.1f}", int(pairs)])
    os.replace(tmp, out.with_suffix(".csv"))
    print(out.with_suffix(".csv").read_text())


def split_parser(doc: str) -> argparse.ArgumentParser:
    """The tuning scripts' parser with the options they share: ``--dataset`` (a folder or ``bsds500:SPLIT``),
    ``--bsds500-root``, ``--n-segments``, ``--tolerance``, ``--images`` and ``--jobs``; each script adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bsds500:val")
    parser.add_argument("--bsds500-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "datasets"
                                                      / "BSDS500"))
    parser.add_argument("--n-segments", type=int, default=600)
    parser.add_argument("--tolerance", type=int, default=None, metavar="PX",
                        help="boundary tolerance r in pixels (default round(0.0025 x diagonal); the high-resolution "
                             "reports use 1)")
    parser.add_argument("--images", type=int, default=None, help="first N images only")
    parser.add_argument("--jobs", type=int, default=2)
    return parser
