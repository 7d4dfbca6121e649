"""Grid/Survey mode: plate-solved frames in, one photometrically seamless mosaic out.

This module orchestrates; the mathematics lives in :mod:`photometry_graph`, each stage's
work in :mod:`photometry_graph.pipeline` (``plan`` the stack plan, ``budget`` the memory
plan, ``framestage`` the frames read once and solved, ``tilestage`` one tile's task,
``assemble`` the assembly and the outputs, ``resume`` the records of finished pieces)::

    stack_plan.csv + FITS frames -> plan -> global grid -> frame photometry
    -> tiles (reproject, correct, stack; in parallel) -> assemble_tiles -> outputs

Python: :func:`detect_grid_mode`, :func:`run_grid_mode`, :func:`assemble_tiles`,
:func:`run_demo`; command line: ``grid-mode run|assemble|demo`` (``grid-mode run --help``).
Worker processes start with ``forkserver``: call the API under ``if __name__ == "__main__":``.
"""

if __name__ == "__main__":
    # run as a script (``python grid_mode.py run ...``): the command's own entry point, which
    # starts the workers' server before the imports below; it runs this file as the module
    # ``grid_mode``, so that its classes pickle by that name in worker processes
    from photometry_graph.launch import main as _command
    raise SystemExit(_command())

import functools
import shutil
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from photometry_graph._log import (GRID_PREFIX, collected_warnings, get_logger, grid_debug,
                                   grid_warning)
from photometry_graph.core.wcsgrid import (assign_frames_to_tiles, build_global_grid,
                                           canvas_limit, geometry_outliers)
from photometry_graph.launch import pool_likely, server_preload, take_started_server
from photometry_graph.pipeline.assemble import panel_tiles, write_mosaic
from photometry_graph.pipeline.budget import (plan_memory, plan_tiles,
                                              release_memory)
from photometry_graph.pipeline.cli import main
from photometry_graph.pipeline.demo import run_demo
from photometry_graph.pipeline.fileio import (check_output_folder, discard_if_empty,
                                              output_lock, remove_temporaries)
from photometry_graph.pipeline.framestage import (FRAME_BIN, SCRATCH_DIR, frame_tasks,
                                                  gather_frames, kept_result, read_headers,
                                                  solve_frames)
from photometry_graph.pipeline.framestage import FRAME_MIN_PIXELS  # noqa: F401 (tests)
from photometry_graph.pipeline.images import FrameInfo  # noqa: F401 (the host's name)
from photometry_graph.pipeline.options import (OPTION_HELP, GridModeError,  # noqa: F401
                                               GridOptions, GridRunError, frame_saturation)
from photometry_graph.pipeline.options import n_workers as _n_workers
from photometry_graph.pipeline.options import refuse_run_only
from photometry_graph.pipeline.options import resolve_options as _resolve_options
from photometry_graph.pipeline.outputs import GridResult
from photometry_graph.pipeline.panels import find_fits_files, is_project_tile
from photometry_graph.pipeline.cluster import cluster_session
from photometry_graph.pipeline.parallel import (map_tasks, start_workers_early,
                                                stop_workers_early)
from photometry_graph.pipeline.pieces import frame_geometry, frame_pass, frame_sources
from photometry_graph.pipeline.plan import (PLAN_HEADER, PlanEntry,  # noqa: F401
                                            detect_grid_mode, plan_entries, read_stack_plan)
from photometry_graph.pipeline.progress import Progress, callback_logging, reported
from photometry_graph.pipeline.resume import (RunPieces, frame_source, piece_key,
                                              piece_options)
from photometry_graph.pipeline.tilestage import build_tile, loss_message, tally_tile
from photometry_graph.stacking.stack import frame_weights

__all__ = [
    "GridModeError", "GridRunError", "GridOptions", "GridResult", "OPTION_HELP",
    "detect_grid_mode", "run_grid_mode", "assemble_tiles", "run_demo", "main",
]

logger = get_logger("photometry_graph.grid_mode")


# ---------------------------------------------------------------------------- progress
_Progress = functools.partial(Progress, logger)  # the pipeline's percentage, on its logger


