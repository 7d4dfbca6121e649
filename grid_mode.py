"""Grid/Survey mode: plate-solved frames in, one photometrically seamless mosaic out.

This module orchestrates; the mathematics lives in :mod:`photometry_graph`, the reading of
the stack plan in :mod:`photometry_graph.pipeline.plan`, the file writing and tile reading in
:mod:`photometry_graph.pipeline.fileio`::

    stack_plan.csv + FITS frames -> plan -> global grid -> frame photometry
    -> tiles (reproject, correct, stack; in parallel) -> assemble_tiles -> outputs

Python: :func:`detect_grid_mode`, :func:`run_grid_mode`, :func:`assemble_tiles`,
:func:`run_demo`; command line: ``grid-mode run|assemble|demo`` (``grid-mode run --help``).
Worker processes start with ``forkserver``: call the API under ``if __name__ == "__main__":``.
"""

import argparse
import functools
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from photometry_graph._log import GRID_PREFIX, get_logger, grid_info, grid_warning
from photometry_graph.blending.assembly import assemble_mosaic
from photometry_graph.photometry.background import estimate_tile_background, match_backgrounds
from photometry_graph.stacking.bayer import debayer
from photometry_graph.datasets import make_frame_survey
from photometry_graph.diagnostics import demo_quality_table, mosaic_vs_frame_survey
from photometry_graph.pipeline.fileio import (atomic, fits_stream, load_tiles, write_hdus, write_json,
                                     write_preview, write_uint16)
from photometry_graph.pipeline.fileio import open_fits as _fits
from photometry_graph.photometry.frames import (bin_frame_on_grid, frame_bin_factor, harmonize_frames,
                                     masked_gaussian_blur)
from photometry_graph.photometry.harmonize import harmonize_tiles
from photometry_graph.pipeline.images import (FrameInfo, frame_noise, frame_pixels, image_layout,
                                     saturation_level, saturation_pileup)
from photometry_graph.pipeline.images import majority_channels as _majority
from photometry_graph.core.masks import compute_valid_mask
from photometry_graph.pipeline.options import (OPTION_HELP, GridModeError, GridOptions,
                                      add_option_arguments, frame_saturation,
                                      frame_smooth_sigma)
from photometry_graph.pipeline.options import n_workers as _n_workers
from photometry_graph.pipeline.options import resolve_options as _resolve_options
from photometry_graph.pipeline.outputs import ChunkSummary, chunk_coverage, mosaic_header, tile_header
from photometry_graph.photometry.overlap import build_tile_overlap_graph
from photometry_graph.pipeline.parallel import map_tasks
from photometry_graph.pipeline.plan import (PLAN_HEADER, PLAN_NAME, PlanEntry, as_float, detect_grid_mode,
                                   plan_entries, read_stack_plan)
from photometry_graph.pipeline.progress import Progress, callback_logging, console_logging
from photometry_graph.blending.pyramid import (build_gaussian_pyramid, build_laplacian_pyramid,
                                      reconstruct_from_laplacian)
from photometry_graph.stacking.stack import frame_on_tile, frame_weights, radial_weight, stack_frames
from photometry_graph.core.tiles import BBox, TilePhotometryInfo
from photometry_graph.core.wcsgrid import assign_frames_to_tiles, build_global_grid, footprint_bbox

__all__ = [
    "GridModeError", "GridOptions", "GridResult", "PlanEntry", "FrameInfo", "OPTION_HELP",
    "detect_grid_mode", "read_stack_plan", "read_frame_info", "load_frame", "debayer",
    "run_grid_mode", "assemble_tiles", "run_demo", "write_frame_survey", "mosaic_quality",
    "main", "compute_valid_mask", "estimate_tile_background", "TilePhotometryInfo",
    "build_tile_overlap_graph", "build_gaussian_pyramid", "build_laplacian_pyramid",
    "reconstruct_from_laplacian",
]

logger = get_logger("photometry_graph.grid_mode")

COVERAGE_EXTNAMES = ("COVERAGE", "ALPHA", "WEIGHT", "WEIGHTS")
# Frame overlaps are small: a gain known to 1-5 % (weighted by its error in the solve) beats
# none; the package default (1 %) left 200x300 Bayer frames with gains off by up to 12 %.
FRAME_MAX_GAIN_ERROR = 0.05
FRAME_BIN = 4  # binning of the global grid for the frame photometry (more for many frames)
FRAME_MIN_PIXELS = 500  # smallest overlap fitted by the frame solve, pixels binned FRAME_BIN x


