"""Per-pixel robust statistics of frames fed one at a time: the kernels of the stacking.

:func:`~photometry_graph.stacking.stack.stack_frames` reads the frames of a tile (or of a
band of its rows) in passes; each pass feeds them one after the other, always in the same
order, to an accumulator whose state is a few arrays of the band's shape:

* :class:`Moments` (first pass): per pixel and channel the number of valid values, their
  sum and sum of squares (float64), and the ``track`` lowest and highest values;
* :func:`robust_bounds`: a centre and a scale from those -- kappa-sigma: the lowest and the
  highest value left out (robust to one outlier per side and pixel, the scale corrected
  for the trimming of a normal sample); winsorized: the ``winsor_limits`` fractions of the
  values (at most ``track - 1`` per side) replaced by the next order statistic, the scale
  corrected for the winsorization -- a floor on the scale, and the clipping bounds
  ``[c - kappa_low s, c + kappa_high s]`` (no bounds with fewer than 3 values);
* :class:`ClippedSums` (later passes): weighted sums of the values within the bounds (and
  their moments, when another clipping round follows), and of all values: a pixel whose
  every value is rejected keeps its plain weighted mean (the stacking leaves the sums of
  all values out, and makes another pass for the rare pixels that need them).

Every operation is per pixel and every sum is taken in the order the frames come, so a
band of rows gives exactly the pixels of the whole tile, and a frame read again gives
exactly the values of a frame kept in memory: the stacked pixels do not depend on the
memory budget.  :func:`masked_median` serves the median (of the values in memory).

The state is kept as 2-D ``(rows, columns x channels)`` arrays, so that each update of a
piece of a frame is a handful of OpenCV operations over its values (masked accumulations,
a range test), each one pass at memory speed (~3 ns a value for a clipping pass, a third
of the same work in numpy); ``win`` = (rows, pixel columns) of the band.
"""

import functools
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ClipSettings", "STATE_BYTES", "COUNT_MAX_16", "trim_variance_ratio",
           "winsor_scale_factor", "Moments", "robust_bounds", "ClippedSums", "masked_median"]

#: Bytes of accumulator state per pixel and channel: the first pass (plus ``track`` per
#: extreme value kept on each side), a clipping pass (plus the moments of another round).
#: The first pass counts values in 16 bits (up to :data:`COUNT_MAX_16` frames).
STATE_BYTES = {"moments": 18, "track": 8, "sums": 32, "sums_moments": 48}

#: Most values per pixel that :class:`Moments` counts in 16 bits (a masked 16-bit add is
#: ~2.5x faster than a 32-bit one); more frames are counted in 32 bits.
COUNT_MAX_16 = 65535


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


def _flat(x):
    """An ``(h, w, C)`` piece as ``(h, w * C)`` float32 (a view when it can be)."""
    return np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0], -1)


def _cols(win, C):
    """State index of a window ``(rows, pixel columns)`` in ``(rows, columns x C)``."""
    return win[0], slice(win[1].start * C, win[1].stop * C)


class Moments:
    """First pass: count, sum and sum of squares, and extremes, per pixel-channel.

    Parameters
    ----------
    shape : tuple of int
        ``(h, w, C)`` of the band.
    track : int
        Lowest and highest values kept per pixel (sorted).
    max_count : int, optional
        Most values a pixel can get (the frames): up to :data:`COUNT_MAX_16`, the counts
        ``n`` are uint16, else (or None) int32.
    """

    def __init__(self, shape, track=1, max_count=None):
        h, w, C = shape
        self.shape, self.C = tuple(shape), C
        small = max_count is not None and max_count <= COUNT_MAX_16
        self.n = np.zeros((h, w * C), np.uint16 if small else np.int32)
        self.s1 = np.zeros((h, w * C), np.float64)
        self.s2 = np.zeros((h, w * C), np.float64)
        self.lows = np.full((track, h, w * C), np.inf, np.float32)
        self.highs = np.full((track, h, w * C), -np.inf, np.float32)

    def add(self, x, win):
        """Add the values ``x`` (``(h, w, C)``, NaN where invalid) on the window ``win``."""
        x2 = _flat(x)
        at = _cols(win, self.C)
        valid = cv2.compare(x2, x2, cv2.CMP_EQ)  # NaN is not equal to itself
        cv2.accumulate(x2, self.s1[at], mask=valid)
        cv2.accumulateSquare(x2, self.s2[at], mask=valid)
        cv2.add(self.n[at], 1, dst=self.n[at], mask=valid)
        if self.lows.shape[0] == 1:  # fmin / fmax skip NaN: the invalid values
            np.fmin(self.lows[0][at], x2, out=self.lows[0][at])
            np.fmax(self.highs[0][at], x2, out=self.highs[0][at])
            return
        ok = valid > 0
        for ext, fill, keep, push in ((self.lows, np.inf, np.minimum, np.maximum),
                                      (self.highs, -np.inf, np.maximum, np.minimum)):
            v = np.where(ok, x2, np.float32(fill))  # insert v into the sorted extremes
            for level in ext:
                cur = level[at]
                moved = push(cur, v)
                keep(cur, v, out=cur)
                v = moved


