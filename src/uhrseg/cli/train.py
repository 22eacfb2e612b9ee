"""``uhrseg train``: train PCNet or SCN, resumable, on CPU or CUDA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..training import TrainConfig, train

DESCRIPTION = """\
Train PCNet (1/4-resolution input, DPC branch, SR head, local discrimination loss) or SCN
(full-resolution input, same code path without DPC, SR and L_D) on BSDS500 or on folders of
images/ + labels/. OUT receives last.pt (resumable: run the same command again after an
interruption), best.pt (best validation ASA + BR; usable with --weights), log.csv and
curves.png. Defaults are the paper's recipe (batch 8, 512 crops, 4k iterations, Adam 5e-5,
/10 every 2k); on a CPU use a reduced recipe, e.g. --crop 256 --patch 256 --global-resize 384."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``train`` sub-command."""
    d = TrainConfig()
    p = subparsers.add_parser("train", help="train PCNet or SCN", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=("pcnet", "scn"))
    p.add_argument("--data", default=",".join(d.data), metavar="LIST",
                   help="comma-separated datasets: bsds500:SPLIT or folders with images/ + labels/ "
                        f"(default {','.join(d.data)})")
    p.add_argument("--bsds500-root", default=d.bsds500_root, metavar="DIR", help=f"(default {d.bsds500_root})")
    p.add_argument("--val", default=d.val, metavar="SPEC", help="validation dataset, 'none' to skip (default bsds500:val)")
    p.add_argument("--val-images", type=int, default=d.val_images, metavar="N", help=f"(default {d.val_images})")
    p.add_argument("--val-n-segments", type=int, default=d.val_n_segments, metavar="N",
                   help=f"superpixels for validation ASA and BR (default {d.val_n_segments})")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="run folder")
    p.add_argument("--iterations", type=int, default=d.iterations, metavar="N")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-step", type=int, default=d.lr_step, metavar="N", help="divide the lr by 10 every N iterations")
    p.add_argument("--crop", type=int, default=d.crop, metavar="PX", help="global crop side (multiple of 64 for PCNet)")
    p.add_argument("--patch", type=int, default=d.patch, metavar="PX", help="DPC patch side at full resolution")
    p.add_argument("--global-resize", type=int, default=d.global_resize, metavar="PX")
    p.add_argument("--no-dpc", action="store_true", help="ablation: no DPC patch branch")
    p.add_argument("--no-sr", action="store_true", help="ablation: no super-resolution loss")
    p.add_argument("--no-ld", action="store_true", help="ablation: no local discrimination loss")
    p.add_argument("--multiclass-patch", action="store_true",
                   help="ablation: supervise the patch with its multi-class labels instead of the binary mask")
    p.add_argument("--init", metavar="FILE",
                   help="start from the weights of this checkpoint (fine-tuning), e.g. a run's best.pt")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, metavar="N")
    p.add_argument("--val-every", type=int, default=d.val_every, metavar="N")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N iterations in this call (resumable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code."""
    cfg = TrainConfig(
        model=args.model, data=[s.strip() for s in args.data.split(",") if s.strip()],
        bsds500_root=str(args.bsds500_root), val=None if str(args.val).lower() == "none" else args.val,
        val_images=args.val_images, val_n_segments=args.val_n_segments, iterations=args.iterations,
        batch_size=args.batch_size, lr=args.lr, lr_step=args.lr_step, crop=args.crop, patch=args.patch,
        global_resize=args.global_resize, dpc=not args.no_dpc, sr=not args.no_sr, ld=not args.no_ld,
        binary_mask=not args.multiclass_patch, init=args.init, seed=args.seed, device=args.device,
        checkpoint_every=args.checkpoint_every, val_every=args.val_every)
    if (args.out / "last.pt").is_file():
        print(f"uhrseg: resuming from {args.out / 'last.pt'} (its stored recipe is used)", file=sys.stderr)
    best = train(cfg, args.out, progress=not args.quiet, stop_after=args.stop_after)
    print(f"uhrseg: {best}", file=sys.stderr)
    return 0
