"""Superpixel pooling of class maps and the comparators: banded upsampling equals the whole, pooling by hand,
the confidence gate, real frames, and ``uhrseg refine-classes`` on another tool's class map and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import DRONE
from uhrseg.cli.main import main
from uhrseg.datasets import open_semantic_dataset
from uhrseg.grid.pooling import (
    assign_superpixel_classes,
    superpixel_probability_sums,
    superpixel_votes,
    upsample_rows,
    upsampled_bands,
)
from uhrseg.metrics import SegmentationScores
from uhrseg.semantic import ClassRefinement, ProbabilityRows, infer_stride, refine_classes, refine_with_superpixels
from uhrseg.stores import ArrayStore


@settings(max_examples=50, deadline=None)
@given(lh=st.integers(1, 12), lw=st.integers(1, 12), c=st.integers(1, 4), stride=st.sampled_from([1, 2, 4, 8]),
       seed=st.integers(0, 1000), data=st.data())
def test_banded_and_windowed_upsampling_equal_the_whole(lh, lw, c, stride, seed, data):
    maps = np.random.default_rng(seed).random((lh, lw, c), dtype=np.float32)
    whole = F.interpolate(torch.from_numpy(maps).permute(2, 0, 1)[None], scale_factor=stride, mode="bilinear",
                          align_corners=False)[0]
    height = data.draw(st.integers(max(1, (lh - 1) * stride + 1), lh * stride))
    width = data.draw(st.integers(max(1, (lw - 1) * stride + 1), lw * stride))
    elements = data.draw(st.integers(1, 4000))
    bands = list(upsampled_bands(maps, stride, height, width, band_elements=elements))
    got = torch.cat([b for _, b in bands], dim=1)
    torch.testing.assert_close(got, whole[:, :height, :width])
    y0 = data.draw(st.integers(0, height - 1))
    y1 = data.draw(st.integers(y0 + 1, height))
    torch.testing.assert_close(upsample_rows(maps, stride, y0, y1, width), whole[:, y0:y1, :width])


@settings(max_examples=60, deadline=None)
@given(lh=st.integers(1, 10), lw=st.integers(1, 10), c=st.integers(1, 5), stride=st.sampled_from([1, 2, 3, 4, 8]),
       k=st.integers(1, 30), band_rows=st.integers(1, 40), seed=st.integers(0, 1000), data=st.data())
def test_pooling_kernels_equal_torch_upsampling_and_bincount(lh, lw, c, stride, k, band_rows, seed, data):
    """The compiled kernels interpolate each pixel on the fly; the reference upsamples the whole map with torch."""
    rng = np.random.default_rng(seed)
    maps = rng.random((lh, lw, c), dtype=np.float32)
    maps /= maps.sum(axis=2, keepdims=True)
    height = data.draw(st.integers(max(1, (lh - 1) * stride + 1), lh * stride))
    width = data.draw(st.integers(max(1, (lw - 1) * stride + 1), lw * stride))
    labels = rng.integers(0, k, (height, width)).astype(np.int32)
    up = F.interpolate(torch.from_numpy(maps).permute(2, 0, 1)[None], scale_factor=stride, mode="bilinear",
                       align_corners=False)[0, :, :height, :width].numpy()
    ref = np.stack([np.bincount(labels.ravel(), weights=up[i].ravel(), minlength=k) for i in range(c)]
                   + [np.bincount(labels.ravel(), minlength=k)], axis=1)
    sums = superpixel_probability_sums(labels, maps, k, stride, band_rows=band_rows)
    np.testing.assert_allclose(sums, ref, rtol=1e-5, atol=1e-5)
    lut = rng.integers(0, c, k).astype(np.uint8)
    confidence = data.draw(st.floats(0.2, 1.0))
    out = np.empty((height, width), np.uint8)
    counts = assign_superpixel_classes(labels, lut, ArrayStore(out), probabilities=maps, stride=stride,
                                       confidence=confidence, band_rows=band_rows)
    top, own = up.max(axis=0), up.argmax(axis=0)
    clear = np.abs(top - confidence) > 1e-5  # pixels not at the gate's threshold up to float rounding
    expected = np.where(top >= confidence, own, lut[labels])
    assert np.array_equal(out[clear], expected[clear])
    assert counts.sum() == height * width and counts.tolist() == np.bincount(out.ravel(), minlength=c).tolist()


def test_probability_rows_crop_padding_and_apply_softmax():
    logits = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)  # padded map of a 30 x 41 image
    rows = ProbabilityRows(ArrayStore(logits), 30, 41, 8, softmax=True)
    assert rows.shape == (4, 6, 3)
    expected = torch.softmax(torch.from_numpy(logits[:4, :6]), dim=2).numpy()
    np.testing.assert_allclose(rows.read(0, 4), expected, rtol=1e-6)
    np.testing.assert_allclose(rows.read(2, 9), expected[2:], rtol=1e-6)
    with pytest.raises(ValueError, match="does not cover"):
        ProbabilityRows(ArrayStore(logits), 60, 41, 8, softmax=True)


def test_pooling_by_hand():
    # 2 superpixels (left and right halves of a 4 x 4 image), probabilities at stride 2
    labels = np.array([[0, 0, 1, 1]] * 4, np.int32)
    p = np.zeros((2, 2, 2), np.float32)  # (h, w, C)
    p[:, 0] = (0.8, 0.2)
    p[:, 1] = (0.3, 0.7)
    sums = superpixel_probability_sums(labels, p, 2, 2)
    assert sums[:, 2].tolist() == [8, 8]  # pixels
    up = F.interpolate(torch.from_numpy(p).permute(2, 0, 1)[None], scale_factor=2, mode="bilinear",
                       align_corners=False)[0].numpy()
    np.testing.assert_allclose(sums[0, :2], up[:, :, :2].sum(axis=(1, 2)), rtol=1e-6)
    votes = superpixel_votes(labels, np.array([[0, 1, 1, 255]] * 4), 2, 2)
    assert votes.tolist() == [[4, 4], [0, 4]]  # 255 does not vote
    with pytest.raises(ValueError, match="0..1"):
        superpixel_probability_sums(labels + 1, p, 2, 2)


def test_superpixel_majority_and_confidence_gate():
    labels = np.zeros((8, 8), np.int32)
    labels[:, 4:] = 1
    p = np.zeros((2, 8, 8), np.float32)  # stride 1: class 0 on most of superpixel 0, one confident class-1 pixel
    p[0] = 0.6
    p[1] = 0.4
    p[:, 2, 2] = (0.01, 0.99)
    p[:, :, 4:] = np.array([0.45, 0.55], np.float32)[:, None, None]
    p[:, 5, 6] = (0.7, 0.3)  # an unconfident disagreeing pixel inside superpixel 1
    out = refine_with_superpixels(p, labels, confidence=0.9)
    assert out[2, 2] == 1  # confident: kept
    assert (out[:, :4][np.ones((8, 4), bool) & ~((np.arange(8)[:, None] == 2) & (np.arange(4) == 2))] == 0).all()
    assert (out[:, 4:] == 1).all()  # the unconfident pixel takes its superpixel's class
    assert refine_with_superpixels(p, labels, confidence=1.1)[2, 2] == 0  # no gate
    hard = refine_with_superpixels(p.argmax(0).astype(np.uint8), labels)  # a hard map: majority vote
    assert (hard[:, :4] == 0).all() and (hard[:, 4:] == 1).all()


def test_stride_inference_and_probability_checks():
    assert infer_stride(1000, 1500, 125, 188) == 8
    assert infer_stride(1000, 1500, 250, 375) == 4
    with pytest.raises(ValueError, match="do not fit"):
        infer_stride(1000, 1500, 100, 100)
    labels = np.zeros((16, 16), np.int32)
    bad = np.full((3, 2, 2), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        refine_with_superpixels(bad, labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        refine_with_superpixels(np.full((3, 2, 2), 5.0, np.float32), labels)
    with pytest.raises(ValueError, match="do not match"):
        refine_with_superpixels(np.zeros((4, 4), np.uint8), labels)
    with pytest.raises(ValueError, match="unknown refinement"):
        ClassRefinement("crf")


@pytest.fixture(scope="module")
def drone_frame():
    data = open_semantic_dataset(DRONE / "test")
    name = data.names[0]
    return data.image(name), data.class_map(name), data.class_table


@pytest.fixture(scope="module")
def drone_probabilities(drone_frame):
    from uhrseg.inference import SemanticPredictor

    return SemanticPredictor("isdnet", weights="drone", device="cpu").run(drone_frame[0]).probabilities


def test_refinements_on_a_real_frame(drone_frame, drone_probabilities):
    image, truth, table = drone_frame
    results = {}
    for method in ("none", "bilinear", "guided", "superpixels"):
        classes = refine_classes(drone_probabilities, ClassRefinement(method, n_segments=3000), image=image)
        assert classes.shape == truth.shape and classes.dtype == np.uint8
        scores = SegmentationScores(24, table.evaluated)
        scores.update(classes, truth)
        results[method] = scores.summary()
    # every method stays close to the network's own map in mIoU (none of them invents classes) ...
    for s in results.values():
        assert abs(s["miou"] - results["bilinear"]["miou"]) < 0.05
    # ... and the superpixels put the class boundaries on the image's edges (boundary IoU at r = 1), better than
    # bilinear upsampling and the guided filter
    assert results["superpixels"]["boundary_iou"] > 1.3 * results["bilinear"]["boundary_iou"]
    assert results["superpixels"]["boundary_iou"] > results["guided"]["boundary_iou"]


def test_refine_classes_command_on_another_tools_class_map(tmp_path, drone_frame, capsys):
    """A class map made by scikit-image (SLIC regions coloured by mean grey level, quantised to 5 classes and
    saved as a plain 8-bit PNG) refined by PCNet superpixels."""
    from skimage.segmentation import slic

    image = drone_frame[0]
    img_path = DRONE / "test" / "images" / f"{open_semantic_dataset(DRONE / 'test').names[0]}.jpg"
    regions = slic(image[::4, ::4], n_segments=60, start_label=0)
    grey = image[::4, ::4].mean(axis=2)
    means = np.bincount(regions.ravel(), grey.ravel()) / np.bincount(regions.ravel())
    coarse = np.minimum(4, (means[regions] / 52).astype(np.uint8))
    other = np.kron(coarse, np.ones((4, 4), np.uint8))[: image.shape[0], : image.shape[1]]
    classes_path = tmp_path / "other.png"
    Image.fromarray(other).save(classes_path)
    out = tmp_path / "out"
    assert main(["refine-classes", str(img_path), "--classes", str(classes_path), "--superpixels", "pcnet",
                 "--n-segments", "2000", "--out", str(out)]) == 0
    refined = np.asarray(Image.open(out / f"{img_path.stem}_classes.png"))
    assert refined.shape == other.shape and set(np.unique(refined)) <= set(np.unique(other))
    assert (refined == other).mean() > 0.8  # the majority of each superpixel, mostly the same classes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"] == "class map" and summary["n_superpixels"] > 1500
    assert summary["oversegmentation"] == 1.5  # network superpixels merged by default
    assert summary["merge_texture_weight"] == 0.0  # on colour alone (the bridge's default)
    assert f"refined over {summary['n_superpixels']} superpixels -> {out}" in capsys.readouterr().err
    assert "class_names" not in summary  # a plain PNG of ids has no names
    named = tmp_path / "named"
    assert main(["refine-classes", str(img_path), "--classes", str(classes_path), "--superpixels", "slic",
                 "--palette", "deepglobe", "--out", str(named)]) == 0
    summary = json.loads((named / "summary.json").read_text())
    # classical superpixels: H W / 512 asked for (SLIC makes about as many), never merged
    assert summary["oversegmentation"] == 1.0 and 2000 < summary["n_superpixels"] < 3500
    deepglobe = ["urban_land", "agriculture_land", "rangeland", "forest_land", "water", "barren_land", "unknown"]
    assert summary["class_names"] == deepglobe[: int(other.max()) + 1]  # one name per class id of the map


@pytest.mark.parametrize("case", ["size", "palette", "palette-name", "palette-png", "classes-300", "nan", "stride",
                                  "confidence", "n-segments"])
def test_refine_classes_bad_inputs(tmp_path, capsys, case, drone_frame):
    image = drone_frame[0]
    img_path = DRONE / "test" / "images" / f"{open_semantic_dataset(DRONE / 'test').names[0]}.jpg"
    sp = tmp_path / "sp.png"
    Image.fromarray(np.zeros(image.shape[:2], np.uint16)).save(sp)
    args = ["refine-classes", str(img_path), "--superpixels", str(sp), "--out", str(tmp_path / "out")]
    if case == "size":
        path = tmp_path / "c.png"
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(path)
        want = "class map is 10 x 10"
    elif case == "palette":
        path = tmp_path / "c.png"
        Image.fromarray(np.full(image.shape[:2], 30, np.uint8)).save(path)
        args += ["--palette", "deepglobe"]
        want = "31 classes, but the palette has 7"
    elif case == "palette-name":  # was "nosuch: class table cannot be read (No such file or directory)"
        path = tmp_path / "c.png"
        Image.fromarray(np.zeros(image.shape[:2], np.uint8)).save(path)
        args += ["--palette", "nosuch"]
        want = "nosuch: --palette is neither a packaged palette (drone, deepglobe) nor a file"
    elif case == "classes-300":  # the message did not name the file
        path = tmp_path / "p.npy"
        np.save(path, np.full((300, 125, 188), 1 / 300, np.float32))
        want = "probabilities must be (C, h, w) with 1 <= C <= 255"
    elif case == "palette-png":  # was only "'utf-8' codec can't decode byte 0x89 ..."
        path = tmp_path / "c.png"
        Image.fromarray(np.zeros(image.shape[:2], np.uint8)).save(path)
        args += ["--palette", str(path)]
        want = f"{path}: class table is not a text CSV"
    elif case == "nan":
        path = tmp_path / "p.npy"
        np.save(path, np.full((24, 125, 188), np.nan, np.float32))
        want = "NaN"
    elif case in ("confidence", "n-segments"):  # were accepted: NaN kept no pixel, 0 fell back to H W / 512
        path = tmp_path / "p.npy"
        np.save(path, np.full((24, 125, 188), 1 / 24, np.float32))
        args[3:4] = ["slic"]
        args += ["--confidence", "nan"] if case == "confidence" else ["--n-segments", "0"]
        want = "confidence must be a number >= 0" if case == "confidence" else "n_segments must be >= 1"
    else:
        path = tmp_path / "p.npy"
        np.save(path, np.full((24, 100, 100), 1 / 24, np.float32))
        want = "do not fit"
    assert main(args + ["--classes", str(path)]) == 2
    err = capsys.readouterr().err
    assert want in err and len(err.strip().splitlines()) == 1
    assert str(path) in err or case in ("confidence", "n-segments", "palette-name")  # flag errors name the value
    assert not (tmp_path / "out").exists()


def test_segment_command_with_superpixel_refinement(tmp_path, capsys):
    image = sorted((DRONE / "test" / "images").glob("*.jpg"))[0]
    out = tmp_path / "out"
    assert main(["segment", str(image), "--weights", "drone", "--refine", "superpixels", "--n-segments", "2000",
                 "--device", "cpu", "--out", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["refine"]["method"] == "superpixels" and "refine" in summary["images"][0]["seconds"]
    refined = np.asarray(Image.open(out / f"{image.stem}_classes.png"))
    plain = tmp_path / "plain"
    assert main(["segment", str(image), "--weights", "drone", "--device", "cpu", "--out", str(plain), "-q"]) == 0
    unrefined = np.asarray(Image.open(plain / f"{image.stem}_classes.png"))
    assert 0.9 < (refined == unrefined).mean() < 1.0  # the same classes, moved onto the superpixels' edges
    assert main(["segment", str(image), "--n-segments", "100", "--out", str(tmp_path / "o2")]) == 2
    assert "apply to --refine superpixels" in capsys.readouterr().err


def test_bridge_superpixels_use_their_own_smoothness():
    """Network superpixels made to sharpen a class map are refined at the bridge's lambda (100), below the
    superpixel commands' (150); it can be set, and a negative one is refused."""
    from uhrseg.defaults import DEFAULT_BRIDGE_SMOOTHNESS, DEFAULT_SMOOTHNESS

    assert DEFAULT_BRIDGE_SMOOTHNESS == 100.0 < DEFAULT_SMOOTHNESS
    predictor = ClassRefinement().superpixel_predictor("cpu")
    assert predictor.method == "pcnet" and predictor.refine_smoothness == 100.0
    assert ClassRefinement(smoothness=40.0).superpixel_predictor("cpu").refine_smoothness == 40.0
    with pytest.raises(ValueError, match="smoothness"):
        ClassRefinement(smoothness=-1.0)


