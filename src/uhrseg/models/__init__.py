"""Networks: superpixels (PCNet, SCN) and semantic segmentation (ISDNet, its deep path, MagNet), their building blocks
and the checkpoint format."""

from .checkpoint import (
    FORMAT_VERSION,
    export_weights,
    load_model,
    load_packaged_model,
    packaged_weights_path,
    read_checkpoint,
    save_checkpoint,
)
from .magnet import MagNet, RefinementConfig, RefinementModule
from .nets import BSDS500_MEAN, MODELS, SCN, NetConfig, NetOutput, PCNet, SuperpixelNet, build_model
from .segmenters import SEGMENTERS, ISDNet, SegmenterConfig, SegmenterOutput, build_segmenter

__all__ = [
    "BSDS500_MEAN",
    "FORMAT_VERSION",
    "ISDNet",
    "MODELS",
    "MagNet",
    "RefinementConfig",
    "RefinementModule",
    "SEGMENTERS",
    "NetConfig",
    "NetOutput",
    "PCNet",
    "SCN",
    "SegmenterConfig",
    "SegmenterOutput",
    "SuperpixelNet",
    "build_model",
    "build_segmenter",
    "export_weights",
    "load_model",
    "load_packaged_model",
    "packaged_weights_path",
    "read_checkpoint",
    "save_checkpoint",
]
