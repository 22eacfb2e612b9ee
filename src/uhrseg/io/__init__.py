"""Image input (any size and layout) and all-or-nothing output of label maps and overlays."""

from .images import as_rgb, read_image, to_uint8
from .outputs import (
    LABEL_FORMATS,
    commit_files,
    label_suffix,
    prepare_output_dir,
    render_overlay,
    write_labels,
    write_png,
)

__all__ = [
    "LABEL_FORMATS",
    "as_rgb",
    "commit_files",
    "label_suffix",
    "prepare_output_dir",
    "read_image",
    "render_overlay",
    "to_uint8",
    "write_labels",
    "write_png",
]