# ------------------------------------------------------------------------------ frames
def _celestial_wcs(header, hdul):
    try:
        wcs = WCS(header, fobj=hdul, relax=True)
    except Exception as exc:  # astropy raises many kinds of errors on broken headers
        raise GridModeError(f"its WCS cannot be read ({exc})") from None
    if not wcs.has_celestial:
        raise GridModeError("it has no celestial WCS (plate-solve it first)")
    return wcs if wcs.naxis == 2 else wcs.celestial


def read_frame_info(path, *, index=0, exposure=None):
    """Read a frame's header: layout, celestial WCS (SIP honoured), exposure, Bayer pattern.

    ``EXPTIME`` (or ``EXPOSURE``) gives the exposure, else ``exposure`` (from the plan),
    else 1.  ``BAYERPAT`` (shifted by odd ``XBAYROFF``/``YBAYROFF``) marks 2-D raws.
    ``SATURATE`` gives the saturation level (else :func:`_scan_frame` looks for it in the
    data).

    Raises
    ------
    GridModeError
        When the file is not FITS, is truncated, holds no image or no celestial WCS.
    """
    path = Path(path)
    try:
        with _fits(path) as hdul:
            hdu = next((i for i, h in enumerate(hdul)
                        if h.is_image and h.header.get("NAXIS", 0) >= 2), None)
            if hdu is None:
                raise GridModeError("it holds no image HDU")
            header = hdul[hdu].header
            shape = tuple(int(header[f"NAXIS{k}"]) for k in range(int(header["NAXIS"]), 0, -1))
            nbytes = abs(int(header["BITPIX"])) // 8 * int(np.prod(shape))
            if path.stat().st_size < hdul[hdu].fileinfo()["datLoc"] + nbytes:
                raise GridModeError("it is truncated (shorter than its header says)")
            wcs = _celestial_wcs(header, hdul)
            try:
                layout, n_ch, shape, bayer = image_layout(shape, header.get("BAYERPAT"), [
                    int(as_float(header.get(k)) or 0) for k in ("XBAYROFF", "YBAYROFF")])
            except ValueError as exc:  # the data shape or the Bayer pattern
                raise GridModeError(str(exc)) from None
            cov = next((i for i, h in enumerate(hdul) if i != hdu and h.is_image
                        and str(h.name).upper() in COVERAGE_EXTNAMES
                        and tuple(h.shape or ()) == tuple(shape)), None)
            exptime = as_float(header.get("EXPTIME", header.get("EXPOSURE")))
            saturation = saturation_level(header)
    except GridModeError:
        raise
    except Exception as exc:  # not FITS, unreadable, broken header: skipped with the reason
        raise GridModeError(f"it is not a readable FITS image ({exc})") from None
    wcs.pixel_shape = (shape[1], shape[0])
    return FrameInfo(index=index, path=str(path), hdu=hdu, shape=tuple(shape), layout=layout,
                     n_channels=n_ch, wcs=wcs, bayer=bayer, coverage_hdu=cov,
                     exptime=float(exptime if exptime and exptime > 0 else exposure or 1.0),
                     saturation=saturation)


def load_frame(info, *, mask_eps=1e-6, erode=1, saturation=None):
    """Load a frame as (H, W, C) float32, NaN where invalid, and its pixel weights.

    Invalid: non-finite, ``|x| <= mask_eps`` in every channel (empty borders; for Bayer raws
    per raw site, so that they cannot leak into their neighbours), or zero coverage; the
    valid zone is eroded by ``erode`` pixels (debayering already grows invalid zones by one).
    With a ``saturation`` level, saturated pixels and a 2 px margin are invalid too (for the
    frame photometry).  Returns ``(data, weight)``, ``weight`` the coverage/alpha HDU (H, W)
    or None.
    """
    with _fits(info.path) as hdul:  # memmap=False: the data are read into memory here
        raw = hdul[info.hdu].data
        weight = (None if info.coverage_hdu is None
                  else np.array(hdul[info.coverage_hdu].data, dtype=np.float32))
    return frame_pixels(raw, info.layout, info.bayer, weight=weight, mask_eps=mask_eps,
                        erode=erode, saturation=saturation)


