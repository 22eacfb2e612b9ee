"""Names and default settings that the Python API and the command line share.

Importable without torch, numba, OpenCV or scikit-image, so that ``uhrseg`` builds its argument parser and
starts reading the first image before the heavy libraries are loaded (the modules that use these values
re-export them; ``tests/test_cli.py`` checks that they agree with the registries they name).
"""

from __future__ import annotations

#: Superpixel networks (:data:`uhrseg.models.MODELS`).
NETWORK_METHODS = ("pcnet", "scn")
#: Classical superpixel methods (:data:`uhrseg.classical.CLASSICAL_METHODS`).
CLASSICAL_METHOD_NAMES = ("slic", "watershed", "fh", "cv-slic", "slico", "seeds", "lsc")
#: Every superpixel method of :class:`uhrseg.SuperpixelPredictor`.
METHODS = NETWORK_METHODS + CLASSICAL_METHOD_NAMES

#: Inference backends of the superpixel networks: ``torch`` (any weights, CPU or CUDA), ``opencv`` (the packaged
#: PCNet and SCN through their ONNX export with OpenCV's DNN module, CPU, no torch import), and ``auto``.
BACKENDS = ("auto", "torch", "opencv")
#: Arithmetic of the superpixel networks on the torch backend: float32, or autocast to bfloat16 / float16
#: (uhrseg.inference.network.cell_id_map gives what each measured).
INFERENCE_PRECISIONS = ("fp32", "bf16", "fp16")
#: Output pixels per strip of a superpixel network's head (2**18 since 2026-12-06: the same time as 2**19 with the
#: CLI's allocator settings, :func:`uhrseg.memory.tune_allocator`, and half the memory for the head's layers).
DEFAULT_STRIP_PIXELS = 2**18
#: Trunk tile of a superpixel network, network-input pixels.
DEFAULT_TILE = 512
#: Passes of the full-resolution boundary refinement used by the network methods (chosen with the compactness
#: and smoothness on BSDS500 val for the packaged PCNet: ``docs/results/refine-tuning/``).
DEFAULT_REFINE_ITERATIONS = 8
#: ``m`` of the refinement's distance: weight of the distance to a superpixel's centroid (SLIC's default is 10;
#: 2.5 since 2026-12-06: on BSDS500 val at n = 600, at any smoothness, it has more BR at the same BP than 5 or 10).
DEFAULT_COMPACTNESS = 2.5
#: ``lambda`` of the refinement's distance: cost per 8-neighbour of another superpixel, squared 8-bit Lab units.
#: 150 since the packaged PCNet of 2026-12-06 (ninth session): on BSDS500 val at n = 600 the setting with the most
#: BP whose BR still leads every classical method's by 0.01 and whose BP is no lower than any of theirs
#: (``docs/results/refine-tuning/``; 125 before); the same rule picks 150 for the tenth session's file.
DEFAULT_SMOOTHNESS = 150.0
#: How the default ``lambda`` falls as the network's labels are upsampled to the image: ``lambda = 150 f ** -1/3``
#: for ``f`` image pixels per network-output pixel (:func:`resolution_smoothness`). Since 2026-12-06 (eleventh
#: session). The colour term of the refinement compares single pixels, and at a finer resolution neighbouring
#: pixels differ less (mean squared 4-neighbour difference in 8-bit Lab: BSDS500 val 369, Semantic Drone test 181,
#: DeepGlobe test 67), so a fixed ``lambda`` smooths high-resolution images more than BSDS500's. Chosen on splits
#: outside the reports' test sets, at n = 600 with the tenth session's ``pcnet.pt``: on the 8 DeepGlobe train tiles
#: (f 6.4, lambda 81) BR / BP / ASA 0.304 / 0.0318 / 0.9438 -> 0.374 / 0.0306 / 0.9419, which turns OpenCV SLIC's
#: lead on BR there (0.311) into PCNet's, ASA still above SEEDS's 0.9405; on 30 Semantic Drone ``more/`` frames
#: (f 3.1, lambda 103) 0.517 / 0.114 / 0.9329 -> 0.549 / 0.110 / 0.9331 (``docs/results/refine-tuning/``). BSDS500
#: at n = 600 has f = 1.003 and keeps 149.9.
SMOOTHNESS_UPSAMPLING_EXPONENT = 1.0 / 3.0

