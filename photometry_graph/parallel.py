"""Run independent tasks on a dask cluster, in a process pool or in-process.

The tiles of a Grid/Survey run are independent tasks: :func:`map_tasks` sends them to a
``dask.distributed`` scheduler when one is given, else to a pool of worker processes
(``forkserver`` where available, else ``spawn``), else (one worker) runs them here.  Results
arrive as they complete; a failing task comes back with its exception, so that one bad task
never stops the others.
"""

import concurrent.futures
import multiprocessing
import os
import pickle

from ._log import get_logger, grid_debug

__all__ = ["map_tasks", "default_workers"]

logger = get_logger(__name__)


def default_workers():
    """Default number of worker processes: the CPUs, at most 4.

    Examples
    --------
    >>> 1 <= default_workers() <= 4
    True
    """
    return min(4, os.cpu_count() or 1)


def map_tasks(func, tasks, *, scheduler=None, workers=None):
    """Yield ``(task, result or exception)`` from a dask cluster, a process pool or in-process.

    Parameters
    ----------
    func : callable
        ``func(task)``; a top-level function taking and returning picklable values (it runs
        in other processes).
    tasks : list
        Picklable tasks.
    scheduler : str or dask.distributed.Client, optional
        A scheduler address (a client is opened and closed here) or a client (left open).
        ``dask.distributed`` is imported only then.
    workers : int, optional
        Worker processes when there is no scheduler (default :func:`default_workers`),
        capped at half the number of tasks (rounded up): a worker starts by importing the
        libraries (~1-2 s), which one task rarely repays.  1 runs the tasks here, one
        after the other, each task through a pickle round trip as in a worker so that
        results match bit for bit.  The workers fork from a server process that has
        imported ``func``'s module once (``forkserver``), so they start at once.

    Yields
    ------
    tuple
        ``(task, result)``, in the order of completion; ``result`` is the exception the
        task raised when it failed.

    Examples
    --------
    >>> [r for _, r in map_tasks(abs, [-2, 3], workers=1)]
    [2, 3]
    """
    if scheduler is not None:
        from dask.distributed import Client, as_completed  # optional dependency
        own = not isinstance(scheduler, Client)
        client = Client(scheduler, set_as_default=False) if own else scheduler
        try:
            futures = {client.submit(func, t, pure=False): t for t in tasks}
            for fut in as_completed(futures, loop=client.loop):
                yield futures[fut], (fut.exception() or fut.result())
        finally:
            if own:
                client.close()
        return
    asked = default_workers() if workers is None else workers
    workers = max(1, min(asked, -(-len(tasks) // 2)))
    if workers < asked:
        grid_debug(logger, "%d task(s): %d worker process(es) instead of %d", len(tasks),
                   workers, asked)
    if workers == 1:
        for t in tasks:
            try:  # through pickle like in a worker: WCS objects round-trip through FITS text,
                yield t, func(pickle.loads(pickle.dumps(t)))  # so results match bit for bit
            except Exception as exc:
                yield t, exc
        return
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=_context(func)) as pool:
        futures = {pool.submit(func, t): t for t in tasks}
        for fut in concurrent.futures.as_completed(futures):
            yield futures[fut], (fut.exception() or fut.result())


def _context(func):
    """``forkserver`` (preloading ``func``'s module) where available, else ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    module = getattr(func, "__module__", None)
    if module and module != "__main__":
        # imported once by the server (from the same sys.path), inherited by every worker;
        # takes effect when the server starts, i.e. at the first pool of this process
        ctx.set_forkserver_preload([module])
    return ctx
