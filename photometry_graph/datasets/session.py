"""A smart-telescope session: many full-size frames of a few pointings, rendered on demand.

A night with a smart telescope (a Seestar S50 gives 1080 x 1920 px frames, 10-30 s each)
cycles through the pointings of a small mosaic for hours: hundreds to thousands of frames,
dithered by a few tens of pixels, with the field rotating slowly (alt-az mount), the
transparency, the sky glow and its gradient changing from frame to frame, and now and then
a satellite trail.  :func:`make_session` draws such a session with known truth; its frames
are rendered one at a time when asked for (:attr:`Session.frames` is a lazy sequence), so a
session of thousands of frames costs the memory of one.
"""

from dataclasses import dataclass, field

import numpy as np

from ..core.tiles import BBox
from .frame_survey import (FrameSurvey, SyntheticFrame, bayer_mosaic, sample_sky,
                           tan_frame_wcs, truth_grid_wcs)
from .sky import add_trail, make_sky

__all__ = ["Session", "make_session"]

#: Spacing (truth pixels) of the samples of the sky's smooth part that frames interpolate.
SMOOTH_STEP = 8


class _LazyFrames:
    """The frames of a :class:`Session`: a sequence whose items are rendered when read."""

    def __init__(self, session):
        self._session = session

    def __len__(self):
        return len(self._session.params)

    def __getitem__(self, k):
        if not -len(self) <= k < len(self):
            raise IndexError(f"frame {k} of a session of {len(self)} frames")
        return self._session.render_frame(k % len(self))

    def __iter__(self):
        return (self[k] for k in range(len(self)))


