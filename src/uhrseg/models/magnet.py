"""MagNet's refinement module and the MagNet model: a frozen segmentation backbone plus that module.

MagNet (Huynh et al., "Progressive Semantic Segmentation", CVPR 2021; facts in
``../shared/docs/uhr-semantic.md``) refines a coarse prediction scale by scale. At each scale the backbone
segments a patch (its "early" prediction ``O``), and the **refinement module** turns ``[O ; Y]`` (``Y`` the
running prediction cropped to the patch) into a refined prediction ``R``. The module, as in the paper:
optional BatchNorm on the ``2C`` input channels; 3x3 conv ``2C -> 64`` + BN + ReLU; 3x3 conv ``64 -> 64`` +
BN + ReLU; two ResNet bottleneck blocks (planes 32, expansion 4, so 128 channels); 1x1 conv ``128 -> C``
without bias, giving logits.

:class:`MagNet` holds the backbone (any network of :data:`uhrseg.models.SEGMENTERS`, e.g. the packaged ISDNet)
and the module; the multi-scale loop is :mod:`uhrseg.inference.magnet`. The backbone is frozen in training
(:mod:`uhrseg.training.magnet_trainer`), so a MagNet checkpoint carries the backbone's checkpoint inside it
and a user needs one file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..datasets.classes import ClassTable
from .blocks import conv_bn_relu
from .config import StoredConfig
from .segmenters import ISDNet

__all__ = ["MagNet", "RefinementConfig", "RefinementModule"]


@dataclass(frozen=True)
class RefinementConfig(StoredConfig):
    """Architecture of the refinement module, stored in MagNet checkpoints.

    Attributes
    ----------
    n_classes : int
        Classes ``C`` (the backbone's).
    channels : int
        Width of the two 3x3 convolutions (64).
    planes : int
        Bottleneck planes (32; the blocks output ``4 planes`` channels).
    input_bn : bool
        BatchNorm on the ``2C`` input channels.
    """

    n_classes: int
    channels: int = 64
    planes: int = 32
    input_bn: bool = True



class _Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3, 1x1 expand (x4), each with BN, identity or 1x1 projection."""

    expansion = 4

    def __init__(self, c_in: int, planes: int) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(c_in, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, padding=1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.project = None if c_in == c_out else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False),
                                                                 nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.project is None else self.project(x)
        return self.relu(self.body(x) + skip)


class RefinementModule(nn.Module):
    """MagNet's refinement module (see the module notes).

    Parameters
    ----------
    config : RefinementConfig

    Shape
    -----
    - Input: ``early`` and ``running``, ``(B, C, h, w)`` softmax probabilities (the backbone's prediction on the
      patch and the running prediction cropped to it).
    - Output: ``(B, C, h, w)`` logits of the refined prediction ``R``.

    Raises
    ------
    ValueError
        From ``forward``, if ``early`` and ``running`` differ in shape or do not have ``C`` channels.
    """

    def __init__(self, config: RefinementConfig) -> None:
        super().__init__()
        c, n = config.channels, config.n_classes
        self.config = config
        self.input_bn = nn.BatchNorm2d(2 * n) if config.input_bn else nn.Identity()
        self.body = nn.Sequential(conv_bn_relu(2 * n, c), conv_bn_relu(c, c), _Bottleneck(c, config.planes),
                                  _Bottleneck(config.planes * 4, config.planes))
        self.classifier = nn.Conv2d(config.planes * 4, n, 1, bias=False)

    def forward(self, early: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, h, w)`` of the refined prediction from two ``(B, C, h, w)`` probability maps (see the
        class's Shape and Raises)."""
        if early.shape != running.shape or early.shape[1] != self.config.n_classes:
            raise ValueError(f"refinement inputs {tuple(early.shape)} and {tuple(running.shape)} must both be "
                             f"(B, {self.config.n_classes}, h, w)")
        return self.classifier(self.body(self.input_bn(torch.cat([early, running], dim=1))))


class MagNet(nn.Module):
    """A segmentation backbone and MagNet's refinement module, run together by :mod:`uhrseg.inference.magnet`.

    Parameters
    ----------
    backbone : ISDNet
        Any segmentation network of the project (``isdnet``, ``deeppath``); it carries the class table.
    refinement : RefinementModule, optional
        Default: a fresh module for the backbone's classes.

    Raises
    ------
    ValueError
        If the module's class count differs from the backbone's.
    """

    checkpoint_format = "uhrseg-magnet"

    def __init__(self, backbone: ISDNet, refinement: RefinementModule | None = None) -> None:
        super().__init__()
        refinement = refinement or RefinementModule(RefinementConfig(backbone.n_classes))
        if refinement.config.n_classes != backbone.n_classes:
            raise ValueError(f"refinement module for {refinement.config.n_classes} classes, backbone has "
                             f"{backbone.n_classes}")
        self.backbone, self.refinement = backbone, refinement
        self.name = "magnet"
        self.config = refinement.config
        self.training_record: dict = {}

    @property
    def class_table(self) -> ClassTable:
        """The backbone's class table (MagNet adds no classes)."""
        return self.backbone.class_table

    @property
    def n_classes(self) -> int:
        """The backbone's ``C``."""
        return self.backbone.n_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """The backbone's class names, one per id."""
        return self.backbone.class_names

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """The backbone's ``(r, g, b)`` colours, one per id."""
        return self.backbone.palette

    def train(self, mode: bool = True) -> MagNet:
        """Training mode for the refinement module only: the backbone stays frozen in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self
