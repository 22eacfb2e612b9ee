"""Shared fixtures: real data from ../shared and small checkpoints made by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from uhrseg.io import read_image
from uhrseg.models import PCNet, SCN, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BSDS = SHARED / "datasets" / "BSDS500"
PHOTOS = SHARED / "datasets" / "photos"


def bsds_image_path(name: str = "100007", split: str = "test") -> Path:
    path = BSDS / "images" / split / f"{name}.jpg"
    if not path.is_file():
        pytest.fail(f"BSDS500 is expected at {BSDS} (the shared data beside the repository)")
    return path


def guided_input_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out BSDS500 test image (100007, cropped to 320 x 448) as a guided PCNet's inputs: the 1/4 input
    ``(1, 3, 80, 112)`` (area average) and the guide ``(1, 3, 320, 448)``, float32 in [0, 1]."""
    image = torch.from_numpy(read_image(bsds_image_path())[:320, :448].copy()).permute(2, 0, 1)[None]
    big = image.float() / 255
    return torch.nn.functional.interpolate(big, size=(80, 112), mode="area"), big


@pytest.fixture(scope="session")
def bsds_image() -> np.ndarray:
    """A real BSDS500 test image, (321, 481, 3) uint8."""
    return read_image(bsds_image_path())


@pytest.fixture(scope="session")
def photo_path() -> Path:
    """A real 2560 x 1600 photograph."""
    return PHOTOS / "kite-2560x1600.jpg"


def centre_biased(model):
    """A network whose association strongly prefers each pixel's own cell: its superpixels are the grid cells."""
    torch.manual_seed(0)
    head = model.assoc_head[-1] if isinstance(model.assoc_head, torch.nn.Sequential) else model.assoc_head
    with torch.no_grad():
        head.bias.zero_()
        head.bias[4] = 1e4
    return model.eval()


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def pcnet_random_ckpt(ckpt_dir) -> Path:
    """An untrained PCNet checkpoint (seeded): a realistic amount of work, arbitrary superpixels."""
    torch.manual_seed(0)
    return save_checkpoint(ckpt_dir / "pcnet-random.pt", PCNet().eval(), training={"note": "untrained, test"})


@pytest.fixture(scope="session")
def pcnet_grid_ckpt(ckpt_dir) -> Path:
    """A PCNet checkpoint whose superpixels are exactly the grid cells (known answer)."""
    torch.manual_seed(0)
    return save_checkpoint(ckpt_dir / "pcnet-grid.pt", centre_biased(PCNet()), training={"note": "grid"})


@pytest.fixture(scope="session")
def scn_ckpt(ckpt_dir) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(ckpt_dir / "scn-random.pt", SCN().eval(), training={"note": "untrained, test"})


def assert_superpixel_labels(labels: np.ndarray, shape: tuple[int, int]) -> int:
    """The output conventions: (H, W) int32, 0-based contiguous, every label one 4-connected component."""
    from skimage.measure import label as connected_components

    assert labels.shape == shape
    assert labels.dtype == np.int32
    k = int(labels.max()) + 1
    assert labels.min() == 0
    assert np.unique(labels).size == k, "labels are not contiguous"
    n_components = connected_components(labels + 1, background=0, connectivity=1).max()
    assert n_components == k, f"{n_components} 4-connected components for {k} labels"
    return k


def assert_killed_run_resumes(run, root: Path, steps: int, stop_after: int, atol: float = 1e-5) -> dict:
    """Run a trainer whole (``run(root / "whole", None)``) and killed after ``stop_after`` iterations then resumed
    (``run(root / "split", stop_after)``, ``run(root / "split", None)``); assert that both ``last.pt`` files hold
    ``steps`` steps and the same weights (float summation order aside); return the whole run's ``last.pt``."""
    run(root / "whole", None)
    run(root / "split", stop_after)
    run(root / "split", None)
    a = torch.load(root / "whole" / "last.pt", weights_only=True)
    b = torch.load(root / "split" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == steps
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-4, atol=atol)
    return a


def packaged_pcnet_as(**config) -> PCNet:
    """The packaged PCNet's trained weights in a network built with ``config`` changed (e.g. ``guide=False``,
    ``head_blocks=0`` or more head blocks than it has): parts the new network lacks are left out, parts the
    packaged file lacks keep their initialisation. Only guide-branch and head-block weights may differ."""
    from uhrseg.models import NetConfig, build_model, load_model
    from uhrseg.models.checkpoint import packaged_weights_path

    trained = load_model(packaged_weights_path("pcnet"))
    model = build_model("pcnet", NetConfig(**{**trained.config.__dict__, **config}))
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    assert all(k.startswith(("guide.", "head_blocks.")) for k in missing + unexpected), (missing, unexpected)
    return model


def packaged_pcnet_without(path: Path, **config) -> Path:
    """:func:`packaged_pcnet_as` saved to ``path`` as a checkpoint, which is returned."""
    return save_checkpoint(path, packaged_pcnet_as(**config))


