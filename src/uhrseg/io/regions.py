"""Regions (superpixels or class regions) as a table and as polygons: the object-based image analysis outputs.

Both run band by band over row stores, so they work on streamed gigapixel label maps:

* :func:`region_table`: one row per region, from one pass (a numba kernel sums each region's pixels, rows,
  columns, colour and bounding box): id, class, area in pixels and map units, centroid in pixels and map
  coordinates, bounding box, mean colour. The same quantities as scikit-image's ``regionprops_table``
  (``area``, ``centroid``, ``bbox``, ``intensity_mean``; tested against it), without holding the image.
* :func:`region_polygons`: each region's outline as a shapely polygon, traced by GDAL's polygonize
  (``rasterio.features.shapes``, 4-connected, exact pixel edges) on bands of rows, the pieces of a region
  that crosses bands joined with ``shapely.union_all``. Coordinates are pixels (x = column, y = row, origin at
  the top-left corner) or, for a georeferenced input, map coordinates in its CRS.

Writers: :func:`write_table` (Parquet through pyarrow, or CSV) and :func:`write_polygons` (GeoPackage or
GeoJSON through pyogrio). rasterio, shapely, pyogrio and pyarrow are the optional extra ``uhrseg[geo]``.
"""

from __future__ import annotations

import csv
import os
import warnings

import numba
import numpy as np

from ..errors import UhrsegError
from ..stores import rows_of

__all__ = ["region_polygons", "region_table", "write_polygons", "write_table"]

_GEO_EXTRA = "pip install 'uhrseg[geo]'"


