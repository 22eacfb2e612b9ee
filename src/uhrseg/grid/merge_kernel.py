"""The merging loop of :func:`uhrseg.grid.merge_superpixels` as a numba kernel, for label maps with many merges.

:func:`uhrseg.grid.merge._ward_merges` runs the loop on Python lists and :mod:`heapq`: about 50 us per merge, 9.3 s
for 195 586 merges of 586 756 grid cells (the bridge's count on a 20 000 x 20 000 image; the whole merge then
peaks 399 MB above its inputs). This kernel makes the same merges in the same order (tested against an exhaustive
search and against the Python loop) in 0.9 s, and the whole merge peaks 155 MB above its inputs. Its first call
after an install compiles it (4.4 s), so the merge uses it only from :data:`uhrseg.grid.merge.COMPILED_MERGES`
merges on, where that is repaid; smaller merges (the README demo's, or the 5K photograph's 2 500 at
``n = 5000``) keep the Python loop, whose first run compiles nothing.

Its own module, so that the merge imports numba only when it needs it (the command line imports numba in a
background thread: :mod:`uhrseg.grid.warmup`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["ward_merges_kernel"]


@numba.njit(cache=True, nogil=True)
def _before(cost, entry, x, y):  # pragma: no cover - compiled
    """Whether heap slot ``x`` orders before slot ``y``: (cost, a, b, version of a, version of b), as tuples
    compare in the Python loop."""
    if cost[x] != cost[y]:
        return cost[x] < cost[y]
    for f in range(4):
        if entry[x, f] != entry[y, f]:
            return entry[x, f] < entry[y, f]
    return False


@numba.njit(cache=True, nogil=True)
def _swap(cost, entry, x, y):  # pragma: no cover - compiled
    cost[x], cost[y] = cost[y], cost[x]
    for f in range(4):
        entry[x, f], entry[y, f] = entry[y, f], entry[x, f]


@numba.njit(cache=True, nogil=True)
def _sift_up(cost, entry, pos):  # pragma: no cover - compiled
    while pos > 0:
        up = (pos - 1) // 2
        if not _before(cost, entry, pos, up):
            return
        _swap(cost, entry, pos, up)
        pos = up


@numba.njit(cache=True, nogil=True)
def _pair_cost(mean, n_pix, a, b):  # pragma: no cover - compiled
    """Ward's cost of superpixels ``a < b``: squared distance of the means (summed in feature order), times
    ``n_a n_b / (n_a + n_b)``, the operations in the Python loop's order."""
    d2 = 0.0
    for f in range(mean.shape[1]):
        d = mean[a, f] - mean[b, f]
        d2 += d * d
    return d2 * n_pix[a] * n_pix[b] / (n_pix[a] + n_pix[b])


