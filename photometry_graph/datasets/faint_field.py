"""A faint, sky-dominated field: the case where gains are hard to measure from pixels.

Real surveys are mostly sky: extended emission of a few noise sigmas per pixel, sparse
stars, and every frame with its own gain, offset and light-pollution gradient.  The pixel
fit of such an overlap has little signal range (signal-to-noise 1-3), so its gain is
uncertain, while the stars in the overlap still pin the gain ratio to a fraction of a
percent.  :func:`make_faint_frame_survey` and :func:`make_faint_tile_survey` draw that
field as frames (5 x 5 of 512 px, 20-30 % overlaps, pointing jitter, 4 frames rotated by
2-5 degrees) and as tiles (4 x 4 of 600 px); :func:`frame_correction_errors` measures
frame corrections against the injected truth: gains after the global gauge, offsets at
the frame centres and the global gradient left in the mosaic.
"""

import numpy as np

from .frame_survey import make_frame_survey
from .tile_survey import make_survey

__all__ = ["FAINT_FIELD", "SEEING_RANGE", "make_faint_frame_survey", "make_faint_tile_survey",
           "frame_correction_errors"]

#: The sky and the errors of the faint field (keywords of :func:`make_frame_survey`):
#: extended emission of 1-3 noise sigmas per pixel over most of the field, sparse stars
#: (one per 1000 px, peaks 3-300 sigma, FWHM 3 px: about 260 per 512 x 512 frame, a
#: high-latitude field), gains +-15 %, offsets +-30 sigma, gradients of up to 3 sigma
#: across a frame.
FAINT_FIELD = dict(star_density=1e-3, nebulae=8, nebula_amplitude=(1.0, 3.0),
                   nebula_size=(0.1, 0.35), sky_level=20.0, gain_range=(0.85, 1.15),
                   offset_range=30.0)
#: Seeing that changes from frame to frame (``fwhm_range`` of :func:`make_frame_survey`,
#: px): star pixels then differ between overlapping frames, their fluxes do not.
SEEING_RANGE = (2.5, 4.0)


def make_faint_frame_survey(rng=None, *, channels=1, n_rows=5, n_cols=5,
                            frame_shape=(512, 512), **overrides):
    """Frames of the faint field with pointing jitter, a few rotated, and injected errors.

    Parameters
    ----------
    rng : numpy.random.Generator or int, optional
    channels : {1, 3, "bayer"}
    n_rows, n_cols : int
    frame_shape : tuple of int
    **overrides
        Further keywords of :func:`make_frame_survey` (they replace the faint field's).

    Returns
    -------
    FrameSurvey
        5 x 5 frames of 512 px by default: overlaps of 20-30 % (drawn per gap), jitter of
        +-5 px, 4 frames rotated by 2-5 degrees, gradients of 0-3 sigma, empty borders, a
        NaN blob and a satellite trail.

    Examples
    --------
    >>> s = make_faint_frame_survey(0, n_rows=2, n_cols=2, frame_shape=(64, 64))
    >>> len(s.frames), sum(abs(r) > 0 for r in s.info["rotation_deg"])
    (4, 4)
    """
    kw = dict(FAINT_FIELD, overlap=(0.2, 0.3), jitter=5.0, rotated=4,
              rotation_deg_range=(2.0, 5.0), gradient=(0.0, 3.0), empty_borders=True,
              nan_blob=True, trail=True)
    kw.update(overrides)
    return make_frame_survey(n_rows, n_cols, frame_shape=frame_shape, channels=channels,
                             rng=rng, **kw)


def make_faint_tile_survey(rng=None, *, channels=1, rows=4, cols=4, tile_size=600,
                           overlap=0.2, **overrides):
    """Tiles of the faint field (4 x 4 of 600 px by default) with injected errors.

    Gains +-15 %, offsets +-30 sigma, planar gradients, empty zones (NaN) and a trail; the
    sky of :data:`FAINT_FIELD` (keywords of :func:`make_survey`, which ``overrides``
    replace).

    Returns
    -------
    SyntheticSurvey

    Examples
    --------
    >>> s = make_faint_tile_survey(0, rows=2, cols=2, tile_size=64)
    >>> len(s.tiles), s.info["outlier"]
    (4, 'trail')
    """
    kw = {k: v for k, v in FAINT_FIELD.items() if k != "nebula_size"}
    kw.update(gradient=3.0, empty_zones=True, empty_value=np.nan, outlier="trail")
    kw.update(overrides)
    return make_survey(rows, cols, tile_size, overlap, channels, rng=rng, **kw)


