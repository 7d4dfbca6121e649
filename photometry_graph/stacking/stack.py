"""Weighted, outlier-rejecting stacking of frames reprojected onto one tile.

Each frame ``k`` comes from a callback ``get_frame(k)`` returning its pixels
on the tile (``(h, w, C)`` float32, NaN where invalid) and an optional
per-pixel weight ``(h, w)``; optionally only the window of the tile that the
frame covers, with the window's origin in the tile (a frame of a mosaic
covers a part of a tile: the work of each frame is then in proportion to
its window, not to the tile).  A pixel's weight is the frame's scalar weight
(exposure, inverse noise variance, ...) times its per-pixel weight.

Methods (per pixel and channel; invalid pixels never enter a statistic):

``"mean"``
    Weighted mean.
``"median"``
    Median of the valid values (unweighted).
``"kappa_sigma"``
    Iterative clipping.  First pass: centre = median, scale = 1.4826 MAD,
    so that a single bright outlier (a satellite trail) cannot hide itself
    by inflating a mean/std (with ``n`` frames one outlier is at most
    ``sqrt(n - 1)`` standard deviations from the mean it pulls).  Later
    passes: weighted mean and weighted standard deviation of the values
    kept so far.  Values outside ``[c - kappa_low s, c + kappa_high s]``
    are rejected; the bounds of each pass are applied to every valid value,
    so a clean value rejected by the noisy first scale comes back.
``"winsorized"``
    Winsorized sigma clipping: the ``winsor_limits`` fractions of the
    lowest/highest valid values (at least one value per side when a limit
    is positive) are replaced by the nearest kept order statistic; the
    mean and the standard deviation of these values, the latter corrected
    for the winsorization of a normal sample, give the clipping bounds.

The kept values are combined with ``combine`` (``"mean"`` weighted, or
``"median"``).

Memory: when ``n_frames`` frames of the tile fit ``memory_budget_bytes`` they
are held in memory and clipped exactly (in row blocks, so the temporaries
stay small).  Otherwise the frames are streamed twice and memory is O(tile):
pass 1 accumulates, per pixel, the sums of weights, of weighted deviations
and of weighted squared deviations about the pixel's first valid value (a
shifted-data form of Welford's accumulation: the sums stay small, so float32
keeps them exact enough), plus the extreme low and high values; the pass-1
centre and scale leave the two extremes out (robust to one outlier per side
and pixel, the scale corrected for the trimming of a normal sample); pass 2
accumulates only the values within kappa of these.
``"median"`` cannot be streamed and falls back to that clipped mean with a
``[GRID]`` warning.
"""

import numpy as np

from .._log import get_logger, grid_debug, grid_warning
from .._stats import estimate_noise
from ..core.correction import apply_correction
from ..core.masks import as_channels_last
from .clip import ClipSettings, clip_sparse, combine_block, scale_floor, trim_variance_ratio
from .resample import reproject_to_bbox

__all__ = ["stack_frames", "estimate_frame_noise", "inverse_variance_weight", "STACK_METHODS",
           "WEIGHT_METHODS", "frame_weights", "radial_weight", "frame_on_tile"]

logger = get_logger(__name__)

#: Accepted stacking methods (aliases map to the canonical names).
STACK_METHODS = {
    "mean": "mean", "average": "mean", "none": "mean",
    "median": "median",
    "kappa_sigma": "kappa_sigma", "kappa-sigma": "kappa_sigma", "sigma_clip": "kappa_sigma",
    "kappa": "kappa_sigma",
    "winsorized": "winsorized", "winsorized_sigma_clip": "winsorized",
    "winsorized_sigma": "winsorized", "winsor": "winsorized",
}


def estimate_frame_noise(data, mask=None):
    """Robust per-channel noise sigma of a frame.

    Uses :func:`photometry_graph.estimate_noise` (MAD of second
    differences of neighbouring pixels: blind to gradients and smooth
    structure, robust to stars).  Estimate it on the native frame: a
    reprojected frame has correlated noise and reads lower.

    Parameters
    ----------
    data : array_like, shape (H, W) or (H, W, C)
    mask : numpy.ndarray of bool, shape (H, W), optional

    Returns
    -------
    numpy.ndarray, shape (C,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> np.round(estimate_frame_noise(rng.normal(10, 2, (100, 100))), 0)
    array([2.])
    """
    return estimate_noise(data, mask)