def _scan_frame(info, mask_eps):
    """Reject a frame without usable pixels (all NaN or zero); measure its noise sigma.

    A frame without a ``SATURATE`` keyword gets the level at which its brightest pixels
    pile up, if they do (:func:`photometry_graph.pipeline.images.saturation_pileup`).
    """
    with _fits(info.path) as hdul:
        raw = np.asarray(hdul[info.hdu].data, dtype=np.float32)
    info.noise = frame_noise(raw, info.layout, mask_eps=mask_eps)
    if info.saturation is None:
        info.saturation = saturation_pileup(raw)
    return info


def _scan_entry(task):
    """Worker: :func:`read_frame_info` and :func:`_scan_frame` of one planned frame.

    Returns ``(info, None)``, or ``(None, reason)`` for a frame to skip: the caller logs the
    reason (records logged in a worker process would be lost).
    """
    try:
        if not Path(task["path"]).is_file():
            raise GridModeError("the file does not exist")
        info = read_frame_info(task["path"], index=task["index"], exposure=task["exposure"])
        return _scan_frame(info, task["mask_eps"]), None
    except Exception as exc:  # GridModeError, or pixels that cannot be read
        return None, str(exc)


# ----------------------------------------------------------------------------- outputs
def _check_output_folder(input_folder, output_folder):
    out = Path(output_folder)
    if input_folder is not None and out.resolve() == Path(input_folder).resolve():
        raise GridModeError(f"the output folder must differ from the input folder ({out}); "
                            "outputs must never mix with the frames")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".grid_write_probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GridModeError(f"the output folder {out} is not writable "
                            f"({exc.strerror or exc})") from None
    return out


# ---------------------------------------------------------------------------- progress
_Progress = functools.partial(Progress, logger)  # the pipeline's percentage, on its logger


# ------------------------------------------------------------------------------- tiles
def _frame_on_tile(info, correction, grid_wcs, bbox, footprint, opts):
    """Frame loaded, reprojected onto its window of ``bbox`` and corrected; + weights, origin."""
    data, weight = load_frame(info, mask_eps=opts.mask_eps)
    if opts.radial_weight:
        radial = radial_weight(info.shape, opts.radial_feather_fraction, opts.radial_shape_power)
        weight = radial if weight is None else weight * radial
    return frame_on_tile(data, info.wcs, grid_wcs, bbox, weight=weight, correction=correction,
                         footprint=footprint)


def _build_tile(task):
    """Worker: reproject, correct and stack the frames of one tile; write its FITS file.

    Top level and fed with picklable values only: runs in-process, in a process pool or on
    a dask worker alike.  Returns a small dict of statistics.
    """
    t0 = time.perf_counter()
    opts, bbox, frames = task["options"], task["bbox"], task["frames"]
    stacked, coverage, info = stack_frames(
        lambda k: _frame_on_tile(frames[k], task["corrections"][k], task["grid_wcs"], bbox,
                                 task["footprints"][k], opts),
        len(frames), weights=np.asarray(task["weights"], dtype=np.float64), shape=bbox.shape,
        method=opts.stack_method, kappa_low=opts.kappa_low, kappa_high=opts.kappa_high,
        winsor_limits=opts.winsor_limits, combine=opts.stack_combine,
        memory_budget_bytes=int(opts.memory_mb * 2 ** 20), return_info=True)
    n_valid = int(np.isfinite(stacked).all(axis=2).sum())
    if n_valid:
        header = tile_header(task["grid_wcs"], bbox, task["tile_id"], task["canvas_shape"],
                             len(frames))
        data = stacked[..., 0] if stacked.shape[2] == 1 else np.moveaxis(stacked, -1, 0)
        write_hdus(task["path"], [fits.PrimaryHDU(np.ascontiguousarray(data), header),
                                   fits.ImageHDU(coverage.astype(np.float32), name="COVERAGE")])
    return dict(tile_id=task["tile_id"], bbox=bbox, n_frames=len(frames), n_valid=n_valid,
                path=str(task["path"]) if n_valid else None, stack=info,
                seconds=time.perf_counter() - t0, worker_pid=os.getpid())


def _map_tasks(func, tasks, opts):
    """Yield ``(task, result or exception)``: dask cluster, process pool or in-process."""
    return map_tasks(func, tasks, scheduler=opts.scheduler, workers=_n_workers(opts))


