"""Images with ground-truth segmentations (BSDS500, labelled folders) and label maps made elsewhere."""

from .readers import (
    BSDS500,
    DatasetError,
    LabelledFolder,
    open_dataset,
    read_colour_table,
    read_label_map,
)

__all__ = ["BSDS500", "DatasetError", "LabelledFolder", "open_dataset", "read_colour_table", "read_label_map"]
