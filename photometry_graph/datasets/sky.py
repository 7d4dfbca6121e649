"""Synthetic skies: stars, extended emission and sky level on a canvas, and the artefacts
of real data (empty zones, satellite trails) that the generators add to nodes.
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ..core.tiles import BBox

__all__ = ["SkyModel", "make_sky", "draw_empty_zones", "add_trail"]


@dataclass
class SkyModel:
    """Analytic sky: point sources, extended emission and a smooth background.

    Attributes
    ----------
    shape : tuple of int
        ``(H, W)`` of the canvas the sky was drawn for (sources lie inside).
    star_x, star_y, star_flux : numpy.ndarray
        Star positions in global pixel coordinates (pixel centres at integers)
        and total fluxes.
    star_color : numpy.ndarray, shape (n_stars, C)
        Per-channel flux multipliers.
    fwhm : float
        Gaussian PSF full width at half maximum, pixels.
    blobs : numpy.ndarray, shape (n_blobs, 6)
        Extended emission: ``x, y, sigma_major, sigma_minor, theta, amplitude``.
    blob_color : numpy.ndarray, shape (n_blobs, C)
    sky_level : numpy.ndarray, shape (C,)
        Constant background per channel.
    """

    shape: tuple
    star_x: np.ndarray
    star_y: np.ndarray
    star_flux: np.ndarray
    star_color: np.ndarray
    fwhm: float
    blobs: np.ndarray
    blob_color: np.ndarray
    sky_level: np.ndarray

    @property
    def n_channels(self):
        """Number of channels."""
        return int(self.sky_level.shape[0])

    def smooth_at(self, x, y):
        """Background plus extended emission at global coordinates.

        Parameters
        ----------
        x, y : array_like
            Global pixel coordinates (same shape).

        Returns
        -------
        numpy.ndarray, shape ``x.shape + (C,)``
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        out = np.empty(x.shape + (self.n_channels,), dtype=np.float64)
        out[...] = self.sky_level
        for (bx, by, smaj, smin, theta, amp), color in zip(self.blobs, self.blob_color):
            c, s = np.cos(theta), np.sin(theta)
            dx, dy = x - bx, y - by
            u = (c * dx + s * dy) / smaj
            v = (-s * dx + c * dy) / smin
            profile = amp * np.exp(-0.5 * (u * u + v * v))
            out += profile[..., np.newaxis] * color
        return out

    def render(self, bbox, *, stars=True):
        """Noise-free sky inside ``bbox`` as an ``(h, w, C)`` float64 array.

        Stars are integrated over pixels (error functions), so the flux is
        right for sub-pixel positions.
        """
        bbox = bbox if isinstance(bbox, BBox) else BBox(*bbox)
        yy, xx = bbox.coordinates()
        out = self.smooth_at(xx, yy)
        if stars:
            self._add_stars(out, bbox)
        return out

    def _add_stars(self, out, bbox):
        sigma = self.fwhm / 2.3548200450309493
        radius = int(np.ceil(4 * sigma)) + 1
        inside = ((self.star_x > bbox.x0 - radius) & (self.star_x < bbox.x1 + radius)
                  & (self.star_y > bbox.y0 - radius) & (self.star_y < bbox.y1 + radius))
        norm = 1.0 / (np.sqrt(2.0) * sigma)
        for sx, sy, flux, color in zip(self.star_x[inside], self.star_y[inside],
                                       self.star_flux[inside], self.star_color[inside]):
            ix0 = max(bbox.x0, int(np.floor(sx)) - radius)
            ix1 = min(bbox.x1, int(np.floor(sx)) + radius + 1)
            iy0 = max(bbox.y0, int(np.floor(sy)) - radius)
            iy1 = min(bbox.y1, int(np.floor(sy)) + radius + 1)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            ex = np.arange(ix0, ix1 + 1) - 0.5 - sx
            ey = np.arange(iy0, iy1 + 1) - 0.5 - sy
            px = 0.5 * np.diff(erf(ex * norm))
            py = 0.5 * np.diff(erf(ey * norm))
            stamp = flux * np.outer(py, px)
            out[iy0 - bbox.y0:iy1 - bbox.y0, ix0 - bbox.x0:ix1 - bbox.x0] += (
                stamp[..., np.newaxis] * color)


