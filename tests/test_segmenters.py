"""ISDNet and the deep path: shapes, switches, Laplacian residuals, fusion pieces, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DRONE, tiny_segmenter
from uhrseg.datasets import DEEPGLOBE_CLASSES, read_class_table
from uhrseg.errors import CheckpointError
from uhrseg.models import ISDNet, SegmenterConfig, build_segmenter, load_model, save_checkpoint
from uhrseg.models.blocks import (
    ASPP,
    ResNetEncoder,
    STDCBlock,
    global_mean,
    laplacian_residuals,
    pyramid_down,
    pyramid_up,
)

TABLE = read_class_table(DRONE / "class_dict.csv")


def test_isdnet_shapes_in_training_and_eval():
    model = tiny_segmenter("isdnet").train()
    x = torch.rand(2, 3, 128, 160)
    out = model(x)
    assert out.logits.shape == (2, 24, 16, 20)  # output stride 8
    assert out.aux_logits.shape == (2, 24, 4, 5)  # stage 3 at 1/32
    assert out.deep_logits.shape == (2, 24, 4, 5)  # the deep path's own head, supervised in training
    assert out.reconstruction.shape == (2, 3, 64, 80) and out.target.shape == (2, 3, 128, 160)
    assert out.deep_feature.shape[2:] == out.sr_feature.shape[2:] == (4, 5)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out.aux_logits is None and out.deep_logits is None and out.reconstruction is None
    assert (model.output_stride, model.input_multiple) == (8, 32)


def test_deep_path_baseline_and_full_resolution_network():
    base = tiny_segmenter("deeppath").eval()
    slide = tiny_segmenter("deeppath", deep_scale=1).eval()
    with torch.no_grad():
        assert base(torch.rand(1, 3, 128, 96)).logits.shape == (1, 24, 4, 3)
        assert slide(torch.rand(1, 3, 64, 48)).logits.shape == (1, 24, 8, 6)
    assert (base.output_stride, base.input_multiple) == (32, 32)
    assert (slide.output_stride, slide.input_multiple) == (8, 8)
    assert base.shallow_path is None and base.sr_decoder is None and base.classifier is not None


def test_ablation_switches():
    add = build_segmenter("isdnet", TABLE, width=8, fusion="add")
    assert not hasattr(add.raf16, "shallow_mlp")
    no_shallow = build_segmenter("isdnet", TABLE, width=8, shallow=False)
    assert no_shallow.shallow_path is None and no_shallow.sr_decoder is not None
    assert no_shallow.output_stride == 32
    with pytest.raises(ValueError, match="fusion must be one of"):
        SegmenterConfig(n_classes=3, fusion="cat")
    with pytest.raises(ValueError, match="deep_scale 4"):
        SegmenterConfig(n_classes=3, deep_scale=1)
    with pytest.raises(ValueError, match="unknown segmentation model"):
        build_segmenter("unet", TABLE)
    with pytest.raises(ValueError, match=r"give either a config or overrides \(width\), not both"):
        build_segmenter("isdnet", TABLE, config=add.config, width=16)  # the width was silently ignored
    assert build_segmenter("isdnet", TABLE, config=add.config.to_dict()).config == add.config


def test_default_widths_and_parameter_count():
    model = build_segmenter("isdnet", TABLE)
    n = sum(p.numel() for p in model.parameters())
    assert model.backbone.channels == (128, 256)  # ResNet-18 layout at half width
    assert 4.5e6 < n < 5.5e6
    assert ISDNet(SegmenterConfig(n_classes=7, width=64)).backbone.channels == (256, 512)


def test_encoder_output_stride_and_receptive_field():
    enc = ResNetEncoder(8).eval()
    x = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        c3, c4 = enc(x)
        assert c3.shape == (1, 32, 64, 64) and c4.shape == (1, 64, 64, 64)
        # A change at one input pixel reaches no output more than RECEPTIVE_RADIUS input pixels away.
        y = x.clone()
        y[0, :, 256, 256] += 10
        diff = (enc(y)[1] - c4).abs().sum(1)[0]
    rows = torch.nonzero(diff.sum(1) > 0).flatten()
    reach = max(abs(int(rows.min()) * 8 - 256), abs(int(rows.max()) * 8 - 256))  # output row r sits at input 8 r
    assert 0 < reach <= ResNetEncoder.RECEPTIVE_RADIUS


def test_aspp_uses_the_given_global_mean():
    aspp = ASPP(16, 8, (1, 2)).eval()
    x = torch.rand(1, 16, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), aspp(x, global_mean(x)))
        assert not torch.equal(aspp(x), aspp(x, global_mean(x) + 1))


def test_stdc_block_shapes():
    block = STDCBlock(16, 64, stride=2)
    assert block(torch.rand(1, 16, 32, 32)).shape == (1, 64, 16, 16)
    with pytest.raises(ValueError, match="multiple of 8"):
        STDCBlock(16, 36)


def test_laplacian_residuals_opencv_equals_torch_on_a_real_image():
    from uhrseg.io import read_image

    image = read_image(sorted((DRONE / "test" / "images").glob("*.jpg"))[0])[:256, :320]
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    fast = laplacian_residuals(x)  # OpenCV (CPU, no gradient)
    slow = laplacian_residuals(x.clone().requires_grad_(True))  # torch convolutions
    torch.testing.assert_close(fast, slow.detach(), rtol=0, atol=1e-6)
    assert fast.abs().max() > 0.1  # a real image has high frequencies


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 10**6))
def test_laplacian_pyramid_properties(hq, wq, seed):
    """Constant images have zero residuals, and ``g_0 = H_0 + up(down(g_0))`` exactly (Eq. 1)."""
    h, w = 4 * hq + 4, 4 * wq + 4
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g, dtype=torch.float64)
    res = laplacian_residuals(x)
    assert res.shape == (1, 6, h, w)
    torch.testing.assert_close(res[:, :3] + pyramid_up(pyramid_down(x)), x)
    const = torch.full((1, 3, h, w), 0.3, dtype=torch.float64)
    assert laplacian_residuals(const).abs().max() < 1e-12


def test_fusion_pieces_equal_the_forward_pass():
    model = tiny_segmenter("isdnet")
    raf = model.raf16
    s, d = torch.rand(1, 64, 8, 10), torch.rand(1, 32, 4, 5)
    with torch.no_grad():
        a, b = raf.branches(s, d)
        pieces = raf.combine(a, b, *raf.attention(global_mean(a), global_mean(b)))
        torch.testing.assert_close(pieces, raf(s, d))


def test_segmenter_checkpoint_round_trip(tmp_path):
    model = tiny_segmenter("isdnet", DEEPGLOBE_CLASSES)
    path = save_checkpoint(tmp_path / "m.pt", model, training={"crop": 256})
    back = load_model(path, expected="isdnet")
    assert isinstance(back, ISDNet) and back.class_table == DEEPGLOBE_CLASSES and back.config == model.config
    assert back.training_record["crop"] == 256 and not back.training
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, model(x).logits)
    with pytest.raises(CheckpointError, match="holds a 'isdnet' model, but 'pcnet' was asked for"):
        load_model(path, expected="pcnet")


def test_superpixel_checkpoint_is_refused_as_segmenter(pcnet_random_ckpt):
    with pytest.raises(CheckpointError, match="holds a 'pcnet' model, but 'isdnet' was asked for"):
        load_model(pcnet_random_ckpt, expected="isdnet")


def test_weights_for_another_class_count_are_refused(tmp_path):
    ckpt = torch.load(save_checkpoint(tmp_path / "m.pt", tiny_segmenter("deeppath")), weights_only=True)
    ckpt["classes"] = DEEPGLOBE_CLASSES.to_dict()
    ckpt["config"]["n_classes"] = 7
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="weights do not match the deeppath architecture"):
        load_model(tmp_path / "bad.pt")
