"""Semantic segmentation of images of any size: :class:`SemanticPredictor` and :func:`segment`.

Three inference modes, all giving class maps at the image's full resolution:

* ``whole``: the network runs once on the whole image, padded to a multiple of ``model.input_multiple`` by
  repeating its last row and column. Images up to ``one_pass_pixels`` take this path.
* ``tiled``: the same computation in bounded memory, for larger images (ISDNet and the 1/4 deep path). The
  deep path's input (the image averaged over 4 x 4 blocks) is built band by band from the source; the encoder
  runs on tiles of it with :attr:`uhrseg.models.ISDNet.deep_halo` pixels of context, and ASPP on bands of the
  encoder features, with the whole image's mean for its image-pooling branch. The shallow path runs on
  full-resolution tiles with :attr:`uhrseg.models.ISDNet.full_halo` pixels of context (pass 1), which also sums
  the fusions' shallow branches over the whole image: the relation-aware fusions pool their branches
  globally. The first fusion then runs on bands of the stored 1/16 maps (pass 2, which also sums the second
  fusion's deep branch), and the second fusion and the head on bands of the stored 1/8 maps (pass 3). Tile
  origins are multiples of 32, so every stride of the networks lines up with the whole image's. The result
  equals the ``whole`` mode's (tested on a real image). The stored shallow features take 12 bytes per image
  pixel at the default widths (memory for :meth:`SemanticPredictor.run`, files with a ``work_dir``).
* ``magnet``: MagNet or MagNet-Fast (:mod:`uhrseg.inference.magnet`): the backbone and the refinement module
  scale by scale on patches, the running map in row stores; probabilities at a stride of 4.
* ``slide``: a network trained at full resolution (``deeppath`` with ``deep_scale = 1``) runs on overlapping
  windows (``window`` pixels, ``stride`` apart); the logits of overlapping windows are averaged. This is the
  sliding-window comparator of the ISDNet paper.

Logits ``(C, H / s, W / s)`` (``s`` the output stride) become the class map by bilinear upsampling to the
padded size and an argmax, band by band; the softmax probabilities are returned at the output stride, in
float16. Intermediate maps live in row stores (:mod:`uhrseg.stores`): in memory for :meth:`SemanticPredictor.run`,
in files for streamed images (:meth:`SemanticPredictor.run_source` with a ``work_dir``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_SEMANTIC_TILE, MAGNET_MODELS, MODES, SEMANTIC_MODELS
from ..errors import WeightsNotFoundError
from ..grid.pooling import upsampled_bands
from ..io.images import as_rgb
from ..io.sources import ArraySource
from ..memory import release_free_memory
from ..models.blocks import ResNetEncoder
from ..models.checkpoint import load_model, packaged_weights_path
from ..models.magnet import MagNet
from ..models.segmenters import ISDNet
from ..stores import ArrayStore, FileStore
from .magnet import MagNetSettings, run_magnet
from .network import synchronize
from .predictor import resolve_device
from .resize import AreaAccumulator, _unit_scale

__all__ = ["DEFAULT_ONE_PASS_PIXELS", "DEFAULT_SEMANTIC_TILE", "MAGNET_MODELS", "MIN_IMAGE_SIDE", "MODES",
           "PACKAGED_SEMANTIC_WEIGHTS", "SEMANTIC_MODELS",
           "SemanticPredictor", "SemanticResult", "SemanticSourceResult", "segment", "semantic_weights_path"]

#: Images with more pixels than this run tiled in :meth:`SemanticPredictor.run` (about 1.5 GB peak at the
#: default widths).
DEFAULT_ONE_PASS_PIXELS = 2**24
#: Deep-path tile core in deep-input pixels (a multiple of 8).
DEFAULT_DEEP_TILE = 512
#: Smallest image side the networks accept, pixels.
MIN_IMAGE_SIDE = 32
#: Names of the weights shipped in the package (``weights/MODEL-NAME.pt``).
PACKAGED_SEMANTIC_WEIGHTS = ("drone", "deepglobe")
#: Elements of one band of upsampled logits (bounds the memory of the class-map pass).
_UPSAMPLE_ELEMENTS = 2**24


def semantic_weights_path(model: str, weights: str | os.PathLike) -> Path:
    """The checkpoint a ``weights`` argument names: a packaged name (``drone``, ``deepglobe``: the file
    ``weights/MODEL-NAME.pt`` shipped in the package) or a path.

    Raises
    ------
    uhrseg.errors.WeightsNotFoundError
        If ``weights`` is a bare name with no packaged file for ``model`` (the message lists the names ``model``
        accepts).
    """
    path = Path(weights)
    if path.exists() or len(path.parts) != 1 or path.suffix:
        return path
    model = "magnet" if model in MAGNET_MODELS else model
    packaged = packaged_weights_path(f"{model}-{path.name}")
    if not packaged.is_file():
        # The names this model accepts (``drone`` for ``weights/isdnet-drone.pt``), not the file names
        there = sorted(p.stem.removeprefix(f"{model}-") for p in packaged.parent.glob(f"{model}-*.pt"))
        raise WeightsNotFoundError(f"{weights}: no packaged {model} weights of that name (packaged for {model}: "
                                   f"{', '.join(there) or 'none'}); pass a checkpoint file from uhrseg train")
    return packaged


@dataclass
class SemanticResult:
    """A class map and what it took to make it.

    Attributes
    ----------
    classes : (H, W) ndarray of uint8
        Class id of every pixel.
    probabilities : (C, h, w) ndarray of float16
        Softmax probabilities at the network's output stride (``h = ceil(H / s)``), or None when not kept.
    class_names : tuple of str
        ``class_names[i]`` names class ``i``.
    palette : tuple of (int, int, int)
        RGB colour of each class.
    output_stride : int
        Image pixels per probability pixel ``s``.
    mode : str
        ``whole``, ``tiled``, ``slide`` or ``magnet``.
    timings : dict of str to float
        Seconds per stage (``prepare``, ``network``, ``classes``; with a refinement ``superpixels`` and
        ``refine``).
    superpixel_labels : (H, W) ndarray of int32, optional
        The superpixels of a ``superpixels`` refinement (``0 .. K-1``), else None.
    """

    classes: np.ndarray
    probabilities: np.ndarray | None
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    output_stride: int
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    superpixel_labels: np.ndarray | None = None

    def class_fractions(self) -> dict[str, float]:
        """Share of the image's pixels per class name."""
        counts = np.bincount(self.classes.ravel(), minlength=len(self.class_names))
        return {n: float(c) / self.classes.size for n, c in zip(self.class_names, counts)}


