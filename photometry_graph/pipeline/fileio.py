"""The files of a Grid/Survey run: atomic writes, streamed FITS images, lazily read tiles.

Every output is written under a temporary name next to its target and renamed when complete
(:func:`atomic`), so that an error or an interruption leaves no partial file.  The mosaic is
written block by block into a pre-allocated FITS file (:func:`fits_stream`, memory bounded
by one block) and its 16-bit copy read back the same way (:func:`write_uint16`); the tile
files are read lazily (:func:`load_tiles`).  What goes into the files is computed by
:mod:`photometry_graph.pipeline.outputs`.
"""

import datetime
import errno
import json
import os
import re
import socket
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning
from astropy.wcs import WCS

from .._json import jsonable, layered
from .._log import get_logger, grid_warning
from ..core.display import asinh_stretch, eight_bit, png_bytes
from ..diagnostics.html import render_html_report
from .budget import STREAM_BAND_BYTES
from .durable import BackgroundSync, pwrite_all, pwrite_rows
from .images import majority_channels
from .options import GridModeError
from .outputs import uint16_block
from ..core.tiles import BBox, TilePhotometryInfo
from ..core.wcsgrid import tile_wcs

__all__ = ["check_output_folder", "discard_if_empty", "LOCK_NAME", "output_lock",
           "remove_temporaries", "open_fits", "atomic", "write_hdus", "FitsStream",
           "fits_stream", "write_json", "write_html_report", "write_preview", "write_uint16",
           "write_tiff", "TileHDU", "read_tile_header", "load_tiles"]

logger = get_logger(__name__)


