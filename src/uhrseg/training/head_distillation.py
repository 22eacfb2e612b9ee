"""A cheaper PCNet head, distilled from a trained PCNet (not in the paper).

On the CPU the head of ``pcnet-large.pt`` (sub-pixel conv, embedding, a 64-channel guide branch, three residual
blocks and the association conv, all at the output resolution) takes about 90 % of the network's time: about
31 k multiply-adds per output pixel, against a few k for the trunk, which runs at 1/16 of the pixels. A
student with a narrower guide branch and fewer head blocks (``NetConfig.guide_channels``, ``head_blocks``)
keeps the teacher's trunk, frozen, and learns to give the teacher's association map ``Q`` on unlabelled crops:

1. :func:`student_from_teacher` builds the student from the teacher's weights: the trunk, the sub-pixel conv,
   the embedding, the first ``head_blocks`` blocks and the association conv as they are; of the guide branch,
   the ``guide_channels`` first-conv channels whose weights in the second conv have the largest norm.
2. :class:`DistillationSampler` draws crops at the scales the inference pipeline runs at (a superpixel count
   drawn log-uniformly, the grid of :func:`uhrseg.inference.resize.output_grid`), with the network input made
   from the guide crop as in :func:`uhrseg.inference.resize.network_inputs`.
3. :func:`distill_head` minimises the mean per-pixel KL divergence from the teacher's ``Q`` to the student's
   (:func:`uhrseg.training.losses.association_distillation_loss`) with Adam and a half-cosine learning rate,
   in the shared resumable loop (:func:`uhrseg.training.common.training_loop`), validating the student's own
   labels (:func:`uhrseg.training.trainer.validate`).

Both networks stay in evaluation mode throughout, so the head's BatchNorm layers are the teacher's fixed affine
maps (folded into the convolutions on export).

The packaged ``pcnet.pt`` is such a student of ``pcnet-large.pt`` (16 guide channels, one head block, about 13 k
multiply-adds per output pixel; the recipe's defaults): on the 5K photograph at n = 5000 its network takes about
half the time, and on BSDS500 test at n = 600 the default pipeline scores as the teacher does (BR / BP / ASA
0.8792 / 0.1279 / 0.9657 against 0.8791 / 0.1282 / 0.9661), the network's own labels a little lower (BR 0.7972
against 0.8044). ``src/uhrseg/weights/README.md`` has the record.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ..datasets.readers import open_dataset
from ..inference.opencv_dnn import file_sha256
from ..inference.resize import resize_image
from ..models.checkpoint import load_model
from ..models.nets import PCNet
from .common import RunState, hardware, open_run, parameter_groups, restore_run, training_loop
from .config import HeadDistillConfig
from .losses import association_distillation_loss

__all__ = ["DistillationSampler", "HeadDistillConfig", "distill_head", "distillation_losses", "start_from_student",
           "student_from_teacher"]


def start_from_student(student: PCNet, init: PCNet, name: str) -> None:
    """Load the weights of ``init``, an earlier student of the same teacher, into ``student`` (made by
    :func:`student_from_teacher`), for another cycle of distillation (``HeadDistillConfig.init``).

    Raises
    ------
    ValueError
        If ``init``'s configuration (guide channels, head blocks, ...) is not the student's, or its trunk is not
        the teacher's bit for bit (the student's trunk stays frozen, so it would never become the teacher's).
        ``name`` (how the user gave ``init``) is in the message.
    """
    if init.config != student.config:
        raise ValueError(f"init {name}: a PCNet with {init.config.guide_channels} guide channels and "
                         f"{init.config.head_blocks} head blocks ({init.config}), not the student's "
                         f"{student.config.guide_channels} and {student.config.head_blocks} ({student.config})")
    mine, theirs = student.state_dict(), {k: v.detach().float().cpu() for k, v in init.state_dict().items()}
    if any(not torch.equal(mine[k], theirs[k]) for k in mine if k.startswith("trunk.")):
        raise ValueError(f"init {name}: its trunk is not the teacher's; start from a student of this teacher")
    student.load_state_dict(theirs)


def student_from_teacher(teacher: PCNet, guide_channels: int, head_blocks: int) -> PCNet:
    """A PCNet with ``teacher``'s trunk and a head of ``guide_channels`` and ``head_blocks``, started from the
    teacher's head weights (module docstring, step 1).

    Parameters
    ----------
    teacher : PCNet
        A guided PCNet (``config.guide``) with at least ``guide_channels`` guide channels and ``head_blocks``
        head blocks.
    guide_channels, head_blocks : int
        The student's ``NetConfig.guide_channels`` (>= 1) and ``NetConfig.head_blocks`` (>= 0).

    Returns
    -------
    PCNet
        On the CPU, in evaluation mode. With the teacher's sizes it computes the teacher's function (tested).

    Raises
    ------
    ValueError
        If the teacher is not a guided PCNet, or is narrower or shallower than the student.
    """
    cfg = teacher.config
    if teacher.name != "pcnet" or not cfg.guide:
        raise ValueError(f"the teacher must be a guided PCNet (NetConfig.guide), not a {teacher.name} with guide "
                         f"{cfg.guide}")
    if not 1 <= guide_channels <= cfg.guide_channels or not 0 <= head_blocks <= cfg.head_blocks:
        raise ValueError(f"the student's guide channels (1..{cfg.guide_channels}) and head blocks "
                         f"(0..{cfg.head_blocks}) must fit in the teacher's; got {guide_channels} and {head_blocks}")
    student = PCNet(replace(cfg, guide_channels=guide_channels, head_blocks=head_blocks))
    source = {k: v.detach().float().cpu() for k, v in teacher.state_dict().items()}
    strength = source["guide.2.weight"].pow(2).sum(dim=(0, 2, 3))  # per first-conv channel
    keep = torch.argsort(strength, descending=True)[:guide_channels].sort().values
    state = {}
    for key, value in student.state_dict().items():
        if key in ("guide.0.weight", "guide.0.bias"):
            state[key] = source[key][keep]
        elif key == "guide.2.weight":
            state[key] = source[key][:, keep]
        else:
            state[key] = source[key]  # every other tensor has the teacher's shape (blocks: the first ones)
    student.load_state_dict(state)
    return student.eval()


class DistillationSampler:
    """Unlabelled training crops at the scales of the inference pipeline (module docstring, step 2).

    Parameters
    ----------
    datasets : list
        Opened datasets (:func:`uhrseg.datasets.open_dataset`); only ``names`` and ``image(name)`` are used, one
        image read per crop (memory stays bounded by one image).
    cfg : HeadDistillConfig
        ``crop``, ``n_range``, ``oversegmentation``, ``max_scale``, ``data_weights``.
    cell_size, upscale : int
        Of the network (16 and 4 for PCNet).
    seed : int
        Seed of :attr:`rng` (saved with ``last.pt``).
    """

    def __init__(self, datasets: list, cfg: HeadDistillConfig, cell_size: int, upscale: int, seed: int = 0) -> None:
        self.datasets, self.cfg = datasets, cfg
        self.cell_size, self.upscale = cell_size, upscale
        weights = np.asarray(cfg.data_weights if cfg.data_weights is not None else [1.0] * len(datasets), float)
        self.weights = weights / weights.sum()
        self.rng = np.random.default_rng(seed)

    def scale_for(self, height: int, width: int, n_segments: float) -> float:
        """Output pixels per image pixel along a side for an ``height x width`` image at ``n_segments``: the
        pipeline's grid of ``oversegmentation * n_segments`` cells of ``cell_size`` squared pixels, at most
        ``max_scale`` and at least what the crop needs."""
        cfg = self.cfg
        scale = math.sqrt(cfg.oversegmentation * n_segments * self.cell_size**2 / (height * width))
        return max(min(scale, cfg.max_scale), cfg.crop / min(height, width))

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One crop: ``(input, guide)``, ``(crop / upscale, crop / upscale, 3)`` and ``(crop, crop, 3)`` float32
        RGB in [0, 1], randomly flipped."""
        rng, c = self.rng, self.cfg.crop
        dataset = self.datasets[rng.choice(len(self.datasets), p=self.weights)]
        image = dataset.image(dataset.names[rng.integers(len(dataset.names))])
        h, w = image.shape[:2]
        lo, hi = (math.log(v) for v in self.cfg.n_range)
        scale = self.scale_for(h, w, math.exp(rng.uniform(lo, hi)))
        rh, rw = min(h, math.ceil(c / scale)), min(w, math.ceil(c / scale))  # the crop's region of the image
        y, x = rng.integers(h - rh + 1), rng.integers(w - rw + 1)
        guide = resize_image(image[y : y + rh, x : x + rw], c, c)
        if rng.random() < 0.5:
            guide = guide[:, ::-1]
        if rng.random() < 0.5:
            guide = guide[::-1]
        guide = np.ascontiguousarray(guide)
        return resize_image(guide, c // self.upscale, c // self.upscale), guide

    def batch(self, size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` crops as ``(B, 3, crop / upscale, crop / upscale)`` inputs and ``(B, 3, crop, crop)`` guides,
        float32 on ``device``."""
        inputs, guides = zip(*(self.sample() for _ in range(size)))

        def stack(arrays):
            return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(device)

        return stack(inputs), stack(guides)


def distillation_losses(student: PCNet, teacher: PCNet, inputs: torch.Tensor, guides: torch.Tensor
                        ) -> dict[str, torch.Tensor]:
    """One batch's loss terms: ``total`` (= ``kd``, the KL divergence in nats per pixel) and ``agree``, the
    fraction of output pixels whose most likely cell is the teacher's (logged, not minimised).

    ``inputs`` ``(B, 3, h, w)`` and ``guides`` ``(B, 3, 4h, 4w)`` float32 RGB in [0, 1]. The trunk runs once,
    without gradients (it is the teacher's, frozen)."""
    with torch.no_grad():
        features = teacher.decode(inputs)
        target = torch.softmax(teacher.assoc_logits(features, guides), dim=1)
    logits = student.assoc_logits(features, guides)
    kd = association_distillation_loss(logits, target)
    with torch.no_grad():
        agree = (logits.argmax(dim=1) == target.argmax(dim=1)).float().mean()
    return {"total": kd, "kd": kd, "agree": agree}


def distill_head(cfg: HeadDistillConfig, run_dir: str | os.PathLike, progress: bool = True,
                 stop_after: int | None = None) -> Path:
    """Distil ``cfg.teacher``'s head into a cheaper one (or resume); returns ``best.pt`` (``last.pt`` without
    validation).

    Parameters
    ----------
    cfg : HeadDistillConfig
        The recipe; when ``run_dir/last.pt`` exists its stored recipe is used and the run resumes.
    run_dir : path-like
        Run folder: ``last.pt``, ``best.pt`` (a PCNet checkpoint for ``--weights pcnet=FILE``), ``log.csv``,
        ``curves.png``.
    progress : bool
        Show a progress bar (loss, iterations per minute, ETA).
    stop_after : int, optional
        Stop after this many iterations in this call (resumable).

    Raises
    ------
    ValueError
        As :func:`student_from_teacher` and :func:`start_from_student`, the run folder cannot be made, or its
        ``last.pt`` is a run of another trainer.
    uhrseg.datasets.DatasetError
        If a dataset cannot be opened.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        If the teacher is missing, unreadable or not a PCNet.
    """
    from ..inference.predictor import _weights_file, resolve_device  # a packaged name or a file, as --weights
    from .trainer import validate

    run_dir, state = open_run(run_dir)
    if state is not None:
        if "n_range" not in state["train_config"]:  # another trainer's run (its recipe has no such field)
            raise ValueError(f"{run_dir}: its last.pt is a run of another trainer, not of pcnet-head; use a new "
                             "run folder")
        cfg = HeadDistillConfig.from_dict(state["train_config"])
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    teacher_path = _weights_file(cfg.teacher)
    teacher = load_model(teacher_path, expected="pcnet").float().eval()
    student = student_from_teacher(teacher, cfg.guide_channels, cfg.head_blocks)
    starting_point = None  # recorded; a resumed run's weights come from its last.pt, its record too
    if cfg.init is not None and state is None:
        init_path = _weights_file(cfg.init)
        start_from_student(student, load_model(init_path, expected="pcnet"), str(cfg.init))
        starting_point = {"init": cfg.init, "sha256": file_sha256(init_path)}
    elif state is not None:
        starting_point = state.get("training", {}).get("starting_point")
    teacher.requires_grad_(False).to(device)
    student.trunk.requires_grad_(False)
    student.to(device)
    sampler = DistillationSampler([open_dataset(s, cfg.bsds500_root) for s in cfg.data], cfg, student.cell_size,
                                  student.upscale, seed=cfg.seed)
    val_set = open_dataset(cfg.val, cfg.bsds500_root) if cfg.val else None
    val_names = val_set.names[: cfg.val_images] if val_set is not None else []
    groups = []
    for group in parameter_groups(student, cfg.weight_decay):
        group["params"] = [p for p in group["params"] if p.requires_grad]  # the head's
        if group["params"]:
            groups.append(group)
    optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    run = restore_run(state, student, optimizer, sampler.rng)
    student.eval()  # the teacher's BatchNorm statistics, as fixed affine maps

    def record(run: RunState) -> dict:
        return {"command": " ".join(sys.argv), "distilled_from": str(teacher_path),
                **({"starting_point": starting_point} if starting_point else {}),
                "teacher_training": getattr(teacher, "training_record", None), "data": cfg.data,
                "iterations": run.step, "batch_size": cfg.batch_size, "crop": cfg.crop,
                "wall_seconds": round(run.wall, 1), "hardware": hardware(device), "train_config": asdict(cfg)}

    return training_loop(
        run_dir, run, model=student, optimizer=optimizer, rng=sampler.rng, train_config=asdict(cfg),
        iterations=cfg.iterations, stop_after=stop_after,
        lr_at=lambda step: cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.iterations)),
        losses_at=lambda: distillation_losses(student, teacher, *sampler.batch(cfg.batch_size, device)),
        validate=(lambda: validate(student, val_set, val_names, cfg.val_n_segments, device)) if val_names else None,
        score=lambda m: m["val_asa"] + m["val_br"],
        validation_record=lambda m: {"split": cfg.val, "images": len(val_names), "n_segments": cfg.val_n_segments,
                                     **m},
        record=record, val_every=cfg.val_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
        loss_keys=("total", "agree"), val_keys=("val_asa", "val_br"), device=device, progress=progress,
        desc="distil pcnet head")
