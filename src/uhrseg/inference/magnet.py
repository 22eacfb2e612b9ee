"""MagNet's multi-scale refinement loop (Huynh et al., CVPR 2021), in bounded memory.

The facts are in ``../shared/docs/uhr-semantic.md``. For scales ``f_0 < f_1 < ... < f_{m-1} = 1`` (fractions
of the full resolution, a factor of 2 apart by default):

* **stage 0**: the backbone segments the image at the coarsest scale (one patch when it fits, otherwise an
  overlapping grid of patches). Its softmax map is the running prediction ``Y``.
* **stage s >= 1**: the scale's image is cut into an overlapping grid of ``patch``-sized crops (``n = ceil(side /
  patch)`` per side, evenly spread), each resized to the network input. For each crop the backbone's
  prediction ``O`` and the running map, upsampled bilinearly and cropped (``Y``), go into the refinement
  module, which gives ``R``. With the uncertainty ``u = 1 - (top-1 - top-2 probability)``, the score is
  ``F(Y_u * (1 - R_u))``, ``F`` a median blur. At the ``k`` best-scoring points (a fraction ``points`` of the
  crop) ``Y`` is replaced by ``R``; elsewhere it is kept. Crops are pasted back, overlaps averaged and an inner
  border of each crop (where it overlaps a neighbour) ignored.
* **MagNet-Fast**: the coarsest and the finest scale only, and at the finest scale only the ``fast_patches``
  crops whose running map is most uncertain (mean ``Y_u``) are refined, ``fast_points`` of their points.
  (The authors' code sorts the other way and keeps the least uncertain crops; the paper's rule is built here.)

Our choices where the paper gives numbers for fixed datasets (all are :class:`MagNetSettings`):

* The maps (``O``, ``Y``, ``R``) live at ``map_stride`` (4) of each scale's pixels, not at the network input
  size: the backbones' own output stride is 8 or more, so finer maps would only hold interpolated values, and
  the running map of the finest scale takes ``C x H W / 16`` values instead of ``C x H W``.
* ``patch`` defaults to the coarsest scale's size (the paper's DeepGlobe setting: 612 of 2448 with 3 scales;
  Cityscapes: 256 x 128 of 2048 x 1024 with 4), capped at ``max_patch`` on its longer side for very large
  images; the input is the patch rounded to the backbone's input multiple.
* ``points = 0.75`` of each crop (the paper's DeepGlobe value), median kernel 3 map pixels (the paper's 11 at
  input size, divided by the map stride), inner border 2 map pixels (10 input pixels / 4).

Memory: each scale's running map is a row store of ``(ceil(H f / 4), ceil(W f / 4), C)``: float32 while the
crops are summed, float16 once averaged. With a ``make_store`` that makes files the loop holds only one crop,
its maps and one band at a time, so a 20000 x 20000 image runs in bounded memory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..models.magnet import MagNet
from .network import synchronize

__all__ = ["SELECTIONS", "MagNetSettings", "PatchGrid", "crop_size", "input_size_for", "magnet_scales",
           "patch_grid", "point_scores", "run_magnet", "uncertainty"]

#: Point-selection rules: the paper's ``F(Y_u (1 - R_u))`` and the ablations on ``Y_u`` or ``1 - R_u`` alone.
SELECTIONS = ("both", "running", "refined")


def magnet_scales(n: int) -> tuple[float, ...]:
    """``n`` scale factors a factor of 2 apart, coarse to fine, the finest 1: ``(2^-(n-1), ..., 1/2, 1)``.

    Raises
    ------
    ValueError
        If ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"MagNet needs at least 1 scale, got {n}")
    return tuple(2.0 ** -(n - 1 - i) for i in range(n))


