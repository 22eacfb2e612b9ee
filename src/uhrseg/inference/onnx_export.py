"""Export a PCNet or SCN checkpoint to the ONNX graphs that :mod:`uhrseg.inference.opencv_dnn` runs.

Two graphs, so that the OpenCV backend tiles exactly as the torch backend does (:mod:`uhrseg.inference.tiling`):

* ``<name>.trunk.onnx``: ``(1, 3, H, W)`` float32 RGB in [0, 1] (``H, W`` multiples of 16) -> ``(1, C, H, W)``
  float32 decoder features (input mean subtraction included);
* ``<name>.head.onnx``: ``(1, C, h, w)`` features -> ``(1, upscale h, upscale w)`` int64 index of the most
  probable of the 9 neighbour cells (the argmax of ``Q``; the softmax does not change it and is left out); for
  a guided PCNet (``NetConfig.guide``) the head has a second input, ``guide``: ``(1, 3, upscale h, upscale w)``
  float32 RGB in [0, 1];

and ``<name>.onnx.json``: the model's geometry (``upscale``, ``cell_size``, ``input_multiple``, ``head_halo``,
``guide``),
the file names and the SHA-256 of the checkpoint they came from, so a stale export is detected
(:meth:`uhrseg.inference.opencv_dnn.OpenCVNetwork.from_files`). The graphs come from
:func:`uhrseg.inference.network.inference_model` (sub-pixel convolutions instead of transposed ones), in float32,
with height and width as dynamic axes, BatchNorm left unfolded so that every weight keeps the checkpoint's
float16 value and is stored as float16 (6.3 MB for PCNet's trunk). Exporting needs torch and the ``onnx``
package (``pip install onnx``, in the ``test`` extra); running the graphs needs neither.
"""

from __future__ import annotations

import inspect
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..io.outputs import default_file_mode
from ..models.checkpoint import load_model
from .network import inference_model
from .opencv_dnn import file_sha256

__all__ = ["ONNX_OPSET", "export_onnx"]

#: ONNX operator set of the exported graphs (OpenCV 5.0 runs them; an OpenCV that cannot fails
#: :meth:`uhrseg.inference.opencv_dnn.OpenCVNetwork.self_test` at load time).
ONNX_OPSET = 17


class _Trunk(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(image - self.model.input_mean)


class _Head(torch.nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, *guide: torch.Tensor) -> torch.Tensor:
        return self.model.assoc_logits(features, *guide).argmax(dim=1)


def _half_initializers(path: Path) -> None:
    """Store the graph's float32 weights that float16 holds exactly (all of them for weights shipped as float16)
    as float16 with a Cast node back to float32: half the file, the same numbers."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    initializers, casts = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16) if values.dtype == np.float32 and values.size > 16 else None
        if half is not None and np.array_equal(half.astype(np.float32), values):
            initializers.append(numpy_helper.from_array(half, f"{init.name}.fp16"))
            casts.append(helper.make_node("Cast", [f"{init.name}.fp16"], [init.name], to=TensorProto.FLOAT))
        else:
            initializers.append(init)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(graph_model, str(path))


def _export(module: torch.nn.Module, examples: tuple[torch.Tensor, ...], path: Path, input_names: list[str],
            output_name: str, output_axes: dict[int, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            # the TorchScript exporter: torch >= 2.5 takes `dynamo` (and defaults to the other exporter from 2.9)
            legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            axes = {name: {2: f"{name}_height", 3: f"{name}_width"} for name in input_names[1:]}
            axes[input_names[0]] = {2: "height", 3: "width"}
            torch.onnx.export(module, examples, tmp, opset_version=ONNX_OPSET, do_constant_folding=False,
                              input_names=input_names, output_names=[output_name],
                              dynamic_axes={**axes, output_name: output_axes}, **legacy)
        _half_initializers(Path(tmp))
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(weights: str | os.PathLike, directory: str | os.PathLike, name: str | None = None) -> Path:
    """Write ``<name>.trunk.onnx``, ``<name>.head.onnx`` and ``<name>.onnx.json`` for a PCNet/SCN checkpoint.

    Parameters
    ----------
    weights : path-like
        A superpixel-network checkpoint (:func:`uhrseg.models.load_model`), e.g. ``src/uhrseg/weights/pcnet.pt``.
    directory : path-like
        Existing output folder; files are written to temporary names and renamed.
    name : str, optional
        File stem; default: the checkpoint's stem.

    Returns
    -------
    Path
        The ``<name>.onnx.json`` file.

    Raises
    ------
    ValueError
        If the checkpoint holds a segmentation network.
    ModuleNotFoundError
        If the ``onnx`` package is not installed.
    uhrseg.errors.WeightsNotFoundError, uhrseg.errors.CheckpointError
        As :func:`uhrseg.models.load_model`.
    """
    import onnx  # noqa: F401  (torch.onnx.export needs it; fail early with its own message)

    weights, directory = Path(weights), Path(directory)
    name = name or weights.stem
    model = load_model(weights)
    if model.name not in ("pcnet", "scn"):
        raise ValueError(f"{weights}: export_onnx takes PCNet or SCN weights, not {model.name!r}")
    model = inference_model(model).float().to(memory_format=torch.contiguous_format).eval()
    m = model.input_multiple
    image = torch.rand(1, 3, 4 * m, 6 * m)
    with torch.no_grad():
        features = model.trunk(image - model.input_mean)
    trunk, head = directory / f"{name}.trunk.onnx", directory / f"{name}.head.onnx"
    head_inputs, head_names = (features,), ["features"]
    if model.uses_guide:
        head_inputs += (torch.rand(1, 3, *(model.upscale * v for v in features.shape[2:])),)
        head_names.append("guide")
    _export(_Trunk(model).eval(), (image,), trunk, ["image"], "features", {2: "height", 3: "width"})
    _export(_Head(model).eval(), head_inputs, head, head_names, "choice", {1: "height", 2: "width"})
    info = {
        "method": model.name,
        "source": weights.name,
        "source_sha256": file_sha256(weights),
        "trunk": trunk.name,
        "head": head.name,
        "upscale": int(model.upscale),
        "cell_size": int(model.cell_size),
        "input_multiple": int(m),
        "head_halo": int(model.head_halo),
        "guide": bool(model.uses_guide),
        "opset": ONNX_OPSET,
        "torch": torch.__version__,
    }
    meta = directory / f"{name}.onnx.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{meta.name}.", suffix=".part", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, meta)
    return meta
