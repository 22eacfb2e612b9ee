"""Image sources: an image read in bands of rows, so that a gigapixel TIFF never sits in memory whole.

A source has ``shape`` ``(H, W, 3)``, ``dtype`` (uint8, uint16 or float32 in [0, 1]),
``read_rows(y0, y1)``, which returns rows ``[y0, y1)`` as RGB in the layout of :func:`uhrseg.io.read_image`,
``read_region(y0, y1, x0, x1)`` for a window of them, and ``chunk_rows``, the rows the file is stored in (a
tile's or strip's height: reads of a multiple of it, starting at multiples of it, decode each chunk once).
:func:`open_image` streams tiled and stripped TIFF/BigTIFF files through tifffile's Zarr interface (only the
tiles that cover the requested rows are read and decoded) and decodes other formats (JPEG, PNG, ...) whole,
since their codecs cannot seek to a band of rows.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import tifffile

from ..errors import ImageReadError
from .images import _TIFF_MAGIC, MIN_IS_BLACK, RGB, YCBCR, as_rgb, image_page, read_image, tiff_orientation

__all__ = ["ArraySource", "TiffSource", "open_image"]


class ArraySource:
    """An in-memory image as a source.

    Parameters
    ----------
    image : (H, W), (H, W, 3) or (H, W, 4) ndarray
        Any layout :func:`uhrseg.io.as_rgb` accepts; it is brought to ``(H, W, 3)`` once.
    """

    def __init__(self, image: np.ndarray) -> None:
        self.array = as_rgb(image)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``: rows, columns and the RGB channels, in pixels."""
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        """The rows' dtype: uint8, uint16 or float32 (as :func:`uhrseg.io.images.as_rgb` gives)."""
        return self.array.dtype

    @property
    def chunk_rows(self) -> int:
        """1: any band of rows is a view."""
        return 1

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)``: a ``(y1 - y0, W, 3)`` view."""
        return self.array[y0:y1]

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``[y0, y1)``, columns ``[x0, x1)``: a ``(y1 - y0, x1 - x0, 3)`` view."""
        return self.array[y0:y1, x0:x1]

    def close(self) -> None:
        """Nothing to release."""


class TiffSource:
    """A TIFF or BigTIFF file read band by band through Zarr: its image page, the first that is not a
    reduced-resolution copy (:func:`uhrseg.io.images.image_page`).

    Parameters
    ----------
    path : path-like
        TIFF with 8- or 16-bit unsigned samples, gray (``YX``), RGB / RGBA (``YXS``) or planar RGB (``SYX``).

    Raises
    ------
    ImageReadError
        If the file cannot be opened as TIFF, or its layout or sample type is not one of the above (use
        :func:`open_image`, which falls back to :func:`uhrseg.io.read_image` for those). Reading a corrupt
        tile later raises ImageReadError too, naming the file and the rows.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import zarr

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
        except Exception as e:  # tifffile raises many types
            raise ImageReadError(f"{self.path}: corrupt or unreadable TIFF ({type(e).__name__}: {e})") from e
        try:
            page = image_page(self._tif)
            axes, dtype = page.axes, np.dtype(page.dtype)
            photometric, compression = int(page.photometric), int(page.compression)
            orientation = tiff_orientation(page)
        except Exception as e:  # no page (a file cut after its header), or an unreadable first one
            self._tif.close()
            raise ImageReadError(f"{self.path}: corrupt or unreadable TIFF ({type(e).__name__}: {e})") from e
        # grey or RGB samples (YCbCr only where tifffile's JPEG decoder gives RGB), stored top row first: palette,
        # MinIsWhite, CMYK and rotated files are decoded whole by read_image, which converts them
        plain = photometric in (MIN_IS_BLACK, RGB) or (photometric == YCBCR and compression == 7)  # 7: JPEG
        if axes not in ("YX", "YXS", "SYX") or dtype not in (np.uint8, np.uint16) or (
                axes != "YX" and page.shape[axes.index("S")] not in (1, 2, 3, 4)) or not plain or orientation != 1:
            self._tif.close()
            raise ImageReadError(f"{self.path}: TIFF layout {axes} {page.shape} {dtype} (photometric "
                                 f"{photometric}, orientation {orientation}) cannot be streamed")
        self._axes = axes
        self._zarr = zarr.open(page.aszarr(), mode="r")
        y = axes.index("Y")
        self._height, self._width = page.shape[y], page.shape[y + 1]
        self._dtype = dtype
        self._chunk_rows = int(page.tilelength if page.is_tiled else min(page.rowsperstrip, self._height))

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(H, W, 3)``: rows, columns and the RGB channels, in pixels."""
        return (self._height, self._width, 3)

    @property
    def dtype(self) -> np.dtype:
        """The rows' dtype: the file's uint8 or uint16 (other TIFFs cannot be streamed)."""
        return self._dtype

    @property
    def chunk_rows(self) -> int:
        """Rows per tile (tiled files) or per strip: every read decodes the whole tiles or strips it touches, so
        reads of a multiple of this, starting at multiples of it, decode each one once."""
        return self._chunk_rows

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as a new ``(y1 - y0, W, 3)`` array of the file's sample type.

        Raises
        ------
        ImageReadError
            If a tile or strip covering these rows is corrupt or truncated.
        """
        return self.read_region(y0, y1, 0, self._width)

    def read_region(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``[y0, y1)``, columns ``[x0, x1)`` as a new ``(y1 - y0, x1 - x0, 3)`` array; only the tiles or
        strips that cover the window are decoded.

        Raises
        ------
        ImageReadError
            If a tile or strip covering the window is corrupt or truncated.
        """
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                band = self._zarr[:, y0:y1, x0:x1] if self._axes == "SYX" else self._zarr[y0:y1, x0:x1]
        except Exception as e:
            raise ImageReadError(f"{self.path}: corrupt or truncated TIFF, rows {y0}-{y1} cannot be decoded "
                                 f"({type(e).__name__}: {e})"
                                 .splitlines()[0]) from e
        if self._axes == "SYX":
            band = np.moveaxis(band, 0, -1)
        return np.ascontiguousarray(as_rgb(band))

    def close(self) -> None:
        """Close the file."""
        self._tif.close()


def open_image(path: str | os.PathLike) -> ArraySource | TiffSource:
    """Open an image file as a source: streamed when it is a TIFF that can be, else decoded whole.

    Parameters
    ----------
    path : path-like
        Any file :func:`uhrseg.io.read_image` reads.

    Returns
    -------
    ArraySource or TiffSource

    Raises
    ------
    ImageReadError
        As :func:`uhrseg.io.read_image`: missing, empty, corrupt or unsupported files; the message names the
        file.
    """
    path = Path(path)
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(4)
        except OSError:
            head = b""
        if head in _TIFF_MAGIC:
            try:
                return TiffSource(path)
            except ImageReadError:
                pass  # an unusual layout: read_image decodes it whole, or says what is wrong
    return ArraySource(read_image(path))
