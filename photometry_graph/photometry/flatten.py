"""Optional flattening: one global plane removed from the mosaic's background.

The overlaps fix every gradient *difference* between nodes, not the gradient of the whole
mosaic; the solve's gauge makes it the mean of the nodes' own gradients (see
:mod:`.solve`), which still holds what all the frames share (light pollution towards the
horizon through the whole session).  :func:`fit_background_plane` measures the plane of
the corrected tiles' background: every tile is cut into blocks, sources (pixels more
than ``source_kappa`` robust sigmas above their block's median, and a ring around them)
are masked, each block gives a sigma-clipped median, and a plane is fitted to the block
medians with iterative clipping (blocks holding extended emission stand out and are left
out).  :func:`flatten_corrections` folds the plane's tilt into every correction: the
blending is linear with weights that sum to one, so the mosaic loses exactly that tilt
(its level at the pivot is kept).  Off by default (``--flatten``): a real large-scale
gradient of the sky (a nebula's edge, galactic light) would be removed too.
"""

from dataclasses import dataclass
import warnings

import cv2
import numpy as np

from .._json import jsonable
from .._log import get_logger, grid_info
from .._stats import MAD_TO_SIGMA
from ..core.correction import Correction, apply_correction

__all__ = ["BackgroundPlane", "background_blocks", "fit_background_plane",
           "flatten_corrections"]

logger = get_logger(__name__)


@dataclass
class BackgroundPlane:
    """A plane ``level + slope . (r - pivot)`` per channel fitted to the background.

    Attributes
    ----------
    level : numpy.ndarray, shape (C,)
        Value at ``pivot``.
    slope : numpy.ndarray, shape (C, 2)
        ``(d/dx, d/dy)`` per global pixel.
    pivot : tuple of float
        ``(x, y)`` global pixel of ``level``.
    n_blocks, n_used : numpy.ndarray of int, shape (C,)
        Background blocks measured, and kept by the clipping.
    rms : numpy.ndarray, shape (C,)
        RMS of the kept blocks around the plane.
    """

    level: np.ndarray
    slope: np.ndarray
    pivot: tuple
    n_blocks: np.ndarray
    n_used: np.ndarray
    rms: np.ndarray

    def to_dict(self):
        """JSON-friendly dict."""
        return jsonable({"level": self.level, "slope": self.slope, "pivot": self.pivot,
                         "n_blocks": self.n_blocks, "n_used": self.n_used, "rms": self.rms})


def _block_view(img, block):
    """``(nby, nbx, block * block)`` view of the blocks of an ``(h, w)`` image (cropped)."""
    h, w = img.shape
    nby, nbx = h // block, w // block
    cut = img[:nby * block, :nbx * block]
    return cut.reshape(nby, block, nbx, block).swapaxes(1, 2).reshape(nby, nbx, -1)


