"""Reading images of any size and layout into RGB arrays.

JPEG, PNG (8 and 16 bit), TIFF and BigTIFF, grayscale, RGBA, palette and EXIF-rotated files are accepted.
Pillow reads everything but TIFF, with its decompression-bomb limit lifted for the duration of the call
(ultra-high-resolution images are this tool's daily work); tifffile reads TIFF and BigTIFF.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageReadError

__all__ = ["IMAGE_SUFFIXES", "read_image", "as_rgb", "to_uint8"]

#: File name suffixes (lower case) that dataset folders list as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


# Pillow's decompression-bomb limit is one global of its module; reads in several threads (the CLI decodes the
# next image while the network runs) share it: the first block to enter saves and lifts it, the last to leave
# puts it back. A plain save / restore per block could leave it lifted (A saves N, B saves None, A restores N,
# B restores None) or restore it under a read still running.
_PIXEL_LIMIT_LOCK = threading.Lock()
_pixel_limit_state = {"blocks": 0, "saved": None}


@contextlib.contextmanager
def _pillow_without_pixel_limit():
    """Lift Pillow's decompression-bomb limit inside the block and restore it when the last block of any thread
    has left (thread-safe)."""
    with _PIXEL_LIMIT_LOCK:
        if _pixel_limit_state["blocks"] == 0:
            _pixel_limit_state["saved"] = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _pixel_limit_state["blocks"] += 1
    try:
        yield
    finally:
        with _PIXEL_LIMIT_LOCK:
            _pixel_limit_state["blocks"] -= 1
            if _pixel_limit_state["blocks"] == 0:
                Image.MAX_IMAGE_PIXELS = _pixel_limit_state["saved"]


def _pillow_to_array(im: Image.Image) -> np.ndarray:
    if im.mode in ("1", "L", "LA", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I", "F"):
        return np.asarray(im)
    if im.mode in ("P", "PA"):
        return np.asarray(im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB"))
    return np.asarray(im.convert("RGB"))  # CMYK, YCbCr, LAB, HSV, ...


# Bytes handed to Pillow's decoder per call (Pillow's default is 64 kB). The decoder releases the GIL only inside
# a call, so in 64 kB steps a read in a background thread (the CLI decodes the first image while it imports)
# waits for the GIL at every step: a 5K JPEG (4.6 MB) took 0.68-0.74 s beside the imports against 0.53 s in one
# call (2-core CPU, 2026-12-06). Capped, since the bytes of one call are held in memory at once.
_DECODE_BLOCK_BYTES = 64 * 2**20
_EXIF_ORIENTATION = 0x0112


# OpenCV decodes a baseline or progressive JPEG (the same libjpeg-turbo, ISLOW IDCT and fancy upsampling as
# Pillow: identical pixels on all 871 JPEGs of ../shared/datasets, and EXIF orientation applied the same way,
# tests/test_io.py) in one call without Pillow's 4-byte-per-pixel intermediate: 0.28 against 0.32 s for the 5K
# photograph on the 2-core CPU (medians of 8, interleaved). Up to its default limit of 2**30 pixels; Pillow reads
# the rest.
_OPENCV_JPEG_MAX_PIXELS = 2**30
_JPEG_EOI = b"\xff\xd9"


def _read_jpeg_opencv(path: Path, im: Image.Image) -> np.ndarray | None:
    """The RGB pixels of the JPEG ``path`` (opened as ``im``, header only) decoded by OpenCV, or None when
    Pillow should decode it: other colour spaces than RGB (YCbCr) and grayscale, more than
    :data:`_OPENCV_JPEG_MAX_PIXELS`, a file that does not end with the end-of-image marker (truncated, which
    Pillow reports, or followed by other bytes, which Pillow reads), or one OpenCV cannot decode."""
    if im.format != "JPEG" or im.mode not in ("RGB", "L") or im.width * im.height > _OPENCV_JPEG_MAX_PIXELS:
        return None
    data = np.fromfile(path, np.uint8)
    if data[-2:].tobytes() != _JPEG_EOI:
        return None
    import cv2

    try:
        return cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)  # None if OpenCV cannot decode it
    except cv2.error:
        return None


def _read_pillow(path: Path) -> np.ndarray:
    with _pillow_without_pixel_limit():
        try:
            with Image.open(path) as im:
                pixels = _read_jpeg_opencv(path, im)
                if pixels is not None:
                    return pixels
                im.decodermaxblock = max(im.decodermaxblock, min(_DECODE_BLOCK_BYTES, path.stat().st_size + 1))
                if im.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):  # else exif_transpose only copies
                    im = ImageOps.exif_transpose(im)
                im.load()
                return _pillow_to_array(im)
        except UnidentifiedImageError:
            raise ImageReadError(f"{path}: not a recognised image file (JPEG, PNG, TIFF, ...)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageReadError(f"{path}: corrupt or truncated image ({e})") from e


def _tiff_image(path: str | os.PathLike):
    """The image page of a TIFF as stored, channels last, its orientation tag applied, with what converting it
    needs: ``(samples, photometric, colormap or None, nodata or None)``.

    Raises
    ------
    ImageReadError
        If the file has no page, is corrupt or truncated (tifffile's warnings about truncated strips, which it
        fills with zeros, count as errors).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # tifffile warns, and fills zeros, on truncated strips
            with tifffile.TiffFile(path) as tif:
                page = image_page(tif)
                arr, axes = page.asarray(), page.axes
                info = int(page.photometric), page.colormap, tiff_nodata(page)
                orientation = tiff_orientation(page)
    except Exception as e:  # tifffile raises many types (TiffFileError, ValueError, KeyError, IndexError, ...)
        raise ImageReadError(f"{path}: corrupt or truncated TIFF ({type(e).__name__}: {e})".splitlines()[0]) from e
    if axes.startswith("S") and arr.ndim == 3:  # planar: (S, Y, X) -> (Y, X, S)
        arr = np.moveaxis(arr, 0, -1)
    return (orient(arr, orientation), *info)