@dataclass
class SemanticSourceResult:
    """What :meth:`SemanticPredictor.run_source` reports; the class map is in the store it was given.

    Attributes
    ----------
    class_counts : (C,) ndarray of int64
        Pixels per class.
    mode : str
        ``whole``, ``tiled``, ``slide`` or ``magnet``.
    timings : dict of str to float
        Seconds per stage.
    preview : (h, w, 3) ndarray of uint8 or None
        The image area-averaged to the asked preview size, made during the pass over the source.
    n_superpixels : int or None
        ``K`` of a ``superpixels`` refinement (the labels are in the ``superpixel_labels`` store), else None.
    """

    class_counts: np.ndarray
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    preview: np.ndarray | None = None
    n_superpixels: int | None = None


def _check_size(height: int, width: int) -> None:
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ValueError(f"the image is {width} x {height} pixels; segmentation needs at least "
                         f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}")


class _PaddedSource:
    """An image source extended to ``(Hp, Wp)`` by repeating its last row and column (the padding of the
    ``whole`` mode, so that tiles see the same pixels). Rows come in the source's dtype; :meth:`tensor` turns a
    window into the float input of the networks."""

    def __init__(self, source, height: int, width: int) -> None:
        self.source, self.height, self.width = source, height, width
        self.scale = np.float32(_unit_scale(source.dtype))

    def read(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """Rows ``[y0, y1)`` and columns ``[x0, x1)`` (default all ``Wp``) of the padded image, in the source's
        dtype."""
        big_h, big_w = self.source.shape[:2]
        x1 = self.width if x1 is None else x1
        r0, r1 = min(y0, big_h - 1), min(y1, big_h)
        q0, q1 = min(x0, big_w - 1), min(x1, big_w)
        band = self.source.read_region(r0, max(r1, r0 + 1), q0, max(q1, q0 + 1))
        if y1 > big_h or y0 != r0:
            band = band[np.minimum(np.arange(y0, y1), big_h - 1) - r0]
        if x1 > big_w or x0 != q0:
            band = band[:, np.minimum(np.arange(x0, x1), big_w - 1) - q0]
        return band

    def tensor(self, band: np.ndarray, device: torch.device) -> torch.Tensor:
        """A window of rows from :meth:`read` as a ``(1, 3, h, w)`` channels-last float32 tensor in [0, 1]."""
        x = band.astype(np.float32)
        if self.scale != 1:
            x *= self.scale
        return _tensor(x, device)


def _tensor(hwc: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(h, w, C)`` array -> ``(1, C, h, w)`` channels-last tensor on ``device`` (no copy on the CPU)."""
    return torch.from_numpy(np.ascontiguousarray(hwc))[None].permute(0, 3, 1, 2).to(device)


def _hwc(t: torch.Tensor) -> np.ndarray:
    """``(1, C, h, w)`` tensor -> ``(h, w, C)`` float32 array on the CPU."""
    return t[0].permute(1, 2, 0).float().cpu().numpy()


def _spans(length: int, core: int, halo: int) -> Iterator[tuple[int, int, int, int]]:
    """Core ``[c0, c1)`` and window ``[w0, w1)`` spans covering ``[0, length)`` (core a multiple of the stride)."""
    for c0 in range(0, length, core):
        c1 = min(length, c0 + core)
        yield c0, c1, max(0, c0 - halo), min(length, c1 + halo)


def _memory_store(name: str, shape: tuple[int, ...], dtype) -> ArrayStore:
    return ArrayStore(np.empty(shape, dtype))


class SemanticPredictor:
    """Keeps one segmentation network ready for many images.

    Hides everything between the user's image and a full-resolution class map: channel layout and dtype,
    normalisation, padding, the choice between one pass, tiles and sliding windows, device transfers and the
    upsampling of the logits.

    Parameters
    ----------
    model : str, ISDNet or MagNet
        ``"isdnet"`` (default), ``"deeppath"`` (the deep path alone: the 1/4 baseline, or the sliding-window
        network when trained at full resolution), ``"magnet"`` or ``"magnet-fast"`` (MagNet's multi-scale
        refinement over its backbone, Huynh et al. CVPR 2021), or a network object (e.g. during training).
    weights : str or path-like
        Packaged weights ``"drone"`` (Semantic Drone, 24 classes) or ``"deepglobe"`` (DeepGlobe land cover,
        7 classes), or a checkpoint file; ignored when ``model`` is a network.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    mode : str
        ``"auto"`` (sliding windows for networks trained at full resolution; otherwise one pass up to
        ``one_pass_pixels``, else tiles; a MagNet's own ``"magnet"``), ``"whole"``, ``"tiled"``, ``"slide"``
        (networks trained at full resolution only) or ``"magnet"`` (MagNet only, its only mode).
    tile : int
        Full-resolution tile core of the tiled mode, pixels (rounded up to a multiple of 32): its memory bound.
    deep_tile : int
        Deep-path tile core of the tiled mode, in deep-input pixels (rounded up to a multiple of 8).
    window : int, optional
        Sliding-window side in pixels (default: the training crop recorded in the checkpoint, else 512).
    stride : int, optional
        Sliding-window step in pixels (default two thirds of the window).
    one_pass_pixels : int
        Largest image that :meth:`run` processes in one pass in ``auto`` mode.
    scales : int
        MagNet: number of scales (a factor of 2 apart, the finest the full resolution; MagNet-Fast uses the
        coarsest and the finest of them).
    magnet : MagNetSettings, optional
        MagNet: every setting of the loop (overrides ``scales`` and the model name's defaults).
    refine : uhrseg.semantic.ClassRefinement, optional
        Sharpen the class maps of :meth:`run` and :meth:`run_source` at full resolution from the probabilities
        (superpixel pooling, guided filter, ...; :mod:`uhrseg.semantic`), band by band; its seconds are the
        ``superpixels`` and ``refine`` timings.

    Raises
    ------
    ValueError
        Unknown model, device or mode; a ``slide`` mode for a network that is not fully convolutional at full
        resolution; a mode other than ``auto`` or ``magnet`` for a MagNet, or ``magnet`` for another network;
        ``tile`` below 32 or ``deep_tile`` below 8 pixels; a ``stride`` outside 1 .. ``window``.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        Missing, corrupt or mismatched weights (e.g. a superpixel checkpoint).

    Examples
    --------
    >>> import numpy as np, uhrseg  # doctest: +SKIP
    >>> predictor = uhrseg.SemanticPredictor("isdnet", weights="drone")  # doctest: +SKIP
    >>> result = predictor.run(uhrseg.read_image("frame.jpg"))  # doctest: +SKIP
    >>> result.classes.shape, result.class_names[result.classes[0, 0]]  # doctest: +SKIP
    """

    def __init__(self, model: str | ISDNet | MagNet = "isdnet", *, weights: str | os.PathLike = "drone",
                 device: str = "auto", mode: str = "auto", tile: int = DEFAULT_SEMANTIC_TILE,
                 deep_tile: int = DEFAULT_DEEP_TILE, window: int | None = None, stride: int | None = None,
                 one_pass_pixels: int = DEFAULT_ONE_PASS_PIXELS, scales: int = 3,
                 magnet: MagNetSettings | None = None, refine=None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if tile < 32 or deep_tile < 8:
            raise ValueError(f"tile must be >= 32 and deep_tile >= 8 pixels, got {tile} and {deep_tile}")
        self.device = resolve_device(device)
        self.refine = refine
        self.superpixel_predictor = None
        if refine is not None and refine.method == "superpixels":
            self.superpixel_predictor = refine.superpixel_predictor(str(self.device))
        variant = model if isinstance(model, str) and model in MAGNET_MODELS else "magnet"
        if isinstance(model, (ISDNet, MagNet)):
            net = model
            self.weights = None
        else:
            if model not in SEMANTIC_MODELS:
                raise ValueError(f"unknown segmentation model {model!r}; choose one of {', '.join(SEMANTIC_MODELS)}")
            self.weights = semantic_weights_path(model, weights)
            net = load_model(self.weights, expected="magnet" if model in MAGNET_MODELS else model)
        self.model = net.to(self.device).eval().to(memory_format=torch.channels_last)
        self.name = variant if isinstance(net, MagNet) else self.model.name
        self.magnet = None
        if isinstance(net, MagNet):
            self.magnet = magnet or MagNetSettings.for_model(variant, scales)
            self.name = "magnet-fast" if self.magnet.fast else "magnet"
            if mode != "auto":
                self._check_mode(mode)
            self.mode = "magnet"
            self.one_pass_pixels = int(one_pass_pixels)
            self.tile, self.deep_tile, self.window, self.stride = tile, deep_tile, None, None
            return
        self._full_resolution = not self.model.config.shallow and self.model.config.deep_scale == 1
        if mode != "auto":
            self._check_mode(mode)
        self.mode = "slide" if mode == "auto" and self._full_resolution else mode
        self.tile = -(-tile // 32) * 32
        self.deep_tile = -(-deep_tile // 8) * 8
        record = getattr(self.model, "training_record", {}) or {}
        self.window = int(window or record.get("crop") or 512)
        self.window = -(-self.window // 8) * 8
        self.stride = int(stride or max(8, (2 * self.window // 3) // 8 * 8))
        if self.stride < 1 or self.stride > self.window:
            raise ValueError(f"stride must be in 1..window ({self.window}), got {self.stride}")
        self.one_pass_pixels = int(one_pass_pixels)

    def _check_mode(self, mode: str) -> None:
        """Refuse a ``mode`` other than ``auto`` that this network cannot run in (ValueError naming it): a MagNet
        runs only in its multi-scale mode, which no other network has, and sliding windows need a network
        trained at full resolution."""
        if self.magnet is not None:
            if mode != "magnet":
                raise ValueError(f"{self.name} runs in its own multi-scale mode, not {mode!r}")
            return
        if mode == "magnet":
            raise ValueError(f"mode 'magnet' needs a MagNet model, not {self.name}")
        if mode == "slide" and not self._full_resolution:
            raise ValueError(f"sliding windows are for networks trained at full resolution; this {self.name} "
                             f"sees the image at 1/{self.model.config.deep_scale}")

    # -- public API --------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each class id, from the weights' class table (``class_names[c]`` for id ``c``)."""
        return self.model.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """``(r, g, b)`` colour (0-255) of each class id, from the weights' class table."""
        return self.model.palette

    def mode_for(self, height: int, width: int) -> str:
        """The mode an ``H x W`` image runs in."""
        if self.mode != "auto":
            return self.mode
        return "whole" if height * width <= self.one_pass_pixels else "tiled"

    def run(self, image: np.ndarray, *, probabilities: bool = True) -> SemanticResult:
        """Segment an image held in memory.

        Parameters
        ----------
        image : (H, W), (H, W, 3) or (H, W, 4) ndarray
            Gray, RGB or RGBA, uint8, uint16 or float in [0, 1]; at least 32 x 32 pixels.
        probabilities : bool
            Also return the softmax probabilities at the output stride.

        Returns
        -------
        SemanticResult
            With the predictor's ``refine``, ``classes`` is the refined map.

        Raises
        ------
        ValueError
            If the image has an unsupported layout or is smaller than 32 x 32 pixels.
        """
        image = as_rgb(image)
        height, width = image.shape[:2]
        classes = np.empty((height, width), np.uint8)
        mode = self.mode_for(height, width)
        if mode == "magnet":
            stride = self.magnet.output_stride
        else:
            stride = 8 if mode == "slide" else self.model.output_stride
        logits = ArrayStore(np.empty((-(-height // stride), -(-width // stride), self.model.n_classes),
                                     np.float32))
        labels = None
        if self.superpixel_predictor is not None:
            labels = np.empty((height, width), np.int32)
        info = self.run_source(ArraySource(image), ArrayStore(classes), logits_store=logits,
                               superpixel_labels=None if labels is None else ArrayStore(labels))
        probs = None
        if probabilities:
            t = torch.from_numpy(logits.array).permute(2, 0, 1)
            probs = (t if mode == "magnet" else torch.softmax(t, dim=0)).to(torch.float16).numpy()
        return SemanticResult(classes, probs, self.class_names, self.palette, stride, info.mode, info.timings,
                              labels)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 class map of ``image`` (see :meth:`run`)."""
        return self.run(image, probabilities=False).classes

    def run_source(self, source, classes, *, logits_store=None, superpixel_labels=None,
                   work_dir: str | os.PathLike | None = None, preview_shape: tuple[int, int] | None = None,
                   mode: str | None = None, progress: Callable[[str], None] | None = None) -> SemanticSourceResult:
        """Segment an image source into a class-map store, in bounded memory.

        Parameters
        ----------
        source : image source
            ``shape`` ``(H, W, 3)`` and ``read_rows(y0, y1)`` (:func:`uhrseg.io.open_image`).
        classes : row store of (H, W) uint8
            Receives the class map (:class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`).
        logits_store : row store of (ceil(H / s), ceil(W / s), C) float32, optional
            Receives the logits at the output stride ``s`` (8 for ISDNet and sliding windows, 32 for the 1/4
            deep path), or for MagNet the probabilities at its map stride (4); by default they live in a
            temporary store.
        superpixel_labels : row store of (H, W) int32, optional
            Receives the superpixels of a ``superpixels`` refinement (by default a temporary store).
        work_dir : path-like, optional
            Folder for the intermediate maps (deep-path input and features, logits; superpixels and the CIELAB
            copy of their refinement) as files, so that memory does not grow with the image; by default they
            are held in memory.
        preview_shape : (int, int), optional
            Also return the image area-averaged to this ``(h, w)``.
        mode : str, optional
            Override the predictor's mode for this image (``"tiled"`` bounds the memory of any size); the modes
            the constructor accepts for this network, ``auto`` excepted.
        progress : callable, optional
            Called with the name of each stage as it starts.

        Returns
        -------
        SemanticSourceResult

        Raises
        ------
        ValueError
            If the image is smaller than 32 x 32 pixels (for MagNet: at its coarsest scale), a store does not
            match it, or ``mode`` is unknown or one this network cannot run in (as the constructor refuses it).
        uhrseg.errors.ImageReadError
            If the source cannot be decoded.
        """
        height, width = source.shape[:2]
        _check_size(height, width)
        if tuple(classes.shape) != (height, width):
            raise ValueError(f"class store {classes.shape} does not match the {height} x {width} image")
        if mode is not None and mode not in MODES[1:]:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES[1:])}")
        if mode is not None:
            self._check_mode(mode)
        mode = mode or self.mode_for(height, width)
        say = progress or (lambda stage: None)
        opened: list[FileStore] = []

        def make_store(name: str, shape: tuple[int, ...], dtype) -> ArrayStore | FileStore:
            if work_dir is None:
                return _memory_store(name, shape, dtype)
            store = FileStore(Path(work_dir) / f"{name}.raw", shape, dtype)
            opened.append(store)
            return store

        timings: dict[str, float] = {}
        model, device = self.model, self.device
        if mode == "magnet":
            coarsest = min(height, width) * self.magnet.scales[0]
            if coarsest < MIN_IMAGE_SIDE:  # below it the stages see less than the networks' smallest input
                raise ValueError(f"the image is {width} x {height} pixels: at MagNet's coarsest scale "
                                 f"{self.magnet.scales[0]:g} its shorter side is {coarsest:.1f} pixels, under the "
                                 f"{MIN_IMAGE_SIDE} the networks need; use fewer scales")
            try:
                return self._run_magnet(source, classes, logits_store, superpixel_labels, make_store, work_dir,
                                        preview_shape, timings, say)
            finally:
                for store in opened:
                    store.close()
        m = 8 if mode == "slide" else model.input_multiple
        padded_h, padded_w = -(-height // m) * m, -(-width // m) * m
        padded = _PaddedSource(source, padded_h, padded_w)
        stride = 8 if mode == "slide" else model.output_stride
        out_shape = (padded_h // stride, padded_w // stride, model.n_classes)
        try:
            logits = make_store("logits", out_shape, np.float32)
            preview = None
            if preview_shape is not None:
                preview = AreaAccumulator(min(preview_shape[0], height), min(preview_shape[1], width), height, width)
            with torch.inference_mode():
                if mode == "whole":
                    say("network")
                    t0 = time.perf_counter()
                    image = padded.tensor(padded.read(0, padded_h), device)
                    if preview is not None:
                        preview.add(0, source.read_rows(0, height))
                    out = model(image).logits
                    logits.write(0, _hwc(out))
                    del image, out
                    synchronize(device)
                    timings["network"] = time.perf_counter() - t0
                elif mode == "slide":
                    say("network")
                    t0 = time.perf_counter()
                    _slide(model, padded, logits, self.window, self.stride, device, preview, source)
                    synchronize(device)
                    timings["network"] = time.perf_counter() - t0
                else:
                    _tiled(model, padded, logits, self.tile, self.deep_tile, device, make_store, timings, say,
                           preview, source)
                counts, k = self._classes(source, logits, stride, True, classes, superpixel_labels, make_store,
                                          work_dir, timings, say)
            if logits_store is not None:
                _copy_rows(logits, logits_store, out_shape, (-(-height // stride), -(-width // stride)))
            rgb = None
            if preview is not None:
                rgb = np.clip(np.rint(preview.result() * 255.0), 0, 255).astype(np.uint8)
        finally:
            for store in opened:
                store.close()
        return SemanticSourceResult(counts, mode, timings, rgb, k)

    def _classes(self, source, logits, stride: int, softmax: bool, classes, superpixel_labels, make_store,
                 work_dir, timings: dict, say) -> tuple[np.ndarray, int | None]:
        """The class map from the network's map: bilinear upsampling and argmax, or the predictor's refinement
        (superpixels computed first when it pools over them). Returns the class counts and ``K`` (None without
        superpixels)."""
        height, width = classes.shape[:2]
        if self.refine is None:
            say("classes")
            t0 = time.perf_counter()
            counts = _classes_from_logits(logits, stride, classes, self.device)
            timings["classes"] = time.perf_counter() - t0
            return counts, None
        from ..semantic import ProbabilityRows, refine_class_store, superpixels_into

        labels, k = None, None
        if work_dir is not None:  # streamed: what the network stages freed goes back before the next maps
            release_free_memory()
        if self.refine.method == "superpixels":
            say("superpixels")
            t0 = time.perf_counter()
            labels = superpixel_labels if superpixel_labels is not None else make_store(
                "superpixels", (height, width), np.int32)
            k = superpixels_into(source, labels, self.refine.segments_for(height, width), self.superpixel_predictor,
                                 work_dir=work_dir)
            timings["superpixels"] = time.perf_counter() - t0
        say("refine")
        t0 = time.perf_counter()
        counts = refine_class_store(ProbabilityRows(logits, height, width, stride, softmax), stride, classes,
                                    self.refine, source=source, superpixel_labels=labels, n_superpixels=k)
        timings["refine"] = time.perf_counter() - t0
        return counts, k

    def _run_magnet(self, source, classes, logits_store, superpixel_labels, make_store, work_dir, preview_shape,
                    timings, say, trace: list | None = None) -> SemanticSourceResult:
        height, width = source.shape[:2]
        padded = _PaddedSource(source, height, width)
        rgb = None
        if preview_shape is not None:
            preview = AreaAccumulator(min(preview_shape[0], height), min(preview_shape[1], width), height, width)
            for y0 in range(0, height, 256):
                preview.add(y0, source.read_rows(y0, min(height, y0 + 256)))
            rgb = np.clip(np.rint(preview.result() * 255.0), 0, 255).astype(np.uint8)
        with torch.inference_mode():
            running = run_magnet(self.model, padded, height, width, self.magnet, make_store, self.device, timings,
                                 say, trace)
            counts, k = self._classes(source, running, self.magnet.output_stride, False, classes,
                                      superpixel_labels, make_store, work_dir, timings, say)
        if logits_store is not None:
            _copy_rows(running, logits_store, tuple(running.shape), tuple(running.shape[:2]))
        return SemanticSourceResult(counts, "magnet", timings, rgb, k)

    def magnet_trace(self, image: np.ndarray) -> tuple[np.ndarray, list]:
        """MagNet on an image held in memory, keeping each stage for figures.

        Returns
        -------
        classes : (H, W) ndarray of uint8
        stages : list of (float, (h, w) uint8, (h, w) bool)
            Per scale: its factor, the class map of the running prediction after the stage (at the map stride
            of that scale) and the points the stage replaced.

        Raises
        ------
        ValueError
            If the predictor is not a MagNet one, or as :meth:`run`.
        """
        if self.magnet is None:
            raise ValueError(f"magnet_trace needs a MagNet predictor, not {self.name}")
        image = as_rgb(image)
        _check_size(*image.shape[:2])
        classes = np.empty(image.shape[:2], np.uint8)
        trace: list = []
        self._run_magnet(ArraySource(image), ArrayStore(classes), None, None,
                         lambda name, shape, dtype: _memory_store(name, shape, dtype), None, None, {},
                         lambda stage: None, trace)
        return classes, trace


def _copy_rows(src, dst, src_shape: tuple[int, ...], dst_hw: tuple[int, int], band: int = 256) -> None:
    if tuple(dst.shape) != dst_hw + src_shape[2:]:
        raise ValueError(f"logits store {dst.shape} does not match {dst_hw + src_shape[2:]}")
    for y0 in range(0, dst_hw[0], band):
        y1 = min(dst_hw[0], y0 + band)
        dst.write(y0, src.read(y0, y1)[:, : dst_hw[1]])


def _classes_from_logits(logits, stride: int, classes, device: torch.device,
                         band_elements: int = _UPSAMPLE_ELEMENTS) -> np.ndarray:
    """Bilinear upsampling of logits by ``stride`` (``align_corners=False``) and argmax, band by band
    (:func:`uhrseg.grid.pooling.upsampled_bands`, equal to a whole-image upsampling). Returns the class counts."""
    height, width = classes.shape
    n_classes = logits.shape[2]
    counts = np.zeros(n_classes, np.int64)
    for y0, up in upsampled_bands(logits, stride, height, width, device, band_elements):
        band = up.argmax(dim=0).to(torch.uint8).cpu().numpy()
        classes.write(y0, band)
        counts += np.bincount(band.ravel(), minlength=n_classes)[:n_classes]
    return counts


def _slide(model: ISDNet, padded: _PaddedSource, logits, window: int, stride: int, device: torch.device,
           preview, source) -> None:
    """Average the logits of overlapping ``window`` x ``window`` windows (origins on multiples of 8)."""
    height, width = padded.height, padded.width
    win_h, win_w = min(window, height), min(window, width)

    def starts(length: int, win: int) -> list[int]:
        n = max(1, math.ceil((length - win) / stride) + 1)
        out = sorted({min(i * stride, length - win) // 8 * 8 for i in range(n)})
        if out[-1] + win < length:
            out.append(length - win)
        return out

    n_classes = model.n_classes
    total = np.zeros((height // 8, width // 8, n_classes), np.float32)
    count = np.zeros((height // 8, width // 8, 1), np.float32)
    xs = starts(width, win_w)
    done_preview = 0
    for y0 in starts(height, win_h):
        band = padded.read(y0, y0 + win_h)
        if preview is not None and y0 + win_h > done_preview:
            a, b = done_preview, min(source.shape[0], y0 + win_h)
            if b > a:
                preview.add(a, source.read_rows(a, b))
            done_preview = max(done_preview, b)
        for x0 in xs:
            out = model(padded.tensor(band[:, x0 : x0 + win_w], device))
            total[y0 // 8 : (y0 + win_h) // 8, x0 // 8 : (x0 + win_w) // 8] += _hwc(out.logits)
            count[y0 // 8 : (y0 + win_h) // 8, x0 // 8 : (x0 + win_w) // 8] += 1
    logits.write(0, total / count)


def _tiled(model: ISDNet, padded: _PaddedSource, logits, tile: int, deep_tile: int, device: torch.device,
           make_store, timings: dict, say, preview, source) -> None:
    """The tiled mode (see the module notes): deep path on tiles and bands, then three full-resolution passes."""
    height, width = padded.height, padded.width
    scale = model.config.deep_scale

    say("deep-path input")
    t0 = time.perf_counter()
    qh, qw = height // scale, width // scale
    xq = make_store("deep_input", (qh, qw, 3), np.float32)
    band_rows = 1 << max(5, min(10, int(math.log2(max(1, 2**27 // (12 * width))))))  # 32..1024, TIFF-tile aligned
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        band = padded.read(y0, y1)
        if preview is not None and y0 < source.shape[0]:
            preview.add(y0, source.read_rows(y0, min(source.shape[0], y1)))
        x = model.normalize(padded.tensor(band, device))
        xq.write(y0 // scale, _hwc(F.avg_pool2d(x, scale) if scale > 1 else x))
    timings["prepare"] = time.perf_counter() - t0

    say("deep path")
    t0 = time.perf_counter()
    fh, fw = qh // 8, qw // 8
    c_top = model.backbone.channels[1]
    c4 = make_store("deep_encoder", (fh, fw, c_top), np.float32)
    halo = -(-ResNetEncoder.RECEPTIVE_RADIUS // 8) * 8
    c4_sum = torch.zeros((1, c_top, 1, 1), dtype=torch.float64, device=device)
    for cy0, cy1, wy0, wy1 in _spans(qh, deep_tile, halo):
        band = xq.read(wy0, wy1)
        rows = np.empty(((cy1 - cy0) // 8, fw, c_top), np.float32)
        for cx0, cx1, wx0, wx1 in _spans(qw, deep_tile, halo):
            x = _tensor(band[:, wx0:wx1], device)
            _, top = model.deep_encoder(x)
            core = top[:, :, (cy0 - wy0) // 8 : (cy1 - wy0) // 8, (cx0 - wx0) // 8 : (cx1 - wx0) // 8]
            c4_sum += core.double().sum(dim=(2, 3), keepdim=True)
            rows[:, cx0 // 8 : cx1 // 8] = _hwc(core)
        c4.write(cy0 // 8, rows)
    del xq
    pooled = (c4_sum / (fh * fw)).float()
    deep = make_store("deep_features", (fh, fw, model.config.aspp_channels), np.float32)
    aspp_halo = max(model.config.aspp_dilations)
    aspp_rows = max(8, 2**22 // max(1, fw * c_top))
    for cy0, cy1, wy0, wy1 in _spans(fh, aspp_rows, aspp_halo):
        out = model.deep_head(_tensor(c4.read(wy0, wy1), device),
                              pooled)
        deep.write(cy0, _hwc(out[:, :, cy0 - wy0 : cy1 - wy0]))
    synchronize(device)
    timings["deep"] = time.perf_counter() - t0

    if not model.config.shallow:
        say("classifier")
        t0 = time.perf_counter()
        for cy0, cy1, wy0, wy1 in _spans(fh, aspp_rows, 0):
            logits.write(cy0, _hwc(model.classify(_tensor(deep.read(cy0, cy1), device))))
        timings["fusion"] = time.perf_counter() - t0
        return

    t_shallow = time.perf_counter()
    full_halo = model.full_halo
    raf16, raf8 = model.raf16, model.raf8
    h16, w16, h8, w8 = height // 16, width // 16, height // 8, width // 8
    c8, c16 = model.config.shallow_channels[2:]
    sum_shape = (1, model.config.fusion_channels, 1, 1)

    def band_sum(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
        return t[:, :, a:b].double().sum(dim=(2, 3), keepdim=True)

    # The deep branch of the first fusion is a 3x3 convolution on the (small) deep features: its mean first.
    dd_sum = torch.zeros(sum_shape, dtype=torch.float64, device=device)
    for cy0, cy1, wy0, wy1 in _spans(fh, aspp_rows, 1):
        dd_sum += band_sum(raf16.deep_conv(_tensor(deep.read(wy0, wy1), device)), cy0 - wy0, cy1 - wy0)
    dd_mean = (dd_sum / (fh * fw)).float()

    say("shallow path")
    # Pass 1, full-resolution windows: the shallow features (kept for the fusions) and the sums of the fusions'
    # shallow branches.
    s8_store = make_store("shallow8", (h8, w8, c8), np.float32)
    s16_store = make_store("shallow16", (h16, w16, c16), np.float32)
    sum16 = torch.zeros(sum_shape, dtype=torch.float64, device=device)
    sum8 = torch.zeros_like(sum16)
    for cy0, cy1, wy0, wy1 in _spans(height, tile, full_halo):
        for cx0, cx1, wx0, wx1 in _spans(width, tile, full_halo):
            x = model.normalize(padded.tensor(padded.read(wy0, wy1, wx0, wx1), device))
            s8, s16 = model.shallow_features(x)
            del x
            k16 = (slice(None), slice(None), slice((cy0 - wy0) // 16, (cy1 - wy0) // 16),
                   slice((cx0 - wx0) // 16, (cx1 - wx0) // 16))
            k8 = (slice(None), slice(None), slice((cy0 - wy0) // 8, (cy1 - wy0) // 8),
                  slice((cx0 - wx0) // 8, (cx1 - wx0) // 8))
            sum16 += raf16.shallow_conv(s16)[k16].double().sum(dim=(2, 3), keepdim=True)
            sum8 += raf8.shallow_conv(s8)[k8].double().sum(dim=(2, 3), keepdim=True)
            s16_store.write_block(cy0 // 16, cx0 // 16, _hwc(s16[k16]))
            s8_store.write_block(cy0 // 8, cx0 // 8, _hwc(s8[k8]))
            del s8, s16
    att16 = raf16.attention((sum16 / (h16 * w16)).float(), dd_mean)

    say("fusion")
    # Pass 2, bands at 1/16: the first fusion (kept) and the sum of the second fusion's deep branch. 8 rows of
    # context at 1/16 cover the reach of the fusion's convolutions and upsampling.
    f16_store = make_store("fused16", (h16, w16, model.config.fusion_channels), np.float32)
    rows16 = max(2, (2**23 // max(1, w16 * c16)) // 2 * 2)
    sum8d = torch.zeros_like(sum16)
    for cy0, cy1, wy0, wy1 in _spans(h16, rows16, 8):
        s16 = _tensor(s16_store.read(wy0, wy1), device)
        d = _tensor(deep.read(wy0 // 2, wy1 // 2), device)
        f16 = raf16.combine(raf16.shallow_conv(s16), raf16.deep_conv(d), *att16)
        f16_store.write(cy0, _hwc(f16[:, :, cy0 - wy0 : cy1 - wy0]))
        sum8d += band_sum(raf8.deep_conv(f16), cy0 - wy0, cy1 - wy0)
    att8 = raf8.attention((sum8 / (h8 * w8)).float(), (sum8d / (h16 * w16)).float())

    # Pass 3, bands at 1/8: the second fusion and the head.
    rows8 = max(2, (2**23 // max(1, w8 * c8)) // 2 * 2)
    for cy0, cy1, wy0, wy1 in _spans(h8, rows8, 8):
        s8 = _tensor(s8_store.read(wy0, wy1), device)
        f16 = _tensor(f16_store.read(wy0 // 2, wy1 // 2), device)
        f8 = raf8.combine(raf8.shallow_conv(s8), raf8.deep_conv(f16), *att8)
        logits.write(cy0, _hwc(model.classify(f8)[:, :, cy0 - wy0 : cy1 - wy0]))
    synchronize(device)
    timings["shallow+fusion"] = time.perf_counter() - t_shallow

def segment(image: np.ndarray, *, model: str = "isdnet", weights: str | os.PathLike = "drone",
            device: str = "auto") -> np.ndarray:
    """Class map of an image at its full resolution.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Gray, RGB or RGBA image, uint8, uint16 or float in [0, 1], at least 32 x 32 pixels; read files with
        :func:`uhrseg.io.read_image`.
    model : str
        ``"isdnet"`` (Guo et al., CVPR 2022), ``"deeppath"``, ``"magnet"`` or ``"magnet-fast"`` (MagNet's
        multi-scale refinement over its backbone, Huynh et al., CVPR 2021; 3 scales).
    weights : str or path-like
        ``"drone"`` (Semantic Drone, 24 classes), ``"deepglobe"`` (DeepGlobe land cover, 7 classes) or a
        checkpoint file.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns
    -------
    (H, W) ndarray of uint8
        Class ids; :class:`SemanticPredictor` also gives names, palette and probabilities.

    Raises
    ------
    ValueError
        Bad image, model or device.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        Missing or unusable weights.
    """
    return SemanticPredictor(model, weights=weights, device=device).predict(image)
