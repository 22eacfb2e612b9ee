"""GeoTIFF georeference: read it from an input, write it unchanged into the label and class maps.

A GeoTIFF carries its georeference in six TIFF tags (the GeoTIFF 1.1 standard, OGC 19-008): the GeoKey
directory and its double and ASCII parameters (the CRS), and the model tie point and pixel scale or the model
transformation (pixel to map coordinates); GDAL adds ``GDAL_NODATA``. uhrseg copies these tags verbatim
(tifffile reads and writes them), so a label or class map overlays its input exactly in QGIS or any GDAL
reader: same CRS, same transform. Nothing is reprojected or resampled.

Nodata: pixels of the input whose every channel equals the nodata value get no superpixel (label
:data:`NODATA_LABEL`, -1) and no class (:data:`NODATA_CLASS`, 255); the outputs record these values in their own
``GDAL_NODATA`` tag. A float or signed GeoTIFF is rescaled to [0, 1] over its valid pixels only (its nodata
pixels take the smallest valid value, :func:`uhrseg.io.read_image`), and its nodata pixels are found in the file's
own samples (:func:`nodata_source`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .images import image_page, nodata_pixels, read_tiff_samples, tiff_nodata

__all__ = ["GEO_TAG_CODES", "NODATA_CLASS", "NODATA_LABEL", "Georeference", "mask_nodata_classes", "mask_nodata_labels",
           "nodata_source", "read_georeference"]

#: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams.
GEO_TAG_CODES = (33550, 33922, 34264, 34735, 34736, 34737)
#: GDAL's nodata tag (ASCII).
GDAL_NODATA = 42113
#: Label of pixels that are nodata in the input.
NODATA_LABEL = -1
#: Class id of pixels that are nodata in the input.
NODATA_CLASS = 255
# GeoKeys (GeoTIFF 1.1, section 7): raster type, geographic and projected CRS codes.
_RASTER_TYPE, _GEOGRAPHIC_CRS, _PROJECTED_CRS = 1025, 2048, 3072


@dataclass(frozen=True)
class Georeference:
    """The georeference of a GeoTIFF.

    Attributes
    ----------
    tags : tuple of (int, int, int, object)
        The GeoTIFF tags as ``(code, TIFF data type, count, value)``, copied verbatim into the outputs.
    transform : (float, float, float, float, float, float)
        Affine map from pixel to map coordinates, GDAL's order ``(c, a, b, f, d, e)``: ``x = c + a col + b row``,
        ``y = f + d col + e row``, with ``(col, row)`` the pixel's top-left corner (pixel centres are at
        ``+ 0.5``).
    crs : str or None
        ``"EPSG:<code>"`` when the GeoKeys name an EPSG coordinate reference system, else None.
    nodata : float or None
        The input's nodata value (``GDAL_NODATA``), if any.
    """

    tags: tuple
    transform: tuple[float, float, float, float, float, float]
    crs: str | None
    nodata: float | None

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in squared map units (square metres for a projected CRS in metres)."""
        _, a, b, _, d, e = self.transform
        return abs(a * e - b * d)

    def to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map coordinates ``(x, y)`` of pixel coordinates ``(col, row)`` (floats, top-left corner origin)."""
        c, a, b, f, d, e = self.transform
        return c + a * cols + b * rows, f + d * cols + e * rows

    def extratags(self, nodata: float | None = None) -> list[tuple]:
        """The tags in tifffile's ``extratags`` form, with ``GDAL_NODATA`` set to ``nodata`` (omitted if None)."""
        out = [(code, dtype, count, value, True) for code, dtype, count, value in self.tags]
        if nodata is not None:
            out.append((GDAL_NODATA, 2, 0, f"{nodata:g}", True))
        return out

    def nodata_mask(self, rows: np.ndarray) -> np.ndarray | None:
        """``(h, W)`` bool: pixels of an ``(h, W[, C])`` band of the input whose every channel is nodata; None
        when the input has no nodata value."""
        return None if self.nodata is None else nodata_pixels(rows, self.nodata)


