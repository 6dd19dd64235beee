"""Running the replications of a simulation study on any ``concurrent.futures`` executor.

Simulation studies (simulation-based calibration, the likelihood comparison, the power study)
are many independent tasks. :func:`map_tasks` runs them on

- a process pool of ``jobs`` workers (the default; ``spawn`` start method, so that each worker
  compiles its own models and no PyTensor state is shared across a fork),
- in this process (``jobs=1``, for debugging and tests),
- or any :class:`concurrent.futures.Executor` the caller passes, e.g. a ``dask.distributed``
  cluster: ``Client(...).get_executor()`` is such an executor, and a ``Client`` itself is
  accepted too (its ``get_executor()`` is used). Install ``pip install -e ".[dask]"``.

Every task carries its own seeds, so results never depend on the executor or the number of
workers; they are returned in task order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from typing import Protocol, runtime_checkable

__all__ = ["ClientLike", "interleave", "map_tasks"]


@runtime_checkable
class ClientLike(Protocol):
    """Anything with ``get_executor()`` returning a ``concurrent.futures.Executor`` (a dask Client)."""

    def get_executor(self) -> Executor:
        """A ``concurrent.futures`` view of the client."""
        ...


def _resolve(executor: Executor | ClientLike | None) -> Executor | None:
    if executor is None or isinstance(executor, Executor):
        return executor
    if isinstance(executor, ClientLike):
        return executor.get_executor()
    raise TypeError(f"executor must be a concurrent.futures.Executor or a dask Client, got {type(executor).__name__}")


def map_tasks[T, R](
    fn: Callable[[T], R],
    tasks: Sequence[T],
    *,
    executor: Executor | ClientLike | None = None,
    jobs: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[R]:
    """Apply ``fn`` to every task, in parallel, and return the results in task order.

    Parameters
    ----------
    fn : callable
        A module-level (picklable) function of one task.
    tasks : sequence
        Picklable task descriptions, each with its own seeds.
    executor : concurrent.futures.Executor or dask Client, optional
        Where to run; default a spawn-started process pool of ``jobs`` workers (``jobs == 1``:
        in this process). A passed executor is not shut down.
    jobs : int
        Workers of the default process pool.
    progress : callable, optional
        Called as ``progress(done, total)`` after each finished task (e.g. to show progress).

    Returns
    -------
    list
        ``[fn(t) for t in tasks]``.
    """
    resolved = _resolve(executor)
    if resolved is None and jobs <= 1:
        results = []
        for done, task in enumerate(tasks, start=1):
            results.append(fn(task))
            if progress is not None:
                progress(done, len(tasks))
        return results
    if resolved is not None:
        return _collect(resolved, fn, tasks, progress)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return _collect(pool, fn, tasks, progress)


def _collect[T, R](
    executor: Executor, fn: Callable[[T], R], tasks: Sequence[T], progress: Callable[[int, int], None] | None
) -> list[R]:
    futures: dict[Future[R], int] = {executor.submit(fn, task): i for i, task in enumerate(tasks)}
    results: list[R | None] = [None] * len(tasks)
    for done, future in enumerate(as_completed(futures), start=1):
        results[futures[future]] = future.result()
        if progress is not None:
            progress(done, len(tasks))
    return results  # type: ignore[return-value]


def interleave[T](batches: Sequence[Sequence[T]]) -> list[T]:
    """Tasks of several batches in proportional order, so that a partial run covers every batch."""
    keyed = [(i / len(b), j, t) for j, b in enumerate(batches) for i, t in enumerate(b)]
    return [t for *_, t in sorted(keyed, key=lambda x: (x[0], x[1]))]
