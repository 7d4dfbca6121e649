"""Per-pixel robust statistics and outlier rejection of a stack of frames, block by block.

The kernels of :func:`~photometry_graph.stacking.stack.stack_frames`: a block holds the values
of ``n`` frames at ``P`` pixel-channels (``x`` float32 with invalid values zeroed, ``w`` the
weights, 0 where invalid); :func:`clip_block` returns which values are kept
(kappa-sigma clipping about a median/MAD first pass, or winsorized sigma clipping),
:func:`clip_sparse` does the same work only where a value can be rejected, and
:func:`combine_block` combines the kept values (weighted mean or median).
"""

from dataclasses import dataclass

import numpy as np

from .._stats import MAD_TO_SIGMA

__all__ = ["ClipSettings", "trim_variance_ratio", "weighted_stats", "masked_median",
           "scale_floor", "clip_block", "clip_sparse", "combine_block"]


@dataclass(frozen=True)
class ClipSettings:
    """How values are rejected: the method and its thresholds.

    ``method`` is ``"mean"`` or ``"median"`` (nothing rejected), ``"kappa_sigma"`` or
    ``"winsorized"``; ``kappa_low``/``kappa_high`` are the rejection thresholds below and
    above the centre in sigma; ``iterations`` the clipping passes; ``winsor_limits`` the
    fractions winsorized at the low and high end.
    """

    method: str = "kappa_sigma"
    kappa_low: float = 3.0
    kappa_high: float = 3.0
    iterations: int = 3
    winsor_limits: tuple = (0.05, 0.05)


# E[s^2] / sigma^2 of the sample variance (ddof=1) of n normal values after removing
# the smallest and the largest one (computed once by simulation, 2e5 draws per n <= 40).
_TRIM_N = np.array([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
                    24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 50, 70,
                    100, 150, 200, 300, 500, 1000, 2000], dtype=np.float64)
_TRIM_R = np.array([0.298, 0.3609, 0.4089, 0.4473, 0.4781, 0.5093, 0.5342, 0.5555, 0.5762,
                    0.5918, 0.609, 0.6231, 0.6376, 0.6484, 0.6597, 0.6698, 0.6798, 0.6882,
                    0.6976, 0.7045, 0.7117, 0.7189, 0.7254, 0.7321, 0.7375, 0.744, 0.7488,
                    0.7536, 0.7588, 0.7626, 0.7676, 0.7714, 0.7765, 0.7803, 0.7831, 0.7863,
                    0.7904, 0.8187, 0.856, 0.8871, 0.916, 0.9314, 0.9504, 0.9667, 0.9798,
                    0.9875])


def trim_variance_ratio(n):
    """Expected trimmed-variance ratio for ``n`` values (array), see ``_TRIM_R``."""
    n = np.asarray(n, dtype=np.float64)
    r = np.interp(np.log(np.maximum(n, 4)), np.log(_TRIM_N), _TRIM_R)
    big = n > _TRIM_N[-1]
    if np.any(big):
        nb = n[big]
        r[big] = 1.0 - (1.0 - _TRIM_R[-1]) * (_TRIM_N[-1] / nb) * (np.log(nb) / np.log(2000.0))
    return r


def _wsum(w, v):
    """``sum(w * v, axis=0)`` accumulated in float64 without a temporary."""
    return np.einsum("ij,ij->j", w, v, dtype=np.float64)


