"""The assembly stage: tiles (or panels from any stacker) -> the mosaic and its outputs.

:func:`panel_tiles` puts panels on one grid as tile files; :func:`write_mosaic` runs the
tile photometry and the blending and writes every output of a run.
"""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .._log import get_logger, grid_info, grid_warning
from ..blending.assembly import assemble_mosaic
from ..core.tiles import BBox
from ..launch import tile_boxes
from ..photometry.flatten import fit_background_plane, flatten_corrections
from ..photometry.overlap import find_overlapping_pairs, fit_overlap_edges
from .budget import IN_PROCESS_PIXELS, STREAM_BAND_BYTES
from .fileio import (fits_stream, load_tiles, write_html_report, write_json, write_preview,
                     write_tiff, write_uint16)
from .options import GridModeError, n_workers
from .outputs import ChunkSummary, GridResult, chunk_coverage, mosaic_header, plain_preview
from .parallel import pool_workers, start_workers_early, stop_workers_early
from .panels import panel_grid, read_reference, scan_panels, tile_photometry, write_panel_tiles
from .progress import reported

__all__ = ["panel_tiles", "write_mosaic"]

logger = get_logger("photometry_graph.grid_mode")


def panel_tiles(paths, tiles_dir, reference, opts, progress):
    """Panels -> their tile files on a common grid in ``tiles_dir``, and the report's part."""
    if any(p.resolve().parent == tiles_dir.resolve() for p in paths):
        raise GridModeError(f"the panels are in {tiles_dir}, where their tiles are to be "
                            "written: choose another output folder")
    panels = scan_panels(paths, mask_eps=opts.mask_eps)
    ref_wcs = None if reference is None else read_reference(reference)[0]
    wcs, shape, grid = panel_grid(panels, reference=ref_wcs, pixel_scale=opts.pixel_scale)
    progress("%d panels on a %dx%d grid (%s)", 0.0, len(panels), shape[1], shape[0],
             grid["kind"])
    tiles_dir.mkdir(parents=True, exist_ok=True)
    for stale in tiles_dir.glob("tile_*.fits"):  # outputs of an earlier run of ours
        stale.unlink()
    tile_paths, report = write_panel_tiles(panels, wcs, shape, tiles_dir,
                                           mask_eps=opts.mask_eps, progress=progress)
    return tile_paths, {"inputs": [str(p) for p in paths], "panels": report,
                        "grid": dict(grid, reference=None if reference is None
                                     else str(reference))}