@numba.njit(cache=True, nogil=True)
def ward_merges_kernel(lo, hi, costs, count, means, n_segments, compact_factor, shared,
                       boundary_weight):  # pragma: no cover - compiled
    """``parent`` of :func:`uhrseg.grid.merge._ward_merges`, computed in compiled code (the same merges in the
    same order, and the same float arithmetic).

    Parameters
    ----------
    lo, hi : (E,) int64
        The graph's edges, ``lo < hi``, each once.
    costs : (E,) float64
        Their costs at the start.
    count : (K,) float64
        Pixels per superpixel.
    means : (K, C) float64
        Mean features.
    n_segments : int
        Superpixels wanted.
    compact_factor : float
        The heap's stale entries are dropped when it holds more than this many times its largest compacted size.
    shared : (E,) float64
        Each edge's boundary in image pixels, or an empty array for Ward's cost alone.
    boundary_weight : float
        Weight of the shared boundary in the cost (with a non-empty ``shared``).

    Returns
    -------
    (K,) int64
        ``parent``: each merged superpixel's label points to the one it joined.
    """
    k = count.shape[0]
    n_edges = lo.shape[0]
    lengths = shared.shape[0] == n_edges and n_edges > 0
    n_pix = np.empty(k)
    mean = np.empty(means.shape)
    for v in range(k):
        n_pix[v] = count[v]
        for f in range(means.shape[1]):
            mean[v, f] = means[v, f]

    # Neighbour lists: superpixel v's are around[start[v]:start[v] + degree[v]], with the shared boundaries in
    # the same slots of `length`; a list that outgrows its block moves to the end of the pool at twice the size.
    degree = np.zeros(k, np.int64)
    for e in range(n_edges):
        degree[lo[e]] += 1
        degree[hi[e]] += 1
    start = np.empty(k, np.int64)
    room = np.empty(k, np.int64)
    used = 0
    for v in range(k):
        start[v] = used
        room[v] = degree[v] + 2
        used += room[v]
        degree[v] = 0
    around = np.empty(used + used // 2 + 16, np.int64)
    length = np.zeros(around.shape[0])
    for e in range(n_edges):
        a, b = lo[e], hi[e]
        around[start[a] + degree[a]] = b
        around[start[b] + degree[b]] = a
        if lengths:
            length[start[a] + degree[a]] = shared[e]
            length[start[b] + degree[b]] = shared[e]
        degree[a] += 1
        degree[b] += 1

    # The heap: cost[s] and entry[s] = (a, b, version of a, version of b) per slot, a < b
    cost = np.empty(max(16, 2 * n_edges))
    entry = np.empty((cost.shape[0], 4), np.int64)
    size = 0
    for e in range(n_edges):
        cost[size] = costs[e]
        entry[size, 0] = lo[e]
        entry[size, 1] = hi[e]
        entry[size, 2] = 0
        entry[size, 3] = 0
        _sift_up(cost, entry, size)
        size += 1
    version = np.zeros(k, np.int64)
    parent = np.empty(k, np.int64)
    for v in range(k):
        parent[v] = v
    alive = k
    limit = compact_factor * size
    while alive > n_segments and size > 0:
        if size > limit:  # drop the stale entries and rebuild the heap
            kept = 0
            for s in range(size):
                if version[entry[s, 0]] == entry[s, 2] and version[entry[s, 1]] == entry[s, 3]:
                    cost[kept] = cost[s]
                    for f in range(4):
                        entry[kept, f] = entry[s, f]
                    _sift_up(cost, entry, kept)
                    kept += 1
            size = kept
            limit = max(limit, compact_factor * size)
        i, j, vi, vj = entry[0, 0], entry[0, 1], entry[0, 2], entry[0, 3]
        size -= 1
        cost[0] = cost[size]
        for f in range(4):
            entry[0, f] = entry[size, f]
        pos = 0
        while True:  # sift the moved last entry down
            child = 2 * pos + 1
            if child >= size:
                break
            if child + 1 < size and _before(cost, entry, child + 1, child):
                child += 1
            if not _before(cost, entry, child, pos):
                break
            _swap(cost, entry, child, pos)
            pos = child
        if version[i] != vi or version[j] != vj:
            continue
        parent[j] = i  # i < j: the merged superpixel keeps the smaller label
        version[j] = -1
        n_i, n_j = n_pix[i], n_pix[j]
        total = n_i + n_j
        for f in range(mean.shape[1]):
            mean[i, f] = (mean[i, f] * n_i + mean[j, f] * n_j) / total
        n_pix[i] = total
        version[i] = vi + 1
        for s in range(start[i], start[i] + degree[i]):  # j leaves i's list
            if around[s] == j:
                degree[i] -= 1
                around[s] = around[start[i] + degree[i]]
                length[s] = length[start[i] + degree[i]]
                break
        for t in range(start[j], start[j] + degree[j]):
            m = around[t]
            if m == i:
                continue
            part = length[t]
            # j leaves m's list; is i already there?
            at = -1
            s = start[m]
            while s < start[m] + degree[m]:
                if around[s] == j:
                    degree[m] -= 1
                    around[s] = around[start[m] + degree[m]]
                    length[s] = length[start[m] + degree[m]]
                    continue
                if around[s] == i:
                    at = s
                s += 1
            if at >= 0:  # i's boundary with m gains j's, in both lists
                length[at] += part
                for s in range(start[i], start[i] + degree[i]):
                    if around[s] == m:
                        length[s] += part
                        break
                continue
            # m becomes i's neighbour: into m's list (where j's slot was freed), and into i's
            around[start[m] + degree[m]] = i
            length[start[m] + degree[m]] = part
            degree[m] += 1
            if degree[i] == room[i]:
                if used + 2 * room[i] > around.shape[0]:
                    grown = max(2 * around.shape[0], used + 2 * room[i])
                    new_around = np.empty(grown, np.int64)
                    new_length = np.zeros(grown)
                    for s in range(used):
                        new_around[s] = around[s]
                        new_length[s] = length[s]
                    around, length = new_around, new_length
                for s in range(degree[i]):
                    around[used + s] = around[start[i] + s]
                    length[used + s] = length[start[i] + s]
                start[i] = used
                room[i] *= 2
                used += room[i]
            around[start[i] + degree[i]] = m
            length[start[i] + degree[i]] = part
            degree[i] += 1
        degree[j] = 0
        for s in range(start[i], start[i] + degree[i]):  # i's pairs at their new costs
            m = around[s]
            a = i if i < m else m
            b = m if i < m else i
            if size == cost.shape[0]:
                new_cost = np.empty(2 * size)
                new_entry = np.empty((2 * size, 4), np.int64)
                for r in range(size):
                    new_cost[r] = cost[r]
                    for f in range(4):
                        new_entry[r, f] = entry[r, f]
                cost, entry = new_cost, new_entry
            cost[size] = _pair_cost(mean, n_pix, a, b)
            if lengths:
                cost[size] -= boundary_weight * length[s]
            entry[size, 0] = a
            entry[size, 1] = b
            entry[size, 2] = version[a]
            entry[size, 3] = version[b]
            _sift_up(cost, entry, size)
            size += 1
        alive -= 1
    return parent
