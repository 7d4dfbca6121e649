"""Robust errors-in-variables regression between two overlapping images.

Two tiles (or frames) ``src`` and ``dst`` that overlap see the same sky, each
with its own gain, offset and noise::

    x = src = s + e_x            y = dst = a * s + b (+ plane) + e_y

Ordinary least squares of ``y`` on ``x`` estimates ``a * var(s) / (var(s) +
var(e_x))``: on an overlap that is mostly flat sky (``var(s)`` of the order of
the noise) the gain comes out far too low (attenuation).  :func:`fit_pair`
uses Deming (orthogonal for equal noise) regression with the noise variance
ratio ``lambda = noise_y**2 / noise_x**2``, which is consistent whatever the
signal range, clips outliers iteratively (stars that differ, satellite trails,
misregistration), and checks that the overlap holds enough signal to constrain
a gain at all.  When it does not, only the offset is fitted and the fit says
so (``status='offset_only'``).

Every fit also carries the *planar moments* of the two images over the pixels
it used (centroid, means, plane slopes).  They let a global solve write, for
any edge and without knowing the gain ratio of that edge::

    g_src * (x_mean + x_slope . (r - centroid)) + O_src(r)
        = g_dst * (y_mean + y_slope . (r - centroid)) + O_dst(r)

All moment sums are accumulated once per spatial block, so the fit itself, the
block jackknife of its uncertainties and the clipping iterations are a few
vectorised passes over the pixels.
"""

import math
from dataclasses import dataclass, fields

import numpy as np

from ._log import get_logger, grid_debug

__all__ = ["PairwiseFit", "FIT_STATUSES", "FIT_MODELS", "fit_pair", "fit_ols",
           "robust_noise_1d"]

logger = get_logger(__name__)

#: Possible values of :attr:`PairwiseFit.status`.
FIT_STATUSES = ("ok", "offset_only", "failed")
#: Possible values of the ``model`` argument of :func:`fit_pair`.
FIT_MODELS = ("offset", "plane")

_MAD_TO_SIGMA = 1.482602218505602
_NAN2 = (math.nan, math.nan)


