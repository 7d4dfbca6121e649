"""What goes into the output files, computed without touching a file.

The mosaic is written chunk by chunk (:mod:`photometry_graph.pipeline.fileio` does the
writing); these helpers compute the pieces: the coverage map of an output chunk
(:func:`chunk_coverage`), the preview and the value range gathered while the chunks pass
(:class:`ChunkSummary`), the tiles placed as they are on the preview grid (the "before" of
the report page, :func:`plain_preview`), the 16-bit copy of a block (:func:`uint16_block`)
and the FITS headers of the tile files and of the mosaic (:func:`tile_header`,
:func:`mosaic_header`).
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.tiles import BBox  # noqa: F401 (doctests)
from ..core.wcsgrid import tile_wcs

__all__ = ["GridResult", "chunk_coverage", "ChunkSummary", "plain_preview", "uint16_block",
           "tile_header", "mosaic_header"]


def chunk_coverage(tiles, bbox):
    """Frame coverage of an output chunk: the largest coverage of the tiles valid there.

    Parameters
    ----------
    tiles : list of TilePhotometryInfo
        Tiles on the mosaic canvas; their ``coverage`` (indexable by slices, e.g. an array)
        and ``mask`` are read on the chunk only.  Tiles without coverage count as 0.
    bbox : BBox
        The chunk on the canvas.

    Returns
    -------
    numpy.ndarray, shape ``bbox.shape``, float32
        0 where no tile is valid; NaN coverage counts as 0.

    Examples
    --------
    >>> from photometry_graph.core.tiles import TilePhotometryInfo
    >>> t = TilePhotometryInfo(1, BBox(0, 4, 0, 4), data=np.ones((4, 4, 1)),
    ...                        coverage=np.full((4, 4), 3.0))
    >>> chunk_coverage([t], BBox(2, 6, 2, 6))[:, 1]
    array([3., 3., 0., 0.], dtype=float32)
    """
    cov = np.zeros(bbox.shape, dtype=np.float32)
    for t in tiles:
        inter = t.bbox.intersection(bbox)
        if not inter.is_empty and t.coverage is not None:
            sl = inter.slices_in(t.bbox)
            out = cov[inter.slices_in(bbox)]  # in place, where the tile is valid; NaN: 0
            np.fmax(out, np.asarray(t.coverage[sl], dtype=np.float32), out=out,
                    where=t.mask[sl])
    return np.minimum(cov, np.finfo(np.float32).max, out=cov)  # an infinite one: the largest


class ChunkSummary:
    """Preview, finite value range and area of a mosaic that passes chunk by chunk.

    Parameters
    ----------
    shape : (int, int)
        Canvas (H, W).
    channels : int
    preview_size : int
        Longest side of the preview; it keeps every ``step``-th pixel of the canvas in both
        axes, ``step = ceil(max(shape) / preview_size)``.

    Attributes
    ----------
    preview : numpy.ndarray, (ceil(H / step), ceil(W / step), channels), float32
        NaN where no chunk has passed yet.
    lo, hi : float
        Smallest and largest finite value so far (``inf``, ``-inf`` before any).
    area : int
        Pixels of the chunks added (the chunks must not overlap).

    Examples
    --------
    >>> s = ChunkSummary((4, 6), 1, preview_size=3)
    >>> s.add(BBox(0, 4, 0, 3), np.arange(12.0).reshape(4, 3, 1))
    >>> s.add(BBox(0, 4, 3, 6), np.full((4, 3, 1), np.nan))
    >>> s.preview[..., 0]
    array([[ 0.,  2., nan],
           [ 6.,  8., nan]], dtype=float32)
    >>> float(s.lo), float(s.hi), s.area
    (0.0, 11.0, 24)
    """

    def __init__(self, shape, channels, preview_size=2048):
        self.step = step = max(1, math.ceil(max(shape) / preview_size))
        self.preview = np.full((-(-shape[0] // step), -(-shape[1] // step), channels), np.nan,
                               np.float32)
        self.lo, self.hi, self.area = np.inf, -np.inf, 0

    def add(self, bbox, data):
        """Take in the chunk ``data`` (h, w, C) at ``bbox`` of the canvas."""
        step = self.step
        sy, sx = -bbox.y0 % step, -bbox.x0 % step  # the preview: every step-th pixel
        sub = data[sy::step, sx::step]
        gy, gx = (bbox.y0 + sy) // step, (bbox.x0 + sx) // step
        self.preview[gy:gy + sub.shape[0], gx:gx + sub.shape[1]] = sub
        lo, hi = ((np.fmin.reduce(data, axis=None), np.fmax.reduce(data, axis=None))
                  if data.size else (np.inf, -np.inf))
        if data.size and not (np.isfinite(lo) and np.isfinite(hi)):  # NaN, or infinite
            fin = data[np.isfinite(data)]
            lo, hi = (fin.min(), fin.max()) if fin.size else (np.inf, -np.inf)
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.area += bbox.area


def plain_preview(tiles, summary):
    """The tiles placed as they are (no correction, no blending) on the preview grid.

    The "before" of a run's report: every ``summary.step``-th pixel of each tile's valid
    pixels, later tiles over earlier ones where they overlap, so that the steps between
    the tiles as stacked show.  Tile data are read with that stride only.

    Parameters
    ----------
    tiles : list of TilePhotometryInfo
        On the mosaic canvas (their masks are computed if not yet known).
    summary : ChunkSummary
        Gives the step and the preview's shape.

    Returns
    -------
    numpy.ndarray, float32, the shape of ``summary.preview``
        NaN where no tile is valid.

    Examples
    --------
    >>> from photometry_graph.core.tiles import TilePhotometryInfo
    >>> s = ChunkSummary((2, 6), 1, preview_size=3)
    >>> ts = [TilePhotometryInfo(k, BBox(0, 2, 3 * k, 3 * k + 3),
    ...                          data=np.full((2, 3), k + 1.0)) for k in range(2)]
    >>> plain_preview(ts, s)[..., 0]
    array([[1., 1., 2.]], dtype=float32)
    """
    step, out = summary.step, np.full_like(summary.preview, np.nan)
    for t in tiles:
        b = t.bbox
        sy, sx = -b.y0 % step, -b.x0 % step
        data = t.get_data()[sy::step, sx::step]
        valid = t.mask[sy::step, sx::step]
        gy, gx = (b.y0 + sy) // step, (b.x0 + sx) // step
        h = min(data.shape[0], out.shape[0] - gy)
        w = min(data.shape[1], out.shape[1] - gx)
        block = out[gy:gy + h, gx:gx + w]
        block[valid[:h, :w]] = np.asarray(data[:h, :w], np.float32)[valid[:h, :w]]
    return out


def uint16_block(block, lo, hi):
    """16-bit copy of a block: ``[lo, hi]`` -> ``[0, 65535]`` (clipped, rounded), NaN -> 0.

    Returned as the int16 values a FITS file stores with ``BZERO = 32768`` (unsigned
    value - 32768).  A non-finite ``lo`` (no finite pixel anywhere) maps everything to 0.

    Parameters
    ----------
    block : array_like
    lo, hi : float
        The value range of the whole image (not only of the block).

    Returns
    -------
    numpy.ndarray of int16, the shape of ``block``

    Examples
    --------
    >>> uint16_block(np.array([0.0, 0.5, 1.0, np.nan]), 0.0, 1.0).astype(int) + 32768
    array([    0, 32768, 65535,     0])
    """
    block = np.asarray(block, dtype=np.float64)
    if not np.isfinite(lo):  # no finite pixel in the image
        return np.full(block.shape, -32768, dtype=np.int16)
    scale = 65535.0 / max(float(hi - lo), 1e-12)
    with np.errstate(invalid="ignore"):
        u = np.where(np.isfinite(block), np.clip((block - lo) * scale, 0, 65535), 0)
    return (np.round(u) - 32768).astype(np.int16)


def tile_header(grid_wcs, bbox, tile_id, canvas_shape, n_frames):
    """FITS header of a tile file: the tile's WCS and where the tile lies on the global grid.

    Parameters
    ----------
    grid_wcs : astropy.wcs.WCS
        The global grid.
    bbox : BBox
        The tile on it.
    tile_id : int
        1-based tile number (``TILEID``).
    canvas_shape : (int, int)
        The global canvas (``GRID_NY``, ``GRID_NX``).
    n_frames : int
        Frames stacked into the tile (``NFRAMES``).

    Returns
    -------
    astropy.io.fits.Header
        The celestial WCS of the tile (``CRPIX`` shifted by the tile origin), ``TILEID``,
        ``GRID_Y0``, ``GRID_X0`` (0-based origin), ``GRID_NY``, ``GRID_NX``, ``NFRAMES``.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.crpix = [50, 50]
    >>> h = tile_header(w, BBox(10, 60, 20, 70), 3, (100, 100), 5)
    >>> h["TILEID"], h["GRID_Y0"], h["GRID_X0"], h["CRPIX1"]
    (3, 10, 20, 30.0)
    """
    header = tile_wcs(grid_wcs, bbox).to_header(relax=True)
    for key, value, comment in [
            ("TILEID", tile_id, "tile number (1-based)"),
            ("GRID_Y0", bbox.y0, "tile origin row on the global grid (0-based)"),
            ("GRID_X0", bbox.x0, "tile origin column on the global grid (0-based)"),
            ("GRID_NY", canvas_shape[0], "global canvas height"),
            ("GRID_NX", canvas_shape[1], "global canvas width"),
            ("NFRAMES", n_frames, "frames stacked into this tile")]:
        header[key] = (value, comment)
    return header


def mosaic_header(wcs, n_tiles, origin, losses=None):
    """FITS header of the mosaic: its WCS, ``NTILES`` and ``GRID_Y0``/``GRID_X0``.

    ``origin`` is the (row, column) of the mosaic's first pixel on the global grid (the
    mosaic is the global canvas cropped to the tiles).  With ``losses`` (the run's record of
    lost tiles and frames: ``{"partial": bool, "tiles": [...], "frames": [...]}``) the
    header says whether the mosaic is partial (``PARTIAL``), how many tiles and frames were
    lost (``LOSTTILE``, ``LOSTFRM``) and which tiles (``HISTORY``).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> h = mosaic_header(WCS(naxis=2), 4, (0, 128))
    >>> h["NTILES"], h["GRID_X0"]
    (4, 128)
    >>> h = mosaic_header(WCS(naxis=2), 3, (0, 0), dict(partial=True, frames=[],
    ...                   tiles=[dict(tile_id=2, reason="OSError: disk full")]))
    >>> h["PARTIAL"], h["LOSTTILE"], str(h["HISTORY"][0])
    (True, 1, 'lost tile 2: OSError: disk full')
    """
    header = wcs.to_header(relax=True)
    header["NTILES"] = (n_tiles, "tiles assembled")
    header["GRID_Y0"] = (origin[0], "mosaic origin row on the global grid")
    header["GRID_X0"] = (origin[1], "mosaic origin column on the global grid")
    if losses is not None:
        header["PARTIAL"] = (bool(losses["partial"]), "tiles were lost: areas are missing")
        header["LOSTTILE"] = (len(losses["tiles"]), "tiles that could not be made")
        header["LOSTFRM"] = (len(losses["frames"]), "frames left out of a tile")
        for t in losses["tiles"][:50]:
            header.add_history(f"lost tile {t['tile_id']}: {t['reason']}"[:72])
    return header


@dataclass
class GridResult:
    """Output paths of a run, its report and its preview images.

    ``report`` is also written as ``grid_report.json`` and drawn in ``grid_report.html``
    (``html``); ``previews`` holds ``mosaic`` (the mosaic) and ``plain`` (the tiles as
    stacked, placed without correction or blending), arrays ``(h, w, C)`` sampled every
    ``previews["step"]`` mosaic pixels: what the HTML report shows.
    """

    mosaic: Path
    coverage: Path
    report_path: Path
    preview: Path
    tiles_dir: Path
    uint16: Path = None
    report: dict = field(default_factory=dict)
    html: Path = None
    previews: dict = field(default_factory=dict)
