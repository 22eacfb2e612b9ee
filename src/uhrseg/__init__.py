"""uhrseg: superpixels and semantic segmentation for ultra-high-resolution images.

The main entry points are :func:`superpixels` / :class:`SuperpixelPredictor` (superpixel labels) and
:func:`segment` / :class:`SemanticPredictor` (class maps); the sub-packages are ``grid`` (cell grid, association
map operations, connectivity), ``models`` (PCNet, SCN, ISDNet, checkpoints), ``inference``, ``classical``
(scikit-image and OpenCV methods), ``datasets``, ``metrics``, ``training``, ``evaluation``, ``io`` and ``cli``.
"""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "errors": ["CheckpointError", "ImageReadError", "OutputError", "UhrsegError", "WeightsNotFoundError"],
    "inference": [
        "METHODS", "SemanticPredictor", "SemanticResult", "SuperpixelPredictor", "SuperpixelResult", "segment",
        "superpixels"
    ],
    "io": ["read_image"],
})

__version__ = "0.1.0"
__all__ = sorted([*__all__, "__version__"])
