"""Where UHR users live: GeoTIFF georeference kept, pyramidal outputs read back, regions as polygons and tables.

The GeoTIFF is a real aerial frame (Semantic Drone) given a real CRS (WGS 84 / UTM 33N, 5 cm pixels) and a
nodata corner by rasterio, the library QGIS users' GDAL stack speaks; outputs are read back with rasterio
(GDAL), tifffile, pyogrio and pyarrow, never with our own readers alone.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import DRONE
from uhrseg.cli import main
from uhrseg.io import read_image
from uhrseg.io.geo import read_georeference
from uhrseg.io.outputs import write_pyramid
from uhrseg.stores import ArrayStore, FileStore

rasterio = pytest.importorskip("rasterio")
pyogrio = pytest.importorskip("pyogrio")
pyogrio_raw = pytest.importorskip("pyogrio.raw")
shapely = pytest.importorskip("shapely")
pq = pytest.importorskip("pyarrow.parquet")

FRAME = sorted((DRONE / "test" / "images").glob("*.jpg"))[0]
CRS = "EPSG:32633"
PIXEL = 0.05  # metres


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory):
    """(path, image, transform): an aerial frame as a tiled GeoTIFF with nodata 0 in a 200 x 300 corner."""
    from rasterio.transform import from_origin

    image = read_image(FRAME).copy()
    image[:200, :300] = 0
    image[image.sum(axis=2) == 0] = 1  # no accidental nodata pixels elsewhere
    image[:200, :300] = 0
    transform = from_origin(447000.0, 5106000.0, PIXEL, PIXEL)
    path = tmp_path_factory.mktemp("geo") / "aerial.tif"
    with rasterio.open(path, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=3, dtype="uint8",
                       crs=CRS, transform=transform, nodata=0, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path, image, transform


def test_georeference_is_read(geotiff):
    path, _, transform = geotiff
    geo = read_georeference(path)
    assert geo.crs == CRS and geo.nodata == 0
    assert geo.transform == pytest.approx(transform.to_gdal())
    assert geo.pixel_area == pytest.approx(PIXEL**2)
    assert read_georeference(FRAME) is None  # a JPEG has none


def test_superpixels_of_a_geotiff_keep_its_georeference_and_export_regions(geotiff, tmp_path, capsys):
    path, image, transform = geotiff
    out = tmp_path / "out"
    assert main(["superpixels", str(path), "-n", "1500", "--device", "cpu", "-q", "--out", str(out),
                 "--export", "polygons,table,csv"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["aerial_labels.tif", "aerial_overlay.jpg", "aerial_regions.csv",
                                                     "aerial_regions.gpkg", "aerial_regions.parquet", "summary.json"]
    with rasterio.open(out / "aerial_labels.tif") as r:
        assert r.crs.to_string() == CRS and r.transform == transform
        assert r.nodata == -1 and r.overviews(1) == [2, 4]
        labels = r.read(1)
    nodata = (image == 0).all(axis=2)
    assert np.array_equal(labels < 0, nodata) and (labels[nodata] == -1).all()
    k = int(labels.max()) + 1
    assert np.array_equal(np.unique(labels[~nodata]), np.arange(k))  # 0-based, contiguous after masking
    assert json.loads((out / "summary.json").read_text())["images"][0]["n_produced"] == k
    with tifffile.TiffFile(out / "aerial_labels.tif") as tif:  # the pyramid as napari sees it
        levels = [level.asarray() for level in tif.series[0].levels]
    assert [lv.shape for lv in levels] == [(1000, 1500), (500, 750), (250, 375)]
    assert np.array_equal(levels[1], labels[::2, ::2]) and np.array_equal(levels[2], labels[::4, ::4])

    # polygons: one per superpixel, in UTM metres, areas summing to the valid area
    info = pyogrio.read_info(out / "aerial_regions.gpkg")
    assert info["features"] == k and "32633" in info["crs"]
    _, _, wkb, fields = pyogrio_raw.read(out / "aerial_regions.gpkg")
    polygons = shapely.from_wkb(wkb)
    assert sum(p.area for p in polygons) == pytest.approx((~nodata).sum() * PIXEL**2, rel=1e-9)
    # the frame's extent in metres (the nodata corner leaves the other corners valid)
    assert shapely.total_bounds(polygons) == pytest.approx([447000.0, 5106000.0 - 1000 * PIXEL,
                                                            447000.0 + 1500 * PIXEL, 5106000.0])

    # the table: one row per superpixel, equal to scikit-image's regionprops on a sample of regions
    from skimage.measure import regionprops

    table = pq.read_table(out / "aerial_regions.parquet").to_pydict()
    assert table["id"] == list(range(k))
    props = {p.label - 1: p for p in regionprops(labels + 1, intensity_image=image)}
    for i in np.random.default_rng(0).choice(k, 25, replace=False):
        p = props[int(i)]
        assert table["area_px"][i] == p.area
        assert table["area_map"][i] == pytest.approx(p.area * PIXEL**2)
        assert (table["centroid_row"][i] - 0.5, table["centroid_col"][i] - 0.5) == pytest.approx(p.centroid)
        assert (table["bbox_min_row"][i], table["bbox_min_col"][i], table["bbox_max_row"][i] + 1,
                table["bbox_max_col"][i] + 1) == p.bbox
        assert (table["mean_r"][i], table["mean_g"][i], table["mean_b"][i]) == pytest.approx(tuple(p.intensity_mean))
        assert table["centroid_x"][i] == pytest.approx(447000.0 + table["centroid_col"][i] * PIXEL)
    rows = list(csv.DictReader(open(out / "aerial_regions.csv")))
    assert len(rows) == k and int(rows[7]["area_px"]) == table["area_px"][7]


def test_class_maps_of_a_geotiff_in_memory_and_streamed(geotiff, tmp_path, capsys):
    path, image, transform = geotiff
    nodata = (image == 0).all(axis=2)
    assert main(["segment", str(path), "--device", "cpu", "-q", "--out", str(tmp_path / "mem"),
                 "--export", "csv"]) == 0, capsys.readouterr().err
    with rasterio.open(tmp_path / "mem" / "aerial_classes.tif") as r:
        assert r.crs.to_string() == CRS and r.transform == transform and r.nodata == 255
        classes = r.read(1)
        assert r.colormap(1)[9][:3] == (70, 70, 70)  # roof, the dataset's colour
    assert np.array_equal(classes == 255, nodata)
    from skimage.measure import label

    regions = label(classes.astype(np.int16), background=255, connectivity=1)
    rows = list(csv.DictReader(open(tmp_path / "mem" / "aerial_regions.csv")))
    assert len(rows) == regions.max()  # one row per connected class region
    assert sum(int(r["area_px"]) for r in rows) == (~nodata).sum()
    streamed = tmp_path / "streamed"
    assert main(["segment", str(path), "--device", "cpu", "-q", "--out", str(streamed), "--stream", "--refine",
                 "superpixels", "--n-segments", "1500", "--export", "table"]) == 0, capsys.readouterr().err
    for name, value in (("aerial_classes.tif", 255), ("aerial_superpixels.tif", -1)):
        with rasterio.open(streamed / name) as r:
            assert r.crs.to_string() == CRS and r.transform == transform and r.nodata == value
            assert np.array_equal(r.read(1) == value, nodata) and r.overviews(1) == [2, 4]
    table = pq.read_table(streamed / "aerial_regions.parquet").to_pydict()
    assert set(table["class_name"]) <= set(json.loads((streamed / "summary.json").read_text())["class_names"])
    # a streamed class map exports superpixels only
    assert main(["segment", str(path), "--device", "cpu", "-q", "--out", str(tmp_path / "x"), "--stream",
                 "--export", "csv"]) == 2
    assert "add --refine superpixels" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before the model loads: no folder
    assert main(["segment", str(path), "--device", "cpu", "-q", "--out", str(tmp_path / "y"), "--stream",
                 "--refine", "superpixels", "--superpixels", "slic"]) == 2
    assert "--stream takes network superpixels" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_polygons_of_a_photo_in_pixels(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["superpixels", str(FRAME), "-n", "800", "--device", "cpu", "-q", "--out", str(out), "--overlay",
                 "none", "--export", "polygons"]) == 0, capsys.readouterr().err
    from PIL import Image

    labels = np.asarray(Image.open(out / f"{FRAME.stem}_labels.png")).astype(np.int64)
    _, _, wkb, fields = pyogrio_raw.read(out / f"{FRAME.stem}_regions.gpkg")
    polygons = shapely.from_wkb(wkb)
    assert len(polygons) == labels.max() + 1
    assert sum(p.area for p in polygons) == pytest.approx(labels.size)  # pixel units: the image area
    assert shapely.total_bounds(polygons).tolist() == [0, 0, 1500, 1000]


def test_bad_export_name(tmp_path, capsys):
    assert main(["superpixels", str(FRAME), "-m", "slic", "-q", "--out", str(tmp_path / "o"),
                 "--export", "polygons,shapefile"]) == 2
    err = capsys.readouterr().err
    assert "--export shapefile" in err and not (tmp_path / "o").exists()


@settings(max_examples=30, deadline=None)
@given(height=st.integers(1, 300), width=st.integers(1, 300), tile=st.sampled_from([16, 32, 64]),
       seed=st.integers(0, 100))
def test_pyramid_levels_are_nearest_samples(height, width, tile, seed, tmp_path_factory):
    labels = np.random.default_rng(seed).integers(-1, 1000, (height, width)).astype(np.int32)
    path = tmp_path_factory.mktemp("pyr") / "p.tif"
    with FileStore(path.with_suffix(".raw"), (height, width), np.int32) as store:
        store.write(0, labels)
        write_pyramid(path, store, np.int32, tile)
    with tifffile.TiffFile(path) as tif:  # every page: level 0, then the reduced-resolution ones
        levels = [page.asarray() for page in tif.pages]
        assert tif.is_bigtiff and all(p.is_tiled for p in tif.pages)
        assert [p.is_reduced for p in tif.pages] == [False] + [True] * (len(levels) - 1)
    factor = 1
    for level in levels:
        assert np.array_equal(level, labels[::factor, ::factor])
        factor *= 2
    assert max(levels[-1].shape) <= tile  # levels go down until one tile holds the map
    assert len(levels) == 1 or max(levels[-2].shape) > tile
    in_memory = tmp_path_factory.mktemp("pyr") / "q.tif"
    write_pyramid(in_memory, ArrayStore(labels), np.int32, tile)  # from an in-memory store: the same pages
    with tifffile.TiffFile(in_memory) as tif:
        assert len(tif.pages) == len(levels)
        assert all(np.array_equal(page.asarray(), level) for page, level in zip(tif.pages, levels))


@pytest.mark.parametrize("dtype, nodata", [("float32", -9999.0), ("float32", float("nan")), ("int16", -32768)])
def test_float_and_signed_geotiffs_mask_their_nodata(dtype, nodata, tmp_path, capsys):
    """A reflectance-like raster (float32, or int16) with GDAL's usual nodata values: its nodata pixels get label
    -1 and the superpixels follow the valid pixels. Until 2026-12-08 reading rescaled the values with the nodata
    ones included (the valid data came out nearly white), the nodata test then found no pixel, and NaN nodata was
    refused as non-finite."""
    from rasterio.transform import from_origin

    frame = read_image(FRAME)[:400, :600].astype(np.float32)
    data = frame / 255.0 if dtype == "float32" else np.rint(frame * 10).astype(np.int16)  # valid: 0..2550
    data[:100, :150] = nodata
    path = tmp_path / f"{dtype}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=600, height=400, count=3, dtype=dtype, crs=CRS,
                       transform=from_origin(447000.0, 5106000.0, PIXEL, PIXEL), nodata=nodata) as dst:
        dst.write(data.transpose(2, 0, 1))
    masked = np.zeros((400, 600), bool)
    masked[:100, :150] = True
    image = read_image(path)  # the valid pixels keep their contrast: scaled over the valid range only
    valid = image[~masked].astype(np.float64) / (255.0 if image.dtype == np.uint8 else 1.0)
    assert np.isfinite(valid).all() and valid.std() > 0.05 * valid.max()
    assert main(["superpixels", str(path), "-n", "60", "--out", str(tmp_path / "o"), "-q"]) == 0
    with rasterio.open(tmp_path / "o" / f"{dtype}_labels.tif") as r:
        labels = r.read(1)
        assert r.nodata == -1 and r.crs.to_string() == CRS
    assert np.array_equal(labels == -1, masked)
    assert labels[~masked].min() == 0 and labels.max() + 1 > 40
