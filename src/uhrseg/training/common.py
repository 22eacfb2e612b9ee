"""The training loop shared by the superpixel and the segmentation trainers, and its pieces.

:func:`training_loop` owns everything about a run that is not about the model: the learning rate of every
step, logging (loss terms, iterations per minute, peak memory), validation and ``best.pt``, the resumable
``last.pt`` (model, optimiser, step, log, RNG states, written atomically), ``log.csv``, ``curves.png``,
``stop_after`` and the progress bar. :func:`restore_run` puts a ``last.pt`` back. Each trainer supplies the
model, the optimiser, the sampler's random generator and functions for one step's losses and for validation,
so resumption is the same code, tested once for each family.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..memory import peak_rss_bytes
from ..models.checkpoint import save_checkpoint
from .config import PRECISIONS

__all__ = ["PRECISIONS", "RunState", "check_precision", "forward_at", "hardware", "mixed_precision", "open_run",
           "parameter_groups", "restore_run", "training_loop", "write_log"]



@dataclass
class RunState:
    """Progress of a run besides the weights: stored in ``last.pt``.

    Attributes
    ----------
    step : int
        Iterations done.
    log : list of dict
        Logged rows (training and validation).
    best : float
        Best validation score so far (``-inf`` before any).
    wall : float
        Seconds spent in training steps (validation and checkpoints excluded).
    """

    step: int = 0
    log: list = field(default_factory=list)
    best: float = -math.inf
    wall: float = 0.0


def open_run(run_dir: str | os.PathLike) -> tuple[Path, dict | None]:
    """Return the run folder and its ``last.pt`` dictionary (None for a fresh run).

    The folder is not created here but by :func:`training_loop`, once the trainer has read its data and built
    its model, so that a run refused for its data, weights or settings leaves no empty folder behind.

    Raises
    ------
    ValueError
        If ``run_dir``, or the nearest of its parents that exists, is not a folder.
    uhrseg.errors.CheckpointError
        If ``last.pt`` exists but cannot be read.
    """
    from ..models.checkpoint import read_checkpoint

    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: exists and is not a folder; choose another run folder")
    parent = next((p for p in run_dir.absolute().parents if p.exists()), None)
    if parent is not None and not parent.is_dir():  # was a NotADirectoryError traceback when the run began
        raise ValueError(f"{run_dir}: cannot be made, {parent} is a file; choose another run folder")
    last = run_dir / "last.pt"
    return run_dir, (read_checkpoint(last) if last.is_file() else None)


def check_precision(precision: str, device: torch.device | None = None) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS` (and, given a device, one it can run).

    Raises
    ------
    ValueError
        For any other value, or ``"bf16"`` on a CUDA device without bfloat16 (before Ampere).
    """
    from ..inference.network import check_inference_precision

    return check_inference_precision(precision, device, PRECISIONS)


def mixed_precision(device: torch.device, precision: str):
    """Context manager for a training step's forward pass through the network at ``precision`` on ``device``.

    ``"bf16"`` is :func:`torch.autocast` with ``dtype=torch.bfloat16`` on the device's type (CPU or CUDA): the
    network's convolutions and matrix products run in bfloat16 while the weights, gradients, optimiser state and
    the losses (computed after the context, on outputs cast to float32) stay float32, so no loss scaling is
    needed (bfloat16 has float32's exponent range). On a CPU with AVX512-BF16 or AMX (Intel Sapphire Rapids and
    later, AMD Zen 4 and later) this measured 1.6x (ISDNet) to about 3x (the full-resolution deep path) faster
    steps than ``"fp32"``, and no gain for PCNet (``docs/training.md``); CPUs without them emulate bfloat16 and
    are slower. ``"fp32"`` is a no-op context.

    Raises
    ------
    ValueError
        If ``precision`` is not one of :data:`PRECISIONS`.
    """
    check_precision(precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def forward_at(model: torch.nn.Module, x: torch.Tensor, precision: str, *extra: torch.Tensor | None):
    """``model(x)`` inside :func:`mixed_precision`, with every floating tensor of the output cast to float32.

    Parameters
    ----------
    model : torch.nn.Module
        Returns a tensor or a NamedTuple of tensors (and None), such as ``NetOutput`` or ``SegmenterOutput``.
    x : torch.Tensor
        The input batch, float32, on the model's device.
    precision : {"fp32", "bf16"}
        See :func:`mixed_precision`.
    *extra : torch.Tensor or None
        More positional inputs of the model (PCNet's guide image).

    Returns
    -------
    The model's output, float32 (the losses then run in float32, outside autocast).
    """
    with mixed_precision(x.device, precision):
        out = model(x, *extra)
    if precision == "fp32":
        return out

    def f32(v):
        return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v

    if isinstance(out, torch.Tensor):
        return f32(out)
    return type(out)(*(f32(v) for v in out))


def restore_run(state: dict | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                rng: np.random.Generator) -> RunState:
    """Put a ``last.pt`` dictionary back into the model, optimiser and random generators (a fresh run for None)."""
    if state is None:
        return RunState()
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["sampler_rng"]
    torch.set_rng_state(state["torch_rng"])
    return RunState(state["step"], list(state["log"]), state["best_score"], state["wall_seconds"])


def training_loop(run_dir: Path, run: RunState, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  rng: np.random.Generator, train_config: dict, iterations: int, stop_after: int | None,
                  lr_at: Callable[[int], float], losses_at: Callable[[], dict[str, torch.Tensor]],
                  validate: Callable[[], dict] | None, score: Callable[[dict], float],
                  validation_record: Callable[[dict], dict], record: Callable[[RunState], dict],
                  val_every: int, checkpoint_every: int, log_every: int, loss_keys: Sequence[str],
                  val_keys: Sequence[str], device: torch.device, progress: bool, desc: str) -> Path:
    """Run training steps until ``iterations`` (or ``stop_after`` more), validating and checkpointing.

    Parameters
    ----------
    run_dir : Path
        The run folder (``last.pt``, ``best.pt``, ``log.csv``, ``curves.png``); created here if missing.
    run : RunState
        Where the run stands (:func:`restore_run`); updated in place.
    model, optimizer : torch objects
        The network (in training mode) and its optimiser.
    rng : numpy.random.Generator
        The sampler's generator, saved with ``last.pt``.
    train_config : dict
        The recipe, saved with ``last.pt`` (a resumed run reads it back).
    iterations : int
        Length of the run.
    stop_after : int, optional
        Stop after this many iterations in this call (at least 1).
    lr_at : callable
        ``step -> learning rate``.
    losses_at : callable
        Draws a batch and returns the loss terms (``"total"`` is minimised).
    validate : callable, optional
        Returns validation metrics (None: no validation).
    score : callable
        ``metrics -> float``, higher is better, picks ``best.pt``.
    validation_record : callable
        ``metrics -> dict`` stored as ``"validation"`` in ``best.pt``'s training record.
    record : callable
        ``RunState -> dict``, the training record (command, data, iterations, wall time, hardware, recipe).
    val_every, checkpoint_every, log_every : int
        Periods in iterations.
    loss_keys, val_keys : sequence of str
        Curves to plot.
    device : torch.device
        For the peak CUDA memory in the log.
    progress : bool
        Show a progress bar (loss, iterations per minute, ETA).
    desc : str
        Label of the progress bar.

    Returns
    -------
    Path
        ``best.pt``, or ``last.pt`` when there is none yet.

    Raises
    ------
    ValueError
        If ``stop_after`` is below 1, or ``run_dir`` cannot be made.
    """
    if stop_after is not None and stop_after < 1:  # 0 ran nothing and named a last.pt that did not exist
        raise ValueError(f"stop_after must be >= 1 iteration, got {stop_after}")
    made = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)  # first here: the setup before this point has succeeded
    except OSError as e:
        raise ValueError(f"{run_dir}: run folder cannot be made ({e.strerror or e})") from e
    last = run_dir / "last.pt"

    def save_last() -> None:
        save_checkpoint(last, model, training=record(run), extra={
            "optimizer": optimizer.state_dict(), "step": run.step, "log": run.log, "best_score": run.best,
            "wall_seconds": run.wall, "sampler_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "train_config": train_config})
        write_log(run.log, run_dir, loss_keys, val_keys)

    end = iterations if stop_after is None else min(iterations, run.step + stop_after)
    bar = tqdm(total=iterations, initial=run.step, disable=not progress, unit="it", desc=desc)
    window_start, window_steps = time.perf_counter(), 0
    try:
        while run.step < end:
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(run.step) * group.get("lr_scale", 1.0)
            losses = losses_at()
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            run.step += 1
            run.wall += time.perf_counter() - t0
            window_steps += 1
            bar.update(1)
            if run.step % log_every == 0 or run.step == end:
                elapsed = time.perf_counter() - window_start
                row = {"step": run.step, "lr": lr_at(run.step - 1),
                       "it_per_min": round(60 * window_steps / max(elapsed, 1e-9), 2),
                       "peak_rss_mb": round(peak_rss_bytes() / 2**20)}
                if device.type == "cuda":
                    row["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
                row.update({k: round(float(v.detach()), 5) for k, v in losses.items()})
                run.log.append(row)
                bar.set_postfix(loss=f"{row['total']:.3f}", it_min=row["it_per_min"])
                window_start, window_steps = time.perf_counter(), 0
            if validate is not None and (run.step % val_every == 0 or run.step == iterations):
                metrics = validate()
                run.log.append({"step": run.step, **metrics})
                bar.write(f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
                          file=sys.stderr)
                if score(metrics) > run.best:
                    run.best = score(metrics)
                    save_checkpoint(run_dir / "best.pt", model,
                                    training={**record(run), "validation": validation_record(metrics)})
                window_start, window_steps = time.perf_counter(), 0
            if run.step % checkpoint_every == 0 or run.step == end:
                save_last()
    except BaseException:  # e.g. the first step fails (batch norm on a batch of one): no empty folder is left
        if made and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    finally:
        bar.close()
    if not (run_dir / "best.pt").is_file() and run.step >= iterations:
        save_checkpoint(run_dir / "best.pt", model, training=record(run))
    return run_dir / "best.pt" if (run_dir / "best.pt").is_file() else last


def parameter_groups(model: torch.nn.Module, weight_decay: float,
                     lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Weight decay on weights (tensors of 2 or more dimensions), none on biases, norms and scalars.

    ``lr_scales`` maps a submodule name (``"guide"``) to a learning-rate factor: its parameters get groups of
    their own with ``lr_scale`` set, which :func:`training_loop` multiplies into the scheduled rate.
    """
    named = list(model.named_parameters())
    scales = {name: next((v for k, v in (lr_scales or {}).items() if name == k or name.startswith(k + ".")), 1.0)
              for name, _ in named}
    groups = []
    for scale in sorted({1.0, *scales.values()}):
        for decayed in (True, False):
            params = [p for n, p in named if scales[n] == scale and (p.ndim > 1) == decayed]
            if scale != 1.0 and not params:
                continue
            group = {"params": params, "weight_decay": weight_decay if decayed else 0.0}
            if scale != 1.0:
                group["lr_scale"] = scale
            groups.append(group)
    return groups


def hardware(device: torch.device) -> str:
    """One line naming the device, CPU cores and torch version, for training records."""
    cpu = f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {cpu}"
    return cpu


def write_log(rows: list[dict], run_dir: Path, loss_keys: Sequence[str], val_keys: Sequence[str]) -> None:
    """Write ``log.csv`` (every key of every row) and ``curves.png`` (losses left, validation right).

    Parameters
    ----------
    rows : list of dict
        One dict per logged step (training rows hold the losses, validation rows the ``val_*`` keys).
    run_dir : Path
        The run folder.
    loss_keys, val_keys : sequence of str
        Keys plotted in the two panels (those present).
    """
    if not rows:
        return
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    tmp = run_dir / "log.csv.part"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, run_dir / "log.csv")
    _plot_curves(rows, run_dir / "curves.png", loss_keys, val_keys)


def _plot_curves(rows: list[dict], path: Path, loss_keys: Sequence[str], val_keys: Sequence[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    train = [r for r in rows if "total" in r]
    for key in loss_keys:
        pts = [(r["step"], r[key]) for r in train if key in r]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss")
    axes[0].set_yscale("symlog")
    if train:
        axes[0].legend(fontsize=8)
    plotted = False
    for key in val_keys:
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            axes[1].plot(*zip(*pts), "o-", label=key)
            plotted = True
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("validation")
    if plotted:
        axes[1].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_suffix(".part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
