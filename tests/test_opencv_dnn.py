"""The OpenCV backend: the packaged PCNet and SCN through their ONNX export, run without torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uhrseg import SuperpixelPredictor
from uhrseg.errors import WeightsNotFoundError
from uhrseg.grid.cells import neighbour_choice_to_cell_ids
from uhrseg.grid.geometry import CellGrid, choice_to_cell_ids
from uhrseg.inference.opencv_dnn import OpenCVNetwork, packaged_export_name, packaged_onnx_path
from uhrseg.inference.predictor import resolve_backend, torch_may_see_gpu
from uhrseg.inference.resize import network_input, network_inputs
from uhrseg.inference.tiling import tile_plan
from uhrseg.io import read_image
from uhrseg.io.sources import ArraySource
from uhrseg.metrics.superpixel import achievable_segmentation_accuracy
from uhrseg.models.checkpoint import packaged_weights_path

from conftest import PHOTOS, assert_superpixel_labels


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_image(PHOTOS / "bythewater-2560x1600.jpg")


@pytest.mark.parametrize("method, name, head_halo", [("pcnet", "pcnet", 2), ("scn", "scn", 1),
                                                     ("pcnet", "pcnet-aerial-fast", 2), ("pcnet", "pcnet-aerial", 3)])
def test_the_shipped_export_comes_from_the_shipped_weights(method, name, head_halo):
    info = json.loads(packaged_onnx_path(name).read_text())
    assert info["method"] == method and info["source"] == f"{name}.pt"
    net = OpenCVNetwork.from_files(packaged_onnx_path(name), weights=packaged_weights_path(name))
    # head strips need 1 + ceil((2 + 2 head blocks) / 4) input rows of context (PCNet.head_halo): pcnet-aerial
    # has three head blocks, the other PCNets one
    assert (net.upscale, net.cell_size, net.head_halo) == ((4, 16, head_halo) if method == "pcnet" else (1, 16, 1))
    with pytest.raises(WeightsNotFoundError, match="another file"):
        OpenCVNetwork.from_files(packaged_onnx_path(name), weights=packaged_weights_path("pcnet-large"))


def test_exports_share_a_trunk_graph_only_where_the_weights_share_the_trunk():
    """pcnet-aerial's export names pcnet-aerial-fast's trunk graph rather than shipping a second copy of the same
    6.3 MB: valid because pcnet-aerial-fast was distilled on pcnet-aerial's frozen trunk (the exports of the two
    trunks were byte-identical). Every export whose trunk graph another export uses must come from weights with
    the same trunk, bit for bit."""
    from uhrseg.models import load_model

    exports = sorted(packaged_onnx_path("pcnet").parent.glob("*.onnx.json"))
    by_trunk: dict[str, list[str]] = {}
    for info_path in exports:
        info = json.loads(info_path.read_text())
        by_trunk.setdefault(info["trunk"], []).append(info["source"])
    assert by_trunk["pcnet-aerial-fast.trunk.onnx"] == ["pcnet-aerial-fast.pt", "pcnet-aerial.pt"]
    for sources in by_trunk.values():
        models = [load_model(packaged_onnx_path("pcnet").parent / source).state_dict() for source in sources]
        for other in models[1:]:
            keys = [k for k in models[0] if k.startswith("trunk.")]
            assert keys and all(torch.equal(models[0][k], other[k]) for k in keys)


@pytest.mark.parametrize("method,n,weights", [("pcnet", 600, None), ("pcnet", 5000, None), ("scn", 600, None),
                                              ("pcnet", 5000, "pcnet-aerial-fast"), ("pcnet", 5000, "pcnet-aerial")])
def test_network_labels_agree_with_torch(method, n, weights, bsds_image, photo):
    """Raw network labels (before connectivity) at full resolution: the two backends may differ only where
    two association logits tie to float32 rounding; measured: no pixel on these images."""
    image = bsds_image if n == 600 else photo
    cv = SuperpixelPredictor(method, device="cpu", backend="opencv", weights=weights).run(image, n,
                                                                                         connectivity=False)
    pt = SuperpixelPredictor(method, device="cpu", backend="torch", weights=weights).run(image, n,
                                                                                        connectivity=False)
    assert cv.n_cells == pt.n_cells
    differ = float((cv.labels != pt.labels).mean())
    assert differ <= 1e-5, differ


def test_full_pipeline_agrees_with_torch_and_keeps_the_conventions(photo):
    cv = SuperpixelPredictor("pcnet", device="cpu", backend="opencv").predict(photo, 2000)
    pt = SuperpixelPredictor("pcnet", device="cpu", backend="torch").predict(photo, 2000)
    assert_superpixel_labels(cv, photo.shape[:2])
    assert abs(int(cv.max()) - int(pt.max())) <= 0.005 * pt.max()
    # The same partition up to near-ties of the argmax (float32 rounding of two backends): at most 1 pixel in
    # 10 000 lies in another superpixel (each torch superpixel matched to the OpenCV one it overlaps most;
    # 2.9e-5 with the pcnet.pt of 2026-12-05, seventh session). The label numbers may shift after such a pixel.
    assert 1.0 - achievable_segmentation_accuracy(pt, cv) <= 1e-4


def test_tiling_does_not_change_the_opencv_labels(photo):
    net = OpenCVNetwork.packaged("pcnet")
    grid = CellGrid(16 * 30, 16 * 48)
    x, guide = network_inputs(ArraySource(photo), grid, 4, guided=net.guide)
    whole = net.cell_id_map(x, grid, tile=1024, strip_pixels=2**22, guide=guide)
    tiled = net.cell_id_map(x, grid, tile=32, strip_pixels=3000, guide=guide)
    assert np.array_equal(whole, tiled)
    assert whole.min() >= 0 and whole.max() < grid.n_cells


def test_export_of_a_user_checkpoint_runs_in_opencv(pcnet_random_ckpt, bsds_image, tmp_path):
    from uhrseg.inference.network import cell_id_map, inference_model
    from uhrseg.inference.onnx_export import export_onnx
    from uhrseg.models import load_model

    info = export_onnx(pcnet_random_ckpt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pcnet-random.head.onnx", "pcnet-random.onnx.json",
                                                          "pcnet-random.trunk.onnx"]
    net = OpenCVNetwork.from_files(info, weights=pcnet_random_ckpt)
    grid = CellGrid(16 * 20, 16 * 30)
    x = network_input(ArraySource(bsds_image), grid.height // 4, grid.width // 4)
    model = inference_model(load_model(pcnet_random_ckpt))
    ids_torch = cell_id_map(model, x, grid, torch.device("cpu"))
    assert float((net.cell_id_map(x, grid, 512, 2**19) != ids_torch).mean()) <= 1e-4
    with pytest.raises(ValueError, match="PCNet or SCN"):
        export_onnx(packaged_weights_path("isdnet-drone"), tmp_path)


def test_backend_choice_and_errors(tmp_path):
    assert resolve_backend("torch", "pcnet", "cpu") == "torch"
    assert resolve_backend("auto", "pcnet", "cpu") == "opencv"
    assert resolve_backend("auto", "scn", "cuda") == "torch"
    assert resolve_backend("auto", "scn", "cpu") == "torch"
    assert resolve_backend("opencv", "scn", "cpu") == "opencv"
    # named packaged weights with their own export run on OpenCV too; the same weights as a file path do not
    assert resolve_backend("auto", "pcnet", "cpu", weights="pcnet-aerial") == "opencv"
    assert resolve_backend("auto", "pcnet", "cpu", weights="pcnet-large") == "torch"  # packaged, no export
    assert resolve_backend("auto", "pcnet", "cpu", weights="pcnet-aerial-fast") == "opencv"
    assert resolve_backend("opencv", "pcnet", "cpu", weights="pcnet-aerial-fast") == "opencv"
    assert resolve_backend("auto", "pcnet", "cpu", weights=packaged_weights_path("pcnet-aerial-fast")) == "torch"
    assert resolve_backend("auto", "pcnet", "cuda", weights="pcnet-aerial-fast") == "torch"
    assert resolve_backend("auto", "scn", "cpu", weights="pcnet-aerial-fast") == "torch"
    assert resolve_backend("auto", "pcnet", "auto") == ("torch" if torch_may_see_gpu() else "opencv")
    for weights in (packaged_weights_path("pcnet-aerial"), "pcnet-large"):
        with pytest.raises(ValueError, match=r"runs pcnet weights with a packaged ONNX export only "
                                             r"\(pcnet, pcnet-aerial, pcnet-aerial-fast\); use the torch backend"):
            SuperpixelPredictor("pcnet", backend="opencv", weights=weights)
    with pytest.raises(ValueError, match=r"runs scn weights with a packaged ONNX export only \(scn\)"):
        resolve_backend("opencv", "scn", "cpu", weights="pcnet-aerial-fast")
    # a packaged name is read as the predictor reads it: the method's own name too, never a file of that name
    assert resolve_backend("opencv", "pcnet", "cpu", weights="pcnet") == "opencv"
    assert packaged_export_name("pcnet", "pcnet-aerial-fast") == "pcnet-aerial-fast"
    assert packaged_export_name("scn") == "scn" and packaged_export_name("scn", "pcnet-aerial-fast") is None
    assert packaged_export_name("pcnet", "pcnet-large") is None  # packaged, but without an export: torch
    (tmp_path / "pcnet-aerial-fast").write_bytes(b"")
    assert packaged_export_name("pcnet", tmp_path / "pcnet-aerial-fast") is None
    assert packaged_export_name("pcnet", "weights/pcnet-aerial-fast") is None
    assert packaged_export_name("pcnet", "pcnet-aerial-fast.pt") is None
    with pytest.raises(ValueError, match="on the CPU"):
        resolve_backend("opencv", "pcnet", "cuda")
    with pytest.raises(ValueError, match="unknown backend"):
        SuperpixelPredictor("pcnet", backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        SuperpixelPredictor("slic", backend="onnx")


def test_gpu_check_agrees_with_torch_without_importing_it():
    code = ("import sys; from uhrseg.inference.predictor import torch_may_see_gpu as f; "
            "print(f(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(torch.cuda.is_available()), "False"]


def test_unusable_exports_are_reported_with_their_file(tmp_path):
    info = json.loads(packaged_onnx_path("pcnet").read_text())
    broken = tmp_path / "broken.onnx.json"
    broken.write_text("[1, 2")
    with pytest.raises(WeightsNotFoundError, match="broken.onnx.json.*not a usable ONNX export"):
        OpenCVNetwork.from_files(broken)
    (tmp_path / "list.onnx.json").write_text("[1, 2]")
    with pytest.raises(WeightsNotFoundError, match="list.onnx.json"):
        OpenCVNetwork.from_files(tmp_path / "list.onnx.json")
    missing = tmp_path / "missing.onnx.json"
    missing.write_text(json.dumps(info))  # the graphs are not beside it
    with pytest.raises(WeightsNotFoundError, match="missing.onnx.json"):
        OpenCVNetwork.from_files(missing)
    (tmp_path / info["trunk"]).write_bytes(b"not onnx")
    (tmp_path / info["head"]).write_bytes(b"not onnx")
    with pytest.raises(WeightsNotFoundError, match="missing.onnx.json"):
        OpenCVNetwork.from_files(missing)


def test_command_runs_without_importing_torch(tmp_path):
    """What makes the command fast: with the packaged weights on the CPU, torch is never imported."""
    image = str(PHOTOS / "kite-2560x1600.jpg")
    code = ("import sys; from uhrseg.cli.main import main; "
            f"rc = main(['superpixels', {image!r}, '-n', '500', '-q', '--device', 'cpu', '--out', sys.argv[1]]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "False"]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["backend"] == "opencv" and summary["images"][0]["n_produced"] > 400
    aerial = code.replace("'--out'", "'--weights', 'pcnet-aerial-fast', '--out'")  # its export ships too
    out = subprocess.run([sys.executable, "-c", aerial, str(tmp_path / "c")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "False"]
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["backend"] == "opencv" and summary["weights"] == "pcnet-aerial-fast"
    code = code.replace("'--out'", "'--backend', 'torch', '--out'")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["0", "True"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["backend"] == "torch"


@settings(max_examples=60, deadline=None)
@given(n_rows=st.integers(1, 9), n_cols=st.integers(1, 9), s=st.sampled_from([1, 4, 16]),
       r0=st.integers(0, 40), c0=st.integers(0, 40), seed=st.integers(0, 2**16))
def test_numpy_choice_to_cell_ids_matches_torch(n_rows, n_cols, s, r0, c0, seed):
    grid = CellGrid(n_rows * s, n_cols * s, s)
    r0, c0 = r0 % grid.height, c0 % grid.width
    h, w = grid.height - r0, grid.width - c0
    choice = np.random.default_rng(seed).integers(0, 9, (h, w))
    expected = neighbour_choice_to_cell_ids(torch.from_numpy(choice), grid, r0, c0).numpy()
    got = choice_to_cell_ids(choice, grid, r0, c0)
    assert got.dtype == np.int32 and np.array_equal(got, expected)


@settings(max_examples=80, deadline=None)
@given(in_h=st.integers(1, 90), in_w=st.integers(1, 90), tile=st.sampled_from([16, 32, 48, 512]),
       strip_pixels=st.integers(1, 5000), up=st.sampled_from([1, 4]), head_halo=st.integers(1, 2))
def test_tile_plan_covers_the_output_once(in_h, in_w, tile, strip_pixels, up, head_halo):
    full_h, full_w = -(-in_h // 16) * 16, -(-in_w // 16) * 16
    covered = np.zeros((in_h * up, in_w * up), np.int32)
    for t in tile_plan(in_h, in_w, full_h, full_w, tile, strip_pixels, up, 96, head_halo):
        win_h = t.window[0].stop - t.window[0].start
        win_w = t.window[1].stop - t.window[1].start
        for s in t.strips:
            rows, cols = s.features
            assert 0 <= rows.start < rows.stop <= win_h and 0 <= cols.start < cols.stop <= win_w
            crop_h, crop_w = s.crop[0].stop - s.crop[0].start, s.crop[1].stop - s.crop[1].start
            assert s.crop[0].stop <= (rows.stop - rows.start) * up and s.crop[1].stop <= (cols.stop - cols.start) * up
            assert (crop_h, crop_w) == (s.out[0].stop - s.out[0].start, s.out[1].stop - s.out[1].start)
            covered[s.out] += 1
    assert (covered == 1).all()