@dataclass(frozen=True)
class MagNetSettings:
    """Settings of the multi-scale loop (see the module notes for the defaults' sources).

    Attributes
    ----------
    scales : tuple of float
        Scale factors, coarse to fine, in (0, 1], the last normally 1 (full resolution).
    patch : (int, int), optional
        Crop ``(h, w)`` in scale pixels (multiples of ``map_stride``); default the coarsest scale's size, capped
        at ``max_patch``.
    max_patch : int
        Longest crop side of the default patch, pixels.
    input_size : (int, int), optional
        Network input ``(h, w)``; default the patch rounded up to the backbone's input multiple.
    map_stride : int
        Scale pixels per map pixel.
    points : float
        Fraction of a crop's map pixels replaced per stage (``k``).
    kernel : int
        Median-blur side of the score map, map pixels (odd; 1 = none).
    border : int
        Inner border of each crop ignored where crops overlap, map pixels.
    selection : str
        ``"both"`` (the paper), ``"running"`` (``Y_u`` only) or ``"refined"`` (``1 - R_u`` only).
    fast : bool
        MagNet-Fast: only the ``fast_patches`` most uncertain crops of each later stage are refined, and
        ``fast_points`` of their points.
    fast_patches : int
    fast_points : float
    """

    scales: tuple[float, ...] = (0.25, 0.5, 1.0)
    patch: tuple[int, int] | None = None
    max_patch: int = 768
    input_size: tuple[int, int] | None = None
    map_stride: int = 4
    points: float = 0.75
    kernel: int = 3
    border: int = 2
    selection: str = "both"
    fast: bool = False
    fast_patches: int = 3
    fast_points: float = 0.9

    def __post_init__(self) -> None:
        if not self.scales or any(not 0 < f <= 1 for f in self.scales) or list(self.scales) != sorted(self.scales):
            raise ValueError(f"scales must be increasing factors in (0, 1], got {self.scales}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        if not 0 <= self.points <= 1 or not 0 <= self.fast_points <= 1:
            raise ValueError("points and fast_points are fractions in [0, 1]")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 1, got {self.kernel}")
        if self.map_stride < 1 or self.border < 0 or self.fast_patches < 1 or self.max_patch < 32:
            raise ValueError("map_stride, fast_patches must be >= 1, border >= 0, max_patch >= 32")
        if abs(self.map_stride / self.scales[-1] - round(self.map_stride / self.scales[-1])) > 1e-9:
            raise ValueError(f"the finest scale {self.scales[-1]} must divide the map stride {self.map_stride} "
                             "(e.g. 1, 1/2, 1/4)")

    @property
    def output_stride(self) -> int:
        """Image pixels per pixel of the final running map: ``map_stride / scales[-1]``."""
        return int(round(self.map_stride / self.scales[-1]))

    @classmethod
    def for_model(cls, model: str, n_scales: int = 3, **overrides) -> MagNetSettings:
        """The defaults of ``"magnet"`` (``n_scales`` scales) or ``"magnet-fast"`` (the coarsest and the finest
        of them, few crops refined); ``overrides`` are other :class:`MagNetSettings` fields (e.g. ``points``).

        Raises
        ------
        ValueError
            If ``model`` is neither variant, or the settings are invalid (as the constructor checks them).
        """
        if model not in ("magnet", "magnet-fast"):
            raise ValueError(f"unknown MagNet variant {model!r}; choose magnet or magnet-fast")
        scales = magnet_scales(n_scales)
        if model == "magnet-fast":
            scales = (scales[0], 1.0) if n_scales > 1 else scales
            overrides = {"fast": True, **overrides}
        return cls(**{"scales": scales, **overrides})


@dataclass(frozen=True)
class PatchGrid:
    """The overlapping crop grid of one scale, in map pixels.

    Attributes
    ----------
    factor : float
        Scale factor ``f``.
    shape : (int, int)
        Map size ``(ceil(H f / stride), ceil(W f / stride))``.
    patch : (int, int)
        Crop size in map pixels.
    ys, xs : tuple of int
        Crop origins along each axis.
    keep_y, keep_x : tuple of (int, int)
        Per origin, the span ``[a, b)`` inside the crop that is pasted back (the inner border removed where
        crops overlap).
    """

    factor: float
    shape: tuple[int, int]
    patch: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    keep_y: tuple[tuple[int, int], ...]
    keep_x: tuple[tuple[int, int], ...]

    def crops(self) -> list[tuple[int, int]]:
        """Crop origins ``(y, x)`` in raster order."""
        return [(y, x) for y in self.ys for x in self.xs]

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """How many pasted crops cover each map row and column (their product is the count of a pixel)."""
        out = []
        for length, origins, keep in ((self.shape[0], self.ys, self.keep_y), (self.shape[1], self.xs, self.keep_x)):
            c = np.zeros(length, np.float32)
            for o, (a, b) in zip(origins, keep):
                c[o + a : o + b] += 1
            out.append(c)
        return out[0], out[1]


def _axis(length: int, crop: int, border: int) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    crop = min(crop, length)
    n = math.ceil(length / crop)
    step = (length - crop) / max(n - 1, 1)
    origins = tuple(int(round(i * step)) for i in range(n))
    keep = []
    for i, o in enumerate(origins):
        a = min(border, (origins[i - 1] + crop - o) // 2) if i > 0 else 0
        b = crop - (min(border, (o + crop - origins[i + 1]) // 2) if i < n - 1 else 0)
        keep.append((a, b))
    return origins, tuple(keep)


def patch_grid(height: int, width: int, factor: float, patch: tuple[int, int], map_stride: int = 4,
               border: int = 2) -> PatchGrid:
    """The crop grid of an ``H x W`` image at scale ``factor`` (``patch`` in scale pixels).

    Every map pixel is covered by at least one pasted crop (tested with hypothesis).
    """
    shape = (max(1, math.ceil(height * factor / map_stride)), max(1, math.ceil(width * factor / map_stride)))
    ph, pw = (max(1, p // map_stride) for p in patch)
    ys, keep_y = _axis(shape[0], ph, border)
    xs, keep_x = _axis(shape[1], pw, border)
    return PatchGrid(factor, shape, (min(ph, shape[0]), min(pw, shape[1])), ys, xs, keep_y, keep_x)


def crop_size(height: int, width: int, settings: MagNetSettings) -> tuple[int, int]:
    """The crop ``(h, w)`` in scale pixels for an ``H x W`` image: ``settings.patch``, or the coarsest scale's size
    (rounded up to the map stride) scaled down to ``max_patch`` on its longer side; multiples of the map
    stride."""
    s = settings.map_stride
    if settings.patch is not None:
        return tuple(max(s, p // s * s) for p in settings.patch)
    f0 = settings.scales[0]
    ch, cw = math.ceil(height * f0 / s) * s, math.ceil(width * f0 / s) * s
    r = min(1.0, settings.max_patch / max(ch, cw))
    return max(s, int(ch * r) // s * s), max(s, int(cw * r) // s * s)


def input_size_for(patch: tuple[int, int], multiple: int) -> tuple[int, int]:
    """The network input for a crop: its sides rounded up to the backbone's input multiple."""
    return tuple(max(multiple, -(-p // multiple) * multiple) for p in patch)


def uncertainty(probabilities: torch.Tensor) -> torch.Tensor:
    """``1 - (top-1 - top-2)`` of ``(C, h, w)`` (or ``(B, C, h, w)``) probabilities along the class axis."""
    top = probabilities.topk(2, dim=-3).values if probabilities.shape[-3] > 1 else None
    if top is None:
        return torch.zeros_like(probabilities[..., 0, :, :])
    return 1.0 - (top[..., 0, :, :] - top[..., 1, :, :])


def _median(score: np.ndarray, kernel: int) -> np.ndarray:
    if kernel == 1:
        return score
    if kernel <= 5:
        return cv2.medianBlur(np.ascontiguousarray(score, np.float32), kernel)
    return ndimage.median_filter(score, size=kernel, mode="nearest")


def point_scores(running: torch.Tensor, refined: torch.Tensor, kernel: int = 3, selection: str = "both") -> np.ndarray:
    """MagNet's point score ``F(Y_u * (1 - R_u))`` of one crop (or an ablation's: ``F(Y_u)``, ``F(1 - R_u)``).

    Parameters
    ----------
    running, refined : (C, h, w) torch.Tensor
        Probabilities of the running map ``Y`` and the refined prediction ``R``.
    kernel : int
        Median-blur side ``F``.
    selection : str
        ``"both"``, ``"running"`` or ``"refined"``.

    Returns
    -------
    (h, w) ndarray of float32
        Higher = replace first.
    """
    y_u = uncertainty(running)
    confident = 1.0 - uncertainty(refined)
    score = {"both": y_u * confident, "running": y_u, "refined": confident}[selection]
    return _median(score.float().cpu().numpy(), kernel)


def _interp_matrix(n_out: int, n_in: int, ratio: float, first: int) -> np.ndarray:
    """Bilinear weights ``(n_out, n_in)``: output pixel ``i`` (at ``first + i`` of its grid) samples the input grid
    at ``(first + i + 0.5) ratio - 0.5``, clamped to the border (``align_corners=False`` upsampling)."""
    pos = np.clip((np.arange(first, first + n_out) + 0.5) * ratio - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


def _resample(store, shape_in: tuple[int, int], ratio: float, y: int, x: int, h: int, w: int,
              device: torch.device) -> torch.Tensor:
    """The running map of the previous scale (a store ``(hp, wp, C)``), bilinearly upsampled by ``1 / ratio`` and
    cropped to rows ``[y, y + h)`` and columns ``[x, x + w)`` of the new grid: ``(C, h, w)`` float32. Equal to
    upsampling the whole map and cropping; only the needed window is read."""
    hp, wp = shape_in
    ry = _interp_matrix(h, hp, ratio, y)
    rx = _interp_matrix(w, wp, ratio, x)
    rows = np.flatnonzero(ry.any(axis=0))
    cols = np.flatnonzero(rx.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    window = torch.from_numpy(store.read_block(y0, y1, x0, x1).astype(np.float32)).to(device)
    my = torch.from_numpy(ry[:, y0:y1]).to(device)
    mx = torch.from_numpy(rx[:, x0:x1]).to(device)
    return torch.einsum("py,yxc,qx->cpq", my, window, mx)


class _Crops:
    """Reads the image region of a crop at a scale and resizes it to the network input."""

    def __init__(self, padded, height: int, width: int, input_size: tuple[int, int], map_stride: int,
                 device: torch.device) -> None:
        self.padded, self.height, self.width = padded, height, width
        self.input_size, self.map_stride, self.device = input_size, map_stride, device

    def tensor(self, grid: PatchGrid, y: int, x: int) -> torch.Tensor:
        f, s = grid.factor, self.map_stride
        ph, pw = grid.patch
        fy0, fy1 = round(y * s / f), round((y + ph) * s / f)
        fx0, fx1 = round(x * s / f), round((x + pw) * s / f)
        region = self.padded.read(fy0, max(fy1, fy0 + 1), fx0, max(fx1, fx0 + 1))
        ih, iw = self.input_size
        if region.shape[:2] != (ih, iw):
            shrink = region.shape[0] > ih and region.shape[1] > iw
            region = cv2.resize(region, (iw, ih), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return self.padded.tensor(region, self.device)


def _early(model: MagNet, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The backbone's softmax prediction of a crop, resized (bilinear) to the crop's map size: ``(C, h, w)``."""
    logits = model.backbone(image).logits
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return torch.softmax(logits, dim=1)[0]


def _paste(acc, grid: PatchGrid, iy: int, ix: int, y: int, x: int, out: torch.Tensor) -> None:
    (a, b), (c, d) = grid.keep_y[iy], grid.keep_x[ix]
    block = out[:, a:b, c:d].permute(1, 2, 0).cpu().numpy()
    acc.write_block(y + a, x + c, acc.read_block(y + a, y + b, x + c, x + d) + block)


def _average(acc, grid: PatchGrid, running, band: int = 64) -> None:
    cy, cx = grid.counts()
    for y0 in range(0, grid.shape[0], band):
        y1 = min(grid.shape[0], y0 + band)
        count = cy[y0:y1, None, None] * cx[None, :, None]
        running.write(y0, acc.read(y0, y1) / count)


def run_magnet(model: MagNet, padded, height: int, width: int, settings: MagNetSettings,
               make_store: Callable[[str, tuple[int, ...], type], object], device: torch.device,
               timings: dict[str, float], say: Callable[[str], None] = lambda stage: None,
               trace: list | None = None):
    """Run the multi-scale loop on an image; returns the finest scale's running map (a float16 row store
    ``(ceil(H / s), ceil(W / s), C)`` of probabilities, ``s = settings.output_stride``, from ``make_store``).

    Parameters
    ----------
    model : MagNet
        Backbone and refinement module, in eval mode on ``device``.
    padded : image source
        The image, readable beyond its edges (``read(y0, y1, x0, x1)`` and ``tensor(region, device)``,
        :class:`uhrseg.inference.semantic._PaddedSource`).
    height, width : int
        The image size in pixels.
    settings : MagNetSettings
    make_store : callable
        ``(name, shape, dtype) -> row store`` (memory or files); each store it makes is closed by its maker.
    device : torch.device
    timings : dict
        Receives the seconds of each stage (``stage 0 (1/4)``, ...).
    say : callable
        Called with the name of each stage.
    trace : list, optional
        Receives, per stage, ``(factor, class map of Y (h, w) uint8, refined points (h, w) bool)`` (for figures;
        holds maps the size of each scale's grid, so only for small images).

    Raises
    ------
    ValueError
        If the patch is smaller than ``map_stride`` or the image smaller than the network input multiple.
    """
    s = settings.map_stride
    n_classes = model.n_classes
    patch = crop_size(height, width, settings)
    input_size = settings.input_size or input_size_for(patch, model.backbone.input_multiple)
    crops = _Crops(padded, height, width, tuple(input_size), s, device)
    previous = previous_grid = None
    for stage, factor in enumerate(settings.scales):
        label = f"stage {stage} ({factor:g})"
        say(label)
        t0 = time.perf_counter()
        grid = patch_grid(height, width, factor, patch, s, settings.border)
        acc = make_store(f"acc{stage}", grid.shape + (n_classes,), np.float32)
        if hasattr(acc, "array"):
            acc.array[...] = 0
        chosen = set(range(len(grid.crops())))
        points = settings.points
        if previous is not None and settings.fast:
            points = settings.fast_points
            means = []
            for y, x in grid.crops():
                y_crop = _resample(previous, previous_grid.shape, previous_grid.factor / factor, y, x,
                                   *grid.patch, device)
                means.append(float(uncertainty(y_crop).mean()))
            chosen = set(np.argsort(means)[::-1][: settings.fast_patches].tolist())  # the MOST uncertain crops
        refined_mask = np.zeros(grid.shape, bool) if trace is not None else None
        for i, (y, x) in enumerate(grid.crops()):
            iy, ix = divmod(i, len(grid.xs))
            if previous is None:
                out = _early(model, crops.tensor(grid, y, x), grid.patch)
            else:
                y_crop = _resample(previous, previous_grid.shape, previous_grid.factor / factor, y, x,
                                   *grid.patch, device)
                out = y_crop
                if i in chosen:
                    early = _early(model, crops.tensor(grid, y, x), grid.patch)
                    refined = torch.softmax(model.refinement(early[None], y_crop[None]).float(), dim=1)[0]
                    score = point_scores(y_crop, refined, settings.kernel, settings.selection)
                    k = int(round(points * score.size))
                    if k:
                        idx = torch.from_numpy(np.argsort(-score, axis=None, kind="stable")[:k]).to(device)
                        out = y_crop.reshape(n_classes, -1).clone()
                        out[:, idx] = refined.reshape(n_classes, -1)[:, idx]
                        out = out.reshape(y_crop.shape)
                        if refined_mask is not None:
                            mask = np.zeros(score.size, bool)
                            mask[idx.cpu().numpy()] = True
                            (a, b), (c, d) = grid.keep_y[iy], grid.keep_x[ix]
                            refined_mask[y + a : y + b, x + c : x + d] |= mask.reshape(score.shape)[a:b, c:d]
            _paste(acc, grid, iy, ix, y, x, out)
        running = make_store(f"running{stage}", grid.shape + (n_classes,), np.float16)
        _average(acc, grid, running)
        if hasattr(acc, "close"):
            acc.close()
        if previous is not None and hasattr(previous, "close"):
            previous.close()
        previous, previous_grid = running, grid
        synchronize(device)
        timings[label] = time.perf_counter() - t0
        if trace is not None:
            y_map = running.read(0, grid.shape[0]).argmax(axis=2).astype(np.uint8)
            trace.append((factor, y_map, refined_mask if refined_mask is not None else np.zeros(grid.shape, bool)))
    return previous

