"""Outliers of a residual image grown into their spatially coherent surroundings.

A pairwise fit clips the pixels whose residual exceeds ``kappa`` times the noise.  Outliers
are rarely isolated pixels: a satellite trail, a star that differs between the images or a
misregistered patch has faint wings below ``kappa`` that still add up to a bias over many
pixels.  :func:`grown_outliers` grows every clipped pixel into the pixels joined to it by
residuals beyond ``grow_kappa`` and a ring around them (hysteresis thresholding, as in
source segmentation), as long as the grown set stays sparse.  The clipping of the pairwise
fits and the rejected pixels shown by the diagnostics both use it.
"""

import cv2
import numpy as np

__all__ = ["grown_outliers"]


#: Dilation (pixels) of the grown outliers of :func:`_hysteresis`.
_GROW_RADIUS = 1


#: Seeds up to which :func:`_hysteresis` fills the components of its seeds one by one
#: (~10 us each) rather than labelling every component of the weak pixels (~0.5 ms for
#: 300 x 500 pixels).
_FLOOD_SEEDS = 32


def _hysteresis(d, valid, high, low, radius=None):
    """Outliers grown into their surroundings: hysteresis thresholding of a residual image.

    Returns the pixels of ``valid`` with ``|d| > low`` that are 8-connected
    through such pixels to one with ``|d| > high``, the outliers themselves
    included.  A satellite trail, a star that differs or a misregistered patch
    clipped at ``high`` thereby loses its fainter wings (and the opposite lobe
    of a shifted star), which would otherwise stay in the fit and bias it;
    isolated noise pixels above ``low`` are kept (at ``low = 2`` about 5 % of
    the pixels, far below the percolation threshold of 8-connected sites, so
    noise alone never grows large regions).

    Parameters
    ----------
    d : numpy.ndarray, shape (h, w)
        Standardised residuals (garbage where not ``valid``).
    valid : numpy.ndarray of bool, shape (h, w)
    high, low : float
        Seed and growth thresholds, ``high >= low > 0``.
    radius : int, optional
        The grown outliers are finally dilated by this many pixels (default
        :data:`_GROW_RADIUS`): the faint wings of a trail or of a differing
        star below ``low`` still add up to a bias over many pixels.

    Returns
    -------
    numpy.ndarray of bool, shape (h, w)

    Examples
    --------
    >>> d = np.zeros((5, 7)); d[2, 1:6] = [2.5, -3.0, 9.0, 2.5, 0.5]; d[0, 6] = 3.0
    >>> _hysteresis(d, np.ones((5, 7), bool), 4.0, 2.0, radius=0).astype(int)[[0, 2]]
    array([[0, 0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 1, 0, 0]])
    >>> int(_hysteresis(d, np.ones((5, 7), bool), 4.0, 2.0).sum())   # and the ring around
    18
    """
    with np.errstate(invalid="ignore"):
        a = np.abs(d)
        weak = valid & (a > low)
        seed = weak & (a > high)
    seeds = cv2.findNonZero(seed.view(np.uint8))  # (x, y) of each seed
    if seeds is None:
        return seed
    if len(seeds) <= _FLOOD_SEEDS:
        # few seeds (the usual case): fill their components, 2 in a copy of the weak pixels
        marks = weak.astype(np.uint8)
        for x, y in seeds.reshape(-1, 2).tolist():
            if marks[y, x] == 1:
                cv2.floodFill(marks, None, (x, y), 2, flags=8)
        out = marks == 2
    else:  # many: label every component once
        n, labels = cv2.connectedComponents(weak.view(np.uint8), connectivity=8)
        hit = np.zeros(n, dtype=bool)
        hit[labels[seed]] = True
        hit[0] = False
        out = np.take(hit, labels)  # (a gather; 2-3 times as fast as hit[labels])
    radius = _GROW_RADIUS if radius is None else int(radius)
    if radius > 0:
        k = 2 * radius + 1
        out = cv2.dilate(out.view(np.uint8), np.ones((k, k), np.uint8)).view(bool) & valid
    return out


#: Coherent outliers are grown only while they cover at most this share of the pixels.
_GROW_MAX_FRACTION = 0.25


def grown_outliers(d, valid, kappa, grow_kappa, *, radius=None):
    """Outliers of a residual image grown into their coherent surroundings, when sparse.

    The pixels of :func:`_hysteresis` (seeds beyond ``kappa``, grown through
    pixels beyond ``grow_kappa``, then dilated by ``radius``).  Growing
    assumes the outliers are sparse: when the grown set would cover more than
    :data:`_GROW_MAX_FRACTION` of the valid pixels, the residuals are
    dominated by structure (a wrong relation, PSF differences far above the
    noise) rather than by a few outliers, and no pixel is returned (the plain
    ``kappa`` clip then stands alone).  The clipping of the pairwise fits and
    the rejected pixels shown by the diagnostics both use this rule.

    Parameters
    ----------
    d : numpy.ndarray, shape (h, w)
        Standardised residuals (ignored where not ``valid``).
    valid : numpy.ndarray of bool, shape (h, w)
    kappa, grow_kappa : float
        Seed and growth thresholds, ``kappa >= grow_kappa > 0``.
    radius : int, optional
        Final dilation (default :data:`_GROW_RADIUS`).

    Returns
    -------
    numpy.ndarray of bool, shape (h, w)

    Examples
    --------
    >>> d = np.zeros((6, 6)); d[2, 1:5] = [2.5, 9.0, 2.5, 2.5]
    >>> int(grown_outliers(d, np.ones((6, 6), bool), 4.0, 2.0, radius=0).sum())
    4
    >>> d[:4] = 9.0   # most of the image deviates: structure, not outliers
    >>> bool(grown_outliers(d, np.ones((6, 6), bool), 4.0, 2.0).any())
    False
    """
    grown = _hysteresis(d, valid, kappa, grow_kappa, radius)
    if np.count_nonzero(grown) > _GROW_MAX_FRACTION * np.count_nonzero(valid):
        return np.zeros_like(grown)
    return grown
