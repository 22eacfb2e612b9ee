"""Superpixel boundaries of a label map."""

from __future__ import annotations

import numpy as np


def boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Pixels that have a 4-neighbour with another label, marked on both sides of every boundary.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Label map.

    Returns
    -------
    (H, W) ndarray of bool
        True on boundary pixels (scikit-image's ``find_boundaries(mode="thick")`` restricted to 4-neighbours).

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    mask = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    mask[:, 1:] |= horizontal
    mask[:, :-1] |= horizontal
    vertical = labels[1:, :] != labels[:-1, :]
    mask[1:, :] |= vertical
    mask[:-1, :] |= vertical
    return mask
