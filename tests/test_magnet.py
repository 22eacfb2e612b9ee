"""MagNet: crop grids, upsampling of the running map, point selection, the multi-scale loop on a real frame
(memory == files, MagNet-Fast's crop choice), the refinement module's checkpoints, training and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DRONE, tiny_segmenter
from uhrseg.cli.main import main
from uhrseg.datasets import IGNORE_INDEX, open_semantic_dataset
from uhrseg.errors import CheckpointError
from uhrseg.evaluation.semantic import parse_model_specs
from uhrseg.inference import SemanticPredictor
from uhrseg.inference.magnet import (
    MagNetSettings,
    _resample,
    magnet_scales,
    patch_grid,
    point_scores,
    uncertainty,
)
from uhrseg.io import ArraySource, read_image
from uhrseg.models import MagNet, RefinementConfig, RefinementModule, export_weights, load_model, save_checkpoint
from uhrseg.stores import ArrayStore, FileStore
from uhrseg.training.magnet_trainer import MagNetTrainConfig, train_magnet


@pytest.fixture(scope="module")
def frame():
    """A real Semantic Drone test frame, 1500 x 1000."""
    return read_image(sorted((DRONE / "test" / "images").glob("*.jpg"))[0])


@pytest.fixture(scope="module")
def magnet():
    """A MagNet over a small untrained ISDNet, its refinement module seeded (BatchNorm statistics made
    non-trivial so that the module's output differs from its inputs)."""
    torch.manual_seed(0)
    net = MagNet(tiny_segmenter("isdnet", narrow=False))
    return net.eval()


@pytest.fixture(scope="module")
def magnet_ckpt(tmp_path_factory, magnet):
    return save_checkpoint(tmp_path_factory.mktemp("magnet") / "magnet-tiny.pt", magnet, training={"note": "test"})


# -- geometry ----------------------------------------------------------------------------------------------
def test_scales_and_defaults():
    assert magnet_scales(1) == (1.0,)
    assert magnet_scales(4) == (0.125, 0.25, 0.5, 1.0)
    fast = MagNetSettings.for_model("magnet-fast", 3)
    assert fast.scales == (0.25, 1.0) and fast.fast and fast.fast_patches == 3 and fast.fast_points == 0.9
    with pytest.raises(ValueError, match="increasing"):
        MagNetSettings(scales=(1.0, 0.5))
    with pytest.raises(ValueError, match="selection"):
        MagNetSettings(selection="random")
    with pytest.raises(ValueError, match="at least 1 scale"):
        magnet_scales(0)


def test_paper_grid_for_deepglobe():
    """DeepGlobe, 3 scales: 612-pixel crops give 1, 4 and 16 crops (``../shared/docs/uhr-semantic.md``)."""
    counts = [len(patch_grid(2448, 2448, f, (612, 612), 4, 2).crops()) for f in (0.25, 0.5, 1.0)]
    assert counts == [1, 4, 16]
    g = patch_grid(2448, 2448, 1.0, (612, 612), 4, 2)
    assert g.shape == (612, 612) and g.patch == (153, 153)
    assert g.ys == (0, 153, 306, 459)  # side = 4 crops exactly: no overlap, so no border is dropped
    assert g.keep_y[1] == (0, 153)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(8, 3000), w=st.integers(8, 3000), f=st.sampled_from([0.125, 0.25, 0.5, 1.0]),
       ph=st.integers(4, 800), pw=st.integers(4, 800), border=st.integers(0, 6))
def test_every_map_pixel_is_pasted_by_some_crop(h, w, f, ph, pw, border):
    g = patch_grid(h, w, f, (ph, pw), 4, border)
    cy, cx = g.counts()
    assert cy.min() >= 1 and cx.min() >= 1
    for o in g.ys:
        assert 0 <= o and o + g.patch[0] <= g.shape[0]
    for o in g.xs:
        assert 0 <= o and o + g.patch[1] <= g.shape[1]
    assert g.ys[-1] + g.patch[0] == g.shape[0] and g.xs[-1] + g.patch[1] == g.shape[1]


@settings(max_examples=40, deadline=None)
@given(hp=st.integers(1, 30), wp=st.integers(1, 30), c=st.integers(1, 4), seed=st.integers(0, 1000),
       data=st.data())
