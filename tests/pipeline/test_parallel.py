"""Dispatch of independent tasks (photometry_graph.pipeline.parallel)."""

import gzip
import logging
import math
import operator
import os
import signal
import sys

import numpy as np
import pytest

import grid_mode
from photometry_graph.pipeline.options import GridOptions
from photometry_graph._threads import LazyTasks
from photometry_graph.pipeline.parallel import (TASKS_IN_FLIGHT, default_workers, map_tasks,
                                                ordered_map)


def _mutate(task):
    task.append("touched")
    return len(task)


def test_in_process_results_and_failures_come_back_in_order():
    out = list(map_tasks(math.sqrt, [4.0, -1.0, 9.0], workers=1))
    assert [t for t, _ in out] == [4.0, -1.0, 9.0]
    assert out[0][1] == 2.0 and out[2][1] == 3.0
    assert isinstance(out[1][1], ValueError)  # raised by the task, returned, not raised


def test_in_process_tasks_go_through_pickle_like_in_a_worker():
    task = ["a"]
    [(same, result)] = list(map_tasks(_mutate, [task], workers=1))
    assert result == 2 and task == ["a"] and same is task


def test_process_pool_runs_every_task():
    tasks = [4.0, -1.0, 16.0, 25.0]
    out = dict(map_tasks(math.sqrt, tasks, workers=2))
    assert set(out) == set(tasks)
    assert out[16.0] == 4.0 and out[25.0] == 5.0 and isinstance(out[-1.0], ValueError)


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_map_keeps_the_order_and_puts_exceptions_in_place(workers):
    tasks = [9.0, -1.0, 4.0, 9.0, 16.0, 1.0]  # a task met twice
    out = ordered_map(math.sqrt, tasks, workers=workers)
    assert out[0] == out[3] == 3.0 and out[2] == 2.0 and out[4] == 4.0 and out[5] == 1.0
    assert isinstance(out[1], ValueError)
    assert ordered_map(math.sqrt, [], workers=workers) == []


def _pid(task):
    import os
    return os.getpid()


def test_a_pool_is_started_only_for_two_tasks_per_worker_or_more():
    import os
    few = dict(map_tasks(_pid, [1, 2], workers=2))          # one worker: runs here
    assert set(few.values()) == {os.getpid()}
    many = dict(map_tasks(_pid, [1, 2, 3, 4], workers=2))   # two worker processes
    assert os.getpid() not in set(many.values())


def _die_in_a_worker(task):
    import os
    parent, value = task
    if os.getpid() != parent:
        os._exit(3)  # the worker process dies: the pool is broken
    return value * 10


def test_a_broken_pool_falls_back_to_this_process_with_a_warning(caplog):
    import os
    tasks = [(os.getpid(), v) for v in range(6)]
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        out = list(map_tasks(_die_in_a_worker, tasks, workers=2))
    assert sorted(r for _, r in out) == [0, 10, 20, 30, 40, 50]
    assert sorted(t for t, _ in out) == tasks
    assert any("[GRID]" in r.getMessage() and "worker processes died" in r.getMessage()
               and "__main__" in r.getMessage() for r in caplog.records)


def test_a_broken_pool_names_the_source_files_changed_during_the_run(caplog, monkeypatch,
                                                                      tmp_path):
    # an upgrade in place while a run goes on: the workers started later load the new main
    # script against the old modules and fail to start; the warning says which files
    # changed (none in a run whose files are as they were when it began)
    import os
    import sys
    import time
    import types

    from photometry_graph.pipeline import parallel
    assert parallel.changed_sources(since=time.time() + 3600) == []
    assert parallel.__file__ in parallel.changed_sources(since=0.0)
    # the run began an hour from now: the files of this checkout are older, whatever
    # happens to them while the tests run; one module is edited after that, one removed
    monkeypatch.setattr(parallel, "_LOADED", time.time() + 3600)
    assert parallel.changed_sources() == []
    edited = tmp_path / "stage_edited.py"
    edited.write_text("x = 1\n")
    later = parallel._LOADED + 5.0
    os.utime(edited, (later, later))
    module = types.ModuleType("photometry_graph._edited_during_the_run")
    module.__file__ = str(edited)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    gone = types.ModuleType("photometry_graph._removed_during_the_run")
    gone.__file__ = str(tmp_path / "removed.py")
    monkeypatch.setitem(sys.modules, gone.__name__, gone)
    assert parallel.changed_sources() == sorted([str(edited), gone.__file__])
    tasks = [(os.getpid(), v) for v in range(6)]
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        out = list(map_tasks(_die_in_a_worker, tasks, workers=2))
    assert sorted(r for _, r in out) == [0, 10, 20, 30, 40, 50]
    text = [r.getMessage() for r in caplog.records if "worker processes died" in r.getMessage()]
    assert len(text) == 1 and "2 source file(s) of the program changed during the run " \
        "(removed.py, stage_edited.py)" in text[0]


