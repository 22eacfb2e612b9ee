"""Semantic-segmentation networks for ultra-high-resolution images: ISDNet and its deep-path baseline.

ISDNet (Guo et al., "ISDNet: Integrating Shallow and Deep Networks for Efficient Ultra-high Resolution
Segmentation", CVPR 2022; facts in ``../shared/docs/uhr-semantic.md``):

* **deep path**: the image downsampled by ``deep_scale`` (4) through a ResNet-18-style encoder dilated to
  output stride 8 (:class:`uhrseg.models.blocks.ResNetEncoder`) and an ASPP head, features at 1/32 of the
  image, with a classifier of its own; during training its prediction is supervised too (ISDNet is a cascade of
  two decode heads in the authors' mmsegmentation code, each with its loss), and an auxiliary FCN head sits on
  stage 3;
* **shallow path**: the level-0 and upsampled level-1 Laplacian residuals of the full-resolution image (Eq. 1)
  through a light STDC-style network, features at 1/8 and 1/16;
* two **relation-aware fusions** (:class:`RAF`): the 1/16 shallow features with the deep features, then the
  1/8 shallow features with that result; a segmentation head at 1/8;
* training only: a **super-resolution decoder** on the deep features that reconstructs the Laplacian residuals
  (L_SR) and the **structure distillation** between the affinities of deep and SR features (L_SD).

Every part can be switched off for the ablations (:class:`SegmenterConfig`). With the shallow path off the
network is the deep path alone, with its own classifier: the **baseline** (``deep_scale = 4``, run on the
whole image at 1/4) and, with ``deep_scale = 1``, the **sliding-window** comparator run on full-resolution
windows. :data:`SEGMENTERS` maps the model names ``isdnet`` and ``deeppath`` to their builders.

Our departures from the paper, all for training from scratch on a 2-core CPU (the widths are settings):
half the paper's widths by default (ResNet width 32 instead of 64, shallow features 128 / 256 instead of
256 / 512, fusion 64 instead of 128 channels), ASPP dilations (1, 6, 12, 18) for feature maps of tens of
pixels instead of (1, 12, 24, 36), and no BatchNorm on pooled (B, C, 1, 1) tensors (the RAF descriptors and
ASPP's image pooling), which would need batches larger than the 2-4 images a CPU step holds.

All networks take ``(B, 3, H, W)`` RGB in [0, 1] (they normalise it themselves with ``input_mean`` and
``input_std``, buffers that move with the model) and return logits ``(B, C, H / s, W / s)`` with output stride
``s = model.output_stride``; ``H`` and ``W`` must be multiples of ``model.input_multiple``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets.classes import IGNORE_INDEX, ClassTable
from .blocks import (
    ASPP,
    LAPLACIAN_RADIUS,
    ResNetEncoder,
    STDCBlock,
    conv_bn_relu,
    global_mean,
    init_segmenter,
    laplacian_residuals,
)
from .config import StoredConfig

__all__ = ["RAF", "SEGMENTERS", "ISDNet", "SegmenterConfig", "SegmenterOutput", "ShallowPath", "SRDecoder",
           "build_segmenter", "structure_affinity"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FUSIONS = ("raf", "add")


@dataclass(frozen=True)
class SegmenterConfig(StoredConfig):
    """Architecture settings, stored in every checkpoint.

    Attributes
    ----------
    n_classes : int
        Output classes ``C`` (the class table's length, ignored classes included).
    width : int
        ResNet stem width (ResNet-18: 64; default 32).
    aspp_channels : int
        ASPP output channels (128).
    aspp_dilations : tuple of int
        ASPP branch dilations at the encoder's output stride.
    shallow_channels : tuple of int
        Shallow-path channels at 1/2, 1/4, 1/8 and 1/16 (paper: the last two 256 and 512).
    fusion_channels : int
        RAF channels (paper 128).
    head_channels : int
        Hidden channels of the segmentation and auxiliary heads (64).
    deep_scale : int
        The deep path sees the image downsampled by this factor (4 for ISDNet and the baseline; 1 for the
        sliding-window network).
    shallow : bool
        Shallow path and fusion on (ISDNet) or off (the deep path alone, with its own classifier).
    fusion : str
        ``"raf"`` (relation-aware fusion) or ``"add"`` (the ablation: the same convolutions, no attention).
    aux_head : bool
        Auxiliary FCN head on stage 3 (training only).
    deep_head : bool
        With the shallow path on: the deep path's own classifier is kept and its prediction supervised during
        training (the first head of ISDNet's cascade); inference uses the fused head only.
    sr_decoder : bool
        Super-resolution decoder for L_SR and L_SD (training only).
    input_mean, input_std : tuple of float
        RGB normalisation of inputs in [0, 1].

    Raises
    ------
    ValueError
        If ``n_classes`` is outside 1 .. 255, ``fusion`` is unknown, ``deep_scale`` is not 1, 2, 4 or 8, or the
        shallow path is on with a ``deep_scale`` other than 4.
    """

    n_classes: int
    width: int = 32
    aspp_channels: int = 128
    aspp_dilations: tuple[int, ...] = (1, 6, 12, 18)
    shallow_channels: tuple[int, int, int, int] = (16, 32, 128, 256)
    fusion_channels: int = 64
    head_channels: int = 64
    deep_scale: int = 4
    shallow: bool = True
    fusion: str = "raf"
    aux_head: bool = True
    deep_head: bool = True
    sr_decoder: bool = True
    input_mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    input_std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        if not 1 <= self.n_classes <= IGNORE_INDEX:
            raise ValueError(f"n_classes must be in 1..{IGNORE_INDEX}, got {self.n_classes}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.deep_scale not in (1, 2, 4, 8):
            raise ValueError(f"deep_scale must be 1, 2, 4 or 8, got {self.deep_scale}")
        if self.shallow and self.deep_scale != 4:
            raise ValueError("ISDNet's shallow path fuses with a deep path at deep_scale 4")



class SegmenterOutput(NamedTuple):
    """What a forward pass returns (the training-only entries are None in eval mode).

    Attributes
    ----------
    logits : torch.Tensor
        ``(B, C, H / s, W / s)`` class scores.
    aux_logits : torch.Tensor or None
        ``(B, C, H / 32, W / 32)`` from the stage-3 auxiliary head.
    deep_logits : torch.Tensor or None
        ``(B, C, H / 32, W / 32)`` from the deep path's own classifier (ISDNet with ``deep_head``).
    reconstruction : torch.Tensor or None
        ``(B, 3, H / 2, W / 2)`` the SR decoder's reconstruction of the Laplacian residuals ``H_0 + up(H_1)``.
    target : torch.Tensor or None
        ``(B, 3, H, W)`` that residual sum (the L_SR target).
    deep_feature, sr_feature : torch.Tensor or None
        ``(B, *, H / 32, W / 32)`` the deep features and the SR decoder's first features pooled to the same
        size (the two sides of L_SD).
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None = None
    deep_logits: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    target: torch.Tensor | None = None
    deep_feature: torch.Tensor | None = None
    sr_feature: torch.Tensor | None = None


class ShallowPath(nn.Module):
    """Light STDC-style network on the 6-channel Laplacian residuals.

    Two strided 3x3 conv-BN-ReLU (to 1/2 and 1/4), then two stages of two :class:`STDCBlock` each (to 1/8 and
    1/16).

    Shape
    -----
    - Input: ``(B, 6, H, W)``, ``H`` and ``W`` multiples of 16.
    - Output: ``(s8, s16)``: ``(B, channels[2], H / 8, W / 8)`` and ``(B, channels[3], H / 16, W / 16)``.
    """

    #: Receptive-field radius in input pixels.
    RECEPTIVE_RADIUS = 135

    def __init__(self, channels: tuple[int, int, int, int] = (16, 32, 128, 256)) -> None:
        super().__init__()
        c2, c4, c8, c16 = channels
        self.stem = nn.Sequential(conv_bn_relu(6, c2, 3, 2), conv_bn_relu(c2, c4, 3, 2))
        self.stage8 = nn.Sequential(STDCBlock(c4, c8, 2), STDCBlock(c8, c8))
        self.stage16 = nn.Sequential(STDCBlock(c8, c16, 2), STDCBlock(c16, c16))

    def forward(self, residuals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s8 = self.stage8(self.stem(residuals))
        return s8, self.stage16(s8)


class RAF(nn.Module):
    """Relation-aware fusion of a shallow (fine) and a deep (coarse) feature map (ISDNet).

    Each input goes through a 3x3 conv-BN-ReLU to ``channels``; each is average-pooled over the whole image
    and a 1x1 convolution gives its channel descriptor. The descriptors, split into ``groups`` groups, give a
    ``groups x groups`` relation matrix (their product); two MLPs turn it into corrections, and the attention of
    each side is ``sigmoid(descriptor + g ReLU(MLP(relation)))`` with learnable scalars ``g`` starting at 0.
    The reweighted deep features are upsampled by 2 and pass a 3x3 conv-BN-ReLU; the output is a 3x3 conv-BN
    of the sum. ``mode="add"`` is the ablation without the attention.

    The forward pass is split into :meth:`branches`, :meth:`attention` and :meth:`combine` so that tiled
    inference can compute the whole image's means first.

    Shape
    -----
    ``(B, c_shallow, 2h, 2w), (B, c_deep, h, w) -> (B, channels, 2h, 2w)``.

    Raises
    ------
    ValueError
        If ``channels`` is not a multiple of ``groups``.
    """

    def __init__(self, c_shallow: int, c_deep: int, channels: int = 64, groups: int = 16, mode: str = "raf") -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"RAF channels ({channels}) must be a multiple of groups ({groups})")
        self.mode, self.groups = mode, groups
        self.shallow_conv = conv_bn_relu(c_shallow, channels)
        self.deep_conv = conv_bn_relu(c_deep, channels)
        self.deep_up_conv = conv_bn_relu(channels, channels)
        self.out_conv = conv_bn_relu(channels, channels, relu=False)
        if mode == "raf":
            self.shallow_desc = nn.Conv2d(channels, channels, 1)
            self.deep_desc = nn.Conv2d(channels, channels, 1)
            hidden = channels
            self.shallow_mlp = nn.Sequential(nn.Linear(groups * groups, hidden), nn.ReLU(inplace=True),
                                             nn.Linear(hidden, channels))
            self.deep_mlp = nn.Sequential(nn.Linear(groups * groups, hidden), nn.ReLU(inplace=True),
                                          nn.Linear(hidden, channels))
            self.shallow_gain = nn.Parameter(torch.zeros(1))
            self.deep_gain = nn.Parameter(torch.zeros(1))

    def branches(self, shallow: torch.Tensor, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two 3x3 conv-BN-ReLU branches (local: tiles with a halo give the same values)."""
        return self.shallow_conv(shallow), self.deep_conv(deep)

    def attention(self, shallow_mean: torch.Tensor, deep_mean: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """Channel attentions ``(B, channels, 1, 1)`` from the whole image's branch means (None for ``add``)."""
        if self.mode != "raf":
            return None, None
        a_s = self.shallow_desc(shallow_mean).flatten(1)
        a_d = self.deep_desc(deep_mean).flatten(1)
        b = a_s.shape[0]
        relation = torch.bmm(a_s.view(b, self.groups, -1), a_d.view(b, self.groups, -1).transpose(1, 2)).flatten(1)
        att_s = torch.sigmoid(a_s + self.shallow_gain * F.relu(self.shallow_mlp(relation)))
        att_d = torch.sigmoid(a_d + self.deep_gain * F.relu(self.deep_mlp(relation)))
        return att_s[:, :, None, None], att_d[:, :, None, None]

    def combine(self, s: torch.Tensor, d: torch.Tensor, att_s: torch.Tensor | None,
                att_d: torch.Tensor | None) -> torch.Tensor:
        """Reweight, upsample the deep side by 2, add and project (local)."""
        if att_s is not None:
            s, d = s * att_s, d * att_d
        d = self.deep_up_conv(F.interpolate(d, scale_factor=2, mode="bilinear", align_corners=False))
        return self.out_conv(s + d)

    def forward(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        s, d = self.branches(shallow, deep)
        return self.combine(s, d, *self.attention(global_mean(s), global_mean(d)))


class SRDecoder(nn.Module):
    """Training-only super-resolution decoder on the deep features (x4, x2, x2 bilinear upsampling).

    Shape
    -----
    ``(B, c_in, h, w) -> (reconstruction (B, 3, 16 h, 16 w), first features (B, 64, 4 h, 4 w))``.
    """

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.up4 = conv_bn_relu(c_in, 64)
        self.up2a = conv_bn_relu(64, 32)
        self.up2b = conv_bn_relu(32, 16)
        self.out = nn.Conv2d(16, 3, 1)

    def forward(self, deep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.up4(F.interpolate(deep, scale_factor=4, mode="bilinear", align_corners=False))
        x = self.up2a(F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up2b(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.out(x), f


def structure_affinity(feature: torch.Tensor) -> torch.Tensor:
    """Cosine affinity of all positions: ``(B, C, h, w) -> (B, h w, h w)`` (features L2-normalised per position)."""
    f = F.normalize(feature.flatten(2), dim=1)
    return torch.bmm(f.transpose(1, 2), f)


def _head(c_in: int, hidden: int, n_classes: int, dropout: float = 0.1) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(c_in, hidden), nn.Dropout2d(dropout), nn.Conv2d(hidden, n_classes, 1))


class ISDNet(nn.Module):
    """ISDNet, or its deep path alone when ``config.shallow`` is off (see the module notes).

    Parameters
    ----------
    config : SegmenterConfig
        Architecture.
    class_table : ClassTable, optional
        Class names, palette and ignored classes (stored in checkpoints); default: ``class0 .. classC-1``
        in grey levels.
    name : str
        Registry name (``"isdnet"`` or ``"deeppath"``), stored in checkpoints.

    Shape
    -----
    - Input: ``(B, 3, H, W)`` float RGB in [0, 1], ``H`` and ``W`` multiples of :attr:`input_multiple`.
    - Output: :class:`SegmenterOutput` with logits ``(B, C, H / s, W / s)``, ``s`` = :attr:`output_stride`.

    Raises
    ------
    ValueError
        If the class table's length differs from ``config.n_classes``.
    """

    checkpoint_format = "uhrseg-segmenter"

    def __init__(self, config: SegmenterConfig, class_table: ClassTable | None = None, name: str = "isdnet") -> None:
        super().__init__()
        if class_table is None:
            step = max(1, 255 // max(1, config.n_classes))
            class_table = ClassTable(tuple(f"class{i}" for i in range(config.n_classes)),
                                     tuple((i * step % 256,) * 3 for i in range(config.n_classes)))
        if class_table.n_classes != config.n_classes:
            raise ValueError(f"class table has {class_table.n_classes} classes, the config {config.n_classes}")
        self.config, self.class_table, self.name = config, class_table, name
        self.training_record: dict = {}
        c = config
        self.register_buffer("input_mean", torch.tensor(c.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(c.input_std).view(1, 3, 1, 1), persistent=False)
        self.backbone = ResNetEncoder(c.width)
        c3, c4 = self.backbone.channels
        self.aspp = ASPP(c4, c.aspp_channels, c.aspp_dilations)
        self.aux_head = _head(c3, c.head_channels, c.n_classes) if c.aux_head else None
        self.sr_decoder = SRDecoder(c.aspp_channels) if c.sr_decoder else None
        if c.shallow:
            self.shallow_path = ShallowPath(c.shallow_channels)
            self.raf16 = RAF(c.shallow_channels[3], c.aspp_channels, c.fusion_channels, mode=c.fusion)
            self.raf8 = RAF(c.shallow_channels[2], c.fusion_channels, c.fusion_channels, mode=c.fusion)
            self.head = _head(c.fusion_channels, c.head_channels, c.n_classes)
        else:
            self.shallow_path = self.raf16 = self.raf8 = self.head = None
        self.classifier = None
        if not c.shallow or c.deep_head:
            self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(c.aspp_channels, c.n_classes, 1))
        init_segmenter(self)

    # -- geometry -------------------------------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        """Output classes ``C`` (ignored ones included)."""
        return self.config.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """Name of each class id (the class table's)."""
        return self.class_table.names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """``(r, g, b)`` 0-255 colour of each class id (the class table's)."""
        return self.class_table.colours

    @property
    def ignore_index(self) -> int:
        """The target value that losses and metrics skip (255)."""
        return IGNORE_INDEX

    @property
    def output_stride(self) -> int:
        """Image pixels per logit pixel: 8 with the shallow path, else 8 x ``deep_scale``."""
        return 8 if self.config.shallow else 8 * self.config.deep_scale

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this (32 for ISDNet and the 1/4 baseline, 8 at full resolution)."""
        return 32 if self.config.shallow else 8 * self.config.deep_scale

    @property
    def deep_halo(self) -> int:
        """Context in deep-path input pixels that a tile of the deep path needs (encoder + ASPP reach), a
        multiple of 8."""
        reach = ResNetEncoder.RECEPTIVE_RADIUS + 8 * max(self.config.aspp_dilations) + 8
        return -(-reach // 8) * 8

    @property
    def full_halo(self) -> int:
        """Context in image pixels that a full-resolution tile of the shallow path and fusion needs, a multiple
        of 32 (Laplacian 12 + shallow path 135 + fusion and head about 140)."""
        return -(-(LAPLACIAN_RADIUS + ShallowPath.RECEPTIVE_RADIUS + 140) // 32) * 32

    # -- pieces used by tiled inference ---------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in [0, 1] -> normalised by ``input_mean`` and ``input_std``."""
        return (x - self.input_mean) / self.input_std

    def deep_encoder(self, xq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder stages 3 and 4 of the normalised deep-path input (local, receptive radius
        :attr:`ResNetEncoder.RECEPTIVE_RADIUS`)."""
        return self.backbone(xq)

    def deep_head(self, c4: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """ASPP: deep features ``(B, aspp_channels, h, w)``; ``pooled`` is the whole image's mean of ``c4``."""
        return self.aspp(c4, pooled)

    def shallow_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shallow-path features ``(s8, s16)`` of the normalised full-resolution image (local)."""
        return self.shallow_path(laplacian_residuals(x))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        """Logits from the fused 1/8 features (ISDNet) or from the deep features (deep path alone)."""
        return self.head(feature) if self.config.shallow else self.classifier(feature)

    # -- training and whole-image forward -------------------------------------------------------------------
    def forward(self, image: torch.Tensor) -> SegmenterOutput:
        x = self.normalize(image)
        xq = F.avg_pool2d(x, self.config.deep_scale) if self.config.deep_scale > 1 else x
        c3, c4 = self.deep_encoder(xq)
        deep = self.deep_head(c4)
        if self.config.shallow:
            s8, s16 = self.shallow_features(x)
            f16 = self.raf16(s16, deep)
            logits = self.classify(self.raf8(s8, f16))
        else:
            logits = self.classify(deep)
        out = SegmenterOutput(logits)
        if not self.training:
            return out
        aux = self.aux_head(c3) if self.aux_head is not None else None
        deep_logits = self.classifier(deep) if self.config.shallow and self.classifier is not None else None
        rec = target = sr_feature = None
        if self.sr_decoder is not None:
            rec, first = self.sr_decoder(deep)
            residuals = laplacian_residuals(x)
            target = residuals[:, :3] + residuals[:, 3:]
            sr_feature = F.avg_pool2d(first, first.shape[2] // deep.shape[2])
        return out._replace(aux_logits=aux, deep_logits=deep_logits, reconstruction=rec, target=target,
                            deep_feature=deep,
                            sr_feature=sr_feature)


def _build_isdnet(n_classes: int, class_table: ClassTable | None = None, **overrides) -> ISDNet:
    return ISDNet(SegmenterConfig(n_classes=n_classes, **overrides), class_table, name="isdnet")


def _build_deeppath(n_classes: int, class_table: ClassTable | None = None, **overrides) -> ISDNet:
    overrides = {"shallow": False, "sr_decoder": False, **overrides}
    return ISDNet(SegmenterConfig(n_classes=n_classes, **overrides), class_table, name="deeppath")


#: Model names -> builders ``(n_classes, class_table=None, **config overrides) -> ISDNet``.
SEGMENTERS = {"isdnet": _build_isdnet, "deeppath": _build_deeppath}


def build_segmenter(name: str, class_table: ClassTable, config: SegmenterConfig | dict | None = None,
                    **overrides) -> ISDNet:
    """Build a segmentation network by name.

    Parameters
    ----------
    name : str
        ``"isdnet"`` or ``"deeppath"`` (the deep path alone: the 1/4 baseline, or with ``deep_scale=1`` the
        sliding-window network).
    class_table : ClassTable
        The classes (``n_classes`` comes from it).
    config : SegmenterConfig or dict, optional
        A stored config (from a checkpoint), used as it is.
    **overrides
        :class:`SegmenterConfig` fields (e.g. ``width=8``, ``fusion="add"``) applied on top of the named
        model's defaults when no ``config`` is given.

    Returns
    -------
    ISDNet
        A new network (``torch.nn.Module``) in training mode, weights initialised.

    Raises
    ------
    ValueError
        Unknown name, invalid settings, or ``overrides`` given with a ``config``.
    """
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmentation model {name!r}; choose one of {', '.join(SEGMENTERS)}")
    if config is not None and overrides:
        raise ValueError(f"give either a config or overrides ({', '.join(overrides)}), not both")
    if config is not None:
        cfg = config if isinstance(config, SegmenterConfig) else SegmenterConfig.from_dict(config)
        return ISDNet(cfg, class_table, name=name)
    return SEGMENTERS[name](class_table.n_classes, class_table, **overrides)
