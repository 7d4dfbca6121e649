"""Moment sums of a pairwise fit and the estimates they give.

A fit of ``y ~ a * x + b (+ plane)`` over a set of pixels needs only the cross-products of
the columns ``[1, u, w, x, y]`` over them (``u, w`` the centred, scaled pixel coordinates):
:class:`PixelDesign` holds these columns for a list of pixels (the pixels offered to a
fit, or a subsample of an overlap), :class:`GridDesign` for two co-registered images at
full resolution.  Both give the moment matrix of any set of used pixels and of each
spatial block, the residuals of a relation and their RMS.  :func:`solve_moments` turns
moment matrices into the Deming slope, the offset, the plane and the planar moments
(vectorised over leading axes, so that the delete-one-block jackknife is one call), and
:func:`fit_uncertainties` into analytic uncertainties, replaced by the block jackknife
where that is larger.  The moment sums are accumulated once per spatial block, so the fit, the
jackknife and the clipping iterations are a few vectorised passes over the pixels.

:class:`FitSettings` holds what one fit hands to its solve, its clipping
(:mod:`.clipping`) and its status tests (:func:`~.regression.fit_pair`).
"""

import math
from dataclasses import dataclass

import numpy as np

from .._stats import median
from .outliers import grown_outliers

__all__ = ["FitSettings", "PixelDesign", "GridDesign", "solve_moments", "spatial_blocks",
           "fit_uncertainties", "noise_ratio_bias", "noise_ratio_uncertainty",
           "NOISE_RATIO_FLOOR", "sample_indices"]

#: Relative uncertainty of a noise variance ratio that does not shrink with the pixel
#: count (noise that is not quite white, faint sources in the second differences).
NOISE_RATIO_FLOOR = 0.02
#: Relative uncertainty of a noise variance measured on ``n`` pixels: ``this / sqrt(n)``.
_NOISE_VAR_ERROR = 2.0


@dataclass(frozen=True)
class FitSettings:
    """Settings of one pairwise fit, shared by its solve, its clipping and its status tests.

    Attributes
    ----------
    model : {'offset', 'plane'}
    origin : tuple of float
        ``(x0, y0)`` at which ``b`` and the plane are expressed.
    lam : float
        Noise variance ratio ``noise_y**2 / noise_x**2`` of the Deming slope.
    noise_x, noise_y : float or None
        Per-pixel noise sigmas that scale the residuals of the clipping; ``None`` when the
        noise is unknown (the residuals are then scaled by their robust spread alone).
    kappa, max_iter, min_pixels, grow_kappa, min_signal_to_noise, max_rel_gain_error
        As in :func:`~.regression.fit_pair` (``min_pixels`` at least 8, ``max_iter`` an
        int).
    noise_ratio_error : float or None
        Relative uncertainty of ``lam`` (see :func:`noise_ratio_bias`); None: from
        ``noise_counts`` (:func:`noise_ratio_uncertainty`).
    noise_counts : tuple
        Pixels behind each estimated noise (``None`` for a given noise).

    Examples
    --------
    >>> s = FitSettings(model="plane", origin=(0.0, 0.0), lam=1.0, kappa=4.0, max_iter=10,
    ...                 min_pixels=500, grow_kappa=2.0, min_signal_to_noise=0.0,
    ...                 max_rel_gain_error=0.25)
    >>> s.plane, s.noise_x
    (True, None)
    """

    model: str
    origin: tuple
    lam: float
    kappa: float
    max_iter: int
    min_pixels: int
    grow_kappa: object
    min_signal_to_noise: float
    max_rel_gain_error: float
    noise_x: object = None
    noise_y: object = None
    noise_ratio_error: object = None
    noise_counts: tuple = (None, None)

    @property
    def plane(self):
        """True for ``model='plane'``."""
        return self.model == "plane"


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


def _moment_matrix(cols):
    """``Z.T @ Z`` of the columns ``cols`` (an ``(m, n)`` array, one row per column).

    One ``einsum`` (numpy's own loops, the same sums as a dot product of each pair of rows
    up to ~8 000 pixels, rounding beyond): a multi-threaded BLAS call on a tall, thin
    matrix is no faster and stalls when the cores are busy.
    """
    return np.einsum("ki,li->kl", cols, cols)