@dataclass
class PairwiseFit:
    """Photometric relation ``dst ~ a * src + b (+ plane)`` of one overlap, one channel.

    Attributes
    ----------
    src, dst : hashable
        Node ids; the relation is ``dst ~ a * src + b + px*(x - x0) + py*(y - y0)``
        with ``(x0, y0) = origin`` (the plane term is zero for ``model='offset'``).
    channel : int
    a, b : float
        Gain ratio and offset at ``origin``.  ``status='offset_only'``: ``a = 1``
        (not fitted, ``sigma_a = inf``) and ``b``, ``px``, ``py`` are the offset
        terms under that assumption; use the moments instead of ``a``.
        ``status='failed'``: ``a = 1, b = 0, px = py = 0`` and infinite sigmas.
    px, py : float
        Plane slopes ``d/dx``, ``d/dy`` (per global pixel); 0 for ``model='offset'``.
    sigma_a, sigma_b, sigma_px, sigma_py : float
        One-sigma uncertainties (block jackknife over spatial blocks when
        coordinates were given, never below the analytic value); ``sigma_px``
        and ``sigma_py`` are 0 for ``model='offset'`` (not fitted).
    n_used, n_total : int
        Pixels kept after clipping / finite pixel pairs offered to the fit.
    rms : float
        RMS of ``dst - (a * src + b + plane)`` over the used pixels (dst units).
    status : {'ok', 'offset_only', 'failed'}
    message : str
        Why the status is not ``'ok'`` (empty otherwise).
    origin : tuple of float
        ``(x0, y0)`` of the plane term and of ``b``.
    centroid : tuple of float
        ``(x, y)`` global pixel centroid of the used pixels (NaN without coordinates).
    x_mean, y_mean : float
        Means of the src and dst values over the used pixels (clipped, hence
        robust); equal to the values of the fitted planes at ``centroid``.
    x_slope, y_slope : tuple of float
        ``(d/dx, d/dy)`` of the least-squares planes fitted to the src values and
        to the dst values over the same used pixels (NaN without coordinates).
    sigma_x_mean, sigma_y_mean : float
        Uncertainties of the means from the noise (``noise / sqrt(n_used)``,
        inflated by the excess of ``rms`` over the noise prediction).
    noise_x, noise_y : float
        Per-pixel noise sigma of src and dst used by the fit (given or estimated).
    model : {'offset', 'plane'}
    signal_to_noise : float
        ``sqrt(var(x) - noise_x**2) / noise_x`` over the used pixels (after the
        plane was removed for ``model='plane'``): the conditioning of the gain.

    Notes
    -----
    By construction ``b + px*(cx - x0) + py*(cy - y0) == y_mean - a * x_mean``
    and, for ``model='plane'``, ``(px, py) == y_slope - a * x_slope``.

    Examples
    --------
    >>> f = PairwiseFit(src=0, dst=1, a=1.1, b=2.0)
    >>> f.status, f.offset_at(0.0, 0.0)
    ('ok', 2.0)
    """

    src: object = None
    dst: object = None
    channel: int = 0
    a: float = 1.0
    b: float = 0.0
    px: float = 0.0
    py: float = 0.0
    sigma_a: float = math.inf
    sigma_b: float = math.inf
    sigma_px: float = math.inf
    sigma_py: float = math.inf
    n_used: int = 0
    n_total: int = 0
    rms: float = math.nan
    status: str = "ok"
    message: str = ""
    origin: tuple = (0.0, 0.0)
    centroid: tuple = _NAN2
    x_mean: float = math.nan
    y_mean: float = math.nan
    x_slope: tuple = _NAN2
    y_slope: tuple = _NAN2
    sigma_x_mean: float = math.inf
    sigma_y_mean: float = math.inf
    noise_x: float = math.nan
    noise_y: float = math.nan
    model: str = "offset"
    signal_to_noise: float = math.nan

    @property
    def ok(self):
        """True when the gain ratio ``a`` was fitted (``status == 'ok'``)."""
        return self.status == "ok"

    def offset_at(self, x, y):
        """Additive term ``b + px*(x - x0) + py*(y - y0)`` at global ``(x, y)``."""
        x0, y0 = self.origin
        return self.b + self.px * (x - x0) + self.py * (y - y0)

    def predict(self, src_values, x=None, y=None):
        """Predicted dst values ``a * src + offset_at(x, y)``.

        ``x`` and ``y`` (global pixel coordinates) are needed when the plane is not zero.
        """
        src_values = np.asarray(src_values, dtype=np.float64)
        if x is None or y is None:
            if self.px or self.py:
                raise ValueError("this fit has a plane term: pass the x and y coordinates")
            return self.a * src_values + self.b
        return self.a * src_values + self.offset_at(np.asarray(x, float), np.asarray(y, float))

    def to_dict(self):
        """JSON-friendly dict (tuples become lists, NaN and infinities become ``None``)."""
        out = {}
        for f in fields(self):
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    @classmethod
    def failed(cls, message, *, src=None, dst=None, channel=0, n_total=0, n_used=0,
               origin=(0.0, 0.0), model="offset"):
        """A ``'failed'`` fit: neutral relation, infinite uncertainties, NaN moments."""
        return cls(src=src, dst=dst, channel=channel, n_total=int(n_total), n_used=int(n_used),
                   status="failed", message=str(message),
                   origin=(float(origin[0]), float(origin[1])), model=model)


def _jsonable(value):
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


# --------------------------------------------------------------------------- helpers


