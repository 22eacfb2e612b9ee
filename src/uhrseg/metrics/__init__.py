"""Metrics: superpixels (BR, BP, ASA, UE, EV, CO, K, as the benchmark of Stutz et al. defines them) and semantic
segmentation (confusion matrix, IoU, mIoU, pixel accuracy, frequency-weighted IoU, boundary IoU)."""

from .semantic import (
    DEFAULT_BOUNDARY_TOLERANCE,
    SegmentationScores,
    boundary_iou_counts,
    boundary_region,
    confusion_matrix,
    frequency_weighted_iou,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
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
    "DEFAULT_BOUNDARY_TOLERANCE",
    "SegmentationScores",
    "achievable_segmentation_accuracy",
    "boundary_iou_counts",
    "boundary_recall_precision",
    "boundary_region",
    "compactness",
    "confusion_matrix",
    "default_tolerance",
    "explained_variation",
    "frequency_weighted_iou",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "superpixel_metrics",
    "undersegmentation_error",
]
