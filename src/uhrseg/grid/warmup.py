"""Load the numba kernels of the superpixel pipeline ahead of their first use, in a background thread.

The first call of any numba kernel in a process pays numba's one-time initialisation (its typing and lowering
registries) and then reads the kernel's machine code from the on-disk cache: about 0.4 s on the 2-core CPU,
measured in a fresh process with a warm cache, against about 5 ms for each further kernel. In the network
pipeline nothing needs a kernel until the connectivity step, so :class:`uhrseg.SuperpixelPredictor` starts
:func:`start_warm_up` before it resizes the image and runs the network (work done in OpenCV and torch, which
release the GIL) and waits for it before the connectivity step (:class:`WarmUp`). The labels do not depend on
it: it only moves when the kernels are loaded. The thread also makes OpenCV's first CIELAB conversion and area
resize, which cost 30-40 ms each in a new process, on a few pixels, before the pipeline reads its first band.

In a process's first run after an install the kernels are compiled instead (about 1.8 s of CPU on the 2-core
CPU, 1.15 s of it the refinement's sweep, ``_refine_rows``). numba's compiler is Python and holds the GIL, so
one process compiles one kernel at a time. On Linux the warm-up therefore compiles the sweep in a forked child
process (:func:`compile_in_child`) while the thread compiles the other two kernels, and loads the sweep from
numba's on-disk cache once the child has written it there: the README demo's first run took 2.44 against 2.80 s
(medians of 8, interleaved with the code before, 2026-12-07; ratio to the second run 2.00x against 2.28x). The
child forks only on a cache miss, while the thread holds numba's compiler lock, and does nothing but compile that
one kernel and leave with ``os._exit``; the thread waits for it at most :data:`CHILD_TIMEOUT` seconds
(:func:`wait_for_child`), and if it fails, or the cache cannot be written, compiles the sweep itself afterwards.
Besides:

- while the child compiles, the other two kernels are compiled :data:`CHILD_NICE` (5) nice levels lower, in a
  short-lived thread of their own (Linux keeps a nice value per thread; the warm-up thread's own priority never
  changes). The child's sweep is what the pipeline waits for last, and the other compilation is shorter, so the
  child and the network get more of the two cores. README demo's first run, interleaved with the code before
  (no lowering), 2026-12-07: 2.34 against 2.54 s (medians of 14; paired differences: mean -0.08 s, 11 of 14
  faster), ratio to the second run 1.88x against 2.01x. Lowering the whole warm-up thread instead (for good,
  including its later work) measured about the same (mean -0.12 to -0.15 s in three batches), and nice 10 and 19
  the same as 5 within the noise;
- OpenCV runs on one thread fewer while numba compiles in this process
  (:func:`uhrseg.grid.compile_priority.opencv_yields_to_compiler`), so that the compiler, which the pipeline will
  wait for, gets a core of its own beside the network (keeping it at one thread fewer until the child had ended
  too made no measurable difference: 2.54 against 2.52 s, medians of 6);
- the refinement's kernels are compiled first and the connectivity kernel last (where no child compiles), and
  the pipeline waits for all of them before its connectivity step. The steps after the connectivity (the
  merge's heap loop) are Python too: run beside the compiler, each waited for the GIL at every turn, and the
  README demo's merge took 0.5-0.7 s instead of 0.05 s. Waiting for the compiler and then running them alone
  costs less (measured in ``benchmarks/README.md``, "The first run after an install").
  With a warm cache all the kernels load within 0.2-0.3 s of numba's import, long before the network ends,
  so the order makes no difference there.

numba's NumPy support (``numba.np.arraymath``) imports ``scipy.linalg.cython_blas`` when it is first imported,
only to choose how its own ``np.correlate`` / ``np.convolve`` take inner products of floats (a BLAS dot product
or a plain loop). With SciPy 1.17 that import pulls in ``numpy.f2py`` and costs 0.16 s of CPU, which on two
cores comes off the network running beside it. None of uhrseg's kernels uses BLAS, so the warm-up imports that
module with SciPy hidden from its own thread (:func:`import_numba_without_scipy`): measured on the 5K
photograph (n = 5000), ``uhrseg superpixels`` took 2.14 against 2.31 s (medians of 6, interleaved with the code
before, 2026-12-06). The effects outside uhrseg: numba-compiled ``np.correlate`` / ``np.convolve`` of floats
in the same process use numba's loop instead of BLAS (the same sums, possibly in another order; a process that
imported ``scipy.linalg`` before numba's first use keeps BLAS, so with another thread importing SciPy at the
same moment either can happen), and numba's check of the installed SciPy's version at its import is skipped.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import threading
import warnings
from importlib.abc import MetaPathFinder

import numpy as np

__all__ = ["CHILD_NICE", "CHILD_TIMEOUT", "WarmUp", "compile_in_child", "import_numba_without_scipy",
           "start_warm_up", "wait_for_child", "warm_up_kernels"]


class _NoScipyInThread(MetaPathFinder):
    """Import finder that refuses SciPy's modules to one thread (and finds nothing for any other import)."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread and (name == "scipy" or name.startswith("scipy.")):
            raise ModuleNotFoundError(f"{name} is not imported by uhrseg's numba warm-up", name=name)
        return None


