"""Inference in bounded memory: full-resolution superpixels (PCNet, SCN, classical methods) and class maps
(ISDNet, the deep path; whole, tiled or sliding-window)."""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "network": [
        "DEFAULT_STRIP_PIXELS", "DEFAULT_TILE", "TRUNK_HALO", "cell_id_map", "grid_shape_for",
        "inference_model", "network_input", "network_labels", "resize_image"
    ],
    "predictor": [
        "DEFAULT_BAND_ROWS", "METHODS", "NETWORK_METHODS", "SourceResult", "SuperpixelPredictor",
        "SuperpixelResult", "resolve_device", "superpixels", "validate_n_segments"
    ],
    "semantic": ["SemanticPredictor", "SemanticResult", "SemanticSourceResult", "segment", "semantic_weights_path"],
})
