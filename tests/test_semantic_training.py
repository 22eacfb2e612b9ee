"""Training of the segmentation networks: augmented crops on real data, losses by hand, resumption, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import DEEPGLOBE, tiny_segmenter
from uhrseg.cli import main
from uhrseg.datasets import IGNORE_INDEX, open_semantic_dataset
from uhrseg.models import load_model, packaged_weights_path, save_checkpoint
from uhrseg.training import (
    SemanticSampler,
    SemanticSamplingConfig,
    SemanticTrainConfig,
    poly_learning_rate,
    segmentation_loss,
    structure_distillation_loss,
    super_resolution_loss,
    train_semantic,
    validate_semantic,
)


def test_sampler_crops_on_real_frames(mini_drone):
    data = open_semantic_dataset(mini_drone)
    sampler = SemanticSampler([data], SemanticSamplingConfig(crop=256), seed=3)
    images, labels = sampler.batch(6)
    assert images.shape == (6, 3, 256, 256) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0 and float(images.std()) > 0.05
    assert labels.shape == (6, 256, 256) and labels.dtype == torch.int64
    values = set(torch.unique(labels).tolist())
    assert values <= set(range(1, 24)) | {IGNORE_INDEX} and len(values) > 3
    again = SemanticSampler([data], SemanticSamplingConfig(crop=256), seed=3).batch(6)
    assert torch.equal(again[0], images) and torch.equal(again[1], labels)


def test_crops_keep_image_and_labels_aligned(mini_drone, tmp_path):
    """On a dataset whose images are its colour-coded labels, every sampled pixel's colour is its class colour."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "class_dict.csv").symlink_to(mini_drone / "class_dict.csv")
    for label in sorted((mini_drone / "labels").iterdir())[:2]:
        (tmp_path / "images" / label.name).symlink_to(label.resolve())
        (tmp_path / "labels" / label.name).symlink_to(label.resolve())
    data = open_semantic_dataset(tmp_path)
    palette = data.class_table.palette()
    palette[0] = 0  # "unlabeled" is black in the image and ignored in the labels
    for scale, at_least in ((1.0, 1.0), (0.7, 0.9), (1.6, 0.9)):
        cfg = SemanticSamplingConfig(crop=192, scale_range=(scale, scale), photometric=False)
        sampler = SemanticSampler([data], cfg, seed=2)
        for _ in range(3):
            img, lab = sampler.sample()
            known = lab != IGNORE_INDEX
            same = (img[known] == palette[lab[known]]).all(axis=1)
            assert same.mean() >= at_least  # resampling blends colours only along class boundaries


def test_small_scale_pads_with_the_ignore_index(mini_drone):
    data = open_semantic_dataset(mini_drone)
    sampler = SemanticSampler([data], SemanticSamplingConfig(crop=512, scale_range=(0.25, 0.25),
                                                             cat_max_ratio=1.0), seed=1)
    _, lab = sampler.sample()
    # 1500 x 1000 at 1/4 is 375 x 250: at least 512^2 - 375 x 250 pixels are padding.
    assert (lab == IGNORE_INDEX).sum() >= 512 * 512 - 375 * 250


def test_sampling_config_and_class_table_checks(mini_drone):
    with pytest.raises(ValueError, match="multiple of 32"):
        SemanticSamplingConfig(crop=100)
    with pytest.raises(ValueError, match="scale_range"):
        SemanticSamplingConfig(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="different class tables"):
        SemanticSampler([open_semantic_dataset(mini_drone), open_semantic_dataset(DEEPGLOBE / "test")],
                        SemanticSamplingConfig(crop=256))


def test_segmentation_loss_by_hand():
    labels = torch.tensor([[[0, 1], [1, 255]]])
    logits = torch.zeros(1, 2, 2, 2)
    # Uniform logits: -log(1/2) for each of the 3 labelled pixels.
    assert segmentation_loss(logits, labels, ohem=False).item() == pytest.approx(math.log(2))
    confident = torch.tensor([[[10.0, -10.0], [-10.0, 0.0]], [[-10.0, 10.0], [10.0, 0.0]]])[None]
    assert segmentation_loss(confident, labels, ohem=False).item() < 1e-6
    # OHEM: two pixels are easy (p = 1), one hard (p = 1/2): only the hard one counts when min_kept <= 1.
    mixed = confident.clone()
    mixed[0, :, 0, 0] = 0.0
    assert segmentation_loss(mixed, labels, ohem=True, min_kept=1).item() == pytest.approx(math.log(2))
    assert segmentation_loss(mixed, labels, ohem=True, min_kept=3).item() == pytest.approx(math.log(2) / 3, rel=1e-4)
    assert segmentation_loss(logits, torch.full((1, 2, 2), 255), ohem=True).item() == 0.0


