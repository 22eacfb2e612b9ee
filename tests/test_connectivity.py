"""Connectivity enforcement: contiguous labels covering every pixel, each one 4-connected component."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label as connected_components

from conftest import BSDS, assert_superpixel_labels
from uhrseg.grid import connectivity_bounds, enforce_connectivity

label_maps = arrays(np.int64, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=st.integers(0, 4))


def sizes_of(labels):
    return np.bincount(labels.ravel())


@settings(max_examples=150, deadline=None)
@given(label_maps, st.integers(0, 20), st.one_of(st.none(), st.integers(1, 200)))
def test_labels_are_contiguous_connected_and_cover_every_pixel(labels, min_size, max_size):
    out = enforce_connectivity(labels, min_size, max_size)
    k = assert_superpixel_labels(out, labels.shape)
    sizes = sizes_of(out)
    if k > 1:
        assert sizes.min() >= min_size, "a fragment below min_size survived"
    if min_size == 0 and max_size is not None:
        assert sizes.max() <= max_size


@settings(max_examples=100, deadline=None)
@given(label_maps)
def test_output_refines_input_when_nothing_merges(labels):
    """Without merging, every output superpixel lies inside one input segment (a pure split)."""
    out = enforce_connectivity(labels, 0, None)
    pairs = np.unique(np.stack([out.ravel(), labels.ravel()]), axis=1)
    assert pairs.shape[1] == out.max() + 1
    assert out.max() + 1 == connected_components(labels + 1, background=0, connectivity=1).max()


def test_regular_blocks_are_kept_as_they_are():
    blocks = np.kron(np.arange(12).reshape(3, 4), np.ones((10, 10), dtype=np.int64))
    out = enforce_connectivity(blocks, 6, 300)
    np.testing.assert_array_equal(out, blocks)  # raster order of first pixels = the block ids here


def test_small_fragment_merges_into_a_neighbour():
    labels = np.zeros((20, 20), dtype=np.int32)
    labels[:, 10:] = 1
    labels[5:7, 3:5] = 2  # 4-pixel island inside segment 0
    out = enforce_connectivity(labels, min_size=5)
    assert out.max() == 1
    assert (out[5:7, 3:5] == out[0, 0]).all()


def test_large_segment_is_split_at_max_size():
    out = enforce_connectivity(np.zeros((30, 30), dtype=np.int32), 0, 100)
    sizes = sizes_of(out)
    assert sizes.max() == 100  # pieces grow to the bound ...
    assert 9 <= sizes.size <= 12  # ... so 900 pixels need at least 9 of them
    assert_superpixel_labels(out, (30, 30))


def test_real_ground_truth_components():
    """On a human BSDS500 segmentation, min_size=0 gives exactly its 4-connected components."""
    mat = scipy.io.loadmat(BSDS / "groundTruth" / "test" / "100007.mat")
    seg = mat["groundTruth"][0, 0]["Segmentation"][0, 0].astype(np.int32)
    out = enforce_connectivity(seg, 0, None)
    assert_superpixel_labels(out, seg.shape)
    assert out.max() + 1 == connected_components(seg, background=0, connectivity=1).max()
    assert out.max() + 1 >= seg.max()


def test_bounds_follow_ssn():
    assert connectivity_bounds((320, 480), 600) == (15, 768)


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (np.zeros((0, 4), dtype=np.int32), {}, "non-empty"),
        (np.zeros((4, 4), dtype=np.float32), {}, "integer"),
        (np.zeros(4, dtype=np.int32), {}, r"\(H, W\)"),
        (np.zeros((4, 4), dtype=np.int32), {"min_size": -1}, "min_size"),
        (np.zeros((4, 4), dtype=np.int32), {"max_size": 0}, "max_size"),
    ],
)
def test_bad_input_is_refused(labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        enforce_connectivity(labels, **kwargs)
