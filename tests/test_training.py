"""Training: losses on hand-computed cases, DPC sampling on real BSDS500 data, resumable trainer, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uhrseg.cli import main
from uhrseg.datasets import BSDS500
from uhrseg.grid import CellGrid, boundary_mask, pixel_positions, pool_features, reconstruct_features
from uhrseg.models import load_model
from uhrseg.training import (
    SamplingConfig,
    TrainConfig,
    TrainingSampler,
    boundary_sr_loss,
    learning_rate,
    local_discrimination_loss,
    one_hot_labels,
    superpixel_loss,
    train,
)


def test_perfect_association_minimises_the_label_term():
    """Labels equal to the grid cells and Q on the centre cell reconstruct the labels exactly: CE = 0."""
    grid = CellGrid(32, 48, 16)
    labels = grid.cell_ids().unsqueeze(0)
    centre = torch.zeros(1, 9, 32, 48)
    centre[:, 4] = 1
    sem, pos = superpixel_loss(centre, labels)
    assert sem.item() == pytest.approx(0.0, abs=1e-4)
    random_q = torch.softmax(torch.randn(1, 9, 32, 48, generator=torch.Generator().manual_seed(0)), 1)
    sem_r, _ = superpixel_loss(random_q, labels)
    assert sem_r.item() > 100 * max(sem.item(), 1e-6)
    # Position term: distance of each pixel to its cell's mean position, times m / S.
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    cy, cx = (ys // 16) * 16 + 7.5, (xs // 16) * 16 + 7.5
    expected = 0.003 / 16 * torch.sqrt((ys - cy) ** 2 + (xs - cx) ** 2).sum()
    assert pos.item() == pytest.approx(expected.item(), rel=1e-4)


def _superpixel_loss_through_one_hot(assoc, labels, cell_size=16, m=0.003, eps=1e-8):
    """Eq. 1-3 written out with one-hot channels and the grid core's pool / reconstruct."""
    b, _, h, w = assoc.shape
    onehot = one_hot_labels(labels)
    pos = pixel_positions(b, h, w, dtype=assoc.dtype)
    recon = reconstruct_features(pool_features(torch.cat([onehot.to(assoc.dtype), pos], 1), assoc, cell_size),
                                 assoc, cell_size)
    c = onehot.shape[1]
    sem = -(onehot * torch.log(recon[:, :c].clamp(min=eps))).sum() / b
    return sem, (m / cell_size) * torch.linalg.vector_norm(recon[:, c:] - pos, dim=1).sum() / b


@pytest.mark.parametrize("size", [(96, 128), (77, 101)])
def test_superpixel_loss_equals_the_one_hot_formulation(mini_bsds, size):
    """The scatter/gather loss matches Eq. 1-3 over one-hot channels, value and gradient, on a real crop."""
    gt = BSDS500(mini_bsds, "test").ground_truths("100039")[1]  # 61 regions
    h, w = size
    crop = gt[112 : 112 + h, 176 : 176 + w]
    labels = torch.from_numpy(np.unique(crop, return_inverse=True)[1].reshape(h, w)).long()
    labels = torch.stack([labels, labels.flip(1)])
    labels[1, :5] = -1  # ignored pixels
    logits = torch.randn(2, 9, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                         requires_grad=True)
    fast = superpixel_loss(torch.softmax(logits, 1), labels)
    slow = _superpixel_loss_through_one_hot(torch.softmax(logits, 1), labels)
    assert int(labels.max()) + 1 >= 3  # several labels, so the one-hot path has real channels
    for a, b in zip(fast, slow):
        assert a.item() == pytest.approx(b.item(), rel=1e-10)
    g_fast = torch.autograd.grad(fast[0] + fast[1], logits)[0]
    g_slow = torch.autograd.grad(slow[0] + slow[1], logits)[0]
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-9, atol=1e-12)