def _distinct(c):
    """``np.unique(c, return_inverse=True)`` of integer-valued coordinates, by counting
    (no sort) when they span at most a few times as many values as there are pixels.

    Examples
    --------
    >>> u, i = _distinct(np.array([7.0, 3.0, 7.0, 5.0]))
    >>> u.tolist(), i.tolist()
    ([3.0, 5.0, 7.0], [2, 0, 2, 1])
    """
    lo = float(c.min())
    span = int(c.max() - lo) + 1
    if span > 4 * c.size + 1024:
        return np.unique(c, return_inverse=True)
    k = (c - lo).astype(np.intp)
    present = np.zeros(span, dtype=bool)
    present[k] = True
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present) + lo, rank[k]


class PixelDesign:
    """Columns ``[1, u, w, x, y]`` (``u, w`` centred/scaled coordinates) or ``[1, x, y]``.

    With a spatial ``block`` index the pixels are reordered by block (a
    stable sort), so that each block is a contiguous run of rows: the block
    moments of the jackknife are then a few small matrix products.  Every
    statistic of the fit is invariant to the order of the pixels.  The
    moments of all pixels are computed once; the moments of a clipped set
    subtract the (few) clipped pixels from them.
    """

    def __init__(self, x, y, cx, cy, block=None, n_blocks=0):
        self.has_coords = cx is not None
        self.n_blocks = int(n_blocks) if block is not None else 0
        if block is not None:
            order = np.argsort(block.astype(np.int16 if n_blocks < 2 ** 15 else np.int64),
                               kind="stable")
            x, y, cx, cy = x[order], y[order], cx[order], cy[order]
            counts = np.bincount(block, minlength=self.n_blocks)
            self.bounds = np.concatenate([[0], np.cumsum(counts)])
        self.xv, self.yv = x, y
        self.x_shift = median(x)
        self.y_shift = median(y)
        self.m = 5 if self.has_coords else 3
        Z = np.empty((self.m, x.size))  # one contiguous row per column of the design
        Z[0] = 1.0
        if self.has_coords:
            self.cx, self.cy = cx, cy
            self.cx0, self.cy0 = float(cx.mean()), float(cy.mean())
            self.sx = max(float(cx.std()), 1.0)
            self.sy = max(float(cy.std()), 1.0)
            np.subtract(cx, self.cx0, out=Z[1])
            Z[1] /= self.sx
            np.subtract(cy, self.cy0, out=Z[2])
            Z[2] /= self.sy
        np.subtract(x, self.x_shift, out=Z[-2])
        np.subtract(y, self.y_shift, out=Z[-1])
        self.Zt = Z
        self.M_all = _moment_matrix(Z)

    @property
    def size(self):
        return self.Zt.shape[1]

    def thinned(self, k):
        """Every ``k``-th pixel of the design, centred, scaled and shifted as this one.

        The pixels are in block or raster order, so every ``k``-th one is a spatially even
        share; a solution of either design reads the same in both (:func:`solve_moments`).

        Parameters
        ----------
        k : int
            Step, >= 1.

        Returns
        -------
        PixelDesign
            Without blocks and without neighbours (no grown outliers).
        """
        sub = object.__new__(PixelDesign)
        sub.has_coords, sub.n_blocks, sub.m = self.has_coords, 0, self.m
        sub.xv, sub.yv = self.xv[::k], self.yv[::k]
        sub.x_shift, sub.y_shift = self.x_shift, self.y_shift
        if self.has_coords:
            sub.cx, sub.cy = self.cx[::k], self.cy[::k]
            sub.cx0, sub.cy0, sub.sx, sub.sy = self.cx0, self.cy0, self.sx, self.sy
        sub.Zt = np.ascontiguousarray(self.Zt[:, ::k])
        sub.M_all = _moment_matrix(sub.Zt)
        sub._raster_cache = None
        return sub

    def _raster(self):
        """``(flat, shape, radius)``: the pixels on the grid of their distinct coordinates.

        Neighbours on that grid are neighbouring pixels of a dense (or regularly
        strided) set of pixels; ``None`` without coordinates, with non-integer
        coordinates or when the pixels fill less than a quarter of the grid.
        ``flat`` holds the pixels' flat indices in that ``shape`` and ``radius`` the
        dilation of :func:`grown_outliers` (0 on a strided grid).
        """
        if not hasattr(self, "_raster_cache"):
            self._raster_cache = None
            if self.has_coords and self.size >= 9 \
                    and np.array_equal(self.cx, np.round(self.cx)) \
                    and np.array_equal(self.cy, np.round(self.cy)):
                ux, cols = _distinct(self.cx)
                uy, rows = _distinct(self.cy)
                if ux.size * uy.size <= 4 * self.size:
                    # neighbours on a strided grid are several pixels apart: no dilation
                    dense = bool(np.all(np.diff(ux) == 1) and np.all(np.diff(uy) == 1))
                    self._raster_cache = (rows.ravel() * ux.size + cols.ravel(),
                                          (uy.size, ux.size), None if dense else 0)
        return self._raster_cache

    def coherent_outliers(self, d, finite, kappa, grow_kappa):
        """Pixels joined to a ``|d| > kappa`` outlier through ``|d| > grow_kappa`` ones.

        ``d`` is the standardised residual of every pixel; see :func:`grown_outliers`.
        """
        raster = self._raster()
        if raster is None:
            return np.zeros(self.size, dtype=bool)
        flat, shape, radius = raster
        with np.errstate(invalid="ignore"):
            if not np.any(finite & (np.abs(d) > kappa)):
                return np.zeros(self.size, dtype=bool)
        img = np.zeros(shape)
        img.ravel()[flat] = d
        ok = np.zeros(shape, dtype=bool)
        ok.ravel()[flat] = finite
        return np.take(grown_outliers(img, ok, kappa, grow_kappa, radius=radius), flat)

    def moments(self, used):
        """Moment matrix ``Z.T @ Z`` of the used pixels."""
        n_out = self.size - int(np.count_nonzero(used))
        if n_out == 0:
            return self.M_all.copy()
        if 2 * n_out < self.size:
            return self.M_all - _moment_matrix(self.Zt[:, ~used])
        return _moment_matrix(self.Zt[:, used])

    def residuals(self, sol, plane, shift=0.0):
        """``y - (a x + b_c + p . (r - centroid)) - shift`` for every pixel (a new array)."""
        v = self.yv - float(sol["a"]) * self.xv
        v -= float(sol["b_c"]) + shift
        if plane:
            (p0, p1), (c0, c1) = sol["p"], sol["centroid"]
            v -= float(p0) * (self.cx - float(c0))
            v -= float(p1) * (self.cy - float(c1))
        return v

    def rms(self, sol, plane, used):
        """RMS of the residuals of the used pixels."""
        v = self.residuals(sol, plane)[used]
        return float(np.sqrt(np.mean(v * v)))

    def block_moments(self, used):
        """Per-block moment matrices ``(K, m, m)`` of the used pixels."""
        out = np.zeros((self.n_blocks, self.m, self.m))
        for k in range(self.n_blocks):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            if hi == lo:
                continue
            Zk, uk = self.Zt[:, lo:hi], used[lo:hi]
            if not uk.all():
                Zk = Zk[:, uk]
            out[k] = _moment_matrix(Zk)
        return out


