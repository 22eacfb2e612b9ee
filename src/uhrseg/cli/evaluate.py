"""``uhrseg evaluate``: the standard superpixel metrics (``--task superpixels``) or semantic-segmentation metrics
(``--task semantic``) over a dataset, with plots and a report."""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

from ..defaults import METHODS, NETWORK_METHODS
from ..errors import UhrsegError, WeightsNotFoundError
from .common import folder_path

DESCRIPTION = """\
--task superpixels (default): run superpixel methods over a dataset and compute BR, BP, ASA,
UE, EV, CO and K for every (image, ground truth) pair, as the superpixel benchmark of Stutz et
al. does. DIR receives pairs.csv (one row per pair and setting), summary.csv (per method and
setting: mean over pairs and worst ground truth per image), br_bp.png, metrics_vs_k.png and
report.md.

--task semantic: run segmentation models (--models [LABEL=]MODEL[:WEIGHTS],...) over a
labelled dataset (images/ + labels/ + class_dict.csv, or DeepGlobe images/ + masks/) and
compute mIoU, pixel accuracy, frequency-weighted IoU and boundary IoU from the summed confusion
matrices, with seconds per image and peak RSS. DIR receives per_image.csv, summary.csv,
per_class.csv, per_class_iou.png, examples.png and report.md.

Finished cells are kept in DIR/runs/ and not recomputed when the same command runs again; a
DIR that kept only its pairs.csv or per_image.csv (the reports in docs/results/) is resumed from
that table, so a method added to a stored report's command is the only one that runs. --redo
drops the finished cells of the methods (or model labels) it names, e.g. after new weights."""


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    """Register the ``evaluate`` sub-command."""
    p = subparsers.add_parser("evaluate", help=help_text,
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="superpixels", choices=("superpixels", "semantic"),
                   help="superpixel metrics (default) or semantic segmentation metrics")
    p.add_argument("--dataset", required=True, metavar="SPEC",
                   help="bsds500:SPLIT (train, val, test), a folder with images/ and labels/ (semantic: "
                        "with class_dict.csv), or a DeepGlobe split with images/ and masks/ (superpixels: "
                        "its class map is the ground truth)")
    p.add_argument("--models", metavar="LIST",
                   help="semantic: comma-separated [LABEL=]MODEL[:WEIGHTS][@KEY=VALUE], MODEL isdnet, deeppath, magnet "
                        "or magnet-fast, WEIGHTS drone, deepglobe or a checkpoint, KEY=VALUE MagNet settings "
                        "(e.g. isdnet:drone,base=deeppath:runs/base/last.pt,mg=magnet:drone@scales=2)")
    p.add_argument("--examples", type=int, default=3, metavar="N",
                   help="semantic: images shown in examples.png (default 3; 0 for none)")
    p.add_argument("--bsds500-root", type=Path, default=Path("../shared/datasets/BSDS500"), metavar="DIR",
                   help="BSDS500 in its official layout (default ../shared/datasets/BSDS500)")
    p.add_argument("--methods", default="slic,slico,seeds,lsc,fh", metavar="LIST",
                   help=f"comma-separated methods among {', '.join(METHODS)}; METHOD:refine=N sets the "
                        "passes of full-resolution boundary refinement (0 = raw network labels), "
                        ":smoothness=L and :compactness=M its lambda and m (e.g. pcnet:smoothness=100); for "
                        "pcnet and scn :oversegment=R the merge factor (1 = the network's grid) and "
                        ":precision=fp32|bf16|fp16 the network's arithmetic (default slic,slico,seeds,lsc,fh)")
    counts = p.add_mutually_exclusive_group()
    counts.add_argument("--n-segments", default="200,400,600,800,1000,1200", metavar="LIST",
                        help="superpixel counts: 200,400,600 or 200,400,...,1200 or 200:1200:200 "
                             "(default 200,400,...,1200)")
    counts.add_argument("--scales", metavar="LIST",
                        help="instead of counts, SCN-style scales s: n = s^2 H W / 256 per image (e.g. 0.3:1.8:0.3)")
    p.add_argument("--labels", type=Path, metavar="DIR",
                   help="evaluate label maps made elsewhere (DIR/NAME.png|.tif|.npy|.csv) instead of running methods")
    p.add_argument("--weights", action="append", default=[], metavar="METHOD=FILE",
                   help="checkpoint for a network method, e.g. pcnet=run/best.pt (repeatable)")
    p.add_argument("--tolerance", type=int, metavar="PX",
                   help="boundary tolerance r in pixels (default round(0.0025 x image diagonal), 1 on BSDS500)")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="for network methods")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="worker processes over images (default 1)")
    p.add_argument("-o", "--out", type=folder_path, required=True, metavar="DIR", help="output folder")
    p.add_argument("--redo", default="", metavar="LIST",
                   help="comma-separated methods of --methods (semantic: labels of --models) whose finished cells "
                        "in DIR are computed again, e.g. pcnet,pcnet:refine=0 after new weights")
    p.add_argument("--title", help="title of the report and plots")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _parse_weights(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        method, sep, path = item.partition("=")
        if not sep or method not in NETWORK_METHODS:
            raise UhrsegError(f"--weights {item!r}: expected METHOD=FILE with METHOD in {', '.join(NETWORK_METHODS)}")
        out[method] = Path(path)
    return out


def _redo(args: argparse.Namespace) -> list[str]:
    return [m.strip() for m in args.redo.split(",") if m.strip()]


def _command(args: argparse.Namespace) -> str:
    """The invocation as a reproducible command: without ``--redo``, which only says what this run recomputed."""
    argv, out, skip = list(args.argv), [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--redo":
            skip = True
        elif not a.startswith("--redo="):
            out.append(a)
    return "uhrseg " + " ".join(shlex.quote(a) for a in out)


def _redo_note(redo: list[str]) -> list[str]:
    return [f"Computed again in this invocation (--redo): {', '.join(redo)}."] if redo else []


def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code."""
    if args.task == "semantic":
        return _run_semantic(args)
    # The evaluation loads numba, OpenCV and the metrics: here, not with the parser (``--help``: 0.1 s, not 0.6 s)
    from ..datasets import open_dataset
    from ..evaluation import (EvaluationPlan, Setting, parse_counts, parse_method_spec, plot_curves, read_pairs,
                              run_evaluation, summarize, write_report, write_summary_csv)
    from ..inference import SuperpixelPredictor

    if args.models:
        raise UhrsegError("--models is for --task semantic; superpixel methods go in --methods")
    dataset = open_dataset(args.dataset, args.bsds500_root)
    if args.jobs < 1:
        raise UhrsegError(f"--jobs must be >= 1, got {args.jobs}")
    weights = _parse_weights(args.weights)
    if args.scales:
        settings = [Setting(scale=s) for s in parse_counts(args.scales, float)]
    else:
        settings = [Setting(n=n) for n in parse_counts(args.n_segments, int)]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        try:
            method, options = parse_method_spec(m)
            if method not in NETWORK_METHODS:  # cheap to build: checks the options before any work starts
                SuperpixelPredictor(method, **options)
        except ValueError as e:
            raise UhrsegError(f"{m}: {e}") from None
    if args.labels is not None and not args.labels.is_dir():
        raise UhrsegError(f"{args.labels}: label folder not found")
    skipped = []
    if args.labels is None:
        for spec in [m for m in methods if parse_method_spec(m)[0] in NETWORK_METHODS]:
            m, options = parse_method_spec(spec)
            try:  # load once here, so a missing checkpoint or a bad option is reported before any work starts
                SuperpixelPredictor(m, device=args.device, weights=weights.get(m), **options)
            except WeightsNotFoundError as e:
                if m in weights:
                    raise
                skipped.append((spec, str(e)))
                methods.remove(spec)
                print(f"uhrseg: skipping {m}: no packaged weights yet (pass --weights {m}=FILE)", file=sys.stderr)
            except UhrsegError:
                raise
            except ValueError as e:
                raise UhrsegError(f"{spec}: {e}") from None
        if not methods:
            raise UhrsegError("no method left to evaluate")
    plan = EvaluationPlan(methods=methods, settings=settings, weights=weights, labels_dir=args.labels,
                          tolerance=args.tolerance, device=args.device, jobs=args.jobs)
    t0 = time.perf_counter()
    pairs = run_evaluation(dataset, plan, args.out, progress=not args.quiet, redo=_redo(args))
    wall = time.perf_counter() - t0
    summary = summarize(read_pairs(pairs))
    write_summary_csv(summary, args.out / "summary.csv")
    title = args.title or f"Superpixel benchmark on {dataset.label}"
    plot_curves(summary, args.out, title=title)
    command = _command(args)
    notes = [
        f"Dataset: {dataset.label}, {len(dataset.names)} images, every (image, ground truth) pair. "
        f"Metrics as defined in uhrseg.metrics.superpixel (Stutz et al. benchmark definitions); tolerance r = "
        f"{args.tolerance if args.tolerance is not None else 'round(0.0025 x diagonal)'} px. "
        "Values are means over all pairs; 'BR (worst GT)' takes the worst ground truth per image first.",
        f"This invocation took {wall:.0f} s of wall time with --jobs {args.jobs} on {platform.machine()} "
        f"({platform.python_version()}); cells finished in earlier invocations are reused, not re-timed.",
        *_redo_note(_redo(args)),
        "Plots: ![BR-BP](br_bp.png) ![metrics vs K](metrics_vs_k.png)",
    ]
    for m, why in skipped:
        notes.append(f"- {m}: not evaluated ({why.split(': ', 1)[-1].split(';')[0]}).")
    write_report(summary, args.out / "report.md", title=title, command=command, notes=notes)
    print(f"uhrseg: {len(summary)} method/setting rows -> {args.out}/summary.csv, report.md ({wall:.0f} s)",
          file=sys.stderr)
    return 0


def _run_semantic(args: argparse.Namespace) -> int:
    from ..datasets import open_semantic_dataset
    from ..evaluation import (SemanticPlan, parse_model_specs, run_semantic_evaluation, summarize_semantic,
                              write_examples, write_semantic_report)
    from ..metrics.semantic import DEFAULT_BOUNDARY_TOLERANCE

    if not args.models:
        raise UhrsegError("--task semantic needs --models, e.g. --models isdnet:drone")
    if args.jobs < 1:
        raise UhrsegError(f"--jobs must be >= 1, got {args.jobs}")
    if args.examples < 0:
        raise UhrsegError(f"--examples must be >= 0 (0: no examples.png), got {args.examples}")
    dataset = open_semantic_dataset(args.dataset)
    try:
        specs = parse_model_specs(args.models)
    except ValueError as e:
        raise UhrsegError(str(e)) from None
    plan = SemanticPlan(models=specs, device=args.device, jobs=args.jobs,
                        tolerance=args.tolerance if args.tolerance is not None else DEFAULT_BOUNDARY_TOLERANCE)
    t0 = time.perf_counter()
    rows = run_semantic_evaluation(dataset, plan, args.out, progress=not args.quiet, redo=_redo(args))
    t_cells = time.perf_counter() - t0
    table = dataset.class_table
    summary = summarize_semantic(rows, table, plan.tolerance, [s.label for s in specs])
    if args.examples > 0:  # every model once more on the example images: minutes for large images
        write_examples(dataset, plan, dataset.names[: args.examples], args.out / "examples.png")
    wall = time.perf_counter() - t0
    title = args.title or f"Semantic segmentation on {dataset.label}"
    command = _command(args)
    ignored = ", ".join(table.names[i] for i in table.ignored) or "none"
    notes = [
        f"Dataset: {dataset.label}, {len(dataset.names)} images, {table.n_classes} classes; ignored in the "
        f"metrics: {ignored}. mIoU is the mean IoU over the other classes that occur in the ground truth or "
        "the prediction, from the confusion matrix summed over all images; boundary IoU (Cheng et al., CVPR "
        f"2021) uses a band of d = {plan.tolerance} px.",
        f"Seconds per image: the predictor's in-process time (network, tiles and upsampling to full "
        f"resolution; not decoding the file), mean over images, --jobs {args.jobs}, device {args.device}, "
        f"{platform.machine()}; peak RSS: largest over images, of the evaluating process. This invocation took "
        f"{wall:.0f} s ({t_cells:.0f} s for the cells, the rest for examples.png); cells finished in earlier "
        "invocations are reused, not re-timed.",
        *_redo_note(_redo(args)),
    ]
    write_semantic_report(summary, table, args.out, title=title, command=command, notes=notes)
    for r in summary:
        print(f"uhrseg: {r['model']}: mIoU {100 * r['miou']:.2f}, pixel accuracy {100 * r['pixel_accuracy']:.2f}, "
              f"{r['seconds_per_image']:.3f} s / image", file=sys.stderr)
    print(f"uhrseg: {args.out}/summary.csv, report.md ({wall:.0f} s)", file=sys.stderr)
    return 0
