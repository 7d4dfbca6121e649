"""Dispatch of independent tasks (photometry_graph.parallel)."""

import math
import operator

import pytest

import grid_mode
from photometry_graph.options import GridOptions
from photometry_graph.parallel import default_workers, map_tasks


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


def _pid(task):
    import os
    return os.getpid()


def test_a_pool_is_started_only_for_two_tasks_per_worker_or_more():
    import os
    few = dict(map_tasks(_pid, [1, 2], workers=2))          # one worker: runs here
    assert set(few.values()) == {os.getpid()}
    many = dict(map_tasks(_pid, [1, 2, 3, 4], workers=2))   # two worker processes
    assert os.getpid() not in set(many.values())


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


def test_grid_mode_passes_its_options():
    out = list(grid_mode._map_tasks(math.sqrt, [9.0], GridOptions(workers=1)))
    assert out == [(9.0, 3.0)]
