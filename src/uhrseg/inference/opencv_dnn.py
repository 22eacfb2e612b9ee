"""PCNet and SCN on OpenCV's DNN module: the packaged networks on the CPU without importing torch.

``import torch`` alone takes 1.0-2.1 s on the 2-core CPU, more than the network's own time on a 5K photo, so
the command line runs the packaged weights (and the named ``pcnet-aerial`` and ``pcnet-aerial-fast``, whose
exports ship too: :func:`packaged_export_name`) through their ONNX export (:mod:`uhrseg.inference.onnx_export`)
with ``cv2.dnn`` when it works on the CPU (``uhrseg superpixels --backend``). The tiling is the torch backend's
(:func:`uhrseg.inference.tiling.tile_plan`), so memory stays bounded on any image.

The labels are not guaranteed bit-identical to the torch backend's: the two libraries sum the convolutions in
different orders, so a near-tie of the 9 association logits can fall the other way. Measured
(2026-12-07, OpenCV 5.1.0 against torch 2.13.0, 2-core CPU, the packaged ``pcnet.pt`` and the pipeline's
defaults; ``benchmarks/bench_backends.py``) on the 200 BSDS500 test images at n = 600 and the 10 photographs
(2.5K and 5K) at n = 5000: before the connectivity step PCNet's labels differed at 64 of 93 M pixels; after the
whole pipeline 829 pixels were in another superpixel (825 on 5 BSDS500 images, 4 on 2 photographs). A flipped
fragment can also renumber the superpixels after it in its band of cells (the same partition, other label
values: 18 694 pixels over the 5 BSDS500 images). SCN's raw labels differed at 21 pixels, and 211 pixels
ended in another superpixel (22 on BSDS500, 189 on the photographs). On the CPU, OpenCV's network took 0.77x
torch's time for PCNet on BSDS500 (0.051 against 0.066 s, medians) and 0.91x on the photographs (0.41 against
0.44 s); for SCN 1.08x and 1.14x
(0.131 against 0.121 s, 1.71 against 1.49 s). The backend wins by not importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from ..errors import WeightsNotFoundError
from ..grid.geometry import CellGrid, choice_to_cell_ids
from .tiling import TRUNK_HALO, check_guide, check_tiling, guide_window, tile_plan

__all__ = ["AUTO_OPENCV_METHODS", "OPENCV_METHODS", "OpenCVNetwork", "file_sha256", "packaged_export_name",
           "packaged_export_names", "packaged_name", "packaged_onnx_path"]

#: Methods whose packaged weights ship with an ONNX export.
OPENCV_METHODS = ("pcnet", "scn")
#: Methods that ``backend="auto"`` runs on OpenCV. SCN runs its network at full resolution, where OpenCV took
#: 1.8x torch's time on an Intel Xeon with AVX-512 (medians 1.80 against 0.98 s over the ten 2.5K and 5K photos
#: at n = 5000, ``benchmarks/bench_backends.py``, 2026-12-03), which outweighs the torch import from the second
#: large image of a command on. On the AMD EPYC (AVX2) host of 2026-12-07 it took 1.14x (1.71 against 1.49 s),
#: and one 5K photograph's whole ``uhrseg superpixels --method scn`` command 4.6 s on OpenCV against 5.5 s on
#: torch: there ``--backend opencv`` pays up to about 8 such images per command. PCNet's network is faster on
#: OpenCV on both hosts.
AUTO_OPENCV_METHODS = ("pcnet",)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (what an export records of its checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def packaged_onnx_path(name: str) -> Path:
    """Path of the ``<name>.onnx.json`` shipped in the package (it may not exist): ``name`` a method (its packaged
    weights) or the name of other packaged weights (e.g. ``"pcnet-aerial-fast"``)."""
    return Path(str(resources.files("uhrseg") / "weights" / f"{name}.onnx.json"))


def packaged_name(weights: str | os.PathLike) -> str | None:
    """The packaged weights that a ``weights`` argument names, or None for a checkpoint file: a bare name (no
    folder, no suffix) that is not a file in the working folder names packaged weights (``"pcnet-aerial"``), as
    :class:`uhrseg.SuperpixelPredictor` and ``uhrseg superpixels --weights`` read it. Whether such weights exist
    is not checked here."""
    path = Path(weights)
    return path.name if not path.exists() and len(path.parts) == 1 and not path.suffix else None


def packaged_export_name(method: str, weights: str | os.PathLike | None = None) -> str | None:
    """The stem of the packaged ONNX export that runs ``method`` with ``weights``, or None if there is none.

    ``weights`` None means the method's packaged weights (stem ``method``). A bare name (no folder, no suffix)
    that is not a file in the working folder names packaged weights, as :class:`uhrseg.SuperpixelPredictor` reads
    ``weights``; it has an export for ``method`` when ``<name>.onnx.json`` is installed and records that
    method (``pcnet``, ``pcnet-aerial``, ``pcnet-aerial-fast``). A checkpoint file has none (it runs on the torch
    backend, or is exported with :func:`uhrseg.inference.onnx_export.export_onnx`).
    """
    name = method if weights is None else packaged_name(weights)
    if name is None:
        return None
    info = packaged_onnx_path(name)
    if not info.is_file():
        return None
    try:
        return name if json.loads(info.read_text()).get("method") == method else None
    except (OSError, ValueError, AttributeError):  # unreadable: OpenCVNetwork.from_files says why, where it loads
        return name if weights is None else None


def packaged_export_names(method: str) -> list[str]:
    """The packaged weights of ``method`` that ship an ONNX export (:func:`packaged_export_name`), sorted."""
    folder = packaged_onnx_path(method).parent
    stems = (f.name.removesuffix(".onnx.json") for f in folder.glob("*.onnx.json"))
    return sorted(stem for stem in stems if packaged_export_name(method, stem) is not None)


@dataclass
class OpenCVNetwork:
    """An exported PCNet or SCN, run with ``cv2.dnn`` on the CPU.

    Attributes
    ----------
    method : str
        ``"pcnet"`` or ``"scn"``.
    upscale : int
        Output pixels per input pixel along a side (4 for PCNet, 1 for SCN).
    cell_size : int
        Grid cell side ``S`` in output pixels (16).
    input_multiple : int
        Input sides are padded to multiples of this (16).
    head_halo : int
        Input rows and columns of context of a head strip.
    trunk, head : cv2.dnn.Net
        The two graphs.
    guide : bool
        The head also takes the image at the output resolution (a guided PCNet, ``NetConfig.guide``).
    """

    method: str
    upscale: int
    cell_size: int
    input_multiple: int
    head_halo: int
    trunk: "cv2.dnn.Net"
    head: "cv2.dnn.Net"
    guide: bool = False

    @classmethod
    def from_files(cls, info_path: str | os.PathLike, weights: str | os.PathLike | None = None) -> "OpenCVNetwork":
        """Load the export described by ``<name>.onnx.json`` (its graphs lie in the same folder).

        Parameters
        ----------
        info_path : path-like
            The ``.onnx.json`` file written by :func:`uhrseg.inference.onnx_export.export_onnx`.
        weights : path-like, optional
            The checkpoint the export must come from; when given, its SHA-256 must match the recorded one.

        Raises
        ------
        uhrseg.errors.WeightsNotFoundError
            If a file is missing or unreadable, the installed OpenCV cannot run the graphs, or the export does
            not match ``weights``.
        """
        info_path = Path(info_path)
        try:
            info = json.loads(info_path.read_text())
            net = cls(str(info["method"]), int(info["upscale"]), int(info["cell_size"]), int(info["input_multiple"]),
                      int(info["head_halo"]), cv2.dnn.readNetFromONNX(str(info_path.parent / info["trunk"])),
                      cv2.dnn.readNetFromONNX(str(info_path.parent / info["head"])), bool(info.get("guide", False)))
            net.self_test()
        except (OSError, ValueError, KeyError, TypeError, cv2.error) as e:
            raise WeightsNotFoundError(f"{info_path}: not a usable ONNX export ({type(e).__name__}: {e})") from e
        if weights is not None:
            if file_sha256(weights) != info.get("source_sha256"):
                raise WeightsNotFoundError(f"{info_path}: exported from another file than {weights}; run "
                                           "uhrseg.inference.onnx_export.export_onnx again")
        return net

    def self_test(self) -> None:
        """Run both graphs on a small input (a few ms), so that an OpenCV that reads the graphs but cannot run
        them fails here, at load time.

        Raises
        ------
        cv2.error
            From OpenCV; ValueError if an output has the wrong shape.
        """
        m = self.input_multiple
        self.trunk.setInput(np.zeros((1, 3, 2 * m, 2 * m), np.float32))
        features = self.trunk.forward()
        self._set_head_inputs(np.ascontiguousarray(features[:, :, :4, :4]),
                              np.zeros((1, 3, 4 * self.upscale, 4 * self.upscale), np.float32))
        choice = self.head.forward()
        if features.shape[2:] != (2 * m, 2 * m) or choice.shape[-2:] != (4 * self.upscale, 4 * self.upscale):
            raise ValueError(f"the graphs gave {features.shape} and {choice.shape} on a {2 * m} x {2 * m} input")

    @classmethod
    def packaged(cls, method: str, name: str | None = None) -> "OpenCVNetwork":
        """The packaged weights of ``method`` (``"pcnet"`` or ``"scn"``), or the packaged weights ``name`` of it
        that ship with an export (:func:`packaged_export_name`, e.g. ``"pcnet-aerial-fast"``).

        Raises
        ------
        ValueError
            For another method.
        uhrseg.errors.WeightsNotFoundError
            If the export is missing from the installed package, or holds another method.
        """
        if method not in OPENCV_METHODS:
            raise ValueError(f"the OpenCV backend runs {', '.join(OPENCV_METHODS)}, not {method!r}")
        path = packaged_onnx_path(name or method)
        net = cls.from_files(path)
        if net.method != method:
            raise WeightsNotFoundError(f"{path}: holds {net.method}, not {method}")
        return net

    def _set_head_inputs(self, features: np.ndarray, guide: np.ndarray | None) -> None:
        if self.guide:
            self.head.setInput(features, "features")
            self.head.setInput(guide, "guide")
        else:
            self.head.setInput(features)

    def cell_id_map(self, net_input: np.ndarray, grid: CellGrid, tile: int, strip_pixels: int,
                    guide: np.ndarray | None = None) -> np.ndarray:
        """Cell id of every network output pixel, tile by tile, as :func:`uhrseg.inference.network.cell_id_map`.

        Parameters
        ----------
        net_input : (h / upscale, w / upscale, 3) ndarray of float32 in [0, 1]
            The network input (:func:`uhrseg.inference.resize.network_input`).
        grid : CellGrid
            The output grid, ``h x w`` pixels.
        tile, strip_pixels : int
            Trunk tile core (input pixels) and head strip size (output pixels); memory bounds only.
        guide : (h, w, 3) ndarray of float32 in [0, 1] or a row store of it (:mod:`uhrseg.stores`), optional
            The image at the output resolution; required exactly when :attr:`guide`.

        Returns
        -------
        (h, w) ndarray of int32
            The cell id (``[0, grid.n_cells)``) of every output pixel; the same for any ``tile`` and
            ``strip_pixels`` (tested).

        Raises
        ------
        ValueError
            As :func:`uhrseg.inference.tiling.check_tiling`, or if ``guide`` is missing for a guided network,
            given to another, or not ``(h, w, 3)``.
        """
        up, m = self.upscale, self.input_multiple
        check_guide(self.guide, guide, (grid.height, grid.width), f"{self.method} export")
        tile = check_tiling(net_input.shape, (grid.height, grid.width), up, m, tile, strip_pixels)
        in_h, in_w = net_input.shape[:2]
        x = np.pad(net_input, ((0, -in_h % m), (0, -in_w % m), (0, 0)), mode="edge")
        x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
        full_h, full_w = x.shape[2:]
        ids = np.empty((grid.height, grid.width), np.int32)
        for t in tile_plan(in_h, in_w, full_h, full_w, tile, strip_pixels, up, TRUNK_HALO, self.head_halo):
            self.trunk.setInput(np.ascontiguousarray(x[:, :, t.window[0], t.window[1]]))
            features = self.trunk.forward()
            for s in t.strips:
                self._set_head_inputs(np.ascontiguousarray(features[:, :, s.features[0], s.features[1]]),
                                      None if guide is None else guide_window(guide, *s.guide))
                choice = self.head.forward()[0]
                ids[s.out] = choice_to_cell_ids(choice[s.crop], grid, s.out[0].start, s.out[1].start)
            del features
        return ids
