"""Class maps sharpened at full resolution: superpixel pooling and the comparators, behind one interface.

A segmentation network decides classes on a grid coarser than the image (ISDNet: 1/8; MagNet: 1/4). The ways
to turn its probabilities into a full-resolution class map, all here, all band by band:

* ``none``: each cell of the network's grid one class (nearest upsampling of the argmax);
* ``bilinear``: argmax of the bilinearly upsampled probabilities (what ``uhrseg segment`` writes, up to
  upsampling probabilities instead of logits);
* ``guided``: the guided filter (He et al., TPAMI 2013; OpenCV contrib ``ximgproc.guidedFilter``) on each
  upsampled probability channel with the full-resolution image as guide, then the argmax (the "DGF" family of
  refinements of the CVPR 2022 UHR survey);
* ``superpixels``: each superpixel takes the class of the mean probability of its pixels
  (:mod:`uhrseg.grid.pooling`), except pixels whose own prediction is confident (top-1 probability at least
  ``confidence``), which keep it. Superpixels come from our PCNet pipeline (or any method of
  :data:`uhrseg.METHODS`), or are given. A hard class map (another tool's PNG) is pooled by majority vote.

MagNet's refinement is a model (``SemanticPredictor("magnet")``), not a post-process, and dense CRF is not
offered: no maintained package builds on this platform (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..grid.pooling import (
    assign_superpixel_classes,
    superpixel_probability_sums,
    superpixel_votes,
    upsample_rows,
    upsampled_bands,
)
from ..stores import ArrayStore

__all__ = ["REFINEMENTS", "ClassRefinement", "infer_stride", "refine_classes", "refine_with_superpixels"]

#: Refinement methods of :func:`refine_classes`.
REFINEMENTS = ("none", "bilinear", "guided", "superpixels")


@dataclass(frozen=True)
class ClassRefinement:
    """How to turn low-resolution probabilities into a full-resolution class map.

    Attributes
    ----------
    method : str
        One of :data:`REFINEMENTS`.
    superpixels : str
        Superpixel method for ``superpixels`` (``pcnet`` by default; any of :data:`uhrseg.METHODS`).
    n_segments : int, optional
        Superpixels asked for (default ``H W / 512``, about 2900 on a 1500 x 1000 frame: the best of 1500, 3000
        and 6000 on 5 Semantic Drone ``more`` frames).
    confidence : float
        Pixels whose own top-1 probability is at least this keep their class (> 1: none do).
    radius : int
        Guided filter: window radius in pixels (2: the best of 2, 4, 8 and 16 on the same frames).
    eps : float
        Guided filter: regularisation (the image is in [0, 1]; 1e-4 was better than 1e-3).
    """

    method: str = "superpixels"
    superpixels: str = "pcnet"
    n_segments: int | None = None
    confidence: float = 0.9
    radius: int = 2
    eps: float = 1e-4

    def __post_init__(self) -> None:
        if self.method not in REFINEMENTS:
            raise ValueError(f"unknown refinement {self.method!r}; choose one of {', '.join(REFINEMENTS)}")
        if self.n_segments is not None and self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        if self.radius < 1 or self.eps <= 0:
            raise ValueError("the guided filter needs radius >= 1 and eps > 0")

    def segments_for(self, height: int, width: int) -> int:
        """Superpixels to ask for on an ``H x W`` image."""
        return self.n_segments or max(1, height * width // 512)


def infer_stride(height: int, width: int, map_height: int, map_width: int) -> int:
    """The integer stride ``s`` with ``ceil(H / s) == h`` and ``ceil(W / s) == w``.

    Raises
    ------
    ValueError
        If no integer stride maps the image onto the map (a probability array of another image).
    """
    for s in range(max(1, height // max(1, map_height) - 1), height + 1):
        if -(-height // s) == map_height and -(-width // s) == map_width:
            return s
        if -(-height // s) < map_height:
            break
    raise ValueError(f"probabilities of {map_height} x {map_width} do not fit a {height} x {width} image at any "
                     "integer stride (expected ceil(H / s) x ceil(W / s))")


def _check_probabilities(p: np.ndarray) -> np.ndarray:
    if p.ndim != 3 or p.shape[0] < 1 or p.shape[0] > 255:
        raise ValueError(f"probabilities must be (C, h, w) with 1 <= C <= 255, got shape {p.shape}")
    p = np.asarray(p, np.float32)
    if not np.isfinite(p).all():
        raise ValueError("probabilities hold NaN or infinite values")
    if p.min() < -1e-3 or p.max() > 1 + 1e-3:
        raise ValueError(f"probabilities must be in [0, 1] (softmax), got values in {p.min():.3g}..{p.max():.3g}")
    return p


def _superpixel_labels(image, height: int, width: int, refinement: ClassRefinement) -> np.ndarray:
    from ..inference.predictor import superpixels

    if image is None:
        raise ValueError("superpixel refinement needs the image (or superpixel_labels)")
    return superpixels(image, refinement.segments_for(height, width), method=refinement.superpixels)


def refine_with_superpixels(probabilities: np.ndarray, superpixel_labels: np.ndarray | None = None, *,
                            image: np.ndarray | None = None, confidence: float = 0.9,
                            n_segments: int | None = None, method: str = "pcnet") -> np.ndarray:
    """Full-resolution class map: each superpixel takes the class of its pixels' mean probability.

    Parameters
    ----------
    probabilities : (C, h, w) ndarray of float, or (H, W) ndarray of integers
        Softmax probabilities at any integer stride (``h = ceil(H / s)``; e.g.
        :attr:`uhrseg.SemanticResult.probabilities`), or a hard class map at full resolution (pooled by
        majority vote; values of 255 do not vote).
    superpixel_labels : (H, W) ndarray of int, optional
        Superpixels ``0 .. K-1``; by default computed from ``image`` with ``method`` and ``n_segments``.
    image : (H, W, 3) ndarray, optional
        The image, needed when no labels are given.
    confidence : float
        Pixels whose own top-1 probability is at least this keep their own class (probabilities only).
    n_segments : int, optional
        Superpixels to make (default ``H W / 512``).
    method : str
        Superpixel method (:data:`uhrseg.METHODS`).

    Returns
    -------
    (H, W) ndarray of uint8

    Raises
    ------
    ValueError
        Probabilities that are not ``(C, h, w)`` in [0, 1] or hold NaN; a map that fits the labels at no integer
        stride; labels and class map of different sizes; neither labels nor image.

    References
    ----------
    The superpixel pooling of class scores goes back to Gould et al., "Multi-class segmentation with relative
    location prior", IJCV 2008; here the superpixels are PCNet's (Wang et al., arXiv:2108.08607).
    """
    refinement = ClassRefinement("superpixels", superpixels=method, n_segments=n_segments, confidence=confidence)
    if probabilities.ndim == 2:
        height, width = probabilities.shape
    elif superpixel_labels is not None:
        height, width = superpixel_labels.shape[:2]
    elif image is not None:
        height, width = image.shape[:2]
    else:
        raise ValueError("superpixel refinement needs superpixel_labels or the image")
    labels = superpixel_labels if superpixel_labels is not None else _superpixel_labels(image, height, width,
                                                                                         refinement)
    labels = np.asarray(labels)
    if labels.shape[:2] != (height, width):
        raise ValueError(f"superpixel labels of {labels.shape[1]} x {labels.shape[0]} do not match the "
                         f"{width} x {height} class map")
    out = np.empty((height, width), np.uint8)
    if probabilities.ndim == 2:
        classes = np.asarray(probabilities)
        n_classes = int(classes[classes != 255].max()) + 1 if (classes != 255).any() else 1
        k = int(labels.max()) + 1
        votes = superpixel_votes(labels, classes, k, n_classes)
        lut = votes.argmax(axis=1).astype(np.uint8)
        assign_superpixel_classes(labels, lut, ArrayStore(out))
        return out
    p = _check_probabilities(probabilities)
    stride = infer_stride(height, width, p.shape[1], p.shape[2])
    hwc = np.ascontiguousarray(p.transpose(1, 2, 0))
    k = int(labels.max()) + 1
    sums = superpixel_probability_sums(labels, hwc, k, stride)
    lut = sums[:, :-1].argmax(axis=1).astype(np.uint8)
    assign_superpixel_classes(labels, lut, ArrayStore(out), probabilities=hwc, stride=stride,
                              confidence=confidence)
    return out


def _guided(hwc: np.ndarray, stride: int, image: np.ndarray, out: np.ndarray, radius: int, eps: float) -> None:
    import cv2

    height, width = out.shape
    halo = 2 * radius + 1
    guide_full = image
    rows = max(64, (2**24 // max(1, width * hwc.shape[2])) // stride * stride)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        a, b = max(0, y0 - halo), min(height, y1 + halo)
        guide = np.ascontiguousarray(guide_full[a:b], np.float32) / 255.0
        up = upsample_rows(hwc, stride, a, b, width).numpy()
        filtered = np.stack([cv2.ximgproc.guidedFilter(guide, np.ascontiguousarray(c), radius, eps) for c in up])
        out[y0:y1] = filtered[:, y0 - a : y1 - a].argmax(axis=0).astype(np.uint8)


def refine_classes(probabilities: np.ndarray, refinement: ClassRefinement | str = "superpixels", *,
                   image: np.ndarray | None = None, superpixel_labels: np.ndarray | None = None,
                   height: int | None = None, width: int | None = None) -> np.ndarray:
    """A full-resolution class map from ``(C, h, w)`` probabilities by any of :data:`REFINEMENTS`.

    Parameters
    ----------
    probabilities : (C, h, w) ndarray of float
        Softmax probabilities at an integer stride.
    refinement : ClassRefinement or str
        The method and its settings (a name takes the defaults).
    image : (H, W, 3) ndarray of uint8, optional
        The image: the guide of ``guided`` and the source of the superpixels (required for those two).
    superpixel_labels : (H, W) ndarray of int, optional
        Given superpixels (``superpixels`` only).
    height, width : int, optional
        The image size when no image is given (default: the image's).

    Returns
    -------
    (H, W) ndarray of uint8

    Raises
    ------
    ValueError
        Bad probabilities (see :func:`refine_with_superpixels`), an unknown method, a missing image.
    """
    if isinstance(refinement, str):
        refinement = ClassRefinement(refinement)
    if image is not None:
        height, width = image.shape[:2]
    elif superpixel_labels is not None:
        height, width = superpixel_labels.shape[:2]
    if height is None or width is None:
        raise ValueError("refine_classes needs the image, the superpixels or height and width")
    if refinement.method == "superpixels":
        return refine_with_superpixels(probabilities, superpixel_labels, image=image,
                                       confidence=refinement.confidence, n_segments=refinement.n_segments,
                                       method=refinement.superpixels)
    p = _check_probabilities(probabilities)
    stride = infer_stride(height, width, p.shape[1], p.shape[2])
    out = np.empty((height, width), np.uint8)
    if refinement.method == "none":
        cells = p.argmax(axis=0).astype(np.uint8)
        out[...] = np.repeat(np.repeat(cells, stride, axis=0), stride, axis=1)[:height, :width]
        return out
    hwc = np.ascontiguousarray(p.transpose(1, 2, 0))
    if refinement.method == "bilinear":
        for y0, band in upsampled_bands(hwc, stride, height, width):
            out[y0 : y0 + band.shape[1]] = band.argmax(dim=0).numpy().astype(np.uint8)
        return out
    if image is None:
        raise ValueError("the guided filter needs the image as its guide")
    from ..io.images import as_rgb, to_uint8

    _guided(hwc, stride, to_uint8(as_rgb(image)), out, refinement.radius, refinement.eps)
    return out