def test_window_upsampling_equals_whole_map_upsampling(hp, wp, c, seed, data):
    """Upsampling the previous scale's map by 2 and cropping equals reading only the window it needs."""
    prev = np.random.default_rng(seed).random((hp, wp, c), dtype=np.float32)
    whole = F.interpolate(torch.from_numpy(prev).permute(2, 0, 1)[None], scale_factor=2, mode="bilinear",
                          align_corners=False)[0]
    h = data.draw(st.integers(1, 2 * hp))
    w = data.draw(st.integers(1, 2 * wp))
    y = data.draw(st.integers(0, 2 * hp - h))
    x = data.draw(st.integers(0, 2 * wp - w))
    got = _resample(ArrayStore(prev), (hp, wp), 0.5, y, x, h, w, torch.device("cpu"))
    torch.testing.assert_close(got, whole[:, y : y + h, x : x + w], rtol=1e-5, atol=1e-6)


def test_uncertainty_and_point_scores_by_hand():
    p = torch.tensor([0.6, 0.3, 0.1]).view(3, 1, 1).expand(3, 2, 2)
    torch.testing.assert_close(uncertainty(p), torch.full((2, 2), 0.7))
    def two_class(p0):  # (2, 2, 2) probabilities with class 0 at p0
        p0 = torch.tensor(p0)
        return torch.stack([p0, 1 - p0])

    running = two_class([[0.5, 0.5], [0.9, 0.9]])  # Y_u = [[1, 1], [0.2, 0.2]]
    refined = two_class([[1.0, 0.5], [1.0, 0.5]])  # 1 - R_u = [[1, 0], [1, 0]]
    np.testing.assert_allclose(point_scores(running, refined, 1, "both"), [[1, 0], [0.2, 0]], atol=1e-6)
    np.testing.assert_allclose(point_scores(running, refined, 1, "running"), [[1, 1], [0.2, 0.2]], atol=1e-6)
    np.testing.assert_allclose(point_scores(running, refined, 1, "refined"), [[1, 0], [1, 0]], atol=1e-6)
    # F, the median blur, removes an isolated peak
    peak = torch.zeros(2, 5, 5)
    peak[0] = 0.5
    peak[1] = 0.5
    confident = torch.zeros(2, 5, 5)
    confident[0] = 1.0
    confident[0, 2, 2] = 0.5  # the one unconfident refined pixel
    confident[1] = 1 - confident[0]
    assert point_scores(peak, confident, 1, "refined")[2, 2] == 0
    assert point_scores(peak, confident, 3, "refined")[2, 2] == 1


# -- the loop on a real frame ----------------------------------------------------------------------------
def test_magnet_on_a_real_frame(frame, magnet):
    result = SemanticPredictor(magnet, device="cpu").run(frame)
    assert result.mode == "magnet" and result.output_stride == 4
    assert result.classes.shape == (1000, 1500) and result.classes.dtype == np.uint8
    assert result.probabilities.shape == (24, 250, 375)
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=0.02)
    assert set(result.timings) == {"stage 0 (0.25)", "stage 1 (0.5)", "stage 2 (1)", "classes"}


def test_packaged_magnet_on_a_real_frame():
    """The packaged MagNet (drone weights, 3 scales) on a real Semantic Drone test frame: its class map is right
    where a user would check it (pixel accuracy measured 0.9385; the packaged ISDNet alone 0.9401), and it is the
    argmax of the probabilities it returns (at each 4 x 4 cell's centre, where the upsampling is nearly the
    cell's own value: measured 99.998 %)."""
    data = open_semantic_dataset(DRONE / "test")
    name = data.names[0]
    truth = data.class_map(name)
    result = SemanticPredictor("magnet", weights="drone", device="cpu").run(data.image(name))
    valid = truth != IGNORE_INDEX
    assert (result.classes[valid] == truth[valid]).mean() > 0.9
    centre = result.classes[1::4, 1::4]
    assert (centre == result.probabilities.argmax(0)[: centre.shape[0], : centre.shape[1]]).mean() > 0.999


