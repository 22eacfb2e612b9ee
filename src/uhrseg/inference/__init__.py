"""Inference: full-resolution superpixels from PCNet, SCN or a classical method, in bounded memory."""

from .network import (
    DEFAULT_STRIP_PIXELS,
    DEFAULT_TILE,
    TRUNK_HALO,
    cell_id_map,
    grid_shape_for,
    inference_model,
    network_input,
    network_labels,
    resize_image,
)
from .predictor import (
    DEFAULT_BAND_ROWS,
    METHODS,
    NETWORK_METHODS,
    SourceResult,
    SuperpixelPredictor,
    SuperpixelResult,
    resolve_device,
    superpixels,
    validate_n_segments,
)

__all__ = [
    "DEFAULT_BAND_ROWS",
    "DEFAULT_STRIP_PIXELS",
    "DEFAULT_TILE",
    "METHODS",
    "NETWORK_METHODS",
    "TRUNK_HALO",
    "SourceResult",
    "SuperpixelPredictor",
    "SuperpixelResult",
    "cell_id_map",
    "grid_shape_for",
    "inference_model",
    "network_input",
    "network_labels",
    "resize_image",
    "resolve_device",
    "superpixels",
    "validate_n_segments",
]