def test_a_pool_that_breaks_with_tasks_still_unsent_runs_them_all_here(caplog):
    import os
    made = []
    tasks = LazyTasks(range(40), lambda v: made.append(v) or (os.getpid(), v))
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        out = list(map_tasks(_die_in_a_worker, tasks, workers=2))
    assert sorted(r for _, r in out) == [10 * v for v in range(40)]
    assert sorted(made) == list(range(40))  # each task made once, sent or not
    assert sum("worker processes died" in r.getMessage() for r in caplog.records) == 1


def test_a_pool_holds_only_the_tasks_in_flight():
    # tasks made as they are sent: a long pass (the overlap fits of thousands of frames)
    # never holds all of them at once
    made, seen = [], []
    tasks = LazyTasks(range(60), lambda v: made.append(v) or v)
    for task, result in map_tasks(abs, tasks, workers=2):
        seen.append(result)
        assert len(made) - len(seen) <= TASKS_IN_FLIGHT * 2
    assert sorted(seen) == list(range(60)) and len(made) == 60
    assert ordered_map(operator.neg, LazyTasks(range(30), lambda v: v), workers=2) == \
        [-v for v in range(30)]


def _thread_counts(task):
    import os

    import cv2

    from photometry_graph.pipeline.parallel import THREAD_ENV, _openblas_controls
    return (os.getpid(), cv2.getNumThreads(), [get() for _, get in _openblas_controls()],
            {k: os.environ.get(k) for k in THREAD_ENV})


def _frozen(task):
    import gc
    import os
    return os.getpid(), gc.get_freeze_count()


def test_pool_workers_keep_what_they_inherit_out_of_the_collectors_reach():
    # a full collection (one a tile) no longer walks the modules' objects, nor writes to
    # their pages shared with the server
    import gc
    import os
    before = gc.get_freeze_count()
    out = dict(map_tasks(_frozen, [1, 2, 3, 4], workers=2))
    assert not [r for r in out.values() if isinstance(r, BaseException)]
    assert os.getpid() not in {pid for pid, _ in out.values()}  # ran in worker processes
    assert all(frozen > 1000 for _, frozen in out.values())
    assert gc.get_freeze_count() == before  # this process is left as it was


def test_pool_workers_run_opencv_and_blas_on_one_thread():
    import os

    import cv2

    from photometry_graph.pipeline.parallel import THREAD_ENV, _openblas_controls
    before = _thread_counts(None)
    out = dict(map_tasks(_thread_counts, [1, 2, 3, 4], workers=2))
    assert not [r for r in out.values() if isinstance(r, BaseException)]
    assert os.getpid() not in {pid for pid, *_ in out.values()}  # ran in worker processes
    for _, cv_threads, blas_threads, env in out.values():
        assert cv_threads == 1
        assert set(blas_threads) <= {1}  # numpy's, scipy's, OpenCV's OpenBLAS ...
        assert blas_threads or not sys.platform.startswith("linux")  # ... found on Linux
        assert env == dict.fromkeys(THREAD_ENV, "1")
    assert _thread_counts(None) == before  # this process is left as it was
    assert cv2.getNumThreads() == before[1]
    assert [get() for _, get in _openblas_controls()] == before[2]


