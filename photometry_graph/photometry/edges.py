"""The edges of the global solve as arrays: the edge table, one channel's problem, residuals.

:func:`collect_edges` turns the ``fits`` of every edge of the overlap graph into
an :class:`EdgeTable` in one pass: per edge the ``(src, dst)`` node indices,
and per edge and channel the fit status, the gain ratio ``a`` and the sigma of
``log a``, the moments of both nodes on the overlap (``x_mean``/``y_mean``,
their sigmas, their slopes) at the overlap centroid, plus the overlap box.  A
fit made the other way round (``src`` and ``dst`` swapped) is turned around
here, so that every row reads ``dst ≈ a * src + b``.

The per-component, per-channel solve (:mod:`.gains`, :mod:`.offsets`,
:mod:`.joint`) reads a :class:`ChannelProblem`: the rows of the table that take
part in it, sliced once, with local node indices, the reference and the node
geometry.  :func:`edge_residuals` measures how well corrections make the two
sides of every edge agree (before and after the solve).
"""

from dataclasses import dataclass
import math

import numpy as np

__all__ = ["STATUS_FAILED", "STATUS_OFFSET_ONLY", "STATUS_OK", "EdgeTable", "ChannelProblem",
           "collect_edges", "edge_pixels", "clean_sigma", "edge_residuals",
           "summarise_residuals"]

#: Fit status codes of the edge table (``status`` of a pairwise fit).
STATUS_FAILED, STATUS_OFFSET_ONLY, STATUS_OK = 0, 1, 2
_STATUS_CODES = {"failed": STATUS_FAILED, "offset_only": STATUS_OFFSET_ONLY, "ok": STATUS_OK}
_STATUS_NAMES = ["failed", "offset_only", "ok"]


@dataclass
class EdgeTable:
    """The overlap graph's edges and their pairwise fits as arrays (``m`` edges, ``C`` channels).

    Attributes
    ----------
    keys : list of tuple
        ``(src, dst)`` node ids of each edge.
    src, dst : numpy.ndarray of int, shape (m,)
        Node indices.
    status : numpy.ndarray of int8, shape (m, C)
        ``STATUS_FAILED``, ``STATUS_OFFSET_ONLY`` or ``STATUS_OK``.
    a, sig_loga : numpy.ndarray, shape (m, C)
        Gain ratio ``dst / src`` and the sigma of its logarithm (NaN unless ``"ok"``).
    xm, ym, sxm, sym : numpy.ndarray, shape (m, C)
        Moments of the src and dst nodes at the centroid and their sigmas.
    centroid : numpy.ndarray, shape (m, C, 2)
        ``(x, y)`` point of the moments (the overlap box centre when the fit has none).
    xs, ys : numpy.ndarray, shape (m, C, 2)
        Slopes ``(d/dx, d/dy)`` of the src and dst planes.
    extent : numpy.ndarray, shape (m, 2)
        ``(width, height)`` of the overlap box (1 without a box).
    corners : numpy.ndarray, shape (m, 4, 2)
        ``(x, y)`` corners of the overlap box (NaN without a box).
    pixels : numpy.ndarray, shape (m,)
        Jointly valid pixels (reference tie-break).
    n_missing : int
        Edges without any fits.
    """

    keys: list
    src: np.ndarray
    dst: np.ndarray
    status: np.ndarray
    a: np.ndarray
    sig_loga: np.ndarray
    xm: np.ndarray
    ym: np.ndarray
    sxm: np.ndarray
    sym: np.ndarray
    centroid: np.ndarray
    xs: np.ndarray
    ys: np.ndarray
    extent: np.ndarray
    corners: np.ndarray
    pixels: np.ndarray
    n_missing: int

    def channel_problem(self, channel, gain_rows, moment_rows, local, *, ref, reach, centres,
                        length, model):
        """The rows of one component and channel, sliced once (see :class:`ChannelProblem`).

        Parameters
        ----------
        channel : int
        gain_rows, moment_rows : numpy.ndarray of int
            Rows of the table with a usable gain ratio (``"ok"``), resp. usable moments.
        local : numpy.ndarray of int
            Local index (in the component) of every node of the graph.
        ref, reach, centres, length, model
            As in :class:`ChannelProblem`.

        Returns
        -------
        ChannelProblem
        """
        return ChannelProblem(
            channel=channel, n=len(reach), ref=ref, reach=reach, centres=centres,
            length=length, plane=model == "plane",
            gain_src=local[self.src[gain_rows]], gain_dst=local[self.dst[gain_rows]],
            log_a=np.log(self.a[gain_rows, channel]),
            sigma_log_a=clean_sigma(self.sig_loga[gain_rows, channel],
                                    np.ones(len(gain_rows), dtype=bool), 1e-3),
            src=local[self.src[moment_rows]], dst=local[self.dst[moment_rows]],
            x_mean=self.xm[moment_rows, channel], y_mean=self.ym[moment_rows, channel],
            sigma_x_mean=self.sxm[moment_rows, channel],
            sigma_y_mean=self.sym[moment_rows, channel],
            centroid=self.centroid[moment_rows, channel],
            x_slope=self.xs[moment_rows, channel], y_slope=self.ys[moment_rows, channel],
            extent=self.extent[moment_rows])