def _flattened(tiles, corrections, shape):
    """Corrections with the mosaic's background tilt removed, and the report (warned and
    left as they are when the plane cannot be fitted)."""
    try:
        plane = fit_background_plane(tiles, corrections,
                                     pivot=((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0))
    except Exception as exc:  # noqa: BLE001 - an optional step never stops the run
        grid_warning(logger, "flatten: no background plane could be fitted (%s: %s); the "
                     "mosaic is not flattened", type(exc).__name__, exc)
        return corrections, {"status": "failed", "message": str(exc)}
    flat = flatten_corrections({t.tile_id: (corrections or {}).get(t.tile_id)
                                for t in tiles}, plane, tiles[0].n_channels)
    return flat, dict(plane.to_dict(), status="ok")


def _fit_workers(boxes, opts):
    """Processes for the overlap fits of an assembly without a memory plan, from the
    tiles' boxes: the option's, one for fewer than ``IN_PROCESS_PIXELS`` of tiles (a pool
    would cost more to start)."""
    return 1 if sum(b.area for b in boxes) < IN_PROCESS_PIXELS else n_workers(opts)


def _start_fit_workers(tile_paths, opts):
    """Start the server of the overlap fits' workers before the tiles are loaded, when
    their pool will run (the rule of :func:`write_mosaic` after the loading, on the tiles'
    boxes told by their primary headers); the starting thread, or None."""
    if not opts.photometry or opts.scheduler is not None or n_workers(opts) <= 1:
        return None  # (no pool whatever the tiles: their headers are not read)
    boxes = [BBox(*box) for box in tile_boxes(tile_paths) if box is not None]
    workers = _fit_workers(boxes, opts)
    if workers <= 1:  # too few pixels: the fits stay in this process
        return None
    return start_workers_early(fit_overlap_edges, workers, len(find_overlapping_pairs(boxes)))


def _plain_picture(tiles, summary):
    """The tiles as stacked on the preview grid
    (:func:`~photometry_graph.pipeline.outputs.plain_preview`), or None when it fails."""
    try:
        return plain_preview(tiles, summary)
    except Exception as exc:  # noqa: BLE001 - a picture of the report is never worth the run
        grid_warning(logger, "the preview of the tiles as stacked could not be drawn (%s: %s); "
                     "the report shows the mosaic alone", type(exc).__name__, exc)
        return None


def write_mosaic(tile_paths, out, opts, progress, *, extra, timings, t0, plan=None):
    """Tile files -> the mosaic and its outputs: the assembly stage of a run.

    The tile photometry (:func:`~photometry_graph.pipeline.panels.tile_photometry`, then
    the optional flattening), the blending chunk by chunk straight into the mosaic and
    coverage FITS files (temporary names, renamed at the end), the optional uint16 and
    TIFF copies, the preview, ``grid_report.json`` and ``grid_report.html``.

    Parameters
    ----------
    tile_paths : list of Path
        The tiles (this project's tile files).
    out : Path
        The output folder.
    opts : GridOptions
    progress : Progress
        Receives this stage's messages, 0 to 1.
    extra : dict
        What the earlier stages put in the report (``losses`` also goes into the header).
    timings : dict
        Seconds of the earlier stages; this stage's are added.
    t0 : float
        ``time.perf_counter()`` at the start of the run.
    plan : MemoryPlan, optional
        The run's memory plan: the blending's threads and chunk size (the same mosaic with
        any of them; default ``opts.workers`` and ``opts.chunk_size``).

    Returns
    -------
    GridResult
    """
    t1 = time.perf_counter()
    # the workers' server imports while the tiles' headers and masks are read
    early = _start_fit_workers(tile_paths, opts) if plan is None else None
    try:
        tiles, shape, wcs, origin = load_tiles(tile_paths)
    except BaseException:
        if early is not None:  # no tile to fit: the server goes
            stop_workers_early(early)
        raise
    C = tiles[0].n_channels
    progress("assembling %d tiles into a %dx%d mosaic", 0.0, len(tiles), shape[1], shape[0])
    workers = plan.solve_workers if plan else _fit_workers([t.bbox for t in tiles], opts)
    if opts.photometry and opts.scheduler is None:
        pairs = len(find_overlapping_pairs([t.bbox for t in tiles]))
        if early is None:
            start_workers_early(fit_overlap_edges, workers, pairs)
        elif pool_workers(workers, pairs) <= 1:  # the fits run in this process after all
            stop_workers_early(early)
    _, corrections, harm_report = tile_photometry(tiles, shape, opts, workers=workers)
    if opts.flatten:
        corrections, harm_report["flatten"] = _flattened(tiles, corrections, shape)
    timings["harmonize"] = time.perf_counter() - t1
    progress("tile photometry done", 0.3)

    layout = ("hwc" if opts.legacy_rgb_cube else "chw") if C > 1 else "mono"
    header = mosaic_header(wcs, len(tiles), origin, extra.get("losses"))
    paths = {k: out / f"mosaic_grid{v}" for k, v in dict(
        mosaic=".fits", coverage="_coverage.fits", preview="_preview.png").items()}
    paths["report"] = out / "grid_report.json"
    if opts.html_report:
        paths["html"] = out / "grid_report.html"
    summary = ChunkSummary(shape, C, opts.preview_size)  # preview, value range, area written
    t2 = time.perf_counter()
    mshape = {"mono": shape, "chw": (C,) + shape, "hwc": shape + (C,)}[layout]
    band = plan.stream_band if plan else STREAM_BAND_BYTES
    with ThreadPoolExecutor(1, thread_name_prefix="grid-previews") as side, \
            fits_stream(paths["mosaic"], mshape, header, layout, band_bytes=band) as mosaic, \
            fits_stream(paths["coverage"], shape, header, band_bytes=band) as coverage:
        # the report's picture of the tiles as stacked is drawn while the mosaic is blended
        plain = side.submit(_plain_picture, tiles, summary) if opts.html_report else None
        def sink(bbox, data, weight_sum):
            mosaic.write(bbox.y0, bbox.x0, data)
            coverage.write(bbox.y0, bbox.x0, chunk_coverage(tiles, bbox)[..., None])
            summary.add(bbox, data)

        asm = assemble_mosaic(tiles, shape, corrections=corrections, blend=opts.blend,
                              levels=opts.levels, sink=sink,
                              chunk_size=plan.assembly_chunk if plan else opts.chunk_size,
                              workers=plan.assembly_threads if plan else n_workers(opts),
                              progress=lambda done, total: reported(done, total) and progress(
                                  "blending chunk %d/%d", 0.3 + 0.6 * done / total, done, total))
        if summary.area != shape[0] * shape[1]:
            raise GridModeError(f"the assembly wrote {summary.area} of {shape[0] * shape[1]} "
                                "mosaic pixels; the output was discarded")
        timings["assembly"] = time.perf_counter() - t2
        # the preview is written while the copies are written and the files flushed to disk
        preview = side.submit(write_preview, paths["preview"], summary.preview)
        if opts.save_uint16:
            paths["uint16"] = out / "mosaic_grid_uint16.fits"
            write_uint16(paths["uint16"], mosaic, mshape, header, summary.lo, summary.hi)
        if opts.save_tiff != "none":
            paths["tiff"] = out / "mosaic_grid.tif"
            write_tiff(paths["tiff"], mosaic, summary, stretch=opts.save_tiff == "stretched")
    preview.result()
    previews, plain = dict(step=summary.step, mosaic=summary.preview), plain and plain.result()
    if plain is not None:
        previews["plain"] = plain
    timings["total"] = time.perf_counter() - t0
    report = dict(extra, version=1, options=opts.to_dict(), canvas_shape=shape, channels=C,
                  layout=layout, mosaic_origin=origin,
                  tiles=[dict(tile_id=t.tile_id, bbox=t.bbox, path=t.meta["path"],
                              n_frames=t.meta["n_frames"],
                              correction=(corrections or {}).get(t.tile_id)) for t in tiles],
                  harmonization=harm_report, blending=asm.report, timings=timings,
                  outputs={k: str(v) for k, v in paths.items()})
    report = write_json(paths["report"], report)
    if opts.html_report:
        write_html_report(paths["html"], report, [
            ("the tiles as stacked (no tile photometry, no blending)", previews.get("plain")),
            ("the mosaic", previews["mosaic"])])
    grid_info(logger, "mosaic written: %s (%dx%d, %d channel(s)), report %s", paths["mosaic"],
              shape[1], shape[0], C, " and ".join(str(paths[k]) for k in ("report", "html")
                                                  if k in paths))
    progress("done", 1.0)
    return GridResult(mosaic=paths["mosaic"], coverage=paths["coverage"],
                      report_path=paths["report"], preview=paths["preview"],
                      tiles_dir=Path(tile_paths[0]).parent, uint16=paths.get("uint16"),
                      report=report, html=paths.get("html"), previews=previews)