def test_in_process_run_keeps_the_thread_settings():
    # a task run here runs on one thread, as in a worker (OpenCV's warps give the same
    # bits only so); the process's settings are restored after it
    before = _thread_counts(None)
    [(_, here)] = list(map_tasks(_thread_counts, [1], workers=2))  # one task: runs here
    assert here[0] == before[0] and here[1] == 1 and set(here[2]) <= {1}
    assert _thread_counts(None) == before


def _block(k):
    return np.full(1000, float(k))


def test_a_result_is_not_held_once_it_is_handed_over():
    # the caller may drop a result as it arrives (a binned frame written to disk): the
    # pool keeps no reference to it, so the results of a long pass never pile up
    import gc
    import weakref
    refs = []
    for _, result in map_tasks(_block, list(range(8)), workers=2):
        refs.append(weakref.ref(result))
        del result
        gc.collect()
        assert sum(r() is not None for r in refs[:-1]) == 0  # every earlier one is gone


def test_no_tasks_and_default_workers():
    assert list(map_tasks(abs, [], workers=3)) == []
    assert 1 <= default_workers() <= 4


def test_dask_client_is_used_and_left_open():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=None) as client:
        out = dict(map_tasks(operator.neg, [1, 2], scheduler=client))
        assert out == {1: -1, 2: -2}
        assert client.status == "running"
        by_address = dict(map_tasks(operator.neg, [3], scheduler=client.scheduler.address))
        assert by_address == {3: -3}


def _fails_on_two(x):
    if x == 2:
        raise ValueError("two")
    return -x


def test_dask_tasks_reach_the_workers_as_bytes_that_run_when_unpickled(caplog):
    # the scheduler sees `pickle.loads` of bytes (scattered by a client of the package,
    # inline with a client given by the caller): no function of the package to import;
    # the task runs on a copy (the pickle round trip of a local run), a task's exception
    # comes back as its result, and a lambda travels too (cloudpickle)
    distributed = pytest.importorskip("dask.distributed")
    import pickle

    from photometry_graph.pipeline import cluster as cluster_mod
    task = {"values": np.arange(3.0)}
    call = pickle.loads(cluster_mod._pickled(operator.itemgetter("values"), task))
    assert np.array_equal(call, task["values"]) and call is not task["values"]
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        for client, scattered in ((cluster_mod._client(cluster.scheduler_address), True),
                                  (distributed.Client(cluster), False)):
            with client:
                futures, direct = cluster_mod._submit_all(client, _fails_on_two, [1, 2, 3])
                assert direct == scattered and sorted(futures.values()) == [0, 1, 2]
                distributed.wait(list(futures))
                for fut in futures:  # pickle.loads of one piece, scattered or inline
                    spec = client.run_on_scheduler(
                        lambda dask_scheduler, key=fut.key: dask_scheduler.tasks[key].run_spec)
                    assert spec.func is pickle.loads
                    assert len(spec.dependencies) == (1 if scattered else 0)
                out = dict(map_tasks(_fails_on_two, [1, 2, 3], scheduler=client))
                assert out[1] == -1 and out[3] == -3 and isinstance(out[2], ValueError)
                assert ordered_map(lambda x: x + 1, [1, 2], scheduler=client) == [2, 3]
                # no task (e.g. a mosaic's overlaps all fitted in this process): nothing is
                # sent, nor scattered (dask refuses to scatter an empty list)
                with caplog.at_level(logging.DEBUG, logger="photometry_graph"):
                    assert cluster_mod._submit_all(client, _fails_on_two, []) == ({}, False)
                    assert ordered_map(_fails_on_two, [], scheduler=client) == []
                assert "not scattered" not in caplog.text


def _adds_one(task):
    task["shared"]["n"] += 1
    return task["shared"]["n"]


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not picklable")


def _raises_unpicklable(x):
    if x == 3:
        raise _Unpicklable("three")
    return -x


