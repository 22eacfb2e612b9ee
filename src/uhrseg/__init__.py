"""uhrseg: superpixels and semantic segmentation for ultra-high-resolution images.

The main entry points are :func:`superpixels` / :class:`SuperpixelPredictor` (superpixel labels) and
:func:`segment` / :class:`SemanticPredictor` (class maps); the sub-packages are ``grid`` (cell grid, association
map operations, connectivity), ``models`` (PCNet, SCN, ISDNet, checkpoints), ``inference``, ``classical``
(scikit-image and OpenCV methods), ``datasets``, ``metrics``, ``training``, ``evaluation``, ``io`` and ``cli``.
"""

from .errors import (
    CheckpointError,
    ImageReadError,
    OutputError,
    UhrsegError,
    WeightsNotFoundError,
)
from .inference import (
    METHODS,
    SemanticPredictor,
    SemanticResult,
    SuperpixelPredictor,
    SuperpixelResult,
    segment,
    superpixels,
)
from .io import read_image

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CheckpointError",
    "ImageReadError",
    "OutputError",
    "SemanticPredictor",
    "SemanticResult",
    "SuperpixelPredictor",
    "SuperpixelResult",
    "UhrsegError",
    "WeightsNotFoundError",
    "__version__",
    "read_image",
    "segment",
    "superpixels",
]