# ---------------------------------------------------------------------------- pipeline
def _read_frames(entries, opts, progress):
    """Headers and a pixel check of every planned frame; bad ones are skipped with a warning.

    Mono and colour frames are not mixed: the minority channel count is skipped (warned).
    The frames are read by :func:`_map_tasks` (here, in worker processes or on a cluster);
    the warnings are logged here, in the order of the plan.
    """
    tasks = [dict(index=i, path=e.path, exposure=e.exposure, mask_eps=opts.mask_eps)
             for i, e in enumerate(entries)]
    results = [None] * len(tasks)
    for done, (task, res) in enumerate(_map_tasks(_scan_entry, tasks, opts), start=1):
        # a task that could not run at all (e.g. a worker died) comes back as its exception
        results[task["index"]] = ((None, f"{type(res).__name__}: {res}")
                                  if isinstance(res, BaseException) else res)
        if done % 10 == 1 or done == len(tasks):
            progress("reading frames %d/%d", done / len(tasks), done, len(tasks))
    frames = []
    for entry, (info, reason) in zip(entries, results):
        if info is None:
            grid_warning(logger, "skipping %s: %s", entry.path, reason)
        else:
            frames.append(info)
    frames = _majority(frames, lambda f: f.n_channels, lambda f: f.path, "frames")
    if not frames:
        raise GridModeError(f"no usable frame left: {len(entries)} listed, all skipped "
                            "(see the warnings above)")
    for k, f in enumerate(frames):
        f.index = k
    return frames


def _bin_frame(task):
    """Worker: one frame loaded, blurred and binned on the global grid for the frame photometry."""
    info, opts = task["frame"], task["options"]
    data, _ = load_frame(info, mask_eps=opts.mask_eps,
                         saturation=frame_saturation(opts, info.saturation))
    data = masked_gaussian_blur(data, frame_smooth_sigma(opts, info.bayer))
    return bin_frame_on_grid(data, info.wcs, task["grid_wcs"], task["grid_shape"],
                             task["bin_factor"])


def _frame_photometry(frames, grid, opts, progress):
    """Gain + offset/plane per frame in global pixels (None = identity) and the report."""
    if not opts.frame_photometry or len(frames) < 2:
        return [None] * len(frames), {"enabled": False}
    bin_factor = frame_bin_factor([f.shape for f in frames], frames[0].n_channels,
                                  opts.memory_mb * 2 ** 20, base=FRAME_BIN)
    if bin_factor != FRAME_BIN:
        progress("frame photometry: %d frames, binned %dx (not %dx) to stay within "
                 "memory_mb=%g", 0.0, len(frames), bin_factor, FRAME_BIN, opts.memory_mb)
    tasks = [dict(index=k, frame=f, options=opts, grid_wcs=grid.wcs, grid_shape=grid.shape,
                  bin_factor=bin_factor) for k, f in enumerate(frames)]
    binned = {}  # all binned frames: within the memory budget (frame_bin_factor)
    for done, (task, res) in enumerate(_map_tasks(_bin_frame, tasks, opts), start=1):
        binned[task["index"]] = res
        progress("frame photometry: frame %d/%d binned", 0.8 * done / len(frames), done,
                 len(frames))

    def get_binned(k):
        res = binned.pop(k)
        if isinstance(res, BaseException):  # a ValueError skips the frame (warned)
            raise res
        return res

    result = harmonize_frames(get_binned, [f.wcs for f in frames], [f.shape for f in frames],
                              grid.wcs, grid.shape, bin_factor=bin_factor, prebinned=True,
                              model=opts.frame_model, background=False, rng=0,
                              fit_kwargs={"max_rel_gain_error": FRAME_MAX_GAIN_ERROR},
                              max_degree=opts.frame_overlaps or None,
                              # the same overlap area at any binning
                              min_pixels=max(50, round(FRAME_MIN_PIXELS
                                                       * (FRAME_BIN / bin_factor) ** 2)))
    progress("frame photometry done", 1.0)
    return [result.corrections.get(k) for k in range(len(frames))], result.report


