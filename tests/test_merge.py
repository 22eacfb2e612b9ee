"""Merging adjacent superpixels down to a requested count (Ward's cost), and the predictor's oversegmentation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import DEEPGLOBE, DRONE, assert_superpixel_labels
from uhrseg import SuperpixelPredictor
from uhrseg.datasets.readers import LabelledFolder
from uhrseg.grid import enforce_connectivity, merge_superpixels
from uhrseg.grid.colour import fill_texture, lab8
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


def _ward_merges_by_search(lo, hi, costs, count, means, k, n_segments, shared=None, boundary_weight=0.0):
    """The merge order of :func:`uhrseg.grid.merge._ward_merges` found the slow way: every step scans all current
    pairs for the least (cost, a, b). The pairs' costs are kept as that function computes them: the numpy costs of
    the graph's edges until an end merges, then the squared distance summed feature by feature in the order (smaller
    label, larger label), minus ``boundary_weight`` times the pair's boundary (``shared``: the edges' lengths,
    summed when ends merge)."""
    cost = {(a, b): c for a, b, c in zip(lo.tolist(), hi.tolist(), costs.tolist())}
    length = {(a, b): 0.0 for a, b in cost} if shared is None else dict(zip(cost, shared.tolist()))
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
        merged = {m: sum(v for pair, v in length.items() if m in pair and (i in pair or j in pair)) for m in around}
        cost = {pair: c for pair, c in cost.items() if i not in pair and j not in pair}
        length = {pair: v for pair, v in length.items() if i not in pair and j not in pair}
        for m in around:
            a, b = min(i, m), max(i, m)
            length[a, b] = merged[m]
            cost[a, b] = sum((p - q) * (p - q) for p, q in zip(mean[a], mean[b])) * n_pix[a] * n_pix[b] / (
                n_pix[a] + n_pix[b])
            if shared is not None:
                cost[a, b] -= boundary_weight * merged[m]
        alive -= 1
    return parent


@settings(max_examples=150, deadline=None)
@given(label_maps, st.integers(1, 30), st.integers(0, 2**32 - 1), st.integers(1, 8))
def test_ward_merges_equal_an_exhaustive_search(labels, n_segments, seed, levels):
    """The heap with lazy deletion, its compaction and the neighbour lists merge the same pairs in the same order
    as scanning every pair at every step (colours of few levels, so that equal costs and their tie-break occur),
    in Python and in the compiled kernel that large merges use."""
    from uhrseg.grid.merge import _ward_merges
    from uhrseg.grid.merge_kernel import ward_merges_kernel

    def compiled(lo, hi, costs, count, means, k, n_segments, compact_factor=2.0, shared=None, boundary_weight=0.0):
        return ward_merges_kernel(lo, hi, costs, count, means, n_segments, compact_factor,
                                  np.empty(0) if shared is None else shared, boundary_weight).tolist()

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
    costs = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]) * count[lo] * count[hi] / (count[lo] + count[hi])
    expected = _ward_merges_by_search(lo, hi, costs, count, means, k, n_segments)
    # The Mumford-Shah cost: Ward's minus the weight times the boundary, lengths summed as superpixels merge
    shared = rng.integers(1, 4, len(lo)).astype(float)
    weight = float(rng.choice([0.5, 40.0, 1e4]))
    ms_costs = costs - weight * shared
    expected_ms = _ward_merges_by_search(lo, hi, ms_costs, count, means, k, n_segments, shared, weight)
    for merges in (_ward_merges, compiled):
        assert merges(lo, hi, costs, count, means, k, n_segments) == expected
        # The heap compacted (its stale entries dropped) after nearly every push, as it is at scale now and then
        assert merges(lo, hi, costs, count, means, k, n_segments, compact_factor=1.0) == expected
        assert merges(lo, hi, ms_costs, count, means, k, n_segments, shared=shared, boundary_weight=weight) \
            == expected_ms
        assert merges(lo, hi, ms_costs, count, means, k, n_segments, compact_factor=1.0, shared=shared,
                      boundary_weight=weight) == expected_ms


@settings(max_examples=100, deadline=None)
@given(label_maps, st.integers(1, 20), st.integers(0, 2**32 - 1),
       st.lists(st.integers(1, 3), min_size=24, max_size=24), st.lists(st.integers(1, 3), min_size=24, max_size=24),
       st.sampled_from([0.0, 64.0, 4096.0]))
def test_row_and_column_weights_equal_repeating_them(labels, n_segments, seed, row_repeats, col_repeats, boundary):
    """Weights say how many image pixels a map pixel stands for: the result is that of the repeated map, the
    shared boundaries of the Mumford-Shah cost included (counted in image pixels; integer sums, so exact)."""
    labels = connected(labels)
    h, w = labels.shape
    rows, cols = np.array(row_repeats[:h]), np.array(col_repeats[:w])
    features = np.random.default_rng(seed).integers(0, 256, labels.shape + (3,)).astype(np.uint8)
    weighted = merge_superpixels(labels, features, n_segments, rows.astype(float), cols.astype(float),
                                 boundary_weight=boundary)
    big = np.repeat(np.repeat(labels, rows, 0), cols, 1)
    big_features = np.repeat(np.repeat(features, rows, 0), cols, 1)
    expected = merge_superpixels(big, big_features, n_segments, boundary_weight=boundary)
    np.testing.assert_array_equal(np.repeat(np.repeat(weighted, rows, 0), cols, 1), expected)


def test_boundary_lengths_are_counted_once_across_the_accumulation_bands():
    """The shared boundaries are summed in bands of rows (256 rows): a tall map crosses several bands, and the
    weighted map (rows standing for 1-3 image rows) must still give the result of the repeated map, whose bands
    fall elsewhere."""
    rng = np.random.default_rng(5)
    labels = connected(np.kron(rng.integers(0, 4, (90, 3)), np.ones((7, 3), np.int64)))  # 630 rows
    rows = rng.integers(1, 4, labels.shape[0])
    cols = np.ones(labels.shape[1], np.int64)
    features = rng.integers(0, 256, labels.shape + (3,)).astype(np.uint8)
    k = int(labels.max()) + 1
    for n_segments in (k // 2, k // 5):
        weighted = merge_superpixels(labels, features, n_segments, rows.astype(float), cols.astype(float),
                                     boundary_weight=300.0)
        expected = merge_superpixels(np.repeat(labels, rows, 0), np.repeat(features, rows, 0), n_segments,
                                     boundary_weight=300.0)
        np.testing.assert_array_equal(np.repeat(weighted, rows, 0), expected)
        assert not np.array_equal(weighted, merge_superpixels(labels, features, n_segments, rows.astype(float),
                                                              cols.astype(float)))  # the weight changed the merge


@pytest.mark.parametrize("boundary_weight", [0.0, 3000.0])
def test_large_merges_run_compiled_with_the_python_loops_labels(monkeypatch, boundary_weight):
    """From COMPILED_MERGES merges on, the loop runs in the numba kernel: on a Semantic Drone photograph (1500 x
    1000) cut into 4 x 4 cells, 93 750 superpixels merged to 60 000 on their 8-bit CIELAB colours, it gives
    exactly the Python loop's labels (forced by raising the threshold), with Ward's cost and with the boundary
    term."""
    import cv2

    from uhrseg.grid import lab8
    from uhrseg.grid import merge

    path = sorted((DRONE / "test" / "images").iterdir())[0]
    colour = lab8(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    rows, cols = np.mgrid[0:colour.shape[0], 0:colour.shape[1]]
    cells = (rows // 4) * -(-colour.shape[1] // 4) + cols // 4
    assert cells.max() + 1 - 60_000 >= merge.COMPILED_MERGES
    compiled = merge_superpixels(cells, colour, 60_000, boundary_weight=boundary_weight)
    monkeypatch.setattr(merge, "COMPILED_MERGES", 10**9)
    in_python = merge_superpixels(cells, colour, 60_000, boundary_weight=boundary_weight)
    assert assert_superpixel_labels(compiled, cells.shape) == 60_000
    np.testing.assert_array_equal(compiled, in_python)


def test_the_boundary_weight_merges_long_boundaries_first():
    """Three flat columns of 16 rows: grey 100 (4 wide), 104 (1 wide) and 110 (4 wide). Ward's cost joins the thin
    column to the left one (64 x 16 / 80 x 4^2 = 205 against 64 x 16 / 80 x 6^2 = 461); both boundaries are 16
    pixels long, so a boundary weight does not change that. Then the thin column is made grey 108 and the right
    one is cut into two blocks of 8 rows (110 above, 90 below): Ward's cost now joins the thin column to the
    top block (16 x 32 / 48 x 2^2 = 43 against 819 to the left), but it shares 16 pixels of boundary with the
    left column and 8 with the block, so a large enough weight makes the long boundary go first."""
    labels = np.zeros((16, 9), np.int64)
    labels[:, 4] = 1
    labels[:, 5:] = 2
    colour = np.full(labels.shape, 100.0)
    colour[:, 4] = 104.0
    colour[:, 5:] = 110.0
    for weight in (0.0, 1e3):
        out = merge_superpixels(labels, colour, 2, boundary_weight=weight)
        assert out[0, 4] == out[0, 0] != out[0, 8]
    colour[:, 4] = 108.0
    labels[8:, 5:] = 3
    colour[8:, 5:] = 90.0
    out = merge_superpixels(labels, colour, 3)
    assert out[0, 4] == out[0, 8] != out[0, 0]  # Ward alone: the thin column joins the top right block
    out = merge_superpixels(labels, colour, 3, boundary_weight=1e3)
    assert out[0, 4] == out[0, 0]  # 16 pixels of boundary against 8: the left column takes it


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
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, boundary_weight=-1.0),
     "boundary_weight must be finite and >= 0"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, boundary_weight=float("nan")),
     "boundary_weight must be finite and >= 0"),
    (lambda: merge_superpixels(np.zeros((4, 4), np.int32), np.zeros((4, 4)), 1, out=np.zeros((4, 4), np.int64)),
     "out must be an int32 array of shape \\(4, 4\\)"),
    (lambda: merge_superpixels(np.arange(4).reshape(2, 2), np.array([[0.0, np.nan], [1.0, 2.0]]), 1),
     "merge costs must be finite: features must be finite"),
    (lambda: merge_superpixels(np.arange(4).reshape(2, 2), np.ones((2, 2)), 1, np.array([1.0, 0.0]),
                               np.array([0.0, 1.0])), "every superpixel must have a positive weight"),
    (lambda: SuperpixelPredictor("slic", oversegmentation=1.5), "networks only"),
    (lambda: SuperpixelPredictor("slic", merge_boundary_weight=10.0), "networks only"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", oversegmentation=1, merge_boundary_weight=10.0),
     "needs oversegmentation > 1"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", merge_boundary_weight=-1.0), "finite and >= 0"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", merge_boundary_weight=float("nan")), "finite and >= 0"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", oversegmentation=0.5), "must be finite and >= 1"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", oversegmentation=float("inf")), "must be finite and >= 1"),
    (lambda: SuperpixelPredictor("slic", merge_texture_weight=0.5), "networks only"),
    (lambda: SuperpixelPredictor("pcnet", device="cpu", merge_texture_weight=-1.0), "finite and >= 0"),
    (lambda: SuperpixelPredictor("scn", device="cpu", merge_texture_weight=float("nan")), "finite and >= 0"),
    (lambda: fill_texture(np.zeros((4, 4, 3), np.uint8), 1.0), "\\(h, w, 4\\) uint8"),
    (lambda: fill_texture(np.zeros((4, 4, 4), np.float32), 1.0), "\\(h, w, 4\\) uint8"),
    (lambda: fill_texture(np.zeros((0, 4, 4), np.uint8), 1.0), "non-empty"),
    (lambda: fill_texture(np.zeros((4, 4, 4), np.uint8), -0.5), "weight must be finite and >= 0"),
    (lambda: fill_texture(np.zeros((4, 4, 4), np.uint8), 1.0, band_rows=0), "band_rows >= 1"),
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


def test_the_boundary_weight_gives_land_cover_fewer_boundaries_and_more_precision():
    """On a DeepGlobe train tile (land cover; outside the test split), the Mumford-Shah merge at the setting
    chosen on DeepGlobe train (3 n cells, weight 3000, refinement lambda 150) still gives exactly n superpixels,
    draws at least a tenth less boundary than Ward's merge with the same cells and raises BP at r = 1 (0.0322 ->
    0.0404 over the 8 train tiles)."""
    from uhrseg.grid.boundaries import boundary_mask

    from uhrseg.datasets.readers import open_dataset

    tiles = open_dataset(str(DEEPGLOBE / "train"))
    name = tiles.names[0]
    image, gt = tiles.image(name), tiles.ground_truths(name)[0]
    results = {}
    for weight in (0.0, 3000.0):
        predictor = SuperpixelPredictor("pcnet", device="cpu", oversegmentation=3, refine_smoothness=150,
                                        merge_boundary_weight=weight)
        labels = predictor.predict(image, 600)
        assert_superpixel_labels(labels, gt.shape)
        assert labels.max() + 1 == 600
        results[weight] = (int(boundary_mask(labels).sum()), boundary_recall_precision(labels, gt, 1)[1])
    (ward_length, ward_bp), (ms_length, ms_bp) = results[0.0], results[3000.0]
    assert ms_length < 0.9 * ward_length, results
    assert ms_bp > ward_bp, results


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 30))), st.integers(1, 45),
       st.sampled_from([0.0, 0.75, 1.0, 3.0]))
def test_texture_is_the_same_in_any_bands(lightness, band_rows, weight):
    """fill_texture works in bands of rows with one row of context: any band height gives the whole map's values,
    and the colour channels are left as they were."""
    features = np.zeros((*lightness.shape, 4), np.uint8)
    features[..., 0] = lightness
    features[..., 1:3] = 7
    whole = fill_texture(features.copy(), weight, band_rows=10**6)
    banded = fill_texture(features.copy(), weight, band_rows=band_rows)
    assert np.array_equal(whole, banded)
    assert np.array_equal(banded[..., :3], features[..., :3])
    if weight == 0.0:
        assert not banded[..., 3].any()


def test_texture_is_the_same_for_any_thread_count_and_bands():
    """|grad L| is often an exact half after the weight (a step of 95 L units: 4 x 95 / 8 = 47.5), which rounds to
    even. cv2.magnitude gave 47.499996 in its vectorised path and 47.5 in its scalar one, so until 2026-12-08 the
    texture, and with it the merge's labels, depended on the band height, the image width and OpenCV's thread
    count: 28 and 6 of these 300 random maps differed (a flaky hypothesis test found it)."""
    import cv2

    rng = np.random.default_rng(0)
    threads = cv2.getNumThreads()
    try:
        for case in range(300):
            features = np.zeros((*rng.integers(1, 41, size=2), 4), np.uint8)
            features[..., 0] = rng.integers(0, 256, features.shape[:2])
            weight, band_rows = (0.75, 1.0, 3.0)[case % 3], int(rng.integers(1, 46))
            results = []
            for n_threads in (1, 2, 4):
                cv2.setNumThreads(n_threads)
                for rows in (10**6, band_rows):
                    results.append(fill_texture(features.copy(), weight, band_rows=rows)[..., 3])
            assert all(np.array_equal(results[0], r) for r in results[1:]), case
    finally:
        cv2.setNumThreads(threads)


def test_texture_is_the_lightness_gradient_in_l_units():
    """A flat image has no texture; a vertical step of 40 L units gives |grad L| = 20 (Sobel / 8) on the two
    columns beside it and 0 elsewhere, times the weight (rounded, clipped to 255)."""
    features = np.zeros((6, 8, 4), np.uint8)
    assert not fill_texture(features.copy(), 1.0)[..., 3].any()
    features[:, 4:, 0] = 40
    texture = fill_texture(features.copy(), 1.0)[..., 3]
    assert (texture[:, 3:5] == 20).all() and not texture[:, :3].any() and not texture[:, 5:].any()
    assert (fill_texture(features.copy(), 0.75)[..., 3][:, 3:5] == 15).all()
    assert (fill_texture(features.copy(), 100.0)[..., 3][:, 3:5] == 255).all()  # clipped


def test_the_texture_feature_separates_textured_from_flat_ground():
    """On a real drone frame (semantic-drone more/, 8-bit CIELAB as the merge gets it), the mean texture of the
    most textured 16 x 16 block is more than 5 times that of the flattest: the channel that lets Ward's cost keep
    such regions apart where their colours agree."""
    image = LabelledFolder(DRONE / "more").image(LabelledFolder(DRONE / "more").names[0])
    features = np.zeros((*image.shape[:2], 4), np.uint8)
    features[..., :3] = lab8(image)
    fill_texture(features, 0.75)
    texture = features[..., 3].astype(float)
    rows = np.arange(0, image.shape[0] - 16, 16)
    cols = np.arange(0, image.shape[1] - 16, 16)
    blocks = [(r, c, texture[r:r + 16, c:c + 16].mean()) for r in rows for c in cols]
    flat = min(blocks, key=lambda b: b[2])
    rough = max(blocks, key=lambda b: b[2])
    assert rough[2] > 5 * max(flat[2], 1.0), (flat, rough)


def test_the_default_merge_uses_the_texture_and_zero_restores_colour_alone():
    """SuperpixelPredictor merges on CIELAB and 0.75 |grad L| by default; merge_texture_weight=0 gives the
    labels of the colour-only merge (the default before 2026-12-07), and the two differ on a real frame while
    both give exactly n superpixels."""
    frames = LabelledFolder(DRONE / "more")
    image = frames.image(frames.names[1])
    default = SuperpixelPredictor("pcnet", device="cpu")
    assert default.merge_texture_weight == 0.75 and SuperpixelPredictor("slic").merge_texture_weight == 0.0
    textured = default.predict(image, 600)
    colour_only = SuperpixelPredictor("pcnet", device="cpu", merge_texture_weight=0.0).predict(image, 600)
    for labels in (textured, colour_only):
        assert_superpixel_labels(labels, image.shape[:2])
        assert labels.max() + 1 == 600
    assert not np.array_equal(textured, colour_only)
