"""Tasks on a ``dask.distributed`` cluster (:func:`~.parallel.map_tasks` with a scheduler).

One client for the stages of a run (:func:`cluster_session`), whose workers import the
libraries as soon as it connects; tasks pickled here and sent to the workers directly
(``scatter``: the scheduler sees their keys, not their bytes), a few to a cluster task
(:func:`cluster_batches`), each run as in a process of the local pool (one OpenCV/OpenBLAS
thread, the pool's heap settings: the same numbers as a local run).  A task that raises comes
back with its exception; tasks lost with a worker run once more.
"""

import contextvars
import importlib
import pickle
from contextlib import contextmanager

from .._log import get_logger, grid_debug
from .heap import reused_heap
from .parallel import single_threaded

__all__ = ["CLUSTER_BATCH", "cluster_batches", "cluster_results", "cluster_session"]

logger = get_logger(__name__)


#: ``(address, client)`` of the innermost open :func:`cluster_session` of this thread (or
#: task): a run in another thread has its own.
_SESSION = contextvars.ContextVar("grid_cluster_session", default=None)


@contextmanager
def cluster_session(scheduler, preload=()):
    """One client of a dask cluster for every :func:`~.parallel.map_tasks` call within the block.

    Connecting a client costs a fraction of a second and a cluster's workers import the
    libraries at their first task (~1-2 s each): a run that maps its stages one after the
    other over the cluster connects once, and its workers import ``preload`` as soon as
    the block opens, while the run reads its headers.

    Parameters
    ----------
    scheduler : str, dask.distributed.Client or None
        A scheduler address (a client is opened here and closed at the end of the block),
        a client (used as it is, left open) or None (nothing to do).
    preload : sequence of str
        Modules every worker imports now (in the background; a failure only means the
        import happens at the first task, as without it).

    Yields
    ------
    dask.distributed.Client or None
    """
    if scheduler is None:
        yield None
        return
    from dask.distributed import Client  # optional dependency
    own = not isinstance(scheduler, Client)
    client = _client(scheduler) if own else scheduler
    token = _SESSION.set((scheduler, client)) if own else None
    warming = []
    try:
        try:
            warming = [client.submit(importlib.import_module, module, workers=[w], pure=False)
                       for w in client.scheduler_info().get("workers", {})
                       for module in preload]
        except Exception as exc:  # noqa: BLE001 - the workers import at their first task
            grid_debug(logger, "cluster workers not warmed up (%s: %s)", type(exc).__name__,
                       exc)
        yield client
    finally:
        if warming:
            client.cancel(warming)
        if token is not None:
            _SESSION.reset(token)
            client.close()


def _client(address):
    """A dask client of the scheduler at ``address`` that exchanges data with the workers
    directly (the scheduler sees keys, not the frames and results)."""
    from dask.distributed import Client
    return Client(address, set_as_default=False, direct_to_workers=True)


def _pickled(func, task):
    """``func(task)`` as bytes that run it when unpickled (:class:`_Call`; cloudpickle:
    a lambda or a function of a script's ``__main__`` travels too)."""
    import cloudpickle  # dask.distributed's own dependency
    return cloudpickle.dumps(_Call(func, task), protocol=pickle.HIGHEST_PROTOCOL)


def _submit_all(client, func, tasks):
    """``func(task)`` of every task on the cluster: ``({future: index}, direct)``.

    The tasks are pickled here (:func:`_pickled`) and, with a client of this module
    (:func:`_client`), go to the workers directly (``scatter``): the scheduler receives
    their keys only, where a task graph holding the data would be unpickled and forwarded
    by the scheduler, on the same CPUs as the workers.  ``direct`` says the results are
    fetched from the workers directly.  A client given by the caller that does not reach
    the workers directly, or workers out of reach, get the bytes through the scheduler.
    No task: nothing is sent (``scatter`` refuses an empty list).
    """
    if not tasks:
        return {}, False
    pickled = [_pickled(func, t) for t in tasks]
    data, direct = pickled, False
    if getattr(client, "direct_to_workers", None):
        try:
            data, direct = client.scatter(pickled, direct=True, hash=False), True
        except Exception as exc:  # noqa: BLE001 - the workers are out of reach: as before
            grid_debug(logger, "tasks not scattered to the workers (%s: %s)",
                       type(exc).__name__, exc)
    return {client.submit(pickle.loads, d, pure=False): k for k, d in enumerate(data)}, direct


#: Tasks that one task of a dask cluster runs at most, one after the other: each task of a
#: cluster costs ~3 ms of the calling process's CPU and a round trip (an overlap fit takes
#: ~12 ms).  Batches stay at least 8 for each of the cluster's threads.
CLUSTER_BATCH = 8


