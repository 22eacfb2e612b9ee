"""The standard superpixel metrics, as the superpixel benchmark of Stutz et al. computes them.

Definitions (Stutz, Hermans, Leibe, "Superpixels: An Evaluation of the State-of-the-Art",
CVIU 2018, arXiv:1612.01601), for a superpixel label map ``S`` and a ground-truth segmentation ``G`` of
``N = H W`` pixels:

* boundary pixel: a pixel with a 4-neighbour of another label (boundaries are two pixels thick);
* tolerance ``r = round(0.0025 sqrt(H^2 + W^2))`` pixels unless given; window: the ``(2r+1)^2`` square, clipped;
* BR = TP / (TP + FN): ground-truth boundary pixels with a superpixel boundary pixel in their window (0 when the
  ground truth has no boundary, as the benchmark does);
* BP = TP / (TP + FP), FP = superpixel boundary pixels with no ground-truth boundary pixel in their window;
* ASA = (1/N) sum_j max_i |S_j ∩ G_i|;
* UE (Neubert-Protzel) = (1/N) sum_i sum_{j: S_j ∩ G_i ≠ ∅} min(|S_j ∩ G_i|, |S_j \\ G_i|);
* EV = sum_x ||mu_S(x) - mu||^2 / sum_x ||I(x) - mu||^2 (NaN for a constant image, as in the benchmark);
* CO = (1/N) sum_j |S_j| 4 pi |S_j| / P_j^2, P_j = pixel sides of S_j facing another label or the border;
* K = number of distinct superpixel labels.

All are vectorised numpy (a separable maximum filter for the windows, ``bincount`` or a sparse contingency
table for the overlaps), so a 25-megapixel map takes seconds.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse
from scipy import ndimage

from ..grid.boundaries import boundary_mask

__all__ = [
    "achievable_segmentation_accuracy",
    "boundary_recall_precision",
    "compactness",
    "default_tolerance",
    "explained_variation",
    "superpixel_metrics",
    "undersegmentation_error",
]


def default_tolerance(shape: tuple[int, ...]) -> int:
    """The benchmark's boundary tolerance ``r = round(0.0025 * sqrt(H^2 + W^2))`` in pixels (half away from 0).

    For 481 x 321 BSDS500 images ``r = 1``; for 1500 x 1000, ``r = 5``.
    """
    return int(math.floor(0.0025 * math.hypot(shape[0], shape[1]) + 0.5))


def _check_pair(labels: np.ndarray, ground_truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    ground_truth = np.asarray(ground_truth)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (H, W) array, got shape {labels.shape}")
    if ground_truth.shape != labels.shape:
        raise ValueError(f"ground truth shape {ground_truth.shape} does not match labels shape {labels.shape}")
    for name, arr in (("labels", labels), ("ground_truth", ground_truth)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return labels, ground_truth


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """True where ``mask`` holds a True pixel in the ``(2r+1)^2`` window (clipped at the image edge)."""
    if r == 0:
        return mask
    return ndimage.maximum_filter(mask.view(np.uint8), size=2 * r + 1, mode="constant", cval=0).view(bool)


def boundary_recall_precision(labels: np.ndarray, ground_truth: np.ndarray, tolerance: int | None = None,
                              ) -> tuple[float, float]:
    """Boundary recall BR and boundary precision BP.

    Parameters
    ----------
    labels, ground_truth : (H, W) ndarray of int
        Superpixel labels and a ground-truth segmentation.
    tolerance : int, optional
        ``r`` in pixels; default :func:`default_tolerance`. Use 0 or 1 for full-resolution work.

    Returns
    -------
    (float, float)
        ``(BR, BP)``, each in [0, 1].

    Raises
    ------
    ValueError
        Shapes differ, arrays are not 2-D integer, or ``tolerance < 0``.
    """
    labels, ground_truth = _check_pair(labels, ground_truth)
    r = default_tolerance(labels.shape) if tolerance is None else int(tolerance)
    if r < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {r}")
    sp_b = boundary_mask(labels)
    gt_b = boundary_mask(ground_truth)
    tp = int(np.count_nonzero(gt_b & _dilate(sp_b, r)))
    fn = int(np.count_nonzero(gt_b)) - tp
    fp = int(np.count_nonzero(sp_b & ~_dilate(gt_b, r)))
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    return recall, precision


def _relabel(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense ids ``0 .. n-1`` for any integer labels (cheap when they already are 0-based contiguous)."""
    flat = x.ravel()
    lo, hi = int(flat.min()), int(flat.max())
    if lo == 0 and hi < 2 * flat.size:
        return flat.astype(np.int64, copy=False), hi + 1
    uniq, inverse = np.unique(flat, return_inverse=True)
    return inverse.astype(np.int64), uniq.size


