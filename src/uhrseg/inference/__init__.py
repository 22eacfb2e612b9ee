"""Inference in bounded memory: full-resolution superpixels (PCNet, SCN, classical methods) and class maps
(ISDNet, the deep path; whole, tiled or sliding-window)."""

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
from .semantic import (
    SemanticPredictor,
    SemanticResult,
    SemanticSourceResult,
    segment,
    semantic_weights_path,
)

__all__ = [
    "DEFAULT_BAND_ROWS",
    "DEFAULT_STRIP_PIXELS",
    "DEFAULT_TILE",
    "METHODS",
    "NETWORK_METHODS",
    "TRUNK_HALO",
    "SemanticPredictor",
    "SemanticResult",
    "SemanticSourceResult",
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
    "segment",
    "semantic_weights_path",
    "superpixels",
    "validate_n_segments",
]
