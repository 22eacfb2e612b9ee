"""``uhrseg segment``: full-resolution class maps, class overlays and a summary for a batch of images."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import (
    DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT,
    DEFAULT_SEMANTIC_TILE,
    MAGNET_MODELS,
    METHODS,
    MODES,
    NETWORK_METHODS,
    OVERLAY_FORMATS,
    REFINEMENTS,
    SEMANTIC_MODELS,
)
from ..errors import UhrsegError
from ..memory import peak_rss_bytes, reset_peak_rss, tune_allocator
from .common import (ImageOpener, add_ray_options, check_ray_options, check_targets, export_writers, folder_path,
                     parse_exports, process_batch)

if TYPE_CHECKING:  # loaded by run(), after the first image has started decoding
    import numpy as np

    from ..inference.semantic import SemanticPredictor

# NumPy and uhrseg's readers and writers (OpenCV, Pillow, tifffile) are imported by the functions that run the
# command, not here (uhrseg.memory needs neither): the parser, and so ``uhrseg segment --help``, loads none of them.

DESCRIPTION = """\
Segment images into classes at their full resolution. For every IMAGE, DIR receives
STEM_classes.png (8-bit palette PNG: pixel values are class ids, the palette holds the class
colours, so any viewer shows the usual colours), STEM_overlay.jpg (class colours blended over
the image; .png or none with --overlay) and DIR/summary.json (per image: size, class names, share of pixels per class,
seconds per stage, peak memory). A file that cannot be processed is reported and skipped; the
exit code is then 2.

Weights: drone (Semantic Drone dataset, 24 classes of aerial scenes of houses and gardens),
deepglobe (DeepGlobe land cover, 7 classes of satellite scenes) or a checkpoint from uhrseg
train. Images up to 16.8 million pixels run in one pass; larger ones run tiled (the same
result in bounded memory). Images of more than 134 million pixels (or any image with
--stream) are streamed: a TIFF/BigTIFF input is read band by band, the intermediate maps live
in temporary files in DIR, the class map is written as a tiled 8-bit palette BigTIFF
(STEM_classes.tif) and the overlay at --preview-side pixels.

