"""How many threads the pipeline's parallel steps use, and bands of rows spread over them."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["for_each_band", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the platform has one (Linux), else the machine's
    count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def for_each_band(height: int, rows: int, threads: int, work: Callable[[int, int], None], name: str = "uhrseg") -> None:
    """Call ``work(y0, y1)`` for the bands ``[0, rows)``, ``[rows, 2 rows)``, ... of ``height`` rows: in this
    thread when ``threads`` is 1, else in a pool of ``threads`` threads named ``name`` (for work that releases the
    GIL, as numpy's and OpenCV's array operations do, on disjoint bands). An exception in ``work`` is raised
    here."""
    starts = range(0, height, rows)
    if threads <= 1:
        for y0 in starts:
            work(y0, min(height, y0 + rows))
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        list(pool.map(lambda y0: work(y0, min(height, y0 + rows)), starts))
