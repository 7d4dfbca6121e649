"""The memory plan of a run (photometry_graph.pipeline.budget): processes and buffers within
``memory_mb``, fewer workers or more binning where needed, a clear refusal otherwise."""

import re

import pytest

from photometry_graph.pipeline.budget import (MB, SERVER_MB, SOLVE_MB, SOLVE_PER_BINNED,
                                              SOLVE_TASK_MB, WORKER_MB, MAIN_GROWTH_MB,
                                              MIN_STACK_MB, PLANNED_SHARE, plan_memory,
                                              process_pss_bytes, ASSEMBLY_BYTES_PER_PIXEL,
                                              ASSEMBLY_MB, STREAM_BAND_BYTES)
from photometry_graph.pipeline.images import FrameInfo
from photometry_graph.pipeline.options import GridModeError


def _frames(n, shape=(1080, 1920), channels=1, bayer=None):
    return [FrameInfo(index=k, path=f"f{k}.fits", hdu=0, shape=shape,
                      layout="bayer" if bayer else "mono", n_channels=channels, wcs=None,
                      bayer=bayer) for k in range(n)]


def _total(plan, base):
    """The budget the plan spends: the program, the worker processes, their shares."""
    n = plan.workers
    processes = 0 if n == 1 else (SERVER_MB + n * WORKER_MB) * MB
    return base + MAIN_GROWTH_MB * MB + processes + n * plan.details["worker_mb"] * MB


@pytest.mark.parametrize("memory_mb,workers", [(1024, 2), (600, 2), (400, 1)])
def test_the_plan_spends_the_budget_and_no_more(memory_mb, workers):
    base = 90 * MB
    plan = plan_memory(memory_mb, _frames(120), 1862, workers=2, baseline_bytes=base)
    assert plan.workers == workers
    assert _total(plan, base) <= memory_mb * MB * (1 + 1e-9)
    assert plan.stack_bytes > 0 and plan.bin_factor == 4
    assert plan.details["memory_mb"] == memory_mb


@pytest.mark.parametrize("memory_mb", [1024, 600, 420, 400])
def test_the_overlap_fits_run_in_workers_only_where_the_budget_holds_them(memory_mb):
    base = 90 * MB
    plan = plan_memory(memory_mb, _frames(120), 1862, workers=2, baseline_bytes=base)
    assert 1 <= plan.solve_workers <= plan.workers
    assert plan.details["solve_workers"] == plan.solve_workers
    if plan.solve_workers > 1:  # the solve's memory and the workers' fits fit together
        binned = plan.details["binned_mb"] * MB * 1.25  # mono: + a byte of mask per 4
        solve = SOLVE_MB * MB + SOLVE_PER_BINNED * min(binned, 120 * MB)
        held = base + MAIN_GROWTH_MB * MB + SERVER_MB * MB + solve
        assert held + plan.solve_workers * (WORKER_MB + SOLVE_TASK_MB) * MB \
            <= PLANNED_SHARE * memory_mb * MB
    if memory_mb == 1024:
        assert plan.solve_workers == 2
    if plan.workers == 1:
        assert plan.solve_workers == 1


def test_binned_frames_that_do_not_fit_go_to_disk_at_the_same_binning():
    few = plan_memory(1024, _frames(100), 2048, workers=2, baseline_bytes=90 * MB)
    many = plan_memory(1024, _frames(5000), 2048, workers=2, baseline_bytes=90 * MB)
    small = plan_memory(384, _frames(100), 2048, workers=2, baseline_bytes=90 * MB)
    assert not few.spill and many.spill and small.spill
    assert few.bin_factor == many.bin_factor == small.bin_factor == 4
    assert not plan_memory(1024, _frames(5000), 2048, frame_photometry=False,
                           baseline_bytes=90 * MB).spill


def test_a_cluster_run_assembles_on_the_threads_asked_for_where_they_fit():
    # a dask run plans no worker process here; its assembly runs here all the same
    kw = dict(workers=1, baseline_bytes=90 * MB, tiles_bytes=100 * MB)
    one = plan_memory(1024, _frames(120), 1862, **kw)
    two = plan_memory(1024, _frames(120), 1862, threads=2, **kw)
    assert one.workers == two.workers == 1 and one.assembly_threads == 1
    assert two.assembly_threads == 2 and two.assembly_chunk == one.assembly_chunk
    # chunks of two threads that do not fit: fewer threads, never a larger share
    tight = plan_memory(600, _frames(120), 1862, threads=8, **kw)
    left = (PLANNED_SHARE * 600 * MB - (90 + MAIN_GROWTH_MB) * MB - (ASSEMBLY_MB + 100) * MB
            - 2 * STREAM_BAND_BYTES)  # what the threads' chunks may take
    per_thread = tight.assembly_chunk ** 2 * ASSEMBLY_BYTES_PER_PIXEL
    assert tight.assembly_chunk == 1024 and 1 <= tight.assembly_threads < 8
    assert tight.assembly_threads * per_thread <= left < (tight.assembly_threads + 1) * per_thread


def test_colour_frames_need_more_and_a_budget_too_small_is_refused_with_what_it_needs():
    mono = plan_memory(500, _frames(40), 2048, workers=2, baseline_bytes=120 * MB)
    rgb = plan_memory(500, _frames(40, channels=3, bayer="RGGB"), 2048, workers=2,
                      baseline_bytes=120 * MB)
    assert rgb.workers <= mono.workers and rgb.stack_bytes < mono.stack_bytes
    with pytest.raises(GridModeError, match=r"memory_mb=150 is too small.*raise --memory-mb "
                                            r"to (\d+)"):
        plan_memory(150, _frames(40, channels=3, bayer="RGGB"), 2048,
                    baseline_bytes=120 * MB)


