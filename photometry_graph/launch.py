"""The ``grid-mode`` command's entry point, light to import, and the workers' early start.

Importing the pipeline (numpy, astropy, scipy, OpenCV, networkx) takes ~1.3 s.  A run whose
frames go to worker processes forks them from a server that imports the same libraries
first (``multiprocessing``'s ``forkserver``).  Started by :func:`main` before the command
imports anything heavy, the server imports on the second CPU while this process does: the
first frames are read ~1 s sooner.  Only the standard library is imported here.

The rule that tells a pooled run before any header is parsed (:func:`pool_likely`) lives
here too, so that the command and ``grid_mode`` apply the same one.
"""

import gzip
import multiprocessing
import os
import signal
import stat
import sys
import threading
from pathlib import Path

from ._log import get_logger, grid_debug

__all__ = ["IN_PROCESS_PIXELS", "FRAME_PASS_MODULE", "WORKER_LIBRARIES", "FITS_SUFFIXES", "main",
           "pool_likely", "pixel_bytes", "tile_boxes", "server_preload", "start_server",
           "take_started_server"]

#: Frame pixels below which a run works in the calling process: starting a pool of
#: workers costs ~1.4 s (measured), what 2 workers save on ~6 frames of 1080x1920.
IN_PROCESS_PIXELS = 12e6
#: The module the workers of the frame pass run (the server preloads it).
FRAME_PASS_MODULE = "photometry_graph.pipeline.pieces"
#: Libraries that the workers' tasks import where they use them and the calling process
#: does not need at the start (the star estimate's least squares and neighbour search,
#: ~0.3 s): the server imports them once, not every worker of every pool.
WORKER_LIBRARIES = ("scipy.optimize", "scipy.spatial")
#: The names of FITS files, any letter case (gzipped ones, and fpack's tile-compressed ones).
FITS_SUFFIXES = (".fit", ".fits", ".fts", ".fit.gz", ".fits.gz", ".fts.gz", ".fit.fz",
                 ".fits.fz", ".fts.fz")
_CARD, _BLOCK = 80, 2880

_started = None  # the thread that started the server here (start_server)
logger = get_logger(__name__)


def main(argv=None):
    """Entry point of the ``grid-mode`` command (see ``grid-mode --help``).

    Called as the command (``argv`` None), a ``run`` whose frames will likely go to worker
    processes (:func:`pool_likely` on the input folder's FITS files and ``--workers``;
    never with ``--scheduler``) starts the workers' server at once; then the command
    line is handled by :func:`photometry_graph.pipeline.cli.main`.
    """
    if argv is None:
        _start_for(sys.argv[1:])
    from .pipeline.cli import main as cli_main
    return cli_main(argv)


def _start_for(args):
    """Start the server for the command line ``args`` when its run will likely use it."""
    if len(args) < 2 or args[0] != "run" or _flag(args, "--scheduler") is not None:
        return
    workers = _flag(args, "--workers")
    try:
        workers = None if workers is None else int(workers)
        folder = Path(args[1])
        paths = sorted(p for p in folder.iterdir() if p.name.lower().endswith(FITS_SUFFIXES)
                       and not p.name.startswith("."))
    except (ValueError, OSError):  # the command line says what is wrong later
        return
    if len(paths) >= 3 and pool_likely(paths, workers):
        start_server(FRAME_PASS_MODULE)


