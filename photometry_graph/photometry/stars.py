"""Gain ratio of an overlap from the fluxes of the stars that both images see.

Two nodes that overlap see the same sky ``S`` through their own gain, offset, gradient
and noise (``src = S + ...``, ``dst = a * S + b + gradient + ...``).  The pixel fits of
:mod:`.regression` take the gain ``a`` from the signal range of the whole overlap, which
on a faint, sky-dominated overlap is of the order of the noise: the slope is then poorly
conditioned and depends on the noise ratio of the two images.  Stars are the bright,
compact part of the sky, and they measure ``a`` on their own:

1. detect compact sources in each image with `sep` (Source Extractor as a library), on
   the image minus a smooth background that sep estimates with the invalid pixels masked,
   at a threshold relative to that image's noise (a node that takes part in many
   overlaps is searched once, :func:`detect_stars`, and its :class:`StarCatalogue`
   cropped to each of them);
2. match the detections of the two images by position on the common pixel grid (mutual
   nearest neighbours within ``match_radius``);
3. leave out the stars whose aperture or background annulus reaches a saturated pixel
   (either image), an invalid pixel or the edge of the overlap, and blends (a third
   detection, of either image, inside the aperture, or a source elongated in both);
4. measure the flux of every star with the *same* circular aperture, centred on the
   average of its two positions, in both images, minus the mean of a local annulus
   (``sep.sum_circle`` with ``bkgann``), with the per-pixel errors of each image;
5. estimate ``a = flux_dst / flux_src`` robustly.

Aperture minus annulus is a linear operator that removes any constant and any planar
gradient exactly (the circle and the annulus are symmetric about the same centre), so
``flux_dst = a * flux_src`` holds for every star, whatever the offsets, the gradients
(locally planar), the extended emission under the star or a neighbour in the annulus,
since both images see the same sky through the same apertures.  The estimate is therefore
immune by construction to backgrounds, gradients and the noise ratio of the two images,
which enters only through the weights.

Both fluxes are noisy, so the ratio is an errors-in-variables slope through the origin:
the maximum-likelihood slope minimises ``sum (F_d - a F_s)**2 / (s_d**2 + a**2 s_s**2)``
(its estimating equation has zero expectation at the true ``a``, unlike a mean of ratios
or an ordinary least-squares slope, both biased by the noise of ``F_s``).  Scatter beyond
the flux errors (photon noise of the stars, which the per-pixel noise omits, seeing that
differs between the nodes) enters as a fractional term ``eps * a * F`` in each star's
variance, fitted so that the normalised residuals have unit scale (robustly while
clipping, by their chi-square at the end); stars beyond ``kappa`` of those normalised
residuals are clipped, iteratively.  The 1-sigma uncertainty of ``a`` is that of the
likelihood, ``1 / sqrt(sum F**2 / v)``, with the fitted scatter in ``v``.

:func:`combine_gain_estimates` combines the star ratio of an edge with its pixel fit.
"""

import math
import threading
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import sep

from .._json import jsonable
from .._log import get_logger, grid_debug
from .._stats import median
from ..core.masks import erode_mask

__all__ = ["StarRatio", "StarCatalogue", "STAR_STATUSES", "GAIN_SOURCES", "detect_stars",
           "measure_star_ratio", "combine_gain_estimates"]

logger = get_logger(__name__)

#: Possible values of :attr:`StarRatio.status`.
STAR_STATUSES = ("ok", "too_few", "failed")
#: Possible values of the ``source`` returned by :func:`combine_gain_estimates`.
GAIN_SOURCES = ("combined", "pixels", "stars", "none")

#: Detection threshold in noise sigmas of sep's matched-filtered image (no false
#: detection in pure noise of 512 x 512; a false one would find no partner anyway).
DETECT_THRESHOLD = 3.0
#: Minimum number of pixels above the threshold of a detection.
DETECT_MIN_AREA = 3
#: Default aperture radius in units of the larger of the two images' PSF FWHM: a Gaussian
#: PSF puts 99.8 % of a star's flux inside, so seeing that differs a little between the
#: nodes changes the ratio by less than 0.2 %.
APERTURE_PER_FWHM = 1.5
#: Smallest default aperture radius, pixels (undersampled, binned images).
MIN_APERTURE = 2.0
#: Inner and outer radius of the background annulus in units of the aperture radius.
ANNULUS = (1.5, 2.5)
#: A source whose axis ratio exceeds this factor times the median of its image, in both
#: images, is taken for an unresolved double (a single star's ratio, noise included,
#: stays below it; two stars a FWHM or more apart exceed it).
ELONGATION = 1.4