def test_segmentation_loss_upsamples_and_strides():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 0] = logits[0, 1, :, 1] = 5.0
    full = segmentation_loss(logits, labels, ohem=False)
    strided = segmentation_loss(logits, labels, ohem=False, label_stride=2)
    assert 0 < strided.item() < full.item() < 1.0  # the centre samples lie farther from the class boundary
    with pytest.raises(ValueError, match="label_stride"):
        segmentation_loss(logits, labels, label_stride=0)


def test_sr_and_structure_distillation_losses():
    assert super_resolution_loss(torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 8, 8), 0.5)).item() == 0.0
    assert super_resolution_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 8, 8)).item() == pytest.approx(1.0)
    deep = torch.rand(2, 16, 4, 5, requires_grad=True)
    sr = torch.rand(2, 8, 4, 5, requires_grad=True)
    loss = structure_distillation_loss(deep, sr)
    loss.backward()
    assert loss.item() > 0 and deep.grad.abs().sum() > 0 and sr.grad is None  # the SR side is detached
    same = structure_distillation_loss(deep.detach(), deep.detach() * 3.0)  # scale-free: cosine affinities
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same h x w"):
        structure_distillation_loss(deep, torch.rand(2, 8, 2, 5))


def test_poly_schedule():
    cfg = SemanticTrainConfig(iterations=100, lr=0.01, warmup=10, poly_power=1.0)
    assert poly_learning_rate(cfg, 0) == pytest.approx(0.001)
    assert poly_learning_rate(cfg, 9) == pytest.approx(0.01 * 0.91)
    assert poly_learning_rate(cfg, 50) == pytest.approx(0.005)
    assert SemanticTrainConfig(model="deeppath").architecture() == {"width": 32, "deep_scale": 4, "aux_head": True}


def tiny_recipe(data, **overrides) -> SemanticTrainConfig:
    base = dict(model="isdnet", data=[str(data)], val=str(data), val_images=1, iterations=6, batch_size=2, crop=64,
                width=8, checkpoint_every=2, val_every=3, log_every=1, device="cpu", warmup=2)
    return SemanticTrainConfig(**{**base, **overrides})


def test_killed_run_resumes_to_the_same_weights(mini_drone, tmp_path):
    cfg = tiny_recipe(mini_drone)
    train_semantic(cfg, tmp_path / "whole", progress=False)
    train_semantic(cfg, tmp_path / "split", progress=False, stop_after=4)  # "killed" after the step-4 checkpoint
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 4
    train_semantic(cfg, tmp_path / "split", progress=False)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=1e-6)
    best = load_model(tmp_path / "split" / "best.pt", expected="isdnet")
    assert best.class_table.n_classes == 24 and best.class_table.ignored == (0,)
    assert 0.0 <= best.training_record["validation"]["val_miou"] <= 1.0
    assert best.training_record["train_config"]["crop"] == 64
    for name in ("log.csv", "curves.png"):
        assert (tmp_path / "split" / name).is_file()


def test_validation_numbers(mini_drone):
    """The validation a training run logs: the packaged drone ISDNet, put back in training mode, scores a real
    test frame as a user's prediction would (measured: pixel accuracy 0.940, mIoU 0.147); an untrained network
    gets numbers in range."""
    data = open_semantic_dataset(mini_drone)
    image, truth = data.image(data.names[0]), data.class_map(data.names[0])
    trained = load_model(packaged_weights_path("isdnet-drone")).train()
    metrics = validate_semantic(trained, [image], [truth])
    assert set(metrics) == {"val_miou", "val_pixel_accuracy", "val_boundary_iou"}
    assert metrics["val_pixel_accuracy"] > 0.85 and metrics["val_miou"] > 0.1 and trained.training
    model = tiny_segmenter("isdnet").train()
    untrained = validate_semantic(model, [image], [truth])
    assert all(0.0 <= v <= 1.0 for v in untrained.values()) and model.training
    assert untrained["val_pixel_accuracy"] < metrics["val_pixel_accuracy"]


def test_train_command_for_the_baseline_and_its_errors(mini_drone, tmp_path, capsys):
    code = main(["train", "deeppath", "--data", str(mini_drone), "--out", str(tmp_path / "base"), "--iterations",
                 "2", "--batch-size", "2", "--crop", "64", "--width", "8", "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    model = load_model(tmp_path / "base" / "best.pt", expected="deeppath")
    assert model.training_record["iterations"] == 2 and model.config.deep_scale == 4
    code = main(["train", "isdnet", "--data", str(mini_drone), "--out", str(tmp_path / "x"), "--no-dpc", "-q"])
    assert code == 2 and "--no-dpc applies only to superpixel networks" in capsys.readouterr().err
    code = main(["train", "isdnet", "--data", str(mini_drone), "--out", str(tmp_path / "x"), "--guide-channels", "32",
                 "--head-blocks", "2", "-q"])
    assert code == 2 and "--guide-channels, --head-blocks applies only to superpixel networks" in capsys.readouterr().err
    code = main(["train", "deeppath", "--data", str(mini_drone), "--out", str(tmp_path / "x"), "--fusion", "add"])
    assert code == 2 and "deeppath has no shallow path" in capsys.readouterr().err
    code = main(["train", "isdnet", "--out", str(tmp_path / "x")])
    assert code == 2 and "isdnet needs --data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_init_from_weights_for_other_classes_is_refused(mini_drone, tmp_path, capsys):
    from uhrseg.datasets import DEEPGLOBE_CLASSES

    other = save_checkpoint(tmp_path / "dg.pt", tiny_segmenter("isdnet", DEEPGLOBE_CLASSES, width=8))
    code = main(["train", "isdnet", "--data", str(mini_drone), "--out", str(tmp_path / "ft"), "--init", str(other),
                 "--iterations", "1", "--crop", "64", "--width", "8", "--device", "cpu", "-q"])
    assert code == 2 and "holds 7 classes, the data has 24" in capsys.readouterr().err


def test_bf16_training_steps_match_fp32_and_keep_float32_weights(mini_drone, tmp_path):
    from uhrseg.training import SemanticSampler, semantic_losses

    cfg32 = tiny_recipe(mini_drone, crop=128)
    cfg16 = tiny_recipe(mini_drone, crop=128, precision="bf16")
    sampler = SemanticSampler([open_semantic_dataset(mini_drone)], SemanticSamplingConfig(crop=128), seed=3)
    images, labels = sampler.batch(2, torch.device("cpu"))
    model = tiny_segmenter("isdnet").train()
    torch.manual_seed(0)
    fp32 = semantic_losses(model, images, labels, cfg32)
    torch.manual_seed(0)
    bf16 = semantic_losses(model, images, labels, cfg16)
    assert set(fp32) == set(bf16) == {"ce", "deep", "aux", "sr", "sd", "total"}
    for key in fp32:  # bfloat16 keeps 8 bits of mantissa: the loss terms agree to a few per cent
        assert bf16[key].dtype == torch.float32
        assert float(bf16[key].detach()) == pytest.approx(float(fp32[key].detach()), rel=0.05, abs=1e-3), key
    bf16["total"].backward()
    assert all(p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all())
               for p in model.parameters())
    train_semantic(cfg16, tmp_path / "bf16", progress=False)
    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)
    assert state["train_config"]["precision"] == "bf16" and state["step"] == 6
    assert all(v.dtype in (torch.float32, torch.int64) for v in state["state_dict"].values())
    assert all(math.isfinite(row["total"]) for row in state["log"] if "total" in row)
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_recipe(mini_drone, precision="fp16")


def test_precision_flag_is_refused_for_magnet(mini_drone, tmp_path, capsys):
    code = main(["train", "magnet", "--backbone", "drone", "--data", str(mini_drone), "--out", str(tmp_path / "m"),
                 "--precision", "bf16"])
    assert code == 2 and "--precision does not apply to magnet" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
