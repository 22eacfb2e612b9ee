"""Training: superpixel networks (losses, DPC sampling, resumable trainer) and segmentation networks (losses,
augmented crops, resumable trainer), sharing the run-folder pieces of :mod:`uhrseg.training.common`."""

from .loader import BatchLoader, draw_at
from .losses import association_distillation_loss, boundary_sr_loss, local_discrimination_loss, one_hot_labels, superpixel_loss
from .refined_teacher import refined_association
from .sampling import SamplingConfig, TrainingSampler
from .semantic_losses import segmentation_loss, structure_distillation_loss, super_resolution_loss
from .semantic_sampling import SemanticSampler, SemanticSamplingConfig
from .semantic_trainer import (
    SemanticTrainConfig,
    poly_learning_rate,
    semantic_losses,
    train_semantic,
    validate_semantic,
)
from .trainer import TrainConfig, learning_rate, load_init, train, training_losses, validate

__all__ = [
    "association_distillation_loss",
    "BatchLoader",
    "SamplingConfig",
    "SemanticSampler",
    "SemanticSamplingConfig",
    "SemanticTrainConfig",
    "TrainConfig",
    "TrainingSampler",
    "boundary_sr_loss",
    "draw_at",
    "learning_rate",
    "load_init",
    "local_discrimination_loss",
    "one_hot_labels",
    "poly_learning_rate",
    "refined_association",
    "segmentation_loss",
    "semantic_losses",
    "structure_distillation_loss",
    "super_resolution_loss",
    "superpixel_loss",
    "train",
    "train_semantic",
    "training_losses",
    "validate",
    "validate_semantic",
]
