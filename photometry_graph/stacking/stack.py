"""Weighted, outlier-rejecting stacking of frames reprojected onto one tile.

Each frame ``k`` comes from a callback ``get_frame(k)`` returning its pixels on the tile
(``(h, w, C)`` float32, NaN where invalid) and an optional per-pixel weight ``(h, w)``;
optionally only the window of the tile that the frame covers, with the window's origin in
the tile (a frame of a mosaic covers a part of a tile: the work of each frame is then in
proportion to its window, not to the tile).  A pixel's weight is the frame's scalar weight
(exposure, inverse noise variance, ...) times its per-pixel weight.

Methods (per pixel and channel; invalid pixels never enter a statistic):

``"mean"``
    Weighted mean.
``"median"``
    Median of the valid values (unweighted).
``"kappa_sigma"``
    Clipping about a robust centre and scale: the mean and the standard deviation of the
    values with the lowest and the highest one left out (so that a single bright outlier,
    a satellite trail, cannot hide itself by inflating a mean/std; the scale is corrected
    for the trimming of a normal sample).  Values outside ``[c - kappa_low s, c +
    kappa_high s]`` are rejected; ``iterations > 1`` recomputes the bounds from the
    weighted mean and standard deviation of the kept values, once per further round.
``"winsorized"``
    The same with the centre and scale of winsorized values: the ``winsor_limits``
    fractions of the lowest/highest valid values (at least one per side when a limit is
    positive, at most two) are replaced by the nearest kept order statistic, the scale
    corrected for the winsorization of a normal sample.

The kept values are combined with ``combine`` (``"mean"`` weighted, or ``"median"``).  A
pixel with fewer than 3 values rejects nothing; a pixel whose every value is rejected
keeps its plain weighted mean.  With the per-frame ``noise`` given, no scale is allowed
below half its median (a scale that a handful of values put too low cannot reject clean
values).

Memory and passes: the tile is stacked in bands of ``band_rows`` rows, as many bands at a
time as their accumulators (:mod:`photometry_graph.stacking.clip`, a few bytes per pixel)
fit ``memory_budget_bytes`` -- or, for a ``band_reader``, fewer when the pieces of the
frames on fewer bands then stay in memory between the passes; the frames of those bands
are read once per pass (the mean: one pass; clipping: one pass for the robust centre and
scale, one per clipping round; the median: the values of a few rows at a time), and kept
in memory between passes as far as the rest of the budget allows.  Every statistic is per
pixel and every sum is taken in the frames' order, so the result does not depend on the
budget: a tile stacked in one go with every frame in memory and the same tile stacked band
by band with every frame read again agree to the last bit.
"""

import numpy as np

from .._log import get_logger, grid_debug
from .._stats import estimate_noise
from ..core.correction import apply_correction
from ..core.masks import as_channels_last
from .clip import STATE_BYTES, ClippedSums, ClipSettings, Moments, masked_median, robust_bounds
from .resample import reproject_to_bbox

__all__ = ["stack_frames", "estimate_frame_noise", "inverse_variance_weight", "STACK_METHODS",
           "WEIGHT_METHODS", "BAND_ROWS", "NOISE_FLOOR", "frame_weights", "radial_weight",
           "frame_on_tile"]

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

#: Rows of the bands in which :func:`stack_frames` stacks a tile (fixed, whatever the
#: budget: a budget only decides how many bands are stacked at a time).
BAND_ROWS = 256

#: The smallest clipping scale, as a fraction of the frames' median noise (when given).
NOISE_FLOOR = 0.5


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


