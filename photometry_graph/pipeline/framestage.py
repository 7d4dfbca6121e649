"""The frame stage of a run: every frame's pixels read once, then the frame photometry.

A run reads its frames' headers here (:func:`read_headers`), lays out its grid and makes
its memory plan; then one pass over the frames' pixels in the workers
(:func:`~photometry_graph.pipeline.pieces.frame_pass`: the scan, the frame binned on the
global grid for the frame photometry, and with it the frame's footprint and homography on
that grid) described by :func:`frame_tasks` and gathered by
:func:`gather_frames` (frames without usable pixels skipped by name; binned frames beyond
the memory plan written to a scratch folder and read back when used).  :func:`solve_frames`
solves a gain and an offset or plane per frame on the binned frames.  Binned frames and
the solve are pieces of the run (:mod:`~photometry_graph.pipeline.resume`): a rerun into
the same folder reuses them when they were made from the same inputs.
"""

import hashlib
from pathlib import Path

from .._log import get_logger, grid_warning
from ..core.tiles import BBox
from ..photometry.frames import harmonize_frames
from .frameio import file_problem, read_frame_info
from .images import usable_majority, wcs_text
from .options import GridModeError
from .parallel import fit_task_map
from .pieces import BinnedFile, SharedWCS, spill_binned
from .resume import correction_from_dict, frame_source, piece_key, piece_options

__all__ = ["FRAME_BIN", "FRAME_MIN_PIXELS", "SCRATCH_DIR",
           "read_headers", "frame_tasks", "kept_result", "gather_frames", "solve_frames"]

logger = get_logger(__name__)

FRAME_BIN = 4  # binning of the global grid for the frame photometry (at any memory budget)
FRAME_MIN_PIXELS = 500  # smallest overlap fitted by the frame solve, pixels binned FRAME_BIN x
#: The folder, in the output folder, of binned frames that do not fit the memory plan
#: (removed when the frame solve is done).
SCRATCH_DIR = ".binned_frames"


def read_headers(entries, progress, outliers):
    """The headers of the planned frames, read here; bad ones skipped with a warning.

    Mono and colour frames are not mixed: the minority channel count is skipped (warned);
    so are frames whose geometry does not fit the others' (``outliers(frames)`` -> a dict
    index -> reason).  The pixels are read later, once (:func:`frame_tasks`).
    """
    frames = []
    for i, entry in enumerate(entries):
        try:
            problem = file_problem(entry.path)
            if problem:
                raise GridModeError(problem)
            frames.append(read_frame_info(entry.path, index=i, exposure=entry.exposure))
        except GridModeError as exc:
            grid_warning(logger, "skipping %s: %s", entry.path, exc)
        if (i + 1) % 200 == 0 or i + 1 == len(entries):  # ~3 ms a header
            progress("reading headers %d/%d", (i + 1) / len(entries), i + 1, len(entries))
    bad = outliers(frames)
    for k, reason in sorted(bad.items()):
        grid_warning(logger, "skipping %s: %s", frames[k].path, reason)
    frames = [f for k, f in enumerate(frames) if k not in bad]
    return usable_majority(frames, lambda f: f.n_channels, lambda f: f.path, "frames",
                           len(entries))


def frame_tasks(frames, grid, opts, pieces, bin_factor=None, scratch=None):
    """The tasks of the pass over the frames, and the key of the frame solve (or None).

    With a ``bin_factor`` each frame is binned on ``grid`` for the frame photometry, unless
    an earlier run recorded the same binned frame (``task["binned"]`` then holds it, written
    to ``scratch`` when given: :func:`kept_result`) or the same frame solve (no frame is
    binned).  With ``scratch`` the worker writes the binned frame there itself.
    ``pieces``: the run's
    :class:`~photometry_graph.pipeline.resume.RunPieces` (None: nothing recorded).
    """
    tasks = [dict(index=k, frame=f, options=opts) for k, f in enumerate(frames)]
    if not bin_factor:
        return tasks, None
    shared = SharedWCS(grid.wcs)  # the grid travels with the binning, pickled once
    for t in tasks:
        t.update(grid_wcs=shared, grid_shape=grid.shape, bin_factor=bin_factor,
                 scratch=None if scratch is None else str(Path(scratch).resolve()))
    if pieces is None:  # nothing recorded, nothing reused
        return tasks, None
    grid_text = wcs_text(grid.wcs)  # made once: the key a WCS makes
    # the record of each binned frame names the grid by a digest of its header (2.9 kB)
    grid_note = "sha256:" + hashlib.sha256(grid_text.encode()).hexdigest()
    for t in tasks:
        f = t["frame"]  # its key: from its file and header (not the scan, made from them)
        made_from = dict(piece="binned frame", frame=frame_source(f), grid=grid_text,
                         grid_shape=grid.shape, bin_factor=bin_factor,
                         options=piece_options(opts, "binned frame"))
        t["record"] = dict(store=pieces.store, name=pieces.binned_name(f),
                           key=piece_key(made_from), made_from=dict(made_from, grid=grid_note))
    solve_key = piece_key(dict(piece="frame solve", binned=[t["record"]["key"] for t in tasks],
                               options=piece_options(opts, "frame solve")))
    solved = pieces.store.lookup("frame_solve", solve_key) is not None
    for t in tasks:
        found, binned = (False, None) if solved else _reused_binned(pieces.store,
                                                                     t["record"])
        if solved or found:
            t.update(bin_factor=None, binned=kept_result((None, None, binned, None), scratch,
                                                         t["index"])[2])
    n = sum("binned" in t for t in tasks) if not solved else 0
    pieces.reused("binned_frames", n, f"{n} binned frame(s)")
    return tasks, solve_key


