"""Building blocks shared by SCN and PCNet: the 5-stage encoder and 4-step decoder (``docs/pcnet.md`` s. 2)."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_lrelu(c_in: int, c_out: int, stride: int = 1, negative_slope: float = 0.1) -> nn.Sequential:
    """3x3 convolution (padding 1) + BatchNorm + LeakyReLU: ``(B, c_in, H, W) -> (B, c_out, H/stride, W/stride)``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(negative_slope, inplace=True),
    )


class EncoderDecoder(nn.Module):
    """SCN's U-shaped trunk: 5 encoder stages and 4 decoder steps with skip connections.

    Encoder stage ``i`` is two :func:`conv_bn_lrelu`; stages 2-5 open with stride 2. Each decoder step is a
    4x4 stride-2 transposed convolution (channels halve) + LeakyReLU, concatenation with the encoder skip of
    the same size and a :func:`conv_bn_lrelu`.

    Parameters
    ----------
    channels : tuple of int
        Channels of the 5 encoder stages, ``(16, 32, 64, 128, 256)`` in the paper.
    negative_slope : float
        LeakyReLU slope (0.1).

    Shape
    -----
    - Input: ``(B, 3, H, W)`` float, ``H`` and ``W`` multiples of 16.
    - Output: ``(B, channels[0], H, W)``.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 256), negative_slope: float = 0.1) -> None:
        super().__init__()
        self.channels = tuple(channels)
        stages = []
        c_prev = 3
        for i, c in enumerate(self.channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(conv_bn_lrelu(c_prev, c, stride, negative_slope),
                                        conv_bn_lrelu(c, c, 1, negative_slope)))
            c_prev = c
        self.encoder = nn.ModuleList(stages)
        ups, fuses = [], []
        for c_hi, c_lo in zip(self.channels[:0:-1], self.channels[-2::-1]):
            ups.append(nn.Sequential(nn.ConvTranspose2d(c_hi, c_lo, 4, stride=2, padding=1),
                                     nn.LeakyReLU(negative_slope, inplace=True)))
            fuses.append(conv_bn_lrelu(2 * c_lo, c_lo, 1, negative_slope))
        self.up = nn.ModuleList(ups)
        self.fuse = nn.ModuleList(fuses)

    @property
    def factor(self) -> int:
        """Input sides must be multiples of this (2 ** number of stride-2 stages)."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for up, fuse in zip(self.up, self.fuse):
            x = fuse(torch.cat([up(x), skips.pop()], dim=1))
        return x


def init_weights(module: nn.Module, negative_slope: float = 0.1) -> None:
    """Kaiming-normal init (``a = negative_slope``) for (transposed) convolutions, BN weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=negative_slope)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def transposed_conv_as_subpixel(layer: nn.ConvTranspose2d) -> nn.Sequential:
    """The same layer as a 3x3 convolution to ``4 C_out`` channels followed by ``PixelShuffle(2)``.

    A 4x4 stride-2 transposed convolution with padding 1 gives output pixel ``2 m + a`` from input pixels
    ``m - 1 .. m + 1`` only, so it is a 3x3 convolution per output phase ``(a, b)`` (Shi et al., "Real-Time
    Single Image and Video Super-Resolution Using an Efficient Sub-Pixel CNN", CVPR 2016). The two are equal in
    exact arithmetic (float32 results agree to about 1e-6). Inference uses this form because oneDNN's CPU
    transposed convolution picks its algorithm by tensor size, so a tile and the whole image could round
    differently, while its plain convolutions give bit-identical values for any crop.

    Parameters
    ----------
    layer : nn.ConvTranspose2d
        Kernel 4, stride 2, padding 1, no output padding, groups 1, dilation 1.

    Returns
    -------
    nn.Sequential
        ``Conv2d(C_in, 4 C_out, 3, padding=1)`` and ``PixelShuffle(2)``: ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``.

    Raises
    ------
    ValueError
        If ``layer`` has another geometry.
    """
    if (layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.groups, layer.dilation) != (
            (4, 4), (2, 2), (1, 1), (0, 0), 1, (1, 1)):
        raise ValueError("only 4x4 stride-2 padding-1 transposed convolutions can be converted")
    w = layer.weight.detach()  # (C_in, C_out, 4, 4)
    c_in, c_out = w.shape[:2]
    # Output phase a takes kernel tap k from the input at offset j - 1: phase 0 uses (j=1, k=1) and (j=0, k=3),
    # phase 1 uses (j=2, k=0) and (j=1, k=2).
    taps = {0: ((1, 1), (0, 3)), 1: ((2, 0), (1, 2))}
    weight = w.new_zeros(c_out, 2, 2, c_in, 3, 3)
    for a in (0, 1):
        for j, k in taps[a]:
            for b in (0, 1):
                for jj, kk in taps[b]:
                    weight[:, a, b, :, j, jj] = w[:, :, k, kk].t()
    conv = nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=layer.bias is not None)
    conv = conv.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(4 * c_out, c_in, 3, 3))
        if layer.bias is not None:
            conv.bias.copy_(layer.bias.detach().repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))
