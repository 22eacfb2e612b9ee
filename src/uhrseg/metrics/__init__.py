"""Superpixel metrics (BR, BP, ASA, UE, EV, CO, K) as the benchmark of Stutz et al. defines them."""

from .superpixel import (
    achievable_segmentation_accuracy,
    boundary_recall_precision,
    compactness,
    default_tolerance,
    explained_variation,
    superpixel_metrics,
    undersegmentation_error,
)

__all__ = [
    "achievable_segmentation_accuracy",
    "boundary_recall_precision",
    "compactness",
    "default_tolerance",
    "explained_variation",
    "superpixel_metrics",
    "undersegmentation_error",
]
