"""Run independent tasks on a dask cluster, in a process pool or in-process.

The tiles of a Grid/Survey run are independent tasks: :func:`map_tasks` sends them to a
``dask.distributed`` scheduler when one is given, else to a pool of worker processes
(``forkserver`` where available, else ``spawn``), else (one worker) runs them here.  Results
arrive as they complete; a failing task comes back with its exception, so that one bad task
never stops the others.

The worker processes of the pool share the CPUs among themselves: each runs OpenCV and BLAS
(OpenBLAS) on one thread (:func:`_limit_threads`), where the calling process may use several.

Faults: the workers never outlive the process that started them (Linux: the kernel kills a
worker whose parent dies; elsewhere too: a watchdog thread ends a worker whose parent is
gone), they start with SIGINT blocked (Ctrl-C reaches the calling process only, which stops
them), and when the caller stops reading the results (an interrupt, an error, ``close()``)
the queued tasks are cancelled and the workers killed at once (:func:`stop_pool`).
"""

import concurrent.futures
import contextlib
import ctypes
import functools
import gc
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import sys
import threading
import time
from contextlib import contextmanager

import psutil

from .._log import get_logger, grid_debug, grid_warning
from ..launch import server_preload, start_server

__all__ = ["map_tasks", "ordered_map", "TASKS_IN_FLIGHT", "fit_task_map", "default_workers",
           "pool_workers", "stop_pool", "STOP_SIGNALS", "single_threaded",
           "start_workers_early", "stop_workers_early", "changed_sources"]

logger = get_logger(__name__)

#: When the package's pipeline was imported: about when the run began, and when the
#: workers' server loaded the modules its workers start from.
_LOADED = time.time()


def changed_sources(since=None):
    """Source files of this program modified (or removed) after ``since``, sorted.

    ``since`` defaults to the time the pipeline was imported.  The files are those of the
    loaded ``photometry_graph`` modules, of ``grid_mode`` and of the main script: a worker
    started later loads the main script anew, against the modules the workers' server
    loaded before, so an upgrade in place during a run breaks its pool (:func:`map_tasks`
    says so).
    """
    since = _LOADED if since is None else since
    paths = {getattr(module, "__file__", None) for name, module in list(sys.modules.items())
             if name in ("__main__", "grid_mode") or name.split(".")[0] == "photometry_graph"}
    out = []
    for path in sorted(p for p in paths if p):
        try:
            if os.stat(path).st_mtime > since:
                out.append(path)
        except OSError:  # removed
            out.append(path)
    return out


def default_workers():
    """Default number of worker processes: the CPUs, at most 4.

    Examples
    --------
    >>> 1 <= default_workers() <= 4
    True
    """
    return min(4, os.cpu_count() or 1)


