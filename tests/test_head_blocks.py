"""PCNet with residual blocks in its head (``NetConfig.head_blocks``), on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import (BSDS, guided_export_matches_torch, guided_ids_tiled_equal_untiled, guided_input_pair,
                      packaged_pcnet_as, packaged_pcnet_without)
from uhrseg.datasets.readers import BSDS500
from uhrseg.inference import cell_id_map
from uhrseg.inference.network import inference_model
from uhrseg.io import read_image
from uhrseg.models import NetConfig, PCNet, build_model, load_model, save_checkpoint
from uhrseg.training.sampling import SamplingConfig, TrainingSampler
from uhrseg.training.trainer import TrainConfig, load_init, training_losses


def with_blocks(n_blocks: int, std: float = 0.05) -> PCNet:
    """The packaged PCNet with ``n_blocks`` head blocks (its own first ones, then new ones) whose second convs are
    seeded noise (so they act)."""
    model = packaged_pcnet_as(head_blocks=n_blocks)
    torch.manual_seed(3)
    with torch.no_grad():
        for block in model.head_blocks:
            torch.nn.init.normal_(block.conv_b.weight, std=std)
    return model.float().eval()


@pytest.fixture(scope="module")
def blocks_ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("blocks") / "blocks.pt", with_blocks(3), training={"note": "test"})


def test_head_halo_counts_the_blocks():
    """Each block's two 3x3 convs need 2 more output rows of context: 1 input row for the sub-pixel conv, then
    2 + 2 N output rows at 4 per input row."""
    assert [PCNet(NetConfig(head_blocks=n)).head_halo for n in range(5)] == [2, 2, 3, 3, 4]
    assert build_model("scn").head_halo == 1
    x = torch.rand(1, 3, 32, 48)
    assert PCNet(NetConfig(head_blocks=2)).eval()(x).assoc.shape == (1, 9, 128, 192)


def test_blocks_start_as_the_identity_then_learn(tmp_path):
    """--head-blocks N --init FILE from trained weights without blocks (the packaged PCNet's, blocks taken out):
    the zero second convs keep that network's association map; one training step on real crops moves them."""
    no_blocks = packaged_pcnet_without(tmp_path / "no-blocks.pt", head_blocks=0)
    packaged = load_model(no_blocks).float().eval()
    data = BSDS500(BSDS, "val")
    batch = TrainingSampler([data], SamplingConfig(global_resize=384, crop=128, patch=128, upscale=4),
                            seed=0).batch(2)
    g = batch["global"]
    new = build_model("pcnet", NetConfig(**{**packaged.config.__dict__, "head_blocks": 2}))
    load_init(new, str(no_blocks), lambda: (g["input"], (g["target"] + 1) * 0.5))
    assert all(torch.count_nonzero(b.conv_b.weight) == 0 for b in new.head_blocks)
    small, big = guided_input_pair()
    new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(small, big).assoc, packaged(small, big).assoc, rtol=0, atol=1e-6)
    new.train()
    losses = training_losses(new, batch, TrainConfig(guide=True, head_blocks=2))
    losses["total"].backward()
    assert all(b.conv_b.weight.grad.abs().sum() > 0 for b in new.head_blocks)
    with pytest.raises(ValueError, match="head_blocks must be >= 0, got -1"):
        TrainConfig(head_blocks=-1)
    with pytest.raises(ValueError, match="head_blocks_lr_scale"):
        TrainConfig(head_blocks_lr_scale=0.0)


def test_tiled_equals_untiled_with_head_blocks(photo_path):
    """The head strips carry three blocks' extra context (head_halo 3): tiled == untiled on a real photo. With
    the halo of the paper's head (2) the strip seams show, so the test can see a missing row of context."""
    photo = read_image(photo_path)
    trained = with_blocks(3)
    x, grid, guide, whole = guided_ids_tiled_equal_untiled(inference_model(trained), photo)

    class ShortHalo(PCNet):
        head_halo = 2  # the paper's head: four output rows short for the third block

    short = ShortHalo(trained.config)
    short.load_state_dict(trained.state_dict())
    short = inference_model(short.eval())
    seams = cell_id_map(short, x, grid, torch.device("cpu"), tile=48, strip_pixels=3000, guide=guide)
    assert np.count_nonzero(seams != whole) > 0


def test_export_with_head_blocks_runs_in_opencv(blocks_ckpt, tmp_path):
    """The head graph holds the blocks and its JSON their halo; OpenCV's labels match torch's, tiled or not."""
    import json

    info, net, _, _ = guided_export_matches_torch(blocks_ckpt, tmp_path)
    assert json.loads(info.read_text())["head_halo"] == 3 and net.head_halo == 3
