"""``uhrseg segment`` and ``uhrseg evaluate --task semantic``: outputs, and bad inputs (error, exit 2, no files)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import DEEPGLOBE, DRONE
from test_io import BAD_KINDS, make_bad_file
from uhrseg.cli import main
from uhrseg.inference import SemanticPredictor
from uhrseg.io import read_image

FRAME = sorted((DRONE / "test" / "images").glob("*.jpg"))[0]


def run_segment(capsys, *argv):
    code = main(["segment", "-q", "--device", "cpu", *map(str, argv)])
    return code, capsys.readouterr().err


def files_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_outputs_for_a_real_frame(tmp_path, capsys, isdnet_ckpt):
    code, err = run_segment(capsys, FRAME, "--weights", isdnet_ckpt, "--out", tmp_path)
    assert code == 0, err
    stem = FRAME.stem
    assert files_in(tmp_path) == [f"{stem}_classes.png", f"{stem}_overlay.jpg", "summary.json"]
    im = Image.open(tmp_path / f"{stem}_classes.png")
    assert im.mode == "P" and im.size == (1500, 1000)
    assert im.getpalette()[3:6] == [128, 64, 128]  # class 1, paved-area, in the dataset's colour
    classes = np.asarray(im)
    expected = SemanticPredictor("isdnet", weights=isdnet_ckpt, device="cpu").predict(read_image(FRAME))
    np.testing.assert_array_equal(classes, expected)
    overlay = np.asarray(Image.open(tmp_path / f"{stem}_overlay.jpg"))
    assert overlay.shape == (1000, 1500, 3)
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["images"][0]
    assert summary["model"] == "isdnet" and summary["class_names"][1] == "paved-area" and summary["failed"] == []
    assert (entry["width"], entry["height"], entry["mode"]) == (1500, 1000, "whole")
    fractions = entry["class_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-4)
    assert fractions["paved-area"] == pytest.approx((classes == 1).mean(), abs=1e-6)
    assert set(entry["seconds"]) >= {"read", "network", "classes", "write", "total"}
    assert entry["peak_rss_bytes"] > 100 * 2**20


def test_streamed_tiff_gives_a_tiled_palette_bigtiff(tmp_path, capsys, isdnet_ckpt):
    image = read_image(FRAME)
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    out = tmp_path / "out"
    code, err = run_segment(capsys, path, "--weights", isdnet_ckpt, "--out", out, "--stream", "--preview-side", "300")
    assert code == 0, err
    assert files_in(out) == ["frame_classes.tif", "frame_overlay.jpg", "summary.json"]
    with tifffile.TiffFile(out / "frame_classes.tif") as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled and page.photometric == 3  # palette
        assert tuple(page.colormap[:, 9] // 257) == (70, 70, 70)  # roof
        streamed = page.asarray()
    expected = SemanticPredictor("isdnet", weights=isdnet_ckpt, device="cpu").predict(image)
    np.testing.assert_array_equal(streamed, expected)
    assert Image.open(out / "frame_overlay.jpg").size == (300, 200)
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["streamed"] and entry["mode"] == "tiled"


def test_superpixel_refinement_in_memory_and_streamed(tmp_path, capsys, isdnet_ckpt):
    """--refine superpixels writes the superpixels beside the classes; the streamed run (tiled TIFF, maps in
    files) writes the same maps as tiled BigTIFFs; both equal pooling the Python API's probabilities."""
    from uhrseg.semantic import refine_with_superpixels

    image = read_image(FRAME)
    stem = FRAME.stem
    flags = ("--weights", isdnet_ckpt, "--refine", "superpixels", "--n-segments", "2000")
    code, err = run_segment(capsys, FRAME, *flags, "--out", tmp_path / "mem")
    assert code == 0, err
    assert files_in(tmp_path / "mem") == [f"{stem}_classes.png", f"{stem}_overlay.jpg", f"{stem}_superpixels.png",
                                          "summary.json"]
    classes = np.asarray(Image.open(tmp_path / "mem" / f"{stem}_classes.png"))
    labels = np.asarray(Image.open(tmp_path / "mem" / f"{stem}_superpixels.png")).astype(np.int32)
    assert labels.shape == (1000, 1500) and abs(int(labels.max()) + 1 - 2000) < 200
    assert len(np.unique(labels)) == labels.max() + 1  # 0-based, contiguous
    probabilities = SemanticPredictor("isdnet", weights=isdnet_ckpt, device="cpu").run(image).probabilities
    expected = refine_with_superpixels(probabilities, labels, confidence=0.9)
    # The reference pools the float16 probabilities, the command the float32 softmax of the logits. With this
    # untrained network's flat probabilities (top class about 0.05-0.07 of 24) a superpixel whose two best mean
    # probabilities nearly tie can go either way, and then all its pixels do: measured 2 of the 2000 superpixels
    # (876 pixels) with the pcnet.pt of 2026-12-02. A per-pixel error would touch many superpixels, partly.
    differ = classes != expected
    touched = np.unique(labels[differ])
    assert len(touched) <= 3
    for s in touched:
        inside = labels == s
        assert differ[inside].all() and len(np.unique(classes[inside])) == len(np.unique(expected[inside])) == 1
    unrefined = SemanticPredictor("isdnet", weights=isdnet_ckpt, device="cpu").predict(image)
    assert (classes != unrefined).mean() > 0.005  # the refinement moved class boundaries

    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    code, err = run_segment(capsys, path, *flags, "--stream", "--out", tmp_path / "streamed")
    assert code == 0, err
    assert files_in(tmp_path / "streamed") == ["frame_classes.tif", "frame_overlay.jpg", "frame_superpixels.tif",
                                               "summary.json"]
    for name, want in (("frame_classes.tif", classes), ("frame_superpixels.tif", labels)):
        with tifffile.TiffFile(tmp_path / "streamed" / name) as tif:
            assert tif.is_bigtiff and tif.pages[0].is_tiled
            np.testing.assert_array_equal(tif.pages[0].asarray(), want)
    entry = json.loads((tmp_path / "streamed" / "summary.json").read_text())["images"][0]
    assert {"superpixels", "refine"} <= set(entry["seconds"]) and entry["streamed"]

    # classical superpixels need the whole image: refused for a streamed image, nothing written
    code, err = run_segment(capsys, path, *flags[:2], "--refine", "superpixels", "--superpixels", "slic", "--stream",
                            "--out", tmp_path / "slic")
    assert code == 2 and "slic needs the whole image" in err and files_in(tmp_path / "slic") == []


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_image_gives_error_exit_2_and_no_files(tmp_path, capsys, kind, isdnet_ckpt):
    path, message = make_bad_file(tmp_path, kind)
    out = tmp_path / "out"
    code, err = run_segment(capsys, path, "--weights", isdnet_ckpt, "--out", out)
    assert code == 2
    assert f"uhrseg: error: {path}: " in err and message in err
    assert files_in(out) == []


