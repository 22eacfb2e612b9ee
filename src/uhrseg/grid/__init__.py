"""Superpixel grid operations: the S x S cell grid, soft pooling and reconstruction through the association
map Q, hard assignment, connectivity enforcement and full-resolution boundary refinement."""

from .boundaries import boundary_mask
from .cells import (
    CENTRE,
    NEIGHBOUR_OFFSETS,
    CellGrid,
    hard_assignment,
    neighbour_cell_ids,
    pixel_positions,
    pool_features,
    reconstruct_features,
)
from .connectivity import connectivity_bounds, enforce_connectivity
from .refine import lab8, refine_boundaries, refine_store

__all__ = [
    "CENTRE",
    "NEIGHBOUR_OFFSETS",
    "CellGrid",
    "boundary_mask",
    "connectivity_bounds",
    "enforce_connectivity",
    "hard_assignment",
    "lab8",
    "neighbour_cell_ids",
    "pixel_positions",
    "pool_features",
    "reconstruct_features",
    "refine_boundaries",
    "refine_store",
]
