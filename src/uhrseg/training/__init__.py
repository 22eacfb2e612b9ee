"""Training of PCNet and SCN: losses, DPC sampling and the resumable trainer."""

from .losses import boundary_sr_loss, local_discrimination_loss, one_hot_labels, superpixel_loss
from .sampling import SamplingConfig, TrainingSampler
from .trainer import TrainConfig, learning_rate, train, training_losses, validate

__all__ = [
    "SamplingConfig",
    "TrainConfig",
    "TrainingSampler",
    "boundary_sr_loss",
    "learning_rate",
    "local_discrimination_loss",
    "one_hot_labels",
    "superpixel_loss",
    "train",
    "training_losses",
    "validate",
]