@dataclass
class Session(FrameSurvey):
    """A :class:`FrameSurvey` whose frames are rendered on demand.

    ``frames`` is a lazy sequence: ``session.frames[k]`` renders frame ``k`` (the same
    pixels every time, whatever the order), so writing a session holds one frame at a
    time.  ``params`` holds what is known of every frame without rendering it: its WCS,
    injected gain, offset, slope, noise sigma, pointing, rotation and whether it has a
    trail.
    """

    params: list = None
    seed: int = 0
    dtype: object = np.uint16
    _smooth_grid: np.ndarray = field(default=None, repr=False)

    @property
    def frame_wcs_list(self):
        """WCS of every frame (not rendered)."""
        return [p["wcs"] for p in self.params]

    @property
    def frame_shapes(self):
        """``(H, W)`` of every frame."""
        return [self.info["frame_shape"]] * len(self.params)

    def smooth_at(self, x, y):
        """The sky's smooth part (background, extended emission) at truth grid coordinates.

        Bilinear interpolation of ``sky.smooth_at`` sampled every :data:`SMOOTH_STEP`
        pixels (the emission is hundreds of pixels wide: the interpolation error is
        below 1e-3 sigma), so a frame renders in a fraction of a second.
        """
        import cv2
        if self._smooth_grid is None:
            tH, tW = self.truth_shape
            gy = np.arange(0, tH + SMOOTH_STEP, SMOOTH_STEP, dtype=np.float64)
            gx = np.arange(0, tW + SMOOTH_STEP, SMOOTH_STEP, dtype=np.float64)
            grid = self.sky.smooth_at(*np.meshgrid(gx, gy))
            self._smooth_grid = np.ascontiguousarray(grid, dtype=np.float32)
        mx = (np.asarray(x, np.float64) / SMOOTH_STEP).astype(np.float32)
        my = (np.asarray(y, np.float64) / SMOOTH_STEP).astype(np.float32)
        out = cv2.remap(self._smooth_grid, mx, my, cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(mx.shape + (self._smooth_grid.shape[2],)).astype(np.float64)

    def render_truth(self, wcs, shape, *, stars=True, bbox=None):
        """Noise-free sky on any WCS grid, as the frames see it (see :meth:`smooth_at`)."""
        box = BBox(0, int(shape[0]), 0, int(shape[1])) if bbox is None else bbox
        return sample_sky(self.sky, self.truth_wcs, wcs, box, stars=stars,
                          smooth=self.smooth_at)

    def render_frame(self, k):
        """Frame ``k`` as a :class:`SyntheticFrame` (``data`` in ``dtype``, e.g. uint16 ADU).

        The noise-free value is ``gain * sky + offset + slope . ((x, y) - centre)``;
        Gaussian noise of the frame's sigma, a trail where ``params[k]["trail"]``, then
        rounding and clipping to the range of an integer ``dtype``.
        """
        p = self.params[k]
        H, W = self.info["frame_shape"]
        rng = np.random.default_rng([self.seed, k])
        clean = self.render_truth(p["wcs"], (H, W))
        xx = np.arange(W, dtype=np.float64) - (W - 1) / 2.0
        yy = np.arange(H, dtype=np.float64) - (H - 1) / 2.0
        observed = (p["gain"] * clean + p["offset"]
                    + p["slope"][:, 0] * xx[None, :, None] + p["slope"][:, 1] * yy[:, None, None])
        if self.channels == "bayer":
            img = bayer_mosaic(observed)
        else:
            img = observed[..., 0] if self.channels == 1 else observed
        img = img + p["noise"] * rng.standard_normal(img.shape, dtype=np.float32)
        if p["trail"]:
            add_trail(img[..., np.newaxis] if img.ndim == 2 else img, rng,
                      50.0 * self.noise_sigma)
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            img = np.clip(np.rint(img), info.min, info.max)
        header = p["wcs"].to_header(relax=True)
        header["EXPTIME"] = (self.info["exptime"], "exposure time, s")
        if self.channels == "bayer":
            header["BAYERPAT"] = ("RGGB", "Bayer pattern of the mosaic")
        header["FRAMEIDX"] = (k, "synthetic frame index")
        return SyntheticFrame(
            index=k, data=np.ascontiguousarray(img, dtype=dtype), header=header, wcs=p["wcs"],
            gain=p["gain"], offset=p["offset"], slope=p["slope"], valid=np.ones((H, W), bool),
            centre=((W - 1) / 2.0, (H - 1) / 2.0), exptime=self.info["exptime"],
            bayer_pattern="RGGB" if self.channels == "bayer" else None, has_trail=p["trail"])


def make_session(n_frames=120, frame_shape=(1080, 1920), pointings=(2, 3), overlap=0.2, *,
                 channels=1, rng=0, pixel_scale_arcsec=2.4, center=(10.68, 41.27),
                 dither=25.0, rotation_deg=(-8.0, 8.0), gain_range=(0.85, 1.15),
                 offset_range=30.0, gradient=5.0, noise_sigma=15.0, noise_range=(0.85, 1.2),
                 sky_level=40.0, star_density=4e-4, fwhm=3.0, nebulae=4, saturated_stars=12,
                 trails=None, exptime=10.0, dtype=np.uint16):
    """Draw a smart-telescope session: ``n_frames`` frames cycling over a grid of pointings.

    Frame ``k`` points at pointing ``k % (rows * cols)`` (the pointings of a mosaic are
    visited in turn), shifted by a random dither, with the field rotation drifting linearly
    from ``rotation_deg[0]`` to ``rotation_deg[1]`` through the session.  Each frame has its
    own gain (transparency), offset (sky glow), planar gradient (light pollution) and noise.
    Values are in ADU: the sky level is ``sky_level * noise_sigma``, a dozen stars saturate a
    16-bit frame (65535), and a few frames carry a satellite trail of 50 sigma.

    Parameters
    ----------
    n_frames : int
    frame_shape : tuple of int
        ``(H, W)`` of every frame (a Seestar S50 frame is 1080 x 1920).
    pointings : tuple of int
        Rows and columns of the mosaic's pointings.
    overlap : float
        Overlap of neighbouring pointings, fraction of the frame size.
    channels : {1, 3, "bayer"}
        Mono, RGB ``(H, W, 3)`` or a 2-D Bayer RGGB raw.
    rng : int
        Seed of the session (the frames are rendered from ``(rng, k)``).
    pixel_scale_arcsec : float
    center : tuple of float
        ``(ra, dec)`` of the mosaic centre, degrees (default M31).
    dither : float
        Random shift of each frame, uniform in ``±dither`` pixels per axis.
    rotation_deg : tuple of float
        Field rotation of the first and of the last frame, degrees.
    gain_range : tuple of float
        Per-frame (and per-channel) gains, uniform.
    offset_range : float
        Per-frame offsets, uniform in ``±offset_range * noise_sigma``.
    gradient : float
        Peak-to-peak amplitude of each frame's planar gradient, in ``noise_sigma``.
    noise_sigma : float
        Nominal noise, ADU (the unit of the levels).
    noise_range : tuple of float
        Each frame's noise is ``noise_sigma`` times a factor uniform in this range.
    sky_level, star_density, fwhm, nebulae
        Passed to :func:`~photometry_graph.datasets.sky.make_sky`.
    saturated_stars : int
        Stars as bright as 5000 sigma (clipped by a 16-bit ``dtype``).
    trails : int, optional
        Frames with a satellite trail (default ``max(1, n_frames // 40)``).
    exptime : float
    dtype : numpy dtype
        Of the rendered data; integer types are rounded and clipped.

    Returns
    -------
    Session

    Examples
    --------
    >>> s = make_session(12, frame_shape=(60, 100), pointings=(1, 2), rng=1)
    >>> len(s.frames), s.frames[3].data.dtype, s.frames[3].data.shape
    (12, dtype('uint16'), (60, 100))
    >>> bool((s.frames[5].data == s.frames[5].data).all()), s.params[0]["pointing"]
    (True, 0)
    """
    if channels not in (1, 3, "bayer"):
        raise ValueError(f"channels must be 1, 3 or 'bayer', got {channels!r}")
    n_rows, n_cols = (int(v) for v in pointings)
    if n_frames < 1 or n_rows < 1 or n_cols < 1:
        raise ValueError(f"need n_frames >= 1 and pointings >= (1, 1), got {n_frames}, "
                         f"{pointings}")
    seed = int(rng)
    gen = np.random.default_rng(seed)
    H, W = int(frame_shape[0]), int(frame_shape[1])
    n_ch = 1 if channels == 1 else 3
    scale = pixel_scale_arcsec / 3600.0
    step_x, step_y = W - int(round(overlap * W)), H - int(round(overlap * H))
    max_rot = np.radians(max(abs(r) for r in rotation_deg))
    margin = int(np.ceil(0.5 * (W + H) * np.sin(max_rot) + dither + 8))
    tW = 2 * margin + W + (n_cols - 1) * step_x
    tH = 2 * margin + H + (n_rows - 1) * step_y
    truth_wcs = truth_grid_wcs(center, scale, (tH, tW))
    sky = make_sky((tH, tW), n_ch, rng=gen, star_density=star_density, fwhm=fwhm,
                   nebulae=nebulae, sky_level=sky_level, noise_sigma=noise_sigma)
    n_sat = int(saturated_stars)
    sigma_psf = fwhm / 2.3548200450309493
    sky.star_x = np.append(sky.star_x, gen.uniform(margin, tW - margin, n_sat))
    sky.star_y = np.append(sky.star_y, gen.uniform(margin, tH - margin, n_sat))
    sky.star_flux = np.append(sky.star_flux,
                              np.full(n_sat, 5000.0 * noise_sigma * 2 * np.pi * sigma_psf ** 2))
    sky.star_color = np.concatenate([sky.star_color, np.ones((n_sat, n_ch))])

    n_trails = max(1, n_frames // 40) if trails is None else int(trails)
    trail_frames = set(gen.choice(n_frames, size=min(n_trails, n_frames), replace=False).tolist())
    rot = np.radians(np.linspace(rotation_deg[0], rotation_deg[1], n_frames))
    params = []
    for k in range(n_frames):
        r, c = divmod(k % (n_rows * n_cols), n_cols)
        cx = margin + (W - 1) / 2.0 + c * step_x + gen.uniform(-dither, dither)
        cy = margin + (H - 1) / 2.0 + r * step_y + gen.uniform(-dither, dither)
        direction = gen.uniform(0, 2 * np.pi, n_ch)
        unit = np.stack([np.cos(direction), np.sin(direction)], axis=-1)
        extent = np.abs(unit[:, 0]) * W + np.abs(unit[:, 1]) * H
        params.append(dict(
            wcs=tan_frame_wcs(truth_wcs, cx, cy, (H, W), scale, rot[k], None),
            pointing=k % (n_rows * n_cols), rotation_deg=float(np.degrees(rot[k])),
            gain=gen.uniform(gain_range[0], gain_range[1], n_ch),
            offset=gen.uniform(-offset_range, offset_range, n_ch) * noise_sigma,
            slope=unit * (gradient * noise_sigma / extent)[:, np.newaxis],
            noise=float(noise_sigma * gen.uniform(noise_range[0], noise_range[1])),
            trail=k in trail_frames))
    info = dict(n_frames=n_frames, pointings=(n_rows, n_cols), frame_shape=(H, W),
                overlap=overlap, channels=channels, dither=dither, rotation_deg=rotation_deg,
                trail_frames=sorted(trail_frames), exptime=float(exptime),
                pixel_scale_arcsec=pixel_scale_arcsec)
    session = Session(frames=None, sky=sky, truth_wcs=truth_wcs, truth_shape=(tH, tW),
                      noise_sigma=float(noise_sigma), channels=channels, info=info,
                      params=params, seed=seed, dtype=dtype)
    session.frames = _LazyFrames(session)
    return session
