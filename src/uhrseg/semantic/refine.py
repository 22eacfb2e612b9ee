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

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..defaults import (
    DEFAULT_BRIDGE_CLASSICAL_PIXELS_PER_SUPERPIXEL,
    DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT,
    DEFAULT_BRIDGE_OVERSEGMENTATION,
    DEFAULT_BRIDGE_PIXELS_PER_SUPERPIXEL,
    DEFAULT_BRIDGE_SMOOTHNESS,
    NETWORK_METHODS,
    REFINEMENTS,
)
from ..grid.pooling import (
    assign_superpixel_classes,
    superpixel_probability_sums,
    superpixel_votes,
    upsample_rows,
    upsampled_bands,
)
from ..io.sources import ArraySource
from ..stores import ArrayStore, FileStore, rows_of

__all__ = ["REFINEMENTS", "ClassRefinement", "ProbabilityRows", "infer_stride", "refine_class_store", "refine_classes",
           "refine_with_superpixels", "superpixels_into"]

# Refinement methods of refine_classes: REFINEMENTS (uhrseg.defaults).


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
        Superpixels asked for. Default: ``H W / 1024`` for network superpixels (about 1460 on a 1500 x 1000
        frame; :data:`uhrseg.defaults.DEFAULT_BRIDGE_PIXELS_PER_SUPERPIXEL`, which says how it was chosen) and
        ``H W / 512`` for classical ones.
    confidence : float
        Pixels whose own top-1 probability is at least this keep their class (0: all do, > 1: none do).
    radius : int
        Guided filter: window radius in pixels (2: the best of 2, 4, 8 and 16 on 5 Semantic Drone ``more``
        frames).
    eps : float
        Guided filter: regularisation (the image is in [0, 1]; 1e-4 was better than 1e-3).
    smoothness : float
        ``lambda`` of the full-resolution boundary refinement of network superpixels (PCNet, SCN) made for
        ``superpixels`` (:data:`uhrseg.defaults.DEFAULT_BRIDGE_SMOOTHNESS`, 100: below the superpixel commands'
        default, since a class boundary the superpixels miss is lost and extra ones cost nothing).
    oversegmentation : float, optional
        Network superpixels only: grid cells per superpixel before the most similar neighbours are merged back to
        ``n_segments`` (:class:`uhrseg.SuperpixelPredictor`). Default (``None`` on construction, resolved
        there): 1.5 for network superpixels (:data:`uhrseg.defaults.DEFAULT_BRIDGE_OVERSEGMENTATION`, as the
        superpixel commands), 1 for classical ones. Before 2026-12-06 the bridge's default was 1, with twice
        as many superpixels.
    merge_texture_weight : float, optional
        Network superpixels only: weight of the texture feature in that merge (0: colour alone). Default (``None``
        on construction, resolved there): :data:`uhrseg.defaults.DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT`, 0, which
        says how it was chosen (the superpixel commands use :data:`uhrseg.defaults.DEFAULT_MERGE_TEXTURE_WEIGHT`),
        and 0 for classical superpixels.

    Raises
    ------
    ValueError
        An unknown ``method``, ``n_segments < 1``, ``confidence`` below 0 or NaN, ``radius < 1``, ``eps <= 0``,
        ``smoothness < 0``, ``oversegmentation`` below 1, or above 1 for classical superpixels, or
        ``merge_texture_weight`` negative or not finite, or not 0 for classical superpixels.
    """

    method: str = "superpixels"
    superpixels: str = "pcnet"
    n_segments: int | None = None
    confidence: float = 0.9
    radius: int = 2
    eps: float = 1e-4
    smoothness: float = DEFAULT_BRIDGE_SMOOTHNESS
    oversegmentation: float | None = None
    merge_texture_weight: float | None = None

    def __post_init__(self) -> None:
        network = self.superpixels in NETWORK_METHODS
        if self.oversegmentation is None:  # frozen: the resolved defaults are set once, here
            object.__setattr__(self, "oversegmentation", DEFAULT_BRIDGE_OVERSEGMENTATION if network else 1.0)
        if self.merge_texture_weight is None:
            object.__setattr__(self, "merge_texture_weight", DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT if network else 0.0)
        if self.method not in REFINEMENTS:
            raise ValueError(f"unknown refinement {self.method!r}; choose one of {', '.join(REFINEMENTS)}")
        if self.n_segments is not None and self.n_segments < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        if not self.confidence >= 0:  # also NaN, which would keep no pixel without saying so
            raise ValueError(f"confidence must be a number >= 0 (0: every pixel keeps its class, above 1: none "
                             f"does), got {self.confidence}")
        if self.radius < 1 or self.eps <= 0:
            raise ValueError("the guided filter needs radius >= 1 and eps > 0")
        if not self.smoothness >= 0:
            raise ValueError(f"smoothness must be >= 0, got {self.smoothness}")
        if not 1 <= self.oversegmentation < math.inf or (self.oversegmentation != 1 and not network):
            raise ValueError(f"oversegmentation must be finite and >= 1, and 1 for classical superpixels, got "
                             f"{self.oversegmentation} with {self.superpixels}")
        if not 0 <= self.merge_texture_weight < math.inf or (self.merge_texture_weight != 0 and not network):
            raise ValueError(f"merge_texture_weight must be finite and >= 0, and 0 for classical superpixels, got "
                             f"{self.merge_texture_weight} with {self.superpixels}")

    def superpixel_predictor(self, device: str = "auto"):
        """The :class:`uhrseg.SuperpixelPredictor` of ``superpixels`` on ``device``, its refinement at
        ``smoothness`` and, for network superpixels, ``oversegmentation`` and ``merge_texture_weight``.

        Raises
        ------
        ValueError, uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
            As :class:`uhrseg.SuperpixelPredictor`.
        """
        from ..inference.predictor import SuperpixelPredictor

        network = self.superpixels in NETWORK_METHODS
        return SuperpixelPredictor(self.superpixels, device=device, refine_smoothness=self.smoothness,
                                   oversegmentation=self.oversegmentation if network else None,
                                   merge_texture_weight=self.merge_texture_weight if network else None)

    def segments_for(self, height: int, width: int) -> int:
        """Superpixels to ask for on an ``H x W`` image: ``n_segments``, or by default ``H W / 1024`` for network
        superpixels and ``H W / 512`` for classical ones (at least 1)."""
        if self.n_segments:
            return self.n_segments
        network = self.superpixels in NETWORK_METHODS
        pixels = DEFAULT_BRIDGE_PIXELS_PER_SUPERPIXEL if network else DEFAULT_BRIDGE_CLASSICAL_PIXELS_PER_SUPERPIXEL
        return max(1, height * width // pixels)


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


class ProbabilityRows:
    """A network's map as a row store of probabilities ``(ceil(H / s), ceil(W / s), C)`` float32, read band by band.

    Parameters
    ----------
    store : row store of (h', w', C) float
        Logits or probabilities at stride ``s``, possibly padded (``h' >= ceil(H / s)``, ``w' >= ceil(W / s)``).
    height, width : int
        The image, pixels.
    stride : int
        ``s``.
    softmax : bool
        The store holds logits: rows are read through a softmax over the class axis.

    Raises
    ------
    ValueError
        If the store does not cover the image at ``stride``.
    """

    def __init__(self, store, height: int, width: int, stride: int, softmax: bool) -> None:
        h, w = -(-height // stride), -(-width // stride)
        if store.shape[0] < h or store.shape[1] < w:
            raise ValueError(f"a map of {store.shape[0]} x {store.shape[1]} does not cover {height} x {width} pixels "
                             f"at stride {stride}")
        self.store, self.softmax = store, softmax
        self.shape = (h, w, int(store.shape[2]))
        self.dtype = np.dtype(np.float32)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as ``(rows, w, C)`` float32."""
        rows = np.asarray(self.store.read(y0, min(y1, self.shape[0]))[:, : self.shape[1]], np.float32)
        if not self.softmax:
            return np.ascontiguousarray(rows)
        e = np.exp(rows - rows.max(axis=2, keepdims=True))
        return e / e.sum(axis=2, keepdims=True)


