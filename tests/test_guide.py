"""PCNet whose head also sees the image at the output resolution (``NetConfig.guide``), on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BSDS, guided_export_matches_torch, guided_input_pair, packaged_pcnet_without
from uhrseg.datasets.readers import BSDS500
from uhrseg.grid import CellGrid
from uhrseg.inference import SuperpixelPredictor, cell_id_map, grid_shape_for, network_labels
from uhrseg.inference.resize import network_input, network_inputs
from uhrseg.inference.tiling import guide_window
from uhrseg.io import ArraySource, read_image
from uhrseg.models import NetConfig, PCNet, build_model, load_model, save_checkpoint
from uhrseg.stores import FileStore
from uhrseg.training.sampling import SamplingConfig, TrainingSampler
from uhrseg.training.trainer import TrainConfig, load_init, training_losses


@pytest.fixture(scope="module")
def guided_ckpt(tmp_path_factory):
    """An untrained guided PCNet whose guide branch is not zero (seeded), so the guide changes the labels."""
    torch.manual_seed(1)
    model = PCNet(NetConfig(head_norm=True, guide=True)).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.guide[2].weight, std=0.5)
    return save_checkpoint(tmp_path_factory.mktemp("guided") / "guided.pt", model, training={"note": "test"})


def test_guide_is_required_and_checked():
    guided, plain = PCNet(NetConfig(guide=True)).eval(), PCNet().eval()
    x, g = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 128, 192)
    assert guided.uses_guide and not plain.uses_guide
    assert guided(x, g).assoc.shape == (1, 9, 128, 192)
    with pytest.raises(ValueError, match="needs the guide"):
        guided(x)
    with pytest.raises(ValueError, match=r"guide must be \(1, 3, 128, 192\)"):
        guided(x, g[:, :, :64])
    with pytest.raises(ValueError, match="takes no guide"):
        plain(x, g)
    assert build_model("scn").uses_guide is False


def test_network_inputs_area_average_the_guide():
    """The guided input is the guide area-averaged by 4 (as in training); close to the direct resize."""
    image = read_image(BSDS / "images" / "test" / "100007.jpg")
    grid = CellGrid(320, 480, 16)
    x, guide = network_inputs(ArraySource(image), grid, 4, guided=True)
    assert guide.shape == (320, 480, 3) and x.shape == (80, 120, 3) and guide.dtype == np.float32
    blocks = guide.reshape(80, 4, 120, 4, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(x, blocks, atol=1e-5)
    direct = network_input(ArraySource(image), 80, 120)
    assert np.abs(x - direct).mean() < 2e-3  # the two area averages differ only where 321 rows meet 320
    plain_x, none = network_inputs(ArraySource(image), grid, 4)
    assert none is None and np.array_equal(plain_x, direct)


def test_the_guide_moves_the_packaged_pcnets_boundaries_and_is_required(photo_path):
    """The packaged (guided) PCNet's guide matters: a guide without its detail moves some boundaries but does
    not replace the network, and a guided network refuses to run without one. (Tiled == untiled for this network
    and photo: ``test_tiling.py::test_cell_id_map_is_identical_for_any_tile_size``.)"""
    photo = read_image(photo_path)
    model = SuperpixelPredictor("pcnet", device="cpu").model
    assert model.uses_guide
    n_rows, n_cols = grid_shape_for(*photo.shape[:2], 3000)
    grid = CellGrid(16 * n_rows, 16 * n_cols)
    x, guide = network_inputs(ArraySource(photo), grid, 4, guided=True)
    cpu = torch.device("cpu")
    whole = cell_id_map(model, x, grid, cpu, guide=guide)
    blurred = np.ascontiguousarray(np.repeat(np.repeat(x, 4, axis=0), 4, axis=1))  # the guide without its detail
    other = cell_id_map(model, x, grid, cpu, guide=blurred)
    assert 0.001 < (other != whole).mean() < 0.2, "the guide must move boundaries, not replace the network"
    with pytest.raises(ValueError, match=r"needs a \(\d+, \d+, 3\) guide image, got None"):
        cell_id_map(model, x, grid, cpu)


def test_guided_predictor_streamed_equals_in_memory(photo_path, guided_ckpt, tmp_path):
    photo = read_image(photo_path)
    whole = SuperpixelPredictor("pcnet", weights=guided_ckpt, device="cpu", tile=10**6, strip_pixels=2**30,
                                refine_iterations=0).predict(photo, 3000)
    predictor = SuperpixelPredictor("pcnet", weights=guided_ckpt, device="cpu", backend="auto", tile=48,
                                    strip_pixels=3000, band_rows=97, refine_iterations=0)
    assert predictor.backend == "torch"
    h, w = photo.shape[:2]
    with FileStore(tmp_path / "labels", (h, w), np.int32) as labels:
        predictor.run_source(ArraySource(photo), 3000, labels)
        streamed = labels.read(0, h)
    assert np.array_equal(streamed, whole)
    assert 0.8 * 3000 < int(whole.max()) + 1 < 1.25 * 3000  # untrained: fragments merged or split
    raw = SuperpixelPredictor("pcnet", weights=guided_ckpt, device="cpu").run(photo[:321, :481], 600,
                                                                              connectivity=False)
    assert raw.labels.shape == (321, 481) and raw.n_cells == 600
    assert 0 <= raw.labels.min() and raw.labels.max() < 600 and len(np.unique(raw.labels)) > 500


def test_guided_init_from_unguided_weights_computes_their_function_then_learns(tmp_path):
    """--guide --init pcnet.pt: the zero last guide conv keeps the packaged network's association map on a
    held-out image; one training step on real crops makes the guide branch non-zero."""
    # the packaged PCNet is guided since 2026-12-05: take its weights without the guide branch (and head blocks)
    packaged = packaged_pcnet_without(tmp_path / "unguided.pt", guide=False, head_blocks=0)
    old = load_model(packaged)
    assert not old.uses_guide
    data = BSDS500(BSDS, "val")
    sampler = TrainingSampler([data], SamplingConfig(global_resize=384, crop=128, patch=128, upscale=4), seed=0)
    batch = sampler.batch(2)
    g = batch["global"]
    new = build_model("pcnet", NetConfig(head_norm=True, guide=True))
    load_init(new, str(packaged), lambda: (g["input"], (g["target"] + 1) * 0.5))
    assert torch.count_nonzero(new.guide[2].weight) == 0
    image = torch.from_numpy(BSDS500(BSDS, "test").image("100007")[:320, :448].copy()).permute(2, 0, 1)[None]
    small = torch.nn.functional.interpolate(image.float() / 255, size=(80, 112), mode="area")
    big = image.float() / 255
    new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(small, big).assoc, old.eval()(small).assoc, rtol=0, atol=1e-6)
    new.train()
    optimizer = torch.optim.Adam(new.parameters(), lr=1e-3)
    losses = training_losses(new, batch, TrainConfig(guide=True))
    losses["total"].backward()
    assert new.guide[2].weight.grad.abs().sum() > 0
    optimizer.step()
    assert torch.count_nonzero(new.guide[2].weight) > 0
    with pytest.raises(Exception, match="do not match"):  # guided weights into an unguided network
        saved = save_checkpoint(tmp_path / "g.pt", new.eval())
        load_init(build_model("pcnet", NetConfig(head_norm=True)), str(saved), lambda: g["input"])


def test_widened_guide_from_the_packaged_pcnet_computes_its_function_then_learns():
    """--guide-channels (packaged width + 16) --init pcnet-large.pt: the packaged file's guide channels become the
    first ones, the 16 new ones start with zero weight in the second conv, so the wider network computes the
    packaged one's association map on a held-out image; one training step on real crops gives the new channels
    weight. (That file itself was made this way, 8 -> 32 -> 64 channels; pcnet.pt is its distilled head, 16.)"""
    from uhrseg.models import packaged_weights_path

    packaged = packaged_weights_path("pcnet-large")
    old = load_model(packaged).eval()
    narrow = old.config.guide_channels
    wide = narrow + 16
    assert old.config.guide and narrow == 64
    data = BSDS500(BSDS, "val")
    sampler = TrainingSampler([data], SamplingConfig(global_resize=384, crop=128, patch=128, upscale=4), seed=0)
    batch = sampler.batch(2)
    g = batch["global"]
    new = build_model("pcnet", NetConfig.from_dict({**old.config.to_dict(), "guide_channels": wide}))
    load_init(new, str(packaged), lambda: (g["input"], (g["target"] + 1) * 0.5))
    assert new.guide[0].weight.shape == (wide, 3, 3, 3) and new.guide[2].weight.shape == (16, wide, 3, 3)
    torch.testing.assert_close(new.guide[0].weight[:narrow], old.guide[0].weight, rtol=0, atol=0)
    assert torch.count_nonzero(new.guide[2].weight[:, narrow:]) == 0
    assert torch.count_nonzero(new.guide[0].weight[narrow:]) > 0
    small, big = guided_input_pair()
    new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(small, big).assoc, old(small, big).assoc, rtol=0, atol=1e-5)
    new.train()
    losses = training_losses(new, batch, TrainConfig(guide=True, guide_channels=wide))
    losses["total"].backward()
    assert new.guide[2].weight.grad[:, narrow:].abs().sum() > 0
    with pytest.raises(ValueError, match="guide_channels must be >= 1"):
        TrainConfig(guide=True, guide_channels=0)


def test_network_labels_of_a_guided_model_on_a_real_image(guided_ckpt):
    """The trainer's validation path (network_labels) feeds the guide; strips do not change the labels."""
    image = read_image(BSDS / "images" / "test" / "100007.jpg")
    model = load_model(guided_ckpt)
    cpu = torch.device("cpu")
    whole, grid, _ = network_labels(model, image, 600, cpu, strip_pixels=10**9)
    strips, _, _ = network_labels(model, image, 600, cpu, strip_pixels=5000)
    assert np.array_equal(whole, strips) and whole.shape == image.shape[:2]
    assert 0 <= whole.min() and whole.max() < grid.n_cells