_MEDIAN_CHI2_1 = 0.454936423119572  # median of a chi-square with one degree of freedom
_PIXEL_REACH = 1.5  # a bad pixel centre within r + this of a star may touch its circle
# sep's deblending sub-thresholds (32 by default): its cost grows with them (a frame's search
# 21 % faster than with 16), and the ratio leaves blends out by its own tests
_DEBLEND_LEVELS = 8
_FWHM_STARS = 25  # brightest matched stars whose half-light radius gives the FWHM
_MIN_PIXSTACK = 1024  # smallest pixel stack of sep's extraction
_PIXSTACK_LOCK = threading.Lock()


@dataclass
class StarRatio:
    """The gain relation ``dst ~ ratio * src`` of one overlap (one channel) from its stars.

    Attributes
    ----------
    ratio : float
        ``flux_dst / flux_src`` (the gain relation ``a`` of a pairwise fit); NaN unless
        ``status == 'ok'``.
    sigma : float
        Its 1-sigma uncertainty (infinite unless ``status == 'ok'``).
    n_detected : int
        Sources detected in the image with fewer of them (an upper bound of ``n_matched``).
    n_matched : int
        Sources found in both images at the same position.
    n_used : int
        Matched stars that entered the final estimate (after the exclusions below and the
        clipping).
    status : {'ok', 'too_few', 'failed'}
        ``'too_few'``: fewer than ``min_stars`` stars left; ``'failed'``: the detection
        could not run (no valid pixel, an error of sep).
    message : str
        Why the status is not ``'ok'`` (empty otherwise).
    aperture : float
        Aperture radius used, pixels (NaN when no star was matched).
    fwhm : float
        PSF FWHM measured on the matched stars, the larger of the two images (NaN when
        it could not be measured).
    n_saturated, n_edge, n_blended : int
        Matched stars left out: a saturated pixel within the annulus, an invalid pixel
        or the overlap's edge within the annulus, a blend.
    scatter : float
        Fractional scatter of the star ratios beyond their flux errors, fitted (0 when the
        flux errors explain the residuals).

    Examples
    --------
    >>> r = StarRatio(ratio=1.05, sigma=0.002, n_used=30, status="ok")
    >>> r.ok, r.to_dict()["ratio"]
    (True, 1.05)
    >>> StarRatio().to_dict()["ratio"] is None
    True
    """

    ratio: float = math.nan
    sigma: float = math.inf
    n_detected: int = 0
    n_matched: int = 0
    n_used: int = 0
    status: str = "failed"
    message: str = ""
    aperture: float = math.nan
    fwhm: float = math.nan
    n_saturated: int = 0
    n_edge: int = 0
    n_blended: int = 0
    scatter: float = 0.0

    @property
    def ok(self):
        """True when the ratio was measured (``status == 'ok'``)."""
        return self.status == "ok"

    def to_dict(self):
        """JSON-friendly dict (NaN and infinities become ``None``)."""
        return jsonable(asdict(self))


@dataclass(frozen=True)
class StarCatalogue:
    """Compact sources detected in one image (one channel), from :func:`detect_stars`.

    A node that takes part in many overlaps (a frame among its dithers) is searched once
    and its catalogue cropped to each overlap (:meth:`crop`), instead of a search of every
    overlap.

    Attributes
    ----------
    x, y : numpy.ndarray
        Positions, pixels of the image (0 is the centre of its first pixel).
    a, b : numpy.ndarray
        Semi-major and semi-minor axes (sep's second moments), pixels.
    peak : numpy.ndarray
        Peak value above the background.
    fwhm : float
        Median PSF FWHM of the brightest sources (NaN when not measurable).

    Examples
    --------
    >>> c = StarCatalogue(*(np.array([1.0, 5.0, 9.0]),) * 5, fwhm=2.0)
    >>> c2 = c.crop(4, 0, 4, 10)
    >>> len(c2), c2.x.tolist(), c2.fwhm
    (1, [1.0], 2.0)
    """

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    peak: np.ndarray
    fwhm: float = math.nan

    def __len__(self):
        return int(self.x.size)

    @classmethod
    def from_objects(cls, objects, fwhm=math.nan):
        """The catalogue of a ``sep.extract`` result."""
        return cls(*(np.asarray(objects[k], dtype=np.float64) for k in
                     ("x", "y", "a", "b", "peak")), fwhm=float(fwhm))

    def take(self, index):
        """The sources ``index`` (an index array or a boolean mask)."""
        return StarCatalogue(self.x[index], self.y[index], self.a[index], self.b[index],
                             self.peak[index], fwhm=self.fwhm)

    def crop(self, x0, y0, width, height):
        """The sources whose centre lies in the pixel box ``x0 .. x0 + width - 1``,
        ``y0 .. y0 + height - 1``, in that box's pixel coordinates."""
        x, y = self.x - x0, self.y - y0
        inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
        out = self.take(inside)
        return StarCatalogue(out.x - x0, out.y - y0, out.a, out.b, out.peak, fwhm=self.fwhm)

    @property
    def xy(self):
        """Positions as an ``(n, 2)`` array."""
        return np.column_stack([self.x, self.y])


