"""The thread map of the stages: the serial loop's results, in order, on any thread count."""

import gc
import threading
import weakref

import pytest

from photometry_graph._threads import thread_imap, thread_map


class _Box:
    def __init__(self, value):
        self.value = value


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_thread_imap_gives_the_serial_results_in_order(workers):
    items = [5, -3, 8, 0, -1, 7, 2]
    assert list(thread_imap(lambda x: x * x - x, items, workers)) == [x * x - x for x in items]
    assert thread_map(abs, items, workers) == [abs(x) for x in items]
    assert list(thread_imap(abs, [], workers)) == []


def test_thread_imap_runs_on_one_thread_in_the_caller():
    seen = list(thread_imap(lambda _: threading.get_ident(), range(4), 1))
    assert set(seen) == {threading.get_ident()}
    seen = list(thread_imap(lambda _: threading.get_ident(), range(8), 2))
    assert threading.get_ident() not in seen


@pytest.mark.parametrize("workers", [1, 2])
def test_thread_imap_lets_a_result_go_once_taken(workers):
    # a caller that merges the results as they come holds one at a time
    refs, alive = [], []
    for box in thread_imap(_Box, range(6), workers):
        gc.collect()
        alive.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(box))
        del box
    assert alive == [0] * 6


@pytest.mark.parametrize("workers", [1, 2])
def test_thread_imap_raises_the_first_failure_in_order(workers):
    def func(x):
        if x in (3, 5):
            raise ValueError(f"item {x}")
        return x

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for value in thread_imap(func, range(8), workers):
            got.append(value)
    assert got == [0, 1, 2]


def test_thread_imap_refuses_a_bad_worker_count():
    with pytest.raises(ValueError, match="positive integer"):
        list(thread_imap(abs, [1, 2], 0))
