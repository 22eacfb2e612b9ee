"""Training losses of SCN and PCNet (``docs/pcnet.md`` section 3).

* :func:`superpixel_loss`: PCNet Eq. 1-3 (SCN's loss). One-hot labels and pixel positions are pooled into the
  grid cells through ``Q`` and reconstructed; cross-entropy on the labels plus ``m / S`` times the position
  error. Sums over pixels, mean over the batch.
* :func:`boundary_sr_loss`: Eq. 5, L1 between the super-resolved and the high-resolution image inside the
  boundary band ``B``, divided by ``|B|``.
* :func:`local_discrimination_loss`: Eq. 6-8 as corrected in pcnet.md: in ``K x K`` windows on two-label
  boundaries of the pixel embedding ``E``, maximise the between-class distance over the within-class scatter.
* :func:`association_distillation_loss`: not in the paper; the mean per-pixel KL divergence from a teacher's
  association map (a trained SCN on the same crop) to the student's (knowledge distillation, Hinton et al. 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..grid.cells import NEIGHBOUR_OFFSETS, CellGrid, pixel_positions

__all__ = ["association_distillation_loss", "boundary_sr_loss", "local_discrimination_loss", "one_hot_labels", "superpixel_loss"]


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


def _neighbour_ids_zero_padded(grid: CellGrid, device: torch.device) -> torch.Tensor:
    """``(9, h, w)`` int64 id of each of the 9 neighbour cells of every pixel; ``n_cells`` outside the grid."""
    rows = torch.arange(grid.height, device=device) // grid.cell_size
    cols = torch.arange(grid.width, device=device) // grid.cell_size
    offsets = torch.tensor(NEIGHBOUR_OFFSETS, device=device)
    nr = rows[None, :] + offsets[:, 0:1]  # (9, h)
    nc = cols[None, :] + offsets[:, 1:2]  # (9, w)
    inside = ((nr >= 0) & (nr < grid.n_rows))[:, :, None] & ((nc >= 0) & (nc < grid.n_cols))[:, None, :]
    ids = nr[:, :, None] * grid.n_cols + nc[:, None, :]
    return torch.where(inside, ids, torch.full_like(ids, grid.n_cells))


def superpixel_loss(assoc: torch.Tensor, labels: torch.Tensor, cell_size: int = 16, m: float = 0.003,
                    eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Superpixel loss ``L_SP`` (PCNet Eq. 1-3; Yang et al. CVPR 2020 Eq. 4).

    Equal to pooling the one-hot labels and ``(x, y)`` positions with
    :func:`uhrseg.grid.pool_features` (Eq. 1), reconstructing them with
    :func:`uhrseg.grid.reconstruct_features` (Eq. 2) and taking the cross-entropy and position error (Eq. 3),
    but computed without the ``C`` one-hot channels: the label mass of every cell is a scatter-add of ``Q``
    into ``(cell, label)`` bins, and only the reconstructed probability of each pixel's own label (the only
    one the cross-entropy reads) is gathered back. Cost ``O(9 H W)`` instead of ``O(18 C H W)``.

    Parameters
    ----------
    assoc : torch.Tensor
        ``(B, 9, H, W)`` float association map ``Q`` (softmax).
    labels : torch.Tensor
        ``(B, H, W)`` int64 labels ``>= 0`` (any ids: only equality matters); ``-1`` pixels are ignored in
        the label term (they still carry association mass, as an all-zero one-hot vector would).
    cell_size : int
        Grid cell side ``S`` in pixels.
    m : float
        Position weight; the position term is scaled by ``m / S``.
    eps : float
        Added to the pooling denominator, and the floor of the reconstructed probability inside the log.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Scalar label term ``sum_p CE(f'_label(p), S(p))`` and position term
        ``(m / S) sum_p ||f'_xy(p) - xy(p)||_2``, each summed over pixels and averaged over the batch.

    Raises
    ------
    ValueError
        If ``assoc`` is not ``(B, 9, H, W)`` or ``labels`` is not ``(B, H, W)``.
    """
    if assoc.ndim != 4 or assoc.shape[1] != 9:
        raise ValueError(f"assoc must have shape (B, 9, H, W), got {tuple(assoc.shape)}")
    b, _, h, w = assoc.shape
    if labels.shape != (b, h, w):
        raise ValueError(f"labels must have shape {(b, h, w)}, got {tuple(labels.shape)}")
    grid = CellGrid(h, w, cell_size)
    bins = grid.n_cells + 1  # the last bin collects the mass given to cells outside the grid
    ids = _neighbour_ids_zero_padded(grid, assoc.device).unsqueeze(0)  # (1, 9, h, w)
    cell = ids + (torch.arange(b, device=assoc.device) * bins).view(b, 1, 1, 1)  # (B, 9, h, w)
    valid = labels >= 0
    _, label_ids = torch.unique(labels.clamp(min=0), return_inverse=True)
    c = int(label_ids.max()) + 1
    label_bin = (cell * c + label_ids.unsqueeze(1)).reshape(-1)  # (B * 9 * h * w,)
    cell = cell.reshape(-1)
    q = assoc.reshape(-1)
    inside = torch.ones(b, bins, 1, dtype=assoc.dtype, device=assoc.device)
    inside[:, -1] = 0.0  # out-of-grid neighbours contribute nothing to the reconstruction

    den = assoc.new_zeros(b * bins).index_add(0, cell, q).view(b, bins, 1) + eps
    q_valid = (assoc * valid.unsqueeze(1).to(assoc.dtype)).reshape(-1)
    label_mass = assoc.new_zeros(b * bins * c).index_add(0, label_bin, q_valid).view(b, bins, c)
    label_cells = (label_mass / den * inside).reshape(-1)
    recon_label = (assoc * label_cells.gather(0, label_bin).view_as(assoc)).sum(1)  # (B, h, w)
    label_term = -(torch.log(recon_label.clamp(min=eps)) * valid).sum() / b

    pos = pixel_positions(b, h, w, dtype=assoc.dtype, device=assoc.device)  # (B, 2, h, w)
    xy_mass = torch.stack([assoc.new_zeros(b * bins).index_add(0, cell, (assoc * pos[:, i : i + 1]).reshape(-1))
                           for i in range(2)], dim=-1).view(b, bins, 2)
    xy_cells = (xy_mass / den * inside).view(b * bins, 2)
    recon_xy = torch.stack([(assoc * xy_cells[:, i].gather(0, cell).view_as(assoc)).sum(1) for i in range(2)], 1)
    pos_term = (m / cell_size) * torch.linalg.vector_norm(recon_xy - pos, dim=1).sum() / b
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
    within = ((((e - mu_f[:, None]) ** 2).sum(-1) * f[..., 0]).sum(1)
              + (((e - mu_g[:, None]) ** 2).sum(-1) * g[..., 0]).sum(1))
    return -(between / (within + eps)).mean()