def test_image_smaller_than_the_network_needs(tmp_path, capsys, isdnet_ckpt):
    path = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(path)
    code, err = run_segment(capsys, path, "--weights", isdnet_ckpt, "--out", tmp_path / "out")
    assert code == 2 and f"{path}: the image is 40 x 20 pixels; segmentation needs at least 32 x 32" in err
    assert files_in(tmp_path / "out") == []


def test_wrong_or_missing_weights(tmp_path, capsys, pcnet_random_ckpt):
    code, err = run_segment(capsys, FRAME, "--weights", pcnet_random_ckpt, "--out", tmp_path / "a")
    assert code == 2 and "holds a 'pcnet' model, but 'isdnet' was asked for" in err
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    code, err = run_segment(capsys, FRAME, "--weights", tmp_path / "garbage.pt", "--out", tmp_path / "b")
    assert code == 2 and "not a readable checkpoint" in err
    code, err = run_segment(capsys, FRAME, "--weights", tmp_path / "none.pt", "--out", tmp_path / "c")
    assert code == 2 and "weights file not found" in err
    code, err = run_segment(capsys, FRAME, "--model", "deeppath", "--weights", "drone", "--out", tmp_path / "d")
    assert code == 2 and "drone: no packaged deeppath weights of that name (packaged for deeppath: none)" in err
    # The names listed are the ones --weights accepts for the model, not the file names
    code, err = run_segment(capsys, FRAME, "--weights", "isdnet-drone", "--out", tmp_path / "e")
    assert code == 2 and "(packaged for isdnet: deepglobe, drone)" in err
    code, err = run_segment(capsys, FRAME, "--model", "magnet", "--weights", "nosuch", "--out", tmp_path / "f")
    assert code == 2 and "(packaged for magnet: deepglobe, drone)" in err
    for name in ("a", "b", "c", "d", "e", "f"):
        assert files_in(tmp_path / name) == []