def test_the_process_memory_is_measured():
    assert 10 * MB < process_pss_bytes() < 4096 * MB


def test_the_tiles_are_planned_again_from_what_the_process_holds_then():
    from photometry_graph.pipeline.budget import plan_tiles
    here = process_pss_bytes() / MB
    roomy = plan_tiles(here + 2048, _frames(120), 1862, workers=2)
    assert roomy.workers == 2 and roomy.stack_bytes > 500 * MB
    # less than this process already holds (and than one process needs, however much a
    # long test session holds): one process, the least stacking memory, warned
    budget = min(here / 2, 200.0)
    tight = plan_tiles(budget, _frames(120), 1862, workers=2)
    assert tight.workers == 1 and tight.stack_bytes == MIN_STACK_MB * MB
    # by what it holds beyond the budget, at least (measured after the memory it gave back)
    assert tight.details["over_mb"] > tight.details["program_mb"] - budget > 0


@pytest.mark.parametrize("beyond_mb", [-1.0, 40.0])
def test_stacking_with_the_least_memory_is_warned_only_beyond_the_budget(
        monkeypatch, caplog, beyond_mb):
    # the plan spends 90 % of the budget: a process that needs more than that share but
    # less than the budget stacks with the least memory, told, and not warned about
    import logging
    from photometry_graph.pipeline import budget as mod
    monkeypatch.setattr(mod, "process_pss_bytes", lambda pid="self": 300 * MB)
    monkeypatch.setattr(mod, "release_memory", lambda: None)
    tile_ws = mod._tile_bytes((1080, 1920), 1, 1862)
    need = 300 + mod.MAIN_GROWTH_MB + mod.MIN_STACK_MB + tile_ws / MB
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        plan = mod.plan_tiles(need - beyond_mb, _frames(120), 1862, workers=2)
    assert plan.workers == 1 and plan.stack_bytes == mod.MIN_STACK_MB * MB
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if beyond_mb > 0:
        assert len(warned) == 1 and "about 40 MB beyond" in warned[0].getMessage()
    else:
        assert not warned and "within memory_mb=" in caplog.text


def test_a_small_run_works_in_the_calling_process():
    # by default; workers asked for explicitly are used (memory permitting)
    small = plan_memory(1024, _frames(9, shape=(410, 410)), 1862, baseline_bytes=90 * MB)
    assert small.workers == 1 and small.details["workers"] == 1
    assert plan_memory(1024, _frames(9, shape=(410, 410)), 1862, workers=2,
                       baseline_bytes=90 * MB).workers == 2


def test_the_tiles_read_in_place_by_the_assembly_count_and_are_named_when_refused():
    # 6 mono tiles of 2048^2: 200 MB of memory-mapped pages in the assembly
    tiles = 6 * 2048 ** 2 * 4 * 2
    fits = plan_memory(1024, _frames(120), 2048, workers=2, baseline_bytes=110 * MB,
                       tiles_bytes=tiles)
    assert fits.workers == 2
    with pytest.raises(GridModeError, match=r"needs about (\d+) MB.*(\d+) MB to assemble the "
                                            r"tiles\); raise --memory-mb to (\d+)") as exc:
        plan_memory(400, _frames(120), 2048, workers=2, baseline_bytes=110 * MB,
                    tiles_bytes=tiles)
    assert int(re.search(r"(\d+) MB to assemble", str(exc.value)).group(1)) > tiles / MB


def test_drawing_the_report_page_needs_more_and_a_refusal_says_what_saves_it():
    from photometry_graph.pipeline.budget import REPORT_PAGE_MB
    kw = dict(workers=1, baseline_bytes=110 * MB, tiles_bytes=6 * 1862 * 1900 * 8)
    with pytest.raises(GridModeError) as exc:
        plan_memory(100, _frames(120), 1862, **kw)
    need = int(re.search(r"raise --memory-mb to (\d+)", str(exc.value)).group(1))
    assert plan_memory(need + 10, _frames(120), 1862, **kw).workers == 1  # without the page
    with pytest.raises(GridModeError, match=rf"--no-html-report saves {REPORT_PAGE_MB:.0f} MB"):
        plan_memory(need + 10, _frames(120), 1862, report_page=True, **kw)


def test_the_files_row_bands_are_planned_only_where_memory_allows():
    from photometry_graph.pipeline.budget import STREAM_BAND_BYTES
    roomy = plan_memory(1024, _frames(120), 1862, workers=2, baseline_bytes=110 * MB)
    assert roomy.stream_band == STREAM_BAND_BYTES
    assert roomy.details["stream_band_mb"] == STREAM_BAND_BYTES / MB
    # the least budget the plan asks for: the run fits, its files written block by block
    with pytest.raises(GridModeError, match=r"raise --memory-mb to (\d+)") as exc:
        plan_memory(200, _frames(120), 1862, baseline_bytes=110 * MB)
    least = int(re.search(r"raise --memory-mb to (\d+)", str(exc.value)).group(1))
    tight = plan_memory(least, _frames(120), 1862, baseline_bytes=110 * MB)
    assert tight.workers == 1 and tight.stream_band == 0
