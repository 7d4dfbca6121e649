"""Per-pixel robust statistics of frames fed one at a time: the kernels of the stacking.

:func:`~photometry_graph.stacking.stack.stack_frames` reads the frames of a tile (or of a
band of its rows) in passes; each pass feeds them one after the other, always in the same
order, to an accumulator whose state is a few arrays of the band's shape:

* :class:`Moments` (first pass): per pixel and channel the number of valid values, their
  sum and sum of squares about the pixel's first valid value, and the ``track`` lowest
  and highest values;
* :func:`robust_bounds`: a centre and a scale from those -- kappa-sigma: the lowest and the
  highest value left out (robust to one outlier per side and pixel, the scale corrected
  for the trimming of a normal sample); winsorized: the ``winsor_limits`` fractions of the
  values (at most ``track - 1`` per side) replaced by the next order statistic, the scale
  corrected for the winsorization -- a floor on the scale, and the clipping bounds
  ``[c - kappa_low s, c + kappa_high s]`` (no bounds with fewer than 3 values);
* :class:`ClippedSums` (later passes): weighted sums of the values within the bounds (and
  their moments, when another clipping round follows), and of all values: a pixel whose
  every value is rejected keeps its plain weighted mean.

Every operation is per pixel and every sum is taken in the order the frames come, so a
band of rows gives exactly the pixels of the whole tile, and a frame read again gives
exactly the values of a frame kept in memory: the stacked pixels do not depend on the
memory budget.  :func:`masked_median` serves the median (of the values in memory).
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["ClipSettings", "STATE_BYTES", "trim_variance_ratio", "winsor_scale_factor",
           "Moments", "robust_bounds", "ClippedSums", "masked_median"]

#: Bytes of accumulator state per pixel and channel: the first pass (plus ``track`` per
#: extreme value kept on each side), a clipping pass (plus the moments of another round).
STATE_BYTES = {"moments": 24, "track": 8, "sums": 36, "sums_moments": 52}


@dataclass(frozen=True)
class ClipSettings:
    """How values are rejected: the method and its thresholds.

    ``method`` is ``"mean"`` or ``"median"`` (nothing rejected), ``"kappa_sigma"`` or
    ``"winsorized"``; ``kappa_low``/``kappa_high`` are the rejection thresholds below and
    above the centre in sigma; ``iterations`` the clipping rounds (each a pass over the
    frames); ``winsor_limits`` the fractions winsorized at the low and high end; ``floor``
    the smallest scale (per channel, or one value), so that a scale that a handful of
    values put too low cannot reject clean values.
    """

    method: str = "kappa_sigma"
    kappa_low: float = 3.0
    kappa_high: float = 3.0
    iterations: int = 1
    winsor_limits: tuple = (0.05, 0.05)
    floor: object = 0.0

    @property
    def track(self):
        """Lowest and highest values kept per pixel by the first pass."""
        return 3 if self.method == "winsorized" else 1

    @property
    def clips(self):
        """True when values are rejected."""
        return self.method in ("kappa_sigma", "winsorized")


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
    """Expected trimmed-variance ratio for ``n`` values (array), see ``_TRIM_R``.

    Examples
    --------
    >>> trim_variance_ratio(np.array([4, 40])).round(3).tolist()
    [0.298, 0.79]
    """
    n = np.asarray(n, dtype=np.float64)
    r = np.interp(np.log(np.maximum(n, 4)), np.log(_TRIM_N), _TRIM_R)
    big = n > _TRIM_N[-1]
    if np.any(big):
        nb = n[big]
        r[big] = 1.0 - (1.0 - _TRIM_R[-1]) * (_TRIM_N[-1] / nb) * (np.log(nb) / np.log(2000.0))
    return r


def winsor_scale_factor(q):
    """Factor that turns the std of a normal sample winsorized at fraction ``q`` per side
    into the sample's sigma (1 for ``q = 0``).

    Examples
    --------
    >>> winsor_scale_factor(np.array([0.0, 0.1])).round(3).tolist()
    [1.0, 1.214]
    """
    from scipy.special import ndtri
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = ndtri(1.0 - np.clip(q, 1e-12, 0.49))
        phi = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        var_w = 1.0 - 2 * q - 2 * z * phi + 2 * q * z * z
    return np.where(q > 0, 1.0 / np.sqrt(np.clip(var_w, 1e-6, 1.0)), 1.0)


class Moments:
    """First pass: count, sums about the first valid value and extremes, per pixel-channel.

    Parameters
    ----------
    shape : tuple of int
        ``(h, w, C)`` of the band.
    track : int
        Lowest and highest values kept per pixel (sorted).
    """

    def __init__(self, shape, track=1):
        self.ref = np.full(shape, np.nan, np.float32)
        self.n = np.zeros(shape, np.int32)
        self.s1 = np.zeros(shape, np.float64)
        self.s2 = np.zeros(shape, np.float64)
        self.lows = np.full((track,) + tuple(shape), np.inf, np.float32)
        self.highs = np.full((track,) + tuple(shape), -np.inf, np.float32)

    def add(self, x, valid, win):
        """Add the values ``x`` (NaN where not ``valid``) on the window ``win`` of the band."""
        ref = self.ref[win]
        np.copyto(ref, x, where=valid & np.isnan(ref))
        d = np.subtract(x, ref)
        d[~valid] = 0.0
        self.s1[win] += d
        self.s2[win] += np.multiply(d, d, dtype=np.float64)
        self.n[win] += valid
        if self.lows.shape[0] == 1:  # fmin / fmax skip NaN: the invalid values
            np.fmin(self.lows[0][win], x, out=self.lows[0][win])
            np.fmax(self.highs[0][win], x, out=self.highs[0][win])
            return
        for ext, fill, keep, push in ((self.lows, np.inf, np.minimum, np.maximum),
                                      (self.highs, -np.inf, np.maximum, np.minimum)):
            v = np.where(valid, x, np.float32(fill))  # insert v into the sorted extremes
            for level in ext:
                cur = level[win]
                moved = push(cur, v)
                keep(cur, v, out=cur)
                v = moved


def _trimmed(m, ref, n):
    """Centre and variance of the values with the lowest and highest left out (n >= 4)."""
    lo = m.lows[0].astype(np.float64) - ref
    hi = m.highs[0].astype(np.float64) - ref
    k = n - 2.0
    s1 = m.s1 - lo - hi
    s2 = m.s2 - lo * lo - hi * hi
    with np.errstate(invalid="ignore", divide="ignore"):
        return ref + s1 / k, (s2 - s1 * s1 / k) / (k - 1) / trim_variance_ratio(n)


def _winsorized(m, ref, n, limits):
    """Centre and variance of the values winsorized at ``limits`` (at most track-1 a side)."""
    K = m.lows.shape[0]
    s1 = m.s1.astype(np.float64)
    s2 = m.s2.astype(np.float64)
    ks = []
    for q, ext in zip(limits, (m.lows, m.highs)):
        k = np.where(q > 0, np.ceil(q * n - 1e-9), 0).astype(np.int64)
        ks.append(np.clip(k, 0, K - 1))
    keep_two = ks[0] + ks[1] > n - 2  # keep at least two values between the limits
    for k, ext in zip(ks, (m.lows, m.highs)):
        k[keep_two] = 0
        repl = np.take_along_axis(ext, k[np.newaxis], axis=0)[0].astype(np.float64) - ref
        for i in range(K - 1):
            sel = i < k
            d = np.where(sel, ext[i].astype(np.float64) - ref, 0.0)
            r = np.where(sel, repl, 0.0)
            s1 += r - d
            s2 += r * r - d * d
    q = 0.5 * (ks[0] + ks[1]) / np.maximum(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (s2 - s1 * s1 / n) / (n - 1)
    return ref + s1 / n, var * winsor_scale_factor(q) ** 2


def robust_bounds(m, settings, rows=64):
    """Clipping bounds ``(lo, hi)`` (float32, band-shaped) from the first pass.

    ``-inf``/``inf`` where a pixel has fewer than 3 values (nothing is rejected there).
    Computed in blocks of ``rows`` rows (float64 temporaries of that size only).
    """
    lo = np.full(m.ref.shape, -np.inf, np.float32)
    hi = np.full(m.ref.shape, np.inf, np.float32)
    floor = np.asarray(settings.floor, dtype=np.float64)
    for r0 in range(0, m.ref.shape[0], rows):
        sl = slice(r0, r0 + rows)
        part = _Rows(m, sl)
        n = part.n.astype(np.float64)
        ref = part.ref.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            if settings.method == "winsorized":
                centre, var = _winsorized(part, ref, n, settings.winsor_limits)
            else:
                centre, var = _trimmed(part, ref, n)
                plain_c = ref + part.s1 / n  # three values: nothing left out
                plain_v = (part.s2 - part.s1.astype(np.float64) ** 2 / n) / (n - 1)
                three = n == 3
                centre = np.where(three, plain_c, centre)
                var = np.where(three, plain_v, var)
            scale = np.fmax(np.sqrt(np.maximum(var, 0.0)), floor)
            clip = (n >= 3) & np.isfinite(scale) & np.isfinite(centre)
            lo[sl] = np.where(clip, centre - settings.kappa_low * scale, -np.inf)
            hi[sl] = np.where(clip, centre + settings.kappa_high * scale, np.inf)
    return lo, hi


class _Rows:
    """Rows ``sl`` of a :class:`Moments` (views)."""

    def __init__(self, m, sl):
        self.ref, self.n, self.s1, self.s2 = m.ref[sl], m.n[sl], m.s1[sl], m.s2[sl]
        self.lows, self.highs = m.lows[:, sl], m.highs[:, sl]


class ClippedSums:
    """A clipping pass: weighted sums of the values within ``[lo, hi]``, and of all values.

    ``lo = hi = None`` rejects nothing (the weighted mean).  With ``moments=True`` also
    the sums that give the next round's bounds.
    """

    def __init__(self, ref, lo, hi, moments=False):
        shape = ref.shape
        self.ref, self.lo, self.hi = ref, lo, hi
        self.t0 = np.zeros(shape, np.float64)
        self.t1 = np.zeros(shape, np.float64)
        self.a0 = np.zeros(shape, np.float32)
        self.a1 = np.zeros(shape, np.float32)
        self.moments = moments
        if moments:
            self.t2 = np.zeros(shape, np.float64)
            self.tw2 = np.zeros(shape, np.float64)
        self.used = 0

    def add(self, x, valid, win, weight):
        """Add ``x`` (NaN where not ``valid``) with ``weight`` (a number, or per pixel)."""
        d = np.subtract(x, self.ref[win])
        d[~valid] = 0.0
        w = weight if np.ndim(weight) == 0 else np.where(valid, weight, 0.0)
        self.a0[win] += valid * w if np.ndim(w) == 0 else w
        self.a1[win] += d * w
        if self.lo is None:  # nothing rejected
            use = valid
        else:
            with np.errstate(invalid="ignore"):
                use = (x >= self.lo[win]) & (x <= self.hi[win])
            d[~use] = 0.0
        self.used += int(np.count_nonzero(use))
        wu = use * w
        self.t0[win] += wu
        wd = d * w
        self.t1[win] += wd
        if self.moments:
            self.t2[win] += wd * d
            self.tw2[win] += wu * w

    def next_bounds(self, settings):
        """Bounds of the next round: weighted mean and std of the values kept here."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.t1 / self.t0
            denom = self.t0 - self.tw2 / self.t0
            var = np.where(denom > 0, (self.t2 - self.t1 * self.t1 / self.t0) / denom, np.nan)
            scale = np.fmax(np.sqrt(np.maximum(var, 0.0)), np.asarray(settings.floor))
            bounded = np.isfinite(scale) & np.isfinite(self.lo)
            lo = np.where(bounded, self.ref + mean - settings.kappa_low * scale, self.lo)
            hi = np.where(bounded, self.ref + mean + settings.kappa_high * scale, self.hi)
        return lo.astype(np.float32), hi.astype(np.float32)

    def result(self):
        """``(stacked, weight sum)``: the clipped weighted mean, or where every value was
        rejected the plain weighted mean; NaN where no value."""
        with np.errstate(invalid="ignore", divide="ignore"):
            clipped = self.t1 / self.t0
            plain = self.a1 / self.a0
        kept = self.t0 > 0
        out = self.ref + np.where(kept, clipped, plain)
        out = np.where(self.a0 > 0, out, np.nan).astype(np.float32)
        return out, np.where(kept, self.t0, self.a0)


def masked_median(x, keep):
    """Median along axis 0 of the values where ``keep`` (NaN where none).

    Examples
    --------
    >>> x = np.array([[1.0, 5.0], [2.0, 6.0], [9.0, 7.0]])
    >>> masked_median(x, np.array([[1, 1], [1, 0], [0, 0]], bool)).tolist()
    [1.5, 5.0]
    """
    srt = np.sort(np.where(keep, x, np.inf), axis=0)
    n = keep.sum(axis=0)
    lo = np.clip((n - 1) // 2, 0, None)[np.newaxis]
    hi = np.clip(n // 2, 0, None)[np.newaxis]
    with np.errstate(invalid="ignore"):
        med = 0.5 * (np.take_along_axis(srt, lo, axis=0)[0].astype(np.float64)
                     + np.take_along_axis(srt, hi, axis=0)[0])
    return np.where(n > 0, med, np.nan)
