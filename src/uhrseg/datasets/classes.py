"""Class tables: the names, colours and ignored classes of a semantic-segmentation task.

A :class:`ClassTable` travels with its dataset into every checkpoint trained on it, so a model always knows its
classes. Ignored classes follow the field's conventions: a class named ``unlabeled``, ``unknown``, ``void`` or
``ignore`` marks pixels without a usable label. It keeps its row in the table (so the palette and the model's
outputs match the dataset's own numbering) but is left out of training losses and of mIoU.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UhrsegError

__all__ = ["IGNORE_INDEX", "IGNORED_CLASS_NAMES", "ClassTable", "DatasetError", "decode_colours",
           "read_class_table"]


class DatasetError(UhrsegError, ValueError):
    """A dataset folder is missing, incomplete or inconsistent (the message names the file)."""


def decode_colours(rgb: np.ndarray, table: dict[tuple[int, int, int], int], path: str | os.PathLike) -> np.ndarray:
    """Map colour-coded labels to ids.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8
        Colour-coded label image.
    table : dict of (r, g, b) to int
        Colour -> id.
    path : path-like
        Named in errors.

    Returns
    -------
    (H, W) ndarray of int32

    Raises
    ------
    DatasetError
        If a colour is not in the table (the message gives the first such colour and its pixel).
    """
    codes = (rgb[:, :, 0].astype(np.int64) << 16) | (rgb[:, :, 1].astype(np.int64) << 8) | rgb[:, :, 2]
    keys = np.array([(r << 16) | (g << 8) | b for (r, g, b) in table], dtype=np.int64)
    values = np.array(list(table.values()), dtype=np.int32)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    pos = np.clip(np.searchsorted(keys, codes), 0, keys.size - 1)
    unknown = keys[pos] != codes
    if unknown.any():
        y, x = np.argwhere(unknown)[0]
        raise DatasetError(f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at pixel ({x}, {y}) is not in "
                           "the colour table")
    return values[pos]


#: Class id of pixels that no loss or metric counts.
IGNORE_INDEX = 255
#: Class names that mark unlabelled pixels (case-insensitive).
IGNORED_CLASS_NAMES = ("unlabeled", "unlabelled", "unknown", "void", "ignore")


@dataclass(frozen=True)
class ClassTable:
    """Names, colours and ignored classes of a segmentation task.

    Attributes
    ----------
    names : tuple of str
        Class names; class id ``i`` is ``names[i]``.
    colours : tuple of (int, int, int)
        RGB colour of each class (the palette of class-map PNGs and the colour of colour-coded labels).
    ignored : tuple of int
        Class ids excluded from the training loss and from mIoU (their pixels become :data:`IGNORE_INDEX`).

    Raises
    ------
    ValueError
        If names and colours differ in length, there are no classes or more than 255, a colour is repeated
        or out of 0..255, or an ignored id is out of range.
    """

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    ignored: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "colours", tuple(tuple(int(v) for v in c) for c in self.colours))
        object.__setattr__(self, "ignored", tuple(sorted(int(i) for i in self.ignored)))
        if not self.names or len(self.names) != len(self.colours):
            raise ValueError(f"a class table needs one colour per class, got {len(self.names)} names and "
                             f"{len(self.colours)} colours")
        if len(self.names) > IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes fit in a uint8 class map, got {len(self.names)}")
        if any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in self.colours):
            raise ValueError("class colours must be (r, g, b) triples in 0..255")
        if len(set(self.colours)) != len(self.colours):
            raise ValueError("two classes share a colour")
        if any(not 0 <= i < len(self.names) for i in self.ignored):
            raise ValueError(f"ignored class ids {self.ignored} out of range for {len(self.names)} classes")

    @property
    def n_classes(self) -> int:
        """Number of classes (the model's output channels), ignored classes included."""
        return len(self.names)

    @property
    def evaluated(self) -> tuple[int, ...]:
        """Class ids that count in mIoU (all but :attr:`ignored`)."""
        return tuple(i for i in range(self.n_classes) if i not in self.ignored)

    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 palette: class colours, then black; :data:`IGNORE_INDEX` is black."""
        out = np.zeros((256, 3), np.uint8)
        out[: self.n_classes] = np.array(self.colours, np.uint8)
        return out

    def to_dict(self) -> dict:
        """Plain-Python form stored in checkpoints."""
        return {"names": list(self.names), "colours": [list(c) for c in self.colours], "ignored": list(self.ignored)}

    @classmethod
    def from_dict(cls, d: dict) -> ClassTable:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["names"]), tuple(tuple(c) for c in d["colours"]), tuple(d.get("ignored", ())))

    def with_ignored_by_name(self) -> ClassTable:
        """The same table with every class named in :data:`IGNORED_CLASS_NAMES` ignored."""
        ignored = [i for i, n in enumerate(self.names) if n.strip().lower() in IGNORED_CLASS_NAMES]
        return ClassTable(self.names, self.colours, tuple(sorted(set(self.ignored) | set(ignored))))

    def decode(self, label: np.ndarray, path: str | os.PathLike = "<array>") -> np.ndarray:
        """Turn a label image into a class map.

        Parameters
        ----------
        label : (H, W, 3) or (H, W) ndarray
            Colour-coded RGB labels (every colour must be in the table) or class ids ``0 .. n_classes - 1``
            (255 allowed as "ignore").
        path : path-like
            Named in errors.

        Returns
        -------
        (H, W) ndarray of uint8
            Class ids, :data:`IGNORE_INDEX` on pixels of ignored classes.

        Raises
        ------
        DatasetError
            If a colour is not in the table (the message gives the colour and the pixel) or an id is out of range.
        """
        if label.ndim == 3:
            table = {c: i for i, c in enumerate(self.colours)}
            ids = decode_colours(label[:, :, :3], table, path).astype(np.uint8)
        elif label.ndim == 2:
            ids = np.asarray(label)
            bad = (ids >= self.n_classes) & (ids != IGNORE_INDEX)
            if bad.any():
                y, x = np.argwhere(bad)[0]
                raise DatasetError(f"{path}: class id {int(ids[y, x])} at pixel ({x}, {y}) is not in the "
                                   f"{self.n_classes}-class table")
            ids = ids.astype(np.uint8)
        else:
            raise DatasetError(f"{path}: a label image must be (H, W) or (H, W, 3), got shape {label.shape}")
        if self.ignored:
            lut = np.arange(256, dtype=np.uint8)
            lut[list(self.ignored)] = IGNORE_INDEX
            ids = lut[ids]
        return ids


def read_class_table(path: str | os.PathLike) -> ClassTable:
    """Read a ``name, r, g, b`` CSV (header row first) into a :class:`ClassTable`, class ids in file order.

    Classes named ``unlabeled``, ``unknown``, ``void`` or ``ignore`` are ignored (see the module notes).

    Raises
    ------
    DatasetError
        If the file is missing or a row is malformed, or the table is invalid (repeated colour, no rows).
    """
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DatasetError(f"{path}: class table cannot be read ({e.strerror})") from e
    except UnicodeDecodeError as e:  # an image given for the CSV, say
        raise DatasetError(f"{path}: class table is not a text CSV (name,r,g,b rows)") from e
    names, colours = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            colours.append(tuple(int(v) for v in row[1:4]))
            if len(colours[-1]) != 3:
                raise ValueError
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{line}: expected 'name, r, g, b', got {row}") from None
        names.append(row[0].strip())
    try:
        return ClassTable(tuple(names), tuple(colours)).with_ignored_by_name()
    except ValueError as e:
        raise DatasetError(f"{path}: {e}") from None
