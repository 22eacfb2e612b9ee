"""Datasets for semantic segmentation: images with one class map each, and the class table that names them.

* :class:`ClassTable`: class names, their colours (the palette) and which classes are ignored. It travels with
  the dataset into every checkpoint trained on it, so a model always knows its classes.
* :class:`ColourTableFolder`: ``images/`` + ``labels/`` with colour-coded (or index) label maps and a
  ``class_dict.csv`` (``name, r, g, b``), the layout of the Semantic Drone dataset
  (``../shared/datasets/semantic-drone/{train,more,test}``).
* :class:`DeepGlobe`: the DeepGlobe land-cover layout, ``images/ID_sat.jpg`` + ``masks/ID_mask.png`` with the
  challenge's fixed 7-colour table.

Every dataset has ``names`` (sorted), ``image(name)`` -> ``(H, W, 3)`` uint8 and ``class_map(name)`` ->
``(H, W)`` uint8 class ids, with :data:`IGNORE_INDEX` (255) on pixels of ignored classes.

Ignored classes follow the field's conventions: a class named ``unlabeled``, ``unknown``, ``void`` or
``ignore`` marks pixels without a usable label. It keeps its row in the table (so the palette and the model's
outputs match the dataset's own numbering) but is left out of training losses and of mIoU: DeepGlobe's
``unknown`` (clouds and others) as GLNet, MagNet and ISDNet do, and the Semantic Drone dataset's
``unlabeled`` (0.3 % of its pixels).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..io.images import IMAGE_SUFFIXES, read_image
from .classes import ClassTable, DatasetError, read_class_table

__all__ = ["DEEPGLOBE_CLASSES", "ColourTableFolder", "DeepGlobe", "open_semantic_dataset"]

#: The DeepGlobe land-cover challenge's classes and colours; ``unknown`` (clouds and others) is ignored.
DEEPGLOBE_CLASSES = ClassTable(
    ("urban_land", "agriculture_land", "rangeland", "forest_land", "water", "barren_land", "unknown"),
    ((0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)),
    ignored=(6,),
)


def _read_label_image(path: Path) -> np.ndarray:
    """Label image pixels: RGB for colour-coded files, ids for palette/gray/16-bit ones."""
    if not path.is_file():
        raise DatasetError(f"{path}: label map not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L", "I;16", "I"):
                return np.asarray(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: label map cannot be read ({type(e).__name__}: {e})".splitlines()[0]) from e


class _SemanticDataset:
    """Shared parts: ``names``, image and class-map reading with size checks."""

    class_table: ClassTable
    names: list[str]
    _images: dict[str, Path]
    _labels: dict[str, Path]

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, images={len(self)}, classes={self.class_table.n_classes})"

    @property
    def label(self) -> str:
        """How reports name the dataset."""
        return str(self.root)

    def image_path(self, name: str) -> Path:
        return self._images[name]

    def label_path(self, name: str) -> Path:
        return self._labels[name]

    def image(self, name: str) -> np.ndarray:
        """``(H, W, 3)`` RGB image (uint8 for JPEG and 8-bit PNG)."""
        return read_image(self._images[name])

    def class_map(self, name: str) -> np.ndarray:
        """``(H, W)`` uint8 class ids, :data:`IGNORE_INDEX` on ignored pixels.

        Raises
        ------
        DatasetError
            If the label map is unreadable, has a colour or id outside the class table, or its size differs
            from the image's.
        """
        path = self._labels[name]
        ids = self.class_table.decode(_read_label_image(path), path)
        with Image.open(self._images[name]) as im:
            size = im.size
        if ids.shape != (size[1], size[0]):
            raise DatasetError(f"{path}: label map is {ids.shape[1]} x {ids.shape[0]}, its image "
                               f"{self._images[name].name} is {size[0]} x {size[1]}")
        return ids

    def ground_truths(self, name: str) -> list[np.ndarray]:
        """The class map as the one ground-truth segmentation of the superpixel metrics.

        Returns
        -------
        list of one (H, W) ndarray of int32
            Class ids, :data:`IGNORE_INDEX` (255) on ignored pixels, which count as one more segment (as a
            :class:`uhrseg.datasets.LabelledFolder`'s unlabelled class does). BR, BP and ASA then measure
            adherence to the boundaries between classes.
        """
        return [self.class_map(name).astype(np.int32)]


class ColourTableFolder(_SemanticDataset):
    """``root/images/NAME.*`` with ``root/labels/NAME.*`` and a ``class_dict.csv`` colour table.

    Parameters
    ----------
    root : path-like
        Folder holding ``images/`` and ``labels/`` (label maps are colour-coded RGB, or palette / gray PNGs
        holding class ids).
    class_table : path-like or ClassTable, optional
        The table; by default ``root/class_dict.csv`` or ``root/../class_dict.csv`` (the Semantic Drone
        layout: one table beside ``train/``, ``more/``, ``test/``).

    Raises
    ------
    DatasetError
        If a folder is missing or empty, an image has no label map, or no class table is found.
    """

    def __init__(self, root: str | os.PathLike, class_table: str | os.PathLike | ClassTable | None = None) -> None:
        self.root = Path(root)
        image_dir, label_dir = self.root / "images", self.root / "labels"
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: folder not found (expected images/ and labels/ side by side)")
        self._images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        self._labels = {p.stem: p for p in sorted(label_dir.iterdir()) if p.suffix.lower() in (".png", ".tif",
                                                                                                 ".tiff", ".bmp")}
        if not self._images:
            raise DatasetError(f"{image_dir}: no images")
        missing = sorted(set(self._images) - set(self._labels))
        if missing:
            raise DatasetError(f"{label_dir}: no label map for image {self._images[missing[0]].name} "
                               f"({len(missing)} images without one)")
        self.names = sorted(self._images)
        if class_table is None:
            for candidate in (self.root / "class_dict.csv", self.root.parent / "class_dict.csv"):
                if candidate.is_file():
                    class_table = candidate
                    break
            else:
                raise DatasetError(f"{self.root}: no class_dict.csv (name, r, g, b) here or in the parent folder")
        self.class_table = class_table if isinstance(class_table, ClassTable) else read_class_table(class_table)


class DeepGlobe(_SemanticDataset):
    """The DeepGlobe land-cover layout: ``root/images/ID_sat.jpg`` and ``root/masks/ID_mask.png``.

    Parameters
    ----------
    root : path-like
        A split folder (``../shared/datasets/deepglobe/train`` or ``test``).

    Raises
    ------
    DatasetError
        If the folders are missing or empty, or an image has no mask.

    References
    ----------
    Demir et al., "DeepGlobe 2018: A Challenge to Parse the Earth through Satellite Images", CVPRW 2018.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        image_dir, mask_dir = self.root / "images", self.root / "masks"
        for folder in (image_dir, mask_dir):
            if not folder.is_dir():
                raise DatasetError(f"{folder}: folder not found (DeepGlobe layout: images/ID_sat.jpg and "
                                   "masks/ID_mask.png)")
        self._images = {p.name[: -len("_sat.jpg")]: p for p in sorted(image_dir.glob("*_sat.jpg"))}
        if not self._images:
            raise DatasetError(f"{image_dir}: no ID_sat.jpg images")
        self._labels = {n: mask_dir / f"{n}_mask.png" for n in self._images}
        missing = sorted(n for n, p in self._labels.items() if not p.is_file())
        if missing:
            raise DatasetError(f"{self._labels[missing[0]]}: mask missing ({len(missing)} images without one)")
        self.names = sorted(self._images)
        self.class_table = DEEPGLOBE_CLASSES


def open_semantic_dataset(spec: str | os.PathLike) -> ColourTableFolder | DeepGlobe:
    """Open a labelled folder, recognising its layout.

    Parameters
    ----------
    spec : path-like
        A folder with ``images/`` + ``masks/`` (DeepGlobe) or ``images/`` + ``labels/`` + a ``class_dict.csv``
        here or one level up (Semantic Drone and any dataset in that layout).

    Raises
    ------
    DatasetError
        If the folder does not exist or matches neither layout.
    """
    root = Path(spec)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if (root / "masks").is_dir() and (root / "images").is_dir():
        return DeepGlobe(root)
    if (root / "labels").is_dir() or (root / "images").is_dir():
        return ColourTableFolder(root)
    raise DatasetError(f"{root}: not a labelled dataset (expected images/ with labels/ and class_dict.csv, or "
                       "images/ with masks/ as DeepGlobe)")