def inverse_variance_weight(noise_sigma, *, floor=1e-12):
    """Stacking weight ``1 / mean(sigma**2)`` of a frame.

    Parameters
    ----------
    noise_sigma : float or array_like of float
        Noise per channel (e.g. from :func:`estimate_frame_noise`).
    floor : float
        Smallest variance accepted.

    Returns
    -------
    float
        0.0 when the noise is unknown (NaN): such a frame gets no weight.

    Examples
    --------
    >>> inverse_variance_weight([2.0, 2.0, 2.0])
    0.25
    """
    s = np.atleast_1d(np.asarray(noise_sigma, dtype=np.float64))
    s = s[np.isfinite(s)]
    if s.size == 0:
        return 0.0
    return float(1.0 / max(float(np.mean(s * s)), floor))


def _norm_method(name, what="method"):
    key = str(name).lower() if name is not None else "mean"
    if key not in STACK_METHODS:
        raise ValueError(f"unknown stacking {what} {name!r}; use one of "
                         "'mean', 'median', 'kappa_sigma', 'winsorized'")
    return STACK_METHODS[key]


def _read_frame(get_frame, k, shape):
    """Frame ``k`` as ``(data (h, w, C), pixel weight or None, window slices in the tile)``.

    ``shape`` is the tile's ``(h, w, C)`` or ``(h, w)`` (channels not
    checked), or None for the first frame read when no tile shape was given
    (the frame then sets it).  A frame that is not a window spans the tile.
    """
    got = get_frame(k)
    origin = None
    if isinstance(got, tuple):
        if len(got) not in (2, 3):
            raise ValueError("get_frame(k) must return (data, pixel_weight or None) or "
                             "(data, pixel_weight or None, (row, column) origin in the tile)")
        data, pw = got[:2]
        origin = got[2] if len(got) == 3 else None
    else:
        data, pw = got, None
    arr = as_channels_last(np.asarray(data))
    window = (slice(0, arr.shape[0]), slice(0, arr.shape[1]))
    if origin is not None:
        if shape is None:
            raise ValueError("frames given as windows need the tile shape: pass shape=(h, w)")
        y0, x0 = (int(v) for v in origin)
        if (y0 < 0 or x0 < 0 or y0 + arr.shape[0] > shape[0] or x0 + arr.shape[1] > shape[1]
                or arr.shape[2:] != tuple(shape[2:]) and len(shape) == 3):
            raise ValueError(f"frame {k}: a window of shape {arr.shape} at {(y0, x0)} does not "
                             f"fit the tile of shape {shape}")
        window = (slice(y0, y0 + arr.shape[0]), slice(x0, x0 + arr.shape[1]))
    elif shape is not None and arr.shape[:len(shape)] != tuple(shape):
        raise ValueError(f"frame {k} has shape {arr.shape}, expected {shape} like the first "
                         "frame; every frame must be reprojected onto the same tile")
    if pw is not None:
        pw = np.asarray(pw, dtype=np.float32)
        if pw.shape != arr.shape[:2]:
            raise ValueError(f"pixel weight of frame {k} has shape {pw.shape}, expected "
                             f"{arr.shape[:2]}")
    return arr, pw, window


def _pixel_weights(arr, pw, scalar):
    """Per-pixel-and-channel weights ``(h, w, C)`` float32: 0 where invalid."""
    w = np.full(arr.shape[:2], scalar, dtype=np.float32) if pw is None \
        else np.nan_to_num(pw, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32) * scalar
    w = np.where(w > 0, w, 0.0).astype(np.float32)
    ww = np.broadcast_to(w[..., np.newaxis], arr.shape).copy()
    ww[~np.isfinite(arr)] = 0.0
    return ww


