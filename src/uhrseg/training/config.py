"""The recipes of the training runs: :class:`TrainConfig` (PCNet, SCN), :class:`SemanticTrainConfig` (ISDNet,
the deep path, the patch segmenter) and :class:`MagNetTrainConfig` (MagNet's refinement module).

Plain dataclasses, stored in every checkpoint (``asdict`` / ``from_dict``), that import neither torch nor the
trainers, so that ``uhrseg train --help`` can print their defaults without loading torch (0.1 s against 2 s).
Their checks run at construction; the device-dependent ones (bfloat16 on an older GPU) run when training
starts (:func:`uhrseg.training.common.check_precision`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..defaults import check_precision_name

__all__ = ["HeadDistillConfig", "MagNetTrainConfig", "OPTIMIZERS", "PRECISIONS", "SemanticTrainConfig",
           "TrainConfig"]

#: Arithmetic of the training steps: ``fp32`` everywhere, or ``bf16`` autocast (convolutions and matrix products
#: in bfloat16, weights, optimiser and losses in float32; :func:`uhrseg.training.common.mixed_precision`).
PRECISIONS = ("fp32", "bf16")

#: Optimisers of the segmentation and MagNet runs.
OPTIMIZERS = ("adamw", "sgd")


class _Recipe:
    """What the recipes share: reading one back from the dictionary stored in a checkpoint."""

    @classmethod
    def from_dict(cls, d: dict):
        """The recipe stored as ``asdict(recipe)`` in a checkpoint; keys that are not fields (from another version
        of uhrseg) are ignored, and fields missing from ``d`` take their defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def _check_ranges(self, positive: tuple[str, ...] = (), nonnegative: tuple[str, ...] = (),
                      at_least_one: tuple[str, ...] = ()) -> None:
        """Check the named fields: ``positive`` finite and > 0, ``nonnegative`` finite and >= 0 (NaN fails both:
        a NaN loss weight trained on NaN losses, and a NaN learning-rate scale left a branch out of the
        optimiser), ``at_least_one`` >= 1 (0 steps between validations or learning-rate steps divided by zero).
        The same for every recipe: ``data`` (not empty), ``iterations`` and ``batch_size`` (>= 1), ``lr`` and
        ``weight_decay`` (finite, >= 0) and the steps between checkpoints, validations and log lines, and
        ``scale_range`` where the recipe has one.

        Raises
        ------
        ValueError
            Naming the first field out of range and its value (``data``: an empty list).
        """
        if not self.data:
            raise ValueError(f"data must name at least one training dataset, got {self.data!r}")
        for name in positive:
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", *nonnegative):  # lr 0: the weights stay (tests use it)
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for name in ("iterations", "batch_size", "checkpoint_every", "val_every", "log_every", *at_least_one):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:  # NumPy's generator said only "expected non-negative integer"
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        scale_range = getattr(self, "scale_range", None)
        if scale_range is not None and not (len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1] < math.inf):
            raise ValueError(f"scale_range must be two finite factors 0 < low <= high, got {scale_range}")