def test_one_scale_is_the_backbone_on_the_coarse_image(frame, magnet):
    """With one scale that fits one crop, MagNet is its backbone on the image resized to the network input."""
    settings_ = MagNetSettings(scales=(0.25,))
    result = SemanticPredictor(magnet, device="cpu", magnet=settings_).run(frame)
    assert result.output_stride == 16
    import cv2

    # the 1/4 map grid is 63 x 94 cells of 4 scale pixels, i.e. 1008 x 1504 image pixels (edges repeated); the
    # network input is that crop (252 x 376) rounded up to a multiple of 32
    padded = np.pad(frame, ((0, 8), (0, 4), (0, 0)), mode="edge")
    small = cv2.resize(padded, (384, 256), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        logits = F.interpolate(magnet.backbone(x).logits, size=(63, 94), mode="bilinear", align_corners=False)
    want = torch.softmax(logits, 1)[0].numpy()
    np.testing.assert_allclose(result.probabilities.astype(np.float32), want, atol=2e-3)


def test_running_maps_in_files_equal_memory(frame, magnet, tmp_path):
    predictor = SemanticPredictor(magnet, device="cpu")
    mem = predictor.run(frame)
    classes = FileStore(tmp_path / "classes.u8", frame.shape[:2], np.uint8)
    info = predictor.run_source(ArraySource(frame), classes, work_dir=tmp_path)
    np.testing.assert_array_equal(classes.read(0, 1000), mem.classes)
    assert info.class_counts.sum() == 1500 * 1000
    classes.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # every intermediate file removed


def test_refined_points_and_magnet_fast_refines_the_most_uncertain_crops(frame, magnet):
    classes, stages = SemanticPredictor(magnet, device="cpu").magnet_trace(frame)
    assert [f for f, _, _ in stages] == [0.25, 0.5, 1.0]
    assert not stages[0][2].any()  # stage 0 replaces nothing
    share = stages[2][2].mean()
    assert 0.6 < share <= 0.76  # 75 % of every crop, the inner borders of overlaps not counted twice

    fast = SemanticPredictor(magnet, device="cpu", magnet=MagNetSettings.for_model("magnet-fast", 3))
    _, fstages = fast.magnet_trace(frame)
    assert [f for f, _, _ in fstages] == [0.25, 1.0]
    g = patch_grid(1000, 1500, 1.0, (252, 376), 4, 2)  # the default crop: the 1/4 frame, 250 x 375 -> 252 x 376
    mask = fstages[1][2]
    touched = [i for i, (y, x) in enumerate(g.crops()) if mask[y : y + g.patch[0], x : x + g.patch[1]].any()]
    assert 1 <= len(touched) <= 3 + 4  # 3 crops refined (neighbours see only their shared overlap)
    assert 0.05 < mask.mean() < 3 * 0.9 / 16 + 0.02


def test_predictor_errors_for_magnet(magnet, magnet_ckpt, frame):
    with pytest.raises(ValueError, match="multi-scale"):
        SemanticPredictor(magnet, device="cpu", mode="tiled")
    with pytest.raises(ValueError, match="needs a MagNet"):
        SemanticPredictor(tiny_segmenter("isdnet"), device="cpu", mode="magnet")
    # the same modes given to run_source for one image are refused the same way, before any work (they
    # failed with an AttributeError deep in the run, or ran sliding windows over a 1/4-resolution network)
    source, store = ArraySource(frame), ArrayStore(np.zeros(frame.shape[:2], np.uint8))
    for predictor, mode, why in ((SemanticPredictor(magnet, device="cpu"), "tiled", "magnet runs in its own multi"),
                                 (SemanticPredictor(tiny_segmenter("isdnet"), device="cpu"), "magnet",
                                  "mode 'magnet' needs a MagNet model, not isdnet"),
                                 (SemanticPredictor(tiny_segmenter("isdnet"), device="cpu"), "slide",
                                  "sliding windows are for networks trained at full resolution; this isdnet")):
        with pytest.raises(ValueError, match=why):
            predictor.run_source(source, store, mode=mode)
    with pytest.raises(CheckpointError, match="'magnet' model, but 'isdnet'"):
        SemanticPredictor("isdnet", weights=magnet_ckpt, device="cpu")


# -- the module and its checkpoints -------------------------------------------------------------------------
def test_refinement_module_shapes_and_checks():
    m = RefinementModule(RefinementConfig(5)).eval()
    p = torch.softmax(torch.randn(2, 5, 12, 9), 1)
    assert m(p, p).shape == (2, 5, 12, 9)
    with pytest.raises(ValueError, match=r"\(B, 5, h, w\)"):
        m(p, p[:, :4])
    assert sum(x.numel() for x in m.parameters()) < 200_000
    with pytest.raises(ValueError, match="classes"):
        MagNet(tiny_segmenter("isdnet"), RefinementModule(RefinementConfig(5)))


def test_checkpoint_round_trip(frame, magnet, magnet_ckpt, tmp_path):
    loaded = load_model(magnet_ckpt, expected="magnet")
    assert isinstance(loaded, MagNet) and loaded.class_names == magnet.class_names
    a = SemanticPredictor(magnet, device="cpu").run(frame[:400, :600]).classes
    b = SemanticPredictor("magnet", weights=magnet_ckpt, device="cpu").run(frame[:400, :600]).classes
    np.testing.assert_array_equal(a, b)
    slim = export_weights(magnet_ckpt, tmp_path / "slim.pt")
    assert load_model(slim).backbone.name == "isdnet"


# -- training ----------------------------------------------------------------------------------------------
def test_killed_refinement_run_resumes_to_the_same_weights(mini_drone, isdnet_ckpt, tmp_path):
    cfg = MagNetTrainConfig(backbone=str(isdnet_ckpt), data=[str(mini_drone)], val=str(mini_drone), val_images=1,
                            iterations=4, batch_size=2, checkpoint_every=2, val_every=2, log_every=1,
                            device="cpu", warmup=1)
    train_magnet(cfg, tmp_path / "whole", progress=False)
    train_magnet(cfg, tmp_path / "split", progress=False, stop_after=2)
    train_magnet(cfg, tmp_path / "split", progress=False)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=1e-6)
    backbone = torch.load(isdnet_ckpt, weights_only=True)["state_dict"]
    for key, value in backbone.items():  # the backbone stayed frozen
        torch.testing.assert_close(a["state_dict"][f"backbone.{key}"], value)
    best = load_model(tmp_path / "split" / "best.pt", expected="magnet")
    assert 0.0 <= best.training_record["validation"]["val_miou"] <= 1.0
    assert best.training_record["patch"] == [252, 376]  # the 1/4 frame, 250 x 375, up to multiples of 4
    for name in ("log.csv", "curves.png"):
        assert (tmp_path / "split" / name).is_file()