--refine superpixels sharpens the class map with full-resolution superpixels (PCNet by
default): each superpixel takes the class of its pixels' mean probability, except pixels whose
own prediction is at least --confidence. The superpixels are written too (STEM_superpixels.png,
16-bit, or .tif; streamed: a tiled int32 BigTIFF). Streamed images take network superpixels
(pcnet or scn), computed band by band. --refine guided uses the guided filter instead.
MagNet and MagNet-Fast (--model magnet|magnet-fast, --scales N) refine over scales instead."""

#: Images with more pixels than this are streamed.
STREAM_PIXELS = 2**27


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    """Register the ``segment`` sub-command."""
    p = subparsers.add_parser("segment", help=help_text,
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="input images: JPEG, PNG (8/16-bit), TIFF/BigTIFF, ...; at least 32 x 32 pixels")
    p.add_argument("-m", "--model", default="isdnet", choices=SEMANTIC_MODELS,
                   help="isdnet (default), deeppath (the deep path alone), magnet or magnet-fast (multi-scale "
                        "refinement over a backbone)")
    p.add_argument("--scales", type=int, default=3, metavar="N",
                   help="magnet: scales, a factor of 2 apart up to full resolution (default 3); magnet-fast uses "
                        "the coarsest and the finest")
    p.add_argument("-w", "--weights", default="drone", metavar="NAME|FILE",
                   help="packaged weights drone or deepglobe, or a checkpoint file (default drone)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network runs: auto picks CUDA when available (default auto)")
    p.add_argument("-o", "--out", type=folder_path, default=Path("uhrseg-out"), metavar="DIR",
                   help="output folder, created if needed (default ./uhrseg-out)")
    p.add_argument("--mode", default="auto", choices=MODES,
                   help="auto (default), whole (one pass), tiled (bounded memory, same result) or slide "
                        "(sliding windows, for networks trained at full resolution)")
    p.add_argument("--tile", type=int, default=DEFAULT_SEMANTIC_TILE, metavar="PX",
                   help=f"full-resolution tile of the tiled mode; lower uses less memory (default "
                        f"{DEFAULT_SEMANTIC_TILE})")
    p.add_argument("--stream", action="store_true",
                   help=f"stream every image (class map as tiled BigTIFF); automatic above {STREAM_PIXELS} pixels")
    p.add_argument("--overlay", default="jpg", choices=OVERLAY_FORMATS,
                   help="encoding of the class overlay: jpg (quality 95, 4:4:4; default, 10x faster to write than "
                        "png), png (lossless) or none")
    p.add_argument("--export", metavar="LIST",
                   help="also write regions: polygons (STEM_regions.gpkg), table (STEM_regions.parquet) and/or csv, "
                        "comma-separated; the regions are the superpixels with --refine superpixels (each with its "
                        "majority class), else the connected class regions (pip install 'uhrseg[geo]')")
    p.add_argument("--preview-side", type=int, default=2048, metavar="PX",
                   help="longer side of the overlay of streamed images (default 2048)")
    p.add_argument("--refine", choices=REFINEMENTS, metavar="METHOD",
                   help="sharpen the class map at full resolution: superpixels (pool the probabilities over "
                        "superpixels, see --superpixels), guided (guided filter with the image as guide), "
                        "bilinear or none (the network's grid); default: the network's own map")
    p.add_argument("--superpixels", default="pcnet", metavar="METHOD",
                   help="--refine superpixels: the superpixel method (default pcnet, with its refinement)")
    p.add_argument("--n-segments", type=int, metavar="N",
                   help="--refine superpixels: how many (default H W / 1024 for pcnet/scn, H W / 512 for classical "
                        "methods)")
    p.add_argument("--confidence", type=float, default=None,
                   help="--refine superpixels: pixels at least this confident keep their class (default 0.9)")
    p.add_argument("--oversegmentation", type=float, metavar="R",
                   help="--refine superpixels with pcnet/scn: make R times N grid cells and merge the most similar "
                        "neighbours back to N (default 1.5; 1 is the network's grid)")
    p.add_argument("--merge-texture-weight", type=float, metavar="W",
                   help="--refine superpixels with pcnet/scn: weight of the texture feature in that merge, W |grad "
                        f"L| beside the colour (default {DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT:g})")
    add_ray_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _entry(path: Path, written, height: int, width: int, names, counts: np.ndarray, mode: str, streamed: bool,
           timings: dict) -> dict:
    total = max(1, int(counts.sum()))
    return {
        "file": str(path),
        "outputs": [str(p) for p in written],
        "width": int(width),
        "height": int(height),
        "mode": mode,
        "streamed": streamed,
        "class_fractions": {n: round(int(c) / total, 6) for n, c in zip(names, counts)},
        "seconds": {k: round(v, 4) for k, v in timings.items()},
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _process(predictor: SemanticPredictor, opener: ImageOpener, path: Path, stem: str, args: argparse.Namespace,
             inputs: set[Path], bar) -> dict:
    import numpy as np

    from ..io import (commit_files, label_suffix, render_class_overlay, write_class_png, write_class_store,
                      write_label_store, write_labels, write_overlay)
    from ..io.geo import (NODATA_CLASS, NODATA_LABEL, mask_nodata_classes, mask_nodata_labels, nodata_source,
                          read_georeference)
    from ..io.sources import ArraySource, TiffSource
    from ..stores import ArrayStore

    reset_peak_rss()
    t_start = time.perf_counter()
    source = opener.open(path)
    try:
        height, width = source.shape[:2]
        if args.stream or height * width > STREAM_PIXELS:
            refusal = _streaming_refusal(args)  # (refused before any work with --stream)
            if refusal:
                raise UhrsegError(f"{path}: streaming {refusal}")
            return _process_streamed(predictor, source, path, stem, args, inputs, bar, t_start)
        image = source.read_rows(0, height) if isinstance(source, TiffSource) else source.array
    finally:
        source.close()
    t_read = time.perf_counter() - t_start
    geo = read_georeference(path)
    result = predictor.run(image, probabilities=False)
    classes, labels = result.classes, result.superpixel_labels
    n_superpixels = None if labels is None else int(labels.max()) + 1
    if geo is not None:
        raw = nodata_source(path, ArraySource(image))
        mask_nodata_classes(ArrayStore(classes), raw, geo)
        if labels is not None:
            n_superpixels = mask_nodata_labels(ArrayStore(labels), raw, geo, n_superpixels)
    t0 = time.perf_counter()
    if geo is not None:  # a GeoTIFF in, GeoTIFFs out
        class_nodata, label_nodata = (None, None) if geo.nodata is None else (NODATA_CLASS, NODATA_LABEL)
        outputs = {args.out / f"{stem}_classes.tif": lambda p: write_class_store(
            p, ArrayStore(classes), predictor.palette, georeference=geo, nodata=class_nodata)}
    else:
        outputs = {args.out / f"{stem}_classes.png": lambda p: write_class_png(p, classes, predictor.palette)}
    if args.overlay != "none":
        outputs[args.out / f"{stem}_overlay.{args.overlay}"] = lambda p: write_overlay(
            p, render_class_overlay(image, classes, predictor.palette), args.overlay)
    if labels is not None and geo is not None:
        outputs[args.out / f"{stem}_superpixels.tif"] = lambda p: write_label_store(
            p, ArrayStore(labels), georeference=geo, nodata=label_nodata)
    elif labels is not None:
        suffix = label_suffix(labels)
        outputs[args.out / f"{stem}_superpixels{suffix}"] = lambda p: write_labels(p, labels, suffix)
    if args.exports:
        regions, n_regions = (labels, n_superpixels) if labels is not None else class_regions(classes)
        outputs.update(export_writers(args.out, stem, args.exports, regions, image, n_regions, classes=classes,
                                      class_names=predictor.class_names, georeference=geo))
    check_targets(path, outputs, inputs)
    written = commit_files(outputs)
    timings = {"read": t_read, **result.timings, "write": time.perf_counter() - t0,
               "total": time.perf_counter() - t_start}
    counts = np.bincount(classes.ravel(), minlength=len(predictor.class_names))[: len(predictor.class_names)]
    return _entry(path, written, height, width, predictor.class_names, counts, result.mode, False, timings)


def class_regions(classes: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected regions of one class each (4-connectivity; :func:`skimage.measure.label`) of an in-memory
    class map, ``0 .. K-1`` int32, nodata (255) -1; and ``K``."""
    import numpy as np
    from skimage.measure import label

    from ..io.geo import NODATA_CLASS

    regions = label(classes.astype(np.int16), background=NODATA_CLASS, connectivity=1).astype(np.int32) - 1
    return regions, int(regions.max()) + 1


