"""Training samples as in Algorithm 1 of the PCNet paper (``docs/pcnet.md`` section 3).

For each (image, ground truth) pair:

* global sample: image and labels resized to ``global_resize`` squared (the paper), or with ``scale_range`` by a
  random scale that keeps the aspect ratio (training at the test scale, ``docs/pcnet.md`` section 7), then a
  random ``crop`` squared crop ``G*`` with labels ``S_G``; the network input ``G`` is ``G*`` downsampled by
  the model's ``upscale`` (4 for PCNet) with the same resize as inference (:func:`uhrseg.inference.resize_image`);
* local DPC patch: a ``patch`` squared crop of the full-resolution image around a random ground-truth boundary
  pixel (shifted to stay inside), ``L*`` and ``S_L``, and its input ``L``; images smaller than the patch are
  first enlarged so that their shorter side equals it;
* binary guidance mask ``M`` (Eq. 4): 1 on the class of ``S_L`` that most boundary pixels belong to;
* SR band ``B``: ground-truth boundaries dilated by a ``band`` x ``band`` ones kernel;
* ``K x K`` windows (``ld_window``) on boundary pixels of ``S_G`` that hold exactly two labels, up to
  ``ld_max_windows`` (about one per ``K`` boundary pixels);
* random horizontal and vertical flips.

Labels are relabelled per crop (``0 .. C-1``), so the one-hot encoding costs the labels present, not the
dataset's label count.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy import ndimage

from ..grid.boundaries import boundary_mask
from ..inference.resize import resize_image

__all__ = ["Sample", "SamplingConfig", "TrainingSampler", "batch_to_torch", "check_scale_range"]


def check_scale_range(scale_range: tuple[float, float]) -> None:
    """Check a random-scale range ``(low, high)`` of training crops (1 = full resolution).

    Raises
    ------
    ValueError
        Unless ``0 < low <= high``.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")


@dataclass(frozen=True)
class SamplingConfig:
    """Sizes in pixels (output resolution) and switches of the sampler.

    Attributes
    ----------
    global_resize : int
        Side the whole image is resized to before the global crop (paper: 768); unused with ``scale_range``.
    scale_range : (float, float), optional
        Instead of ``global_resize``: resize the whole image by a scale drawn uniformly in ``[low, high]``,
        keeping its aspect ratio, raised where needed so that the shorter side holds the crop. Scale 1 is the
        full resolution; at ``n`` superpixels a network works at scale ``16 sqrt(n / (H W))`` (BSDS500 at
        ``n = 600``: about 1). ``None`` (default): the paper's square resize.
    crop : int
        Global crop side (paper: 512); a multiple of ``16 * upscale``.
    patch : int
        DPC patch side at full resolution (paper: 512); a multiple of ``16 * upscale``.
    upscale : int
        Output pixels per input pixel (PCNet 4, SCN 1).
    dpc : bool
        Sample the local patch.
    binary_mask : bool
        Supervise the patch with the binary guidance mask (else with its multi-class labels).
    ld_window : int
        Window side ``K`` of the local discrimination loss (5); 0 disables the windows.
    ld_max_windows : int
        Windows per sample at most (500).
    band : int
        Side of the dilation kernel of the SR band (16).
    flips : bool
        Random horizontal and vertical flips.
    """

    global_resize: int = 768
    crop: int = 512
    patch: int = 512
    upscale: int = 4
    scale_range: tuple[float, float] | None = None
    dpc: bool = True
    binary_mask: bool = True
    ld_window: int = 5
    ld_max_windows: int = 500
    band: int = 16
    flips: bool = True

    def __post_init__(self) -> None:
        unit = 16 * self.upscale
        for name in ("crop", "patch"):
            value = getattr(self, name)
            if value < unit or value % unit:
                raise ValueError(f"{name}={value} must be a positive multiple of {unit} (16 x upscale)")
        if self.scale_range is None and self.global_resize < self.crop:
            raise ValueError(f"global_resize={self.global_resize} must be >= crop={self.crop}")
        if self.scale_range is not None:
            check_scale_range(self.scale_range)


@dataclass
class Sample:
    """One branch's crop: network input, per-crop labels, HR target, SR band, L_D windows (numpy arrays)."""

    input: np.ndarray  # (3, c / up, c / up) float32 in [0, 1]
    labels: np.ndarray  # (c, c) int64, 0 .. C-1
    target: np.ndarray  # (3, c, c) float32 in [-1, 1]
    band: np.ndarray  # (c, c) bool
    windows: np.ndarray  # (N, 2) int64 top-left corners
    window_mask: np.ndarray  # (N, K, K) bool


def _resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    return cv2.resize(labels.astype(np.int32), (width, height), interpolation=cv2.INTER_NEAREST)