def _make_tiles(frames, footprints, corrections, weights, grid, tiles_dir, opts, progress):
    tiles_dir.mkdir(parents=True, exist_ok=True)
    for stale in tiles_dir.glob("tile_*.fits"):  # outputs of an earlier run of ours
        stale.unlink()
    tasks = [dict(tile_id=t, bbox=bbox, frames=[frames[k] for k in idx],
                  corrections=[corrections[k] for k in idx], weights=[weights[k] for k in idx],
                  footprints=[footprints[k] for k in idx],
                  grid_wcs=grid.wcs, canvas_shape=grid.shape, options=opts,
                  path=tiles_dir / f"tile_{t:04d}.fits")
             for t, (bbox, idx) in enumerate(zip(grid.tiles, assign_frames_to_tiles(
                 footprints, grid.tiles)), start=1) if idx]
    progress("stacking %d tiles (%d without frames skipped)", 0.0, len(tasks),
             len(grid.tiles) - len(tasks))
    stats, errors = [], []
    for done, (task, res) in enumerate(_map_tasks(_build_tile, tasks, opts), start=1):
        if isinstance(res, BaseException):
            grid_warning(logger, "tile %d failed and is left out: %s: %s", task["tile_id"],
                         type(res).__name__, res)
            errors.append(f"{type(res).__name__}: {res}")
            continue
        stats.append(res)
        progress("tile %d done (%d frames, %.1f s), %d/%d", done / len(tasks), res["tile_id"],
                 res["n_frames"], res["seconds"], done, len(tasks))
    stats.sort(key=lambda s: s["tile_id"])
    paths = [Path(s["path"]) for s in stats if s["path"]]
    if not paths:
        raise GridModeError("no tile could be stacked: " + (errors[0] if errors else
                                                             "every tile was empty"))
    return paths, stats


def run_grid_mode(input_folder, output_folder, progress_callback=None, **options):
    """Run the Grid/Survey mode: the frames of ``input_folder`` -> one mosaic.

    Parameters
    ----------
    input_folder : str or Path
        Folder with ``stack_plan.csv`` (without it, all FITS files of the folder are used).
    output_folder : str or Path
        Receives ``tiles/tile_0001.fits``..., ``mosaic_grid.fits``,
        ``mosaic_grid_coverage.fits``, ``grid_report.json`` and ``mosaic_grid_preview.png``;
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
        When the run is impossible (no usable frame, unwritable output, ...); any other
        failure is raised as a GridModeError too, chained to its cause.
    """
    with callback_logging(progress_callback):
        return _guarded(_run, input_folder, output_folder, options)


def _guarded(func, *args):
    try:
        return func(*args)
    except GridModeError as exc:
        logger.error(f"{GRID_PREFIX} %s", exc)
        raise
    except Exception as exc:
        logger.error(f"{GRID_PREFIX} grid mode failed: %s: %s", type(exc).__name__, exc)
        raise GridModeError(f"grid mode failed: {type(exc).__name__}: {exc}") from exc


def _run(input_folder, output_folder, options):
    timings, t0 = {}, time.perf_counter()

    def lap(name):
        timings[name] = time.perf_counter() - t0 - sum(timings.values())

    input_folder = Path(input_folder)
    if not input_folder.is_dir():
        raise GridModeError(f"the input folder {input_folder} does not exist")
    opts = _resolve_options(options)
    out = _check_output_folder(input_folder, output_folder)
    progress = _Progress()
    progress("Grid/Survey mode: %s -> %s", 0.0, input_folder, out)
    frames = _read_frames(plan_entries(input_folder), opts, progress.stage(0, 10))
    lap("frames")
    grid = build_global_grid([f.wcs for f in frames], [f.shape for f in frames],
                             pixel_scale=None if opts.pixel_scale is None
                             else opts.pixel_scale / 3600.0,
                             tile_size=opts.tile_size, overlap=opts.overlap)
    footprints = [footprint_bbox(f.wcs, f.shape, grid.wcs, grid.shape) for f in frames]
    lap("grid")
    corrections, frame_report = _frame_photometry(frames, grid, opts, progress.stage(10, 30))
    weights = frame_weights([f.exptime for f in frames], [f.noise for f in frames],
                            gains=[1.0 if c is None else np.mean(np.abs(c.gain))
                                   for c in corrections], method=opts.weight_method)
    lap("frame_photometry")
    tile_paths, tile_stats = _make_tiles(frames, footprints, corrections, weights, grid,
                                         out / "tiles", opts, progress.stage(30, 80))
    lap("tiles")
    extra = {"input_folder": str(input_folder), "grid": dict(grid.info, shape=grid.shape),
             "frames": [dict(path=f.path, shape=f.shape, layout=f.layout, bayer=f.bayer,
                             exptime=f.exptime, noise=f.noise, weight=w, footprint=fp,
                             saturation=frame_saturation(opts, f.saturation), correction=c)
                        for f, w, fp, c in zip(frames, weights, footprints, corrections)],
             "frame_photometry": frame_report, "tile_stacking": tile_stats}
    return _assemble(tile_paths, out, opts, progress.stage(80, 100), extra, timings, t0)