def test_superpixel_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="assoc"):
        superpixel_loss(torch.zeros(1, 4, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        superpixel_loss(torch.zeros(1, 9, 8, 8), torch.zeros(1, 8, 9, dtype=torch.long))


def test_one_hot_ignores_minus_one():
    oh = one_hot_labels(torch.tensor([[[0, 2], [-1, 1]]]))
    assert oh.shape == (1, 3, 2, 2)
    assert oh[0, :, 1, 0].sum() == 0 and oh[0, 2, 0, 1] == 1


def test_local_discrimination_hand_computed():
    """K = 2, D = 1: f = {0, 2}, g = {4, 6}: between 16, within 4, J = 4, L_D = -4."""
    emb = torch.tensor([[[[0.0, 4.0], [2.0, 6.0]]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    loss = local_discrimination_loss(emb, torch.tensor([[0, 0, 0]]), mask)
    assert loss.item() == pytest.approx(-4.0, rel=1e-5)


def test_local_discrimination_prefers_separated_embeddings():
    rng = torch.Generator().manual_seed(0)
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    mask[:, :, :2] = True
    separated = torch.randn(1, 4, 5, 5, generator=rng) * 0.1
    separated[:, :, :, :2] += 3.0
    mixed = torch.randn(1, 4, 5, 5, generator=rng)
    windows = torch.tensor([[0, 0, 0]])
    assert local_discrimination_loss(separated, windows, mask) < local_discrimination_loss(mixed, windows, mask)
    empty = local_discrimination_loss(mixed.requires_grad_(), torch.zeros(0, 3, dtype=torch.long), mask[:0])
    assert empty.item() == 0.0


def test_boundary_sr_loss_only_counts_the_band():
    rec = torch.zeros(1, 3, 4, 4)
    target = torch.ones(1, 3, 4, 4)
    target[:, :, 0, 0] = 3.0
    band = torch.zeros(1, 4, 4, dtype=torch.bool)
    band[0, 0, :2] = True
    assert boundary_sr_loss(rec, target, band).item() == pytest.approx((3 * 3 + 3 * 1) / 2)


def test_sampler_on_bsds500(mini_bsds):
    data = BSDS500(mini_bsds, "test")
    cfg = SamplingConfig(global_resize=384, crop=256, patch=256, upscale=4)
    sampler = TrainingSampler([data], cfg, seed=0)
    assert len(sampler.pairs) == sum(len(data.ground_truths(n)) for n in data.names)
    batch = sampler.batch(3)
    g, p = batch["global"], batch["patch"]
    assert g["input"].shape == (3, 3, 64, 64) and g["labels"].shape == (3, 256, 256)
    assert g["target"].min() >= -1 and g["target"].max() <= 1
    for b in range(3):
        lab = g["labels"][b].numpy()
        assert lab.min() == 0 and np.unique(lab).size == lab.max() + 1, "labels relabelled per crop"
        assert g["band"][b].numpy()[boundary_mask(lab)].all()
        assert set(np.unique(p["labels"][b].numpy())) <= {0, 1}, "patch supervised by the binary mask"
    assert len(g["windows"]) > 0
    for (b, y, x), m in zip(g["windows"].tolist(), g["window_mask"]):
        win = g["labels"][b, y : y + 5, x : x + 5]
        assert torch.unique(win).numel() == 2 and m.any() and not m.all()
        assert torch.equal(m, win == win.min())


def test_binary_mask_is_the_class_with_the_longest_boundary(mini_bsds):
    data = BSDS500(mini_bsds, "test")
    sampler = TrainingSampler([data], SamplingConfig(global_resize=256, crop=128, patch=128, flips=False), seed=1)
    image, gts = sampler._load(0, data.names[0])
    multi = TrainingSampler([data], SamplingConfig(global_resize=256, crop=128, patch=128, flips=False,
                                                   binary_mask=False), seed=1)
    s_bin = sampler.patch_sample(image, gts[0])
    s_multi = multi.patch_sample(image, gts[0])
    lab = s_multi.labels
    winner = np.bincount(lab[boundary_mask(lab)]).argmax()
    np.testing.assert_array_equal(s_bin.labels, (lab == winner).astype(np.int64))


def test_scale_range_global_sample_at_scale_one_is_a_crop_of_the_image(mini_bsds):
    data = BSDS500(mini_bsds, "test")
    cfg = SamplingConfig(crop=128, patch=128, scale_range=(1.0, 1.0), flips=False)
    sampler = TrainingSampler([data], cfg, seed=3)
    image, gts = sampler._load(0, data.names[0])
    s = sampler.global_sample(image, gts[0])
    target = (s.target.transpose(1, 2, 0) + 1.0) / 2.0 * 255.0  # back to 8-bit RGB
    hits = [(y, x) for y in range(image.shape[0] - 127) for x in range(image.shape[1] - 127)
            if abs(float(target[0, 0, 0]) - image[y, x, 0]) < 0.01
            and np.abs(target - image[y : y + 128, x : x + 128]).max() < 0.01]
    assert len(hits) == 1, "an unscaled crop: the full-resolution pixels, not resampled ones"
    y, x = hits[0]
    crop_gt = gts[0][y : y + 128, x : x + 128]
    np.testing.assert_array_equal(s.labels, np.unique(crop_gt, return_inverse=True)[1].reshape(crop_gt.shape))


def test_scale_range_keeps_the_aspect_ratio_and_fits_the_crop(mini_bsds):
    data = BSDS500(mini_bsds, "test")
    sampler = TrainingSampler([data], SamplingConfig(crop=256, patch=256, scale_range=(0.5, 2.0)), seed=0)
    image, gts = sampler._load(0, data.names[0])
    h, w = image.shape[:2]
    sizes = [sampler.global_size(h, w) for _ in range(50)]
    assert all(abs(rh / rw - h / w) < 0.01 and min(rh, rw) >= 256 for rh, rw in sizes)
    assert min(min(s) for s in sizes) == 256, "scales below 256 / short side are raised to fit the crop"
    assert max(rh for rh, _ in sizes) > 1.8 * h, "scales up to 2 are drawn"
    assert sampler.global_sample(image, gts[0]).labels.shape == (256, 256)
    square = TrainingSampler([data], SamplingConfig(global_resize=384, crop=256, patch=256), seed=0)
    assert square.global_size(h, w) == (384, 384), "without scale_range: the paper's square resize"


def test_sampling_config_validation():
    with pytest.raises(ValueError, match="multiple of 64"):
        SamplingConfig(crop=100)
    with pytest.raises(ValueError, match="global_resize"):
        SamplingConfig(global_resize=256, crop=512, patch=512)
    SamplingConfig(global_resize=256, crop=512, patch=512, scale_range=(1.0, 2.0))  # global_resize unused
    with pytest.raises(ValueError, match="scale_range"):
        SamplingConfig(scale_range=(0.0, 1.0))


def test_schedule_and_scn_switches():
    cfg = TrainConfig()
    assert learning_rate(cfg, 0) == 5e-5 and learning_rate(cfg, 2000) == pytest.approx(5e-6)
    scn = TrainConfig(model="scn")
    assert (scn.dpc, scn.sr, scn.ld) == (False, False, False)


def tiny(mini_bsds, model="pcnet", iterations=6, **overrides):
    settings = dict(model=model, data=["bsds500:test"], bsds500_root=str(mini_bsds), val="bsds500:test",
                    val_images=1, val_n_segments=100, iterations=iterations, batch_size=2, crop=128, patch=128,
                    global_resize=192, checkpoint_every=2, val_every=3, log_every=1, device="cpu")
    return TrainConfig(**{**settings, **overrides})


def test_killed_run_resumes_to_the_same_weights(mini_bsds, tmp_path):
    cfg = tiny(mini_bsds)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, stop_after=4)  # "killed" after the step-4 checkpoint
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 4
    train(cfg, tmp_path / "split", progress=False)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    # Six Adam steps move weights by ~3e-4; another batch stream differs by far more than 1e-5, while float
    # summation order alone differed by 1.4e-6 once (atol 1e-6 failed with the CPU shared by a training run).
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=1e-5)
    best = load_model(tmp_path / "split" / "best.pt", expected="pcnet")
    assert "validation" in best.training_record and best.training_record["iterations"] in (3, 6)
    for name in ("log.csv", "curves.png"):
        assert (tmp_path / "split" / name).is_file()


def test_finished_run_extended_equals_the_longer_run(mini_bsds, tmp_path, capsys):
    """--extend-to raises a finished run's iteration count and goes on with its Adam state, generators and
    schedule: a 4-iteration run extended to 6 ends with the weights of a 6-iteration run, and keeps the new count."""
    train(tiny(mini_bsds, iterations=6), tmp_path / "whole", progress=False)
    train(tiny(mini_bsds, iterations=4), tmp_path / "short", progress=False)
    with pytest.raises(ValueError, match="below the 4 iterations"):
        train(tiny(mini_bsds, iterations=4), tmp_path / "short", progress=False, extend_to=3)
    train(tiny(mini_bsds, iterations=4), tmp_path / "short", progress=False, extend_to=6)
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "short" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6 and b["train_config"]["iterations"] == 6
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=1e-5)
    assert [r["step"] for r in b["log"] if "total" in r] == [r["step"] for r in a["log"] if "total" in r]

    args = ["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "-q"]
    assert main([*args, "--out", str(tmp_path / "none"), "--extend-to", "8"]) == 2
    assert "there is no run to extend" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "short"), "--extend-to", "5"]) == 2
    assert "extend_to 5 is below the 6 iterations" in capsys.readouterr().err
    assert main(["train", "isdnet", "--data", "x", "--out", str(tmp_path / "s"), "--extend-to", "8"]) == 2
    assert "--extend-to applies only to superpixel networks" in capsys.readouterr().err