# ------------------------------------------------------------------------------ writing
@contextmanager
def open_fits(path):
    """Open a FITS file quietly (astropy warnings silenced), without memory mapping.

    astropy cannot memory-map integer data scaled by ``BZERO``/``BSCALE``; the data of an
    HDU are read into memory when accessed.

    Parameters
    ----------
    path : str or Path

    Yields
    ------
    astropy.io.fits.HDUList
        Lazily loaded HDUs, closed on exit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            yield hdul


@contextmanager
def atomic(final_path):
    """Yield a temporary path next to ``final_path``; on success rename it over the target.

    On any exception (or interruption) the temporary file is removed, the target untouched.

    Parameters
    ----------
    final_path : str or Path

    Yields
    ------
    Path
        A hidden temporary file name in the target's folder, with the target's suffix.
    """
    final_path = Path(final_path)  # the name is matched by _TEMPORARY
    tmp = final_path.with_name(f".{final_path.stem}.{os.getpid()}.{time.time_ns()}.tmp"
                               f"{final_path.suffix}")
    try:
        yield tmp
        os.replace(tmp, final_path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_hdus(path, hdus):
    """Write a FITS file of ``hdus`` atomically (replacing an existing file).

    Parameters
    ----------
    path : str or Path
    hdus : list of astropy.io.fits HDUs
        The first one a ``PrimaryHDU``.
    """
    with atomic(path) as tmp:
        fits.HDUList(hdus).writeto(tmp)


class FitsStream:
    """A FITS image on disk, written and read back by row blocks: nothing is mapped.

    Made by :func:`fits_stream`.  ``layout``: how the pipeline's (h, w, C) blocks lie in the
    file, ``"mono"`` (H, W), ``"chw"`` (C, H, W) planes, ``"hwc"`` (H, W, C) interleaved.
    Memory stays at one row band (a memmap would keep every written page resident): blocks
    are gathered into the band of rows they share, written as one run per plane when it is
    complete, at the next band, at :meth:`read` and at the end (a system call per row of
    every block waited for the interpreter lock of the threads computing the blocks).

    Parameters
    ----------
    fd : int
        File descriptor open for writing.
    path : str or Path
        The file (read back by name).
    offset : int
        Byte offset of the data (the header length).
    shape : tuple of int
        The FITS data shape in ``layout``.
    layout : {"mono", "chw", "hwc"}
    dtype : numpy.dtype
        The file's data type (big-endian).
    band_bytes : int
        The largest row band gathered (0: every block written as it comes, row by row).
    sync : BackgroundSync, optional
        Told the bytes of every write (the file flushed to disk while it fills).
    """

    def __init__(self, fd, path, offset, shape, layout, dtype, band_bytes=STREAM_BAND_BYTES,
                 sync=None):
        self.fd, self.path, self.offset, self.layout, self.sync = fd, path, offset, layout, sync
        self.band_bytes = band_bytes
        self.dtype = np.dtype(dtype)
        self.height, self.width = shape[-2:] if layout == "chw" else shape[:2]
        self.planes = shape[0] if layout == "chw" else 1
        self.depth = shape[2] if layout == "hwc" else 1
        self._band = None  # (y0, rows (h, W, C) in the file's type, columns written)
        self._rows = None

    def _pos(self, plane, y, x):
        return self.offset + (((plane * self.height + y) * self.width + x) * self.depth
                              * self.dtype.itemsize)

    def write(self, y0, x0, block):
        """Write ``block`` (h, w, C) with its top-left pixel at row ``y0``, column ``x0``."""
        h, w = block.shape[:2]
        C = self.planes * self.depth
        if w == self.width or h * self.width * C * self.dtype.itemsize > self.band_bytes:
            self.flush()
            self._write_block(y0, x0, block)
            return
        band = self._band
        if band is None or band[0] != y0 or band[1].shape[0] != h:
            self.flush()
            rows = self._rows  # one buffer for every band (no page faults of a new one)
            if rows is None or rows.shape[0] != h:
                rows = self._rows = np.empty((h, self.width, C), self.dtype)
            band = self._band = (y0, rows, np.zeros(self.width, bool))
        band[1][:, x0:x0 + w] = block
        band[2][x0:x0 + w] = True
        if band[2].all():
            self.flush()

    def flush(self):
        """Write the row band gathered so far (its written columns only)."""
        if self._band is None:
            return
        y0, rows, done = self._band
        self._band = None
        edges = np.flatnonzero(np.diff(np.concatenate([[0], done.view(np.int8), [0]])))
        for x0, x1 in zip(edges[::2], edges[1::2]):
            self._write_block(y0, int(x0), rows[:, x0:x1])

    def _write_block(self, y0, x0, block):
        h, w = block.shape[:2]
        planes = [block] if self.layout == "hwc" else [block[..., p] for p in
                                                      range(block.shape[2])]
        for p, plane in enumerate(planes):
            buf = np.ascontiguousarray(plane, dtype=self.dtype).reshape(h, -1).view(np.uint8)
            if w == self.width:  # full rows: one contiguous run per plane
                pwrite_all(self.fd, buf, self._pos(p, y0, 0))
            else:
                pwrite_rows(self.fd, buf, self._pos(p, y0, x0),
                            self.width * self.depth * self.dtype.itemsize)
            if self.sync is not None:
                self.sync.wrote(buf.nbytes)

    def read(self, y0, y1):
        """Rows ``y0:y1`` as (h, W, C), in the file's type, native byte order."""
        self.flush()
        n = (y1 - y0) * self.width * self.depth
        return np.concatenate([np.fromfile(self.path, self.dtype, n, offset=self._pos(p, y0, 0))
                               .reshape(y1 - y0, self.width, self.depth)
                               for p in range(self.planes)], axis=2)