# ------------------------------------------------------------------------------- tasks
def _map_tasks(func, tasks, opts, label=None, workers=None):
    """Yield ``(task, result or exception)``: dask cluster, process pool or in-process.

    With a ``label`` (``label(task)`` names it), a task that failed is run once more after
    the others, with a [GRID] warning; its second result is the one yielded.  Read it inside
    ``with closing(...)``: when the reading stops early (an error, an interrupt), the queued
    tasks are cancelled and the workers stopped at once.  ``workers``: those of the memory
    plan (default ``opts.workers``).
    """
    again, workers = [], workers or _n_workers(opts)
    with closing(map_tasks(func, tasks, scheduler=opts.scheduler,
                           workers=workers)) as results:
        for task, res in results:
            if label is not None and isinstance(res, Exception):
                grid_warning(logger, "%s failed (%s: %s); trying it once more", label(task),
                             type(res).__name__, res)
                again.append(task)
            else:
                yield task, res
    if again:
        with closing(map_tasks(func, again, scheduler=opts.scheduler,
                               workers=workers)) as results:
            yield from results


# ---------------------------------------------------------------------------- pipeline
def _read_frames(entries, opts, progress):
    """Headers of every planned frame, read here (:func:`read_headers`); frames whose
    geometry does not fit the others' are skipped with a warning."""
    return read_headers(entries, progress, lambda frames: geometry_outliers(
        [f.wcs for f in frames], [f.shape for f in frames]))


def _frames_stage(entries, opts, progress, pieces=None, scratch=None):
    """Headers, the global grid, the memory plan, then every frame's pixels read once.

    The pass over the pixels (in the workers) scans each frame and bins it for the frame
    photometry; frames without usable pixels are skipped (warned), and when they widened
    the canvas the grid is laid out again without them.  Returns ``(frames, grid, plan,
    binned, solve_key, geometry)`` (``binned`` None without frame photometry; binned
    frames go to ``scratch``, written by the workers, when the plan says they do not fit
    memory, and always on a dask cluster; ``geometry``: each frame's footprint and
    homography on the grid, :func:`frame_geometry`, from the workers with the binning).
    """
    pooled = opts.scheduler is None and pool_likely([e.path for e in entries], opts.workers)
    command = take_started_server()  # the server the command started, if any
    early = (start_workers_early(frame_pass, _n_workers(opts), len(entries)) if pooled
             else None) or command
    frames = _read_frames(entries, opts, progress.stage(0, 0.1))  # imports meanwhile
    grid = _global_grid(frames, opts)
    plan = plan_memory(opts.memory_mb, frames, max(t.shape[1] for t in grid.tiles),
                       workers=1 if opts.scheduler is not None else opts.workers,
                       frame_photometry=opts.frame_photometry, bin_factor=FRAME_BIN,
                       chunk_size=opts.chunk_size, tiles_bytes=_tiles_bytes(grid, frames),
                       report_page=opts.html_report)
    if early is not None and (plan.workers <= 1 or not pooled):  # the run stays in this
        stop_workers_early(early)  # process (a tight budget): the server's memory is not planned
    while True:
        binning = opts.frame_photometry and len(frames) >= 2
        # on a cluster they go to the scratch folder whatever the memory: the overlap fits
        # then travel as readers of their crops, not as pixels through the client
        spill = scratch if (plan.spill or opts.scheduler is not None) and binning \
            and scratch is not None else None
        if spill is not None:
            progress("Frame photometry: the %d binned frames go to %s (%s)", 0.1, len(frames),
                     scratch, f"they would not fit memory_mb={opts.memory_mb:g}" if plan.spill
                     else "the cluster's workers read them there")
            Path(scratch).mkdir(parents=True, exist_ok=True)
        tasks, solve_key = frame_tasks(frames, grid, opts, pieces,
                                       plan.bin_factor if binning else None, spill)
        results = [None] * len(tasks)
        with closing(_map_tasks(frame_pass, tasks, opts, workers=plan.workers,
                                label=lambda t: f"reading {t['frame'].path}")) as passed:
            for done, (task, res) in enumerate(passed, start=1):
                results[task["index"]] = kept_result(res, spill, task["index"])
                if reported(done, len(tasks)):
                    progress("reading frames %d/%d%s", 0.1 + 0.9 * done / len(tasks), done,
                             len(tasks), f"; Frame photometry: frame {done}/{len(tasks)} "
                             "binned" if binning else "")
        kept, binned, geometry = gather_frames(frames, tasks, results)
        narrower = grid if len(kept) == len(frames) else _global_grid(kept, opts)
        if narrower.shape == grid.shape:
            geometry = [frame_geometry(f, grid.wcs, grid.shape) if g is None else g
                        for f, g in zip(kept, geometry)]  # the pass had no grid
            return kept, grid, plan, binned if binning else None, solve_key, geometry
        frames, grid = kept, narrower  # the canvas without them