def pool_workers(workers, n_tasks):
    """The worker processes :func:`map_tasks` runs ``n_tasks`` tasks on when ``workers``
    are asked for (None: :func:`default_workers`): at most half the tasks, rounded up (a
    worker starts by importing the libraries, which one task rarely repays); 1 runs them
    in the calling process.

    Examples
    --------
    >>> pool_workers(4, 100), pool_workers(4, 5), pool_workers(2, 2), pool_workers(1, 100)
    (4, 3, 1, 1)
    """
    asked = default_workers() if workers is None else workers
    return max(1, min(asked, -(-n_tasks // 2)))


def map_tasks(func, tasks, *, scheduler=None, workers=None):
    """Yield ``(task, result or exception)`` from a dask cluster, a process pool or in-process.

    Parameters
    ----------
    func : callable
        ``func(task)``; a top-level function taking and returning picklable values (it runs
        in other processes).
    tasks : sequence or sized iterable
        Picklable tasks.  A list goes to a process pool at once; of tasks that an iterable
        makes as they are taken (:class:`~photometry_graph._threads.LazyTasks`) the pool
        holds :data:`TASKS_IN_FLIGHT` per worker, taking the next one as one completes:
        they are never all in memory at once (on a dask cluster they are all made and
        sent at once).
    scheduler : str or dask.distributed.Client, optional
        A scheduler address (a client is opened and closed here) or a client (left open).
        ``dask.distributed`` is imported only then.  Many tasks go to the cluster a few
        to a cluster task (:func:`cluster_batches`).
    workers : int, optional
        Worker processes when there is no scheduler (default :func:`default_workers`),
        capped at half the number of tasks (rounded up): a worker starts by importing the
        libraries (~1-2 s), which one task rarely repays.  1 runs the tasks here, one
        after the other, each task through a pickle round trip and on one thread
        (:func:`single_threaded`) as in a worker, so that results match bit for bit.  The
        workers fork from a server process that has imported ``func``'s module once
        (``forkserver``), so they start at once, and run OpenCV and BLAS on one thread each
        (the calling process is left as it is; a dask worker runs each task on one thread).

    Yields
    ------
    tuple
        ``(task, result)``, in the order of completion; ``result`` is the exception the
        task raised when it failed.  When the worker processes die (a script without the
        ``__main__`` guard, a worker killed for memory), the remaining tasks run here,
        with a [GRID] warning.  When the caller stops early (an exception in its loop,
        an interrupt), closing the generator (``contextlib.closing``) cancels the queued
        tasks and kills the workers at once; a worker whose parent dies exits by itself.

    Examples
    --------
    >>> [r for _, r in map_tasks(abs, [-2, 3], workers=1)]
    [2, 3]
    """
    with contextlib.closing(_indexed_results(func, tasks, scheduler=scheduler,
                                             workers=workers)) as results:
        for _, task, result in results:
            yield task, result
            del task, result


def _indexed_results(func, tasks, *, scheduler=None, workers=None):
    """:func:`map_tasks`, each result with the index of its task: ``(k, task, result)``."""
    if scheduler is not None:
        from .cluster import cluster_results  # dask: an optional dependency
        yield from cluster_results(func, list(tasks), scheduler)
        return
    asked = default_workers() if workers is None else workers
    workers = pool_workers(asked, len(tasks))
    if workers < asked:
        grid_debug(logger, "%d task(s): %d worker process(es) instead of %d", len(tasks),
                   workers, asked)
    if workers == 1:
        for k, t in enumerate(tasks):
            yield k, t, _run_here(func, t)
        return
    source, running, n_tasks = enumerate(tasks), {}, len(tasks)
    # a list goes to the pool at once; tasks made as they are taken, TASKS_IN_FLIGHT a worker
    window = n_tasks if isinstance(tasks, (list, tuple)) else TASKS_IN_FLIGHT * workers
    # A Ctrl-C stops the wait for a result (it holds no lock) at once; whatever takes the
    # pool's or the futures' locks runs with it deferred: a lock left held (by a Ctrl-C in
    # concurrent.futures.wait) made the pool's thread, and the exit, wait forever
    with _signals_deferred():
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=_context(func),
                                                      initializer=_start_worker,
                                                      initargs=(os.getpid(),))
    _grow_task_pipe(pool)
    yielded, finished = 0, queue.SimpleQueue()  # the futures, as they complete
    try:
        broken = _submit_next(pool, func, source, running, window, finished)
        while running and broken is None:
            fut = finished.get()
            with _signals_deferred():
                exc = fut.exception()
                if isinstance(exc, concurrent.futures.process.BrokenProcessPool):
                    broken = exc
                    continue
                k, t = running.pop(fut)
                result = exc or fut.result()
            del fut, exc
            # the next task goes before the caller's turn: the workers never wait for it
            broken = _submit_next(pool, func, source, running, 1, finished)
            yield k, t, result
            yielded += 1
            del t, result  # the caller's now: none kept here (a binned frame on disk)
    except BaseException:  # interrupted, or the caller stopped reading (GeneratorExit)
        stop_pool(pool)
        raise
    thread = getattr(pool, "_executor_manager_thread", None)  # it joins the workers
    with _signals_deferred():  # the pool's lock
        pool.shutdown(wait=False)
    if thread is not None:
        thread.join()  # a Ctrl-C may stop this wait
    if broken is not None:  # the pool is dead: every pending task would fail the same way
        rest = sorted(running.values(), key=lambda kt: kt[0])
        n_rest = n_tasks - yielded
        grid_warning(logger, "worker processes died or could not start (%s); running the %d "
                     "remaining task(s) in this process. A script that runs grid mode with "
                     "workers needs `if __name__ == \"__main__\":` around its top-level "
                     "code; a worker killed for lack of memory needs fewer workers "
                     "(--workers)%s", type(broken).__name__, n_rest, _changed_note())
        for k, t in itertools.chain(rest, source):  # the unsent tasks made one by one
            yield k, t, _run_here(func, t)


def _changed_note():
    """The end of the broken pool's warning: the source files changed during the run, if
    any (:func:`changed_sources`), or nothing."""
    changed = [os.path.basename(c) for c in changed_sources()]
    if not changed:
        return ""
    return (f". {len(changed)} source file(s) of the program changed during the run "
            f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''}): new workers "
            "cannot load them with the old ones; update between runs")


