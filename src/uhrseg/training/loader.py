"""Training batches drawn ahead of the training step in worker processes.

On a GPU the superpixel network's step takes a few milliseconds, while drawing one batch of the paper's recipe
(8 global samples resized to 768 and cropped to 512, 8 full-resolution DPC patches of 512, boundary bands and
L_D windows) takes about 0.3 s of one CPU core: drawn in the training process, the sampler would set the pace.
:class:`BatchLoader` draws them in ``workers`` processes, at most ``ahead`` batches in advance.

The batch of step ``t`` is drawn by a sampler whose generator is ``numpy.random.default_rng([seed, t])``, so the
stream depends on neither the number of workers nor on where a run was resumed: a run stopped at step ``t`` and
started again reads the same batches from ``t`` on, with no generator state to save. (The in-process sampler of
``workers = 0`` keeps one generator for the whole run instead, saved in ``last.pt``; the two streams differ.)
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BatchLoader", "draw_at"]


def draw_at(sampler, draw: Callable[[Any], Any], seed: int, step: int) -> Any:
    """The batch of ``step``: ``draw(sampler)`` with the sampler's generator reseeded to ``[seed, step]``.

    Parameters
    ----------
    sampler : object with an ``rng`` attribute
        E.g. :class:`uhrseg.training.TrainingSampler`; its ``rng`` is replaced.
    draw : callable
        ``sampler -> batch`` (NumPy arrays, e.g. ``lambda s: s.batch_arrays(8)``; picklable for workers).
    seed, step : int
        The run's seed and the step (0-based) the batch is for.
    """
    sampler.rng = np.random.default_rng([int(seed), int(step)])
    return draw(sampler)


def _worker_main(make_sampler: Callable[[], Any], draw: Callable[[Any], Any], seed: int, first_step: int,
                 stride: int, out: "multiprocessing.Queue") -> None:
    """A worker process: batches of steps ``first_step, first_step + stride, ...`` into ``out`` (bounded, so it
    blocks when it is far enough ahead) until it is terminated; an error goes to ``out`` as its traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the training process, which stops the workers
    try:
        sampler = make_sampler()
        step = first_step
        while True:
            out.put((step, draw_at(sampler, draw, seed, step)))
            step += stride
    except Exception:
        out.put((None, traceback.format_exc()))


class BatchLoader:
    """Batches for steps ``start_step, start_step + 1, ...`` drawn in worker processes, returned in step order.

    Worker ``w`` of ``W`` draws the steps ``start_step + w + k W`` into its own bounded queue, so the order is
    fixed and no worker runs more than ``ceil(ahead / W)`` batches ahead.

    Parameters
    ----------
    make_sampler : callable
        ``() -> sampler``, run once in every worker (picklable: a module-level function or a
        ``functools.partial`` of one; workers are started with "spawn", as the benchmark runner's are, because
        forked children of a process that has used torch's thread pool can deadlock).
    draw : callable
        ``sampler -> batch`` of picklable arrays (see :func:`draw_at`).
    seed : int
        The run's seed.
    start_step : int
        The step of the first batch (the step a resumed run starts from).
    workers : int
        Worker processes, >= 1.
    ahead : int, optional
        Batches drawn in advance (default ``2 * workers``); each holds its arrays in memory until it is used
        (about 80 MB for the paper's recipe, so the default holds well under 1 GB with 4 workers).
    timeout : float
        Seconds :meth:`next` waits for one batch before it gives up (a worker that hangs).

    Raises
    ------
    ValueError
        If ``workers < 1`` or ``ahead < 1``.

    Use as a context manager (or call :meth:`close`) so the workers end with the run (they are daemonic, so
    they also end with the training process).
    """

    def __init__(self, make_sampler: Callable[[], Any], draw: Callable[[Any], Any], *, seed: int,
                 start_step: int, workers: int, ahead: int | None = None, timeout: float = 600.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        ahead = 2 * workers if ahead is None else int(ahead)
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self.timeout = float(timeout)
        self.seed, self.step, self._start = int(seed), int(start_step), int(start_step)
        ctx = multiprocessing.get_context("spawn")
        per_worker = -(-ahead // workers)
        self._queues = [ctx.Queue(maxsize=per_worker) for _ in range(workers)]
        self._workers = [ctx.Process(target=_worker_main, daemon=True, name=f"uhrseg-loader-{w}",
                                     args=(make_sampler, draw, self.seed, self.step + w, workers, q))
                         for w, q in enumerate(self._queues)]
        for p in self._workers:
            p.start()

    def next(self) -> Any:
        """The batch of the current step (waits for it), then the loader moves to the next step.

        Raises
        ------
        RuntimeError
            If the worker drawing it failed (its traceback is in the message), ended, or sent nothing within
            ``timeout`` seconds.
        """
        w = (self.step - self._start) % len(self._workers)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                step, batch = self._queues[w].get(timeout=min(5.0, max(0.01, deadline - time.monotonic())))
                break
            except queue.Empty:
                if not self._workers[w].is_alive():
                    raise RuntimeError(f"training batch loader: worker {w} ended with exit code "
                                       f"{self._workers[w].exitcode}") from None
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"training batch loader: no batch for step {self.step} within "
                                       f"{self.timeout:g} s") from None
        if step is None:
            raise RuntimeError(f"training batch loader: worker {w} failed:\n{batch}")
        if step != self.step:  # cannot happen while each worker owns its steps; a guard against silent reordering
            raise RuntimeError(f"training batch loader: got the batch of step {step} for step {self.step}")
        self.step += 1
        return batch

    def close(self) -> None:
        """Stop the workers (batches drawn ahead are dropped)."""
        for p in self._workers:
            p.terminate()
        for p in self._workers:
            p.join(timeout=10)
        for q in self._queues:
            q.close()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