def _tiles_bytes(grid, frames):
    """Bytes of the tile files of ``grid`` (float32 data and coverage), at most."""
    return sum(t.shape[0] * t.shape[1] for t in grid.tiles) * 4 * (frames[0].n_channels + 1)


def _global_grid(frames, opts):
    """The global grid of the frames; a canvas beyond ``max_canvas`` (or 4x the frames'
    total area) is refused before its tiles are laid out."""
    wcs, shapes = [f.wcs for f in frames], [f.shape for f in frames]
    scale = None if opts.pixel_scale is None else opts.pixel_scale / 3600.0
    limit = (opts.max_canvas * 1e6 if opts.max_canvas else
             canvas_limit(wcs, shapes, pixel_scale=scale))
    try:
        return build_global_grid(wcs, shapes, pixel_scale=scale, tile_size=opts.tile_size,
                                 overlap=opts.overlap, max_pixels=limit)
    except ValueError as exc:
        raise GridModeError(f"{exc}: the frames are spread over far more sky than they "
                            "cover; check their plate solutions, or raise the limit with "
                            "max_canvas (--max-canvas MEGAPIXELS)") from None


def _make_tiles(frames, geometry, corrections, weights, grid, opts, progress, *, pieces,
                plan):
    """Stack the tiles (the largest first); returns the tile files, their statistics and
    what was lost.

    ``geometry``: each frame's footprint and homography (:func:`frame_geometry`).

    A tile of an earlier run into the folder made from the same inputs is reused.  A frame
    that fails inside a tile is left out of it (warned, named); a tile that fails twice is
    lost: the run fails (:class:`GridRunError`) unless ``opts.allow_partial``.
    """
    tiles_dir = pieces.tiles_dir
    tiles_dir.mkdir(parents=True, exist_ok=True)
    footprints = [fp for fp, _ in geometry]
    tasks, sources = [], frame_sources(frames, geometry, corrections)
    noise = [f.noise * (1.0 if c is None else float(np.mean(np.abs(c.gain))))
             for f, c in zip(frames, corrections)]
    described = [None if s is None else frame_source(f) for f, s in zip(frames, sources)]
    for t, (bbox, idx) in enumerate(zip(grid.tiles, assign_frames_to_tiles(footprints,
                                                                          grid.tiles)), 1):
        if not idx:
            continue
        task = dict(tile_id=t, bbox=bbox, frames=[sources[k] for k in idx],
                    weights=[weights[k] for k in idx], noise=[noise[k] for k in idx],
                    grid_wcs=grid.wcs, canvas_shape=grid.shape, options=opts,
                    stack_bytes=plan.stack_bytes, path=tiles_dir / f"tile_{t:04d}.fits",
                    store=pieces.store, name=f"tile_{t:04d}",
                    release=opts.scheduler is not None)  # dask workers outlive the stage
        task["made_from"] = dict(  # what the tile depends on, the frames by their files
            tile_id=t, bbox=bbox, corrections=[corrections[k] for k in idx],
            weights=task["weights"], footprints=[footprints[k] for k in idx],
            grid_wcs=grid.wcs, canvas_shape=grid.shape, piece="tile",
            frames=[described[k] for k in idx],
            options=piece_options(opts, "tile"))
        task["key"] = piece_key(task["made_from"])
        tasks.append(task)
    tasks.sort(key=lambda t: -sum(s.footprint.intersection(t["bbox"]).area  # finish together
                                  for s in t["frames"]))
    stats, losses = [], dict(partial=False, tiles=[], frames=[])
    for task in tasks:
        record = pieces.store.lookup(task["name"], task["key"])
        if record is not None:
            stats.append(dict(record["payload"], reused=True))
    reused = sorted(s["tile_id"] for s in stats)
    pieces.reused("tiles", reused, f"{len(reused)} of {len(tasks)} tiles (tile "
                  f"{', '.join(map(str, reused[:20]))}{', ...' if len(reused) > 20 else ''})")
    for stale in tiles_dir.glob("tile_*.fits"):  # outputs of an earlier run of ours
        if stale.name not in {f"tile_{t:04d}.fits" for t in reused}:
            _unlink(stale)
    todo = [t for t in tasks if t["tile_id"] not in reused]
    progress("stacking %d tiles (%d reused from an earlier run, %d without frames skipped)",
             0.0, len(todo), len(reused), len(grid.tiles) - len(tasks))
    with closing(_map_tasks(build_tile, todo, opts, workers=plan.workers,
                            label=lambda t: f"tile {t['tile_id']}")) as results:
        for done, (task, res) in enumerate(results, start=1):
            tally_tile(task, res, stats, losses)
            progress("tile %d done, %d/%d", done / len(todo), task["tile_id"], done,
                     len(todo))
    stats.sort(key=lambda s: s["tile_id"])
    paths = [Path(s["path"]) for s in stats if s["path"]]
    if losses["tiles"] and not (opts.allow_partial and paths):
        raise GridRunError(loss_message(losses["tiles"], len(tasks), len(paths)))
    if not paths:
        raise GridModeError("no tile could be stacked: every tile was empty")
    losses["partial"] = bool(losses["tiles"])
    for lost in losses["tiles"]:
        grid_warning(logger, "partial mosaic: tile %d is left out (%s); frames: %s",
                     lost["tile_id"], lost["reason"], ", ".join(lost["frames"]))
    return paths, stats, losses


