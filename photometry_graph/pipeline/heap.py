"""The C heap of a dask worker while it runs this program's tasks (glibc on Linux).

A dask worker runs with ``MALLOC_TRIM_THRESHOLD_`` set (its nanny's default, so that freed
memory goes back to the system at once), which also fixes glibc's threshold for mapping an
allocation on its own at 128 KiB: every temporary array of a task is then mapped and its
pages zeroed anew (numpy's arithmetic on frames measured 1.6x slower, a session's tasks
~2x).  :func:`reused_heap` gives the tasks the heap a process of the local pool has: arrays
up to 32 MiB come from the heap, which keeps up to 128 MiB of freed memory.

The worker's own settings come back, and the memory its tasks freed goes back to the
system (``malloc_trim``), when it has run no task for :data:`HEAP_IDLE_S`, not after each
task: given back after each one, the pages of the next task's arrays were faulted and
zeroed anew (~1,100 page faults an overlap fit, 0.45 s of system time for 300 fits).  So a
worker that is never idle holds up to 128 MiB of freed memory per allocator arena for as
long as its tasks follow one another (dask counts it as unmanaged memory).
"""

import ctypes
import functools
import os
import sys
import threading
from contextlib import contextmanager

__all__ = ["reused_heap", "glibc", "HEAP_IDLE_S"]

#: Seconds without a task after which a worker's heap settings are its own again and the
#: memory its tasks freed is given back to the system.
HEAP_IDLE_S = 1.0

#: ``mallopt`` parameters of glibc (malloc.h) and the values a task runs with: arrays up
#: to 32 MiB (the largest threshold glibc accepts on 64-bit systems) come from the heap,
#: and the heap keeps up to 128 MiB of freed memory.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TASK_MMAP_THRESHOLD, _TASK_TRIM_THRESHOLD = 32 << 20, 128 << 20
#: The tasks of this process inside :func:`reused_heap` (a dask worker may run several on
#: its threads), whether the task settings are in force, and the timer that gives the
#: worker's settings back once it is idle.
_HEAP = {"lock": threading.Lock(), "tasks": 0, "set": False, "timer": None}


@contextmanager
def reused_heap(idle=None):
    """Within the block, freed arrays are reused instead of mapped afresh; ``idle`` seconds
    (default :data:`HEAP_IDLE_S`) after the last block of the process ends with no other
    begun, the process's settings are back and its freed memory returned to the system.

    Only where ``MALLOC_TRIM_THRESHOLD_`` is set (a dask worker; and
    ``MALLOC_MMAP_THRESHOLD_``, if set, is a number), with glibc on Linux; elsewhere the
    block changes nothing.  Blocks of several threads overlap: the settings are the task's
    from the first one in until the process has been idle for ``idle`` seconds.  ``idle=0``
    gives them back as the last block ends.

    Examples
    --------
    >>> import numpy as np
    >>> with reused_heap():
    ...     float(np.ones(1 << 20).sum())
    1048576.0
    """
    restore = _heap_settings()
    libc = glibc() if restore is not None else None
    if libc is None:
        yield
        return
    delay = HEAP_IDLE_S if idle is None else float(idle)
    with _HEAP["lock"]:
        _HEAP["tasks"] += 1
        if _HEAP["timer"] is not None:  # a pending restore no longer applies
            _HEAP["timer"].cancel()  # (a timer already past its wait sees it was replaced)
            _HEAP["timer"] = None
        if not _HEAP["set"]:
            libc.mallopt(_M_MMAP_THRESHOLD, _TASK_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _TASK_TRIM_THRESHOLD)
            _HEAP["set"] = True
    try:
        yield
    finally:
        with _HEAP["lock"]:
            _HEAP["tasks"] -= 1
            if _HEAP["tasks"] == 0 and not (delay > 0 and _start_timer(delay, libc, restore)):
                _restore(libc, restore)


def _start_timer(delay, libc, restore):
    """Start the timer that gives the settings back in ``delay`` s (``_HEAP`` locked);
    False when no thread can be started (the settings then come back at once)."""
    timer = threading.Timer(delay, _restore_when_idle, args=(libc, restore))
    timer.daemon = True
    try:
        timer.start()
    except RuntimeError:  # can't start new thread
        return False
    _HEAP["timer"] = timer
    return True


def _restore_when_idle(libc, restore):
    """The timer's end: the worker's settings back unless a task has begun since."""
    with _HEAP["lock"]:
        if _HEAP["tasks"] == 0 and _HEAP["timer"] is threading.current_thread():
            _restore(libc, restore)


def _restore(libc, restore):
    """The worker's settings back and its freed memory returned (``_HEAP`` locked)."""
    libc.mallopt(_M_MMAP_THRESHOLD, restore[0])
    libc.mallopt(_M_TRIM_THRESHOLD, restore[1])
    libc.malloc_trim(0)
    _HEAP["set"], _HEAP["timer"] = False, None


def _after_fork_in_child():
    """A forked child has only the forking thread: no task runs there, no timer will
    fire, and the lock may have been held by another thread of the parent.  A new lock,
    and the child's own settings back if the tasks' were in force."""
    _HEAP["lock"], _HEAP["tasks"], _HEAP["timer"] = threading.Lock(), 0, None
    if _HEAP["set"]:
        restore, libc = _heap_settings(), glibc()
        if restore is not None and libc is not None:
            _restore(libc, restore)
        _HEAP["set"] = False


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _heap_settings():
    """The process's ``(mmap threshold, trim threshold)`` when a dask worker's
    ``MALLOC_TRIM_THRESHOLD_`` is set and both are numbers, else None."""
    try:
        trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
        return None if trim is None else (
            int(os.environ.get("MALLOC_MMAP_THRESHOLD_", str(128 << 10)), 0), int(trim, 0))
    except ValueError:  # not numbers: left as they are
        return None


@functools.lru_cache(maxsize=1)
def glibc():
    """glibc with ``mallopt`` and ``malloc_trim`` (Linux), or None (loaded once).

    Examples
    --------
    >>> libc = glibc()
    >>> libc is None or libc.malloc_trim(0) in (0, 1)
    True
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # another C library
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc
