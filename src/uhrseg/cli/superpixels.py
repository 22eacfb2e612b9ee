"""``uhrseg superpixels``: label maps, boundary overlays and a summary for a batch of images."""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..defaults import (
    BACKENDS,
    DEFAULT_COMPACTNESS,
    DEFAULT_MERGE_TEXTURE_WEIGHT,
    DEFAULT_OVERSEGMENTATION,
    DEFAULT_REFINE_ITERATIONS,
    DEFAULT_SMOOTHNESS,
    DEFAULT_STRIP_PIXELS,
    DEFAULT_TILE,
    INFERENCE_PRECISIONS,
    LABEL_FORMATS,
    METHODS,
    OVERLAY_FORMATS,
)
from ..errors import UhrsegError
from ..memory import peak_rss_bytes, reset_peak_rss, tune_allocator
from ..threads import usable_cpus
from .common import (ImageOpener, add_ray_options, check_ray_options, check_targets, export_writers, folder_path,
                     parse_exports, process_batch)

if TYPE_CHECKING:  # loaded by run(), after the first image has started decoding
    from ..inference.predictor import SuperpixelPredictor

# NumPy and uhrseg's readers and writers (OpenCV, Pillow, tifffile) are imported by the functions that run the
# command, not here (uhrseg.memory and uhrseg.threads need neither): the parser, and so ``uhrseg superpixels
# --help``, loads none of them (0.05 against 0.21 s).

DESCRIPTION = """\
Compute superpixels at each image's full resolution. For every IMAGE, DIR receives
STEM_labels.png (16-bit label map; .tif when there are 65536 or more superpixels, .npy with
--label-format npy), STEM_overlay.jpg (boundaries drawn on the image, full resolution; .png or
none with --overlay) and, for images whose longer side exceeds --preview-side, STEM_preview.jpg.
DIR/summary.json records per image the requested and produced superpixel counts, size, seconds
per stage and peak memory.
A file that cannot be processed is reported and skipped; the exit code is then 2.

Images of more than 134 million pixels (or any image with --stream) run through pcnet/scn
streamed: a TIFF/BigTIFF input is read band by band, the label map, a CIELAB copy and the network's
guide image live in temporary files in DIR, and STEM_labels.tif is written as a tiled int32 BigTIFF.
Memory then grows with --n-segments (about 6 KB per superpixel: 2.6 GB for 390 625 on a 20000 x
20000 image), not with the image. Streamed images get
no full-resolution overlay but always STEM_preview (at most --preview-side, whatever the image's size)."""

#: Images with more pixels than this are streamed (network methods).
STREAM_PIXELS = 2**27


