"""Training loop for PCNet and SCN: Adam with the paper's schedule, resumable checkpoints, validation, logs.

Reads top to bottom: :class:`TrainConfig` (a dataclass, stored in every checkpoint), :func:`learning_rate`
(the step schedule), :func:`training_losses` (one batch -> weighted loss terms), :func:`validate` (ASA and BR
at a fixed superpixel count) and :func:`train` (the loop).

Run folder ``OUT``: ``last.pt`` (model, optimiser, step, RNG states, log; written every ``checkpoint_every``
steps and at the end, atomically), ``best.pt`` (the model with the best validation ASA + BR, in the packaged
weights format), ``log.csv`` and ``curves.png``. Starting again on the same folder resumes from ``last.pt``.
With ``loader_workers > 0`` the batches are drawn ahead in that many processes
(:class:`uhrseg.training.loader.BatchLoader`), which a GPU needs to be kept busy.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, replace
from functools import partial
from operator import methodcaller
from pathlib import Path

import numpy as np
import torch

from ..datasets.readers import open_dataset
from ..grid.connectivity import connectivity_bounds, enforce_connectivity
from ..inference.network import network_labels
from ..errors import CheckpointError
from ..metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision
from ..models.checkpoint import load_model
from ..models.nets import NetConfig, SuperpixelNet, build_model
from .config import TrainConfig
from .common import (RunState, check_precision, forward_at, hardware, open_run, parameter_groups, restore_run,
                     training_loop)
from .loader import BatchLoader
from .losses import association_distillation_loss, boundary_sr_loss, local_discrimination_loss, superpixel_loss
from .revive import revive_association_channels
from .refined_teacher import refined_association
from .sampling import SamplingConfig, TrainingSampler, batch_to_torch

__all__ = ["TrainConfig", "learning_rate", "load_init", "train", "training_losses", "validate"]


def _widened_guide(model: SuperpixelNet, source: SuperpixelNet) -> dict[str, torch.Tensor]:
    """``source``'s state dict, its guide branch widened to ``model``'s (:func:`load_init`)."""
    state = source.state_dict()
    wide, narrow = getattr(model.config, "guide_channels", 0), getattr(source.config, "guide_channels", 0)
    if not (getattr(model.config, "guide", False) and getattr(source.config, "guide", False)) or wide <= narrow:
        return state
    own = model.state_dict()
    for key in ("guide.0.weight", "guide.0.bias"):
        grown = own[key].clone()
        grown[:narrow] = state[key]
        state[key] = grown
    grown = torch.zeros_like(own["guide.2.weight"])
    grown[:, :narrow] = state["guide.2.weight"]
    state["guide.2.weight"] = grown
    return state


def load_init(model: SuperpixelNet, path: str, first_inputs, source: SuperpixelNet | None = None) -> None:
    """Start ``model`` from the weights of the checkpoint ``path`` (fine-tuning, ``TrainConfig.init``).

    BatchNorm layers that ``model`` has and the checkpoint lacks (``NetConfig.head_norm`` on weights trained
    without it) start as the identity: ``first_inputs()`` gives a ``(B, 3, h, w)`` float32 input batch (or the
    tuple of the model's inputs: the batch and a guided PCNet's ``(B, 3, 4h, 4w)`` guide), and in
    training mode, one new norm at a time in forward order, the norm's weight is set to ``sqrt(var + eps)``
    and its bias to ``mean`` of its input on that batch (per channel), its running mean and variance to the
    same ``mean`` and ``var``. A guide branch (``NetConfig.guide``) or head blocks (``NetConfig.head_blocks``)
    that the checkpoint lacks keep their initialisation, whose last conv is zero. A guide branch wider than the
    checkpoint's (``NetConfig.guide_channels``) takes the checkpoint's first-conv channels as its first ones and
    keeps its initialisation for the others, whose weights in the second conv start at zero. The loaded network
    then computes the checkpoint's function in evaluation mode on any input, and in training mode on that batch; the
    other norms' running statistics are left as loaded.
    ``source`` is that checkpoint already loaded (:func:`uhrseg.models.load_model`), so it is not read twice.

    Raises
    ------
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If the file is missing or unreadable, holds another model, or has weights that do not fit ``model``
        other than the missing norms.
    """
    source = source if source is not None else load_model(path, expected=model.name)
    missing, unexpected = model.load_state_dict(_widened_guide(model, source), strict=False)
    modules = dict(model.named_modules())
    if getattr(model.config, "guide", False) and not getattr(source.config, "guide", False):
        missing = [key for key in missing if not key.startswith("guide.")]
    # head blocks the checkpoint lacks keep their initialisation (identity: the second conv is zero)
    missing = [key for key in missing if not key.startswith("head_blocks.")]
    owners = {key.rsplit(".", 1)[0] for key in missing}
    if unexpected or any(not isinstance(modules.get(name), torch.nn.BatchNorm2d) for name in owners):
        raise CheckpointError(f"{path}: weights do not match the {model.name} model being trained "
                              f"(missing {sorted(missing)[:4]}, unexpected {sorted(unexpected)[:4]})")
    if not owners:
        return
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    batch = first_inputs()
    batch = batch if isinstance(batch, tuple) else (batch,)
    model.train()
    try:
        for m in norms:
            m.momentum = 0.0  # running statistics stay as loaded while calibrating
        with torch.no_grad():
            for name in [n for n, _ in model.named_modules() if n in owners]:  # forward order
                norm, seen = modules[name], []
                hook = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
                try:
                    model(*batch)
                finally:
                    hook.remove()
                x = seen[0].float()
                mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
                norm.running_mean.copy_(mean)
                norm.running_var.copy_(var)
                norm.weight.copy_(torch.sqrt(var + norm.eps))
                norm.bias.copy_(mean)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Step schedule: ``lr * gamma ** (step // lr_step)`` (paper: 5e-5, divided by 10 every 2k iterations)."""
    return cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step)