def _process_streamed(predictor: SemanticPredictor, source, path: Path, stem: str, args: argparse.Namespace,
                      inputs: set[Path], bar, t_start: float) -> dict:
    """Bounded-memory path: intermediate maps and the class map in temporary files in the output folder."""
    import numpy as np

    from ..io import (commit_files, render_class_overlay, sample_label_store, write_class_store, write_label_store,
                      write_overlay)
    from ..io.geo import NODATA_CLASS, NODATA_LABEL, mask_nodata_classes, mask_nodata_labels, read_georeference
    from ..stores import FileStore

    height, width = source.shape[:2]
    scale = min(1.0, args.preview_side / max(height, width))
    preview_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    pooled = predictor.superpixel_predictor is not None
    geo = read_georeference(path)
    outputs = {args.out / f"{stem}_classes.tif": None}
    if args.overlay != "none":
        outputs[args.out / f"{stem}_overlay.{args.overlay}"] = None
    if pooled:
        outputs[args.out / f"{stem}_superpixels.tif"] = None
    outputs.update({args.out / f"{stem}_regions.{suffix}": None for name, suffix in
                    (("polygons", "gpkg"), ("table", "parquet"), ("csv", "csv")) if name in args.exports})
    check_targets(path, outputs, inputs)
    with tempfile.TemporaryDirectory(prefix=".uhrseg-work-", dir=args.out) as work:
        stores = []
        try:
            try:
                classes = FileStore(Path(work) / "classes.u8", (height, width), np.uint8)
                stores.append(classes)
                labels = FileStore(Path(work) / "superpixels.i32", (height, width), np.int32) if pooled else None
                stores.append(labels)
            except OSError as e:
                raise UhrsegError(f"{path}: no room for the temporary maps in {args.out} ({e.strerror or e})") from e
            mode = "tiled" if predictor.mode == "auto" else predictor.mode  # bounded memory at any size (magnet too)
            result = predictor.run_source(source, classes, superpixel_labels=labels, work_dir=work,
                                          preview_shape=None if args.overlay == "none" else preview_shape, mode=mode,
                                          progress=lambda stage: bar.set_postfix_str(f"{path.name}: {stage}"))
            counts = result.class_counts
            n_superpixels = result.n_superpixels
            class_nodata = label_nodata = None
            if geo is not None:
                counts = mask_nodata_classes(classes, source, geo)[: len(predictor.class_names)]
                if labels is not None:
                    n_superpixels = mask_nodata_labels(labels, source, geo, n_superpixels)
                if geo.nodata is not None:
                    class_nodata, label_nodata = NODATA_CLASS, NODATA_LABEL
            t0 = time.perf_counter()
            writers = {args.out / f"{stem}_classes.tif": lambda p: write_class_store(
                p, classes, predictor.palette, georeference=geo, nodata=class_nodata)}
            if args.overlay != "none":
                small = sample_label_store(classes, *preview_shape).astype(np.uint8)
                writers[args.out / f"{stem}_overlay.{args.overlay}"] = lambda p: write_overlay(
                    p, render_class_overlay(result.preview, small, predictor.palette), args.overlay)
            if pooled:
                writers[args.out / f"{stem}_superpixels.tif"] = lambda p: write_label_store(
                    p, labels, georeference=geo, nodata=label_nodata)
                writers.update(export_writers(args.out, stem, args.exports, labels, source, n_superpixels,
                                              classes=classes, class_names=predictor.class_names, georeference=geo))
            written = commit_files(writers)
            t_write = time.perf_counter() - t0
        finally:
            for store in stores:
                if store is not None:
                    store.close()
    timings = {**result.timings, "write": t_write, "total": time.perf_counter() - t_start}
    return _entry(path, written, height, width, predictor.class_names, counts, result.mode, True, timings)