def _run_here(func, task):
    """``func(task)`` in this process as in a worker, or the exception it raised: through
    pickle (WCS objects round-trip through FITS text) and on one thread (OpenCV's warps
    split their work by thread), so that the results match a pool's bit for bit."""
    try:
        with single_threaded():
            return func(pickle.loads(pickle.dumps(task)))
    except Exception as exc:
        return exc


#: Tasks made as they are taken (:class:`~photometry_graph._threads.LazyTasks`) that a
#: process pool of :func:`map_tasks` holds per worker: one running, the next ones waiting
#: in the pool (pickled and sent as a worker frees up); the others are made as tasks
#: complete.  A list of tasks goes to the pool at once.
TASKS_IN_FLIGHT = 4


def _submit_next(pool, func, source, running, count, finished):
    """Submit the next ``count`` tasks of ``source`` (``(k, task)`` pairs) to ``pool``;
    ``running`` maps each future to its ``(k, task)``; a future goes to the queue
    ``finished`` when it completes.  A submission takes the pool's and the future's locks
    and may start a worker (never unknown to its pool): it runs with the stop signals
    deferred (:func:`_signals_deferred`), the task made before.  Returns the
    BrokenProcessPool that refused a task (kept in ``running``, under a future of that
    exception), or None."""
    for _ in range(count):
        try:
            k, t = next(source)
        except StopIteration:
            return None
        with _signals_deferred():
            try:
                fut = pool.submit(func, t)
            except concurrent.futures.process.BrokenProcessPool as exc:
                fut = concurrent.futures.Future()
                fut.set_exception(exc)
                running[fut] = (k, t)
                return exc
            running[fut] = (k, t)
            fut.add_done_callback(finished.put)
    return None


def ordered_map(func, tasks, *, scheduler=None, workers=None):
    """``[func(t) for t in tasks]`` through :func:`map_tasks`: results in the tasks' order,
    the exception in place of a task that raised.

    Parameters
    ----------
    func : callable
        A top-level function (it runs in other processes).
    tasks : sequence or sized iterable
        Picklable tasks (:class:`~photometry_graph._threads.LazyTasks`: made as they
        are taken).
    scheduler, workers
        As :func:`map_tasks`.

    Returns
    -------
    list

    Examples
    --------
    >>> ordered_map(abs, [-2, 3, -1], workers=1)
    [2, 3, 1]
    """
    tasks = tasks if hasattr(tasks, "__len__") else list(tasks)
    out = [None] * len(tasks)
    with contextlib.closing(_indexed_results(func, tasks, scheduler=scheduler,
                                             workers=workers)) as results:
        for k, _, res in results:
            out[k] = res
    return out


def fit_task_map(workers, scheduler=None):
    """The ``task_map`` of the overlap fits
    (:func:`~photometry_graph.photometry.overlap.fit_overlap_edges`): :func:`ordered_map`
    on ``workers`` processes or the ``scheduler`` cluster; None (threads in this process)
    for one worker and no scheduler.  The fits are the same in every case.

    Examples
    --------
    >>> fit_task_map(1) is None, fit_task_map(2)(abs, [-1])
    (True, [1])
    """
    if workers <= 1 and scheduler is None:
        return None
    return functools.partial(ordered_map, workers=workers, scheduler=scheduler)


#: Bytes the pipe that carries a pool's tasks holds (Linux; the system's default is 64 KiB).
TASK_PIPE_BYTES = 1 << 20


def _grow_task_pipe(pool, size=TASK_PIPE_BYTES):
    """Let the pipe of ``pool``'s tasks hold ``size`` bytes: the next task (an overlap fit
    carries ~1.5 MB of pixels) is written while the workers compute, instead of chunk by
    chunk as one of them reads it once it is idle.  Nothing changes where the platform
    or the executor does not allow it."""
    try:
        import fcntl
        fd = pool._call_queue._writer.fileno()
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, int(size))
    except (ImportError, AttributeError, OSError, ValueError):  # not Linux, or refused
        pass


