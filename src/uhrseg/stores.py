"""Row stores: 2-D or 3-D arrays read and written in bands of rows, in memory or in a file on disk.

Large label maps and colour images do not have to sit in memory whole: the inference pipeline
(:mod:`uhrseg.inference`) and the boundary refinement (:func:`uhrseg.grid.refine_store`) walk over them in
horizontal bands of rows. :class:`ArrayStore` keeps the array in memory (reads are views, so code written for
bands runs at full speed on small images); :class:`FileStore` keeps it in a raw file and holds only the band
being worked on, so the process's resident memory does not grow with the image.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

__all__ = ["ArrayStore", "FileStore", "rows_of"]


def rows_of(rows, y0: int, y1: int) -> np.ndarray:
    """Rows ``[y0, y1)`` of an in-memory array (a view) or of a row store (its :meth:`read`: a view for an
    :class:`ArrayStore`, a new array for a :class:`FileStore`), for code that takes either."""
    return rows[y0:y1] if isinstance(rows, np.ndarray) else rows.read(y0, y1)


class ArrayStore:
    """A row store over an in-memory array.

    Parameters
    ----------
    array : (H, W, ...) ndarray
        The data; :meth:`read` returns views into it, so writing into a band writes into the array.
    """

    def __init__(self, array: np.ndarray) -> None:
        self._array: np.ndarray | None = array
        self._shape, self._dtype = tuple(array.shape), array.dtype
        self._allocating = threading.Lock()

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype) -> "ArrayStore":
        """A store of a new, uninitialised array (as ``np.empty``) that is allocated when first used.

        A pipeline that makes its output store before it runs a network can then fill it with memory the network
        has freed (already in the process, with :func:`uhrseg.memory.tune_allocator`) instead of pages that are
        faulted in afresh: 0.03 against 0.03-0.16 s to upsample the 5K photograph's labels (59 MB).
        """
        store = cls.__new__(cls)
        store._array, store._shape, store._dtype = None, tuple(int(n) for n in shape), np.dtype(dtype)
        store._allocating = threading.Lock()
        return store

    @property
    def array(self) -> np.ndarray:
        """The whole array (allocated now if it was not yet; once, whichever thread first asks)."""
        if self._array is None:
            with self._allocating:
                if self._array is None:
                    self._array = np.empty(self._shape, self._dtype)
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as a view ``(y1 - y0, W, ...)``."""
        return self.array[y0:y1]

    def write(self, y0: int, rows: np.ndarray) -> None:
        """Store ``rows`` at rows ``y0 ..`` (a no-op when ``rows`` is the view :meth:`read` returned)."""
        target = self.array[y0 : y0 + rows.shape[0]]
        if not np.shares_memory(target, rows):
            target[...] = rows

    def write_block(self, y0: int, x0: int, block: np.ndarray) -> None:
        """Store ``block`` (``(h, w, ...)``) at rows ``y0 ..`` and columns ``x0 ..``."""
        self.array[y0 : y0 + block.shape[0], x0 : x0 + block.shape[1]] = block

    def read_block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` and columns ``[x0, x1)`` as a new array ``(y1 - y0, x1 - x0, ...)``."""
        return self.array[y0:y1, x0:x1].copy()


class FileStore:
    """A row store backed by a raw C-order file (created empty, removed by :meth:`close`).

    Parameters
    ----------
    path : path-like
        File to create; it must not exist.
    shape : tuple of int
        ``(H, W, ...)``.
    dtype : numpy dtype
        Element type.

    Raises
    ------
    FileExistsError
        If ``path`` exists (a store never overwrites a file).
    OSError
        If the file cannot be created or sized (e.g. the disk is full).

    Notes
    -----
    Reads and writes go through the operating system's file cache (``os.pread`` / ``os.pwrite``), not a memory
    map, so the data read are not counted in this process's resident memory once the band is released.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(self._fd, self._row_bytes * self.shape[0])
        except OSError:
            self.close()
            raise

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` as a new array ``(y1 - y0, W, ...)``."""
        y0, y1 = max(0, y0), min(self.shape[0], y1)
        out = np.empty((max(0, y1 - y0),) + self.shape[1:], self.dtype)
        self._pread(y0 * self._row_bytes, out)
        return out

    def _pread(self, offset: int, out: np.ndarray) -> None:
        view = memoryview(out.reshape(-1).view(np.uint8))
        done = 0
        while done < len(view):
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(f"{self.path}: short read")
            done += n

    def _pwrite(self, offset: int, array: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(array, dtype=self.dtype).reshape(-1).view(np.uint8))
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], offset + done)

    def write(self, y0: int, rows: np.ndarray) -> None:
        """Store ``rows`` (``(h, W, ...)``, converted to the store's dtype) at rows ``y0 .. y0 + h``."""
        self._pwrite(y0 * self._row_bytes, rows)

    def write_block(self, y0: int, x0: int, block: np.ndarray) -> None:
        """Store ``block`` (``(h, w, ...)``, converted to the store's dtype) at rows ``y0 ..``, columns ``x0 ..``."""
        if block.shape[1] == self.shape[1]:
            self.write(y0, block)
            return
        pixel = self._row_bytes // self.shape[1]
        for i, row in enumerate(block):
            self._pwrite((y0 + i) * self._row_bytes + x0 * pixel, row)

    def read_block(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` and columns ``[x0, x1)`` as a new array ``(y1 - y0, x1 - x0, ...)`` (one read per
        row when the block is narrower than the store)."""
        if x0 == 0 and x1 >= self.shape[1]:
            return self.read(y0, y1)
        y0, y1 = max(0, y0), min(self.shape[0], y1)
        x0, x1 = max(0, x0), min(self.shape[1], x1)
        pixel = self._row_bytes // self.shape[1]
        out = np.empty((max(0, y1 - y0), max(0, x1 - x0)) + self.shape[2:], self.dtype)
        for i in range(out.shape[0]):
            self._pread((y0 + i) * self._row_bytes + x0 * pixel, out[i])
        return out

    def close(self) -> None:
        """Close and delete the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
