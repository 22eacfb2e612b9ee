"""Superpixel grid operations: the S x S cell grid, soft pooling and reconstruction through the association
map Q, hard assignment, connectivity enforcement, merging and full-resolution boundary refinement."""

import lazy_loader

# Submodules load on first use, so that ``import uhrseg`` (and the command line) does not load torch,
# numba or OpenCV before they are needed (lazy_loader: the scientific Python ecosystem's SPEC 1).
__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "boundaries": ["boundary_mask"],
    "cells": ["hard_assignment", "neighbour_cell_ids", "pixel_positions", "pool_features", "reconstruct_features"],
    "geometry": ["CENTRE", "CellGrid", "NEIGHBOUR_OFFSETS", "choice_to_cell_ids"],
    "connectivity": ["connectivity_bounds", "enforce_connectivity"],
    "merge": ["merge_superpixels"],
    "colour": ["lab8"],
    "refine": ["refine_boundaries", "refine_store"],
})