def _mask(m, name, shape):
    """``m`` as a boolean mask of ``shape`` (None stays None)."""
    if m is None:
        return None
    m = np.asarray(m, dtype=bool)
    if m.shape != tuple(shape):
        raise ValueError(f"{name} mask shape {m.shape} does not match the image shape {shape}")
    return m


def _check_noise(name, noise):
    if not (np.ndim(noise) == 0 and math.isfinite(float(noise)) and float(noise) > 0):
        raise ValueError(f"{name} must be a positive finite per-pixel noise sigma (a "
                         f"scalar), got {noise!r}; measure it with estimate_noise")


def _pixels(image):
    """``image`` as a C-ordered array that sep reads: float32 stays float32 (sep measures in
    single precision anyway, so the fluxes are the same), anything else becomes float64.

    sep takes writable buffers only (it never writes them): a read-only image (a binned
    frame mapped from its scratch file, a view of it) is copied."""
    image = np.asarray(image)
    single = image.dtype.kind == "f" and image.dtype.itemsize == 4
    out = np.ascontiguousarray(image, dtype=np.float32 if single else np.float64)
    return out if out.flags.writeable else out.copy()


def _check_inputs(src, dst, valid, saturated, noise_src, noise_dst):
    src, dst = _pixels(src), _pixels(dst)  # (sep reads C-ordered buffers)
    if src.ndim != 2 or src.shape != dst.shape:
        raise ValueError(f"src and dst must be 2-D images of the same shape, got {src.shape} "
                         f"and {dst.shape}")
    valid, saturated = _mask(valid, "valid", src.shape), _mask(saturated, "saturated", src.shape)
    _check_noise("noise_src", noise_src)
    _check_noise("noise_dst", noise_dst)
    ok = np.isfinite(src) & np.isfinite(dst) & valid
    return src, dst, ok, saturated


def _check_settings(match_radius, aperture, min_stars, kappa, max_iter):
    if not match_radius > 0:
        raise ValueError(f"match_radius must be a positive number of pixels, got "
                         f"{match_radius!r}")
    if aperture is not None and not (math.isfinite(aperture) and aperture > 0):
        raise ValueError(f"aperture must be a positive radius in pixels or None (from the "
                         f"PSF), got {aperture!r}")
    if int(min_stars) < 1:
        raise ValueError(f"min_stars must be >= 1, got {min_stars!r}")
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa!r}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter!r}")


def _without_plane(image, valid):
    """``image`` minus a plane fitted to a sample of its valid pixels (stars clipped): a
    steep gradient would bias sep's background boxes that invalid pixels cut."""
    h, w = image.shape
    step = max(1, math.ceil(math.sqrt(np.count_nonzero(valid) / 5_000)))
    yy, xx = np.nonzero(valid[::step, ::step])
    v = image[yy * step, xx * step]
    design = np.column_stack([np.ones(v.size), xx * step - w / 2.0, yy * step - h / 2.0])
    keep = None  # every sample, then those within 3 sigmas of the first plane
    for _ in range(2):
        d, r = (design, v) if keep is None else (design[keep], v[keep])
        coef = np.linalg.lstsq(d.T @ d, d.T @ r, rcond=None)[0]
        res = v - design @ coef
        kept = res if keep is None else res[keep]
        # np.median's values without its copies (NaN, as np.median gives, for no sample:
        # the first plane, pulled by a bright object, may leave every sample far from it)
        mad = median(np.abs(kept - median(kept))) if kept.size else math.nan
        if mad > 0:
            keep = np.abs(res) <= 3.0 * 1.4826 * mad
    return image - (coef[0] + coef[1] * (np.arange(w) - w / 2.0)[np.newaxis, :]
                    + coef[2] * (np.arange(h) - h / 2.0)[:, np.newaxis])


