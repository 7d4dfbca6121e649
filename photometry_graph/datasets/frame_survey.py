"""Synthetic plate-solved frames: the input of the Grid/Survey pipeline with known truth.
"""

from dataclasses import dataclass, field

import numpy as np

from ..core.tiles import BBox
from .sky import SkyModel, add_trail, make_sky

__all__ = ["SyntheticFrame", "FrameSurvey", "make_frame_survey", "sample_sky",
           "truth_grid_wcs", "tan_frame_wcs", "bayer_mosaic"]

_BAYER_RGGB = np.array([[0, 1], [1, 2]])  # channel of (row % 2, col % 2)


def bayer_mosaic(rgb):
    """The RGGB colour-filter raw ``(H, W)`` that a camera records of an ``(H, W, 3)`` image.

    Examples
    --------
    >>> bayer_mosaic(np.arange(12.0).reshape(2, 2, 3)).tolist()
    [[0.0, 4.0], [7.0, 11.0]]
    """
    H, W = rgb.shape[:2]
    ch = _BAYER_RGGB[(np.arange(H) % 2)[:, None], (np.arange(W) % 2)[None, :]]
    return np.take_along_axis(rgb, ch[..., np.newaxis], axis=2)[..., 0]


@dataclass
class SyntheticFrame:
    """One synthetic plate-solved frame with its injected photometric errors.

    The frame's noise-free pixel ``(x, y)`` (0-based native coordinates) is::

        gain * sky(x, y) + offset + slope . ((x, y) - centre)

    per channel, where ``sky`` is the truth seen through the frame's WCS.

    Attributes
    ----------
    index : int
    data : numpy.ndarray, float32
        ``(H, W)`` mono, ``(H, W, 3)`` RGB or ``(H, W)`` Bayer RGGB mosaic;
        0.0 in empty borders, NaN in the NaN blob.
    header : astropy.io.fits.Header
        Celestial TAN WCS (``-SIP`` when distorted), ``EXPTIME``, and
        ``BAYERPAT = 'RGGB'`` for Bayer frames.
    wcs : astropy.wcs.WCS
    gain, offset : numpy.ndarray, shape (C,)
        ``C = 3`` for RGB and Bayer frames.
    slope : numpy.ndarray, shape (C, 2)
        ``(d/dx, d/dy)`` per native pixel.
    valid : numpy.ndarray of bool, shape (H, W)
        False in empty borders and the NaN blob (the trail is valid data).
    centre : tuple of float
        ``(x, y)`` of the frame centre (origin of the gradient).
    exptime : float
    bayer_pattern : str or None
    has_trail : bool
    """

    index: int
    data: np.ndarray
    header: object
    wcs: object
    gain: np.ndarray
    offset: np.ndarray
    slope: np.ndarray
    valid: np.ndarray
    centre: tuple
    exptime: float
    bayer_pattern: object = None
    has_trail: bool = False

    @property
    def shape(self):
        """``(H, W)`` of the frame."""
        return self.data.shape[:2]

    def model(self, sky_values, x, y):
        """Noise-free observed values for sky values at native coordinates.

        Parameters
        ----------
        sky_values : numpy.ndarray, shape ``x.shape + (C,)``
        x, y : array_like
            Native pixel coordinates of the frame.

        Returns
        -------
        numpy.ndarray, shape ``x.shape + (C,)``
        """
        x = np.asarray(x, float)[..., np.newaxis]
        y = np.asarray(y, float)[..., np.newaxis]
        return (self.gain * sky_values + self.offset
                + self.slope[:, 0] * (x - self.centre[0]) + self.slope[:, 1] * (y - self.centre[1]))


