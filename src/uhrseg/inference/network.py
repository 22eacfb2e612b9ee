"""Full-resolution superpixel labels from SCN or PCNet in bounded memory (``docs/pcnet.md`` section 4).

For ``n`` superpixels on an ``H x W`` image the output grid has ``n_rows x n_cols ~ n`` cells of ``S = 16``
pixels with the image's aspect ratio, so the network's output is ``h x w = 16 n_rows x 16 n_cols`` and its
input ``h / upscale x w / upscale`` (1/4 for PCNet), padded to a multiple of 16. The trunk runs once on that
input; the head (sub-pixel layer, embedding, association logits) and the argmax run in horizontal strips with
``head_halo`` rows of context, so the ``(9, h, w)`` association map is never held whole. Each strip's cell ids
are sampled straight to the ``H x W`` output (nearest).

Departure from the reference code, on purpose: the image is resized to the network input in one step with
area averaging (OpenCV ``INTER_AREA``) when shrinking and bicubic when enlarging, instead of a bicubic resize
to ``h x w`` followed by nearest 4x subsampling; the training code uses the same function.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..grid.cells import CellGrid, hard_assignment
from ..models.nets import SuperpixelNet

__all__ = ["grid_shape_for", "resize_image", "network_labels", "DEFAULT_STRIP_PIXELS"]

#: Output pixels per head strip: about 300 bytes each for PCNet, so ~150 MB of activations.
DEFAULT_STRIP_PIXELS = 2**19


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
    scale = {np.dtype(np.uint8): 1 / 255, np.dtype(np.uint16): 1 / 65535}.get(image.dtype, 1.0)
    if image.shape[:2] == (height, width):
        return image.astype(np.float32) * np.float32(scale)
    shrink = height <= image.shape[0] and width <= image.shape[1]
    src = image if image.dtype in (np.uint8, np.uint16) else image.astype(np.float32, copy=False)
    out = cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    out = out.astype(np.float32, copy=False) * np.float32(scale)
    if not shrink:
        np.clip(out, 0.0, 1.0, out=out)
    return out


@dataclass
class NetworkTimings:
    """Seconds spent per stage of :func:`network_labels`."""

    resize: float = 0.0
    network: float = 0.0
    assign: float = 0.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_labels(
    model: SuperpixelNet,
    image: np.ndarray,
    n_segments: int,
    device: torch.device,
    strip_pixels: int = DEFAULT_STRIP_PIXELS,
) -> tuple[np.ndarray, CellGrid, NetworkTimings]:
    """Cell-id label map at the image's full resolution, before connectivity enforcement.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN in eval mode, on ``device``.
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image.
    n_segments : int
        Requested number of superpixels (grid cells).
    device : torch.device
        Where the network runs.
    strip_pixels : int
        Output pixels per head strip; smaller uses less memory (the result does not depend on it).

    Returns
    -------
    labels : (H, W) ndarray of int32
        Id of the grid cell each pixel is assigned to, in ``[0, grid.n_cells)``.
    grid : CellGrid
        The network's output grid (``h x w`` output pixels).
    timings : NetworkTimings
        Seconds spent resizing, in the network, and in assignment and sampling.
    """
    big_h, big_w = image.shape[:2]
    n_rows, n_cols = grid_shape_for(big_h, big_w, n_segments)
    s, up = model.cell_size, model.upscale
    grid = CellGrid(n_rows * s, n_cols * s, s)
    in_h, in_w = grid.height // up, grid.width // up
    timings = NetworkTimings()

    t0 = time.perf_counter()
    small = resize_image(image, in_h, in_w)
    x = torch.from_numpy(small).permute(2, 0, 1).unsqueeze(0).to(device)
    del small
    m = model.input_multiple
    pad_h, pad_w = -in_h % m, -in_w % m
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    _sync(device)
    t1 = time.perf_counter()
    timings.resize = t1 - t0

    # Output row -> image row sampling (nearest), and the same for columns.
    src_rows = ((np.arange(big_h) + 0.5) * grid.height / big_h).astype(np.int64)
    src_cols = torch.from_numpy(((np.arange(big_w) + 0.5) * grid.width / big_w).astype(np.int64)).to(device)
    labels = np.empty((big_h, big_w), dtype=np.int32)

    with torch.inference_mode():
        features = model.decode(x)
        del x
        _sync(device)
        timings.network += time.perf_counter() - t1
        rows_per_strip = max(1, strip_pixels // (grid.width * up))  # input rows per strip
        for r0 in range(0, in_h, rows_per_strip):
            r1 = min(in_h, r0 + rows_per_strip)
            t2 = time.perf_counter()
            c0 = max(0, r0 - model.head_halo)
            c1 = min(features.shape[2], r1 + model.head_halo)
            logits = model.assoc_logits(features[:, :, c0:c1])
            out0, out1 = r0 * up, r1 * up  # output rows of this strip
            logits = logits[:, :, out0 - c0 * up : out1 - c0 * up, : grid.width]
            _sync(device)
            t3 = time.perf_counter()
            ids = hard_assignment(logits, s, row_offset=out0, grid=grid)[0]
            del logits
            t_lo, t_hi = np.searchsorted(src_rows, [out0, out1])
            if t_hi > t_lo:
                rows = torch.from_numpy(src_rows[t_lo:t_hi] - out0).to(device)
                labels[t_lo:t_hi] = ids[rows][:, src_cols].to(torch.int32).cpu().numpy()
            timings.network += t3 - t2
            timings.assign += time.perf_counter() - t3
    return labels, grid, timings