def guided_export_matches_torch(ckpt: Path, out_dir: Path):
    """Export a guided PCNet checkpoint to ONNX and run it in OpenCV on a real BSDS500 image: asserts its cell ids
    match torch's (near-ties aside) and its tiled run equals its untiled one; returns ``(info, net, x, grid)``."""
    from uhrseg.grid import CellGrid
    from uhrseg.inference import cell_id_map
    from uhrseg.inference.network import inference_model
    from uhrseg.inference.onnx_export import export_onnx
    from uhrseg.inference.opencv_dnn import OpenCVNetwork
    from uhrseg.inference.resize import network_inputs
    from uhrseg.io import ArraySource
    from uhrseg.models import load_model

    image = read_image(bsds_image_path())
    info = export_onnx(ckpt, out_dir)
    net = OpenCVNetwork.from_files(info, weights=ckpt)
    grid = CellGrid(16 * 20, 16 * 30)
    x, guide = network_inputs(ArraySource(image), grid, 4, guided=True)
    ids_torch = cell_id_map(inference_model(load_model(ckpt)), x, grid, torch.device("cpu"), guide=guide)
    whole = net.cell_id_map(x, grid, 512, 2**19, guide)
    assert float((whole != ids_torch).mean()) <= 1e-4
    assert np.array_equal(net.cell_id_map(x, grid, 32, 3000, guide), whole)
    return info, net, x, grid


def guided_ids_tiled_equal_untiled(model, photo: np.ndarray, n_segments: int = 3000):
    """Cell-id maps of a guided PCNet (inference model) on a real photo, untiled and with two tile/strip sizes;
    asserts the tiled maps equal the untiled one and returns ``(x, grid, guide, whole)``."""
    from uhrseg.grid import CellGrid
    from uhrseg.inference import cell_id_map, grid_shape_for
    from uhrseg.inference.resize import network_inputs
    from uhrseg.io import ArraySource

    n_rows, n_cols = grid_shape_for(*photo.shape[:2], n_segments)
    grid = CellGrid(16 * n_rows, 16 * n_cols)
    x, guide = network_inputs(ArraySource(photo), grid, 4, guided=True)
    cpu = torch.device("cpu")
    whole = cell_id_map(model, x, grid, cpu, tile=10**6, strip_pixels=2**30, guide=guide)
    for tile, strip in ((48, 3000), (128, 2**19)):
        tiled = cell_id_map(model, x, grid, cpu, tile=tile, strip_pixels=strip, guide=guide)
        assert np.array_equal(tiled, whole), f"tile {tile}: {np.count_nonzero(tiled != whole)} pixels differ"
    return x, grid, guide, whole


@pytest.fixture(scope="session")
def mini_bsds(tmp_path_factory) -> Path:
    """A 3-image BSDS500 test split in the official layout (links to the real files)."""
    root = tmp_path_factory.mktemp("bsds-mini")
    for sub in ("images/test", "groundTruth/test"):
        (root / sub).mkdir(parents=True)
    for name in ("100007", "100039", "100099"):
        (root / "images/test" / f"{name}.jpg").symlink_to(BSDS / "images/test" / f"{name}.jpg")
        (root / "groundTruth/test" / f"{name}.mat").symlink_to(BSDS / "groundTruth/test" / f"{name}.mat")
    return root


DRONE = SHARED / "datasets" / "semantic-drone"
DEEPGLOBE = SHARED / "datasets" / "deepglobe"


@pytest.fixture(scope="session")
def mini_drone(tmp_path_factory) -> Path:
    """The first 3 Semantic Drone test frames (1500 x 1000, 24 classes) in the dataset's layout (links)."""
    root = tmp_path_factory.mktemp("drone-mini")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "class_dict.csv").symlink_to(DRONE / "class_dict.csv")
    for path in sorted((DRONE / "test" / "images").glob("*.jpg"))[:3]:
        (root / "images" / path.name).symlink_to(path)
        (root / "labels" / f"{path.stem}.png").symlink_to(DRONE / "test" / "labels" / f"{path.stem}.png")
    return root


def tiny_segmenter(name: str = "isdnet", table=None, narrow: bool = True, **overrides):
    """A seeded, untrained segmentation network with realistic BatchNorm statistics; narrow (fast) by default.

    Tiling tests use ``narrow=False`` (the default widths): oneDNN's convolutions with very few channels round
    differently for different tensor sizes, those with the real widths do not.
    """
    from uhrseg.datasets import read_class_table
    from uhrseg.models import build_segmenter

    torch.manual_seed(0)
    table = table or read_class_table(DRONE / "class_dict.csv")
    arch = {"width": 8, "aspp_channels": 32, "shallow_channels": (8, 16, 32, 64), "fusion_channels": 32,
            "head_channels": 16}
    if name == "deeppath":
        arch = {k: v for k, v in arch.items() if k in ("width", "aspp_channels", "head_channels")}
    if not narrow:
        arch = {}
    model = build_segmenter(name, table, **{**arch, **overrides}).train()
    with torch.no_grad():  # a few forwards in train mode give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1)))
    return model.eval()


@pytest.fixture(scope="session")
def isdnet_ckpt(ckpt_dir) -> Path:
    """A small untrained ISDNet checkpoint for the 24 Semantic Drone classes."""
    return save_checkpoint(ckpt_dir / "isdnet-tiny.pt", tiny_segmenter("isdnet"), training={"note": "test"})