@dataclass(frozen=True)
class ChannelProblem:
    """The solve of one connected component in one channel.

    Node indices are local to the component.  *Gain rows* are the edges with a
    usable gain ratio (fit status ``"ok"``); *moment rows* are every usable
    edge (``"ok"`` or ``"offset_only"``) between nodes that reach the reference.

    Attributes
    ----------
    channel : int
    n : int
        Nodes in the component.
    ref : int
        Local index of the reference (fixed at ``g = 1, o = 0, p = 0``).
    reach : numpy.ndarray of bool, shape (n,)
        Nodes with a usable path to the reference in this channel.
    centres : numpy.ndarray, shape (n, 2)
        Node centres ``(x, y)``: offsets are parametrised there.
    length : float
        Typical node size: slopes are solved scaled by it.
    plane : bool
        Solve planes too (``model="plane"``).
    gain_src, gain_dst : numpy.ndarray of int
        Nodes of the gain rows.
    log_a, sigma_log_a : numpy.ndarray
        ``log a`` of the gain rows and its sigma (missing sigmas replaced, floored).
    src, dst : numpy.ndarray of int
        Nodes of the moment rows.
    x_mean, y_mean, sigma_x_mean, sigma_y_mean : numpy.ndarray
        Moments of the src and dst nodes on the moment rows, and their sigmas.
    centroid : numpy.ndarray, shape (k, 2)
    x_slope, y_slope : numpy.ndarray, shape (k, 2)
        Slopes of the src and dst planes.
    extent : numpy.ndarray, shape (k, 2)
        Overlap box ``(width, height)``.
    """

    channel: int
    n: int
    ref: int
    reach: np.ndarray
    centres: np.ndarray
    length: float
    plane: bool
    gain_src: np.ndarray
    gain_dst: np.ndarray
    log_a: np.ndarray
    sigma_log_a: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    x_mean: np.ndarray
    y_mean: np.ndarray
    sigma_x_mean: np.ndarray
    sigma_y_mean: np.ndarray
    centroid: np.ndarray
    x_slope: np.ndarray
    y_slope: np.ndarray
    extent: np.ndarray

    def free_columns(self):
        """Unknowns: the reachable nodes but the reference.

        Returns
        -------
        free : numpy.ndarray of bool, shape (n,)
        col : numpy.ndarray of int, shape (n,)
            Column block of each free node (-1 for the others).
        nfree : int
        """
        free = self.reach.copy()
        free[self.ref] = False
        col = np.full(self.n, -1, dtype=np.int64)
        col[free] = np.arange(free.sum())
        return free, col, int(free.sum())

    def moment_sigma(self, gi, gj):
        """Sigma of each moment row for the gains ``gi`` (src) and ``gj`` (dst)."""
        with np.errstate(invalid="ignore"):
            sig = np.sqrt((gj * self.sigma_y_mean) ** 2 + (gi * self.sigma_x_mean) ** 2)
        return clean_sigma(sig, np.ones(len(self.src), dtype=bool), 1e-2)