def _clipped_block_medians(values, kappa, iterations=3):
    """Sigma-clipped median and robust sigma of each block (rows of ``values``, NaN
    ignored; NaN for an empty block)."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        med = np.nanmedian(values, axis=-1)
        sigma = MAD_TO_SIGMA * np.nanmedian(np.abs(values - med[..., None]), axis=-1)
        for _ in range(iterations):
            keep = np.abs(values - med[..., None]) <= kappa * sigma[..., None]
            med = np.nanmedian(np.where(keep, values, np.nan), axis=-1)
            sigma = MAD_TO_SIGMA * np.nanmedian(np.abs(np.where(keep, values, np.nan)
                                                       - med[..., None]), axis=-1)
    return med, sigma


def background_blocks(tiles, corrections=None, *, block=64, kappa=3.0, source_kappa=3.0,
                      min_fraction=0.5):
    """Background of every block of the corrected tiles, with the sources masked.

    Parameters
    ----------
    tiles : sequence of TilePhotometryInfo
        Read one at a time (``tile.read``).
    corrections : dict, optional
        ``{tile_id: Correction}`` (None: as they are).
    block : int
        Block size, pixels.
    kappa : float
        Clipping of a block's median, robust sigmas.
    source_kappa : float
        Pixels this many robust sigmas above their block's median are sources; they
        and a 2 px ring around them are masked.
    min_fraction : float
        A block needs this fraction of valid, source-free pixels.

    Returns
    -------
    xy : numpy.ndarray, shape (n, 2)
        Block centres ``(x, y)``, global pixels.
    values : numpy.ndarray, shape (n, C)
        Background per block and channel (NaN where a channel has too few pixels).
    """
    xy, values = [], []
    ring = np.ones((5, 5), np.uint8)
    for tile in tiles:
        data, mask = tile.read(tile.bbox)
        corr = None if corrections is None else corrections.get(tile.tile_id)
        img = apply_correction(data, tile.bbox, corr, dtype=np.float64)
        img[~mask] = np.nan
        nby, nbx = img.shape[0] // block, img.shape[1] // block
        if nby == 0 or nbx == 0:
            continue
        vals = np.full((nby, nbx, img.shape[2]), np.nan)
        for c in range(img.shape[2]):
            ch = img[..., c]
            med, spread = _clipped_block_medians(_block_view(ch, block), kappa, iterations=1)
            thr = np.kron(med + source_kappa * spread, np.ones((block, block)))
            src = np.zeros(ch.shape, np.uint8)
            with np.errstate(invalid="ignore"):
                src[:nby * block, :nbx * block] = ch[:nby * block, :nbx * block] > thr
            src = cv2.dilate(src, ring).astype(bool)
            clean = np.where(src, np.nan, ch)
            blocks = _block_view(clean, block)
            enough = np.isfinite(blocks).mean(axis=-1) >= min_fraction
            vals[..., c] = np.where(enough, _clipped_block_medians(blocks, kappa)[0], np.nan)
        yy, xx = np.mgrid[:nby, :nbx]
        xy.append(np.column_stack([tile.bbox.x0 + (xx.ravel() + 0.5) * block - 0.5,
                                   tile.bbox.y0 + (yy.ravel() + 0.5) * block - 0.5]))
        values.append(vals.reshape(-1, img.shape[2]))
    if not xy:
        return np.zeros((0, 2)), np.zeros((0, 1))
    return np.concatenate(xy), np.concatenate(values)


def fit_background_plane(tiles, corrections=None, *, pivot=(0.0, 0.0), kappa=3.0,
                         iterations=10, **block_kwargs):
    """Plane of the corrected tiles' background (sources masked, outlying blocks clipped).

    Parameters
    ----------
    tiles, corrections
        As in :func:`background_blocks`.
    pivot : tuple of float
        ``(x, y)`` where the plane's level is given.
    kappa : float
        Blocks further than this many robust sigmas from the plane are left out.
    iterations : int
        Clipping iterations.
    **block_kwargs
        ``block``, ``source_kappa``, ``min_fraction`` of :func:`background_blocks`.

    Returns
    -------
    BackgroundPlane

    Raises
    ------
    ValueError
        When fewer than 3 blocks can be measured in a channel.
    """
    xy, values = background_blocks(tiles, corrections, **block_kwargs)
    C = values.shape[1]
    level, slope = np.zeros(C), np.zeros((C, 2))
    n_blocks, n_used, rms = np.zeros(C, int), np.zeros(C, int), np.zeros(C)
    d = xy - np.asarray(pivot, float)
    for c in range(C):
        ok = np.isfinite(values[:, c])
        n_blocks[c] = int(ok.sum())
        if n_blocks[c] < 3:
            raise ValueError(f"channel {c}: only {n_blocks[c]} background blocks could be "
                             "measured; a plane needs at least 3 (the mosaic is too small "
                             "or too full of sources to flatten)")
        A = np.column_stack([np.ones(len(d)), d])
        keep = ok.copy()
        for _ in range(int(iterations)):
            coef = np.linalg.lstsq(A[keep], values[keep, c], rcond=None)[0]
            resid = values[:, c] - A @ coef
            sigma = MAD_TO_SIGMA * np.median(np.abs(resid[keep]))
            new = ok & (np.abs(resid) <= kappa * max(sigma, 1e-12))
            if new.sum() < 3 or np.array_equal(new, keep):
                break
            keep = new
        level[c], slope[c] = coef[0], coef[1:]
        n_used[c] = int(keep.sum())
        rms[c] = float(np.sqrt(np.mean(resid[keep] ** 2)))
    return BackgroundPlane(level=level, slope=slope, pivot=tuple(float(v) for v in pivot),
                           n_blocks=n_blocks, n_used=n_used, rms=rms)


def flatten_corrections(corrections, plane, n_channels=None):
    """Corrections that also remove the plane's tilt (its level at the pivot is kept).

    Parameters
    ----------
    corrections : dict
        ``{tile_id: Correction or None}`` (None: identity).
    plane : BackgroundPlane
    n_channels : int, optional
        Channels of an identity correction (default: those of the plane).

    Returns
    -------
    dict
        New corrections; ``info["flatten_slope"]`` records the tilt removed.

    Examples
    --------
    >>> plane = BackgroundPlane(level=np.array([10.0]), slope=np.array([[0.01, 0.0]]),
    ...                         pivot=(100.0, 0.0), n_blocks=np.array([9]),
    ...                         n_used=np.array([9]), rms=np.array([0.1]))
    >>> c = flatten_corrections({1: None}, plane)[1]
    >>> c.slope.tolist(), round(float(c.offset[0]), 6)
    ([[-0.01, 0.0]], 1.0)
    """
    C = plane.slope.shape[0] if n_channels is None else int(n_channels)
    out = {}
    for key, corr in corrections.items():
        base = corr if corr is not None else Correction(np.ones(C), np.zeros(C),
                                                        status="fallback")
        # t.(r - pivot) = t.(r - origin) + t.(origin - pivot)
        shift = (plane.slope * (np.asarray(base.origin) - np.asarray(plane.pivot))).sum(axis=1)
        info = dict(base.info, flatten_slope=plane.slope.tolist())
        out[key] = Correction(base.gain.copy(), base.offset - shift,
                              slope=base.slope - plane.slope, origin=tuple(base.origin),
                              gain_err=base.gain_err.copy(), offset_err=base.offset_err.copy(),
                              status=base.status, info=info)
    grid_info(logger, "Background: flattened the mosaic: removed a global tilt of %s per "
              "pixel (pivot %s)", np.round(plane.slope, 6).tolist(),
              [round(v, 1) for v in plane.pivot])
    return out