def test_bad_refinement_flags_fail_before_any_worker_starts(tmp_path, capsys):
    """--confidence and --n-segments are checked in the command itself, so a Ray run fails at once (not in each
    worker) and no output folder is made."""
    code, err = run_segment(capsys, FRAME, "--refine", "superpixels", "--confidence", "-1", "--ray",
                            "--out", tmp_path / "a")
    assert code == 2 and "--refine superpixels: confidence must be a number >= 0" in err
    code, err = run_segment(capsys, FRAME, "--refine", "superpixels", "--n-segments", "0", "--out", tmp_path / "b")
    assert code == 2 and "n_segments must be >= 1, got 0" in err
    assert files_in(tmp_path / "a") == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # ignored before (and recorded in summary.json as if used)
    code, err = run_segment(capsys, FRAME, "--refine", "guided", "--n-segments", "5", "--out", tmp_path / "c")
    assert code == 2 and "apply to --refine superpixels, not guided" in err and not (tmp_path / "c").exists()
    code, err = run_segment(capsys, FRAME, "--confidence", "0.5", "--out", tmp_path / "c")  # until 2026-12-08
    assert code == 2 and "--confidence, --oversegmentation" in err and not (tmp_path / "c").exists()
    code, err = run_segment(capsys, FRAME, "--ray-workers", "2", "--out", tmp_path / "d")
    assert code == 2 and "--ray-workers applies only with --ray" in err and not (tmp_path / "d").exists()


def test_outputs_never_overwrite_inputs_and_bad_folders(tmp_path, capsys, isdnet_ckpt):
    image = tmp_path / "x_overlay.jpg"
    Image.fromarray(read_image(FRAME)[:128, :128]).save(image)
    before = image.read_bytes()
    sibling = tmp_path / "x.png"
    sibling.write_bytes(before)
    code, err = run_segment(capsys, sibling, image, "--weights", isdnet_ckpt, "--out", tmp_path)
    assert code == 2 and "would overwrite an input file" in err
    assert image.read_bytes() == before
    (tmp_path / "file").write_text("")
    code, err = run_segment(capsys, FRAME, "--weights", isdnet_ckpt, "--out", tmp_path / "file")
    assert code == 2 and "output path exists and is not a folder" in err


