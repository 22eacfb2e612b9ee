"""Probe: merge costs that also see the boundary two superpixels share.

The predictor merges ``round(1.5 n)`` grid cells to ``n`` with Ward's cost (:func:`uhrseg.grid.merge_superpixels`).
This script scores two costs that also look at the shared boundary (BR, BP, ASA, K) on a labelled split, like
``tune_oversegmentation.py``:

* ``ms:LAMBDA``: Mumford-Shah region merging (Koepfler, Lopez and Morel, "A multiscale algorithm for image
  segmentation by variational method", SIAM J. Numer. Anal. 1994): merging ``i`` and ``j`` changes the energy
  (within-superpixel squared colour deviation + ``LAMBDA`` x boundary length) by
  ``n_i n_j / (n_i + n_j) ||c_i - c_j||^2 - LAMBDA L_ij``, ``L_ij`` the shared boundary in image pixels. The
  cheapest change is merged first, so long boundaries through flat regions go first. ``ms:0`` is Ward's cost.
* ``g:ALPHA``: Ward's cost times ``g_ij ** ALPHA``, ``g_ij`` the mean CIELAB contrast across the shared boundary
  (weak boundaries merge first).

Both keep the merge on the network's output grid, each cell weighted by the image pixels it stands for, as the
predictor does. ``ms`` is the library's own merge since the twentieth session (``SuperpixelPredictor(
merge_boundary_weight=LAMBDA)``; it gave this probe's earlier numbers on the DeepGlobe train tiles). ``g`` is not a
library feature: for it the script replaces the predictor's merge, in its own worker processes only. Every other
setting is the predictor's default unless ``--smoothness`` or ``--factor`` is given.
Results and the decision: ``docs/results/refine-tuning/report.md``, section "Merge costs that see the boundary".

Usage::

    python benchmarks/probe_boundary_merge.py --dataset ../shared/datasets/deepglobe/train --tolerance 1 \\
        --settings ms:0,ms:1000,ms:3000,ms:10000,g:1,g:2 --out docs/results/refine-tuning/boundary-merge-deepglobe-train
"""

from __future__ import annotations

import heapq
from math import dist
from pathlib import Path

import numpy as np

from _scoring import pair_sums, split_parser, summed_over_images, write_means  # benchmarks/_scoring.py

# ALPHA of the worker's contrast-weighted merge, set per g:ALPHA setting before each prediction.
_ALPHA = [1.0]