def test_batch_loader_draws_the_same_stream_with_any_number_of_workers(mini_bsds):
    """The batch of step t depends only on (seed, t): 1 or 2 workers and the in-process draw agree exactly."""
    from functools import partial
    from operator import methodcaller

    from uhrseg.training.loader import BatchLoader, draw_at
    from uhrseg.training.trainer import _open_sampler

    cfg = SamplingConfig(global_resize=192, crop=128, patch=128, upscale=4)
    make, draw = partial(_open_sampler, ["bsds500:test"], str(mini_bsds), cfg), methodcaller("batch_arrays", 2)
    local = make()
    expected = [draw_at(local, draw, 7, step) for step in (3, 4, 5, 6)]
    for workers in (1, 2):
        with BatchLoader(make, draw, seed=7, start_step=3, workers=workers, ahead=3) as loader:
            got = [loader.next() for _ in range(4)]
        assert loader.step == 7
        for a, b in zip(got, expected):
            assert a.keys() == b.keys() == {"global", "patch"}
            for branch in a:
                for key in a[branch]:
                    np.testing.assert_array_equal(a[branch][key], b[branch][key])
    assert not np.array_equal(expected[0]["global"]["input"], expected[1]["global"]["input"]), "steps differ"
    with pytest.raises(ValueError, match="workers must be >= 1"):
        BatchLoader(make, draw, seed=0, start_step=0, workers=0)
    broken = partial(_open_sampler, ["bsds500:nosuch"], str(mini_bsds), cfg)  # fails in the worker
    with BatchLoader(broken, draw, seed=0, start_step=0, workers=1) as loader:
        with pytest.raises(RuntimeError, match="(?s)worker 0 failed:.*unknown BSDS500 split"):
            loader.next()


