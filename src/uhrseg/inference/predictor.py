"""The public inference API: :class:`SuperpixelPredictor` and :func:`superpixels`."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import math
import os
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

from ..classical import classical_superpixels
from ..defaults import (
    BACKENDS,
    DEFAULT_COMPACTNESS,
    DEFAULT_MERGE_TEXTURE_WEIGHT,
    DEFAULT_OVERSEGMENTATION,
    DEFAULT_REFINE_ITERATIONS,
    DEFAULT_SMOOTHNESS,
    DEFAULT_STRIP_PIXELS,
    DEFAULT_TILE,
    METHODS,
    NETWORK_METHODS,
    check_precision_name,
    resolution_smoothness,
)
from ..errors import WeightsNotFoundError
from ..grid.colour import fill_texture, lab8
from ..grid.geometry import CellGrid
from ..grid.merge import merge_superpixels
from ..grid.warmup import start_warm_up
from ..io.images import as_rgb, to_uint8
from ..io.sources import ArraySource
from ..memory import release_free_memory
from ..stores import ArrayStore, FileStore, rows_of
from ..threads import for_each_band, usable_cpus
from .opencv_dnn import (AUTO_OPENCV_METHODS, OPENCV_METHODS, OpenCVNetwork, packaged_export_name,
                          packaged_export_names, packaged_name, packaged_onnx_path)
from .resize import AreaAccumulator, nearest_index, network_inputs, output_grid, sampled_cell_ids

# torch (1.0-1.5 s to import) is imported where the torch backend needs it, so that the OpenCV backend and
# the classical methods run without it.

__all__ = ["BACKENDS", "DEFAULT_BAND_ROWS", "METHODS", "NETWORK_METHODS", "SourceResult", "SuperpixelPredictor",
           "SuperpixelResult", "resolve_backend", "resolve_device", "superpixels", "torch_may_see_gpu",
           "validate_n_segments"]

#: Full-resolution rows per band of the upsampling and refinement passes.
DEFAULT_BAND_ROWS = 1024


def resolve_device(device: "str | torch.device" = "auto") -> "torch.device":
    """Turn ``"auto"``, ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``) into a ``torch.device``.

    ``auto`` picks CUDA when available, else the CPU.

    Raises
    ------
    ValueError
        If the name is not one of these, or CUDA is asked for and not available.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this torch build sees no CUDA GPU; "
                             "use --device cpu or auto")
        return torch.device(device)
    raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")


def torch_may_see_gpu() -> bool:
    """Whether torch could see a GPU here, told without importing it: ``False`` when torch is not installed,
    when ``torch/version.py`` says it was built for the CPU only, or (Linux) when no GPU device file exists for
    its build (``/dev/nvidia0``... for CUDA, ``/dev/kfd`` for ROCm) or ``CUDA_VISIBLE_DEVICES`` hides every
    GPU; ``True`` otherwise, including whenever it cannot be told."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return True
    found = dict(re.findall(r"^(cuda|hip|xpu)\b[^=\n]*=\s*(.+?)\s*$", text, flags=re.M))
    # torch 2.4 has no xpu entry; cuda and hip are in every version this package supports
    if not {"cuda", "hip"} <= set(found):
        return True
    built = {name for name, value in found.items() if value != "None"}
    if not built:
        return False
    if sys.platform != "linux" or "xpu" in built:
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    cuda = "cuda" in built and bool(glob.glob("/dev/nvidia[0-9]*"))
    rocm = "hip" in built and os.path.exists("/dev/kfd")
    return cuda or rocm


def resolve_backend(backend: str, method: str, device: str = "auto",
                    weights: str | os.PathLike | None = None) -> str:
    """The backend a network method runs on: ``"torch"`` or ``"opencv"``.

    ``auto`` takes ``opencv`` for PCNet weights that ship with an ONNX export (the packaged ones, and the named
    ``pcnet-aerial`` and ``pcnet-aerial-fast``: :func:`uhrseg.inference.opencv_dnn.packaged_export_name`) when
    the device is the CPU: ``device="cpu"``, or ``"auto"`` where torch would see no GPU (:func:`torch_may_see_gpu`:
    a CPU-only build, or no GPU device); otherwise ``torch`` (SCN too:
    :data:`uhrseg.inference.opencv_dnn.AUTO_OPENCV_METHODS`).

    Raises
    ------
    ValueError
        If ``backend`` is unknown, or ``opencv`` is asked for another method, weights without a packaged export
        or a GPU device.
    uhrseg.errors.WeightsNotFoundError
        If ``opencv`` is asked for the packaged weights and the installed package lacks their export.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    device = str(device)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        on_cpu = device == "cpu" or (device == "auto" and not torch_may_see_gpu())
        usable = method in AUTO_OPENCV_METHODS and packaged_export_name(method, weights) is not None
        return "opencv" if on_cpu and usable else "torch"
    if method not in OPENCV_METHODS:
        raise ValueError(f"the opencv backend runs {' and '.join(OPENCV_METHODS)}, not {method!r}")
    if weights is not None and packaged_export_name(method, weights) is None:
        raise ValueError(f"the opencv backend runs {method} weights with a packaged ONNX export only "
                         f"({', '.join(packaged_export_names(method)) or 'none installed'}); use the torch backend "
                         f"for {weights}")
    if device not in ("auto", "cpu"):
        raise ValueError(f"the opencv backend runs on the CPU, not on {device!r}")
    if weights is None and not packaged_onnx_path(method).is_file():
        raise WeightsNotFoundError(f"{packaged_onnx_path(method)}: the ONNX export of {method} is not installed")
    return "opencv"


