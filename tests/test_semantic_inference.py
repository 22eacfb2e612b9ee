"""Semantic inference: tiled and streamed runs equal one pass on a real image; sliding windows; class maps."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DRONE, tiny_segmenter
from uhrseg.inference import SemanticPredictor
from uhrseg.inference.semantic import _classes_from_logits
from uhrseg.io import open_image, read_image
from uhrseg.stores import ArrayStore, FileStore


@pytest.fixture(scope="module")
def frame():
    """A real Semantic Drone test frame, 1500 x 1000."""
    return read_image(sorted((DRONE / "test" / "images").glob("*.jpg"))[0])


@pytest.fixture(scope="module")
def isdnet():
    return tiny_segmenter("isdnet", narrow=False)


def test_one_pass_result(frame, isdnet):
    result = SemanticPredictor(isdnet, device="cpu").run(frame)
    assert result.mode == "whole" and result.output_stride == 8
    assert result.classes.shape == (1000, 1500) and result.classes.dtype == np.uint8
    assert result.probabilities.shape == (24, 125, 188) and result.probabilities.dtype == np.float16
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=0.02)
    assert len(result.class_names) == 24 and result.palette[1] == (128, 64, 128)
    assert sum(result.class_fractions().values()) == pytest.approx(1.0)
    # The class map is the argmax of the probabilities, upsampled: at the centre of each 8 x 8 block the two
    # mostly agree (the upsampling mixes in 1/16 of the next logit row and column there).
    centre = result.classes[4::8, 4::8]
    top = result.probabilities.argmax(0)[: centre.shape[0], : centre.shape[1]]
    assert (centre == top).mean() > 0.9


def test_tiled_equals_one_pass_on_a_real_image(frame, isdnet):
    """Deep path on 64-pixel tiles, shallow path and fusion on 256-pixel tiles: several tiles each way."""
    whole = SemanticPredictor(isdnet, device="cpu", mode="whole").run(frame)
    tiled = SemanticPredictor(isdnet, device="cpu", mode="tiled", tile=256, deep_tile=64).run(frame)
    assert tiled.mode == "tiled"
    np.testing.assert_array_equal(tiled.classes, whole.classes)
    np.testing.assert_array_equal(tiled.probabilities, whole.probabilities)
    assert len(np.unique(whole.classes)) > 3  # a test on a non-trivial class map


def test_tiled_deep_path_equals_one_pass(frame):
    base = tiny_segmenter("deeppath", narrow=False)
    whole = SemanticPredictor(base, device="cpu", mode="whole").run(frame)
    tiled = SemanticPredictor(base, device="cpu", mode="tiled", deep_tile=128).run(frame)  # 3 x 2 tiles
    assert whole.output_stride == 32 and whole.probabilities.shape == (24, 32, 47)
    np.testing.assert_array_equal(tiled.classes, whole.classes)


def test_streamed_tiff_with_stores_on_disk_equals_one_pass(tmp_path, frame, isdnet):
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, frame, tile=(128, 128), compression="zlib")
    source = open_image(path)
    work = tmp_path / "work"
    work.mkdir()
    try:
        with FileStore(tmp_path / "classes.u8", frame.shape[:2], np.uint8) as classes:
            info = SemanticPredictor(isdnet, device="cpu", mode="tiled", tile=512).run_source(
                source, classes, work_dir=work, preview_shape=(100, 150))
            streamed = classes.read(0, frame.shape[0])
    finally:
        source.close()
    whole = SemanticPredictor(isdnet, device="cpu").run(frame)
    np.testing.assert_array_equal(streamed, whole.classes)
    assert list(work.iterdir()) == []  # the intermediate maps are removed
    assert info.preview.shape == (100, 150, 3) and info.class_counts.sum() == frame.shape[0] * frame.shape[1]
    np.testing.assert_array_equal(info.class_counts, np.bincount(whole.classes.ravel(), minlength=24))


def test_sliding_windows(frame):
    net = tiny_segmenter("deeppath", deep_scale=1)
    predictor = SemanticPredictor(net, device="cpu", window=256)
    assert predictor.mode == "slide" and predictor.stride == 168
    small = frame[:200, :240]  # smaller than a window: one window over the padded image
    result = predictor.run(small)

    def x_of(image):  # (1, 3, H, W) float32 in [0, 1], as the predictor feeds the network
        return torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]

    with torch.no_grad():
        logits = net(x_of(small)).logits
    torch.testing.assert_close(torch.from_numpy(result.probabilities.astype(np.float32)),
                               torch.softmax(logits[0], 0), atol=2e-3, rtol=0)
    full = predictor.run(frame)
    assert full.mode == "slide" and full.classes.shape == (1000, 1500) and full.probabilities.shape == (24, 125, 188)
    # the corner that only the first window covers (stride 168 pixels: 21 cells of 8) is its own prediction
    with torch.no_grad():
        first = torch.softmax(net(x_of(frame[:256, :256])).logits[0], 0)[:, :21, :21]
    probabilities = torch.from_numpy(full.probabilities.astype(np.float32))
    torch.testing.assert_close(probabilities[:, :21, :21], first, atol=2e-3, rtol=0)


def test_predictor_errors(isdnet, frame):
    with pytest.raises(ValueError, match="sliding windows are for networks trained at full resolution"):
        SemanticPredictor(isdnet, mode="slide")
    with pytest.raises(ValueError, match="unknown segmentation model"):
        SemanticPredictor("pcnet")
    with pytest.raises(ValueError, match="unknown mode"):
        SemanticPredictor(isdnet, mode="fast")
    with pytest.raises(ValueError, match=r"the image is 20 x 31 pixels; segmentation needs at least 32 x 32"):
        SemanticPredictor(isdnet, device="cpu").run(frame[:31, :20])
    store = ArrayStore(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="does not match"):
        SemanticPredictor(isdnet, device="cpu").run_source(open_image(DRONE / "test" / "images" / "406.jpg"), store)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.sampled_from([8, 32]), st.integers(1, 5), st.integers(0, 10**6))
def test_banded_class_map_equals_whole_upsampling(lh, lw, stride, n_classes, seed):
    """Bilinear upsampling band by band (with one logit row of margin) equals upsampling the whole map."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(lh, lw, n_classes)).astype(np.float32)
    height = lh * stride - int(rng.integers(0, stride))
    width = lw * stride - int(rng.integers(0, stride))
    t = torch.from_numpy(logits).permute(2, 0, 1)[None]
    expected = F.interpolate(t, scale_factor=stride, mode="bilinear", align_corners=False)[0].argmax(0)
    expected = expected[:height, :width].numpy().astype(np.uint8)
    out = ArrayStore(np.zeros((height, width), np.uint8))
    band = int(rng.integers(1, 4)) * lw * stride * stride * n_classes  # 1-3 logit rows a band
    counts = _classes_from_logits(ArrayStore(logits), stride, out, torch.device("cpu"), band)
    np.testing.assert_array_equal(out.array, expected)
    np.testing.assert_array_equal(counts, np.bincount(expected.ravel(), minlength=n_classes))