def contrast_merge(labels: np.ndarray, features: np.ndarray, n_segments: int, row_weights: np.ndarray | None = None,
                   col_weights: np.ndarray | None = None, *, boundary_weight: float = 0.0,
                   out: np.ndarray | None = None) -> np.ndarray:
    """:func:`uhrseg.grid.merge_superpixels`'s signature and result conventions, with Ward's cost times the mean
    contrast across the shared boundary to the power ``_ALPHA[0]`` (``boundary_weight`` must be 0)."""
    assert boundary_weight == 0.0, "the g cost has no boundary term"
    param = _ALPHA[0]
    height, width = labels.shape
    rw = np.ones(height) if row_weights is None else np.asarray(row_weights, float)
    cw = np.ones(width) if col_weights is None else np.asarray(col_weights, float)
    k = int(labels.max()) + 1
    out = np.empty(labels.shape, np.int32) if out is None else out
    if k <= n_segments:
        out[...] = labels
        return out
    f = features.reshape(height, width, -1).astype(np.float64)
    weight = (rw[:, None] * cw[None, :]).ravel()
    count = np.bincount(labels.ravel(), weight, minlength=k)
    means = np.stack([np.bincount(labels.ravel(), weight * f[..., c].ravel(), minlength=k)
                      for c in range(f.shape[2])], 1) / count[:, None]
    # 4-neighbour pairs across a boundary: a horizontal pair in row y is rw[y] image pixels of boundary, a
    # vertical pair in column x cw[x]
    right, down = labels[:, :-1] != labels[:, 1:], labels[:-1] != labels[1:]
    a = np.concatenate([labels[:, :-1][right], labels[:-1][down]]).astype(np.int64)
    b = np.concatenate([labels[:, 1:][right], labels[1:][down]]).astype(np.int64)
    length = np.concatenate([np.broadcast_to(rw[:, None], right.shape)[right],
                             np.broadcast_to(cw[None, :], down.shape)[down]])
    contrast = np.concatenate([np.linalg.norm(f[:, :-1][right] - f[:, 1:][right], axis=1),
                               np.linalg.norm(f[:-1][down] - f[1:][down], axis=1)])
    edges, inverse = np.unique(np.minimum(a, b) * k + np.maximum(a, b), return_inverse=True)
    sum_length = np.bincount(inverse, length).tolist()
    sum_contrast = np.bincount(inverse, length * contrast).tolist()
    lo, hi = (edges // k).tolist(), (edges % k).tolist()
    # neighbours[i][m] = [boundary length, length-weighted contrast] of the pair, one list shared by both ends
    neighbours: list[dict | None] = [{} for _ in range(k)]
    for i, m, s_len, s_con in zip(lo, hi, sum_length, sum_contrast):
        neighbours[i][m] = neighbours[m][i] = [s_len, s_con]
    n_pix, mean = count.tolist(), means.tolist()

    def cost(i: int, m: int, stats: list) -> float:
        ward = dist(mean[i], mean[m]) ** 2 * n_pix[i] * n_pix[m] / (n_pix[i] + n_pix[m])
        return ward * (stats[1] / stats[0] + 1e-3) ** param

    version = [0] * k
    heap = [(cost(i, m, neighbours[i][m]), i, m, 0, 0) for i, m in zip(lo, hi)]
    heapq.heapify(heap)
    parent = list(range(k))
    alive = k
    while alive > n_segments and heap:
        _, i, j, vi, vj = heapq.heappop(heap)
        if version[i] != vi or version[j] != vj:
            continue
        parent[j], version[j] = i, -1
        total = n_pix[i] + n_pix[j]
        mean[i] = [(p * n_pix[i] + q * n_pix[j]) / total for p, q in zip(mean[i], mean[j])]
        n_pix[i] = total
        version[i] = vi + 1
        del neighbours[i][j]
        for m, stats in neighbours[j].items():
            if m == i:
                continue
            del neighbours[m][j]
            if m in neighbours[i]:
                kept = neighbours[i][m]
                kept[0] += stats[0]
                kept[1] += stats[1]
            else:
                neighbours[i][m] = neighbours[m][i] = [stats[0], stats[1]]
        neighbours[j] = None
        for m, stats in neighbours[i].items():
            a_, b_ = (i, m) if i < m else (m, i)
            heapq.heappush(heap, (cost(i, m, stats), a_, b_, version[a_], version[b_]))
        alive -= 1
    root = np.asarray(parent)
    while not np.array_equal(root[root], root):
        root = root[root]
    _, relabel = np.unique(root, return_inverse=True)
    out[...] = relabel.astype(np.int32)[labels]
    return out


def _score_image(task: tuple) -> list[list[float]]:
    """Worker: one image -> per setting [sum BR, sum BP, sum ASA, K, pairs]."""
    spec, root, n_segments, settings, tolerance, factor, smoothness, name = task
    import torch

    import uhrseg.inference.predictor as predictor_module
    from uhrseg import SuperpixelPredictor
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.grid.merge import merge_superpixels as library_merge  # (a reused worker may hold the g merge)

    torch.set_num_threads(1)
    dataset = open_dataset(spec, root)
    image, gts = dataset.image(name), dataset.ground_truths(name)
    predictor = SuperpixelPredictor("pcnet", device="cpu", oversegmentation=factor, refine_smoothness=smoothness)
    rows = []
    for mode, param in settings:
        if mode == "ms":  # the library's Mumford-Shah merge
            predictor_module.merge_superpixels = library_merge
            predictor.merge_boundary_weight = param
        else:  # this worker process only
            predictor_module.merge_superpixels = contrast_merge
            predictor.merge_boundary_weight = 0.0
            _ALPHA[0] = param
        rows.append(pair_sums(predictor.predict(image, n_segments), gts, tolerance))
    return rows


def main() -> None:
    parser = split_parser(__doc__)
    parser.add_argument("--settings", default="ms:0,ms:1000", help="comma-separated ms:LAMBDA or g:ALPHA")
    parser.add_argument("--factor", type=float, default=1.5, help="oversegmentation factor (default 1.5)")
    parser.add_argument("--smoothness", type=float, default=None,
                        help="refinement lambda (default: the predictor's rule)")
    parser.add_argument("--out", type=Path, required=True, help="output stem: OUT.csv")
    args = parser.parse_args()

    from uhrseg.datasets.readers import open_dataset

    settings = []
    for item in args.settings.split(","):
        mode, _, value = item.partition(":")
        if mode not in ("ms", "g") or not value:
            parser.error(f"--settings: {item!r} is not ms:LAMBDA or g:ALPHA")
        settings.append((mode, float(value)))
    names = open_dataset(args.dataset, args.bsds500_root).names[: args.images]
    tasks = [(args.dataset, args.bsds500_root, args.n_segments, settings, args.tolerance, args.factor,
              args.smoothness, n) for n in names]
    totals = summed_over_images(_score_image, tasks, args.jobs, len(settings))
    write_means(args.out, ["cost", "parameter"], settings, totals, len(names))


if __name__ == "__main__":
    main()