def _detect(image, valid, noise):
    """sep's catalogue of ``image`` and the image minus its smooth background (0 off
    ``valid``)."""
    h, w = image.shape
    box = int(np.clip(min(h, w) // 4, 8, 64))
    data = np.where(valid, _without_plane(image, valid), 0.0)
    invalid = (~valid).astype(np.uint8)  # sep's background ignores the masked pixels
    back = sep.Background(data, mask=invalid, bw=box, bh=box, fw=3, fh=3)
    sub = np.where(valid, data - back.back(), 0.0)
    # sep allocates and clears its pixel stack at every extraction (~20 ns per entry: 20 ms
    # for a stack of a million, several times the extraction of a 512 x 128 overlap), so
    # the stack is the size of this image, never that of the largest one seen before; the
    # lock keeps another thread's size from slipping in between (sep holds the GIL anyway)
    with _PIXSTACK_LOCK:
        sep.set_extract_pixstack(max(_MIN_PIXSTACK, h * w))
        objects = sep.extract(sub, DETECT_THRESHOLD, err=float(noise), mask=invalid,
                              minarea=DETECT_MIN_AREA, deblend_nthresh=_DEBLEND_LEVELS)
    return objects, sub


def detect_stars(image, valid=None, *, noise):
    """The compact sources of one image (one channel), for :func:`measure_star_ratio`.

    The detection of :func:`measure_star_ratio` (sep on the image minus a plane and a
    smooth background, ``DETECT_THRESHOLD`` sigmas of ``noise``), run once on a whole
    node; the catalogue's FWHM is the median of its brightest sources.

    Parameters
    ----------
    image : array_like, shape (h, w)
        NaN where invalid; not modified.
    valid : array_like of bool, shape (h, w), optional
        Valid pixels (non-finite pixels are left out as well).
    noise : float
        Per-pixel noise sigma of the image.

    Returns
    -------
    StarCatalogue
        In the image's pixel coordinates (empty when no pixel is valid).

    Raises
    ------
    ValueError
        Bad shapes or noise; sep's own errors (buffers, deblending limits) pass through.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> yy, xx = np.mgrid[:64, :128]
    >>> img = 100 * np.exp(-((xx - 40) ** 2 + (yy - 30) ** 2) / 3.0) + rng.normal(0, 1, xx.shape)
    >>> cat = detect_stars(img, noise=1.0)
    >>> len(cat), round(float(cat.x[0])), round(float(cat.y[0]))
    (1, 40, 30)
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (one channel), got shape {image.shape}")
    valid = _mask(valid, "valid", image.shape)
    ok = np.isfinite(image) if valid is None else np.isfinite(image) & valid
    _check_noise("noise", noise)
    if not ok.any():
        return StarCatalogue(*(np.zeros(0),) * 5)
    objects, sub = _detect(image, ok, noise)
    cat = StarCatalogue.from_objects(objects)
    return replace(cat, fwhm=_fwhm(sub, ok, cat))


def _match(src_xy, dst_xy, radius):
    """Indices ``(i, j)`` of mutual nearest neighbours within ``radius``."""
    from scipy.spatial import cKDTree
    if len(src_xy) == 0 or len(dst_xy) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    _, j = cKDTree(dst_xy).query(src_xy, distance_upper_bound=radius)
    _, back = cKDTree(src_xy).query(dst_xy, distance_upper_bound=radius)
    i = np.arange(len(src_xy))
    found = j < len(dst_xy)
    found[found] = back[j[found]] == i[found]
    return i[found], j[found]


def _fwhm(sub, valid, cat):
    """Median FWHM (pixels) of the brightest sources of ``cat``; NaN if none is measurable."""
    if len(cat) == 0:
        return math.nan
    obj = cat.take(np.argsort(cat.peak)[::-1][:_FWHM_STARS])
    rmax = np.clip(6.0 * np.sqrt(obj.a * obj.b), 3.0, 30.0)
    r, flag = sep.flux_radius(sub, obj.x, obj.y, rmax, 0.5,
                              mask=(~valid).astype(np.uint8), subpix=5)
    good = (flag == 0) & np.isfinite(r) & (r > 0)
    # a Gaussian PSF holds half its flux within FWHM / 2
    return 2.0 * median(r[good]) if good.any() else math.nan


def _near(bad, x, y, reach):
    """Stars at ``(x, y)`` with a ``bad`` pixel centre within ``reach`` pixels."""
    from scipy.spatial import cKDTree
    edge = bad & ~erode_mask(bad, 1, connectivity=4)  # bad pixels next to good ones
    # their (x, y) centres: OpenCV's scan is 10 times as fast as np.nonzero on a sparse mask
    centres = cv2.findNonZero(edge.view(np.uint8))
    if centres is None:
        return np.zeros(x.size, dtype=bool)
    d, _ = cKDTree(centres.reshape(-1, 2)).query(np.column_stack([x, y]),
                                                 distance_upper_bound=reach + 1e-9)
    return d <= reach


def _elongated(obj_s, obj_d):
    """Sources elongated in both images beyond ``ELONGATION`` times the typical axis ratio
    of each (unresolved doubles; a field elongated by tracking raises the median)."""
    out = np.ones(len(obj_s), dtype=bool)
    for obj in (obj_s, obj_d):
        ratio = obj.a / np.maximum(obj.b, 1e-6)
        out &= ratio > ELONGATION * np.median(ratio)
    return out


def _exclusions(x, y, *, reach, valid, saturated, blended):
    """Boolean masks (saturated, edge, blended) of the matched stars, in that priority."""
    h, w = valid.shape
    sat = np.zeros(x.size, dtype=bool)
    if saturated is not None:
        sat = _near(saturated & valid, x, y, reach)
    border = np.minimum(np.minimum(x + 1, w - x), np.minimum(y + 1, h - y)) <= reach
    edge = ~sat & (border | _near(~valid, x, y, reach))
    blend = ~sat & ~edge & blended
    return sat, edge, blend


def _aperture_fluxes(image, invalid, x, y, radii, noise):
    """Annulus-subtracted aperture fluxes and their errors (``radii = (r, r_in, r_out)``).

    ``invalid`` (uint8, 1 where invalid) masks the pixels that sep leaves out; it never
    reads their values (NaN there changes nothing).  None: no mask, for stars that have no
    invalid pixel within their outer radius (those of :func:`measure_star_ratio`, whose
    mask would change nothing and cost a fifth of the time).
    """
    flux, err, _ = sep.sum_circle(image, x, y, radii[0], err=float(noise), mask=invalid,
                                  bkgann=radii[1:], subpix=0)
    return np.asarray(flux, dtype=np.float64), np.asarray(err, dtype=np.float64)


def _residuals(a, stars, eps2):
    """Residuals ``F_d - a F_s``, their variances and the stars' levels (src units)."""
    fs, vs, fd, vd = stars
    level = 0.5 * (fs + fd / a)
    r = fd - a * fs
    v = vd + a * a * (vs + eps2 * level * level)
    return r, v, level


def _chi2_slope_curvature(a, stars, eps2):
    """First and second derivatives in ``a`` of ``chi2(a) = sum r**2 / v``
    (:func:`_residuals`; ``a**2 level**2 = (a F_s + F_d)**2 / 4``)."""
    fs, vs, fd, vd = stars
    s = a * fs + fd
    r = fd - a * fs
    v = vd + a * a * vs + (0.25 * eps2) * s * s
    dv = 2.0 * a * vs + (0.5 * eps2) * fs * s
    ddv = 2.0 * vs + (0.5 * eps2) * fs * fs
    w = 1.0 / v
    rw = r * w
    rw2 = rw * rw
    g = -2.0 * np.dot(fs, rw) - np.dot(rw2, dv)
    h = (2.0 * np.dot(fs * fs, w) + 4.0 * np.dot(fs * rw * w, dv) - np.dot(rw2, ddv)
         + 2.0 * np.dot(rw2 * w, dv * dv))
    return float(g), float(h)


def _best_ratio(stars, eps2, a0):
    """Maximum-likelihood errors-in-variables slope through the origin near ``a0``.

    The minimum of ``chi2`` in ``[a0 / 4, 4 a0]``: Newton steps from ``a0`` (converged to
    ~1e-12 relative in 3-5 steps), or a bounded scalar minimisation when a step leaves
    that interval or the curvature is not positive.

    Examples
    --------
    >>> fs = np.array([100.0, 200.0, 400.0, 800.0]); v = np.full(4, 25.0)
    >>> round(_best_ratio((fs, v, 1.5 * fs + [3, -2, 4, -1], v), 0.0, 1.0), 6)
    1.50084
    """
    from scipy import optimize
    a, lo, hi = a0, a0 / 4.0, a0 * 4.0
    for _ in range(30):
        g, h = _chi2_slope_curvature(a, stars, eps2)
        if not (h > 0 and math.isfinite(g)):
            break
        step = g / h
        a -= step
        if not lo < a < hi:
            break
        if abs(step) <= 1e-7 * a:  # quadratic convergence: a is good to ~1e-14
            return float(a)

    def chi2(a):
        r, v, _ = _residuals(a, stars, eps2)
        return float(np.sum(r * r / v))
    res = optimize.minimize_scalar(chi2, bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10 * a0})
    return float(res.x)


def _scatter(a, stars, robust):
    """Fractional scatter ``eps**2`` giving unit-scale normalised residuals (0 if none)."""
    from scipy import optimize
    n = stars[0].size
    if n < 2:
        return 0.0

    def excess(eps2):
        r, v, _ = _residuals(a, stars, eps2)
        z2 = r * r / v
        return (median(z2) / _MEDIAN_CHI2_1 if robust else z2.sum() / (n - 1)) - 1.0

    if excess(0.0) <= 0:
        return 0.0
    hi = 1e-8
    above = excess(hi) > 0
    while above and hi < 1e4:
        hi *= 4.0
        above = excess(hi) > 0
    if above:
        return hi
    return float(optimize.brentq(excess, 0.0, hi, xtol=1e-14, rtol=1e-10))


def _initial_ratio(stars):
    fs, vs, fd, vd = stars
    positive = (fs > 0) & (fd > 0)
    bright = positive & (fs > 5 * np.sqrt(vs)) & (fd > 5 * np.sqrt(vd))
    use = bright if np.count_nonzero(bright) >= 3 else positive
    return float(np.median(fd[use] / fs[use])) if use.any() else math.nan


def _fit_ratio(stars, *, kappa, max_iter, min_stars):
    """Clipped, weighted errors-in-variables ratio of the star fluxes.

    Returns ``(ratio, sigma, n_used, scatter, message)`` (``ratio`` NaN and ``message``
    set when fewer than ``min_stars`` stars remain).
    """
    a = _initial_ratio(stars)
    if not math.isfinite(a):
        return math.nan, math.inf, 0, 0.0, "no star with a positive flux in both images"
    keep = np.ones(stars[0].size, dtype=bool)
    for _ in range(int(max_iter)):
        kept = tuple(s[keep] for s in stars)
        a = _best_ratio(kept, 0.0, a)
        eps2 = _scatter(a, kept, robust=True)
        a = _best_ratio(kept, eps2, a)
        r, v, _ = _residuals(a, stars, eps2)
        new = np.abs(r) <= kappa * np.sqrt(v)
        converged = np.array_equal(new, keep)
        keep = new
        if converged or np.count_nonzero(keep) < min_stars:
            break
    n_used = int(np.count_nonzero(keep))
    if n_used < min_stars:
        return (math.nan, math.inf, n_used, 0.0,
                f"{n_used} stars left after clipping < min_stars={min_stars}")
    kept = tuple(s[keep] for s in stars)
    eps2 = _scatter(a, kept, robust=False)
    a = _best_ratio(kept, eps2, a)
    _, v, level = _residuals(a, kept, eps2)
    sigma = 1.0 / math.sqrt(float(np.sum(level * level / v)))
    return a, sigma, n_used, math.sqrt(eps2), ""


def _radii(aperture, fwhm):
    """Aperture radius and annulus radii ``(r, r_in, r_out)``."""
    r = aperture
    if r is None:
        r = max(MIN_APERTURE, APERTURE_PER_FWHM * fwhm) if math.isfinite(fwhm) else 4.0
    return float(r), float(ANNULUS[0] * r), float(ANNULUS[1] * r)


def measure_star_ratio(src, dst, valid, *, noise_src, noise_dst, saturated=None,
                       match_radius=1.5, aperture=None, min_stars=5, kappa=3.0, max_iter=5,
                       catalogues=None):
    """Gain ratio ``dst ~ a * src`` of one overlap and channel from matched star fluxes.

    See the module docstring for the method (detection and aperture photometry by sep,
    same apertures in both images, local annulus background, clipped errors-in-variables
    ratio).

    Parameters
    ----------
    src, dst : array_like, shape (h, w)
        The two images of the overlap on a common pixel grid (one channel), NaN where
        invalid; not modified.
    valid : array_like of bool, shape (h, w)
        Jointly valid pixels (non-finite pixels are left out as well).
    noise_src, noise_dst : float
        Per-pixel noise sigma of each image (e.g. from
        :func:`~photometry_graph.estimate_noise`): the detection thresholds and the flux
        errors.  A misestimated value changes the weights only, not the expectation.
    saturated : array_like of bool, shape (h, w), optional
        Saturated pixels of either image; stars whose annulus reaches one are left out.
    match_radius : float
        Largest distance in pixels between the positions of one star in the two images.
    aperture : float, optional
        Aperture radius in pixels.  Default: ``APERTURE_PER_FWHM`` (1.5) times the larger
        of the two images' median FWHMs, measured on the 25 brightest matched stars (twice
        the half-light radius from ``sep.flux_radius``), at least ``MIN_APERTURE`` (2)
        pixels; 4 pixels when no FWHM could be measured.  The
        background annulus spans ``ANNULUS`` (1.5 to 2.5) aperture radii.
    min_stars : int
        Fewest stars for a ratio (``status='too_few'`` below).
    kappa : float
        Clipping threshold on the normalised residuals of the stars.
    max_iter : int
        Clipping iterations.
    catalogues : tuple, optional
        ``(catalogue_src, catalogue_dst)``: :class:`StarCatalogue` of either image,
        already found (:func:`detect_stars` on the whole node, cropped to the overlap
        with :meth:`StarCatalogue.crop`), or None for an image to search here.  A given
        catalogue's FWHM is used instead of one measured on the matched stars.

    Returns
    -------
    StarRatio

    Notes
    -----
    Stars are left out when a saturated pixel, an invalid pixel or the edge of the array
    lies within the outer annulus radius (plus 1.5 pixels, the reach of a pixel), and when
    a third detection of either image lies inside the aperture or the source is
    elongated in both images (``ELONGATION``): blends and doubles.  A neighbour further
    out is seen through the same apertures in both images and leaves the ratio as it is.
    Cost: a plane fit, two background maps and two extractions of the overlap dominate:
    a few tens of milliseconds for 512 x 128 pixels and 100 stars, about 3 times a
    :func:`~photometry_graph.photometry.regression.fit_pair_image` of the same overlap;
    with both ``catalogues`` given, no extraction runs (~8 ms for an overlap of 300 x 500
    binned pixels with ~400 stars).  sep holds the GIL, so
    threads run these calls one at a time (processes do not).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[:64, :256]
    >>> sky = sum(300 * np.exp(-((xx - 14 - 19 * k) ** 2 + (yy - 20 - 24 * (k % 2)) ** 2)
    ...                        / 3.2) for k in range(12))
    >>> src = 5 + sky + rng.normal(0, 1, sky.shape)
    >>> dst = 1.2 * sky - 3 + 0.02 * xx + rng.normal(0, 1.5, sky.shape)
    >>> r = measure_star_ratio(src, dst, np.ones(sky.shape, bool), noise_src=1, noise_dst=1.5)
    >>> r.status, r.n_matched, r.n_used, abs(r.ratio - 1.2) < 3 * r.sigma < 0.01
    ('ok', 12, 12, True)
    """
    from scipy.spatial import cKDTree
    src, dst, ok, saturated = _check_inputs(src, dst, valid, saturated, noise_src, noise_dst)
    _check_settings(match_radius, aperture, min_stars, kappa, max_iter)
    min_stars = int(min_stars)
    if not ok.any():
        return StarRatio(status="failed", message="no valid pixel in the overlap")
    given = (None, None) if catalogues is None else tuple(catalogues)
    if len(given) != 2:
        raise ValueError(f"catalogues must be a pair (src, dst), got {len(given)} items")
    cats, subs = list(given), [None, None]
    try:
        for k, (image, noise) in enumerate(((src, noise_src), (dst, noise_dst))):
            if cats[k] is None:
                objects, subs[k] = _detect(image, ok, noise)
                cats[k] = StarCatalogue.from_objects(objects)
    except Exception as exc:  # sep reports its own failures (buffers, deblending limits)
        grid_debug(logger, "star detection failed: %s", exc)
        return StarRatio(status="failed", message=f"source detection failed: {exc}")
    obj_s, obj_d = cats
    xy_s, xy_d = obj_s.xy, obj_d.xy
    i, j = _match(xy_s, xy_d, float(match_radius))
    out = StarRatio(n_detected=min(len(obj_s), len(obj_d)), n_matched=int(i.size),
                    status="too_few")
    if i.size < min_stars:
        out.message = f"matched stars: {i.size} < min_stars={min_stars}"
        return out
    widths = [cat.fwhm if sub is None else _fwhm(sub, ok, cat.take(idx))
              for cat, sub, idx in zip(cats, subs, (i, j))]
    widths = [f for f in widths if math.isfinite(f)]
    out.fwhm = max(widths) if widths else math.nan
    radii = _radii(aperture, out.fwhm)
    out.aperture = radii[0]
    x = 0.5 * (xy_s[i, 0] + xy_d[j, 0])
    y = 0.5 * (xy_s[i, 1] + xy_d[j, 1])
    neighbours = cKDTree(np.vstack([xy_s, xy_d])).query_ball_point(
        np.column_stack([x, y]), r=radii[0], return_length=True)
    blended = (neighbours > 2) | _elongated(obj_s.take(i), obj_d.take(j))
    sat, edge, blend = _exclusions(x, y, reach=radii[2] + _PIXEL_REACH, valid=ok,
                                   saturated=saturated, blended=blended)
    out.n_saturated, out.n_edge, out.n_blended = (int(np.count_nonzero(m))
                                                  for m in (sat, edge, blend))
    use = ~(sat | edge | blend)
    n_clean = int(np.count_nonzero(use))
    if n_clean < min_stars:
        out.message = (f"{n_clean} clean stars < min_stars={min_stars} ({out.n_matched} "
                       f"matched, {out.n_saturated} saturated, {out.n_edge} near invalid "
                       f"pixels, {out.n_blended} blended)")
        return out
    # the stars used have no invalid pixel (nor the array's edge) within their outer radius
    # plus _PIXEL_REACH (_exclusions): sep needs no mask to read valid pixels only
    fs, es = _aperture_fluxes(src, None, x[use], y[use], radii, noise_src)
    fd, ed = _aperture_fluxes(dst, None, x[use], y[use], radii, noise_dst)
    a, sigma, out.n_used, out.scatter, message = _fit_ratio(
        (fs, es * es, fd, ed * ed), kappa=kappa, max_iter=max_iter, min_stars=min_stars)
    if not math.isfinite(a):
        out.message = message
        return out
    out.ratio, out.sigma, out.status = a, sigma, "ok"
    grid_debug(logger, "star ratio %.5f +- %.5f from %d of %d matched stars (aperture %.2f "
               "px)", a, sigma, out.n_used, out.n_matched, out.aperture)
    return out


def _usable(a, sigma):
    try:
        a, sigma = float(a), float(sigma)
    except (TypeError, ValueError):
        return False
    return math.isfinite(a) and math.isfinite(sigma) and a > 0 and sigma > 0


def combine_gain_estimates(a_pixels, sigma_pixels, a_stars, sigma_stars, *,
                           max_disagreement=3.0):
    """Combine the pixel and the star estimate of one edge's gain ratio.

    Parameters
    ----------
    a_pixels, sigma_pixels : float
        Gain ratio of the pixel fit and its 1-sigma uncertainty.
    a_stars, sigma_stars : float
        Gain ratio from the stars (:attr:`StarRatio.ratio`) and its uncertainty.
    max_disagreement : float
        Largest difference of the two, in sigmas of the difference
        (``sqrt(sigma_pixels**2 + sigma_stars**2)``), that still combines them.

    Returns
    -------
    a, sigma : float
        The estimate and its uncertainty.
    source : {'combined', 'pixels', 'stars', 'none'}
        ``'combined'``: inverse-variance mean of both; ``'pixels'`` or ``'stars'``: that
        estimate alone, because the other one is missing or because they disagree (then
        the stars, which backgrounds, gradients and the noise ratio do not bias);
        ``'none'``: neither is usable (``a`` NaN, ``sigma`` infinite).
    disagree : bool
        Both were usable and differ by more than ``max_disagreement`` sigmas.

    Notes
    -----
    An estimate is missing when its ratio or its sigma is not a positive finite number
    (NaN for a failed or offset-only fit, an infinite sigma).

    Examples
    --------
    >>> a, s, source, disagree = combine_gain_estimates(1.02, 0.01, 1.00, 0.01)
    >>> round(a, 4), round(s, 5), source, disagree
    (1.01, 0.00707, 'combined', False)
    >>> combine_gain_estimates(1.10, 0.01, 1.00, 0.01)
    (1.0, 0.01, 'stars', True)
    >>> combine_gain_estimates(float("nan"), float("inf"), 1.00, 0.01)
    (1.0, 0.01, 'stars', False)
    >>> combine_gain_estimates(1.02, 0.01, float("nan"), float("inf"))
    (1.02, 0.01, 'pixels', False)
    """
    if not max_disagreement > 0:
        raise ValueError(f"max_disagreement must be > 0 (sigmas), got {max_disagreement!r}")
    pixels, stars = _usable(a_pixels, sigma_pixels), _usable(a_stars, sigma_stars)
    if not stars:
        if not pixels:
            return math.nan, math.inf, "none", False
        return float(a_pixels), float(sigma_pixels), "pixels", False
    a_s, s_s = float(a_stars), float(sigma_stars)
    if not pixels:
        return a_s, s_s, "stars", False
    a_p, s_p = float(a_pixels), float(sigma_pixels)
    if abs(a_p - a_s) > max_disagreement * math.hypot(s_p, s_s):
        return a_s, s_s, "stars", True
    w_p, w_s = 1.0 / (s_p * s_p), 1.0 / (s_s * s_s)
    return (w_p * a_p + w_s * a_s) / (w_p + w_s), 1.0 / math.sqrt(w_p + w_s), "combined", False