def fit_ols(x, y):
    """Ordinary least squares ``y ~ a * x + b`` (biased when ``x`` is noisy).

    Only for comparison: with noise in ``x`` the slope is attenuated by
    ``var(s) / (var(s) + var(e_x))``.

    Parameters
    ----------
    x, y : array_like
        Same number of elements; non-finite pairs are ignored.

    Returns
    -------
    a, b : float

    Examples
    --------
    >>> fit_ols([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    (2.0, 1.0)
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same size, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 2:
        raise ValueError("fit_ols needs at least 2 finite pairs")
    xm, ym = x.mean(), y.mean()
    sxx = np.dot(x - xm, x - xm)
    if sxx == 0:
        raise ValueError("fit_ols: x is constant, the slope is undefined")
    a = float(np.dot(x - xm, y - ym) / sxx)
    return a, float(ym - a * xm)


def _sigma_from_second_differences(diffs_list, max_samples=100_000):
    """Noise sigma from lists of second differences ``v[i-1] - 2 v[i] + v[i+1]``.

    Each list is median-centred separately; for white noise of sigma ``s`` a
    second difference has sigma ``sqrt(6) s``.  Beyond ``max_samples``
    differences a regular stride is taken (the MAD of 1e5 samples is good to
    about 0.5 %).
    """
    total = sum(d.size for d in diffs_list)
    if max_samples and total > max_samples:
        stride = int(math.ceil(total / max_samples))
        diffs_list = [d[::stride] for d in diffs_list]
    dev = [np.abs(d - np.median(d)) for d in diffs_list if d.size]
    if not dev:
        return math.nan
    dev = np.concatenate(dev)
    if dev.size < 10:
        return math.nan
    mad = float(np.median(dev))
    if mad > 0:
        return _MAD_TO_SIGMA * mad / math.sqrt(6.0)
    # quantised or nearly constant data: mean absolute deviation (Gaussian factor)
    return float(np.mean(dev)) * math.sqrt(math.pi / 2.0) / math.sqrt(6.0)


def robust_noise_1d(values, coords=None):
    """Per-pixel noise sigma from second differences of neighbouring pixels.

    Parameters
    ----------
    values : array_like, shape (n,)
        Pixel values.
    coords : array_like, shape (n, 2), optional
        Integer global pixel coordinates ``(x, y)``.  When given, only runs of
        three pixels that are horizontal or vertical neighbours are used.
        Without coordinates the values are assumed to be in raster order (a
        flattened image region) and consecutive values are used.

    Returns
    -------
    float
        ``1.4826 * MAD(d2) / sqrt(6)`` with ``d2 = v[i-1] - 2 v[i] + v[i+1]``
        (NaN with fewer than 10 differences).  The median makes it robust to
        stars; second differences cancel gradients and most of the smooth
        structure (nebulae).  Noise correlated between neighbours (e.g. after
        interpolation) is underestimated, by about the same factor in two
        images processed alike, so their noise *ratio* stays right.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(robust_noise_1d(rng.normal(5.0, 2.0, 20000)), 1)
    2.0
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if coords is None:
        d = v[:-2] - 2.0 * v[1:-1] + v[2:]
        return _sigma_from_second_differences([d[np.isfinite(d)]])
    cx, cy = _split_coords(coords, v.size)
    diffs = []
    for major, minor in ((cy, cx), (cx, cy)):
        order = np.lexsort((minor, major))
        vo, mj, mn = v[order], major[order], minor[order]
        step = (mj[1:] == mj[:-1]) & (mn[1:] - mn[:-1] == 1)
        run = step[:-1] & step[1:]
        d = (vo[:-2] - 2.0 * vo[1:-1] + vo[2:])[run]
        diffs.append(d[np.isfinite(d)])
    return _sigma_from_second_differences(diffs)


def _split_coords(coords, n):
    if isinstance(coords, (tuple, list)) and len(coords) == 2 and np.ndim(coords[0]) >= 1:
        cx = np.asarray(coords[0], dtype=np.float64).ravel()
        cy = np.asarray(coords[1], dtype=np.float64).ravel()
    else:
        c = np.asarray(coords, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(
                f"coords must have shape (n, 2) with columns (x, y), got shape {c.shape}")
        cx, cy = c[:, 0], c[:, 1]
    if cx.size != n or cy.size != n:
        raise ValueError(f"coords hold {cx.size} points but there are {n} values")
    return cx, cy


def _deming_slope(sxx, syy, sxy, lam):
    """Deming slope for the error variance ratio ``lam = var(e_y) / var(e_x)``.

    Numerically stable form of ``(d + sqrt(d^2 + 4 lam sxy^2)) / (2 sxy)``
    with ``d = syy - lam sxx``; vectorised.
    """
    d = syy - lam * sxx
    r = np.sqrt(d * d + 4.0 * lam * sxy * sxy)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d >= 0, (d + r) / (2.0 * sxy), 2.0 * lam * sxy / (r - d))