@contextmanager
def fits_stream(path, shape, header, layout="mono", dtype=">f4", *, band_bytes=STREAM_BAND_BYTES):
    """Create the FITS image ``path`` atomically; yield a :class:`FitsStream` to fill.

    The file (header + data, padded to 2880 bytes) is allocated under a temporary name,
    filled by the caller with ``os.pwrite``, flushed to disk as it fills (not on Windows)
    and at the end (:class:`~photometry_graph.pipeline.durable.BackgroundSync`), and
    renamed; an exception leaves nothing behind.

    Parameters
    ----------
    path : str or Path
    shape : tuple of int
        The FITS data shape: (H, W) for ``"mono"``, (C, H, W) for ``"chw"``, (H, W, C)
        for ``"hwc"``.
    header : astropy.io.fits.Header
        The keywords after the structural ones (``NAXISn`` of it are ignored).
    layout : {"mono", "chw", "hwc"}
    dtype : str or numpy.dtype
        Big-endian FITS type, ``">f4"`` or an integer type such as ``">i2"``.
    band_bytes : int
        :class:`FitsStream`'s (the memory plan's ``stream_band``).

    Yields
    ------
    FitsStream
    """
    dtype = np.dtype(dtype)
    hdr = fits.Header([("SIMPLE", True), ("BITPIX", (-8 if dtype.kind == "f" else 8)
                                          * dtype.itemsize), ("NAXIS", len(shape))])
    for k, n in enumerate(reversed(shape), start=1):
        hdr[f"NAXIS{k}"] = int(n)
    hdr["EXTEND"] = True
    hdr.extend([c for c in header.cards if c.keyword not in hdr
                and not c.keyword.startswith("NAXIS")], strip=False)
    head = hdr.tostring().encode("ascii")
    nbytes = int(np.prod(shape)) * dtype.itemsize
    with atomic(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(head)
            f.truncate(len(head) + -(-nbytes // 2880) * 2880)
        fd = os.open(tmp, os.O_WRONLY | getattr(os, "O_BINARY", 0))
        # flushed while it fills, not on Windows (no os.pwrite), where this was not tried: a
        # flush there may hold up the file's other I/O (the handles share one file object)
        sync = BackgroundSync(fd, background=hasattr(os, "pwrite"))
        try:
            stream = FitsStream(fd, tmp, len(head), tuple(shape), layout, dtype, band_bytes,
                                sync)
            yield stream
            stream.flush()
            sync.finish()
        finally:
            os.close(fd)  # a flush under way has its own descriptor


def write_uint16(path, mosaic, shape, header, lo, hi):
    """uint16 copy of a float mosaic, read back and written block by block.

    Parameters
    ----------
    path : str or Path
    mosaic : FitsStream
        The float mosaic, complete.
    shape : tuple of int
        Its FITS data shape (the copy has the same shape and layout).
    header : astropy.io.fits.Header
        The mosaic's keywords; ``BZERO``, ``BSCALE``, ``FLTMIN`` and ``FLTMAX`` are added.
    lo, hi : float
        The mosaic's value range, mapped to [0, 65535] (NaN -> 0; see
        :func:`photometry_graph.pipeline.outputs.uint16_block`).
    """
    hdr = header.copy()
    hdr["BZERO"], hdr["BSCALE"] = 32768, 1
    hdr["FLTMIN"] = (float(lo), "mosaic value mapped to 0")
    hdr["FLTMAX"] = (float(hi), "mosaic value mapped to 65535")
    with fits_stream(path, shape, hdr, mosaic.layout, dtype=">i2") as out:
        rows = max(1, (32 << 20) // (mosaic.width * mosaic.planes * mosaic.depth * 4))
        for y in range(0, mosaic.height, rows):
            out.write(y, 0, uint16_block(mosaic.read(y, min(y + rows, mosaic.height)), lo, hi))


def write_tiff(path, mosaic, summary, *, stretch=False):
    """16-bit TIFF copy of a float mosaic for image editors, block by block, atomically.

    Rows are written from the last to the first, so that an image editor (row 0 at the
    top) shows the mosaic as FITS viewers do (north up with the usual WCS).  Written with
    ``tifffile`` (the ``tiff`` extra), uncompressed, grey or RGB, one row block in memory.

    Parameters
    ----------
    path : str or Path
    mosaic : FitsStream
        The float mosaic, complete.
    summary : ChunkSummary
        Its value range (``lo``, ``hi``) and its preview (the stretch's percentiles).
    stretch : bool
        False: ``[lo, hi]`` -> ``[0, 65535]`` (as :func:`write_uint16`); True: the asinh
        stretch of the preview (:func:`write_preview`), over the whole range.  NaN -> 0.

    Raises
    ------
    GridModeError
        When ``tifffile`` is not installed.
    """
    try:
        import tifffile
    except ImportError:
        raise GridModeError("writing a TIFF needs the tifffile package: "
                            "pip install 'photometry-graph[tiff]' (or tifffile)") from None
    C = mosaic.planes * mosaic.depth
    limits = asinh_stretch([summary.preview])[1] if stretch else None
    rows = max(1, (32 << 20) // (mosaic.width * C * 4))

    def rows_bottom_up():  # (W,) or (W, C) uint16 rows, the last row first
        for y1 in range(mosaic.height, 0, -rows):
            block = mosaic.read(max(0, y1 - rows), y1)[::-1]
            if stretch:
                img = np.nan_to_num(asinh_stretch([block], limits=limits)[0][0], nan=0.0)
                u = np.round(65535 * img).astype(np.uint16)
            else:
                u = (uint16_block(block, summary.lo, summary.hi).astype(np.int32)
                     + 32768).astype(np.uint16)
            u = u.reshape(block.shape[0], mosaic.width, C)
            yield from (u[..., 0] if C == 1 else u)

    shape = (mosaic.height, mosaic.width) + ((C,) if C > 1 else ())
    with atomic(path) as tmp:
        tifffile.imwrite(tmp, data=rows_bottom_up(), shape=shape, dtype=np.uint16,
                         photometric="rgb" if C > 1 else "minisblack")


def write_json(path, payload, *, indent=2):
    """Write ``payload`` as strict JSON (NaN/inf -> null) atomically; return what was written.

    Parameters
    ----------
    path : str or Path
    payload : dict
        Converted by :func:`photometry_graph._json.jsonable`.
    indent : int or None
        For a reader (default 2): the keys of the first levels of dicts on their own
        lines, each item of a list of records on one line
        (:func:`photometry_graph._json.layered`); None: all on one line.
    """
    payload = jsonable(payload)
    with atomic(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(payload, allow_nan=False) if indent is None
                 else layered(payload, int(indent)))
    return payload


def write_html_report(path, report, images=None, *, title=None):
    """Draw ``report`` as one self-contained HTML page and write it atomically.

    A page that cannot be drawn or written costs the run nothing: a ``[GRID]`` warning says
    so (grid_report.json holds the same data) and False is returned.

    Parameters
    ----------
    path : str or Path
    report : dict
        What :func:`write_json` wrote.
    images : sequence of (str, numpy.ndarray), optional
        Previews (see :func:`photometry_graph.diagnostics.html.render_html_report`).
    title : str, optional

    Returns
    -------
    bool
        Whether the page was written.
    """
    try:
        page = render_html_report(report, images=images, title=title)
        with atomic(path) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except Exception as exc:  # noqa: BLE001 - the report is a view, never a reason to fail
        grid_warning(logger, "the HTML report %s could not be written (%s: %s); "
                     "grid_report.json holds the same data", path, type(exc).__name__, exc)
        return False
    return True


def write_preview(path, image, *, origin="lower"):
    """Write an 8-bit PNG of ``image`` with an asinh stretch, atomically.

    Parameters
    ----------
    path : str or Path
    image : numpy.ndarray, (h, w, C)
        C = 1 (grey) or 3 (RGB); the stretch uses percentiles over the finite pixels and
        non-finite pixels become 0.
    origin : {"lower", "upper"}
        Where row 0 of ``image`` goes: ``"lower"`` at the bottom of the picture, as FITS
        viewers show a FITS image (north up with the usual WCS), ``"upper"`` at the top.

    Raises
    ------
    GridModeError
        When OpenCV cannot encode the image.
    """
    if origin not in ("lower", "upper"):
        raise ValueError(f"origin must be 'lower' or 'upper', got {origin!r}")
    img = eight_bit(asinh_stretch([image])[0][0])
    try:
        png = png_bytes(img[::-1] if origin == "lower" else img)
    except RuntimeError as exc:
        raise GridModeError(f"OpenCV could not encode the preview {path}") from exc
    with atomic(path) as tmp:
        tmp.write_bytes(png)


# ------------------------------------------------------------------------------ reading
class TileHDU:
    """A float32 image HDU of a tile file, read lazily and never held open.

    ``hdu()`` maps it afresh (the tile data, channels last), for the caller to drop after
    use; ``hdu[ys, xs]`` and ``np.asarray(hdu)`` (2-D HDUs: the coverage) copy the pixels
    asked for out of a mapping dropped at once, so that the coverage of every tile does not
    stay mapped and resident.  Only the pages of the crop are read, and converted from the
    file's byte order in one pass (reading the rows with ``np.fromfile``, then converting
    them, took 2.5 ms for a whole coverage of 1024 x 1024 and 0.6 ms for a crop of it,
    against 0.6 and 0.3 ms).

    Parameters
    ----------
    path : str or Path
    offset : int
        Byte offset of the HDU's data in the file.
    shape : tuple of int
        The FITS data shape.
    channels_last : bool
        Whether ``hdu()`` moves the first axis of 3-D data last.
    """

    def __init__(self, path, offset, shape, channels_last=False):
        self.path, self.offset, self.shape = str(path), offset, tuple(shape)
        self.channels_last, self.ndim = channels_last, len(shape)

    def __call__(self):
        data = np.memmap(self.path, dtype=">f4", mode="r", offset=self.offset, shape=self.shape)
        return np.moveaxis(data, 0, -1) if self.channels_last and data.ndim == 3 else data

    def __getitem__(self, key):
        ys, xs = key
        return np.array(self()[ys, xs], dtype=np.float32)  # a copy: the mapping goes

    def __array__(self, dtype=None, copy=None):
        return self[:, :].astype(dtype or np.float32, copy=False)


def read_tile_header(path):
    """What a tile file holds, its pixels left on disk.

    Parameters
    ----------
    path : str or Path
        A tile file written by the pipeline (``TILEID``, ``GRID_Y0``, ``GRID_X0`` keywords,
        unscaled float32 data, optional ``COVERAGE`` extension).

    Returns
    -------
    dict
        ``tile_id``, ``y0``, ``x0`` (origin on the global grid), ``shape`` (H, W),
        ``n_channels``, ``n_frames``, ``path``, ``data`` and ``coverage`` (:class:`TileHDU`,
        coverage None when absent) and ``wcs`` (celestial).

    Raises
    ------
    GridModeError
        When the data are not unscaled float32.
    KeyError
        When a required keyword is missing.
    """
    with open_fits(path) as hdul:
        hdr = hdul[0].header
        if hdr["BITPIX"] != -32 or "BZERO" in hdr or "BSCALE" in hdr:
            raise GridModeError("tile data must be unscaled float32")
        shape = tuple(int(hdr[f"NAXIS{k}"]) for k in range(int(hdr["NAXIS"]), 0, -1))
        names = [h.name.upper() for h in hdul]
        cov = hdul[names.index("COVERAGE")] if "COVERAGE" in names else None
        return dict(tile_id=int(hdr["TILEID"]), y0=int(hdr["GRID_Y0"]), x0=int(hdr["GRID_X0"]),
                    shape=shape[-2:], n_channels=shape[0] if len(shape) == 3 else 1,
                    n_frames=int(hdr.get("NFRAMES", 0)), path=path,
                    data=TileHDU(path, hdul[0].fileinfo()["datLoc"], shape, True),
                    coverage=None if cov is None else TileHDU(
                        path, cov.fileinfo()["datLoc"], cov.shape),
                    wcs=WCS(hdr, relax=True).celestial)


def load_tiles(paths):
    """Tile files -> lazily loaded tiles on the global canvas cropped to the tiles.

    Unreadable tile files are skipped with a ``[GRID]`` warning, and so are tiles whose
    channel count differs from the majority's.

    Parameters
    ----------
    paths : list of str or Path

    Returns
    -------
    tiles : list of TilePhotometryInfo
        Bounding boxes on the cropped canvas; ``data`` and ``coverage`` are
        :class:`TileHDU`; ``meta`` holds ``path`` and ``n_frames``.
    shape : (int, int)
        The cropped canvas (H, W).
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    origin : (int, int)
        Its first pixel (row, column) on the global grid.

    Raises
    ------
    GridModeError
        When no tile file is readable.
    """
    metas = []
    for p in paths:
        try:
            metas.append(read_tile_header(p))
        except Exception as exc:
            grid_warning(logger, "skipping tile file %s: %s", p, exc)
    metas = majority_channels(metas, lambda m: m["n_channels"], lambda m: m["path"], "tiles")
    if not metas:
        raise GridModeError("no readable tile file (tile_0001.fits ...) to assemble")
    oy, ox = min(m["y0"] for m in metas), min(m["x0"] for m in metas)
    shape = (max(m["y0"] + m["shape"][0] for m in metas) - oy,
             max(m["x0"] + m["shape"][1] for m in metas) - ox)
    tiles = [TilePhotometryInfo(m["tile_id"], BBox(m["y0"] - oy, m["y0"] - oy + m["shape"][0],
                                                   m["x0"] - ox, m["x0"] - ox + m["shape"][1]),
                                data=m["data"], coverage=m["coverage"], wcs=m["wcs"],
                                meta=dict(path=str(m["path"]), n_frames=m["n_frames"]),
                                n_channels=m["n_channels"])
             for m in metas]
    dy, dx = oy - metas[0]["y0"], ox - metas[0]["x0"]  # the tile WCS shifted to the canvas
    wcs = tile_wcs(metas[0]["wcs"], BBox(dy, dy + shape[0], dx, dx + shape[1]))
    return tiles, shape, wcs, (oy, ox)


def check_output_folder(input_folder, output_folder):
    """Create the output folder if needed and check that it is writable and apart from the input.

    Parameters
    ----------
    input_folder : str or Path or None
        The run's input folder; the output folder must differ from it.
    output_folder : str or Path

    Returns
    -------
    Path

    Raises
    ------
    GridModeError
        When the folders are the same or the output folder is not writable.
    """
    out = Path(output_folder)
    if input_folder is not None and out.resolve() == Path(input_folder).resolve():
        raise GridModeError(f"the output folder must differ from the input folder ({out}); "
                            "outputs must never mix with the frames")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".grid_write_probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink(missing_ok=True)  # a run holding the folder may have removed it
    except OSError as exc:
        raise GridModeError(f"the output folder {out} is not writable "
                            f"({exc.strerror or exc})") from None
    return out


@contextmanager
def discard_if_empty(folder):
    """Meanwhile: if ``folder`` did not exist and the block fails, remove it if it is empty.

    A run that fails before writing anything (no usable frame, a bad option) leaves no
    empty output folder behind; a folder that existed before, or that holds a file (a tile
    written before the failure), is kept.  Empty subfolders (``tiles/``) count as empty.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "out"
    >>> try:
    ...     with discard_if_empty(out):
    ...         (out / "tiles").mkdir(parents=True)
    ...         raise RuntimeError("no usable frame")
    ... except RuntimeError:
    ...     pass
    >>> out.exists()
    False
    """
    folder = Path(folder)
    existed = folder.exists()
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir():
            _remove_empty_tree(folder)
        raise


def _remove_empty_tree(folder):
    """Remove ``folder`` if it holds no file, only (empty) folders; never raises."""
    try:
        dirs = [folder] + [p for p in folder.rglob("*")]
        if any(not p.is_dir() for p in dirs):
            return
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            d.rmdir()
    except OSError:  # a file appeared meanwhile, permissions: keep the folder
        pass


# ------------------------------------------------------------------- the output folder
#: The lock file of an output folder: one run at a time (:func:`output_lock`).
LOCK_NAME = ".grid_mode.lock"
# temporary files of atomic() and the probe of check_output_folder
_TEMPORARY = re.compile(r"^\..+\.\d+\.\d+\.tmp(\.\w+)?$|^\.grid_write_probe\.\d+$")


@contextmanager
def output_lock(folder):
    """Hold the exclusive lock of an output folder meanwhile: one run per folder.

    The lock is the file ``folder/.grid_mode.lock`` holding the owner's pid, host and start
    time, locked with ``flock`` while the run lasts (the kernel releases it when the process
    dies, however it dies).  A lock file that nobody holds any more (a run killed with
    ``kill -9``) is taken over with a ``[GRID]`` warning.  Where ``flock`` is not available
    a lock file whose owner is a live process of this host, or of another host, is
    respected.  The file is removed on exit.

    Parameters
    ----------
    folder : str or Path
        An existing folder.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    GridModeError
        When another run holds the folder: who (pid, host, start time) and what to do.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with output_lock(d) as lock:
    ...     lock.name in [p.name for p in d.iterdir()]
    True
    >>> list(d.iterdir())
    []
    """
    path = Path(folder) / LOCK_NAME
    fd = _acquire(path)
    try:
        yield path
    finally:
        try:
            if os.path.samestat(os.stat(path), os.fstat(fd)):
                os.unlink(path)  # still ours: removed while locked
        except OSError:
            pass
        os.close(fd)  # releases the flock


def _acquire(path, attempts=20):
    """Open and lock ``path``; write our owner record; return the descriptor."""
    for _ in range(attempts):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        held = _flock(fd)
        owner = _read_owner(fd)
        if held is None and owner and _owner_alive(owner):  # no flock here: by the pid
            held = False
        if held is False:
            os.close(fd)
            raise GridModeError(
                f"another grid-mode run is writing into {path.parent} ({_describe(owner)}); "
                "wait for it to finish or choose another output folder (if no such run "
                f"exists any more, delete {path})")
        try:
            same = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:  # its owner finished and removed it meanwhile
            same = False
        if not same:
            os.close(fd)
            continue
        if owner:
            grid_warning(logger, "taking over the lock of an earlier run that is gone (%s): "
                         "%s", _describe(owner), path)
        me = dict(pid=os.getpid(), host=socket.gethostname(), started=datetime.datetime.now()
                  .isoformat(timespec="seconds"), process_start=_process_start(os.getpid()))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        return fd
    raise GridModeError(f"could not lock the output folder {path.parent} (its lock file "
                        f"{path.name} keeps changing); is another run starting there?")


def _flock(fd):
    """Exclusive non-blocking flock: True taken, False held by another, None unsupported."""
    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        return False if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None


def _read_owner(fd):
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):
        return {"unreadable": True}


def _process_start(pid):
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _owner_alive(owner):
    """Whether a lock's owner may still run: another host's always may."""
    if owner.get("host") != socket.gethostname():
        return True
    start = _process_start(int(owner.get("pid", -1)))
    return start is not None and owner.get("process_start") in (None, start)


def _describe(owner):
    if not owner or "pid" not in owner:
        return "it is just starting" if not owner else "owner unknown"
    return (f"pid {owner['pid']} on host {owner.get('host', '?')}, started "
            f"{owner.get('started', '?')}")


def remove_temporaries(folder, subfolders=("tiles", "resume")):
    """Remove the temporary files of interrupted writes in ``folder`` and its ``subfolders``.

    Only the hidden names that :func:`atomic` and :func:`check_output_folder` make
    (``.tile_0001.<pid>.<ns>.tmp.fits`` ...) are removed; hold the folder's
    :func:`output_lock` meanwhile, so that no running write loses its file.

    Parameters
    ----------
    folder : str or Path
    subfolders : tuple of str

    Returns
    -------
    int
        The number of files removed.
    """
    removed = 0
    for sub in (Path(folder), *(Path(folder) / s for s in subfolders)):
        try:
            names = [e for e in os.scandir(sub) if _TEMPORARY.match(e.name)]
        except OSError:
            continue
        for entry in names:
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed
