"""The tile stage's work: one tile's frames reprojected, corrected, stacked and written.

:func:`build_tile` is the task a worker process (or the calling process, or a dask worker)
runs for one tile; :func:`tally_tile` records its result in the run's statistics and
losses, :func:`loss_message` says what a run that lost tiles lost.
"""

import os
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from .._log import get_logger, grid_warning
from ..stacking.stack import stack_frames
from .budget import release_memory
from .fileio import write_hdus
from .outputs import tile_header
from .pieces import TilePieces

__all__ = ["FrameFailed", "stack_tile", "build_tile", "tally_tile", "loss_message"]

logger = get_logger("photometry_graph.grid_mode")


class FrameFailed(Exception):
    """Frame ``index`` of a tile could not be read or reprojected (twice): left out."""

    def __init__(self, index, cause):
        super().__init__(index, cause)
        self.index, self.cause = index, cause


def stack_tile(task, keep):
    """Stack the frames ``keep`` (indices into ``task["frames"]``) of a tile, band by band.

    Each band reads only the crops of the frames it needs
    (:class:`~photometry_graph.pipeline.pieces.TilePieces`).  A frame that cannot be read
    and reprojected, twice, raises :class:`FrameFailed` (a lack of memory is not the
    frame's fault: it is raised as it is).
    """
    opts, bbox = task["options"], task["bbox"]
    pieces = TilePieces([task["frames"][k] for k in keep], task["grid_wcs"], bbox,
                        mask_eps=opts.mask_eps,
                        radial=(opts.radial_feather_fraction, opts.radial_shape_power)
                        if opts.radial_weight else None)

    def get_frame(j, bands):
        cause = None
        for _ in range(2):
            try:
                return pieces(j, bands)
            except MemoryError:
                raise
            except Exception as exc:  # truncated, unreadable, vanished ...
                cause = exc
        raise FrameFailed(keep[j], cause)

    return stack_frames(
        get_frame, len(keep), weights=np.asarray([task["weights"][k] for k in keep],
                                                 dtype=np.float64),
        shape=bbox.shape + (task["frames"][0].info.n_channels,), method=opts.stack_method,
        kappa_low=opts.kappa_low, kappa_high=opts.kappa_high,
        winsor_limits=opts.winsor_limits, combine=opts.stack_combine,
        memory_budget_bytes=task["stack_bytes"], noise=[task["noise"][k] for k in keep],
        windows=pieces.windows(), band_reader=True, return_info=True)


def build_tile(task):
    """Worker: reproject, correct and stack the frames of one tile; write its FITS file.

    A frame that fails is left out and the tile stacked again from the others (listed in
    ``left_out``).  Top level and fed with picklable values only: runs in-process, in a
    process pool or on a dask worker alike.  ``task["release"]`` False keeps the memory
    freed for the next tile (given back to the system, a worker of a pool that ends with
    the stage would fault it in again: ~0.1 s a tile).  Returns a small dict of
    statistics.
    """
    t0 = time.perf_counter()
    bbox, keep, left_out, n_valid = task["bbox"], list(range(len(task["frames"]))), [], 0
    while keep:
        try:
            stacked, coverage, info = stack_tile(task, keep)
            break
        except FrameFailed as exc:
            keep.remove(exc.index)
            left_out.append(dict(path=task["frames"][exc.index].info.path,
                                 reason=f"{type(exc.cause).__name__}: {exc.cause}"))
    if keep:
        n_valid = int(np.isfinite(stacked).all(axis=2).sum())
    if n_valid:
        header = tile_header(task["grid_wcs"], bbox, task["tile_id"], task["canvas_shape"],
                             len(keep))
        data = stacked[..., 0] if stacked.shape[2] == 1 else np.moveaxis(stacked, -1, 0)
        write_hdus(task["path"], [fits.PrimaryHDU(np.ascontiguousarray(data), header),
                                   fits.ImageHDU(coverage.astype(np.float32), name="COVERAGE")])
    if keep:
        del stacked, coverage
        if task.get("release", True):  # a worker that outlives the stage
            release_memory()  # holds between tiles only what it uses
    stats = dict(tile_id=task["tile_id"], bbox=bbox, n_frames=len(keep), n_valid=n_valid,
                 path=str(task["path"]) if n_valid else None, stack=info if keep else None,
                 left_out=left_out, seconds=time.perf_counter() - t0, worker_pid=os.getpid())
    if not left_out:  # complete: recorded for a rerun (a tile short of a frame is redone)
        task["store"].save(task["name"], task["key"], made_from=task["made_from"],
                           files=[task["path"]] if n_valid else [], payload=stats)
    return stats


def tally_tile(task, res, stats, losses):
    """Record a tile's result: its statistics, or what was lost (warned)."""
    tile_id, names = task["tile_id"], [Path(f.info.path).name for f in task["frames"]]
    if isinstance(res, BaseException):
        reason = f"{type(res).__name__}: {res}"
    else:
        stats.append(res)
        for f in res["left_out"]:
            grid_warning(logger, "tile %d: frame %s left out (%s); the tile is stacked from "
                         "its %d other frame(s)", tile_id, f["path"], f["reason"],
                         res["n_frames"])
            losses["frames"].append(dict(f, tile_id=tile_id))
        if res["n_valid"] or not res["left_out"]:
            return
        reason = "every frame of the tile failed"
    grid_warning(logger, "tile %d could not be made: %s", tile_id, reason)
    losses["tiles"].append(dict(tile_id=tile_id, bbox=task["bbox"], reason=reason,
                                frames=names))


def loss_message(lost, n_tiles, n_made):
    """The error of a run whose tiles ``lost`` could not be made: what, and how to resume.

    Examples
    --------
    >>> loss_message([dict(tile_id=3, reason="OSError: disk full")], 6, 5)[:44]
    '1 of 6 tiles could not be made, so no mosaic'
    """
    what = "; ".join(f"tile {t['tile_id']} ({t['reason']})" for t in lost[:5])
    more = f"; and {len(lost) - 5} more" if len(lost) > 5 else ""
    return (f"{len(lost)} of {n_tiles} tiles could not be made, so no mosaic was assembled: "
            f"{what}{more}. The {n_made} finished tiles are kept: remove the cause and run the "
            "same command again to resume, or assemble without the lost tiles with "
            "--allow-partial (allow_partial=True)")