def test_export_of_a_guided_checkpoint_runs_in_opencv(guided_ckpt, tmp_path):
    """The head graph takes the guide as a second input; OpenCV's labels match torch's, tiled or not."""
    _, net, x, grid = guided_export_matches_torch(guided_ckpt, tmp_path)
    assert net.guide
    with pytest.raises(ValueError, match=r"needs a \(\d+, \d+, 3\) guide image, got None"):
        net.cell_id_map(x, grid, 512, 2**19)


def test_guide_lr_scale_gets_its_own_parameter_groups(mini_bsds, tmp_path):
    """--guide-lr-scale 10: the guide branch's weights and biases move with 10x the scheduled rate; without it
    the two groups (decayed weights, the rest) are as before."""
    from uhrseg.training.common import parameter_groups
    from uhrseg.training.trainer import train

    model = build_model("pcnet", NetConfig(guide=True))
    plain = parameter_groups(model, 4e-4)
    assert [len(g["params"]) for g in plain] == [sum(p.ndim > 1 for p in model.parameters()),
                                                 sum(p.ndim <= 1 for p in model.parameters())]
    groups = parameter_groups(model, 4e-4, {"guide": 10.0})
    scaled = {id(p) for g in groups if g.get("lr_scale") == 10.0 for p in g["params"]}
    assert scaled == {id(p) for p in model.guide.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    cfg = TrainConfig(model="pcnet", data=["bsds500:test"], bsds500_root=str(mini_bsds), val=None, iterations=1,
                      batch_size=2, crop=128, patch=128, global_resize=192, device="cpu", guide=True,
                      guide_lr_scale=10.0, lr=1e-4, checkpoint_every=1)
    train(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    lrs = sorted(g["lr"] for g in state["optimizer"]["param_groups"])
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-3, 1e-3])
    with pytest.raises(ValueError, match="guide_lr_scale"):
        TrainConfig(guide_lr_scale=0.0)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), pad_h=st.integers(0, 12), pad_w=st.integers(0, 12),
       data=st.data())
def test_guide_window_equals_slicing_the_padded_guide(h, w, pad_h, pad_w, data):
    """A strip's guide window is the whole guide edge-padded like the network input, then sliced."""
    guide = np.random.default_rng(h * 41 + w).random((h, w, 3), dtype=np.float32)
    padded = np.pad(guide, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    r0 = data.draw(st.integers(0, h - 1))
    c0 = data.draw(st.integers(0, w - 1))
    r1 = data.draw(st.integers(r0 + 1, h + pad_h))
    c1 = data.draw(st.integers(c0 + 1, w + pad_w))
    window = guide_window(guide, slice(r0, r1), slice(c0, c1))
    assert window.shape == (1, 3, r1 - r0, c1 - c0) and window.flags.c_contiguous
    np.testing.assert_array_equal(window[0].transpose(1, 2, 0), padded[r0:r1, c0:c1])
