"""Connectivity enforcement for superpixel label maps (SSN's procedure, used by SCN and PCNet).

After the hard assignment a grid cell's pixels may form several disconnected pieces. This pass turns every
superpixel into one 4-connected component: it grows components in raster order, merges fragments smaller
than ``min_size`` into an adjacent superpixel and stops a component from growing past ``max_size``
(``docs/pcnet.md`` section 4: ``min_size = 0.06 s``, ``max_size = 3 s`` with ``s = H W / n_cells``; Jampani et
al., "Superpixel Sampling Networks", ECCV 2018, and Achanta et al., SLIC, TPAMI 2012).

The kernel is a numba breadth-first search, linear in the number of pixels. Its queue holds one component, so
it is allocated once with ``min(H W, max_size)`` entries (a component never holds more pixels than its
weighted size bound): the extra memory is one int32 output map plus that queue. A fixed queue also keeps the
kernel's first compilation short (0.6 s against 3.0 s for a queue grown inside the kernel), which is most of
what a first run after installation waits for. The output map is allocated outside too: typing ``np.full``
inside the kernel cost about 0.4 s more of that first compilation.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["enforce_connectivity", "connectivity_bounds"]


# numpy's error model: no zero-division checks to compile (the only divisor is the width, >= 1)
@numba.njit(cache=True, nogil=True, error_model="numpy")
def _enforce_connectivity_kernel(labels, min_size, max_size, row_weights, col_weights, queue, out):  # pragma: no cover
    height, width = labels.shape
    dys = (-1, 0, 0, 1)
    dxs = (0, -1, 1, 0)
    next_label = 0
    for y0 in range(height):
        for x0 in range(width):
            if out[y0, x0] >= 0:
                continue
            label = labels[y0, x0]
            out[y0, x0] = next_label
            queue[0] = y0 * width + x0
            size = 1
            mass = row_weights[y0] * col_weights[x0]
            head = 0
            adjacent = -1
            while head < size:
                p = queue[head]
                head += 1
                py = p // width
                px = p - py * width
                for i in range(4):
                    ny = py + dys[i]
                    nx = px + dxs[i]
                    if ny < 0 or ny >= height or nx < 0 or nx >= width:
                        continue
                    o = out[ny, nx]
                    if o == -1:
                        if labels[ny, nx] == label and mass < max_size:
                            out[ny, nx] = next_label
                            mass += row_weights[ny] * col_weights[nx]
                            queue[size] = ny * width + nx
                            size += 1
                    elif o != next_label and adjacent == -1:
                        adjacent = o
            if mass < min_size:
                if adjacent >= 0:
                    for i in range(size):
                        p = queue[i]
                        out[p // width, p % width] = adjacent
                # else: the first fragment in raster order has no labelled neighbour yet; it keeps
                # next_label and shares it with the next component, which touches it (its seed's top or
                # left neighbour is a pixel of this fragment), so the label stays one component.
            else:
                next_label += 1
    return out


def connectivity_bounds(shape: tuple[int, int], n_cells: int) -> tuple[int, int]:
    """SSN's fragment and segment size bounds for a label map.

    Parameters
    ----------
    shape : (int, int)
        Label map size ``(H, W)`` in pixels.
    n_cells : int
        Number of grid cells (superpixel seeds) the map was made with.

    Returns
    -------
    (int, int)
        ``(min_size, max_size)`` in pixels: ``int(0.06 s)`` and ``int(3 s)`` with ``s = H W / n_cells``.

    Raises
    ------
    ValueError
        If ``n_cells < 1``.
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be >= 1, got {n_cells}")
    s = shape[0] * shape[1] / n_cells
    return int(0.06 * s), max(1, int(3.0 * s))


def enforce_connectivity(labels: np.ndarray, min_size: int = 0, max_size: int | None = None,
                         row_weights: np.ndarray | None = None, col_weights: np.ndarray | None = None) -> np.ndarray:
    """Make every superpixel one 4-connected component with a bounded size.

    Components of equal label are grown in raster order. A component smaller than ``min_size`` pixels is merged
    into the first adjacent superpixel met; a component stops growing at ``max_size`` pixels and the rest of its
    pixels start new superpixels. Output labels are numbered in raster order of their first pixel.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Input label map (any integer ids; they need not be contiguous or connected).
    min_size : int
        Fragments with fewer pixels are merged into a neighbour (0 keeps every component). Only the first
        component in raster order, when it has no labelled neighbour yet, is instead joined with the next one.
    max_size : int, optional
        Largest superpixel in pixels; ``None`` for no bound.
    row_weights, col_weights : (H,) and (W,) ndarray of int, optional
        Pixels that each row and column of ``labels`` stands for, when ``labels`` is a map that will be
        upsampled by repeating row ``y`` ``row_weights[y]`` times and column ``x`` ``col_weights[x]`` times
        (nearest upsampling): sizes are then counted in pixels of the upsampled map, so that enforcing
        connectivity on the small map and upsampling gives the result at full resolution in a fraction of
        the time. Weights must be >= 1. Default: all ones.

    Returns
    -------
    (H, W) ndarray of int32
        Labels ``0 .. K-1``, contiguous, each one 4-connected component.

    Raises
    ------
    ValueError
        If ``labels`` is not a non-empty 2-D integer array, the sizes are negative / ``max_size < 1``, or the
        weights have the wrong length or values below 1.

    References
    ----------
    Jampani et al., "Superpixel Sampling Networks", ECCV 2018, arXiv:1807.10174 (connectivity step).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (H, W) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be >= 1 or None, got {max_size}")
    if labels.dtype not in (np.int32, np.int64):
        fits32 = labels.size == 0 or (labels.min() >= np.iinfo(np.int32).min and labels.max() <= np.iinfo(np.int32).max)
        labels = labels.astype(np.int32 if fits32 else np.int64)
    labels = np.ascontiguousarray(labels)
    weights = []
    for name, given, n in (("row_weights", row_weights, labels.shape[0]),
                           ("col_weights", col_weights, labels.shape[1])):
        w = np.ones(n, np.int64) if given is None else np.ascontiguousarray(given, dtype=np.int64)
        if w.shape != (n,) or (n and w.min() < 1):
            raise ValueError(f"{name} must be {n} integers >= 1, got shape {w.shape}")
        weights.append(w)
    total = int(weights[0].sum()) * int(weights[1].sum())
    bound = total + 1 if max_size is None else int(max_size)
    # A component grows only while its weighted size is below `bound`, and every pixel weighs >= 1.
    queue = np.empty(min(labels.size, bound), np.int32 if labels.size < 2**31 else np.int64)
    out = np.full(labels.shape, -1, np.int32)
    return _enforce_connectivity_kernel(labels, int(min_size), bound, weights[0], weights[1], queue, out)
