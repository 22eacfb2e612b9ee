"""Colour conversion shared by the refinement and the merge: CIELAB in OpenCV's 8-bit encoding.

Kept apart from :mod:`uhrseg.grid.refine` (numba kernels) so that the pipeline can convert colours while numba
is still loading in the background (:mod:`uhrseg.grid.warmup`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..io.images import to_uint8

__all__ = ["lab8"]


def lab8(rgb: np.ndarray) -> np.ndarray:
    """CIELAB in OpenCV's 8-bit encoding of an RGB image or band.

    Parameters
    ----------
    rgb : (h, W, 3) ndarray of uint8, uint16 (high byte used) or float in [0, 1]
        RGB pixels.

    Returns
    -------
    (h, W, 3) ndarray of uint8
        ``L * 255 / 100``, ``a + 128``, ``b + 128`` (``cv2.COLOR_RGB2Lab``).
    """
    rgb8 = to_uint8(rgb)
    return cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2Lab)
