"""Image input (any size and layout) and all-or-nothing output of label maps, class maps and overlays."""

from .images import as_rgb, read_image, to_uint8
from .outputs import (
    LABEL_FORMATS,
    commit_files,
    label_suffix,
    prepare_output_dir,
    render_class_overlay,
    render_overlay,
    sample_label_store,
    write_class_png,
    write_class_store,
    write_label_store,
    write_labels,
    write_png,
)
from .sources import ArraySource, TiffSource, open_image

__all__ = [
    "LABEL_FORMATS",
    "ArraySource",
    "TiffSource",
    "as_rgb",
    "commit_files",
    "label_suffix",
    "open_image",
    "prepare_output_dir",
    "read_image",
    "render_class_overlay",
    "render_overlay",
    "sample_label_store",
    "to_uint8",
    "write_class_png",
    "write_class_store",
    "write_label_store",
    "write_labels",
    "write_png",
]