#: How many more cells than asked a superpixel network makes before the most similar adjacent superpixels are
#: merged back to ``n_segments`` (:func:`uhrseg.grid.merge_superpixels`, Ward's cost on 8-bit CIELAB). 1.5 since
#: 2026-12-06 (twelfth session); 1 turns merging off (the papers' networks). Chosen at n = 600 with the tenth
#: session's ``pcnet.pt`` on splits outside the reports' test sets (BR / BP / ASA, ``docs/results/refine-tuning/``):
#: BSDS500 val 0.858 / 0.1125 / 0.9639 -> 0.869 / 0.1166 / 0.9649 (2: 0.875 / 0.1180 / 0.9645); 30 Semantic Drone
#: ``more/`` frames 0.549 / 0.1095 / 0.9331 -> 0.565 / 0.1150 / 0.9395 (SEEDS 0.9393 at K 620; 2: ASA 0.9424); 8
#: DeepGlobe train tiles 0.374 / 0.0306 / 0.9419 -> 0.381 / 0.0316 / 0.9438 (2: ASA 0.9417). The network's time
#: grows with the cells it makes: about 1.5x at 1.5.
DEFAULT_OVERSEGMENTATION = 1.5
#: Weight of the texture feature in that merge (:func:`uhrseg.grid.colour.fill_texture`): Ward's cost is taken on
#: the mean 8-bit CIELAB and the mean of ``w |grad L|`` (Sobel, in 8-bit L units per pixel of the network's
#: output grid), so that two flat regions of one colour merge before a flat and a textured one (grass and trees,
#: a roof and gravel). 0.75 since 2026-12-07 (twenty-fifth session), chosen at n = 600 with the packaged
#: ``pcnet.pt`` on the validation splits (BR / BP / ASA, 0 -> 0.75; ``docs/results/refine-tuning/``, "A texture
#: feature in the merge"): BSDS500 val 0.8689 / 0.1163 / 0.9646 -> 0.8697 / 0.1171 / 0.9651, 30 Semantic Drone
#: ``more/`` frames 0.5663 / 0.1148 / 0.9390 -> 0.5670 / 0.1152 / 0.9396, 8 DeepGlobe train tiles 0.3868 /
#: 0.0316 / 0.9434 -> 0.3870 / 0.0316 / 0.9437; the only weight of 0.5, 0.75, 1 and 1.5 level or better on every
#: column of the three. The class-map bridge keeps 0 (:class:`uhrseg.semantic.ClassRefinement`).
DEFAULT_MERGE_TEXTURE_WEIGHT = 0.75


def check_precision_name(precision: str, allowed: tuple[str, ...] = INFERENCE_PRECISIONS) -> str:
    """Return ``precision`` if it is one of ``allowed`` (default :data:`INFERENCE_PRECISIONS`), without importing
    torch (:func:`uhrseg.inference.network.check_inference_precision` also asks the device).

    Raises
    ------
    ValueError
        For any other value.
    """
    if precision not in allowed:
        raise ValueError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return precision


def resolution_smoothness(upsampling: float, smoothness: float = DEFAULT_SMOOTHNESS) -> float:
    """The refinement's default ``lambda`` for network labels upsampled ``upsampling`` times to the image.

    ``smoothness * max(1, upsampling) ** -SMOOTHNESS_UPSAMPLING_EXPONENT`` (see
    :data:`SMOOTHNESS_UPSAMPLING_EXPONENT` for why and how it was chosen).

    Parameters
    ----------
    upsampling : float
        Image pixels per network-output pixel along each axis, ``sqrt(H W / (h w))`` for an ``H x W`` image and
        an ``h x w`` output grid (about ``sqrt(H W / n) / 16`` for PCNet at ``n`` superpixels).
    smoothness : float
        ``lambda`` at the network's own resolution, squared 8-bit Lab units per 8-neighbour.

    Returns
    -------
    float
        ``lambda`` for the image, squared 8-bit Lab units per 8-neighbour.

    Raises
    ------
    ValueError
        If ``upsampling`` is not positive or ``smoothness`` is negative.
    """
    if not upsampling > 0 or smoothness < 0:
        raise ValueError(f"upsampling must be > 0 and smoothness >= 0, got {upsampling} and {smoothness}")
    return smoothness * max(1.0, upsampling) ** -SMOOTHNESS_UPSAMPLING_EXPONENT