def _contingency(labels: np.ndarray, ground_truth: np.ndarray):
    """Overlap counts ``n[j, i] = |S_j ∩ G_i|`` (dense when small, else CSR sparse) and superpixel sizes."""
    sp, k = _relabel(labels)
    gt, g = _relabel(ground_truth)
    if k * g <= 2**24:
        table = np.bincount(sp * g + gt, minlength=k * g).reshape(k, g)
        return table, table.sum(axis=1)
    table = scipy.sparse.csr_matrix((np.ones(sp.size, dtype=np.int64), (sp, gt)), shape=(k, g))
    table.sum_duplicates()
    return table, np.asarray(table.sum(axis=1)).ravel()


def achievable_segmentation_accuracy(labels: np.ndarray, ground_truth: np.ndarray) -> float:
    """ASA = (1/N) sum_j max_i |S_j ∩ G_i|, in [0, 1]; 1 when every superpixel lies inside one segment.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Superpixel labels (any ids).
    ground_truth : (H, W) ndarray of int
        One human segmentation (any ids).

    Raises
    ------
    ValueError
        Shapes differ or arrays are not 2-D integer.
    """
    labels, ground_truth = _check_pair(labels, ground_truth)
    return _asa(_contingency(labels, ground_truth)[0], labels.size)


def _asa(table, n_pixels: int) -> float:
    best = table.max(axis=1)
    best = best.toarray().ravel() if scipy.sparse.issparse(best) else best
    return float(best.sum()) / n_pixels


def undersegmentation_error(labels: np.ndarray, ground_truth: np.ndarray) -> float:
    """Neubert-Protzel undersegmentation error UE, in [0, 1]; 0 when superpixels never straddle segments.

    ``UE = (1/N) sum_i sum_{j: S_j ∩ G_i ≠ ∅} min(|S_j ∩ G_i|, |S_j \\ G_i|)``, with ``labels`` and
    ``ground_truth`` as for :func:`achievable_segmentation_accuracy`: ``(H, W)`` integer arrays, any ids.

    Raises
    ------
    ValueError
        Shapes differ or arrays are not 2-D integer.
    """
    labels, ground_truth = _check_pair(labels, ground_truth)
    table, sizes = _contingency(labels, ground_truth)
    return _ue(table, sizes, labels.size)


def _ue(table, sizes: np.ndarray, n_pixels: int) -> float:
    if scipy.sparse.issparse(table):
        coo = table.tocoo()
        inter, size_j = coo.data, sizes[coo.row]
    else:
        rows, cols = np.nonzero(table)
        inter, size_j = table[rows, cols], sizes[rows]
    return float(np.minimum(inter, size_j - inter).sum()) / n_pixels