def _stack_in_memory(cube, wcube, settings, combine, block_bytes=32 * 2 ** 20):
    """Exact clipping of frames held in memory (``cube`` zero where ``wcube`` is 0)."""
    n, h, w, C = cube.shape
    out = np.full((h, w, C), np.nan, dtype=np.float32)
    cov = np.zeros((h, w, C), dtype=np.float64)
    rejected = 0
    rows = max(1, int(block_bytes // max(1, n * w * C * 4 * 8)))
    comb = "median" if settings.method == "median" else combine
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        x = cube[:, r0:r1].reshape(n, -1)
        wt = wcube[:, r0:r1].reshape(n, -1)
        keep = clip_sparse(x, wt, settings, C)
        rejected += int(np.count_nonzero(wt > 0) - np.count_nonzero(keep))
        val, sw = combine_block(x, wt, keep, comb)
        out[r0:r1] = val.reshape(r1 - r0, w, C)
        cov[r0:r1] = sw.reshape(r1 - r0, w, C)
    return out, cov, rejected


class _Accumulator:
    """Per-pixel weighted sums about a reference value, plus the extreme values."""

    def __init__(self, shape, moments=True):
        self.moments = moments
        # sums about a per-pixel reference value stay small: float32 is enough
        self.s0 = np.zeros(shape, dtype=np.float32 if moments else np.float64)
        self.s1 = np.zeros(shape, dtype=np.float32 if moments else np.float64)
        if moments:
            self.ref = np.full(shape, np.nan, dtype=np.float32)
            self.s2 = np.zeros(shape, dtype=np.float32)
            self.sw2 = np.zeros(shape, dtype=np.float32)
            self.n = np.zeros(shape, dtype=np.int32)
            self.vmax = np.full(shape, -np.inf, dtype=np.float32)
            self.wmax = np.zeros(shape, dtype=np.float32)
            self.vmin = np.full(shape, np.inf, dtype=np.float32)
            self.wmin = np.zeros(shape, dtype=np.float32)

    def add(self, x, w, win=(slice(None),)):
        """Add values ``x`` with weights ``w`` (0: invalid), on the window ``win`` of the tile."""
        ok = w > 0
        self.s0[win] += w
        if not self.moments:
            self.s1[win] += w * np.where(ok, x, 0.0)
            return
        ref = self.ref[win]
        unset = ok & np.isnan(ref)
        ref[unset] = x[unset]
        with np.errstate(invalid="ignore"):
            d = np.where(ok, x - ref, np.float32(0.0))
        wd = w * d
        self.s1[win] += wd
        self.s2[win] += wd * d
        self.sw2[win] += w * w
        self.n[win] += ok
        vmax, wmax, vmin, wmin = (a[win] for a in (self.vmax, self.wmax, self.vmin, self.wmin))
        up = ok & (x > vmax)
        vmax[up] = x[up]
        wmax[up] = w[up]
        lo = ok & (x < vmin)
        vmin[lo] = x[lo]
        wmin[lo] = w[lo]

    def mean(self):
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self.s1 / self.s0
        if self.moments:
            m = m + self.ref
        return np.where(self.s0 > 0, m, np.nan)

    def robust_stats(self):
        """Centre and scale with the extreme low and high values left out."""
        s0, s1, s2 = (a.astype(np.float64) for a in (self.s0, self.s1, self.s2))
        sw2 = self.sw2.astype(np.float64)
        trim = self.n >= 4
        for v, wv in ((self.vmax, self.wmax), (self.vmin, self.wmin)):
            w = np.where(trim, wv, 0.0)
            d = np.where(trim, v - self.ref, 0.0)
            s0 -= w
            s1 -= w * d
            s2 -= w * d * d
            sw2 -= w * w
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.ref + s1 / s0
            denom = s0 - sw2 / s0
            var = np.where(denom > 0, np.maximum(s2 - s1 * s1 / s0, 0.0) / denom, np.nan)
        ratio = np.where(trim, trim_variance_ratio(np.maximum(self.n, 4)), 1.0)
        return mean, np.sqrt(var / ratio)


def _stack_streaming(frames, shape, method, kappa_low, kappa_high):
    """Mean in one pass, or clipped mean in two passes; memory O(tile).

    ``frames`` is a callable returning an iterator over ``(data, weights)``.
    """
    C = shape[2]
    acc = _Accumulator(shape, moments=method != "mean")
    for arr, wk, win in frames():
        acc.add(arr, wk, win)
    if method == "mean":
        return acc.mean().astype(np.float32), acc.s0, 0
    centre, scale = acc.robust_stats()
    clip = (acc.n >= 3) & np.isfinite(scale)
    scale = np.fmax(scale, scale_floor(np.where(clip, scale, np.nan).ravel(), C).reshape(shape))
    lo = np.where(clip, centre - kappa_low * scale, -np.inf).astype(np.float32)
    hi = np.where(clip, centre + kappa_high * scale, np.inf).astype(np.float32)
    del acc, centre, scale
    s1 = np.zeros(shape)
    s0 = np.zeros(shape)
    total = used = 0
    for arr, wk, win in frames():
        ok = wk > 0
        with np.errstate(invalid="ignore"):
            use = ok & (arr >= lo[win]) & (arr <= hi[win])
        total += int(np.count_nonzero(ok))
        used += int(np.count_nonzero(use))
        wu = np.where(use, wk, 0.0)
        s0[win] += wu
        s1[win] += wu * np.where(use, arr, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(s0 > 0, s1 / s0, np.nan).astype(np.float32)
    return out, s0, total - used


def stack_frames(get_frame, n_frames, *, weights=None, method="kappa_sigma", kappa_low=3.0,
                 kappa_high=3.0, iterations=3, winsor_limits=(0.05, 0.05), combine="mean",
                 memory_budget_bytes=512 * 2 ** 20, shape=None, return_info=False):
    """Stack frames reprojected onto one tile, with weights and rejection.

    Parameters
    ----------
    get_frame : callable
        ``get_frame(k)`` for ``k in range(n_frames)`` returns ``(data,
        pixel_weight)``: ``data`` ``(h, w)`` or ``(h, w, C)`` float with NaN
        where invalid, ``pixel_weight`` ``(h, w)`` or ``None`` (all ones).
        Or ``(data, pixel_weight, (y0, x0))``: only the window of the tile
        starting at row ``y0``, column ``x0`` (the rest of the tile is not
        covered by that frame); ``shape`` is then required.  It may be
        called twice per frame (streaming).
    n_frames : int
    weights : sequence of float, optional
        Scalar weight per frame (exposure time, inverse noise variance);
        default 1.  Frames with weight 0 are skipped.
    method : {"kappa_sigma", "winsorized", "mean", "median"}
        See the module notes.
    kappa_low, kappa_high : float
        Rejection thresholds below / above the centre, in sigma.
    iterations : int
        Clipping iterations (in-memory path).
    winsor_limits : tuple of float
        Fractions winsorized at the low and high end (``"winsorized"``).
    combine : {"mean", "median"}
        How the kept values are combined (``"median"`` only in memory).
    memory_budget_bytes : int
        Frames are held in memory when ``n_frames * h * w * C * 8`` bytes
        (data and weights) fit; otherwise they are streamed in two passes
        (about ``11 * h * w * C * 4`` bytes of accumulators).  A plain
        weighted mean always takes one pass and never holds the frames.
    shape : tuple of int, optional
        ``(h, w)`` or ``(h, w, C)`` of the tile; needed when frames come as
        windows (default: the shape of the first frame).
    return_info : bool
        Also return a dict (method, streaming, rejected fraction).

    Returns
    -------
    stacked : numpy.ndarray, shape (h, w, C), float32
        NaN where no frame has valid data.
    coverage : numpy.ndarray, shape (h, w), float32
        Sum of the weights of the values used (mean over channels).
    info : dict
        Only with ``return_info=True``.

    Examples
    --------
    >>> frames = [np.full((4, 5), v, dtype=np.float32) for v in (1.0, 2.0, 3.0, 100.0)]
    >>> frames[0][0, 0] = np.nan
    >>> img, cov = stack_frames(lambda k: (frames[k], None), 4, method="median")
    >>> float(img[1, 1, 0]), float(cov[0, 0]), float(cov[1, 1])
    (2.5, 3.0, 4.0)
    >>> img, cov = stack_frames(lambda k: (frames[k][:2, :2], None, (k % 2, 0)), 4,
    ...                         method="mean", shape=(4, 5))
    >>> cov[:3, 0].tolist(), np.isnan(img[3, 0, 0])
    ([1.0, 4.0, 2.0], np.True_)
    """
    method = _norm_method(method)
    combine = _norm_method(combine, "combine")
    if combine not in ("mean", "median"):
        raise ValueError(f"combine must be 'mean' or 'median', got {combine!r}")
    n_frames = int(n_frames)
    if n_frames < 1:
        raise ValueError("stack_frames needs at least one frame")
    if weights is None:
        wts = np.ones(n_frames)
    else:
        wts = np.asarray(weights, dtype=np.float64).ravel()
        if wts.size != n_frames:
            raise ValueError(f"got {wts.size} weights for {n_frames} frames")
        if not np.all(np.isfinite(wts)) or np.any(wts < 0):
            raise ValueError("frame weights must be finite and >= 0")
    if kappa_low <= 0 or kappa_high <= 0:
        raise ValueError(f"kappa_low and kappa_high must be positive, got {kappa_low}, "
                         f"{kappa_high}")
    lim = tuple(float(v) for v in winsor_limits)
    if len(lim) != 2 or min(lim) < 0 or sum(lim) >= 1:
        raise ValueError(f"winsor_limits must be two fractions in [0, 0.5), got {winsor_limits}")
    if not np.any(wts > 0):
        raise ValueError("every frame weight is 0: nothing to stack")

    active = [k for k in range(n_frames) if wts[k] > 0]
    first = active[0]
    tile = None if shape is None else tuple(int(v) for v in shape)
    if tile is not None and len(tile) not in (2, 3):
        raise ValueError(f"shape must be (h, w) or (h, w, C), got {shape!r}")
    arr0, pw0, win0 = _read_frame(get_frame, first, tile)
    shape = arr0.shape if tile is None else tile[:2] + (arr0.shape[2],)  # C of the first frame
    h, w, C = shape
    frame_bytes = h * w * C * 8  # data + weights, float32
    streaming = len(active) * frame_bytes > memory_budget_bytes

    def frames():
        """Frames with their weights and windows, the first one from the read above."""
        for k in active:
            arr, pw, win = ((arr0, pw0, win0) if k == first
                            else _read_frame(get_frame, k, shape))
            yield arr, _pixel_weights(arr, pw, wts[k]), win

    if method == "mean" and combine == "mean":
        # one pass, exact: no frame needs to be held
        out, cov, rejected = _stack_streaming(frames, shape, "mean", kappa_low, kappa_high)
    elif streaming:
        if method == "median" or combine == "median":
            grid_warning(logger, "stacking: %d frames of %dx%d do not fit the memory budget; "
                         "the median is replaced by a clipped mean (two passes)",
                         len(active), h, w)
        m = "mean" if method == "mean" else "kappa_sigma"
        out, cov, rejected = _stack_streaming(frames, shape, m, kappa_low, kappa_high)
    else:
        cube = np.zeros((len(active),) + shape, dtype=np.float32)
        wcube = np.zeros((len(active),) + shape, dtype=np.float32)
        for i, (arr, wk, win) in enumerate(frames()):
            wcube[i][win] = wk
            np.copyto(cube[i][win], np.where(wk > 0, arr, 0.0))
        del arr0, pw0
        settings = ClipSettings(method, kappa_low, kappa_high, iterations, lim)
        out, cov, rejected = _stack_in_memory(cube, wcube, settings, combine)
    coverage = cov.mean(axis=2).astype(np.float32)
    grid_debug(logger, "stacked %d frames (%s, %s)", len(active), method,
               "streaming" if streaming else "in memory")
    if not return_info:
        return out, coverage
    info = {"method": method, "combine": combine, "n_frames": len(active),
            "streaming": bool(streaming), "rejected_values": int(rejected)}
    return out, coverage, info


#: Frame weighting schemes of :func:`frame_weights`.
WEIGHT_METHODS = ("exposure_noise", "noise", "exposure", "none")


def frame_weights(exptimes, noise_sigmas, *, gains=None, method="exposure_noise"):
    """Scalar stacking weight per frame, normalised to a mean of 1.

    The noise that matters is the noise of the *corrected* frame: a frame
    multiplied by a gain ``g`` by the frame photometry has its noise
    multiplied by ``|g|``.

    Parameters
    ----------
    exptimes : array_like of float, shape (n,)
        Exposure times (any unit).
    noise_sigmas : array_like of float, shape (n,)
        Noise sigma of each raw frame (NaN when unknown: inverse-variance
        factor 1, i.e. the median frame's).
    gains : array_like of float, shape (n,), optional
        Mean ``|gain|`` of each frame's photometric correction (default 1).
    method : {"exposure_noise", "noise", "exposure", "none"}
        Exposure x inverse noise variance, inverse noise variance (relative
        to the median frame), exposure, or equal weights.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Non-negative weights with mean 1 (equal weights when none is
        positive); non-finite or non-positive weights become 0.

    Raises
    ------
    ValueError
        For an unknown ``method`` or arrays of different lengths.

    Examples
    --------
    >>> frame_weights([10, 10, 20], [1.0, 2.0, 1.0], method="exposure_noise").round(3).tolist()
    [0.923, 0.231, 1.846]
    >>> frame_weights([10, 20], [1.0, 1.0], gains=[1.0, 2.0], method="noise").tolist()
    [1.6, 0.4]
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"unknown frame weight method {method!r}; use one of "
                         f"{', '.join(WEIGHT_METHODS)}")
    t = np.asarray(exptimes, dtype=np.float64).ravel()
    sigma = np.asarray(noise_sigmas, dtype=np.float64).ravel()
    gain = np.ones_like(t) if gains is None else np.abs(np.asarray(gains, np.float64).ravel())
    if not len(t) == len(sigma) == len(gain):
        raise ValueError(f"got {len(t)} exposure times, {len(sigma)} noise values and "
                         f"{len(gain)} gains; give one of each per frame")
    sigma = sigma * gain
    ok = np.isfinite(sigma) & (sigma > 0)
    ref = float(np.median(sigma[ok])) if ok.any() else 1.0
    inv_var = np.where(ok, (ref / np.where(ok, sigma, 1.0)) ** 2, 1.0)
    w = {"none": np.ones_like(t), "exposure": t, "noise": inv_var,
         "exposure_noise": t * inv_var}[method]
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    return w / w.mean() if w.sum() > 0 else np.ones_like(t)


def radial_weight(shape, fraction=0.8, power=2.0):
    """Per-pixel frame weight that fades towards the corners (vignetting, field curvature).

    With ``r`` the distance from the frame centre in units of the
    half-diagonal (axes scaled so that the frame is a square), the weight is
    1 for ``r <= fraction`` and falls as ``(0.5 (1 + cos(pi t)))**power``
    with ``t = (r - fraction) / (1 - fraction)`` to the corners, never below
    1e-3 (a corner covered by one frame only keeps its data).

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of the frame.
    fraction : float
        Part of the half-diagonal at full weight, clipped to [0, 0.99].
    power : float
        Sharpness of the fall-off.

    Returns
    -------
    numpy.ndarray, shape (H, W), float32

    Examples
    --------
    >>> w = radial_weight((5, 7), 0.5)
    >>> w[2, 3], w[0, 0].round(3), w[2, 0].round(3)
    (np.float32(1.0), np.float32(0.068), np.float32(0.797))
    """
    h, w = (int(v) for v in shape)
    yy, xx = np.ogrid[:h, :w]
    r = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2)) / np.sqrt(2)
    f = min(max(float(fraction), 0.0), 0.99)
    t = np.clip((r - f) / (1 - f), 0.0, 1.0)
    return np.maximum((0.5 * (1 + np.cos(np.pi * t))) ** float(power), 1e-3).astype(np.float32)


def frame_on_tile(data, frame_wcs, grid_wcs, bbox, *, weight=None, correction=None,
                  grid_step=32, footprint=None):
    """A frame reprojected onto a tile and corrected: what ``stack_frames`` stacks.

    The per-pixel ``weight`` travels through the reprojection as an extra
    channel (same interpolation, same footprint); the photometric
    ``correction`` (in global pixel coordinates of the grid of ``grid_wcs``)
    is applied after the reprojection.

    Parameters
    ----------
    data : numpy.ndarray, shape (H, W, C)
        The frame, NaN where invalid; never modified.
    frame_wcs, grid_wcs : astropy.wcs.WCS
        Celestial WCS of the frame and of the global grid.
    bbox : BBox
        The tile on the global grid.
    weight : numpy.ndarray, shape (H, W), optional
        Per-pixel weight of the frame (coverage, radial weight).
    correction : Correction, optional
        Photometric correction of the frame (None: as it is).
    grid_step : int
        Coordinate-map step of :func:`~photometry_graph.stacking.resample.reproject_to_bbox`.
    footprint : BBox, optional
        The frame's footprint on the global grid
        (:func:`~photometry_graph.core.wcsgrid.footprint_bbox`).  When given, only
        the window ``bbox & footprint`` is reprojected and returned, with its
        origin in the tile: the ``(data, weight, (y0, x0))`` that
        :func:`stack_frames` accepts.

    Returns
    -------
    data : numpy.ndarray, shape (h, w, C), float32
        NaN wherever the frame has no valid data (the tile, or the window).
    weight : numpy.ndarray, shape (h, w), float32
        The reprojection footprint (times the reprojected weight), 0 where
        ``data`` is NaN.
    origin : tuple of int
        Only with ``footprint``: row and column of the window in the tile.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> from photometry_graph.core.tiles import BBox
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.cdelt = [-1e-3, 1e-3]; w.wcs.crval = [10, 10]
    >>> frame = np.full((40, 50, 1), 3.0, np.float32)
    >>> out, wt = frame_on_tile(frame, w, w, BBox(10, 20, 30, 60))
    >>> out.shape, float(np.nanmax(out)), int((wt > 0).sum())
    ((10, 30, 1), 3.0, 200)
    >>> out, wt, origin = frame_on_tile(frame, w, w, BBox(10, 20, 30, 60),
    ...                                 footprint=BBox(0, 40, 0, 50))
    >>> out.shape, origin
    ((10, 20, 1), (0, 0))
    """
    data = as_channels_last(data)
    if footprint is not None:
        window = bbox.intersection(footprint)
        if window.is_empty:  # the frame misses the tile: nothing to stack
            n_channels = data.shape[2]
            return (np.empty((0, 0, n_channels), np.float32), np.empty((0, 0), np.float32),
                    (0, 0))
        out, wt = frame_on_tile(data, frame_wcs, grid_wcs, window, weight=weight,
                                correction=correction, grid_step=grid_step)
        return out, wt, (window.y0 - bbox.y0, window.x0 - bbox.x0)
    src = data if weight is None else np.concatenate(
        [data, np.asarray(weight, dtype=data.dtype)[..., None]], axis=2)
    out, foot = reproject_to_bbox(src, frame_wcs, grid_wcs, bbox, grid_step=grid_step,
                                  src_mask=np.isfinite(data).all(axis=2))
    if weight is not None:
        out, foot = out[..., :-1], np.nan_to_num(out[..., -1], nan=0.0) * (foot > 0)
    out = apply_correction(out, bbox, correction)
    ok = np.isfinite(out).all(axis=2) & (foot > 0)
    out[~ok] = np.nan
    return out, np.where(ok, foot, 0.0).astype(np.float32)
