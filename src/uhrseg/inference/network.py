"""The network part of SCN/PCNet inference, tiled, in bounded memory (``docs/pcnet.md`` section 4).

For ``n`` superpixels on an ``H x W`` image the output grid has ``n_rows x n_cols ~ n`` cells of ``S = 16``
pixels with the image's aspect ratio, so the network's output is ``h x w = 16 n_rows x 16 n_cols`` and its
input ``h / upscale x w / upscale`` (1/4 for PCNet), padded to a multiple of 16.

* :func:`network_input` makes that input from an image source read in bands of rows (area averaging), so a
  large image never has to be decoded whole.
* :func:`cell_id_map` runs the trunk on overlapping tiles of the input whose origins are multiples of 16 (the
  grid of every pooling level lines up with the whole image's) with :data:`TRUNK_HALO` pixels of context,
  more than the trunk's receptive-field radius, and the head (sub-pixel layer, embedding, association logits)
  and the argmax on strips of each tile's core. The ``(9, h, w)`` association map is never held whole, and
  the stitched cell-id map is bit-identical to an untiled run (tested) because
  :func:`inference_model` swaps the transposed convolutions for sub-pixel convolutions, whose oneDNN results
  do not depend on the tensor size.

Departure from the reference code, on purpose: the image is resized to the network input in one step with
area averaging (OpenCV ``INTER_AREA``) when shrinking and bicubic when enlarging, instead of a bicubic resize
to ``h x w`` followed by nearest 4x subsampling; the training code uses the same function.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_STRIP_PIXELS, DEFAULT_TILE
from ..grid.cells import CellGrid, neighbour_choice_to_cell_ids
from ..io.sources import ArraySource
from ..models.layers import transposed_conv_as_subpixel
from ..models.nets import SuperpixelNet


__all__ = [
    "DEFAULT_STRIP_PIXELS",
    "DEFAULT_TILE",
    "TRUNK_HALO",
    "AreaAccumulator",
    "cell_id_map",
    "grid_shape_for",
    "inference_model",
    "nearest_index",
    "network_input",
    "network_labels",
    "resize_image",
]

# Output pixels per head strip (DEFAULT_STRIP_PIXELS, uhrseg.defaults): about 300 bytes each for PCNet, so
# ~150 MB of activations.


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



#: Input pixels of context around each trunk tile. The trunk's receptive-field radius is 92 input pixels (5
#: encoder stages of two 3x3 convolutions, strides 1-16, and 4 decoder steps), the head adds 2; rounded up
#: to a multiple of 16 so that tiles stay aligned with every pooling level.
TRUNK_HALO = 96
# Default trunk tile core in input pixels (DEFAULT_TILE, uhrseg.defaults; plus the halo on each side): about
# 300 MB of activations.
#: Source rows per band when making the network input (fixed, so the result never depends on tiling).
RESIZE_BAND_ROWS = 256


def inference_model(model: SuperpixelNet) -> SuperpixelNet:
    """A copy of ``model`` prepared for tiled inference.

    Eval mode, channels-last memory layout (about 2x faster on CPU with oneDNN), and every 4x4 stride-2
    transposed convolution replaced by the equivalent sub-pixel convolution
    (:func:`uhrseg.models.layers.transposed_conv_as_subpixel`), so that tiled and untiled runs give
    bit-identical outputs. The input model is not modified.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN.

    Returns
    -------
    SuperpixelNet
        The prepared copy, on the model's device.
    """
    model = copy.deepcopy(model).eval()
    for up in model.trunk.up:
        if isinstance(up[0], torch.nn.ConvTranspose2d):
            up[0] = transposed_conv_as_subpixel(up[0])
    return model.to(memory_format=torch.channels_last)


def _area_weights(n_out: int, n_in: int, lo: int, hi: int) -> tuple[int, np.ndarray]:
    """Area-averaging weights of source rows ``[lo, hi)`` for the output rows they touch (shrinking only).

    Returns the first output row touched and a ``(n_touched, hi - lo)`` float32 matrix.
    """
    f = n_in / n_out
    first, last = int(lo // f), min(n_out - 1, int((hi - 1) // f))
    i = np.arange(first, last + 1, dtype=np.float64)[:, None]
    r = np.arange(lo, hi, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(r + 1, (i + 1) * f) - np.maximum(r, i * f), 0.0, None)
    return first, (overlap / f).astype(np.float32)


class AreaAccumulator:
    """Area-averaging resize of an image that arrives in bands of rows (shrinking along y).

    Each band is averaged along x with OpenCV ``INTER_AREA`` and its rows are added into the output rows they
    overlap with their area weights, so memory is one band plus the output.

    Parameters
    ----------
    height, width : int
        Output size in pixels; ``height <= H`` and ``width <= W``.
    source_height, source_width : int
        Size ``H x W`` of the whole image.
    """

    def __init__(self, height: int, width: int, source_height: int, source_width: int) -> None:
        if not (1 <= height <= source_height and 1 <= width <= source_width):
            raise ValueError(f"area resize shrinks only: {source_height} x {source_width} -> {height} x {width}")
        self.height, self.width = height, width
        self.source_height, self.source_width = source_height, source_width
        self._out = np.zeros((height, width * 3), np.float32)

    def add(self, y0: int, band: np.ndarray) -> None:
        """Add source rows ``y0 .. y0 + h`` (``(h, W, 3)`` uint8, uint16 or float32 in [0, 1])."""
        y1 = y0 + band.shape[0]
        band = band.astype(np.float32) * np.float32(_unit_scale(band.dtype))
        if self.width != self.source_width:
            band = cv2.resize(band, (self.width, y1 - y0), interpolation=cv2.INTER_AREA)
        first, weights = _area_weights(self.height, self.source_height, y0, y1)
        self._out[first : first + weights.shape[0]] += weights @ band.reshape(y1 - y0, self.width * 3)

    def result(self) -> np.ndarray:
        """The resized image, ``(height, width, 3)`` float32 in [0, 1]."""
        return self._out.reshape(self.height, self.width, 3)


def network_input(source, height: int, width: int, on_band=None) -> np.ndarray:
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

    Returns
    -------
    (height, width, 3) ndarray of float32
    """
    big_h, big_w = source.shape[:2]
    if height > big_h or width > big_w:
        image = source.read_rows(0, big_h)
        if on_band is not None:
            on_band(0, image)
        return resize_image(image, height, width)
    acc = AreaAccumulator(height, width, big_h, big_w)
    for y0 in range(0, big_h, RESIZE_BAND_ROWS):
        band = source.read_rows(y0, min(big_h, y0 + RESIZE_BAND_ROWS))
        if on_band is not None:
            on_band(y0, band)
        acc.add(y0, band)
    return acc.result()


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (so stage timings are true); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cell_id_map(model: SuperpixelNet, net_input: np.ndarray, grid: CellGrid, device: torch.device,
                tile: int = DEFAULT_TILE, strip_pixels: int = DEFAULT_STRIP_PIXELS) -> np.ndarray:
    """Cell id of every network output pixel (the hard assignment of ``Q``), computed tile by tile.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN from :func:`inference_model` (any model works; that one makes tiling exact), on
        ``device``.
    net_input : (h / upscale, w / upscale, 3) ndarray of float32 in [0, 1]
        The network input (:func:`network_input`).
    grid : CellGrid
        The output grid, ``h x w`` pixels.
    device : torch.device
        Where the network runs.
    tile : int
        Trunk tile core in input pixels, rounded up to a multiple of 16; each tile is run with
        :data:`TRUNK_HALO` pixels of context on every side. Smaller uses less memory; the result does not
        depend on it.
    strip_pixels : int
        Output pixels per head strip (memory of the head); the result does not depend on it.

    Returns
    -------
    (h, w) ndarray of int32
        Cell ids in ``[0, grid.n_cells)``.

    Raises
    ------
    ValueError
        If ``tile`` or ``strip_pixels`` is smaller than 1, or the input does not match ``grid``.
    """
    if tile < 1 or strip_pixels < 1:
        raise ValueError(f"tile and strip_pixels must be >= 1, got {tile} and {strip_pixels}")
    up, m = model.upscale, model.input_multiple
    in_h, in_w = net_input.shape[:2]
    if (in_h * up, in_w * up) != (grid.height, grid.width):
        raise ValueError(f"network input {in_h} x {in_w} does not match the {grid.height} x {grid.width} grid")
    tile = -(-tile // m) * m
    x = torch.from_numpy(net_input).permute(2, 0, 1).unsqueeze(0).to(device)
    pad_h, pad_w = -in_h % m, -in_w % m
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    x = x.contiguous(memory_format=torch.channels_last)
    full_h, full_w = x.shape[2:]
    ids = np.empty((grid.height, grid.width), np.int32)
    hh = model.head_halo
    with torch.inference_mode():
        for ty0 in range(0, in_h, tile):
            for tx0 in range(0, in_w, tile):
                ty1, tx1 = min(in_h, ty0 + tile), min(in_w, tx0 + tile)
                wy0, wx0 = max(0, ty0 - TRUNK_HALO), max(0, tx0 - TRUNK_HALO)
                wy1, wx1 = min(full_h, ty1 + TRUNK_HALO), min(full_w, tx1 + TRUNK_HALO)
                window = x[:, :, wy0:wy1, wx0:wx1]
                features = model.decode(window if (wy0, wx0, wy1, wx1) == (0, 0, full_h, full_w)
                                        else window.contiguous(memory_format=torch.channels_last))
                fx0, fx1 = max(wx0, tx0 - hh), min(wx1, tx1 + hh)
                rows_per_strip = max(1, strip_pixels // ((tx1 - tx0) * up * up))
                for r0 in range(ty0, ty1, rows_per_strip):
                    r1 = min(ty1, r0 + rows_per_strip)
                    fy0, fy1 = max(wy0, r0 - hh), min(wy1, r1 + hh)
                    logits = model.assoc_logits(features[:, :, fy0 - wy0 : fy1 - wy0, fx0 - wx0 : fx1 - wx0])
                    logits = logits[:, :, (r0 - fy0) * up : (r1 - fy0) * up, (tx0 - fx0) * up : (tx1 - fx0) * up]
                    choice = logits.argmax(dim=1)[0]
                    cells = neighbour_choice_to_cell_ids(choice, grid, r0 * up, tx0 * up)
                    ids[r0 * up : r1 * up, tx0 * up : tx1 * up] = cells.to(torch.int32).cpu().numpy()
                del features
    return ids


@dataclass
class NetworkTimings:
    """Seconds spent per stage of :func:`network_labels`."""

    resize: float = 0.0
    network: float = 0.0
    assign: float = 0.0


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Nearest source index for each of ``n_out`` output positions over ``n_in`` source positions.

    Returns
    -------
    (n_out,) ndarray of int64
        ``floor((i + 0.5) n_in / n_out)``: pixel centres matched, non-decreasing.
    """
    return ((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64)


def network_labels(
    model: SuperpixelNet,
    image: np.ndarray,
    n_segments: int,
    device: torch.device,
    strip_pixels: int = DEFAULT_STRIP_PIXELS,
    tile: int = DEFAULT_TILE,
) -> tuple[np.ndarray, CellGrid, NetworkTimings]:
    """Cell-id label map at the image's full resolution, before connectivity enforcement.

    The network's cell-id map (:func:`cell_id_map`) sampled to ``H x W`` (nearest). Inference proper
    (:class:`uhrseg.inference.SuperpixelPredictor`) enforces connectivity on the small map instead; this
    function serves the trainer's validation and inspection of raw network output.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN in eval mode, on ``device`` (prepared with :func:`inference_model` or not).
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image.
    n_segments : int
        Requested number of superpixels (grid cells).
    device : torch.device
        Where the network runs.
    strip_pixels, tile : int
        Memory bounds of the head and the trunk (see :func:`cell_id_map`).

    Returns
    -------
    labels : (H, W) ndarray of int32
        Id of the grid cell each pixel is assigned to, in ``[0, grid.n_cells)``.
    grid : CellGrid
        The network's output grid (``h x w`` output pixels).
    timings : NetworkTimings
        Seconds spent resizing, in the network, and sampling to full resolution.
    """
    big_h, big_w = image.shape[:2]
    n_rows, n_cols = grid_shape_for(big_h, big_w, n_segments)
    grid = CellGrid(n_rows * model.cell_size, n_cols * model.cell_size, model.cell_size)
    timings = NetworkTimings()
    t0 = time.perf_counter()
    x = network_input(ArraySource(image), grid.height // model.upscale, grid.width // model.upscale)
    t1 = time.perf_counter()
    ids = cell_id_map(model, x, grid, device, tile, strip_pixels)
    synchronize(device)
    t2 = time.perf_counter()
    labels = ids.take(nearest_index(big_h, grid.height), axis=0).take(nearest_index(big_w, grid.width), axis=1)
    timings.resize, timings.network, timings.assign = t1 - t0, t2 - t1, time.perf_counter() - t2
    return labels, grid, timings
