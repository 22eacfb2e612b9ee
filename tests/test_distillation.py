"""Association-map distillation (``--teacher``) and dead-channel revival (``--revive-channels``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uhrseg.cli import main
from uhrseg.datasets.readers import open_dataset
from uhrseg.models import load_model, packaged_weights_path
from uhrseg.training import TrainConfig, association_distillation_loss
from uhrseg.training.revive import association_usage, revive_association_channels
from uhrseg.training.sampling import SamplingConfig, TrainingSampler
from uhrseg.training.trainer import training_losses


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sharp=st.floats(0.1, 20.0), h=st.integers(1, 9), w=st.integers(1, 9))
def test_distillation_loss_is_a_kl_divergence(seed, sharp, h, w):
    """>= 0, 0 exactly for equal maps, and equal to sum t log(t / s) per pixel averaged over pixels."""
    g = torch.Generator().manual_seed(seed)
    logits = sharp * torch.randn(2, 9, h, w, generator=g)
    t_logits = sharp * torch.randn(2, 9, h, w, generator=g)
    t = torch.softmax(t_logits, 1)
    kl = float(association_distillation_loss(logits, t))
    assert kl >= -1e-6
    assert float(association_distillation_loss(t_logits, t)) == pytest.approx(0.0, abs=1e-5)
    s64, t64 = torch.log_softmax(logits.double(), 1), torch.log_softmax(t_logits.double(), 1)
    expected = (t64.exp() * (t64 - s64)).sum(1).mean()
    assert kl == pytest.approx(float(expected), rel=1e-3, abs=1e-5)


def test_distillation_loss_gradient_does_not_vanish_on_a_dead_channel():
    """The KL's gradient on the logits is Q_student - Q_teacher: a channel with ~0 mass still gets a push."""
    logits = torch.tensor([[-30.0, 10.0, -30.0, -30.0, 10.0, -30.0, -30.0, -30.0, -30.0]]).view(1, 9, 1, 1)
    logits.requires_grad_(True)
    teacher = torch.zeros(1, 9, 1, 1)
    teacher[0, 5] = 1.0  # the teacher picks the right neighbour, which the student never uses
    association_distillation_loss(logits, teacher).backward()
    assert float(logits.grad[0, 5]) == pytest.approx(-1.0, abs=1e-3)
    with pytest.raises(ValueError, match=r"must both be \(B, 9, h, w\), got \(1, 8, 2, 2\)"):
        association_distillation_loss(torch.ones(1, 8, 2, 2), torch.ones(1, 8, 2, 2))


def _real_batch(model, seed=0):
    sampling = SamplingConfig(scale_range=(1.0, 1.0), crop=128, patch=128, upscale=model.upscale, dpc=True,
                              binary_mask=True, ld_window=5)
    sampler = TrainingSampler([open_dataset("bsds500:val", "../shared/datasets/BSDS500")], sampling, seed=seed)
    return sampler.batch(2, torch.device("cpu"))


def test_revive_restarts_the_channels_a_network_stopped_using():
    """A network using only some neighbour cells (as the 2026-12-04 pcnet.pt used only top and centre) gets the
    others back with the asked mass, without changing any pixel's hard assignment on the calibration batch."""
    model = load_model(packaged_weights_path("scn"))
    batch = _real_batch(model)["global"]
    inputs = ((batch["target"] + 1.0) * 0.5,)  # SCN's input is the image at the output resolution
    conv = model.assoc_head
    with torch.no_grad():  # switch off 3 channels the way training does: very negative logits everywhere
        conv.bias[[0, 3, 6]] -= 60.0
    before = association_usage(model, inputs)
    assert float(before[[0, 3, 6]].max()) < 1e-3
    with torch.no_grad():
        choice = model(*inputs).assoc.argmax(1)
    live = [k for k in range(9) if float(before[k]) >= 1e-3]
    revived = revive_association_channels(model, inputs, dead_mass=0.06)
    assert revived == [k for k in range(9) if k not in live] and {0, 3, 6} <= set(revived)
    after = association_usage(model, inputs)
    assert float(after[revived].sum()) == pytest.approx(0.06, abs=2e-3)
    assert float(after.sum()) == pytest.approx(1.0, abs=1e-5)
    with torch.no_grad():
        assert (model(*inputs).assoc.argmax(1) != choice).float().mean() < 0.01
    assert revive_association_channels(model, inputs, floor=1e-6) == []  # nothing dead any more
    with pytest.raises(ValueError, match="dead_mass"):
        revive_association_channels(model, inputs, dead_mass=1.0)