def import_numba_without_scipy() -> None:
    """Import numba's NumPy support, ``numba.np.arraymath``, without the SciPy import it makes (see the module
    docstring); a no-op when it is already imported.

    Only the calling thread is refused SciPy, and only during this import (a finder at the front of
    ``sys.meta_path``, removed afterwards; the list is replaced, not changed in place, so that imports in other
    threads are not disturbed); other threads import SciPy as usual meanwhile, and a SciPy already imported is
    used (``sys.modules`` is consulted before any finder).
    """
    if "numba.np.arraymath" in sys.modules:
        return
    finder = _NoScipyInThread()
    # New lists rather than insert / remove: an import running in another thread iterates the list it started
    # with, and a removal from that list would make it skip a finder
    sys.meta_path = [finder, *sys.meta_path]
    try:
        importlib.import_module("numba.np.arraymath")
    finally:
        sys.meta_path = [f for f in sys.meta_path if f is not finder]


# Python 3.12+ warns (DeprecationWarning) about any fork of a process that has threads. The one fork this module
# makes runs a single numba compilation in the child (compile_in_child), so that warning is silenced for calls
# from this module only (a filter, rather than warnings.catch_warnings, which is not thread-safe).
warnings.filterwarnings("ignore", category=DeprecationWarning, module=re.escape(__name__))

#: Seconds :func:`wait_for_child` waits for a compiling child before it kills it (the compilation takes 1-3 s).
CHILD_TIMEOUT = 60.0

#: Nice increment (Linux, per thread) of the warm-up's compilation beside a child that compiles the refinement's
#: sweep (``lower_priority`` of :func:`warm_up_kernels`): the child, whose sweep the pipeline waits for last, and
#: the network then get more of the two cores than that shorter compilation.
CHILD_NICE = 5