def _points(frame):
    """Native ``(x, y)`` of a frame's centre and of two points a quarter frame away."""
    h, w = frame.shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    d = min(h, w) / 4.0
    return np.array([cx, cx + d, cx]), np.array([cy, cy, cy + d])


def frame_correction_errors(survey, corrections, global_wcs):
    """Frame corrections against the injected truth, up to the gauge of the solve.

    Every corrected frame is evaluated noise-free (the smooth sky, no stars) at its centre
    and at two points a quarter frame away, on the global grid.  One global relation
    ``alpha * sky + beta + T . r`` (the gauge: overall scale, level and gradient, which no
    overlap fixes) is fitted to all of them by least squares; what is left is the error.

    Parameters
    ----------
    survey : FrameSurvey
    corrections : sequence or dict of Correction
        Per frame, in global pixel coordinates of ``global_wcs`` (None: identity).
    global_wcs : astropy.wcs.WCS

    Returns
    -------
    dict
        ``gain`` (n, C): ``|g_k G_k / mean - 1|`` (relative gain error after the global
        gauge: the geometric mean over the frames, the scale a least-squares fit of the
        gains in log would choose); ``offset`` (n, C): the corrected level at the frame centre minus the global
        relation, in noise sigmas (sky units); ``gradient`` (C,): magnitude of ``T /
        alpha`` in sigma per pixel (the gradient the mosaic keeps); ``gradient_limit``
        (C,): ``3 * RMS(|P_k / G_k|) / sqrt(n)`` of the injected gradients ``P_k``.
    """
    from ..core.wcsgrid import transform_pixels
    n, C = len(survey.frames), survey.sky.n_channels
    sigma = survey.noise_sigma
    eff = np.array([(1.0 if corrections[k] is None else corrections[k].gain) * f.gain
                    for k, f in enumerate(survey.frames)], dtype=float).reshape(n, -1)
    rows, values = [], []
    for k, f in enumerate(survey.frames):
        x, y = _points(f)
        tx, ty = transform_pixels(f.wcs, survey.truth_wcs, x, y)
        sky = survey.sky.smooth_at(tx, ty)                               # (3, C)
        gx, gy = transform_pixels(f.wcs, global_wcs, x, y)
        value = f.model(sky, x, y)
        c = corrections[k]
        if c is not None:
            value = (c.gain * value + c.offset + c.slope[:, 0] * gx[:, None]
                     + c.slope[:, 1] * gy[:, None])
        rows.append(np.stack([sky, np.ones_like(sky), np.broadcast_to(gx[:, None], sky.shape),
                              np.broadcast_to(gy[:, None], sky.shape)], axis=-1))
        values.append(value)
    A, v = np.stack(rows), np.stack(values)                  # (n, 3, C, 4), (n, 3, C)
    offset, gradient = np.empty((n, C)), np.empty(C)
    for ch in range(C):
        coef = np.linalg.lstsq(A[:, :, ch].reshape(-1, 4), v[:, :, ch].ravel(), rcond=None)[0]
        resid = v[:, :, ch] - A[:, :, ch] @ coef
        offset[:, ch] = resid[:, 0] / coef[0] / sigma
        gradient[ch] = np.hypot(coef[2], coef[3]) / coef[0] / sigma
    injected = np.array([np.hypot(*f.slope[ch]) / f.gain[ch] for f in survey.frames
                         for ch in range(C)]).reshape(n, C) / sigma
    scale = np.exp(np.mean(np.log(eff), axis=0))
    return {"gain": np.abs(eff / scale - 1.0), "offset": np.abs(offset),
            "gradient": gradient,
            "gradient_limit": 3.0 * np.sqrt(np.mean(injected ** 2, axis=0)) / np.sqrt(n)}
