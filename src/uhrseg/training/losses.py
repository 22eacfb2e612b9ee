"""Training losses of SCN and PCNet (``docs/pcnet.md`` section 3).

* :func:`superpixel_loss`: PCNet Eq. 1-3 (SCN's loss). One-hot labels and pixel positions are pooled into the
  grid cells through ``Q`` and reconstructed; cross-entropy on the labels plus ``m / S`` times the position
  error. Sums over pixels, mean over the batch.
* :func:`boundary_sr_loss`: Eq. 5, L1 between the super-resolved and the high-resolution image inside the
  boundary band ``B``, divided by ``|B|``.
* :func:`local_discrimination_loss`: Eq. 6-8 as corrected in pcnet.md: in ``K x K`` windows on two-label
  boundaries of the pixel embedding ``E``, maximise the between-class distance over the within-class scatter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..grid.cells import pixel_positions, pool_features, reconstruct_features

__all__ = ["boundary_sr_loss", "local_discrimination_loss", "one_hot_labels", "superpixel_loss"]


def one_hot_labels(labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """One-hot encode per-crop labels.

    Parameters
    ----------
    labels : torch.Tensor
        ``(B, H, W)`` int64 labels ``0 .. C-1`` (relabelled per crop, so ``C`` is the labels present, not the
        dataset's), or ``-1`` for ignored pixels (all-zero one-hot vector).
    n_classes : int, optional
        Channels ``C``; default ``labels.max() + 1``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` float32.
    """
    c = int(labels.max()) + 1 if n_classes is None else n_classes
    valid = labels >= 0
    out = F.one_hot(labels.clamp(min=0), c).permute(0, 3, 1, 2).to(torch.float32)
    return out * valid.unsqueeze(1)


def superpixel_loss(assoc: torch.Tensor, labels: torch.Tensor, cell_size: int = 16, m: float = 0.003,
                    eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Superpixel loss ``L_SP`` (PCNet Eq. 1-3; Yang et al. CVPR 2020 Eq. 4).

    Parameters
    ----------
    assoc : torch.Tensor
        ``(B, 9, H, W)`` association map ``Q`` (softmax).
    labels : torch.Tensor
        ``(B, H, W)`` int64 per-crop labels ``0 .. C-1``; ``-1`` pixels are ignored in the label term.
    cell_size : int
        Grid cell side ``S`` in pixels.
    m : float
        Position weight; the position term is scaled by ``m / S``.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Scalar label term ``sum_p CE(f'_label(p), S(p))`` and position term
        ``(m / S) sum_p ||f'_xy(p) - xy(p)||_2``, each summed over pixels and averaged over the batch.
    """
    b, _, h, w = assoc.shape
    onehot = one_hot_labels(labels)
    pos = pixel_positions(b, h, w, dtype=assoc.dtype, device=assoc.device)
    features = torch.cat([onehot.to(assoc.dtype), pos], dim=1)
    recon = reconstruct_features(pool_features(features, assoc, cell_size), assoc, cell_size)
    c = onehot.shape[1]
    label_term = -(onehot * torch.log(recon[:, :c].clamp(min=eps))).sum() / b
    pos_term = (m / cell_size) * torch.linalg.vector_norm(recon[:, c:] - pos, dim=1).sum() / b
    return label_term, pos_term


def boundary_sr_loss(reconstruction: torch.Tensor, target: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Masked L1 super-resolution loss (PCNet Eq. 5).

    Parameters
    ----------
    reconstruction, target : torch.Tensor
        ``(B, 3, H, W)``, the SR head's output and the high-resolution image, both in [-1, 1].
    band : torch.Tensor
        ``(B, H, W)`` bool boundary band ``B`` (ground-truth boundaries dilated by a 16 x 16 kernel).

    Returns
    -------
    torch.Tensor
        Scalar ``sum_{p in B} |rec(p) - target(p)|_1 / |B|`` (0 when the band is empty).
    """
    mask = band.unsqueeze(1).to(reconstruction.dtype)
    return ((reconstruction - target).abs() * mask).sum() / mask.sum().clamp(min=1.0)


def local_discrimination_loss(embedding: torch.Tensor, windows: torch.Tensor, window_mask: torch.Tensor,
                              eps: float = 1e-6) -> torch.Tensor:
    """Local discrimination loss ``L_D`` (PCNet Eq. 6-8, ratio as in pcnet.md).

    For each ``K x K`` window holding exactly two labels ``f`` and ``g``:
    ``J = ||mu_f - mu_g||^2 / (sum_f ||e - mu_f||^2 + sum_g ||e - mu_g||^2)``; ``L_D = -mean(J)``.

    Parameters
    ----------
    embedding : torch.Tensor
        ``(B, D, H, W)`` pixel embedding ``E``.
    windows : torch.Tensor
        ``(N, 3)`` int64 rows ``(batch index, y0, x0)``: top-left corners of the windows.
    window_mask : torch.Tensor
        ``(N, K, K)`` bool, True where the pixel has label ``f`` (the other label ``g`` elsewhere).

    Returns
    -------
    torch.Tensor
        Scalar ``-mean(J)``; 0 (with a gradient path) when there are no windows.
    """
    if windows.numel() == 0:
        return embedding.sum() * 0.0
    k = window_mask.shape[-1]
    d = embedding.shape[1]
    dy, dx = torch.meshgrid(torch.arange(k, device=embedding.device), torch.arange(k, device=embedding.device),
                            indexing="ij")
    ys = windows[:, 1, None, None] + dy  # (N, K, K)
    xs = windows[:, 2, None, None] + dx
    bs = windows[:, 0, None, None].expand_as(ys)
    e = embedding.permute(0, 2, 3, 1)[bs, ys, xs].reshape(-1, k * k, d)  # (N, K^2, D)
    f = window_mask.reshape(-1, k * k, 1).to(e.dtype)
    g = 1.0 - f
    mu_f = (e * f).sum(1) / f.sum(1).clamp(min=1.0)
    mu_g = (e * g).sum(1) / g.sum(1).clamp(min=1.0)
    between = ((mu_f - mu_g) ** 2).sum(-1)
    within = (((e - mu_f[:, None]) ** 2).sum(-1) * f[..., 0]).sum(1) + (((e - mu_g[:, None]) ** 2).sum(-1) * g[..., 0]).sum(1)
    return -(between / (within + eps)).mean()
