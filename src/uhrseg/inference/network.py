"""The network part of SCN/PCNet inference, tiled, in bounded memory (``docs/pcnet.md`` section 4).

For ``n`` superpixels on an ``H x W`` image the output grid has ``n_rows x n_cols ~ n`` cells of ``S = 16``
pixels with the image's aspect ratio, so the network's output is ``h x w = 16 n_rows x 16 n_cols`` and its
input ``h / upscale x w / upscale`` (1/4 for PCNet), padded to a multiple of 16.

* :func:`network_input` (:mod:`uhrseg.inference.resize`, torch-free) makes that input from an image source
  read in bands of rows (area averaging), so a large image never has to be decoded whole.
* :func:`cell_id_map` runs the trunk on overlapping tiles of the input whose origins are multiples of 16 (the
  grid of every pooling level lines up with the whole image's) with :data:`TRUNK_HALO` pixels of context,
  more than the trunk's receptive-field radius, and the head (sub-pixel layer, embedding, association logits)
  and the argmax on strips of each tile's core (:func:`uhrseg.inference.tiling.tile_plan`). The
  ``(9, h, w)`` association map is never held whole, and the stitched cell-id map is bit-identical to an
  untiled run (tested) because :func:`inference_model` swaps the transposed convolutions for sub-pixel
  convolutions, whose oneDNN results do not depend on the tensor size.

Departure from the reference code, on purpose: the image is resized to the network input in one step with
area averaging (OpenCV ``INTER_AREA``) when shrinking and bicubic when enlarging, instead of a bicubic resize
to ``h x w`` followed by nearest 4x subsampling; the training code uses the same function.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..defaults import DEFAULT_STRIP_PIXELS, DEFAULT_TILE, INFERENCE_PRECISIONS, check_precision_name
from ..grid.cells import CellGrid, neighbour_choice_to_cell_ids
from .resize import (
    RESIZE_BAND_ROWS,
    AreaAccumulator,
    NetworkTimings,
    grid_shape_for,
    nearest_index,
    network_input,
    resize_image,
    sampled_cell_ids,
)
from ..models.layers import transposed_conv_as_subpixel
from ..models.nets import SuperpixelNet
from .tiling import TRUNK_HALO, check_guide, check_tiling, guide_window, tile_plan


__all__ = [
    "DEFAULT_STRIP_PIXELS",
    "DEFAULT_TILE",
    "INFERENCE_PRECISIONS",
    "TRUNK_HALO",
    "RESIZE_BAND_ROWS",
    "AreaAccumulator",
    "cell_id_map",
    "check_inference_precision",
    "grid_shape_for",
    "inference_model",
    "nearest_index",
    "network_input",
    "network_labels",
    "resize_image",
]

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_inference_precision(precision: str, device: torch.device | None = None,
                              allowed: tuple[str, ...] = INFERENCE_PRECISIONS) -> str:
    """Return ``precision`` if it is one of ``allowed`` (default :data:`INFERENCE_PRECISIONS`; the trainers pass
    their own, :data:`uhrseg.training.config.PRECISIONS`) and, given a device, one it can run.

    Raises
    ------
    ValueError
        For any other value, or ``"bf16"`` on a CUDA device without bfloat16 (before Ampere).
    """
    check_precision_name(precision, allowed)
    if precision == "bf16" and device is not None and device.type == "cuda" and \
            torch.cuda.get_device_capability(device)[0] < 8:  # is_bf16_supported() also counts emulation
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16 (compute capability below 8.0); "
                         "choose another precision")
    return precision


def _autocast(device: torch.device, precision: str):
    """:func:`torch.autocast` to ``precision``'s dtype on ``device``'s type; a no-op context for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


# Output pixels per head strip (DEFAULT_STRIP_PIXELS, uhrseg.defaults): about 300 bytes each for PCNet, so
# ~150 MB of activations.