def stop_pool(pool, timeout=5.0):
    """Kill the workers of a process pool now and cancel its queued tasks.

    Parameters
    ----------
    pool : concurrent.futures.ProcessPoolExecutor
    timeout : float
        Longest wait, seconds, for the killed workers to end.

    Examples
    --------
    >>> import concurrent.futures
    >>> pool = concurrent.futures.ProcessPoolExecutor(1)
    >>> stop_pool(pool)
    """
    procs = list(dict(getattr(pool, "_processes", None) or {}).values())  # before shutdown
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    pending, deadline = [p.sentinel for p in procs], time.monotonic() + timeout
    while pending and time.monotonic() < deadline:  # dead (the pool's thread reaps them)
        ready = multiprocessing.connection.wait(pending, deadline - time.monotonic())
        pending = [s for s in pending if s not in ready]
    # A worker killed while it sent a result leaves half a message in the result pipe: the
    # pool's thread would wait for the rest forever (and the interpreter for that thread at
    # exit).  Closing this process's end of the pipe's writing side (no worker holds one
    # any more) gives it an end of file instead; the pool then shuts down as broken.
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None and not pending:
        writer.close()
    with _signals_deferred():  # cancelling the queued tasks takes each future's lock
        pool.shutdown(wait=False, cancel_futures=True)


#: Signals that stop a run (those the platform has); see :func:`_signals_deferred`.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


@contextmanager
def _signals_deferred():
    """Meanwhile a stop signal waits; it is delivered (its handler runs here) on exit.

    While worker processes start: SIGINT is blocked in this thread, and processes started
    meanwhile inherit the block (across ``exec`` too), so the workers of a pool and its
    ``forkserver`` never see a Ctrl-C of the terminal (whose SIGINT goes to the whole process
    group): the calling process handles it and stops them.  In the main thread the Python
    handlers of :data:`STOP_SIGNALS` are deferred too (a signal may be delivered through
    another thread): no exception leaves a worker unknown to its pool, nor a lock of the
    pool or its futures held (nor, between two swaps, a handler swapped).
    """
    pending, old, mask = [], {}, None
    try:
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                if callable(signal.getsignal(s)):
                    old[s] = signal.signal(s, lambda signum, frame: pending.append(signum))
        if hasattr(signal, "pthread_sigmask"):  # not on Windows
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a blocked SIGINT arrives now
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in pending:
            signal.raise_signal(s)


def _start_worker(parent_pid):
    """Pool initializer: one thread for OpenCV/BLAS, no Ctrl-C, die with the parent.

    The objects the worker inherits (the modules its server imported) are frozen out of
    the garbage collector's reach: a full collection no longer walks them (~30 ms each,
    one a tile), nor writes to their pages, which then stay shared with the server.
    """
    gc.freeze()
    _limit_threads()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles it and stops us
    _die_with_parent(parent_pid)