def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code (0, or 2 when any input failed)."""
    if args.preview_side < 16:
        raise UhrsegError(f"--preview-side must be >= 16 pixels, got {args.preview_side}")
    if args.tile < 32:
        raise UhrsegError(f"--tile must be >= 32 pixels, got {args.tile}")
    images = [Path(p) for p in args.images]
    args.exports = parse_exports(args.export)
    if args.model not in MAGNET_MODELS and args.scales != 3:
        raise UhrsegError(f"--scales applies to magnet and magnet-fast, not {args.model}")
    if args.scales < 1:
        raise UhrsegError(f"--scales must be >= 1, got {args.scales}")
    superpixel_flags = (args.n_segments is not None or args.superpixels != "pcnet" or args.confidence is not None
                        or args.oversegmentation is not None or args.merge_texture_weight is not None)
    if args.refine != "superpixels" and superpixel_flags:  # would be ignored, and recorded in summary.json
        raise UhrsegError("--superpixels, --n-segments, --confidence, --oversegmentation and --merge-texture-weight "
                          "apply to --refine superpixels" + (f", not {args.refine}" if args.refine else ""))
    if args.refine is not None and args.superpixels not in METHODS:
        raise UhrsegError(f"--superpixels {args.superpixels!r}: choose one of {', '.join(METHODS)}")
    refusal = _streaming_refusal(args) if args.stream else None  # before the model loads (by size: per image)
    if refusal:
        raise UhrsegError(f"--stream {refusal}")
    desc = f"{args.model} {Path(str(args.weights)).stem}"
    check_ray_options(args)
    _refinement(args)  # bad --confidence or --n-segments fail here, not in every Ray worker
    if args.ray is not None:
        from ..distributed import run_on_ray

        return run_on_ray(__name__, args, images, desc)
    from ..io import prepare_output_dir

    tune_allocator()  # glibc: large blocks (torch's tensors, bands) reused from the heap, not faulted in afresh
    opener = ImageOpener(images)  # the first image decodes while torch and the network load
    process, summary = prepare(args, opener)  # before the folder: bad weights make none
    created_out = not args.out.exists()
    prepare_output_dir(args.out)
    return process_batch(images, args.out, process, summary, desc, args.quiet, created_out)


def _streaming_refusal(args: argparse.Namespace) -> str | None:
    """What in the flags a streamed image cannot do (the end of a sentence that starts "--stream " or "PATH:
    streaming "), or None."""
    if args.refine == "superpixels" and args.superpixels not in NETWORK_METHODS:
        return (f"takes network superpixels (--superpixels pcnet or scn); {args.superpixels} needs the whole image "
                f"in memory")
    if args.exports and args.refine != "superpixels":
        return "exports superpixels, not class maps (--export); add --refine superpixels"
    return None


def _refinement(args: argparse.Namespace):
    """The ``ClassRefinement`` the flags ask for, or None without ``--refine``; raises UhrsegError on bad flags."""
    if args.refine is None:
        return None
    from ..semantic import ClassRefinement

    try:
        given = {} if args.confidence is None else {"confidence": args.confidence}  # else the default 0.9
        return ClassRefinement(args.refine, superpixels=args.superpixels, n_segments=args.n_segments,
                               oversegmentation=args.oversegmentation, merge_texture_weight=args.merge_texture_weight,
                               **given)
    except ValueError as e:
        raise UhrsegError(f"--refine {args.refine}: {e}") from None


def prepare(args: argparse.Namespace, opener: ImageOpener):
    """Build the predictor once; returns ``(process(path, stem, inputs, bar) -> summary entry, summary header)``,
    used by the local batch loop and by each Ray worker (:mod:`uhrseg.distributed`)."""
    from ..inference.semantic import SemanticPredictor

    refine = _refinement(args)
    predictor = SemanticPredictor(args.model, weights=args.weights, device=args.device, mode=args.mode,
                                  tile=args.tile, scales=args.scales, refine=refine)
    summary = {"model": predictor.name, "weights": str(predictor.weights), "device": str(predictor.device),
               "class_names": list(predictor.class_names), "palette": [list(c) for c in predictor.palette],
               "refine": args.refine and {"method": args.refine, "superpixels": args.superpixels,
                                          "n_segments": args.n_segments, "confidence": refine.confidence,
                                          "oversegmentation": refine.oversegmentation if args.refine == "superpixels"
                                          else None,
                                          "merge_texture_weight": refine.merge_texture_weight
                                          if args.refine == "superpixels" else None}}
    return (lambda path, stem, inputs, bar: _process(predictor, opener, path, stem, args, inputs, bar)), summary