def test_killed_run_with_loader_workers_resumes_to_the_same_weights(mini_bsds, tmp_path):
    cfg = tiny(mini_bsds, loader_workers=2)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, stop_after=4)
    train(cfg, tmp_path / "split", progress=False)
    in_process = tiny(mini_bsds)
    train(in_process, tmp_path / "local", progress=False)
    a, b, c = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("whole", "split", "local"))
    assert a["step"] == b["step"] == 6 and a["train_config"]["loader_workers"] == 2
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=1e-5)
    key = "head.weight" if "head.weight" in a["state_dict"] else next(iter(a["state_dict"]))
    assert not torch.allclose(a["state_dict"][key], c["state_dict"][key]), "another stream than in-process"


def test_train_command_for_scn(mini_bsds, tmp_path, capsys):
    code = main(["train", "scn", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
                 "--out", str(tmp_path / "scn"), "--iterations", "2", "--batch-size", "1", "--crop", "64",
                 "--patch", "64", "--global-resize", "128", "--device", "cpu", "-q"])
    assert code == 0, capsys.readouterr().err
    model = load_model(tmp_path / "scn" / "best.pt", expected="scn")
    assert model.training_record["iterations"] == 2
    args = ["train", "scn", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
            "--iterations", "2", "--batch-size", "1", "--crop", "64", "--patch", "64", "--device", "cpu", "-q"]
    assert main([*args, "--out", str(tmp_path / "scaled"), "--scale-range", "0.5,1.5"]) == 0
    record = load_model(tmp_path / "scaled" / "last.pt", expected="scn").training_record
    assert tuple(record["train_config"]["scale_range"]) == (0.5, 1.5)
    assert record["train_config"]["weight_decay"] == TrainConfig().weight_decay  # the recipe's default
    # --weight-decay reaches the superpixel recipes too (it was a segmentation-only flag before 2026-12-07)
    assert main([*args, "--out", str(tmp_path / "decay"), "--weight-decay", "0.002"]) == 0
    assert load_model(tmp_path / "decay" / "last.pt", expected="scn").training_record["train_config"][
        "weight_decay"] == 0.002
    assert main([*args, "--out", str(tmp_path / "x"), "--weight-decay", "-1"]) == 2
    assert "weight_decay must be finite and >= 0, got -1.0" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--scale-range", "1,1", "--global-resize", "128"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--scale-range", "2,1"]) == 2
    assert "0 < LO <= HI" in capsys.readouterr().err