def training_losses(model: SuperpixelNet, batch: dict, cfg: TrainConfig,
                    teacher: SuperpixelNet | None = None) -> dict[str, torch.Tensor]:
    """Forward the global (and patch) branch and return every loss term plus ``total``.

    ``teacher`` is the loaded ``cfg.teacher`` network (an SCN in eval mode, on the model's device), fed each
    branch's image at the output resolution without gradients.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN, on the batch's device.
    batch : dict
        :meth:`uhrseg.training.sampling.TrainingSampler.batch`: ``{"global": ..., "patch": ...}`` (patch with
        DPC only), each with ``input`` ``(B, 3, c/up, c/up)`` float32, ``labels`` ``(B, c, c)`` int64 (the
        ground truth's segment ids), ``target`` ``(B, 3, c, c)``, ``band`` ``(B, c, c)`` bool and the L_D
        windows (``windows`` ``(N, 3)``, ``window_mask`` ``(N, K, K)``), ``c`` the crop side in pixels.
    cfg : TrainConfig
        Loss weights, precision and switches (DPC, SR, L_D).

    Returns
    -------
    dict of str to scalar torch.Tensor
        ``sem``, ``pos`` (global superpixel terms), ``sr``, ``ld``, ``kd`` (teacher), ``patch_sem``,
        ``patch_pos``, ``patch_sr``, ``patch_kd`` (those that apply) and ``total`` (weighted as in
        :class:`TrainConfig`).
    """
    out: dict[str, torch.Tensor] = {}
    g = batch["global"]
    res = forward_at(model, g["input"], cfg.precision, *_guide(model, g))
    out["sem"], out["pos"] = superpixel_loss(res.assoc, g["labels"], model.cell_size, cfg.position_weight)
    total = cfg.sp_weight * (out["sem"] + out["pos"])
    if teacher is not None:
        out["kd"] = association_distillation_loss(res.logits, _teacher_assoc(teacher, g, cfg))
        total = total + cfg.teacher_weight * out["kd"]
    if cfg.sr and res.reconstruction is not None:
        out["sr"] = boundary_sr_loss(res.reconstruction, g["target"], g["band"])
        total = total + cfg.sr_weight * out["sr"]
    if cfg.ld and res.embedding is not None:
        out["ld"] = local_discrimination_loss(res.embedding, g["windows"], g["window_mask"])
        total = total + cfg.ld_weight * out["ld"]
    if cfg.dpc and "patch" in batch:
        p = batch["patch"]
        pres = forward_at(model, p["input"], cfg.precision, *_guide(model, p))
        out["patch_sem"], out["patch_pos"] = superpixel_loss(pres.assoc, p["labels"], model.cell_size,
                                                             cfg.position_weight)
        patch = cfg.sp_weight * (out["patch_sem"] + out["patch_pos"])
        if teacher is not None:
            out["patch_kd"] = association_distillation_loss(pres.logits, _teacher_assoc(teacher, p, cfg))
            patch = patch + cfg.teacher_weight * out["patch_kd"]
        if cfg.sr and pres.reconstruction is not None:
            out["patch_sr"] = boundary_sr_loss(pres.reconstruction, p["target"], p["band"])
            patch = patch + cfg.sr_weight * out["patch_sr"]
        total = total + cfg.patch_weight * patch
    out["total"] = total
    return out


