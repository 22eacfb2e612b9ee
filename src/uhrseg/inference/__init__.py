"""Inference: full-resolution superpixels from PCNet, SCN or a classical method, in bounded memory."""

from .network import DEFAULT_STRIP_PIXELS, grid_shape_for, network_labels, resize_image
from .predictor import (
    METHODS,
    NETWORK_METHODS,
    SuperpixelPredictor,
    SuperpixelResult,
    resolve_device,
    superpixels,
    validate_n_segments,
)

__all__ = [
    "DEFAULT_STRIP_PIXELS",
    "METHODS",
    "NETWORK_METHODS",
    "SuperpixelPredictor",
    "SuperpixelResult",
    "grid_shape_for",
    "network_labels",
    "resize_image",
    "resolve_device",
    "superpixels",
    "validate_n_segments",
]
