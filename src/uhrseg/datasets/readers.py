"""Datasets of images with ground-truth segmentations, shared by evaluation and training.

* :class:`BSDS500`: the official Berkeley layout, ``images/{train,val,test}/*.jpg`` and
  ``groundTruth/{split}/*.mat`` holding several human segmentations per image.
* :class:`LabelledFolder`: high-resolution data as ``images/`` + ``labels/`` with matching file stems; labels are
  index maps (PNG/TIFF/NPY) or colour-coded RGB with a colour table such as the Semantic Drone dataset's
  ``class_dict.csv``.
* :func:`read_label_map`: one label map produced elsewhere (``.png``, ``.tif``, ``.npy`` or the Stutz
  benchmark's ``.csv``).

Every dataset has ``names`` (sorted stems), ``image(name)`` -> ``(H, W, 3)`` array and
``ground_truths(name)`` -> list of ``(H, W)`` int32 maps.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..io.images import IMAGE_SUFFIXES, read_image
from .classes import DatasetError, decode_colours, read_class_table
from .semantic import DeepGlobe

__all__ = ["BSDS500", "DatasetError", "LabelledFolder", "open_dataset", "read_colour_table", "read_label_map"]

LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".csv")


class BSDS500:
    """The Berkeley Segmentation Data Set 500 in its official layout.

    Parameters
    ----------
    root : path-like
        Folder holding ``images/`` and ``groundTruth/``.
    split : str
        ``"train"``, ``"val"`` or ``"test"`` (default; 200 / 100 / 200 images).

    Raises
    ------
    DatasetError
        If the split is none of the three, its folders are missing or empty, or an image has no ``.mat`` ground
        truth.

    References
    ----------
    Arbelaez, Maire, Fowlkes, Malik, "Contour Detection and Hierarchical Image Segmentation", TPAMI 2011.
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, root: str | os.PathLike, split: str = "test") -> None:
        if split not in self.SPLITS:
            raise DatasetError(f"unknown BSDS500 split {split!r}; choose one of {self.SPLITS}")
        self.root = Path(root)
        self.split = split
        self.image_dir = self.root / "images" / split
        self.gt_dir = self.root / "groundTruth" / split
        for folder in (self.image_dir, self.gt_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: BSDS500 folder not found (expected the official layout "
                                   "images/{train,val,test} and groundTruth/{train,val,test})")
        self.names = sorted(p.stem for p in self.image_dir.glob("*.jpg"))
        if not self.names:
            raise DatasetError(f"{self.image_dir}: no .jpg images")
        missing = [n for n in self.names if not (self.gt_dir / f"{n}.mat").is_file()]
        if missing:
            raise DatasetError(f"{self.gt_dir / (missing[0] + '.mat')}: ground truth missing "
                               f"({len(missing)} images without one)")

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"BSDS500(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"

    @property
    def label(self) -> str:
        return f"bsds500:{self.split}"

    def image_path(self, name: str) -> Path:
        return self.image_dir / f"{name}.jpg"

    def image(self, name: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB image."""
        return read_image(self.image_path(name))

    def ground_truths(self, name: str) -> list[np.ndarray]:
        """All human segmentations of an image: list of ``(H, W)`` int32 maps (labels as stored, from 1).

        Raises
        ------
        DatasetError
            If the ``.mat`` file is unreadable or lacks the ``groundTruth`` cell array.
        """
        path = self.gt_dir / f"{name}.mat"
        import scipy.io  # here: it takes 0.1 s to import, and only BSDS500's .mat files need it

        try:
            cells = scipy.io.loadmat(path)["groundTruth"][0]
            return [np.ascontiguousarray(c["Segmentation"][0, 0], dtype=np.int32) for c in cells]
        except Exception as e:  # scipy raises MatReadError, ValueError, KeyError, ... for bad files
            raise DatasetError(f"{path}: not a BSDS500 ground-truth file ({type(e).__name__}: {e})") from e


def read_colour_table(path: str | os.PathLike) -> dict[tuple[int, int, int], int]:
    """Read a ``name, r, g, b`` CSV (header row first) into ``{(r, g, b): class index}`` in file order.

    Raises
    ------
    DatasetError
        If the file is missing, a row is malformed or two rows share a colour.
    """
    return {c: i for i, c in enumerate(read_class_table(path).colours)}


def read_label_map(path: str | os.PathLike, colour_table: dict[tuple[int, int, int], int] | None = None,
                   ) -> np.ndarray:
    """Read a label map written by uhrseg or another tool.

    Parameters
    ----------
    path : path-like
        ``.png`` or ``.tif`` (index image; 8, 16 or 32 bit), ``.npy``, or ``.csv`` (the Stutz benchmark's
        comma-separated rows of integer labels).
    colour_table : dict, optional
        For colour-coded RGB labels: ``{(r, g, b): index}`` (see :func:`read_colour_table`).

    Returns
    -------
    (H, W) ndarray of int32

    Raises
    ------
    DatasetError
        Missing or unreadable file, unsupported suffix or layout, or a colour missing from the table.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DatasetError(f"{path}: label map not found")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            arr = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
        elif suffix in (".tif", ".tiff"):
            arr = tifffile.imread(path)
        elif suffix == ".png":
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB") if im.mode == "P" and colour_table else im)
        else:
            raise DatasetError(f"{path}: unsupported label map type (use {', '.join(LABEL_SUFFIXES)})")
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"{path}: label map cannot be read ({type(e).__name__}: {e})".splitlines()[0]) from e
    if colour_table is not None and arr.ndim == 3 and arr.shape[2] >= 3:
        arr = decode_colours(arr[:, :, :3], colour_table, path)
    if arr.ndim != 2 or arr.size == 0:
        raise DatasetError(f"{path}: a label map must be a non-empty (H, W) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.float64)  # compared with the int32 range below, then converted
        else:
            raise DatasetError(f"{path}: label map holds non-integer values ({arr.dtype})")
    if not np.can_cast(arr.dtype, np.int32) and (arr.min() < np.iinfo(np.int32).min
                                                   or arr.max() > np.iinfo(np.int32).max):
        # astype would wrap them around (2**32 + 2 became 2)
        raise DatasetError(f"{path}: label values {arr.min()} .. {arr.max()} do not fit in int32")
    return arr.astype(np.int32, copy=False)


class LabelledFolder:
    """High-resolution images with one label map each: ``root/images/NAME.*`` and ``root/labels/NAME.*``.

    Parameters
    ----------
    root : path-like
        Folder holding ``images/`` and ``labels/``.
    colour_table : path-like, optional
        ``name, r, g, b`` CSV for colour-coded labels; by default ``root/class_dict.csv`` or
        ``root/../class_dict.csv`` when present (the Semantic Drone layout), else labels are index maps.
    ignore_value : int, optional
        Label value that marks unlabelled pixels (kept in the map; callers decide how to treat it).

    Raises
    ------
    DatasetError
        If a folder is missing or empty, or an image has no label map.
    """

    def __init__(self, root: str | os.PathLike, colour_table: str | os.PathLike | None = None,
                 ignore_value: int | None = None) -> None:
        self.root = Path(root)
        self.image_dir, self.label_dir = self.root / "images", self.root / "labels"
        for folder in (self.image_dir, self.label_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: folder not found (expected images/ and labels/ side by side)")
        self._images = {p.stem: p for p in sorted(self.image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        labels = {p.stem: p for p in sorted(self.label_dir.iterdir()) if p.suffix.lower() in LABEL_SUFFIXES}
        if not self._images:
            raise DatasetError(f"{self.image_dir}: no images")
        missing = sorted(set(self._images) - set(labels))
        if missing:
            raise DatasetError(f"{self.label_dir}: no label map for image {self._images[missing[0]].name} "
                               f"({len(missing)} images without one)")
        self._labels = labels
        self.names = sorted(self._images)
        if colour_table is None:
            for candidate in (self.root / "class_dict.csv", self.root.parent / "class_dict.csv"):
                if candidate.is_file():
                    colour_table = candidate
                    break
        self.colour_table = read_colour_table(colour_table) if colour_table is not None else None
        self.ignore_value = ignore_value

    def __len__(self) -> int:
        return len(self.names)

    @property
    def label(self) -> str:
        return str(self.root)

    def image_path(self, name: str) -> Path:
        return self._images[name]

    def image(self, name: str) -> np.ndarray:
        return read_image(self._images[name])

    def ground_truths(self, name: str) -> list[np.ndarray]:
        """The image's one label map, as a one-element list of ``(H, W)`` int32."""
        return [read_label_map(self._labels[name], self.colour_table)]


def open_dataset(spec: str, bsds500_root: str | os.PathLike | None = None):
    """Open a dataset from a command-line spec.

    Parameters
    ----------
    spec : str
        ``bsds500:SPLIT`` (root from ``bsds500_root``), a folder with ``images/`` and ``labels/``
        (:class:`LabelledFolder`), or a DeepGlobe split with ``images/ID_sat.jpg`` and ``masks/ID_mask.png``
        (:class:`uhrseg.datasets.DeepGlobe`, its class map as the ground truth).
    bsds500_root : path-like, optional
        Where the BSDS500 official layout lives.

    Raises
    ------
    DatasetError
        Unknown spec, or the dataset cannot be opened.
    """
    if spec.lower().startswith("bsds500"):
        _, _, split = spec.partition(":")
        if bsds500_root is None:
            raise DatasetError("bsds500 needs its root folder (--bsds500-root DIR)")
        return BSDS500(bsds500_root, split or "test")
    root = Path(spec)
    if (root / "masks").is_dir() and (root / "images").is_dir():
        return DeepGlobe(root)
    if root.is_dir():
        return LabelledFolder(root)
    raise DatasetError(f"{spec}: not a dataset (use bsds500:SPLIT, a folder with images/ and labels/, or a "
                       "DeepGlobe split with images/ and masks/)")