def _unlink(path):
    try:
        path.unlink()
    except OSError as exc:  # a read-only folder: its tiles cannot be written either
        grid_debug(logger, "cannot remove %s: %s", path, exc)


def run_grid_mode(input_folder, output_folder, progress_callback=None, **options):
    """Run the Grid/Survey mode: the frames of ``input_folder`` -> one mosaic.

    Parameters
    ----------
    input_folder : str or Path
        Folder with ``stack_plan.csv`` (without it, all FITS files of the folder are used).
    output_folder : str or Path
        Receives ``tiles/tile_0001.fits``..., ``mosaic_grid.fits``,
        ``mosaic_grid_coverage.fits``, ``grid_report.json``, ``grid_report.html`` and
        ``mosaic_grid_preview.png``;
        must differ from the input folder.
    progress_callback : callable, optional
        ``progress_callback(message, progress, level)``: ``progress`` a percentage (rising)
        or None, ``level`` one of "INFO", "WARN", "ERROR", "DEBUG"; every [GRID] log record
        of the run is forwarded to it.
    **options
        :class:`GridOptions` fields (see :data:`OPTION_HELP`), and the host program's
        keywords stack_norm_method, stack_weight_method, stack_reject_algo
        ('kappa_sigma', 'winsorized_sigma_clip', 'none'), stack_kappa_low,
        stack_kappa_high, winsor_limits, stack_final_combine ('mean', 'median'),
        apply_radial_weight, radial_feather_fraction, radial_shape_power,
        save_final_as_uint16, legacy_rgb_cube, grid_rgb_equalize (accepted; no per-tile
        colour equalisation is done) and zconfig (an object whose attributes such as
        ``grid_tile_size``, ``grid_overlap``, ``workers`` are read).  Unknown keywords are
        ignored with a [GRID] warning.

    Returns
    -------
    GridResult
        Output paths and the report (also written as ``grid_report.json``).

    Raises
    ------
    GridModeError
        When the run is impossible (no usable frame, unwritable output, another run in the
        output folder, ...).  A failure during the run (a tile lost, a full disk, any
        other error, chained to its cause) is its subclass :class:`GridRunError`.  An
        interrupt (``KeyboardInterrupt``) stops the workers and propagates; a rerun into
        the same folder resumes.
    """
    with callback_logging(progress_callback), discard_if_empty(output_folder), \
            collected_warnings() as warnings:
        return _guarded(_run, input_folder, output_folder, options, warnings)