def superpixels_into(source, labels, n_segments: int, predictor, *, work_dir: str | os.PathLike | None = None,
                     progress=None) -> int:
    """Superpixels of an image source written into a label store; returns their number ``K``.

    Network methods (PCNet, SCN) stream (:meth:`uhrseg.SuperpixelPredictor.run_source`, the CIELAB copy of
    the refinement and the network's guide image in files in ``work_dir`` or in memory); classical methods read
    the whole image.

    Parameters
    ----------
    source : image source
        ``shape`` ``(H, W, 3)`` and ``read_rows``.
    labels : row store of (H, W) int32
        Receives labels ``0 .. K-1``.
    n_segments : int
        Superpixels asked for.
    predictor : uhrseg.SuperpixelPredictor
    work_dir : path-like, optional
        Folder for the scratch CIELAB copy (``3 H W`` bytes) and guide image (12 bytes per network output
        pixel: ``4.5 H W`` bytes at the bridge's default of ``H W / 1024`` superpixels from 1.5x as many cells).
    progress : callable, optional
        Called with the name of each stage as it starts.

    Raises
    ------
    ValueError
        Bad ``n_segments`` or stores that do not match the source.
    """
    height, width = source.shape[:2]
    if predictor.network is None:  # a classical method: on the whole image
        result = predictor.run(source.read_rows(0, height), n_segments)
        labels.write(0, result.labels)
        return result.n_produced
    lab = None
    if predictor.refine_iterations:
        lab = (FileStore(Path(work_dir) / "lab.u8", (height, width, 3), np.uint8) if work_dir is not None
               else ArrayStore(np.empty((height, width, 3), np.uint8)))
    try:
        return predictor.run_source(source, n_segments, labels, lab, progress=progress, work_dir=work_dir).n_produced
    finally:
        if isinstance(lab, FileStore):
            lab.close()


