"""Writing label maps, class maps and overlays, all-or-nothing.

Every output of one image is first written under a temporary name in the destination folder and renamed only
when all of them are complete, so an error never leaves half-written files behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image

from ..defaults import LABEL_FORMATS
from ..errors import OutputError
from ..grid.boundaries import boundary_mask
from ..threads import for_each_band, usable_cpus
from .images import to_uint8

__all__ = ["LABEL_FORMATS", "label_suffix", "write_labels", "write_label_store", "sample_label_store",
           "render_overlay", "write_png", "write_jpeg", "write_pyramid", "write_overlay", "commit_files",
           "prepare_output_dir", "default_file_mode", "write_class_png", "write_class_store", "render_class_overlay"]

BOUNDARY_COLOUR = (255, 32, 32)


def label_suffix(labels: np.ndarray, fmt: str = "auto") -> str:
    """File suffix for a label map: ``.png`` (16-bit, ids < 65536), ``.tif`` or ``.npy``.

    Raises
    ------
    ValueError
        If ``fmt`` is unknown, or ``png`` is asked for ids that do not fit in 16 bits.
    """
    if fmt not in LABEL_FORMATS:
        raise ValueError(f"unknown label format {fmt!r}; choose one of {LABEL_FORMATS}")
    fits16 = labels.size == 0 or int(labels.max()) < 65536
    if fmt == "png" and not fits16:
        raise ValueError(f"{int(labels.max()) + 1} superpixels do not fit in a 16-bit PNG; use tiff or npy")
    if fmt == "auto":
        fmt = "png" if fits16 else "tiff"
    return {"png": ".png", "tiff": ".tif", "npy": ".npy"}[fmt]


def write_labels(path: str | os.PathLike, labels: np.ndarray, suffix: str) -> None:
    """Encode an ``(H, W)`` int32 label map to ``path`` as ``suffix`` says (``.png``, ``.tif`` or ``.npy``).

    PNG is 16-bit grayscale, so it holds ids up to 65535 only (larger ones would wrap: pick the suffix with
    :func:`label_suffix`); TIFF is int32, zlib-compressed, BigTIFF above 2 GiB; NPY keeps int32.

    Raises
    ------
    ValueError
        If ``suffix`` is none of the three.
    OSError
        If the file cannot be written.
    """
    path = Path(path)
    if suffix == ".png":
        # Every row filtered against the row above (label maps repeat down a superpixel) and zlib's run-length
        # strategy, level 1: 0.06 s and 725 kB for the 5K PCNet map of benchmarks/bench_cli.py, against 0.16 s
        # and 649 kB with Pillow's adaptive filters (2-core CPU, 2026-12-06)
        ok, data = cv2.imencode(".png", labels.astype(np.uint16), [
            cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP])
        if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint16 array
            raise OSError(f"OpenCV could not encode {path} as PNG")
        with open(path, "wb") as f:
            f.write(data)
    elif suffix == ".tif":
        tifffile.imwrite(path, labels.astype(np.int32, copy=False), bigtiff=labels.nbytes > 2**31,
                         compression="zlib", tile=(512, 512) if min(labels.shape) >= 512 else None)
    elif suffix == ".npy":
        with open(path, "wb") as f:
            np.save(f, labels.astype(np.int32, copy=False))
    else:
        raise ValueError(f"unknown label suffix {suffix!r}")


def write_label_store(path: str | os.PathLike, store, tile: int = 512, georeference=None,
                      nodata: float | None = None) -> None:
    """Write a label map held in a row store as a tiled, zlib-compressed int32 BigTIFF pyramid, band by band.

    Only one band of ``tile`` rows is in memory at a time, so label maps larger than memory can be written.
    Reduced-resolution levels follow the full map (see :func:`write_pyramid`).

    Parameters
    ----------
    path : path-like
        Destination (written directly; :func:`commit_files` gives the all-or-nothing behaviour).
    store : row store of (H, W) int32
        :class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`.
    tile : int
        Tile side in pixels, a multiple of 16.
    georeference : uhrseg.io.geo.Georeference, optional
        Written into the full-resolution level (a GeoTIFF that overlays its input).
    nodata : float, optional
        Recorded as ``GDAL_NODATA`` with the georeference.
    """
    write_pyramid(path, store, np.int32, tile, georeference=georeference, nodata=nodata)


def write_pyramid(path: str | os.PathLike, store, dtype, tile: int = 512, georeference=None,
                  nodata: float | None = None, **tiff_options) -> None:
    """Write a single-channel map held in a row store as a tiled BigTIFF with reduced-resolution levels.

    Level ``k`` (``k = 1, 2, ...`` until its longer side fits in one tile) is the full map sampled nearest at
    every ``2**k``-th row and column: its pixel ``(y, x)`` is pixel ``(2**k y, 2**k x)`` of level 0, so labels
    and class ids stay exact. The levels are reduced-resolution images in the main IFD chain
    (``NewSubfileType = 1``), the layout of GDAL's internal overviews (not the byte order of a Cloud-Optimized
    GeoTIFF): QGIS and GDAL take them as overviews, tifffile (napari) as ``series[0].levels``. Every level is
    written band by band.

    Parameters
    ----------
    path : path-like
    store : row store of (H, W)
    dtype : numpy dtype
        Stored type.
    tile : int
        Tile side in pixels, a multiple of 16.
    georeference : uhrseg.io.geo.Georeference, optional
        Its GeoTIFF tags go into level 0.
    nodata : float, optional
        ``GDAL_NODATA`` of level 0 (with a georeference).
    **tiff_options
        Passed to every ``tifffile.TiffWriter.write`` (e.g. ``photometric``, ``colormap``).
    """
    height, width = store.shape[:2]
    common = {"dtype": dtype, "tile": (tile, tile), "compression": "zlib", "compressionargs": {"level": 1},
              **tiff_options}
    extratags = georeference.extratags(nodata) if georeference is not None else []
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(_store_tiles(store, tile, dtype), shape=(height, width), extratags=extratags, **common)
        factor = 2
        while max(height, width) > tile * factor // 2:
            h, w = -(-height // factor), -(-width // factor)
            tif.write(_level_tiles(store, factor, tile, dtype), shape=(h, w), subfiletype=1, **common)
            factor *= 2


def _store_tiles(store, tile: int, dtype):
    """The ``tile x tile`` blocks of a row store in raster order (edge blocks zero-padded), one band at a time."""
    height, width = store.shape[:2]
    for y0 in range(0, height, tile):
        band = store.read(y0, min(height, y0 + tile))
        for x0 in range(0, width, tile):
            block = np.zeros((tile, tile), dtype)
            part = band[:, x0 : x0 + tile]
            block[: part.shape[0], : part.shape[1]] = part
            yield block


def _level_tiles(store, factor: int, tile: int, dtype):
    """The ``tile x tile`` blocks of a map sampled at every ``factor``-th row and column, one band at a time."""
    height, width = store.shape[:2]
    rows = np.arange(0, height, factor)
    for r0 in range(0, len(rows), tile):
        band = np.stack([_read_row(store, int(y))[::factor] for y in rows[r0 : r0 + tile]])
        for x0 in range(0, band.shape[1], tile):
            block = np.zeros((tile, tile), dtype)
            part = band[:, x0 : x0 + tile]
            block[: part.shape[0], : part.shape[1]] = part
            yield block


def _read_row(store, y: int) -> np.ndarray:
    return store.read(y, y + 1)[0]


def sample_label_store(store, height: int, width: int, band_rows: int = 1024) -> np.ndarray:
    """Nearest-sample a label map held in a row store down to ``(height, width)`` (for previews).

    Returns
    -------
    (height, width) ndarray of int32
    """
    big_h, big_w = store.shape[:2]
    rows = ((np.arange(height) + 0.5) * big_h / height).astype(np.int64)
    cols = ((np.arange(width) + 0.5) * big_w / width).astype(np.int64)
    out = np.empty((height, width), np.int32)
    for y0 in range(0, big_h, band_rows):
        y1 = min(big_h, y0 + band_rows)
        lo, hi = np.searchsorted(rows, [y0, y1])
        if hi > lo:
            out[lo:hi] = store.read(y0, y1)[rows[lo:hi] - y0][:, cols]
    return out


#: Rows per band of :func:`render_overlay`.
_OVERLAY_BAND_ROWS = 256


def render_overlay(image: np.ndarray, labels: np.ndarray, max_side: int | None = None,
                   threads: int = 1) -> np.ndarray:
    """Draw superpixel boundaries over an image.

    Parameters
    ----------
    image : (H, W, 3) ndarray
        RGB image (uint8, uint16 or float in [0, 1]).
    labels : (H, W) ndarray of int
        Superpixel labels.
    max_side : int, optional
        When given and the image is larger, render a preview whose longer side is ``max_side`` pixels (image
        area-averaged, labels sampled nearest) so that boundaries stay one pixel wide.
    threads : int
        Threads that draw bands of rows at the same time (numpy releases the GIL); the result is the same.

    Returns
    -------
    (h, w, 3) ndarray of uint8
        The image with boundary pixels (:func:`uhrseg.grid.boundary_mask`) in :data:`BOUNDARY_COLOUR`.

    Raises
    ------
    ValueError
        If ``threads < 1``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    rgb = to_uint8(image)
    preview = max_side is not None and max(labels.shape) > max_side
    if preview:
        scale = max_side / max(labels.shape)
        h, w = max(1, round(labels.shape[0] * scale)), max(1, round(labels.shape[1] * scale))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        rows = ((np.arange(h) + 0.5) * labels.shape[0] / h).astype(np.int64)
        cols = ((np.arange(w) + 0.5) * labels.shape[1] / w).astype(np.int64)
        labels = labels.take(rows, axis=0).take(cols, axis=1)
    out = rgb if preview else np.empty_like(rgb)
    height = labels.shape[0]

    def draw(y0: int, y1: int) -> None:
        if not preview:
            out[y0:y1] = rgb[y0:y1]
        c0, c1 = max(0, y0 - 1), min(height, y1 + 1)  # a row of context: the band's mask is the whole image's
        mask = boundary_mask(labels[c0:c1])[y0 - c0 : y1 - c0]
        # the boundary pixels by their flat index: 3-4x faster than assigning through the boolean mask
        out[y0:y1].reshape(-1, 3)[np.flatnonzero(mask)] = BOUNDARY_COLOUR

    # bands of 256 rows: their temporaries stay in the cache (3x faster than one band per thread)
    for_each_band(height, _OVERLAY_BAND_ROWS, threads, draw, "uhrseg-overlay")
    return out


def _palette_array(palette) -> np.ndarray:
    """``(256, 3)`` uint8 from a list of ``(r, g, b)`` (the rest black)."""
    out = np.zeros((256, 3), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    out[: len(colours)] = colours
    return out


def write_class_png(path: str | os.PathLike, classes: np.ndarray, palette) -> None:
    """Write an ``(H, W)`` uint8 class map as an 8-bit palette PNG: pixel values are class ids, the palette is
    the classes' colours, so any viewer shows the usual colours and any reader gets the ids back."""
    im = Image.fromarray(np.asarray(classes, np.uint8), mode="P")
    im.putpalette(_palette_array(palette).ravel().tolist())
    im.save(path, format="PNG", compress_level=1)


def write_class_store(path: str | os.PathLike, store, palette, tile: int = 512, georeference=None,
                      nodata: float | None = None) -> None:
    """Write a class map held in a row store as a tiled, zlib-compressed 8-bit palette BigTIFF pyramid, band
    by band (levels as in :func:`write_pyramid`).

    Parameters
    ----------
    path : path-like
        Destination (written directly; :func:`commit_files` gives the all-or-nothing behaviour).
    store : row store of (H, W) uint8
        :class:`uhrseg.stores.ArrayStore` or :class:`uhrseg.stores.FileStore`.
    palette : sequence of (int, int, int)
        Class colours, stored as the TIFF colour map.
    tile : int
        Tile side in pixels, a multiple of 16.
    georeference : uhrseg.io.geo.Georeference, optional
        Written into the full-resolution level.
    nodata : float, optional
        Recorded as ``GDAL_NODATA`` with the georeference.
    """
    colormap = _palette_array(palette).T.astype(np.uint16) * 257
    write_pyramid(path, store, np.uint8, tile, georeference=georeference, nodata=nodata, photometric="palette",
                  colormap=colormap)


def render_class_overlay(image: np.ndarray, classes: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an image.

    Parameters
    ----------
    image : (H, W, 3) ndarray
        RGB (uint8, uint16 or float in [0, 1]).
    classes : (H, W) ndarray of uint8
        Class ids.
    palette : sequence of (int, int, int)
        Class colours.
    alpha : float
        Weight of the class colour (0 = image only, 1 = colours only).

    Returns
    -------
    (H, W, 3) ndarray of uint8
    """
    rgb = to_uint8(image)
    colours = _palette_array(palette)[classes]
    return cv2.addWeighted(rgb, 1.0 - alpha, colours, alpha, 0.0)


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 array as PNG (fast compression)."""
    Image.fromarray(rgb).save(path, format="PNG", compress_level=1)


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 array as JPEG, quality 95 without chroma subsampling (4:4:4), so that
    one-pixel boundary lines keep their colour. About 10x faster to encode than PNG for a photograph."""
    Image.fromarray(rgb).save(path, format="JPEG", quality=95, subsampling=0)


def write_overlay(path: str | os.PathLike, rgb: np.ndarray, fmt: str = "jpg") -> None:
    """Write an overlay or preview as ``fmt`` says: ``"jpg"`` (:func:`write_jpeg`) or ``"png"``
    (:func:`write_png`), whatever the file's name (the commands write to a temporary name first).

    Raises
    ------
    ValueError
        For another format.
    """
    if fmt == "jpg":
        write_jpeg(path, rgb)
    elif fmt == "png":
        write_png(path, rgb)
    else:
        raise ValueError(f"overlays are written as jpg or png, not {fmt!r}")


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder if needed and check that files can be created in it.

    Raises
    ------
    OutputError
        If the path exists and is not a folder, cannot be created, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: output path exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".uhrseg-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"{path}: output folder is not writable ({e.strerror or e})") from e
    return path


def default_file_mode() -> int:
    """``0o666`` less the process umask: what ``open()`` would have given (mkstemp makes 0o600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit_files(writers: dict[Path, Callable[[Path], None]]) -> list[Path]:
    """Write several files all-or-nothing, concurrently.

    Each ``writer(tmp_path)`` writes one file under a temporary name in its final folder, in a pool of threads,
    one per usable CPU at most, in the order given (the encoders, zlib, libjpeg and tifffile's codecs, release the
    GIL, so a label map and an overlay encode side by side); when all succeeded they are renamed to their final
    names. On any error while writing, or a folder where a final name should go, the temporary files are removed
    and nothing is renamed. A file already at a final name (an earlier run's output) is first moved aside to a
    hidden name in its folder and deleted only once every file of the set is in place; if a rename fails after
    others succeeded (a disk error, a file that cannot be replaced), those are undone: the files they replaced
    come back and the new ones are removed, so the folder holds the whole old set or the whole new one.

    Raises
    ------
    OutputError
        If a file cannot be written, its folder cannot take a temporary file, a folder has its name, or it
        cannot be renamed into place (the message names the file; if undoing the earlier renames failed too, it
        names the files left behind).
    """
    temps: dict[Path, Path] = {}

    def cannot(final: Path, e: OSError) -> OutputError:
        return OutputError(f"{final}: cannot be written ({e.strerror or e})")

    def write(final: Path, writer: Callable[[Path], None]) -> None:
        try:
            writer(temps[final])
        except OSError as e:
            raise cannot(final, e) from e

    try:
        for final in writers:
            # hidden, marked .part, and ending in the final suffix (writers such as GDAL's GeoPackage check it)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}",
                                           dir=final.parent)
            except OSError as e:  # e.g. the folder is gone or read-only
                raise cannot(final, e) from e
            os.close(fd)
            temps[final] = Path(tmp)
        if len(writers) == 1:
            write(*next(iter(writers.items())))
        else:
            # one thread per core at most: a third encoder on two cores would slow the longest one (the
            # full-resolution overlay) instead of finishing sooner
            with ThreadPoolExecutor(max_workers=min(len(writers), usable_cpus()),
                                    thread_name_prefix="uhrseg-write") as pool:
                for future in [pool.submit(write, final, writer) for final, writer in writers.items()]:
                    future.result()
        mode = default_file_mode()
        for final in temps:  # refused before any rename, so that no file of the set is renamed alone
            if final.is_dir():
                raise OutputError(f"{final}: cannot be written (a folder has that name)")
        for tmp in temps.values():
            os.chmod(tmp, mode)
        backups = _rename_all(temps, cannot)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        raise
    for backup in backups:  # every new file is in place: the files they replaced can go
        backup.unlink(missing_ok=True)
    return list(temps)


def _rename_all(temps: dict[Path, Path], cannot: Callable[[Path, OSError], OutputError]) -> list[Path]:
    """Rename each temporary file ``temps[final]`` to ``final``, all or none (:func:`commit_files`).

    A file already at ``final`` is first renamed to a hidden name beside it. Returns those hidden files (for the
    caller to delete). If a rename fails, the renames done so far are undone in reverse order (each replaced file
    back at its name, each new file removed) and :class:`OutputError` is raised for the file that failed.
    """
    done: list[tuple[Path, Path | None]] = []  # (final, the hidden copy of the file it replaced, if any)
    try:
        for final, tmp in temps.items():
            backup = None
            try:
                if final.exists() or final.is_symlink():
                    fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".old{final.suffix}",
                                                dir=final.parent)
                    os.close(fd)
                    backup = Path(name)
                    os.replace(final, backup)  # over the empty placeholder
                os.replace(tmp, final)
            except OSError as e:
                if backup is not None:
                    if final.exists() or final.is_symlink():  # the move aside failed: only the placeholder
                        backup.unlink(missing_ok=True)
                    else:
                        done.append((final, backup))  # moved aside, not replaced: undone below with the rest
                raise cannot(final, e) from e
            done.append((final, backup))
    except BaseException as e:
        left = []
        for final, backup in reversed(done):
            try:
                if backup is None:
                    final.unlink(missing_ok=True)
                else:
                    os.replace(backup, final)
            except OSError:
                left.append(str(final) if backup is None else f"{final} (the earlier file is {backup})")
        if left and isinstance(e, OutputError):
            raise OutputError(f"{e}; undoing the files renamed before it failed too: {', '.join(left)}") from e
        raise
    return [backup for _, backup in done if backup is not None]
