"""Versioned checkpoint files for the superpixel networks (PCNet, SCN) and the segmentation networks
(ISDNet, the deep path), and the packaged weights.

A checkpoint is a ``torch.save`` dictionary that loads with ``weights_only=True``::

    {"format": "uhrseg-superpixel-net", "format_version": 1,
     "model": "pcnet" | "scn", "config": NetConfig.to_dict(), "input_mean": [r, g, b],
     "state_dict": {...}, "training": {... command, data, iterations, metrics ...}}

    {"format": "uhrseg-segmenter", "format_version": 1,
     "model": "isdnet" | "deeppath", "config": SegmenterConfig.to_dict(),
     "classes": {"names": [...], "colours": [[r, g, b], ...], "ignored": [...]},
     "state_dict": {...}, "training": {...}}

    {"format": "uhrseg-magnet", "format_version": 1,
     "model": "magnet", "config": RefinementConfig.to_dict(),
     "backbone": {"model": "isdnet" | "deeppath", "config": SegmenterConfig.to_dict()},
     "classes": {...}, "state_dict": {"backbone.*": ..., "refinement.*": ...}, "training": {...}}

A MagNet checkpoint holds its backbone's weights too, so it is the one file a user needs. The class table travels
with a segmentation model, so a checkpoint always knows its classes and palette.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path

import torch

from ..datasets.classes import ClassTable
from ..errors import CheckpointError, WeightsNotFoundError
from .magnet import MagNet, RefinementConfig, RefinementModule
from .nets import MODELS, NetConfig, SuperpixelNet, build_model
from .segmenters import SEGMENTERS, ISDNet, SegmenterConfig, build_segmenter

FORMAT = "uhrseg-superpixel-net"
SEGMENTER_FORMAT = ISDNet.checkpoint_format
MAGNET_FORMAT = MagNet.checkpoint_format
FORMAT_VERSION = 1
#: Format tag -> the registry of model names it may hold.
FORMATS = {FORMAT: MODELS, SEGMENTER_FORMAT: SEGMENTERS, MAGNET_FORMAT: {"magnet": MagNet}}


def packaged_weights_path(name: str) -> Path:
    """Path of the weights file shipped inside the package for model ``name`` (it may not exist yet)."""
    return Path(str(resources.files("uhrseg") / "weights" / f"{name}.pt"))


def save_checkpoint(path: str | os.PathLike, model: SuperpixelNet | ISDNet | MagNet, training: dict | None = None,
                    extra: dict | None = None, half: bool = False) -> Path:
    """Write ``model`` to ``path`` atomically (temporary file in the same folder, then rename).

    Parameters
    ----------
    path : path-like
        Destination ``.pt`` file.
    model : SuperpixelNet, ISDNet or MagNet
        The model; its name, config, state dict and (superpixel networks) input mean or (segmentation
        networks) class table are stored; for MagNet also the backbone's name and config.
    training : dict, optional
        Training record (command, data, iterations, wall time, hardware, metrics); plain Python values only.
    extra : dict, optional
        More top-level entries (e.g. optimiser state for resumable training).
    half : bool
        Store floating-point weights as float16 (half the bytes; they load back into float32 models).

    Returns
    -------
    Path
        The written path.
    """
    path = Path(path)
    payload = {
        "format": getattr(model, "checkpoint_format", FORMAT),
        "format_version": FORMAT_VERSION,
        "model": model.name,
        "config": model.config.to_dict(),
        "input_mean": list(getattr(model.config, "input_mean", ())),
        "state_dict": {k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
                       for k, v in model.state_dict().items()},
        "training": dict(training or {}),
        **(extra or {}),
    }
    if isinstance(model, (ISDNet, MagNet)):
        payload["classes"] = model.class_table.to_dict()
    if isinstance(model, MagNet):
        payload["backbone"] = {"model": model.backbone.name, "config": model.backbone.config.to_dict()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a weights file is as readable as any other file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint dictionary (CPU tensors).

    Raises
    ------
    WeightsNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file is corrupt or truncated, not a uhrseg checkpoint, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        problem = "a folder, not a weights file" if path.is_dir() else "weights file not found"
        raise WeightsNotFoundError(f"{path}: {problem}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler raises many types on garbage (IndexError, KeyError, ...)
        # torch's first sentence says what failed; the rest is advice for torch.load (weights_only=False) that
        # does not apply to a weights file handed to uhrseg
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0].rstrip(".")
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") not in FORMATS:
        raise CheckpointError(f"{path}: not a uhrseg checkpoint (no {' or '.join(map(repr, FORMATS))} format tag)")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {ckpt.get('format_version')!r}, this uhrseg reads version "
            f"{FORMAT_VERSION}"
        )
    for key in ("model", "config", "state_dict") + (("classes",) if ckpt["format"] != FORMAT else ()) \
            + (("backbone",) if ckpt["format"] == MAGNET_FORMAT else ()):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint lacks the '{key}' entry")
    return ckpt


def load_model(path: str | os.PathLike, expected: str | None = None) -> SuperpixelNet | ISDNet | MagNet:
    """Build a model from a checkpoint file, in eval mode on the CPU.

    Parameters
    ----------
    path : path-like
        Checkpoint written by :func:`save_checkpoint`.
    expected : str, optional
        Model name the caller needs (``"pcnet"``, ``"scn"``, ``"isdnet"``, ``"deeppath"`` or ``"magnet"``); a
        checkpoint of another model is refused.

    Returns
    -------
    SuperpixelNet, ISDNet or MagNet
        The model with its weights (and, for segmentation networks, its class table),
        ``model.training_record`` holding the stored training record.

    Raises
    ------
    WeightsNotFoundError
        If the file does not exist.
    CheckpointError
        If it is corrupt, of another format version, for another model than ``expected``, or its weights do
        not fit the architecture in its config.
    """
    ckpt = read_checkpoint(path)
    name = ckpt["model"]
    if name not in FORMATS[ckpt["format"]]:
        raise CheckpointError(f"{path}: checkpoint is for unknown model {name!r}")
    if expected is not None and name != expected:
        raise CheckpointError(f"{path}: checkpoint holds a {name!r} model, but {expected!r} was asked for")
    try:
        if ckpt["format"] == MAGNET_FORMAT:
            table = ClassTable.from_dict(ckpt["classes"])
            backbone = build_segmenter(ckpt["backbone"]["model"], table,
                                       config=SegmenterConfig.from_dict(ckpt["backbone"]["config"]))
            model = MagNet(backbone, RefinementModule(RefinementConfig.from_dict(ckpt["config"])))
        elif ckpt["format"] == SEGMENTER_FORMAT:
            model = build_segmenter(name, ClassTable.from_dict(ckpt["classes"]), config=ckpt["config"])
        else:
            model = build_model(name, NetConfig.from_dict(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not match the {name} architecture: "
                              f"{' '.join(s.strip() for s in first[:2])}") from e
    model.training_record = dict(ckpt.get("training", {}))
    return model.eval()


def export_weights(src: str | os.PathLike, dst: str | os.PathLike, half: bool = True) -> Path:
    """Write a slim copy of a training checkpoint for shipping: weights and training record only.

    The optimiser state, RNG states and log of ``last.pt`` are dropped; with ``half`` the floating-point weights
    are stored as float16, which halves the file (about 4.6 MB for PCNet) and loads back into float32.

    Parameters
    ----------
    src : path-like
        A checkpoint from :func:`save_checkpoint` (e.g. a run's ``best.pt``).
    dst : path-like
        Destination file, written atomically; it must not be ``src``.
    half : bool
        Store float16 weights.

    Returns
    -------
    Path
        ``dst``.

    Raises
    ------
    WeightsNotFoundError, CheckpointError
        As :func:`load_model`, for ``src``.
    ValueError
        If ``dst`` is ``src``.
    """
    if Path(dst).resolve() == Path(src).resolve():
        raise ValueError(f"{dst}: export_weights would overwrite its input")
    model = load_model(src)
    return save_checkpoint(dst, model, training=model.training_record, half=half)


def load_packaged_model(name: str) -> SuperpixelNet:
    """Load the default weights of ``name`` shipped inside the package.

    Raises
    ------
    WeightsNotFoundError
        If this installation carries no weights for ``name`` yet.
    CheckpointError
        If the packaged file is damaged.
    """
    path = packaged_weights_path(name)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path}: no packaged weights for method {name!r} in this uhrseg version yet (they come with the "
            f"training work); pass your own checkpoint with --weights FILE (Python: weights=...), or use a "
            f"classical method such as --method slic"
        )
    return load_model(path, expected=name)