def _reused_binned(store, record):
    """A binned frame recorded by an earlier run with this key: (found, binned or None)."""
    name = record["name"]
    if store.lookup(name, record["key"]) is None:
        return False, None
    try:
        arrays = store.load_arrays(name) if store.path(name, ".npz").exists() else None
    except (OSError, ValueError, KeyError):
        return False, None
    if arrays is None:
        return True, None  # the frame misses the canvas
    return True, (BBox(*arrays["box"].tolist()), arrays["data"], arrays["valid"])


def kept_result(res, scratch, k):
    """A result of :func:`~photometry_graph.pipeline.pieces.frame_pass` as it is kept until
    the solve: its binned frame written to ``scratch`` (as it arrives, so that at most one
    is in memory) when ``scratch`` is given and the worker has not written it."""
    if scratch is None or isinstance(res, BaseException) or not isinstance(res[2], tuple) \
            or isinstance(res[2][1], BinnedFile):
        return res
    return res[:2] + (spill_binned(res[2], Path(scratch), k),) + res[3:]


def gather_frames(frames, tasks, results):
    """What the pass gave: the frames kept (noise, saturation set; re-indexed), their
    binned copies (those of ``tasks`` reused, the others from ``results``) and their
    :func:`~photometry_graph.pipeline.pieces.frame_geometry` (None where the pass had no
    grid).  A frame whose pass failed is skipped with a warning."""
    kept, binned, geometry = [], [], []
    for f, t, res in zip(frames, tasks, results):
        if isinstance(res, BaseException):  # no usable pixel, unreadable, a worker died
            grid_warning(logger, "skipping %s: %s", f.path, res)
            continue
        f.noise, f.saturation, b, g = res
        b = t.get("binned", b)
        f.index = len(kept)
        kept.append(f)
        binned.append(b)
        geometry.append(g)
    if not kept:
        raise GridModeError(f"no usable frame left: {len(frames)} read, all skipped "
                            "(see the warnings above)")
    return kept, binned, geometry


def solve_frames(frames, binned, grid, opts, progress, pieces, solve_key, *, workers=1):
    """Gain + offset/plane per frame in global pixels (None = identity) and the report.

    ``binned``: each frame's binned copy (a ValueError: the frame could not be binned).
    The solve of an earlier run into the folder with the same ``solve_key`` is reused.
    The star searches and the overlap fits run on ``workers`` processes (or the
    ``opts.scheduler`` cluster): the same results with any number.
    """
    record = None if solve_key is None else pieces.store.lookup("frame_solve", solve_key)
    if record is not None:
        pieces.reused("frame_solve", True, "the frame solve")
        progress("Frame photometry: the frame solve of an earlier run is reused", 1.0)
        return ([None if c is None else correction_from_dict(c)
                 for c in record["payload"]["corrections"]], record["payload"]["report"])
    failed = [k for k, b in enumerate(binned) if isinstance(b, BaseException)]

    def get_binned(k):
        res, binned[k] = binned[k], None
        if isinstance(res, BaseException):  # a ValueError skips the frame (warned)
            raise ValueError(f"{frames[k].path} could not be binned: {type(res).__name__}: "
                             f"{res}")
        return res

    # every overlap gives a gain with an honest sigma (pixels and stars of the binned frames,
    # combined); the solve weighs them, and fits only the kept overlaps (max_degree)
    result = harmonize_frames(get_binned, [f.wcs for f in frames], [f.shape for f in frames],
                              grid.wcs, grid.shape, bin_factor=FRAME_BIN, prebinned=True,
                              model=opts.frame_model, background=False, rng=0,
                              gain_estimator=opts.gain_estimator,
                              gradient_gauge=opts.gradient_gauge,
                              max_degree=opts.frame_overlaps or None,
                              min_pixels=FRAME_MIN_PIXELS, fit_kwargs=dict(
                                  task_map=fit_task_map(workers, opts.scheduler)))
    result.report["fit_workers"] = "cluster" if opts.scheduler is not None else workers
    corrections = [result.corrections.get(k) for k in range(len(frames))]
    if not failed and solve_key is not None:  # a solve short of a frame is not recorded
        pieces.store.save("frame_solve", solve_key, payload=dict(
            corrections=[None if c is None else c.to_dict() for c in corrections],
            report=result.report))
    progress("Frame photometry: done", 1.0)
    return corrections, result.report
