"""Dataset readers on the real BSDS500 and Semantic Drone data, and label maps from other tools."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import BSDS, SHARED
from uhrseg.datasets import BSDS500, DatasetError, LabelledFolder, open_dataset, read_label_map

DRONE = SHARED / "datasets" / "semantic-drone"


def test_bsds500_official_layout():
    test = BSDS500(BSDS, "test")
    assert len(test) == 200 and len(BSDS500(BSDS, "train")) == 200 and len(BSDS500(BSDS, "val")) == 100
    image = test.image("100007")
    gts = test.ground_truths("100007")
    assert len(gts) == 5
    for gt in gts:
        assert gt.shape == image.shape[:2] and gt.dtype == np.int32 and gt.min() >= 1


def test_bsds500_errors(tmp_path):
    with pytest.raises(DatasetError, match="unknown BSDS500 split"):
        BSDS500(BSDS, "dev")
    with pytest.raises(DatasetError, match="BSDS500 folder not found"):
        BSDS500(tmp_path, "test")
    (tmp_path / "images/test").mkdir(parents=True)
    (tmp_path / "groundTruth/test").mkdir(parents=True)
    (tmp_path / "images/test/100007.jpg").symlink_to(BSDS / "images/test/100007.jpg")
    with pytest.raises(DatasetError, match=r"100007.mat: ground truth missing"):
        BSDS500(tmp_path, "test")
    (tmp_path / "groundTruth/test/100007.mat").write_bytes(b"not matlab")
    with pytest.raises(DatasetError, match="not a BSDS500 ground-truth file"):
        BSDS500(tmp_path, "test").ground_truths("100007")


def test_semantic_drone_colour_coded_labels():
    data = LabelledFolder(DRONE / "test")
    assert len(data) == 50 and data.colour_table is not None and len(data.colour_table) == 24
    name = data.names[0]
    gt = data.ground_truths(name)[0]
    assert gt.shape == (1000, 1500) and gt.dtype == np.int32
    assert 0 <= gt.min() and gt.max() < 24 and np.unique(gt).size > 3
    assert data.image(name).shape == (1000, 1500, 3)


def test_labelled_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="folder not found"):
        LabelledFolder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    with pytest.raises(DatasetError, match="no label map for image a.png"):
        LabelledFolder(tmp_path)
    (tmp_path / "class_dict.csv").write_text("name, r, g, b\nsky, 0, 0, 255\n")
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(tmp_path / "labels" / "a.png")
    with pytest.raises(DatasetError, match=r"colour \(9, 9, 9\) at pixel \(0, 0\) is not in the colour table"):
        LabelledFolder(tmp_path).ground_truths("a")


def test_label_maps_from_other_tools(tmp_path):
    labels = np.arange(6 * 70000, dtype=np.int32).reshape(6, 70000) % 70000
    np.save(tmp_path / "a.npy", labels)
    tifffile.imwrite(tmp_path / "a.tif", labels)
    np.savetxt(tmp_path / "a.csv", labels[:, :50], fmt="%d", delimiter=",")
    Image.fromarray(labels[:, :50].astype(np.uint16)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.npy"), labels)
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.tif"), labels)
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.csv"), labels[:, :50])
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.png"), labels[:, :50])
    with pytest.raises(DatasetError, match="label map not found"):
        read_label_map(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="unsupported label map type"):
        read_label_map(tmp_path / "c.jpg")
    np.save(tmp_path / "f.npy", np.full((3, 3), 0.5))
    with pytest.raises(DatasetError, match="non-integer"):
        read_label_map(tmp_path / "f.npy")
    # values outside int32 wrapped around (2**32 + 2 became 2), and a float inf became one huge label
    for name, arr in (("big", np.full((3, 3), 2**32 + 2, np.int64)), ("neg", np.full((3, 3), -2**31 - 1, np.int64)),
                      ("bigf", np.full((3, 3), 2.0**40))):
        np.save(tmp_path / f"{name}.npy", arr)
        with pytest.raises(DatasetError, match=f"{name}.npy: label values .* do not fit in int32"):
            read_label_map(tmp_path / f"{name}.npy")
    np.save(tmp_path / "inf.npy", np.full((3, 3), np.inf))
    with pytest.raises(DatasetError, match="non-integer"):
        read_label_map(tmp_path / "inf.npy")
    np.save(tmp_path / "ok.npy", np.full((3, 3), 2**31 - 1, np.int64))  # the largest that fits
    assert read_label_map(tmp_path / "ok.npy").max() == 2**31 - 1


def test_open_dataset_specs(tmp_path):
    assert open_dataset("bsds500:val", BSDS).split == "val"
    assert len(open_dataset(str(DRONE / "train"))) == 100
    with pytest.raises(DatasetError, match="not a dataset"):
        open_dataset(str(tmp_path / "nothing"))


def test_deepglobe_split_as_superpixel_ground_truth():
    """A DeepGlobe split opens for the superpixel metrics; its class map is the one ground truth."""
    data = open_dataset(str(SHARED / "datasets" / "deepglobe" / "test"))
    assert data.names == ["10452", "794214"]
    (gt,) = data.ground_truths("794214")
    assert gt.dtype == np.int32 and gt.shape == data.image("794214").shape[:2] == (2448, 2448)
    # SOURCE.md: 794214 is water 55.2 %, barren 33.2 %, forest 11.7 % (ids 4, 5, 3)
    ids, counts = np.unique(gt, return_counts=True)
    assert ids.tolist() == [3, 4, 5]
    assert counts[1] / gt.size == pytest.approx(0.552, abs=0.001)