def _piece(got, k, shape):
    """A frame's (part of a) window: ``(data (h, w, C) NaN where invalid, weight or None,
    (y0, x0))``.

    ``got`` is what the callback returned: ``data``, ``(data, pixel_weight)`` or ``(data,
    pixel_weight, (y0, x0))``; ``shape`` the tile's ``(h, w, C)`` (C None: any) or None for
    the first frame read when no tile shape was given.  A frame that is not a window spans
    the tile.  Pixels whose weight is not positive become NaN.
    """
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
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    if origin is not None:
        if shape is None:
            raise ValueError("frames given as windows need the tile shape: pass shape=(h, w)")
        y0, x0 = (int(v) for v in origin)
        if (y0 < 0 or x0 < 0 or y0 + arr.shape[0] > shape[0] or x0 + arr.shape[1] > shape[1]
                or shape[2] is not None and arr.size and arr.shape[2] != shape[2]):
            raise ValueError(f"frame {k}: a window of shape {arr.shape} at {(y0, x0)} does not "
                             f"fit the tile of shape {shape}")
    elif shape is not None and (arr.shape[:2] != tuple(shape[:2]) or shape[2] is not None
                                and arr.shape[2] != shape[2]):
        raise ValueError(f"frame {k} has shape {arr.shape}, expected {shape} like the first "
                         "frame; every frame must be reprojected onto the same tile")
    else:
        y0 = x0 = 0
    if pw is not None:
        pw = np.asarray(pw, dtype=np.float32)
        if pw.shape != arr.shape[:2]:
            raise ValueError(f"pixel weight of frame {k} has shape {pw.shape}, expected "
                             f"{arr.shape[:2]}")
        with np.errstate(invalid="ignore"):
            bad = ~(pw > 0)
        if bad.any():
            arr = np.where(bad[..., np.newaxis], np.float32(np.nan), arr)
    return arr, pw, (y0, x0)


def _nbytes(piece):
    """Bytes held by a piece ``(data, weight or None, origin)`` (0 for None)."""
    return 0 if piece is None else piece[0].nbytes + (0 if piece[1] is None else piece[1].nbytes)


class _Reader:
    """The pieces of the frames on the bands of a tile: read, kept within a budget, counted.

    A piece is a frame's window restricted to one band of rows: ``(data, weight or None,
    (y0, x0) in the tile)``.  ``band_reader`` callbacks are asked for the pieces of a frame
    on a list of bands (``get_frame(k, bands=[(r0, r1), ...])``, one piece per band);
    others return the whole window, cut here.  Pieces are kept while ``budget`` bytes
    allow, and the last piece read is kept in any case (it is in memory anyway).
    """

    def __init__(self, get_frame, shape, *, band_reader, budget):
        self.get_frame, self.shape, self.bands = get_frame, shape, []
        self.band_reader, self.budget = band_reader, budget
        self.cache, self.cache_bytes, self.last = {}, 0, None
        self.reads, self.streamed = {}, False

    def first(self, k):
        """Read frame ``k`` to learn the tile's shape and channels; its window is kept."""
        self.reads[k] = 1
        self.last = (k, _piece(self.get_frame(k), k, self.shape))
        return self.last[1][0].shape

    def _cut(self, k, js, window):
        arr, pw, (y0, x0) = window
        pieces = {}
        for j in js:
            r0, r1 = self.bands[j]
            a, b = max(r0, y0), min(r1, y0 + arr.shape[0])
            pieces[j] = None if a >= b or arr.size == 0 else (
                arr[a - y0:b - y0], None if pw is None else pw[a - y0:b - y0], (a, x0))
        return pieces

    def _read(self, k, js):
        if self.last is not None and self.last[0] == k and not self.band_reader:
            # the window read by first(): kept for every pass, like the old behaviour
            window, self.last = self.last[1], None
            pieces = self._cut(k, range(len(self.bands)), window)
            for j, piece in pieces.items():
                self.cache[(k, j)] = piece
                self.cache_bytes += _nbytes(piece)
            return {j: pieces[j] for j in js}
        self.reads[k] = self.reads.get(k, 0) + 1
        if not self.band_reader:
            return self._cut(k, js, _piece(self.get_frame(k), k, self.shape))
        got = self.get_frame(k, bands=[self.bands[j] for j in js])
        if len(got) != len(js):
            raise ValueError(f"get_frame({k}, bands=...) returned {len(got)} pieces for "
                             f"{len(js)} bands")
        pieces = {}
        for j, g in zip(js, got):
            piece = _piece(g, k, self.shape)
            pieces[j] = piece if piece[0].size else None
        return pieces

    def pieces(self, k, js):
        """The pieces of frame ``k`` on the bands ``js`` (band order), read if not kept."""
        held = self.last  # the last piece read (replaced below as others are read)
        missing = [j for j in js if (k, j) not in self.cache
                   and (held is None or held[0] != (k, j))]
        got = self._read(k, missing) if missing else {}
        for j in js:
            if (k, j) in self.cache:
                piece = self.cache[(k, j)]
            elif held is not None and held[0] == (k, j):
                piece = held[1]
            else:
                piece = got.pop(j)
                nbytes = _nbytes(piece)
                if self.cache_bytes + nbytes <= self.budget:
                    self.cache[(k, j)] = piece  # None: the frame misses the band
                    self.cache_bytes += nbytes
                else:
                    self.last = ((k, j), piece)
                    self.streamed = True
            if piece is not None:
                yield j, piece

    @property
    def last_key(self):
        return None if self.last is None else self.last[0]

    def drop(self, js):
        """Forget the pieces of the bands ``js`` (their group is done)."""
        for key in [key for key in self.cache if key[1] in js]:
            self.cache_bytes -= _nbytes(self.cache.pop(key))
        if isinstance(self.last_key, tuple):
            self.last = None


