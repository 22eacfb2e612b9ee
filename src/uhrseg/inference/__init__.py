"""Inference in bounded memory: full-resolution superpixels (PCNet, SCN, classical methods) and class maps
(ISDNet, the deep path; whole, tiled or sliding-window)."""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "network": ["DEFAULT_STRIP_PIXELS", "DEFAULT_TILE", "cell_id_map", "inference_model", "network_labels"],
    "onnx_export": ["export_onnx"],
    "opencv_dnn": ["OpenCVNetwork"],
    "predictor": [
        "BACKENDS", "DEFAULT_BAND_ROWS", "METHODS", "NETWORK_METHODS", "SourceResult", "SuperpixelPredictor",
        "SuperpixelResult", "resolve_backend", "resolve_device", "superpixels", "validate_n_segments"
    ],
    "resize": ["grid_shape_for", "network_input", "resize_image"],
    "tiling": ["TRUNK_HALO", "tile_plan"],
    "semantic": ["SemanticPredictor", "SemanticResult", "SemanticSourceResult", "segment", "semantic_weights_path"],
})
