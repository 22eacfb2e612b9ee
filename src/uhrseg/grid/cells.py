"""The S x S superpixel grid shared by SCN and PCNet, in torch.

Every function here is vectorised over the batch and differentiable where it returns floats, so the
training losses, the inference path and the evaluation reuse the same code.

Conventions (``docs/pcnet.md`` section 1, Yang et al., CVPR 2020, "Superpixel Segmentation with Fully
Convolutional Networks"):

* An output image of ``h x w`` pixels is cut into ``ceil(h / S) x ceil(w / S)`` cells of ``S x S`` pixels
  (the last row and column of cells are cut short when ``S`` does not divide the size). Pixel ``(y, x)``
  lies in cell ``(y // S, x // S)``; the cell id is ``row * n_cols + col``.
* The association map ``Q`` has shape ``(B, 9, h, w)``: ``Q[b, k, y, x]`` is the probability that pixel
  ``(y, x)`` belongs to the ``k``-th of the 9 cells around its own, in row-major order
  (``NEIGHBOUR_OFFSETS``): top-left, top, top-right, left, centre, right, bottom-left, bottom, bottom-right.
* Neighbours outside the grid take no mass in pooling (zero padding); in the hard assignment they map to the
  nearest border cell (edge padding), as in the reference code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import NEIGHBOUR_OFFSETS, CellGrid


def _check_association(assoc: torch.Tensor, name: str = "assoc") -> None:
    if assoc.ndim != 4 or assoc.shape[1] != 9:
        raise ValueError(f"{name} must have shape (B, 9, H, W), got {tuple(assoc.shape)}")


def _cell_sum(x: torch.Tensor, grid: CellGrid) -> torch.Tensor:
    """Sum ``(B, C, h, w)`` pixel values inside each cell -> ``(B, C, n_rows, n_cols)``."""
    s = grid.cell_size
    pad_h = grid.n_rows * s - grid.height
    pad_w = grid.n_cols * s - grid.width
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    b, c = x.shape[:2]
    return x.reshape(b, c, grid.n_rows, s, grid.n_cols, s).sum(dim=(3, 5))


def _cells_to_pixels(cells: torch.Tensor, grid: CellGrid) -> torch.Tensor:
    """Broadcast ``(B, C, n_rows, n_cols)`` cell values to ``(B, C, h, w)`` pixels (nearest)."""
    s = grid.cell_size
    up = cells.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
    return up[:, :, : grid.height, : grid.width]


def _shift_cells(cells: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[i, j] = cells[i + dy, j + dx]``, zero where that falls outside the grid."""
    padded = F.pad(cells, (1, 1, 1, 1))
    n_rows, n_cols = cells.shape[2:]
    return padded[:, :, 1 + dy : 1 + dy + n_rows, 1 + dx : 1 + dx + n_cols]


def pool_features(
    features: torch.Tensor, assoc: torch.Tensor, cell_size: int = 16, eps: float = 1e-8
) -> torch.Tensor:
    """Soft-pool per-pixel features into grid cells (PCNet Eq. 1, SCN Eq. 2).

    ``h(s) = sum_{p: s in N_p} f(p) Q(p, s) / sum_{p: s in N_p} Q(p, s)``: each cell collects the features of
    the pixels of its own and its 8 neighbouring cells, weighted by their association to it. Neighbours
    outside the grid receive nothing (zero padding).

    Parameters
    ----------
    features : torch.Tensor
        ``(B, C, h, w)`` float per-pixel features ``f`` (e.g. one-hot labels and ``(x, y)`` positions).
    assoc : torch.Tensor
        ``(B, 9, h, w)`` float association map ``Q`` (rows sum to 1 over the 9 channels).
    cell_size : int
        Grid cell side ``S`` in pixels.
    eps : float
        Added to the denominator so that a cell with no associated mass pools to 0, not NaN.

    Returns
    -------
    torch.Tensor
        ``(B, C, n_rows, n_cols)`` cell features ``h``, same dtype as ``features``.

    Raises
    ------
    ValueError
        If the shapes do not match as above.
    """
    _check_association(assoc)
    if features.ndim != 4 or features.shape[0] != assoc.shape[0] or features.shape[2:] != assoc.shape[2:]:
        raise ValueError(
            f"features must have shape (B, C, H, W) matching assoc {tuple(assoc.shape)}, "
            f"got {tuple(features.shape)}"
        )
    grid = CellGrid(assoc.shape[2], assoc.shape[3], cell_size)
    b, c = features.shape[:2]
    numerator = features.new_zeros(b, c, grid.n_rows + 2, grid.n_cols + 2)
    denominator = features.new_zeros(b, 1, grid.n_rows + 2, grid.n_cols + 2)
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        q = assoc[:, k : k + 1]
        # Pixels of cell (i, j) vote, with channel k, for cell (i + dy, j + dx).
        rows = slice(1 + dy, 1 + dy + grid.n_rows)
        cols = slice(1 + dx, 1 + dx + grid.n_cols)
        numerator[:, :, rows, cols] += _cell_sum(features * q, grid)
        denominator[:, :, rows, cols] += _cell_sum(q, grid)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    return numerator[inner] / (denominator[inner] + eps)


