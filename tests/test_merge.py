"""Merging adjacent superpixels down to a requested count (Ward's cost), and the predictor's oversegmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import DRONE, assert_superpixel_labels
from uhrseg import SuperpixelPredictor
from uhrseg.datasets.readers import LabelledFolder
from uhrseg.grid import enforce_connectivity, merge_superpixels
from uhrseg.metrics.superpixel import achievable_segmentation_accuracy, boundary_recall_precision

label_maps = arrays(np.int64, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.integers(0, 5))


def connected(labels: np.ndarray) -> np.ndarray:
    """Every label one 4-connected component, 0-based and contiguous (the merge's input convention)."""
    return enforce_connectivity(labels, 0, None)


@settings(max_examples=150, deadline=None)
@given(label_maps, st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_merge_gives_the_count_asked_and_unions_of_connected_superpixels(labels, n_segments, seed):
    labels = connected(labels)
    features = np.random.default_rng(seed).integers(0, 256, labels.shape + (3,)).astype(np.uint8)
    out = merge_superpixels(labels, features, n_segments)
    k_in = int(labels.max()) + 1
    # One grid image has one connected adjacency graph, so merging can always reach the count.
    assert assert_superpixel_labels(out, labels.shape) == min(k_in, n_segments)
    # Each input superpixel lies inside one output superpixel (merging never splits).
    pairs = np.unique(np.stack([labels.ravel(), out.ravel()]), axis=1)
    assert pairs.shape[1] == k_in
    # Numbered by the smallest input label each contains.
    firsts = [labels[out == j].min() for j in range(out.max() + 1)]
    assert firsts == sorted(firsts)
    # Written in place (out=labels, as the streamed path does to save a map): the same labels.
    in_place = labels.astype(np.int32)
    assert merge_superpixels(in_place, features, n_segments, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, out)


def _ward_merges_by_search(lo, hi, costs, count, means, k, n_segments):
    """The merge order of :func:`uhrseg.grid.merge._ward_merges` found the slow way: every step scans all current
    pairs for the least (cost, a, b). The pairs' costs are kept as that function computes them: the numpy costs of
    the graph's edges until an end merges, then ``math.dist`` in the order (smaller label, larger label)."""
    from math import dist

    cost = {(a, b): c for a, b, c in zip(lo.tolist(), hi.tolist(), costs.tolist())}
    n_pix, mean, parent = count.tolist(), means.tolist(), list(range(k))
    alive = k
    while alive > n_segments and cost:
        c, i, j = min((c, a, b) for (a, b), c in cost.items())
        parent[j] = i
        n_i, n_j = n_pix[i], n_pix[j]
        total = n_i + n_j
        mean[i] = [(p * n_i + q * n_j) / total for p, q in zip(mean[i], mean[j])]
        n_pix[i] = total
        around = {b if a in (i, j) else a for a, b in cost if i in (a, b) or j in (a, b)} - {i, j}
        cost = {pair: c for pair, c in cost.items() if i not in pair and j not in pair}
        for m in around:
            a, b = min(i, m), max(i, m)
            cost[a, b] = dist(mean[a], mean[b]) ** 2 * n_pix[a] * n_pix[b] / (n_pix[a] + n_pix[b])
        alive -= 1
    return parent


@settings(max_examples=150, deadline=None)
@given(label_maps, st.integers(1, 30), st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_ward_merges_equal_an_exhaustive_search(labels, n_segments, seed, levels):
    """The heap with lazy deletion, its compaction and the neighbour lists merge the same pairs in the same order
    as scanning every pair at every step (colours of few levels, so that equal costs and their tie-break occur)."""
    from uhrseg.grid.merge import _ward_merges

    labels = connected(labels)
    k = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    means = (rng.integers(0, levels, (k, 3)) * 40).astype(float)
    count = rng.integers(1, 5, k).astype(float)
    pairs = np.concatenate([np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
                            np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1)])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    lo, hi = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    d = means[lo] - means[hi]
    costs = np.einsum("ij,ij->i", d, d) * count[lo] * count[hi] / (count[lo] + count[hi])
    expected = _ward_merges_by_search(lo, hi, costs, count, means, k, n_segments)
    assert _ward_merges(lo, hi, costs, count, means, k, n_segments) == expected
    # The heap compacted (its stale entries dropped) after nearly every push, as it is at scale now and then
    assert _ward_merges(lo, hi, costs, count, means, k, n_segments, compact_factor=1.0) == expected


@settings(max_examples=100, deadline=None)
@given(label_maps, st.integers(1, 20), st.integers(0, 2**32 - 1),
       st.lists(st.integers(1, 3), min_size=24, max_size=24), st.lists(st.integers(1, 3), min_size=24, max_size=24))
def test_row_and_column_weights_equal_repeating_them(labels, n_segments, seed, row_repeats, col_repeats):
    """Weights say how many image pixels a map pixel stands for: the result is that of the repeated map."""
    labels = connected(labels)
    h, w = labels.shape
    rows, cols = np.array(row_repeats[:h]), np.array(col_repeats[:w])
    features = np.random.default_rng(seed).integers(0, 256, labels.shape + (3,)).astype(np.uint8)
    weighted = merge_superpixels(labels, features, n_segments, rows.astype(float), cols.astype(float))
    big = np.repeat(np.repeat(labels, rows, 0), cols, 1)
    big_features = np.repeat(np.repeat(features, rows, 0), cols, 1)
    expected = merge_superpixels(big, big_features, n_segments)
    np.testing.assert_array_equal(np.repeat(np.repeat(weighted, rows, 0), cols, 1), expected)


def test_the_most_similar_neighbours_merge_first():
    """Two flat halves cut into 4 x 4 blocks: merged to 2, the halves come back exactly (Ward's cost is 0 inside
    a half and positive across)."""
    blocks = np.kron(np.arange(16).reshape(4, 4), np.ones((8, 8), np.int64))
    colour = np.zeros(blocks.shape + (3,), np.uint8)
    colour[:, 16:] = (200, 40, 90)
    out = merge_superpixels(blocks, colour, 2)
    np.testing.assert_array_equal(out, (np.arange(32) >= 16)[None, :].repeat(32, 0).astype(np.int32))


def test_wards_cost_keeps_large_regions_from_absorbing_their_neighbours():
    """A 100-pixel region of grey 100 beside two 10-pixel strips of 94 and 86. The nearest colours are the big
    region and the first strip (6 against 8 levels), but Ward's cost weighs sizes: 100 x 10 / 110 x 6^2 = 327
    against 10 x 10 / 20 x 8^2 = 320, so merging to 2 joins the two strips."""
    labels = np.zeros((10, 12), np.int64)
    labels[:, 10] = 1
    labels[:, 11] = 2
    colour = np.full(labels.shape, 100.0)
    colour[:, 10] = 94.0
    colour[:, 11] = 86.0
    out = merge_superpixels(labels, colour, 2)
    assert out[0, 10] == out[0, 11] != out[0, 0]
    colour[:, 11] = 84.0  # 10 x 10 / 20 x 10^2 = 500 > 327: now the big region takes the first strip
    out = merge_superpixels(labels, colour, 2)
    assert out[0, 10] == out[0, 0] != out[0, 11]


def test_nothing_to_merge_returns_the_labels():
    labels = np.kron(np.arange(6).reshape(2, 3), np.ones((4, 4), np.int64))
    out = merge_superpixels(labels, np.zeros(labels.shape), 6)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("call, message", [
    (lambda: merge_superpixels(np.zeros(5, np.int32), np.zeros(5), 1), "must be \\(H, W\\)"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 5)), 1), "do not match"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 0), "n_segments must be >= 1"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, np.ones(3)), "row_weights"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, out=np.zeros((4, 4), np.int64)),
     "out must be an int32 array of shape \\(4, 4\\)"),
    (lambda: SuperpixelPredictor("slic", oversegmentation=1.5), "networks only"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", oversegmentation=0.5), "must be finite and >= 1"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", oversegmentation=float("inf")), "must be finite and >= 1"),
])
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_oversegmented_pcnet_has_exactly_n_and_better_superpixels_on_drone_frames():
    """On real aerial frames (semantic-drone ``more/``, outside the test split), the default (1.5x cells, then
    merged) gives exactly n superpixels and beats the papers' grid (oversegmentation 1) on BR, BP and ASA."""
    frames = LabelledFolder(DRONE / "more")
    names = frames.names[:4]
    scores = {}
    for factor in (1.0, None):
        predictor = SuperpixelPredictor("pcnet", device="cpu", oversegmentation=factor)
        total = np.zeros(3)
        for name in names:
            image, gt = frames.image(name), frames.ground_truths(name)[0]
            labels = predictor.predict(image, 600)
            assert_superpixel_labels(labels, gt.shape)
            if factor is None:
                assert labels.max() + 1 == 600
            total += [*boundary_recall_precision(labels, gt, 1), achievable_segmentation_accuracy(labels, gt)]
        scores[factor] = total / len(names)
    grid, merged = scores[1.0], scores[None]
    assert (merged > grid).all(), f"BR / BP / ASA merged {merged} vs grid {grid}"
    assert merged[2] - grid[2] > 0.003, "the ASA gain measured on 30 frames was 0.0064"