def add_parser(subparsers: argparse._SubParsersAction, help_text: str) -> None:
    """Register the ``superpixels`` sub-command."""
    p = subparsers.add_parser("superpixels", help=help_text,
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="input images: JPEG, PNG (8/16-bit), TIFF/BigTIFF, ...; any size")
    p.add_argument("-n", "--n-segments", type=int, default=1000, metavar="N",
                   help="requested number of superpixels per image, 1 to a quarter of the pixels (default 1000)")
    p.add_argument("-m", "--method", default="pcnet", choices=METHODS, metavar="METHOD",
                   help=f"one of {', '.join(METHODS)} (default pcnet)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the network runs: auto picks CUDA when available (default auto)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="what runs pcnet/scn: torch, or opencv (the packaged weights' ONNX export with OpenCV's "
                        "DNN module, CPU only; skips the 1-1.5 s torch import; also --weights pcnet-aerial and "
                        "pcnet-aerial-fast); "
                        "auto = opencv for those pcnet weights on the CPU, else torch (default auto)")
    p.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                   help="arithmetic of pcnet/scn: fp32, or bf16 / fp16 autocast on the torch backend (auto then "
                        "takes torch). On a CPU with AMX-BF16, bf16 runs the network about 2x faster at the same "
                        "BR / BP / ASA (measured on BSDS500 val, drone, DeepGlobe), which pays from a few images "
                        "on: for a single image the torch import costs more (2.42 against 2.21 s for a 5K photo). "
                        "fp16 is slower than fp32 on a CPU; on GPUs both are unmeasured here (default fp32)")
    p.add_argument("--weights", type=Path, metavar="FILE|NAME",
                   help="pcnet/scn checkpoint to use instead of the packaged weights, or a packaged name "
                        "(pcnet-aerial: PCNet fine-tuned on aerial frames; pcnet-aerial-fast: its head distilled "
                        "at half the cost; pcnet-large: the previous default PCNet, whose head the packaged one "
                        "distils at half the cost; the two aerial ones run on OpenCV like the packaged weights, "
                        "pcnet-large on the torch backend)")
    p.add_argument("-o", "--out", type=folder_path, default=Path("uhrseg-out"), metavar="DIR",
                   help="output folder, created if needed (default ./uhrseg-out)")
    p.add_argument("--label-format", default="auto", choices=LABEL_FORMATS,
                   help="label map encoding: auto = 16-bit PNG when the ids fit, else TIFF (default auto)")
    p.add_argument("--overlay", default="jpg", choices=OVERLAY_FORMATS,
                   help="encoding of the overlay and preview: jpg (quality 95, 4:4:4; default, 10x faster to write "
                        "than png), png (lossless) or none (labels only)")
    p.add_argument("--export", metavar="LIST",
                   help="also write the superpixels as regions: polygons (STEM_regions.gpkg, GeoPackage), table "
                        "(STEM_regions.parquet) and/or csv (STEM_regions.csv), comma-separated; one row per "
                        "superpixel: id, area, centroid, bounding box, mean colour (pip install 'uhrseg[geo]')")
    p.add_argument("--preview-side", type=int, default=2048, metavar="PX",
                   help="also write a preview with this longer side for larger images (default 2048)")
    p.add_argument("--strip-pixels", type=int, default=DEFAULT_STRIP_PIXELS, metavar="PX",
                   help="output pixels per strip of the network head; lower uses less memory "
                        f"(default {DEFAULT_STRIP_PIXELS})")
    p.add_argument("--refine", type=int, metavar="N",
                   help="passes of full-resolution boundary refinement after the connectivity step "
                        f"(default {DEFAULT_REFINE_ITERATIONS} for pcnet and scn, 0 for classical methods)")
    p.add_argument("--refine-smoothness", type=float, default=None, metavar="LAMBDA",
                   help="refinement's cost per 8-neighbour in another superpixel: lower follows more edges "
                        "(higher BR, lower BP; BSDS500 val n=600, 8 passes, m 2.5, packaged pcnet: 125 gives BR "
                        "0.866 / BP 0.110, 150 gives 0.858 / 0.113, 175 gives 0.851 / 0.114) "
                        f"(default: {DEFAULT_SMOOTHNESS:g} f^-1/3 for network labels upsampled f times to the image, "
                        "e.g. about 107 for n=5000 on a 5K photo; the value used is in summary.json)")
    p.add_argument("--oversegmentation", type=float, default=None, metavar="R",
                   help="pcnet/scn: make R times the requested superpixels on the network's grid, then merge the "
                        "most similar neighbours back to N (Ward's cost in CIELAB): superpixels move from flat "
                        "regions to detailed ones, at about 1.45x the network's time for 1.5; 1 = the papers' grid "
                        f"(default {DEFAULT_OVERSEGMENTATION:g} for pcnet and scn)")
    p.add_argument("--merge-boundary-weight", type=float, default=0.0, metavar="B",
                   help="pcnet/scn: in that merge, subtract B times the boundary two superpixels share (image "
                        "pixels; a Mumford-Shah energy): long boundaries through flat regions go first, so "
                        "homogeneous areas get fewer, larger superpixels (higher BP, lower BR; e.g. 3000 with "
                        "--oversegmentation 3 on land-cover tiles) (default 0: Ward's cost alone)")
    p.add_argument("--merge-texture-weight", type=float, default=None, metavar="W",
                   help="pcnet/scn: in that merge, Ward's cost also compares the superpixels' mean of W |grad L| "
                        "(lightness gradient, 8-bit L units per network output pixel), so flat and textured "
                        "regions of one colour stay apart (0: colour alone, the default before 2026-12-07) "
                        f"(default {DEFAULT_MERGE_TEXTURE_WEIGHT:g} for pcnet and scn)")
    p.add_argument("--refine-compactness", type=float, default=DEFAULT_COMPACTNESS, metavar="M",
                   help="refinement's weight of the distance to the centroid: higher keeps superpixels compact "
                        f"(default {DEFAULT_COMPACTNESS:g})")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="PX",
                   help=f"trunk tile in network-input pixels; lower uses less memory (default {DEFAULT_TILE})")
    p.add_argument("--stream", action="store_true",
                   help="stream every image (pcnet/scn): bounded memory, label map written as tiled BigTIFF; "
                        f"automatic above {STREAM_PIXELS} pixels")
    add_ray_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _process(predictor: SuperpixelPredictor, opener: ImageOpener, path: Path, stem: str, args: argparse.Namespace,
             inputs: set[Path], bar) -> dict:
    from ..io import commit_files, label_suffix, render_overlay, write_label_store, write_labels, write_overlay
    from ..io.geo import NODATA_LABEL, mask_nodata_labels, nodata_source, read_georeference
    from ..io.sources import ArraySource, TiffSource
    from ..stores import ArrayStore

    reset_peak_rss()
    t_start = time.perf_counter()
    source = opener.open(path)
    try:
        if predictor.network is not None and (args.stream or source.shape[0] * source.shape[1] > STREAM_PIXELS):
            refusal = _streaming_refusal(args)  # (refused before any work with --stream)
            if refusal:
                raise UhrsegError(f"{path}: streaming {refusal}")
            return _process_streamed(predictor, source, path, stem, args, inputs, bar, t_start)
        image = source.read_rows(0, source.shape[0]) if isinstance(source, TiffSource) else source.array
    finally:
        source.close()
    t_read = time.perf_counter() - t_start
    geo = read_georeference(path)
    result = predictor.run(image, args.n_segments)
    labels, n_produced = result.labels, result.n_produced
    if geo is not None:
        n_produced = mask_nodata_labels(ArrayStore(labels), nodata_source(path, ArraySource(image)), geo, n_produced)

    t0 = time.perf_counter()
    if geo is not None:  # a GeoTIFF in, GeoTIFFs out (whatever the label count)
        nodata = None if geo.nodata is None else NODATA_LABEL
        outputs = {args.out / f"{stem}_labels.tif": lambda p: write_label_store(p, ArrayStore(labels),
                                                                                georeference=geo, nodata=nodata)}
    else:
        suffix = label_suffix(labels, args.label_format)
        outputs = {args.out / f"{stem}_labels{suffix}": lambda p: write_labels(p, labels, suffix)}
    if args.overlay != "none":
        # drawn on every core before the encoders start, each of which then takes one core
        overlay = render_overlay(image, labels, threads=usable_cpus())
        outputs[args.out / f"{stem}_overlay.{args.overlay}"] = lambda p: write_overlay(p, overlay, args.overlay)
        if max(labels.shape) > args.preview_side:
            outputs[args.out / f"{stem}_preview.{args.overlay}"] = lambda p: write_overlay(
                p, render_overlay(image, labels, max_side=args.preview_side), args.overlay)
    outputs.update(export_writers(args.out, stem, args.exports, labels, image, n_produced, georeference=geo))
    check_targets(path, outputs, inputs)
    written = commit_files(outputs)
    t_write = time.perf_counter() - t0
    timings = {"read": t_read, **result.timings, "write": t_write, "total": time.perf_counter() - t_start}
    return {
        "file": str(path),
        "outputs": [str(p) for p in written],
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "n_requested": result.n_requested,
        "n_cells": result.n_cells,
        "n_produced": n_produced,
        "refine_smoothness": result.refine_smoothness,
        "streamed": False,
        "georeferenced": geo is not None,
        "seconds": {k: round(v, 4) for k, v in timings.items()},
        "peak_rss_bytes": peak_rss_bytes(),
    }


