"""Training of MagNet's refinement module over a frozen backbone: resumable, validated, logged.

As in the paper (``../shared/docs/uhr-semantic.md``), with the geometry of the inference loop
(:mod:`uhrseg.inference.magnet`) so that the module sees in training what it sees in use. Per sample:

* **coarse**: the backbone's prediction of the whole image at the coarsest scale (``2^-(n_scales - 1)``), i.e.
  stage 0 of the inference loop, computed once per training image (the backbone is frozen);
* **fine**: the image at a random finer scale ``f`` (uniform in ``fine_range``), a random crop of the patch
  size (the coarsest scale's size, as at inference) resized to the network input, and the backbone's
  prediction ``O`` of it;
* the coarse prediction cropped at the crop's coordinates and upsampled bilinearly (the ROI-align of the
  authors' code, here exactly the inference loop's upsampling);
* loss: OHEM cross-entropy (threshold 0.7) of the module's output against the crop's labels; random
  horizontal and vertical flips of the whole sample.

Our departures for the CPU: AdamW (lr 1e-3, poly decay) for a few thousand iterations instead of SGD for 50
epochs (``--optimizer sgd --lr 1e-3`` gives the paper's optimiser), and labels read at twice the map
resolution (the maps are at a stride of 4; :class:`uhrseg.inference.magnet.MagNetSettings`).

Run folder as for every trainer (:func:`uhrseg.training.common.training_loop`): ``last.pt`` (resumable),
``best.pt`` (best validation mIoU of the whole multi-scale loop), ``log.csv``, ``curves.png``. Checkpoints are
MagNet checkpoints: backbone and module in one file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..datasets.classes import IGNORE_INDEX
from ..datasets.semantic import open_semantic_dataset
from ..inference.magnet import (
    MagNetSettings,
    _Crops,
    _early,
    _resample,
    crop_size,
    input_size_for,
    patch_grid,
    run_magnet,
)
from ..io.images import to_uint8
from ..io.sources import ArraySource
from ..models.checkpoint import load_model
from ..models.magnet import MagNet
from ..models.segmenters import ISDNet
from ..stores import ArrayStore
from .config import MagNetTrainConfig
from .common import RunState, hardware, open_run, restore_run, training_loop
from .segmentation_losses import segmentation_loss
from .semantic_trainer import poly_learning_rate, predictor_scores, semantic_optimizer

__all__ = ["MagNetTrainConfig", "train_magnet"]


def _backbone(cfg: MagNetTrainConfig) -> ISDNet:
    from ..inference.semantic import semantic_weights_path

    path = semantic_weights_path(cfg.backbone_model, cfg.backbone)
    net = load_model(path)
    if not isinstance(net, ISDNet):
        raise ValueError(f"{path}: a MagNet backbone must be a segmentation network (isdnet, deeppath), not "
                         f"{net.name}")
    return net


class _MagNetSampler:
    """Coarse maps of the training images (stage 0, computed once) and random fine crops with their labels."""

    def __init__(self, model: MagNet, datasets: list, cfg: MagNetTrainConfig, device: torch.device,
                 progress: bool) -> None:
        from ..inference.semantic import _memory_store, _PaddedSource

        self.model, self.cfg, self.device = model, cfg, device
        self.rng = np.random.default_rng(cfg.seed)
        self.settings = MagNetSettings.for_model("magnet", cfg.n_scales)
        self.f0 = self.settings.scales[0]
        self.items = []
        total = sum(len(d) for d in datasets)
        bar = tqdm(total=total, disable=not progress, unit="image", desc="coarse maps")
        patch = None
        with torch.inference_mode():
            for d in datasets:
                for name in d.names:
                    image, labels = to_uint8(d.image(name)), d.class_map(name)
                    h, w = labels.shape
                    if patch is None:  # the inference default for the first image, kept for every sample
                        patch = crop_size(h, w, self.settings)
                    padded = _PaddedSource(ArraySource(image), h, w)
                    coarse = run_magnet(model, padded, h, w, MagNetSettings(scales=(self.f0,), patch=patch),
                                        _memory_store, device, {})
                    self.items.append((padded, labels, ArrayStore(coarse.array.copy())))
                    bar.update(1)
        bar.close()
        self.patch = patch
        self.input_size = input_size_for(patch, model.backbone.input_multiple)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``early (B, C, h, w)``, ``running (B, C, h, w)`` probabilities and labels ``(B, 2h, 2w)`` int64."""
        cfg, s = self.cfg, self.settings.map_stride
        early, running, labels = [], [], []
        for _ in range(cfg.batch_size):
            padded, lab, coarse = self.items[int(self.rng.integers(len(self.items)))]
            h, w = lab.shape
            f = float(self.rng.uniform(*cfg.fine_range))
            grid = patch_grid(h, w, f, self.patch, s, 0)
            ph, pw = grid.patch
            y = int(self.rng.integers(0, grid.shape[0] - ph + 1))
            x = int(self.rng.integers(0, grid.shape[1] - pw + 1))
            crops = _Crops(padded, h, w, self.input_size, s, self.device)
            with torch.no_grad():
                o = _early(self.model, crops.tensor(grid, y, x), (ph, pw))
                coarse_grid = patch_grid(h, w, self.f0, self.patch, s, 0)
                yc = _resample(coarse, coarse_grid.shape, self.f0 / f, y, x, ph, pw, self.device)
            fy0, fy1 = round(y * s / f), round((y + ph) * s / f)
            fx0, fx1 = round(x * s / f), round((x + pw) * s / f)
            region = np.full((fy1 - fy0, fx1 - fx0), IGNORE_INDEX, np.uint8)
            part = lab[fy0:fy1, fx0:fx1]
            region[: part.shape[0], : part.shape[1]] = part
            region = cv2.resize(region, (2 * pw, 2 * ph), interpolation=cv2.INTER_NEAREST_EXACT)
            lab_t = torch.from_numpy(region.astype(np.int64))
            if cfg.flips and self.rng.random() < 0.5:
                o, yc, lab_t = o.flip(-1), yc.flip(-1), lab_t.flip(-1)
            if cfg.flips and self.rng.random() < 0.5:
                o, yc, lab_t = o.flip(-2), yc.flip(-2), lab_t.flip(-2)
            early.append(o)
            running.append(yc)
            labels.append(lab_t)
        return torch.stack(early), torch.stack(running), torch.stack(labels).to(self.device)