def _guarded(func, *args):
    # the error is logged for a host's callback; the command line prints it itself (once)
    final = {"grid_final_error": True}
    try:
        return func(*args)
    except GridModeError as exc:
        logger.error(f"{GRID_PREFIX} %s", exc, extra=final)
        raise
    except Exception as exc:
        logger.error(f"{GRID_PREFIX} grid mode failed: %s: %s", type(exc).__name__, exc,
                     extra=final)
        raise GridRunError(f"grid mode failed: {type(exc).__name__}: {exc}") from exc


def _run(input_folder, output_folder, options, warnings):
    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise GridModeError(f"the input folder {input_folder} does not exist")
    opts = _resolve_options(options)
    out = check_output_folder(input_folder, output_folder)
    # one client for the run; its workers import what the tasks use while headers are read
    with cluster_session(opts.scheduler, preload=server_preload(frame_pass.__module__)):
        return _locked(out, _stages, input_folder, out, opts, warnings)


def _locked(out, func, *args):
    """``func(*args)`` holding the lock of the output folder ``out``; temporaries removed."""
    with output_lock(out):
        removed = remove_temporaries(out)
        if removed:
            grid_warning(logger, "removed %d temporary file(s) left in %s by an interrupted run",
                         removed, out)
        try:
            return func(*args)
        finally:  # the workers are stopped by now: what they were writing goes
            remove_temporaries(out)