@dataclass
class TrainConfig(_Recipe):
    """Everything a training run depends on (defaults: the paper's recipe for PCNet, pcnet.md s. 3).

    Loss weights follow the reference code: global = ``sp_weight (sem + pos) + ld_weight L_D + sr_weight SR``,
    patch = ``sp_weight (sem + pos) + sr_weight SR``, total = global + ``patch_weight`` patch.
    SCN trains with the same code path with ``dpc``, ``sr`` and ``ld`` forced off. ``init`` names a checkpoint
    of the same model whose weights the run starts from (fine-tuning); it is read only at step 0, by
    :func:`uhrseg.training.trainer.load_init`. ``head_norm`` builds PCNet with BatchNorm in its 4x head (``NetConfig.head_norm``; forced
    off for SCN); a run whose ``init`` has those norms gets them without asking (:func:`uhrseg.training.trainer.train`); ``guide`` likewise
    builds PCNet whose head also sees the image at the output resolution (``NetConfig.guide``), and
    ``guide_lr_scale`` multiplies the learning rate of that guide branch (new layers on trained ones);
    ``guide_channels`` is the width of the guide branch's first conv (``NetConfig.guide_channels``; a run keeps
    a wider init's, and widens a narrower one as :func:`uhrseg.training.trainer.load_init` says); ``head_blocks`` adds residual blocks
    to PCNet's head (``NetConfig.head_blocks``; a run keeps its init's blocks), whose learning rate
    ``head_blocks_lr_scale`` multiplies. ``teacher`` names a trained SCN checkpoint (PCNet only; not in the
    paper): both branches then also add ``teacher_weight`` times the mean per-pixel KL
    divergence from the teacher's ``Q`` on the same crop to the student's
    (:func:`uhrseg.training.losses.association_distillation_loss`; the patch's inside ``patch_weight``).
    ``teacher_refine`` first moves the teacher's ``Q`` to its full-resolution refined boundaries (the package's
    default refinement; :func:`uhrseg.training.refined_teacher.refined_association`).
    ``revive_channels`` restarts, after loading ``init``, the channels of ``Q`` that the init no longer uses
    (:func:`uhrseg.training.revive.revive_association_channels`). ``precision``
    (``"fp32"`` or ``"bf16"``) is the arithmetic of the forward pass
    (:func:`uhrseg.training.common.mixed_precision`). ``loader_workers`` > 0 draws the batches in that many
    worker processes, the batch of step ``t`` from a generator seeded with ``[seed, t]`` (another stream than
    the in-process sampler's of ``0``; :mod:`uhrseg.training.loader`).
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
    scale_range: tuple[float, float] | None = None
    crop: int = 512
    patch: int = 512
    dpc: bool = True
    sr: bool = True
    ld: bool = True
    binary_mask: bool = True
    head_norm: bool = False
    guide: bool = False
    guide_lr_scale: float = 1.0
    guide_channels: int = 8
    head_blocks: int = 0
    head_blocks_lr_scale: float = 1.0
    ld_window: int = 5
    init: str | None = None
    teacher: str | None = None
    revive_channels: bool = False
    teacher_weight: float = 300.0
    teacher_refine: bool = False
    sp_weight: float = 0.005
    position_weight: float = 0.003
    sr_weight: float = 1.0
    ld_weight: float = 0.005
    patch_weight: float = 0.5
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 100
    val_every: int = 500
    log_every: int = 10
    loader_workers: int = 0

    def __post_init__(self) -> None:
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if self.model == "scn":
            self.dpc = self.sr = self.ld = self.head_norm = self.guide = False
            self.head_blocks = 0
        if self.scale_range is not None:  # a list after a checkpoint's JSON-like round trip
            self.scale_range = tuple(float(v) for v in self.scale_range)
        if self.head_blocks < 0:
            raise ValueError(f"head_blocks must be >= 0, got {self.head_blocks}")
        if self.guide_channels < 1:
            raise ValueError(f"guide_channels must be >= 1, got {self.guide_channels}")
        if self.teacher is not None and self.model != "pcnet":
            raise ValueError(f"teacher applies to pcnet only, not {self.model}")
        if self.revive_channels and not self.init:
            raise ValueError("revive_channels needs init (the weights whose unused channels are restarted)")
        if self.teacher_refine and self.teacher is None:
            raise ValueError("teacher_refine needs teacher (the SCN whose refined Q is the target)")
        self._check_ranges(positive=("guide_lr_scale", "head_blocks_lr_scale", "lr_gamma"),
                           nonnegative=("teacher_weight", "sp_weight", "position_weight", "sr_weight", "ld_weight",
                                        "patch_weight"),
                           at_least_one=("lr_step", "val_images", "val_n_segments", "global_resize"))
        check_precision_name(self.precision, PRECISIONS)


@dataclass
class SemanticTrainConfig(_Recipe):
    """Everything a segmentation training run depends on.

    The defaults are a CPU recipe; the packaged ISDNet weights used them with 4000 iterations of 512 crops
    (``docs/training.md``). The paper's GPU recipe for ISDNet is SGD lr 0.01,
    momentum 0.9, weight decay 5e-4, poly 0.9, 80k iterations, 8 crops of 1224 (``--optimizer sgd --lr 0.01
    --weight-decay 5e-4 --iterations 80000 --batch-size 8 --crop 1216 --width 64``).

    Loss: ``CE(logits) + deep_weight CE(deep) + aux_weight CE(aux) + sr_weight L_SR + sd_weight L_SD``, each
    term present when its part is on (``CE(deep)`` is the deep path's own prediction in ISDNet, the first head of
    its cascade). The cross-entropy reads the labels at every ``label_stride``-th pixel (2: a quarter of the
    cost, still finer than the networks' output stride of 8), the auxiliary one at twice that. The architecture
    switches (``shallow``, ``fusion``, ``aux``, ``sr``, ``sd``, ``deep_scale``, ``width``) are the ablations; ``sr``
    and ``sd`` are the losses (the SR decoder exists when either is on). ``precision`` (``"fp32"`` or ``"bf16"``)
    is the arithmetic of the forward pass (:func:`uhrseg.training.common.mixed_precision`).
    """

    model: str = "isdnet"
    data: list[str] = field(default_factory=lambda: ["../shared/datasets/semantic-drone/train"])
    val: str | None = None
    val_images: int = 20
    iterations: int = 3000
    batch_size: int = 4
    crop: int = 768
    scale_range: tuple[float, float] = (0.5, 2.0)
    flips: bool = True
    rotate: bool = True
    photometric: bool = True
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    warmup: int = 100
    ohem: bool = True
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000
    label_stride: int = 2
    aux_weight: float = 0.4
    deep_weight: float = 1.0
    sr_weight: float = 0.1
    sd_weight: float = 1.0
    width: int = 32
    deep_scale: int = 4
    shallow: bool = True
    fusion: str = "raf"
    aux: bool = True
    sr: bool = True
    sd: bool = True
    init: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    checkpoint_every: int = 50
    val_every: int = 250
    log_every: int = 10

    def __post_init__(self) -> None:
        self.scale_range = tuple(float(v) for v in self.scale_range)
        if self.model == "deeppath":
            self.shallow = self.sr = self.sd = False
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        self._check_ranges(positive=("poly_power",),
                           nonnegative=("momentum", "ohem_threshold", "aux_weight", "deep_weight", "sr_weight",
                                        "sd_weight"),
                           at_least_one=("val_images", "width", "deep_scale", "label_stride"))
        check_precision_name(self.precision, PRECISIONS)

    def architecture(self) -> dict:
        """Config overrides of the network (see :class:`uhrseg.models.SegmenterConfig`)."""
        arch = {"width": self.width, "deep_scale": self.deep_scale, "aux_head": self.aux}
        if self.model == "isdnet":
            arch.update(shallow=self.shallow, fusion=self.fusion, sr_decoder=self.sr or self.sd)
        return arch


@dataclass
class MagNetTrainConfig(_Recipe):
    """Everything a refinement-module run depends on (stored in its checkpoints).

    Attributes
    ----------
    backbone : str
        Checkpoint of the frozen backbone (a file, or a packaged name such as ``drone`` with
        ``backbone_model``).
    backbone_model : str
        The backbone's model name (``isdnet`` or ``deeppath``), for packaged names.
    n_scales : int
        Scales of the loop the module is trained for (the coarse input is at ``2^-(n_scales - 1)``).
    fine_range : (float, float)
        Range of the fine crop's scale factor (default: twice the coarse factor .. 1).
    """

    backbone: str = "drone"
    backbone_model: str = "isdnet"
    data: list[str] = field(default_factory=lambda: ["../shared/datasets/semantic-drone/train"])
    val: str | None = None
    val_images: int = 10
    iterations: int = 1500
    batch_size: int = 8
    n_scales: int = 3
    fine_range: tuple[float, float] | None = None
    flips: bool = True
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    poly_power: float = 0.9
    warmup: int = 50
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100_000
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 50
    val_every: int = 250
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.n_scales < 2:
            raise ValueError(f"n_scales must be >= 2, got {self.n_scales}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.fine_range is None:
            self.fine_range = (2.0 ** -(self.n_scales - 2), 1.0)
        self.fine_range = tuple(float(v) for v in self.fine_range)
        if not 0 < self.fine_range[0] <= self.fine_range[1] <= 1:
            raise ValueError(f"fine_range must satisfy 0 < low <= high <= 1, got {self.fine_range}")
        self._check_ranges(positive=("poly_power",), nonnegative=("momentum", "ohem_threshold"),
                           at_least_one=("val_images",))


@dataclass
class HeadDistillConfig(_Recipe):
    """Everything a head-distillation run depends on (:func:`uhrseg.training.head_distillation.distill_head`).

    The student is a PCNet with the teacher's trunk (frozen) and a cheaper head: ``guide_channels`` in the guide
    branch's first conv and ``head_blocks`` residual blocks (``NetConfig``). It starts from the teacher's head
    (:func:`uhrseg.training.head_distillation.student_from_teacher`) and learns to give the teacher's association
    map ``Q``: the loss is the mean per-pixel KL divergence from the teacher's ``Q`` to the student's
    (:func:`uhrseg.training.losses.association_distillation_loss`). With ``init`` (a packaged name or a file: a
    student of this teacher, e.g. an earlier run's ``best.pt`` or the packaged ``pcnet``) the student starts from
    those weights instead, for another cycle of distillation. No labels are needed, so ``data`` may hold
    any labelled dataset (``bsds500:SPLIT``, folders with ``images/`` and ``labels/``, DeepGlobe splits; their
    labels are not read). ``data_weights`` (one per entry; default equal) is how often each is drawn.

    Each crop is ``crop`` x ``crop`` output pixels of an image resized as the inference pipeline would resize
    it for a superpixel count drawn log-uniformly in ``n_range`` with ``oversegmentation`` times more grid cells
    (so the student sees the scales it will run at), at most ``max_scale`` times the image's size; the network
    input is that crop area-averaged by 4. The learning rate falls from ``lr`` to 0 on a half cosine.
    Validation (``val``, the first ``val_images`` images) is the network's own labels' ASA and BR at
    ``val_n_segments`` (:func:`uhrseg.training.trainer.validate`); ``best.pt`` has the highest ASA + BR.
    """

    teacher: str = "pcnet-large"
    init: str | None = None
    guide_channels: int = 16
    head_blocks: int = 1
    data: list[str] = field(default_factory=lambda: ["bsds500:train", "../shared/datasets/semantic-drone/train",
                                                     "../shared/datasets/deepglobe/train"])
    data_weights: list[float] | None = None
    bsds500_root: str = "../shared/datasets/BSDS500"
    val: str | None = "bsds500:val"
    val_images: int = 20
    val_n_segments: int = 600
    iterations: int = 1200
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    n_range: tuple[float, float] = (200.0, 5000.0)
    oversegmentation: float = 1.5
    max_scale: float = 2.0
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    val_every: int = 400
    log_every: int = 10

    def __post_init__(self) -> None:
        self.n_range = tuple(float(v) for v in self.n_range)
        if self.data_weights is not None:
            self.data_weights = [float(v) for v in self.data_weights]
            if len(self.data_weights) != len(self.data) or not all(0 <= v < math.inf for v in self.data_weights) \
                    or sum(self.data_weights) <= 0:
                raise ValueError(f"data_weights must be {len(self.data)} finite weights >= 0 (one per data "
                                 f"entry) with a positive sum, got {self.data_weights}")
        if self.head_blocks < 0:
            raise ValueError(f"head_blocks must be >= 0, got {self.head_blocks}")
        if self.crop < 64 or self.crop % 64:  # PCNet's input, a quarter of it, must be a multiple of 16
            raise ValueError(f"crop must be a positive multiple of 64 output pixels, got {self.crop}")
        if not (len(self.n_range) == 2 and 1 <= self.n_range[0] <= self.n_range[1] < math.inf):
            raise ValueError(f"n_range must be two finite counts 1 <= low <= high, got {self.n_range}")
        if not 1 <= self.oversegmentation < math.inf:  # NaN too
            raise ValueError(f"oversegmentation must be finite and >= 1, got {self.oversegmentation}")
        self._check_ranges(positive=("max_scale",), at_least_one=("val_images", "val_n_segments", "guide_channels"))