def _validate(model: MagNet, images: list, class_maps: list, n_scales: int) -> dict:
    from ..inference.magnet import MagNetSettings
    from ..inference.semantic import SemanticPredictor

    predictor = SemanticPredictor(model, device=str(next(model.parameters()).device),
                                  magnet=MagNetSettings.for_model("magnet", n_scales))  # puts it in eval mode
    metrics = predictor_scores(predictor, images, class_maps)
    model.train()
    return metrics


def train_magnet(cfg: MagNetTrainConfig, run_dir: str | os.PathLike, progress: bool = True,
                 stop_after: int | None = None) -> Path:
    """Train (or resume) MagNet's refinement module with the backbone frozen; returns ``best.pt`` (or ``last.pt``).

    Parameters
    ----------
    cfg : MagNetTrainConfig
        The recipe; when ``run_dir/last.pt`` exists its stored config is used and training resumes.
    run_dir : path-like
        Run folder (created).
    progress : bool
        Progress bars (coarse maps; iterations with loss and ETA).
    stop_after : int, optional
        Stop after this many iterations in this call (resumable).

    Raises
    ------
    uhrseg.datasets.DatasetError
        If a dataset cannot be opened or a label map is invalid.
    ValueError
        If the data's class table differs from the backbone's, or the backbone is not a segmentation network.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If the backbone checkpoint is missing or unusable.
    """
    from ..inference.predictor import resolve_device

    run_dir, state = open_run(run_dir)
    if state is not None:
        cfg = MagNetTrainConfig.from_dict(state["train_config"])
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    backbone = _backbone(cfg)
    datasets = [open_semantic_dataset(s) for s in cfg.data]
    for d in datasets:
        if d.class_table != backbone.class_table:
            raise ValueError(f"{d.label}: its class table ({d.class_table.n_classes} classes) differs from the "
                             f"backbone's ({backbone.n_classes} classes)")
    model = MagNet(backbone).to(device).to(memory_format=torch.channels_last)  # as validation leaves it
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    model.train()
    sampler = _MagNetSampler(model, datasets, cfg, device, progress)
    val_images, val_maps = [], []
    if cfg.val:
        val_set = open_semantic_dataset(cfg.val)
        for name in val_set.names[: cfg.val_images]:
            val_images.append(val_set.image(name))
            val_maps.append(val_set.class_map(name))
    optimizer = semantic_optimizer(model.refinement, cfg)
    run = restore_run(state, model, optimizer, sampler.rng)
    model.train()

    def record(run: RunState) -> dict:
        return {"command": " ".join(sys.argv), "data": cfg.data, "backbone": cfg.backbone, "iterations": run.step,
                "batch_size": cfg.batch_size, "patch": list(sampler.patch), "wall_seconds": round(run.wall, 1),
                "hardware": hardware(device), "train_config": asdict(cfg)}

    def losses_at() -> dict[str, torch.Tensor]:
        early, running, labels = sampler.batch()
        logits = model.refinement(early, running)
        ce = segmentation_loss(logits, labels, ohem=True, threshold=cfg.ohem_threshold,
                               min_kept=max(1, cfg.ohem_min_kept // 16))
        return {"total": ce, "ce": ce}

    return training_loop(
        run_dir, run, model=model, optimizer=optimizer, rng=sampler.rng, train_config=asdict(cfg),
        iterations=cfg.iterations, stop_after=stop_after, lr_at=lambda step: poly_learning_rate(cfg, step),
        losses_at=losses_at,
        validate=(lambda: _validate(model, val_images, val_maps, cfg.n_scales)) if val_images else None,
        score=lambda m: m["val_miou"],
        validation_record=lambda m: {"data": cfg.val, "images": len(val_images), "n_scales": cfg.n_scales, **m},
        record=record, val_every=cfg.val_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
        loss_keys=("total",), val_keys=("val_miou", "val_pixel_accuracy", "val_boundary_iou"),
        device=device, progress=progress, desc="train magnet")
