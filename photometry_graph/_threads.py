"""Worker counts, a thread map and lazily made task lists, shared by the stages."""

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_threads", "check_workers", "thread_map", "thread_imap", "LazyTasks"]


def default_threads():
    """Default number of threads: ``min(2, os.cpu_count())``."""
    return max(1, min(2, os.cpu_count() or 1))


def check_workers(workers, *, default=default_threads):
    """A validated worker count: a positive integer, or ``default()`` for None.

    Raises
    ------
    ValueError
        For anything but None or a positive integer (``True`` included).

    Examples
    --------
    >>> check_workers(3)
    3
    >>> check_workers(0)
    Traceback (most recent call last):
    ...
    ValueError: workers must be a positive integer or None, got 0
    """
    if workers is None:
        return default()
    if isinstance(workers, bool) or int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer or None, got {workers!r}")
    return int(workers)


def thread_map(func, items, workers):
    """``[func(item) for item in items]``, on ``workers`` threads (order kept).

    numpy releases the GIL in its large operations, so tile reads, masks and fits overlap
    on several cores; results are those of the serial loop.
    """
    return list(thread_imap(func, items, workers))


def thread_imap(func, items, workers):
    """``func(item)`` for each item, yielded in the items' order, on ``workers`` threads.

    A result is let go once the caller has taken it (the threads may run ahead of a slow
    caller): a caller that merges the results as they come does not hold them all, as
    :func:`thread_map` (which lists them) does.

    Examples
    --------
    >>> list(thread_imap(abs, [-2, 3, -1], 2))
    [2, 3, 1]
    """
    items = list(items)
    workers = check_workers(workers)
    if workers == 1 or len(items) < 2:
        yield from (func(item) for item in items)
        return
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        yield from pool.map(func, items)


class LazyTasks:
    """A sized iterable of tasks made as they are taken: ``make(item)`` for each item.

    What :func:`~photometry_graph.pipeline.parallel.map_tasks` needs to hold only the tasks
    in flight (the tasks of the 23,805 overlap fits of a 4,993-frame session, each with the
    stars of its overlap, took 1 GB when made all at once).

    Examples
    --------
    >>> tasks = LazyTasks([1, 2, 3], lambda x: -x)
    >>> len(tasks), list(tasks)
    (3, [-1, -2, -3])
    """

    def __init__(self, items, make):
        self.items, self.make = list(items), make

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return (self.make(item) for item in self.items)
