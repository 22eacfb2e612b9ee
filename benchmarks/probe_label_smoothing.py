"""Probe: does a majority (mode) filter on the final labels buy boundary precision on land-cover tiles?

On the DeepGlobe tiles PCNet's boundaries are long (0.06-0.10 of the pixels lie on one, against 0.04 for a
regular grid of the same K), and its BP trails Felzenszwalb's. Part of that length could be pixel-level
jaggedness from the full-resolution refinement in textured fields. This script applies a 3 x 3 majority filter
to the predictor's default labels ``PASSES`` times (each pixel takes the label most of its 3 x 3 window holds,
when its own label holds fewer than 5 of the 9; ties keep the first found) and scores BR, BP and ASA for each
count of passes. The filter is this probe's own, not a library feature; it
can split a superpixel, which the probe does not repair (K is counted before filtering).

Results and the decision: ``docs/results/refine-tuning/report.md``, section "A majority filter on the labels".

Usage::

    python benchmarks/probe_label_smoothing.py --dataset ../shared/datasets/deepglobe/train --tolerance 1 \\
        --passes 0,1,2,3 --out docs/results/refine-tuning/label-mode-filter-deepglobe-train
"""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np

from _scoring import pair_sums, split_parser, summed_over_images, write_means  # benchmarks/_scoring.py


@numba.njit(cache=True)
def _mode_kernel(lab: np.ndarray, out: np.ndarray) -> None:
    height, width = lab.shape
    for y in range(1, height - 1):
        for x in range(1, width - 1):
            own = lab[y, x]
            best, best_count = own, 0
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    if lab[y + dy, x + dx] == own:
                        best_count += 1
            if best_count >= 5:
                continue
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    candidate = lab[y + dy, x + dx]
                    count = 0
                    for ey in range(-1, 2):
                        for ex in range(-1, 2):
                            if lab[y + ey, x + ex] == candidate:
                                count += 1
                    if count > best_count:
                        best, best_count = candidate, count
            out[y, x] = best


def mode_filter(labels: np.ndarray) -> np.ndarray:
    """One pass of the 3 x 3 majority filter (interior pixels; the image's outer ring is kept):
    ``(H, W)`` int32 in, a new ``(H, W)`` int32 out."""
    out = labels.copy()
    _mode_kernel(labels, out)
    return out


def _score_image(task: tuple) -> list[list[float]]:
    """Worker: one image -> per pass count [sum BR, sum BP, sum ASA, K, pairs]."""
    spec, root, n_segments, passes, tolerance, name = task
    from uhrseg import SuperpixelPredictor
    from uhrseg.datasets.readers import open_dataset

    dataset = open_dataset(spec, root)
    image, gts = dataset.image(name), dataset.ground_truths(name)
    labels = SuperpixelPredictor("pcnet", backend="opencv").predict(image, n_segments)
    k = float(labels.max() + 1)
    rows, done = [], 0
    for p in sorted(passes):
        for _ in range(p - done):
            labels = mode_filter(labels)
        done = p
        sums = pair_sums(labels, gts, tolerance)
        sums[3] = k
        rows.append(sums)
    return rows


def main() -> None:
    parser = split_parser(__doc__)
    parser.add_argument("--passes", default="0,1,2,3", help="comma-separated numbers of filter passes")
    parser.add_argument("--out", type=Path, required=True, help="output stem: OUT.csv")
    args = parser.parse_args()

    from uhrseg.datasets.readers import open_dataset

    passes = sorted({int(p) for p in args.passes.split(",")})
    names = open_dataset(args.dataset, args.bsds500_root).names[: args.images]
    tasks = [(args.dataset, args.bsds500_root, args.n_segments, passes, args.tolerance, n) for n in names]
    totals = summed_over_images(_score_image, tasks, args.jobs, len(passes))
    write_means(args.out, ["passes"], [(p,) for p in passes], totals, len(names))


if __name__ == "__main__":
    main()