def explained_variation(labels: np.ndarray, image: np.ndarray) -> float:
    """Explained variation EV, in [0, 1] (NaN for a constant image, as in the benchmark).

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Superpixel labels.
    image : (H, W) or (H, W, C) ndarray
        The image the superpixels were computed on (any numeric dtype; the ratio does not depend on scale).

    Raises
    ------
    ValueError
        If the image size differs from the labels.
    """
    labels = np.asarray(labels)
    image = np.asarray(image)
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image shape {image.shape} does not match labels shape {labels.shape}")
    pixels = image.reshape(labels.size, -1).astype(np.float64)
    sp, k = _relabel(labels)
    counts = np.bincount(sp, minlength=k).astype(np.float64)
    mean = pixels.mean(axis=0)
    top = bottom = 0.0
    for c in range(pixels.shape[1]):
        channel = pixels[:, c]
        sp_mean = np.bincount(sp, weights=channel, minlength=k) / np.maximum(counts, 1)
        top += float((counts * (sp_mean - mean[c]) ** 2).sum())
        bottom += float(((channel - mean[c]) ** 2).sum())
    return top / bottom if bottom > 0 else float("nan")


def compactness(labels: np.ndarray) -> float:
    """Compactness CO = (1/N) sum_j |S_j| 4 pi |S_j| / P_j^2, in (0, 1] for pixel shapes.

    ``P_j`` counts the pixel sides of superpixel ``j`` that face another label or the image border.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Superpixel labels (any ids).

    Raises
    ------
    ValueError
        If ``labels`` is not a non-empty 2-D integer array.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty (H, W) integer array, got {labels.shape} {labels.dtype}")
    sp2, k = _relabel(labels)
    sp = sp2.reshape(labels.shape)
    area = np.bincount(sp2, minlength=k).astype(np.float64)
    perimeter = np.zeros(k, dtype=np.float64)
    dh = sp[:, 1:] != sp[:, :-1]
    dv = sp[1:, :] != sp[:-1, :]
    perimeter += np.bincount(sp[:, 1:][dh], minlength=k) + np.bincount(sp[:, :-1][dh], minlength=k)
    perimeter += np.bincount(sp[1:, :][dv], minlength=k) + np.bincount(sp[:-1, :][dv], minlength=k)
    for edge in (sp[0, :], sp[-1, :], sp[:, 0], sp[:, -1]):
        perimeter += np.bincount(edge, minlength=k)
    ok = perimeter > 0
    return float((area[ok] * 4 * math.pi * area[ok] / perimeter[ok] ** 2).sum()) / labels.size


def superpixel_metrics(labels: np.ndarray, ground_truth: np.ndarray, image: np.ndarray | None = None,
                       tolerance: int | None = None) -> dict[str, float]:
    """Every standard metric for one (superpixels, ground truth) pair.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Superpixel labels (0-based contiguous connected labels are what the benchmark expects).
    ground_truth : (H, W) ndarray of int
        One human segmentation.
    image : (H, W, C) ndarray, optional
        The image, for EV.
    tolerance : int, optional
        Boundary tolerance ``r`` in pixels; default ``round(0.0025 * diagonal)``.

    Returns
    -------
    dict
        ``br``, ``bp``, ``asa``, ``ue``, ``co``, ``k`` (int), ``tolerance`` (int, pixels), and ``ev`` when an image
        is given.

    Raises
    ------
    ValueError
        Shapes differ, arrays are not 2-D integer, or ``tolerance < 0``.

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.repeat([[0, 0, 1, 1]], 4, axis=0)
    >>> m = superpixel_metrics(gt, gt)
    >>> m["br"], m["asa"], m["ue"], m["k"]
    (1.0, 1.0, 0.0, 2)
    """
    labels, ground_truth = _check_pair(labels, ground_truth)
    r = default_tolerance(labels.shape) if tolerance is None else int(tolerance)
    br, bp = boundary_recall_precision(labels, ground_truth, r)
    table, sizes = _contingency(labels, ground_truth)  # once for ASA, UE and K
    out: dict[str, float] = {
        "br": br,
        "bp": bp,
        "asa": _asa(table, labels.size),
        "ue": _ue(table, sizes, labels.size),
        "co": compactness(labels),
        "k": int(np.count_nonzero(sizes)),
        "tolerance": r,
    }
    if image is not None:
        out["ev"] = explained_variation(labels, image)
    return out