def read_georeference(path: str | os.PathLike) -> Georeference | None:
    """The georeference of a GeoTIFF, or None for any other file (or a TIFF without GeoKeys).

    Raises
    ------
    ValueError
        If the GeoTIFF has GeoKeys but neither a tie point with a pixel scale nor a transformation matrix
        (the file names the problem).
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            page = image_page(tif)
            tags = {code: (int(page.tags[code].dtype), int(page.tags[code].count), page.tags[code].value)
                    for code in (*GEO_TAG_CODES, GDAL_NODATA) if code in page.tags}
            nodata = tiff_nodata(page)
    except (tifffile.TiffFileError, OSError, IndexError):
        return None
    if 34735 not in tags:
        return None
    copied = tuple((code, *tag) for code, tag in tags.items() if code != GDAL_NODATA)
    keys = _geokeys(tags[34735][2])
    if 34264 in tags:
        m = np.asarray(tags[34264][2], np.float64).reshape(4, 4)
        transform = (m[0, 3], m[0, 0], m[0, 1], m[1, 3], m[1, 0], m[1, 1])
    elif 33922 in tags and 33550 in tags:
        i, j, _, x, y, _ = (float(v) for v in tags[33922][2][:6])
        sx, sy = (float(v) for v in tags[33550][2][:2])
        transform = (x - i * sx, sx, 0.0, y + j * sy, 0.0, -sy)
    else:
        raise ValueError(f"{path}: GeoTIFF without a tie point and pixel scale or a transformation matrix")
    if keys.get(_RASTER_TYPE) == 2:  # PixelIsPoint: the tie point is a pixel centre (GDAL's reading)
        c, a, b, f, d, e = transform
        transform = (c - 0.5 * (a + b), a, b, f - 0.5 * (d + e), d, e)
    code = keys.get(_PROJECTED_CRS) or keys.get(_GEOGRAPHIC_CRS)
    crs = f"EPSG:{code}" if code and 1024 <= code < 32767 else None
    return Georeference(copied, tuple(float(v) for v in transform), crs, nodata)


def _geokeys(directory) -> dict[int, int]:
    """Short-valued GeoKeys of a GeoKeyDirectoryTag (header of 4 shorts, then 4 shorts per key)."""
    values = [int(v) for v in directory]
    out = {}
    for k in range(values[3]):
        key, location, _, value = values[4 + 4 * k : 8 + 4 * k]
        if location == 0:
            out[key] = value
    return out


class _Samples:
    """Rows of an in-memory array of any dtype and channel count (what :meth:`Georeference.nodata_mask` reads)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        return self.array[y0:y1]


def nodata_source(path: str | os.PathLike, source):
    """Where the nodata test reads the input ``path``, opened as ``source`` (``read_rows``): ``source`` itself
    when the file stores 8- or 16-bit unsigned samples, which reading leaves as they are (a streamed TIFF
    always does), else the file's samples read again as stored (a float or signed GeoTIFF, whose values
    reading shifts or rescales, so that its nodata value no longer appears;
    :func:`uhrseg.io.images.read_tiff_samples`). Pass the result to :func:`mask_nodata_labels` and
    :func:`mask_nodata_classes`.

    Raises
    ------
    uhrseg.errors.ImageReadError
        If the file must be read again and cannot be.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            stored = np.dtype(image_page(tif).dtype)
    except Exception:  # tifffile raises many types; read_tiff_samples says what is wrong
        stored = None
    if stored in (np.dtype(np.uint8), np.dtype(np.uint16)):
        return source
    return _Samples(read_tiff_samples(path))


def mask_nodata_labels(labels, source, georeference: Georeference, n_labels: int, band_rows: int = 1024) -> int:
    """Give the input's nodata pixels label :data:`NODATA_LABEL` and renumber the rest ``0 .. K'-1`` (a
    superpixel entirely in nodata disappears), in two banded passes over the row stores.

    Parameters
    ----------
    labels : row store of (H, W) int32
        Superpixels ``0 .. n_labels - 1``; rewritten in place.
    source : image source
        The input (``read_rows``).
    georeference : Georeference
        With the nodata value (nothing is done without one).
    n_labels : int
        ``K``, the number of superpixels in ``labels``.
    band_rows : int
        Rows read at a time from ``labels`` and ``source``; the result does not depend on it.

    Returns
    -------
    int
        ``K'``, the superpixels left.
    """
    if georeference.nodata is None:
        return n_labels
    height = labels.shape[0]
    used = np.zeros(n_labels, bool)
    any_nodata = False
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        mask = georeference.nodata_mask(source.read_rows(y0, y1))
        any_nodata = any_nodata or bool(mask.any())
        used[np.unique(labels.read(y0, y1)[~mask])] = True
    if not any_nodata:
        return n_labels
    lut = np.where(used, np.cumsum(used) - 1, NODATA_LABEL).astype(np.int32)
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        band = lut[labels.read(y0, y1)]
        band[georeference.nodata_mask(source.read_rows(y0, y1))] = NODATA_LABEL
        labels.write(y0, band)
    return int(used.sum())


def mask_nodata_classes(classes, source, georeference: Georeference, band_rows: int = 1024) -> np.ndarray:
    """Give the input's nodata pixels class :data:`NODATA_CLASS` (in place, band by band); returns the pixels per
    class id after masking, ``(256,)`` int64."""
    height = classes.shape[0]
    counts = np.zeros(256, np.int64)
    for y0 in range(0, height, band_rows):
        y1 = min(height, y0 + band_rows)
        band = classes.read(y0, y1)
        mask = georeference.nodata_mask(source.read_rows(y0, y1))
        if mask is not None and mask.any():
            band[mask] = NODATA_CLASS
            classes.write(y0, band)
        counts += np.bincount(band.ravel(), minlength=256)
    return counts
