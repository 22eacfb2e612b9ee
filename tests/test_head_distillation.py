"""A cheaper PCNet head distilled from a trained one (``uhrseg train pcnet-head``; the packaged ``pcnet.pt`` is
such a student of the packaged ``pcnet-large.pt``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import assert_killed_run_resumes, guided_input_pair
from uhrseg.cli import main
from uhrseg.datasets.readers import open_dataset
from uhrseg.inference.resize import output_grid, resize_image
from uhrseg.models import PCNet, load_model, packaged_weights_path
from uhrseg.models.nets import NetConfig
from uhrseg.training import (DistillationSampler, HeadDistillConfig, association_distillation_loss, distill_head,
                             student_from_teacher)


@pytest.fixture(scope="module")
def teacher() -> PCNet:
    return load_model(packaged_weights_path("pcnet-large"), expected="pcnet").float().eval()


def _kl(student, teacher, x, g) -> float:
    with torch.no_grad():
        return float(association_distillation_loss(student(x, g).logits, teacher(x, g).assoc))


def test_a_student_of_the_teachers_size_is_the_teacher(teacher):
    x, g = guided_input_pair()
    student = student_from_teacher(teacher, teacher.config.guide_channels, teacher.config.head_blocks)
    with torch.no_grad():
        assert torch.equal(student(x, g).logits, teacher(x, g).logits)


def test_a_smaller_student_keeps_the_strongest_guide_channels_and_the_first_blocks(teacher):
    x, g = guided_input_pair()
    student = student_from_teacher(teacher, 16, 1)
    assert (student.config.guide_channels, student.config.head_blocks) == (16, 1)
    assert student.n_parameters() < teacher.n_parameters()
    t, s = teacher.state_dict(), student.state_dict()
    strength = t["guide.2.weight"].pow(2).sum(dim=(0, 2, 3))
    kept = torch.argsort(strength, descending=True)[:16].sort().values
    assert torch.equal(s["guide.0.weight"], t["guide.0.weight"][kept])
    assert torch.equal(s["guide.2.weight"], t["guide.2.weight"][:, kept])
    for key in s:
        if not key.startswith("guide."):
            assert torch.equal(s[key], t[key]), key
    # dropping the strongest channels instead of the weakest starts the student further from the teacher
    weakest = student_from_teacher(teacher, 16, 1)
    order = torch.argsort(strength)[:16].sort().values
    weakest.guide[0].weight.data = t["guide.0.weight"][order].clone()
    weakest.guide[0].bias.data = t["guide.0.bias"][order].clone()
    weakest.guide[2].weight.data = t["guide.2.weight"][:, order].clone()
    assert _kl(student, teacher, x, g) < _kl(weakest, teacher, x, g)


def test_student_from_teacher_refuses_what_it_cannot_copy(teacher):
    with pytest.raises(ValueError, match="fit in the teacher's"):
        student_from_teacher(teacher, 65, 1)
    with pytest.raises(ValueError, match="fit in the teacher's"):
        student_from_teacher(teacher, 16, 4)
    with pytest.raises(ValueError, match="guided PCNet"):
        student_from_teacher(PCNet(NetConfig(head_norm=True)), 8, 0)


def test_sampler_draws_crops_at_the_pipelines_scales(mini_bsds):
    cfg = HeadDistillConfig(data=["bsds500:test"], bsds500_root=str(mini_bsds), crop=64, n_range=(300, 300))
    datasets = [open_dataset(s, cfg.bsds500_root) for s in cfg.data]
    sampler = DistillationSampler(datasets, cfg, cell_size=16, upscale=4, seed=3)
    # the grid the pipeline makes for 1.5 x 300 cells on a 321 x 481 image
    grid = output_grid(321, 481, 450, 16)
    assert sampler.scale_for(321, 481, 300) == pytest.approx(math.sqrt(grid.height * grid.width / (321 * 481)),
                                                            rel=0.03)
    assert sampler.scale_for(321, 481, 1e6) == cfg.max_scale
    assert sampler.scale_for(3000, 4000, 1) == pytest.approx(64 / 3000)  # never smaller than the crop needs
    x, g = sampler.batch(3)
    assert x.shape == (3, 3, 16, 16) and g.shape == (3, 3, 64, 64) and x.dtype == g.dtype == torch.float32
    assert 0 <= float(g.min()) and float(g.max()) <= 1 and float(g.std()) > 0.02  # real image content
    for i in range(3):  # the input is the guide area-averaged by 4, as network_inputs makes it
        guide = g[i].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(x[i].permute(1, 2, 0).numpy(), resize_image(guide, 16, 16), atol=1e-6)
    again = DistillationSampler(datasets, cfg, cell_size=16, upscale=4, seed=3).batch(3)
    assert torch.equal(again[0], x) and torch.equal(again[1], g)


def _tiny(mini_bsds, **overrides) -> HeadDistillConfig:
    settings = dict(data=["bsds500:test"], bsds500_root=str(mini_bsds), val="bsds500:test", val_images=1,
                    val_n_segments=100, iterations=4, batch_size=2, crop=64, checkpoint_every=2, val_every=3,
                    log_every=1, device="cpu")
    return HeadDistillConfig(**{**settings, **overrides})


def test_a_killed_distillation_resumes_to_the_same_weights_and_keeps_the_trunk(mini_bsds, tmp_path, teacher):
    cfg = _tiny(mini_bsds)
    a = assert_killed_run_resumes(lambda folder, stop: distill_head(cfg, folder, progress=False, stop_after=stop),
                                  tmp_path, steps=4, stop_after=2)
    student = load_model(tmp_path / "whole" / "best.pt", expected="pcnet")
    assert (student.config.guide_channels, student.config.head_blocks) == (16, 1)
    record = student.training_record
    assert record["iterations"] in (3, 4) and "validation" in record
    assert record["distilled_from"].endswith("pcnet-large.pt")
    t = teacher.state_dict()
    for key, value in student.state_dict().items():
        if key.startswith("trunk."):
            assert torch.equal(value, t[key]), key  # frozen
    assert not torch.equal(student.state_dict()["assoc_head.1.weight"], t["assoc_head.1.weight"])  # trained
    rows = [r for r in a["log"] if "kd" in r]
    assert len(rows) == 4 and all(0 <= r["agree"] <= 1 and r["kd"] >= 0 for r in rows)


def test_another_cycle_starts_from_an_earlier_student(mini_bsds, tmp_path, teacher):
    """init: the student starts from an earlier student of the same teacher (the packaged pcnet.pt is one of
    pcnet-large.pt), not from the teacher's head; other networks are refused with a message naming them."""
    from uhrseg.inference.opencv_dnn import file_sha256

    cfg = _tiny(mini_bsds, init="pcnet", iterations=2, lr=1e-9, val=None)
    distill_head(cfg, tmp_path / "run", progress=False, stop_after=1)  # interrupted after one step, then resumed:
    student = load_model(distill_head(cfg, tmp_path / "run", progress=False), expected="pcnet")  # the record stays
    start = load_model(packaged_weights_path("pcnet"), expected="pcnet").float().state_dict()
    fresh = student_from_teacher(teacher, 16, 1).state_dict()
    got = student.float().state_dict()
    head = [k for k in got if k.startswith(("assoc_head.", "guide.", "head_blocks.", "embed"))]
    assert student.training_record["iterations"] == 2
    assert all(torch.allclose(got[k], start[k], atol=1e-6) for k in head)  # two steps of lr 1e-9 from pcnet.pt
    assert not all(torch.allclose(got[k], fresh[k], atol=1e-3) for k in head)  # not the teacher's head
    assert student.training_record["starting_point"] == {"init": "pcnet",
                                                         "sha256": file_sha256(packaged_weights_path("pcnet"))}
    with pytest.raises(ValueError, match="init pcnet-aerial-fast: its trunk is not the teacher's"):
        distill_head(_tiny(mini_bsds, init="pcnet-aerial-fast"), tmp_path / "aerial", progress=False)
    with pytest.raises(ValueError, match="init pcnet-large: a PCNet with 64 guide channels and 3 head blocks"):
        distill_head(_tiny(mini_bsds, init="pcnet-large"), tmp_path / "large", progress=False)