def _partial_out(M, k):
    """Regress the last two columns on the first ``k`` using moment matrices.

    ``M`` is ``(..., m, m)`` = ``Z.T @ Z`` with ``Z = [design (k cols), x, y]``.
    Returns the coefficients ``(..., k, 2)`` and the residual cross-products ``(..., 2, 2)``.
    """
    A = M[..., :k, :k]
    C = M[..., :k, -2:]
    try:
        coef = np.linalg.solve(A, C)
    except np.linalg.LinAlgError:
        # degenerate geometry (all pixels on one row or column): minimum-norm
        # solution, i.e. no slope along the missing direction
        coef = np.linalg.pinv(A) @ C
    R = M[..., -2:, -2:] - np.einsum("...ki,...kj->...ij", C, coef)
    return coef, R


class _Design:
    """Columns ``[1, u, w, x, y]`` (``u, w`` centred/scaled coordinates) or ``[1, x, y]``."""

    def __init__(self, x, y, cx, cy):
        self.has_coords = cx is not None
        self.x_shift = float(np.median(x))
        self.y_shift = float(np.median(y))
        cols = [np.ones_like(x)]
        if self.has_coords:
            self.cx0, self.cy0 = float(cx.mean()), float(cy.mean())
            self.sx = max(float(cx.std()), 1.0)
            self.sy = max(float(cy.std()), 1.0)
            self.u = (cx - self.cx0) / self.sx
            self.w = (cy - self.cy0) / self.sy
            cols += [self.u, self.w]
        cols += [x - self.x_shift, y - self.y_shift]
        self.Z = np.column_stack(cols)
        self.m = self.Z.shape[1]

    def moments(self, used):
        Zu = self.Z[used]
        return Zu.T @ Zu

    def block_moments(self, used, block, n_blocks):
        """Per-block moment matrices ``(K, m, m)`` of the used pixels."""
        Zu, bu = self.Z[used], block[used]
        out = np.empty((n_blocks, self.m, self.m))
        for i in range(self.m):
            for j in range(i, self.m):
                s = np.bincount(bu, weights=Zu[:, i] * Zu[:, j], minlength=n_blocks)
                out[:, i, j] = s
                out[:, j, i] = s
        return out


def _solve(M, design, lam, plane, a_fixed=None, origin=(0.0, 0.0)):
    """Fit quantities from moment matrices (vectorised over leading axes)."""
    n = M[..., 0, 0]
    xm_c = M[..., 0, -2] / n
    ym_c = M[..., 0, -1] / n
    out = {"n": n, "x_mean": xm_c + design.x_shift, "y_mean": ym_c + design.y_shift}
    if design.has_coords:
        coef3, R3 = _partial_out(M, 3)
        scale = np.array([design.sx, design.sy])
        out["x_slope"] = coef3[..., 1:3, 0] / scale
        out["y_slope"] = coef3[..., 1:3, 1] / scale
        out["centroid"] = np.stack([design.cx0 + design.sx * M[..., 0, 1] / n,
                                    design.cy0 + design.sy * M[..., 0, 2] / n], axis=-1)
    if plane:
        R, k = R3, 3
    else:
        _, R = _partial_out(M, 1)
        k = 1
    dof = np.maximum(n - k, 1.0)
    sxx, syy, sxy = R[..., 0, 0] / dof, R[..., 1, 1] / dof, R[..., 0, 1] / dof
    a = _deming_slope(sxx, syy, sxy, lam) if a_fixed is None else np.full_like(n, a_fixed)
    out.update(sxx=sxx, syy=syy, sxy=sxy, dof=dof, a=a)
    out["b_c"] = out["y_mean"] - a * out["x_mean"]
    out["resid_var"] = np.maximum(syy - 2.0 * a * sxy + a * a * sxx, 0.0)
    if plane:
        p = out["y_slope"] - a[..., np.newaxis] * out["x_slope"]
        lever = out["centroid"] - np.asarray(origin, dtype=np.float64)
        out["p"] = p
        out["b"] = out["b_c"] - (p * lever).sum(axis=-1)
    else:
        out["p"] = np.zeros(np.shape(n) + (2,))
        out["b"] = out["b_c"]
    return out


