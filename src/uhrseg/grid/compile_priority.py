"""OpenCV makes room for numba's compiler: the first run after an install compiles the pipeline's kernels on the
critical path, while the network would keep every core busy.

This module imports numba (its event API, ``numba.core.event``), so it is imported only by the kernel warm-up
thread (:mod:`uhrseg.grid.warmup`), after numba.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
from numba.core import event

__all__ = ["OpenCVYieldsToCompiler", "opencv_yields_to_compiler"]


class OpenCVYieldsToCompiler(event.Listener):
    """A numba event listener (kind ``"numba:compile"``) that runs OpenCV on one thread fewer while numba
    compiles.

    numba sends ``"numba:compile"`` only when it finds no machine code in its cache: in a process's first run
    after an install, or after the source changed. Its compiler runs on one core, and the refinement waits for
    it, so it sits on the pipeline's critical path. Meanwhile the network (OpenCV's DNN module) would keep every
    core busy, and on the 2-core CPU the compiler got only 2/3 of a core. With OpenCV on one thread fewer (1 of
    2), the README demo's first run took 2.91 against 3.27 s (medians of 4, interleaved, 2026-12-07). Later runs
    load the kernels from the cache and never see the event, so they keep every core.

    ``cv2.setNumThreads`` is process-wide: for those seconds, OpenCV calls in other threads of the process also
    run on one thread fewer. The count is restored when the outermost compilation ends (or by :meth:`release`),
    unless something else has changed it in the meantime. numba compiles under one process-wide lock and sends
    the events inside it, so the events of any thread arrive as nested start / end pairs, and one depth count
    serves them all (the refinement's first pass compiles its sums kernel in a pool thread); an end without its
    start (a compilation already running when the listener was registered) is ignored. Where OpenCV already
    runs on one thread, the listener does nothing.

    numba's listeners are process-wide, and two of these registered at once would each lower the count, so
    register it through :func:`opencv_yields_to_compiler`, which keeps one per process.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.saved: tuple[int, int] | None = None  # (OpenCV's count before, the count set)

    def on_start(self, ev: event.Event) -> None:
        """A compilation starts: the outermost one lowers OpenCV's thread count by one."""
        self.depth += 1
        threads = cv2.getNumThreads()
        if self.depth == 1 and threads > 1:
            cv2.setNumThreads(threads - 1)
            self.saved = (threads, threads - 1)

    def on_end(self, ev: event.Event) -> None:
        """A compilation ends (also when it failed): the outermost one restores the count it lowered."""
        if self.depth == 0:  # its start came before the listener was registered
            return
        self.depth -= 1
        if self.depth == 0:
            self.release()

    def release(self) -> None:
        """Put back the count this listener lowered, if it still stands (a no-op otherwise)."""
        if self.saved is not None:
            before, set_to = self.saved
            self.saved = None
            if cv2.getNumThreads() == set_to:
                cv2.setNumThreads(before)


_lock = threading.Lock()
_users = 0
_listener: OpenCVYieldsToCompiler | None = None


@contextmanager
def opencv_yields_to_compiler() -> Iterator[None]:
    """Within the block, OpenCV runs on one thread fewer while numba compiles (:class:`OpenCVYieldsToCompiler`).

    One listener serves every block open at the same time in the process (two warm-ups of two predictors, say):
    it is registered when the first block opens and unregistered, its count restored, when the last one closes.
    """
    global _users, _listener
    with _lock:
        if _users == 0:
            _listener = OpenCVYieldsToCompiler()
            event.register("numba:compile", _listener)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _listener is not None:
                event.unregister("numba:compile", _listener)
                _listener.release()
                _listener = None