def test_init_starts_from_a_checkpoint_and_refuses_another_model(mini_bsds, tmp_path, scn_ckpt):
    base = tmp_path / "base"
    train(tiny(mini_bsds, iterations=1, val=None), base, progress=False)
    start = load_model(base / "last.pt").state_dict()
    cfg = tiny(mini_bsds, iterations=1, val=None, init=str(base / "last.pt"), lr=0.0, weight_decay=0.0)
    train(cfg, tmp_path / "tuned", progress=False)
    tuned = load_model(tmp_path / "tuned" / "last.pt").state_dict()
    for key in ("trunk.encoder.0.0.0.weight", "assoc_head.1.weight"):  # lr 0: the weights stay the init's
        torch.testing.assert_close(tuned[key], start[key])
    code = main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
                 "--out", str(tmp_path / "bad"), "--iterations", "1", "--init", str(scn_ckpt), "-q"])
    assert code == 2
    assert not (tmp_path / "bad").exists()  # a refused run leaves no run folder behind


def test_a_refused_run_leaves_no_folder(mini_bsds, tmp_path, capsys):
    """Data that is not there, or a run folder that is a file: exit 2 with the name, and nothing written."""
    missing = tmp_path / "no-such-data"
    code = main(["train", "pcnet", "--data", str(missing), "--out", str(tmp_path / "run"), "-q"])
    assert code == 2 and str(missing) in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    code = main(["train", "pcnet", "--data", "bsds500:val", "--bsds500-root", str(mini_bsds), "--val", "none",
                 "--out", str(tmp_path / "run" / "deeper"), "-q"])  # the mini BSDS500 has only test/
    assert code == 2 and "val" in capsys.readouterr().err and not (tmp_path / "run").exists()
    occupied = tmp_path / "file.txt"
    occupied.write_text("a user's file")
    code = main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--out", str(occupied),
                 "-q"])
    assert code == 2 and "exists and is not a folder" in capsys.readouterr().err
    assert occupied.read_text() == "a user's file"
    # a run folder under a file was a NotADirectoryError traceback
    code = main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds),
                 "--out", str(occupied / "sub"), "-q"])
    assert code == 2 and f"{occupied / 'sub'}: cannot be made, {occupied} is a file" in capsys.readouterr().err
    # --stop-after 0 ran nothing, exited 0 and named a last.pt that did not exist
    code = main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--stop-after", "0",
                 "--out", str(tmp_path / "run"), "-q"])
    assert code == 2 and "--stop-after must be >= 1 iteration, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and occupied.read_text() == "a user's file"
    with pytest.raises(ValueError, match="stop_after must be >= 1 iteration, got 0"):  # the API too
        train(tiny(mini_bsds, iterations=1, val=None), tmp_path / "run", progress=False, stop_after=0)
    assert not (tmp_path / "run").exists()
    # a run failing at its first step (batch norm over one value per channel) left an empty folder
    code = main(["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
                 "--iterations", "1", "--batch-size", "1", "--crop", "64", "--patch", "64", "--global-resize", "64",
                 "--out", str(tmp_path / "run"), "-q"])
    assert code == 2 and "Expected more than 1 value per channel" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bf16_superpixel_losses_match_fp32(mini_bsds, tmp_path):
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.models import build_model
    from uhrseg.training.sampling import SamplingConfig, TrainingSampler
    from uhrseg.training.trainer import training_losses

    cfg32, cfg16 = tiny(mini_bsds), tiny(mini_bsds, precision="bf16")
    torch.manual_seed(0)
    model = build_model("pcnet").train()
    sampling = SamplingConfig(global_resize=192, crop=128, patch=128, upscale=model.upscale, dpc=True,
                              binary_mask=True, ld_window=5)
    sampler = TrainingSampler([open_dataset("bsds500:test", str(mini_bsds))], sampling, seed=0)
    batch = sampler.batch(2, torch.device("cpu"))
    fp32 = training_losses(model, batch, cfg32)
    bf16 = training_losses(model, batch, cfg16)
    assert set(fp32) == set(bf16) and {"sem", "pos", "sr", "ld", "patch_sem", "total"} <= set(bf16)
    for key in fp32:
        assert bf16[key].dtype == torch.float32
        assert float(bf16[key].detach()) == pytest.approx(float(fp32[key].detach()), rel=0.05, abs=1e-3), key
    train(tiny(mini_bsds, iterations=2, val=None, precision="bf16"), tmp_path / "bf16", progress=False)
    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["train_config"]["precision"] == "bf16"