def refine_class_store(probabilities, stride: int, classes, refinement: ClassRefinement, *, source=None,
                       superpixel_labels=None, n_superpixels: int | None = None) -> np.ndarray:
    """Write a full-resolution class map from probabilities by any of :data:`REFINEMENTS`, band by band.

    The engine behind :func:`refine_classes`, :meth:`uhrseg.SemanticPredictor.run` and the streamed
    ``uhrseg segment --refine``: every input and the output are row stores, so memory is bounded by a band
    whatever the image size (the guided filter needs ``C`` full-resolution channels of a band; the others less).

    Parameters
    ----------
    probabilities : row store of (ceil(H / stride), ceil(W / stride), C) float
        Softmax probabilities (e.g. :class:`ProbabilityRows`).
    stride : int
        Image pixels per probability pixel.
    classes : row store of (H, W) uint8
        Receives the class map.
    refinement : ClassRefinement
    source : image source, optional
        The image (``read_rows``): the guide of ``guided``.
    superpixel_labels : row store of (H, W) int32, optional
        Superpixels ``0 .. K-1`` (``superpixels`` only; see :func:`superpixels_into`).
    n_superpixels : int, optional
        ``K`` (default: read from the labels).

    Returns
    -------
    (C,) ndarray of int64
        Pixels per class.

    Raises
    ------
    ValueError
        A missing guide or superpixels for the method, or maps that do not fit each other.
    """
    height, width = classes.shape[:2]
    n_classes = probabilities.shape[2]
    method = refinement.method
    if method == "superpixels":
        if superpixel_labels is None:
            raise ValueError("superpixel refinement needs superpixel labels")
        k = n_superpixels or _max_label(superpixel_labels) + 1
        sums = superpixel_probability_sums(superpixel_labels, probabilities, k, stride)
        lut = sums[:, :-1].argmax(axis=1).astype(np.uint8)
        return assign_superpixel_classes(superpixel_labels, lut, classes, probabilities=probabilities, stride=stride,
                                         confidence=refinement.confidence)
    counts = np.zeros(n_classes, np.int64)

    def put(y0: int, band: np.ndarray) -> None:
        classes.write(y0, band)
        counts[:] += np.bincount(band.ravel(), minlength=n_classes)[:n_classes]

    if method == "none":
        rows = max(1, 2**16 // max(1, probabilities.shape[1]))
        for a in range(0, probabilities.shape[0], rows):
            cells = rows_of(probabilities, a, a + rows).argmax(axis=2).astype(np.uint8)
            put(a * stride, np.repeat(np.repeat(cells, stride, axis=0), stride, axis=1)[: height - a * stride, :width])
    elif method == "bilinear":
        for y0, band in upsampled_bands(probabilities, stride, height, width):
            put(y0, band.argmax(dim=0).numpy().astype(np.uint8))
    else:
        if source is None:
            raise ValueError("the guided filter needs the image as its guide")
        _guided(probabilities, stride, source, put, height, width, refinement.radius, refinement.eps)
    return counts


def _max_label(labels) -> int:
    height = labels.shape[0]
    return max(int(rows_of(labels, y0, y0 + 1024).max()) for y0 in range(0, height, 1024))


def _guided(probabilities, stride: int, source, put, height: int, width: int, radius: int, eps: float) -> None:
    import cv2

    from ..io.images import to_uint8

    halo = 2 * radius + 1
    rows = max(64, (2**24 // max(1, width * probabilities.shape[2])) // stride * stride)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        a, b = max(0, y0 - halo), min(height, y1 + halo)
        guide = np.ascontiguousarray(to_uint8(source.read_rows(a, b)), np.float32) / 255.0
        up = upsample_rows(probabilities, stride, a, b, width).numpy()
        filtered = np.stack([cv2.ximgproc.guidedFilter(guide, np.ascontiguousarray(c), radius, eps) for c in up])
        put(y0, filtered[:, y0 - a : y1 - a].argmax(axis=0).astype(np.uint8))


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
        Superpixels to make (default as :class:`ClassRefinement`: ``H W / 1024`` for network superpixels, made
        from 1.5 times as many grid cells, ``H W / 512`` for classical ones).
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
    if probabilities.ndim != 2:
        return refine_classes(probabilities, refinement, image=image, superpixel_labels=superpixel_labels)
    classes = np.asarray(probabilities)
    height, width = classes.shape
    labels = _labels_for(superpixel_labels, image, height, width, refinement)
    n_classes = int(classes[classes != 255].max()) + 1 if (classes != 255).any() else 1
    k = int(labels.max()) + 1
    votes = superpixel_votes(labels, classes, k, n_classes)
    out = np.empty((height, width), np.uint8)
    assign_superpixel_classes(labels, votes.argmax(axis=1).astype(np.uint8), ArrayStore(out))
    return out


def _labels_for(superpixel_labels, image, height: int, width: int, refinement: ClassRefinement) -> np.ndarray:
    if superpixel_labels is None:
        if image is None:
            raise ValueError("superpixel refinement needs superpixel_labels or the image")
        superpixel_labels = refinement.superpixel_predictor().predict(image, refinement.segments_for(height, width))
    labels = np.ascontiguousarray(superpixel_labels, np.int32)
    if labels.shape[:2] != (height, width):
        raise ValueError(f"superpixel labels of {labels.shape[1]} x {labels.shape[0]} do not match the "
                         f"{width} x {height} class map")
    return labels


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
        The image: the guide of ``guided`` and the source of the superpixels (required for those two unless
        superpixels are given).
    superpixel_labels : (H, W) ndarray of int, optional
        Given superpixels (``superpixels`` only).
    height, width : int, optional
        The image size when neither image nor superpixels are given.

    Returns
    -------
    (H, W) ndarray of uint8

    Raises
    ------
    ValueError
        Bad probabilities (see :func:`refine_with_superpixels`), an unknown method, a missing image.
    """
    from ..io.images import as_rgb

    if isinstance(refinement, str):
        refinement = ClassRefinement(refinement)
    if image is not None:
        image = as_rgb(image)
        height, width = image.shape[:2]
    elif superpixel_labels is not None:
        height, width = superpixel_labels.shape[:2]
    if height is None or width is None:
        raise ValueError("refine_classes needs the image, the superpixels or height and width")
    p = _check_probabilities(probabilities)
    stride = infer_stride(height, width, p.shape[1], p.shape[2])
    hwc = np.ascontiguousarray(p.transpose(1, 2, 0))
    labels = None
    if refinement.method == "superpixels":
        labels = _labels_for(superpixel_labels, image, height, width, refinement)
    out = np.empty((height, width), np.uint8)
    refine_class_store(hwc, stride, ArrayStore(out), refinement, source=None if image is None else ArraySource(image),
                       superpixel_labels=labels)
    return out