@dataclass
class FrameSurvey:
    """Overlapping plate-solved frames of one analytic sky.

    Attributes
    ----------
    frames : list of SyntheticFrame
    sky : SkyModel
        The sky in the pixel grid of ``truth_wcs``.
    truth_wcs : astropy.wcs.WCS
        North-up TAN grid at the frames' pixel scale, covering every frame.
    truth_shape : tuple of int
    noise_sigma : float
    channels : int or str
        1, 3 or ``"bayer"``.
    info : dict
        Parameters and the indices of the frames with a trail, a NaN blob
        and empty borders.
    """

    frames: list
    sky: SkyModel
    truth_wcs: object
    truth_shape: tuple
    noise_sigma: float
    channels: object
    info: dict = field(default_factory=dict)

    @property
    def frame_wcs_list(self):
        """WCS of every frame."""
        return [f.wcs for f in self.frames]

    @property
    def frame_shapes(self):
        """``(H, W)`` of every frame."""
        return [f.shape for f in self.frames]

    def star_positions_world(self):
        """``(lon, lat)`` in degrees of the catalogue stars."""
        from ..core.wcsgrid import celestial_part, lonlat_from_world
        cel = celestial_part(self.truth_wcs)
        return lonlat_from_world(cel, cel.all_pix2world(self.sky.star_x, self.sky.star_y, 0))

    def render_truth(self, wcs, shape, *, stars=True, bbox=None):
        """Noise-free sky on any WCS grid.

        Every target pixel takes the sky's surface brightness at its centre's
        sky position (the frames of the survey are rendered the same way),
        so any two grids agree wherever they overlap, distortion included.

        Parameters
        ----------
        wcs : astropy.wcs.WCS
            Target grid (SIP honoured).
        shape : tuple of int
            ``(h, w)`` of the target array (pixels ``0..w-1``, ``0..h-1``).
        stars : bool
            Render the stars (Gaussian PSF sampled at the pixel's exact sky
            position, so stars sit at the right sub-pixel places).
        bbox : BBox, optional
            Render only this box of the target grid (``shape`` is then
            ignored).

        Returns
        -------
        numpy.ndarray, shape (h, w, C), float64
            NaN where the target pixel has no sky position.
        """
        box = BBox(0, int(shape[0]), 0, int(shape[1])) if bbox is None else bbox
        return sample_sky(self.sky, self.truth_wcs, wcs, box, stars=stars)


def sample_sky(sky, truth_wcs, target_wcs, box, *, stars=True, fwhm=None, smooth=None):
    """Surface brightness of ``sky`` at the pixel centres of ``box`` of a target grid.

    ``sky`` is a :class:`~photometry_graph.datasets.sky.SkyModel` in the pixel grid of
    ``truth_wcs``; returns ``(h, w, C)`` float64, NaN where a target pixel has no sky
    position.  Stars are the Gaussian PSF sampled at each pixel's exact sky position;
    ``fwhm``: their width in this grid (default the sky's; the same fluxes).
    ``smooth(x, y)`` gives the smooth part (background and extended emission) at truth
    grid coordinates (default ``sky.smooth_at``).

    Target pixels are mapped to the truth grid with the interpolated
    coordinate map of :func:`photometry_graph.stacking.resample.coordinate_map`
    (exact transform every 8 pixels; ~1e-6 px from the exact map).
    """
    from ..stacking.resample import coordinate_map
    from ..core.wcsgrid import celestial_pixel_scale, transform_pixels
    tx, ty = coordinate_map(truth_wcs, target_wcs, box, grid_step=8)
    bad = ~np.isfinite(tx) | ~np.isfinite(ty)
    out = (smooth or sky.smooth_at)(np.where(bad, 0.0, tx), np.where(bad, 0.0, ty))
    if stars and sky.star_x.size:
        sx, sy = transform_pixels(truth_wcs, target_wcs, sky.star_x, sky.star_y)
        sigma = (sky.fwhm if fwhm is None else fwhm) / 2.3548200450309493
        ratio = celestial_pixel_scale(truth_wcs) / celestial_pixel_scale(target_wcs)
        radius = int(np.ceil(4.5 * sigma * ratio)) + 2
        peak = sky.star_flux / (2 * np.pi * sigma ** 2)
        x_origin, y_origin = box.x0, box.y0
        h, w = box.shape
        with np.errstate(invalid="ignore"):  # only the stars that can reach the box
            near = ((sx - x_origin > -radius - 2) & (sx - x_origin < w + radius + 2)
                    & (sy - y_origin > -radius - 2) & (sy - y_origin < h + radius + 2))
        for i in np.flatnonzero(near):
            cx, cy = int(np.floor(sx[i] - x_origin)), int(np.floor(sy[i] - y_origin))
            x0, x1 = max(0, cx - radius), min(w, cx + radius + 2)
            y0, y1 = max(0, cy - radius), min(h, cy + radius + 2)
            if x0 >= x1 or y0 >= y1:
                continue
            dx = tx[y0:y1, x0:x1] - sky.star_x[i]
            dy = ty[y0:y1, x0:x1] - sky.star_y[i]
            with np.errstate(invalid="ignore"):
                prof = peak[i] * np.exp(-0.5 * (dx * dx + dy * dy) / sigma ** 2)
            out[y0:y1, x0:x1] += np.nan_to_num(prof)[..., np.newaxis] * sky.star_color[i]
    out[bad] = np.nan
    return out