def cluster_batches(n_tasks, threads):
    """The indices of the tasks in each batch that one task of a dask cluster runs.

    Up to :data:`CLUSTER_BATCH` tasks a batch, and at least 8 batches for each of the
    cluster's ``threads`` (tasks allowing).  Batches take every k-th task (strided), so
    that tasks ordered by size (the largest tiles first) spread over them.

    Parameters
    ----------
    n_tasks, threads : int

    Returns
    -------
    list of list of int

    Examples
    --------
    >>> cluster_batches(5, 2)
    [[0], [1], [2], [3], [4]]
    >>> cluster_batches(40, 1)[:2]
    [[0, 8, 16, 24, 32], [1, 9, 17, 25, 33]]
    >>> [len(b) for b in cluster_batches(178, 2)][:3], len(cluster_batches(178, 2))
    ([8, 8, 8], 23)
    """
    size = max(1, min(CLUSTER_BATCH, n_tasks // (8 * max(1, threads))))
    n_batches = -(-n_tasks // size)
    return [list(range(b, n_tasks, n_batches)) for b in range(n_batches)]


class _Batch:
    """Tasks that one task of a dask cluster runs: ``[func(t) for t in tasks]``, each task
    pickled on its own (as a process pool's: no object shared between them) and the
    exception in place of a task that raised (one that cannot be pickled, as a
    RuntimeError that names it)."""

    def __init__(self, func):
        self.func = func

    def __call__(self, pickled_tasks):
        out = []
        for piece in pickled_tasks:
            try:
                out.append(self.func(pickle.loads(piece)))
            except Exception as exc:  # noqa: BLE001 - the caller's result for that task
                try:
                    pickle.dumps(exc)
                except Exception:  # noqa: BLE001 - what travels back is its text
                    exc = RuntimeError(f"{type(exc).__name__}: {exc}")
                out.append(exc)
        return out


def cluster_results(func, tasks, scheduler):
    """:func:`~.parallel.map_tasks` on a dask cluster, each result with the index of its
    task: ``(k, task, result)``.

    The tasks go in batches (:func:`cluster_batches`).  A batch lost as a whole (its worker
    died, its results could not travel) runs again, one task a cluster task; a task lost
    alone with its worker runs once more.
    """
    from dask.distributed import Client, as_completed  # optional dependency
    session = _SESSION.get()
    shared = session[1] if session is not None and session[0] == scheduler else None
    own = shared is None and not isinstance(scheduler, Client)
    client = _client(scheduler) if own else (shared or scheduler)
    futures, batch = {}, _Batch(func)
    try:
        try:
            threads = sum(client.nthreads().values())
        except Exception:  # noqa: BLE001 - the scheduler says it later, if it is gone
            threads = 0
        batches = cluster_batches(len(tasks), threads or 2)
        sent, direct = _submit_all(client, batch, [_pieces(tasks, b) for b in batches])
        futures = {fut: batches[b] for fut, b in sent.items()}
        retried, running = set(), as_completed(list(futures), loop=client.loop)
        for fut in running:
            ks, lost = futures.pop(fut), False  # released: the cluster frees the result
            try:
                got = fut.exception() or client.gather(fut, direct=direct)
            except Exception as exc:  # noqa: BLE001 - lost with a worker (its tasks too)
                got, lost = exc, True
            if not isinstance(got, list) and (len(ks) > 1 or lost and ks[0] not in retried):
                for k in ks:  # once more, each task on its own, sent along with it
                    retried.add(k)
                    again = client.submit(pickle.loads, _pickled(batch, _pieces(tasks, [k])),
                                          pure=False)
                    futures[again] = [k]
                    running.add(again)
                continue
            for k, result in zip(ks, got if isinstance(got, list) else [got]):
                yield k, tasks[k], result
    except BaseException:  # interrupted, or the caller stopped reading: cancel the rest
        client.cancel(list(futures))
        raise
    finally:
        if own:
            client.close()


def _pieces(tasks, ks):
    """The tasks ``ks`` of ``tasks``, each pickled on its own (:class:`_Batch`); one that
    only cloudpickle can pickle (a lambda in it) by cloudpickle, as :func:`_pickled`."""
    import cloudpickle  # dask.distributed's own dependency
    out = []
    for k in ks:
        try:
            out.append(pickle.dumps(tasks[k], protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - pickle's errors vary with what it meets
            out.append(cloudpickle.dumps(tasks[k], protocol=pickle.HIGHEST_PROTOCOL))
    return out


def _one_thread(func, task):
    """``func(task)`` on one OpenCV/OpenBLAS thread, as in a process of the pool (a dask
    worker: the same numbers as a local run), with the heap a pool's process has
    (:func:`reused_heap`)."""
    with single_threaded(), reused_heap():
        return func(task)


class _Call:
    """``func(task)`` that runs when it is unpickled: ``pickle.loads(pickle.dumps(call))``
    is :func:`_one_thread` of ``func`` and the task's copy.

    A dask cluster's task is then ``pickle.loads`` of bytes: its scheduler unpickles no
    function of this package (importing it would cost the scheduler ~2 s of CPU), and
    the task makes the pickle round trip of a local run's (the same numbers).
    """

    def __init__(self, func, task):
        self.func, self.task = func, task

    def __reduce__(self):
        return _one_thread, (self.func, self.task)
