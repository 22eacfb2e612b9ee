"""Reading every supported image kind, and the errors for bad files."""

from __future__ import annotations

import struct
import subprocess
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import bsds_image_path
from uhrseg.errors import ImageReadError, OutputError
from uhrseg.io import commit_files, prepare_output_dir, read_image, render_overlay


@pytest.fixture(scope="module")
def rgb():
    return np.asarray(Image.open(bsds_image_path()).convert("RGB"))


def test_jpeg(rgb):
    img = read_image(bsds_image_path())
    assert img.shape == (321, 481, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, rgb)


def test_png_8_bit_rgba_and_gray(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "gray.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == rgb.shape
    np.testing.assert_array_equal(gray[:, :, 2], rgb[:, :, 0])


def test_png_16_bit_keeps_every_level(tmp_path, rgb):
    values = rgb[:, :, 0].astype(np.uint16) * 257 + 3
    Image.fromarray(values).save(tmp_path / "deep.png")
    img = read_image(tmp_path / "deep.png")
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img[:, :, 1], values)


def test_tiff_bigtiff_planar_and_float(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "a.tif", rgb, compression="zlib", tile=(64, 64))
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), rgb)
    tifffile.imwrite(tmp_path / "big.tif", rgb, bigtiff=True)
    assert open(tmp_path / "big.tif", "rb").read(4) == b"II+\x00"
    np.testing.assert_array_equal(read_image(tmp_path / "big.tif"), rgb)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "planar.tif"), rgb)
    tifffile.imwrite(tmp_path / "f.tif", rgb.astype(np.float32) / 255, photometric="rgb")
    img = read_image(tmp_path / "f.tif")
    assert img.dtype == np.float32
    np.testing.assert_allclose(img, rgb / 255, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=98)
    img = read_image(tmp_path / "rot.jpg")
    assert img.shape == (481, 321, 3)
    expected = np.rot90(rgb, k=-1)
    assert np.abs(img.astype(int) - expected).mean() < 3


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_pixels_and_orientation_are_pillows(tmp_path, rgb, orientation):
    """JPEGs are decoded by OpenCV when they can be: the pixels and all eight EXIF orientations must be exactly
    what Pillow (with ``ImageOps.exif_transpose``) gives, and so must a grayscale JPEG and one with bytes after its
    end-of-image marker (which Pillow decodes)."""
    from PIL import ImageOps

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.jpg", exif=exif, quality=90)
    with Image.open(tmp_path / "o.jpg") as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "o.jpg"), expected)
    if orientation == 1:
        Image.fromarray(rgb[:, :, 1]).save(tmp_path / "gray.jpg", quality=90)
        gray = np.asarray(Image.open(tmp_path / "gray.jpg"))
        np.testing.assert_array_equal(read_image(tmp_path / "gray.jpg"), np.dstack([gray] * 3))
        (tmp_path / "trailing.jpg").write_bytes((tmp_path / "o.jpg").read_bytes() + b"camera data")
        np.testing.assert_array_equal(read_image(tmp_path / "trailing.jpg"), expected)


def test_real_jpegs_decode_as_pillow_decodes_them():
    """A 5K photograph and a drone frame (the datasets' JPEGs), against Pillow's decoder."""
    from conftest import SHARED

    for path in (SHARED / "datasets" / "photos" / "volna-5120x2880.jpg",
                 sorted((SHARED / "datasets" / "semantic-drone" / "test").rglob("*.jpg"))[0]):
        with Image.open(path) as im:
            np.testing.assert_array_equal(read_image(path), np.asarray(im.convert("RGB")))


def test_larger_than_pillow_bomb_limit(tmp_path):
    """An image twice Pillow's decompression-bomb limit (179 M pixels), which Pillow alone refuses."""
    side = 13500
    assert side * side > 2 * Image.MAX_IMAGE_PIXELS
    Image.new("1", (side, side)).save(tmp_path / "huge.png")
    img = read_image(tmp_path / "huge.png")
    assert img.shape == (side, side, 3)
    assert Image.MAX_IMAGE_PIXELS is not None, "the global limit must be restored"