def test_dask_tasks_go_in_batches_each_task_with_its_own_result(monkeypatch):
    # a cluster's task costs the calling process ~3 ms: many light tasks (overlap fits) go
    # a few to a cluster task (every k-th task: the largest tiles first spread over the
    # batches), each task pickled on its own as a pool's; a task that raises, even an
    # exception that cannot be pickled, leaves the others of its batch alone
    distributed = pytest.importorskip("dask.distributed")
    from photometry_graph.pipeline import cluster as cluster_mod
    assert cluster_mod.cluster_batches(40, 1) == [list(range(k, 40, 8)) for k in range(8)]
    assert len(cluster_mod.cluster_batches(1000, 2)[0]) == cluster_mod.CLUSTER_BATCH
    assert cluster_mod.cluster_batches(0, 2) == []
    sent, submit_all = [], cluster_mod._submit_all
    monkeypatch.setattr(cluster_mod, "_submit_all",
                        lambda client, func, tasks: sent.append(tasks) or submit_all(
                            client, func, tasks))
    shared = {"n": 0}  # one object in every task: each task gets its own copy of it
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        with cluster_mod._client(cluster.scheduler_address) as client:
            out = dict(map_tasks(_fails_on_two, list(range(1, 41)), scheduler=client))
            assert ordered_map(operator.neg, [5, 6, 7], scheduler=client) == [-5, -6, -7]
            tasks = [{"shared": shared} for _ in range(40)]
            assert ordered_map(_adds_one, tasks, scheduler=client) == [1] * 40
            odd = ordered_map(_raises_unpicklable, list(range(1, 41)), scheduler=client)
            # a task that only cloudpickle can pickle travels too
            assert ordered_map(lambda t: t["f"](3), [{"f": lambda x: x * x}],
                               scheduler=client) == [9]
    assert [len(b) for b in sent[0]] == [5] * 8 and [len(b) for b in sent[1]] == [1] * 3
    assert sorted(out) == list(range(1, 41)) and isinstance(out[2], ValueError)
    assert all(out[k] == -k for k in out if k != 2) and shared == {"n": 0}
    assert isinstance(odd[2], RuntimeError) and "_Unpicklable: three" in str(odd[2])
    assert [v for k, v in enumerate(odd) if k != 2] == [-x for x in range(1, 41) if x != 3]


@pytest.mark.slow
def test_tasks_lost_with_a_dask_worker_run_again():
    # a worker that dies takes the tasks scattered to it: each is sent once more, with
    # its bytes, and every result comes back
    distributed = pytest.importorskip("dask.distributed")
    import threading
    import time
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        victim = list(cluster.workers.values())[0]

        def kill_soon():
            time.sleep(1.5)
            os.kill(victim.process.process.pid, 9)
        threading.Thread(target=kill_soon, daemon=True).start()
        out = ordered_map(time.sleep, [3.0] * 4, scheduler=cluster.scheduler_address)
    assert out == [None] * 4


def _exits_on_three(x):
    if x == 3:
        os._exit(1)  # the worker dies with the batch it runs
    return -x


@pytest.mark.slow
def test_a_dask_batch_lost_with_its_worker_runs_again_one_task_a_time():
    # the batch of a task that kills its worker is lost as a whole: its other tasks run
    # again on their own and come back; the killer alone gets the cluster's error
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        out = ordered_map(_exits_on_three, list(range(1, 21)),
                          scheduler=cluster.scheduler_address)
    assert isinstance(out[2], Exception)
    assert [v for k, v in enumerate(out) if k != 2] == [-x for x in range(1, 21) if x != 3]


def test_a_cluster_session_shares_one_client_and_warms_the_workers(monkeypatch):
    # every map_tasks call on the address within the block goes through the block's
    # client (no other is made); the workers import the preloaded module at once; the
    # client closes after
    distributed = pytest.importorskip("dask.distributed")
    import time
    from photometry_graph.pipeline import cluster as cluster_mod
    sys.modules.pop("colorsys", None)  # a module nothing here imports

    class NoNewClient(distributed.Client):
        def __init__(self, *args, **kwargs):
            raise AssertionError("map_tasks made a client of its own")
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        with cluster_mod.cluster_session(address, preload=("colorsys",)) as client:
            assert cluster_mod._SESSION.get() == (address, client)
            with monkeypatch.context() as m:
                m.setattr(distributed, "Client", NoNewClient)
                for k in range(3):
                    assert dict(map_tasks(operator.neg, [k + 1], scheduler=address)) == {
                        k + 1: -(k + 1)}
            assert client.status == "running"
            deadline = time.monotonic() + 20
            while "colorsys" not in sys.modules and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "colorsys" in sys.modules  # the in-process worker imported it
        assert cluster_mod._SESSION.get() is None and client.status == "closed"
    with cluster_mod.cluster_session(None) as nothing:
        assert nothing is None


