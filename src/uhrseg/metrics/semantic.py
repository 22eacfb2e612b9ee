"""Semantic-segmentation metrics, accumulated image by image (never all images in memory).

* :func:`confusion_matrix`: ``(C, C)`` int64 counts, rows = ground truth, columns = prediction; pixels whose
  ground truth is the ignore index are not counted.
* From a confusion matrix ``M`` (summed over any number of images): per-class IoU
  ``M_cc / (sum_j M_cj + sum_i M_ic - M_cc)``, mIoU (mean over the evaluated classes that occur in the ground
  truth or the prediction), pixel accuracy ``trace(M) / sum(M)`` and frequency-weighted IoU
  ``sum_c (sum_j M_cj / sum(M)) IoU_c``.
* Boundary IoU (Cheng, Girshick, Dollar, Berg, Kirillov, "Boundary IoU: Improving Object-Centric Image
  Segmentation Evaluation", CVPR 2021) for thin structures: for class ``c`` with ground-truth mask ``G`` and
  predicted mask ``P``, ``|(G_d & G) & (P_d & P)| / |(G_d & G) | (P_d & P)|`` where ``X_d`` is the set of
  pixels within ``d`` pixels of the mask's contour. Intersections and unions are counts, so they add up over
  images like the confusion matrix. Here ``d`` is a fixed number of pixels (default 3), not the paper's 2 % of
  the diagonal: ultra-high-resolution images would otherwise get bands tens of pixels wide.

:class:`SegmentationScores` bundles the running sums and reports every number at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..datasets.classes import IGNORE_INDEX

__all__ = ["DEFAULT_BOUNDARY_TOLERANCE", "SegmentationScores", "boundary_iou_counts", "boundary_region",
           "confusion_matrix", "frequency_weighted_iou", "iou_per_class", "mean_iou", "pixel_accuracy"]

#: Boundary IoU band half-width ``d`` in pixels.
DEFAULT_BOUNDARY_TOLERANCE = 3


def _check_pair(prediction: np.ndarray, target: np.ndarray, n_classes: int) -> None:
    if prediction.shape != target.shape or prediction.ndim != 2:
        raise ValueError(f"prediction {prediction.shape} and ground truth {target.shape} must be the same (H, W)")
    if not 1 <= n_classes <= IGNORE_INDEX:
        raise ValueError(f"n_classes must be in 1..{IGNORE_INDEX}, got {n_classes}")
    if prediction.size and int(prediction.max()) >= n_classes:
        raise ValueError(f"prediction holds class {int(prediction.max())}, but there are {n_classes} classes")


def confusion_matrix(prediction: np.ndarray, target: np.ndarray, n_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Pixel counts of (ground-truth class, predicted class).

    Parameters
    ----------
    prediction : (H, W) ndarray of int
        Predicted class ids in ``0 .. n_classes - 1``.
    target : (H, W) ndarray of int
        Ground-truth class ids; pixels equal to ``ignore_index`` are skipped.
    n_classes : int
        Number of classes ``C``.
    ignore_index : int
        Ground-truth value of pixels that are not counted (255).

    Returns
    -------
    (C, C) ndarray of int64
        ``M[i, j]`` = pixels of ground-truth class ``i`` predicted as ``j``.

    Raises
    ------
    ValueError
        If the shapes differ, the prediction holds an id ``>= C``, or a ground-truth id other than
        ``ignore_index`` is ``>= C``.
    """
    _check_pair(prediction, target, n_classes)
    t = target.ravel()
    valid = t != ignore_index
    t = t[valid].astype(np.int64)
    if t.size and int(t.max()) >= n_classes:
        raise ValueError(f"ground truth holds class {int(t.max())}, but there are {n_classes} classes")
    p = prediction.ravel()[valid].astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """Per-class IoU ``M_cc / (row_c + col_c - M_cc)`` of a ``(C, C)`` confusion matrix (rows ground truth,
    columns prediction; :func:`confusion_matrix`).

    Returns
    -------
    (C,) ndarray of float64
        NaN for classes that occur neither in the ground truth nor in the prediction.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    inter = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(matrix: np.ndarray, classes: tuple[int, ...] | None = None) -> float:
    """Mean IoU over ``classes`` (default all) that occur in the ground truth or the prediction.

    Parameters
    ----------
    matrix : (C, C) array
        Confusion matrix (:func:`confusion_matrix`, summed over images).
    classes : tuple of int, optional
        Class ids that count (e.g. :attr:`uhrseg.datasets.ClassTable.evaluated`, which leaves out
        DeepGlobe's ``unknown``).

    Returns
    -------
    float
        In [0, 1]; NaN when no counted class occurs.
    """
    iou = iou_per_class(matrix)
    if classes is not None:
        iou = iou[list(classes)]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Fraction of counted pixels whose predicted class is right: ``trace(M) / sum(M)`` (NaN for no pixels), of a
    ``(C, C)`` confusion matrix ``M`` (rows ground truth, columns prediction; :func:`confusion_matrix`)."""
    matrix = np.asarray(matrix)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


def frequency_weighted_iou(matrix: np.ndarray) -> float:
    """IoU averaged with each class weighted by its share of ground-truth pixels (NaN for no pixels), of a
    ``(C, C)`` confusion matrix (rows ground truth, columns prediction; :func:`confusion_matrix`)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    total = matrix.sum()
    if not total:
        return float("nan")
    freq = matrix.sum(1) / total
    iou = np.nan_to_num(iou_per_class(matrix))
    return float((freq * iou).sum())


def boundary_region(class_map: np.ndarray, tolerance: int = DEFAULT_BOUNDARY_TOLERANCE) -> np.ndarray:
    """Pixels within ``tolerance`` pixels (Euclidean) of a class boundary.

    A boundary pixel is one whose right or lower neighbour has another class (both of the pair are marked);
    the image border is not a boundary. With ``tolerance = 0`` the region is the boundary pixels themselves.

    Parameters
    ----------
    class_map : (H, W) ndarray of int
        Class ids (the ignore index counts as a class of its own here).
    tolerance : int
        Band half-width ``d`` in pixels, >= 0.

    Returns
    -------
    (H, W) ndarray of bool

    Raises
    ------
    ValueError
        If ``tolerance`` is negative.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    edge = np.zeros(class_map.shape, bool)
    dx = class_map[:, 1:] != class_map[:, :-1]
    dy = class_map[1:, :] != class_map[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    if tolerance == 0 or not edge.any():
        return edge
    distance = cv2.distanceTransform(np.where(edge, 0, 255).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return distance <= tolerance


def boundary_iou_counts(prediction: np.ndarray, target: np.ndarray, n_classes: int,
                        tolerance: int = DEFAULT_BOUNDARY_TOLERANCE,
                        ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union of the boundary regions of prediction and ground truth (Boundary IoU).

    Parameters
    ----------
    prediction, target : (H, W) ndarray of int
        As for :func:`confusion_matrix`; ground-truth pixels equal to ``ignore_index`` are not counted.
    n_classes : int
        Number of classes ``C``.
    tolerance : int
        Band half-width ``d`` in pixels (:func:`boundary_region`).
    ignore_index : int
        Ground-truth value of uncounted pixels.

    Returns
    -------
    intersection, union : (C,) ndarray of int64
        ``|G_c^d & P_c^d|`` and ``|G_c^d | P_c^d|`` where ``X_c^d`` is class ``c``'s mask within ``d`` pixels of
        its contour. Boundary IoU of class ``c`` is ``intersection / union`` (summed over images first).
    """
    _check_pair(prediction, target, n_classes)
    valid = target != ignore_index
    band_t = boundary_region(target, tolerance) & valid
    band_p = boundary_region(prediction, tolerance) & valid
    g = np.bincount(target[band_t].astype(np.int64), minlength=n_classes)[:n_classes]
    p = np.bincount(prediction[band_p].astype(np.int64), minlength=n_classes)[:n_classes]
    both = band_t & band_p & (target == prediction)
    inter = np.bincount(target[both].astype(np.int64), minlength=n_classes)[:n_classes]
    return inter, g + p - inter


@dataclass
class SegmentationScores:
    """Running sums over images: the confusion matrix and the boundary IoU counts.

    Parameters
    ----------
    n_classes : int
        Number of classes ``C``.
    evaluated : tuple of int, optional
        Class ids that count in the means (default all; :attr:`uhrseg.datasets.ClassTable.evaluated`).
    tolerance : int
        Boundary IoU band half-width in pixels.

    Examples
    --------
    >>> import numpy as np
    >>> scores = SegmentationScores(2)
    >>> scores.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
    >>> round(scores.summary()["miou"], 4)   # class 0: 1/2, class 1: 2/3
    0.5833
    """

    n_classes: int
    evaluated: tuple[int, ...] | None = None
    tolerance: int = DEFAULT_BOUNDARY_TOLERANCE
    matrix: np.ndarray = field(init=False)
    boundary_intersection: np.ndarray = field(init=False)
    boundary_union: np.ndarray = field(init=False)
    images: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.matrix = np.zeros((self.n_classes, self.n_classes), np.int64)
        self.boundary_intersection = np.zeros(self.n_classes, np.int64)
        self.boundary_union = np.zeros(self.n_classes, np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one image: ``(H, W)`` predicted and ground-truth class ids (see :func:`confusion_matrix`)."""
        self.add_counts(confusion_matrix(prediction, target, self.n_classes),
                        *boundary_iou_counts(prediction, target, self.n_classes, self.tolerance))

    def add_counts(self, matrix: np.ndarray, intersection: np.ndarray, union: np.ndarray) -> None:
        """Add one image's counts computed elsewhere (e.g. stored by a resumable evaluation): its ``(C, C)``
        int64 confusion matrix (:func:`confusion_matrix`) and its ``(C,)`` int64 boundary intersection and union
        pixel counts (:func:`boundary_iou_counts`)."""
        self.matrix += matrix
        self.boundary_intersection += intersection
        self.boundary_union += union
        self.images += 1

    def boundary_iou_per_class(self) -> np.ndarray:
        """``(C,)`` float64 boundary IoU per class (NaN where neither has a boundary region of that class)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.boundary_union > 0, self.boundary_intersection / np.maximum(self.boundary_union, 1),
                            np.nan)

    def summary(self) -> dict:
        """Every number: ``miou``, ``pixel_accuracy``, ``fw_iou``, ``boundary_iou`` (mean over evaluated
        classes with a boundary region), ``iou`` and ``boundary_iou_per_class`` (lists, NaN as None),
        ``images``, ``pixels``."""
        classes = self.evaluated if self.evaluated is not None else tuple(range(self.n_classes))
        biou = self.boundary_iou_per_class()[list(classes)]
        return {
            "miou": mean_iou(self.matrix, classes),
            "pixel_accuracy": pixel_accuracy(self.matrix),
            "fw_iou": frequency_weighted_iou(self.matrix),
            "boundary_iou": float(np.nanmean(biou)) if np.isfinite(biou).any() else float("nan"),
            "iou": [None if np.isnan(v) else float(v) for v in iou_per_class(self.matrix)],
            "boundary_iou_per_class": [None if np.isnan(v) else float(v) for v in self.boundary_iou_per_class()],
            "images": self.images,
            "pixels": int(self.matrix.sum()),
        }