def test_semantic_evaluation_report_and_resume(tmp_path, capsys, mini_drone, isdnet_ckpt):
    argv = ["evaluate", "--task", "semantic", "--dataset", str(mini_drone), "--models",
            f"isd=isdnet:{isdnet_ckpt}", "--out", str(tmp_path), "--examples", "1", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    names = files_in(tmp_path)
    for name in ("per_image.csv", "summary.csv", "per_class.csv", "per_class_iou.png", "examples.png", "report.md"):
        assert name in names
    summary = (tmp_path / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("model,images,miou,pixel_accuracy") and summary[1].startswith("isd,3,")
    # The report's mIoU is the one of the summed confusion matrices of the per-image rows.
    from uhrseg.datasets import open_semantic_dataset
    from uhrseg.evaluation.semantic import read_semantic_rows
    from uhrseg.metrics import mean_iou

    rows = read_semantic_rows(tmp_path / "per_image.csv")
    table = open_semantic_dataset(mini_drone).class_table
    miou = mean_iou(sum(r["confusion"] for r in rows), table.evaluated)
    report = (tmp_path / "report.md").read_text()
    assert f"| isd | 3 | {100 * miou:.2f} |" in report
    # the wall time includes the examples figure (it was left out: minutes for large images)
    took = re.search(r"This invocation took (\d+) s \((\d+) s for the cells, the rest for examples.png\)", report)
    assert took and int(took[1]) >= int(took[2])
    shard = tmp_path / "runs" / "isd.csv"
    before = shard.read_text()
    assert main(argv) == 0  # resumed: nothing recomputed
    assert shard.read_text() == before
    table = (tmp_path / "per_image.csv").read_text()
    shutil.rmtree(tmp_path / "runs")  # a stored report: resumed from per_image.csv, nothing recomputed
    assert main(argv) == 0
    assert (tmp_path / "per_image.csv").read_text() == table
    assert main([*argv, "--redo", "isd"]) == 0  # recomputed: same confusion matrices, new seconds
    redone = read_semantic_rows(tmp_path / "per_image.csv")
    assert [r["confusion"].tolist() for r in redone] == [r["confusion"].tolist() for r in rows]
    assert [r["seconds"] for r in redone] != [r["seconds"] for r in rows]
    assert main([*argv, "--redo", "other"]) == 2
    assert "--redo: other not among the models of this run (isd)" in capsys.readouterr().err
    code = main(["evaluate", "--task", "semantic", "--dataset", str(DRONE.parent / "deepglobe" / "test"),
                 "--models", f"isdnet:{isdnet_ckpt}", "--out", str(tmp_path / "dg"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "weights for 24 classes" in err and "has 7" in err
    assert main(["evaluate", "--task", "semantic", "--dataset", str(mini_drone), "--out", str(tmp_path / "m")]) == 2
    assert "--task semantic needs --models" in capsys.readouterr().err
    assert main(["evaluate", "--task", "semantic", "--dataset", str(mini_drone), "--models", "isdnet:drone",
                 "--examples", "-1", "--out", str(tmp_path / "e")]) == 2
    assert "--examples must be >= 0" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_packaged_drone_weights_on_real_test_frames(mini_drone):
    """The shipped ISDNet labels held-out Semantic Drone frames well above chance (24 classes)."""
    import uhrseg
    from uhrseg.datasets import open_semantic_dataset
    from uhrseg.metrics import SegmentationScores

    data = open_semantic_dataset(mini_drone)
    predictor = uhrseg.SemanticPredictor("isdnet", weights="drone", device="cpu")
    assert predictor.class_names == data.class_table.names
    scores = SegmentationScores(24, data.class_table.evaluated)
    class_maps = [predictor.predict(data.image(name)) for name in data.names]
    for name, classes in zip(data.names, class_maps):
        scores.update(classes, data.class_map(name))
    summary = scores.summary()
    assert summary["pixel_accuracy"] > 0.65  # measured 0.76 on these three frames
    assert summary["iou"][1] > 0.3 and summary["iou"][3] > 0.5  # paved-area, grass
    # the predictor reused after two other frames gives the first frame's class map again, as a fresh one does
    np.testing.assert_array_equal(predictor.predict(data.image(data.names[0])), class_maps[0])
    np.testing.assert_array_equal(uhrseg.segment(data.image(data.names[0]), device="cpu"), class_maps[0])


def test_default_command_uses_the_packaged_drone_weights(tmp_path, capsys):
    code, err = run_segment(capsys, FRAME, "--out", tmp_path)
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["weights"].endswith("isdnet-drone.pt") and len(summary["class_names"]) == 24


def test_packaged_deepglobe_weights_on_a_held_out_satellite_tile(capsys, tmp_path):
    """The shipped DeepGlobe ISDNet labels a held-out 2448 x 2448 test tile (7 classes, unknown ignored)."""
    import uhrseg
    from uhrseg.datasets import open_semantic_dataset
    from uhrseg.metrics import SegmentationScores

    data = open_semantic_dataset(DEEPGLOBE / "test")
    predictor = uhrseg.SemanticPredictor("isdnet", weights="deepglobe", device="cpu")
    assert predictor.class_names == data.class_table.names and len(predictor.class_names) == 7
    name = "10452"  # urban 38 %, rangeland 34 %, agriculture 26 %
    scores = SegmentationScores(7, data.class_table.evaluated)
    scores.update(predictor.predict(data.image(name)), data.class_map(name))
    summary = scores.summary()
    assert summary["pixel_accuracy"] > 0.5  # measured 0.598
    assert summary["iou"][0] > 0.5 and summary["iou"][2] > 0.3  # urban 0.696, rangeland 0.423
