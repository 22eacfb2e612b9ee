"""``uhrseg refine-classes``: sharpen a class map, ours or another tool's, with full-resolution superpixels."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..defaults import DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT, NETWORK_METHODS
from ..errors import UhrsegError
from ..memory import peak_rss_bytes, tune_allocator
from .common import folder_path

# NumPy and the readers and writers are imported by the functions that run the command: the parser, and so
# ``uhrseg refine-classes --help``, loads none of them.

DESCRIPTION = """\
Sharpen a class map with superpixels. --classes is either a class map of the image's size
(PNG/TIFF/NPY of class ids, e.g. a palette PNG of uhrseg segment or a label image saved by
scikit-image or OpenCV; pooled by majority vote, 255 = no vote) or softmax probabilities
(C, h, w) as .npy at any integer stride (pooled by mean probability; pixels whose own top-1
probability is at least --confidence keep their class). --superpixels is a label map of the
image's size (uhrseg superpixels writes one) or a method name (pcnet, slic, seeds, ...) to
compute them with --n-segments. DIR receives STEM_classes.png (palette PNG), STEM_overlay.png
and summary.json, written under temporary names and renamed when complete."""


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    """Register the ``refine-classes`` sub-command."""
    p = subparsers.add_parser("refine-classes", help=help_text,
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", type=Path, metavar="IMAGE", help="the image the class map belongs to")
    p.add_argument("--classes", type=Path, required=True, metavar="FILE",
                   help="class map (PNG/TIFF/NPY of class ids) or probabilities (.npy, (C, h, w) float)")
    p.add_argument("--superpixels", required=True, metavar="FILE|METHOD",
                   help="superpixel labels of the image's size, or a method (pcnet, slic, seeds, ...)")
    p.add_argument("--n-segments", type=int, metavar="N",
                   help="superpixels for a METHOD (default H W / 1024 for pcnet/scn, H W / 512 for classical ones)")
    p.add_argument("--oversegmentation", type=float, metavar="R",
                   help="for pcnet/scn: make R times N grid cells and merge the most similar neighbours back to N "
                        "(default 1.5)")
    p.add_argument("--merge-texture-weight", type=float, metavar="W",
                   help="for pcnet/scn: weight of the texture feature in that merge, W |grad L| beside the colour "
                        f"(default {DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT:g})")
    p.add_argument("--palette", metavar="NAME|FILE",
                   help="class colours: drone, deepglobe or a class_dict.csv (default: the PNG's own palette, "
                        "else grey levels)")
    p.add_argument("--confidence", type=float, default=0.9,
                   help="probabilities: pixels at least this confident keep their class (default 0.9)")
    p.add_argument("-o", "--out", type=folder_path, default=Path("uhrseg-out"), metavar="DIR",
                   help="output folder, created if needed (default ./uhrseg-out)")
    p.set_defaults(run=run)


def _palette(args: argparse.Namespace, classes_path: Path):
    """``(colours, names)`` from --palette, else the PNG's own palette (names None), else ``(None, None)``."""
    if args.palette is None:
        if classes_path.suffix.lower() == ".png":
            import numpy as np
            from PIL import Image

            with Image.open(classes_path) as im:
                if im.mode == "P":
                    flat = im.getpalette() or []
                    used = int(np.asarray(im).max()) + 1
                    return [tuple(flat[3 * i : 3 * i + 3]) for i in range(min(len(flat) // 3, max(used, 1)))], None
        return None, None
    if args.palette in ("drone", "deepglobe"):  # the class table stored in the packaged ISDNet, no model built
        from ..datasets.classes import ClassTable
        from ..inference.semantic import semantic_weights_path
        from ..models.checkpoint import read_checkpoint

        table = ClassTable.from_dict(read_checkpoint(semantic_weights_path("isdnet", args.palette))["classes"])
        return list(table.colours), list(table.names)
    from ..datasets.classes import read_class_table

    if not Path(args.palette).exists():
        raise UhrsegError(f"{args.palette}: --palette is neither a packaged palette (drone, deepglobe) nor a file")
    table = read_class_table(args.palette)
    return list(table.colours), list(table.names)


def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code."""
    import numpy as np

    from ..datasets.readers import read_label_map
    from ..io import commit_files, prepare_output_dir, read_image, render_class_overlay, write_class_png, write_png
    from ..semantic import ClassRefinement, infer_stride, refine_with_superpixels
    from .common import check_targets

    t0 = time.perf_counter()
    for flag, value in (("--oversegmentation", args.oversegmentation),
                        ("--merge-texture-weight", args.merge_texture_weight)):
        if value is not None and args.superpixels not in NETWORK_METHODS:
            raise UhrsegError(f"{flag} applies to --superpixels pcnet or scn, not {args.superpixels}")
    sp_path = Path(args.superpixels)  # a label file (has a suffix), else a method's name
    try:  # flags checked first
        refinement = ClassRefinement(superpixels="pcnet" if sp_path.suffix else args.superpixels,
                                     n_segments=args.n_segments, confidence=args.confidence,
                                     oversegmentation=args.oversegmentation,
                                     merge_texture_weight=args.merge_texture_weight)
    except ValueError as e:
        raise UhrsegError(str(e)) from None
    tune_allocator()  # glibc: large blocks reused from the heap, not faulted in afresh
    image = read_image(args.image)
    height, width = image.shape[:2]
    probabilities = None
    if args.classes.suffix.lower() == ".npy":
        if not args.classes.is_file():
            raise UhrsegError(f"{args.classes}: file not found")
        try:
            arr = np.load(args.classes, allow_pickle=False)
        except Exception as e:
            raise UhrsegError(f"{args.classes}: not a readable .npy array ({e})".splitlines()[0]) from e
        if arr.ndim == 3:
            if not np.issubdtype(arr.dtype, np.floating):
                raise UhrsegError(f"{args.classes}: probabilities must be float, got {arr.dtype}")
            if not np.isfinite(arr).all():
                raise UhrsegError(f"{args.classes}: probabilities hold NaN or infinite values")
            try:
                infer_stride(height, width, arr.shape[1], arr.shape[2])
            except ValueError as e:
                raise UhrsegError(f"{args.classes}: {e}") from None
            probabilities = arr
    if probabilities is None:
        classes = read_label_map(args.classes)
        if classes.shape != (height, width):
            raise UhrsegError(f"{args.classes}: class map is {classes.shape[1]} x {classes.shape[0]}, the image "
                              f"{args.image} is {width} x {height}")
        if classes.min() < 0 or classes.max() > 255:
            raise UhrsegError(f"{args.classes}: class ids must be in 0..255 (255 = no vote), got "
                              f"{classes.min()}..{classes.max()}")
    n_classes = probabilities.shape[0] if probabilities is not None else int(classes[classes != 255].max(initial=0)) + 1
    palette, class_names = _palette(args, args.classes)
    if palette is not None and n_classes > len(palette):
        raise UhrsegError(f"{args.classes}: {n_classes} classes, but the palette has {len(palette)} colours")
    if palette is None:
        step = max(1, 255 // max(1, n_classes))
        palette = [((i * step) % 256,) * 3 for i in range(n_classes)]
    t_sp = time.perf_counter()
    if sp_path.suffix:
        labels = read_label_map(sp_path)
        if labels.shape != (height, width):
            raise UhrsegError(f"{sp_path}: superpixels are {labels.shape[1]} x {labels.shape[0]}, the image "
                              f"{args.image} is {width} x {height}")
        if labels.min() < 0:
            raise UhrsegError(f"{sp_path}: superpixel labels must be >= 0")
        method = None
    else:
        from ..inference.predictor import METHODS

        if args.superpixels not in METHODS:
            raise UhrsegError(f"--superpixels {args.superpixels!r}: neither a label file nor a method "
                              f"({', '.join(METHODS)})")
        method = args.superpixels
        labels = refinement.superpixel_predictor().predict(image, refinement.segments_for(height, width))
    t_sp = time.perf_counter() - t_sp
    t_ref = time.perf_counter()
    try:
        refined = refine_with_superpixels(probabilities if probabilities is not None else classes, labels,
                                          confidence=args.confidence)
    except ValueError as e:  # the probabilities' class count or range: name the file
        raise UhrsegError(f"{args.classes}: {e}") from None
    t_ref = time.perf_counter() - t_ref
    prepare_output_dir(args.out)
    stem = args.image.stem
    outputs = {args.out / f"{stem}_classes.png": lambda p: write_class_png(p, refined, palette),
               args.out / f"{stem}_overlay.png": lambda p: write_png(p, render_class_overlay(image, refined,
                                                                                             palette))}
    check_targets(args.image, list(outputs) + [args.out / "summary.json"],
                  {args.image.resolve(), args.classes.resolve()} | ({sp_path.resolve()} if method is None else set()))
    written = commit_files(outputs)
    counts = np.bincount(refined.ravel(), minlength=n_classes)
    summary = {"image": str(args.image), "classes": str(args.classes), "superpixels": str(args.superpixels),
               "oversegmentation": None if method is None else refinement.oversegmentation,
               "merge_texture_weight": None if method is None else refinement.merge_texture_weight,
               "input": "probabilities" if probabilities is not None else "class map",
               "width": width, "height": height, "n_superpixels": int(labels.max()) + 1,
               "outputs": [str(p) for p in written],
               "class_fractions": {str(i): round(int(c) / refined.size, 6) for i, c in enumerate(counts)},
               **({"class_names": class_names[:n_classes]} if class_names else {}),
               "seconds": {"superpixels": round(t_sp, 4), "refine": round(t_ref, 4),
                           "total": round(time.perf_counter() - t0, 4)},
               "peak_rss_bytes": peak_rss_bytes()}
    text = json.dumps(summary, indent=2)
    commit_files({args.out / "summary.json": lambda p: p.write_text(text + "\n")})
    print(f"uhrseg: {args.image} refined over {summary['n_superpixels']} superpixels -> {args.out}", file=sys.stderr)
    return 0
