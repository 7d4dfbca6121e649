"""Synthetic overlap pairs: the two images of one overlap on a common pixel grid, with a
known gain ratio, offsets, gradients, noise, stars, saturation and empty zones.

They are what a pairwise gain estimator sees (a pixel fit or the star fluxes), so the
estimators can be measured against the truth one overlap at a time::

    src = S + offset_src + grad_src . (r - c) + noise_src * N1
    dst = gain * S + offset_dst + grad_dst . (r - c) + noise_dst * N2

with ``S`` the noise-free sky (a sky level, smooth extended emission and stars) and
``c`` the centre of the overlap.
"""

from dataclasses import dataclass

import numpy as np

from ..core.tiles import BBox
from .sky import SkyModel, draw_empty_zones, make_sky

__all__ = ["OverlapPair", "make_overlap_pair"]

_FWHM_TO_SIGMA = 1.0 / 2.3548200450309493


@dataclass
class OverlapPair:
    """Two noisy images of one overlap with their truth.

    Attributes
    ----------
    src, dst : numpy.ndarray, shape (h, w)
        float64 images, NaN where invalid.
    valid : numpy.ndarray of bool
        Jointly valid pixels.
    saturated : numpy.ndarray of bool or None
        Pixels at the saturation level in either image (``None`` without saturation).
    gain : float
        True relation ``dst ~ gain * src`` (plus offsets and gradients).
    signal_to_noise : float
        Standard deviation of the noise-free extended signal (sky and extended emission,
        stars excluded) over the valid pixels, divided by ``noise_src``.
    star_x, star_y, star_flux : numpy.ndarray
        Star positions (pixel centres at integers) and total fluxes in src units.
    fwhm_src, fwhm_dst : float
        PSF full widths at half maximum, pixels.
    noise_src, noise_dst : float
        Per-pixel noise sigmas.
    """

    src: np.ndarray
    dst: np.ndarray
    valid: np.ndarray
    saturated: object
    gain: float
    signal_to_noise: float
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray
    fwhm_src: float
    fwhm_dst: float
    noise_src: float
    noise_dst: float


def _stars_image(shape, x, y, flux, fwhm):
    sky = SkyModel(shape=shape, star_x=x, star_y=y, star_flux=flux,
                   star_color=np.ones((x.size, 1)), fwhm=float(fwhm), blobs=np.zeros((0, 6)),
                   blob_color=np.zeros((0, 1)), sky_level=np.zeros(1))
    return sky.render(BBox(0, shape[0], 0, shape[1]))[..., 0]


def _extended(shape, signal_to_noise, noise, sky_level, valid, rng):
    """Sky level plus smooth emission scaled to ``signal_to_noise`` over ``valid``."""
    h, w = shape
    model = make_sky(shape, rng=rng, star_density=0.0, nebulae=3, noise_sigma=noise)
    yy, xx = np.mgrid[:h, :w]
    blob = model.smooth_at(xx, yy)[..., 0] - model.sky_level[0]
    blob -= blob[valid].mean()
    spread = blob[valid].std()
    scale = signal_to_noise * noise / spread if spread > 0 else 0.0
    return sky_level * noise + scale * blob


def _plane(shape, slopes):
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return slopes[0] * (xx - (w - 1) / 2.0) + slopes[1] * (yy - (h - 1) / 2.0)


