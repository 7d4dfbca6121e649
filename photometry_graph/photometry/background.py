"""Robust tile backgrounds and guarded SWarp-like background matching.

After the global gain/offset solve the tiles agree on their overlaps.  The
classic background-matching step (SWarp and others) then measures a robust
background per tile, takes the median over tiles as the target and shifts
every tile towards it.  On its own that step is harmful when a tile holds
extended emission (a nebula raises its median: the shift pulls the tile down
and re-creates the steps the solve removed).  :func:`match_backgrounds`
therefore *measures* the effect first: the median (and mean) absolute
difference of the corrected tiles on their overlaps, with and without the
shifts.  If the shifts would increase it beyond a small tolerance, they are
scaled down to the largest fraction that does not (``"reduced"``) or dropped
(``"skipped"``), said by a ``[GRID]`` INFO line (the guard doing its job is an
expected outcome, not a fault).
"""

from dataclasses import dataclass, field
import math

import numpy as np

from .._log import get_logger, grid_info, grid_warning
from .._stats import MAD_TO_SIGMA, median
from .._threads import check_workers, thread_map
from ..core.correction import Correction, apply_correction
from ..core.masks import as_channels_last
from ..core.tiles import common_channels

__all__ = ["estimate_tile_background", "overlap_differences", "match_backgrounds",
           "BackgroundMatchResult"]

logger = get_logger(__name__)

#: Default number of pixels sampled per tile for its background.
TILE_SAMPLE_PIXELS = 25_000
#: Default number of pixels sampled per overlap for the guard's differences.
OVERLAP_SAMPLE_PIXELS = 20_000


