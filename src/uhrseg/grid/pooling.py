"""Class probabilities pooled over superpixels, band by band: the bridge between superpixels and class maps.

A segmentation network gives softmax probabilities ``(h, w, C)`` at an output stride ``s`` (``h = ceil(H / s)``);
superpixels give labels ``(H, W)`` at full resolution. Each superpixel gets the mean of the bilinearly upsampled
probabilities of its pixels (or, for a hard class map, the votes of its pixels), and every pixel then takes
its superpixel's class, unless its own prediction is confident (the confidence gate). Everything runs on bands
of rows: the full-resolution ``C``-channel probabilities never exist, only one band of them, so the same code
serves gigapixel images held in row stores (:mod:`uhrseg.stores`).

Bilinear upsampling here is ``torch.nn.functional.interpolate(..., scale_factor=s, mode="bilinear",
align_corners=False)`` of the whole map; :func:`upsampled_bands` gives exactly its rows, band by band (a
property test checks it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["assign_superpixel_classes", "superpixel_probability_sums", "superpixel_votes", "upsample_rows",
           "upsampled_bands"]

#: Elements of one upsampled band (bounds the memory of every banded pass here: 64 MB of float32).
BAND_ELEMENTS = 2**24


def _rows(store, y0: int, y1: int) -> np.ndarray:
    return store[y0:y1] if isinstance(store, np.ndarray) else store.read(y0, y1)


def upsample_rows(maps, stride: int, y0: int, y1: int, width: int, device: torch.device | str = "cpu"
                  ) -> torch.Tensor:
    """Rows ``[y0, y1)`` of a low-resolution map upsampled bilinearly by an integer ``stride``
    (``align_corners=False``), equal to those rows of the whole upsampling: ``(C, y1 - y0, width)`` float32.

    Parameters
    ----------
    maps : (h, w, C) ndarray or row store
        Logits or probabilities at stride ``stride``.
    stride : int
        Image pixels per map pixel.
    y0, y1 : int
        Image rows (``0 <= y0 < y1 <= h stride``).
    width : int
        Image columns kept (``<= w stride``).
    """
    lh = maps.shape[0]
    a, b = max(0, y0 // stride - 1), min(lh, (y1 - 1) // stride + 2)  # one map row of margin each side
    t = torch.from_numpy(np.ascontiguousarray(_rows(maps, a, b), dtype=np.float32)).to(device)
    # (1, C, h, w) channels-last with the batch stride of a real 4-D array: torch's fast bilinear kernel (4x
    # faster than the same view made by permuting first and then adding the batch axis)
    up = F.interpolate(t[None].permute(0, 3, 1, 2), scale_factor=stride, mode="bilinear", align_corners=False)
    return up[0, :, y0 - a * stride : y1 - a * stride, :width]


def upsampled_bands(maps, stride: int, height: int, width: int, device: torch.device | str = "cpu",
                    band_elements: int = BAND_ELEMENTS) -> Iterator[tuple[int, torch.Tensor]]:
    """Bands of :func:`upsample_rows` covering an ``H x W`` image: ``(first row, (C, rows, W) float32)``.

    ``band_elements`` bounds ``C x rows x W`` of a band; bands are multiples of ``stride`` rows.
    """
    lw, n = maps.shape[1], maps.shape[2]
    rows = max(1, band_elements // (lw * stride * n * stride)) * stride
    for y0 in range(0, height, rows):
        yield y0, upsample_rows(maps, stride, y0, min(height, y0 + rows), width, device)


def superpixel_probability_sums(labels, probabilities, n_superpixels: int, stride: int,
                                band_elements: int = BAND_ELEMENTS) -> np.ndarray:
    """Per superpixel, the sum of the upsampled probabilities of its pixels, and its pixel count.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Superpixel labels ``0 .. K-1``.
    probabilities : (h, w, C) ndarray or row store
        Softmax probabilities at stride ``stride``.
    n_superpixels : int
        ``K``.
    stride : int

    Returns
    -------
    (K, C + 1) ndarray of float64
        Columns ``0 .. C-1``: probability sums; column ``C``: pixels.

    Raises
    ------
    ValueError
        If a label is outside ``0 .. K-1``.
    """
    height, width = labels.shape[:2]
    n_classes = probabilities.shape[2]
    sums = np.zeros((n_superpixels, n_classes + 1), np.float64)
    for y0, band in upsampled_bands(probabilities, stride, height, width, band_elements=band_elements):
        lab = np.asarray(_rows(labels, y0, y0 + band.shape[1]), np.int64).ravel()
        if lab.size and (lab.min() < 0 or lab.max() >= n_superpixels):
            raise ValueError(f"superpixel labels must be in 0..{n_superpixels - 1}, rows {y0}.. hold "
                             f"{lab.min()}..{lab.max()}")
        values = band.reshape(n_classes, -1).numpy()
        for c in range(n_classes):
            sums[:, c] += np.bincount(lab, weights=values[c], minlength=n_superpixels)
        sums[:, n_classes] += np.bincount(lab, minlength=n_superpixels)
    return sums


def superpixel_votes(labels, classes, n_superpixels: int, n_classes: int, band_rows: int = 512) -> np.ndarray:
    """Per superpixel, how many of its pixels a hard class map gives each class.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Superpixel labels ``0 .. K-1``.
    classes : (H, W) ndarray or row store of integers
        Class ids ``0 .. C-1``; other values (e.g. 255, unlabelled) do not vote.

    Returns
    -------
    (K, C) ndarray of int64
    """
    height = labels.shape[0]
    votes = np.zeros(n_superpixels * n_classes, np.int64)
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        lab = np.asarray(_rows(labels, y0, y1), np.int64).ravel()
        cls = np.asarray(_rows(classes, y0, y1), np.int64).ravel()
        keep = (cls >= 0) & (cls < n_classes)
        votes += np.bincount(lab[keep] * n_classes + cls[keep], minlength=votes.size)
    return votes.reshape(n_superpixels, n_classes)


def assign_superpixel_classes(labels, superpixel_classes: np.ndarray, out, *, probabilities=None,
                              stride: int = 1, confidence: float = 1.0,
                              band_elements: int = BAND_ELEMENTS) -> np.ndarray:
    """Write each pixel's class: its superpixel's, unless its own prediction is at least ``confidence``.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
    superpixel_classes : (K,) ndarray of uint8
        The class of each superpixel.
    out : row store of (H, W) uint8
        Receives the class map (:class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`).
    probabilities : (h, w, C) ndarray or row store, optional
        For the confidence gate: a pixel whose upsampled top-1 probability is ``>= confidence`` keeps its own
        argmax. Without it (or with ``confidence > 1``) every pixel takes its superpixel's class.
    stride : int
        Stride of ``probabilities``.

    Returns
    -------
    (C,) ndarray of int64
        Pixels per class (``C = len(palette)`` is taken as ``superpixel_classes.max() + 1`` without
        probabilities).
    """
    height, width = labels.shape[:2]
    lut = np.asarray(superpixel_classes, np.uint8)
    if probabilities is None or confidence > 1:
        n_classes = int(lut.max()) + 1 if lut.size else 1
        counts = np.zeros(max(n_classes, probabilities.shape[2] if probabilities is not None else 0), np.int64)
        for y0 in range(0, height, 512):
            band = lut[np.asarray(_rows(labels, y0, min(height, y0 + 512)), np.int64)]
            out.write(y0, band)
            counts += np.bincount(band.ravel(), minlength=counts.size)[: counts.size]
        return counts
    n_classes = probabilities.shape[2]
    counts = np.zeros(n_classes, np.int64)
    for y0, band in upsampled_bands(probabilities, stride, height, width, band_elements=band_elements):
        top, own = band.max(dim=0)
        lab = np.asarray(_rows(labels, y0, y0 + band.shape[1]), np.int64)
        cls = lut[lab]
        keep = (top >= confidence).numpy()
        cls[keep] = own.numpy().astype(np.uint8)[keep]
        out.write(y0, cls)
        counts += np.bincount(cls.ravel(), minlength=n_classes)[:n_classes]
    return counts
