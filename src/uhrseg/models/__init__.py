"""Superpixel networks (PCNet, SCN), their building blocks and the checkpoint format."""

from .checkpoint import (
    FORMAT_VERSION,
    export_weights,
    load_model,
    load_packaged_model,
    packaged_weights_path,
    read_checkpoint,
    save_checkpoint,
)
from .nets import BSDS500_MEAN, MODELS, SCN, NetConfig, NetOutput, PCNet, SuperpixelNet, build_model

__all__ = [
    "BSDS500_MEAN",
    "FORMAT_VERSION",
    "MODELS",
    "NetConfig",
    "NetOutput",
    "PCNet",
    "SCN",
    "SuperpixelNet",
    "build_model",
    "export_weights",
    "load_model",
    "load_packaged_model",
    "packaged_weights_path",
    "read_checkpoint",
    "save_checkpoint",
]
