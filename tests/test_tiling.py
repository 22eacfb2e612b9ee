"""Tiled, banded and streamed inference gives exactly the labels of an untiled in-memory run (issue 5)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from uhrseg.cli.main import main
from uhrseg.errors import ImageReadError
from uhrseg.grid import CellGrid, enforce_connectivity, refine_boundaries, refine_store
from uhrseg.grid.refine import lab8
from uhrseg.inference import (
    SuperpixelPredictor,
    cell_id_map,
    grid_shape_for,
)
from uhrseg.inference.resize import network_inputs
from uhrseg.inference.tiling import guide_window
from uhrseg.io import (
    ArraySource,
    TiffSource,
    open_image,
    read_image,
    sample_label_store,
    write_label_store,
)
from uhrseg.models.layers import transposed_conv_as_subpixel
from uhrseg.stores import ArrayStore, FileStore

N = 3000  # on the 2560 x 1600 photo: a 224 x 356 network input, several tiles of 48 pixels


@pytest.fixture(scope="module")
def photo(photo_path):
    return read_image(photo_path)


@pytest.fixture(scope="module")
def untiled(photo):
    """Labels of one in-memory run with a single trunk tile, a single head strip and a single band."""
    predictor = SuperpixelPredictor("pcnet", device="cpu", tile=10**6, strip_pixels=2**30, band_rows=10**6)
    return predictor.predict(photo, N)


def test_cell_id_map_is_identical_for_any_tile_size(photo):
    predictor = SuperpixelPredictor("pcnet", device="cpu")
    model = predictor.model
    n_rows, n_cols = grid_shape_for(*photo.shape[:2], N)
    grid = CellGrid(16 * n_rows, 16 * n_cols)
    x, guide = network_inputs(ArraySource(photo), grid, 4, guided=model.uses_guide)
    whole = cell_id_map(model, x, grid, torch.device("cpu"), tile=10**6, strip_pixels=2**30, guide=guide)
    for tile, strip in ((48, 3000), (128, 2**19), (200, 10**5)):
        tiled = cell_id_map(model, x, grid, torch.device("cpu"), tile=tile, strip_pixels=strip, guide=guide)
        assert np.array_equal(tiled, whole), f"tile {tile}: {np.count_nonzero(tiled != whole)} pixels differ"
    assert len(np.unique(whole)) > 0.9 * grid.n_cells


def test_streamed_tiled_run_equals_untiled_run(photo, untiled, tmp_path):
    """A tiled TIFF read band by band, 48-pixel trunk tiles, 97-row bands and on-disk stores (the guide image
    too, in ``work_dir``)."""
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, photo, tile=(256, 256), photometric="rgb")
    source = open_image(path)
    assert isinstance(source, TiffSource)
    predictor = SuperpixelPredictor("pcnet", device="cpu", tile=48, strip_pixels=3000, band_rows=97)
    h, w = photo.shape[:2]
    with FileStore(tmp_path / "labels", (h, w), np.int32) as labels, \
            FileStore(tmp_path / "lab", (h, w, 3), np.uint8) as lab:
        result = predictor.run_source(source, N, labels, lab, preview_shape=(160, 256), work_dir=tmp_path)
        tiled = labels.read(0, h)
        assert not list(tmp_path.glob("guide*"))  # the guide's file is removed when the run returns
    source.close()
    assert np.array_equal(tiled, untiled), f"{np.count_nonzero(tiled != untiled)} pixels differ"
    assert result.n_produced == untiled.max() + 1
    assert abs(result.n_produced - N) < 0.1 * N
    assert result.preview.shape == (160, 256, 3) and result.preview.dtype == np.uint8
    # The preview is the photo area-averaged: close to a plain 10x10 block mean.
    blocks = photo.reshape(160, 10, 256, 10, 3).mean(axis=(1, 3))
    assert np.abs(result.preview - blocks).max() <= 1.0
    assert not list(tmp_path.glob("labels*")) and not list(tmp_path.glob("lab*"))  # stores removed


@settings(max_examples=40, deadline=None)
@given(height=st.integers(1, 90), width=st.integers(1, 40), shrink_y=st.integers(1, 300),
       shrink_x=st.integers(1, 50), band=st.integers(1, 70), seed=st.integers(0, 2**31))
def test_area_resize_into_a_store_equals_in_memory(tmp_path_factory, height, width, shrink_y, shrink_x, band,
                                                    seed):
    """Rows written to a store as soon as they are finished are those of the in-memory sum, bit for bit, for any
    size ratio and band height (rows that straddle bands included)."""
    from uhrseg.inference.resize import AreaAccumulator

    big_h, big_w = height + shrink_y, width + shrink_x
    image = np.random.default_rng(seed).integers(0, 256, (big_h, big_w, 3), dtype=np.uint8)
    in_memory = AreaAccumulator(height, width, big_h, big_w)
    path = tmp_path_factory.mktemp("area") / "out.f32"
    with FileStore(path, (height, width, 3), np.float32) as out:
        streamed = AreaAccumulator(height, width, big_h, big_w, out)
        for y0 in range(0, big_h, band):
            in_memory.add(y0, image[y0 : y0 + band])
            streamed.add(y0, image[y0 : y0 + band])
            assert len(streamed._out) <= band // max(1, big_h // height) + 3  # a few rows held, not the output
        assert streamed.result() is out
        assert np.array_equal(out.read(0, height), in_memory.result())
    with pytest.raises(ValueError, match="is not"):
        AreaAccumulator(height, width, big_h, big_w, ArrayStore(np.zeros((height + 1, width, 3), np.float32)))
    if big_h > band:  # with a store, rows are written as they finish: a band out of order is refused
        store = ArrayStore(np.zeros((height, width, 3), np.float32))
        streamed = AreaAccumulator(height, width, big_h, big_w, store)
        streamed.add(band, image[band : 2 * band])
        with pytest.raises(ValueError, match="in order"):
            streamed.add(0, image[:band])


def test_network_inputs_with_the_guide_in_a_file_equal_in_memory(photo, tmp_path):
    """The guide written row by row to a file, and the network input made from it in bands of rows, are the
    in-memory guide and input exactly."""
    grid = CellGrid(16 * 53, 16 * 83)  # 848 x 1328 output pixels: three 256-row bands and a partial last one
    x_mem, guide_mem = network_inputs(ArraySource(photo), grid, 4, guided=True)
    with FileStore(tmp_path / "guide", (grid.height, grid.width, 3), np.float32) as store:
        x, guide = network_inputs(ArraySource(photo), grid, 4, guided=True, guide_store=store)
        assert guide is store
        assert np.array_equal(x, x_mem) and np.array_equal(store.read(0, grid.height), guide_mem)
        assert np.array_equal(guide_window(store, slice(800, 900), slice(1300, 1400)),
                              guide_window(guide_mem, slice(800, 900), slice(1300, 1400)))  # padded past edges
    small, grid = photo[:300, :400], CellGrid(16 * 30, 16 * 40)  # a grid larger than the image: enlarged
    x_mem, guide_mem = network_inputs(ArraySource(small), grid, 4, guided=True)
    with FileStore(tmp_path / "enlarged", (grid.height, grid.width, 3), np.float32) as store:
        x, guide = network_inputs(ArraySource(small), grid, 4, guided=True, guide_store=store)
        assert np.array_equal(x, x_mem) and np.array_equal(store.read(0, grid.height), guide_mem)


@pytest.mark.parametrize("layout, chunk, step", [(dict(tile=(512, 512)), 512, 512),
                                                  (dict(rowsperstrip=700), 700, 768),
                                                  (dict(tile=(128, 128)), 128, 256)])
def test_tiff_is_read_in_whole_chunks_with_the_same_bands(photo, tmp_path, layout, chunk, step):
    """The resize pass reads a TIFF in blocks of whole tiles / strips (rounded up to the 256-row bands), so a
    512-row tile is decoded once rather than once per band, and hands on the same 256-row bands: the network
    input, the guide and the per-band callback are those of the in-memory image."""
    from uhrseg.inference.resize import RESIZE_BAND_ROWS, read_rows_for

    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, photo, photometric="rgb", compression="zlib", **layout)
    source = open_image(path)
    assert isinstance(source, TiffSource) and source.chunk_rows == chunk and read_rows_for(source) == step
    reads, bands = [], []
    read_rows = source.read_rows
    source.read_rows = lambda y0, y1: reads.append((y0, y1)) or read_rows(y0, y1)
    grid = CellGrid(16 * 40, 16 * 64)
    x, guide = network_inputs(source, grid, 4, guided=True, on_band=lambda y0, band: bands.append((y0, len(band))))
    source.close()
    h = photo.shape[0]
    assert reads == [(y0, min(h, y0 + step)) for y0 in range(0, h, step)]
    assert bands == [(y0, min(RESIZE_BAND_ROWS, h - y0)) for y0 in range(0, h, RESIZE_BAND_ROWS)]
    x_mem, guide_mem = network_inputs(ArraySource(photo), grid, 4, guided=True)
    assert np.array_equal(x, x_mem) and np.array_equal(guide, guide_mem)


def test_tiff_reads_are_capped_in_bytes(photo, tmp_path, monkeypatch):
    """A TIFF stored in one tall strip is not read whole: reads stop at READ_BLOCK_BYTES (rounded down to whole
    256-row bands), with the same result."""
    from uhrseg.inference import resize

    path = tmp_path / "strip.tif"
    tifffile.imwrite(path, photo, photometric="rgb", rowsperstrip=photo.shape[0])
    source = open_image(path)
    assert source.chunk_rows == photo.shape[0]
    row_bytes = photo.shape[1] * 3
    monkeypatch.setattr(resize, "READ_BLOCK_BYTES", 600 * row_bytes)  # 600 rows: reads of 512
    assert resize.read_rows_for(source) == 512
    monkeypatch.setattr(resize, "READ_BLOCK_BYTES", 10 * row_bytes)  # less than a band: one band per read
    assert resize.read_rows_for(source) == resize.RESIZE_BAND_ROWS
    grid = CellGrid(16 * 40, 16 * 64)
    x, guide = network_inputs(source, grid, 4, guided=True)
    source.close()
    x_mem, guide_mem = network_inputs(ArraySource(photo), grid, 4, guided=True)
    assert np.array_equal(x, x_mem) and np.array_equal(guide, guide_mem)


def test_streamed_cli_writes_the_same_labels_as_a_bigtiff(photo, untiled, tmp_path):
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, photo, tile=(512, 512), photometric="rgb", compression="zlib")
    out = tmp_path / "out"
    assert main(["superpixels", str(path), "-n", str(N), "--stream", "--device", "cpu", "--backend", "torch", "-q",
                 "--out", str(out)]) == 0  # the backend of `untiled` (OpenCV's may differ at float near-ties)
    written = tifffile.imread(out / "photo_labels.tif")
    assert np.array_equal(written, untiled)
    with tifffile.TiffFile(out / "photo_labels.tif") as tif:
        assert tif.is_bigtiff and tif.pages[0].is_tiled
    entry = json.loads((out / "summary.json").read_text())["images"][0]
    assert entry["streamed"] is True and entry["n_produced"] == untiled.max() + 1
    assert (out / "photo_preview.jpg").is_file() and not (out / "photo_overlay.jpg").exists()
    assert sorted(p.name for p in out.iterdir()) == ["photo_labels.tif", "photo_preview.jpg", "summary.json"]


def test_streamed_image_smaller_than_the_preview_side_still_gets_a_preview(bsds_image, tmp_path):
    """A streamed image has no full-resolution overlay, so its preview is its only picture: it was written only
    for images larger than --preview-side, and a small image run with --stream got none."""
    path = tmp_path / "small.png"
    Image.fromarray(bsds_image).save(path)
    out = tmp_path / "out"
    assert main(["superpixels", str(path), "-n", "300", "--stream", "-q", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["small_labels.tif", "small_preview.jpg", "summary.json"]
    with Image.open(out / "small_preview.jpg") as preview:
        assert preview.size == (bsds_image.shape[1], bsds_image.shape[0])  # never enlarged past the image


def test_stream_refuses_classical_methods_and_png_labels(photo_path, tmp_path, capsys):
    assert main(["superpixels", str(photo_path), "--method", "slic", "--stream", "--out", str(tmp_path)]) != 0
    assert "--stream needs pcnet or scn" in capsys.readouterr().err
    code = main(["superpixels", str(photo_path), "-n", "500", "--stream", "--label-format", "png", "-q",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    assert "--label-format png cannot hold them (use tiff)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the network loads: no folder


def test_refine_store_in_bands_on_disk_equals_whole_image(bsds_image, tmp_path):
    predictor = SuperpixelPredictor("pcnet", device="cpu", refine_iterations=0)
    labels = predictor.predict(bsds_image, 400)
    whole = refine_boundaries(bsds_image, labels, iterations=5)
    assert np.count_nonzero(whole != labels) > 1000  # the refinement did move boundaries
    h, w = labels.shape
    with FileStore(tmp_path / "l", (h, w), np.int32) as store:
        store.write(0, labels)
        passes = refine_store(ArrayStore(lab8(bsds_image)), store, int(labels.max()) + 1, 5, band_rows=7)
        assert passes == 5
        assert np.array_equal(store.read(0, h), whole)


def test_deferred_array_store_reads_back_what_was_written():
    """``ArrayStore.empty`` (the pipeline's label store, allocated when first used) has its shape and dtype before
    any allocation and behaves as a store over ``np.empty`` once written."""
    store = ArrayStore.empty((6, 4), np.int32)
    assert store.shape == (6, 4) and store.dtype == np.int32
    store.write(2, np.arange(8, dtype=np.int64).reshape(2, 4))
    store.write(0, np.zeros((2, 4), np.int32))
    store.write(4, np.ones((2, 4), np.int32))
    np.testing.assert_array_equal(store.read(1, 4), [[0, 0, 0, 0], [0, 1, 2, 3], [4, 5, 6, 7]])
    assert store.array.dtype == np.int32 and store.array.shape == (6, 4)


def test_file_store_round_trip_and_never_overwrites(tmp_path):
    data = np.arange(7 * 5 * 3, dtype=np.uint8).reshape(7, 5, 3)
    with FileStore(tmp_path / "s", data.shape, np.uint8) as store:
        store.write(2, data[2:6])
        assert np.array_equal(store.read(2, 6), data[2:6])
        assert np.array_equal(store.read(0, 2), np.zeros((2, 5, 3), np.uint8))
        with pytest.raises(FileExistsError):
            FileStore(tmp_path / "s", (1, 1), np.uint8)
    assert not (tmp_path / "s").exists()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 3), st.data())
def test_block_writes_on_disk_equal_those_in_memory(height, width, channels, data):
    """``write_block`` puts a block at the same place in a file store as in an array store."""
    import tempfile

    memory = ArrayStore(np.zeros((height, width, channels), np.float32))
    with tempfile.TemporaryDirectory() as tmp, FileStore(f"{tmp}/s", memory.shape, np.float32) as disk:
        for _ in range(3):
            y0 = data.draw(st.integers(0, height - 1))
            x0 = data.draw(st.integers(0, width - 1))
            h = data.draw(st.integers(1, height - y0))
            w = data.draw(st.integers(1, width - x0))
            block = np.random.default_rng(y0 * 31 + x0).random((h, w, channels), dtype=np.float32)
            memory.write_block(y0, x0, block)
            disk.write_block(y0, x0, block)
        np.testing.assert_array_equal(disk.read(0, height), memory.array)


def test_tiff_source_layouts_match_read_image(bsds_image, tmp_path):
    gray16 = (bsds_image[:, :, 1].astype(np.uint16) * 257)
    cases = {
        "rgb.tif": dict(data=bsds_image, photometric="rgb", rowsperstrip=16),
        "planar.tif": dict(data=np.moveaxis(bsds_image, -1, 0), photometric="rgb", planarconfig="separate"),
        "gray16.tif": dict(data=gray16, photometric="minisblack", tile=(64, 64)),
        "rgba.tif": dict(data=np.dstack([bsds_image, np.full(bsds_image.shape[:2], 255, np.uint8)]),
                         photometric="rgb", extrasamples=["unassalpha"], tile=(32, 32)),
    }
    for name, kwargs in cases.items():
        tifffile.imwrite(tmp_path / name, **kwargs)
        source = open_image(tmp_path / name)
        assert isinstance(source, TiffSource), name
        whole = read_image(tmp_path / name)
        assert source.shape == whole.shape and source.dtype == whole.dtype
        assert np.array_equal(source.read_rows(37, 101), whole[37:101]), name
        assert np.array_equal(source.read_region(37, 101, 50, 413), whole[37:101, 50:413]), name
        source.close()


def test_corrupt_tiff_tile_names_the_file_and_rows(bsds_image, tmp_path):
    path = tmp_path / "broken.tif"
    tifffile.imwrite(path, bsds_image, tile=(64, 64), photometric="rgb", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[-1]
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(raw))
    source = open_image(path)
    with pytest.raises(ImageReadError, match="broken.tif: corrupt or truncated TIFF, rows 300-321 cannot be decoded"):
        source.read_rows(300, 321)
    source.close()


def test_label_store_bigtiff_and_preview_sampling(tmp_path):
    labels = np.arange(700 * 1100, dtype=np.int32).reshape(700, 1100) % 100003
    write_label_store(tmp_path / "l.tif", ArrayStore(labels), tile=256)
    assert np.array_equal(tifffile.imread(tmp_path / "l.tif"), labels)
    small = sample_label_store(ArrayStore(labels), 70, 110, band_rows=33)
    assert np.array_equal(small, labels[5::10, 5::10])


def test_subpixel_form_of_transposed_conv_matches_it():
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(8, 5, 4, stride=2, padding=1)
    x = torch.randn(2, 8, 9, 13)
    with torch.no_grad():
        assert torch.allclose(transposed_conv_as_subpixel(layer)(x), layer(x), atol=1e-5)
    with pytest.raises(ValueError, match="only 4x4 stride-2"):
        transposed_conv_as_subpixel(torch.nn.ConvTranspose2d(8, 5, 3, stride=2, padding=1))


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 9), st.integers(2, 9), st.data())
def test_weighted_connectivity_is_connectivity_of_the_upsampled_map(height, width, data):
    """Enforcing connectivity on a small map with pixel weights, then repeating rows and columns by those
    weights, gives contiguous labels whose superpixels are each one 4-connected component of the big map."""
    labels = np.array(data.draw(st.lists(st.integers(0, 3), min_size=height * width, max_size=height * width)),
                      dtype=np.int32).reshape(height, width)
    rw = np.array(data.draw(st.lists(st.integers(1, 3), min_size=height, max_size=height)))
    cw = np.array(data.draw(st.lists(st.integers(1, 3), min_size=width, max_size=width)))
    min_size = data.draw(st.integers(0, 6))
    out = enforce_connectivity(labels, min_size, None, rw, cw)
    big = np.repeat(np.repeat(out, rw, axis=0), cw, axis=1)
    k = int(big.max()) + 1
    assert set(np.unique(big)) == set(range(k))
    for label in range(k):
        assert ndimage.label(big == label)[1] == 1
    # Unit weights are the unweighted procedure.
    assert np.array_equal(enforce_connectivity(labels, min_size, None, np.ones(height, int), np.ones(width, int)),
                          enforce_connectivity(labels, min_size))


def test_weights_count_pixels_for_the_size_bounds():
    labels = np.zeros((3, 3), np.int32)
    labels[1, 1] = 1  # a one-pixel island
    assert enforce_connectivity(labels, 5).max() == 0  # merged: 1 pixel < 5
    weights = np.array([1, 10, 1])
    assert enforce_connectivity(labels, 5, None, weights, weights).max() == 1  # 100 pixels: kept
    with pytest.raises(ValueError, match="row_weights must be 3 integers >= 1"):
        enforce_connectivity(labels, 5, None, np.array([1, 0, 1]))
