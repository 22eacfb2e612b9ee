"""Training: superpixel networks (losses, DPC sampling, resumable trainer) and segmentation networks (losses,
augmented crops, resumable trainer), sharing the run-folder pieces of :mod:`uhrseg.training.common`.

The recipes (:mod:`uhrseg.training.config`) import neither torch nor the trainers. The names below are loaded
from their modules on first use (PEP 562), so that importing ``uhrseg.training.config`` (as ``uhrseg train
--help`` does) does not load torch through this package.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule of ``uhrseg.training`` that defines it.
_EXPORTS = {
    "association_distillation_loss": "losses",
    "BatchLoader": "loader",
    "DistillationSampler": "head_distillation",
    "HeadDistillConfig": "config",
    "MagNetTrainConfig": "config",
    "SamplingConfig": "sampling",
    "SemanticSampler": "semantic_sampling",
    "SemanticSamplingConfig": "semantic_sampling",
    "SemanticTrainConfig": "config",
    "TrainConfig": "config",
    "TrainingSampler": "sampling",
    "boundary_sr_loss": "losses",
    "distill_head": "head_distillation",
    "draw_at": "loader",
    "learning_rate": "trainer",
    "load_init": "trainer",
    "local_discrimination_loss": "losses",
    "one_hot_labels": "losses",
    "poly_learning_rate": "semantic_trainer",
    "refined_association": "refined_teacher",
    "segmentation_loss": "segmentation_losses",
    "semantic_losses": "semantic_trainer",
    "structure_distillation_loss": "segmentation_losses",
    "start_from_student": "head_distillation",
    "student_from_teacher": "head_distillation",
    "super_resolution_loss": "segmentation_losses",
    "superpixel_loss": "losses",
    "train": "trainer",
    "train_magnet": "magnet_trainer",
    "train_semantic": "semantic_trainer",
    "training_losses": "trainer",
    "validate": "trainer",
    "validate_semantic": "semantic_trainer",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str):
    """Load ``name`` from its submodule (:data:`_EXPORTS`) on first use.

    Raises
    ------
    AttributeError
        If ``name`` is not one of :data:`__all__` (nor a submodule already imported).
    """
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
