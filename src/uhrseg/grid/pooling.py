"""Class probabilities pooled over superpixels, band by band: the bridge between superpixels and class maps.

A segmentation network gives softmax probabilities ``(h, w, C)`` at an output stride ``s`` (``h = ceil(H / s)``);
superpixels give labels ``(H, W)`` at full resolution. Each superpixel gets the mean of the bilinearly upsampled
probabilities of its pixels (or, for a hard class map, the votes of its pixels), and every pixel then takes
its superpixel's class, unless its own prediction is confident (the confidence gate). Everything runs on bands
of rows, so the same code serves gigapixel images held in row stores (:mod:`uhrseg.stores`).

Bilinear upsampling here is ``torch.nn.functional.interpolate(..., scale_factor=s, mode="bilinear",
align_corners=False)`` of the whole map. :func:`upsampled_bands` gives exactly its rows, band by band (a
property test checks it), for the passes that need every channel of every pixel (the bilinear and guided
comparators). Pooling and the confidence gate need less: compiled kernels (numba) interpolate each pixel's
``C`` values on the fly and add them to its superpixel, so not even a band of full-resolution probabilities is
made (5x faster than upsampling bands with torch and summing them with ``np.bincount``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numba
import numpy as np
import torch
import torch.nn.functional as F

from ..stores import rows_of

__all__ = ["assign_superpixel_classes", "superpixel_probability_sums", "superpixel_votes", "upsample_rows",
           "upsampled_bands"]

#: Elements of one upsampled band (bounds the memory of every banded pass here: 64 MB of float32).
BAND_ELEMENTS = 2**24


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
    device : torch.device or str
        Where the upsampling runs and the result lives (``"cpu"``, ``"cuda"``); the rows are read on the CPU.

    Returns
    -------
    (C, y1 - y0, width) torch.Tensor of float32
        On ``device``.
    """
    lh = maps.shape[0]
    a, b = max(0, y0 // stride - 1), min(lh, (y1 - 1) // stride + 2)  # one map row of margin each side
    t = torch.from_numpy(np.ascontiguousarray(rows_of(maps, a, b), dtype=np.float32)).to(device)
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


def _bilinear_index(n_out: int, n_in: int, stride: int, first: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                 np.ndarray]:
    """Source indices ``i0, i1`` (int64) and weight ``l1`` of ``i1`` (float32) of output positions
    ``first .. first + n_out - 1`` in torch's bilinear upsampling by ``stride`` with ``align_corners=False``:
    ``src = (dst + 0.5) / stride - 0.5`` clamped at 0, ``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in - 1)``."""
    dst = np.arange(first, first + n_out, dtype=np.float32)
    src = np.maximum(np.float32(1.0 / stride) * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


@numba.njit(cache=True, nogil=True)
def _row_values(p, r0, r1, ly, row):  # pragma: no cover - compiled
    """Vertical interpolation of two map rows into ``row`` (w, C)."""
    w, n_classes = row.shape
    for j in range(w):
        for c in range(n_classes):
            row[j, c] = (1.0 - ly) * p[r0, j, c] + ly * p[r1, j, c]


@numba.njit(cache=True, nogil=True)
def _pool_band(p, labels, y_r0, y_r1, y_l1, x_i0, x_i1, x_l1, sums):  # pragma: no cover - compiled
    """Add the upsampled probabilities of each band pixel to its superpixel's row of ``sums`` (K, C + 1)."""
    rows, width = labels.shape
    n_classes = p.shape[2]
    row = np.empty((p.shape[1], n_classes), np.float32)
    for y in range(rows):
        _row_values(p, y_r0[y], y_r1[y], y_l1[y], row)
        for x in range(width):
            k = labels[y, x]
            a, b, lx = x_i0[x], x_i1[x], x_l1[x]
            for c in range(n_classes):
                sums[k, c] += (1.0 - lx) * row[a, c] + lx * row[b, c]
            sums[k, n_classes] += 1.0


@numba.njit(cache=True, nogil=True)
def _assign_band(p, labels, lut, confidence, y_r0, y_r1, y_l1, x_i0, x_i1, x_l1, out):  # pragma: no cover
    """Each band pixel's class: its own argmax where its upsampled top-1 probability is >= confidence, else
    its superpixel's (``lut``)."""
    rows, width = labels.shape
    n_classes = p.shape[2]
    row = np.empty((p.shape[1], n_classes), np.float32)
    for y in range(rows):
        _row_values(p, y_r0[y], y_r1[y], y_l1[y], row)
        for x in range(width):
            a, b, lx = x_i0[x], x_i1[x], x_l1[x]
            best, arg = np.float32(-1.0), 0
            for c in range(n_classes):
                v = np.float32((1.0 - lx) * row[a, c] + lx * row[b, c])
                if v > best:
                    best, arg = v, c
            out[y, x] = arg if best >= confidence else lut[labels[y, x]]


def _probability_bands(labels, probabilities, stride: int, band_rows: int, n_superpixels: int | None = None):
    """Bands ``(y0, map rows (m, w, C) float32, vertical indices relative to them, labels (rows, W) int32)``."""
    height = labels.shape[0]
    lh = probabilities.shape[0]
    rows = max(stride, band_rows // stride * stride)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        a, b = max(0, y0 // stride - 1), min(lh, (y1 - 1) // stride + 2)
        p = np.ascontiguousarray(rows_of(probabilities, a, b), dtype=np.float32)
        r0, r1, l1 = _bilinear_index(y1 - y0, lh, stride, y0)
        lab = np.ascontiguousarray(rows_of(labels, y0, y1), dtype=np.int32)
        if n_superpixels is not None and lab.size and (lab.min() < 0 or lab.max() >= n_superpixels):
            raise ValueError(f"superpixel labels must be in 0..{n_superpixels - 1}, rows {y0}.. hold "
                             f"{lab.min()}..{lab.max()}")
        yield y0, p, (r0 - a, r1 - a, l1), lab


def _check_maps(labels, probabilities, stride: int) -> None:
    height, width = labels.shape[:2]
    lh, lw = probabilities.shape[:2]
    if lh != -(-height // stride) or lw != -(-width // stride):
        raise ValueError(f"probabilities of {lh} x {lw} at stride {stride} do not cover {height} x {width} labels "
                         f"(expected {-(-height // stride)} x {-(-width // stride)})")


def superpixel_probability_sums(labels, probabilities, n_superpixels: int, stride: int,
                                band_rows: int = 512) -> np.ndarray:
    """Per superpixel, the sum of the upsampled probabilities of its pixels, and its pixel count.

    The probabilities are upsampled as ``torch.nn.functional.interpolate(..., scale_factor=stride,
    mode="bilinear", align_corners=False)`` would (equal up to float32 rounding; tested), pixel by pixel inside
    a compiled kernel: neither the full-resolution ``C``-channel array nor a band of it is ever made.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Superpixel labels ``0 .. K-1``.
    probabilities : (ceil(H / stride), ceil(W / stride), C) ndarray or row store
        Softmax probabilities at stride ``stride``.
    n_superpixels : int
        ``K``.
    stride : int
        Image pixels per map pixel.
    band_rows : int
        Image rows read at a time (memory: ``band_rows x W`` labels).

    Returns
    -------
    (K, C + 1) ndarray of float64
        Columns ``0 .. C-1``: probability sums; column ``C``: pixels.

    Raises
    ------
    ValueError
        If a label is outside ``0 .. K-1`` or the map does not cover the labels at ``stride``.
    """
    _check_maps(labels, probabilities, stride)
    width = labels.shape[1]
    n_classes = probabilities.shape[2]
    x_i0, x_i1, x_l1 = _bilinear_index(width, probabilities.shape[1], stride)
    sums = np.zeros((n_superpixels, n_classes + 1), np.float64)
    for _, p, (r0, r1, l1), lab in _probability_bands(labels, probabilities, stride, band_rows, n_superpixels):
        _pool_band(p, lab, r0, r1, l1, x_i0, x_i1, x_l1, sums)
    return sums


def superpixel_votes(labels, classes, n_superpixels: int, n_classes: int, band_rows: int = 512) -> np.ndarray:
    """Per superpixel, how many of its pixels a hard class map gives each class.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Superpixel labels ``0 .. K-1``.
    classes : (H, W) ndarray or row store of integers
        Class ids ``0 .. C-1``; other values (e.g. 255, unlabelled) do not vote.
    n_superpixels : int
        ``K``, the number of superpixels (labels must be below it).
    n_classes : int
        ``C``, the number of classes.
    band_rows : int
        Rows read at a time (memory: about 16 bytes per pixel of a band); the result does not depend on it.

    Returns
    -------
    (K, C) ndarray of int64
        ``votes[k, c]``: pixels of superpixel ``k`` with class ``c``.

    Raises
    ------
    ValueError
        If a label is negative or ``>= n_superpixels`` (raised by numpy, without naming the label).
    """
    height = labels.shape[0]
    votes = np.zeros(n_superpixels * n_classes, np.int64)
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        lab = np.asarray(rows_of(labels, y0, y1), np.int64).ravel()
        cls = np.asarray(rows_of(classes, y0, y1), np.int64).ravel()
        keep = (cls >= 0) & (cls < n_classes)
        votes += np.bincount(lab[keep] * n_classes + cls[keep], minlength=votes.size)
    return votes.reshape(n_superpixels, n_classes)


def assign_superpixel_classes(labels, superpixel_classes: np.ndarray, out, *, probabilities=None,
                              stride: int = 1, confidence: float = 1.0, band_rows: int = 512) -> np.ndarray:
    """Write each pixel's class: its superpixel's, unless its own prediction is at least ``confidence``.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
    superpixel_classes : (K,) ndarray of uint8
        The class of each superpixel.
    out : row store of (H, W) uint8
        Receives the class map (:class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`).
    probabilities : (ceil(H / stride), ceil(W / stride), C) ndarray or row store, optional
        For the confidence gate: a pixel whose bilinearly upsampled top-1 probability (as in
        :func:`superpixel_probability_sums`) is ``>= confidence`` keeps its own argmax. Without it (or with
        ``confidence > 1``) every pixel takes its superpixel's class.
    stride : int
        Stride of ``probabilities``.
    confidence : float
        Top-1 probability at or above which a pixel keeps its own class, in [0, 1]; above 1 (or without
        ``probabilities``) no pixel does. The default 1.0 keeps only pixels the network is certain of.
    band_rows : int
        Image rows written at a time.

    Returns
    -------
    (C,) ndarray of int64
        Pixels per class (``C`` is the probabilities' channel count, else ``superpixel_classes.max() + 1``).

    Raises
    ------
    ValueError
        If the probabilities do not cover the labels at ``stride``.
    """
    height, width = labels.shape[:2]
    lut = np.asarray(superpixel_classes, np.uint8)
    if probabilities is None or confidence > 1:
        n_classes = int(lut.max()) + 1 if lut.size else 1
        counts = np.zeros(max(n_classes, probabilities.shape[2] if probabilities is not None else 0), np.int64)
        for y0 in range(0, height, band_rows):
            band = lut[np.asarray(rows_of(labels, y0, min(height, y0 + band_rows)), np.int64)]
            out.write(y0, band)
            counts += np.bincount(band.ravel(), minlength=counts.size)[: counts.size]
        return counts
    _check_maps(labels, probabilities, stride)
    n_classes = probabilities.shape[2]
    counts = np.zeros(n_classes, np.int64)
    x_i0, x_i1, x_l1 = _bilinear_index(width, probabilities.shape[1], stride)
    for y0, p, (r0, r1, l1), lab in _probability_bands(labels, probabilities, stride, band_rows, len(lut)):
        cls = np.empty(lab.shape, np.uint8)
        _assign_band(p, lab, lut, np.float32(confidence), r0, r1, l1, x_i0, x_i1, x_l1, cls)
        out.write(y0, cls)
        counts += np.bincount(cls.ravel(), minlength=n_classes)[:n_classes]
    return counts