def _require(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UhrsegError(f"region export needs {module.split('.')[0]} ({_GEO_EXTRA})") from e


@numba.njit(cache=True, nogil=True)
def _region_band(labels, rgb, y_offset, acc, bbox):  # pragma: no cover - compiled
    """Add a band's pixels to acc (count, sum row, sum col, sum r, g, b) and bbox (min row, min col, max row,
    max col); labels < 0 (nodata) are skipped."""
    rows, width = labels.shape
    for y in range(rows):
        gy = y + y_offset
        for x in range(width):
            k = labels[y, x]
            if k < 0:
                continue
            acc[k, 0] += 1.0
            acc[k, 1] += gy
            acc[k, 2] += x
            acc[k, 3] += rgb[y, x, 0]
            acc[k, 4] += rgb[y, x, 1]
            acc[k, 5] += rgb[y, x, 2]
            if gy < bbox[k, 0]:
                bbox[k, 0] = gy
            if x < bbox[k, 1]:
                bbox[k, 1] = x
            if gy > bbox[k, 2]:
                bbox[k, 2] = gy
            if x > bbox[k, 3]:
                bbox[k, 3] = x


def region_table(labels, source, n_regions: int, *, classes=None, class_names=None, georeference=None,
                 band_rows: int = 1024) -> dict[str, np.ndarray]:
    """One row per region: id, class, area, centroid, bounding box and mean colour, in one banded pass.

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Regions ``0 .. K-1``; negative labels (nodata) belong to none.
    source : image source or (H, W, 3) ndarray
        The image (``read_rows``), for the mean colour (8-bit RGB).
    n_regions : int
        ``K``.
    classes : (H, W) ndarray or row store of uint8, optional
        A class map: each region gets its majority class (255, nodata, does not vote).
    class_names : sequence of str, optional
        Names of the class ids (a ``class_name`` column).
    georeference : uhrseg.io.geo.Georeference, optional
        Adds ``area_map`` (squared map units) and the centroid in map coordinates ``centroid_x``, ``centroid_y``.
    band_rows : int
        Rows read at a time.

    Returns
    -------
    dict of str to (K,) ndarray
        ``id``, ``area_px`` (int64), ``centroid_row``, ``centroid_col`` (pixel centres, float64), ``bbox_min_row``,
        ``bbox_min_col``, ``bbox_max_row``, ``bbox_max_col`` (inclusive, int64), ``mean_r``, ``mean_g``, ``mean_b``
        (float64); with ``classes`` also ``class`` (int64, -1 for a region without votes) and ``class_name``;
        with a georeference ``area_map``, ``centroid_x``, ``centroid_y``. Regions without pixels keep area 0 and
        NaN means.
    """
    from .images import to_uint8

    height, width = labels.shape[:2]
    acc = np.zeros((n_regions, 6), np.float64)
    bbox = np.empty((n_regions, 4), np.int64)
    bbox[:, :2] = np.iinfo(np.int64).max
    bbox[:, 2:] = -1
    n_classes = 256
    votes = np.zeros(n_regions * n_classes, np.int64) if classes is not None else None
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        lab = np.ascontiguousarray(rows_of(labels, y0, y1), np.int32)
        rgb = source[y0:y1] if isinstance(source, np.ndarray) else source.read_rows(y0, y1)
        _region_band(lab, np.ascontiguousarray(to_uint8(rgb)), y0, acc, bbox)
        if votes is not None:
            cls = np.asarray(rows_of(classes, y0, y1), np.int64)
            keep = (lab >= 0) & (cls != 255)
            votes += np.bincount(lab[keep].astype(np.int64) * n_classes + cls[keep], minlength=votes.size)
    area = acc[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = acc / area[:, None]
    table = {"id": np.arange(n_regions, dtype=np.int64), "area_px": area.astype(np.int64)}
    if votes is not None:
        v = votes.reshape(n_regions, n_classes)
        cls = np.where(v.sum(axis=1) > 0, v.argmax(axis=1), -1).astype(np.int64)
        table["class"] = cls
        if class_names is not None:
            names = np.asarray([*class_names, ""], dtype=object)
            table["class_name"] = names[np.where((cls >= 0) & (cls < len(class_names)), cls, len(class_names))]
    table.update({"centroid_row": mean[:, 1] + 0.5, "centroid_col": mean[:, 2] + 0.5,
                  "bbox_min_row": bbox[:, 0], "bbox_min_col": bbox[:, 1], "bbox_max_row": bbox[:, 2],
                  "bbox_max_col": bbox[:, 3], "mean_r": mean[:, 3], "mean_g": mean[:, 4], "mean_b": mean[:, 5]})
    if georeference is not None:
        table["area_map"] = area * georeference.pixel_area
        table["centroid_x"], table["centroid_y"] = georeference.to_map(table["centroid_col"], table["centroid_row"])
    return table


def region_polygons(labels, n_regions: int, *, georeference=None, band_rows: int = 2048) -> list:
    """Each region's outline as a shapely geometry (Polygon, with holes; MultiPolygon if the region is in pieces).

    Parameters
    ----------
    labels : (H, W) ndarray or row store of int32
        Regions ``0 .. K-1``; negative labels (nodata) get no polygon.
    n_regions : int
        ``K``.
    georeference : uhrseg.io.geo.Georeference, optional
        Map coordinates in its CRS instead of pixels.
    band_rows : int
        Rows polygonized at a time.

    Returns
    -------
    list of shapely geometry or None
        Indexed by region id (None for a region without pixels).

    Raises
    ------
    uhrseg.errors.UhrsegError
        If rasterio or shapely is not installed.
    """
    features = _require("rasterio.features")
    affine = _require("affine")
    shapely = _require("shapely")
    height = labels.shape[0]
    pieces: list[list] = [[] for _ in range(n_regions)]
    base = affine.Affine.identity() if georeference is None else affine.Affine.from_gdal(*georeference.transform)
    for y0 in range(0, height, band_rows):
        band = np.ascontiguousarray(rows_of(labels, y0, min(height, y0 + band_rows)), np.int32)
        transform = base @ affine.Affine.translation(0, y0)
        for geometry, value in features.shapes(band, mask=band >= 0, connectivity=4, transform=transform):
            pieces[int(value)].append(shapely.geometry.shape(geometry))
    out = []
    for parts in pieces:
        if not parts:
            out.append(None)
        elif len(parts) == 1:
            out.append(parts[0])
        else:  # a region crossing bands: its pieces share edges and merge into one polygon
            out.append(shapely.union_all(parts))
    return out


def write_table(path: str | os.PathLike, table: dict[str, np.ndarray], fmt: str) -> None:
    """Write a region table as Parquet (``fmt="parquet"``, pyarrow) or CSV (``fmt="csv"``, one header row).

    Raises
    ------
    uhrseg.errors.UhrsegError
        Parquet without pyarrow installed.
    ValueError
        Another format.
    """
    if fmt == "parquet":
        pa = _require("pyarrow")
        pq = _require("pyarrow.parquet")
        pq.write_table(pa.table({k: pa.array(v) for k, v in table.items()}), str(path))
    elif fmt == "csv":
        names = list(table)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(names)
            writer.writerows(zip(*(table[n].tolist() for n in names)))
    else:
        raise ValueError(f"tables are written as parquet or csv, not {fmt!r}")


def write_polygons(path: str | os.PathLike, geometries: list, table: dict[str, np.ndarray], *, crs: str | None = None,
                   driver: str = "GPKG") -> None:
    """Write region polygons with their table's columns as attributes (GeoPackage or GeoJSON, pyogrio).

    Regions without a polygon are left out.

    Raises
    ------
    uhrseg.errors.UhrsegError
        If pyogrio or shapely is not installed.
    """
    raw = _require("pyogrio.raw")
    errors = _require("pyogrio.errors")
    shapely = _require("shapely")
    keep = [i for i, g in enumerate(geometries) if g is not None]
    multi = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in (geometries[i] for i in keep)]
    wkb = np.array(shapely.to_wkb(multi), dtype=object)
    fields = [n for n in table if table[n].dtype != object or n == "class_name"]
    data = [np.asarray(table[n])[keep] for n in fields]
    with warnings.catch_warnings():  # pixel coordinates have no CRS, and that is said in the docs
        warnings.filterwarnings("ignore", message=".*crs.*not provided")
        try:
            raw.write(str(path), wkb, data, fields, crs=crs, geometry_type="MultiPolygon", driver=driver,
                      layer="regions")
        except errors.DataSourceError as e:  # GDAL could not create the file: an output error
            raise OSError(str(e)) from e
