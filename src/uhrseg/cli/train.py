"""``uhrseg train``: train a superpixel network (PCNet, SCN), a segmentation network (ISDNet, the deep path, a
multi-scale patch segmenter) or MagNet's refinement module, resumable, on CPU or CUDA."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import UhrsegError
from ..memory import tune_allocator
from ..training.config import HeadDistillConfig, MagNetTrainConfig, SemanticTrainConfig, TrainConfig
from .common import folder_path

DESCRIPTION = """\
Train a network. OUT receives last.pt (resumable: run the same command again after an
interruption), best.pt (best validation; usable with --weights), log.csv and curves.png.

Superpixels: pcnet (1/4-resolution input, DPC branch, SR head, local discrimination loss) or
scn (full-resolution input, without DPC, SR and L_D), on BSDS500 or folders of images/ +
labels/. Defaults are the paper's recipe (batch 8, 512 crops, 4k iterations, Adam 5e-5, /10
every 2k); on a CPU use e.g. --crop 256 --patch 256 --global-resize 384.

Semantic segmentation: isdnet (deep path on the image at 1/4, shallow path on its Laplacian
residuals at full resolution, relation-aware fusion, SR and structure-distillation losses) or
deeppath (the deep path alone: the 1/4 baseline, or with --deep-scale 1 the network of the
sliding-window comparator), on folders of images/ + labels/ + class_dict.csv (Semantic Drone
layout) or images/ + masks/ (DeepGlobe). The class table travels into the checkpoint.
Defaults: AdamW 1e-3, poly 0.9, 3000 iterations of 4 crops of 768, scale 0.5-2, flips,
rotations, photometric jitter, OHEM cross-entropy. The packaged weights' CPU recipe is those
with --iterations 4000 --crop 512 (about an hour on 2 cores, see docs/training.md). The
paper's GPU recipe: --optimizer sgd --lr 0.01
--weight-decay 5e-4 --iterations 80000 --batch-size 8 --crop 1216 --width 64.

segmenter: a patch backbone for MagNet, i.e. an isdnet trained over the scales MagNet
visits (--scale-range 0.25,2.0 unless given).

pcnet-head: a cheaper head for a trained guided PCNet (--teacher, default the packaged
pcnet-large), distilled on unlabelled crops at the scales inference runs at: the teacher's trunk,
frozen, and a head of --guide-channels (default 16) and --head-blocks (default 1) that learns
the teacher's association map Q (per-pixel KL), started from the teacher's head (or with
--init from an earlier student of the same teacher, e.g. pcnet, for another cycle). Defaults:
1200 iterations of 8 crops of 256, Adam 1e-3 on a half cosine, on BSDS500 train, Semantic
Drone train and DeepGlobe train (about half an hour on 2 CPU cores).