def test_the_workers_server_starts_early_only_when_a_pool_will_run():
    from photometry_graph.pipeline.parallel import start_workers_early
    assert start_workers_early(operator.neg, 1, 100) is None  # runs in this process
    assert start_workers_early(operator.neg, 2, 2) is None  # too few tasks for a pool
    from multiprocessing import forkserver
    from photometry_graph.pipeline.parallel import stop_workers_early
    thread = start_workers_early(operator.neg, 2, 6)
    if thread is None:  # no forkserver on this platform
        pytest.skip("no forkserver start method")
    thread.join(60)
    assert not thread.is_alive() and forkserver._forkserver._forkserver_pid is not None
    assert ordered_map(operator.neg, range(6), workers=2) == [0, -1, -2, -3, -4, -5]
    stop_workers_early(thread)  # a plan that keeps the run in this process stops it
    assert forkserver._forkserver._forkserver_pid is None
    assert ordered_map(operator.neg, range(6), workers=2) == [0, -1, -2, -3, -4, -5]


def test_frames_read_by_workers_are_those_read_here(tmp_path, frame_factory, caplog):
    good = [frame_factory(f"g{k}.fits", crval=(150.0 + 0.003 * k, 20.0)) for k in range(3)]
    (tmp_path / "text.fits").write_text("this is not a FITS file\n")
    entries = [grid_mode.PlanEntry(path=p, exposure=5.0) for p in
               [good[0], tmp_path / "missing.fits", good[1], tmp_path / "text.fits", good[2]]]
    runs = {}
    for workers in (1, 2):  # 2: five frames, so two worker processes
        caplog.clear()
        with caplog.at_level(logging.WARNING):  # headers here, pixels in the workers
            frames, _, plan, *_ = grid_mode._frames_stage(entries, GridOptions(workers=workers),
                                                         grid_mode._Progress())
        assert plan.workers == workers
        runs[workers] = frames, [r.getMessage() for r in caplog.records]
    (one, warned_one), (two, warned_two) = runs[1], runs[2]
    assert [f.path for f in two] == [f.path for f in one] == [str(p) for p in good]
    assert [f.index for f in two] == [0, 1, 2]
    assert [(f.noise, f.exptime, f.shape) for f in two] == [(f.noise, f.exptime, f.shape)
                                                            for f in one]
    assert all((f.wcs.wcs.crval == g.wcs.wcs.crval).all() for f, g in zip(one, two))
    assert warned_two == warned_one and len(warned_two) == 2
    assert warned_two[0].startswith("[GRID] skipping ") and "missing.fits: the file" in \
        warned_two[0]
    assert "text.fits: it is not a readable FITS image" in warned_two[1]


def test_grid_mode_passes_its_options():
    out = list(grid_mode._map_tasks(math.sqrt, [9.0], GridOptions(workers=1)))
    assert out == [(9.0, 3.0)]


def _sleep_and_report(task):
    import os
    import signal
    import time
    folder, seconds = task
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())
    (folder / f"{os.getpid()}.pid").write_text(f"{int(blocked)}")
    time.sleep(seconds)
    return os.getpid()


def _gone(pids, seconds):
    import time

    import psutil

    def alive(pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # gone, perhaps while it was looked at
            return False

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in pids if alive(p)]:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signal masks: POSIX")
def test_closing_the_results_cancels_the_queue_and_kills_the_workers(tmp_path):
    import contextlib
    import time
    tasks = [(tmp_path, 0.0)] + [(tmp_path, 30.0)] * 5  # 75 s if the queue were waited for
    t0 = time.monotonic()
    with contextlib.closing(map_tasks(_sleep_and_report, tasks, workers=2)) as results:
        assert next(results)[0] == tasks[0]
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() - t0 < 20:
            time.sleep(0.05)  # both workers busy with a 30 s task
    assert time.monotonic() - t0 < 15
    pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 2 and _gone(pids, 5)
    # the workers started with SIGINT blocked: a Ctrl-C of the terminal is for the parent
    assert {p.read_text() for p in tmp_path.glob("*.pid")} == {"1"}


