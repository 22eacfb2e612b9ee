"""Superpixel metrics on hand-made maps with known answers and on a real BSDS500 image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.io

import uhrseg
from conftest import BSDS
from uhrseg.metrics import (
    achievable_segmentation_accuracy,
    boundary_recall_precision,
    compactness,
    default_tolerance,
    explained_variation,
    superpixel_metrics,
    undersegmentation_error,
)


def halves(h, w, column):
    labels = np.zeros((h, w), dtype=np.int32)
    labels[:, column:] = 1
    return labels


def test_perfect_superpixels():
    gt = np.kron(np.array([[0, 1], [2, 3]]), np.ones((20, 30), dtype=np.int32))
    m = superpixel_metrics(gt, gt)
    assert (m["br"], m["bp"], m["asa"], m["ue"], m["k"]) == (1.0, 1.0, 1.0, 0.0, 4)


@pytest.mark.parametrize("r", [0, 1, 2, 3])
def test_shifting_a_boundary_past_the_tolerance(r):
    """GT boundary pixels sit in columns c-1 and c; the superpixel boundary moved by d sits in c+d-1 and c+d."""
    h, w, c = 30, 60, 25
    gt = halves(h, w, c)
    for d in range(0, r + 3):
        br, bp = boundary_recall_precision(halves(h, w, c + d), gt, tolerance=r)
        expected = 1.0 if d <= r else 0.5 if d == r + 1 else 0.0
        assert br == expected, (d, br)
        # FP: superpixel boundary columns farther than r from both GT columns.
        fp = h * sum(1 for col in (c + d - 1, c + d) if min(abs(col - c), abs(col - c + 1)) > r)
        tp = expected * 2 * h
        assert bp == pytest.approx(tp / (tp + fp) if tp + fp else 0.0)


def test_no_ground_truth_boundary_gives_zero_recall_like_the_benchmark():
    gt = np.zeros((10, 10), dtype=np.int32)
    assert boundary_recall_precision(halves(10, 10, 5), gt) == (0.0, 0.0)


def test_asa_and_ue_hand_computed():
    gt = halves(4, 4, 2)  # two 8-pixel segments
    sp = np.zeros((4, 4), dtype=np.int32)
    sp[:, 3:] = 1  # superpixel 0 = 12 px (8 in G0, 4 in G1); superpixel 1 = 4 px in G1
    assert achievable_segmentation_accuracy(sp, gt) == (8 + 4) / 16
    # G0: S0 -> min(8, 4) = 4; G1: S0 -> min(4, 8) = 4, S1 -> min(4, 0) = 0
    assert undersegmentation_error(sp, gt) == 8 / 16


def test_ev_extremes():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
    every_pixel = np.arange(12 * 16).reshape(12, 16)
    assert explained_variation(every_pixel, image) == pytest.approx(1.0)
    assert explained_variation(np.zeros((12, 16), np.int32), image) == 0.0
    assert math.isnan(explained_variation(np.zeros((4, 4), np.int32), np.full((4, 4, 3), 7)))


def test_compactness_of_squares_and_strips():
    assert compactness(np.zeros((10, 10), np.int32)) == pytest.approx(math.pi / 4)
    # 1 x 10 strips: area 10, perimeter 22 each.
    strips = np.repeat(np.arange(10)[:, None], 10, axis=1)
    assert compactness(strips) == pytest.approx(4 * math.pi * 10 / 22**2)


def test_tolerance_default():
    assert default_tolerance((321, 481)) == 1
    assert default_tolerance((1000, 1500)) == 5


def test_bad_input():
    with pytest.raises(ValueError, match="does not match"):
        superpixel_metrics(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="integer"):
        superpixel_metrics(np.zeros((4, 4)), np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="tolerance"):
        boundary_recall_precision(np.zeros((4, 4), np.int32), np.zeros((4, 4), np.int32), tolerance=-1)


# --- independent slow reference, written from the definitions in docs/metrics.md -------------------------

def _is_boundary(lab, i, j):
    h, w = lab.shape
    return any(0 <= i + di < h and 0 <= j + dj < w and lab[i + di, j + dj] != lab[i, j]
               for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))


def reference_metrics(sp, gt, image, r):
    h, w = sp.shape
    sp_b = np.array([[_is_boundary(sp, i, j) for j in range(w)] for i in range(h)])
    gt_b = np.array([[_is_boundary(gt, i, j) for j in range(w)] for i in range(h)])

    def any_in_window(mask, i, j):
        return mask[max(0, i - r) : min(h - 1, i + r) + 1, max(0, j - r) : min(w - 1, j + r) + 1].any()

    tp = sum(any_in_window(sp_b, i, j) for i, j in zip(*np.nonzero(gt_b)))
    fn = int(gt_b.sum()) - tp
    fp = sum(not any_in_window(gt_b, i, j) for i, j in zip(*np.nonzero(sp_b)))
    overlap: dict[tuple[int, int], int] = {}
    for a, b in zip(sp.ravel().tolist(), gt.ravel().tolist()):
        overlap[(a, b)] = overlap.get((a, b), 0) + 1
    size = {j: int((sp == j).sum()) for j in np.unique(sp).tolist()}
    best = {}
    for (j, _), n in overlap.items():
        best[j] = max(best.get(j, 0), n)
    ue = sum(min(n, size[j] - n) for (j, _), n in overlap.items())
    n_pix = h * w
    img = image.reshape(-1, 3).astype(np.float64)
    mu = img.mean(axis=0)
    top = sum(size[j] * ((img[sp.ravel() == j].mean(axis=0) - mu) ** 2).sum() for j in size)
    bottom = ((img - mu) ** 2).sum()
    perim = {}
    for i in range(h):
        for j in range(w):
            sides = sum(not (0 <= i + di < h and 0 <= j + dj < w) or sp[i + di, j + dj] != sp[i, j]
                        for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)))
            perim[sp[i, j]] = perim.get(sp[i, j], 0) + sides
    co = sum(size[j] * 4 * math.pi * size[j] / perim[j] ** 2 for j in size) / n_pix
    return {"br": tp / (tp + fn), "bp": tp / (tp + fp), "asa": sum(best.values()) / n_pix, "ue": ue / n_pix,
            "ev": top / bottom, "co": co, "k": len(size)}


def test_real_bsds500_image_against_independent_reference():
    image = uhrseg.read_image(BSDS / "images" / "test" / "100007.jpg")
    gts = scipy.io.loadmat(BSDS / "groundTruth" / "test" / "100007.mat")["groundTruth"][0]
    gt = gts[0]["Segmentation"][0, 0].astype(np.int32)
    sp = uhrseg.superpixels(image, 400, method="slic")
    # Crop to keep the pure-Python reference quick; the crop is still a real image and annotation.
    sp, gt, image = sp[:120, :200], gt[:120, :200], image[:120, :200]
    for r in (0, 1, 3):
        ours = superpixel_metrics(sp, gt, image=image, tolerance=r)
        ref = reference_metrics(sp, gt, image, r)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, rel=1e-9), (key, r)
    assert 0.5 < ref["br"] < 1.0 and 0.9 < ref["asa"] < 1.0