def _read_tiff(path: Path) -> np.ndarray:
    """The image of a TIFF as a viewer shows it: colour spaces converted (per pixel, so after the orientation as
    well as before), float and signed rasters' nodata filled (:func:`_fill_nodata`)."""
    arr, photometric, colormap, nodata = _tiff_image(path)
    if photometric == PALETTE and colormap is not None and arr.ndim == 2:  # indices into an RGB table
        table = np.asarray(colormap).T  # (2**bits, 3) uint16
        arr = table[arr] if table.max() > 255 else table[arr].astype(np.uint8)
    elif photometric == MIN_IS_WHITE and arr.dtype.kind in "uf":
        arr = (np.iinfo(arr.dtype).max - arr) if arr.dtype.kind == "u" else 1 - arr
    elif photometric == SEPARATED and arr.ndim == 3 and arr.shape[2] >= 4 and arr.dtype.kind == "u":  # CMYK
        top = float(np.iinfo(arr.dtype).max)
        cmy, k = arr[..., :3].astype(np.float32), arr[..., 3:4].astype(np.float32)
        arr = np.rint((top - cmy) * (top - k) / top).astype(arr.dtype)
    elif photometric not in (MIN_IS_BLACK, RGB, YCBCR, PALETTE, MIN_IS_WHITE, SEPARATED):
        raise ImageReadError(f"{path}: TIFF colour space {photometric} (photometric interpretation) is not read; "
                             "convert it to RGB or grey")
    if nodata is not None and arr.dtype not in (np.uint8, np.uint16):
        arr = _fill_nodata(arr, nodata)
    return arr


def _fill_nodata(arr: np.ndarray, nodata: float) -> np.ndarray:
    """``arr`` (a float or signed / wide integer raster, which :func:`as_rgb` rescales by its range) with its
    nodata pixels (every channel equal to ``nodata``, or NaN) set to the smallest valid value, so that the
    rescaling spans the valid data only and a NaN nodata is not refused as a non-finite value. The nodata
    pixels themselves are found again from the file (:func:`uhrseg.io.geo.nodata_source`)."""
    mask = nodata_pixels(arr, nodata)
    if not mask.any() or mask.all():
        return arr
    out = arr.copy()
    out[mask] = arr[~mask].min()
    return out


def nodata_pixels(samples: np.ndarray, nodata: float) -> np.ndarray:
    """``(h, W)`` bool: the pixels of ``(h, W[, C])`` samples whose every channel is ``nodata`` (NaN matches NaN
    samples of a float raster, and nothing in an integer one)."""
    if np.isnan(nodata):
        same = np.isnan(samples) if np.issubdtype(samples.dtype, np.floating) else np.zeros(samples.shape, bool)
    else:
        same = samples == nodata
    return same.all(axis=2) if same.ndim == 3 else same


def tiff_nodata(page) -> float | None:
    """The GDAL_NODATA tag (42113) of a tifffile page as a float (NaN allowed), or None when absent or unreadable."""
    tag = page.tags.get(42113)
    if tag is None:
        return None
    try:
        return float(str(tag.value).strip().rstrip("\x00"))
    except ValueError:
        return None


def read_tiff_samples(path: str | os.PathLike) -> np.ndarray:
    """The image page of a TIFF as stored (``(H, W)`` or ``(H, W, C)``, planar files moved to channels last),
    with its orientation tag applied as :func:`read_image` applies it, but no colour conversion or rescaling:
    what a nodata value is compared with.

    Raises
    ------
    ImageReadError
        If the file cannot be read as a TIFF.
    """
    return _tiff_image(path)[0]


#: TIFF photometric interpretations (TIFF 6.0, tag 262).
MIN_IS_WHITE, MIN_IS_BLACK, RGB, PALETTE, SEPARATED, YCBCR = 0, 1, 2, 3, 5, 6