def _relabel(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int64)


class TrainingSampler:
    """Draws batches of global samples and DPC patches from (image, ground truth) pairs.

    Parameters
    ----------
    datasets : list
        Datasets (:class:`uhrseg.datasets.BSDS500`, :class:`uhrseg.datasets.LabelledFolder`); every ground truth of
        every image is its own sample.
    config : SamplingConfig
        Sizes and switches.
    seed : int
        Seed of the sampler's own ``numpy`` generator (its state is saved in training checkpoints).

    Raises
    ------
    ValueError
        If the datasets hold no image.
    """

    def __init__(self, datasets: list, config: SamplingConfig, seed: int = 0) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.pairs: list[tuple[int, str, int]] = []
        self.datasets = list(datasets)
        self._ground_truths: dict[tuple[int, str], list[np.ndarray]] = {}
        self._images: dict[tuple[int, str], np.ndarray] = {}
        for d, ds in enumerate(self.datasets):
            for name in ds.names:
                gts = [g.astype(np.int32, copy=False) for g in ds.ground_truths(name)]
                self._ground_truths[(d, name)] = gts
                self.pairs.extend((d, name, g) for g in range(len(gts)))
        if not self.pairs:
            raise ValueError("no training samples in the given datasets")

    def _load(self, d: int, name: str) -> tuple[np.ndarray, list[np.ndarray]]:
        """The image (decoded once, kept as uint8) and its ground truths (read at start-up)."""
        key = (d, name)
        if key not in self._images:
            image = self.datasets[d].image(name)
            if image.dtype != np.uint8:
                image = (resize_image(image, *image.shape[:2]) * 255 + 0.5).astype(np.uint8)
            self._images[key] = image
        return self._images[key], self._ground_truths[key]

    def _flip(self, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.config.flips:
            if self.rng.random() < 0.5:
                image, labels = image[:, ::-1], labels[:, ::-1]
            if self.rng.random() < 0.5:
                image, labels = image[::-1], labels[::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)

    def _finish(self, hr: np.ndarray, labels: np.ndarray, windows: bool) -> Sample:
        """``hr``: (c, c, 3) float32 in [0, 1]; ``labels``: (c, c) int."""
        cfg = self.config
        c = labels.shape[0]
        small = resize_image(hr, c // cfg.upscale, c // cfg.upscale)
        labels = _relabel(labels)
        edges = boundary_mask(labels)
        band = ndimage.maximum_filter(edges.view(np.uint8), size=cfg.band).view(bool) if cfg.band > 1 else edges
        if windows and cfg.ld_window > 0:
            corners, masks = self._windows(labels, edges)
        else:
            corners = np.zeros((0, 2), np.int64)
            masks = np.zeros((0, max(cfg.ld_window, 1), max(cfg.ld_window, 1)), bool)
        return Sample(small.transpose(2, 0, 1).copy(), labels, hr.transpose(2, 0, 1) * 2.0 - 1.0, band, corners, masks)

    def _windows(self, labels: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.config.ld_window
        h, w = labels.shape
        ys, xs = np.nonzero(edges)
        y0, x0 = ys - k // 2, xs - k // 2
        inside = (y0 >= 0) & (x0 >= 0) & (y0 + k <= h) & (x0 + k <= w)
        y0, x0 = y0[inside], x0[inside]
        cap = min(self.config.ld_max_windows, len(ys) // k)
        if cap == 0 or y0.size == 0:
            return np.zeros((0, 2), np.int64), np.zeros((0, k, k), bool)
        pick = self.rng.choice(y0.size, size=min(y0.size, 4 * cap), replace=False)
        y0, x0 = y0[pick], x0[pick]
        d = np.arange(k)
        win = labels[y0[:, None, None] + d[None, :, None], x0[:, None, None] + d[None, None, :]]  # (N, K, K)
        lo = win.min(axis=(1, 2), keepdims=True)
        hi = win.max(axis=(1, 2), keepdims=True)
        two = ((win == lo) | (win == hi)).all(axis=(1, 2)) & (lo[:, 0, 0] != hi[:, 0, 0])
        keep = np.nonzero(two)[0][:cap]
        return np.stack([y0[keep], x0[keep]], axis=1).astype(np.int64), win[keep] == lo[keep]

    def global_size(self, height: int, width: int) -> tuple[int, int]:
        """Size ``(rows, columns)`` the whole ``height x width`` image is resized to before the global crop:
        ``global_resize`` squared, or with ``scale_range`` the image's size times a scale drawn from the
        sampler's generator (aspect ratio kept, both sides at least ``crop``)."""
        cfg = self.config
        if cfg.scale_range is None:
            return cfg.global_resize, cfg.global_resize
        scale = max(float(self.rng.uniform(*cfg.scale_range)), cfg.crop / min(height, width))
        return max(cfg.crop, round(height * scale)), max(cfg.crop, round(width * scale))

    def global_sample(self, image: np.ndarray, labels: np.ndarray) -> Sample:
        """Resize (``global_resize`` squared, or a random aspect-keeping scale), random ``crop``, flips
        (Algorithm 1, global branch)."""
        cfg = self.config
        rh, rw = self.global_size(*labels.shape)
        big, lab = resize_image(image, rh, rw), _resize_labels(labels, rh, rw)
        y = int(self.rng.integers(0, rh - cfg.crop + 1))
        x = int(self.rng.integers(0, rw - cfg.crop + 1))
        hr, lab = self._flip(big[y : y + cfg.crop, x : x + cfg.crop], lab[y : y + cfg.crop, x : x + cfg.crop])
        return self._finish(hr, lab, windows=True)

    def patch_sample(self, image: np.ndarray, labels: np.ndarray) -> Sample:
        """Full-resolution ``patch`` around a random ground-truth boundary pixel, with the guidance mask."""
        cfg = self.config
        p = cfg.patch
        h, w = labels.shape
        if min(h, w) < p:  # enlarge small images so the patch fits
            scale = p / min(h, w)
            h, w = max(p, round(h * scale)), max(p, round(w * scale))
            image = (resize_image(image, h, w) * 255 + 0.5).astype(np.uint8)
            labels = _resize_labels(labels, h, w)
        ys, xs = np.nonzero(boundary_mask(labels))
        if ys.size:
            i = int(self.rng.integers(ys.size))
            cy, cx = int(ys[i]), int(xs[i])
        else:
            cy, cx = int(self.rng.integers(h)), int(self.rng.integers(w))
        y = min(max(cy - p // 2, 0), h - p)
        x = min(max(cx - p // 2, 0), w - p)
        crop, lab = self._flip(image[y : y + p, x : x + p], labels[y : y + p, x : x + p])
        if cfg.binary_mask:
            lab = _relabel(lab)
            on_edges = lab[boundary_mask(lab)]
            if on_edges.size:
                lab = (lab == np.bincount(on_edges).argmax()).astype(np.int64)
        return self._finish(crop.astype(np.float32) / 255.0, lab, windows=False)

    def batch_arrays(self, size: int) -> dict[str, dict[str, np.ndarray]]:
        """Draw ``size`` random pairs as NumPy arrays (what :meth:`batch` moves to torch; picklable, so worker
        processes can draw them: :class:`uhrseg.training.loader.BatchLoader`)."""
        picks = self.rng.integers(len(self.pairs), size=size)
        branches: dict[str, list[Sample]] = {"global": [], "patch": []}
        for i in picks:
            d, name, g = self.pairs[int(i)]
            image, gts = self._load(d, name)
            branches["global"].append(self.global_sample(image, gts[g]))
            if self.config.dpc:
                branches["patch"].append(self.patch_sample(image, gts[g]))
        return {k: _collate(v) for k, v in branches.items() if v}

    def batch(self, size: int, device: torch.device | str = "cpu") -> dict[str, dict[str, torch.Tensor]]:
        """Draw ``size`` random pairs; returns ``{"global": tensors, "patch": tensors}`` (patch only with DPC).

        Tensors per branch: ``input`` ``(B, 3, c/up, c/up)``, ``labels`` ``(B, c, c)`` int64, ``target``
        ``(B, 3, c, c)``, ``band`` ``(B, c, c)`` bool, ``windows`` ``(N, 3)`` (batch index, y0, x0) and
        ``window_mask`` ``(N, K, K)``.
        """
        return batch_to_torch(self.batch_arrays(size), device)


def batch_to_torch(batch: dict[str, dict[str, np.ndarray]], device: torch.device | str = "cpu"
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """The arrays of :meth:`TrainingSampler.batch_arrays` as tensors on ``device``."""
    return {k: {name: torch.from_numpy(v).to(device) for name, v in branch.items()} for k, branch in batch.items()}


def _collate(samples: list[Sample]) -> dict[str, np.ndarray]:
    windows = [np.concatenate([np.full((len(s.windows), 1), b), s.windows], axis=1) for b, s in enumerate(samples)]
    return {
        "input": np.stack([s.input for s in samples]),
        "labels": np.stack([s.labels for s in samples]),
        "target": np.stack([s.target for s in samples]),
        "band": np.stack([s.band for s in samples]),
        "windows": np.concatenate(windows).astype(np.int64),
        "window_mask": np.concatenate([s.window_mask for s in samples]),
    }