def _residuals(design, sol, plane):
    """``y - (a x + b_c + p . (r - centroid))`` for every pixel of the design."""
    Z = design.Z
    xv = Z[:, -2] + design.x_shift
    yv = Z[:, -1] + design.y_shift
    v = yv - sol["a"] * xv - sol["b_c"]
    if plane:
        cx = design.cx0 + design.sx * Z[:, 1]
        cy = design.cy0 + design.sy * Z[:, 2]
        v = v - sol["p"][0] * (cx - sol["centroid"][0]) - sol["p"][1] * (cy - sol["centroid"][1])
    return v


def _clip_loop(design, finite, lam, noise_x, noise_y, plane, kappa, max_iter, min_pixels,
               a_fixed, origin):
    """Iterative kappa-clipping on the errors-in-variables residual.

    The residual is scaled by ``sqrt(noise_y^2 + a^2 noise_x^2)`` and clipped at
    ``kappa`` times the larger of 1 and its robust spread (the spread alone when
    the noise is unknown, ``noise_x=None``).

    Returns ``(used, sol, n_iter)``; ``sol`` is ``None`` when fewer than
    ``min_pixels`` pixels survive.
    """
    used = finite.copy()
    sol = None
    for it in range(max_iter + 1):
        if used.sum() < min_pixels:
            return used, None, it
        sol = _solve(design.moments(used), design, lam, plane, a_fixed, origin)
        if it == max_iter:
            break
        a = float(sol["a"])
        sol_clip = sol
        if not (math.isfinite(a) and a > 0):
            # gain undefined for now: clip around the unit-gain relation
            a = 1.0
            sol_clip = _solve(design.moments(used), design, lam, plane, 1.0, origin)
        known = noise_x is not None and noise_y is not None
        scale = math.sqrt(noise_y ** 2 + a * a * noise_x ** 2) if known else 1.0
        if not scale > 0:
            scale = 1.0
        z = _residuals(design, sol_clip, plane) / scale
        zu = z[used]
        med = float(np.median(zu))
        spread = _MAD_TO_SIGMA * float(np.median(np.abs(zu - med)))
        if known:
            spread = max(spread, 1.0)
        elif not spread > 0:
            break
        new_used = finite & (np.abs(z - med) <= kappa * spread)
        if np.array_equal(new_used, used):
            break
        used = new_used
    return used, sol, it


def _blocks(cx, cy, n_blocks):
    """Spatial block index of each pixel: a near-square grid of about ``n_blocks`` cells."""
    w = float(cx.max() - cx.min()) + 1.0
    h = float(cy.max() - cy.min()) + 1.0
    nbx = int(max(1, round(math.sqrt(n_blocks * w / h))))
    nbx = min(nbx, n_blocks)
    nby = int(max(1, round(n_blocks / nbx)))
    bx = np.minimum(((cx - cx.min()) / w * nbx).astype(np.int64), nbx - 1)
    by = np.minimum(((cy - cy.min()) / h * nby).astype(np.int64), nby - 1)
    return by * nbx + bx, nbx * nby


def _jackknife(design, used, block, n_cells, lam, plane, a_fixed, origin):
    """Delete-one-block jackknife standard errors of a, b, px, py (None if < 4 blocks)."""
    Mk = design.block_moments(used, block, n_cells)
    counts = Mk[:, 0, 0]
    keep = counts > 0
    if keep.sum() < 4:
        return None
    Mk = Mk[keep]
    loo = Mk.sum(axis=0)[np.newaxis] - Mk
    # a deleted block may leave too little spread in the coordinates to fit a plane
    with np.errstate(all="ignore"):
        try:
            rep = _solve(loo, design, lam, plane, a_fixed, origin)
        except np.linalg.LinAlgError:
            return None
    K = loo.shape[0]

    def se(v):
        v = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            return math.nan
        return float(np.sqrt((K - 1) / K * np.sum((v - v.mean(axis=0)) ** 2, axis=0)))

    out = {"a": se(rep["a"]), "b": se(rep["b"])}
    if plane:
        out["px"] = se(rep["p"][:, 0])
        out["py"] = se(rep["p"][:, 1])
    return out


# --------------------------------------------------------------------------- main entry