def make_sky(shape, channels=1, *, rng=None, star_density=5e-4, fwhm=3.0,
             star_peak_range=(3.0, 300.0), nebulae=3, nebula_amplitude=(5.0, 40.0),
             nebula_size=(0.08, 0.3), sky_level=20.0, noise_sigma=1.0):
    """Draw a random :class:`SkyModel` for a canvas.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` canvas.
    channels : int
        1 (mono) or 3 (RGB).
    rng : numpy.random.Generator or int, optional
    star_density : float
        Stars per pixel.
    fwhm : float
        PSF FWHM in pixels.
    star_peak_range : tuple of float
        Range of star peak values in units of ``noise_sigma`` (log-uniform).
    nebulae : int
        Number of extended-emission blobs.
    nebula_amplitude : tuple of float
        Range of blob amplitudes in units of ``noise_sigma``.
    nebula_size : tuple of float
        Range of blob major-axis sigmas as a fraction of ``max(shape)``.
    sky_level : float
        Background level in units of ``noise_sigma``.
    noise_sigma : float
        Unit of the levels above.

    Returns
    -------
    SkyModel
    """
    rng = np.random.default_rng(rng)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (mono) or 3 (RGB), got {channels}")
    H, W = int(shape[0]), int(shape[1])
    n_stars = rng.poisson(star_density * H * W)
    sigma = fwhm / 2.3548200450309493
    peaks = np.exp(rng.uniform(np.log(star_peak_range[0]), np.log(star_peak_range[1]), n_stars))
    flux = peaks * noise_sigma * 2 * np.pi * sigma ** 2
    if channels == 3:
        star_color = np.clip(rng.normal(1.0, 0.15, (n_stars, 3)), 0.5, 1.5)
        blob_color = np.array([1.0, 0.45, 0.6]) * rng.uniform(0.8, 1.2, (nebulae, 3))
        level = sky_level * noise_sigma * np.array([1.0, 0.9, 1.1])
    else:
        star_color = np.ones((n_stars, 1))
        blob_color = np.ones((nebulae, 1))
        level = np.array([sky_level * noise_sigma])
    size = max(H, W)
    smaj = rng.uniform(nebula_size[0], nebula_size[1], nebulae) * size
    blobs = np.column_stack([
        rng.uniform(0.1 * W, 0.9 * W, nebulae),
        rng.uniform(0.1 * H, 0.9 * H, nebulae),
        smaj,
        smaj * rng.uniform(0.3, 1.0, nebulae),
        rng.uniform(0, np.pi, nebulae),
        rng.uniform(nebula_amplitude[0], nebula_amplitude[1], nebulae) * noise_sigma,
    ]) if nebulae else np.zeros((0, 6))
    return SkyModel(shape=(H, W), star_x=rng.uniform(-0.5, W - 0.5, n_stars),
                    star_y=rng.uniform(-0.5, H - 0.5, n_stars), star_flux=flux,
                    star_color=star_color, fwhm=float(fwhm), blobs=blobs,
                    blob_color=blob_color, sky_level=level)


def draw_empty_zones(h, w, rng):
    """Random invalid zones of one tile: border strips and a round blob."""
    zone = np.zeros((h, w), dtype=bool)
    side = rng.integers(4)
    width = int(rng.integers(max(2, min(h, w) // 40), max(3, min(h, w) // 10)))
    if side == 0:
        zone[:width] = True
    elif side == 1:
        zone[-width:] = True
    elif side == 2:
        zone[:, :width] = True
    else:
        zone[:, -width:] = True
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    radius = rng.uniform(0.04, 0.1) * min(h, w)
    yy, xx = np.ogrid[:h, :w]
    zone |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
    return zone


def add_trail(img, rng, amplitude):
    """Add a straight satellite trail (3 px wide) across an image, in place."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    angle = rng.uniform(0.2, 1.3)
    y0 = rng.uniform(0.2, 0.8) * h
    dist = np.abs((yy - y0) * np.cos(angle) - xx * np.sin(angle))
    img += (amplitude * np.exp(-0.5 * (dist / 1.2) ** 2))[..., np.newaxis]
