"""Overlaps measured on ``b x b`` block means of their nodes, the fits told at full resolution.

A pairwise fit of two large tiles costs about as much per pixel as it gains precision per
pixel: the mean of a ``b x b`` block has ``b`` times less noise, so the signal range of
extended emission constrains the gain as well from ``b**2`` times fewer pixels, and the
stars' flux ratio, aperture minus annulus on both nodes through the same linear operator,
is the same ratio on block means (at ``b = 2`` and a PSF FWHM of 3 pixels, a star loses
little of its contrast).  The star search, the dearest part of a fit, costs 2.5-3 times
less at ``b = 2`` (measured on 1024 x 256 overlaps).  The frame photometry bins whole
frames (``bin_frame_on_grid`` in :mod:`.frames`); the tile photometry bins each overlap of
two tiles as it is fitted (:func:`bin_overlap`), so nothing is held beyond the overlap at
hand.

Binned pixel ``i`` covers full-resolution pixels ``b*i .. b*i + b - 1`` of the global
grid, its centre is the full-resolution position ``b*i + (b - 1)/2``; a fit made in
binned coordinates with the origin :func:`binned_origin` is the same relation in
full-resolution coordinates once its slopes are divided by ``b`` and its centroid mapped
back (:func:`binned_to_full_fit`).
"""

from dataclasses import replace

import numpy as np  # noqa: F401 (doctests)

from ..core.masks import block_mean
from ..core.tiles import BBox

__all__ = ["BIN_MIN_SIDE", "BIN_MIN_FIT_PIXELS", "binned_box", "binnable", "bin_overlap",
           "binned_origin", "binned_to_full_fit"]

#: Shortest side of an overlap, in binned pixels, that is fitted binned: the stars'
#: apertures and annuli (about 8 binned pixels from a star at b = 2) leave the middle of
#: narrower overlaps only.
BIN_MIN_SIDE = 48
#: An overlap is fitted binned when its binned pixels are at least this many times the
#: fit's ``min_pixels``.
BIN_MIN_FIT_PIXELS = 4


def binned_box(box, b):
    """The whole ``b x b`` blocks of the binned grid inside ``box``, in binned coordinates.

    Examples
    --------
    >>> binned_box(BBox(3, 12, 0, 9), 2)
    BBox(y0=2, y1=6, x0=0, x1=4)
    """
    return BBox(-(-box.y0 // b), box.y1 // b, -(-box.x0 // b), box.x1 // b)


def binnable(inter, n_valid, b, min_pixels):
    """Whether the overlap ``inter`` (``n_valid`` jointly valid pixels) is fitted binned by
    ``b``: its shorter binned side reaches :data:`BIN_MIN_SIDE` and its binned pixels
    :data:`BIN_MIN_FIT_PIXELS` times ``min_pixels``.

    Examples
    --------
    >>> binnable(BBox(0, 1024, 0, 256), 262144, 2, 500), binnable(BBox(0, 400, 0, 80),
    ...                                                           32000, 2, 500)
    (True, False)
    """
    if b <= 1:
        return False
    box = binned_box(inter, b)
    return (min(box.shape) >= BIN_MIN_SIDE
            and n_valid >= b * b * BIN_MIN_FIT_PIXELS * max(1, int(min_pixels)))


def bin_overlap(src, src_mask, dst, dst_mask, inter, b):
    """Two nodes inside their intersection as block means of the binned grid.

    Parameters
    ----------
    src, dst : numpy.ndarray, shape (h, w, C)
        The nodes inside ``inter`` (:meth:`~photometry_graph.core.tiles.TilePhotometryInfo.read`).
    src_mask, dst_mask : numpy.ndarray of bool, shape (h, w)
    inter : BBox
        The intersection, full-resolution global coordinates.
    b : int
        1 returns the nodes as they are and their joint mask.

    Returns
    -------
    src_b, dst_b : numpy.ndarray, shape (hb, wb, C), float32
        Means of the jointly valid blocks (NaN elsewhere): both nodes through the same
        pixels.
    joint : numpy.ndarray of bool, shape (hb, wb)
        Blocks whose pixels are all valid in both nodes.
    box : BBox
        The blocks on the binned global grid (:func:`binned_box`).

    Examples
    --------
    >>> d = np.ones((5, 6, 1)); m = np.ones((5, 6), bool)
    >>> s, t, ok, box = bin_overlap(d, m, 2 * d, m, BBox(1, 6, 0, 6), 2)
    >>> s.shape, float(t[0, 0, 0]), box
    ((2, 3, 1), 2.0, BBox(y0=1, y1=3, x0=0, x1=3))
    """
    if b == 1:
        return src, dst, src_mask & dst_mask, inter
    box = binned_box(inter, b)
    full = BBox(box.y0 * b, box.y1 * b, box.x0 * b, box.x1 * b)
    sl = full.slices_in(inter)
    joint = src_mask[sl] & dst_mask[sl]
    src_b, ok = block_mean(src[sl], joint, b)
    dst_b, _ = block_mean(dst[sl], joint, b)
    return src_b, dst_b, ok, box


def binned_origin(origin, b):
    """The binned coordinates ``(x, y)`` of the full-resolution position ``origin``.

    Examples
    --------
    >>> binned_origin((10.5, 0.5), 2)
    (5.0, 0.0)
    """
    return tuple((float(v) - (b - 1) / 2.0) / b for v in origin)


def binned_to_full_fit(fit, b, origin):
    """A pairwise fit made on a grid binned by ``b`` with the origin
    ``binned_origin(origin, b)``, in full-resolution global coordinates.

    The gain, the offset at the origin and the means are the same; the plane slopes
    (``px``, ``py``, their sigmas, ``x_slope``, ``y_slope``) are divided by ``b``, the
    centroid is mapped back and the origin is ``origin``.  The noise, the pixel counts and
    the RMS stay those of the binned pixels the fit used.

    Parameters
    ----------
    fit : PairwiseFit
    b : int
        1 returns ``fit`` itself.
    origin : tuple of float
        Full-resolution ``(x, y)``.

    Returns
    -------
    PairwiseFit

    Examples
    --------
    >>> from photometry_graph.photometry.regression import PairwiseFit
    >>> f = PairwiseFit(a=1.1, b=2.0, px=0.4, py=-0.2, origin=binned_origin((9.5, 1.5), 2),
    ...                 centroid=(10.0, 3.0), model="plane")
    >>> g = binned_to_full_fit(f, 2, (9.5, 1.5))
    >>> g.px, g.py, g.centroid, g.origin
    (0.2, -0.1, (20.5, 6.5), (9.5, 1.5))
    >>> bool(np.isclose(g.offset_at(20.5, 6.5), f.offset_at(10.0, 3.0)))
    True
    """
    if b == 1:
        return fit

    def full(c):
        return b * float(c) + (b - 1) / 2.0

    return replace(fit, px=fit.px / b, py=fit.py / b, sigma_px=fit.sigma_px / b,
                   sigma_py=fit.sigma_py / b, origin=(float(origin[0]), float(origin[1])),
                   centroid=tuple(full(c) for c in fit.centroid),
                   x_slope=tuple(float(v) / b for v in fit.x_slope),
                   y_slope=tuple(float(v) / b for v in fit.y_slope))