def _trimmed(m, n):
    """Centre and variance of the values with the lowest and highest left out (n >= 4)."""
    lo = m.lows[0].astype(np.float64)
    hi = m.highs[0].astype(np.float64)
    k = n - 2.0
    s1 = m.s1 - lo - hi
    s2 = m.s2 - lo * lo - hi * hi
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / k
        return mean, (s2 - s1 * mean) / (k - 1) / np.take(_trim_ratios(int(m.n.max())), m.n)


@functools.lru_cache(maxsize=8)
def _ratios(size):
    return trim_variance_ratio(np.arange(size, dtype=np.float64))


def _trim_ratios(n_max):
    """:func:`trim_variance_ratio` of ``0 .. n_max`` (at least), a table by count."""
    return _ratios(1 << max(6, int(n_max).bit_length()))


def _winsorized(m, n, limits):
    """Centre and variance of the values winsorized at ``limits`` (at most track-1 a side)."""
    K = m.lows.shape[0]
    s1 = m.s1.copy()
    s2 = m.s2.copy()
    ks = []
    for q in limits:
        k = np.where(q > 0, np.ceil(q * n - 1e-9), 0).astype(np.int64)
        ks.append(np.clip(k, 0, K - 1))
    keep_two = ks[0] + ks[1] > n - 2  # keep at least two values between the limits
    for k, ext in zip(ks, (m.lows, m.highs)):
        k[keep_two] = 0
        repl = np.take_along_axis(ext, k[np.newaxis], axis=0)[0].astype(np.float64)
        for i in range(K - 1):
            sel = i < k
            d = np.where(sel, ext[i].astype(np.float64), 0.0)
            r = np.where(sel, repl, 0.0)
            s1 += r - d
            s2 += r * r - d * d
    q = 0.5 * (ks[0] + ks[1]) / np.maximum(n, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = (s2 - s1 * mean) / (n - 1)
    return mean, var * winsor_scale_factor(q) ** 2


def robust_bounds(m, settings, rows=16):
    """Clipping bounds ``(lo, hi)`` (float32, ``(h, w * C)``) from the first pass.

    ``-inf``/``inf`` where a pixel has fewer than 3 values (nothing is rejected there).
    Computed in blocks of ``rows`` rows (float64 temporaries of that size only: blocks
    that stay in the CPU's cache, ~30 % faster than blocks of 64 rows).
    """
    lo = np.full(m.n.shape, -np.inf, np.float32)
    hi = np.full(m.n.shape, np.inf, np.float32)
    floor = np.broadcast_to(np.asarray(settings.floor, dtype=np.float64),
                            (m.C,)).reshape(1, 1, m.C)
    for r0 in range(0, m.n.shape[0], rows):
        sl = slice(r0, r0 + rows)
        part = _Rows(m, sl)
        n = part.n.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            if settings.method == "winsorized":
                centre, var = _winsorized(part, n, settings.winsor_limits)
            else:
                centre, var = _trimmed(part, n)
                three = n == 3
                if three.any():  # three values: nothing left out
                    plain_c = part.s1 / n
                    plain_v = (part.s2 - part.s1 * plain_c) / (n - 1)
                    centre = np.where(three, plain_c, centre)
                    var = np.where(three, plain_v, var)
            scale = np.sqrt(np.maximum(var, 0.0)).reshape(n.shape[0], -1, m.C)
            scale = np.fmax(scale, floor).reshape(n.shape)
            clip = (n >= 3) & np.isfinite(scale) & np.isfinite(centre)
            lo[sl] = np.where(clip, centre - settings.kappa_low * scale, -np.inf)
            hi[sl] = np.where(clip, centre + settings.kappa_high * scale, np.inf)
    return lo, hi


class _Rows:
    """Rows ``sl`` of a :class:`Moments` (views)."""

    def __init__(self, m, sl):
        self.n, self.s1, self.s2 = m.n[sl], m.s1[sl], m.s2[sl]
        self.lows, self.highs = m.lows[:, sl], m.highs[:, sl]


class ClippedSums:
    """A clipping pass: weighted sums of the values within ``[lo, hi]``, and of all values.

    ``lo``, ``hi`` are ``(h, w * C)`` (:func:`robust_bounds`), or None to reject nothing
    (the weighted mean); ``shape`` the band's ``(h, w, C)``.  With ``moments=True`` also
    the sums that give the next round's bounds.  ``plain=False`` leaves out the sums of
    all values (a third of the work of a pass): :meth:`result` is then NaN where every
    value was rejected, and the caller, who knows those pixels, averages them otherwise
    (the plain weighted mean is the result of a pass with no bounds); ``valid`` then
    stays 0.
    """

    def __init__(self, shape, lo, hi, moments=False, plain=True):
        h, w, C = shape
        self.shape, self.C, self.lo, self.hi = tuple(shape), C, lo, hi
        flat = (h, w * C)
        # sums of values in float64 (OpenCV's masked accumulation into float32 lets the
        # NaN of invalid values through), sums of weights in float32
        self.t0, self.t1 = np.zeros(flat, np.float32), np.zeros(flat, np.float64)
        self.plain = plain and lo is not None  # without bounds the sums are of all values
        if self.plain:
            self.a0, self.a1 = np.zeros(flat, np.float32), np.zeros(flat, np.float64)
        self.moments = moments
        if moments:
            self.t2, self.tw2 = np.zeros(flat, np.float64), np.zeros(flat, np.float64)
        self.used = self.valid = 0

    def add(self, x, win, weight):
        """Add ``x`` (``(h, w, C)``, NaN where invalid) with ``weight``: a number, or
        per pixel ``(h, w)``."""
        x2 = _flat(x)
        at = _cols(win, self.C)
        valid = None
        if self.lo is None or self.plain:
            valid = cv2.compare(x2, x2, cv2.CMP_EQ)  # NaN is not equal to itself
            self.valid += cv2.countNonZero(valid)
        # NaN is within no bounds
        use = valid if self.lo is None else cv2.inRange(x2, self.lo[at], self.hi[at])
        self.used += cv2.countNonZero(use)
        if np.ndim(weight) == 0:
            wx = cv2.multiply(x2, float(weight))
            if self.plain:
                cv2.add(self.a0[at], float(weight), dst=self.a0[at], mask=valid)
            cv2.add(self.t0[at], float(weight), dst=self.t0[at], mask=use)
            if self.moments:
                cv2.add(self.tw2[at], float(weight) ** 2, dst=self.tw2[at], mask=use)
        else:
            wimg = np.repeat(np.asarray(weight, np.float32), self.C, axis=1)
            wx = cv2.multiply(x2, wimg)
            if self.plain:
                cv2.accumulate(wimg, self.a0[at], mask=valid)
            cv2.accumulate(wimg, self.t0[at], mask=use)
            if self.moments:
                cv2.accumulateSquare(wimg, self.tw2[at], mask=use)
        if self.plain:
            cv2.accumulate(wx, self.a1[at], mask=valid)
        cv2.accumulate(wx, self.t1[at], mask=use)
        if self.moments:
            cv2.accumulateProduct(wx, x2, self.t2[at], mask=use)

    def next_bounds(self, settings):
        """Bounds of the next round: weighted mean and std of the values kept here."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.t1 / self.t0
            denom = self.t0 - self.tw2 / self.t0
            var = np.where(denom > 0, (self.t2 - self.t1 * mean) / denom, np.nan)
            h = var.shape[0]
            scale = np.fmax(np.sqrt(np.maximum(var, 0.0)).reshape(h, -1, self.C),
                            np.asarray(settings.floor)).reshape(var.shape)
            bounded = np.isfinite(scale) & np.isfinite(self.lo)
            lo = np.where(bounded, mean - settings.kappa_low * scale, self.lo)
            hi = np.where(bounded, mean + settings.kappa_high * scale, self.hi)
        return lo.astype(np.float32), hi.astype(np.float32)

    def result(self, rows=64):
        """``(stacked (h, w, C), weight sum (h, w, C))``, float32: the clipped weighted mean,
        or where every value was rejected the plain weighted mean (``plain``; NaN and 0
        otherwise); NaN where no value.  Computed in blocks of ``rows`` rows (small
        temporaries)."""
        out = np.empty(self.t0.shape, np.float32)
        wsum = np.empty(self.t0.shape, np.float32)
        for r0 in range(0, out.shape[0], rows):
            sl = slice(r0, r0 + rows)
            t0 = self.t0[sl]
            a0 = self.a0[sl] if self.plain else t0
            with np.errstate(invalid="ignore", divide="ignore"):
                val = np.where(t0 > 0, self.t1[sl] / t0,
                               self.a1[sl] / a0 if self.plain else np.nan)
            out[sl] = np.where(a0 > 0, val, np.nan)
            wsum[sl] = np.where(t0 > 0, t0, a0)
        return out.reshape(self.shape), wsum.reshape(self.shape)


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