def _run_lowered(work, increment: int) -> None:
    """Run ``work()`` in a new thread whose nice value is ``increment`` above the caller's, and wait for it
    (Linux keeps a nice value per thread, which cannot be lowered back without privileges: hence a thread of its
    own, which ends with ``work``). Where the priority cannot be changed, ``work`` runs at the usual one. An
    exception of ``work`` is raised again here."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        except (AttributeError, OSError):
            pass
        try:
            work()
        except BaseException as error:  # handed to the caller
            errors.append(error)

    thread = threading.Thread(target=target, name="uhrseg-kernel-warm-up-lowered")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def _in_cache(kernel, args: tuple) -> bool:
    """True if numba's on-disk cache index lists ``kernel`` for ``args`` on this machine (or if that cannot be
    told, e.g. with ``NUMBA_DISABLE_JIT`` or a numba whose cache classes changed: then nothing is forked).

    Called with numba's compiler lock held. It makes numba's one-time target set-up (which a child then inherits)
    and reads the index with the key numba's dispatcher uses (argument types, CPU, bytecode hash); it loads no
    machine code, so a warm run loads the kernel once, where the pipeline calls it."""
    try:
        signature = tuple(kernel.typeof_pyval(a) for a in args)
        context = kernel.targetctx
        context.refresh()
        cache = kernel._cache
        return cache._index_key(signature, context.codegen()) in cache._cache_file._load_index()
    except Exception:
        return True


def compile_in_child(kernel, args: tuple) -> int | None:
    """Fork a child process that compiles the numba ``kernel`` for ``args`` into numba's on-disk cache and exits.

    Only on Linux, and only when the cache lacks that specialisation (a first run after an install, or after
    the kernel's source changed): otherwise returns None and forks nothing. The check and the fork are made while
    the calling thread holds numba's compiler lock, so that no other thread of the process is inside numba's
    compiler or LLVM at that moment; the child calls only ``kernel`` and leaves with ``os._exit`` (no interpreter
    teardown, no stdio flush, no ``atexit`` handler), with status 0 if the call returned (a failure is written to
    standard error in one line). The caller waits for it (:func:`wait_for_child`) before it calls ``kernel``,
    which then loads the machine code from the cache; if the child failed or could not write the cache, that call
    compiles it, as without a child. Two warm-ups that miss the cache at once each fork a child; both write the
    same files (numba replaces them atomically).

    Parameters
    ----------
    kernel : numba dispatcher
        A ``numba.njit(cache=True)`` function.
    args : tuple
        Arguments of the types the caller will use (the kernel must return quickly on them).

    Returns
    -------
    int or None
        The child's process id, or None when nothing was forked (not Linux, a cache hit, or ``os.fork`` failed,
        e.g. for want of memory).
    """
    if not sys.platform.startswith("linux"):
        return None
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        if _in_cache(kernel, args):
            return None
        try:
            pid = os.fork()
        except OSError:
            return None
    if pid == 0:  # pragma: no cover - the child (its coverage is not collected)
        status = 1
        try:
            kernel(*args)
            status = 0
        except BaseException as error:
            name = getattr(getattr(kernel, "py_func", None), "__name__", "a kernel")
            os.write(2, f"uhrseg: compiling {name} in a child process failed ({error!r}); "
                        "the parent compiles it\n".encode(errors="replace"))
        finally:
            os._exit(status)
    return pid


def wait_for_child(pid: int, timeout: float = CHILD_TIMEOUT) -> bool:
    """Wait for the child of :func:`compile_in_child` to end, at most ``timeout`` seconds (then it is killed);
    returns True if it ended with status 0. Never raises for a child that is already gone (e.g. reaped by a
    ``SIGCHLD`` handler of the host program)."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status) == 0
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return False
            time.sleep(0.002)
    except (ChildProcessError, ProcessLookupError):
        return False


