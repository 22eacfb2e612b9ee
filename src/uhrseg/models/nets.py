"""PCNet and its SCN baseline as ``torch.nn.Module``s (``docs/pcnet.md`` section 2).

Both take an RGB image scaled to ``[0, 1]`` and subtract the per-channel dataset mean themselves (a buffer,
so it moves with the model between devices). Both predict the association map ``Q``: a softmax over the 9
grid cells around each output pixel (see :mod:`uhrseg.grid`).

* :class:`SCN` (Yang et al., CVPR 2020): output at the input resolution.
* :class:`PCNet` (Wang et al., "Generating Superpixels for High-resolution Images with Decoupled Patch
  Calibration", arXiv:2108.08607): input at 1/4 of the output resolution; a sub-pixel layer lifts the decoder
  features to 4x, giving the SR feature, the pixel embedding ``E`` and ``Q``; a super-resolution head
  (training only) reconstructs the high-resolution image.

For inference on large images the trunk (:meth:`SuperpixelNet.decode`) and the head
(:meth:`SuperpixelNet.assoc_logits`) are separate, so that the head can run in strips with
``head_halo`` rows of context (see :mod:`uhrseg.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .config import StoredConfig
from .layers import EncoderDecoder, init_weights

#: Per-channel RGB mean of BSDS500 in [0, 1], subtracted from inputs (docs/pcnet.md s. 2).
BSDS500_MEAN = (0.411, 0.432, 0.450)


@dataclass(frozen=True)
class NetConfig(StoredConfig):
    """Architecture settings, stored in every checkpoint.

    Attributes
    ----------
    channels : tuple of int
        Encoder stage channels (paper: 16, 32, 64, 128, 256).
    embedding_dim : int
        Channels ``D`` of the pixel embedding ``E`` (PCNet only; 16).
    cell_size : int
        Grid cell side ``S`` in output pixels (16).
    negative_slope : float
        LeakyReLU slope (0.1).
    input_mean : tuple of float
        RGB mean in [0, 1] subtracted from the input.
    head_norm : bool
        PCNet only: BatchNorm after the sub-pixel conv and after the embedding conv, as in the authors' code
        (``docs/pcnet.md`` section 7). False (the first packaged weights) leaves both convs unnormalised.
    guide : bool
        PCNet only, our addition to the paper: the head also sees the image at the output resolution (the
        "guide"), through two 3x3 convs (``3 -> guide_channels -> D``) whose output is added to the embedding
        conv's. The trunk still sees only the 1/4 image; the guide lets the head put boundaries on the
        full-resolution edges it could only guess from the 1/4 input. The last guide conv starts at zero, so a
        guided network made from unguided weights (:func:`uhrseg.training.load_init`) computes their function.
    guide_channels : int
        Channels of the guide branch's first conv (8).
    head_blocks : int
        PCNet only, our addition to the paper: residual blocks ``x + conv(LeakyReLU(conv(LeakyReLU(x))))`` (3x3
        convs, ``D`` channels) between the embedding and the association conv, at the output resolution (0, the
        paper's head). They give the head room to combine the trunk's and the guide's evidence nonlinearly. The
        second conv of each starts at zero, so weights without the blocks load into a network with them
        (:func:`uhrseg.training.load_init`) and compute their function.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    embedding_dim: int = 16
    cell_size: int = 16
    negative_slope: float = 0.1
    input_mean: tuple[float, float, float] = field(default=BSDS500_MEAN)
    head_norm: bool = False
    guide: bool = False
    guide_channels: int = 8
    head_blocks: int = 0



class NetOutput(NamedTuple):
    """What a forward pass returns.

    Attributes
    ----------
    assoc : torch.Tensor
        ``(B, 9, h, w)`` float association map ``Q`` (softmax over dim 1).
    embedding : torch.Tensor or None
        ``(B, D, h, w)`` pixel embedding ``E`` (PCNet), else None.
    reconstruction : torch.Tensor or None
        ``(B, 3, h, w)`` super-resolved image in ``[-1, 1]`` (PCNet's SR head), else None.
    logits : torch.Tensor or None
        ``(B, 9, h, w)`` float logits whose softmax is ``assoc`` (for losses that need ``log Q`` where ``Q``
        underflows, :func:`uhrseg.training.losses.association_distillation_loss`).
    """

    assoc: torch.Tensor
    embedding: torch.Tensor | None
    reconstruction: torch.Tensor | None
    logits: torch.Tensor | None = None


class SuperpixelNet(nn.Module):
    """Common part of SCN and PCNet: config, input normalisation and the encoder-decoder trunk.

    Subclasses set ``name``, ``upscale`` (output pixels per input pixel along a side) and ``head_halo``
    (input rows of context the head needs on each side of a strip), and implement :meth:`assoc_logits`.
    """

    name: str = ""
    upscale: int = 1
    head_halo: int = 1

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__()
        self.config = config or NetConfig()
        self.trunk = EncoderDecoder(self.config.channels, self.config.negative_slope)
        self.register_buffer("input_mean", torch.tensor(self.config.input_mean).view(1, 3, 1, 1), persistent=False)

    @property
    def cell_size(self) -> int:
        """Grid cell side ``S`` in output pixels."""
        return self.config.cell_size

    @property
    def uses_guide(self) -> bool:
        """Whether :meth:`assoc_logits` and :meth:`forward` need the guide image (``config.guide``, PCNet)."""
        return False

    @property
    def input_multiple(self) -> int:
        """Input sides must be multiples of this many pixels (16)."""
        return self.trunk.factor

    def decode(self, image: torch.Tensor) -> torch.Tensor:
        """Run the trunk.

        Parameters
        ----------
        image : torch.Tensor
            ``(B, 3, H, W)`` float RGB in ``[0, 1]``, ``H`` and ``W`` multiples of :attr:`input_multiple`.

        Returns
        -------
        torch.Tensor
            ``(B, channels[0], H, W)`` decoder features.

        Raises
        ------
        ValueError
            If the input is not ``(B, 3, H, W)`` with sides that are multiples of 16.
        """
        m = self.input_multiple
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2] % m or image.shape[3] % m:
            raise ValueError(f"{self.name} input must be (B, 3, H, W) with H, W multiples of {m}, "
                             f"got {tuple(image.shape)}")
        return self.trunk(image - self.input_mean.to(image.dtype))

    def assoc_logits(self, features: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        """Association logits ``(B, 9, upscale H, upscale W)`` from decoder features ``(B, C, H, W)``.

        ``guide`` is the ``(B, 3, upscale H, upscale W)`` float RGB image in [0, 1] at the output resolution,
        needed (and only accepted) when :attr:`uses_guide`.

        Raises
        ------
        ValueError
            If ``guide`` is missing for a guided model, given to another, or not of the output's size.
        """
        raise NotImplementedError

    def forward(self, image: torch.Tensor, guide: torch.Tensor | None = None) -> NetOutput:  # pragma: no cover
        raise NotImplementedError

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class SCN(SuperpixelNet):
    """SCN: association map at the input resolution (Yang et al., CVPR 2020, arXiv:2003.12929).

    Shape
    -----
    - Input: ``(B, 3, H, W)`` float RGB in [0, 1]; ``H, W`` multiples of 16.
    - Output: :class:`NetOutput` with ``assoc`` ``(B, 9, H, W)``; no embedding, no reconstruction.
    """

    name = "scn"
    upscale = 1
    head_halo = 1

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__(config)
        self.assoc_head = nn.Conv2d(self.config.channels[0], 9, 3, padding=1)
        init_weights(self, self.config.negative_slope)

    def assoc_logits(self, features: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        _check_guide(self, features, guide)
        return self.assoc_head(features)

    def forward(self, image: torch.Tensor, guide: torch.Tensor | None = None) -> NetOutput:
        _check_guide(self, image, guide)
        logits = self.assoc_logits(self.decode(image))
        return NetOutput(torch.softmax(logits, dim=1), None, None, logits)


class PCNet(SuperpixelNet):
    """PCNet: association map at 4x the input resolution (Wang et al., arXiv:2108.08607, Fig. 3).

    After the trunk: 3x3 conv ``C -> C * 16`` + PixelShuffle(4) + LeakyReLU gives the SR feature
    ``(B, C, 4H, 4W)``; a 3x3 conv gives the pixel embedding ``E`` ``(B, D, 4H, 4W)``; LeakyReLU and a 3x3 conv
    ``D -> 9`` give the association logits. With ``config.head_norm`` a BatchNorm follows the sub-pixel conv
    (before the shuffle) and the embedding conv, as in the authors' code. The SR head (1x1 conv ``C -> 3`` +
    tanh on the SR feature) is used in training only. About 2.3 M parameters. With ``config.guide`` the
    embedding also gets ``guide(G - mean)``, two 3x3 convs on the image ``G`` at the output resolution
    (:class:`NetConfig`; not in the paper); with ``config.head_blocks`` that many :class:`HeadBlock` sit between
    the embedding and the association conv (also ours).

    Shape
    -----
    - Input: ``(B, 3, H, W)`` float RGB in [0, 1] at 1/4 of the output resolution; ``H, W`` multiples of 16;
      with ``config.guide`` also the guide ``(B, 3, 4H, 4W)`` float RGB in [0, 1] (the image the input was
      area-averaged from).
    - Output: :class:`NetOutput` with ``assoc`` ``(B, 9, 4H, 4W)``, ``embedding`` ``(B, D, 4H, 4W)`` and
      ``reconstruction`` ``(B, 3, 4H, 4W)`` in [-1, 1].
    """

    name = "pcnet"
    upscale = 4

    def __init__(self, config: NetConfig | None = None) -> None:
        super().__init__(config)
        c, d = self.config.channels[0], self.config.embedding_dim
        slope = self.config.negative_slope
        norm = self.config.head_norm
        self.subpixel = nn.Sequential(
            nn.Conv2d(c, c * self.upscale**2, 3, padding=1),
            *([nn.BatchNorm2d(c * self.upscale**2)] if norm else []),
            nn.PixelShuffle(self.upscale),
            nn.LeakyReLU(slope, inplace=True),
        )
        self.embed = nn.Conv2d(c, d, 3, padding=1)
        self.embed_norm = nn.BatchNorm2d(d) if norm else nn.Identity()
        self.head_blocks = nn.Sequential(*(HeadBlock(d, slope) for _ in range(self.config.head_blocks)))
        self.assoc_head = nn.Sequential(nn.LeakyReLU(slope), nn.Conv2d(d, 9, 3, padding=1))
        self.sr_head = nn.Sequential(nn.Conv2d(c, 3, 1), nn.Tanh())
        if self.config.guide:
            g = self.config.guide_channels
            self.guide = nn.Sequential(nn.Conv2d(3, g, 3, padding=1), nn.LeakyReLU(slope),
                                       nn.Conv2d(g, d, 3, padding=1))
        init_weights(self, slope)
        if self.config.guide:
            nn.init.zeros_(self.guide[2].weight)
            nn.init.zeros_(self.guide[2].bias)
        for block in self.head_blocks:
            nn.init.zeros_(block.conv_b.weight)
            nn.init.zeros_(block.conv_b.bias)

    @property
    def head_halo(self) -> int:
        # Input rows of context for one output strip: the sub-pixel conv needs 1 input row; after it, the
        # embedding conv (1 output row), 2 rows per head block and the association conv (1 row) need
        # 2 + 2 head_blocks output rows, i.e. ceil((2 + 2 head_blocks) / 4) input rows more. The guide branch
        # reads the guide image itself, whose window spans the whole halo: its two convs, the blocks and the
        # association conv (3 + 2 head_blocks output rows) always fit in that.
        return 1 + -(-(2 + 2 * self.config.head_blocks) // self.upscale)

    @property
    def uses_guide(self) -> bool:
        return self.config.guide

    def _embedding(self, sr_feature: torch.Tensor, guide: torch.Tensor | None) -> torch.Tensor:
        e = self.embed(sr_feature)
        if self.config.guide:
            e = e + self.guide(guide - self.input_mean.to(guide.dtype))
        return self.embed_norm(e)

    def assoc_logits(self, features: torch.Tensor, guide: torch.Tensor | None = None) -> torch.Tensor:
        sr_feature = self.subpixel(features)
        _check_guide(self, sr_feature, guide)
        return self.assoc_head(self.head_blocks(self._embedding(sr_feature, guide)))

    def forward(self, image: torch.Tensor, guide: torch.Tensor | None = None) -> NetOutput:
        sr_feature = self.subpixel(self.decode(image))
        _check_guide(self, sr_feature, guide)
        embedding = self._embedding(sr_feature, guide)
        logits = self.assoc_head(self.head_blocks(embedding))
        return NetOutput(torch.softmax(logits, dim=1), embedding, self.sr_head(sr_feature), logits)


class HeadBlock(nn.Module):
    """Residual block of PCNet's head (``NetConfig.head_blocks``): ``x + conv_b(f(conv_a(f(x))))`` with ``f``
    LeakyReLU and 3x3 convs keeping the ``channels``; ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int, negative_slope: float) -> None:
        super().__init__()
        self.act = nn.LeakyReLU(negative_slope)
        self.conv_a = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_b(self.act(self.conv_a(self.act(x))))


def _check_guide(model: SuperpixelNet, out: torch.Tensor, guide: torch.Tensor | None) -> None:
    """Raise ValueError unless ``guide`` is given exactly when the model uses one, shaped ``(B, 3, h, w)`` like
    the output-resolution tensor ``out`` (``(B, C, h, w)``)."""
    if not model.uses_guide:
        if guide is not None:
            raise ValueError(f"this {model.name} takes no guide image (NetConfig.guide is off)")
        return
    if guide is None:
        raise ValueError(f"this {model.name} needs the guide image at the output resolution (NetConfig.guide)")
    want = (out.shape[0], 3, *out.shape[2:])
    if tuple(guide.shape) != want:
        raise ValueError(f"{model.name} guide must be {want} (the output resolution), got {tuple(guide.shape)}")


#: Model registry: name -> class.
MODELS: dict[str, type[SuperpixelNet]] = {"pcnet": PCNet, "scn": SCN}


def build_model(name: str, config: NetConfig | None = None) -> SuperpixelNet:
    """Create an untrained model by name (``"pcnet"`` or ``"scn"``).

    Raises
    ------
    ValueError
        If the name is not in :data:`MODELS`.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(config)