def estimate_tile_background(tile_data, tile_mask, *, kappa=3.0, iterations=5,
                             max_pixels=1_000_000):
    """Per-channel sigma-clipped median of the valid pixels of a tile.

    Parameters
    ----------
    tile_data : array_like, shape (H, W) or (H, W, C)
        Pixels; not modified.
    tile_mask : array_like of bool, shape (H, W)
        Valid pixels (``True``).  Non-finite values are ignored as well.
    kappa : float
        Clipping threshold in robust sigmas (1.4826 MAD) around the median.
    iterations : int
        Maximum clipping iterations (stops earlier when nothing changes).
    max_pixels : int or None
        Use a regular (deterministic) subsample of at most this many valid
        pixels (a strided grid over the tile, then evenly spaced valid pixels
        of it); ``None`` uses all of them.  A median of ``n`` samples is good
        to about ``1.25 sigma / sqrt(n)``.

    Returns
    -------
    numpy.ndarray, shape (C,)
        Background per channel (float64).

    Raises
    ------
    ValueError
        When the mask shape does not match, ``kappa`` or ``iterations`` are
        not positive, or no valid finite pixel is left in a channel.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((20, 20), 5.0); img[3, 3] = 1000.0
    >>> estimate_tile_background(img, np.ones((20, 20), bool)).tolist()
    [5.0]
    """
    arr = as_channels_last(tile_data)
    mask = np.asarray(tile_mask, dtype=bool)
    if mask.shape != arr.shape[:2]:
        raise ValueError(f"tile_mask shape {mask.shape} does not match the data shape "
                         f"{arr.shape[:2]}")
    if not kappa > 0:
        raise ValueError(f"kappa must be positive, got {kappa!r}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    n_valid = int(mask.sum())
    if n_valid == 0:
        raise ValueError("the tile has no valid pixel: cannot estimate its background")
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels!r}")
    if max_pixels is not None and n_valid > max_pixels:
        step = int(math.floor(math.sqrt(n_valid / max_pixels)))
        values = arr[::step, ::step][mask[::step, ::step]] if step > 1 else arr[mask]
        if values.shape[0] > max_pixels:
            values = values[np.linspace(0, values.shape[0] - 1, int(max_pixels))
                            .round().astype(np.int64)]
    else:
        values = arr[mask]
    out = np.empty(arr.shape[2])
    for c in range(arr.shape[2]):
        v = np.asarray(values[:, c], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ValueError(f"channel {c} of the tile has no valid finite pixel: cannot "
                             "estimate its background")
        keep = np.ones(v.size, dtype=bool)
        med = median(v)
        for _ in range(int(iterations)):
            sigma = MAD_TO_SIGMA * median(np.abs(v[keep] - med))
            if sigma <= 0:
                break
            new = np.abs(v - med) <= kappa * sigma
            if not new.any() or np.array_equal(new, keep):
                break
            keep = new
            med = median(v[keep])
        out[c] = med
    return out


def _tiles_by_id(tiles):
    if isinstance(tiles, dict):
        return dict(tiles)
    out = {}
    for t in tiles:
        if t.tile_id in out:
            raise ValueError(f"duplicate tile_id {t.tile_id!r}; tile ids must be unique")
        out[t.tile_id] = t
    return out


def _overlap_pairs(tiles_by_id, graph):
    """``[(i, j, bbox)]`` from the graph's edges, or from the tiles' boxes."""
    if graph is not None:
        pairs = []
        for u, v, data in graph.edges(data=True):
            if u not in tiles_by_id or v not in tiles_by_id:
                continue
            bbox = data.get("bbox") or tiles_by_id[u].bbox.intersection(tiles_by_id[v].bbox)
            if not bbox.is_empty:
                pairs.append((u, v, bbox))
        return pairs
    ids = list(tiles_by_id)
    boxes = np.array([[tiles_by_id[t].bbox.y0, tiles_by_id[t].bbox.y1,
                       tiles_by_id[t].bbox.x0, tiles_by_id[t].bbox.x1] for t in ids])
    pairs = []
    for a in range(len(ids)):
        rest = boxes[a + 1:]
        hit = ((np.maximum(boxes[a, 0], rest[:, 0]) < np.minimum(boxes[a, 1], rest[:, 1]))
               & (np.maximum(boxes[a, 2], rest[:, 2]) < np.minimum(boxes[a, 3], rest[:, 3])))
        for b in np.nonzero(hit)[0] + a + 1:
            i, j = ids[a], ids[b]
            pairs.append((i, j, tiles_by_id[i].bbox.intersection(tiles_by_id[j].bbox)))
    return pairs


def _sample_step(area, max_pixels):
    """Stride of a regular grid keeping at most about ``max_pixels`` of ``area`` pixels."""
    if max_pixels is None or area <= max_pixels:
        return 1
    return int(math.ceil(math.sqrt(area / float(max_pixels))))


def _corrected_sample(tile, region, correction, step):
    """Corrected values and mask of ``tile`` on the grid ``region[::step, ::step]``.

    The plane term of the correction is evaluated at the global coordinates of
    the sampled pixels, so ``step=1`` equals :func:`apply_correction` on the region.
    """
    sl = region.slices_in(tile.bbox)
    sl = (slice(sl[0].start, sl[0].stop, step), slice(sl[1].start, sl[1].stop, step))
    data = tile.get_data()[sl]
    mask = tile.mask[sl]
    if step == 1:
        return apply_correction(data, region, correction), mask
    out = np.array(data, dtype=np.float32)
    if correction is None:
        return out, mask
    if correction.n_channels != out.shape[2]:
        raise ValueError(f"correction has {correction.n_channels} channels, data has "
                         f"{out.shape[2]}")
    out *= correction.gain.astype(np.float32)
    out += correction.offset.astype(np.float32)
    if np.any(correction.slope):
        x = (np.arange(region.x0, region.x1, step) - correction.origin[0]).astype(np.float32)
        y = (np.arange(region.y0, region.y1, step) - correction.origin[1]).astype(np.float32)
        for c in range(out.shape[2]):
            sx, sy = correction.slope[c]
            out[:, :, c] += (sx * x)[np.newaxis, :] + (sy * y)[:, np.newaxis]
    return out, mask


def _pair_difference(ti, tj, bbox, ci, cj, min_pixels, max_pixels):
    """Per-channel median of ``corrected_i - corrected_j`` on a sample of an overlap."""
    step = _sample_step(bbox.area, max_pixels)
    di, mi = _corrected_sample(ti, bbox, ci, step)
    dj, mj = _corrected_sample(tj, bbox, cj, step)
    joint = mi & mj
    if np.count_nonzero(joint) < min_pixels:
        return None
    if di.shape[2] != dj.shape[2]:
        raise ValueError(f"tiles {ti.tile_id!r} and {tj.tile_id!r} have different channel "
                         "counts")
    d = (di[joint] - dj[joint]).astype(np.float64)
    row = np.full(d.shape[1], np.nan)
    for c in range(d.shape[1]):
        v = d[:, c][np.isfinite(d[:, c])]
        if v.size >= min_pixels:
            row[c] = median(v)
    return row


def _corrected_value(value, r, correction, channel):
    """A correction applied to one value at global position ``r = (x, y)``."""
    if correction is None:
        return value
    c = channel
    return (correction.gain[c] * value + correction.offset[c]
            + correction.slope[c, 0] * (r[0] - correction.origin[0])
            + correction.slope[c, 1] * (r[1] - correction.origin[1]))


def _fit_difference(graph, i, j, ci, cj, min_pixels, n_channels):
    """Mean of ``corrected_i - corrected_j`` over the pixels used by the edge's fits.

    The fits carry the (clipped) means of both tiles over the pixels they used
    and the centroid of those pixels; a correction is linear in the value and
    in the position, so the mean corrected difference follows without reading
    a pixel.  ``None`` when the edge has no usable fit for every channel.
    """
    try:
        fits = graph.edges[i, j].get("fits") or []
    except (KeyError, AttributeError):
        return None
    if n_channels is not None and len(fits) != n_channels:
        return None
    row = np.full(len(fits), np.nan)
    for f in fits:
        moments = (f.x_mean, f.y_mean, f.centroid[0], f.centroid[1])
        if (f.status == "failed" or f.n_used < min_pixels or f.src not in (i, j)
                or not all(math.isfinite(m) for m in moments) or not 0 <= f.channel < len(fits)):
            return None
        c_src, c_dst = (ci, cj) if f.src == i else (cj, ci)
        d = (_corrected_value(f.x_mean, f.centroid, c_src, f.channel)
             - _corrected_value(f.y_mean, f.centroid, c_dst, f.channel))
        row[f.channel] = d if f.src == i else -d
    return row if row.size and np.all(np.isfinite(row)) else None


def overlap_differences(tiles, corrections=None, graph=None, *, min_pixels=16,
                        max_pixels=OVERLAP_SAMPLE_PIXELS, use_fits=False, workers=None):
    """Median difference of the corrected tiles on every overlap.

    Parameters
    ----------
    tiles : list of TilePhotometryInfo or dict
    corrections : dict, optional
        ``{tile_id: Correction}``; missing tiles are left uncorrected.
    graph : networkx.Graph, optional
        Overlap graph (its edges and their ``bbox`` are used); computed from
        the tiles' boxes when omitted.
    min_pixels : int
        Overlaps with fewer jointly valid finite (sampled) pixels are skipped.
    max_pixels : int or None
        Larger overlaps are measured on a regular grid of every ``k``-th row
        and column holding at most about this many pixels (a median of
        20 000 differences is good to ~0.01 sigma); ``None`` reads every pixel.
    use_fits : bool
        For edges of ``graph`` carrying pairwise fits
        (:func:`~photometry_graph.photometry.overlap.fit_overlap_edges`), use the mean
        corrected difference over the pixels each fit used (clipped of
        outliers), computed from the fits' means and centroids without
        reading a pixel; other edges are measured on their pixels.
    workers : int, optional
        Threads (default ``min(2, os.cpu_count())``); the result does not
        depend on it.

    Returns
    -------
    pairs : list of tuple
        ``(i, j)`` of the measured overlaps.
    diffs : numpy.ndarray, shape (n_pairs, C)
        Median (or fit mean) over jointly valid pixels of
        ``corrected_i - corrected_j`` (NaN for a channel without enough
        finite pixels).
    """
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels!r}")
    tiles_by_id = _tiles_by_id(tiles)
    corrections = corrections or {}
    todo = _overlap_pairs(tiles_by_id, graph)
    n_channels = None
    if use_fits and graph is not None and todo:  # an unreadable tile: measured below
        n_channels = common_channels([tiles_by_id[todo[0][0]]], default=None)

    def measure(p):
        i, j, bbox = p
        ci, cj = corrections.get(i), corrections.get(j)
        if use_fits and graph is not None:
            row = _fit_difference(graph, i, j, ci, cj, min_pixels, n_channels)
            if row is not None:
                return row
        return _pair_difference(tiles_by_id[i], tiles_by_id[j], bbox, ci, cj, min_pixels,
                                max_pixels)

    rows = thread_map(measure, todo, workers)
    pairs = [(i, j) for (i, j, _), row in zip(todo, rows) if row is not None]
    diffs = [row for row in rows if row is not None]
    C = diffs[0].shape[0] if diffs else 0
    return pairs, (np.array(diffs) if diffs else np.zeros((0, C)))


