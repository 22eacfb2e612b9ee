"""Colour conversion shared by the refinement and the merge: CIELAB in OpenCV's 8-bit encoding.

Kept apart from :mod:`uhrseg.grid.refine` (numba kernels) so that the pipeline can convert colours while numba
is still loading in the background (:mod:`uhrseg.grid.warmup`).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..io.images import to_uint8

__all__ = ["fill_texture", "lab8"]


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


def fill_texture(features: np.ndarray, weight: float, band_rows: int = 1024) -> np.ndarray:
    """Fill the texture channel of the merge's features: ``features[..., 3] = round(weight |grad L|)``.

    ``|grad L|`` is the gradient magnitude of the 8-bit CIELAB lightness ``features[..., 0]`` (3 x 3 Sobel divided
    by 8, i.e. L units per pixel; OpenCV's reflected border), computed in bands of ``band_rows`` rows with one row
    of context on each side, so the values do not depend on ``band_rows`` (tested) and the temporaries stay at a
    few bands. Used by :class:`uhrseg.SuperpixelPredictor` before :func:`uhrseg.grid.merge_superpixels`
    (``merge_texture_weight``, :data:`uhrseg.defaults.DEFAULT_MERGE_TEXTURE_WEIGHT`): Ward's cost on the mean
    colour and the mean texture keeps flat and textured regions of one colour apart.

    Parameters
    ----------
    features : (h, w, 4) ndarray of uint8
        Channels 0-2: 8-bit CIELAB (:func:`lab8`); channel 3 is overwritten.
    weight : float
        ``w >= 0``; values above 255 are clipped to 255.
    band_rows : int
        Rows per band (memory only).

    Returns
    -------
    (h, w, 4) ndarray of uint8
        ``features``, filled in place.

    Raises
    ------
    ValueError
        If ``features`` is not a non-empty ``(h, w, 4)`` uint8 array, or ``weight`` is negative or not finite, or
        ``band_rows < 1``.
    """
    if features.ndim != 3 or features.shape[2] != 4 or features.dtype != np.uint8 or min(features.shape[:2]) < 1:
        raise ValueError(f"features must be a non-empty (h, w, 4) uint8 array, got {features.shape} {features.dtype}")
    if not 0 <= weight < np.inf or band_rows < 1:  # NaN too
        raise ValueError(f"weight must be finite and >= 0 and band_rows >= 1, got {weight} and {band_rows}")
    height = features.shape[0]
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        top, bottom = max(0, y0 - 1), min(height, y1 + 1)  # one row of context each side, where there is one
        lightness = features[top:bottom, :, 0].astype(np.float32)
        gx = cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3)
        gx, gy = gx[y0 - top : y1 - top], gy[y0 - top : y1 - top]
        # numpy's IEEE square root of the exact integer sums, not cv2.magnitude: its vectorised and scalar paths
        # differ in the last bit (sqrt(380^2) gave 379.99997 in one, 380 in the other), which flipped the rounding
        # of exact halves with the band height, the image width and OpenCV's thread count (tested)
        magnitude = np.sqrt(gx * gx + gy * gy)
        features[y0:y1, :, 3] = np.clip(np.rint(magnitude * np.float32(weight / 8.0)), 0, 255)
    return features
