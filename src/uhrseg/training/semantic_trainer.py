"""Training loop of the segmentation networks (ISDNet, the deep path): resumable, validated, logged.

Reads top to bottom: :class:`SemanticTrainConfig` (a dataclass stored in every checkpoint),
:func:`poly_learning_rate` (linear warm-up, then the poly schedule), :func:`semantic_losses` (one batch ->
weighted loss terms), :func:`validate_semantic` (mIoU with the inference code users run) and
:func:`train_semantic` (the loop).

Run folder ``OUT``: ``last.pt`` (model, optimiser, step, RNG states, log; written every ``checkpoint_every``
steps and at the end, atomically), ``best.pt`` (the best validation mIoU, in the packaged-weights format),
``log.csv`` and ``curves.png``. Starting again on the same folder resumes from ``last.pt`` with its stored
recipe. The class table of the training data travels into every checkpoint.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..datasets.semantic import open_semantic_dataset
from ..errors import CheckpointError
from ..metrics.semantic import SegmentationScores
from ..models.checkpoint import load_model
from ..models.segmenters import ISDNet, build_segmenter
from .config import SemanticTrainConfig
from .common import (RunState, check_precision, forward_at, hardware, open_run, parameter_groups, restore_run,
                     training_loop)
from .segmentation_losses import segmentation_loss, structure_distillation_loss, super_resolution_loss
from .semantic_sampling import SemanticSampler, SemanticSamplingConfig

__all__ = ["SemanticTrainConfig", "poly_learning_rate", "predictor_scores", "semantic_losses", "semantic_optimizer",
           "train_semantic", "validate_semantic"]

def poly_learning_rate(cfg: SemanticTrainConfig, step: int) -> float:
    """``lr * min(1, (step + 1) / warmup) * (1 - step / iterations) ** poly_power`` (of any config with those
    fields)."""
    warm = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    return cfg.lr * warm * (1.0 - step / cfg.iterations) ** cfg.poly_power


def semantic_optimizer(module: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum for ``cfg.optimizer == "sgd"``, at ``cfg.lr``, weight decay ``cfg.weight_decay``
    on weights only (any config with those fields: :class:`SemanticTrainConfig`, the MagNet trainer's)."""
    params = parameter_groups(module, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(params, lr=cfg.lr)


def semantic_losses(model: ISDNet, images: torch.Tensor, labels: torch.Tensor,
                    cfg: SemanticTrainConfig) -> dict[str, torch.Tensor]:
    """Forward a batch and return every loss term plus ``total`` (weighted as :class:`SemanticTrainConfig` says).

    Parameters
    ----------
    model : ISDNet
        In training mode.
    images : (B, 3, H, W) torch.Tensor
        RGB in [0, 1].
    labels : (B, H, W) torch.Tensor of int64
        Class ids, 255 = ignore.

    Returns
    -------
    dict of str to scalar torch.Tensor
        ``ce``, ``deep``, ``aux``, ``sr``, ``sd`` (those that apply) and ``total``.
    """
    out = forward_at(model, images, cfg.precision)
    losses = {"ce": segmentation_loss(out.logits, labels, ohem=cfg.ohem, threshold=cfg.ohem_threshold,
                                      min_kept=cfg.ohem_min_kept // cfg.label_stride**2,
                                      label_stride=cfg.label_stride)}
    total = losses["ce"]
    if out.deep_logits is not None:
        losses["deep"] = segmentation_loss(out.deep_logits, labels, ohem=False, label_stride=2 * cfg.label_stride)
        total = total + cfg.deep_weight * losses["deep"]
    if cfg.aux and out.aux_logits is not None:
        losses["aux"] = segmentation_loss(out.aux_logits, labels, ohem=False, label_stride=2 * cfg.label_stride)
        total = total + cfg.aux_weight * losses["aux"]
    if cfg.sr and out.reconstruction is not None:
        losses["sr"] = super_resolution_loss(out.reconstruction, out.target)
        total = total + cfg.sr_weight * losses["sr"]
    if cfg.sd and out.sr_feature is not None:
        losses["sd"] = structure_distillation_loss(out.deep_feature, out.sr_feature)
        total = total + cfg.sd_weight * losses["sd"]
    losses["total"] = total
    return losses


def validate_semantic(model: ISDNet, images: list, class_maps: list, window: int | None = None) -> dict:
    """mIoU, pixel accuracy and boundary IoU over validation images, with the inference code users run.

    Parameters
    ----------
    model : ISDNet
        The network (put in eval mode for the call and restored afterwards).
    images, class_maps : lists of ndarray
        ``(H, W, 3)`` images and ``(H, W)`` uint8 class maps.
    window : int, optional
        Sliding-window side for networks trained at full resolution (the training crop).

    Returns
    -------
    dict
        ``val_miou``, ``val_pixel_accuracy``, ``val_boundary_iou``.
    """
    from ..inference.semantic import SemanticPredictor

    was_training = model.training
    device = next(model.parameters()).device
    metrics = predictor_scores(SemanticPredictor(model, device=str(device), window=window), images, class_maps)
    model.train(was_training)
    return metrics


def predictor_scores(predictor, images: list, class_maps: list) -> dict:
    """``val_miou``, ``val_pixel_accuracy`` and ``val_boundary_iou`` of a :class:`SemanticPredictor` over
    ``(H, W, 3)`` images and their ``(H, W)`` uint8 class maps (the validation of every semantic trainer)."""
    model = predictor.model
    scores = SegmentationScores(model.n_classes, model.class_table.evaluated)
    for image, target in zip(images, class_maps):
        scores.update(predictor.predict(image), target)
    s = scores.summary()
    return {"val_miou": s["miou"], "val_pixel_accuracy": s["pixel_accuracy"], "val_boundary_iou": s["boundary_iou"]}


def train_semantic(cfg: SemanticTrainConfig, run_dir: str | os.PathLike, progress: bool = True,
                   stop_after: int | None = None) -> Path:
    """Train (or resume) a segmentation network; returns the path of ``best.pt`` (``last.pt`` without validation).

    Parameters
    ----------
    cfg : SemanticTrainConfig
        The recipe; when ``run_dir/last.pt`` exists its stored config is used and training resumes.
    run_dir : path-like
        Run folder (created).
    progress : bool
        Show progress bars (decoding the data; iterations with loss, iterations per minute and ETA).
    stop_after : int, optional
        Stop after this many iterations in this call (for tests and time-sliced runs); resumable.

    Raises
    ------
    uhrseg.datasets.DatasetError
        If a dataset cannot be opened or a label map is invalid.
    ValueError
        If the training datasets, or the validation dataset, have different class tables.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If ``cfg.init`` is missing, unreadable, another model or for another class count.
    """
    from ..inference.predictor import resolve_device

    run_dir, state = open_run(run_dir)
    if state is not None:
        cfg = SemanticTrainConfig.from_dict(state["train_config"])
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    datasets = [open_semantic_dataset(s) for s in cfg.data]
    load_bar = tqdm(total=sum(len(d) for d in datasets), disable=not progress, unit="image", desc="decode data")
    sampling = SemanticSamplingConfig(crop=cfg.crop, scale_range=cfg.scale_range, flips=cfg.flips,
                                      rotate=cfg.rotate, photometric=cfg.photometric)
    sampler = SemanticSampler(datasets, sampling, seed=cfg.seed, progress=lambda i, n: load_bar.update(1))
    load_bar.close()
    table = sampler.class_table
    val_images, val_maps = [], []
    if cfg.val:
        val_set = open_semantic_dataset(cfg.val)
        if val_set.class_table != table:
            raise ValueError(f"{cfg.val}: its class table differs from the training data's")
        for name in val_set.names[: cfg.val_images]:
            val_images.append(val_set.image(name))
            val_maps.append(val_set.class_map(name))
    model = build_segmenter(cfg.model, table, **cfg.architecture()).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = semantic_optimizer(model, cfg)
    if state is None and cfg.init:
        init = load_model(cfg.init, expected=cfg.model)
        if init.class_table.n_classes != table.n_classes:
            raise ValueError(f"{cfg.init}: holds {init.class_table.n_classes} classes, the data has "
                             f"{table.n_classes}")
        try:
            model.load_state_dict(init.state_dict(), strict=False)
        except RuntimeError as e:
            raise CheckpointError(f"{cfg.init}: its weights do not fit this run's architecture (compare --width "
                                  f"and the switches): {str(e).splitlines()[0]}") from e
    run = restore_run(state, model, optimizer, sampler.rng)
    model.train()

    def record(run: RunState) -> dict:
        return {"command": " ".join(sys.argv), "data": cfg.data, "iterations": run.step,
                "batch_size": cfg.batch_size, "crop": cfg.crop, "wall_seconds": round(run.wall, 1),
                "hardware": hardware(device), "train_config": asdict(cfg)}

    def losses_at() -> dict[str, torch.Tensor]:
        images, labels = sampler.batch(cfg.batch_size, device)
        return semantic_losses(model, images, labels, cfg)

    window = cfg.crop if not cfg.shallow and cfg.deep_scale == 1 else None
    return training_loop(
        run_dir, run, model=model, optimizer=optimizer, rng=sampler.rng, train_config=asdict(cfg),
        iterations=cfg.iterations, stop_after=stop_after, lr_at=lambda step: poly_learning_rate(cfg, step),
        losses_at=losses_at,
        validate=(lambda: validate_semantic(model, val_images, val_maps, window)) if val_images else None,
        score=lambda m: m["val_miou"],
        validation_record=lambda m: {"data": cfg.val, "images": len(val_images), **m},
        record=record, val_every=cfg.val_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
        loss_keys=("total", "ce", "deep", "aux", "sr", "sd"),
        val_keys=("val_miou", "val_pixel_accuracy", "val_boundary_iou"),
        device=device, progress=progress, desc=f"train {cfg.model}")