@dataclass
class BackgroundMatchResult:
    """Outcome of :func:`match_backgrounds`.

    Attributes
    ----------
    corrections : dict
        ``{tile_id: Correction}``: new objects with the applied shift added
        to the offset (the inputs are not modified).
    shifts : dict
        Applied shift per tile, ``(C,)`` (``fraction * proposed``).
    proposed_shifts : dict
        Full shift towards the target per tile (what a naive matching applies).
    backgrounds : dict
        Sigma-clipped background of each corrected tile, ``(C,)``.
    target : numpy.ndarray, shape (C,)
        Median of the backgrounds over tiles.
    fraction : float
        Applied fraction of the proposed shifts, in [0, 1].
    decision : str
        ``"applied"``, ``"reduced"``, ``"skipped"`` or ``"failed"`` (nothing
        could be measured; corrections unchanged).
    residual_before, residual_after, residual_naive : float
        Median absolute overlap difference of the corrected tiles without
        shifts, with the applied shifts, with the full shifts (NaN when no
        overlap could be measured).
    mean_before, mean_after, mean_naive : float
        Same with the mean instead of the median.
    n_overlaps : int
        Overlaps measured.
    verified : bool
        False when no overlap could be measured (the guard could not run).
    message : str
    """

    corrections: dict
    shifts: dict
    proposed_shifts: dict
    backgrounds: dict
    target: np.ndarray
    fraction: float
    decision: str
    residual_before: float
    residual_after: float
    residual_naive: float
    mean_before: float
    mean_after: float
    mean_naive: float
    n_overlaps: int
    verified: bool
    message: str
    info: dict = field(default_factory=dict)

    def to_dict(self):
        """JSON-friendly summary (NaN becomes ``None``)."""
        def f(v):
            v = float(v)
            return v if math.isfinite(v) else None

        def arr(a):
            return [f(v) for v in np.asarray(a, float).ravel()]

        return {
            "decision": self.decision, "fraction": f(self.fraction),
            "verified": bool(self.verified), "message": self.message,
            "target": arr(self.target),
            "residual_before": f(self.residual_before),
            "residual_after": f(self.residual_after),
            "residual_naive": f(self.residual_naive),
            "mean_before": f(self.mean_before), "mean_after": f(self.mean_after),
            "mean_naive": f(self.mean_naive), "n_overlaps": int(self.n_overlaps),
            "shifts": {str(k): arr(v) for k, v in self.shifts.items()},
            "proposed_shifts": {str(k): arr(v) for k, v in self.proposed_shifts.items()},
            "backgrounds": {str(k): arr(v) for k, v in self.backgrounds.items()},
        }