def truth_grid_wcs(center, scale_deg, shape):
    """North-up TAN grid of ``shape`` (H, W) centred on ``center`` (ra, dec), ICRS.

    Examples
    --------
    >>> w = truth_grid_wcs((150.0, 30.0), 1e-3, (40, 60))
    >>> w.pixel_shape, [round(float(v), 6) for v in w.wcs_pix2world([[29.5, 19.5]], 0)[0]]
    ((60, 40), [150.0, 30.0])
    """
    from astropy.wcs import WCS
    H, W = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(center[0]), float(center[1])]
    w.wcs.crpix = [(W + 1) / 2.0, (H + 1) / 2.0]
    w.wcs.cdelt = [-scale_deg, scale_deg]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    w.wcs.set()
    w.pixel_shape = (W, H)
    return w


def tan_frame_wcs(truth_wcs, cx, cy, shape, scale_deg, theta, sip_coeffs):
    """TAN WCS of a frame of ``shape`` (H, W) centred on truth pixel ``(cx, cy)``.

    ``scale_deg`` degrees per pixel, rotated by ``theta`` radians, with SIP distortion when
    ``sip_coeffs`` is an ``(a, b)`` pair of coefficient matrices (else None).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> t = WCS(naxis=2); t.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> t.wcs.crval = [150, 30]; t.wcs.cdelt = [-1e-3, 1e-3]; t.wcs.crpix = [1, 1]
    >>> w = tan_frame_wcs(t, 0.0, 0.0, (40, 60), 1e-3, 0.0, None)
    >>> [round(float(v), 6) for v in w.wcs.crval], w.pixel_shape
    ([150.0, 30.0], (60, 40))
    """
    from astropy.wcs import WCS, Sip
    H, W = shape
    lon, lat = truth_wcs.all_pix2world([cx], [cy], 0)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip_coeffs else ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(lon[0]), float(lat[0])]
    w.wcs.crpix = [(W + 1) / 2.0, (H + 1) / 2.0]
    c, s = np.cos(theta), np.sin(theta)
    w.wcs.cd = scale_deg * np.array([[-c, s], [s, c]])
    w.wcs.radesys = "ICRS"
    w.wcs.cunit = ["deg", "deg"]
    if sip_coeffs:
        a, b = sip_coeffs
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    w.pixel_shape = (W, H)
    return w


def _random_sip(rng, shape, amplitude):
    """Third-order SIP coefficients moving the corners by about ``amplitude`` px."""
    H, W = shape
    r = 0.5 * np.hypot(H, W)
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    for p, q in ((2, 0), (1, 1), (0, 2)):
        a[p, q] = rng.normal(0, 0.5) * amplitude / r ** 2
        b[p, q] = rng.normal(0, 0.5) * amplitude / r ** 2
    for p, q in ((3, 0), (2, 1), (1, 2), (0, 3)):
        a[p, q] = rng.normal(0, 0.3) * amplitude / r ** 3
        b[p, q] = rng.normal(0, 0.3) * amplitude / r ** 3
    return a, b


