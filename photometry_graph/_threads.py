"""Worker counts and a thread map shared by the stages that read tiles in threads."""

import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_threads", "check_workers", "thread_map"]


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
    items = list(items)
    workers = check_workers(workers)
    if workers == 1 or len(items) < 2:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(func, items))