def test_train_pcnet_head_command(mini_bsds, tmp_path, capsys):
    args = ["train", "pcnet-head", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
            "--iterations", "1", "--batch-size", "1", "--crop", "64", "-q"]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert load_model(tmp_path / "run" / "best.pt", expected="pcnet").config.head_blocks == 1
    assert main([*args, "--out", str(tmp_path / "bad"), "--lr-step", "3"]) == 2
    assert "--lr-step does not apply to pcnet-head" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "bad"), "--no-sr"]) == 2
    assert "--no-sr does not apply to pcnet-head" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "bad"), "--crop", "48"]) == 2
    assert "crop must be a positive multiple of 64" in capsys.readouterr().err
    # a run folder of the other superpixel trainer is refused, both ways, with a message (was a TypeError)
    assert main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
                 "--iterations", "1", "--batch-size", "2", "--crop", "128", "--patch", "128", "--global-resize", "192",
                 "-q", "--out", str(tmp_path / "pc")]) == 0
    assert main([*args, "--out", str(tmp_path / "pc")]) == 2
    assert "not of pcnet-head" in capsys.readouterr().err
    assert main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "-q",
                 "--out", str(tmp_path / "run")]) == 2
    assert "a run of another trainer (pcnet-head)" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "scn"), "--teacher", "scn"]) == 2
    assert "'scn' model, but 'pcnet' was asked for" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "wide"), "--guide-channels", "65"]) == 2
    assert "fit in the teacher's" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "scn").exists() and not (tmp_path / "wide").exists()
