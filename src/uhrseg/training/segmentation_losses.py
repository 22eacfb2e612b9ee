"""Training losses of the segmentation networks (ISDNet; ``../shared/docs/uhr-semantic.md``).

* :func:`segmentation_loss`: pixel-wise cross-entropy with the ignore index on logits upsampled (bilinear) to
  the label size (or, with ``label_stride = k``, to the label map sampled at every ``k``-th pixel, which divides
  the cost of the loss by ``k^2``: on the CPU the full-size loss took longer than the network), optionally
  with online hard example mining (OHEM: only pixels whose probability of the
  right class is below ``threshold`` count, and at least ``min_kept`` of the hardest; Shrivastava et al.,
  CVPR 2016, as mmsegmentation's ``OHEMPixelSampler``), which keeps rare classes and boundaries in the loss.
* :func:`super_resolution_loss`: L_SR, mean squared error between the SR decoder's reconstruction (upsampled
  by 2 to full resolution) and the Laplacian residual sum ``H_0 + up(H_1)``.
* :func:`structure_distillation_loss`: L_SD, mean absolute difference between the position-affinity matrices
  of the deep features and of the SR features, the SR side detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..datasets.classes import IGNORE_INDEX
from ..models.segmenters import structure_affinity

__all__ = ["segmentation_loss", "structure_distillation_loss", "super_resolution_loss"]


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, *, ohem: bool = True, threshold: float = 0.7,
                      min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX, label_stride: int = 1,
                      ) -> torch.Tensor:
    """Cross-entropy of class logits against a label map, ignoring ``ignore_index``.

    Parameters
    ----------
    logits : (B, C, h, w) torch.Tensor
        Class scores at any output stride; upsampled bilinearly to ``(H, W)`` first.
    labels : (B, H, W) torch.Tensor of int64
        Class ids, ``ignore_index`` where unlabelled.
    ohem : bool
        Online hard example mining (see the module notes).
    threshold : float
        OHEM: pixels whose predicted probability of their class is at least this are easy and dropped.
    min_kept : int
        OHEM: keep at least this many of the hardest labelled pixels of the batch.
    ignore_index : int
        Label of uncounted pixels.
    label_stride : int
        Use the label of every ``label_stride``-th pixel in each direction (the centre of each block) and
        logits upsampled to that size; 1 uses every pixel.

    Returns
    -------
    torch.Tensor
        Scalar mean over the counted pixels (0 when no pixel is labelled).

    Raises
    ------
    ValueError
        If batch sizes differ or ``label_stride < 1``.
    """
    if label_stride < 1:
        raise ValueError(f"label_stride must be >= 1, got {label_stride}")
    if logits.shape[0] != labels.shape[0] or labels.ndim != 3:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must be (B, C, h, w) "
                         "and (B, H, W)")
    if label_stride > 1:
        k = label_stride
        labels = labels[:, k // 2 :: k, k // 2 :: k]
    if logits.shape[2:] != labels.shape[1:]:
        logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    n_valid = int(valid.sum())
    if n_valid == 0:
        return logits.sum() * 0.0
    if not ohem:
        return per_pixel[valid].mean()
    with torch.no_grad():
        prob_right = torch.exp(-per_pixel[valid])  # softmax probability of the right class
        keep = prob_right < threshold
        if int(keep.sum()) < min(min_kept, n_valid):
            kth = torch.kthvalue(prob_right, min(min_kept, n_valid)).values
            keep = prob_right <= kth
    losses = per_pixel[valid][keep]
    return losses.mean() if losses.numel() else per_pixel[valid].mean() * 0.0


def super_resolution_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_SR: mean squared error of the reconstruction (upsampled by 2, bilinear) against the residual sum.

    Parameters
    ----------
    reconstruction : (B, 3, H / 2, W / 2) torch.Tensor
        The SR decoder's output.
    target : (B, 3, H, W) torch.Tensor
        ``H_0 + up(H_1)`` of the normalised image.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    if reconstruction.shape[2:] != target.shape[2:]:
        reconstruction = F.interpolate(reconstruction, size=target.shape[2:], mode="bilinear", align_corners=False)
    return F.mse_loss(reconstruction, target)


def structure_distillation_loss(deep_feature: torch.Tensor, sr_feature: torch.Tensor) -> torch.Tensor:
    """L_SD: mean absolute difference of the ``(h w) x (h w)`` cosine affinities, the SR side detached.

    Parameters
    ----------
    deep_feature : (B, C1, h, w) torch.Tensor
        Deep-path features.
    sr_feature : (B, C2, h, w) torch.Tensor
        SR-decoder features pooled to the same ``h x w``.

    Returns
    -------
    torch.Tensor
        Scalar.

    Raises
    ------
    ValueError
        If the spatial sizes differ.
    """
    if deep_feature.shape[2:] != sr_feature.shape[2:]:
        raise ValueError(f"deep {tuple(deep_feature.shape)} and SR {tuple(sr_feature.shape)} features must have "
                         "the same h x w")
    return (structure_affinity(deep_feature) - structure_affinity(sr_feature.detach())).abs().mean()
