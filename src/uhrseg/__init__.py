"""uhrseg: superpixels for ultra-high-resolution images.

The main entry points are :func:`superpixels` and :class:`SuperpixelPredictor`; the sub-packages are
``grid`` (cell grid, association map operations, connectivity), ``models`` (PCNet, SCN, checkpoints),
``inference``, ``classical`` (scikit-image and OpenCV methods), ``io`` and ``cli``.
"""

from .errors import CheckpointError, ImageReadError, OutputError, UhrsegError, WeightsNotFoundError
from .inference import METHODS, SuperpixelPredictor, SuperpixelResult, superpixels
from .io import read_image

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "CheckpointError",
    "ImageReadError",
    "OutputError",
    "SuperpixelPredictor",
    "SuperpixelResult",
    "UhrsegError",
    "WeightsNotFoundError",
    "__version__",
    "read_image",
    "superpixels",
]