def _output_image(branch: dict) -> torch.Tensor:
    """The branch's ``(B, 3, h, w)`` image at the output resolution in [0, 1] (its SR target is the same image in
    [-1, 1])."""
    return (branch["target"] + 1.0) * 0.5


def _guide(model: SuperpixelNet, branch: dict) -> tuple[torch.Tensor, ...]:
    """``(guide,)`` for a guided model: the branch's output-resolution image (:func:`_output_image`); ``()``
    otherwise."""
    return (_output_image(branch),) if model.uses_guide else ()


def _teacher_assoc(teacher: SuperpixelNet, branch: dict, cfg: TrainConfig) -> torch.Tensor:
    """The teacher's ``(B, 9, h, w)`` ``Q`` on the branch's image at the output resolution, without gradients;
    with ``cfg.teacher_refine`` moved to the refined boundaries (:func:`refined_association`)."""
    image = _output_image(branch)
    with torch.no_grad():
        assoc = forward_at(teacher, image, cfg.precision).assoc
    return refined_association(assoc, image, teacher.cell_size) if cfg.teacher_refine else assoc


def validate(model: SuperpixelNet, dataset, names: list[str], n_segments: int, device: torch.device) -> dict:
    """Mean ASA and BR (benchmark tolerance) over all ground truths of ``names`` at ``n_segments``: the network's
    own labels (``model`` on ``device``, in eval mode for the call and restored afterwards) after the connectivity
    step, without merge or refinement. ``dataset`` is a :class:`uhrseg.datasets.BSDS500` or a labelled folder
    (``image(name)``, ``ground_truths(name)``). Returns ``{"val_asa", "val_br", "val_k"}`` (``val_k`` the mean
    number of superpixels produced)."""
    was_training = model.training
    model.eval()
    asa, br, k = [], [], []
    for name in names:
        image = dataset.image(name)
        raw, grid, _ = network_labels(model, image, n_segments, device)
        labels = enforce_connectivity(raw, *connectivity_bounds(image.shape[:2], grid.n_cells))
        k.append(int(labels.max()) + 1)
        for gt in dataset.ground_truths(name):
            asa.append(achievable_segmentation_accuracy(labels, gt))
            br.append(boundary_recall_precision(labels, gt)[0])
    model.train(was_training)
    return {"val_asa": float(np.mean(asa)), "val_br": float(np.mean(br)), "val_k": float(np.mean(k))}


