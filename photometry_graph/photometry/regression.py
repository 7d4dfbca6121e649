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
misregistration), and gives the gain an honest uncertainty: the statistical part
(analytic, or a block jackknife when larger) and the systematic part of a misestimated
noise ratio, which grows like noise^2 / signal^2 (:func:`~.moments.noise_ratio_bias`).
A faint overlap thus gives a gain with a large sigma, which counts little in a weighted
solve, rather than no gain at all.  Outliers are spatially coherent: a clipped pixel takes along
the pixels joined to it by residuals beyond ``grow_kappa`` and a one-pixel
ring (hysteresis, as in source segmentation), so the faint wings of a trail
do not stay in the fit.  Iterative clipping can converge to a wrong,
self-consistent relation (a trail pulls the first slope off, the stars are
clipped, the trail's remains hold the slope); when the clipped pixels hold
much of the signal common to both images, a scan of gain ratios scored by a
Tukey biweight loss checks for a better one.  Only a degenerate overlap (no signal range
at all, src and dst not positively correlated, or a gain uncertainty above
``max_rel_gain_error``, 25 % by default) has its offset fitted alone, and the fit says so
(``status='offset_only'``).  A gain measured elsewhere (from stars) is imposed with
:meth:`PairwiseFit.at_gain`: the offsets and the plane follow at that gain from the
moments of the fit's pixels.

Every fit also carries the *planar moments* of the two images over the pixels
it used (centroid, means, plane slopes).  They let a global solve write, for
any edge and without knowing the gain ratio of that edge::

    g_src * (x_mean + x_slope . (r - centroid)) + O_src(r)
        = g_dst * (y_mean + y_slope . (r - centroid)) + O_dst(r)

All moment sums are accumulated once per spatial block, so the fit itself, the
block jackknife of its uncertainties and the clipping iterations are a few
vectorised passes over the pixels.

This module holds the public entry points (:class:`PairwiseFit`, :func:`fit_pair`,
:func:`fit_pair_image`, :func:`fit_ols`); the steps they run live in the order of the
algorithm in :mod:`photometry_graph._stats` (the noise of each image),
:mod:`.outliers` (coherent outliers of a residual image), :mod:`.moments` (the fit
settings, the moment sums, the solve and the uncertainties) and :mod:`.clipping` (the
clipping iterations and the scan of gain ratios).
"""

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from .._json import jsonable
from .._log import get_logger, grid_debug
from .._stats import NOISE_ESTIMATORS, image_noise, robust_noise_1d, split_coords
from .clipping import clip_and_polish
from .moments import (FitSettings, GridDesign, PixelDesign, fit_uncertainties,
                      noise_ratio_bias, noise_ratio_uncertainty, sample_indices,
                      spatial_blocks)
from .outliers import grown_outliers  # noqa: F401 (re-exported: tests and users import it here)

# NOISE_ESTIMATORS and robust_noise_1d (from _stats) are exported from here as before the split
__all__ = ["PairwiseFit", "FIT_STATUSES", "FIT_MODELS", "SUBSAMPLE_METHODS", "fit_pair",
           "fit_pair_image", "fit_ols", "NOISE_ESTIMATORS", "robust_noise_1d",
           "MAX_REL_GAIN_ERROR", "check_sampling"]

logger = get_logger(__name__)

#: Possible values of :attr:`PairwiseFit.status`.
FIT_STATUSES = ("ok", "offset_only", "failed")
#: Possible values of the ``model`` argument of :func:`fit_pair`.
FIT_MODELS = ("offset", "plane")

_NAN2 = (math.nan, math.nan)

#: Default ``max_rel_gain_error``: a gain with a larger relative sigma is degenerate.
MAX_REL_GAIN_ERROR = 0.25


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
    sigma_a_sys : float
        The part of ``sigma_a`` (added in quadrature) from the uncertainty of the noise
        ratio (:func:`~.moments.noise_ratio_bias`).
    a_pixels, sigma_a_pixels : float
        The gain of the pixel (Deming) estimator and its sigma (NaN and inf when it gave
        none); equal to ``a`` and ``sigma_a`` unless another estimate was combined in.
    a_stars, sigma_a_stars : float
        The gain from the flux ratio of matched stars and its sigma (NaN and inf when not
        measured or not usable).
    n_stars : int
        Stars used by the star estimate (0 when not measured).
    gain_source : {'pixels', 'stars', 'combined', 'none'}
        Where ``a`` comes from (``'none'``: no gain, the fit is not ``'ok'``).
    gain_disagree : bool
        The pixel and star gains differ by more than 3 sigma (the stars were trusted).

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
    sigma_a_sys: float = 0.0
    # the estimators of the gain (overlap.fit_edge_channel): pixels, stars, the source of a
    gain_source: str = "pixels"
    gain_disagree: bool = False
    a_pixels: float = math.nan
    sigma_a_pixels: float = math.inf
    n_stars: int = 0
    a_stars: float = math.nan
    sigma_a_stars: float = math.inf

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

    def at_gain(self, a, sigma_a=math.inf, status="ok", **changes):
        """A copy with the gain set to ``a`` and the offset terms taken from the moments.

        ``b`` and the plane follow from the moments of the same used pixels (see the
        Notes of the class): ``(px, py) = y_slope - a x_slope`` (plane model) and ``b``
        is ``y_mean - a x_mean`` moved from the centroid to ``origin``.  ``changes`` sets
        further fields.
        """
        out = replace(self, a=float(a), sigma_a=float(sigma_a), status=status, **changes)
        if self.model == "plane":
            out.px, out.py = (float(ys - a * xs) for xs, ys in zip(self.x_slope, self.y_slope))
        lever = [c - o for c, o in zip(self.centroid, self.origin)] \
            if self.model == "plane" else (0.0, 0.0)
        out.b = float(self.y_mean - a * self.x_mean - out.px * lever[0] - out.py * lever[1])
        return out

    def to_dict(self):
        """JSON-friendly dict (tuples become lists, NaN and infinities become ``None``)."""
        return jsonable({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def failed(cls, message, *, src=None, dst=None, channel=0, n_total=0, n_used=0,
               origin=(0.0, 0.0), model="offset"):
        """A ``'failed'`` fit: neutral relation, infinite uncertainties, NaN moments."""
        return cls(src=src, dst=dst, channel=channel, n_total=int(n_total), n_used=int(n_used),
                   status="failed", message=str(message),
                   origin=(float(origin[0]), float(origin[1])), model=model,
                   gain_source="none")


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


# --------------------------------------------------------------------------- main entry


def fit_pair(x, y, *, coords=None, noise_x=None, noise_y=None, model="offset",
             origin=(0.0, 0.0), kappa=4.0, max_iter=10, min_pixels=500,
             min_signal_to_noise=0.0, max_rel_gain_error=MAX_REL_GAIN_ERROR,
             noise_ratio_error=None, n_blocks=16, grow_kappa=2.0, src=None, dst=None,
             channel=0):
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
        :func:`photometry_graph.estimate_noise` on the image region).
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
        A hard threshold, off by default (0): the gain is fitted only when
        ``sqrt(var(x) - noise_x**2) / noise_x`` (signal spread over noise, after removing
        the plane for ``model='plane'``) reaches this value; otherwise
        ``status='offset_only'``.  The honest ``sigma_a`` (statistical and systematic,
        see ``noise_ratio_error``) already makes a faint overlap count little.
    max_rel_gain_error : float
        ``sigma_a / a`` above this gives ``status='offset_only'``: the floor for
        degenerate fits (25 % by default); an overlap with no signal range at all, or
        whose src and dst are not positively correlated, is offset-only too.
    noise_ratio_error : float, optional
        Relative uncertainty of the noise variance ratio ``noise_y**2 / noise_x**2``,
        whose systematic effect on the gain (:func:`~.moments.noise_ratio_bias`,
        growing like noise^2 / signal^2) is added to ``sigma_a``.  Default: from the
        number of pixels each estimated noise was measured on
        (:func:`~.moments.noise_ratio_uncertainty`; a floor of
        :data:`~.moments.NOISE_RATIO_FLOOR` for a given one).
    n_blocks : int
        Number of spatial blocks of the jackknife (used when ``coords`` are given).
    grow_kappa : float or None
        Spatially coherent outliers: a clipped pixel also removes the pixels
        connected to it through pixels whose scaled residual exceeds
        ``grow_kappa`` (8-neighbours, on the grid of the distinct ``coords``),
        and the ring of pixels around them (:func:`grown_outliers`): the wings of
        a trail or of a star that differs, which would otherwise stay in the
        fit and bias the gain.  Needs integer ``coords`` of a dense or
        regularly strided set of pixels; ``None`` (or ``>= kappa``) switches
        it off.
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
    return _fit_arrays(x, y, coords=coords, noise_x=noise_x, noise_y=noise_y, model=model,
                       origin=origin, kappa=kappa, max_iter=max_iter, min_pixels=min_pixels,
                       min_signal_to_noise=min_signal_to_noise,
                       max_rel_gain_error=max_rel_gain_error,
                       noise_ratio_error=noise_ratio_error, n_blocks=n_blocks,
                       grow_kappa=grow_kappa, src=src, dst=dst, channel=channel)


def _fit_arrays(x, y, *, coords, noise_x, noise_y, model, origin, kappa, max_iter, min_pixels,
                min_signal_to_noise, max_rel_gain_error, n_blocks, src, dst, channel,
                noise_ratio_error=None, grow_kappa=2.0, images=None,
                noise_counts=(None, None)):
    """:func:`fit_pair`; ``images`` ``(X, Y, valid, x0, y0)``: the pixels to polish on.

    ``noise_counts``: pixels behind each noise measured by the caller (None: given).
    """
    if model not in FIT_MODELS:
        raise ValueError(f"model must be one of {FIT_MODELS}, got {model!r}")
    if not kappa > 0:
        raise ValueError(f"kappa must be positive, got {kappa!r}")
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}")
    if int(n_blocks) < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks!r}")
    if grow_kappa is not None and not grow_kappa > 0:
        raise ValueError(f"grow_kappa must be positive or None, got {grow_kappa!r}")
    plane = model == "plane"
    origin = (float(origin[0]), float(origin[1]))
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same number of pixels, got {x.size} and {y.size}")
    cx = cy = None
    if coords is not None:
        cx, cy = split_coords(coords, x.size)
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
    n_x, n_y = noise_counts
    if noise_x is None:
        noise_x, n_x = robust_noise_1d(x, coords_f), x.size
    if noise_y is None:
        noise_y, n_y = robust_noise_1d(y, coords_f), y.size
    noise_known = math.isfinite(noise_x) and math.isfinite(noise_y)
    if not noise_known:  # an unknown noise: the ratio is a guess (1), uncertain by 100 %
        noise_ratio_error = 1.0
    if noise_known and noise_x > 0 and noise_y > 0:
        lam = min(max(noise_y ** 2 / noise_x ** 2, 1e-6), 1e6)
    elif noise_known and noise_x == 0 and noise_y == 0:
        lam = 1.0
    elif noise_known:
        lam = 1e6 if noise_x == 0 else 1e-6
    else:
        lam = 1.0
        notes.append("noise could not be estimated; noise ratio assumed 1")

    block = n_cells = None
    if cx is not None and n_blocks >= 4 and images is None:  # (polished: jackknife on all)
        block, n_cells = spatial_blocks(cx, cy, int(n_blocks))
    design = PixelDesign(x, y, cx, cy, block, n_cells)
    polish = None
    if images is not None:  # from fit_pair_image: x, y are a subsample of these images
        X, Y, valid, x0, y0 = images
        polish = GridDesign(X, Y, valid, x0, y0, design, n_blocks)
        n_total = int(np.count_nonzero(polish.finite))
    settings = FitSettings(
        model=model, origin=origin, lam=lam, kappa=kappa, max_iter=int(max_iter),
        min_pixels=min_pixels, grow_kappa=grow_kappa, min_signal_to_noise=min_signal_to_noise,
        max_rel_gain_error=max_rel_gain_error, noise_x=noise_x if noise_known else None,
        noise_y=noise_y if noise_known else None,
        noise_ratio_error=None if noise_ratio_error is None else float(noise_ratio_error),
        noise_counts=(n_x, n_y))
    return _fit_core(design, polish, settings, notes=notes, n_total=n_total, labels=labels)


def _gain_status(sol, settings, snr, signal_var):
    """``(status, why)`` of a free-gain fit before its uncertainties: the degenerate cases."""
    a = float(sol["a"])
    if snr < settings.min_signal_to_noise:
        return "offset_only", (f"too little signal range to constrain a gain: signal-to-noise "
                               f"{snr:.2f} < min_signal_to_noise={settings.min_signal_to_noise}")
    if not signal_var > 0:
        return "offset_only", "no signal range at all in the overlap: gain undefined"
    if not (math.isfinite(a) and a > 0):
        return "offset_only", "src and dst are not positively correlated: gain undefined"
    return "ok", ""


def _fit_core(design, polish, settings, *, notes, n_total, labels):
    """Clipping, conditioning tests and uncertainties of :func:`fit_pair`.

    ``polish`` (a :class:`GridDesign` holding every pixel of which ``design``
    is a subsample) makes the final estimates full-resolution: the clipping
    iterates on the subsample, its converged rule selects the pixels of the
    whole image, whose moments (and block moments) give the fit
    (:func:`~.clipping.clip_and_polish`).  The gain's sigma is the statistical one
    and the systematic one of the noise ratio (:func:`~.moments.noise_ratio_bias`) in
    quadrature.
    """
    src, dst, channel = labels["src"], labels["dst"], labels["channel"]
    lam, min_pixels = settings.lam, settings.min_pixels
    noise_x, noise_y = settings.noise_x, settings.noise_y
    noise_known = noise_x is not None

    def clipped(a_fixed, why=""):
        design_, used_, sol_ = clip_and_polish(sub, polish, settings, a_fixed)
        if sol_ is None:
            n = int(np.count_nonzero(used_))
            raise _TooFew(f"{why + '; and ' if why else ''}only {n} pixels left after outlier "
                          f"clipping, fewer than min_pixels={min_pixels}", n)
        return design_, used_, sol_

    sub = design
    try:
        design, used, sol = clipped(None)
    except _TooFew as exc:
        return PairwiseFit.failed(exc.args[0], n_total=n_total, n_used=exc.args[1], **labels)
    a = float(sol["a"])
    if not noise_known:
        # noise from the residuals, split with the assumed ratio
        nv = float(sol["resid_var"])
        base = a * a + lam if math.isfinite(a) and a > 0 else 1.0 + lam
        noise_x = math.sqrt(nv / base)
        noise_y = math.sqrt(lam) * noise_x
    # noise that is not white (resampled, blurred, binned images) is underestimated by
    # second differences; the residuals measure its variance (the ratio stays right): the
    # signal, its conditioning and the systematic of the ratio use the larger of the two
    inflate = _noise_inflation(design, used, sol, settings, noise_x, noise_y)
    signal_var = float(sol["sxx"]) - (inflate * noise_x) ** 2
    snr = _snr(signal_var, inflate * noise_x)

    sigma_sys = 0.0
    status, why = _gain_status(sol, settings, snr, signal_var)
    if status == "ok":
        eps = settings.noise_ratio_error
        if eps is None:  # correlated noise: fewer independent samples, by about inflate**2
            eps = noise_ratio_uncertainty(*settings.noise_counts, correlation=inflate)
        sigma_sys = noise_ratio_bias(a, signal_var, inflate * noise_x, inflate * noise_y, eps)
        unc = fit_uncertainties(design, used, sol, settings, sigma_a_extra=sigma_sys)
        rel = unc["a"] / a
        if not rel <= settings.max_rel_gain_error:
            status = "offset_only"
            why = (f"relative gain uncertainty {rel:.3g} (systematic part of the noise ratio "
                   f"{sigma_sys / a:.3g}) exceeds max_rel_gain_error="
                   f"{settings.max_rel_gain_error}")
    if status == "offset_only":
        try:
            design, used, sol = clipped(1.0, why)
        except _TooFew as exc:
            return PairwiseFit.failed(exc.args[0], n_total=n_total, n_used=exc.args[1],
                                      **labels)
        unc = fit_uncertainties(design, used, sol, settings, 1.0)
        unc["a"], sigma_sys = math.inf, 0.0

    fit = _make_fit(design, used, sol, settings, labels, noise=(noise_x, noise_y),
                    unc=unc, status=status, message="; ".join([m for m in [why] + notes if m]),
                    n_total=n_total, snr=snr)
    fit.sigma_a_sys = float(sigma_sys)
    if fit.ok:
        fit.a_pixels, fit.sigma_a_pixels = fit.a, fit.sigma_a
    else:
        fit.gain_source = "none"
    grid_debug(logger, "Photometry: fit %s->%s ch%d: %s a=%.5f±%.2g b=%.4g n=%d/%d %s",
               src, dst, int(channel), status, fit.a, fit.sigma_a, fit.b, fit.n_used, n_total,
               fit.message)
    return fit


class _TooFew(Exception):
    """Too few pixels survived the clipping: ``(message, n_used)``."""


def _noise_inflation(design, used, sol, settings, noise_x, noise_y):
    """``max(1, rms / sqrt(noise_y**2 + a**2 noise_x**2))`` of the used pixels (1 for an
    unknown noise, whose level came from the residuals)."""
    if settings.noise_x is None:
        return 1.0
    a = float(sol["a"])
    expected = math.sqrt(noise_y ** 2 + a * a * noise_x ** 2)
    rms = design.rms(sol, settings.plane, used)
    return max(1.0, rms / expected) if expected > 0 and math.isfinite(rms) else 1.0


def _make_fit(design, used, sol, settings, labels, *, noise, unc, status, message, n_total,
              snr):
    """The :class:`PairwiseFit` of a solved, clipped fit."""
    noise_x, noise_y = noise
    has_coords = design.has_coords
    a = float(sol["a"])
    n_used = int(np.count_nonzero(used))
    rms = design.rms(sol, settings.plane, used)
    inflate = _noise_inflation(design, used, sol, settings, noise_x, noise_y)
    return PairwiseFit(
        src=labels["src"], dst=labels["dst"], channel=int(labels["channel"]), a=a,
        b=float(sol["b"]), px=float(sol["p"][0]), py=float(sol["p"][1]),
        sigma_a=float(unc["a"]), sigma_b=float(unc["b"]),
        sigma_px=float(unc["px"]), sigma_py=float(unc["py"]),
        n_used=n_used, n_total=n_total, rms=rms, status=status, message=message,
        origin=settings.origin,
        centroid=(tuple(float(c) for c in sol["centroid"]) if has_coords else _NAN2),
        x_mean=float(sol["x_mean"]), y_mean=float(sol["y_mean"]),
        x_slope=(tuple(float(c) for c in sol["x_slope"]) if has_coords else _NAN2),
        y_slope=(tuple(float(c) for c in sol["y_slope"]) if has_coords else _NAN2),
        sigma_x_mean=inflate * noise_x / math.sqrt(n_used),
        sigma_y_mean=inflate * noise_y / math.sqrt(n_used),
        noise_x=float(noise_x), noise_y=float(noise_y), model=labels["model"],
        signal_to_noise=float(snr))


#: Possible values of the ``subsample`` argument of :func:`fit_pair_image`.
SUBSAMPLE_METHODS = ("grid", "random")


def check_sampling(*, max_pixels, subsample, noise_estimator):
    """Raise ``ValueError`` for a pixel fit's sampling options that make no sense.

    Parameters
    ----------
    max_pixels : int or None
        At least 1 (None: no limit).
    subsample : str
        One of :data:`SUBSAMPLE_METHODS`.
    noise_estimator : str
        One of :data:`NOISE_ESTIMATORS`.

    Examples
    --------
    >>> check_sampling(max_pixels=0, subsample="grid", noise_estimator="mad")
    Traceback (most recent call last):
    ...
    ValueError: max_pixels must be >= 1 or None, got 0
    """
    if max_pixels is not None and int(max_pixels) < 1:
        raise ValueError(f"max_pixels must be >= 1 or None, got {max_pixels!r}")
    if subsample not in SUBSAMPLE_METHODS:
        raise ValueError(f"subsample must be one of {SUBSAMPLE_METHODS}, got {subsample!r}")
    if noise_estimator not in NOISE_ESTIMATORS:
        raise ValueError(f"noise_estimator must be one of {NOISE_ESTIMATORS}, got "
                         f"{noise_estimator!r}")


def fit_pair_image(x, y, mask=None, *, x0=0, y0=0, noise_x=None, noise_y=None,
                   model="offset", origin=(0.0, 0.0), kappa=4.0, max_iter=10, min_pixels=500,
                   min_signal_to_noise=0.0, max_rel_gain_error=MAX_REL_GAIN_ERROR,
                   noise_ratio_error=None, n_blocks=16,
                   max_pixels=10_000, subsample="grid", polish=True, rng=None,
                   noise_samples=120_000, noise_estimator="auto", grow_kappa=2.0, src=None,
                   dst=None, channel=0):
    """:func:`fit_pair` of two co-registered images, fast on large overlaps.

    The outlier-clipping iterations run on a subsample of at most
    ``max_pixels`` valid pixels; with ``polish`` (the default), the rule they
    converge to (the fitted relation and the clipping threshold) then selects
    the pixels of the *whole* overlap, and the fit, its planar moments, its
    block-jackknife uncertainties and its status come from all of them (one
    pass of a few vectorised operations).  The result equals :func:`fit_pair`
    on every valid pixel up to the few pixels within rounding of the
    clipping threshold, at a fraction of the cost; overlaps with at most
    ``max_pixels`` valid pixels are fitted exactly that way.

    Parameters
    ----------
    x, y : array_like, shape (h, w)
        The src and dst images on the same pixels (e.g. two tiles read
        inside their intersection); not modified.
    mask : array_like of bool, shape (h, w), optional
        Jointly valid pixels (non-finite values are left out as well).
    x0, y0 : float
        Global pixel coordinates of ``x[0, 0]`` (for the plane, the planar
        moments and the blocks of the jackknife).
    noise_x, noise_y : float, optional
        Per-pixel noise sigma of the images; measured from second differences
        of neighbouring valid pixels (``noise_samples``, ``noise_estimator``,
        as :func:`photometry_graph.estimate_noise`) when omitted.
    max_pixels : int or None
        Size of the subsample of the clipping iterations (``None``: every pixel).
    subsample : {'grid', 'random'}
        ``'grid'``: every ``sy``-th row and ``sx``-th column, then evenly
        spaced valid pixels of it (deterministic, a fair share of the star
        pixels); ``'random'``: uniform random valid pixels from ``rng``.
    polish : bool
        Final estimates from every valid pixel (``False``: from the subsample
        only, faster and about ``sqrt(n / max_pixels)`` times less precise).
    rng : numpy.random.Generator or int, optional
        Source of ``subsample='random'``.
    noise_samples : int or None
        Second differences per image measuring an omitted noise: bands of
        three rows spread over the image when it holds more (``None``: all).
    noise_estimator : {'auto', 'clipped', 'mad'}
        ``'auto'``: the clipped RMS on bands of rows (2.5 times as efficient
        as the MAD, so the sample is as precise as the whole), the MAD on a
        whole image (as :func:`photometry_graph.estimate_noise`).
    model, origin, kappa, max_iter, min_pixels, min_signal_to_noise, max_rel_gain_error,
    noise_ratio_error, n_blocks, grow_kappa, src, dst, channel
        As in :func:`fit_pair` (the coherent outliers of ``grow_kappa`` are
        grown on the subsample's grid, then on the whole image).

    Returns
    -------
    PairwiseFit
        ``n_total`` counts the valid pixel pairs of the images (of the
        subsample when ``polish=False``).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = 20 + rng.gamma(0.3, 30.0, (400, 400))
    >>> x = s + rng.normal(0, 1, s.shape)
    >>> y = 1.05 * s - 4.0 + rng.normal(0, 1, s.shape)
    >>> f = fit_pair_image(x, y, noise_x=1.0, noise_y=1.0, max_pixels=20_000)
    >>> f.status, round(f.a, 3), round(f.b, 1), f.n_total
    ('ok', 1.05, -4.0, 160000)
    """
    check_sampling(max_pixels=max_pixels, subsample=subsample,
                   noise_estimator=noise_estimator)
    # float32 tiles stay float32 (native byte order); anything else becomes float64
    x, y = np.asarray(x), np.asarray(y)
    dt = np.float32 if (x.dtype.kind == "f" and x.dtype.itemsize == 4
                        and y.dtype.kind == "f" and y.dtype.itemsize == 4) else np.float64
    X = np.asarray(x, dtype=dt)
    Y = np.asarray(y, dtype=dt)
    if X.ndim != 2 or X.shape != Y.shape:
        raise ValueError(f"x and y must be 2-D images of the same shape, got {X.shape} and "
                         f"{Y.shape}")
    valid = np.isfinite(X) & np.isfinite(Y)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != X.shape:
            raise ValueError(f"mask shape {mask.shape} does not match the image shape "
                             f"{X.shape}")
        valid &= mask
    n_valid = int(np.count_nonzero(valid))
    # the pixels behind a measured noise (second differences: about one per valid pixel)
    n_noise = n_valid if noise_samples is None else min(n_valid, int(noise_samples))
    counts = [None, None]
    if noise_x is None:
        noise_x, counts[0] = image_noise(X, valid, noise_samples, noise_estimator), n_noise
    if noise_y is None:
        noise_y, counts[1] = image_noise(Y, valid, noise_samples, noise_estimator), n_noise
    if rng is not None or subsample == "random":
        rng = np.random.default_rng(0 if rng is None else rng)
    max_pixels = None if max_pixels is None else int(max_pixels)
    iy, ix = sample_indices(valid, max_pixels, subsample, rng)
    kw = dict(noise_x=noise_x, noise_y=noise_y, model=model, origin=origin, kappa=kappa,
              max_iter=max_iter, min_pixels=min_pixels,
              min_signal_to_noise=min_signal_to_noise, max_rel_gain_error=max_rel_gain_error,
              noise_ratio_error=noise_ratio_error,
              noise_counts=tuple(counts), n_blocks=n_blocks, grow_kappa=grow_kappa, src=src,
              dst=dst, channel=channel)
    coords = (ix.astype(np.float64) + float(x0), iy.astype(np.float64) + float(y0))
    images = None
    if polish and iy.size < n_valid:
        images = (X, Y, valid, float(x0), float(y0))
    return _fit_arrays(X[iy, ix].astype(np.float64), Y[iy, ix].astype(np.float64),
                       coords=coords, images=images, **kw)


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
