"""The network input: an image source resized to the network's input size, band by band, without torch.

For ``n`` superpixels on an ``H x W`` image the output grid has ``n_rows x n_cols ~ n`` cells of ``S = 16``
pixels with the image's aspect ratio (:func:`grid_shape_for`); the network's input is that grid's size divided by
the network's upscale (1/4 for PCNet). :func:`network_input` makes it from an image source read in bands of rows
(area averaging), so a large image never has to be decoded whole. Used by both inference backends
(:mod:`uhrseg.inference.network` for torch, :mod:`uhrseg.inference.opencv_dnn`) and by the training samplers.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from ..grid.geometry import CellGrid
from ..io.sources import ArraySource

__all__ = ["READ_BLOCK_BYTES", "RESIZE_BAND_ROWS", "AreaAccumulator", "NetworkTimings", "grid_shape_for",
           "nearest_index", "network_input", "network_inputs", "output_grid", "read_rows_for", "resize_image",
           "sampled_cell_ids"]

#: Source rows per band when making the network input (fixed, so the result never depends on tiling).
RESIZE_BAND_ROWS = 256


def grid_shape_for(height: int, width: int, n_segments: int) -> tuple[int, int]:
    """Cell grid ``(n_rows, n_cols)`` with about ``n_segments`` cells and the image's aspect ratio.

    Parameters
    ----------
    height, width : int
        Image size in pixels.
    n_segments : int
        Requested number of superpixels, >= 1.

    Returns
    -------
    (int, int)
        Numbers of cell rows and columns, each >= 1.

    Raises
    ------
    ValueError
        If a size or ``n_segments`` is smaller than 1.
    """
    if height < 1 or width < 1 or n_segments < 1:
        raise ValueError(f"need a positive size and n_segments, got {height} x {width}, n={n_segments}")
    n_rows = max(1, round(math.sqrt(n_segments * height / width)))
    n_cols = max(1, round(n_segments / n_rows))
    return n_rows, n_cols


def _unit_scale(dtype: np.dtype) -> float:
    """Factor that maps an image dtype's range to [0, 1] (uint8, uint16; floats are already there)."""
    return {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(np.dtype(dtype), 1.0)


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an RGB image to ``(height, width)`` as float32 in [0, 1].

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image.
    height, width : int
        Target size in pixels.

    Returns
    -------
    (height, width, 3) ndarray of float32
        Area-averaged when shrinking, bicubic (clipped to [0, 1]) when enlarging.
    """
    scale = _unit_scale(image.dtype)
    if image.shape[:2] == (height, width):
        return image.astype(np.float32) * np.float32(scale)
    shrink = height <= image.shape[0] and width <= image.shape[1]
    src = image if image.dtype in (np.uint8, np.uint16) else image.astype(np.float32, copy=False)
    out = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    out = out.astype(np.float32, copy=False) * np.float32(scale)
    if not shrink:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _area_terms(n_out: int, n_in: int, lo: int, hi: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Area-averaging terms of source rows ``[lo, hi)`` for the output rows they touch (shrinking only).

    Returns the first output row touched ``first`` and two ``(n_touched, ceil(n_in / n_out) + 1)`` arrays: the
    band rows (``0 .. hi - lo - 1``) each output row ``first + j`` overlaps, in increasing order from the first
    it overlaps, and their float32 weights (overlap / scale; 0 for the slots past its last row, whose index then
    repeats the band's last row).
    """
    f = n_in / n_out
    first, last = int(lo // f), min(n_out - 1, int((hi - 1) // f))
    i = np.arange(first, last + 1, dtype=np.float64)[:, None]
    r = np.maximum(np.floor(i * f), lo) + np.arange(math.ceil(f) + 1)
    overlap = np.clip(np.minimum(r + 1, (i + 1) * f) - np.maximum(r, i * f), 0.0, None)
    weights = np.where(r < hi, overlap / f, 0.0).astype(np.float32)
    return first, np.minimum(r, hi - 1).astype(np.int64) - lo, weights


class AreaAccumulator:
    """Area-averaging resize of an image that arrives in bands of rows (shrinking along y).

    Each band is averaged along x with OpenCV ``INTER_AREA`` and its rows are added into the output rows they
    overlap with their area weights, so memory is one band plus the output. The weighted sums run in numpy's
    own loops, not BLAS, whose result depends on its thread count in the last bit (a matrix product changed
    26 000 of the 460 800 values of a guide image between 1 and 2 threads), so the result is the same on any
    machine and in any worker.

    With ``out``, a row store, each output row is written there as soon as no later band can touch it, and only
    the few rows still being summed are held: memory is then one band, not the output (the guide image of a
    20000 x 20000 image at the bridge's default is 1.8 GB of float32). The values are the same either way.

    Parameters
    ----------
    height, width : int
        Output size in pixels; ``height <= H`` and ``width <= W``.
    source_height, source_width : int
        Size ``H x W`` of the whole image.
    out : row store of (height, width, 3) float32, optional
        Receives the output rows (:class:`uhrseg.stores.FileStore`, :class:`uhrseg.stores.ArrayStore`); when not
        given the output is held in memory.

    Raises
    ------
    ValueError
        If the output is larger than the source along either axis, or ``out`` has another shape.
    """

    def __init__(self, height: int, width: int, source_height: int, source_width: int, out=None) -> None:
        if not (1 <= height <= source_height and 1 <= width <= source_width):
            raise ValueError(f"area resize shrinks only: {source_height} x {source_width} -> {height} x {width}")
        if out is not None and tuple(out.shape) != (height, width, 3):
            raise ValueError(f"output store {tuple(out.shape)} is not ({height}, {width}, 3)")
        self.height, self.width = height, width
        self.source_height, self.source_width = source_height, source_width
        self._store = out
        # The rows being summed: all of them without a store; with one, rows base .. base + len (grown to what one
        # band touches)
        self._base = 0
        self._next_row = 0  # source rows before this one have been added (with a store: in order only)
        self._out = np.zeros((height if out is None else 0, width * 3), np.float32)

    def add(self, y0: int, band: np.ndarray) -> None:
        """Add source rows ``y0 .. y0 + h`` (``(h, W, 3)`` uint8, uint16 or float32 in [0, 1]).

        Raises
        ------
        ValueError
            With ``out``, if the band starts above the end of the previous one (bands must come top to bottom,
            without overlap, since finished rows have been written).
        """
        y1 = y0 + band.shape[0]
        if self._store is not None:
            if y0 < self._next_row:
                raise ValueError(f"bands must come in order: rows {y0}.. after rows ..{self._next_row}")
            self._next_row = y1
        band = band.astype(np.float32) * np.float32(_unit_scale(band.dtype))
        if self.width != self.source_width:
            band = cv2.resize(band, (self.width, y1 - y0), interpolation=cv2.INTER_AREA)
        first, src, weights = _area_terms(self.height, self.source_height, y0, y1)
        rows = band.reshape(y1 - y0, self.width * 3)
        # Each output row is a weighted sum of the few band rows it overlaps, added in source-row order: term k of
        # every output row at once, so that the Python loop runs a few times per band rather than once per output
        # row (the GIL is taken per numpy call, and numba's start-up holds it in another thread while this runs).
        # A row's slots past its last term have weight 0 and add an exact 0.0, so the sums are those of adding each
        # output row's terms one by one.
        total = weights[:, 0, None] * rows[src[:, 0]]
        for k in range(1, src.shape[1]):
            total += weights[:, k, None] * rows[src[:, k]]
        if self._store is None:
            self._out[first : first + len(total)] += total
            return
        end = first + len(total) - self._base  # first >= base: the rows before it were finished by earlier bands
        if end > len(self._out):
            grown = np.zeros((end, self.width * 3), np.float32)
            grown[: len(self._out)] = self._out
            self._out = grown
        self._out[first - self._base : end] += total
        # No later band (starting at y1 or below) touches an output row before the first one y1 touches
        self._flush(min(self.height, int(y1 // (self.source_height / self.height))))

    def _flush(self, done: int) -> None:
        """Write the rows before output row ``done`` to the store and drop them."""
        n = done - self._base
        if n <= 0:
            return
        self._store.write(self._base, self._out[:n].reshape(n, self.width, 3))
        kept = len(self._out) - n  # the rows still being summed move to the front, the freed ones restart at 0
        self._out[:kept] = self._out[n:]
        self._out[kept:] = 0.0
        self._base = done

    def result(self):
        """The resized image: ``(height, width, 3)`` float32 in [0, 1], or the ``out`` store it was given, with
        every row written (call once the last band is added)."""
        if self._store is None:
            return self._out.reshape(self.height, self.width, 3)
        self._flush(self.height)
        return self._store


def network_input(source, height: int, width: int, on_band=None, out=None):
    """Resize an image source to ``(height, width)`` float32 in [0, 1], reading it band by band.

    Shrinking (the usual case) is separable area averaging over bands of :data:`RESIZE_BAND_ROWS` source rows
    (:class:`AreaAccumulator`). Enlarging along either axis reads the whole image and uses
    :func:`resize_image` (bicubic); such images are small.

    Parameters
    ----------
    source : image source
        Has ``shape`` ``(H, W, 3)`` and ``read_rows(y0, y1)`` returning ``(y1 - y0, W, 3)`` uint8, uint16 or
        float32 in [0, 1] (see :mod:`uhrseg.io.sources`).
    height, width : int
        Output size in pixels.
    on_band : callable, optional
        Called as ``on_band(y0, band)`` for every band read, so that other per-band work (the CIELAB copy
        used by the boundary refinement, a preview) shares the single pass over the source.
    out : row store of (height, width, 3) float32, optional
        Receives the result row by row as it is finished (:class:`AreaAccumulator`), so that it is never held
        whole in memory.

    Returns
    -------
    (height, width, 3) ndarray of float32, or ``out`` filled with it
    """
    big_h, big_w = source.shape[:2]
    if height > big_h or width > big_w:
        image = source.read_rows(0, big_h)
        if on_band is not None:
            on_band(0, image)
        resized = resize_image(image, height, width)
        if out is None:
            return resized
        out.write(0, resized)
        return out
    acc = AreaAccumulator(height, width, big_h, big_w, out)
    step = read_rows_for(source)
    for b0 in range(0, big_h, step):
        block = source.read_rows(b0, min(big_h, b0 + step))
        for y0 in range(b0, b0 + len(block), RESIZE_BAND_ROWS):
            band = block[y0 - b0 : y0 - b0 + RESIZE_BAND_ROWS]
            if on_band is not None:
                on_band(y0, band)
            acc.add(y0, band)
    return acc.result()


#: The most bytes :func:`read_rows_for` lets one read of a source take (a TIFF stored in taller chunks is then
#: read in bands that decode some chunks more than once).
READ_BLOCK_BYTES = 2**28


def read_rows_for(source) -> int:
    """Rows per read when a source is read top to bottom in bands of :data:`RESIZE_BAND_ROWS`: the source's
    ``chunk_rows`` (a TIFF's tile or strip height) rounded up to a multiple of ``RESIZE_BAND_ROWS``, at most
    :data:`READ_BLOCK_BYTES` of the band's pixels; the bands themselves, and so every result, stay the same. When
    the chunk height divides 256 or is a multiple of it (tiles of 256, 512 or 1024 rows, strips of 1, 2, 4, ...
    rows) each chunk is decoded once, where bands of 256 rows decoded a 512-row tile twice (a 20000 x 20000
    JPEG-tiled TIFF: 1.9 against 3.3 s of decoding); other heights (strips of 700 rows: reads of 768) decode the
    chunks that straddle a read twice, fewer than before.
    """
    chunk = max(1, int(getattr(source, "chunk_rows", 1)))
    step = -(-chunk // RESIZE_BAND_ROWS) * RESIZE_BAND_ROWS
    row_bytes = source.shape[1] * 3 * np.dtype(source.dtype).itemsize
    most = max(RESIZE_BAND_ROWS, READ_BLOCK_BYTES // row_bytes // RESIZE_BAND_ROWS * RESIZE_BAND_ROWS)
    return min(step, most)


def network_inputs(source, grid: CellGrid, upscale: int, guided: bool = False,
                   on_band=None, guide_store=None):
    """The network input for ``grid``, and for a guided network (``NetConfig.guide``) the guide image.

    Parameters
    ----------
    source : image source
        As in :func:`network_input`.
    grid : CellGrid
        The network's output grid (:func:`output_grid`), ``h x w`` output pixels.
    upscale : int
        Output pixels per input pixel (4 for PCNet).
    guided : bool
        Also make the guide: the source resized to ``(h, w)`` (:func:`network_input`); the network input is then
        that guide area-averaged by ``upscale`` (as in training), so the source is read once.
    on_band : callable, optional
        As in :func:`network_input`.
    guide_store : row store of (h, w, 3) float32, optional
        Where the guide goes when ``guided`` (:class:`uhrseg.stores.FileStore` for a streamed image), instead of
        memory; the network input is then made from it in bands of rows. The values are the same.

    Returns
    -------
    x : (h / upscale, w / upscale, 3) ndarray of float32 in [0, 1]
    guide : (h, w, 3) ndarray of float32 in [0, 1], ``guide_store`` filled with it, or None when not ``guided``
        About 12 bytes per output pixel (3 KB per superpixel with 16 x 16 cells).

    Raises
    ------
    ValueError
        If the grid's sides are not multiples of ``upscale``.
    """
    if not guided:
        return network_input(source, grid.height // upscale, grid.width // upscale, on_band), None
    guide = network_input(source, grid.height, grid.width, on_band, guide_store)
    if guide_store is None:
        return resize_image(guide, grid.height // upscale, grid.width // upscale), guide
    # Area averaging by a whole factor: each input pixel is the mean of its own upscale x upscale block, so bands
    # of whole blocks give the values of the whole image at once (tested)
    if grid.height % upscale or grid.width % upscale:
        raise ValueError(f"the {grid.height} x {grid.width} grid is not a multiple of the upscale {upscale}")
    x = np.empty((grid.height // upscale, grid.width // upscale, 3), np.float32)
    step = max(upscale, RESIZE_BAND_ROWS // upscale * upscale)  # whole blocks, about RESIZE_BAND_ROWS guide rows
    for y0 in range(0, grid.height, step):
        y1 = min(grid.height, y0 + step)
        x[y0 // upscale : y1 // upscale] = resize_image(guide.read(y0, y1), (y1 - y0) // upscale, x.shape[1])
    return x, guide


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Nearest source index for each of ``n_out`` output positions over ``n_in`` source positions.

    Returns
    -------
    (n_out,) ndarray of int64
        ``floor((i + 0.5) n_in / n_out)``: pixel centres matched, non-decreasing.
    """
    return ((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)


def output_grid(height: int, width: int, n_segments: int, cell_size: int) -> CellGrid:
    """The network's output grid for ``n_segments`` superpixels on an ``height x width`` image: the cells of
    :func:`grid_shape_for`, ``cell_size`` output pixels each.

    Raises
    ------
    ValueError
        As :func:`grid_shape_for`.
    """
    n_rows, n_cols = grid_shape_for(height, width, n_segments)
    return CellGrid(n_rows * cell_size, n_cols * cell_size, cell_size)


@dataclass
class NetworkTimings:
    """Seconds spent per stage of :func:`sampled_cell_ids`."""

    resize: float = 0.0
    network: float = 0.0
    assign: float = 0.0


def sampled_cell_ids(image: np.ndarray, n_segments: int, cell_size: int, upscale: int,
                     cell_ids: Callable[[np.ndarray, CellGrid, np.ndarray | None], np.ndarray],
                     guided: bool = False) -> tuple[np.ndarray, CellGrid, NetworkTimings]:
    """A network's cell-id map sampled to the image's full resolution (nearest), before connectivity.

    Parameters
    ----------
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image.
    n_segments : int
        Requested number of superpixels (grid cells).
    cell_size, upscale : int
        The network's cell side (output pixels) and output pixels per input pixel.
    cell_ids : callable
        ``cell_ids(net_input, grid, guide)`` -> ``(h, w)`` int32 cell ids, on any backend
        (:func:`uhrseg.inference.network.cell_id_map`, :meth:`uhrseg.inference.opencv_dnn.OpenCVNetwork.cell_id_map`);
        ``guide`` is None unless ``guided``.
    guided : bool
        The network's head takes the guide image (:func:`network_inputs`).

    Returns
    -------
    labels : (H, W) ndarray of int32
        Id of the grid cell each pixel is assigned to, in ``[0, grid.n_cells)``.
    grid : CellGrid
        The network's output grid.
    timings : NetworkTimings
        Seconds spent resizing, in the network, and sampling to full resolution.
    """
    big_h, big_w = image.shape[:2]
    t0 = time.perf_counter()
    grid = output_grid(big_h, big_w, n_segments, cell_size)
    x, guide = network_inputs(ArraySource(image), grid, upscale, guided)
    t1 = time.perf_counter()
    ids = cell_ids(x, grid, guide)
    t2 = time.perf_counter()
    labels = ids.take(nearest_index(big_h, grid.height), axis=0).take(nearest_index(big_w, grid.width), axis=1)
    return labels, grid, NetworkTimings(t1 - t0, t2 - t1, time.perf_counter() - t2)