_SCRIPT = """
import pathlib, sys
from photometry_graph.launch import start_server
from photometry_graph.pipeline.parallel import map_tasks
sys.path.insert(0, {tests!r})
from test_parallel import _sleep_and_report
if __name__ == "__main__":
    if {server!r}:
        start_server("photometry_graph.pipeline.pieces").join()  # as the command does
    folder = pathlib.Path({folder!r})
    for _ in map_tasks(_sleep_and_report, [(folder, {seconds!r})] * 4, workers=2):
        pass
"""


def _script(folder, seconds, server=False):
    """A script that maps :func:`_sleep_and_report` over 4 tasks on 2 workers (``server``:
    started first as the command starts it), and its environment."""
    import os
    script = folder / "parent.py"
    script.write_text(_SCRIPT.format(tests=os.path.dirname(__file__), folder=str(folder),
                                     seconds=float(seconds), server=server))
    return [sys.executable, str(script)], dict(os.environ,
                                               PYTHONPATH=os.pathsep.join(sys.path))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signal masks: POSIX")
def test_workers_start_with_sigint_blocked_in_a_fresh_process(tmp_path):
    # multiprocessing's resource tracker, started with the workers' server, unblocks SIGINT
    # in the thread that starts it: it is started before SIGINT is blocked there
    import subprocess
    cmd, env = _script(tmp_path, 0.0, server=True)
    subprocess.run(cmd, check=True, timeout=120, env=env)
    flags = [p.read_text() for p in tmp_path.glob("*.pid")]
    assert flags and set(flags) == {"1"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kill -9: POSIX")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import time
    cmd, env = _script(tmp_path, 60.0)
    proc = subprocess.Popen(cmd, env=env)
    try:
        t0 = time.monotonic()
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert len(pids) == 2
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its process group
        proc.wait(10)
        assert _gone(pids, 3)  # no orphan goes on working (60 s tasks)
    finally:
        proc.kill()
        proc.wait()


def test_the_workers_start_early_only_for_frames_the_plan_gives_to_a_pool(tmp_path):
    # before the headers: the file sizes stand for the pixels (2 bytes each), or the
    # workers option says it
    from photometry_graph.launch import IN_PROCESS_PIXELS, pixel_bytes, pool_likely
    small, big = tmp_path / "small.fits", tmp_path / "big.fits"
    small.write_bytes(b"\0" * 2880 * 10)
    with open(big, "wb") as fh:  # sparse: the size without the bytes
        fh.truncate(int(IN_PROCESS_PIXELS * 2) + 2880)
    paths = [small, tmp_path / "missing.fits"]
    assert not pool_likely(paths)
    assert pool_likely(paths, workers=2)
    paths.append(big)
    assert pool_likely(paths)
    assert not pool_likely(paths, workers=1)
    # the bytes of a pixel from the first readable frame: float32 RGB planes, 12 bytes;
    # int16 planes, gzip-compressed, 2 bytes; float64, 8 bytes
    from astropy.io import fits
    cube, gz, wide = tmp_path / "cube.fits", tmp_path / "planes.fits.gz", tmp_path / "w.fit"
    fits.PrimaryHDU(np.zeros((3, 8, 8), np.float32)).writeto(cube)
    fits.PrimaryHDU(np.zeros((1, 8, 8), np.int16)).writeto(gz)
    fits.PrimaryHDU(np.zeros((8, 8)), fits.Header([("HISTORY", "x")] * 40)).writeto(wide)
    assert pixel_bytes([tmp_path / "missing.fits", cube]) == 12
    assert pixel_bytes([gz]) == 2 and pixel_bytes([wide]) == 8
    assert pixel_bytes(paths) == 2  # none is a FITS file: the default
    broken = tmp_path / "broken.fits.gz"  # a damaged deflate stream, then a named pipe
    packed = gzip.compress(np.random.default_rng(0).bytes(20000))
    broken.write_bytes(packed[:10] + b"\x07" + packed[11:])  # zlib.error when read
    pipe = tmp_path / "pipe.fits"
    os.mkfifo(pipe)
    assert pixel_bytes([broken, pipe, cube]) == 12  # skipped, not raised nor waited for
    # without astropy: the same as its reading of the header
    assert fits.getheader(cube)["BITPIX"] == -32 and fits.getheader(cube)["NAXIS3"] == 3


def test_tile_boxes_are_read_from_the_primary_headers(tmp_path):
    from astropy.io import fits

    from photometry_graph.launch import tile_boxes

    def tile(name, data, **cards):
        hdu = fits.PrimaryHDU(data)
        hdu.header.update(cards)
        hdu.writeto(tmp_path / name)
        return tmp_path / name
    cube = tile("cube.fits", np.zeros((3, 8, 5), np.float32), GRID_Y0=10, GRID_X0=20)
    gz = tile("t.fits.gz", np.zeros((6, 7), np.float32), GRID_Y0=0, GRID_X0=3)
    plain = tile("plain.fits", np.zeros((6, 7), np.float32))  # not a tile: no GRID_*
    empty = tmp_path / "empty.fits"
    primary = fits.PrimaryHDU()
    primary.header.update(GRID_Y0=0, GRID_X0=0)  # a tile's keywords, but no image there
    fits.HDUList([primary, fits.ImageHDU(np.zeros((9, 9)))]).writeto(empty)
    empty_header = fits.getheader(empty)
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"not a FITS file" * 300)
    pipe = tmp_path / "pipe.fits"
    os.mkfifo(pipe)
    assert empty_header["NAXIS"] == 0 and empty_header["GRID_X0"] == 0
    assert tile_boxes([cube, gz]) == [(10, 18, 20, 25), (0, 6, 3, 10)]  # the image plane
    # not a tile, no image in the primary header, unreadable, missing, a pipe (never
    # waited for): None
    assert tile_boxes([plain, empty, junk, tmp_path / "missing.fits", pipe]) == [None] * 5