def _residual_stats(diffs, delta):
    v = np.abs(diffs + delta)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan
    return float(np.median(v)), float(np.mean(v))


def _shifted(correction, shift, n_channels):
    base = correction if correction is not None else Correction(
        np.ones(n_channels), np.zeros(n_channels), status="fallback")
    info = dict(base.info)
    info["background_shift"] = [float(v) for v in shift]
    return Correction(base.gain.copy(), base.offset + shift, slope=base.slope.copy(),
                      origin=tuple(base.origin), gain_err=base.gain_err.copy(),
                      offset_err=base.offset_err.copy(), status=base.status, info=info)


def _tile_background(tile, correction, kappa, iterations, max_pixels):
    """Background of one corrected tile, measured on a strided sample of it."""
    step = _sample_step(tile.bbox.area, max_pixels)
    corrected, mask = _corrected_sample(tile, tile.bbox, correction, step)
    return estimate_tile_background(corrected, mask, kappa=kappa, iterations=iterations,
                                    max_pixels=max_pixels), corrected.shape[2]


def match_backgrounds(tiles, corrections=None, graph=None, *, kappa=3.0, iterations=5,
                      guard=True, rtol=0.01, atol=0.0, steps=20, min_pixels=16,
                      max_pixels=TILE_SAMPLE_PIXELS, overlap_max_pixels=OVERLAP_SAMPLE_PIXELS,
                      use_fits=True, workers=None):
    """SWarp-like background matching of corrected tiles, guarded by the overlaps.

    1. Background of every *corrected* tile (:func:`estimate_tile_background`
       on its valid pixels).
    2. Target = median of the backgrounds over tiles (per channel); proposed
       shift of tile ``k`` = target - background_k.
    3. Guard: the median (as the design asks) and the mean (so that a few
       strongly worsened overlaps, e.g. around a nebula tile, cannot hide
       behind the median) absolute overlap difference of the corrected tiles
       are measured without shifts and with ``f`` times the shifts for ``f``
       in ``1, 1 - 1/steps, ..., 0``.  The largest ``f`` for which neither
       statistic exceeds its value without shifts by more than
       ``rtol * value + atol`` is applied.

    A constant shift moves every pixel of a tile alike, so the overlap
    medians with shifts follow exactly from one measurement without them.

    Parameters
    ----------
    tiles : list of TilePhotometryInfo or dict
        Tiles (data, mask, bbox); not modified.
    corrections : dict, optional
        ``{tile_id: Correction}`` from the solve; missing tiles are treated
        as identity.  Not modified.
    graph : networkx.Graph, optional
        Overlap graph whose edges (and ``bbox``) define the overlaps measured
        by the guard; computed from the tiles' boxes when omitted.
    kappa, iterations
        Passed to :func:`estimate_tile_background`.
    max_pixels : int or None
        Each tile's background is measured on a regular grid of every
        ``k``-th row and column holding at most about this many pixels (only
        those are read and corrected); ``None`` uses every pixel.
    overlap_max_pixels : int or None
        ``max_pixels`` of :func:`overlap_differences` for the guard.
    use_fits : bool
        The guard measures the overlaps whose edges in ``graph`` carry
        pairwise fits from those fits' means and centroids (the mean corrected
        difference over the pixels the fit used; no pixel is read), the
        others on their pixels (:func:`overlap_differences` ``use_fits``).
    workers : int, optional
        Threads measuring tiles and overlaps (default ``min(2, os.cpu_count())``);
        the result does not depend on it.
    guard : bool
        ``False`` applies the full shifts (the naive step).
    rtol, atol : float
        Tolerance of the guard.
    steps : int
        Number of fractions tried between 1 and 0.
    min_pixels : int
        Smallest number of jointly valid pixels for an overlap to be measured.

    Returns
    -------
    BackgroundMatchResult
        Never raises for data problems: tiles whose background cannot be
        measured keep a zero shift (with a ``[GRID]`` warning); when no tile
        can be measured the decision is ``"failed"`` and the corrections are
        returned unchanged (copied).

    Examples
    --------
    >>> import numpy as np
    >>> from photometry_graph.core.tiles import TilePhotometryInfo, BBox
    >>> a = TilePhotometryInfo(0, BBox(0, 8, 0, 8), data=np.full((8, 8), 10.0))
    >>> b = TilePhotometryInfo(1, BBox(0, 8, 6, 14), data=np.full((8, 8), 12.0))
    >>> res = match_backgrounds([a, b])
    >>> res.decision, res.residual_after
    ('applied', 0.0)
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if rtol < 0 or atol < 0:
        raise ValueError("rtol and atol must be non-negative")
    tiles_by_id = _tiles_by_id(tiles)
    if not tiles_by_id:
        raise ValueError("no tiles given: pass at least one TilePhotometryInfo")
    corrections = dict(corrections or {})

    workers = check_workers(workers)

    def measure(tid):
        try:
            return _tile_background(tiles_by_id[tid], corrections.get(tid), kappa, iterations,
                                    max_pixels)
        except (ValueError, OSError) as exc:
            return exc

    backgrounds = {}
    n_channels = None
    for tid, got in zip(tiles_by_id, thread_map(measure, list(tiles_by_id), workers)):
        if isinstance(got, Exception):
            grid_warning(logger, "Background: tile %s: background not measured (%s); "
                         "no shift", tid, got)
            continue
        backgrounds[tid], n_channels = got
    if not backgrounds:
        grid_warning(logger, "Background: no tile background could be measured; background "
                     "matching skipped")
        return BackgroundMatchResult(
            corrections={k: _shifted(v, 0.0, v.n_channels) for k, v in corrections.items()},
            shifts={}, proposed_shifts={}, backgrounds={}, target=np.zeros(0), fraction=0.0,
            decision="failed", residual_before=math.nan, residual_after=math.nan,
            residual_naive=math.nan, mean_before=math.nan, mean_after=math.nan,
            mean_naive=math.nan, n_overlaps=0, verified=False,
            message="no tile background could be measured")
    target = np.median(np.array(list(backgrounds.values())), axis=0)
    zero = np.zeros(n_channels)
    proposed = {tid: (target - backgrounds[tid]) if tid in backgrounds else zero.copy()
                for tid in tiles_by_id}

    pairs, diffs = overlap_differences(tiles_by_id, corrections, graph, min_pixels=min_pixels,
                                       max_pixels=overlap_max_pixels, use_fits=use_fits,
                                       workers=workers)
    if pairs:
        delta = np.array([proposed[i] - proposed[j] for i, j in pairs])
    else:
        delta = np.zeros((0, n_channels))
    med0, mean0 = _residual_stats(diffs, 0.0 * delta)
    med1, mean1 = _residual_stats(diffs, delta)
    verified = bool(np.isfinite(med0))
    fraction = 1.0
    if guard and verified:
        fraction = 0.0
        for k in range(int(steps), -1, -1):
            f = k / int(steps)
            med, mean = _residual_stats(diffs, f * delta)
            if med <= med0 * (1 + rtol) + atol and mean <= mean0 * (1 + rtol) + atol:
                fraction = f
                break
    med_f, mean_f = _residual_stats(diffs, fraction * delta) if verified else (math.nan,
                                                                                math.nan)
    if fraction >= 1.0:
        decision = "applied"
    elif fraction > 0.0:
        decision = "reduced"
    else:
        decision = "skipped"

    shifts = {tid: fraction * proposed[tid] for tid in tiles_by_id}
    new_corr = {}
    for tid, tile in tiles_by_id.items():
        c = corrections.get(tid)
        nch = c.n_channels if c is not None else n_channels
        new_corr[tid] = _shifted(c, shifts[tid] if fraction > 0 else np.zeros(nch), nch)

    if not verified:
        message = ("background shifts applied without verification: no overlap could be "
                   "measured" if guard else "background shifts applied (unguarded)")
        if guard:
            grid_warning(logger, "Background: %s", message)
        else:
            grid_info(logger, "Background: %s", message)
    elif decision == "applied":
        message = (f"background shifts applied: median |overlap residual| {med0:.4g} -> "
                   f"{med_f:.4g}, mean {mean0:.4g} -> {mean_f:.4g}")
        grid_info(logger, "Background: %s", message)
    else:
        message = (f"full background shifts would increase the overlap residuals (median "
                   f"{med0:.4g} -> {med1:.4g}, mean {mean0:.4g} -> {mean1:.4g}); "
                   + (f"reduced to {fraction:.2f} of the shifts (median {med_f:.4g}, mean "
                      f"{mean_f:.4g})" if decision == "reduced" else "shifts skipped"))
        # the guard doing its job (a tile full of nebula, a solve already flat): INFO
        grid_info(logger, "Background: %s", message)
    return BackgroundMatchResult(
        corrections=new_corr, shifts=shifts, proposed_shifts=proposed, backgrounds=backgrounds,
        target=target, fraction=float(fraction), decision=decision, residual_before=med0,
        residual_after=med_f, residual_naive=med1, mean_before=mean0, mean_after=mean_f,
        mean_naive=mean1, n_overlaps=len(pairs), verified=verified, message=message,
        info={"rtol": rtol, "atol": atol, "steps": int(steps), "guard": bool(guard)})