def train(cfg: TrainConfig, run_dir: str | os.PathLike, progress: bool = True, stop_after: int | None = None,
          extend_to: int | None = None) -> Path:
    """Train (or resume) a model; returns the path of ``best.pt`` (``last.pt`` when there is no validation).

    Parameters
    ----------
    cfg : TrainConfig
        The recipe; when ``run_dir/last.pt`` exists its stored config is used and training resumes.
    run_dir : path-like
        Run folder (created).
    progress : bool
        Show a progress bar with the loss, iterations per minute and ETA.
    stop_after : int, optional
        Stop after this many iterations in this call (for tests and time-sliced CPU runs); resumable.
    extend_to : int, optional
        Raise the stored run's iteration count to this many and go on from ``last.pt`` with its optimiser
        state, random generators and learning-rate schedule (``lr * gamma ** (step // lr_step)`` continues),
        as if the run had been started with this count; later resumes keep the new count. For a run whose
        curves still rise: unlike a new run with ``init``, Adam's moments are not started again.

    Raises
    ------
    ValueError
        If ``extend_to`` is given without a ``run_dir/last.pt`` or is below the run's stored iterations.
    uhrseg.datasets.DatasetError
        If a dataset cannot be opened.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If ``cfg.init`` is missing, unreadable or holds another model.
    """
    from ..inference.predictor import resolve_device

    if extend_to is not None and not (Path(run_dir) / "last.pt").is_file():  # before open_run makes the folder
        raise ValueError(f"extend_to: {Path(run_dir) / 'last.pt'} does not exist; there is no run to extend")
    run_dir, state = open_run(run_dir)
    if state is not None:
        if "model" not in state["train_config"]:  # a pcnet-head run (uhrseg.training.head_distillation)
            raise ValueError(f"{run_dir}: its last.pt is a run of another trainer (pcnet-head), not of "
                             f"{cfg.model}; use a new run folder")
        cfg = TrainConfig.from_dict(state["train_config"])
    if extend_to is not None:
        if extend_to < cfg.iterations:
            raise ValueError(f"extend_to {extend_to} is below the {cfg.iterations} iterations of {run_dir}")
        cfg = replace(cfg, iterations=extend_to)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    init = load_model(cfg.init, expected=cfg.model) if state is None and cfg.init else None
    teacher = load_model(cfg.teacher, expected="scn").to(device).eval() if cfg.teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
    if init is not None and init.config.head_norm and not cfg.head_norm:
        cfg = replace(cfg, head_norm=True)  # fine-tuning keeps the init's architecture (today's packaged pcnet.pt)
    if init is not None and init.config.guide and not cfg.guide:
        cfg = replace(cfg, guide=True)
    if init is not None and init.config.head_blocks > cfg.head_blocks:
        cfg = replace(cfg, head_blocks=init.config.head_blocks)
    if init is not None and init.config.guide and init.config.guide_channels > cfg.guide_channels:
        cfg = replace(cfg, guide_channels=init.config.guide_channels)
    model = build_model(cfg.model, NetConfig(head_norm=cfg.head_norm, guide=cfg.guide,
                                             guide_channels=cfg.guide_channels,
                                             head_blocks=cfg.head_blocks)).to(device)
    sampling = SamplingConfig(global_resize=cfg.global_resize, scale_range=cfg.scale_range, crop=cfg.crop,
                              patch=cfg.patch,
                              upscale=model.upscale, dpc=cfg.dpc, binary_mask=cfg.binary_mask,
                              ld_window=cfg.ld_window if cfg.ld else 0)
    sampler = TrainingSampler([open_dataset(s, cfg.bsds500_root) for s in cfg.data], sampling, seed=cfg.seed)
    val_set = open_dataset(cfg.val, cfg.bsds500_root) if cfg.val else None
    val_names = val_set.names[: cfg.val_images] if val_set is not None else []
    lr_scales = {name: scale for name, scale, used in (("guide", cfg.guide_lr_scale, cfg.guide),
                                                      ("head_blocks", cfg.head_blocks_lr_scale, cfg.head_blocks > 0))
                 if used and scale != 1.0} or None
    optimizer = torch.optim.Adam(parameter_groups(model, cfg.weight_decay, lr_scales), lr=cfg.lr, betas=(0.9, 0.999))
    if init is not None:
        def first_inputs() -> tuple[torch.Tensor, ...]:
            g = sampler.batch(cfg.batch_size, device)["global"]
            return (g["input"], *_guide(model, g))

        load_init(model, cfg.init, first_inputs, init)
        if cfg.revive_channels:
            revived = revive_association_channels(model, first_inputs())
            print(f"uhrseg: revived association channels {revived or 'none (all in use)'}", file=sys.stderr)
    run = restore_run(state, model, optimizer, sampler.rng)
    model.train()

    def record(run: RunState) -> dict:
        return {"command": " ".join(sys.argv), "data": cfg.data, "iterations": run.step,
                "batch_size": cfg.batch_size, "crop": cfg.crop, "patch": cfg.patch,
                "wall_seconds": round(run.wall, 1), "hardware": hardware(device), "train_config": asdict(cfg)}

    loader = None
    if cfg.loader_workers:
        loader = BatchLoader(partial(_open_sampler, cfg.data, cfg.bsds500_root, sampling),
                             methodcaller("batch_arrays", cfg.batch_size), seed=cfg.seed, start_step=run.step,
                             workers=cfg.loader_workers)
    next_batch = ((lambda: batch_to_torch(loader.next(), device)) if loader is not None
                  else (lambda: sampler.batch(cfg.batch_size, device)))
    try:
        return training_loop(
            run_dir, run, model=model, optimizer=optimizer, rng=sampler.rng, train_config=asdict(cfg),
            iterations=cfg.iterations, stop_after=stop_after, lr_at=lambda step: learning_rate(cfg, step),
            losses_at=lambda: training_losses(model, next_batch(), cfg, teacher),
            validate=(lambda: validate(model, val_set, val_names, cfg.val_n_segments, device)) if val_names else None,
            score=lambda m: m["val_asa"] + m["val_br"],
            validation_record=lambda m: {"split": cfg.val, "images": len(val_names), "n_segments": cfg.val_n_segments,
                                         **m},
            record=record, val_every=cfg.val_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
            loss_keys=("total", "sem", "patch_sem", "sr", "ld", "kd"), val_keys=("val_asa", "val_br"), device=device,
            progress=progress, desc=f"train {cfg.model}")
    finally:
        if loader is not None:
            loader.close()


def _open_sampler(data: list[str], bsds500_root: str, sampling: SamplingConfig) -> TrainingSampler:
    """A worker's sampler (its generator is reseeded for every batch by the loader)."""
    return TrainingSampler([open_dataset(s, bsds500_root) for s in data], sampling)