class GridDesign:
    """Full-resolution moments of two co-registered images (the polish of a fit).

    The same columns ``[1, u, w, x, y]`` as the subsample's :class:`PixelDesign`
    ``ref`` (same centring, scaling and shifts, so :func:`solve_moments` reads both
    alike), but the pixels are the ``(h, w)`` images themselves and ``used``
    is an ``(h, w)`` mask.  The moment sums of all spatial blocks come from
    sums along each row inside each column block (``einsum``, no temporary
    products; in the images' precision, float32 for float32 tiles, whose
    vectorised accumulation is good to ~1e-7), added up over the rows of each
    row block in float64 with the coordinate weights: a few read passes over
    the pixels.  The residuals (only compared with the clipping threshold) are
    computed in the images' precision as well.
    """

    def __init__(self, X, Y, valid, x0, y0, ref, n_blocks):
        h, w = X.shape
        self.has_coords = True
        self.m = 5
        dt = X.dtype.type
        # shifts representable in the images' precision, so that the shifted values are exact
        self.x_shift, self.y_shift = float(dt(ref.x_shift)), float(dt(ref.y_shift))
        self.cx0, self.cy0, self.sx, self.sy = ref.cx0, ref.cy0, ref.sx, ref.sy
        self.finite = valid
        self.X, self.Y = X, Y
        self.xs = float(x0) + np.arange(w, dtype=np.float64)
        self.ys = float(y0) + np.arange(h, dtype=np.float64)
        self.u = (self.xs - self.cx0) / self.sx
        self.v = (self.ys - self.cy0) / self.sy
        k = max(int(n_blocks), 1)
        nbx = min(int(max(1, round(math.sqrt(k * w / h)))), k, w)
        nby = min(int(max(1, round(k / nbx))), h)
        self.nbx, self.nby = nbx, nby
        self.n_blocks = nbx * nby if n_blocks >= 4 else 0
        # first column / row of each block (no empty block: nbx <= w, nby <= h)
        self.col_edges = np.append(-(-np.arange(nbx) * w // nbx), w)
        self.row_starts = -(-np.arange(nby) * h // nby)
        self._cache = (None, None)

    @property
    def size(self):
        return self.X.size

    def residuals(self, sol, plane, shift=0.0):
        """``y - (a x + b_c + p . (r - centroid)) - shift`` of every pixel, ``(h, w)``.

        In the precision of the images (garbage where not ``finite``).
        """
        dt = self.X.dtype
        a = float(sol["a"])
        out = self.Y - dt.type(a) * self.X
        const = -float(sol["b_c"]) - shift
        if plane:
            (p0, p1), (c0, c1) = sol["p"], sol["centroid"]
            out -= (float(p0) * (self.xs - float(c0)) - const).astype(dt)[np.newaxis, :]
            out -= (float(p1) * (self.ys - float(c1))).astype(dt)[:, np.newaxis]
        else:
            out += dt.type(const)
        return out

    def block_moments(self, used):
        """Moment matrices ``(K, 5, 5)`` of the used pixels of each spatial block."""
        if self._cache[0] is used:
            return self._cache[1]
        nbx, nby = self.nbx, self.nby
        h, w = used.shape
        unused = ~used
        dt = self.X.dtype.type
        # shifted values of the used pixels, 0 elsewhere, in the images' precision: the sums
        # along each row of a column block (einsum's vectorised accumulation, relative error
        # ~1e-7 in float32) are then added up in float64
        Xk = self.X - dt(self.x_shift)
        Xk[unused] = 0
        Yk = self.Y - dt(self.y_shift)
        Yk[unused] = 0
        Kf = used.astype(self.X.dtype)
        u, v, rs = self.u.astype(self.X.dtype), self.v, self.row_starts
        # per row and column block: count, sum u, sum u^2, sum x, sum u x, sum y, sum u y,
        # sum x^2, sum x y, sum y^2  ->  rows (10, h, nbx)
        if w % nbx == 0:   # equal column blocks: one call per sum over (h, nbx, w / nbx)
            shape = (h, nbx, w // nbx)
            k, a, b = Kf.reshape(shape), Xk.reshape(shape), Yk.reshape(shape)
            U = u.reshape(nbx, -1)
            rows = np.stack([
                k.sum(axis=2), np.einsum("ijk,jk->ij", k, U), np.einsum("ijk,jk->ij", k, U * U),
                a.sum(axis=2), np.einsum("ijk,jk->ij", a, U),
                b.sum(axis=2), np.einsum("ijk,jk->ij", b, U),
                np.einsum("ijk,ijk->ij", a, a), np.einsum("ijk,ijk->ij", a, b),
                np.einsum("ijk,ijk->ij", b, b)])
        else:
            rows = np.empty((10, h, nbx))
            for j in range(nbx):
                J = slice(self.col_edges[j], self.col_edges[j + 1])
                k, a, b, uj = Kf[:, J], Xk[:, J], Yk[:, J], u[J]
                rows[:, :, j] = np.stack([
                    k.sum(axis=1), np.einsum("ij,j->i", k, uj),
                    np.einsum("ij,j->i", k, uj * uj),
                    a.sum(axis=1), np.einsum("ij,j->i", a, uj),
                    b.sum(axis=1), np.einsum("ij,j->i", b, uj),
                    np.einsum("ij,ij->i", a, a), np.einsum("ij,ij->i", a, b),
                    np.einsum("ij,ij->i", b, b)])
        rows = rows.astype(np.float64)
        # over the rows of each row block, weighted by 1, and by v, v^2 where needed
        S = np.add.reduceat(rows, rs, axis=1)                                  # (10, nby, nbx)
        Sv = np.add.reduceat(rows[[0, 0, 1, 3, 5]]
                             * np.stack([v, v * v, v, v, v])[:, :, np.newaxis], rs, axis=1)
        M = np.empty((nby, nbx, 5, 5))
        M[..., 0, 0] = S[0]
        M[..., 0, 1] = M[..., 1, 0] = S[1]
        M[..., 1, 1] = S[2]
        M[..., 0, 2] = M[..., 2, 0] = Sv[0]
        M[..., 2, 2] = Sv[1]
        M[..., 1, 2] = M[..., 2, 1] = Sv[2]
        M[..., 0, 3] = M[..., 3, 0] = S[3]
        M[..., 1, 3] = M[..., 3, 1] = S[4]
        M[..., 2, 3] = M[..., 3, 2] = Sv[3]
        M[..., 0, 4] = M[..., 4, 0] = S[5]
        M[..., 1, 4] = M[..., 4, 1] = S[6]
        M[..., 2, 4] = M[..., 4, 2] = Sv[4]
        M[..., 3, 3] = S[7]
        M[..., 3, 4] = M[..., 4, 3] = S[8]
        M[..., 4, 4] = S[9]
        M = M.reshape(nby * nbx, 5, 5)
        self._cache = (used, M)
        return M

    def coherent_outliers(self, d, finite, kappa, grow_kappa):
        """Pixels joined to a ``|d| > kappa`` outlier through ``|d| > grow_kappa`` ones."""
        return grown_outliers(d, finite, kappa, grow_kappa)

    def moments(self, used):
        """Moment matrix of the used pixels (the sum of the block moments)."""
        return self.block_moments(used).sum(axis=0)

    def rms(self, sol, plane, used):
        """RMS of the residuals of the used pixels, from their moments."""
        M = self.moments(used)
        a = float(sol["a"])
        p0 = p1 = c0 = c1 = 0.0
        if plane:
            p0, p1 = (float(t) for t in sol["p"])
            c0, c1 = (float(t) for t in sol["centroid"])
        beta = np.array([self.y_shift - a * self.x_shift - float(sol["b_c"])
                         - p0 * (self.cx0 - c0) - p1 * (self.cy0 - c1),
                         -p0 * self.sx, -p1 * self.sy, -a, 1.0])
        n = M[0, 0]
        return float(np.sqrt(max(float(beta @ M @ beta), 0.0) / n)) if n > 0 else math.nan


def solve_moments(M, design, settings, a_fixed=None):
    """Fit quantities from moment matrices (vectorised over leading axes)."""
    lam, plane = settings.lam, settings.plane
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
        lever = out["centroid"] - np.asarray(settings.origin, dtype=np.float64)
        out["p"] = p
        out["b"] = out["b_c"] - (p * lever).sum(axis=-1)
    else:
        out["p"] = np.zeros(np.shape(n) + (2,))
        out["b"] = out["b_c"]
    return out


def _grid_strides(n, max_pixels, tall):
    """Row and column strides ``(sy, sx)`` with ``sy * sx <= n / max_pixels``.

    Near-equal factors (``floor(sqrt(k))`` and ``floor(k / that)`` for ``k =
    n / max_pixels``), so that the grid still holds at least ``max_pixels``
    pixels (evenly thinned to exactly that many afterwards); the larger
    factor goes along the longer side.
    """
    k = n / float(max_pixels)
    if k < 2.0:
        return 1, 1
    small = max(1, int(math.floor(math.sqrt(k) + 1e-9)))
    big = max(small, int(math.floor(k / small + 1e-9)))
    return (big, small) if tall else (small, big)


def sample_indices(joint, max_pixels, how="grid", rng=None):
    """Row/column indices (inside the overlap) of the pixels offered to a fit's clipping.

    ``'grid'``: a regular grid of strides ``(sy, sx)`` over the overlap (the
    same pixels every run, memmap-friendly rows, a fair share of the star
    pixels), then exactly ``max_pixels`` evenly spaced ones of its valid pixels.
    ``'random'``: a uniform random draw.
    """
    n = int(np.count_nonzero(joint))
    if max_pixels is None or n <= max_pixels:
        iy, ix = np.nonzero(joint)
        return iy, ix
    if how == "random":
        iy, ix = np.nonzero(joint)
        pick = np.sort(rng.choice(iy.size, size=int(max_pixels), replace=False))
        return iy[pick], ix[pick]
    h, w = joint.shape
    sy, sx = _grid_strides(n, max_pixels, tall=h >= w)
    y0, x0 = (sy - 1) // 2, (sx - 1) // 2
    iy, ix = np.nonzero(joint[y0::sy, x0::sx])
    iy, ix = iy * sy + y0, ix * sx + x0
    if iy.size > max_pixels:
        pick = np.linspace(0, iy.size - 1, int(max_pixels)).round().astype(np.int64)
        iy, ix = iy[pick], ix[pick]
    return iy, ix


def spatial_blocks(cx, cy, n_blocks):
    """Spatial block index of each pixel: a near-square grid of about ``n_blocks`` cells."""
    w = float(cx.max() - cx.min()) + 1.0
    h = float(cy.max() - cy.min()) + 1.0
    nbx = int(max(1, round(math.sqrt(n_blocks * w / h))))
    nbx = min(nbx, n_blocks)
    nby = int(max(1, round(n_blocks / nbx)))
    bx = np.minimum(((cx - cx.min()) / w * nbx).astype(np.int64), nbx - 1)
    by = np.minimum(((cy - cy.min()) / h * nby).astype(np.int64), nby - 1)
    return by * nbx + bx, nbx * nby


def _jackknife(design, used, settings, a_fixed):
    """Delete-one-block jackknife standard errors of a, b, px, py (None if < 4 blocks)."""
    Mk = design.block_moments(used)
    counts = Mk[:, 0, 0]
    keep = counts > 0
    if keep.sum() < 4:
        return None
    Mk = Mk[keep]
    loo = Mk.sum(axis=0)[np.newaxis] - Mk
    # a deleted block may leave too little spread in the coordinates to fit a plane
    with np.errstate(all="ignore"):
        try:
            rep = solve_moments(loo, design, settings, a_fixed)
        except np.linalg.LinAlgError:
            return None
    K = loo.shape[0]

    def se(v):
        v = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            return math.nan
        return float(np.sqrt((K - 1) / K * np.sum((v - v.mean(axis=0)) ** 2, axis=0)))

    out = {"a": se(rep["a"]), "b": se(rep["b"])}
    if settings.plane:
        out["px"] = se(rep["p"][:, 0])
        out["py"] = se(rep["p"][:, 1])
    return out



def noise_ratio_bias(a, signal_var, noise_x, noise_y, rel_error):
    """Systematic uncertainty of a Deming slope from a misestimated noise ratio.

    The Deming slope solves ``f(a, lam) = sxy a^2 + (lam sxx - syy) a - lam sxy = 0``.  With
    the population moments ``sxx = S + nx^2``, ``syy = a^2 S + ny^2``, ``sxy = a S`` (``S``
    the signal variance, ``nx``, ``ny`` the noise sigmas, ``lam = ny^2 / nx^2``)::

        df/dlam = a sxx - sxy = a nx^2        df/da = 2 a sxy + lam sxx - syy = S (a^2 + lam)

    so a relative error ``d`` of ``lam`` moves the slope by ``da = -(df/dlam)/(df/da) lam d``::

        da / a = -d * nx^2 ny^2 / (S * (a^2 nx^2 + ny^2))

    It grows like noise^2 / signal^2: ``d / (2 snr^2)`` for ``a = 1`` and equal noises
    (0.56 % for ``d = 10 %`` at a signal-to-noise of 3).  This is the error the fit's own
    statistics cannot see (the ratio is held fixed); it is added in quadrature to them.

    Parameters
    ----------
    a, signal_var : float
        Slope and signal variance ``S``.
    noise_x, noise_y : float
    rel_error : float
        Relative uncertainty of ``lam``.

    Returns
    -------
    float
        ``|da|`` (infinite when there is no signal).

    Examples
    --------
    >>> round(noise_ratio_bias(1.0, 9.0, 1.0, 1.0, 0.1), 5)
    0.00556
    """
    if not signal_var > 0:
        return math.inf
    den = signal_var * (a * a * noise_x ** 2 + noise_y ** 2)
    if not den > 0:
        return math.inf
    return abs(a) * rel_error * noise_x ** 2 * noise_y ** 2 / den


def noise_ratio_uncertainty(n_x=None, n_y=None, *, correlation=1.0):
    """Relative uncertainty of a noise variance ratio whose noises were measured.

    A noise measured from second differences of ``n`` pixels of white noise has a variance
    uncertain by about ``2 / sqrt(n)`` (relative; on binned frame overlaps the ratio came
    out within ``2.4-2.8 / sqrt(n)`` of the truth), and a ratio of two such variances by
    their quadratic sum.  Correlated noise (blurred, resampled images) holds fewer
    independent samples: ``correlation`` (the factor by which second differences
    underestimate the noise) multiplies that part (on debayered frames blurred by 2 px,
    1.5 and ``3.7 / sqrt(n)`` measured).  :data:`NOISE_RATIO_FLOOR` is added in quadrature.

    Parameters
    ----------
    n_x, n_y : int or None
        Pixels behind each noise estimate (``None``: given, not estimated).
    correlation : float
        >= 1; see above.

    Returns
    -------
    float

    Examples
    --------
    >>> round(noise_ratio_uncertainty(3600, 3600), 3), noise_ratio_uncertainty()
    (0.051, 0.02)
    """
    var = 0.0
    for n in (n_x, n_y):
        if n is not None:
            var += _NOISE_VAR_ERROR ** 2 / max(float(n), 1.0)
    return math.sqrt(NOISE_RATIO_FLOOR ** 2 + var * max(float(correlation), 1.0) ** 2)


def fit_uncertainties(design, used, sol, settings, a_fixed=None, sigma_a_extra=0.0):
    """Analytic uncertainties, replaced by the block jackknife where that is larger.

    ``sigma_a_extra`` (the systematic part of the gain's uncertainty) is
    added in quadrature to the gain's sigma, and carried into the offset and the plane.
    """
    lam, plane = settings.lam, settings.plane
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
    extra = float(sigma_a_extra) ** 2
    out["a"] = math.sqrt(var_a)
    var_bc = s_vv / n + float(sol["x_mean"]) ** 2 * (var_a + extra)
    if plane:
        M = sol["M"] if "M" in sol else design.moments(used)
        Ainv = np.linalg.pinv(M[:3, :3])
        scale = np.array([design.sx, design.sy])
        var_p = (s_vv * np.diag(Ainv)[1:3] / scale ** 2
                 + np.asarray(sol["x_slope"]) ** 2 * (var_a + extra))
        lever = np.asarray(sol["centroid"]) - np.asarray(settings.origin)
        out["px"], out["py"] = (float(v) for v in np.sqrt(var_p))
        out["b"] = math.sqrt(var_bc + float(np.sum(lever ** 2 * var_p)))
    else:
        out["px"] = out["py"] = 0.0
        out["b"] = math.sqrt(var_bc)
    if design.n_blocks:
        jk = _jackknife(design, used, settings, a_fixed)
        if jk is not None:
            for key, value in jk.items():
                if math.isfinite(value) and (key != "a" or a_fixed is None):
                    out[key] = max(out[key], value)
    out["a"] = math.sqrt(out["a"] ** 2 + extra)
    return out
