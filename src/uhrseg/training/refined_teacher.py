"""A teacher's association map with the full-resolution boundary refinement applied (not in the PCNet paper).

The SCN teacher (``TrainConfig.teacher``) gives PCNet a dense target ``Q``, but its boundaries are the
network's own: on BSDS500 test at n = 600 the packaged SCN reaches BR 0.80 raw and 0.89 after
:func:`uhrseg.grid.refine.refine_boundaries`. :func:`refined_association` moves the teacher's target to the
refined boundaries, so the student learns to put its own boundaries where the refinement would: the teacher's
hard labels (the argmax cell of ``Q``) are refined on the crop at the output resolution, and at every pixel the
refinement moved to another cell the target becomes that cell (one-hot among the 9 neighbour channels; split
evenly where the grid border makes several channels name it). Elsewhere the target stays the teacher's soft
``Q``. A pixel moved to a cell outside its 3 x 3 neighbourhood (which one refinement pass cannot do, but a
chain of passes can) keeps the teacher's ``Q``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..defaults import DEFAULT_COMPACTNESS, DEFAULT_REFINE_ITERATIONS, DEFAULT_SMOOTHNESS
from ..grid.cells import CellGrid, hard_assignment, neighbour_cell_ids
from ..grid.refine import refine_boundaries

__all__ = ["refined_association"]


def refined_association(assoc: torch.Tensor, image: torch.Tensor, cell_size: int,
                        iterations: int = DEFAULT_REFINE_ITERATIONS, compactness: float = DEFAULT_COMPACTNESS,
                        smoothness: float = DEFAULT_SMOOTHNESS) -> torch.Tensor:
    """The association map ``assoc`` with its hard labels' boundaries moved by the boundary refinement.

    Parameters
    ----------
    assoc : torch.Tensor
        ``(B, 9, h, w)`` float association map ``Q`` (softmax probabilities) of a network on ``image``.
    image : torch.Tensor
        ``(B, 3, h, w)`` float RGB in [0, 1]: the image at ``Q``'s resolution.
    cell_size : int
        Grid cell side ``S`` in pixels of ``Q``'s grid.
    iterations, compactness, smoothness : int, float, float
        Passes, ``m`` and ``lambda`` of :func:`uhrseg.grid.refine.refine_boundaries` (the package defaults).

    Returns
    -------
    torch.Tensor
        ``(B, 9, h, w)`` float32 on ``assoc``'s device: ``Q`` where the refinement kept the pixel's cell, the
        one-hot (or evenly split, at the grid border) indicator of the new cell where it moved it. Each
        pixel's values sum to 1.

    Raises
    ------
    ValueError
        If the shapes do not fit (``assoc`` not ``(B, 9, h, w)``, ``image`` not ``(B, 3, h, w)``) or a
        refinement parameter is negative.
    """
    if assoc.ndim != 4 or assoc.shape[1] != 9 or image.shape != (assoc.shape[0], 3, *assoc.shape[2:]):
        raise ValueError(f"assoc must be (B, 9, h, w) and image (B, 3, h, w) of the same size, got "
                         f"{tuple(assoc.shape)} and {tuple(image.shape)}")
    h, w = assoc.shape[2:]
    grid = CellGrid(h, w, cell_size)
    labels = hard_assignment(assoc, cell_size).cpu()
    pixels = image.detach().float().clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()
    refined = torch.from_numpy(np.stack([
        refine_boundaries(np.ascontiguousarray(pixels[b]), labels[b].numpy(), iterations, compactness, smoothness)
        for b in range(labels.shape[0])])).long()
    match = (neighbour_cell_ids(grid)[None] == refined[:, None]).float()  # (B, 9, h, w)
    hits = match.sum(dim=1, keepdim=True)
    moved = (refined != labels)[:, None] & (hits > 0)
    target = assoc.detach().float().cpu()
    target = torch.where(moved, match / hits.clamp_min(1.0), target)
    return target.to(assoc.device)