def _streaming_refusal(args: argparse.Namespace) -> str | None:
    """What in the flags a streamed image cannot do (the end of a sentence that starts "--stream " or "PATH:
    streaming "), or None."""
    if args.label_format not in ("auto", "tiff"):
        return f"writes labels as tiled BigTIFF; --label-format {args.label_format} cannot hold them (use tiff)"
    return None


def _process_streamed(predictor: SuperpixelPredictor, source, path: Path, stem: str, args: argparse.Namespace,
                      inputs: set[Path], bar, t_start: float) -> dict:
    """Bounded-memory path: label map and CIELAB copy in temporary files in the output folder."""
    import numpy as np

    from ..io import commit_files, render_overlay, sample_label_store, write_label_store, write_overlay
    from ..io.geo import NODATA_LABEL, mask_nodata_labels, read_georeference
    from ..stores import FileStore

    height, width = source.shape[:2]
    preview_shape = None
    if args.overlay != "none":  # the only picture of a streamed image (no full-resolution overlay), so always
        scale = min(1.0, args.preview_side / max(height, width))
        preview_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
    geo = read_georeference(path)
    outputs: dict = {args.out / f"{stem}_labels.tif": None}
    if preview_shape:
        outputs[args.out / f"{stem}_preview.{args.overlay}"] = None
    outputs.update({args.out / f"{stem}_regions.{suffix}": None for name, suffix in
                    (("polygons", "gpkg"), ("table", "parquet"), ("csv", "csv")) if name in args.exports})
    check_targets(path, outputs, inputs)
    with tempfile.TemporaryDirectory(prefix=".uhrseg-work-", dir=args.out) as work:
        try:
            labels = FileStore(Path(work) / "labels.i32", (height, width), np.int32)
            lab = FileStore(Path(work) / "lab.u8", (height, width, 3), np.uint8) if predictor.refine_iterations \
                else None
        except OSError as e:
            raise UhrsegError(f"{path}: no room for the temporary label map in {args.out} ({e.strerror or e})") from e
        try:
            result = predictor.run_source(source, args.n_segments, labels, lab, preview_shape=preview_shape,
                                          progress=lambda stage: bar.set_postfix_str(f"{path.name}: {stage}"),
                                          work_dir=work)
            n_produced = result.n_produced
            if geo is not None:
                n_produced = mask_nodata_labels(labels, source, geo, n_produced)
            t0 = time.perf_counter()
            nodata = None if geo is None or geo.nodata is None else NODATA_LABEL
            writers = {args.out / f"{stem}_labels.tif": lambda p: write_label_store(p, labels, georeference=geo,
                                                                                   nodata=nodata)}
            if preview_shape:
                writers[args.out / f"{stem}_preview.{args.overlay}"] = lambda p: write_overlay(p, render_overlay(
                    result.preview, sample_label_store(labels, *preview_shape)), args.overlay)
            writers.update(export_writers(args.out, stem, args.exports, labels, source, n_produced, georeference=geo))
            written = commit_files(writers)
            t_write = time.perf_counter() - t0
        finally:
            labels.close()
            if lab is not None:
                lab.close()
    timings = {**result.timings, "write": t_write, "total": time.perf_counter() - t_start}
    return {
        "file": str(path),
        "outputs": [str(p) for p in written],
        "width": int(width),
        "height": int(height),
        "n_requested": result.n_requested,
        "n_cells": result.n_cells,
        "n_produced": n_produced,
        "refine_smoothness": result.refine_smoothness,
        "streamed": True,
        "georeferenced": geo is not None,
        "seconds": {k: round(v, 4) for k, v in timings.items()},
        "peak_rss_bytes": peak_rss_bytes(),
    }