def validate_n_segments(n_segments: int, shape: tuple[int, ...]) -> int:
    """Check a requested superpixel count against an image size.

    Returns
    -------
    int
        ``n_segments`` as int.

    Raises
    ------
    ValueError
        If ``n_segments < 1`` or more than a quarter of the ``H * W`` pixels (superpixels of fewer than 4
        pixels on average are not superpixels).
    """
    if isinstance(n_segments, bool) or not isinstance(n_segments, (int, np.integer)):
        raise ValueError(f"n_segments must be an integer, got {n_segments!r}")
    n = int(n_segments)
    if n < 1:
        raise ValueError(f"n_segments must be >= 1, got {n}")
    limit = shape[0] * shape[1] // 4
    if n > limit:
        raise ValueError(f"n_segments={n} is more than a quarter of the {shape[1]} x {shape[0]} image's pixels "
                         f"(at most {limit})")
    return n


@dataclass
class SuperpixelResult:
    """Labels and what it took to make them.

    Attributes
    ----------
    labels : (H, W) ndarray of int32
        Superpixel labels, 0-based and contiguous, each one 4-connected component.
    n_requested : int
        ``n_segments`` as asked.
    n_cells : int
        Seeds the method started from (grid cells for the networks; the requested count for classical methods).
    timings : dict of str to float
        Seconds per stage (``resize``, ``network``, ``assign`` for networks, ``segment`` for classical
        methods, then ``connectivity`` and ``refine``).
    refine_smoothness : float or None
        ``lambda`` the boundary refinement used (:meth:`SuperpixelPredictor.smoothness_for`), None when it did
        not run.
    """

    labels: np.ndarray
    n_requested: int
    n_cells: int
    timings: dict[str, float] = field(default_factory=dict)
    refine_smoothness: float | None = None

    @property
    def n_produced(self) -> int:
        """Number of superpixels in :attr:`labels`."""
        return int(self.labels.max()) + 1


@dataclass
class SourceResult:
    """What :meth:`SuperpixelPredictor.run_source` reports; the labels are in the store it was given.

    Attributes
    ----------
    n_requested, n_cells, n_produced : int
        ``n_segments`` as asked, grid cells, and superpixels ``K`` in the label store (ids ``0 .. K-1``).
    timings : dict of str to float
        Seconds per stage: ``resize`` (reading the source, the network input and the CIELAB copy),
        ``network``, ``connectivity``, ``merge`` (when the predictor oversegments), ``upsample``, ``refine``.
    preview : (h, w, 3) ndarray of uint8 or None
        The image area-averaged to the asked preview size, made during the same pass over the source.
    refine_smoothness : float or None
        ``lambda`` the boundary refinement used (:meth:`SuperpixelPredictor.smoothness_for`), None when it did
        not run.
    """

    n_requested: int
    n_cells: int
    n_produced: int
    timings: dict[str, float] = field(default_factory=dict)
    preview: np.ndarray | None = None
    refine_smoothness: float | None = None


def _merge_weight(name: str, value: float, method: str) -> float:
    """A weight of the networks' merge (``merge_boundary_weight``, ``merge_texture_weight``) as a float.

    Raises
    ------
    ValueError
        If it is not 0 for a classical method, or is negative or not finite.
    """
    if value and method not in NETWORK_METHODS:
        raise ValueError(f"method {method!r} takes no {name} (networks only)")
    if not 0.0 <= value < math.inf:  # NaN too
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return float(value)


def _weights_file(weights: str | os.PathLike) -> Path:
    """A checkpoint path, or the name of extra weights shipped in the package (e.g. ``"pcnet-aerial"``).

    Raises
    ------
    WeightsNotFoundError
        A bare name (no folder, no suffix) that is neither a file nor a packaged superpixel network; the message
        lists the packaged names.
    """
    from ..models.checkpoint import packaged_weights_path

    name = packaged_name(weights)
    if name is not None:
        packaged = packaged_weights_path(name)
        if packaged.is_file():
            return packaged
        names = sorted(p.stem for p in packaged.parent.glob("*.pt") if p.stem.startswith(NETWORK_METHODS))
        raise WeightsNotFoundError(f"{name}: neither a weights file nor a packaged name ({', '.join(names)})")
    return Path(weights)