def _positions(rng, n, size, overlap):
    """First pixel of ``n`` frames along one axis: steps of ``size`` minus the overlap.

    ``overlap`` a fraction, or a range ``(lo, hi)`` drawn per gap.
    """
    gaps = rng.uniform(overlap[0], overlap[1], max(n - 1, 0)) if np.ndim(overlap) \
        else np.full(max(n - 1, 0), overlap)
    return np.concatenate([[0], np.cumsum([size - int(round(o * size)) for o in gaps])])


def _rotations(rng, n, rotated, degrees):
    """Rotation of every frame (radians): all drawn in ``degrees``, or ``rotated`` of them
    by a size drawn there and a random sign, the others 0."""
    if rotated is None:
        return np.radians(rng.uniform(degrees[0], degrees[1], n))
    thetas = np.zeros(n)
    turned = rng.choice(n, size=min(int(rotated), n), replace=False)
    thetas[turned] = np.radians(rng.uniform(degrees[0], degrees[1], turned.size)
                                * rng.choice([-1.0, 1.0], turned.size))
    return thetas


def make_frame_survey(n_rows=2, n_cols=3, frame_shape=(240, 360), overlap=0.3, *, channels=1,
                      rng=None, pixel_scale_arcsec=2.0, rotation_deg_range=(-3.0, 3.0),
                      center=(150.0, 30.0), sip=False, sip_amplitude=2.0,
                      gain_range=(0.85, 1.15), offset_range=30.0, gradient=3.0,
                      noise_sigma=1.0, sky_level=20.0, star_density=5e-4, fwhm=3.0,
                      nebulae=3, nebula_amplitude=(5.0, 40.0), empty_borders=True,
                      nan_blob=True, trail=True, exptime=10.0, jitter=5.0, add_noise=True,
                      rotated=None, nebula_size=(0.08, 0.3), star_peak_range=(3.0, 300.0),
                      fwhm_range=None):
    """Make overlapping plate-solved frames of one sky with injected errors.

    Frames sit on an ``n_rows x n_cols`` pattern with the given overlap,
    each slightly rotated and shifted, at the same pixel scale as the truth
    grid.  Their pixels are mapped through their WCS (SIP included) into
    the truth grid, so stars land exactly where the WCS says: a frame pixel
    holds the sky's surface brightness at its centre's sky position (stars:
    the Gaussian PSF sampled there), so all frames agree after reprojection,
    SIP distortion included (see :meth:`FrameSurvey.render_truth`).

    Parameters
    ----------
    n_rows, n_cols : int
        Frame pattern.
    frame_shape : tuple of int
        ``(H, W)`` of every frame.
    overlap : float or tuple of float
        Overlap between neighbouring frames (fraction of the frame size); a range
        ``(lo, hi)`` draws the overlap of every column and row gap in it.
    channels : {1, 3, "bayer"}
        Mono, RGB ``(H, W, 3)`` or a 2-D Bayer RGGB mosaic (the sky is RGB).
    rng : numpy.random.Generator or int, optional
    pixel_scale_arcsec : float
    rotation_deg_range : tuple of float
        Frame rotations are uniform in this range (of ``rotated`` frames only, with a
        random sign, when that is given).
    center : tuple of float
        ``(ra, dec)`` of the pattern centre, degrees.
    sip : bool
        Give every frame a random third-order SIP distortion moving its
        corners by about ``sip_amplitude`` pixels.
    gain_range : tuple of float
        Per frame (and per channel) gains, uniform.
    offset_range : float
        Offsets uniform in ``±offset_range * noise_sigma``.
    gradient : float or tuple of float
        Peak-to-peak amplitude (in ``noise_sigma``) of a plane over each
        frame (random direction per frame and channel); 0 for none; a range
        ``(lo, hi)`` draws the amplitude per frame and channel.
    noise_sigma : float
    sky_level, star_density, fwhm, nebulae, nebula_amplitude
        Passed to :func:`make_sky`.
    empty_borders : bool
        About half of the frames (at least one) get an empty (0.0) strip
        along one side, invalid in ``valid``.
    nan_blob : bool
        One frame gets a round NaN zone.
    trail : bool
        One frame gets a satellite trail (50 sigma, valid data: an outlier
        for stacking and fitting).
    exptime : float
        ``EXPTIME`` of every frame, seconds.
    jitter : float
        Random shift of each frame centre, uniform ``±jitter`` pixels.
    add_noise : bool
        Add Gaussian noise of ``noise_sigma``.
    rotated : int, optional
        Only this many frames (drawn at random) are rotated, by an angle whose size is
        uniform in ``rotation_deg_range`` (random sign); the others are not rotated.
        ``None``: every frame is rotated.
    nebula_size, star_peak_range : tuple of float
        Passed to :func:`make_sky`.
    fwhm_range : tuple of float, optional
        Every frame sees the stars with its own PSF width, drawn uniformly in this range
        (seeing that changes during a session; the fluxes stay the same); ``None``: all
        frames at ``fwhm``.

    Returns
    -------
    FrameSurvey

    Examples
    --------
    >>> s = make_frame_survey(1, 2, frame_shape=(40, 60), rng=0)
    >>> len(s.frames), s.frames[0].data.shape, s.frames[0].header["EXPTIME"]
    (2, (40, 60), 10.0)
    """
    from astropy.io import fits

    rng = np.random.default_rng(rng)
    if channels not in (1, 3, "bayer"):
        raise ValueError(f"channels must be 1, 3 or 'bayer', got {channels!r}")
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"n_rows and n_cols must be >= 1, got {n_rows}x{n_cols}")
    H, W = int(frame_shape[0]), int(frame_shape[1])
    n_ch = 1 if channels == 1 else 3
    scale = pixel_scale_arcsec / 3600.0
    pos_x = _positions(rng, n_cols, W, overlap)
    pos_y = _positions(rng, n_rows, H, overlap)
    max_rot = np.radians(max(abs(rotation_deg_range[0]), abs(rotation_deg_range[1])))
    margin = int(np.ceil(0.5 * (W + H) * np.sin(max_rot) + jitter
                         + (2 * sip_amplitude if sip else 0) + 8))
    tW = 2 * margin + W + int(pos_x[-1])
    tH = 2 * margin + H + int(pos_y[-1])
    truth_wcs = truth_grid_wcs(center, scale, (tH, tW))
    sky = make_sky((tH, tW), n_ch, rng=rng, star_density=star_density, fwhm=fwhm,
                   nebulae=nebulae, nebula_amplitude=nebula_amplitude, sky_level=sky_level,
                   noise_sigma=noise_sigma, nebula_size=nebula_size,
                   star_peak_range=star_peak_range)

    n = n_rows * n_cols
    gains = rng.uniform(gain_range[0], gain_range[1], (n, n_ch))
    offsets = rng.uniform(-offset_range, offset_range, (n, n_ch)) * noise_sigma
    slopes = np.zeros((n, n_ch, 2))
    if np.any(gradient):
        direction = rng.uniform(0, 2 * np.pi, (n, n_ch))
        unit = np.stack([np.cos(direction), np.sin(direction)], axis=-1)
        extent = np.abs(unit[..., 0]) * W + np.abs(unit[..., 1]) * H
        amplitude = rng.uniform(gradient[0], gradient[1], (n, n_ch)) if np.ndim(gradient) \
            else gradient
        slopes = unit * (amplitude * noise_sigma / extent)[..., np.newaxis]
    thetas = _rotations(rng, n, rotated, rotation_deg_range)
    # seeing that changes from frame to frame (same flux, another PSF width)
    fwhms = np.full(n, float(fwhm)) if fwhm_range is None else rng.uniform(*fwhm_range, n)
    border_frames = set()
    if empty_borders:
        border_frames = set(rng.choice(n, size=max(1, n // 2), replace=False).tolist())
    blob_frame = int(rng.integers(n)) if nan_blob else None
    trail_frame = int(rng.integers(n)) if trail else None

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    centre = ((W - 1) / 2.0, (H - 1) / 2.0)
    frames = []
    for k in range(n):
        r, c = divmod(k, n_cols)
        cx = margin + (W - 1) / 2.0 + pos_x[c] + rng.uniform(-jitter, jitter)
        cy = margin + (H - 1) / 2.0 + pos_y[r] + rng.uniform(-jitter, jitter)
        coeffs = _random_sip(rng, (H, W), sip_amplitude) if sip else None
        w = tan_frame_wcs(truth_wcs, cx, cy, (H, W), scale, thetas[k], coeffs)
        clean = sample_sky(sky, truth_wcs, w, BBox(0, H, 0, W), fwhm=fwhms[k])
        observed = (gains[k] * clean + offsets[k]
                    + slopes[k, :, 0] * (xx - centre[0])[..., np.newaxis]
                    + slopes[k, :, 1] * (yy - centre[1])[..., np.newaxis])
        if channels == "bayer":
            img = bayer_mosaic(observed)
        elif channels == 1:
            img = observed[..., 0]
        else:
            img = observed
        if add_noise:
            img = img + rng.normal(0.0, noise_sigma, img.shape)
        if k == trail_frame:
            img3 = img[..., np.newaxis] if img.ndim == 2 else img
            add_trail(img3, rng, 50.0 * noise_sigma)
        valid = np.ones((H, W), dtype=bool)
        if k in border_frames:
            side = int(rng.integers(4))
            width = int(rng.integers(3, max(4, min(H, W) // 20)))
            strip = np.zeros((H, W), dtype=bool)
            if side == 0:
                strip[:width] = True
            elif side == 1:
                strip[H - width:] = True
            elif side == 2:
                strip[:, :width] = True
            else:
                strip[:, W - width:] = True
            img[strip] = 0.0
            valid &= ~strip
        if k == blob_frame:
            by, bx = rng.uniform(0.25, 0.75) * H, rng.uniform(0.25, 0.75) * W
            radius = rng.uniform(0.05, 0.1) * min(H, W)
            blob = (yy - by) ** 2 + (xx - bx) ** 2 < radius ** 2
            img[blob] = np.nan
            valid &= ~blob
        header = fits.Header()
        header.update(w.to_header(relax=True))
        header["EXPTIME"] = (float(exptime), "exposure time, s")
        if channels == "bayer":
            header["BAYERPAT"] = ("RGGB", "Bayer pattern of the mosaic")
        header["FRAMEIDX"] = (k, "synthetic frame index")
        frames.append(SyntheticFrame(
            index=k, data=np.ascontiguousarray(img, dtype=np.float32), header=header, wcs=w,
            gain=gains[k], offset=offsets[k], slope=slopes[k], valid=valid, centre=centre,
            exptime=float(exptime), bayer_pattern="RGGB" if channels == "bayer" else None,
            has_trail=(k == trail_frame)))
    info = dict(n_rows=n_rows, n_cols=n_cols, frame_shape=(H, W), overlap=overlap,
                channels=channels, sip=sip, gradient=gradient,
                rotation_deg=np.degrees(thetas).tolist(), fwhm=fwhms.tolist(),
                empty_border_frames=sorted(border_frames), nan_blob_frame=blob_frame,
                trail_frame=trail_frame, pixel_scale_arcsec=pixel_scale_arcsec)
    return FrameSurvey(frames=frames, sky=sky, truth_wcs=truth_wcs, truth_shape=(tH, tW),
                       noise_sigma=float(noise_sigma), channels=channels, info=info)
