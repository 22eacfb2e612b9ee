"""Training crops for semantic segmentation: random scale, crop, flips, 90-degree rotations, photometric jitter.

The pipeline of mmsegmentation's standard training transforms, written for numpy and OpenCV:

1. pick an image (uniformly) and a scale ``s`` uniform in ``scale_range``;
2. cut the source window that becomes a ``crop x crop`` crop at scale ``s`` (only that window is resized:
   bilinear for the image, nearest for the class map); images smaller than the crop are placed at a random
   offset on a canvas padded with black and the ignore index;
3. retry the crop (up to 10 times) while one class covers more than ``cat_max_ratio`` of its labelled pixels,
   so that crops of a lawn do not dominate the rare classes;
4. random horizontal and vertical flips and a random multiple of 90 degrees (aerial and satellite images
   have no "up");
5. photometric distortion, each with probability 1/2: brightness (+-32 levels), contrast (x 0.5-1.5),
   saturation (x 0.5-1.5), hue (+-18 degrees).

Images and class maps are decoded once and kept in memory as uint8 (the whole Semantic Drone train + more
split is about 1.8 GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..datasets.classes import IGNORE_INDEX, ClassTable
from ..io.images import to_uint8
from .sampling import check_scale_range

__all__ = ["SemanticSampler", "SemanticSamplingConfig"]


@dataclass(frozen=True)
class SemanticSamplingConfig:
    """Sizes and switches of :class:`SemanticSampler`.

    Attributes
    ----------
    crop : int
        Crop side in pixels (a multiple of 32).
    scale_range : (float, float)
        Range of the random scale applied to the image before cropping.
    flips, rotate, photometric : bool
        Random flips, 90-degree rotations and photometric distortion.
    cat_max_ratio : float
        Largest share of a crop's labelled pixels one class may cover (1 disables the retries).
    """

    crop: int = 768
    scale_range: tuple[float, float] = (0.5, 2.0)
    flips: bool = True
    rotate: bool = True
    photometric: bool = True
    cat_max_ratio: float = 0.75

    def __post_init__(self) -> None:
        if self.crop < 32 or self.crop % 32:
            raise ValueError(f"crop={self.crop} must be a positive multiple of 32 pixels")
        check_scale_range(self.scale_range)


class SemanticSampler:
    """Draws batches of augmented crops from one or more labelled datasets.

    Parameters
    ----------
    datasets : list
        Datasets with ``names``, ``image(name)``, ``class_map(name)`` and ``class_table``
        (:func:`uhrseg.datasets.open_semantic_dataset`); they must share one class table.
    config : SemanticSamplingConfig
        Sizes and switches.
    seed : int
        Seed of the sampler's ``numpy`` generator (its state is saved in training checkpoints).
    progress : callable, optional
        Called with ``(done, total)`` while the images are decoded.

    Raises
    ------
    ValueError
        If the datasets hold no image or their class tables differ.
    """

    def __init__(self, datasets: list, config: SemanticSamplingConfig, seed: int = 0, progress=None) -> None:
        if not datasets or not sum(len(d) for d in datasets):
            raise ValueError("no training images in the given datasets")
        tables = {d.class_table for d in datasets}
        if len(tables) > 1:
            raise ValueError("the training datasets have different class tables: "
                             + "; ".join(f"{d.label}: {d.class_table.n_classes} classes" for d in datasets))
        self.class_table: ClassTable = datasets[0].class_table
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.images: list[np.ndarray] = []
        self.class_maps: list[np.ndarray] = []
        total = sum(len(d) for d in datasets)
        for d in datasets:
            for name in d.names:
                self.images.append(to_uint8(d.image(name)))
                self.class_maps.append(d.class_map(name))
                if progress is not None:
                    progress(len(self.images), total)

    def __len__(self) -> int:
        return len(self.images)

    def _window(self, image: np.ndarray, labels: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """A random crop of the image scaled by ``scale``, padded to ``crop x crop`` when the image is smaller."""
        crop = self.config.crop
        h, w = labels.shape
        src = crop / scale
        wh, ww = min(h, max(1, round(src))), min(w, max(1, round(src)))
        y = int(self.rng.integers(0, h - wh + 1))
        x = int(self.rng.integers(0, w - ww + 1))
        out_h, out_w = min(crop, max(1, round(wh * scale))), min(crop, max(1, round(ww * scale)))
        img = image[y : y + wh, x : x + ww]
        lab = labels[y : y + wh, x : x + ww]
        if (out_h, out_w) != (wh, ww):
            shrink = out_h < wh
            img = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            lab = cv2.resize(lab, (out_w, out_h), interpolation=cv2.INTER_NEAREST_EXACT)  # pixel centres, as bilinear
        if (out_h, out_w) == (crop, crop):
            return img, lab
        canvas = np.zeros((crop, crop, 3), np.uint8)
        canvas_lab = np.full((crop, crop), IGNORE_INDEX, np.uint8)
        oy = int(self.rng.integers(0, crop - out_h + 1))
        ox = int(self.rng.integers(0, crop - out_w + 1))
        canvas[oy : oy + out_h, ox : ox + out_w] = img
        canvas_lab[oy : oy + out_h, ox : ox + out_w] = lab
        return canvas, canvas_lab

    def _photometric(self, img: np.ndarray) -> np.ndarray:
        rng = self.rng
        out = img.astype(np.float32)
        if rng.random() < 0.5:
            out += rng.uniform(-32, 32)
        contrast_first = rng.random() < 0.5
        contrast = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
        if contrast is not None and contrast_first:
            out *= contrast
        out = np.clip(out, 0, 255)
        saturation = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else None
        hue = rng.uniform(-18, 18) if rng.random() < 0.5 else None
        if saturation is not None or hue is not None:
            hsv = cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
            if saturation is not None:
                hsv[:, :, 1] = np.clip(hsv[:, :, 1] * saturation, 0, 255)
            if hue is not None:
                hsv[:, :, 0] = (hsv[:, :, 0] + hue / 2) % 180  # OpenCV's hue is in 0..180
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        if contrast is not None and not contrast_first:
            out = np.clip(out * contrast, 0, 255)
        return out.astype(np.uint8)

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One augmented crop: ``(crop, crop, 3)`` uint8 image and ``(crop, crop)`` uint8 class ids (255 =
        ignore)."""
        cfg = self.config
        i = int(self.rng.integers(len(self.images)))
        image, labels = self.images[i], self.class_maps[i]
        scale = float(self.rng.uniform(*cfg.scale_range))
        for _ in range(10):
            img, lab = self._window(image, labels, scale)
            if cfg.cat_max_ratio >= 1:
                break
            counts = np.bincount(lab.ravel(), minlength=256)[:IGNORE_INDEX]
            if counts.sum() and counts.max() <= cfg.cat_max_ratio * counts.sum():
                break
        if cfg.flips:
            if self.rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            if self.rng.random() < 0.5:
                img, lab = img[::-1], lab[::-1]
        if cfg.rotate:
            k = int(self.rng.integers(4))
            img, lab = np.rot90(img, k), np.rot90(lab, k)
        img, lab = np.ascontiguousarray(img), np.ascontiguousarray(lab)
        if cfg.photometric:
            img = self._photometric(img)
        return img, lab

    def batch(self, size: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` crops: images ``(B, 3, crop, crop)`` float32 in [0, 1] (channels-last) and labels
        ``(B, crop, crop)`` int64 (255 = ignore)."""
        pairs = [self.sample() for _ in range(size)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
        return images.to(device), labels.to(device)
