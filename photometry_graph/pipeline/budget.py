"""The memory budget of a run: the whole process tree stays within ``memory_mb``.

``memory_mb`` is a promise about the run's processes together -- the calling process,
the server that starts the workers and the workers -- counted as PSS (shared pages divided
among the processes that share them).  :func:`plan_memory` shares it out before any pixel
is read, stage by stage:

* the frames: each worker reads one frame at a time; the calling process gathers the
  frames binned for the frame photometry -- kept in memory when they fit, else written
  to a scratch folder and read back on demand (the same values: the same solve);
* the frame photometry, in the calling process (the workers are gone);
* the tiles: each worker stacks one tile at a time with what is left of its share
  (:func:`~photometry_graph.stacking.stack.stack_frames`: accumulators for as many bands
  as fit, the rest for the frames kept between passes);
* the assembly, in the calling process, on as many threads (and in chunks as large) as
  fit.

Fewer workers are used when that makes the work fit; a run that cannot fit even in one
process stops at the start and says what it needs and which option to change.  The
figures below were measured on Linux (CPython 3.11, numpy 2, OpenCV 4/5); the stacked
pixels and the mosaic do not depend on the budget, only how often frames are read.
"""

import gc
import math
import resource
from dataclasses import dataclass, field

from .._log import get_logger, grid_debug, grid_info, grid_warning
from ..launch import IN_PROCESS_PIXELS  # the rule the command applies too
from ..stacking.clip import STATE_BYTES
from ..stacking.stack import BAND_ROWS
from .options import GridModeError
from .heap import glibc
from .parallel import default_workers

__all__ = ["MemoryPlan", "plan_memory", "plan_tiles", "proc_field_bytes", "process_pss_bytes",
           "release_memory", "MB", "WORKER_MB", "SERVER_MB", "MAIN_GROWTH_MB", "SOLVE_MB",
           "SOLVE_PER_BINNED", "SOLVE_TASK_MB", "PROGRAM_MB", "REPORT_PAGE_MB",
           "IN_PROCESS_PIXELS", "PLANNED_SHARE", "MIN_STACK_MB"]

logger = get_logger(__name__)

MB = 2 ** 20
#: PSS of one worker process forked from the server that imported the package, and of
#: the server with the resource tracker, MB (measured with two idle workers: ~36 each, and
#: ~65, of which ~6 the star estimate's scipy modules the server preloads for them).
WORKER_MB = 40.0
SERVER_MB = 65.0
#: What the calling process gains during a run beyond what it holds when the plan is made
#: (modules imported later, what the allocator keeps), MB (measured ~35-55).
MAIN_GROWTH_MB = 60.0
#: Working memory of the frame photometry's solve beyond the binned frames: a fixed part,
#: MB, and a multiple of the binned frames' bytes, up to 120 MB of them (measured ~170 MB
#: for 120 frames of 1080x1920, 120 MB binned, 560 fits with the star estimates, binned
#: frames in memory or on disk alike; larger sessions not measured).
SOLVE_MB = 30.0
SOLVE_PER_BINNED = 1.2
#: What a worker process holds beyond :data:`WORKER_MB` while it fits one overlap (two
#: binned frames or two tiles' masks and crops, the fits' arrays, sep's buffers), MB.
SOLVE_TASK_MB = 30.0
#: What the program holds when a run starts (its imports), MB (measured 110-140 for the
#: command line): a host process's memory beyond it is the host's, not the run's.
PROGRAM_MB = 160.0
#: The assembly: its fixed part (tile photometry, tile headers and maps) and, per thread,
#: bytes per pixel of an output chunk (measured ~120 MB and ~48 B).
ASSEMBLY_MB = 120.0
#: Drawing the report page (``grid_report.html``: SVG figures, previews encoded by OpenCV),
#: MB (measured +22 MB of peak RSS with two previews of 2048 x 2048 and a 120-frame graph).
REPORT_PAGE_MB = 25.0
ASSEMBLY_BYTES_PER_PIXEL = 48
#: The row band that the mosaic file and its coverage file each gather before writing it
#: (:class:`~photometry_graph.pipeline.fileio.FitsStream`), bytes at most.
STREAM_BAND_BYTES = 32 << 20
#: The share of ``memory_mb`` the plan spends: the rest absorbs the error of its figures
#: (measured within ~10 % of a traced run's stages).
PLANNED_SHARE = 0.9
#: Smallest budget of a tile's stacking, MB, beyond one band of accumulators.
MIN_STACK_MB = 8.0