def association_distillation_loss(logits: torch.Tensor, teacher_assoc: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``KL(Q_teacher(p, .) || Q(p, .))``, in nats (knowledge distillation of ``Q``).

    Not in the PCNet paper: a dense target for PCNet's association map ``Q`` from a network that sees the full
    resolution (a trained SCN fed the same crop), where the superpixel loss (Eq. 1-3) only says which labels a
    cell's pixels share. Both maps index the same 9 neighbour cells of the same ``S x S`` grid. Computed from
    the student's logits (``log Q`` by log-softmax), so the gradient on them, ``(Q - Q_teacher) / n_pixels``,
    does not vanish on a channel whose mass has underflowed: the teacher can bring back a neighbour cell the
    student has stopped using (:mod:`uhrseg.training.revive`).

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, 9, h, w)`` float student logits (``Q`` is their softmax over dim 1); gradients flow through them.
    teacher_assoc : torch.Tensor
        ``(B, 9, h, w)`` float teacher ``Q`` of the same shape (treated as a constant).

    Returns
    -------
    torch.Tensor
        Scalar ``>= 0`` (up to rounding); 0 when the maps are equal.

    Raises
    ------
    ValueError
        If the shapes differ or the maps are not ``(B, 9, h, w)``.
    """
    if logits.shape != teacher_assoc.shape or logits.ndim != 4 or logits.shape[1] != 9:
        raise ValueError(f"association maps must both be (B, 9, h, w), got {tuple(logits.shape)} and "
                         f"{tuple(teacher_assoc.shape)}")
    t = teacher_assoc.detach().float()
    log_t = torch.log(t.clamp_min(1e-30))
    return (t * (log_t - torch.log_softmax(logits.float(), dim=1))).sum(dim=1).mean()