def fit_pair(x, y, *, coords=None, noise_x=None, noise_y=None, model="offset",
             origin=(0.0, 0.0), kappa=4.0, max_iter=10, min_pixels=500,
             min_signal_to_noise=3.0, max_rel_gain_error=0.01, n_blocks=16,
             src=None, dst=None, channel=0):
    """Robust errors-in-variables fit ``y ~ a * x + b (+ plane)`` of an overlap.

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Values of the src and dst image on the same (jointly valid) pixels.
        Non-finite pairs are ignored.
    coords : array_like, shape (n, 2), or tuple ``(x_coords, y_coords)``, optional
        Global pixel coordinates ``(x, y)`` of the pixels.  Needed for
        ``model='plane'``, for the planar moments and for the block jackknife.
    noise_x, noise_y : float, optional
        Per-pixel noise sigma of ``x`` and ``y`` (e.g. from
        :func:`photometry_graph.overlap.estimate_noise` on the image region).
        Estimated from neighbouring pixels with :func:`robust_noise_1d` when
        omitted; if that is impossible the noise ratio is taken as 1.
    model : {'offset', 'plane'}
        ``'plane'`` adds ``px*(x - x0) + py*(y - y0)`` to the relation.
    origin : tuple of float
        ``(x0, y0)`` at which ``b`` and the plane are expressed.
    kappa : float
        Clipping threshold on the residual ``y - a x - b - plane`` scaled by
        ``sqrt(noise_y**2 + a**2 noise_x**2)`` (or by its robust spread, when
        larger).
    max_iter : int
        Maximum number of clipping iterations.
    min_pixels : int
        Fewer finite (or surviving) pixels gives ``status='failed'``.
    min_signal_to_noise : float
        The gain is fitted only when ``sqrt(var(x) - noise_x**2) / noise_x`` (signal
        spread over noise, after removing the plane for ``model='plane'``)
        reaches this value; otherwise ``status='offset_only'``.  3 keeps the
        slope bias from a 10 % error in the noise ratio below about 0.5 %.
    max_rel_gain_error : float
        ``sigma_a / a`` above this also gives ``status='offset_only'``.
    n_blocks : int
        Number of spatial blocks of the jackknife (used when ``coords`` are given).
    src, dst, channel
        Labels copied into the result.

    Returns
    -------
    PairwiseFit
        Never raises for bad *data* (too few pixels, flat overlap, ...): the
        status and message say what happened.

    Raises
    ------
    ValueError
        For bad arguments (unknown model, shapes that disagree, ``model='plane'``
        without ``coords``).

    Notes
    -----
    Deming regression: with centred (and, for ``model='plane'``, de-planed)
    second moments ``sxx, syy, sxy`` and ``lambda = noise_y**2 / noise_x**2``::

        a = (syy - lambda sxx + sqrt((syy - lambda sxx)^2 + 4 lambda sxy^2)) / (2 sxy)

    The plane is handled by partialling the (exact) coordinates out of both
    ``x`` and ``y`` first, so ``(px, py) = y_slope - a x_slope`` and
    ``b = y_mean - a x_mean`` at the centroid.  Analytic slope variance (Fuller
    1987, known ratio): ``(S s_vv + s_uu s_ee) / (n S^2)`` with ``S`` the signal
    variance and ``s_vv`` the residual variance; with coordinates the larger
    of this and the delete-one-block jackknife is reported.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = 20 + rng.gamma(0.5, 20.0, 20000)          # sky plus bright structure
    >>> x = s + rng.normal(0, 1, s.size)
    >>> y = 1.1 * s + 3.0 + rng.normal(0, 1, s.size)
    >>> f = fit_pair(x, y, noise_x=1.0, noise_y=1.0)
    >>> f.status, round(f.a, 2), round(f.b, 1)
    ('ok', 1.1, 3.0)
    """
    if model not in FIT_MODELS:
        raise ValueError(f"model must be one of {FIT_MODELS}, got {model!r}")
    if not kappa > 0:
        raise ValueError(f"kappa must be positive, got {kappa!r}")
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}")
    if int(n_blocks) < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks!r}")
    plane = model == "plane"
    origin = (float(origin[0]), float(origin[1]))
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same number of pixels, got {x.size} and {y.size}")
    cx = cy = None
    if coords is not None:
        cx, cy = _split_coords(coords, x.size)
    elif plane:
        raise ValueError("model='plane' needs the pixel coordinates: pass coords=(n, 2) array")
    min_pixels = max(int(min_pixels), 8)
    labels = dict(src=src, dst=dst, channel=int(channel), origin=origin, model=model)

    finite = np.isfinite(x) & np.isfinite(y)
    if cx is not None:
        finite &= np.isfinite(cx) & np.isfinite(cy)
    n_total = int(finite.sum())
    if n_total < min_pixels:
        return PairwiseFit.failed(
            f"only {n_total} valid pixel pairs in the overlap, fewer than min_pixels="
            f"{min_pixels}", n_total=n_total, n_used=n_total, **labels)
    x, y = x[finite], y[finite]
    if cx is not None:
        cx, cy = cx[finite], cy[finite]
    coords_f = None if cx is None else (cx, cy)

    notes = []
    noise_x = _noise_or_none(noise_x, "noise_x")
    noise_y = _noise_or_none(noise_y, "noise_y")
    if noise_x is None:
        noise_x = robust_noise_1d(x, coords_f)
    if noise_y is None:
        noise_y = robust_noise_1d(y, coords_f)
    noise_known = math.isfinite(noise_x) and math.isfinite(noise_y)
    if noise_known and noise_x > 0 and noise_y > 0:
        lam = min(max(noise_y ** 2 / noise_x ** 2, 1e-6), 1e6)
    elif noise_known and noise_x == 0 and noise_y == 0:
        lam = 1.0
    elif noise_known:
        lam = 1e6 if noise_x == 0 else 1e-6
    else:
        lam = 1.0
        notes.append("noise could not be estimated; noise ratio assumed 1")

    design = _Design(x, y, cx, cy)
    ones = np.ones(x.size, dtype=bool)
    clip_nx = noise_x if noise_known else None
    clip_ny = noise_y if noise_known else None
    used, sol, _ = _clip_loop(design, ones, lam, clip_nx, clip_ny, plane, kappa, int(max_iter),
                              min_pixels, None, origin)
    if sol is None:
        return PairwiseFit.failed(
            f"only {int(used.sum())} pixels left after outlier clipping, fewer than "
            f"min_pixels={min_pixels}", n_total=n_total, n_used=int(used.sum()), **labels)

    a = float(sol["a"])
    if not noise_known:
        # noise from the residuals, split with the assumed ratio
        nv = float(sol["resid_var"])
        base = a * a + lam if math.isfinite(a) and a > 0 else 1.0 + lam
        noise_x = math.sqrt(nv / base)
        noise_y = math.sqrt(lam) * noise_x
    signal_var = float(sol["sxx"]) - noise_x ** 2
    snr = _snr(signal_var, noise_x)

    status, why = "ok", ""
    if snr < min_signal_to_noise:
        status = "offset_only"
        why = (f"too little signal range to constrain a gain: signal-to-noise {snr:.2f} < "
               f"min_signal_to_noise={min_signal_to_noise}")
    elif not (math.isfinite(a) and a > 0):
        status = "offset_only"
        why = "src and dst are not positively correlated: gain undefined"
    block = n_cells = None
    if cx is not None and n_blocks >= 4:
        block, n_cells = _blocks(cx, cy, int(n_blocks))

    if status == "ok":
        unc = _uncertainties(design, used, sol, lam, plane, noise_x, noise_y, None, origin,
                             block, n_cells)
        rel = unc["a"] / a
        if not rel <= max_rel_gain_error:
            status = "offset_only"
            why = (f"relative gain uncertainty {rel:.3g} exceeds max_rel_gain_error="
                   f"{max_rel_gain_error}")
    if status == "offset_only":
        used, sol, _ = _clip_loop(design, ones, lam, clip_nx, clip_ny, plane, kappa,
                                  int(max_iter), min_pixels, 1.0, origin)
        if sol is None:
            return PairwiseFit.failed(
                f"{why}; and only {int(used.sum())} pixels left after outlier clipping",
                n_total=n_total, n_used=int(used.sum()), **labels)
        unc = _uncertainties(design, used, sol, lam, plane, noise_x, noise_y, 1.0, origin,
                             block, n_cells)
        unc["a"] = math.inf

    a = float(sol["a"])
    n_used = int(used.sum())
    v = _residuals(design, sol, plane)[used]
    rms = float(np.sqrt(np.mean(v * v)))
    expected = math.sqrt(noise_y ** 2 + a * a * noise_x ** 2)
    inflate = max(1.0, rms / expected) if expected > 0 else 1.0
    if not noise_known:
        inflate = 1.0
    message = "; ".join([m for m in [why] + notes if m])
    fit = PairwiseFit(
        src=src, dst=dst, channel=int(channel), a=a, b=float(sol["b"]),
        px=float(sol["p"][0]), py=float(sol["p"][1]),
        sigma_a=float(unc["a"]), sigma_b=float(unc["b"]),
        sigma_px=float(unc["px"]), sigma_py=float(unc["py"]),
        n_used=n_used, n_total=n_total, rms=rms, status=status, message=message,
        origin=origin,
        centroid=(tuple(float(c) for c in sol["centroid"]) if cx is not None else _NAN2),
        x_mean=float(sol["x_mean"]), y_mean=float(sol["y_mean"]),
        x_slope=(tuple(float(c) for c in sol["x_slope"]) if cx is not None else _NAN2),
        y_slope=(tuple(float(c) for c in sol["y_slope"]) if cx is not None else _NAN2),
        sigma_x_mean=inflate * noise_x / math.sqrt(n_used),
        sigma_y_mean=inflate * noise_y / math.sqrt(n_used),
        noise_x=float(noise_x), noise_y=float(noise_y), model=model,
        signal_to_noise=float(snr))
    grid_debug(logger, "Photometry: fit %s->%s ch%d: %s a=%.5f±%.2g b=%.4g n=%d/%d %s",
               src, dst, int(channel), status, a, fit.sigma_a, fit.b, n_used, n_total, message)
    return fit


