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
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BatchLoader", "draw_at"]

# Per worker process: the sampler it built once (in _start_worker) and the function that draws a batch with it.
_WORKER: dict[str, Any] = {}


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


def _start_worker(make_sampler: Callable[[], Any], draw: Callable[[Any], Any]) -> None:
    _WORKER["sampler"] = make_sampler()
    _WORKER["draw"] = draw


def _draw_in_worker(seed_step: tuple[int, int]) -> Any:
    return draw_at(_WORKER["sampler"], _WORKER["draw"], *seed_step)


class BatchLoader:
    """Batches for steps ``start_step, start_step + 1, ...`` drawn in worker processes, returned in step order.

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
        Seconds :meth:`next` waits for one batch before it gives up (a worker that died or hangs).

    Raises
    ------
    ValueError
        If ``workers < 1`` or ``ahead < 1``.

    Use as a context manager (or call :meth:`close`) so the workers end with the run; an error raised in a
    worker is raised again by :meth:`next`.
    """

    def __init__(self, make_sampler: Callable[[], Any], draw: Callable[[Any], Any], *, seed: int,
                 start_step: int, workers: int, ahead: int | None = None, timeout: float = 600.0) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ahead = 2 * workers if ahead is None else int(ahead)
        if self.ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self.timeout = float(timeout)
        self.seed, self.step = int(seed), int(start_step)  # step: the batch the next call of next() returns
        self._submitted = self.step
        self._pending: deque = deque()
        ctx = multiprocessing.get_context("spawn")
        self._pool = ctx.Pool(workers, initializer=_start_worker, initargs=(make_sampler, draw))

    def next(self) -> Any:
        """The batch of the current step (waits for it), then the loader moves to the next step.

        Raises
        ------
        RuntimeError
            If the batch has not come within ``timeout`` seconds.
        """
        while len(self._pending) < self.ahead:
            self._pending.append(self._pool.apply_async(_draw_in_worker, ((self.seed, self._submitted),)))
            self._submitted += 1
        try:
            batch = self._pending.popleft().get(timeout=self.timeout)
        except multiprocessing.TimeoutError:
            raise RuntimeError(f"no training batch for step {self.step} from the loader's workers within "
                               f"{self.timeout:g} s") from None
        self.step += 1
        return batch

    def close(self) -> None:
        """Stop the workers (batches drawn ahead are dropped)."""
        self._pool.terminate()
        self._pool.join()

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