def test_pixel_limit_is_restored_after_overlapping_reads():
    """Two reads whose blocks overlap (A enters, B enters, A leaves, B leaves, as with the CLI's decode thread):
    the limit stays lifted while either runs and comes back when both have left. A save / restore per read
    left it lifted for good, which made a later test fail on ``2 * Image.MAX_IMAGE_PIXELS``."""
    from uhrseg.io.images import _pillow_without_pixel_limit

    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    a, b = _pillow_without_pixel_limit(), _pillow_without_pixel_limit()
    a.__enter__()
    b.__enter__()
    assert Image.MAX_IMAGE_PIXELS is None
    a.__exit__(None, None, None)
    assert Image.MAX_IMAGE_PIXELS is None, "lifted while B still reads"
    b.__exit__(None, None, None)
    assert Image.MAX_IMAGE_PIXELS == limit


def _png_with_size(width, height):
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_bad_file(tmp_path, kind):
    """Write one kind of bad input; returns its path and the expected message."""
    jpeg = bsds_image_path().read_bytes()
    if kind == "missing":
        return tmp_path / "missing.jpg", "file not found"
    path = tmp_path / {"not-image": "notes.jpg", "corrupt": "corrupt.jpg", "truncated": "truncated.jpg",
                       "empty": "empty.png", "zero-size": "zero.png", "truncated-tiff": "cut.tif",
                       "zero-size-tiff": "zero.tif"}[kind]
    if kind == "not-image":
        path.write_text("these are not pixels\n")
        return path, "not a recognised image"
    if kind == "corrupt":
        path.write_bytes(jpeg[:300] + bytes(4000))
        return path, "corrupt or truncated"
    if kind == "truncated":
        path.write_bytes(jpeg[: len(jpeg) // 2])
        return path, "truncated"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty file"
    if kind == "zero-size":
        path.write_bytes(_png_with_size(0, 10))
        return path, "zero-sized image"
    if kind == "truncated-tiff":
        tifffile.imwrite(tmp_path / "whole.tif", np.zeros((300, 400, 3), np.uint8) + 7)
        data = (tmp_path / "whole.tif").read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "corrupt or truncated TIFF"
    if kind == "zero-size-tiff":
        with pytest.warns(UserWarning):
            tifffile.imwrite(path, np.zeros((0, 10), np.uint8))
        return path, "zero-sized image"
    raise AssertionError(kind)


BAD_KINDS = ["missing", "not-image", "corrupt", "truncated", "empty", "zero-size", "truncated-tiff", "zero-size-tiff"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_a_clear_error(tmp_path, kind):
    path, message = make_bad_file(tmp_path, kind)
    with pytest.raises(ImageReadError, match=message) as info:
        read_image(path)
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)


def test_commit_files_is_all_or_nothing(tmp_path):
    def fail(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="b.png: cannot be written"):
        commit_files({tmp_path / "a.txt": lambda p: p.write_text("ok"), tmp_path / "b.png": fail})
    assert list(tmp_path.iterdir()) == []
    written = commit_files({tmp_path / "a.txt": lambda p: p.write_text("ok")})
    assert written == [tmp_path / "a.txt"] and (tmp_path / "a.txt").read_text() == "ok"
    assert (tmp_path / "a.txt").stat().st_mode & 0o044, "outputs must be readable like normal files"
    # a folder that is gone, and a folder in the way of the final name: the same error, naming the file (they
    # escaped as a bare OSError), and no temporary file left
    with pytest.raises(OutputError, match="gone/c.txt: cannot be written"):
        commit_files({tmp_path / "gone" / "c.txt": lambda p: p.write_text("ok")})
    (tmp_path / "d.txt").mkdir()  # the second of two files: the first is not renamed either
    with pytest.raises(OutputError, match="d.txt: cannot be written"):
        commit_files({tmp_path / name: lambda p: p.write_text("ok") for name in ("e.txt", "d.txt")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "d.txt"]


def test_commit_files_undoes_earlier_renames_when_one_fails(tmp_path):
    # An earlier run's outputs; the second cannot be replaced (immutable: refused even for root), so its rename
    # fails after the first file's succeeded. The folder must then hold the whole old set, nothing hidden beside.
    a, b, c = (tmp_path / name for name in ("a.txt", "b.txt", "c.txt"))
    a.write_text("old a")
    b.write_text("old b")
    if subprocess.run(["chattr", "+i", str(b)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(OutputError, match="b.txt: cannot be written"):
            commit_files({a: lambda p: p.write_text("new a"), c: lambda p: p.write_text("new c"),
                          b: lambda p: p.write_text("new b")})
        assert (a.read_text(), b.read_text()) == ("old a", "old b")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # c.txt, new, removed again
    finally:
        subprocess.run(["chattr", "-i", str(b)], check=True)
    # once it can be replaced: the new set, and the replaced files gone
    assert commit_files({a: lambda p: p.write_text("new a"), b: lambda p: p.write_text("new b")}) == [a, b]
    assert (a.read_text(), b.read_text()) == ("new a", "new b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_output_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        prepare_output_dir(tmp_path / "f")


def test_overlay_marks_boundaries(rgb):
    labels = np.zeros(rgb.shape[:2], np.int32)
    labels[:, 200:] = 1
    out = render_overlay(rgb, labels)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    red = (out == (255, 32, 32)).all(axis=2)
    assert red[:, 199:201].all() and red.sum() == 2 * rgb.shape[0]
    preview = render_overlay(rgb, labels, max_side=100)
    assert max(preview.shape[:2]) == 100


def test_tiff_colour_spaces_and_orientation_read_as_a_viewer_shows_them(rgb, tmp_path):
    """Palette, MinIsWhite, CMYK and rotated TIFFs were read as their raw samples (indices as grey, inverted,
    CMYK as RGBA, the stored orientation) until 2026-12-08: each now gives the RGB a viewer shows (Pillow's
    reading where Pillow reads it), and is decoded whole rather than streamed."""
    from uhrseg.io.sources import ArraySource, open_image

    crop = np.ascontiguousarray(rgb[:120, :200])
    grey = crop[..., 1]
    indices = (crop[..., 0] // 32).astype(np.uint8)  # 8 levels of red through a palette
    colormap = np.zeros((3, 256), np.uint16)
    colormap[0, :8] = np.arange(8) * 9000
    colormap[2, :8] = 65535 - np.arange(8) * 9000
    cmyk = np.concatenate([255 - crop, np.zeros((*crop.shape[:2], 1), np.uint8)], axis=2)  # K = 0: C = 255 - R
    files = {
        "palette.tif": dict(data=indices, photometric="palette", colormap=colormap),
        "white.tif": dict(data=255 - grey, photometric="miniswhite"),
        "cmyk.tif": dict(data=cmyk, photometric="separated"),
        "rotated.tif": dict(data=np.ascontiguousarray(np.rot90(crop, 1)), photometric="rgb",
                            extratags=[(274, "H", 1, 6, True)]),  # stored turned left: shown turned back
    }
    for name, kwargs in files.items():
        tifffile.imwrite(tmp_path / name, **kwargs)
    expected = {
        "palette.tif": colormap.T[indices],  # uint16, as the table is
        "white.tif": np.repeat(grey[..., None], 3, axis=2),
        "cmyk.tif": crop,
        "rotated.tif": crop,
    }
    for name, want in expected.items():
        got = read_image(tmp_path / name)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert isinstance(open_image(tmp_path / name), ArraySource), name  # not streamed as raw samples
    for name in ("white.tif", "cmyk.tif", "rotated.tif"):  # Pillow agrees
        from PIL import ImageOps

        with Image.open(tmp_path / name) as im:
            np.testing.assert_array_equal(read_image(tmp_path / name), np.asarray(ImageOps.exif_transpose(im)
                                                                                 .convert("RGB")), err_msg=name)


def test_tiff_without_pages_is_refused_cleanly(tmp_path):
    """A TIFF cut after its header has no page: a one-line ImageReadError naming the file, from the streamed
    reader too (it raised IndexError before 2026-12-08)."""
    from uhrseg.io.sources import TiffSource, open_image

    path = tmp_path / "header-only.tif"
    path.write_bytes(b"II*\0\0\0\0\0")
    for read in (read_image, open_image, TiffSource):
        with pytest.raises(ImageReadError, match="header-only.tif: corrupt or"):
            read(path)


def test_a_tiff_with_its_thumbnail_first_is_read_at_full_resolution(rgb, tmp_path):
    """Some writers put a reduced-resolution copy (NewSubfileType 1) before the image: the image page is read, in
    memory and streamed (the 32 x 20 thumbnail was segmented before 2026-12-08)."""
    from uhrseg.io.sources import TiffSource, open_image

    path = tmp_path / "thumb-first.tif"
    tifffile.imwrite(path, rgb[::16, ::16], photometric="rgb", subfiletype=1)
    tifffile.imwrite(path, rgb, photometric="rgb", append=True, tile=(64, 64))
    np.testing.assert_array_equal(read_image(path), rgb)
    source = open_image(path)
    assert isinstance(source, TiffSource)
    np.testing.assert_array_equal(source.read_rows(0, rgb.shape[0]), rgb)