#: ``lambda`` of the network superpixels' refinement when they sharpen a class map (``ClassRefinement``): there
#: a class boundary missing from the superpixels is lost while extra superpixel boundaries cost nothing, so
#: recall matters more than precision. On the first 5 Semantic Drone ``more`` frames (not the test split), ISDNet
#: then the packaged PCNet, boundary IoU at r = 1: 0.0265 at 100 against 0.0262 at 150 and 0.0259 at 125 (50:
#: 0.0267, with 0.15 points less mIoU); ``docs/results/refine-tuning/report.md``.
DEFAULT_BRIDGE_SMOOTHNESS = 100.0
#: The bridge's network superpixels (``ClassRefinement`` with PCNet or SCN): ``H W / 1024`` superpixels made from
#: 1.5 times as many grid cells, the most similar neighbours merged (:class:`uhrseg.SuperpixelPredictor`'s
#: ``oversegmentation``). Before 2026-12-06 (seventeenth session) the default was ``H W / 512`` grid cells, not
#: merged. Measured against it with the packaged ISDNet and MagNet, mIoU / boundary IoU at r = 1 (%):
#: Semantic Drone test ISDNet 22.73 / 1.94 -> 22.80 / 2.12, MagNet 26.96 / 2.35 -> 27.39 / 2.71; DeepGlobe test
#: ISDNet 42.45 / 0.77 -> 42.51 / 0.86, MagNet 46.70 / 0.75 -> 46.92 / 0.87; the first 30 Semantic Drone ``more``
#: frames ISDNet 25.69 -> 25.70, MagNet 30.50 -> 31.07; the first 10, ISDNet 23.58 -> 23.72, MagNet 28.71 ->
#: 28.66 (the one loss, 0.05 points). ISDNet's seconds per image fell 9-20 %; MagNet's 1-7 %
#: (``docs/results/*-bridge-merge``).
DEFAULT_BRIDGE_PIXELS_PER_SUPERPIXEL = 1024
DEFAULT_BRIDGE_OVERSEGMENTATION = 1.5
#: Weight of the texture feature in that merge when superpixels sharpen a class map (``ClassRefinement``; the
#: superpixel commands use :data:`DEFAULT_MERGE_TEXTURE_WEIGHT`). 0: colour alone. Measured in the twenty-sixth
#: session on the tuning splits (mIoU / boundary IoU at r = 1, %, 0 -> 0.75): first 30 Semantic Drone ``more``
#: frames ISDNet 25.85 / 2.07 -> 25.96 / 2.04, MagNet 30.78 / 2.48 -> 31.06 / 2.49; DeepGlobe train ISDNet
#: 70.73 / 2.08 -> 70.66 / 2.05, MagNet 67.82 / 1.67 -> 67.93 / 1.66; no consistent gain, so the bridge keeps 0
#: (``docs/results/refine-tuning/report.md``, "The texture in the class-map bridge").
DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT = 0.0
#: Classical superpixels in the bridge: ``H W / 512`` (the best of 1500, 3000 and 6000 on 5 Semantic Drone ``more``
#: frames with PCNet's grid, which they replace), not merged.
DEFAULT_BRIDGE_CLASSICAL_PIXELS_PER_SUPERPIXEL = 512
#: Label map encodings: ``auto`` is a 16-bit PNG when the ids fit in 16 bits, else a (Big)TIFF.
LABEL_FORMATS = ("auto", "png", "tiff", "npy")
#: Region exports of the commands (``--export``): polygons (GeoPackage), table (Parquet), csv.
EXPORTS = ("polygons", "table", "csv")
#: Overlay and preview encodings of the commands: JPEG (quality 95, no chroma subsampling: 0.2 s for a 5K
#: overlay against 1.9 s for PNG), lossless PNG, or none.
OVERLAY_FORMATS = ("jpg", "png", "none")

#: Inference modes of :class:`uhrseg.SemanticPredictor`.
MODES = ("auto", "whole", "tiled", "slide", "magnet")
#: MagNet variants (Huynh et al., CVPR 2021): all scales, or the coarsest and the finest (MagNet-Fast).
MAGNET_MODELS = ("magnet", "magnet-fast")
#: Segmentation networks (:data:`uhrseg.models.SEGMENTERS`) and the MagNet variants.
SEMANTIC_MODELS = ("isdnet", "deeppath") + MAGNET_MODELS
#: Full-resolution tile core of the tiled semantic mode, pixels.
DEFAULT_SEMANTIC_TILE = 2048

#: Refinements of class maps (:func:`uhrseg.semantic.refine_classes`).
REFINEMENTS = ("none", "bilinear", "guided", "superpixels")
