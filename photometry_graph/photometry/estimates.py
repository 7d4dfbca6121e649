"""The gain of an edge from its two estimators, and the pixel gains calibrated on the stars.

:func:`combine_fit` sets a pairwise fit's gain to the combination of its pixel and star
estimates (:func:`~.stars.combine_gain_estimates`) and its offset and plane at that gain;
:func:`calibrate_pixel_gains` gives the pixel gains of a fitted overlap graph the systematic
error their disagreement with the stars shows, and combines every edge again.
"""

import math
from dataclasses import replace

import numpy as np

from .._log import get_logger, grid_info
from .regression import MAX_REL_GAIN_ERROR

__all__ = ["combine_fit", "calibrate_pixel_gains"]

logger = get_logger(__name__)


def combine_fit(fit, gain_estimator="auto", max_rel_gain_error=MAX_REL_GAIN_ERROR, why=""):
    """A fit at the combination of its pixel and star gains (``a_pixels``, ``a_stars``).

    :func:`~.stars.combine_gain_estimates` of the two (a star ratio whose sigma exceeds
    ``max_rel_gain_error`` left out, as a degenerate pixel fit is; the pixel gain left out
    for ``gain_estimator='stars'``); the offset and the plane follow at that gain from the
    moments of the fit's pixels (:meth:`PairwiseFit.at_gain`).  No gain at all gives an
    offset-only fit (``why`` says why).

    Returns
    -------
    PairwiseFit
    """
    from .stars import combine_gain_estimates
    a_pix, s_pix = fit.a_pixels, fit.sigma_a_pixels
    a_st, s_st = fit.a_stars, fit.sigma_a_stars
    if not s_st <= max_rel_gain_error * a_st:
        a_st, s_st = math.nan, math.inf  # a degenerate star ratio, as for the pixels
    if gain_estimator == "stars":
        a_pix, s_pix = math.nan, math.inf
    a, sigma, source, disagree = combine_gain_estimates(a_pix, s_pix, a_st, s_st)
    if source == "none":
        return fit.at_gain(1.0, status="offset_only", gain_source="none",
                           message=why or fit.message) if fit.ok else fit
    note = fit.message if source == "pixels" else ""
    if disagree:
        note = (f"gain from the stars: the pixel fit's {a_pix:.5f} differs from the stars' "
                f"{a_st:.5f} by more than 3 sigma")
    return fit.at_gain(a, sigma, gain_source=source, gain_disagree=bool(disagree),
                       message=note)


#: Median of a chi-square with one degree of freedom.
_CHI2_MEDIAN = 0.454936423119572
#: The pixel gains are calibrated against the stars only when the median of their squared
#: normalised differences is this many times that of a chi-square (the typical difference
#: beyond 2 sigma): honest sigmas get there by chance in about 2 % of graphs with 8 edges
#: that have both estimates, far less with more.  Debayered stars have errors of their own
#: (measured on 600 x 900 Bayer frames: 0.2-2.5 times); seeing that changes between frames
#: gives 34-47 times.
_CALIBRATE_RATIO = 4.0
#: Fewest edges with both estimates for a calibration.
_CALIBRATE_PAIRS = 8


def _systematic(pairs):
    """Relative error that, added to the pixel gains' sigmas, makes them agree with the stars.

    ``pairs``: rows ``(a_pixels, sigma_pixels, a_stars, sigma_stars)``.  Solves
    ``median(d^2 / (s_p^2 + (e a_p)^2 + s_s^2)) = median of chi2(1)`` for ``e >= 0``; 0
    unless the disagreement is clear (:data:`_CALIBRATE_RATIO`, :data:`_CALIBRATE_PAIRS`).
    """
    if len(pairs) < _CALIBRATE_PAIRS:
        return 0.0
    a_p, s_p, a_s, s_s = np.asarray(pairs, dtype=float).T
    d2, v = (a_p - a_s) ** 2, s_p ** 2 + s_s ** 2

    def excess(e):
        return float(np.median(d2 / (v + (e * a_p) ** 2))) / _CHI2_MEDIAN - 1.0

    if excess(0.0) <= _CALIBRATE_RATIO - 1.0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def calibrate_pixel_gains(graph, *, max_rel_gain_error=MAX_REL_GAIN_ERROR):
    """Give the pixel gains the systematic error their disagreement with the stars shows.

    The pixel fit's sigma holds its noise and the uncertainty of the noise ratio, not the
    errors of star pixels that differ between the two nodes (seeing that changed,
    interpolation): its gain can then be several sigmas off, and where an overlap has no
    star estimate nothing would catch it.  Where the edges with both estimates show it
    clearly (:data:`_CALIBRATE_RATIO`), the relative error ``e`` that makes the
    differences agree with the sigmas (median of chi-square, robust to a few outliers) is
    added in quadrature to every pixel sigma of that channel, and every edge is combined
    again (:func:`combine_fit`): where the pixels and the stars agree, ``e = 0`` and
    nothing changes.  In place.

    Parameters
    ----------
    graph : networkx.Graph
        With ``fits`` from :func:`fit_overlap_edges` (``gain_estimator='auto'``).
    max_rel_gain_error : float

    Returns
    -------
    list of float
        ``e`` per channel (also in ``graph.graph["pixel_gain_systematic"]``).
    """
    edges = [d for _, _, d in graph.edges(data=True) if d.get("fits")]
    n_channels = max((len(d["fits"]) for d in edges), default=0)
    out = []
    for c in range(n_channels):
        fits = [(d, d["fits"][c]) for d in edges if len(d["fits"]) > c]
        pairs = [(f.a_pixels, f.sigma_a_pixels, f.a_stars, f.sigma_a_stars) for _, f in fits
                 if np.isfinite(f.a_pixels) and np.isfinite(f.sigma_a_pixels)
                 and f.sigma_a_stars <= max_rel_gain_error * f.a_stars]
        e = _systematic(pairs)
        out.append(e)
        if e == 0:
            continue
        for d, f in fits:
            if np.isfinite(f.a_pixels) and np.isfinite(f.sigma_a_pixels):
                s_p = math.hypot(f.sigma_a_pixels, e * f.a_pixels)
                d["fits"][c] = combine_fit(replace(f, sigma_a_pixels=s_p), "auto",
                                           max_rel_gain_error)
        grid_info(logger, "Photometry: channel %d: the pixel gains disagree with the stars "
                  "beyond their sigmas; a systematic error of %.3g %% added to them", c,
                  100 * e)
    graph.graph["pixel_gain_systematic"] = out
    return out
