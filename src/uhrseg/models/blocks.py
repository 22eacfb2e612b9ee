"""Building blocks of the semantic-segmentation networks, on plain torch (``../shared/docs/uhr-semantic.md``).

* :func:`conv_bn_relu`: convolution + BatchNorm (+ ReLU).
* :class:`BasicBlock` and :class:`ResNetEncoder`: a ResNet-18-style encoder, dilated to output stride 8
  (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; dilation as in Chen et al.,
  DeepLab v3, arXiv:1706.05587).
* :class:`ASPP`: atrous spatial pyramid pooling with an image-pooling branch (DeepLab v3).
* :class:`STDCBlock`: the Short-Term Dense Concatenate module (Fan et al., "Rethinking BiSeNet for Real-time
  Semantic Segmentation", CVPR 2021).
* :func:`laplacian_residuals`: the two finest Laplacian-pyramid residuals of an image, ISDNet's shallow-path
  input (Eq. 1 of the ISDNet slides: ``H_i = g_i(I) - Upsample(g_{i+1}(I))``).

Every block is translation-equivariant except the image-pooling branch of :class:`ASPP`, whose global mean can
be passed in (``pooled=``) so that tiles of a large image use the whole image's statistic.
"""

from __future__ import annotations

import cv2
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPP", "BasicBlock", "ResNetEncoder", "STDCBlock", "conv_bn_relu", "global_mean", "init_segmenter",
           "laplacian_residuals", "pyramid_down", "pyramid_up"]


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, dilation: int = 1,
                 relu: bool = True) -> nn.Sequential:
    """``kernel x kernel`` convolution (no bias, "same" padding) + BatchNorm (+ ReLU).

    Shape: ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)`` (sides rounded up).
    """
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel // 2),
                                         dilation=dilation, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean over all positions, ``(B, C, H, W) -> (B, C, 1, 1)``, summed in float64.

    Tiled inference adds float64 tile sums instead; both round to the same float32 value in practice.
    """
    return (x.double().sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3])).to(x.dtype)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN with a residual connection, optionally strided or dilated.

    Parameters
    ----------
    c_in, c_out : int
        Channels in and out.
    stride : int
        Stride of the first convolution (1 or 2); a 1x1 conv-BN projects the shortcut when needed.
    dilation : int
        Dilation of the second convolution; the first uses ``first_dilation``.
    first_dilation : int
        Dilation of the first convolution (the previous stage's, as in dilated ResNets).

    Shape
    -----
    ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1, first_dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, 3, stride, first_dilation)
        self.conv2 = conv_bn_relu(c_out, c_out, 3, 1, dilation, relu=False)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                         else conv_bn_relu(c_in, c_out, 1, stride, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-18 layout (a 7x7 stem, max pooling, 4 stages of 2 basic blocks), dilated to output stride 8.

    Stages 3 and 4 keep the resolution of stage 2 and dilate their convolutions by 2 and 4 instead of
    striding, so the features stay at 1/8 of the input.

    Parameters
    ----------
    width : int
        Channels of the stem and stage 1; stages have ``width x (1, 2, 4, 8)`` (ResNet-18: 64).

    Shape
    -----
    - Input: ``(B, 3, H, W)``, normalised RGB; ``H`` and ``W`` multiples of 8.
    - Output: ``(c3, c4)``, stage-3 and stage-4 features, ``(B, 4 width, H / 8, W / 8)`` and
      ``(B, 8 width, H / 8, W / 8)``.
    """

    #: Receptive-field radius in input pixels (stem and pooling 5, stage 1 16, stage 2 28, stage 3 56,
    #: stage 4 112; each 3x3 convolution adds its dilation times its stride): context a tile needs.
    RECEPTIVE_RADIUS = 217

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        w = width
        self.width = w
        self.stem = nn.Sequential(nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, dilation=2, first_dilation=1),
                                    BasicBlock(4 * w, 4 * w, dilation=2, first_dilation=2))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, dilation=4, first_dilation=2),
                                    BasicBlock(8 * w, 8 * w, dilation=4, first_dilation=4))

    @property
    def channels(self) -> tuple[int, int]:
        """Channels of the stage-3 and stage-4 outputs."""
        return 4 * self.width, 8 * self.width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.stem(x)))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3): parallel 1x1 / dilated 3x3 branches and image pooling.

    Parameters
    ----------
    c_in : int
        Input channels.
    c_out : int
        Channels of each branch and of the output (ISDNet: 128).
    dilations : tuple of int
        Dilation of each branch; 1 gives a 1x1 branch.

    Shape
    -----
    ``(B, c_in, h, w) -> (B, c_out, h, w)``.
    """

    def __init__(self, c_in: int, c_out: int = 128, dilations: tuple[int, ...] = (1, 6, 12, 18)) -> None:
        super().__init__()
        self.dilations = tuple(dilations)
        self.branches = nn.ModuleList(conv_bn_relu(c_in, c_out, 1 if d == 1 else 3, 1, d) for d in self.dilations)
        # No BatchNorm on the pooled (B, C, 1, 1) branch: it would need batches of 2 or more in training.
        self.pool_branch = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu((len(self.dilations) + 1) * c_out, c_out, 1)

    @property
    def receptive_radius(self) -> int:
        """Largest reach of a branch, in input pixels of this module (the image pooling aside)."""
        return max(self.dilations)

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None = None) -> torch.Tensor:
        """``pooled``: ``(B, c_in, 1, 1)`` mean of ``x`` over the whole image (default: of this ``x``)."""
        if pooled is None:
            pooled = global_mean(x)
        outs = [b(x) for b in self.branches]
        outs.append(self.pool_branch(pooled).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, dim=1))


class STDCBlock(nn.Module):
    """Short-Term Dense Concatenate module (STDC, Fan et al. CVPR 2021), 4 blocks.

    Block 1 is a 1x1 conv to ``c_out / 2`` channels; blocks 2-4 are 3x3 convs to ``c_out / 4``, ``/ 8``,
    ``/ 8``. With ``stride = 2`` block 2 strides and block 1's output is average-pooled before the
    concatenation. The output concatenates all four (``c_out`` channels).

    Shape
    -----
    ``(B, c_in, H, W) -> (B, c_out, H / stride, W / stride)``.

    Raises
    ------
    ValueError
        If ``c_out`` is not a multiple of 8 (the four blocks take 1/2, 1/4, 1/8 and 1/8 of it).
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        if c_out % 8:
            raise ValueError(f"STDC blocks need a multiple of 8 output channels, got {c_out}")
        self.stride = stride
        self.block1 = conv_bn_relu(c_in, c_out // 2, 1)
        self.block2 = conv_bn_relu(c_out // 2, c_out // 4, 3, stride)
        self.block3 = conv_bn_relu(c_out // 4, c_out // 8, 3)
        self.block4 = conv_bn_relu(c_out // 8, c_out // 8, 3)
        self.skip = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.block1(x)
        b2 = self.block2(b1)
        b3 = self.block3(b2)
        b4 = self.block4(b3)
        return torch.cat([self.skip(b1), b2, b3, b4], dim=1)


def _binomial_kernel(channels: int, device, dtype) -> torch.Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    k2 = torch.outer(k, k) / 256.0
    return k2.expand(channels, 1, 5, 5).contiguous()


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """Gaussian-pyramid reduction: 5x5 binomial blur (reflect padding), then every second pixel.

    Shape: ``(B, C, H, W) -> (B, C, H / 2, W / 2)`` (``H``, ``W`` even).
    """
    c = x.shape[1]
    blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _binomial_kernel(c, x.device, x.dtype), groups=c)
    return blurred[:, :, ::2, ::2]


def pyramid_up(x: torch.Tensor) -> torch.Tensor:
    """Gaussian-pyramid expansion: zeros between pixels, then 4 x the 5x5 binomial blur (reflect padding).

    Shape: ``(B, C, H, W) -> (B, C, 2 H, 2 W)``.
    """
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return F.conv2d(F.pad(up, (2, 2, 2, 2), mode="reflect"), 4.0 * _binomial_kernel(c, x.device, x.dtype), groups=c)


def laplacian_residuals(image: torch.Tensor) -> torch.Tensor:
    """ISDNet's high-frequency input: the level-0 and the upsampled level-1 Laplacian residuals.

    ``g_0 = I``, ``g_{i+1} = down(g_i)``, ``H_i = g_i - up(g_{i+1})`` (Eq. 1; Burt and Adelson, 1983);
    the output is ``[H_0 ; up(H_1)]``. ``down`` and ``up`` are :func:`pyramid_down` and :func:`pyramid_up`
    (OpenCV's ``pyrDown`` / ``pyrUp``). On the CPU, without gradients, OpenCV computes them (3-4x faster than
    depthwise convolutions; the two agree to 3e-7 everywhere, borders included, which a test checks).

    Parameters
    ----------
    image : (B, 3, H, W) torch.Tensor
        Float image (any normalisation); ``H`` and ``W`` multiples of 4.

    Returns
    -------
    (B, 6, H, W) torch.Tensor
        In channels-last memory layout when computed by OpenCV.
    """
    if image.device.type == "cpu" and not (torch.is_grad_enabled() and image.requires_grad) \
            and image.dtype == torch.float32:
        return _laplacian_residuals_cv2(image)
    g1 = pyramid_down(image)
    g2 = pyramid_down(g1)
    h0 = image - pyramid_up(g1)
    h1 = g1 - pyramid_up(g2)
    return torch.cat([h0, pyramid_up(h1)], dim=1)


def _laplacian_residuals_cv2(image: torch.Tensor) -> torch.Tensor:
    b, _, h, w = image.shape
    out = torch.empty((b, h, w, 6), dtype=torch.float32)
    for i in range(b):
        x = image[i].permute(1, 2, 0).contiguous().numpy()
        g1 = cv2.pyrDown(x)
        g2 = cv2.pyrDown(g1)
        o = out[i].numpy()
        o[:, :, :3] = x - cv2.pyrUp(g1, dstsize=(w, h))
        o[:, :, 3:] = cv2.pyrUp(g1 - cv2.pyrUp(g2, dstsize=(g1.shape[1], g1.shape[0])), dstsize=(w, h))
    return out.permute(0, 3, 1, 2)


#: Receptive-field radius of :func:`laplacian_residuals` in pixels (three 5x5 blurs at strides 1, 2 and 2,
#: plus the final expansion).
LAPLACIAN_RADIUS = 12


def init_segmenter(module: nn.Module) -> None:
    """Kaiming-normal (fan out, ReLU) convolutions, BatchNorm weight 1 and bias 0, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