def test_teacher_adds_a_kd_term_to_both_branches(mini_bsds, tmp_path, scn_ckpt):
    """With a teacher (the packaged SCN teaching an untrained PCNet) the losses gain positive ``kd`` and
    ``patch_kd`` terms, weighted into the total; the run records the teacher; SCN as a student, a PCNet file as
    the teacher and a segmentation network with --teacher are refused."""
    from uhrseg.models import build_model

    teacher = load_model(packaged_weights_path("scn")).eval()
    torch.manual_seed(0)
    student = build_model("pcnet").train()
    batch = _real_batch(student)
    base = TrainConfig(data=["bsds500:test"], bsds500_root=str(mini_bsds))
    with torch.no_grad():
        plain = training_losses(student, batch, base)
        taught = training_losses(student, batch, TrainConfig(data=["bsds500:test"], bsds500_root=str(mini_bsds),
                                                              teacher="x", teacher_weight=2.0), teacher)
    assert "kd" not in plain and float(taught["kd"]) > 0.1 and float(taught["patch_kd"]) > 0.1
    extra = 2.0 * float(taught["kd"]) + base.patch_weight * 2.0 * float(taught["patch_kd"])
    assert float(taught["total"]) == pytest.approx(float(plain["total"]) + extra, rel=1e-4)
    with pytest.raises(ValueError, match="pcnet only"):
        TrainConfig(model="scn", teacher="x")
    args = ["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
            "--iterations", "1", "--batch-size", "2", "--crop", "128", "--patch", "128", "--device", "cpu", "-q"]
    assert main([*args, "--out", str(tmp_path / "kd"), "--teacher", str(packaged_weights_path("scn")),
                 "--teacher-weight", "50"]) == 0
    record = load_model(tmp_path / "kd" / "last.pt", expected="pcnet").training_record
    assert record["train_config"]["teacher"] == str(packaged_weights_path("scn"))
    assert record["train_config"]["teacher_weight"] == 50
    assert main([*args, "--out", str(tmp_path / "bad"), "--teacher", str(packaged_weights_path("pcnet"))]) == 2
    assert main(["train", "isdnet", "--data", "x", "--out", str(tmp_path / "seg"), "--teacher", "y"]) == 2


def test_revive_channels_needs_init(mini_bsds):
    with pytest.raises(ValueError, match="init"):
        TrainConfig(data=["bsds500:test"], bsds500_root=str(mini_bsds), revive_channels=True)


def test_refined_teacher_moves_the_target_to_the_refined_boundaries(mini_bsds, tmp_path):
    """``--teacher-refine``: on real crops, the packaged SCN's Q becomes a target whose hard labels are the
    refined labels wherever the refined cell is one of the pixel's 9 neighbour cells (all but a few per cent of
    the moved pixels; the others keep the teacher's Q), that keeps the teacher's soft Q where nothing moved,
    sums to 1 per pixel and moves a real share of the pixels. The CLI records the flag and refuses it without
    --teacher."""
    from uhrseg.grid.cells import CellGrid, hard_assignment, neighbour_cell_ids
    from uhrseg.grid.refine import refine_boundaries
    from uhrseg.training.refined_teacher import refined_association

    teacher = load_model(packaged_weights_path("scn")).eval()
    g = _real_batch(teacher)["global"]
    image = (g["target"] + 1.0) * 0.5
    with torch.no_grad():
        q = teacher(image).assoc
    target = refined_association(q, image, teacher.cell_size)
    assert target.shape == q.shape and target.dtype == torch.float32
    assert torch.allclose(target.sum(1), torch.ones_like(target[:, 0]), atol=1e-5)
    before, after = hard_assignment(q, teacher.cell_size), hard_assignment(target, teacher.cell_size)
    pixels = image.permute(0, 2, 3, 1).numpy()
    cells = neighbour_cell_ids(CellGrid(*q.shape[2:], teacher.cell_size))
    for b in range(q.shape[0]):
        refined = torch.from_numpy(refine_boundaries(pixels[b].copy(), before[b].numpy())).long()
        near = (cells == refined[None]).any(0)
        assert torch.equal(after[b][near], refined[near])
        assert torch.equal(after[b][~near], before[b][~near])
        assert int((~near).sum()) < 0.1 * int((refined != before[b]).sum())
    moved = before != after
    assert 0.01 < float(moved.float().mean()) < 0.5
    assert torch.equal(target.permute(0, 2, 3, 1)[~moved], q.permute(0, 2, 3, 1)[~moved])
    on_new_cell = (target * (cells[None] == after[:, None])).sum(1)  # the mass on the channels naming it
    assert torch.allclose(on_new_cell[moved], torch.ones_like(on_new_cell[moved]))  # hard where moved
    with pytest.raises(ValueError, match="teacher"):
        TrainConfig(data=["bsds500:test"], bsds500_root=str(mini_bsds), teacher_refine=True)
    with pytest.raises(ValueError, match="same size"):
        refined_association(q, image[:, :, :-1], teacher.cell_size)
    args = ["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
            "--iterations", "1", "--batch-size", "2", "--crop", "128", "--patch", "128", "--device", "cpu", "-q"]
    assert main([*args, "--out", str(tmp_path / "rt"), "--teacher", str(packaged_weights_path("scn")),
                 "--teacher-refine"]) == 0
    record = load_model(tmp_path / "rt" / "last.pt", expected="pcnet").training_record
    assert record["train_config"]["teacher_refine"] is True
    assert main([*args, "--out", str(tmp_path / "no"), "--teacher-refine"]) == 2
    assert not (tmp_path / "no").exists()
