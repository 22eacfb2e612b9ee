"""Datasets: segmentations for superpixel evaluation (BSDS500, labelled folders, label maps made elsewhere) and
class maps for semantic segmentation (colour-table folders such as Semantic Drone, DeepGlobe), with their
class tables."""

from .classes import IGNORE_INDEX, IGNORED_CLASS_NAMES, ClassTable, DatasetError, decode_colours, read_class_table
from .readers import BSDS500, LabelledFolder, open_dataset, read_colour_table, read_label_map
from .semantic import DEEPGLOBE_CLASSES, ColourTableFolder, DeepGlobe, open_semantic_dataset

__all__ = [
    "BSDS500",
    "DEEPGLOBE_CLASSES",
    "IGNORED_CLASS_NAMES",
    "IGNORE_INDEX",
    "ClassTable",
    "ColourTableFolder",
    "DatasetError",
    "DeepGlobe",
    "LabelledFolder",
    "decode_colours",
    "open_dataset",
    "open_semantic_dataset",
    "read_class_table",
    "read_colour_table",
    "read_label_map",
]
