"""Files shipped inside the package: the example photograph (license in ``LICENSE-kite.md`` beside it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_image_path"]


def example_image_path() -> Path:
    """Path of the bundled example photograph: "Kite" by Risto Saukonpää, 2560 x 1600 JPEG, LGPL-3.0."""
    return Path(str(resources.files(__name__) / "kite-2560x1600.jpg"))