def _stages(input_folder, out, opts, warnings):
    timings, t0 = {}, time.perf_counter()

    def lap(name):
        timings[name] = time.perf_counter() - t0 - sum(timings.values())

    progress = _Progress()
    progress("Grid/Survey mode: %s -> %s", 0.0, input_folder, out)
    pieces, scratch = RunPieces(out, opts), out / SCRATCH_DIR
    try:
        frames, grid, plan, binned, solve_key, geometry = _frames_stage(
            plan_entries(input_folder), opts, progress.stage(0, 20), pieces, scratch)
        start_plan = plan.details
        footprints = [fp for fp, _ in geometry]
        lap("frames")
        corrections, frame_report = (
            solve_frames(frames, binned, grid, opts, progress.stage(20, 30), pieces, solve_key,
                         workers=plan.solve_workers)
            if binned is not None else ([None] * len(frames), {"enabled": False}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    del binned  # with the solve's buffers, released by plan_tiles before it measures
    weights = frame_weights([f.exptime for f in frames], [f.noise for f in frames],
                            gains=[1.0 if c is None else np.mean(np.abs(c.gain))
                                   for c in corrections], method=opts.weight_method)
    lap("frame_photometry")
    plan = plan_tiles(opts.memory_mb, frames, max(t.shape[1] for t in grid.tiles),
                      workers=plan.workers, chunk_size=opts.chunk_size,  # what is left now
                      tiles_bytes=_tiles_bytes(grid, frames), report_page=opts.html_report,
                      host_bytes=int(start_plan["host_mb"] * 2 ** 20),
                      threads=_n_workers(opts) if opts.scheduler is not None else None)
    tile_paths, tile_stats, losses = _make_tiles(frames, geometry, corrections, weights,
                                                 grid, opts, progress.stage(30, 80),
                                                 pieces=pieces, plan=plan)
    release_memory()
    lap("tiles")
    extra = {"input_folder": str(input_folder), "grid": dict(grid.info, shape=grid.shape),
             "frames": [dict(path=f.path, shape=f.shape, layout=f.layout, bayer=f.bayer,
                             exptime=f.exptime, noise=f.noise, weight=w, footprint=fp,
                             saturation=frame_saturation(opts, f.saturation), correction=c)
                        for f, w, fp, c in zip(frames, weights, footprints, corrections)],
             "frame_photometry": frame_report, "tile_stacking": tile_stats, "losses": losses,
             "resume": pieces.report, "memory_plan": dict(start=start_plan, tiles=plan.details),
             "warnings": warnings}  # filled until the report is written
    return write_mosaic(tile_paths, out, opts, progress.stage(80, 100), extra=extra,
                        timings=timings, t0=t0, plan=plan)


# ---------------------------------------------------------------------------- assembly
def assemble_tiles(tiles_dir, output_dir, progress_callback=None, *, reference=None,
                   **options):
    """Assemble tiles, or plate-solved panels from any stacker, into the mosaic outputs.

    ``tiles_dir`` holds this project's tile files (``TILEID``, ``GRID_Y0``, ``GRID_X0``
    keywords): they are read lazily in place (memmaps, coverage crops).  Any other FITS
    image with a celestial WCS there is a panel (any projection, pixel scale, rotation and
    size; mono or RGB in either axis order; NaN or zero borders; a weight extension or a
    ``NAME.weight.fits`` beside it): the panels are put on one grid
    (:func:`photometry_graph.pipeline.panels.panel_grid`: the optimal celestial TAN grid of
    the set at ``pixel_scale`` or their median scale, their own pixel grid when they share
    one, or ``reference``'s pixel grid extended to cover them), reprojected one at a time
    and written as tiles to ``output_dir/tiles``, and assembled as tiles.  Unusable files
    are skipped with a ``[GRID]`` warning.  The tile photometry (overlap graph, global
    gain/offset/plane solve, guarded background matching) and the blending run as the
    options say (``photometry``, ``model``, ``background``, ``blend``, ``levels``,
    ``chunk_size``, ``workers``); with photometry and background off and ``blend='none'``
    the mosaic is a plain coverage-weighted placement.  The mosaic is written chunk by
    chunk (``os.pwrite``, bounded memory) into a FITS file under a temporary name, then
    renamed.  Options that only ``run`` uses (stacking, frame photometry, tiling) are
    refused with a :class:`GridModeError`.

    Parameters
    ----------
    tiles_dir : str, Path or list of them
        A folder, or FITS files.
    output_dir : str or Path
    progress_callback : callable, optional
        As for :func:`run_grid_mode`.
    reference : str or Path, optional
        A FITS file whose pixel grid (projection, scale, rotation) the mosaic takes,
        extended to cover every panel: the mosaic is pixel-aligned with it.
    **options
        :class:`GridOptions` fields that apply to an assembly.

    Returns
    -------
    GridResult
    """
    with callback_logging(progress_callback), discard_if_empty(output_dir), \
            collected_warnings() as warnings:
        return _guarded(_assemble_dir, tiles_dir, output_dir, reference, options, warnings)


def _assemble_dir(inputs, output_dir, reference, options, warnings):
    refuse_run_only([k for k, v in options.items() if v is not None])
    opts, t0 = _resolve_options(options), time.perf_counter()
    paths = find_fits_files(inputs)
    out = check_output_folder(inputs if isinstance(inputs, (str, Path)) and Path(inputs).is_dir()
                              else None, output_dir)
    extra, progress = {"tiles_dir": str(inputs), "warnings": warnings}, _Progress()

    def tiles_then_mosaic(paths):  # holding the output folder's lock
        if reference is not None or opts.pixel_scale is not None or \
                not all(map(is_project_tile, paths)):
            paths, panels = panel_tiles(paths, out / "tiles", reference, opts,
                                        progress.stage(0, 30))
            extra.update(panels)
        return write_mosaic(paths, out, opts, progress.stage(progress.last, 100), extra=extra,
                            timings={}, t0=t0)

    with cluster_session(opts.scheduler):  # one client for the run
        return _locked(out, tiles_then_mosaic, paths)