def make_overlap_pair(shape=(128, 512), *, n_stars=50, signal_to_noise=3.0, gain=1.1,
                      noise_src=1.0, noise_dst=1.0, offsets=(0.0, 0.0),
                      gradient_src=(0.0, 0.0), gradient_dst=(0.0, 0.0), fwhm=3.0,
                      fwhm_dst=None, star_peak_range=(5.0, 300.0), stars=None,
                      saturation=None, empty=False, sky_level=20.0, rng=None):
    """Draw one synthetic overlap pair with known gain ratio.

    Parameters
    ----------
    shape : tuple of int
        ``(h, w)`` of the overlap.
    n_stars : int
        Stars placed uniformly at random in the overlap.
    signal_to_noise : float
        Standard deviation of the smooth extended emission over the valid pixels in
        units of ``noise_src`` (0: a flat sky; the stars come on top).
    gain : float
        ``dst ~ gain * src``.
    noise_src, noise_dst : float
        Gaussian per-pixel noise sigmas.
    offsets : tuple of float
        Additive offsets ``(src, dst)``.
    gradient_src, gradient_dst : tuple of float
        Planar gradients ``(d/dx, d/dy)`` per pixel, zero at the centre.
    fwhm : float
        Gaussian PSF FWHM of src (and of dst unless ``fwhm_dst`` is given), pixels.
    fwhm_dst : float, optional
        A different PSF FWHM for dst (seeing that changed between the nodes).
    star_peak_range : tuple of float
        Star peaks in src, log-uniform, in units of ``noise_src``.
    stars : tuple of array_like, optional
        ``(x, y, flux)`` of the stars (src units) in place of ``n_stars`` random ones.
    saturation : float, optional
        Level at which both images are clipped (their values above it are set to it, and
        ``saturated`` marks them).
    empty : bool or numpy.ndarray of bool
        ``True``: random empty zones (a border strip and a round blob, as
        :func:`~photometry_graph.datasets.draw_empty_zones`); an array: that invalid mask.
    sky_level : float
        Sky level of src in units of ``noise_src``.
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    OverlapPair

    Examples
    --------
    >>> p = make_overlap_pair((64, 128), n_stars=10, gain=1.2, rng=0)
    >>> p.src.shape, p.gain, p.star_x.size, bool(p.valid.all())
    ((64, 128), 1.2, 10, True)
    """
    rng = np.random.default_rng(rng)
    h, w = int(shape[0]), int(shape[1])
    if isinstance(empty, np.ndarray):
        invalid = np.asarray(empty, dtype=bool)
        if invalid.shape != (h, w):
            raise ValueError(f"empty mask shape {invalid.shape} does not match {(h, w)}")
    else:
        invalid = draw_empty_zones(h, w, rng) if empty else np.zeros((h, w), dtype=bool)
    valid = ~invalid
    smooth = _extended((h, w), signal_to_noise, noise_src, sky_level, valid, rng)
    if stars is None:
        peaks = np.exp(rng.uniform(np.log(star_peak_range[0]), np.log(star_peak_range[1]),
                                   int(n_stars))) * noise_src
        flux = peaks * 2.0 * np.pi * (fwhm * _FWHM_TO_SIGMA) ** 2
        x = rng.uniform(0.0, w - 1.0, int(n_stars))
        y = rng.uniform(0.0, h - 1.0, int(n_stars))
    else:
        x, y, flux = (np.asarray(v, dtype=np.float64).ravel() for v in stars)
    stars_src = _stars_image((h, w), x, y, flux, fwhm)
    fwhm_dst = fwhm if fwhm_dst is None else float(fwhm_dst)
    stars_dst = stars_src if fwhm_dst == fwhm else _stars_image((h, w), x, y, flux, fwhm_dst)
    src = (smooth + stars_src + offsets[0] + _plane((h, w), gradient_src)
           + noise_src * rng.standard_normal((h, w)))
    dst = (gain * (smooth + stars_dst) + offsets[1] + _plane((h, w), gradient_dst)
           + noise_dst * rng.standard_normal((h, w)))
    saturated = None
    if saturation is not None:
        saturated = (src >= saturation) | (dst >= saturation)
        src = np.minimum(src, saturation)
        dst = np.minimum(dst, saturation)
    src[invalid] = np.nan
    dst[invalid] = np.nan
    snr = float(smooth[valid].std() / noise_src) if valid.any() else 0.0
    return OverlapPair(src=src, dst=dst, valid=valid, saturated=saturated, gain=float(gain),
                       signal_to_noise=snr, star_x=x, star_y=y, star_flux=flux,
                       fwhm_src=float(fwhm), fwhm_dst=fwhm_dst,
                       noise_src=float(noise_src), noise_dst=float(noise_dst))