def test_bridge_defaults_merge_network_superpixels_only(tmp_path, capsys):
    """The bridge's network superpixels are H W / 1024 merged from 1.5 times as many grid cells (H W / 512 grid
    cells before the seventeenth session); classical ones are H W / 512 and never merged. The grid can be asked
    for, and the merge only for network superpixels, in the API, `segment`, `refine-classes` and evaluation
    specs."""
    from uhrseg.evaluation.semantic import parse_model_specs

    assert ClassRefinement().oversegmentation == 1.5
    assert ClassRefinement().superpixel_predictor("cpu").oversegmentation == 1.5
    assert ClassRefinement().segments_for(1000, 1500) == 1464  # the "n/2 merged" rows of the bridge-merge reports
    assert ClassRefinement(superpixels="scn").segments_for(2448, 2448) == 5852
    assert ClassRefinement(superpixels="slic").oversegmentation == 1.0
    assert ClassRefinement(superpixels="slic").segments_for(1000, 1500) == 2929
    assert ClassRefinement(superpixels="seeds").superpixel_predictor("cpu").oversegmentation == 1.0  # no merge
    assert ClassRefinement(oversegmentation=1).superpixel_predictor("cpu").oversegmentation == 1.0
    assert ClassRefinement(n_segments=700).segments_for(1000, 1500) == 700
    for bad in ({"oversegmentation": 0.5}, {"oversegmentation": float("inf")},
                {"superpixels": "slic", "oversegmentation": 1.5}):
        with pytest.raises(ValueError, match="oversegmentation must be finite and >= 1"):
            ClassRefinement(**bad)
    spec = parse_model_specs("isdnet:drone@refine=superpixels@oversegment=1.5")[0]
    assert ("oversegment", "1.5") in spec.options
    # the superpixels' settings without @refine=superpixels were accepted and ignored until 2026-12-08
    with pytest.raises(ValueError, match="@n=, @oversegment= set the superpixel refinement; add @refine=superpixels"):
        parse_model_specs("isdnet:drone@n=2929@oversegment=1")
    with pytest.raises(ValueError, match=r"@texture= set .* \(not guided\)"):
        parse_model_specs("isdnet:drone@refine=guided@texture=0.75")
    image = str(DRONE / "test" / "images" / sorted(p.name for p in (DRONE / "test" / "images").iterdir())[0])
    assert main(["segment", image, "--oversegmentation", "1.5", "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "--merge-texture-weight apply to --refine superpixels" in capsys.readouterr().err
    assert main(["segment", image, "--refine", "superpixels", "--superpixels", "slic", "--oversegmentation", "1.5",
                 "--out", str(tmp_path / "o"), "-q"]) == 2
    assert "oversegmentation must be finite and >= 1, and 1 for classical superpixels" in capsys.readouterr().err
    assert main(["refine-classes", image, "--classes", image, "--superpixels", "slic", "--oversegmentation", "2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--oversegmentation applies to --superpixels pcnet or scn" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bridge_texture_weight(tmp_path, capsys, drone_frame):
    """The bridge merges its network superpixels on colour alone by default (the texture, the superpixel commands'
    default 0.75, was measured there and gave no consistent gain); a weight can be set in the API, `segment`,
    `refine-classes` and evaluation specs, and changes the superpixels of a real frame; classical superpixels and
    bad weights are refused before any image is read."""
    from uhrseg.defaults import DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT, DEFAULT_MERGE_TEXTURE_WEIGHT
    from uhrseg.evaluation.semantic import parse_model_specs

    assert DEFAULT_BRIDGE_MERGE_TEXTURE_WEIGHT == 0.0 < DEFAULT_MERGE_TEXTURE_WEIGHT
    assert ClassRefinement().merge_texture_weight == ClassRefinement(superpixels="slic").merge_texture_weight == 0.0
    assert ClassRefinement().superpixel_predictor("cpu").merge_texture_weight == 0.0
    image = drone_frame[0]
    n = ClassRefinement().segments_for(*image.shape[:2])
    colour = ClassRefinement().superpixel_predictor("cpu").predict(image, n)
    textured = ClassRefinement(merge_texture_weight=0.75).superpixel_predictor("cpu").predict(image, n)
    assert colour.max() + 1 == textured.max() + 1 == n  # the merge still ends at exactly n

    def edges(labels):  # pixels whose right or lower neighbour is in another superpixel (ids may be renumbered)
        e = np.zeros(labels.shape, bool)
        e[:, :-1] |= labels[:, 1:] != labels[:, :-1]
        e[:-1] |= labels[1:] != labels[:-1]
        return e

    moved = (edges(colour) != edges(textured)).sum() / edges(colour).sum()
    assert 0.01 < moved < 0.5  # the same grid, some other merges
    for bad in ({"merge_texture_weight": -1.0}, {"merge_texture_weight": float("nan")},
                {"superpixels": "slic", "merge_texture_weight": 0.75}):
        with pytest.raises(ValueError, match="merge_texture_weight must be finite and >= 0"):
            ClassRefinement(**bad)
    assert ClassRefinement(superpixels="slic", merge_texture_weight=0).superpixel_predictor("cpu").method == "slic"
    spec = parse_model_specs("isdnet:drone@refine=superpixels@texture=0.75")[0]
    assert ("texture", "0.75") in spec.options
    with pytest.raises(ValueError, match="not a valid value"):
        parse_model_specs("isdnet:drone@refine=superpixels@texture=x")
    path = str(DRONE / "test" / "images" / sorted(p.name for p in (DRONE / "test" / "images").iterdir())[0])
    out = tmp_path / "o"
    assert main(["segment", path, "--merge-texture-weight", "0.75", "--out", str(out), "-q"]) == 2
    assert "--merge-texture-weight apply to --refine superpixels" in capsys.readouterr().err
    assert main(["segment", path, "--refine", "guided", "--merge-texture-weight", "0.75", "--out", str(out),
                 "-q"]) == 2
    assert "apply to --refine superpixels, not guided" in capsys.readouterr().err
    assert main(["segment", path, "--refine", "superpixels", "--merge-texture-weight", "-1", "--out", str(out),
                 "-q"]) == 2
    assert "merge_texture_weight must be finite and >= 0" in capsys.readouterr().err
    assert main(["refine-classes", path, "--classes", path, "--superpixels", "seeds", "--merge-texture-weight",
                 "0.75", "--out", str(out)]) == 2
    assert "--merge-texture-weight applies to --superpixels pcnet or scn" in capsys.readouterr().err
    assert not out.exists()