def warm_up_kernels(refinement: bool = True, child: bool = True, lower_priority: bool = False) -> bool:
    """Call the refinement and connectivity kernels once on 2 x 2 inputs of the dtypes the pipeline uses, and
    OpenCV's CIELAB conversion and area resize on a few pixels.

    The inputs have the pipeline's dtypes and layouts (int32 cell ids and labels, int64 weights, uint8
    CIELAB, C-contiguous), so the kernels loaded (or compiled, with an empty cache) are the ones the
    pipeline calls. Safe to call from any thread and any number of times (numba serialises compilation).
    While numba compiles, OpenCV runs on one thread fewer (see the module docstring).

    Parameters
    ----------
    refinement : bool
        Also the refinement's kernels (a pipeline without the refinement needs only the connectivity kernel).
    child : bool
        Where the refinement's sweep is not in numba's cache, compile it in a child process
        (:func:`compile_in_child`, Linux only) while this thread compiles the other kernels.
    lower_priority : bool
        While such a child compiles, compile the other kernels in a short-lived thread :data:`CHILD_NICE` nice
        levels lower (Linux), which ends before the child is waited for: the calling thread's own priority never
        changes, and whatever it does afterwards (loading the sweep, or compiling it where the child failed)
        runs at its usual priority. Nothing changes where no child is forked.

    Returns
    -------
    bool
        True if a child process compiled the refinement's sweep.
    """
    import cv2

    from .colour import lab8

    # First, as the pipeline needs them first: OpenCV's first 8-bit CIELAB conversion builds its tables (30 ms)
    # and its first area resize starts its threads (40 ms)
    lab8(np.zeros((1, 1, 3), np.uint8))
    cv2.resize(np.zeros((3, 5, 3), np.float32), (2, 2), interpolation=cv2.INTER_AREA)

    import_numba_without_scipy()
    from ..stores import ArrayStore
    from .compile_priority import opencv_yields_to_compiler
    from .connectivity import enforce_connectivity
    from .refine import _add_sums, _refine_rows, _sweep_arguments, refine_store

    labels = np.array([[0, 0], [1, 1]], np.int32)  # two 4-connected superpixels
    lab = np.zeros((2, 2, 3), np.uint8)
    pid = compile_in_child(_refine_rows, _sweep_arguments(lab, labels)) if refinement and child else None

    def beside_child() -> None:  # this process's share while the child compiles: the sums, then connectivity
        _add_sums(lab, labels, np.zeros((2, 6)), 0)
        enforce_connectivity(labels, 1, 4, np.ones(2, np.int64), np.ones(2, np.int64))

    with opencv_yields_to_compiler():
        if pid is not None:
            try:
                if lower_priority:  # in a thread of its own, lowered for its short life only
                    _run_lowered(beside_child, CHILD_NICE)
                else:
                    beside_child()
            finally:
                wait_for_child(pid)  # reaped whatever happened here
        if refinement:
            refine_store(ArrayStore(lab), ArrayStore(labels), 2, 1)
        enforce_connectivity(labels, 1, 4, np.ones(2, np.int64), np.ones(2, np.int64))
    return pid is not None


class WarmUp:
    """:func:`warm_up_kernels` running in a background thread (:func:`start_warm_up`), joined at interpreter exit.

    :meth:`join` waits until every kernel is ready. An exception in the thread ends the wait and is left for the
    real call to raise. After :meth:`join`, :attr:`compiled_in_child` says whether a child process compiled the
    refinement's sweep (a cache miss on Linux with ``child``; :func:`warm_up_kernels`).
    """

    def __init__(self, refinement: bool = True, child: bool = True) -> None:
        self.compiled_in_child = False

        def target() -> None:
            try:
                self.compiled_in_child = warm_up_kernels(refinement, child, lower_priority=True)
            except Exception:  # pragma: no cover - the real call raises the same error where it can be handled
                pass

        # Not a daemon: the interpreter joins it before it shuts down. A daemon thread still inside numba's
        # compiler or OpenCV's first resize when the process ends made the C++ runtime abort ("terminate called
        # without an active exception", exit status 134) in any script that exited right after making a
        # predictor. The commands end with os._exit and do not wait.
        self._thread = threading.Thread(target=target, name="uhrseg-kernel-warm-up", daemon=False)
        self._thread.start()

    def join(self) -> None:
        """Wait until the warm-up has ended."""
        self._thread.join()


def start_warm_up(refinement: bool = True, child: bool = True) -> WarmUp:
    """Start :func:`warm_up_kernels` (``refinement``: also the refinement's kernels; ``child``: compile the
    refinement's sweep in a child process on a cache miss) in a new thread (:class:`WarmUp`)."""
    return WarmUp(refinement, child)
