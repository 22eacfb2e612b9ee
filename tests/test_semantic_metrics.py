"""Semantic datasets (Semantic Drone, DeepGlobe, class tables) and metrics, on real data and hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import DEEPGLOBE, DRONE
from uhrseg.datasets import (
    DEEPGLOBE_CLASSES,
    IGNORE_INDEX,
    ClassTable,
    ColourTableFolder,
    DatasetError,
    DeepGlobe,
    open_semantic_dataset,
    read_class_table,
)
from uhrseg.metrics import (
    SegmentationScores,
    boundary_iou_counts,
    boundary_region,
    confusion_matrix,
    frequency_weighted_iou,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

# -- datasets ----------------------------------------------------------------------------------------------


def test_semantic_drone_layout_and_classes():
    test = open_semantic_dataset(DRONE / "test")
    assert isinstance(test, ColourTableFolder) and len(test) == 50
    table = test.class_table
    assert table.n_classes == 24 and table.names[:3] == ("unlabeled", "paved-area", "dirt")
    assert table.colours[1] == (128, 64, 128) and table.ignored == (0,)
    assert table.evaluated == tuple(range(1, 24))
    name = test.names[0]
    classes = test.class_map(name)
    assert classes.shape == (1000, 1500) and classes.dtype == np.uint8
    values = set(np.unique(classes).tolist())
    assert values <= set(range(1, 24)) | {IGNORE_INDEX}
    # The decoding agrees with the colour table pixel by pixel (unlabeled -> ignore).
    rgb = np.asarray(Image.open(test.label_path(name)).convert("RGB"))
    for c in (1, 3):
        mask = (rgb == np.array(table.colours[c], np.uint8)).all(axis=2)
        assert np.array_equal(mask, classes == c)
    assert np.array_equal((rgb == 0).all(axis=2), classes == IGNORE_INDEX)


def test_deepglobe_layout_and_unknown_is_ignored():
    train = open_semantic_dataset(DEEPGLOBE / "train")
    assert isinstance(train, DeepGlobe) and len(train) == 8 and len(DeepGlobe(DEEPGLOBE / "test")) == 2
    assert train.class_table == DEEPGLOBE_CLASSES and DEEPGLOBE_CLASSES.ignored == (6,)
    classes = train.class_map("2774")  # urban 78.8 %, barren 17.5 %, some unknown (SOURCE.md)
    assert classes.shape == (2448, 2448)
    shares = np.bincount(classes.ravel(), minlength=256) / classes.size
    assert shares[0] == pytest.approx(0.788, abs=0.01) and shares[5] == pytest.approx(0.175, abs=0.01)
    assert 0 < shares[IGNORE_INDEX] < 0.001 and shares[6] == 0


def test_label_colour_outside_the_table_is_a_clear_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "class_dict.csv").write_text("name, r, g, b\nsky, 0, 0, 255\nground, 0, 255, 0\n")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    label = np.zeros((8, 8, 3), np.uint8)
    label[:, :, 2] = 255
    label[5, 3] = (9, 9, 9)
    Image.fromarray(label).save(tmp_path / "labels" / "a.png")
    data = open_semantic_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"a.png: colour \(9, 9, 9\) at pixel \(3, 5\) is not in the colour table"):
        data.class_map("a")


def test_index_label_maps_and_their_errors(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "class_dict.csv").write_text("name, r, g, b\nvoid, 0, 0, 0\nroad, 9, 9, 9\ncar, 1, 2, 3\n")
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(np.array([[0, 1, 2, 255, 1, 1, 2]] * 6, np.uint8), mode="L").save(tmp_path / "labels" / "a.png")
    data = open_semantic_dataset(tmp_path)
    assert data.class_table.ignored == (0,)  # "void"
    np.testing.assert_array_equal(data.class_map("a")[0], [255, 1, 2, 255, 1, 1, 2])
    Image.fromarray(np.full((6, 7), 7, np.uint8), mode="L").save(tmp_path / "labels" / "a.png")
    with pytest.raises(DatasetError, match="class id 7 at pixel"):
        data.class_map("a")
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="L").save(tmp_path / "labels" / "a.png")
    with pytest.raises(DatasetError, match="label map is 7 x 5, its image a.jpg is 7 x 6"):
        data.class_map("a")


def test_dataset_and_class_table_errors(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        open_semantic_dataset(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a labelled dataset"):
        open_semantic_dataset(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DatasetError, match="no label map for image a.png"):
        open_semantic_dataset(tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(DatasetError, match="no class_dict.csv"):
        open_semantic_dataset(tmp_path)
    (tmp_path / "class_dict.csv").write_text("name, r, g, b\nsky, 0, 0, 255\nsea, 0, 0, 255\n")
    with pytest.raises(DatasetError, match="two classes share a colour"):
        read_class_table(tmp_path / "class_dict.csv")
    (tmp_path / "class_dict.csv").write_text("name, r, g, b\nsky, 0, 0\n")
    with pytest.raises(DatasetError, match=r"class_dict.csv:2: expected 'name, r, g, b'"):
        read_class_table(tmp_path / "class_dict.csv")
    (tmp_path / "masks").mkdir()
    with pytest.raises(DatasetError, match="no ID_sat.jpg images"):
        open_semantic_dataset(tmp_path)
    with pytest.raises(ValueError, match="at most 255 classes"):
        ClassTable(tuple(map(str, range(256))), tuple((i, 0, 0) for i in range(256)))


def test_class_table_round_trip_and_palette():
    table = read_class_table(DRONE / "class_dict.csv")
    assert ClassTable.from_dict(table.to_dict()) == table
    palette = table.palette()
    assert palette.shape == (256, 3) and tuple(palette[9]) == (70, 70, 70) and not palette[IGNORE_INDEX].any()


# -- metrics ------------------------------------------------------------------------------------------------


def test_confusion_matrix_and_scores_by_hand():
    target = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 1, 2],
                     [2, 0, 2, 0]])
    m = confusion_matrix(pred, target, 3)
    np.testing.assert_array_equal(m, [[3, 1, 0],
                                      [0, 3, 1],
                                      [1, 0, 1]])
    # IoU: class 0: 3 / (4 + 4 - 3) = 0.6; class 1: 3 / (4 + 4 - 3) = 0.6; class 2: 1 / (2 + 2 - 1) = 1/3.
    np.testing.assert_allclose(iou_per_class(m), [0.6, 0.6, 1 / 3])
    assert mean_iou(m) == pytest.approx((0.6 + 0.6 + 1 / 3) / 3)
    assert mean_iou(m, classes=(1, 2)) == pytest.approx((0.6 + 1 / 3) / 2)
    assert pixel_accuracy(m) == pytest.approx(7 / 10)
    assert frequency_weighted_iou(m) == pytest.approx(0.4 * 0.6 + 0.4 * 0.6 + 0.2 / 3)


def test_mean_iou_skips_classes_absent_from_both():
    m = confusion_matrix(np.array([[0, 0], [2, 2]]), np.array([[0, 0], [2, 2]]), 4)
    assert np.isnan(iou_per_class(m)[[1, 3]]).all()
    assert mean_iou(m) == 1.0
    # A class only predicted counts (IoU 0): it occurs in the prediction.
    m = confusion_matrix(np.array([[0, 1], [2, 2]]), np.array([[0, 0], [2, 2]]), 4)
    assert mean_iou(m) == pytest.approx((0.5 + 0 + 1) / 3)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="same"):
        confusion_matrix(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8), 2)
    with pytest.raises(ValueError, match="prediction holds class 5"):
        confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="ground truth holds class 4"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 4), 3)


def test_boundary_region_by_hand():
    labels = np.zeros((7, 9), np.uint8)
    labels[:, 5:] = 1
    band0 = boundary_region(labels, 0)
    assert band0[:, 4].all() and band0[:, 5].all() and band0.sum() == 14
    band2 = boundary_region(labels, 2)
    assert band2[:, 2:8].all() and not band2[:, :2].any() and not band2[:, 8:].any()
    assert not boundary_region(np.zeros((5, 5), np.uint8), 3).any()  # the image border is not a boundary


def test_boundary_iou_counts_by_hand():
    target = np.zeros((10, 10), np.uint8)
    target[:, 5:] = 1
    pred = np.zeros((10, 10), np.uint8)
    pred[:, 6:] = 1  # the boundary one column off
    inter, union = boundary_iou_counts(pred, target, 2, tolerance=1)
    # G_0 = columns 3-4, P_0 = columns 4-5 (in class 0): inter column 4 (10), union columns 3-5 (30).
    # G_1 = columns 5-6, P_1 = columns 6-7: inter column 6, union columns 5-7.
    np.testing.assert_array_equal(inter, [10, 10])
    np.testing.assert_array_equal(union, [30, 30])
    inter, union = boundary_iou_counts(target, target, 2, tolerance=1)
    np.testing.assert_array_equal(inter, union)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 6), st.integers(0, 10**6))
def test_scores_accumulated_per_image_equal_one_big_image(n_images, n_classes, seed):
    """Summing per-image counts gives the metrics of all images side by side (no image kept in memory)."""
    rng = np.random.default_rng(seed)
    preds = [rng.integers(0, n_classes, size=(12, 9)) for _ in range(n_images)]
    targets = [np.where(rng.random((12, 9)) < 0.1, 255, rng.integers(0, n_classes, size=(12, 9)))
               for _ in range(n_images)]
    # Each image's first and last tolerance + 1 columns are unlabelled, so that the boundary bands the gaps
    # between images add (the edge of an image is no boundary on its own) fall only on pixels that do not count
    for t in targets:
        t[:, :2] = t[:, -2:] = 255
    running = SegmentationScores(n_classes, tolerance=1)
    for p, t in zip(preds, targets):
        running.update(p, t)
    # Side by side with a column of ignored pixels between images, so that no boundary crosses images.
    gap_t = np.full((12, 3), 255)
    gap_p = np.zeros((12, 3), int)
    big_p = np.concatenate(sum(([p, gap_p] for p in preds), [])[:-1], axis=1)
    big_t = np.concatenate(sum(([t, gap_t] for t in targets), [])[:-1], axis=1)
    np.testing.assert_array_equal(running.matrix, confusion_matrix(big_p, big_t, n_classes))
    a = running.summary()
    whole = SegmentationScores(n_classes, tolerance=1)
    whole.update(big_p, big_t)
    np.testing.assert_array_equal(running.boundary_intersection, whole.boundary_intersection)
    np.testing.assert_array_equal(running.boundary_union, whole.boundary_union)
    assert a["boundary_iou"] == pytest.approx(whole.summary()["boundary_iou"], nan_ok=True)
    assert a["miou"] == pytest.approx(whole.summary()["miou"], nan_ok=True)
    assert a["pixel_accuracy"] == pytest.approx(whole.summary()["pixel_accuracy"], nan_ok=True)
    assert running.images == n_images and a["pixels"] == int((big_t != 255).sum())