# ---------------------------------------------------------------------------- assembly
@dataclass
class GridResult:
    """Output paths of a run and its report (also written as ``grid_report.json``)."""

    mosaic: Path
    coverage: Path
    report_path: Path
    preview: Path
    tiles_dir: Path
    uint16: Path = None
    report: dict = field(default_factory=dict)


def assemble_tiles(tiles_dir, output_dir, progress_callback=None, **options):
    """Assemble the tile files of ``tiles_dir`` into the mosaic outputs in ``output_dir``.

    Tiles are read lazily (memmaps, coverage crops).  The tile photometry (overlap graph,
    global gain/offset/plane solve, guarded background matching) and the blending run as
    the options say (``photometry``, ``model``, ``background``, ``blend``, ``levels``,
    ``chunk_size``, ``workers``); with photometry and background off and ``blend='none'``
    the mosaic is a plain coverage-weighted placement.  The mosaic is written chunk by
    chunk (``os.pwrite``, bounded memory) into a FITS file under a temporary name, then
    renamed.

    Returns
    -------
    GridResult
    """
    with callback_logging(progress_callback):
        return _guarded(_assemble_dir, tiles_dir, output_dir, options)


def _assemble_dir(tiles_dir, output_dir, options):
    opts, tiles_dir = _resolve_options(options), Path(tiles_dir)
    if not tiles_dir.is_dir():
        raise GridModeError(f"the tiles folder {tiles_dir} does not exist")
    paths = sorted(p for p in tiles_dir.iterdir()
                   if re.fullmatch(r"tile_\d+\.fits?", p.name, flags=re.IGNORECASE))
    if not paths:
        raise GridModeError(f"no tile file (tile_0001.fits ...) in {tiles_dir}")
    return _assemble(paths, _check_output_folder(None, output_dir), opts, _Progress(),
                     {"tiles_dir": str(tiles_dir)}, {}, time.perf_counter())


