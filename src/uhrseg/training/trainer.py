"""Training loop for PCNet and SCN: Adam with the paper's schedule, resumable checkpoints, validation, logs.

Reads top to bottom: :class:`TrainConfig` (a dataclass, stored in every checkpoint), :func:`learning_rate`
(the step schedule), :func:`training_losses` (one batch -> weighted loss terms), :func:`validate` (ASA and BR
at a fixed superpixel count) and :func:`train` (the loop).

Run folder ``OUT``: ``last.pt`` (model, optimiser, step, RNG states, log; written every ``checkpoint_every``
steps and at the end, atomically), ``best.pt`` (the model with the best validation ASA + BR, in the packaged
weights format), ``log.csv`` and ``curves.png``. Starting again on the same folder resumes from ``last.pt``.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..datasets.readers import open_dataset
from ..grid.connectivity import connectivity_bounds, enforce_connectivity
from ..inference.network import network_labels
from ..memory import peak_rss_bytes
from ..metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision
from ..models.checkpoint import load_model, read_checkpoint, save_checkpoint
from ..models.nets import SuperpixelNet, build_model
from .losses import boundary_sr_loss, local_discrimination_loss, superpixel_loss
from .sampling import SamplingConfig, TrainingSampler

__all__ = ["TrainConfig", "learning_rate", "train", "training_losses", "validate"]


@dataclass
class TrainConfig:
    """Everything a training run depends on (defaults: the paper's recipe for PCNet, pcnet.md s. 3).

    Loss weights follow the reference code: global = ``sp_weight (sem + pos) + ld_weight L_D + sr_weight SR``,
    patch = ``sp_weight (sem + pos) + sr_weight SR``, total = global + ``patch_weight`` patch.
    SCN trains with the same code path with ``dpc``, ``sr`` and ``ld`` forced off. ``init`` names a checkpoint
    of the same model whose weights the run starts from (fine-tuning); it is read only at step 0.
    """

    model: str = "pcnet"
    data: list[str] = field(default_factory=lambda: ["bsds500:train", "bsds500:val"])
    bsds500_root: str = "../shared/datasets/BSDS500"
    val: str | None = "bsds500:val"
    val_images: int = 20
    val_n_segments: int = 600
    iterations: int = 4000
    batch_size: int = 8
    lr: float = 5e-5
    lr_step: int = 2000
    lr_gamma: float = 0.1
    weight_decay: float = 4e-4
    global_resize: int = 768
    crop: int = 512
    patch: int = 512
    dpc: bool = True
    sr: bool = True
    ld: bool = True
    binary_mask: bool = True
    ld_window: int = 5
    init: str | None = None
    sp_weight: float = 0.005
    position_weight: float = 0.003
    sr_weight: float = 1.0
    ld_weight: float = 0.005
    patch_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    val_every: int = 500
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.model == "scn":
            self.dpc = self.sr = self.ld = False
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError("iterations and batch_size must be >= 1")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Step schedule: ``lr * gamma ** (step // lr_step)`` (paper: 5e-5, divided by 10 every 2k iterations)."""
    return cfg.lr * cfg.lr_gamma ** (step // cfg.lr_step)


def training_losses(model: SuperpixelNet, batch: dict, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Forward the global (and patch) branch and return every loss term plus ``total``.

    Returns
    -------
    dict of str to scalar torch.Tensor
        ``sem``, ``pos`` (global superpixel terms), ``sr``, ``ld``, ``patch_sem``, ``patch_pos``, ``patch_sr``
        (those that apply) and ``total`` (weighted as in :class:`TrainConfig`).
    """
    out: dict[str, torch.Tensor] = {}
    g = batch["global"]
    res = model(g["input"])
    out["sem"], out["pos"] = superpixel_loss(res.assoc, g["labels"], model.cell_size, cfg.position_weight)
    total = cfg.sp_weight * (out["sem"] + out["pos"])
    if cfg.sr and res.reconstruction is not None:
        out["sr"] = boundary_sr_loss(res.reconstruction, g["target"], g["band"])
        total = total + cfg.sr_weight * out["sr"]
    if cfg.ld and res.embedding is not None:
        out["ld"] = local_discrimination_loss(res.embedding, g["windows"], g["window_mask"])
        total = total + cfg.ld_weight * out["ld"]
    if cfg.dpc and "patch" in batch:
        p = batch["patch"]
        pres = model(p["input"])
        out["patch_sem"], out["patch_pos"] = superpixel_loss(pres.assoc, p["labels"], model.cell_size,
                                                             cfg.position_weight)
        patch = cfg.sp_weight * (out["patch_sem"] + out["patch_pos"])
        if cfg.sr and pres.reconstruction is not None:
            out["patch_sr"] = boundary_sr_loss(pres.reconstruction, p["target"], p["band"])
            patch = patch + cfg.sr_weight * out["patch_sr"]
        total = total + cfg.patch_weight * patch
    out["total"] = total
    return out


def validate(model: SuperpixelNet, dataset, names: list[str], n_segments: int, device: torch.device) -> dict:
    """Mean ASA and BR (benchmark tolerance) over all ground truths of ``names`` at ``n_segments``."""
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


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _hardware(device: torch.device) -> str:
    cpu = f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return cpu


def _write_log(rows: list[dict], run_dir: Path) -> None:
    if not rows:
        return
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    tmp = run_dir / "log.csv.part"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, run_dir / "log.csv")
    _plot_curves(rows, run_dir / "curves.png")


def _plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in rows if "total" in r]
    for key in ("total", "sem", "patch_sem", "sr", "ld"):
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("symlog")
    axes[0].legend(fontsize=8)
    val = [r for r in rows if "val_asa" in r]
    for key in ("val_asa", "val_br"):
        if val:
            axes[1].plot([r["step"] for r in val], [r[key] for r in val], "o-", label=key)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("validation")
    if val:
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def train(cfg: TrainConfig, run_dir: str | os.PathLike, progress: bool = True, stop_after: int | None = None) -> Path:
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

    Raises
    ------
    uhrseg.datasets.DatasetError
        If a dataset cannot be opened.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If ``cfg.init`` is missing, unreadable or holds another model.
    """
    from ..inference.predictor import resolve_device

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.pt"
    state = read_checkpoint(last) if last.is_file() else None
    if state is not None:
        cfg = TrainConfig.from_dict(state["train_config"])
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    sampling = SamplingConfig(global_resize=cfg.global_resize, crop=cfg.crop, patch=cfg.patch,
                              upscale=model.upscale, dpc=cfg.dpc, binary_mask=cfg.binary_mask,
                              ld_window=cfg.ld_window if cfg.ld else 0)
    sampler = TrainingSampler([open_dataset(s, cfg.bsds500_root) for s in cfg.data], sampling, seed=cfg.seed)
    val_set = open_dataset(cfg.val, cfg.bsds500_root) if cfg.val else None
    val_names = val_set.names[: cfg.val_images] if val_set is not None else []
    optimizer = torch.optim.Adam(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999))
    step, log, best, wall = 0, [], -math.inf, 0.0
    if state is None and cfg.init:
        model.load_state_dict(load_model(cfg.init, expected=cfg.model).state_dict())
    if state is not None:
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        step, log, best, wall = state["step"], list(state["log"]), state["best_score"], state["wall_seconds"]
        sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
    model.train()

    def record(extra: dict | None = None) -> dict:
        rec = {"command": " ".join(sys.argv), "data": cfg.data, "iterations": step, "batch_size": cfg.batch_size,
               "crop": cfg.crop, "patch": cfg.patch, "wall_seconds": round(wall, 1), "hardware": _hardware(device),
               "train_config": asdict(cfg)}
        rec.update(extra or {})
        return rec

    def save_last() -> None:
        save_checkpoint(last, model, training=record(), extra={
            "optimizer": optimizer.state_dict(), "step": step, "log": log, "best_score": best,
            "wall_seconds": wall, "sampler_rng": sampler.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(), "train_config": asdict(cfg)})
        _write_log(log, run_dir)

    end = cfg.iterations if stop_after is None else min(cfg.iterations, step + stop_after)
    bar = tqdm(total=cfg.iterations, initial=step, disable=not progress, unit="it", desc=f"train {cfg.model}")
    window_start, window_steps = time.perf_counter(), 0
    while step < end:
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        batch = sampler.batch(cfg.batch_size, device)
        losses = training_losses(model, batch, cfg)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        step += 1
        wall += time.perf_counter() - t0
        window_steps += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            elapsed = time.perf_counter() - window_start
            row = {"step": step, "lr": learning_rate(cfg, step - 1),
                   "it_per_min": round(60 * window_steps / max(elapsed, 1e-9), 2),
                   "peak_rss_mb": round(peak_rss_bytes() / 2**20)}
            if device.type == "cuda":
                row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
            row.update({k: round(float(v.detach()), 5) for k, v in losses.items()})
            log.append(row)
            bar.set_postfix(loss=f"{row['total']:.3f}", it_min=row["it_per_min"])
            window_start, window_steps = time.perf_counter(), 0
        if val_names and (step % cfg.val_every == 0 or step == cfg.iterations):
            metrics = validate(model, val_set, val_names, cfg.val_n_segments, device)
            log.append({"step": step, **metrics})
            score = metrics["val_asa"] + metrics["val_br"]
            if score > best:
                best = score
                save_checkpoint(run_dir / "best.pt", model, training=record({"validation": {
                    "split": cfg.val, "images": len(val_names), "n_segments": cfg.val_n_segments, **metrics}}))
        if step % cfg.checkpoint_every == 0 or step == end:
            save_last()
    bar.close()
    if not (run_dir / "best.pt").is_file() and step >= cfg.iterations:
        save_checkpoint(run_dir / "best.pt", model, training=record())
    return run_dir / "best.pt" if (run_dir / "best.pt").is_file() else last