def test_the_command_starts_the_workers_server_for_a_pooled_run_only(tmp_path, monkeypatch):
    from multiprocessing import forkserver

    from photometry_graph import launch
    from photometry_graph.pipeline.parallel import stop_workers_early
    monkeypatch.setattr(launch, "_started", None)
    for k in range(3):
        with open(tmp_path / f"f{k}.fits", "wb") as fh:
            fh.truncate(int(launch.IN_PROCESS_PIXELS))  # 2 bytes a pixel: 1.5x the rule
    for args in (["run", str(tmp_path), "out", "--scheduler", "tcp://x:1"],
                 ["run", str(tmp_path), "out", "--workers=1"], ["assemble", str(tmp_path)],
                 ["run", str(tmp_path / "missing"), "out"], ["run"]):
        launch._start_for(args)
        assert launch.take_started_server() is None, args
    launch._start_for(["run", str(tmp_path), "out", "--memory-mb", "800"])
    thread = launch.take_started_server()
    assert launch.take_started_server() is None  # handed over once
    if thread is None:  # no forkserver on this platform
        pytest.skip("no forkserver start method")
    thread.join(60)
    assert forkserver._forkserver._forkserver_pid is not None
    stop_workers_early(thread)
    assert forkserver._forkserver._forkserver_pid is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are Linux's")
def test_a_pools_task_pipe_holds_a_whole_overlap_fit():
    # the next task (~1.5 MB for an overlap fit) is written while the workers compute
    import concurrent.futures
    import fcntl
    from photometry_graph.pipeline.parallel import TASK_PIPE_BYTES, _grow_task_pipe
    pool = concurrent.futures.ProcessPoolExecutor(1)
    try:
        fd = pool._call_queue._writer.fileno()
        before = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
        _grow_task_pipe(pool)
        assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) >= TASK_PIPE_BYTES > before
        _grow_task_pipe(object())  # an executor without that pipe: nothing happens
    finally:
        pool.shutdown()


@pytest.mark.skipif("forkserver" not in __import__("multiprocessing").get_all_start_methods(),
                    reason="no forkserver here")