@dataclass
class MemoryPlan:
    """How a run shares its memory budget.

    ``workers``: processes for the frames and the tiles (1 = in the calling process);
    ``solve_workers``: processes for the overlap fits of the frame and the tile photometry;
    ``stack_bytes``: the budget of one tile's stacking in a worker; ``bin_factor``: the
    binning of the frames for the frame photometry; ``spill``: the binned frames go to a
    scratch folder; ``assembly_threads`` and ``assembly_chunk`` (the same mosaic with any
    of them); ``stream_band``: the bytes of the row band the mosaic and coverage files each
    gather before writing it (0: written block by block, where memory is short);
    ``details``: the figures (MB) of the plan.
    """

    workers: int
    stack_bytes: int
    bin_factor: int
    spill: bool = False
    solve_workers: int = 1
    assembly_threads: int = 1
    assembly_chunk: int = 1024
    stream_band: int = STREAM_BAND_BYTES
    details: dict = field(default_factory=dict)


def proc_field_bytes(pid, name, field):
    """A ``kB`` field of ``/proc/<pid>/<name>`` (e.g. ``smaps_rollup``, ``Pss:``) in
    bytes, or None where it cannot be read (an exited process, not Linux)."""
    try:
        with open(f"/proc/{pid}/{name}", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_pss_bytes(pid="self"):
    """PSS of a process in bytes (``/proc/<pid>/smaps_rollup``), else its peak RSS.

    Examples
    --------
    >>> process_pss_bytes() > 10 * 2 ** 20
    True
    """
    pss = proc_field_bytes(pid, "smaps_rollup", "Pss:")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if pss is None else pss


def release_memory():
    """Give the memory freed by the process back to the system (glibc ``malloc_trim``).

    Freed arrays of a few hundred kB stay with the allocator (its mmap threshold grows
    with what was freed); a process would hold its peak for the rest of the run.  A
    no-op where glibc is not the C library.
    """
    gc.collect()
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _largest_frame(frames):
    """The largest frame's ``(H, W)`` and the most channels of the run's frames."""
    return (max((f.shape for f in frames), key=lambda s: s[0] * s[1]),
            max(f.n_channels for f in frames))


def _frame_bytes(shape, n_channels, bayer):
    """Working memory of a worker reading one frame: the stored pixels, the decoded frame
    (and its debayering), its reprojection onto a band of its footprint with the
    curvature term (frame photometry).  Measured: 56 MB for a mono 1080x1920 frame."""
    h, w = shape
    return h * w * (4 + 4 * n_channels * 5 + (8 if bayer else 0)) + 12 * MB


def _tile_bytes(shape, n_channels, tile_width):
    """Working memory of a worker stacking a tile beyond its accumulators and the frames
    it keeps: one decoded crop (at most a frame) and the pieces of a band with their
    temporaries.  Measured: 45-60 MB for mono 1080x1920 frames on 1862 px wide tiles."""
    h, w = shape
    band = BAND_ROWS * min(tile_width, int(math.hypot(h, w)) + 8)
    return h * w * (2 + 4 * n_channels * 2) + band * (4 * n_channels * 8 + 16) + 20 * MB


def _binned_bytes(frames, bin_factor):
    """The frames binned for the frame photometry: their data and their masks."""
    C = max(f.n_channels for f in frames)
    px = sum(-(-f.shape[0] // bin_factor) * -(-f.shape[1] // bin_factor) * 1.6
             for f in frames)  # a rotated frame's footprint: ~1.3 x its area, + margins
    return px * 4 * C, px


def plan_memory(memory_mb, frames, tile_width, *, workers=None, frame_photometry=True,
                bin_factor=4, chunk_size=1024, baseline_bytes=None, tiles_bytes=0,
                report_page=False, host_bytes=None, threads=None):
    """Share ``memory_mb`` among the processes and the buffers of a run.

    Parameters
    ----------
    memory_mb : float
        The budget of the whole process tree.
    frames : list of FrameInfo
        The run's frames (shapes, channels, Bayer or not).
    tile_width : int
        The widest tile, pixels.
    workers : int, optional
        Workers asked for (default :func:`~photometry_graph.pipeline.parallel.
        default_workers`); fewer are used when their share would not fit; by default none
        (the calling process) for frames of fewer than :data:`IN_PROCESS_PIXELS` pixels.
    frame_photometry : bool
    bin_factor : int
        Binning of the frame photometry (the same at any budget).
    chunk_size : int
        Output chunk of the assembly; smaller ones where it does not fit (the blending
        works with a halo: the same mosaic).
    baseline_bytes : int, optional
        The calling process's memory now (default: measured).
    host_bytes : int, optional
        What the calling process holds that is not the run's (a host program's own
        memory); default: what it measures beyond :data:`PROGRAM_MB`, 0 with
        ``baseline_bytes``.
    tiles_bytes : int
        Bytes of the tile files the assembly reads in place: the pages of their memory
        maps that the blending touches count in the process's PSS (measured: ~170 MB of
        the 200 MB of 6 mono tiles of 2048²).
    report_page : bool
        The assembly draws the report page (:data:`REPORT_PAGE_MB` more).
    threads : int, optional
        Threads of the assembly asked for (default: the workers planned); fewer where their
        chunks would not fit.  A run on a dask cluster plans no worker process here, and
        its assembly still runs in this process, on its CPUs.

    Returns
    -------
    MemoryPlan

    Raises
    ------
    GridModeError
        When the run cannot fit ``memory_mb`` even in one process: says how much it needs.
    """
    budget = float(memory_mb) * MB * PLANNED_SHARE
    base = process_pss_bytes() if baseline_bytes is None else int(baseline_bytes)
    if host_bytes is None:
        host_bytes = 0 if baseline_bytes is not None else max(0, base - PROGRAM_MB * MB)
    base -= host_bytes
    main = base + MAIN_GROWTH_MB * MB
    shape, C = _largest_frame(frames)
    frame_ws = _frame_bytes(shape, C, any(f.bayer for f in frames))
    tile_ws = _tile_bytes(shape, C, tile_width)
    per = max(STATE_BYTES["moments"] + STATE_BYTES["track"] * 3 + 8, STATE_BYTES["sums"])
    band = per * tile_width * C * BAND_ROWS
    binned, masks = _binned_bytes(frames, bin_factor) if frame_photometry and \
        len(frames) >= 2 else (0.0, 0.0)
    solve = SOLVE_MB * MB + SOLVE_PER_BINNED * min(binned + masks, 120 * MB) if binned \
        else 0.0
    chunks = [c for c in (chunk_size, 1024, 512, 256) if c <= chunk_size]
    asm_thread = ASSEMBLY_BYTES_PER_PIXEL * min(chunks) ** 2
    assembly = (ASSEMBLY_MB + (REPORT_PAGE_MB if report_page else 0.0)) * MB + tiles_bytes
    asked = default_workers() if workers is None else max(1, int(workers))
    if workers is None and sum(f.shape[0] * f.shape[1] for f in frames) < IN_PROCESS_PIXELS:
        asked = 1  # a pool's start costs more than it would save (the same pixels)
    for n in range(asked, 0, -1):
        server = 0.0 if n == 1 else SERVER_MB * MB
        share = (budget - main - server - (0.0 if n == 1 else n * WORKER_MB * MB)) / n
        needs = [share - (tile_ws + band + MIN_STACK_MB * MB),  # the tiles
                 share - frame_ws,  # the frames (their binned copies can go to disk)
                 budget - main - server - solve,  # the frame photometry
                 budget - main - server - assembly - asm_thread]  # the assembly
        if min(needs) >= 0:
            break
    else:
        need = (main + max(frame_ws, tile_ws + band + MIN_STACK_MB * MB, solve,
                           assembly + asm_thread)) / PLANNED_SHARE
        raise GridModeError(
            f"memory_mb={memory_mb:g} is too small for these frames: one process needs about "
            f"{math.ceil(need / MB)} MB ({base / MB:.0f} MB for the program, "
            f"{frame_ws / MB:.0f} MB to read a {shape[1]}x{shape[0]} frame, "
            f"{(tile_ws + band) / MB:.0f} MB to stack a band of a {tile_width} px wide tile, "
            f"{solve / MB:.0f} MB for the "
            f"frame photometry, {(assembly + asm_thread) / MB:.0f} MB to assemble the "
            f"tiles); raise --memory-mb to {math.ceil(need / MB)} or more, or lower "
            f"--tile-size / --chunk-size"
            + (f" (--no-html-report saves {REPORT_PAGE_MB:.0f} MB)" if report_page else ""))
    room = min(n * share - n * frame_ws, budget - main - server - solve)
    spill = binned + masks > room
    solve_workers = next((k for k in range(n, 1, -1) if budget - main - server - solve
                          - k * (WORKER_MB + SOLVE_TASK_MB) * MB >= 0), 1)
    left = budget - main - server - assembly  # the assembly: the files' row bands, then
    stream = STREAM_BAND_BYTES if left - 2 * STREAM_BAND_BYTES >= asm_thread else 0
    left -= 2 * stream  # threads, then chunks
    most = n if threads is None else max(1, int(threads))
    asm_threads, chunk = 1, min(chunks)
    for t, c in [(t, c) for c in chunks for t in range(most, 0, -1)]:
        if t * ASSEMBLY_BYTES_PER_PIXEL * c ** 2 <= left:
            asm_threads, chunk = t, c
            break
    details = dict(memory_mb=float(memory_mb), program_mb=base / MB, workers=n,
                   worker_mb=share / MB, stack_mb=(share - tile_ws) / MB,
                   frame_read_mb=frame_ws / MB, binned_mb=binned / MB, spill=bool(spill),
                   host_mb=host_bytes / MB, solve_workers=solve_workers,
                   assembly_threads=asm_threads, assembly_chunk=chunk,
                   stream_band_mb=stream / MB)
    grid_debug(logger, "memory plan: %s", {k: round(v, 1) if isinstance(v, float) else v
                                           for k, v in details.items()})
    return MemoryPlan(workers=n, stack_bytes=int(share - tile_ws), bin_factor=int(bin_factor),
                      spill=bool(spill), solve_workers=solve_workers,
                      assembly_threads=asm_threads, assembly_chunk=chunk, stream_band=int(stream),
                      details=details)


def plan_tiles(memory_mb, frames, tile_width, *, workers=None, chunk_size=1024,
               tiles_bytes=0, report_page=False, host_bytes=0, threads=None):
    """The plan of the stages left (tiles, assembly), from what this process holds now.

    Made after the frame photometry with the calling process's measured PSS (whatever the
    solve left behind), so that the workers' shares are what is really left.  When even
    one process with the least stacking memory would not fit, the tiles are stacked so
    (the same pixels, more reads), with a [GRID] warning that says by how much the budget
    will be exceeded where it will (an info line where that process fits the budget but
    not the share of it the plan spends).  ``host_bytes``: the start plan's
    (``details["host_mb"]``); ``threads``: as :func:`plan_memory`'s.
    """
    release_memory()
    try:
        return plan_memory(memory_mb, frames, tile_width, workers=workers,
                           frame_photometry=False, chunk_size=chunk_size,
                           tiles_bytes=tiles_bytes, report_page=report_page,
                           host_bytes=host_bytes, threads=threads)
    except GridModeError:
        base = process_pss_bytes() - host_bytes
        tile_ws = _tile_bytes(*_largest_frame(frames), tile_width)
        over = base + (MAIN_GROWTH_MB + MIN_STACK_MB) * MB + tile_ws - float(memory_mb) * MB
        if over > 0:
            grid_warning(logger, "memory: this process holds %.0f MB after the frame "
                         "photometry; the tiles are stacked here with the least memory, about "
                         "%.0f MB beyond memory_mb=%g (raise --memory-mb by that much to stay "
                         "within it)", base / MB, math.ceil(over / MB), memory_mb)
        else:  # within the budget, not within the share the plan spends: no warning
            grid_info(logger, "memory: this process holds %.0f MB after the frame photometry; "
                      "the tiles are stacked here with the least memory (their frames read "
                      "again for each band), within memory_mb=%g", base / MB, memory_mb)
        return MemoryPlan(workers=1, stack_bytes=int(MIN_STACK_MB * MB), bin_factor=0,
                          details=dict(memory_mb=float(memory_mb), program_mb=base / MB,
                                       workers=1, stack_mb=MIN_STACK_MB,
                                       over_mb=max(0.0, over / MB)))