def test_position_weight_scales_only_the_position_term(mini_bsds, tmp_path):
    """--position-weight m (Eq. 3's m): the position term is proportional to m, the label term does not move,
    and the CLI writes m into the run's config or rejects a negative one."""
    from uhrseg.cli.main import main
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.models import build_model
    from uhrseg.training.sampling import SamplingConfig, TrainingSampler
    from uhrseg.training.trainer import training_losses

    torch.manual_seed(0)
    model = build_model("pcnet").train()
    sampling = SamplingConfig(global_resize=192, crop=128, patch=128, upscale=model.upscale, dpc=True,
                              binary_mask=True, ld_window=5)
    batch = TrainingSampler([open_dataset("bsds500:test", str(mini_bsds))], sampling, seed=0).batch(
        2, torch.device("cpu"))
    with torch.no_grad():
        scn_m = training_losses(model, batch, tiny(mini_bsds))
        small_m = training_losses(model, batch, tiny(mini_bsds, position_weight=0.001))
    assert float(scn_m["pos"]) > 0
    assert float(small_m["pos"]) == pytest.approx(float(scn_m["pos"]) / 3, rel=1e-5)
    assert float(small_m["sem"]) == pytest.approx(float(scn_m["sem"]), rel=1e-6)
    common = ["train", "pcnet", "--data", "bsds500:test", "--bsds500-root", str(mini_bsds), "--val", "none",
              "--iterations", "1", "--batch-size", "2", "--crop", "128", "--patch", "128", "--global-resize", "192",
              "--device", "cpu", "-q"]
    assert main(common + ["--out", str(tmp_path / "m"), "--position-weight", "0.001"]) == 0
    state = torch.load(tmp_path / "m" / "last.pt", weights_only=True)
    assert state["train_config"]["position_weight"] == 0.001
    assert main(common + ["--out", str(tmp_path / "bad"), "--position-weight", "-1"]) == 2
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_head_norm_init_starts_from_a_network_without_the_norms(mini_bsds, tmp_path):
    """--head-norm from weights without the head's norms (the packaged pcnet.pt with its two head norms taken
    out, i.e. trained weights of a network built without them): the new norms start as the identity
    (docs/pcnet.md s. 7)."""
    from uhrseg.errors import CheckpointError
    from uhrseg.models import NetConfig, build_model
    from uhrseg.models.checkpoint import packaged_weights_path, save_checkpoint
    from uhrseg.training.trainer import load_init, training_losses

    plain = build_model("pcnet", NetConfig())
    trained = load_model(packaged_weights_path("pcnet")).state_dict()
    plain.load_state_dict({k: trained[k] for k in plain.state_dict()})
    no_norms = save_checkpoint(tmp_path / "no-norms.pt", plain)
    sampler = TrainingSampler([BSDS500(mini_bsds, "test")],
                              SamplingConfig(global_resize=384, crop=256, patch=256, upscale=4), seed=0)
    batch = sampler.batch(2)
    old = load_model(no_norms)
    assert not old.config.head_norm
    new = build_model("pcnet", NetConfig(head_norm=True))
    assert new.config.head_norm and new.n_parameters() == old.n_parameters() + 2 * (256 + 16)
    load_init(new, no_norms, lambda: batch["global"]["input"])
    new.eval()
    with torch.no_grad():  # evaluation mode: the same association map on a real image the batch did not hold
        image = torch.from_numpy(BSDS500(mini_bsds, "test").image("100099")[:320, :480].copy()).permute(2, 0, 1)
        small = torch.nn.functional.interpolate(image[None].float() / 255, size=(80, 112), mode="area")
        torch.testing.assert_close(new(small).assoc, old(small).assoc, rtol=0, atol=1e-5)
        cfg = TrainConfig(dpc=True, sr=True, ld=True)
        new.train(), old.train()
        for m in list(new.modules()) + list(old.modules()):  # compare without moving the running statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = 0.0
        a, b = training_losses(new, batch, cfg), training_losses(old, batch, cfg)
    # the norms are the identity on the calibration input (the global view); the patch views pass through their
    # own batch statistics, so the loss moves a little (measured 7e-4 relative)
    torch.testing.assert_close(a["total"], b["total"], rtol=3e-3, atol=0)
    save_checkpoint(tmp_path / "hn.pt", new)
    assert load_model(tmp_path / "hn.pt").config.head_norm, "the checkpoint's config rebuilds the norms"
    with pytest.raises(CheckpointError, match="do not match"):  # weights with norms into a model without them
        load_init(build_model("pcnet"), tmp_path / "hn.pt", lambda: batch["global"]["input"])