magnet: MagNet's refinement module over a frozen backbone (--backbone: a checkpoint file, or
a packaged name such as drone with --backbone-model isdnet); coarse whole-image prediction
plus a fine crop at a random finer scale, OHEM cross-entropy. The checkpoint holds backbone
and module, for uhrseg segment --model magnet|magnet-fast --weights FILE."""

SUPERPIXEL_MODELS = ("pcnet", "scn")
DISTILL_MODELS = ("pcnet-head",)
SEGMENTATION_MODELS = ("isdnet", "deeppath", "segmenter")
MAGNET_MODELS = ("magnet",)


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    """Register the ``train`` sub-command."""
    d, s = TrainConfig(), SemanticTrainConfig()
    p = subparsers.add_parser("train", help=help_text, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=SUPERPIXEL_MODELS + DISTILL_MODELS + SEGMENTATION_MODELS + MAGNET_MODELS)
    p.add_argument("--data", metavar="LIST",
                   help="comma-separated datasets: folders (images/ + labels/, or DeepGlobe images/ + masks/), or "
                        f"bsds500:SPLIT for superpixels (default {','.join(d.data)} for pcnet/scn)")
    p.add_argument("--val", metavar="SPEC",
                   help="validation dataset, 'none' to skip (default bsds500:val for pcnet/scn, none otherwise)")
    p.add_argument("--val-images", type=int, metavar="N",
                   help=f"validate on the first N images (default {d.val_images}; "
                        f"{MagNetTrainConfig.val_images} for magnet)")
    p.add_argument("-o", "--out", type=folder_path, required=True, metavar="DIR", help="run folder")
    p.add_argument("--iterations", type=int, metavar="N", help=f"(default {d.iterations} / {s.iterations})")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"(default {d.batch_size} / {s.batch_size})")
    p.add_argument("--lr", type=float, help=f"learning rate (default {d.lr} / {s.lr})")
    p.add_argument("--weight-decay", type=float, metavar="W",
                   help=f"the optimiser's weight decay (default {d.weight_decay:g} for pcnet and scn, "
                        f"{HeadDistillConfig.weight_decay:g} for pcnet-head, {s.weight_decay:g} for the segmentation "
                        f"networks and {MagNetTrainConfig.weight_decay:g} for magnet with adamw, 5e-4 with sgd)")
    p.add_argument("--crop", type=int, metavar="PX",
                   help=f"crop side (default {d.crop} / {s.crop}; a multiple of 64 for PCNet, of 32 for the "
                        "segmentation networks)")
    p.add_argument("--init", metavar="FILE",
                   help="start from the weights of this checkpoint (fine-tuning), e.g. a run's best.pt; "
                        "pcnet-head: an earlier student of the same teacher (a file or a packaged name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="arithmetic of the network's forward pass in training: fp32 (default), or bf16 autocast "
                        "(weights, optimiser and losses stay float32); on a CPU with AMX it measured 1.6x faster "
                        "for isdnet, about 3x for deeppath --deep-scale 1 and no gain for pcnet; slower where "
                        "bfloat16 is emulated (not for magnet)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="write last.pt every N iterations")
    p.add_argument("--val-every", type=int, metavar="N", help="validate every N iterations")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N iterations in this call (resumable)")
    p.add_argument("--extend-to", type=int, metavar="N",
                   help="pcnet and scn: raise the run in OUT to N iterations in all and go on from its last.pt, "
                        "keeping its optimiser state and learning-rate schedule (for a run still improving)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--scale-range", metavar="LO,HI",
                   help="random scale of the crops, 1 = full resolution (segmentation default 0.5,2.0; pcnet and "
                        "scn: instead of --global-resize, an aspect-keeping resize of the whole image)")

    sp = p.add_argument_group("superpixel networks (pcnet, scn)")
    sp.add_argument("--bsds500-root", default=d.bsds500_root, metavar="DIR", help=f"(default {d.bsds500_root})")
    sp.add_argument("--val-n-segments", type=int, metavar="N",
                    help=f"superpixels for validation ASA and BR (default {d.val_n_segments})")
    sp.add_argument("--lr-step", type=int, metavar="N", help=f"divide the lr by 10 every N iterations "
                                                             f"(default {d.lr_step})")
    sp.add_argument("--patch", type=int, metavar="PX", help=f"DPC patch side at full resolution (default {d.patch})")
    sp.add_argument("--global-resize", type=int, metavar="PX", help=f"(default {d.global_resize})")
    sp.add_argument("--no-dpc", action="store_true", help="ablation: no DPC patch branch")
    sp.add_argument("--no-ld", action="store_true", help="ablation: no local discrimination loss")
    sp.add_argument("--multiclass-patch", action="store_true",
                    help="ablation: supervise the patch with its multi-class labels instead of the binary mask")
    sp.add_argument("--no-sr", action="store_true",
                    help="ablation: no super-resolution loss (PCNet's SR head; ISDNet's L_SR)")
    sp.add_argument("--loader-workers", type=int, metavar="N",
                    help="draw the batches ahead in N worker processes (default 0: in the training process); "
                         "a GPU needs them, e.g. 4. The batch of step t is then seeded by (seed, t)")
    sp.add_argument("--head-norm", action="store_true",
                    help="pcnet: BatchNorm in the 4x head, as in the authors' code (with --init from weights "
                         "without it, the new norms start as the identity on the first batch)")
    sp.add_argument("--guide", action="store_true",
                    help="pcnet: the head also sees the image at the output resolution (our addition to the "
                         "paper; with --init from weights without it, the guide branch starts at zero)")
    sp.add_argument("--guide-channels", type=int, metavar="N",
                    help="pcnet --guide: width of the guide branch's first conv (default 8; from a narrower --init "
                         "the new channels start with zero weight in the second conv); pcnet-head: the student's "
                         "(default 16)")
    sp.add_argument("--guide-lr-scale", type=float, metavar="F",
                    help="pcnet --guide: learning-rate factor of the guide branch (default 1)")
    sp.add_argument("--head-blocks", type=int, metavar="N",
                    help="pcnet: N residual blocks of 3x3 convs between the embedding and the association conv "
                         "(our addition to the paper; with --init from weights without them, they start as the "
                         "identity) (default 0); pcnet-head: the student's (default 1)")
    sp.add_argument("--head-blocks-lr-scale", type=float, metavar="F",
                    help="pcnet --head-blocks: learning-rate factor of the head blocks (default 1)")
    sp.add_argument("--revive-channels", action="store_true",
                    help="with --init: restart the channels of Q (neighbour cells) that the init's network no "
                         "longer uses (mean mass < 1e-3); the packaged pcnet.pt before 2026-12-05 used only the "
                         "top and centre cells")
    sp.add_argument("--teacher", metavar="FILE",
                    help="pcnet: also fit the association map Q of this trained SCN checkpoint on each crop "
                         "(knowledge distillation, per-pixel KL; our addition to the paper), e.g. a copy of the "
                         "packaged scn.pt; pcnet-head: the guided PCNet whose head is distilled (a file or a "
                         "packaged name; default pcnet-large)")
    sp.add_argument("--teacher-weight", type=float, metavar="W",
                    help=f"pcnet --teacher: weight of the KL term (default {TrainConfig.teacher_weight:g})")
    sp.add_argument("--teacher-refine", action="store_true",
                    help="pcnet --teacher: fit the teacher's Q with its boundaries moved by the full-resolution "
                         "refinement (the default passes, m and lambda), so the network learns to put its own "
                         "boundaries where the refinement would (our addition)")
    sp.add_argument("--position-weight", type=float, metavar="M",
                    help="weight m of the superpixel loss's position term (Eq. 3, scaled by m / S): smaller "
                         "follows the labels' boundaries more, larger gives more compact superpixels "
                         f"(default {TrainConfig.position_weight:g}, SCN's)")

    sg = p.add_argument_group("segmentation networks (isdnet, deeppath)")
    sg.add_argument("--optimizer", choices=("adamw", "sgd"), help="(default adamw)")
    sg.add_argument("--warmup", type=int, metavar="N", help=f"linear warm-up iterations (default {s.warmup})")
    sg.add_argument("--width", type=int, metavar="C", help=f"ResNet stem width (ResNet-18: 64; default {s.width})")
    sg.add_argument("--deep-scale", type=int, choices=(1, 4),
                    help="deeppath: 4 = the 1/4 baseline (default), 1 = full resolution (sliding-window network)")
    sg.add_argument("--no-shallow", action="store_true", help="ablation: ISDNet without the shallow path")
    sg.add_argument("--fusion", choices=("raf", "add"), help="ablation: add instead of relation-aware fusion")
    sg.add_argument("--no-sd", action="store_true", help="ablation: no structure-distillation loss L_SD")
    sg.add_argument("--no-aux", action="store_true", help="no auxiliary stage-3 head")
    sg.add_argument("--no-ohem", action="store_true", help="plain cross-entropy instead of OHEM")
    sg.add_argument("--no-photometric", action="store_true", help="no photometric distortion")

    mg = p.add_argument_group("MagNet refinement module (magnet)")
    mg.add_argument("--backbone", metavar="FILE|NAME", help="frozen backbone: a checkpoint, or a packaged name")
    mg.add_argument("--backbone-model", default=None, choices=("isdnet", "deeppath"),
                    help="model of a packaged backbone name (default isdnet)")
    mg.add_argument("--scales", type=int, metavar="N",
                    help="scales of the loop trained for: coarse input at 2^-(N-1) (default 3)")
    p.set_defaults(run=run)


_MAGNET_ONLY = ("backbone", "backbone_model", "scales")
_SUPERPIXEL_ONLY = ("val_n_segments", "lr_step", "patch", "global_resize", "no_dpc", "no_ld", "multiclass_patch",
                    "loader_workers", "extend_to", "teacher", "teacher_weight", "teacher_refine",
                    "revive_channels", "head_norm", "guide", "guide_channels", "guide_lr_scale", "head_blocks",
                    "head_blocks_lr_scale", "position_weight")
_SEGMENTATION_ONLY = ("optimizer", "warmup", "width", "deep_scale", "no_shallow",
                      "fusion", "no_sd", "no_aux", "no_ohem", "no_photometric")


def _given(args: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False)]


def _common(args: argparse.Namespace) -> dict:
    out = {}
    for name in ("iterations", "batch_size", "lr", "weight_decay", "crop", "init", "seed", "device", "precision",
                 "checkpoint_every", "val_every", "val_images"):
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    if args.data is not None:
        out["data"] = [v.strip() for v in args.data.split(",") if v.strip()]
    if args.val is not None:
        out["val"] = None if str(args.val).lower() == "none" else args.val
    return out


def _scale_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UhrsegError(f"--scale-range {text!r}: expected LO,HI such as 0.5,2.0") from None
    if not 0 < lo <= hi < math.inf:  # inf was an OverflowError traceback
        raise UhrsegError(f"--scale-range {text!r}: expected finite 0 < LO <= HI")
    return lo, hi


def _superpixel_config(args: argparse.Namespace) -> TrainConfig:
    extra = {k: getattr(args, k) for k in ("val_n_segments", "lr_step", "patch", "global_resize", "loader_workers",
                                           "guide_lr_scale", "guide_channels", "position_weight", "head_blocks",
                                           "head_blocks_lr_scale", "teacher", "teacher_weight")
             if getattr(args, k) is not None}
    if args.loader_workers is not None and args.loader_workers < 0:
        raise UhrsegError(f"--loader-workers must be >= 0, got {args.loader_workers}")
    if args.scale_range is not None:
        if args.global_resize is not None:
            raise UhrsegError("--scale-range and --global-resize exclude each other")
        extra["scale_range"] = _scale_range(args.scale_range)
    return TrainConfig(model=args.model, bsds500_root=str(args.bsds500_root), dpc=not args.no_dpc,
                       sr=not args.no_sr, ld=not args.no_ld, binary_mask=not args.multiclass_patch,
                       head_norm=args.head_norm, guide=args.guide, revive_channels=args.revive_channels,
                       teacher_refine=args.teacher_refine,
                       **_common(args), **extra)


def _segmentation_config(args: argparse.Namespace) -> SemanticTrainConfig:
    extra = {k: getattr(args, k) for k in ("optimizer", "warmup", "width", "deep_scale", "fusion")
             if getattr(args, k) is not None}
    if args.scale_range is not None:
        extra["scale_range"] = _scale_range(args.scale_range)
    if args.optimizer == "sgd" and args.lr is None:
        extra["lr"] = 0.01
    if args.optimizer == "sgd" and args.weight_decay is None:
        extra["weight_decay"] = 5e-4
    common = _common(args)
    if args.data is None:
        raise UhrsegError(f"{args.model} needs --data (folders of images/ + labels/ or DeepGlobe images/ + masks/)")
    return SemanticTrainConfig(model=args.model, shallow=not args.no_shallow, sr=not args.no_sr,
                               sd=not args.no_sd, aux=not args.no_aux, ohem=not args.no_ohem,
                               photometric=not args.no_photometric, **common, **extra)


def _magnet_config(args: argparse.Namespace) -> MagNetTrainConfig:
    wrong = _given(args, _SUPERPIXEL_ONLY + ("scale_range", "width", "deep_scale", "no_shallow", "fusion",
                                             "no_sd", "no_aux", "no_ohem", "no_photometric", "no_sr", "init",
                                             "precision"))
    if wrong:
        raise UhrsegError(f"{', '.join(wrong)} does not apply to magnet")
    if args.backbone is None:
        raise UhrsegError("magnet needs --backbone (a segmentation checkpoint, or a packaged name such as drone)")
    if args.data is None:
        raise UhrsegError("magnet needs --data (folders of images/ + labels/ or DeepGlobe images/ + masks/)")
    common = {k: v for k, v in _common(args).items() if k not in ("crop", "init", "precision")}
    extra = {k: getattr(args, k) for k in ("optimizer", "warmup") if getattr(args, k) is not None}
    if args.optimizer == "sgd" and args.weight_decay is None:  # MagNet's SGD (Huynh et al., CVPR 2021)
        extra["weight_decay"] = 5e-4
    if args.scales is not None:
        extra["n_scales"] = args.scales
    return MagNetTrainConfig(backbone=str(args.backbone), backbone_model=args.backbone_model or "isdnet",
                             **common, **extra)


#: Flags of ``pcnet-head`` besides the common ones (``--data``, ``--val``, ``--iterations``, ...).
_DISTILL_FLAGS = ("teacher", "guide_channels", "head_blocks", "val_n_segments")


def _distill_config(args: argparse.Namespace) -> HeadDistillConfig:
    wrong = _given(args, tuple(n for n in _SUPERPIXEL_ONLY + _SEGMENTATION_ONLY + _MAGNET_ONLY
                               + ("precision", "scale_range", "no_sr") if n not in _DISTILL_FLAGS))
    if wrong:
        raise UhrsegError(f"{', '.join(wrong)} does not apply to pcnet-head")
    extra = {k: getattr(args, k) for k in _DISTILL_FLAGS if getattr(args, k) is not None}
    common = {k: v for k, v in _common(args).items() if k != "precision"}
    return HeadDistillConfig(bsds500_root=str(args.bsds500_root), **common, **extra)


def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code."""
    # Each trainer imports torch: only the one this run needs, here, not with the parser (``uhrseg train --help``
    # then takes 0.06 s, not 2 s)
    tune_allocator()  # glibc: torch's tensors reused from the heap, not faulted in afresh each step
    if args.stop_after is not None and args.stop_after < 1:  # checked before the trainer loads its data
        raise UhrsegError(f"--stop-after must be >= 1 iteration, got {args.stop_after}")
    if args.model in DISTILL_MODELS:
        config = _distill_config(args)
        if (args.out / "last.pt").is_file():
            print(f"uhrseg: resuming from {args.out / 'last.pt'} (its stored recipe is used)", file=sys.stderr)
        from ..training.head_distillation import distill_head

        best = distill_head(config, args.out, progress=not args.quiet, stop_after=args.stop_after)
        print(f"uhrseg: {best}", file=sys.stderr)
        return 0
    if args.model in MAGNET_MODELS:
        if (args.out / "last.pt").is_file():
            print(f"uhrseg: resuming from {args.out / 'last.pt'} (its stored recipe is used)", file=sys.stderr)
        from ..training.magnet_trainer import train_magnet

        best = train_magnet(_magnet_config(args), args.out, progress=not args.quiet, stop_after=args.stop_after)
        print(f"uhrseg: {best}", file=sys.stderr)
        return 0
    if _given(args, _MAGNET_ONLY):
        raise UhrsegError(f"{', '.join(_given(args, _MAGNET_ONLY))} applies only to magnet")
    segmentation = args.model in SEGMENTATION_MODELS
    if args.model == "segmenter":
        args.model = "isdnet"
        args.scale_range = args.scale_range or "0.25,2.0"
    wrong = _given(args, _SUPERPIXEL_ONLY if segmentation else _SEGMENTATION_ONLY)
    if wrong:
        kind = "superpixel networks (pcnet, scn)" if segmentation else "segmentation networks (isdnet, deeppath)"
        raise UhrsegError(f"{', '.join(wrong)} applies only to {kind}")
    if segmentation and args.model == "deeppath" and (args.no_shallow or args.fusion or args.no_sd or args.no_sr):
        raise UhrsegError("deeppath has no shallow path, fusion, SR or SD loss to switch off")
    if (args.out / "last.pt").is_file():
        extended = f", extended to {args.extend_to} iterations" if args.extend_to is not None else ""
        print(f"uhrseg: resuming from {args.out / 'last.pt'} (its stored recipe is used{extended})", file=sys.stderr)
    if segmentation:
        from ..training.semantic_trainer import train_semantic

        best = train_semantic(_segmentation_config(args), args.out, progress=not args.quiet,
                              stop_after=args.stop_after)
    else:
        from ..training.trainer import train

        best = train(_superpixel_config(args), args.out, progress=not args.quiet, stop_after=args.stop_after,
                     extend_to=args.extend_to)
    print(f"uhrseg: {best}", file=sys.stderr)
    return 0
