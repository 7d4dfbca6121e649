"""Projective maps between pixel grids: the exact map between two gnomonic (TAN) grids.

The pixel-to-pixel map between two TAN projections of the sky is a 3x3 homography:
:func:`fit_homography` fits one to point pairs (and says how well it reproduces them),
:func:`apply_homography` maps points, :func:`homography_maps` gives the source coordinates
of every pixel of a box (the coordinate maps of ``cv2.remap``) with a few operations a
pixel, :func:`pixels_within` the pixels of a box whose source position lies within limits
(with a few operations a row).  :func:`photometry_graph.stacking.resample.wcs_homography`
fits one to two WCS.
"""

import numpy as np

from ..core.tiles import BBox

__all__ = ["fit_homography", "apply_homography", "homography_maps", "inverse_homography",
           "pixels_within"]


def fit_homography(x, y, u, v):
    """Least-squares projective map ``(u, v) = H(x, y)`` and its largest residual.

    ``H`` is 3x3 with ``H[2, 2] = 1``: ``u = (H[0] . (x, y, 1)) / (H[2] . (x, y, 1))``,
    likewise ``v`` with ``H[1]``.  The pixel-to-pixel map between two gnomonic (TAN)
    projections of the sky is exactly projective (both are central projections from the
    centre of the sphere, up to linear pixel-to-plane maps), so a fit to a few exactly
    transformed points reproduces it everywhere; SIP distortion or other projections
    leave a residual.

    Parameters
    ----------
    x, y, u, v : array_like
        At least four point pairs (non-finite ones are ignored).

    Returns
    -------
    (numpy.ndarray or None, float)
        ``H`` (None with fewer than four finite pairs) and the largest ``|(u, v) -
        H(x, y)|`` over the points.

    Examples
    --------
    >>> H0 = np.array([[1.0, 0.1, 3.0], [-0.1, 1.0, -2.0], [1e-4, 2e-4, 1.0]])
    >>> x, y = np.meshgrid(np.arange(0.0, 100, 20), np.arange(0.0, 60, 20))
    >>> d = H0[2, 0] * x + H0[2, 1] * y + 1
    >>> H, res = fit_homography(x, y, (x + 0.1 * y + 3) / d, (-0.1 * x + y - 2) / d)
    >>> bool(np.allclose(H, H0) and res < 1e-9)
    True
    """
    x, y, u, v = (np.asarray(a, dtype=np.float64).ravel() for a in (x, y, u, v))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(u) & np.isfinite(v)
    x, y, u, v = x[ok], y[ok], u[ok], v[ok]
    if x.size < 4:
        return None, np.inf
    X, Y, U, V = x, y, u, v
    if x.size > 64:  # fitted on 64 points spread over the set, checked on all of them
        pick = np.unique(np.linspace(0, x.size - 1, 64).round().astype(np.int64))
        x, y, u, v = x[pick], y[pick], u[pick], v[pick]
    # normalised coordinates (zero mean, unit spread) keep the linear system well conditioned
    mx, my, s = x.mean(), y.mean(), max(np.ptp(x), np.ptp(y), 1e-12)
    mu, mv, t = u.mean(), v.mean(), max(np.ptp(u), np.ptp(v), 1e-12)
    xn, yn, un, vn = (x - mx) / s, (y - my) / s, (u - mu) / t, (v - mv) / t
    one, zero = np.ones_like(xn), np.zeros_like(xn)
    a = np.concatenate([np.column_stack([xn, yn, one, zero, zero, zero, -un * xn, -un * yn]),
                        np.column_stack([zero, zero, zero, xn, yn, one, -vn * xn, -vn * yn])])
    # normal equations summed without BLAS, so that the result does not depend on threads
    p = np.linalg.solve(np.einsum("ij,ik->jk", a, a),
                        np.einsum("ij,i->j", a, np.concatenate([un, vn])))
    hn = np.append(p, 1.0).reshape(3, 3)
    t_xy = np.array([[1 / s, 0, -mx / s], [0, 1 / s, -my / s], [0, 0, 1]])
    t_uv_inv = np.array([[t, 0, mu], [0, t, mv], [0, 0, 1]])
    H = t_uv_inv @ hn @ t_xy
    H /= H[2, 2]
    pu, pv = apply_homography(H, X, Y)
    return H, float(np.max(np.hypot(pu - U, pv - V)))