def reconstruct_features(cell_features: torch.Tensor, assoc: torch.Tensor, cell_size: int = 16) -> torch.Tensor:
    """Map cell features back to pixels (PCNet Eq. 2, SCN Eq. 3).

    ``f'(p) = sum_{s in N_p} h(s) Q(p, s)``; neighbours outside the grid contribute 0.

    Parameters
    ----------
    cell_features : torch.Tensor
        ``(B, C, n_rows, n_cols)`` float cell features ``h`` (from :func:`pool_features`).
    assoc : torch.Tensor
        ``(B, 9, h, w)`` float association map ``Q``.
    cell_size : int
        Grid cell side ``S`` in pixels.

    Returns
    -------
    torch.Tensor
        ``(B, C, h, w)`` reconstructed per-pixel features ``f'``.

    Raises
    ------
    ValueError
        If the cell grid of ``cell_features`` does not match the grid of ``assoc``.
    """
    _check_association(assoc)
    grid = CellGrid(assoc.shape[2], assoc.shape[3], cell_size)
    expected = (assoc.shape[0], grid.n_rows, grid.n_cols)
    got = (cell_features.shape[0], *cell_features.shape[2:]) if cell_features.ndim == 4 else None
    if got != expected:
        raise ValueError(
            f"cell_features must have shape (B, C, {grid.n_rows}, {grid.n_cols}) for assoc "
            f"{tuple(assoc.shape)} and S={cell_size}, got {tuple(cell_features.shape)}"
        )
    out = None
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        term = _cells_to_pixels(_shift_cells(cell_features, dy, dx), grid) * assoc[:, k : k + 1]
        out = term if out is None else out + term
    return out


def neighbour_cell_ids(grid: CellGrid, row_start: int = 0, row_stop: int | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Id of each of the 9 neighbour cells of every pixel, edge-padded at the grid border.

    Parameters
    ----------
    grid : CellGrid
        The output grid.
    row_start, row_stop : int
        Pixel rows ``[row_start, row_stop)`` to return (the whole height by default), so that large maps can be
        processed in strips.
    device : torch.device or str, optional
        Device of the result.

    Returns
    -------
    torch.Tensor
        ``(9, row_stop - row_start, w)`` int64 cell ids in ``[0, n_cells)``.
    """
    row_stop = grid.height if row_stop is None else row_stop
    rows = torch.arange(row_start, row_stop, device=device) // grid.cell_size
    cols = torch.arange(grid.width, device=device) // grid.cell_size
    offsets = torch.tensor(NEIGHBOUR_OFFSETS, device=device)
    nr = (rows[None, :] + offsets[:, 0:1]).clamp_(0, grid.n_rows - 1)  # (9, rows)
    nc = (cols[None, :] + offsets[:, 1:2]).clamp_(0, grid.n_cols - 1)  # (9, cols)
    return nr[:, :, None] * grid.n_cols + nc[:, None, :]


def hard_assignment(assoc: torch.Tensor, cell_size: int = 16, row_offset: int = 0,
                    grid: CellGrid | None = None, col_offset: int = 0) -> torch.Tensor:
    """Hard superpixel labels from an association map: each pixel takes its most probable neighbour cell.

    Parameters
    ----------
    assoc : torch.Tensor
        ``(B, 9, h, w)`` association map ``Q`` (probabilities or logits: only the argmax is used).
    cell_size : int
        Grid cell side ``S`` in pixels.
    row_offset, col_offset : int
        When ``assoc`` is a tile of a larger map, the row and column of its first pixel in that map.
    grid : CellGrid, optional
        The full map's grid; required with offsets (defaults to the grid of ``assoc`` itself).

    Returns
    -------
    torch.Tensor
        ``(B, h, w)`` int64 cell ids in ``[0, n_cells)``; out-of-grid neighbours map to the nearest border cell.

    Raises
    ------
    ValueError
        If ``assoc`` is not ``(B, 9, H, W)`` or does not fit in ``grid``.
    """
    _check_association(assoc)
    h, w = assoc.shape[2:]
    grid = grid or CellGrid(h, w, cell_size)
    if row_offset < 0 or col_offset < 0 or row_offset + h > grid.height or col_offset + w > grid.width:
        raise ValueError(f"assoc tile of {h} x {w} at ({row_offset}, {col_offset}) does not fit a "
                         f"{grid.height} x {grid.width} grid")
    return neighbour_choice_to_cell_ids(assoc.argmax(dim=1), grid, row_offset, col_offset)


def neighbour_choice_to_cell_ids(choice: torch.Tensor, grid: CellGrid, row_offset: int = 0,
                                 col_offset: int = 0) -> torch.Tensor:
    """Cell ids from the index (0-8, channel order of ``Q``) of the chosen neighbour cell of each pixel.

    Parameters
    ----------
    choice : torch.Tensor
        ``(..., h, w)`` integer neighbour index in ``[0, 9)`` (the argmax of ``Q`` over its channels).
    grid : CellGrid
        The full map's grid.
    row_offset, col_offset : int
        Position of ``choice``'s first pixel in the full map.

    Returns
    -------
    torch.Tensor
        ``(..., h, w)`` int64 cell ids; neighbours outside the grid map to the nearest border cell.
    """
    h, w = choice.shape[-2:]
    s = grid.cell_size
    rows = torch.arange(row_offset, row_offset + h, device=choice.device) // s
    cols = torch.arange(col_offset, col_offset + w, device=choice.device) // s
    choice = choice.long()
    cell_row = (rows[:, None] + torch.div(choice, 3, rounding_mode="floor") - 1).clamp_(0, grid.n_rows - 1)
    cell_col = (cols[None, :] + choice % 3 - 1).clamp_(0, grid.n_cols - 1)
    return cell_row * grid.n_cols + cell_col


def pixel_positions(batch: int, height: int, width: int, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Per-pixel ``(x, y)`` coordinates in pixels, as features for the position term of the superpixel loss.

    Returns
    -------
    torch.Tensor
        ``(batch, 2, height, width)``: channel 0 is x (column), channel 1 is y (row).
    """
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device),
        torch.arange(width, dtype=dtype, device=device),
        indexing="ij",
    )
    return torch.stack([xs, ys]).unsqueeze(0).expand(batch, -1, -1, -1)
