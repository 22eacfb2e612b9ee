"""The tile and strip plan of tiled network inference, shared by the torch and OpenCV backends.

The trunk runs on overlapping tiles of the network input whose origins are multiples of 16 (the grid of every
pooling level lines up with the whole image's), each with ``halo`` input pixels of context, more than the
trunk's receptive-field radius; the head (sub-pixel layer, embedding, association logits) and the argmax run
on strips of each tile's core with ``head_halo`` input rows and columns of context. The plan is pure geometry:
a backend runs ``trunk(input[tile.window])``, then for each strip ``head(features[strip.features])``, keeps
``[strip.crop]`` of the output and writes it to ``ids[strip.out]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["TRUNK_HALO", "Strip", "Tile", "check_guide", "check_tiling", "guide_window", "tile_plan"]

#: Input pixels of context around each trunk tile. The trunk's receptive-field radius is 92 input pixels (5
#: encoder stages of two 3x3 convolutions, strides 1-16, and 4 decoder steps), the head adds 2; rounded up
#: to a multiple of 16 so that tiles stay aligned with every pooling level.
TRUNK_HALO = 96


@dataclass(frozen=True)
class Strip:
    """One head strip: slices into the tile's features, into the head's output, and into the output map.

    Attributes
    ----------
    features : (slice, slice)
        Rows and columns of the tile's trunk features (input pixels, relative to the tile's window).
    crop : (slice, slice)
        Rows and columns of the head's output (output pixels) that belong to the strip.
    out : (slice, slice)
        Where those pixels go in the ``(h, w)`` output map.
    guide : (slice, slice)
        Rows and columns of the whole (padded) guide image at the output resolution that the strip's features
        cover (output pixels; ``features`` times ``upscale``, in absolute coordinates), for a head that takes
        one (``NetConfig.guide``).
    """

    features: tuple[slice, slice]
    crop: tuple[slice, slice]
    out: tuple[slice, slice]
    guide: tuple[slice, slice]


@dataclass(frozen=True)
class Tile:
    """One trunk tile: its window of the (padded) network input, and its head strips."""

    window: tuple[slice, slice]
    strips: tuple[Strip, ...]


def tile_plan(in_h: int, in_w: int, full_h: int, full_w: int, tile: int, strip_pixels: int, upscale: int,
              halo: int, head_halo: int) -> Iterator[Tile]:
    """The tiles and strips that cover an ``in_h x in_w`` network input.

    Parameters
    ----------
    in_h, in_w : int
        Network input size in pixels (before padding).
    full_h, full_w : int
        Padded input size (multiples of the network's input multiple).
    tile : int
        Tile core side in input pixels (already a multiple of the input multiple).
    strip_pixels : int
        Output pixels per head strip (at least one input row per strip).
    upscale : int
        Output pixels per input pixel (4 for PCNet, 1 for SCN).
    halo, head_halo : int
        Input pixels of context of the trunk and of the head.

    Yields
    ------
    Tile
        In raster order of their cores; the strips' ``out`` slices cover the ``(in_h * upscale, in_w *
        upscale)`` output map exactly once.
    """
    up, hh = upscale, head_halo
    for ty0 in range(0, in_h, tile):
        for tx0 in range(0, in_w, tile):
            ty1, tx1 = min(in_h, ty0 + tile), min(in_w, tx0 + tile)
            wy0, wx0 = max(0, ty0 - halo), max(0, tx0 - halo)
            wy1, wx1 = min(full_h, ty1 + halo), min(full_w, tx1 + halo)
            fx0, fx1 = max(wx0, tx0 - hh), min(wx1, tx1 + hh)
            rows_per_strip = max(1, strip_pixels // ((tx1 - tx0) * up * up))
            strips = []
            for r0 in range(ty0, ty1, rows_per_strip):
                r1 = min(ty1, r0 + rows_per_strip)
                fy0, fy1 = max(wy0, r0 - hh), min(wy1, r1 + hh)
                strips.append(Strip(
                    features=(slice(fy0 - wy0, fy1 - wy0), slice(fx0 - wx0, fx1 - wx0)),
                    crop=(slice((r0 - fy0) * up, (r1 - fy0) * up), slice((tx0 - fx0) * up, (tx1 - fx0) * up)),
                    out=(slice(r0 * up, r1 * up), slice(tx0 * up, tx1 * up)),
                    guide=(slice(fy0 * up, fy1 * up), slice(fx0 * up, fx1 * up)),
                ))
            yield Tile(window=(slice(wy0, wy1), slice(wx0, wx1)), strips=tuple(strips))


def check_tiling(input_shape: tuple[int, ...], grid_shape: tuple[int, int], upscale: int, input_multiple: int,
                 tile: int, strip_pixels: int) -> int:
    """Check a network input against its output grid and the memory bounds; returns ``tile`` rounded up to a
    multiple of ``input_multiple`` (what :func:`tile_plan` takes).

    Raises
    ------
    ValueError
        If ``tile`` or ``strip_pixels`` is smaller than 1, or the ``(h, w, ...)`` input times ``upscale`` is not
        the ``(height, width)`` grid.
    """
    if tile < 1 or strip_pixels < 1:
        raise ValueError(f"tile and strip_pixels must be >= 1, got {tile} and {strip_pixels}")
    in_h, in_w = input_shape[:2]
    if (in_h * upscale, in_w * upscale) != tuple(grid_shape):
        raise ValueError(f"network input {in_h} x {in_w} does not match the {grid_shape[0]} x {grid_shape[1]} grid")
    return -(-tile // input_multiple) * input_multiple


def check_guide(guided: bool, guide: np.ndarray | None, grid_shape: tuple[int, int], name: str) -> None:
    """Check a guide image against a network (both backends).

    Raises
    ------
    ValueError
        Unless ``guide`` is an ``(h, w, 3)`` array for the ``(h, w)`` grid exactly when the network is ``guided``;
        the message names the network ``name``.
    """
    h, w = grid_shape
    if (guide is not None) != guided or (guide is not None and guide.shape != (h, w, 3)):
        raise ValueError(f"this {name} {'needs' if guided else 'takes no'} a ({h}, {w}, 3) guide image, got "
                         f"{None if guide is None else guide.shape}")


def guide_window(guide: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """A head strip's part of the guide image (:attr:`Strip.guide`), as the network takes it.

    Parameters
    ----------
    guide : (h, w, 3) ndarray of float32 in [0, 1], or a row store of it
        The image at the output resolution (``NetConfig.guide``), in memory or in a
        :class:`uhrseg.stores.FileStore` (the window alone is then read).
    rows, cols : slice
        :attr:`Strip.guide`: output pixels of the padded output, starting inside ``guide`` and possibly ending
        past its bottom or right edge (the padding of the network input times ``upscale``).

    Returns
    -------
    (1, 3, rows, cols) ndarray of float32
        The window, edge-replicated past the guide's edges: what slicing the whole guide padded like the network
        input would give, without a padded copy of the whole guide.
    """
    h, w = guide.shape[:2]
    if isinstance(guide, np.ndarray):
        part = guide[rows.start:min(rows.stop, h), cols.start:min(cols.stop, w)]
    else:
        part = guide.read_block(rows.start, min(rows.stop, h), cols.start, min(cols.stop, w))
    pad_h, pad_w = rows.stop - rows.start - part.shape[0], cols.stop - cols.start - part.shape[1]
    if pad_h or pad_w:
        part = np.pad(part, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(part.transpose(2, 0, 1)[None], dtype=np.float32)