#: ``prctl`` option: the signal the kernel sends to this process when its parent dies (Linux).
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid, period=0.5):
    """End this worker process when the process that started the pool is gone.

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (the parent of a ``forkserver`` worker is the
    server, which exits when the calling process dies).  Everywhere: a daemon thread checks
    every ``period`` seconds that ``parent_pid`` is alive and that this process was not
    re-parented, and exits at once otherwise, so that no orphan goes on writing files.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL),
                                                    0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover
            pass
    ppid = os.getppid()

    def watch():
        while _alive(parent_pid) and os.getppid() == ppid:
            time.sleep(period)
        os._exit(1)

    threading.Thread(target=watch, name="grid-parent-watch", daemon=True).start()


def _alive(pid):
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # NoSuchProcess; AccessDenied: it exists
        return psutil.pid_exists(pid)


def start_workers_early(func, workers, n_tasks):
    """Start the server that :func:`map_tasks` forks ``func``'s workers from, in a thread.

    The server imports ``func``'s module (the libraries, ~1 s) when the first pool starts;
    started here, that happens while the caller goes on (reading headers), and the first
    pool finds it ready (:func:`photometry_graph.launch.start_server`, which the command
    may have called already).  Nothing is started when :func:`map_tasks` would run the
    tasks in this process (one worker, or fewer than 3 tasks) or without ``forkserver``.

    Parameters
    ----------
    func : callable
        The first function the pool will run.
    workers : int
        Worker processes the pool will have.
    n_tasks : int
        Tasks it will run.

    Returns
    -------
    threading.Thread or None
        The starting thread (daemon), None when nothing is started.
    """
    if pool_workers(workers, n_tasks) <= 1:
        return None
    _context(func)  # the module the server preloads (the pools' own rule)
    return start_server()


def stop_workers_early(thread):
    """Stop the server started in ``thread`` (:func:`start_workers_early`, or the command's
    :func:`photometry_graph.launch.start_server`) when no pool will use it (a memory plan
    that keeps the run in this process).  Where Python offers no
    way to stop it, it stays until the process ends (a [GRID] debug line says so)."""
    thread.join()
    from multiprocessing import forkserver
    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is None:
        grid_debug(logger, "the workers' server started early cannot be stopped here")
        return
    stop()


def _context(func):
    """``forkserver`` (preloading ``func``'s module) where available, else ``spawn``."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    module = getattr(func, "__module__", None)
    if module and module != "__main__":
        # imported once by the server (from the same sys.path), inherited by every worker;
        # takes effect when the server starts, i.e. at the first pool of this process
        ctx.set_forkserver_preload(server_preload(module))
    return ctx


# Thread limits of the worker processes: variables read by the libraries loaded after them ...
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# ... and the setters of the OpenBLAS copies already loaded (numpy's, scipy's, OpenCV's)
_OPENBLAS_SETTERS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_",
                     "scipy_openblas_set_num_threads", "openblas_set_num_threads64_")


def _limit_threads():
    """Pool initializer: run OpenCV and BLAS on one thread in this worker process.

    The pool has one worker per CPU it may use; OpenCV's thread pool and OpenBLAS's threads
    (which parallelise e.g. the coordinate-map products of the reprojection) would otherwise
    oversubscribe the CPUs.  The environment variables cover libraries loaded later in the
    worker; those already loaded (the server process preloaded them) are set directly.
    Runs only in pool workers, never in the calling process.
    """
    os.environ.update(dict.fromkeys(THREAD_ENV, "1"))
    try:
        import cv2  # a dependency of the package; loads its own OpenBLAS too
        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    for set_threads, _ in _openblas_controls():
        set_threads(1)


@contextlib.contextmanager
def single_threaded():
    """OpenCV and OpenBLAS on one thread within the block, as in a worker process
    (restored after): a task run here gives the same numbers as in a worker (OpenCV's
    ``warpPerspective`` splits its work by thread, its results by a rounding).

    Examples
    --------
    >>> import cv2
    >>> with single_threaded():
    ...     cv2.getNumThreads()
    1
    """
    import cv2
    threads = cv2.getNumThreads()
    controls = _openblas_controls()
    blas = [get() for _, get in controls]
    cv2.setNumThreads(1)
    for set_threads, _ in controls:
        set_threads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)
        for (set_threads, _), n in zip(controls, blas):
            set_threads(n)


def _openblas_controls():
    """``(set_num_threads, get_num_threads)`` of each OpenBLAS loaded in this process.

    Read from ``/proc/self/maps`` (Linux; elsewhere an empty list): numpy, scipy and OpenCV
    each bundle their own copy, with differently prefixed functions.  The map is read again
    only when modules were imported since (a library is loaded by an import; reading it
    costs ~2 ms, paid by every task run in this process otherwise).
    """
    key = len(sys.modules)
    if _BLAS_CACHE.get("key") != key:
        _BLAS_CACHE.update(key=key, controls=_read_openblas_controls())
    return _BLAS_CACHE["controls"]


#: The last :func:`_openblas_controls` and the number of modules when it was read.
_BLAS_CACHE = {}


def _read_openblas_controls():
    """:func:`_openblas_controls` read afresh."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            paths = {line.split()[-1] for line in fh
                     if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return []
    controls = []
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)  # loaded already: not loaded again
        except OSError:
            continue
        name = next((n for n in _OPENBLAS_SETTERS if hasattr(lib, n)), None)
        if name is not None:
            setter, getter = getattr(lib, name), getattr(lib, name.replace("_set_", "_get_"))
            setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
            controls.append((setter, getter))
    return controls
