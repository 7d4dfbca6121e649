"""The heap of a dask worker while it runs this program's tasks (``pipeline.heap``)."""

import json
import os
import subprocess
import sys

import pytest

# Runs in a process with a dask worker's MALLOC_TRIM_THRESHOLD_; prints what an 8 MiB array
# makes glibc map on its own (0: it came from the heap) at each step, and the resident
# memory around 100 MiB of freed 1-MiB arrays.
_HEAP_PROBE = """
import ctypes, json, os, threading, time, numpy as np
from photometry_graph.pipeline import heap
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
def mapped():  # bytes mapped on their own for an 8 MiB array
    before = libc.mallinfo2().hblkhd
    x = np.ones(1 << 20)
    m = libc.mallinfo2().hblkhd - before
    del x
    return m
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
IDLE = 1.0
def until(check, seconds=20.0):  # the timer's thread runs when the machine lets it
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
out = {"bare": mapped()}
with heap.reused_heap(idle=IDLE):
    out["inside"] = mapped()
    arrays = [np.ones(1 << 17) for _ in range(100)]  # 100 MiB from the heap
    del arrays
    out["rss_inside"] = rss()
out["between"] = mapped()  # the next task soon after: the heap as the task left it
out["rss_between"] = rss()
until(lambda: mapped() > 0)
out["idle"] = mapped()  # the worker idle: its own settings, the freed memory given back
until(lambda: rss() < out["rss_between"] - (60 << 20))
out["rss_idle"] = rss()
# a task that begins before the idle time is up keeps the heap past the first deadline
with heap.reused_heap(idle=IDLE):
    pass
time.sleep(IDLE / 3)
with heap.reused_heap(idle=IDLE):
    time.sleep(IDLE)
    out["resumed"] = mapped()
with heap.reused_heap(idle=0):
    pass
out["at_once"] = mapped()
# two tasks on two threads: the first one out leaves the other's heap as it was
entered, left, seen = threading.Event(), threading.Event(), []
def first():
    with heap.reused_heap(idle=0):
        entered.set()
        left.wait()
def second():
    entered.wait()
    with heap.reused_heap(idle=0):
        left.set()
        t.join()
        seen.append(mapped())
t = threading.Thread(target=first)
u = threading.Thread(target=second)
t.start(); u.start(); u.join()
out["overlapped"] = seen[0]
out["after_both"] = mapped()
# a child forked while the tasks' settings are in force gets its own back at once
with heap.reused_heap(idle=IDLE):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if mapped() > 0 else 1)
    out["forked_child"] = os.waitpid(pid, 0)[1] == 0
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_cluster_worker_reuses_freed_arrays_until_it_is_idle():
    # a dask worker's MALLOC_TRIM_THRESHOLD_ makes glibc map every array on its own (its
    # pages faulted and zeroed at each use); its tasks take them from the heap, which
    # stays so between tasks; once the worker is idle its own setting is back and the
    # memory its tasks freed is returned to the system
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True,
                         env=dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536"), timeout=120)
    if "mallinfo2" in out.stderr:
        pytest.skip("a C library without mallinfo2")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    eight = 8 << 20
    assert got["bare"] >= eight and got["idle"] >= eight and got["at_once"] >= eight
    assert got["after_both"] >= eight
    assert got["inside"] == got["between"] == got["resumed"] == got["overlapped"] == 0
    assert got["rss_between"] > got["rss_inside"] - (10 << 20)  # kept between tasks
    assert got["rss_idle"] < got["rss_between"] - (60 << 20)  # returned once idle
    assert got["forked_child"]


def test_a_process_without_the_workers_setting_keeps_its_heap(monkeypatch):
    from photometry_graph.pipeline import heap
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setattr(heap, "glibc", lambda: pytest.fail("the heap was changed"))
    with heap.reused_heap():
        pass
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "not a number")
    with heap.reused_heap():
        pass