def run(args: argparse.Namespace) -> int:
    """Execute the sub-command; returns the exit code (0, or 2 when any input failed)."""
    if args.n_segments < 1:
        raise UhrsegError(f"--n-segments must be >= 1, got {args.n_segments}")
    if args.preview_side < 16:
        raise UhrsegError(f"--preview-side must be >= 16 pixels, got {args.preview_side}")
    images = [Path(p) for p in args.images]
    args.exports = parse_exports(args.export)
    if args.refine is not None and args.refine < 0:
        raise UhrsegError(f"--refine must be >= 0, got {args.refine}")
    if not (0 <= (args.refine_smoothness or 0) < math.inf and 0 <= args.refine_compactness < math.inf):  # NaN too
        raise UhrsegError(f"--refine-smoothness and --refine-compactness must be finite and >= 0, got "
                          f"{args.refine_smoothness} "
                          f"and {args.refine_compactness}")
    if args.tile < 1:
        raise UhrsegError(f"--tile must be >= 1, got {args.tile}")
    if args.strip_pixels < 1:
        raise UhrsegError(f"--strip-pixels must be >= 1, got {args.strip_pixels}")
    if args.oversegmentation is not None and (args.method not in ("pcnet", "scn")
                                            or not 1 <= args.oversegmentation < math.inf):
        raise UhrsegError(f"--oversegmentation is for pcnet and scn and must be finite and >= 1, got "
                          f"{args.oversegmentation} "
                          f"with --method {args.method}")
    if args.merge_boundary_weight and (args.method not in ("pcnet", "scn")
                                       or not 0 <= args.merge_boundary_weight < math.inf
                                       or args.oversegmentation == 1):
        raise UhrsegError(f"--merge-boundary-weight is for pcnet and scn with --oversegmentation above 1 and must be "
                          f"finite and >= 0, got {args.merge_boundary_weight} with --method {args.method}"
                          + (" --oversegmentation 1" if args.oversegmentation == 1 else ""))
    if args.merge_texture_weight is not None and (args.method not in ("pcnet", "scn")
                                                  or not 0 <= args.merge_texture_weight < math.inf):
        raise UhrsegError(f"--merge-texture-weight is for pcnet and scn and must be finite and >= 0, got "
                          f"{args.merge_texture_weight} with --method {args.method}")
    if args.precision != "fp32" and args.method not in ("pcnet", "scn"):
        raise UhrsegError(f"--precision {args.precision} is for pcnet and scn, not --method {args.method}")
    if args.precision != "fp32" and args.backend == "opencv":
        raise UhrsegError(f"--precision {args.precision} needs the torch backend; OpenCV's computes in fp32")
    if args.stream and args.method not in ("pcnet", "scn"):
        raise UhrsegError(f"--stream needs pcnet or scn; {args.method} works on the whole image in memory")
    refusal = _streaming_refusal(args) if args.stream else None  # before the network loads (by size: per image)
    if refusal:
        raise UhrsegError(f"--stream {refusal}")
    created_out = not args.out.exists()
    check_ray_options(args)
    if args.ray is not None:  # run_on_ray makes the folder (after the flag checks: a bad flag leaves none)
        from ..distributed import run_on_ray

        return run_on_ray(__name__, args, images, f"{args.method} n={args.n_segments}")
    from ..io import prepare_output_dir

    tune_allocator()  # glibc: large blocks reused from the heap, not mapped and faulted in afresh
    opener = ImageOpener(images)  # the first image decodes while torch, numba and the network load
    process, summary = prepare(args, opener)
    prepare_output_dir(args.out)  # after the flag checks and the network: bad flags or weights leave no folder
    return process_batch(images, args.out, process, summary, f"{args.method} n={args.n_segments}", args.quiet,
                         created_out)