class SuperpixelPredictor:
    """Keeps one method (and its loaded network) ready for many images.

    Hides everything between the user's image and full-resolution labels: channel layout, dtype, resizing to
    the network's grid, mean subtraction, device transfers, padding, strip-wise inference, mapping back to the
    image size and connectivity enforcement.

    A network predictor loads (or, the first time after an install, compiles) the pipeline's numba kernels in a
    background thread from its creation on (:mod:`uhrseg.grid.warmup`). When numba's cache lacks the
    refinement's sweep, on Linux, that thread forks one short-lived child process which compiles it into the
    cache and exits (:func:`uhrseg.grid.warmup.compile_in_child`); nothing is forked once the cache holds it.

    Parameters
    ----------
    method : str
        ``"pcnet"`` (default), ``"scn"``, or a classical method of :data:`uhrseg.classical.CLASSICAL_METHODS`.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (networks only; classical methods run on the CPU).
    backend : str
        How a network runs (:data:`BACKENDS`, :func:`resolve_backend`): ``"torch"`` (default; any weights, CPU
        or CUDA), ``"opencv"`` (the packaged PCNet or SCN, or ``weights="pcnet-aerial"`` or
        ``"pcnet-aerial-fast"``, with OpenCV's DNN module on the CPU, without importing torch; not bit-identical:
        PCNet's superpixels differed from torch's at 829 of 93 million pixels over 210 real images, see
        :mod:`uhrseg.inference.opencv_dnn`) or ``"auto"``
        (``opencv`` where :func:`resolve_backend` says, as the command line does, and ``torch`` if the installed
        OpenCV cannot read the export).
    weights : path-like, optional
        Checkpoint to use instead of the packaged weights (networks only), or the name of other weights
        shipped in the package: ``"pcnet-aerial"`` (PCNet fine-tuned on aerial frames), ``"pcnet-aerial-fast"``
        (its head distilled at half the cost) or ``"pcnet-large"`` (the default PCNet until 2026-12-07, whose head
        the packaged one distils at half the cost; see ``uhrseg/weights/README.md``). The OpenCV backend runs the
        packaged weights, ``"pcnet-aerial"`` and ``"pcnet-aerial-fast"`` (their ONNX exports ship in the package);
        other weights run on the torch backend.
    precision : str
        Arithmetic of the network on the torch backend (networks only): ``"fp32"`` (default), ``"bf16"`` or
        ``"fp16"`` (:func:`torch.autocast`; :func:`uhrseg.inference.cell_id_map`, which gives the measured speed
        and quality). The OpenCV backend computes in float32, so ``backend="auto"`` takes torch for the other
        two.
    strip_pixels : int
        Output pixels per strip of the network head: the memory/speed trade-off of large images.
    refine_iterations : int, optional
        Passes of full-resolution boundary refinement (:func:`uhrseg.grid.refine_boundaries`) after the
        connectivity step. Default: 8 for the networks, whose labels come from a coarser grid, and 0 (off)
        for the classical methods, which already work at full resolution.
    refine_compactness : float
        ``m`` of the refinement's distance (:func:`uhrseg.grid.refine_boundaries`; default
        :data:`uhrseg.defaults.DEFAULT_COMPACTNESS`, 2.5, chosen with the 8 passes on BSDS500 val for the
        packaged PCNet, ``docs/results/refine-tuning/``).
    refine_smoothness : float, optional
        ``lambda`` of the refinement's distance, squared 8-bit Lab units per 8-neighbour, used as given for every
        image. Default (None): it depends on the image, 150 at the network's own resolution and less as its
        labels are upsampled more (:meth:`smoothness_for`, :func:`uhrseg.defaults.resolution_smoothness`). A
        smaller ``lambda`` moves along the BR-BP curve towards recall: on BSDS500 val at n = 600 with 8 passes,
        the tenth session's PCNet has BR 0.866 / BP 0.110 at 125, 0.858 / 0.113 at 150 and 0.851 / 0.114 at 175.
    oversegmentation : float, optional
        Networks only: make ``round(oversegmentation * n_segments)`` grid cells (at most a quarter of the
        pixels), then merge the most similar adjacent superpixels back to ``n_segments`` on the network's output
        grid, before upsampling and refinement (:func:`uhrseg.grid.merge_superpixels`, Ward's cost on 8-bit
        CIELAB). Default (None): :data:`uhrseg.defaults.DEFAULT_OVERSEGMENTATION` (1.5) for the networks, which
        moves superpixels from flat regions to detailed ones (higher BR, BP and ASA at the same ``K``) for about
        1.45x the network's time; 1 makes ``K`` close to ``n_segments`` grid cells as in the papers.
    merge_boundary_weight : float
        Networks only: ``boundary_weight`` of that merge (:func:`uhrseg.grid.merge_superpixels`): 0 (default) is
        Ward's cost; ``lambda > 0`` subtracts ``lambda`` times the boundary two superpixels share, in image pixels
        (a Mumford-Shah energy), so long boundaries through flat regions go first: fewer boundaries in
        homogeneous areas, higher boundary precision for lower recall. On DeepGlobe land cover at ``n = 600``,
        ``oversegmentation=3``, ``merge_boundary_weight=3000`` and ``refine_smoothness=150`` raise BP above
        Felzenszwalb's (``docs/results/refine-tuning/report.md``, "Merge costs that see the boundary").
    merge_texture_weight : float, optional
        Networks only: the merge's features are the 8-bit CIELAB and ``round(w |grad L|)`` (lightness gradient in
        8-bit L units per output pixel; :func:`uhrseg.grid.colour.fill_texture`), so that Ward's cost keeps flat
        and textured regions of one colour apart; 0 is colour alone (the default before 2026-12-07, and the
        bridge's: :class:`uhrseg.semantic.ClassRefinement`). Default (None):
        :data:`uhrseg.defaults.DEFAULT_MERGE_TEXTURE_WEIGHT` (0.75) for the networks, chosen on the validation
        splits (BR, BP and ASA each up by 0.0002-0.0009 on BSDS500 val, 30 drone ``more/`` frames and DeepGlobe
        train, or level).
    tile : int
        Trunk tile core in network-input pixels (:func:`uhrseg.inference.cell_id_map`): bounds the trunk's
        memory; the labels do not depend on it.
    band_rows : int
        Full-resolution rows per band of the upsampling and refinement passes; the labels do not depend on it.

    Attributes
    ----------
    backend : str or None
        ``"torch"`` or ``"opencv"`` for the networks, ``None`` for the classical methods.
    network : SuperpixelNet, OpenCVNetwork or None
        What runs the network (``None`` for the classical methods); :attr:`model` is the torch model, or
        ``None`` on the OpenCV backend.
    device : torch.device or str
        The torch device, or ``"cpu"`` on the OpenCV backend and for the classical methods.

    Raises
    ------
    ValueError
        If the method, device, backend or precision is unknown, weights, an ``oversegmentation``, a
        ``merge_boundary_weight`` or a precision other than ``"fp32"`` are given for a classical method,
        ``oversegmentation < 1``, a nonzero ``merge_texture_weight`` is given for a classical method,
        ``merge_texture_weight`` or ``merge_boundary_weight`` is negative or not finite, the latter given with
        ``oversegmentation=1`` (which merges nothing), the OpenCV backend is
        asked for with another precision than ``"fp32"``, the device cannot run the precision (bf16 on a GPU
        without bfloat16), ``refine_iterations`` is negative, ``refine_compactness`` or ``refine_smoothness``
        is negative or not finite, or ``strip_pixels``, ``tile`` or ``band_rows`` is below 1.
    uhrseg.errors.WeightsNotFoundError
        If the network's weights are not packaged (or ``weights`` does not exist).
    uhrseg.errors.CheckpointError
        If the weights file is corrupt or for another model.

    Examples
    --------
    >>> from uhrseg import SuperpixelPredictor
    >>> predictor = SuperpixelPredictor("slic")
    >>> import numpy as np
    >>> labels = predictor.predict(np.zeros((64, 96, 3), np.uint8), n_segments=24)
    >>> labels.shape, labels.dtype
    ((64, 96), dtype('int32'))
    """

    def __init__(self, method: str = "pcnet", *, device: str = "auto", backend: str = "torch",
                 weights: str | os.PathLike | None = None, precision: str = "fp32",
                 strip_pixels: int = DEFAULT_STRIP_PIXELS, refine_iterations: int | None = None,
                 refine_compactness: float = DEFAULT_COMPACTNESS, refine_smoothness: float | None = None,
                 oversegmentation: float | None = None, merge_boundary_weight: float = 0.0,
                 merge_texture_weight: float | None = None, tile: int = DEFAULT_TILE,
                 band_rows: int = DEFAULT_BAND_ROWS) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if refine_iterations is None:
            refine_iterations = DEFAULT_REFINE_ITERATIONS if method in NETWORK_METHODS else 0
        if refine_iterations < 0:
            raise ValueError(f"refine_iterations must be >= 0, got {refine_iterations}")
        self.refine_iterations = int(refine_iterations)
        if not (0 <= refine_compactness < math.inf and 0 <= (refine_smoothness or 0) < math.inf):  # NaN too
            raise ValueError(f"refine_compactness and refine_smoothness must be finite and >= 0, got "
                             f"{refine_compactness} and "
                             f"{refine_smoothness}")
        self.refine_compactness = float(refine_compactness)
        self.refine_smoothness = None if refine_smoothness is None else float(refine_smoothness)
        if strip_pixels < 1 or tile < 1 or band_rows < 1:
            raise ValueError(f"strip_pixels, tile and band_rows must be >= 1, got {strip_pixels}, {tile}, {band_rows}")
        if oversegmentation is not None and method not in NETWORK_METHODS:
            raise ValueError(f"method {method!r} takes no oversegmentation (networks only)")
        if oversegmentation is None:
            oversegmentation = DEFAULT_OVERSEGMENTATION if method in NETWORK_METHODS else 1.0
        if not 1.0 <= oversegmentation < math.inf:  # NaN too
            raise ValueError(f"oversegmentation must be finite and >= 1, got {oversegmentation}")
        self.oversegmentation = float(oversegmentation)
        self.merge_boundary_weight = _merge_weight("merge_boundary_weight", merge_boundary_weight, method)
        if self.merge_boundary_weight and self.oversegmentation == 1.0:
            raise ValueError("merge_boundary_weight needs oversegmentation > 1 (with 1 nothing is merged)")
        if merge_texture_weight is None:
            merge_texture_weight = DEFAULT_MERGE_TEXTURE_WEIGHT if method in NETWORK_METHODS else 0.0
        self.merge_texture_weight = _merge_weight("merge_texture_weight", merge_texture_weight, method)
        self.method = method
        self.strip_pixels = int(strip_pixels)
        self.tile = int(tile)
        self.band_rows = int(band_rows)
        self.model = None
        self.network = None
        self.backend = None
        self._warm_up = None
        self.device = "cpu"
        if check_precision_name(precision) != "fp32":
            if method not in NETWORK_METHODS:
                raise ValueError(f"method {method!r} takes no precision (networks only)")
            if backend == "opencv":
                raise ValueError(f"the opencv backend computes in float32; use backend 'torch' for {precision}")
            if backend == "auto":
                backend = "torch"
        self.precision = precision
        if method in NETWORK_METHODS:
            self.backend = resolve_backend(backend, method, device, weights)
            if self.backend == "opencv":
                # numba's import, its one-time start-up and the kernels' cache loads (0.5 s; their compilation,
                # about 1.8 s of CPU, in a process's first run after an install: on Linux the refinement's sweep
                # in a forked child, with OpenCV on one thread fewer meanwhile) run in the background while the
                # network loads, the caller reads its image and the network runs; run_source waits for them
                # before the connectivity step. On the torch backend
                # they start after torch's import (below), not beside it.
                self._warm_up = start_warm_up(refinement=self.refine_iterations > 0)
                try:
                    self.network = OpenCVNetwork.packaged(method, packaged_export_name(method, weights))
                except WeightsNotFoundError:
                    if backend != "auto":
                        raise
                    self.backend = "torch"  # e.g. an OpenCV too old for the graphs: auto falls back
            if self.backend == "torch":
                from ..models.checkpoint import load_model, load_packaged_model
                from .network import check_inference_precision, inference_model

                self.device = resolve_device(device)
                check_inference_precision(precision, self.device)  # bf16 on a GPU without it: refused here
                model = (load_model(_weights_file(weights), expected=method) if weights is not None
                         else load_packaged_model(method))
                self.model = self.network = inference_model(model.to(self.device))
                if self._warm_up is None:  # (already running when an OpenCV export failed to load)
                    self._warm_up = start_warm_up(refinement=self.refine_iterations > 0)
        else:
            if weights is not None:
                raise ValueError(f"method {method!r} takes no weights")
            if backend not in BACKENDS:
                raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")

    def smoothness_for(self, height: int, width: int, n_segments: int) -> float:
        """``lambda`` of the boundary refinement for an ``height x width`` image at ``n_segments``.

        The ``refine_smoothness`` given to the constructor if any; else, for the networks,
        :func:`uhrseg.defaults.resolution_smoothness` of the upsampling from the network's output grid
        (:func:`uhrseg.inference.resize.output_grid`) to the image, and for the classical methods, which work
        at full resolution, :data:`uhrseg.defaults.DEFAULT_SMOOTHNESS`.

        Returns
        -------
        float
            Squared 8-bit Lab units per 8-neighbour.

        Raises
        ------
        ValueError
            If ``n_segments`` is out of range for the image.
        """
        if self.refine_smoothness is not None or self.network is None:
            return self._smoothness_on(height, width, None)
        n = validate_n_segments(n_segments, (height, width))
        return self._smoothness_on(height, width, output_grid(height, width, self.cells_for(height, width, n),
                                                              self.network.cell_size))

    def cells_for(self, height: int, width: int, n_segments: int) -> int:
        """Superpixels the network is asked for before merging: ``round(oversegmentation * n_segments)``, at
        most a quarter of the ``height x width`` pixels (:func:`validate_n_segments`), and never fewer than
        ``n_segments``."""
        return max(int(n_segments), min(int(round(self.oversegmentation * n_segments)), height * width // 4))

    def _smoothness_on(self, height: int, width: int, grid: CellGrid | None) -> float:
        """:meth:`smoothness_for` once the network's output ``grid`` is known (None for the classical methods)."""
        if self.refine_smoothness is not None:
            return self.refine_smoothness
        if grid is None:
            return DEFAULT_SMOOTHNESS
        return resolution_smoothness(float(np.sqrt(height * width / (grid.height * grid.width))))

    def run(self, image: np.ndarray, n_segments: int, *, connectivity: bool = True) -> SuperpixelResult:
        """Compute superpixels and report the timings.

        Parameters
        ----------
        image : (H, W), (H, W, 3) or (H, W, 4) ndarray
            Gray, RGB or RGBA image, uint8, uint16 or float in [0, 1].
        n_segments : int
            Requested number of superpixels, from 1 to a quarter of the pixels.
        connectivity : bool
            Apply the connectivity step and the boundary refinement (on by default; off returns the raw cell
            ids / library labels).

        Returns
        -------
        SuperpixelResult

        Raises
        ------
        ValueError
            If the image has an unsupported shape or zero pixels, or ``n_segments`` is out of range.
        """
        image = as_rgb(image)
        n = validate_n_segments(n_segments, image.shape)
        timings: dict[str, float] = {}
        if self.network is not None and connectivity:
            labels = ArrayStore.empty(image.shape[:2], np.int32)  # allocated after the network has run
            lab = ArrayStore(np.empty(image.shape, np.uint8)) if self.refine_iterations else None
            info = self.run_source(ArraySource(image), n, labels, lab)
            return SuperpixelResult(labels.array, n, info.n_cells, info.timings, info.refine_smoothness)
        if self.network is not None:
            raw, grid, t = sampled_cell_ids(image, n, self.network.cell_size, self.network.upscale,
                                            self._cell_id_map, self._guided)
            return SuperpixelResult(raw, n, grid.n_cells, dict(resize=t.resize, network=t.network, assign=t.assign))
        from ..grid.connectivity import connectivity_bounds, enforce_connectivity
        from ..grid.refine import refine_boundaries

        t0 = time.perf_counter()
        raw = classical_superpixels(to_uint8(image), n, self.method)
        timings["segment"] = time.perf_counter() - t0
        n_cells = n
        min_size, max_size = connectivity_bounds(image.shape[:2], n)[0], None
        t0 = time.perf_counter()
        if connectivity:
            labels = enforce_connectivity(raw, min_size, max_size)
        else:
            labels = raw.astype(np.int32, copy=False)
        timings["connectivity"] = time.perf_counter() - t0
        smoothness = None
        if connectivity and self.refine_iterations:
            t0 = time.perf_counter()
            smoothness = self.smoothness_for(*image.shape[:2], n)
            labels = refine_boundaries(image, labels, self.refine_iterations, self.refine_compactness, smoothness)
            timings["refine"] = time.perf_counter() - t0
        return SuperpixelResult(labels, n, n_cells, timings, smoothness)

    def run_source(self, source, n_segments: int, labels, lab=None, *,
                   preview_shape: tuple[int, int] | None = None, progress=None, work_dir=None) -> SourceResult:
        """Network superpixels of an image source into a label store, in bounded memory.

        The pipeline, each step bounded by a band, tile or the network's grid (never by the image):

        1. one pass over the source in bands: the network input (area averaging), the 8-bit CIELAB copy for
           the refinement (into ``lab``; for an in-memory :class:`uhrseg.io.ArraySource` it is made instead in a
           second thread during steps 3 and 3b, which run Python on one core) and the optional preview;
        2. the network on overlapping tiles (:func:`uhrseg.inference.cell_id_map`): the cell-id map at the
           network's output resolution ``h x w`` (about 16 x 16 pixels per requested superpixel);
        3. connectivity on that map with each row and column weighted by the image pixels it stands for
           (:func:`uhrseg.grid.enforce_connectivity`), so the size bounds hold in image pixels;
        3b. with ``oversegmentation > 1`` (the grid then has that many more cells), merging the most similar
           adjacent superpixels back to ``n_segments`` on that map, colours from the guide image
           (:func:`uhrseg.grid.merge_superpixels`, weighted the same way);
        4. nearest upsampling to ``H x W``, band by band into ``labels``;
        5. the boundary refinement at full resolution, in chunks of rows, every other chunk in parallel threads
           (:func:`uhrseg.grid.refine_store`).

        The labels do not depend on ``tile``, ``strip_pixels`` or ``band_rows``, nor on whether the stores
        are in memory or on disk (tested).

        Parameters
        ----------
        source : image source
            ``shape`` ``(H, W, 3)`` and ``read_rows(y0, y1)`` (:func:`uhrseg.io.sources.open_image`).
        n_segments : int
            Requested number of superpixels.
        labels : row store of (H, W) int32
            Receives the labels (:class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`).
        lab : row store of (H, W, 3) uint8, optional
            Scratch space for the CIELAB copy; required when refinement is on.
        preview_shape : (int, int), optional
            Also return the image area-averaged to this ``(h, w)``.
        progress : callable, optional
            Called with the name of each stage as it starts.
        work_dir : path-like, optional
            An existing folder for the guide image (the image at the network's output resolution, float32:
            12 bytes per output pixel, 1.8 GB for 585 937 cells of 16 x 16), held there in a temporary file
            (removed before returning) instead of in memory. For a guided network or a merge; the labels are
            the same either way (tested).

        Returns
        -------
        SourceResult

        Raises
        ------
        ValueError
            If this predictor runs a classical method, ``n_segments`` is out of range, the stores do not
            match the source, or ``lab`` is missing while refinement is on.
        uhrseg.errors.ImageReadError
            If the source cannot be decoded.
        """
        if self.network is None:
            raise ValueError(f"run_source needs a network method, not {self.method!r}")
        big_h, big_w = source.shape[:2]
        n = validate_n_segments(n_segments, source.shape)
        if tuple(labels.shape) != (big_h, big_w):
            raise ValueError(f"label store {labels.shape} does not match the {big_h} x {big_w} image")
        if self.refine_iterations and (lab is None or tuple(lab.shape) != (big_h, big_w, 3)):
            raise ValueError("refinement needs a (H, W, 3) uint8 store for the CIELAB copy")
        say = progress or (lambda stage: None)
        n_net = self.cells_for(big_h, big_w, n)
        merging = n_net > n
        grid = output_grid(big_h, big_w, n_net, self.network.cell_size)
        timings: dict[str, float] = {}

        say("read + resize")
        t0 = time.perf_counter()
        preview = None
        if preview_shape is not None:
            preview = AreaAccumulator(min(preview_shape[0], big_h), min(preview_shape[1], big_w), big_h, big_w)

        # The CIELAB copy: made in the single read pass of a streamed source; an image already in memory is
        # converted later, in a second thread while the connectivity step and the merge (Python, one core) run
        lab_later = bool(self.refine_iterations) and isinstance(source, ArraySource)

        def on_band(y0: int, band: np.ndarray) -> None:
            if self.refine_iterations and not lab_later:
                lab.write(y0, lab8(band))
            if preview is not None:
                preview.add(y0, band)

        # The merge compares colours on the output grid: the guide image is exactly that (an unguided network
        # gets one made only for the merge).
        # A streamed image (scratch files in work_dir): the heap's freed maps go back to the system between
        # stages, so that each stage's peak does not add to what earlier stages left (uhrseg.memory)
        trim = release_free_memory if work_dir is not None else (lambda: None)
        make_guide = self._guided or merging
        with contextlib.ExitStack() as scratch:
            guide_store = None
            if make_guide and work_dir is not None:
                guide_store = scratch.enter_context(
                    FileStore(Path(work_dir) / "guide.f32", (grid.height, grid.width, 3), np.float32))
            x, guide = network_inputs(source, grid, self.network.upscale, make_guide, on_band, guide_store)
            timings["resize"] = time.perf_counter() - t0

            say("network")
            t0 = time.perf_counter()
            ids = self._cell_id_map(x, grid, guide if self._guided else None)
            del x
            trim()
            timings["network"] = time.perf_counter() - t0
            colour = None
            t0 = time.perf_counter()
            if merging:  # the merge's colours: 8-bit CIELAB (a quarter of the float guide), made band by band,
                # and a fourth channel for the texture, filled once the map has its final rows and columns
                colour = np.empty((*guide.shape[:2], 4 if self.merge_texture_weight > 0 else 3), np.uint8)
                for y0 in range(0, guide.shape[0], self.band_rows):
                    colour[y0:y0 + self.band_rows, :, :3] = lab8(rows_of(guide, y0, y0 + self.band_rows))
            del guide
            t_colour = time.perf_counter() - t0

        say("connectivity")
        t0 = time.perf_counter()
        lab_filled = _fill_lab_in_background(source, lab, self.band_rows) if lab_later else None
        self._warm_up.join()  # every kernel (uhrseg.grid.warmup says why all of them before this step)
        from ..grid.connectivity import connectivity_bounds, enforce_connectivity
        from ..grid.refine import refine_store

        # Rows/columns of the cell-id map that image pixels sample (all of them unless the image is smaller
        # than the map), how many image pixels each stands for, and which one each image pixel takes.
        used_rows, row_of, row_weights = np.unique(nearest_index(big_h, grid.height), return_inverse=True,
                                                   return_counts=True)
        used_cols, col_of, col_weights = np.unique(nearest_index(big_w, grid.width), return_inverse=True,
                                                   return_counts=True)
        if len(used_rows) < grid.height or len(used_cols) < grid.width:
            ids = ids[np.ix_(used_rows, used_cols)]
        small = enforce_connectivity(ids, *connectivity_bounds((big_h, big_w), grid.n_cells), row_weights,
                                     col_weights)
        del ids
        trim()
        timings["connectivity"] = time.perf_counter() - t0
        if merging:
            say("merge")
            t0 = time.perf_counter()
            if len(used_rows) < grid.height or len(used_cols) < grid.width:
                colour = colour[np.ix_(used_rows, used_cols)]
            if self.merge_texture_weight > 0:  # the gradients between the pixels the image samples, as merged
                fill_texture(colour, self.merge_texture_weight, self.band_rows)
            small = merge_superpixels(small, colour, n, row_weights, col_weights,
                                      boundary_weight=self.merge_boundary_weight, out=small)  # in place
            timings["merge"] = t_colour + time.perf_counter() - t0
        del colour
        trim()
        n_produced = int(small.max()) + 1

        say("upsample")
        t0 = time.perf_counter()
        _upsample_into(labels, small, row_of, col_of, self.band_rows)
        del small
        timings["upsample"] = time.perf_counter() - t0

        smoothness = None
        if self.refine_iterations:
            say("refine")
            t0 = time.perf_counter()
            smoothness = self._smoothness_on(big_h, big_w, grid)  # the grid above: not computed again
            if lab_filled is not None:
                lab_filled.result()
            refine_store(lab, labels, n_produced, self.refine_iterations, self.refine_compactness, smoothness,
                         band_rows=self.band_rows)
            timings["refine"] = time.perf_counter() - t0
        rgb = None
        if preview is not None:
            rgb = np.clip(np.rint(preview.result() * 255.0), 0, 255).astype(np.uint8)
        return SourceResult(n, grid.n_cells, n_produced, timings, rgb, smoothness)

    @property
    def _guided(self) -> bool:
        """Whether the network's head takes the guide image (a PCNet with ``NetConfig.guide``)."""
        if self.backend == "opencv":
            return self.network.guide
        return self.model is not None and self.model.uses_guide

    def _cell_id_map(self, x: np.ndarray, grid: CellGrid, guide: np.ndarray | None = None) -> np.ndarray:
        """The network's cell-id map of input ``x`` (and ``guide``) on ``grid``, on this predictor's backend."""
        if self.backend == "opencv":
            return self.network.cell_id_map(x, grid, self.tile, self.strip_pixels, guide)
        from .network import cell_id_map, synchronize

        ids = cell_id_map(self.model, x, grid, self.device, self.tile, self.strip_pixels, guide, self.precision)
        synchronize(self.device)
        return ids

    def predict(self, image: np.ndarray, n_segments: int) -> np.ndarray:
        """Superpixel labels of ``image``: ``(H, W)`` int32, 0-based, contiguous, 4-connected.

        ``image`` and ``n_segments`` (1 to a quarter of the pixels) as for :meth:`run`, which also gives the
        counts and the seconds per stage; raises what :meth:`run` raises (ValueError for a bad image or count).
        """
        return self.run(image, n_segments).labels


def _upsample_into(labels, small: np.ndarray, row_of: np.ndarray, col_of: np.ndarray, band_rows: int) -> None:
    """Write ``small`` (``(h, w)`` int32) upsampled nearest into the ``(H, W)`` row store ``labels``: image row
    ``y`` takes map row ``row_of[y]``, image column ``x`` map column ``col_of[x]``. In bands of at most
    ``band_rows`` rows, a few per thread (numpy's take and copy release the GIL; the bands are disjoint)."""
    height = len(row_of)
    threads = usable_cpus()

    def band(y0: int, y1: int) -> None:
        labels.write(y0, small.take(row_of[y0:y1], axis=0).take(col_of, axis=1))

    for_each_band(height, max(1, min(band_rows, -(-height // (4 * threads)))), threads, band, "uhrseg-upsample")


def _fill_lab_in_background(source: ArraySource, lab: ArrayStore, band_rows: int) -> Future:
    """Start writing the 8-bit CIELAB copy of an in-memory image into ``lab``, band by band, in a new thread;
    the returned future's ``result()`` waits for it (and raises what it raised). OpenCV releases the GIL while it
    converts, so this runs beside the pipeline's single-threaded Python steps."""

    def fill() -> None:
        for y0 in range(0, source.shape[0], band_rows):
            lab.write(y0, lab8(source.read_rows(y0, min(source.shape[0], y0 + band_rows))))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uhrseg-lab")
    future = pool.submit(fill)
    pool.shutdown(wait=False)
    return future


def superpixels(image: np.ndarray, n_segments: int = 1000, *, method: str = "pcnet", device: str = "auto",
                backend: str = "torch", weights: str | os.PathLike | None = None,
                refine_iterations: int | None = None, oversegmentation: float | None = None,
                precision: str = "fp32") -> np.ndarray:
    """Superpixels of an image at its full resolution.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Gray, RGB or RGBA image, uint8, uint16 or float in [0, 1]; read files with :func:`uhrseg.io.read_image`.
    n_segments : int
        Requested number of superpixels (default 1000; 1 to a quarter of the pixels). The networks give exactly
        that many with their default
        ``oversegmentation`` (when the connectivity step left at least that many); the classical methods
        and ``oversegmentation=1`` give a close count, not an equal one (see :class:`SuperpixelResult`).
    method : str
        ``"pcnet"`` (Wang et al., arXiv:2108.08607), ``"scn"`` (Yang et al., CVPR 2020), or a classical method:
        ``slic``, ``watershed``, ``fh``, ``cv-slic``, ``slico``, ``seeds``, ``lsc``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    backend : str
        ``"torch"``, ``"opencv"`` or ``"auto"`` (see :class:`SuperpixelPredictor`).
    weights : path-like, optional
        Network checkpoint to use instead of the packaged weights.
    refine_iterations : int, optional
        Passes of full-resolution boundary refinement (default 8 for the networks, 0 for classical methods).
    oversegmentation : float, optional
        Networks only: grid cells per requested superpixel before merging back to ``n_segments`` (default 1.5;
        1 = the papers' grid; see :class:`SuperpixelPredictor`).
    precision : str
        Networks on the torch backend: ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (see
        :class:`SuperpixelPredictor`).

    Returns
    -------
    (H, W) ndarray of int32
        Labels ``0 .. K-1``, every superpixel one 4-connected component.

    Raises
    ------
    ValueError
        Bad image, ``n_segments``, method, device, backend (``opencv`` on a GPU, or for weights without an
        ONNX export), ``oversegmentation`` or ``precision``.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        Missing or unusable network weights.

    Notes
    -----
    Build a :class:`SuperpixelPredictor` to process many images without reloading the network.
    """
    return SuperpixelPredictor(method, device=device, backend=backend, weights=weights, precision=precision,
                               refine_iterations=refine_iterations,
                               oversegmentation=oversegmentation).predict(image, n_segments)