def apply_homography(H, x, y):
    """``(u, v) = H(x, y)`` for arrays of points (see :func:`fit_homography`)."""
    den = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    return ((H[0, 0] * x + H[0, 1] * y + H[0, 2]) / den,
            (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / den)


def inverse_homography(H):
    """The inverse projective map of ``H`` (its adjugate: the inverse up to a scale, which
    a projective map ignores), without the overhead of a general matrix inverse.

    Examples
    --------
    >>> H = np.array([[1.0, 0.1, 3.0], [-0.1, 1.0, -2.0], [1e-4, 2e-4, 1.0]])
    >>> u, v = apply_homography(H, np.array([5.0, 70.0]), np.array([9.0, -4.0]))
    >>> x, y = apply_homography(inverse_homography(H), u, v)
    >>> bool(np.allclose(x, [5.0, 70.0]) and np.allclose(y, [9.0, -4.0]))
    True
    """
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(H, dtype=np.float64).tolist()
    return np.array([[e * i - f * h, c * h - b * i, b * f - c * e],
                     [f * g - d * i, a * i - c * g, c * d - a * f],
                     [d * h - e * g, b * g - a * h, a * e - b * d]])


def homography_maps(H, bbox, *, origin=(0.0, 0.0), dtype=np.float64):
    """Source coordinates ``H(x, y) - origin`` of every pixel of ``bbox``, as two arrays.

    The row and column terms are formed in float64 and combined in ``dtype`` (float32
    halves the memory traffic; its rounding, ~1e-4 px for coordinates below 2000, is far
    below the 1/32 px to which ``cv2.remap`` quantises positions).  A pixel's value
    depends on its own position and ``origin`` only, never on the rest of the box.

    Parameters
    ----------
    H : numpy.ndarray, shape (3, 3)
        Output pixel -> source pixel (see :func:`fit_homography`).
    bbox : BBox
        Output box.
    origin : tuple of float
        ``(x0, y0)`` subtracted from the source coordinates (a source crop's corner).
    dtype : numpy dtype

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``map_x``, ``map_y`` of shape ``bbox.shape``.

    Examples
    --------
    >>> mx, my = homography_maps(np.eye(3), BBox(2, 4, 5, 8), origin=(1.0, 0.0))
    >>> mx.tolist(), my[:, 0].tolist()
    ([[4.0, 5.0, 6.0], [4.0, 5.0, 6.0]], [2.0, 3.0])
    """
    box = bbox if isinstance(bbox, BBox) else BBox(*bbox)
    xs = np.arange(box.x0, box.x1, dtype=np.float64)
    ys = np.arange(box.y0, box.y1, dtype=np.float64)[:, np.newaxis]
    ox, oy = (float(v) for v in origin)
    row_den = H[2, 1] * ys + H[2, 2]
    inv = (H[2, 0] * xs).astype(dtype) + row_den.astype(dtype)
    np.divide(1.0, inv, out=inv)
    # H(x, y) - origin = (num - origin * den) / den: the origin enters the exact terms
    mx = ((H[0, 0] - ox * H[2, 0]) * xs).astype(dtype) \
        + (H[0, 1] * ys + H[0, 2] - ox * row_den).astype(dtype)
    my = ((H[1, 0] - oy * H[2, 0]) * xs).astype(dtype) \
        + (H[1, 1] * ys + H[1, 2] - oy * row_den).astype(dtype)
    mx *= inv
    my *= inv
    return mx, my


def pixels_within(hs, shape, limits):
    """The pixels of a window whose source position lies within ``limits``, or None.

    ``hs`` maps the pixels ``(u, v)`` of a window of ``shape`` ``(h, w)`` to source
    positions ``(x, y)``; a pixel is within ``limits = (x_lo, x_hi, y_lo, y_hi)`` when
    ``x_lo <= x <= x_hi`` and ``y_lo <= y <= y_hi`` (the frame's edges: the ``inside``
    of :func:`~photometry_graph.stacking.resample.reproject_to_bbox`).

    Along a row ``v`` of the window the source position ``(a u + b) / (c u + d)`` is
    monotonic in the column ``u`` where ``c u + d > 0``, so each limit keeps the columns on
    one side of a bound: the pixels inside form one run per row, found from the row's
    coefficients alone, then two comparisons a pixel (half the time of a nearest-neighbour
    warp of the window).  None when the denominator is not positive over the whole window
    (a map that folds there), or for a map or limits not finite.

    Examples
    --------
    >>> pixels_within(np.eye(3), (2, 6), (0.5, 3.0, -0.5, 0.5)).astype(int).tolist()
    [[0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]]
    """
    h, w = shape
    if h == 0 or w == 0:
        return np.zeros((h, w), bool)
    if not (np.isfinite(hs).all() and np.isfinite(limits).all()):
        return None
    v = np.arange(h, dtype=np.float64)
    den = hs[2, 1] * v + hs[2, 2]
    if not (den.min() > 0 and hs[2, 0] * (w - 1) + den.min() > 0):
        return None
    # limits x_lo <= x, x <= x_hi, y_lo <= y, y <= y_hi as k u >= m (k fixed, m per row),
    # the denominator positive: k = +-(a - limit c), m = +-(limit d - b)
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    bound = np.asarray(limits, dtype=np.float64)
    a = hs[[0, 0, 1, 1], 0]
    k = sign * (a - bound * hs[2, 0])
    m = sign[:, None] * (bound[:, None] * den - (hs[[0, 0, 1, 1], 1][:, None] * v
                                                 + hs[[0, 0, 1, 1], 2][:, None]))
    with np.errstate(all="ignore"):  # k = 0: t is not used; tiny k: t infinite
        t = m / k[:, None]
    lo = np.max(t[k > 0], axis=0, initial=0.0)
    hi = np.min(t[k < 0], axis=0, initial=w - 1.0)
    never = (m[k == 0] > 0).any(axis=0)  # a limit that no column of the row meets
    c0 = np.clip(np.ceil(lo), 0, w)
    c1 = np.where(never, 0, np.clip(np.floor(hi) + 1, 0, w))
    if w < 2 ** 15:  # the runs as one comparison of the columns with each row's ends
        cols = np.arange(w, dtype=np.int16)
        ok = cols >= c0.astype(np.int16)[:, np.newaxis]
        ok &= cols < c1.astype(np.int16)[:, np.newaxis]
        return ok
    ok = np.zeros((h, w), bool)
    for r in np.flatnonzero(c1 > c0):
        ok[r, int(c0[r]):int(c1[r])] = True
    return ok