def image_page(tif: tifffile.TiffFile):
    """The page of a TIFF that holds the image: the first one that is not a reduced-resolution copy (a thumbnail
    or overview some writers put first, NewSubfileType bit 0), else the first.

    Raises
    ------
    IndexError
        If the file has no page.
    """
    first = tif.pages[0]
    if not first.is_reduced:
        return first
    return next((page for page in tif.pages if not page.is_reduced), first)


def tiff_orientation(page) -> int:
    """The orientation tag (274) of a tifffile page: 1 (rows top to bottom, columns left to right, the default)
    to 8, as in EXIF; 1 when absent or out of range."""
    tag = page.tags.get(274)
    value = int(tag.value) if tag is not None else 1
    return value if value in range(1, 9) else 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, ...)`` pixels stored with a TIFF / EXIF ``orientation`` (1-8) as a viewer shows them (what
    Pillow's ``ImageOps.exif_transpose`` does; 5-8 swap the sides). A view, not a copy, where possible."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose first, then flip, as for EXIF
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB, with EXIF orientation applied.

    Parameters
    ----------
    path : path-like
        JPEG, PNG, TIFF/BigTIFF, or any other format Pillow reads. No pixel-count limit applies.

    Returns
    -------
    (H, W, 3) ndarray of uint8, uint16 or float32
        RGB pixels: 8-bit files give uint8, 16-bit files uint16, floating-point TIFFs float32 in [0, 1].
        Grayscale is repeated over the three channels; an alpha channel is dropped. TIFFs are shown as a viewer
        shows them: palette indices through their colour table (uint16 when the table uses 16 bits), MinIsWhite
        inverted, CMYK converted to RGB, and the orientation tag applied.

    Raises
    ------
    ImageReadError
        If the file is missing, a folder, empty, not an image, corrupt or truncated, has zero pixels, or has an
        unsupported channel layout or TIFF colour space (e.g. CIELAB). The message starts with the path.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if not path.is_file():
        raise ImageReadError(f"{path}: not a file")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageReadError(f"{path}: cannot be read ({e.strerror})") from e
    with f:
        head = f.read(4)
        if not head:
            raise ImageReadError(f"{path}: empty file (0 bytes)")
        if head == _PNG_MAGIC[:4]:
            f.seek(16)
            size = f.read(8)  # IHDR width and height, which Pillow refuses to open when zero
            if len(size) == 8 and 0 in (int.from_bytes(size[:4], "big"), int.from_bytes(size[4:], "big")):
                raise ImageReadError(f"{path}: zero-sized image ({int.from_bytes(size[:4], 'big')} x "
                                     f"{int.from_bytes(size[4:], 'big')} pixels in the PNG header)")
    arr = _read_tiff(path) if head in _TIFF_MAGIC else _read_pillow(path)
    try:
        return as_rgb(arr)
    except ValueError as e:
        raise ImageReadError(f"{path}: {e}") from e


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Bring an image array to the ``(H, W, 3)`` layout used throughout uhrseg.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        ``C`` in 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Any real dtype.

    Returns
    -------
    (H, W, 3) ndarray
        uint8 and uint16 pass through (gray repeated, alpha dropped); bool becomes uint8 (0/255); other integer
        types become uint16 when they fit in [0, 65535], else float32 scaled to [0, 1]; floats become float32,
        scaled to [0, 1] only when they leave that range. No copy when nothing changes.

    Raises
    ------
    ValueError
        If the image has zero pixels, an unsupported shape or non-finite values.
    """
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"zero-sized image (array shape {image.shape})")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"unsupported image shape {image.shape}: expected (H, W) or (H, W, C) with C in 1..4")
    if image.ndim == 3:
        if image.shape[2] in (1, 2):
            image = image[:, :, 0]
        elif image.shape[2] == 4:
            image = image[:, :, :3]
    if image.dtype == bool:
        image = image.astype(np.uint8) * np.uint8(255)
    elif np.issubdtype(image.dtype, np.integer) and image.dtype not in (np.uint8, np.uint16):
        lo, hi = int(image.min()), int(image.max())
        if lo >= 0 and hi <= 65535:
            image = image.astype(np.uint16)
        else:
            image = ((image.astype(np.float64) - lo) / max(hi - lo, 1)).astype(np.float32)
    elif np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32, copy=False)
        if not np.isfinite(image).all():
            raise ValueError("image holds NaN or infinite values")
        lo, hi = float(image.min()), float(image.max())
        if lo < 0.0 or hi > 1.0:
            image = (image - lo) / max(hi - lo, 1e-12)
    elif not np.issubdtype(image.dtype, np.integer):
        raise ValueError(f"unsupported image dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 copy of an :func:`as_rgb` image (uint16 keeps its high byte, float is scaled by 255 and
    rounded); a uint8 image is returned as it is, not copied."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