def test_the_workers_server_preloads_the_libraries_of_the_tasks():
    # the star estimate's scipy modules: imported once by the server, not by every worker
    from multiprocessing import forkserver
    from photometry_graph.launch import WORKER_LIBRARIES
    from photometry_graph.pipeline.parallel import _context
    from photometry_graph.pipeline.pieces import frame_pass
    _context(frame_pass)
    assert forkserver._forkserver._preload_modules == [frame_pass.__module__,
                                                       *WORKER_LIBRARIES]
    assert {"scipy.optimize", "scipy.spatial"} <= set(WORKER_LIBRARIES)


def _unguarded_lines(run):
    """``run()`` traced: the lines of the futures', the pool's and threading's code that it
    runs in this thread with the stop signals not deferred, and what it returned."""
    import threading
    from concurrent.futures import _base, process
    files = {_base.__file__, process.__file__, threading.__file__}
    # Python's handler, as an interactive run has it (a shell starts a background job
    # with SIGINT ignored, and Python then installs none)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    handler, unguarded = signal.getsignal(signal.SIGINT), []
    # and whatever these run: which thread this is (the deferral asks); the join of the
    # pool's thread at the end (it handles a Ctrl-C itself: the wait stops); the pool's
    # callback when it is collected (lock-free)
    lockless = {"current_thread", "main_thread", "join", "weakref_cb"}

    def within(frame):
        while frame is not None:
            if frame.f_code.co_name in lockless and frame.f_code.co_filename in files:
                return True
            frame = frame.f_back
        return False

    def lines(frame, event, arg):
        if (event == "line" and signal.getsignal(signal.SIGINT) is handler
                and not within(frame)):
            unguarded.append((os.path.basename(frame.f_code.co_filename),
                              frame.f_code.co_name, frame.f_lineno))
        return lines

    tracer = sys.gettrace()  # coverage's or a debugger's, put back after
    sys.settrace(lambda frame, event, arg: lines if frame.f_code.co_filename in files
                 else None)
    try:
        got = run()
    finally:
        sys.settrace(tracer)
        signal.signal(signal.SIGINT, previous)
    return unguarded, got


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="signal masks: POSIX")
def test_the_locks_of_the_pool_and_its_futures_are_taken_with_ctrl_c_deferred():
    # A Ctrl-C raises in the calling thread between any two lines of Python.  One that lands
    # while that thread holds a lock of a future or of the pool leaves it held: the pool's
    # thread then waits for it forever, and the interpreter for that thread at exit (a run
    # stopped by Ctrl-C hung so, seen in ~1 of 60 runs).  Every line of that code run in this
    # thread must run with the stop signals deferred: through a whole run, and a run whose
    # caller stops reading (the queued tasks cancelled, as after a Ctrl-C).
    import contextlib
    import time
    whole, out = _unguarded_lines(lambda: sorted(
        result for _, result in map_tasks(abs, [-1, -2, -3, -4, -5], workers=2)))
    assert out == [1, 2, 3, 4, 5]
    assert whole == []

    def first_of_many():
        with contextlib.closing(map_tasks(time.sleep, [0.05] * 40, workers=2)) as results:
            return next(results)

    stopped, (task, result) = _unguarded_lines(first_of_many)
    assert (task, result) == (0.05, None)
    assert stopped == []


def test_a_signal_while_the_handlers_are_swapped_leaves_none_swapped(monkeypatch):
    # the handlers of the stop signals are swapped one by one: a SIGTERM whose handler
    # raises between two swaps (the command's first stop) must not leave Ctrl-C recorded
    # and never acted on
    from photometry_graph.pipeline import parallel
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    swap, seen = signal.signal, []

    def struck(signum, handler):
        seen.append(signum)
        if signum == signal.SIGTERM and seen.count(signum) == 1:
            raise KeyboardInterrupt  # the SIGTERM's handler ran there
        return swap(signum, handler)

    try:
        swap(signal.SIGINT, signal.default_int_handler)
        swap(signal.SIGTERM, signal.default_int_handler)
        monkeypatch.setattr(signal, "signal", struck)
        with pytest.raises(KeyboardInterrupt):
            with parallel._signals_deferred():
                pass
        monkeypatch.undo()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.SIGINT in seen  # it was swapped before the SIGTERM struck
    finally:
        monkeypatch.undo()
        for s, handler in previous.items():
            signal.signal(s, handler)
