"""Merging adjacent superpixels down to a requested count (Ward's criterion on the region adjacency graph).

A grid method spends its superpixels evenly: a flat lawn gets as many as a street full of people. Asking the
network for more cells than wanted and then merging the most similar neighbours moves superpixels from flat
regions to detailed ones, which is what the irregular classical methods (SEEDS, Felzenszwalb) gain by
construction. Measured with the packaged PCNet at K = 600 (``docs/results/refine-tuning/``, section "Asking for
more cells and merging"): on 30 semantic-drone ``more/`` frames ASA went from 0.9331 to 0.9395 with BR and BP both
up, and on BSDS500 val and DeepGlobe train BR, BP and ASA all rose.

Method: agglomerative merging of a region adjacency graph (Beucher's and Haris et al.'s hierarchical region
merging; the cost is Ward's, "Hierarchical grouping to optimize an objective function", JASA 1963). Two adjacent
superpixels ``i``, ``j`` with ``n_i``, ``n_j`` pixels and mean features ``c_i``, ``c_j`` cost

    ``d(i, j) = n_i n_j / (n_i + n_j) ||c_i - c_j||^2``,

the increase of the within-superpixel sum of squared feature deviations that merging them causes. The cheapest
pair is merged until ``n_segments`` remain (ties: the smaller label pair first, so the result is deterministic).
Ward's cost grows with size, so large regions stop absorbing their neighbours. A merged superpixel is the union
of adjacent 4-connected ones, so it stays 4-connected.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

__all__ = ["COMPILED_MERGES", "merge_superpixels"]

# Rows of the label map per band of the accumulation pass (temporaries: about 40 bytes per pixel of a band).
_BAND_ROWS = 256

#: Merges (``K - n_segments``) from which the loop runs in the numba kernel
#: (:func:`uhrseg.grid.merge_kernel.ward_merges_kernel`: the same merges, about 10x faster, a third of the
#: memory) rather than in Python. Its first call after an install compiles it (4.4 s on the 2-core CPU; 0.4 s to
#: load it from numba's cache afterwards), which large merges repay (about 0.8 s in Python for 20 000; 9.3 s for
#: the 195 586 of a 20K image's bridge); the README demo (1 000 merges) and the 5K photograph at ``n = 5000``
#: (2 500) compile nothing.
COMPILED_MERGES = 20_000


def merge_superpixels(labels: np.ndarray, features: np.ndarray, n_segments: int,
                      row_weights: np.ndarray | None = None, col_weights: np.ndarray | None = None, *,
                      boundary_weight: float = 0.0, out: np.ndarray | None = None) -> np.ndarray:
    """Merge the most similar adjacent superpixels (Ward's cost) until ``n_segments`` remain.

    With ``boundary_weight`` ``lambda > 0`` the cost of merging ``i`` and ``j`` is Ward's minus ``lambda L_ij``,
    ``L_ij`` the boundary the two share, in image pixels: the change of a Mumford-Shah energy (the within-superpixel
    sum of squared feature deviations plus ``lambda`` times the total boundary length; Koepfler, Lopez and Morel,
    "A multiscale algorithm for image segmentation by variational method", SIAM J. Numer. Anal. 1994). Long
    boundaries through flat regions then go first, so homogeneous areas end in fewer, larger superpixels: more
    boundary precision for less recall (``docs/results/refine-tuning/report.md``, "Merge costs that see the
    boundary").

    The merging loop runs in Python, or from :data:`COMPILED_MERGES` merges on in a numba kernel
    (:mod:`uhrseg.grid.merge_kernel`) that makes the same merges in the same order: the labels do not depend on
    which (tested).

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Superpixel labels, 0-based and contiguous (``K = labels.max() + 1``), e.g. after
        :func:`uhrseg.grid.enforce_connectivity`.
    features : (H, W) or (H, W, C) ndarray of float or int
        What "similar" means: per-pixel features, e.g. 8-bit CIELAB (:func:`uhrseg.grid.lab8`).
    n_segments : int
        Superpixels wanted; ``>= 1``. When ``K <= n_segments`` nothing is merged (a copy of ``labels`` as int32
        is returned).
    row_weights, col_weights : (H,) and (W,) ndarray of float, optional
        Image pixels each row and column of the map stands for (a label map on a coarser grid than the image,
        as in :func:`uhrseg.grid.enforce_connectivity`); the sizes ``n_i`` and means are weighted by
        ``row_weights[y] * col_weights[x]``. Default: 1 per pixel. A horizontal pair of neighbours in row ``y``
        shares ``row_weights[y]`` image pixels of boundary, a vertical pair in column ``x`` ``col_weights[x]``.
    boundary_weight : float
        ``lambda`` above, in squared feature units per image pixel of boundary (8-bit CIELAB: 3000 is the
        difference of about 55 levels over one pixel); 0 (the default) is Ward's cost alone, and keeps the
        merge's memory at its least (the shared lengths take a dictionary of about 100 bytes per adjacent pair).
    out : (H, W) ndarray of int32, optional
        Where to write the result, band by band; may be ``labels`` itself (an int32 map), which saves a second
        map of ``4 H W`` bytes (the streamed path merges maps of over 100 million cells).

    Returns
    -------
    (H, W) ndarray of int32
        ``out`` if given, else a new map: ``min(K, n_segments)`` labels, 0-based and contiguous, numbered in the
        order of the smallest input label each contains (so superpixels that were not merged keep their relative
        order). Each output superpixel is a union of adjacent input superpixels, so 4-connected input
        superpixels give 4-connected output ones.
        Fewer than ``n_segments`` remain only when the adjacency graph has more components than that.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D, ``features``, the weights or ``out`` do not match its shape (``out`` must be
        int32), ``n_segments < 1``, ``boundary_weight`` is negative or not finite, or a merge cost is not finite
        (NaN or infinite features, or a superpixel whose pixels all have zero weight).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    features = np.asarray(features)
    if features.shape[:2] != labels.shape or features.ndim not in (2, 3):
        raise ValueError(f"features {features.shape} do not match labels {labels.shape}")
    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if not 0.0 <= boundary_weight < math.inf:  # NaN too
        raise ValueError(f"boundary_weight must be finite and >= 0, got {boundary_weight}")
    height, width = labels.shape
    row_weights = np.ones(height) if row_weights is None else np.asarray(row_weights, np.float64)
    col_weights = np.ones(width) if col_weights is None else np.asarray(col_weights, np.float64)
    if row_weights.shape != (height,) or col_weights.shape != (width,):
        raise ValueError(f"row_weights {row_weights.shape} and col_weights {col_weights.shape} do not match labels "
                         f"{labels.shape}")
    if out is not None and (out.shape != labels.shape or out.dtype != np.int32):
        raise ValueError(f"out must be an int32 array of shape {labels.shape}, got {out.dtype} {out.shape}")
    if out is None:
        out = np.empty(labels.shape, np.int32)
    k = int(labels.max()) + 1 if labels.size else 0
    if k <= n_segments:
        out[...] = labels
        return out

    # Sizes, feature sums and the region adjacency graph (label pairs of 4-neighbours), in bands of rows so that
    # the temporaries stay small next to the map (the streamed path merges maps of tens of millions of pixels).
    features = features.reshape(height, width, -1)
    n_features = features.shape[2]
    count = np.zeros(k)
    sums = np.zeros((k, n_features))
    codes, lengths = [], []
    for y0 in range(0, height, _BAND_ROWS):
        y1 = min(height, y0 + _BAND_ROWS)
        band = labels[y0:y1]
        # Runs of one label in raster order: summed with reduceat first, so the scattered adds are per run.
        flat = band.ravel()
        starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
        runs = flat[starts]
        weight = (row_weights[y0:y1, None] * col_weights[None, :]).ravel()
        count += np.bincount(runs, np.add.reduceat(weight, starts), minlength=k)
        for c in range(n_features):
            sums[:, c] += np.bincount(runs, np.add.reduceat(weight * features[y0:y1, :, c].ravel(), starts),
                                      minlength=k)
        above = labels[max(0, y0 - 1):y1]  # the band with the row above it, for the vertical pairs
        right = band[:, :-1] != band[:, 1:]
        down = above[:-1] != above[1:]
        a = np.concatenate([band[:, :-1][right], above[:-1][down]]).astype(np.int64)
        b = np.concatenate([band[:, 1:][right], above[1:][down]]).astype(np.int64)
        if boundary_weight == 0.0:
            codes.append(np.unique(np.minimum(a, b) * k + np.maximum(a, b)))
        else:  # each pair's boundary in image pixels, summed per pair of labels
            band_codes, inverse = np.unique(np.minimum(a, b) * k + np.maximum(a, b), return_inverse=True)
            length = np.concatenate([np.broadcast_to(row_weights[y0:y1, None], right.shape)[right],
                                     np.broadcast_to(col_weights[None, :], down.shape)[down]])
            codes.append(band_codes)
            lengths.append(np.bincount(inverse.ravel(), length, minlength=len(band_codes)))
    means = sums / np.maximum(count, 1e-300)[:, None]
    shared = None
    if boundary_weight == 0.0:
        edges = np.unique(np.concatenate(codes))
    else:
        edges, inverse = np.unique(np.concatenate(codes), return_inverse=True)
        shared = np.bincount(inverse.ravel(), np.concatenate(lengths), minlength=len(edges))
    lo, hi = edges // k, edges % k
    d = means[lo] - means[hi]
    squared = d[:, 0] * d[:, 0]  # summed feature by feature, as the merging loop sums them
    for c in range(1, n_features):
        squared = squared + d[:, c] * d[:, c]
    with np.errstate(invalid="ignore", divide="ignore"):  # (refused below, with a message)
        costs = squared * count[lo] * count[hi] / (count[lo] + count[hi])
    del d, squared
    if shared is not None:
        costs = costs - boundary_weight * shared
    if not np.isfinite(costs).all():  # no order to merge in
        raise ValueError("merge costs must be finite: features must be finite and every superpixel must have a "
                         "positive weight (row_weights x col_weights)")

    if k - n_segments >= COMPILED_MERGES:
        from .merge_kernel import ward_merges_kernel

        # (Python int and float arguments: one compiled specialisation, whatever numeric types the caller gave)
        root = ward_merges_kernel(lo, hi, costs, count, means, int(n_segments), 2.0,
                                  np.empty(0) if shared is None else shared, float(boundary_weight))
    else:  # in a helper, so that its Python lists (hundreds of bytes per superpixel) are freed before the new map
        root = np.asarray(_ward_merges(lo, hi, costs, count, means, k, n_segments, shared=shared,
                                       boundary_weight=boundary_weight))
    del lo, hi, costs, count, means, edges, shared
    while True:
        up = root[root]
        if np.array_equal(up, root):
            break
        root = up
    _, relabel = np.unique(root, return_inverse=True)
    relabel = relabel.astype(np.int32)
    for y0 in range(0, height, _BAND_ROWS):  # in place when out is labels: each band is read before it is written
        out[y0:y0 + _BAND_ROWS] = relabel[labels[y0:y0 + _BAND_ROWS]]
    return out


def _ward_merges(lo: np.ndarray, hi: np.ndarray, costs: np.ndarray, count: np.ndarray, means: np.ndarray, k: int,
                 n_segments: int, compact_factor: float = 2.0, shared: np.ndarray | None = None,
                 boundary_weight: float = 0.0) -> list[int]:
    """Merge the cheapest adjacent pair until ``n_segments`` superpixels remain; returns ``parent`` (each merged
    superpixel points to the one it joined; follow it to the root for the final superpixel). ``lo < hi`` are the
    graph's edges, each once. The heap's stale entries are dropped whenever it holds more than ``compact_factor``
    times the largest of its first size and its sizes after earlier drops. With ``shared`` (each edge's boundary
    length), a pair's cost is Ward's minus ``boundary_weight`` times its boundary, and a merged superpixel's
    boundary with each neighbour is the sum of its parts'."""
    # The merging loop works on Python lists: per-pair numpy calls would cost more than the arithmetic. Every
    # label is one int object (ids[i]), shared by the heap entries and the neighbour lists, rather than one object
    # per mention (28 bytes each; 7 million of them for 586 000 superpixels).
    ids = list(range(k))
    label = ids.__getitem__
    lo_list, hi_list = list(map(label, lo.tolist())), list(map(label, hi.tolist()))
    source, target = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    order = np.argsort(source, kind="stable")
    starts = np.searchsorted(source[order], np.arange(k + 1)).tolist()
    targets = list(map(label, target[order].tolist()))
    # Each superpixel's neighbours, without repeats: lists, which take a fifth of the memory of sets (120 against
    # 700 bytes for the usual 6 neighbours) and are as fast at these lengths.
    neighbours: list[list | None] = [targets[a:b] for a, b in zip(starts, starts[1:])]
    del source, target, order, starts, targets, ids
    n_pix = count.tolist()
    mean = means.tolist()

    # Lazy deletion: an entry is stale once either end has changed since it was pushed (its version moved on; a
    # superpixel merged into another gets version -1, which no entry carries). An entry is (cost, a, b, version
    # of a, version of b) with a < b; its cost is _squared_distance(mean[a], mean[b]) * n[a] * n[b] / (n[a] +
    # n[b]), always in that order of operands, so that the heap's order does not depend on the order of the
    # pushes (and the compiled kernel, which computes it the same way, makes the same merges).
    version = [0] * k
    heap = list(zip(costs.tolist(), lo_list, hi_list, [0] * len(lo_list), [0] * len(lo_list)))
    # (a, b) with a < b -> their shared boundary, only for the Mumford-Shah cost
    length = None if shared is None else dict(zip(zip(lo_list, hi_list), shared.tolist()))
    del lo_list, hi_list
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush
    parent = list(range(k))
    alive = k
    # Stale entries are dropped (and the heap rebuilt) when it has grown compact_factor times: the pops are the
    # same, since the entries are distinct tuples and a stale entry stays stale (versions only rise, or become
    # -1), but it never holds many more entries than the graph has edges.
    limit = compact_factor * len(heap)
    while alive > n_segments and heap:
        if len(heap) > limit:
            heap = [e for e in heap if version[e[1]] == e[3] and version[e[2]] == e[4]]
            heapq.heapify(heap)
            limit = max(limit, compact_factor * len(heap))
        _, i, j, vi, vj = heappop(heap)
        if version[i] != vi or version[j] != vj:
            continue
        parent[j] = i  # i < j: the merged superpixel keeps the smaller label
        version[j] = -1
        n_i, n_j = n_pix[i], n_pix[j]
        total = n_i + n_j
        mean_i = mean[i] = [(p * n_i + q * n_j) / total for p, q in zip(mean[i], mean[j])]
        n_pix[i] = total
        v_i = version[i] = vi + 1
        around_i = neighbours[i]
        around_i.remove(j)
        if length is not None:
            del length[i, j]
        for m in neighbours[j]:
            if m != i:
                around_m = neighbours[m]
                around_m.remove(j)
                if i not in around_m:  # (and so m not in around_i): m becomes i's neighbour
                    around_m.append(i)
                    around_i.append(m)
                if length is not None:  # i's boundary with m gains j's
                    part = length.pop((j, m) if j < m else (m, j))
                    pair = (i, m) if i < m else (m, i)
                    length[pair] = length.get(pair, 0.0) + part
        neighbours[j] = None  # j is gone: no list names it any more
        for m in around_i:
            n_m = n_pix[m]
            if i < m:
                cost = _squared_distance(mean_i, mean[m]) * total * n_m / (total + n_m)
                if length is not None:
                    cost -= boundary_weight * length[i, m]
                heappush(heap, (cost, i, m, v_i, version[m]))
            else:
                cost = _squared_distance(mean[m], mean_i) * n_m * total / (n_m + total)
                if length is not None:
                    cost -= boundary_weight * length[m, i]
                heappush(heap, (cost, m, i, version[m], v_i))
        alive -= 1
    return parent


def _squared_distance(p: list[float], q: list[float]) -> float:
    """``||p - q||^2``, summed in feature order (as the initial costs and the compiled kernel sum it)."""
    total = 0.0
    for a, b in zip(p, q):
        total += (a - b) * (a - b)
    return total