class _Group:
    """Consecutive bands ``js`` of a tile stacked together, and the frames that touch them."""

    def __init__(self, reader, frames, js, wts):
        self.reader, self.frames, self.js, self.wts = reader, frames, js, wts
        self.g0 = reader.bands[js[0]][0]
        self.shape = (reader.bands[js[-1]][1] - self.g0,) + tuple(reader.shape[1:])

    def feed(self, visit, js=None):
        """Call ``visit(k, x, win, pw)`` for every piece on the bands ``js`` (default all of
        the group's; ``win`` = (rows, columns) of the group's state)."""
        js = self.js if js is None else js
        for k, ks in self.frames:
            for _, (x, pw, (y0, x0)) in self.reader.pieces(k, [j for j in js if j in ks]):
                if x.size:
                    win = (slice(y0 - self.g0, y0 - self.g0 + x.shape[0]),
                           slice(x0, x0 + x.shape[1]))
                    visit(k, x, win, pw)

    def weight(self, k, pw):
        """A piece's weights: the frame's number, or times its per-pixel weights (h, w)."""
        wk = self.wts[k]
        return wk if pw is None else pw * np.float32(wk)

    def stack(self, settings, combine, cube_budget):
        """``(stacked, weight sum, rejected values, passes)`` of the group."""
        lo = hi = None
        passes = valid = 0
        if settings.clips:
            m = Moments(self.shape, settings.track, max_count=len(self.frames))
            self.feed(lambda k, x, win, pw: m.add(x, win))
            lo, hi = robust_bounds(m, settings)
            valued, valid = m.n > 0, int(m.n.sum(dtype=np.int64))
            del m
            passes += 1
        if combine == "median" or settings.method == "median":
            out, wsum, rejected = self.median(lo, hi, cube_budget)
            return out, wsum, rejected, passes + 1
        for rnd in range(max(1, settings.iterations) if settings.clips else 1):
            more = settings.clips and rnd < settings.iterations - 1
            sums = ClippedSums(self.shape, lo, hi, moments=more, plain=False)
            self.feed(lambda k, x, win, pw, sums=sums: sums.add(x, win, self.weight(k, pw)))
            passes += 1
            if more:
                lo, hi = sums.next_bounds(settings)
        out, wsum = sums.result()
        if not settings.clips:
            return out, wsum, 0, passes
        used = sums.used
        del sums, lo, hi
        lost = valued.reshape(self.shape) & ~(wsum > 0)  # every value rejected
        if lost.any():
            passes += self.plain_mean(lost, out, wsum)
        return out, wsum, valid - used, passes

    def plain_mean(self, lost, out, wsum):
        """Put the plain weighted mean (and weight sum) of every value into ``out`` and
        ``wsum`` where ``lost``: a pass over the bands that hold such pixels.  Returns 1."""
        rows = np.flatnonzero(lost.any(axis=(1, 2))) + self.g0
        js = [j for j in self.js if self.reader.bands[j][0] <= rows[-1]
              and self.reader.bands[j][1] > rows[0]]
        part = _Group(self.reader, [(k, ks) for k, ks in self.frames if ks & set(js)], js,
                      self.wts)
        mean, msum, _, _ = part.stack(ClipSettings("mean"), "mean", 0)
        sl = slice(part.g0 - self.g0, part.g0 - self.g0 + part.shape[0])
        np.copyto(out[sl], mean, where=lost[sl])
        np.copyto(wsum[sl], msum, where=lost[sl])
        return 1

    def median(self, lo, hi, budget):
        """Median of the (kept) values, a few rows at a time: ``(stacked, weight sum,
        rejected)``.  Every value of those rows is held at once (``budget`` bytes decide how
        many rows)."""
        n = max(1, len(self.frames))
        h, w, C = self.shape
        rows = int(max(1, min(h, budget // max(1, n * w * C * 16))))
        out = np.full(self.shape, np.nan, np.float32)
        wsum = np.zeros(self.shape, np.float64)
        rejected = 0
        if lo is not None:
            lo, hi = lo.reshape(self.shape), hi.reshape(self.shape)
        for r0 in range(0, h, rows):
            cube = _Cube(self, r0, min(h, r0 + rows), n)
            self.feed(cube.put, [j for j in self.js
                                 if self.reader.bands[j][0] < self.g0 + cube.r1
                                 and self.reader.bands[j][1] > self.g0 + r0])
            valid = cube.w > 0
            keep = valid
            if lo is not None:
                with np.errstate(invalid="ignore"):
                    keep = valid & (cube.x >= lo[r0:cube.r1]) & (cube.x <= hi[r0:cube.r1])
                none = ~keep.any(axis=0) & valid.any(axis=0)  # never reject every value
                keep = np.where(none[np.newaxis], valid, keep)
                rejected += int(np.count_nonzero(valid) - np.count_nonzero(keep))
            out[r0:cube.r1] = masked_median(cube.x, keep)
            wsum[r0:cube.r1] = (cube.w * keep).sum(axis=0, dtype=np.float64)
        return out, wsum, rejected


class _Cube:
    """The values and weights of every frame on the rows ``r0 .. r1 - 1`` of a group."""

    def __init__(self, group, r0, r1, n):
        self.group, self.r0, self.r1, self.slot = group, r0, r1, {}
        shape = (n, r1 - r0) + tuple(group.shape[1:])
        self.x = np.full(shape, np.nan, np.float32)
        self.w = np.zeros(shape, np.float32)

    def put(self, k, x, win, pw):
        i = self.slot.setdefault(k, len(self.slot))
        a, b = max(win[0].start, self.r0), min(win[0].stop, self.r1)
        if a < b:
            part = slice(a - win[0].start, b - win[0].start)
            rows = slice(a - self.r0, b - self.r0)
            self.x[i, rows, win[1]] = x[part]
            wt = self.group.weight(k, None if pw is None else pw[part])
            wt = wt if np.ndim(wt) == 0 else wt[..., np.newaxis]
            self.w[i, rows, win[1]] = np.where(np.isnan(x[part]), 0.0, wt)


def _group_rows(settings, combine, shape, band_rows, budget):
    """Bands stacked at a time (as many as their accumulators fit ``budget``, at least
    one) and the accumulator bytes of one band."""
    h, w, C = shape
    per = STATE_BYTES["sums_moments" if settings.iterations > 1 else "sums"]
    if settings.clips:  # the first pass, with the bounds it leaves
        per = max(per, STATE_BYTES["moments"] + STATE_BYTES["track"] * settings.track + 8)
    band_bytes = per * w * C * band_rows
    return max(1, int(budget // max(1, band_bytes))), band_bytes


#: What reading a frame once more costs, in bytes of pieces made again: the call and its
#: crop decoded again (~2 ms for a 1080 x 1920 frame, against ~4 ns a byte of pieces read,
#: reprojected and corrected).  It weighs, when the pieces of a tile do not all stay in
#: memory, reading each frame once per smaller group of bands against reading some again.
READ_COST_BYTES = 2 ** 19


def _fewer_rereads(most, sizes, n_bands, *, budget, band_bytes, passes):
    """Bands stacked at a time: the ``most`` that the accumulators allow, or fewer when the
    pieces of smaller groups stay in memory between the ``passes`` and that saves more
    than the further reads of the frames that span several groups cost.

    ``sizes``: per frame (in their order), ``{band: bytes of its piece}``.  The reader
    keeps the pieces in the frames' order while the budget left by the accumulators
    allows; the others are read again in each later pass.  The pixels are the same
    whatever the choice.
    """
    def cost(per):
        total = 0
        for j0 in range(0, n_bands, per):
            js = range(j0, min(n_bands, j0 + per))
            room, kept, reads, again = budget - len(js) * band_bytes, 0, 0, 0
            for sz in sizes:
                held = [sz[j] for j in js if j in sz]
                streamed = 0
                for b in held:
                    if kept + b <= room:
                        kept += b
                    else:
                        streamed += b
                reads += 1 if held else 0
                again += streamed
                reads += (passes - 1) if streamed else 0
            total += reads * READ_COST_BYTES + again * (passes - 1)
        return total

    if passes < 2:
        return most
    return min(range(most, 0, -1), key=cost)  # the first (most bands) of equal costs


def stack_frames(get_frame, n_frames, *, weights=None, method="kappa_sigma", kappa_low=3.0,
                 kappa_high=3.0, iterations=1, winsor_limits=(0.05, 0.05), combine="mean",
                 memory_budget_bytes=512 * 2 ** 20, shape=None, return_info=False,
                 noise=None, windows=None, band_rows=BAND_ROWS, band_reader=False):
    """Stack frames reprojected onto one tile, with weights and rejection.

    Parameters
    ----------
    get_frame : callable
        ``get_frame(k)`` for ``k in range(n_frames)`` returns ``(data,
        pixel_weight)``: ``data`` ``(h, w)`` or ``(h, w, C)`` float with NaN
        where invalid, ``pixel_weight`` ``(h, w)`` or ``None`` (all ones).
        Or ``(data, pixel_weight, (y0, x0))``: only the window of the tile
        starting at row ``y0``, column ``x0`` (the rest of the tile is not
        covered by that frame); ``shape`` is then required.  It is called once per
        frame and pass unless the frames fit the budget (see the module notes), and
        must return the same values every time.  With ``band_reader=True`` it is called
        as ``get_frame(k, bands=[(r0, r1), ...])`` and returns one such window per band,
        restricted to the tile rows ``r0 .. r1 - 1`` (empty arrays where the frame misses
        a band): the caller then reads and reprojects only what a band needs.
    n_frames : int
    weights : sequence of float, optional
        Scalar weight per frame (exposure time, inverse noise variance);
        default 1.  Frames with weight 0 are skipped.
    method : {"kappa_sigma", "winsorized", "mean", "median"}
        See the module notes.
    kappa_low, kappa_high : float
        Rejection thresholds below / above the centre, in sigma.
    iterations : int
        Clipping rounds (each a pass over the frames).
    winsor_limits : tuple of float
        Fractions winsorized at the low and high end (``"winsorized"``).
    combine : {"mean", "median"}
        How the kept values are combined.
    memory_budget_bytes : int
        Memory for the accumulators of the bands stacked at a time (at least one band)
        and for the frames kept between passes; the result does not depend on it.
    shape : tuple of int, optional
        ``(h, w)`` or ``(h, w, C)`` of the tile; needed when frames come as
        windows (default: the shape of the first frame), and ``(h, w, C)`` with
        ``band_reader``.
    return_info : bool
        Also return a dict (method, streaming, rejected values, bands, reads).
    noise : array_like, shape (n_frames,) or (n_frames, C), optional
        Noise sigma of each frame's values: the clipping scale is never below
        :data:`NOISE_FLOOR` times its median over the frames (per channel).
    windows : sequence, optional
        Per frame, its window in the tile as ``(y0, y1, x0, x1)`` (or a BBox), or None
        (anywhere): a frame is read only for the bands it covers.
    band_rows : int
        Rows of a band.
    band_reader : bool
        ``get_frame`` takes ``bands`` (see ``get_frame``).

    Returns
    -------
    stacked : numpy.ndarray, shape (h, w, C), float32
        NaN where no frame has valid data.
    coverage : numpy.ndarray, shape (h, w), float32
        Sum of the weights of the values used (mean over channels).
    info : dict
        Only with ``return_info=True``: ``streaming`` (not every frame was held in
        memory), ``rejected_values``, ``bands``, ``groups`` (of bands stacked at a time),
        ``passes`` and ``reads`` (calls of ``get_frame``).

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
    tile = None if shape is None else tuple(int(v) for v in shape)
    if tile is not None and len(tile) not in (2, 3):
        raise ValueError(f"shape must be (h, w) or (h, w, C), got {shape!r}")
    if band_reader and (tile is None or len(tile) != 3):
        raise ValueError("band_reader needs the tile shape with its channels: shape=(h, w, C)")
    active = [k for k in range(n_frames) if wts[k] > 0]
    budget = max(0, int(memory_budget_bytes))
    reader = _Reader(get_frame, None if tile is None else tile[:2] + (tile[2:] or (None,)),
                     band_reader=band_reader, budget=budget)
    if tile is None or len(tile) == 2:  # the first frame gives the channels (and shape)
        first_shape = reader.first(active[0])
        tile = tuple((tile or first_shape)[:2]) + (first_shape[2],)
    h, w, C = reader.shape = tile
    band_rows = max(1, int(band_rows))
    reader.bands = [(r0, min(h, r0 + band_rows)) for r0 in range(0, h, band_rows)]
    floor = 0.0
    if noise is not None:
        nz = np.asarray(noise, dtype=np.float64).reshape(n_frames, -1)[active]
        floor = np.where(np.isfinite(nz).any(axis=0),
                         NOISE_FLOOR * np.nanmedian(np.where(nz > 0, nz, np.nan), axis=0), 0.0)
        floor = np.nan_to_num(floor)
    settings = ClipSettings(method, float(kappa_low), float(kappa_high), int(iterations), lim,
                            floor if np.ndim(floor) == 0 or floor.size in (1, C) else 0.0)
    spans, sizes = [], []
    for k in range(n_frames):
        win = None if windows is None else windows[k]
        if win is not None and not isinstance(win, tuple):
            win = (win.y0, win.y1, win.x0, win.x1)
        win = (0, h, 0, w) if win is None else win
        sizes.append({j: (min(r1, win[1]) - max(r0, win[0])) * (win[3] - win[2]) * C * 4
                      for j, (r0, r1) in enumerate(reader.bands)
                      if win[0] < r1 and win[1] > r0 and win[2] < win[3]})
        spans.append(set(sizes[-1]))
    per_group, band_bytes = _group_rows(settings, combine, tile, band_rows, budget)
    if band_reader and combine == "mean" and settings.method != "median":
        per_group = _fewer_rereads(per_group, [sizes[k] for k in active], len(reader.bands),
                                   budget=budget, band_bytes=band_bytes,
                                   passes=1 + settings.iterations if settings.clips else 1)
    out = np.full(tile, np.nan, np.float32)
    coverage = np.zeros((h, w), np.float32)
    rejected, passes = 0, 0
    groups = [list(range(j, min(len(reader.bands), j + per_group)))
              for j in range(0, len(reader.bands), per_group)]
    reader.budget = max(0, budget - len(groups[0]) * band_bytes)  # the rest keeps frames
    for js in groups:
        frames = [(k, spans[k]) for k in active if spans[k] & set(js)]
        g0, g1 = reader.bands[js[0]][0], reader.bands[js[-1]][1]
        if frames:
            res, wsum, rej, passes = _Group(reader, frames, js, wts).stack(settings, combine,
                                                                           reader.budget)
            out[g0:g1] = res
            coverage[g0:g1] = wsum.mean(axis=2)
            rejected += rej
        reader.drop(js)
    grid_debug(logger, "stacked %d frames (%s, %d band(s) in %d group(s), %d reads)",
               len(active), method, len(reader.bands), len(groups), sum(reader.reads.values()))
    if not return_info:
        return out, coverage
    info = {"method": method, "combine": combine, "n_frames": len(active),
            "streaming": reader.streamed or any(v > 1 for v in reader.reads.values()),
            "rejected_values": int(rejected), "bands": len(reader.bands),
            "groups": len(groups), "passes": passes, "reads": sum(reader.reads.values())}
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
