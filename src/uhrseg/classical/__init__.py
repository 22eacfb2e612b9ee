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
``cv-slic``       OpenCV contrib         SLIC with region size ``sqrt(H W / n)``, ruler 10, in CIELAB
``slico``         OpenCV contrib         SLICO (zero-parameter SLIC), region size ``sqrt(H W / n)``, CIELAB
``seeds``         OpenCV contrib         SEEDS (Van den Bergh et al., ECCV 2012), ``n`` superpixels, 4 levels,
                                         HSV as in OpenCV's sample
``lsc``           OpenCV contrib         LSC (Li & Chen, CVPR 2015), region size ``sqrt(H W / n)``, CIELAB
================  =====================  ================================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
from skimage import color, filters, segmentation

__all__ = ["CLASSICAL_METHODS", "classical_superpixels"]


def _region_size(shape: tuple[int, ...], n_segments: int) -> int:
    return max(2, round(math.sqrt(shape[0] * shape[1] / n_segments)))


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


def _opencv_slic(algorithm: int, ruler: float) -> Callable[[np.ndarray, int], np.ndarray]:
    def run(image: np.ndarray, n_segments: int) -> np.ndarray:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
        sp = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=algorithm,
                                               region_size=_region_size(image.shape, n_segments),
                                               ruler=ruler)
        sp.iterate(10)
        return sp.getLabels()

    return run


def _opencv_seeds(image: np.ndarray, n_segments: int) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    h, w = image.shape[:2]
    sp = cv2.ximgproc.createSuperpixelSEEDS(w, h, 3, n_segments, 4, 2, 5, False)
    sp.iterate(hsv, 4)
    return sp.getLabels()


def _opencv_lsc(image: np.ndarray, n_segments: int) -> np.ndarray:
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
    sp = cv2.ximgproc.createSuperpixelLSC(lab, region_size=_region_size(image.shape, n_segments), ratio=0.075)
    sp.iterate(10)
    return sp.getLabels()


#: Classical method name -> function ``(image (H, W, 3) uint8, n_segments) -> (H, W) int labels``.
CLASSICAL_METHODS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "slic": _skimage_slic,
    "watershed": _skimage_watershed,
    "fh": _skimage_felzenszwalb,
    "cv-slic": _opencv_slic(cv2.ximgproc.SLIC, 10.0),
    "slico": _opencv_slic(cv2.ximgproc.SLICO, 10.0),
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
        If ``method`` is unknown or the image is not ``(H, W, 3)`` uint8.
    """
    if method not in CLASSICAL_METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of {sorted(CLASSICAL_METHODS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"classical methods take (H, W, 3) uint8 images, got {image.shape} {image.dtype}")
    return CLASSICAL_METHODS[method](np.ascontiguousarray(image), int(n_segments))