def _noise_or_none(value, name):
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    if value < 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite non-negative noise sigma, got {value!r}")
    return value


def _snr(signal_var, noise_x):
    if not signal_var > 0:
        return 0.0
    if noise_x == 0:
        return math.inf
    return math.sqrt(signal_var) / noise_x


def _uncertainties(design, used, sol, lam, plane, noise_x, noise_y, a_fixed, origin,
                   block, n_cells):
    """Analytic uncertainties, replaced by the block jackknife where that is larger."""
    n = float(sol["n"])
    a = float(sol["a"])
    s_vv = float(sol["resid_var"])
    dof = float(sol["dof"])
    out = {}
    if a_fixed is None:
        # Fuller (1987) thm 1.3.1, known ratio; S from the fitted covariance
        S = float(sol["sxy"]) / a if a > 0 else math.nan
        s_uu = s_vv / (lam + a * a)
        s_ee = lam * s_uu
        var_a = (S * s_vv + s_uu * s_ee) / (dof * S * S) if S > 0 else math.inf
    else:
        var_a = 0.0
    out["a"] = math.sqrt(var_a)
    var_bc = s_vv / n + float(sol["x_mean"]) ** 2 * var_a
    if plane:
        M = design.moments(used)
        Ainv = np.linalg.pinv(M[:3, :3])
        scale = np.array([design.sx, design.sy])
        var_p = s_vv * np.diag(Ainv)[1:3] / scale ** 2 + np.asarray(sol["x_slope"]) ** 2 * var_a
        lever = np.asarray(sol["centroid"]) - np.asarray(origin)
        out["px"], out["py"] = (float(v) for v in np.sqrt(var_p))
        out["b"] = math.sqrt(var_bc + float(np.sum(lever ** 2 * var_p)))
    else:
        out["px"] = out["py"] = 0.0
        out["b"] = math.sqrt(var_bc)
    if block is not None:
        jk = _jackknife(design, used, block, n_cells, lam, plane, a_fixed, origin)
        if jk is not None:
            for key, value in jk.items():
                if math.isfinite(value) and (key != "a" or a_fixed is None):
                    out[key] = max(out[key], value)
    return out
