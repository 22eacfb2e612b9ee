"""Restarting association channels that training has switched off ("dead" channels of ``Q``).

A network trained with the superpixel loss can stop using some of the 9 neighbour channels of ``Q`` for good:
once a channel's softmax mass is near 0 at every pixel, its gradient (proportional to that mass) is near 0 too,
and it never comes back. The packaged PCNet of 2026-12-04 put all its mass on the top and centre cells
(mean ``Q`` below 1e-3 on the other 7), so its superpixels could move their horizontal boundaries but never
their vertical ones: every vertical boundary of its raw labels was a grid line. This is our finding, not the
paper's; :func:`revive_association_channels` is the remedy used to fine-tune from such weights.
"""

from __future__ import annotations

import torch

from ..models.nets import SuperpixelNet

__all__ = ["association_usage", "revive_association_channels"]


def association_usage(model: SuperpixelNet, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean ``Q`` of each of the 9 channels over a batch, in evaluation mode, without gradients.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN.
    inputs : tuple of torch.Tensor
        The model's inputs: the ``(B, 3, H, W)`` float batch (and a guided PCNet's guide).

    Returns
    -------
    torch.Tensor
        ``(9,)`` float32, summing to 1.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs).assoc.float().mean(dim=(0, 2, 3))
    finally:
        model.train(was_training)


def revive_association_channels(model: SuperpixelNet, inputs: tuple[torch.Tensor, ...], floor: float = 1e-3,
                                dead_mass: float = 0.1) -> list[int]:
    """Give the channels of ``Q`` whose mean mass is below ``floor`` a start again.

    Each dead channel's association conv (the last conv of the head) gets the mean weights of the live
    channels, and one shared bias, found by bisection on the logits of one forward pass over ``inputs``
    (evaluation mode), such that the dead
    channels together hold a mean mass of ``dead_mass``. Their logits then follow the live ones (about
    ``log(dead_mass / n_dead)`` below their log-sum-exp), so the hard assignment barely changes at first, and
    their gradients are no longer near 0. Live channels keep their weights.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN; its association conv is the last ``Conv2d`` of ``model.assoc_head``.
    inputs : tuple of torch.Tensor
        A batch of the model's inputs (as for :func:`association_usage`).
    floor : float
        Mean mass below which a channel counts as dead.
    dead_mass : float
        Mean total mass of the revived channels on ``inputs`` after the change, in ``(0, 1)``.

    Returns
    -------
    list of int
        The revived channels (row-major neighbour order of ``Q``; empty when none was dead).

    Raises
    ------
    ValueError
        If ``dead_mass`` is not in ``(0, 1)`` or every channel is dead.
    """
    if not 0.0 < dead_mass < 1.0:
        raise ValueError(f"dead_mass must be in (0, 1), got {dead_mass}")
    usage = association_usage(model, inputs)
    dead = [k for k in range(9) if float(usage[k]) < floor]
    live = [k for k in range(9) if k not in dead]
    if not dead:
        return []
    if not live:
        raise ValueError("every association channel is dead; train from scratch instead")
    conv = [m for m in model.assoc_head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(*inputs).logits.float()  # (B, 9, h, w), one forward pass
    finally:
        model.train(was_training)
    with torch.no_grad():
        # The conv is linear: with the live channels' mean weights, a dead channel's logit is the mean of the live
        # logits less their mean bias, plus its own bias b; find b on these logits, without running the model again.
        bias_live = conv.bias[live].float()
        base = (logits[:, live] - bias_live.view(1, -1, 1, 1)).mean(dim=1, keepdim=True)
        live_logits = logits[:, live]

        def mass(b: float) -> float:
            dead_logits = (base + b).expand(-1, len(dead), -1, -1)
            return float(torch.softmax(torch.cat([live_logits, dead_logits], 1), 1)[:, len(live):].sum(1).mean())

        lo, hi = float(bias_live.mean()) - 40.0, float(bias_live.mean()) + 10.0
        for _ in range(40):  # the dead channels' mass rises with their bias
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mass(mid) < dead_mass else (lo, mid)
        conv.weight[dead] = conv.weight[live].mean(dim=0, keepdim=True)
        conv.bias[dead] = 0.5 * (lo + hi)
    return dead
