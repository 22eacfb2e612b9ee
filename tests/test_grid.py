"""Grid core: pooling (Eq. 1), reconstruction (Eq. 2), hard assignment, with property tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uhrseg.grid import (
    NEIGHBOUR_OFFSETS,
    CellGrid,
    hard_assignment,
    neighbour_cell_ids,
    pixel_positions,
    pool_features,
    reconstruct_features,
)

sizes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 40), st.integers(1, 40), st.integers(1, 9))


def random_softmax(shape, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(shape, generator=g, dtype=dtype) * 3, dim=1)


def cell_means_numpy(features: np.ndarray, s: int) -> np.ndarray:
    """Independent reference: mean of each cell's pixels, by explicit loops over cells."""
    b, c, h, w = features.shape
    rows, cols = -(-h // s), -(-w // s)
    out = np.zeros((b, c, rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[:, :, i, j] = features[:, :, i * s : (i + 1) * s, j * s : (j + 1) * s].mean(axis=(2, 3))
    return out


def centre_assoc(b, h, w, dtype=torch.float64):
    q = torch.zeros(b, 9, h, w, dtype=dtype)
    q[:, 4] = 1.0
    return q


@settings(max_examples=60, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1))
def test_centre_association_pools_and_reconstructs_cell_means(size, seed):
    b, c, h, w, s = size
    f = torch.from_numpy(np.random.default_rng(seed).normal(size=(b, c, h, w)))
    q = centre_assoc(b, h, w)
    cells = pool_features(f, q, s, eps=0.0)
    expected = cell_means_numpy(f.numpy(), s)
    np.testing.assert_allclose(cells.numpy(), expected, rtol=1e-10, atol=1e-12)
    recon = reconstruct_features(cells, q, s)
    grid = CellGrid(h, w, s)
    ids = grid.cell_ids()
    per_pixel = expected.reshape(b, c, -1)[:, :, ids.reshape(-1)].reshape(b, c, h, w)
    np.testing.assert_allclose(recon.numpy(), per_pixel, rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1), st.floats(-100, 100))
def test_pooling_is_a_weighted_mean(size, seed, value):
    """Constant features pool to that constant whatever the association (Eq. 1 normalises by the mass)."""
    b, c, h, w, s = size
    q = random_softmax((b, 9, h, w), seed)
    f = torch.full((b, c, h, w), value, dtype=torch.float64)
    np.testing.assert_allclose(pool_features(f, q, s, eps=0.0).numpy(), value, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1))
def test_reconstruction_of_constant_cells_is_in_grid_mass(size, seed):
    """f' = c * (mass on neighbours inside the grid): out-of-grid neighbours contribute nothing (zero padding)."""
    b, c, h, w, s = size
    q = random_softmax((b, 9, h, w), seed)
    grid = CellGrid(h, w, s)
    cells = torch.ones(b, c, grid.n_rows, grid.n_cols, dtype=torch.float64)
    recon = reconstruct_features(cells, q, s)
    rows = torch.arange(h) // s
    cols = torch.arange(w) // s
    inside = torch.stack([
        ((rows + dy >= 0) & (rows + dy < grid.n_rows))[:, None] & ((cols + dx >= 0) & (cols + dx < grid.n_cols))[None]
        for dy, dx in NEIGHBOUR_OFFSETS
    ]).to(torch.float64)
    expected = (q * inside).sum(dim=1, keepdim=True).expand(b, c, h, w)
    np.testing.assert_allclose(recon.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1), st.randoms(use_true_random=False))
def test_results_do_not_depend_on_batch_order(size, seed, rnd):
    b, c, h, w, s = size
    q = random_softmax((b, 9, h, w), seed)
    f = torch.from_numpy(np.random.default_rng(seed).normal(size=(b, c, h, w)))
    perm = list(range(b))
    rnd.shuffle(perm)
    perm = torch.tensor(perm)
    cells = pool_features(f, q, s)
    torch.testing.assert_close(pool_features(f[perm], q[perm], s), cells[perm])
    torch.testing.assert_close(reconstruct_features(cells[perm], q[perm], s), reconstruct_features(cells, q, s)[perm])
    assert torch.equal(hard_assignment(q[perm], s), hard_assignment(q, s)[perm])