def _num(v):
    """Float of ``v`` (NaN when it is not a number)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _num2(v):
    """Pair of floats from ``v`` (NaNs when it is not a pair of numbers)."""
    try:
        x, y = v
        return float(x), float(y)
    except (TypeError, ValueError):
        return math.nan, math.nan


def edge_pixels(data):
    """Jointly valid pixels of an edge (``n_valid``, else ``area``, else the box area).

    Parameters
    ----------
    data : dict
        Edge attributes of the overlap graph.

    Returns
    -------
    float
    """
    for key in ("n_valid", "area"):
        v = data.get(key)
        if v is not None and np.isfinite(v):
            return float(v)
    bbox = data.get("bbox")
    return float(bbox.area) if bbox is not None else 0.0


def _fit_row(fit, src, dst):
    """Status code, ``a``, ``sigma_a`` and the moments of one fit, turned to read src -> dst."""
    code = _STATUS_CODES.get(getattr(fit, "status", "failed"), STATUS_FAILED)
    xm, ym = _num(getattr(fit, "x_mean", None)), _num(getattr(fit, "y_mean", None))
    sxm = _num(getattr(fit, "sigma_x_mean", None))
    sym = _num(getattr(fit, "sigma_y_mean", None))
    a, sig_a = _num(getattr(fit, "a", None)), _num(getattr(fit, "sigma_a", None))
    xs = _num2(getattr(fit, "x_slope", None))
    ys = _num2(getattr(fit, "y_slope", None))
    cx, cy = _num2(getattr(fit, "centroid", None))
    if getattr(fit, "src", src) == dst and getattr(fit, "dst", dst) == src and src != dst:
        # the fit was made the other way round: dst ≈ a src <=> src ≈ dst / a
        xm, ym, xs, ys, sxm, sym = ym, xm, ys, xs, sym, sxm
        a, sig_a = (1.0 / a, sig_a / a ** 2) if a else (math.nan, math.nan)
    if code != STATUS_FAILED and not (math.isfinite(xm) and math.isfinite(ym)):
        code = STATUS_FAILED
    if code == STATUS_OK and not (math.isfinite(a) and a > 0):
        code = STATUS_OFFSET_ONLY
    if code != STATUS_OK:
        a = sig_a = math.nan
    return (code, a, sig_a, xm, ym, sxm, sym, cx, cy, xs[0], xs[1], ys[0], ys[1])


def _box_geometry(boxes):
    """Extent, corners and centre of each overlap box ``(x0, x1, y0, y1)`` (or None)."""
    m = len(boxes)
    ext = np.ones((m, 2))
    corners = np.full((m, 4, 2), np.nan)
    centre = np.full((m, 2), np.nan)
    have = np.array([b is not None for b in boxes], dtype=bool)
    if have.any():
        bb = np.array([b for b in boxes if b is not None], dtype=float)  # x0, x1, y0, y1
        ext[have] = np.maximum(np.column_stack([bb[:, 1] - bb[:, 0], bb[:, 3] - bb[:, 2]]), 1)
        x0, x1, y0, y1 = bb[:, 0], bb[:, 1] - 1, bb[:, 2], bb[:, 3] - 1
        corners[have] = np.stack([np.column_stack([x0, y0]), np.column_stack([x1, y0]),
                                  np.column_stack([x0, y1]), np.column_stack([x1, y1])], axis=1)
        centre[have] = np.column_stack([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    return ext, corners, centre


def collect_edges(graph, index, n_channels):
    """Turn the graph's edge attributes into arrays (one pass over the edges).

    Parameters
    ----------
    graph : networkx.Graph
        Overlap graph; edge attributes ``src``, ``dst``, ``bbox``, ``n_valid``
        and ``fits`` (one fit per channel).
    index : dict
        Row of each node id.
    n_channels : int

    Returns
    -------
    EdgeTable
    """
    C = n_channels
    keys, src_i, dst_i, boxes, pixels = [], [], [], [], []
    # per edge and channel: status, a, sig_a, xm, ym, sxm, sym, cx, cy, xsx, xsy, ysx, ysy
    vals = []
    n_missing = 0
    nan_row = (STATUS_FAILED,) + (math.nan,) * 12
    for u, v, data in graph.edges(data=True):
        fits = data.get("fits")
        src, dst = data.get("src", u), data.get("dst", v)
        if src not in index or dst not in index or {src, dst} != {u, v}:
            src, dst = u, v
        keys.append((src, dst))
        src_i.append(index[src])
        dst_i.append(index[dst])
        pixels.append(edge_pixels(data))
        bbox = data.get("bbox")
        boxes.append(None if bbox is None or bbox.is_empty
                     else (bbox.x0, bbox.x1, bbox.y0, bbox.y1))
        if not fits:
            n_missing += 1
            fits = ()
        for c in range(C):
            fit = fits[c] if c < len(fits) else None
            vals.append(nan_row if fit is None else _fit_row(fit, src, dst))
    m = len(keys)
    arr = np.array(vals, dtype=float).reshape(m, C, 13)
    ext, corners, centre = _box_geometry(boxes)
    centroid = arr[:, :, 7:9].copy()
    missing = ~np.isfinite(centroid).all(axis=2)
    centroid[missing] = np.broadcast_to(centre[:, None, :], centroid.shape)[missing]
    sig_a = arr[:, :, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        sig_loga = np.where(np.isfinite(sig_a), sig_a / arr[:, :, 1], np.nan)
    return EdgeTable(keys=keys, src=np.array(src_i, dtype=np.int64),
                     dst=np.array(dst_i, dtype=np.int64),
                     status=arr[:, :, 0].astype(np.int8), a=arr[:, :, 1], sig_loga=sig_loga,
                     xm=arr[:, :, 3], ym=arr[:, :, 4], sxm=arr[:, :, 5], sym=arr[:, :, 6],
                     centroid=centroid, xs=arr[:, :, 9:11].copy(), ys=arr[:, :, 11:13].copy(),
                     extent=ext, corners=corners, pixels=np.array(pixels, dtype=float),
                     n_missing=n_missing)


def clean_sigma(sig, mask, default):
    """Replace missing sigmas by the median, floor at a tenth of the median.

    Parameters
    ----------
    sig : array_like
    mask : numpy.ndarray of bool
        Entries to clean (the others are returned as they are).
    default : float
        The median when no entry of ``mask`` has a positive finite sigma.

    Returns
    -------
    numpy.ndarray
    """
    out = np.array(sig, dtype=float)
    good = mask & np.isfinite(out) & (out > 0)
    med = float(np.median(out[good])) if good.any() else default
    out[mask & ~good] = med
    floor = max(0.1 * med, 1e-12)
    out[mask] = np.maximum(out[mask], floor)
    return out


def edge_residuals(table, gains, offsets, slopes, origin):
    """Gain-ratio and offset residuals of every edge before/after the corrections.

    Parameters
    ----------
    table : EdgeTable
    gains, offsets : numpy.ndarray, shape (n, C)
    slopes : numpy.ndarray, shape (n, C, 2)
        Zeros for ``model="offset"``.
    origin : tuple of float
        Origin of the plane term.

    Returns
    -------
    dict
        ``edges``, ``status``, ``gain_before``/``gain_after``,
        ``offset_before``/``offset_after``, ``corner_before``/``corner_after``
        (see :class:`~photometry_graph.photometry.solve.PhotometrySolution`).
    """
    m, C = table.status.shape
    out = {"edges": [(s, d) for s, d in table.keys],
           "status": np.array([_STATUS_NAMES[v] for v in table.status.ravel()],
                              dtype=object).reshape(m, C)}
    i, j = table.src, table.dst
    gi, gj = gains[i], gains[j]
    ok = table.status == STATUS_OK
    live = table.status != STATUS_FAILED
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gain_before"] = np.where(ok, 1.0 / table.a - 1.0, np.nan)
        out["gain_after"] = np.where(ok, gi / (gj * table.a) - 1.0, np.nan)
    org = np.asarray(origin, float)

    def additive(node_idx, r):
        # r: (m, C, 2) points; O_k(r) = o_k + p_k . (r - origin)
        return offsets[node_idx] + (slopes[node_idx] * (r - org)).sum(axis=-1)

    cen = table.centroid
    before = table.xm - table.ym
    after = gi * table.xm + additive(i, cen) - gj * table.ym - additive(j, cen)
    out["offset_before"] = np.where(live, before, np.nan)
    out["offset_after"] = np.where(live, after, np.nan)
    cb = np.full((m, C), np.nan)
    ca = np.full((m, C), np.nan)
    for k in range(4):
        r = np.broadcast_to(table.corners[:, k][:, None, :], (m, C, 2))
        xh = table.xm + (table.xs * (r - cen)).sum(axis=-1)
        yh = table.ym + (table.ys * (r - cen)).sum(axis=-1)
        b = np.abs(xh - yh)
        a = np.abs(gi * xh + additive(i, r) - gj * yh - additive(j, r))
        with np.errstate(invalid="ignore"):
            cb = np.fmax(cb, b)
            ca = np.fmax(ca, a)
    out["corner_before"] = np.where(live, cb, np.nan)
    out["corner_after"] = np.where(live, ca, np.nan)
    return out


def _abs_stats(values):
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(np.median(v)), float(np.max(v))


def summarise_residuals(res):
    """Median and maximum absolute residuals of :func:`edge_residuals` before/after.

    Parameters
    ----------
    res : dict
        Output of :func:`edge_residuals`.

    Returns
    -------
    dict
        ``{key}_{when}_median`` and ``{key}_{when}_max`` for ``key`` in gain,
        offset, corner and ``when`` in before, after; ``n_edges``.
    """
    summary = {}
    for key in ("gain", "offset", "corner"):
        for when in ("before", "after"):
            med, mx = _abs_stats(res[f"{key}_{when}"])
            summary[f"{key}_{when}_median"] = med
            summary[f"{key}_{when}_max"] = mx
    summary["n_edges"] = len(res["edges"])
    return summary