# Default trunk tile core in input pixels (DEFAULT_TILE, uhrseg.defaults; plus the halo on each side): about
# 300 MB of activations.
def inference_model(model: SuperpixelNet) -> SuperpixelNet:
    """A copy of ``model`` prepared for tiled inference.

    Eval mode, channels-last memory layout (about 2x faster on CPU with oneDNN), and every 4x4 stride-2
    transposed convolution replaced by the equivalent sub-pixel convolution
    (:func:`uhrseg.models.layers.transposed_conv_as_subpixel`), so that tiled and untiled runs give
    bit-identical outputs. The input model is not modified.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN.

    Returns
    -------
    SuperpixelNet
        The prepared copy, on the model's device.
    """
    model = copy.deepcopy(model).eval()
    for up in model.trunk.up:
        if isinstance(up[0], torch.nn.ConvTranspose2d):
            up[0] = transposed_conv_as_subpixel(up[0])
    return model.to(memory_format=torch.channels_last)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work on ``device`` (so stage timings are true); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cell_id_map(model: SuperpixelNet, net_input: np.ndarray, grid: CellGrid, device: torch.device,
                tile: int = DEFAULT_TILE, strip_pixels: int = DEFAULT_STRIP_PIXELS,
                guide: np.ndarray | None = None, precision: str = "fp32") -> np.ndarray:
    """Cell id of every network output pixel (the hard assignment of ``Q``), computed tile by tile.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN from :func:`inference_model` (any model works; that one makes tiling exact), on
        ``device``.
    net_input : (h / upscale, w / upscale, 3) ndarray of float32 in [0, 1]
        The network input (:func:`network_input`).
    grid : CellGrid
        The output grid, ``h x w`` pixels.
    device : torch.device
        Where the network runs.
    tile : int
        Trunk tile core in input pixels, rounded up to a multiple of 16; each tile is run with
        :data:`TRUNK_HALO` pixels of context on every side. Smaller uses less memory; the result does not
        depend on it.
    strip_pixels : int
        Output pixels per head strip (memory of the head); the result does not depend on it.
    guide : (h, w, 3) ndarray of float32 in [0, 1] or a row store of it (:mod:`uhrseg.stores`), optional
        The image at the output resolution, for a model whose head takes it (``model.uses_guide``; see
        :func:`uhrseg.inference.resize.network_inputs`). Each head strip gets the part its features cover
        (:func:`uhrseg.inference.tiling.guide_window`), so the whole guide is never copied.
    precision : str
        :data:`INFERENCE_PRECISIONS`: ``"fp32"`` (default), or the trunk and head under :func:`torch.autocast`
        to ``"bf16"`` (bfloat16) or ``"fp16"`` (float16): convolutions in the lower precision, the argmax on its
        logits. Tiled and untiled runs stay identical at any precision (tested). Measured on the 2-core CPU
        (Intel Xeon with AMX-BF16 and AVX512-FP16, torch 2.13, packaged weights, 2026-12-06,
        ``benchmarks/bench_precision.py``): the network on the 5K photograph at n = 5000 took 0.50 s with bf16,
        1.06 s in fp32 and 1.36 s with fp16 (SCN: 0.57, 1.45, 2.09 s); BR / BP / ASA of PCNet's superpixels
        moved from fp32 by +0.0000 / +0.0002 / -0.0000 with bf16 and +0.0007 / +0.0001 / -0.0000 with fp16 on 50
        BSDS500 val images (n = 600; standard errors 0.0004 / 0.0001 / 0.0001), and by at most 0.0004 on 20
        semantic-drone test frames (r = 1); 2.5 % (bf16) and 0.3 % (fp16) of the raw cell ids differ from fp32's.
        CPUs without AMX or AVX512-BF16 emulate bfloat16 and are slower.

    Returns
    -------
    (h, w) ndarray of int32
        Cell ids in ``[0, grid.n_cells)``.

    Raises
    ------
    ValueError
        If ``tile`` or ``strip_pixels`` is smaller than 1, the input does not match ``grid``, ``guide`` is
        missing for a guided model, given to another, or not ``(h, w, 3)``, or ``precision`` is unknown or not
        supported by ``device`` (:func:`check_inference_precision`).
    """
    up, m = model.upscale, model.input_multiple
    check_inference_precision(precision, device)
    tile = check_tiling(net_input.shape, (grid.height, grid.width), up, m, tile, strip_pixels)
    in_h, in_w = net_input.shape[:2]
    x = torch.from_numpy(net_input).permute(2, 0, 1).unsqueeze(0).to(device)
    pad_h, pad_w = -in_h % m, -in_w % m
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    x = x.contiguous(memory_format=torch.channels_last)
    full_h, full_w = x.shape[2:]
    check_guide(model.uses_guide, guide, (grid.height, grid.width), model.name)
    ids = np.empty((grid.height, grid.width), np.int32)
    with torch.inference_mode(), _autocast(device, precision):
        for t in tile_plan(in_h, in_w, full_h, full_w, tile, strip_pixels, up, TRUNK_HALO, model.head_halo):
            window = x[:, :, t.window[0], t.window[1]]
            whole = window.shape[2:] == x.shape[2:]
            features = model.decode(window if whole else window.contiguous(memory_format=torch.channels_last))
            for s in t.strips:
                g = None
                if guide is not None:
                    g = torch.from_numpy(guide_window(guide, *s.guide)).to(device)
                    g = g.contiguous(memory_format=torch.channels_last)
                logits = model.assoc_logits(features[:, :, s.features[0], s.features[1]], g)
                choice = logits[:, :, s.crop[0], s.crop[1]].argmax(dim=1)[0]
                cells = neighbour_choice_to_cell_ids(choice, grid, s.out[0].start, s.out[1].start)
                ids[s.out] = cells.to(torch.int32).cpu().numpy()
            del features
    return ids


def network_labels(
    model: SuperpixelNet,
    image: np.ndarray,
    n_segments: int,
    device: torch.device,
    strip_pixels: int = DEFAULT_STRIP_PIXELS,
    tile: int = DEFAULT_TILE,
) -> tuple[np.ndarray, CellGrid, NetworkTimings]:
    """Cell-id label map at the image's full resolution, before connectivity enforcement.

    The network's cell-id map (:func:`cell_id_map`) sampled to ``H x W`` (nearest). Inference proper
    (:class:`uhrseg.inference.SuperpixelPredictor`) enforces connectivity on the small map instead; this
    function serves the trainer's validation and inspection of raw network output.

    Parameters
    ----------
    model : SuperpixelNet
        PCNet or SCN in eval mode, on ``device`` (prepared with :func:`inference_model` or not).
    image : (H, W, 3) ndarray of uint8, uint16 or float32 in [0, 1]
        RGB image.
    n_segments : int
        Requested number of superpixels (grid cells).
    device : torch.device
        Where the network runs.
    strip_pixels, tile : int
        Memory bounds of the head and the trunk (see :func:`cell_id_map`).

    Returns
    -------
    labels : (H, W) ndarray of int32
        Id of the grid cell each pixel is assigned to, in ``[0, grid.n_cells)``.
    grid : CellGrid
        The network's output grid (``h x w`` output pixels).
    timings : NetworkTimings
        Seconds spent resizing, in the network, and sampling to full resolution.
    """
    def cell_ids(x: np.ndarray, grid: CellGrid, guide: np.ndarray | None) -> np.ndarray:
        ids = cell_id_map(model, x, grid, device, tile, strip_pixels, guide)
        synchronize(device)
        return ids

    return sampled_cell_ids(image, n_segments, model.cell_size, model.upscale, cell_ids, model.uses_guide)