def hard_assignment_loops(q: np.ndarray, s: int) -> np.ndarray:
    """Independent reference: per-pixel loop with edge-clamped neighbour cells."""
    b, _, h, w = q.shape
    rows, cols = -(-h // s), -(-w // s)
    out = np.zeros((b, h, w), dtype=np.int64)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                k = int(np.argmax(q[n, :, y, x]))
                dy, dx = NEIGHBOUR_OFFSETS[k]
                r = min(max(y // s + dy, 0), rows - 1)
                c = min(max(x // s + dx, 0), cols - 1)
                out[n, y, x] = r * cols + c
    return out


@settings(max_examples=40, deadline=None)
@given(sizes, st.integers(0, 2**31 - 1))
def test_hard_assignment_matches_reference_loop(size, seed):
    b, _, h, w, s = size
    q = random_softmax((b, 9, h, w), seed)
    got = hard_assignment(q, s)
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), hard_assignment_loops(q.numpy(), s))
    grid = CellGrid(h, w, s)
    assert 0 <= got.min() and got.max() < grid.n_cells


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 8), st.integers(0, 2**31 - 1), st.data())
def test_hard_assignment_in_strips_equals_whole(h, w, s, seed, data):
    q = random_softmax((1, 9, h, w), seed)
    grid = CellGrid(h, w, s)
    cut = data.draw(st.integers(0, h))
    parts = [hard_assignment(q[:, :, a:b], s, row_offset=a, grid=grid) for a, b in ((0, cut), (cut, h)) if b > a]
    assert torch.equal(torch.cat(parts, dim=1), hard_assignment(q, s))


def test_centre_assignment_gives_the_grid_cells():
    q = centre_assoc(2, 37, 50)
    assert torch.equal(hard_assignment(q, 16), CellGrid(37, 50, 16).cell_ids().expand(2, -1, -1))


def test_neighbour_ids_are_edge_padded():
    grid = CellGrid(32, 48, 16)  # 2 x 3 cells
    ids = neighbour_cell_ids(grid)
    assert ids.shape == (9, 32, 48)
    # Top-left pixel: top-left, top and left neighbours clamp to cell 0 itself.
    assert ids[:, 0, 0].tolist() == [0, 0, 1, 0, 0, 1, 3, 3, 4]
    # Bottom-right pixel of cell 5 (row 1, col 2).
    assert ids[:, 31, 47].tolist() == [1, 2, 2, 4, 5, 5, 4, 5, 5]


def test_pool_and_reconstruct_are_differentiable():
    q = random_softmax((1, 9, 7, 9), 3).requires_grad_(True)
    f = torch.randn(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, q: reconstruct_features(pool_features(f, q, 4), q, 4), (f, q))


def test_pixel_positions():
    p = pixel_positions(2, 3, 4)
    assert p.shape == (2, 2, 3, 4)
    assert p[1, 0, 2, 3] == 3 and p[1, 1, 2, 3] == 2


@pytest.mark.parametrize("bad", [torch.zeros(1, 8, 4, 4), torch.zeros(9, 4, 4)])
def test_bad_association_shape_is_refused(bad):
    with pytest.raises(ValueError, match=r"\(B, 9, H, W\)"):
        hard_assignment(bad)


def test_mismatched_features_are_refused():
    with pytest.raises(ValueError, match="features must have shape"):
        pool_features(torch.zeros(1, 3, 5, 5), torch.zeros(1, 9, 4, 4))
    with pytest.raises(ValueError, match="cell_features must have shape"):
        reconstruct_features(torch.zeros(1, 3, 2, 2), torch.zeros(1, 9, 48, 48), 16)