def test_train_magnet_command_errors(mini_drone, tmp_path, capsys):
    assert main(["train", "magnet", "--data", str(mini_drone), "--out", str(tmp_path / "r")]) == 2
    assert "--backbone" in capsys.readouterr().err
    assert main(["train", "isdnet", "--data", str(mini_drone), "--backbone", "drone",
                 "--out", str(tmp_path / "r")]) == 2
    assert "applies only to magnet" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# -- command line and evaluation specs -------------------------------------------------------------------
def test_segment_command_with_magnet(tmp_path, capsys, magnet_ckpt):
    image = sorted((DRONE / "test" / "images").glob("*.jpg"))[0]
    out = tmp_path / "out"
    assert main(["segment", str(image), "--model", "magnet-fast", "--weights", str(magnet_ckpt), "--out", str(out),
                 "--scales", "2", "--device", "cpu", "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "magnet-fast"
    entry = summary["images"][0]
    assert entry["mode"] == "magnet" and set(entry["seconds"]) >= {"stage 0 (0.5)", "stage 1 (1)"}
    assert (out / f"{image.stem}_classes.png").is_file()
    assert main(["segment", str(image), "--model", "isdnet", "--scales", "2", "--out", str(tmp_path / "o2")]) == 2
    assert "--scales applies to magnet" in capsys.readouterr().err
    # more scales than the frame has pixels for: its coarsest stage (1/64 of 1000 rows) would be under the networks'
    # 32 pixels (until 2026-12-08 such runs took minutes and gave one class everywhere)
    assert main(["segment", str(image), "--model", "magnet-fast", "--weights", str(magnet_ckpt), "--scales", "7",
                 "--device", "cpu", "--out", str(tmp_path / "o2"), "-q"]) == 2
    assert "at MagNet's coarsest scale 0.015625 its shorter side is 15.6 pixels" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    assert main(["segment", str(image), "--model", "magnet", "--mode", "tiled", "--weights", str(magnet_ckpt),
                 "--out", str(tmp_path / "o3")]) == 2
    assert "multi-scale mode" in capsys.readouterr().err and not (tmp_path / "o3").exists()


def test_model_specs_with_magnet_settings():
    specs = parse_model_specs("2 scales=magnet:drone@scales=2,magnet@selection=running@points=0.5,isdnet")
    assert specs[0].label == "2 scales" and specs[0].options == (("scales", "2"),)
    assert specs[1].label == "magnet@selection=running@points=0.5" and specs[1].weights == "drone"
    assert specs[1].options == (("selection", "running"), ("points", "0.5"))
    with pytest.raises(ValueError, match="not a setting of isdnet"):
        parse_model_specs("isdnet@scales=2")
    with pytest.raises(ValueError, match="not a valid value"):
        parse_model_specs("magnet@scales=two")
    assert parse_model_specs("c=magnet@scales=0.25")[0].options == (("scales", "0.25"),)


def test_train_segmenter_is_an_isdnet_over_magnets_scales(mini_drone, tmp_path):
    out = tmp_path / "seg"
    assert main(["train", "segmenter", "--data", str(mini_drone), "--val", "none", "--out", str(out),
                 "--iterations", "1", "--batch-size", "1", "--crop", "64", "--width", "8", "--device", "cpu",
                 "-q"]) == 0
    model = load_model(out / "best.pt", expected="isdnet")
    assert tuple(model.training_record["train_config"]["scale_range"]) == (0.25, 2.0)