def _flag(args, name):
    """The value of option ``name`` in ``args`` (``--name VALUE`` or ``--name=VALUE``)."""
    for k, arg in enumerate(args):
        if arg == name and k + 1 < len(args):
            return args[k + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def pool_likely(paths, workers=None):
    """Whether the memory plan will run the frames at ``paths`` on worker processes, told
    before their headers are parsed.

    ``workers`` when given (more than one), else the plan's rule on the frames' pixels
    (:data:`IN_PROCESS_PIXELS`) as their file sizes say, with the bytes of a pixel of the
    first readable frame (:func:`pixel_bytes`).  The memory budget may still keep the run
    in the calling process.

    Parameters
    ----------
    paths : sequence of str or Path
    workers : int, optional

    Returns
    -------
    bool
    """
    if workers is not None:
        return workers > 1
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:  # a missing frame: skipped later, with a warning
            pass
    return total / pixel_bytes(paths) >= IN_PROCESS_PIXELS


def pixel_bytes(paths, tries=3):
    """File bytes of a pixel of the image plane: ``BITPIX`` and ``NAXIS3`` of the first
    readable FITS primary header among the first ``tries`` ``paths`` (2 when none).

    The header's cards are read here (the standard library only), gzip-compressed files
    too.

    Examples
    --------
    >>> pixel_bytes(["no-such-file.fits"])
    2
    """
    for p in list(paths)[:tries]:
        cards = _readable_cards(p)
        if cards is None or "BITPIX" not in cards:  # the next, the default
            continue
        depth = cards.get("NAXIS3", 1) if cards.get("NAXIS", 0) >= 3 else 1
        return max(1, abs(cards["BITPIX"]) // 8) * max(1, depth)
    return 2


def tile_boxes(paths):
    """Where this project's tile files lie on the global grid, told by their primary headers
    before astropy parses them.

    Read with the standard library only (gzip-compressed files too): ``GRID_Y0``,
    ``GRID_X0`` and the image plane's ``NAXIS2`` x ``NAXIS1``.

    Parameters
    ----------
    paths : sequence of str or Path

    Returns
    -------
    list
        ``(y0, y1, x0, x1)`` for each path, None for a file that cannot be read, is not a
        tile (no ``GRID_Y0``/``GRID_X0``) or has no image plane.

    Examples
    --------
    >>> tile_boxes(["no-such-file.fits"])
    [None]
    """
    boxes = []
    for p in paths:
        cards = _readable_cards(p, extra=("GRID_Y0", "GRID_X0")) or {}
        y0, x0 = cards.get("GRID_Y0"), cards.get("GRID_X0")
        h, w = (cards.get("NAXIS2", 0), cards.get("NAXIS1", 0)) if cards.get("NAXIS", 0) >= 2 \
            else (0, 0)
        boxes.append(None if y0 is None or x0 is None or h <= 0 or w <= 0
                     else (y0, y0 + h, x0, x0 + w))
    return boxes


def _readable_cards(path, extra=()):
    """:func:`_primary_cards` of a regular file, or None when it cannot be read (a pipe
    would block: never opened; unreadable, corrupt, compressed wrongly): whoever reads it
    later says why."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        return _primary_cards(path, extra=extra)
    except Exception:  # noqa: BLE001 - OSError, ValueError, zlib.error, EOFError ...
        return None


def _primary_cards(path, max_blocks=36, extra=()):
    """The integer ``BITPIX``, ``NAXIS`` and ``NAXISn`` cards of a FITS primary header, and
    those of the keywords ``extra``."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    cards = {}
    with opener(path, "rb") as f:
        for _ in range(max_blocks):
            block = f.read(_BLOCK)
            if len(block) < _BLOCK:
                raise ValueError(f"{path}: not a FITS file (a header without END)")
            for k in range(0, _BLOCK, _CARD):
                card = block[k:k + _CARD].decode("ascii", "replace")
                key = card[:8].strip()
                if key == "END":
                    return cards
                if (key == "BITPIX" or key.startswith("NAXIS") or key in extra) and \
                        card[8:10] == "= ":
                    cards[key] = int(card[10:].split("/")[0])
    raise ValueError(f"{path}: no END card in the first {max_blocks} header blocks")


def server_preload(module):
    """The modules the workers' server imports: ``module``, then :data:`WORKER_LIBRARIES`.

    Parameters
    ----------
    module : str
        The module the workers' tasks live in.

    Returns
    -------
    list of str

    Examples
    --------
    >>> server_preload("photometry_graph.pipeline.pieces")[0]
    'photometry_graph.pipeline.pieces'
    """
    return [module, *WORKER_LIBRARIES]


def start_server(module=None):
    """Start the workers' server (``forkserver``), preloading ``module``, in a thread.

    The server imports ``module`` (the libraries, ~1 s) while the caller goes on; a pool
    made later in this process finds it running.  It never sees a Ctrl-C (SIGINT blocked
    in the starting thread).  Nothing is started without ``forkserver``.

    Parameters
    ----------
    module : str, optional
        The module the workers' tasks live in (None: the preload set already stays).

    Returns
    -------
    threading.Thread or None
        The starting thread (daemon), None without ``forkserver``.
    """
    global _started
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    if module:
        multiprocessing.get_context("forkserver").set_forkserver_preload(
            server_preload(module))

    def start():
        try:
            from multiprocessing import forkserver, resource_tracker
            # the tracker unblocks SIGINT in the thread that starts it: first, then block
            resource_tracker.ensure_running()
            if hasattr(signal, "pthread_sigmask"):
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            forkserver.ensure_running()
        except Exception as exc:  # noqa: BLE001 - the first pool starts it then, as before
            grid_debug(logger, "worker server not started early (%s)", exc)

    _started = threading.Thread(target=start, name="grid-forkserver", daemon=True)
    _started.start()
    return _started


def take_started_server():
    """The thread of the last :func:`start_server` of this process, or None; once (a
    later caller gets None: the server is the first taker's to stop or use)."""
    global _started
    thread, _started = _started, None
    return thread