def prepare(args: argparse.Namespace, opener: ImageOpener):
    """Build the predictor once; returns ``(process(path, stem, inputs, bar) -> summary entry, summary header)``,
    used by the local batch loop and by each Ray worker (:mod:`uhrseg.distributed`)."""
    from ..inference.predictor import SuperpixelPredictor

    predictor = SuperpixelPredictor(args.method, device=args.device, backend=args.backend, weights=args.weights,
                                    precision=args.precision,
                                    strip_pixels=args.strip_pixels, refine_iterations=args.refine,
                                    refine_compactness=args.refine_compactness,
                                    refine_smoothness=args.refine_smoothness,
                                    oversegmentation=args.oversegmentation,
                                    merge_boundary_weight=args.merge_boundary_weight,
                                    merge_texture_weight=args.merge_texture_weight, tile=args.tile)
    summary = {
        "method": args.method,
        "device": str(predictor.device),
        "backend": predictor.backend,
        "precision": predictor.precision if args.method in ("pcnet", "scn") else None,
        "weights": str(args.weights) if args.weights else "packaged" if args.method in ("pcnet", "scn") else None,
        "n_segments": args.n_segments,
        "refine_iterations": predictor.refine_iterations,
        "refine_compactness": predictor.refine_compactness,
        "refine_smoothness": "auto" if predictor.refine_smoothness is None else predictor.refine_smoothness,
        "oversegmentation": predictor.oversegmentation,
        "merge_boundary_weight": predictor.merge_boundary_weight,
        "merge_texture_weight": predictor.merge_texture_weight,
    }
    return (lambda path, stem, inputs, bar: _process(predictor, opener, path, stem, args, inputs, bar)), summary