def weighted_stats(x, w, shift):
    """Weighted mean and (reliability-weighted, unbiased) std along axis 0.

    ``x`` is finite (invalid values zeroed) and ``w`` is 0 where a value must
    not count.  The sums are taken about ``shift`` (a rough centre) so that a
    large sky level does not cost precision.
    """
    d = x - np.nan_to_num(shift).astype(x.dtype)
    s0 = w.sum(axis=0, dtype=np.float64)
    s1 = _wsum(w, d)
    s2 = _wsum(w, d * d)
    sw2 = _wsum(w, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.nan_to_num(shift) + s1 / s0
        denom = s0 - sw2 / s0
        var = (s2 - s1 * s1 / s0) / denom
    var = np.where(denom > 0, var, np.nan)
    return m, np.sqrt(np.maximum(var, 0.0))


def masked_median(x, keep):
    """Median along axis 0 of the values where ``keep`` (NaN where none)."""
    srt = np.sort(np.where(keep, x, np.inf), axis=0)
    n = keep.sum(axis=0)
    lo = np.clip((n - 1) // 2, 0, None)[np.newaxis]
    hi = np.clip(n // 2, 0, None)[np.newaxis]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (np.take_along_axis(srt, lo, axis=0)[0].astype(np.float64)
                     + np.take_along_axis(srt, hi, axis=0)[0])
    return np.where(n > 0, med, np.nan)


def _winsorized_stats(x, keep, limits):
    """Centre and normal-corrected scale of winsorized values along axis 0."""
    from scipy.special import ndtri
    n = keep.sum(axis=0)
    srt = np.sort(np.where(keep, x, np.inf), axis=0)
    q_lo, q_hi = limits
    k_lo = np.where(q_lo > 0, np.ceil(q_lo * n - 1e-9), 0).astype(np.int64)
    k_hi = np.where(q_hi > 0, np.ceil(q_hi * n - 1e-9), 0).astype(np.int64)
    # keep at least two values between the limits
    too_many = k_lo + k_hi > n - 2
    k_lo = np.where(too_many, 0, k_lo)
    k_hi = np.where(too_many, 0, k_hi)
    idx_lo = np.clip(k_lo, 0, x.shape[0] - 1)
    idx_hi = np.clip(n - 1 - k_hi, 0, x.shape[0] - 1)
    lo = np.take_along_axis(srt, idx_lo[np.newaxis], axis=0)[0]
    hi = np.take_along_axis(srt, idx_hi[np.newaxis], axis=0)[0]
    with np.errstate(invalid="ignore"):
        wins = np.clip(x, lo, hi)
    m, s = weighted_stats(np.where(keep, wins, 0.0).astype(x.dtype), keep.astype(x.dtype),
                           np.where(np.isfinite(lo), lo, 0.0))
    q = np.where(n > 0, 0.5 * (k_lo + k_hi) / np.maximum(n, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = ndtri(1.0 - np.clip(q, 1e-12, 0.49))
        phi = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        var_w = 1.0 - 2 * q - 2 * z * phi + 2 * q * z * z
    factor = np.where(q > 0, 1.0 / np.sqrt(np.clip(var_w, 1e-6, 1.0)), 1.0)
    return m, s * factor


def scale_floor(s, n_channels):
    """Per-channel median of the per-pixel scales, broadcast back to ``s``'s layout.

    ``s`` is flattened from ``(..., C)``.  A per-pixel scale from a handful
    of frames is noisy; one that comes out low would reject clean values, so
    it is never allowed below the typical scale of its channel in the block.
    """
    sc = s.reshape(-1, n_channels)
    floor = np.zeros(n_channels)
    for c in range(n_channels):
        col = sc[:, c]
        col = col[np.isfinite(col) & (col > 0)]
        if col.size:
            floor[c] = np.median(col)
    return np.broadcast_to(floor, sc.shape).reshape(s.shape)


def clip_block(x, w, settings, n_channels=1):
    """Keep mask of a block.

    ``x`` (n, P) float32 with invalid values zeroed, ``w`` (n, P) float32
    weights, 0 where invalid; ``P`` is a flattened ``(..., C)`` layout with
    ``C = n_channels``.
    """
    method, kappa_low, kappa_high = settings.method, settings.kappa_low, settings.kappa_high
    valid = w > 0
    keep = valid
    if method in ("mean", "median"):
        return keep
    can_clip = valid.sum(axis=0) >= 3
    floor = None
    c = None
    for it in range(max(1, int(settings.iterations))):
        if method == "kappa_sigma" and it == 0:
            c = masked_median(x, keep)
            with np.errstate(invalid="ignore"):
                s = MAD_TO_SIGMA * masked_median(np.abs(x - c.astype(x.dtype)), keep)
            zero = s == 0
            if zero.any():  # quantised data: fall back to the standard deviation
                _, s_std = weighted_stats(x[:, zero], w[:, zero], c[zero])
                s[zero] = s_std
        elif method == "kappa_sigma":
            c, s = weighted_stats(x, w * keep, c)
        else:
            c, s = _winsorized_stats(x, keep, settings.winsor_limits)
        if floor is None:
            floor = scale_floor(np.where(can_clip, s, np.nan), n_channels)
        s = np.fmax(s, floor)
        with np.errstate(invalid="ignore"):
            inside = (x >= c - kappa_low * s) & (x <= c + kappa_high * s)
        bounded = can_clip & np.isfinite(s) & np.isfinite(c) & (keep.sum(axis=0) >= 2)
        # bounds from the kept values are applied to every valid value, so that a
        # value rejected by a noisy first scale estimate can come back
        new_keep = valid & (inside | ~bounded)
        # never reject every value of a pixel
        empty = ~new_keep.any(axis=0) & valid.any(axis=0)
        new_keep[:, empty] = keep[:, empty]
        changed = bool((new_keep != keep).any())
        keep = new_keep
        if not changed:
            break
    return keep


def clip_sparse(x, w, settings, n_channels):
    """:func:`clip_block` on the pixels where something can be rejected, the same result.

    A value is only ever rejected where a pixel has 3 or more valid values;
    in a mosaic most pixels have fewer.  Only those pixels (all their
    channels) and only the frames with a value there enter the clipping.
    """
    valid = w > 0
    if settings.method in ("mean", "median"):
        return valid
    per_pixel = valid.sum(axis=0).reshape(-1, n_channels).max(axis=1)
    pix = np.flatnonzero(per_pixel >= 3)
    if pix.size == per_pixel.size:
        return clip_block(x, w, settings, n_channels)
    if pix.size == 0:
        return valid
    cols = (pix[:, None] * n_channels + np.arange(n_channels)).ravel()
    rows = np.flatnonzero(valid[:, cols].any(axis=1))
    sub = np.ix_(rows, cols)
    keep = valid.copy()
    keep[sub] = clip_block(x[sub], w[sub], settings, n_channels)
    return keep


def combine_block(x, w, keep, combine):
    """Combined kept values (weighted mean or median) and their weight sum, per column."""
    wk = w * keep
    sw = wk.sum(axis=0, dtype=np.float64)
    if combine == "median":
        val = masked_median(x, keep)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            val = _wsum(wk, x) / sw
    val = np.where(sw > 0, val, np.nan)
    return val, sw
