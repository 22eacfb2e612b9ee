"""Inference: the Python API on real BSDS500 images, for the networks and every classical method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import uhrseg
from conftest import BSDS, DEEPGLOBE, assert_superpixel_labels, bsds_image_path
from uhrseg.classical import CLASSICAL_METHODS
from uhrseg.grid import CellGrid, refine_boundaries
from uhrseg.inference import grid_shape_for, network_labels, resize_image, resolve_device
from uhrseg.io import read_image
from uhrseg.models import load_model


def test_grid_network_gives_the_grid_cells_at_full_resolution(bsds_image, pcnet_grid_ckpt):
    """A network that assigns every pixel to its own cell must return the cell grid, mapped to H x W."""
    h, w = bsds_image.shape[:2]
    result = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu", refine_iterations=0,
                                        oversegmentation=1).run(bsds_image, 600)
    n_rows, n_cols = grid_shape_for(h, w, 600)
    assert (n_rows, n_cols) == (20, 30)
    assert result.n_cells == 600
    k = assert_superpixel_labels(result.labels, (h, w))
    assert k == 600
    # Pixel (y, x) samples output pixel ((y + .5) * 16 n_rows / H) -> cell row floor of that / 16.
    rows = ((np.arange(h) + 0.5) * n_rows / h).astype(int)
    cols = ((np.arange(w) + 0.5) * n_cols / w).astype(int)
    expected = rows[:, None] * n_cols + cols[None, :]  # raster order == cell order here
    np.testing.assert_array_equal(result.labels, expected)


def test_networks_refine_their_boundaries_by_default(bsds_image, pcnet_grid_ckpt):
    """Default network output = connectivity step + 8 refinement passes; K is kept, boundaries move."""
    raw = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu", refine_iterations=0)
    refined = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu")
    assert refined.refine_iterations == 8 and uhrseg.SuperpixelPredictor("slic").refine_iterations == 0
    base = raw.run(bsds_image, 600)
    result = refined.run(bsds_image, 600)
    lam = refined.smoothness_for(*bsds_image.shape[:2], 600)
    assert result.refine_smoothness == lam and 149.5 < lam <= 150.0  # labels upsampled 1.003 times
    np.testing.assert_array_equal(result.labels, refine_boundaries(bsds_image, base.labels, smoothness=lam))
    assert result.n_produced == base.n_produced and "refine" in result.timings
    assert 0.02 < (result.labels != base.labels).mean() < 0.3
    with pytest.raises(ValueError, match="refine_iterations"):
        uhrseg.SuperpixelPredictor("slic", refine_iterations=-1)


def test_refinement_smoothness_moves_along_the_br_bp_curve(pcnet_grid_ckpt):
    """A lower lambda follows more image edges: on a real BSDS500 image with its ground truths, BR rises and BP
    falls (the trade-off measured in docs/results/refine-tuning/), and the predictor applies exactly
    refine_boundaries(m, lambda) to the connected network labels."""
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.metrics import boundary_recall_precision

    data = open_dataset("bsds500:test", str(BSDS))
    name = data.names[0]
    image, gts = data.image(name), data.ground_truths(name)
    raw = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu", refine_iterations=0)
    base = raw.run(image, 600).labels
    scores = {}
    for lam in (50.0, 200.0):
        predictor = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu",
                                               refine_smoothness=lam, refine_compactness=5.0)
        labels = predictor.predict(image, 600)
        np.testing.assert_array_equal(labels, refine_boundaries(image, base, 8, 5.0, lam))
        scores[lam] = np.mean([boundary_recall_precision(labels, gt) for gt in gts], axis=0)
    assert scores[50.0][0] > scores[200.0][0] + 0.02  # BR
    assert scores[50.0][1] < scores[200.0][1]  # BP
    for bad in (dict(refine_smoothness=-1), dict(refine_compactness=float("nan"))):  # nan was accepted
        with pytest.raises(ValueError, match="refine_compactness and refine_smoothness must be finite and >= 0"):
            uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, **bad)


def test_default_smoothness_falls_with_the_upsampling_on_a_satellite_tile(pcnet_grid_ckpt):
    """On a 2448 x 2448 DeepGlobe tile at n = 600 the network's labels are upsampled 6.4 times, so the default
    lambda is 150 / 6.4 ** (1/3) = 81: the predictor applies exactly that, and it recovers more of the
    annotated land-cover boundaries than the BSDS500 value 150 would, at r = 1."""
    from uhrseg.datasets.readers import open_dataset
    from uhrseg.defaults import resolution_smoothness
    from uhrseg.metrics import boundary_recall_precision

    data = open_dataset(str(DEEPGLOBE / "test"))
    name = data.names[0]
    image, gt = data.image(name), data.ground_truths(name)[0]
    assert image.shape[:2] == (2448, 2448)
    base = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu", refine_iterations=0,
                                      oversegmentation=1).predict(image, 600)
    result = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt, device="cpu",
                                        oversegmentation=1).run(image, 600)
    lam = resolution_smoothness(np.sqrt(2448 * 2448 / (384 * 400)))
    assert result.refine_smoothness == pytest.approx(lam) and 80.0 < lam < 82.0
    np.testing.assert_array_equal(result.labels, refine_boundaries(image, base, smoothness=lam))
    fixed = refine_boundaries(image, base, smoothness=150.0)
    (br_auto, bp_auto), (br_fixed, bp_fixed) = (boundary_recall_precision(labels, gt, tolerance=1)
                                                for labels in (result.labels, fixed))
    assert br_auto > br_fixed + 0.01 and bp_auto > 0.5 * bp_fixed


def test_strip_size_does_not_change_the_labels(bsds_image, pcnet_random_ckpt):
    model = load_model(pcnet_random_ckpt)
    cpu = torch.device("cpu")
    whole, grid, _ = network_labels(model, bsds_image, 1000, cpu, strip_pixels=10**9)
    strips, _, _ = network_labels(model, bsds_image, 1000, cpu, strip_pixels=5000)
    rows, cols = grid_shape_for(*bsds_image.shape[:2], 1000)
    assert grid.n_cells == rows * cols
    np.testing.assert_array_equal(strips, whole)
    assert 0 <= whole.min() and whole.max() < grid.n_cells


@pytest.mark.parametrize("method", ["pcnet", "scn"])
def test_networks_follow_output_conventions(bsds_image, pcnet_random_ckpt, scn_ckpt, method):
    weights = pcnet_random_ckpt if method == "pcnet" else scn_ckpt
    labels = uhrseg.superpixels(bsds_image, 300, method=method, weights=weights, device="cpu")
    assert_superpixel_labels(labels, bsds_image.shape[:2])


@pytest.mark.parametrize("method", sorted(CLASSICAL_METHODS))
def test_classical_methods_follow_output_conventions(bsds_image, method):
    labels = uhrseg.superpixels(bsds_image, 400, method=method)
    k = assert_superpixel_labels(labels, bsds_image.shape[:2])
    assert 0.5 * 400 <= k <= 1.6 * 400, f"{method} gave {k} superpixels for n=400"


#: Crops of a real image, thin or tiny, and counts where OpenCV's SLIC, SLICO, LSC or SEEDS crashed the process
#: (segmentation fault, division by zero) or looped forever before 2026-12-08: each is run or refused cleanly.
OPENCV_EDGE_CASES = [(1, 50, 1), (2, 50, 1), (3, 50, 2), (8, 50, 1), (50, 8, 1), (10, 400, 1), (20, 400, 4),
                     (100, 16, 3), (321, 4, 100), (200, 320, 1), (100, 400, 1), (2, 2, 1), (3, 3, 1), (6, 50, 2)]


def test_opencv_methods_never_crash_on_thin_images_or_small_counts(tmp_path):
    """In a child process, so that a crash is a failure here rather than the end of the test run: every case
    either gives valid labels or raises ValueError naming the method, and the ordinary sizes are never refused
    (all four on the BSDS500 image at n = 1 and 400)."""
    code = f"""if True:
        import json, numpy as np, uhrseg
        from uhrseg.io import read_image
        image = read_image({str(bsds_image_path("100007"))!r})
        out = {{}}
        for method in ("cv-slic", "slico", "lsc", "seeds"):
            for h, w, n in {OPENCV_EDGE_CASES!r} + [(image.shape[0], image.shape[1], 1), (*image.shape[:2], 400)]:
                crop = np.ascontiguousarray(image[:h, :w])
                try:
                    labels = uhrseg.superpixels(crop, n, method=method)
                    out[f"{{method}} {{h}}x{{w}} n={{n}}"] = int(labels.max()) + 1 if labels.shape == (h, w) else -1
                except ValueError as e:
                    assert method in str(e) or "n_segments" in str(e), str(e)
                    out[f"{{method}} {{h}}x{{w}} n={{n}}"] = "refused"
        print(json.dumps(out))
    """
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-2000:]}"
    out = json.loads(run.stdout)
    assert all(v == "refused" or v >= 1 for v in out.values()), out
    h, w = read_image(bsds_image_path("100007")).shape[:2]
    for method in ("cv-slic", "slico", "lsc", "seeds"):
        assert out[f"{method} {h}x{w} n=1"] != "refused" and out[f"{method} {h}x{w} n=400"] > 200
    assert out["seeds 2x2 n=1"] == out["lsc 1x50 n=1"] == "refused"


@pytest.mark.parametrize("method", ["pcnet", "slico"])
def test_a_predictor_reused_across_images_gives_what_a_fresh_one_gives(bsds_image, method):
    """A predictor loads its model once and runs many images: nothing of one image (buffers, the merge, the
    refinement's sums) may leak into the next. The same image before and after another, of another size, gives
    the same labels, and those of a fresh predictor."""
    other = read_image(bsds_image_path("100039")).transpose(1, 0, 2)  # another scene, portrait
    predictor = uhrseg.SuperpixelPredictor(method, device="cpu")
    first = predictor.predict(bsds_image, 600)
    second_image = predictor.predict(other, 400)
    assert second_image.shape == other.shape[:2]
    np.testing.assert_array_equal(predictor.predict(bsds_image, 600), first)
    np.testing.assert_array_equal(uhrseg.superpixels(bsds_image, 600, method=method, device="cpu"), first)


def test_image_layouts_give_the_same_superpixels(bsds_image):
    """Gray, RGBA, 16-bit and float inputs are brought to the same RGB image before segmentation."""
    reference = uhrseg.superpixels(bsds_image, 300, method="slic")
    rgba = np.dstack([bsds_image, np.full(bsds_image.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(uhrseg.superpixels(rgba, 300, method="slic"), reference)
    np.testing.assert_array_equal(uhrseg.superpixels(bsds_image.astype(np.uint16) * 257, 300, method="slic"), reference)
    np.testing.assert_array_equal(uhrseg.superpixels(bsds_image / 255.0, 300, method="slic"), reference)
    gray = uhrseg.superpixels(bsds_image[:, :, 1], 300, method="slic")
    assert_superpixel_labels(gray, bsds_image.shape[:2])


def test_superpixel_count_follows_n(bsds_image, pcnet_grid_ckpt):
    predictor = uhrseg.SuperpixelPredictor("pcnet", weights=pcnet_grid_ckpt)
    counts = [predictor.run(bsds_image, n).n_produced for n in (50, 200, 1000)]
    assert counts[0] < counts[1] < counts[2]
    for n, k in zip((50, 200, 1000), counts):
        assert abs(k - n) <= 0.1 * n


def test_resize_image_range_and_dtype(bsds_image):
    small = resize_image(bsds_image, 80, 120)
    assert small.shape == (80, 120, 3) and small.dtype == np.float32
    assert 0.0 <= small.min() and small.max() <= 1.0
    big = resize_image(bsds_image, 700, 1000)
    assert 0.0 <= big.min() and big.max() <= 1.0
    np.testing.assert_allclose(small.mean(), bsds_image.mean() / 255, atol=2e-3)


@pytest.mark.parametrize("n", [0, -5, 321 * 481 // 4 + 1])
def test_n_segments_out_of_range(bsds_image, n):
    with pytest.raises(ValueError, match="n_segments"):
        uhrseg.superpixels(bsds_image, n, method="slic")


def test_unknown_method_and_device(bsds_image, pcnet_random_ckpt):
    with pytest.raises(ValueError, match="unknown method 'quickshift'"):
        uhrseg.SuperpixelPredictor("quickshift")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="takes no weights"):
        uhrseg.SuperpixelPredictor("slic", weights=pcnet_random_ckpt)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_gpu():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_zero_sized_array():
    with pytest.raises(ValueError, match="zero-sized"):
        uhrseg.superpixels(np.zeros((0, 5, 3), np.uint8), 1, method="slic")


def test_cell_grid_ids():
    grid = CellGrid(40, 33, 16)
    assert (grid.n_rows, grid.n_cols, grid.n_cells) == (3, 3, 9)
    assert grid.cell_ids()[39, 32] == 8


def _raw_and_final(predictor, image, n):
    return predictor.run(image, n, connectivity=False).labels, predictor.run(image, n).labels


def test_lower_precisions_keep_the_superpixels_quality():
    """bf16 and fp16 autocast on the torch backend, 4 real BSDS500 val images at n = 600: the network's raw cell
    ids differ from fp32 at some pixels (the precision is applied) but at few (measured on this CPU: about 2 % for
    bf16, 0.3 % for fp16), and the final superpixels keep their BR and ASA."""
    from uhrseg.datasets import BSDS500
    from uhrseg.metrics import achievable_segmentation_accuracy, boundary_recall_precision

    dataset = BSDS500(BSDS, "val")
    names = dataset.names[:4]
    images = [dataset.image(name) for name in names]
    truths = [dataset.ground_truths(name) for name in names]
    scores, raws = {}, {}
    for precision in ("fp32", "bf16", "fp16"):
        predictor = uhrseg.SuperpixelPredictor("pcnet", device="cpu", backend="auto", precision=precision)
        assert predictor.backend == ("opencv" if precision == "fp32" else "torch")
        if precision == "fp32":
            predictor = uhrseg.SuperpixelPredictor("pcnet", device="cpu", backend="torch")
        runs = [_raw_and_final(predictor, image, 600) for image in images]
        raws[precision] = [raw for raw, _ in runs]
        pairs = [(labels, gt) for (_, labels), gts in zip(runs, truths) for gt in gts]
        scores[precision] = np.mean([(boundary_recall_precision(labels, gt)[0],
                                      achievable_segmentation_accuracy(labels, gt)) for labels, gt in pairs], axis=0)
    pixels = sum(raw.size for raw in raws["fp32"])
    for precision, most in (("bf16", 0.05), ("fp16", 0.01)):
        share = sum(int((a != b).sum()) for a, b in zip(raws[precision], raws["fp32"])) / pixels
        assert 0 < share < most, (precision, share)
        br, asa = scores[precision]
        assert br > scores["fp32"][0] - 0.01 and asa > scores["fp32"][1] - 0.002, (precision, scores)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_tiled_equals_untiled_at_lower_precision(photo_path, precision):
    """The tiling stays exact under autocast: small tiles and strips give the untiled cell-id map."""
    from uhrseg.inference import cell_id_map
    from uhrseg.inference.resize import network_inputs, output_grid
    from uhrseg.io import ArraySource, read_image

    model = uhrseg.SuperpixelPredictor("pcnet", device="cpu", backend="torch").model
    photo = read_image(photo_path)[:800, :1200]
    grid = output_grid(800, 1200, 1500, 16)
    x, guide = network_inputs(ArraySource(photo), grid, 4, guided=True)
    cpu = torch.device("cpu")
    whole = cell_id_map(model, x, grid, cpu, 10**6, 2**30, guide, precision)
    tiled = cell_id_map(model, x, grid, cpu, 64, 2**14, guide, precision)
    assert np.array_equal(tiled, whole), f"{np.count_nonzero(tiled != whole)} pixels differ"
    assert np.count_nonzero(whole != cell_id_map(model, x, grid, cpu, 10**6, 2**30, guide)) > 0  # not fp32's


def test_precision_errors(bsds_image):
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        uhrseg.SuperpixelPredictor("pcnet", precision="fp8")
    with pytest.raises(ValueError, match="the opencv backend computes in float32"):
        uhrseg.SuperpixelPredictor("pcnet", backend="opencv", precision="bf16")
    with pytest.raises(ValueError, match="method 'slic' takes no precision"):
        uhrseg.SuperpixelPredictor("slic", precision="fp16")
    with pytest.raises(ValueError, match="method 'seeds' takes no precision"):
        uhrseg.superpixels(bsds_image, 100, method="seeds", precision="bf16")
    from uhrseg.inference import cell_id_map

    model = uhrseg.SuperpixelPredictor("pcnet", device="cpu", backend="torch").model
    with pytest.raises(ValueError, match="precision must be one of"):
        cell_id_map(model, np.zeros((16, 16, 3), np.float32), CellGrid(64, 64), torch.device("cpu"),
                    guide=np.zeros((64, 64, 3), np.float32), precision="half")


def test_bf16_is_refused_on_a_gpu_without_it(monkeypatch):
    """A GPU before compute capability 8.0 has no bfloat16 (torch's is_bf16_supported() counts emulation, so the
    check asks for the capability of the device given); fp16 and fp32 pass. The GPU is simulated by replacing
    torch's two queries, as this machine has none."""
    from uhrseg.inference.network import check_inference_precision

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    gpu = torch.device("cuda", 1)
    with pytest.raises(ValueError, match="Tesla T4 has no bfloat16"):
        check_inference_precision("bf16", gpu)
    assert asked == [gpu]
    assert check_inference_precision("fp16", gpu) == "fp16" and check_inference_precision("fp32", gpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert check_inference_precision("bf16", gpu) == "bf16"


def test_a_script_that_exits_right_after_making_a_predictor_exits_cleanly(tmp_path):
    """The kernel warm-up thread was a daemon: a process that ended while it was still loading or compiling
    numba's kernels (a fresh cache here, so it is) aborted in the C++ runtime, exit status 134."""
    import os
    import subprocess
    import sys

    code = "import uhrseg; uhrseg.SuperpixelPredictor('pcnet', device='cpu')"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "terminate called" not in proc.stderr, (proc.returncode, proc.stderr[-500:])