def test_init_with_head_norms_keeps_them_without_the_flag(mini_bsds, tmp_path):
    """Fine-tuning the packaged pcnet.pt (BatchNorm in its 4x head) with a plain config builds the same head."""
    from uhrseg.models.checkpoint import packaged_weights_path

    packaged = packaged_weights_path("pcnet")
    cfg = tiny(mini_bsds, iterations=1, val=None, init=str(packaged), lr=0.0, weight_decay=0.0)
    assert not cfg.head_norm and load_model(packaged).config.head_norm
    train(cfg, tmp_path / "ft", progress=False)
    tuned = load_model(tmp_path / "ft" / "last.pt")
    assert tuned.config.head_norm and tuned.training_record["train_config"]["head_norm"]
    start = load_model(packaged).state_dict()
    for key in ("subpixel.1.weight", "embed_norm.bias", "assoc_head.1.weight"):  # lr 0: the init's weights
        torch.testing.assert_close(tuned.state_dict()[key], start[key])


def test_training_package_names_are_its_functions_and_classes_whatever_was_imported_first():
    """``uhrseg.training`` loads its names on first use (so that the torch-free recipes in
    ``uhrseg.training.config`` do not load torch): each public name is the function or class its module defines,
    even after every submodule has been imported (a submodule imported under a public name would shadow it)."""
    import subprocess
    import sys

    code = "\n".join([
        "import importlib, inspect, pkgutil, sys",
        "import uhrseg.training as t",
        "print('torch' in sys.modules)",
        "from uhrseg.training import TrainConfig",
        "print('torch' in sys.modules)",
        "for m in pkgutil.iter_modules(t.__path__):",
        "    importlib.import_module('uhrseg.training.' + m.name)",
        "bad = [n for n in t.__all__ if inspect.ismodule(getattr(t, n))",
        "       or getattr(t, n).__module__ != 'uhrseg.training.' + t._EXPORTS[n]]",
        "print(bad, len(t.__all__), set(dir(t)) >= set(t.__all__))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["False", "False"]
    import uhrseg.training

    assert out[2] == f"[] {len(uhrseg.training.__all__)} True"
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        uhrseg.training.no_such_name


@pytest.mark.parametrize("name", ["TrainConfig", "SemanticTrainConfig", "MagNetTrainConfig", "HeadDistillConfig"])
def test_recipes_read_back_from_their_checkpoint_dictionaries(name):
    """A recipe stored as ``asdict`` reads back equal; keys of another uhrseg version are ignored and missing
    fields take their defaults, so older checkpoints still resume."""
    from dataclasses import asdict

    import uhrseg.training.config as config

    cls = getattr(config, name)
    recipe = cls(iterations=7, seed=3)
    stored = {**asdict(recipe), "a_field_from_a_newer_version": 1}
    assert cls.from_dict(stored) == recipe
    del stored["seed"]
    assert cls.from_dict(stored) == cls(iterations=7)


@pytest.mark.parametrize("name", ["TrainConfig", "SemanticTrainConfig", "MagNetTrainConfig", "HeadDistillConfig"])
@pytest.mark.parametrize("field_name, value, message", [
    ("val_every", 0, "val_every must be >= 1, got 0"),  # was a ZeroDivisionError after the first step
    ("checkpoint_every", 0, "checkpoint_every must be >= 1, got 0"),
    ("log_every", -1, "log_every must be >= 1, got -1"),
    ("val_images", -1, "val_images must be >= 1, got -1"),  # validated on all images but the last
    ("seed", -1, "seed must be >= 0, got -1"),
    ("lr", -1.0, "lr must be finite and >= 0, got -1.0"),
    ("lr", float("nan"), "lr must be finite and >= 0, got nan"),
    ("lr", float("inf"), "lr must be finite and >= 0, got inf"),  # trained on NaN losses, exit 0
    ("weight_decay", float("nan"), "weight_decay must be finite and >= 0, got nan"),  # NaN losses too
    ("weight_decay", -1.0, "weight_decay must be finite and >= 0, got -1.0"),
])
def test_recipes_refuse_a_schedule_that_cannot_run(name, field_name, value, message):
    import uhrseg.training.config as config

    cls = getattr(config, name)
    with pytest.raises(ValueError, match=message):
        cls(**{field_name: value})
    assert getattr(cls(**{field_name: 1}), field_name) == 1  # a value that runs is accepted


@pytest.mark.parametrize("name, field_name, value, message", [
    ("TrainConfig", "lr_step", 0, "lr_step must be >= 1, got 0"),  # was a ZeroDivisionError at the first step
    ("TrainConfig", "position_weight", float("nan"), "position_weight must be finite and >= 0, got nan"),
    ("TrainConfig", "teacher_weight", float("nan"), "teacher_weight must be finite and >= 0, got nan"),
    # NaN: the guide branch was silently left out of the optimiser (nan == nan is false)
    ("TrainConfig", "guide_lr_scale", float("nan"), "guide_lr_scale must be finite and > 0, got nan"),
    ("TrainConfig", "val_n_segments", 0, "val_n_segments must be >= 1, got 0"),  # failed after the whole run
    ("TrainConfig", "scale_range", (0.5, float("inf")), "scale_range must be two finite factors"),
    ("SemanticTrainConfig", "width", 0, "width must be >= 1, got 0"),  # a torch RuntimeError traceback
    ("SemanticTrainConfig", "sd_weight", float("nan"), "sd_weight must be finite and >= 0, got nan"),
    ("SemanticTrainConfig", "scale_range", (0.0, 2.0), "scale_range must be two finite factors"),
    ("MagNetTrainConfig", "ohem_threshold", float("nan"), "ohem_threshold must be finite and >= 0, got nan"),
])
def test_recipes_refuse_values_that_cannot_train(name, field_name, value, message):
    import uhrseg.training.config as config

    with pytest.raises(ValueError, match=message):
        getattr(config, name)(**{field_name: value})


@pytest.mark.parametrize("recipe", ["TrainConfig", "SemanticTrainConfig", "MagNetTrainConfig", "HeadDistillConfig"])
def test_every_recipe_refuses_no_data_and_zero_steps_or_batch(recipe):
    """The four training recipes check their data, iterations and batch size the same way: an empty data list is
    refused before any loader starts, and 0 iterations or a batch of 0 name the field and the value."""
    import uhrseg.training as training

    cls = getattr(training, recipe)
    cls()  # the defaults are valid
    with pytest.raises(ValueError, match=r"data must name at least one training dataset, got \[\]"):
        cls(data=[])
    with pytest.raises(ValueError, match="iterations must be >= 1, got 0"):
        cls(iterations=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        cls(batch_size=0)