def _assemble(tile_paths, out, opts, progress, extra, timings, t0):
    t1 = time.perf_counter()
    tiles, shape, wcs, origin = load_tiles(tile_paths)
    C = tiles[0].n_channels
    progress("assembling %d tiles into a %dx%d mosaic", 0.0, len(tiles), shape[1], shape[0])
    corrections, harm_report = None, {"enabled": False}
    if opts.photometry:
        result = harmonize_tiles(tiles, model=opts.model, background=opts.background,
                                 origin=((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0), rng=0)
        corrections, harm_report = result.corrections, result.report
    elif opts.background:
        result = match_backgrounds(tiles)
        corrections, harm_report = result.corrections, {"background": result.to_dict()}
    timings["harmonize"] = time.perf_counter() - t1
    progress("tile photometry done", 0.3)

    layout = ("hwc" if opts.legacy_rgb_cube else "chw") if C > 1 else "mono"
    header = mosaic_header(wcs, len(tiles), origin)
    paths = {k: out / f"mosaic_grid{v}" for k, v in dict(
        mosaic=".fits", coverage="_coverage.fits", preview="_preview.png").items()}
    paths["report"] = out / "grid_report.json"
    summary = ChunkSummary(shape, C, opts.preview_size)  # preview, value range, area written
    t2 = time.perf_counter()
    mshape = {"mono": shape, "chw": (C,) + shape, "hwc": shape + (C,)}[layout]
    with fits_stream(paths["mosaic"], mshape, header, layout) as mosaic, \
            fits_stream(paths["coverage"], shape, header) as coverage:
        def sink(bbox, data, weight_sum):
            mosaic.write(bbox.y0, bbox.x0, data)
            coverage.write(bbox.y0, bbox.x0, chunk_coverage(tiles, bbox)[..., None])
            summary.add(bbox, data)

        asm = assemble_mosaic(tiles, shape, corrections=corrections, blend=opts.blend,
                              levels=opts.levels, chunk_size=opts.chunk_size, sink=sink,
                              workers=_n_workers(opts), progress=lambda done, total: progress(
                                  "blending chunk %d/%d", 0.3 + 0.6 * done / total, done, total))
        if summary.area != shape[0] * shape[1]:
            raise GridModeError(f"the assembly wrote {summary.area} of {shape[0] * shape[1]} "
                                "mosaic pixels; the output was discarded")
        timings["assembly"] = time.perf_counter() - t2
        if opts.save_uint16:
            paths["uint16"] = out / "mosaic_grid_uint16.fits"
            write_uint16(paths["uint16"], mosaic, mshape, header, summary.lo, summary.hi)
    write_preview(paths["preview"], summary.preview)
    timings["total"] = time.perf_counter() - t0
    report = dict(extra, version=1, options=opts.to_dict(), canvas_shape=shape, channels=C,
                  layout=layout, mosaic_origin=origin,
                  tiles=[dict(tile_id=t.tile_id, bbox=t.bbox, path=t.meta["path"],
                              n_frames=t.meta["n_frames"],
                              correction=(corrections or {}).get(t.tile_id)) for t in tiles],
                  harmonization=harm_report, blending=asm.report, timings=timings,
                  outputs={k: str(v) for k, v in paths.items()})
    report = write_json(paths["report"], report)
    grid_info(logger, "mosaic written: %s (%dx%d, %d channel(s)), report %s", paths["mosaic"],
              shape[1], shape[0], C, paths["report"])
    progress("done", 1.0)
    return GridResult(mosaic=paths["mosaic"], coverage=paths["coverage"],
                      report_path=paths["report"], preview=paths["preview"],
                      tiles_dir=Path(tile_paths[0]).parent, uint16=paths.get("uint16"),
                      report=report)


# -------------------------------------------------------------------------------- demo
def write_frame_survey(survey, folder, *, rgb_layout="chw"):
    """Write a :class:`photometry_graph.datasets.FrameSurvey` as FITS frames + stack_plan.csv.

    RGB frames are written as (3, H, W) (``rgb_layout="chw"``) or (H, W, 3) ("hwc").
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [PLAN_HEADER]
    for f in survey.frames:
        name = f"frame_{f.index:03d}.fits"
        data = np.moveaxis(f.data, -1, 0) if f.data.ndim == 3 and rgb_layout == "chw" else f.data
        write_hdus(folder / name, [fits.PrimaryHDU(np.ascontiguousarray(data), f.header)])
        lines.append(f"{f.index + 1},1,demo,4,synthetic,2024-01-01,L,{f.exptime:g},{name},,")
    with atomic(folder / PLAN_NAME) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def mosaic_quality(survey, mosaic_path, tile_bboxes):
    """Seam metrics and frame-to-frame offsets of a mosaic file against a survey's truth.

    Reads the mosaic and measures it with
    :func:`photometry_graph.diagnostics.mosaic_vs_frame_survey` (frame footprints 2 px
    inside their borders, star-free pixels; ``tile_bboxes`` on the mosaic grid).
    """
    with _fits(mosaic_path) as hdul:
        data, wcs = hdul[0].data.astype(np.float64), _celestial_wcs(hdul[0].header, hdul)
    img = data[..., None] if data.ndim == 2 else np.moveaxis(data, 0, -1) \
        if data.shape[0] in (1, 3) else data
    return mosaic_vs_frame_survey(img, wcs, survey, tile_bboxes, border=2)


def run_demo(output_dir="grid_demo_output", *, channels=3, rng=0, progress_callback=None,
             **options):
    """Synthetic survey end to end: frames with injected errors -> mosaic, measured vs. truth.

    Writes 6 frames of 200x300 px (gain +-15 %, offset +-30 sigma, 3 sigma gradients, empty
    borders, a NaN blob, a satellite trail; :func:`photometry_graph.datasets.make_frame_survey`)
    and their stack_plan.csv to ``output_dir/frames``, runs the mode into ``output_dir`` and,
    for comparison, a plain run with every correction off into ``output_dir/plain``; their
    :func:`mosaic_quality` goes into the report (``report["demo"]``) and the log.

    Returns
    -------
    GridResult
    """
    out = Path(output_dir)
    survey = make_frame_survey(2, 3, frame_shape=(200, 300), channels=channels, rng=rng)
    frames_dir = write_frame_survey(survey, out / "frames")
    options = dict(dict(tile_size=256, overlap=0.25), **options)
    result = run_grid_mode(frames_dir, out, progress_callback, **options)
    plain = run_grid_mode(frames_dir, out / "plain", None, **dict(
        options, frame_photometry=False, photometry=False, background=False, blend="none"))
    boxes = [BBox(*t["bbox"]) for t in result.report["tiles"]]
    demo = {"harmonized": mosaic_quality(survey, result.mosaic, boxes),
            "plain": mosaic_quality(survey, plain.mosaic, boxes),
            "injected": survey.info, "frames_dir": str(frames_dir)}
    result.report = write_json(result.report_path, dict(result.report, demo=demo))
    for name in ("plain", "harmonized"):
        q = demo[name]
        grid_info(logger, "demo %s: seam metric %.2f at tile borders, %.2f at frame borders "
                  "(1 = seamless); frame offsets spread %.2f sigma", name,
                  q["seam_tile_borders"], q["seam_frame_borders"],
                  q["frame_offset_spread_sigma"])
    return result


def _demo_summary(result):
    return "\n".join([f"mosaic:  {result.mosaic}", f"preview: {result.preview}",
                      f"report:  {result.report_path}", "seam metric: 1 = seamless; frame "
                      "offsets: spread between the frames' regions of the mosaic",
                      demo_quality_table(result.report["demo"])])


# --------------------------------------------------------------------------------- CLI
def _parser():
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("options ((run) = run and demo only)")
    add_option_arguments(group)  # one flag per GridOptions field
    group.add_argument("--kappa", type=float, metavar="K", help="(run) set both kappas")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="debug messages, and tracebacks on errors")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only, no progress bar")
    parser = argparse.ArgumentParser(
        prog="grid-mode", description="Grid/Survey mode: stack overlapping plate-solved FITS "
        "frames into the tiles of a global grid and assemble them into one photometrically "
        "seamless mosaic (frame and tile photometry solved over overlap graphs, multi-band "
        "blending).", epilog="Outputs: OUTPUT_DIR/tiles/tile_0001.fits..., mosaic_grid.fits, "
        "mosaic_grid_coverage.fits, grid_report.json, mosaic_grid_preview.png. Exit codes: "
        "0 success, 2 bad input, 1 unexpected failure, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, args, text in [
            ("run", ("input_dir", "output_dir"), "stack the frames listed in "
             "INPUT_DIR/stack_plan.csv (or all FITS files of INPUT_DIR), assemble the mosaic"),
            ("assemble", ("tiles_dir", "output_dir"), "assemble existing tiles "
             "(tile_0001.fits ...) into the mosaic"),
            ("demo", ("output_dir",), "synthetic survey with injected errors end to end, "
             "measured against its truth (default OUTPUT_DIR: ./grid_demo_output)")]:
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        for arg in args:
            p.add_argument(arg, metavar=arg.upper(), **(
                dict(nargs="?", default="grid_demo_output") if name == "demo" else {}))
    return parser


def main(argv=None):
    """Command-line entry point ``grid-mode``; returns the exit code."""
    args = _parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k in OPTION_HELP and v is not None}
    if args.kappa is not None:
        options = dict(dict(kappa_low=args.kappa, kappa_high=args.kappa), **options)
    with console_logging(quiet=args.quiet, verbose=args.verbose, stream=sys.stderr) as bar:
        try:
            if args.command == "run":
                result = run_grid_mode(args.input_dir, args.output_dir, bar, **options)
            elif args.command == "assemble":
                result = assemble_tiles(args.tiles_dir, args.output_dir, bar, **options)
            else:
                result = run_demo(args.output_dir, progress_callback=bar, **options)
            bar.close()
            if args.command == "demo":
                print(_demo_summary(result))
            elif not args.quiet:
                print(f"mosaic: {result.mosaic}\nreport: {result.report_path}")
            return 0
        except (GridModeError, OSError) as exc:
            bar.close()
            if args.verbose:
                traceback.print_exc()
            print(f"grid-mode: error: {exc}", file=sys.stderr)
            return 1 if getattr(exc, "__cause__", None) is not None else 2
        except KeyboardInterrupt:
            bar.close()
            print("grid-mode: interrupted (no partial output file was left)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    # run as a script: use the importable module, so that its classes pickle by the name
    # ``grid_mode`` in worker processes and not as ``__main__``
    from grid_mode import main as _main
    sys.exit(_main())
