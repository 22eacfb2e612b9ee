"""The S x S cell grid of SCN and PCNet: its geometry, without torch (``docs/pcnet.md`` section 1).

An output image of ``h x w`` pixels is cut into ``ceil(h / S) x ceil(w / S)`` cells of ``S x S`` pixels; pixel
``(y, x)`` lies in cell ``(y // S, x // S)`` and the cell id is ``row * n_cols + col``. The pooling and
assignment operations on this grid are in :mod:`uhrseg.grid.cells` (torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["CENTRE", "NEIGHBOUR_OFFSETS", "CellGrid", "choice_to_cell_ids"]

#: The 9 neighbour offsets ``(d_row, d_col)`` in the channel order of the association map ``Q``.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = tuple(
    (dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
)
#: Channel of the centre cell in ``Q``.
CENTRE = 4


@dataclass(frozen=True)
class CellGrid:
    """The S x S cell grid over an ``(height, width)`` output image.

    Attributes
    ----------
    height, width : int
        Output image size in pixels (``h``, ``w``).
    cell_size : int
        Grid cell side ``S`` in pixels (16 for SCN and PCNet).
    n_rows, n_cols : int
        Number of cell rows and columns, ``ceil(h / S)`` and ``ceil(w / S)``.

    Raises
    ------
    ValueError
        If any size is smaller than 1.
    """

    height: int
    width: int
    cell_size: int = 16

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"grid needs a positive image size, got {self.height} x {self.width}")
        if self.cell_size < 1:
            raise ValueError(f"cell_size must be >= 1 pixel, got {self.cell_size}")

    @property
    def n_rows(self) -> int:
        return math.ceil(self.height / self.cell_size)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.width / self.cell_size)

    @property
    def n_cells(self) -> int:
        """Number of cells, i.e. of superpixel seeds."""
        return self.n_rows * self.n_cols

    def cell_ids(self, device: "torch.device | str | None" = None) -> "torch.Tensor":
        """Cell id of every pixel.

        Returns
        -------
        torch.Tensor
            ``(h, w)`` int64, ``(y // S) * n_cols + x // S``.
        """
        import torch

        rows = torch.arange(self.height, device=device) // self.cell_size
        cols = torch.arange(self.width, device=device) // self.cell_size
        return rows[:, None] * self.n_cols + cols[None, :]


def choice_to_cell_ids(choice: np.ndarray, grid: CellGrid, row_offset: int = 0, col_offset: int = 0) -> np.ndarray:
    """Cell ids from the index (0-8, channel order of ``Q``) of each pixel's chosen neighbour cell; NumPy twin
    of :func:`uhrseg.grid.cells.neighbour_choice_to_cell_ids`.

    Parameters
    ----------
    choice : (h, w) ndarray of int
        Neighbour index in ``[0, 9)`` (the argmax of ``Q`` over its channels).
    grid : CellGrid
        The full map's grid.
    row_offset, col_offset : int
        Position of ``choice``'s first pixel in the full map, in pixels.

    Returns
    -------
    (h, w) ndarray of int32
        Cell ids in ``[0, n_cells)``; neighbours outside the grid map to the nearest border cell.
    """
    h, w = choice.shape[-2:]
    s = grid.cell_size
    rows = np.arange(row_offset, row_offset + h) // s
    cols = np.arange(col_offset, col_offset + w) // s
    choice = choice.astype(np.int64, copy=False)
    cell_row = np.clip(rows[:, None] + choice // 3 - 1, 0, grid.n_rows - 1)
    cell_col = np.clip(cols[None, :] + choice % 3 - 1, 0, grid.n_cols - 1)
    return (cell_row * grid.n_cols + cell_col).astype(np.int32)
