"""Classical superpixel methods from the libraries made for them, behind uhrseg's ``method=`` switch.

Each function takes an ``(H, W, 3)`` uint8 RGB image and the requested number of superpixels ``n_segments``
and returns the library's raw ``(H, W)`` integer label map; :func:`uhrseg.superpixels` then applies the same
connectivity step and output conventions to every method.

================  =====================  ================================================================
method            library                meaning of ``n_segments``
================  =====================  ================================================================
``slic``          scikit-image           ``slic(n_segments=n, compactness=10)`` (Achanta et al., TPAMI 2012)
``watershed``     scikit-image           compact watershed of the Sobel gradient from ``n`` grid markers
                                         (Neubert & Protzel, ICPR 2014), compactness 1e-3
``fh``            scikit-image           Felzenszwalb-Huttenlocher (IJCV 2004); it has no target count, so
                                         ``scale`` and ``min_size`` grow with the mean superpixel area
                                         ``H W / n`` (0.05 and 0.25 of it; on 8 BSDS500 train images
                                         this gave 157, 595, 1366 superpixels for n = 200, 600, 1200;
                                         on smooth scenes far fewer: 22-200 for n = 300-1000 on the two
                                         DeepGlobe test tiles, 2448 x 2448)
``cv-slic``       OpenCV contrib         SLIC with region size ``sqrt(H W / n)`` (at most the shorter side),
                                         ruler 10, in CIELAB
``slico``         OpenCV contrib         SLICO (zero-parameter SLIC), region size as ``cv-slic``, CIELAB
``seeds``         OpenCV contrib         SEEDS (Van den Bergh et al., ECCV 2012), ``n`` superpixels, 4 levels
                                         (fewer where OpenCV's block grid needs it), HSV as in OpenCV's sample
``lsc``           OpenCV contrib         LSC (Li & Chen, CVPR 2015), region size as ``cv-slic`` (smaller where
                                         OpenCV's seed grid needs it), CIELAB
================  =====================  ================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from skimage import color, filters, segmentation

__all__ = ["CLASSICAL_METHODS", "SEEDS_LEVELS", "classical_superpixels", "lsc_seed_grid", "seeds_levels"]


def _region_size(shape: tuple[int, ...], n_segments: int, method: str) -> int:
    """OpenCV SLIC's and LSC's region size for ``n_segments``: ``sqrt(H W / n)``, at least 2 and at most the image's
    shorter side (a larger region crashed OpenCV's SLIC, SLICO and LSC: segmentation fault or division by zero).

    Raises
    ------
    ValueError
        If the image is a single row or column (OpenCV crashes on any region size there).
    """
    if min(shape[:2]) < 2:
        raise ValueError(f"{method} needs an image of at least 2 pixels on each side, got {shape[0]} x {shape[1]}")
    return max(2, min(round(math.sqrt(shape[0] * shape[1] / n_segments)), min(shape[:2])))


#: Block levels of SEEDS (OpenCV's sample uses 4).
SEEDS_LEVELS = 4


def seeds_levels(height: int, width: int, n_segments: int, levels: int = SEEDS_LEVELS) -> int | None:
    """The most block levels, at most ``levels`` (and at least 2, OpenCV's least), for which OpenCV's SEEDS makes
    a usable block grid on a ``height x width`` image for ``n_segments``, or None if there are none.

    OpenCV (``SuperpixelSEEDSImpl::initialize``, opencv_contrib ximgproc) lays out about ``sqrt(n H / W)`` rows of
    superpixels (n at least 10) made of blocks that halve per level, dropping levels while a block would be under
    a pixel. Where its top level then has no row or no column it writes out of bounds (a segmentation fault: a
    100 x 400 image for n = 1), as it does when a single level is left (a 3 x 3 image); where no level fits it
    loops forever (a 2 x 2 image). This repeats that arithmetic
    (in float32, as OpenCV does) so that such calls are never made.
    """
    for requested in range(levels, 1, -1):
        if _seeds_grid_fits(height, width, n_segments, requested):
            return requested
    return None


def _seeds_grid_fits(height: int, width: int, n_segments: int, levels: int) -> bool:
    """Whether OpenCV's SEEDS, asked for ``levels`` levels, ends with a top level of at least one block row and
    column (:func:`seeds_levels`)."""
    f32 = np.float32
    rows = int(np.sqrt(f32(max(n_segments, 10)) * f32(height) / f32(width)))
    cols = rows * width // height
    if rows < 1 or cols < 1:
        return False
    for top in range(levels, 0, -1):
        block_w = f32(width) / f32(cols) / f32(1 << (top - 1))
        block_h = f32(height) / f32(rows) / f32(1 << (top - 1))
        if block_w >= 1 and block_h >= 1:  # the levels OpenCV keeps; with a single one it crashes too (3 x 3)
            blocks_w, blocks_h = width // math.ceil(block_w), height // math.ceil(block_h)
            return top >= 2 and (blocks_w >> (top - 1)) >= 1 and (blocks_h >> (top - 1)) >= 1
    return False


def _skimage_slic(image: np.ndarray, n_segments: int) -> np.ndarray:
    return segmentation.slic(image, n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1)


def _skimage_watershed(image: np.ndarray, n_segments: int) -> np.ndarray:
    gradient = filters.sobel(color.rgb2gray(image))
    return segmentation.watershed(gradient, markers=n_segments, compactness=1e-3)


def _skimage_felzenszwalb(image: np.ndarray, n_segments: int) -> np.ndarray:
    area = image.shape[0] * image.shape[1] / n_segments
    return segmentation.felzenszwalb(image, scale=FH_SCALE_PER_AREA * area, sigma=0.8,
                                     min_size=max(1, int(FH_MIN_SIZE_PER_AREA * area)), channel_axis=-1)


#: FH ``scale`` and ``min_size`` per pixel of mean superpixel area (calibrated, see the module table).
FH_SCALE_PER_AREA = 0.05
FH_MIN_SIZE_PER_AREA = 0.25


def _opencv_slic(algorithm: int, ruler: float, method: str) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(image: np.ndarray, n_segments: int) -> np.ndarray:
        region = _region_size(image.shape, n_segments, method)
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
        sp = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=algorithm, region_size=region,
                                               ruler=ruler)
        sp.iterate(10)
        return sp.getLabels()

    return run


def _opencv_seeds(image: np.ndarray, n_segments: int) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    h, w = image.shape[:2]
    levels = seeds_levels(h, w, n_segments)
    if levels is None:
        raise ValueError(f"seeds cannot make {n_segments} superpixels on a {h} x {w} image (OpenCV's SEEDS has no "
                         "block grid for it); ask for more superpixels or use another method")
    sp = cv2.ximgproc.createSuperpixelSEEDS(w, h, 3, n_segments, levels, 2, 5, False)
    sp.iterate(hsv, 4)
    return sp.getLabels()


def lsc_seed_grid(height: int, width: int, region_size: int) -> tuple[int, int] | None:
    """OpenCV LSC's grid of seeds ``(columns, rows)`` for a region size on a ``height x width`` image, or None
    where it has no column or row (OpenCV then divides by zero: a 50 x 8 image at region size 8).

    Repeats ``SuperpixelLSCImpl::GetChSeeds`` (opencv_contrib ximgproc): ``int(H W / r^2)`` seeds in
    ``int(sqrt(seeds W / H))`` columns.
    """
    seeds = int(np.float32(width * height) / np.float32(region_size * region_size))
    cols = int(math.sqrt(seeds * (width / height)))
    rows = seeds // cols if cols else 0
    if cols < 1 or rows < 1 or width // cols < 1 or height // rows < 1:
        return None
    return cols, rows


def _opencv_lsc(image: np.ndarray, n_segments: int) -> np.ndarray:
    h, w = image.shape[:2]
    region = _region_size(image.shape, n_segments, "lsc")
    while region > 2 and lsc_seed_grid(h, w, region) is None:  # a tall, narrow image: smaller regions fit
        region -= 1
    if lsc_seed_grid(h, w, region) is None:
        raise ValueError(f"lsc cannot make superpixels on a {h} x {w} image (OpenCV's LSC has no seed grid for "
                         "it); use another method")
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
    sp = cv2.ximgproc.createSuperpixelLSC(lab, region_size=region, ratio=0.075)
    sp.iterate(10)
    return sp.getLabels()


#: Classical method name -> function ``(image (H, W, 3) uint8, n_segments) -> (H, W) int labels``.
CLASSICAL_METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "slic": _skimage_slic,
    "watershed": _skimage_watershed,
    "fh": _skimage_felzenszwalb,
    "cv-slic": _opencv_slic(cv2.ximgproc.SLIC, 10.0, "cv-slic"),
    "slico": _opencv_slic(cv2.ximgproc.SLICO, 10.0, "slico"),
    "seeds": _opencv_seeds,
    "lsc": _opencv_lsc,
}


def classical_superpixels(image: np.ndarray, n_segments: int, method: str) -> np.ndarray:
    """Run one classical method (see the module table) on an RGB uint8 image.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8
        RGB image.
    n_segments : int
        Requested number of superpixels.
    method : str
        A key of :data:`CLASSICAL_METHODS`.

    Returns
    -------
    (H, W) ndarray of int
        The library's raw labels (not yet made contiguous or connected).

    Raises
    ------
    ValueError
        If ``method`` is unknown, the image is not ``(H, W, 3)`` uint8, or OpenCV's method cannot run on this
        shape and count (``cv-slic``, ``slico`` and ``lsc`` on a single row or column, ``lsc`` where
        :func:`lsc_seed_grid` has no grid at any region size, ``seeds`` where :func:`seeds_levels` finds no block
        grid), which OpenCV would answer with a crash or an endless loop.
    """
    if method not in CLASSICAL_METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of {sorted(CLASSICAL_METHODS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"classical methods take (H, W, 3) uint8 images, got {image.shape} {image.dtype}")
    return CLASSICAL_METHODS[method](np.ascontiguousarray(image), int(n_segments))
