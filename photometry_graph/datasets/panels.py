"""Synthetic panel sets: a mosaic shot panel by panel, each panel stacked on its own.

Most amateur mosaics are made of panels that a stacker (Siril, DSS, ASTAP, PixInsight, a
smart telescope's app) has registered and stacked one by one: every panel has its own TAN
grid (pixel scale, rotation and size of its own), a border of NaN or zero pixels where the
registered frames did not all reach, and its own photometric system (gain, offset,
gradient).  :func:`make_panel_set` draws such a set with known truth, as a
:class:`~photometry_graph.datasets.frame_survey.FrameSurvey` whose frames are the panels
(so that the truth rendering and the frame metrics of the diagnostics apply as they are);
:func:`write_panel_set` writes it as FITS files the way stackers do (mono, RGB in either
axis order, an optional weight extension or ``*.weight.fits`` beside the panel).
"""

from pathlib import Path

import numpy as np

from ..core.tiles import BBox
from .frame_survey import (FrameSurvey, SyntheticFrame, sample_sky, tan_frame_wcs,
                           truth_grid_wcs)
from .sky import make_sky

__all__ = ["make_panel_set", "write_panel_set", "WEIGHT_MODES"]

#: How :func:`write_panel_set` writes the panels' weights: not at all, as a ``WEIGHT``
#: extension, or as a ``NAME.weight.fits`` file beside ``NAME.fits``.
WEIGHT_MODES = (None, "extension", "sidecar")


def _spread(rng, n, half_width):
    """``n`` values in ``[-half_width, half_width]``, the extreme one at ``±half_width``."""
    u = rng.uniform(-1.0, 1.0, n)
    return u / max(np.abs(u).max(), 1e-12) * half_width


def _stacked_border(shape, rng, fraction, tilt_deg):
    """Valid zone of a stacked panel: a slightly tilted rectangle inside the panel.

    Registration of the panel's frames (shifted, a little rotated) leaves invalid strips of
    ``fraction`` (a range) of the panel size along each side and wedges at the corners.
    """
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    phi = np.radians(rng.uniform(-tilt_deg, tilt_deg))
    u = np.cos(phi) * (xx - (W - 1) / 2.0) + np.sin(phi) * (yy - (H - 1) / 2.0)
    v = -np.sin(phi) * (xx - (W - 1) / 2.0) + np.cos(phi) * (yy - (H - 1) / 2.0)
    left, right = rng.uniform(*fraction, 2) * W
    top, bottom = rng.uniform(*fraction, 2) * H
    return (u > -W / 2.0 + left) & (u < W / 2.0 - right) & (v > -H / 2.0 + top) \
        & (v < H / 2.0 - bottom)


def make_panel_set(n_rows=2, n_cols=3, panel_shape=(240, 360), overlap=0.3, *, channels=1,
                   rng=None, pixel_scale_arcsec=2.0, scale_range=0.1, rotation_deg=20.0,
                   size_range=0.1, center=(150.0, 30.0), gain_range=(0.85, 1.15),
                   offset_range=30.0, gradient=3.0, noise_sigma=1.0, sky_level=20.0,
                   star_density=1e-3, star_peak_range=(10.0, 2000.0), fwhm=3.0, nebulae=4,
                   nebula_amplitude=(50.0, 300.0), border_fraction=(0.01, 0.05),
                   border_tilt_deg=2.0, add_noise=True):
    """Draw a set of stacked panels of one field with injected photometric errors.

    Panel ``k`` sits on an ``n_rows x n_cols`` pattern of the field (centres
    ``(1 - overlap) * panel_shape`` apart on the truth grid) with its own TAN grid: pixel
    scale ``pixel_scale_arcsec * (1 + s_k)``, ``|s_k| <= scale_range``; rotation
    ``|theta_k| <= rotation_deg``; height and width ``panel_shape * (1 + z)``,
    ``|z| <= size_range`` (the extremes of scale and rotation are reached by one panel
    each).  Its noise-free pixel ``(x, y)`` is ``gain_k * sky + offset_k + slope_k . ((x,
    y) - centre_k)`` (the sky sampled at the pixel centre's sky position, as
    :func:`~photometry_graph.datasets.frame_survey.make_frame_survey` does), plus noise;
    outside its valid zone (a slightly tilted rectangle, see ``border_fraction``) it holds
    NaN (even ``k``) or 0.0 (odd ``k``), as stackers leave it.

    Parameters
    ----------
    n_rows, n_cols : int
        Panel pattern.
    panel_shape : tuple of int
        Nominal ``(H, W)`` of a panel.
    overlap : float
        Nominal overlap of neighbouring panels, a fraction of the panel size.
    channels : {1, 3}
        Mono ``(H, W)`` or RGB ``(H, W, 3)`` data.
    rng : numpy.random.Generator or int, optional
    pixel_scale_arcsec : float
        Pixel scale of the truth grid and nominal scale of the panels.
    scale_range, size_range : float
        Largest relative deviation of a panel's pixel scale and of its height/width.
    rotation_deg : float
        Largest panel rotation, degrees.
    center : tuple of float
        ``(ra, dec)`` of the field centre, degrees.
    gain_range : tuple of float
        Per panel (and channel) gains, uniform.
    offset_range : float
        Offsets uniform in ``±offset_range * noise_sigma``.
    gradient : float
        Peak-to-peak amplitude (``noise_sigma``) of a plane over each panel.
    noise_sigma, sky_level, star_density, star_peak_range, fwhm, nebulae, nebula_amplitude
        As in :func:`~photometry_graph.datasets.sky.make_sky`.  The defaults draw a
        bright field, as panels are stacks of many frames: nebulae of 50-300 and star
        peaks of 10-2000 noise sigma (the frame surveys use 5-40 and 3-300); the values
        of :func:`~photometry_graph.datasets.frame_survey.make_frame_survey` give a faint
        field whose overlaps constrain the gains far less.
    border_fraction : tuple of float
        Range of the invalid strip along each side, a fraction of the panel size.
    border_tilt_deg : float
        Largest tilt of the valid zone's edges (corner wedges).
    add_noise : bool

    Returns
    -------
    FrameSurvey
        ``frames`` are the panels (``valid``, ``gain``, ``offset``, ``slope``, ``wcs``,
        ``header`` with ``PANELIDX``); ``info`` holds ``kind="panels"``, the scales
        (``pixel_scales_arcsec``), rotations (``rotations_deg``), shapes and border values.

    Examples
    --------
    >>> s = make_panel_set(1, 2, panel_shape=(40, 60), rng=0)
    >>> len(s.frames), s.info["kind"], max(abs(r) for r in s.info["rotations_deg"])
    (2, 'panels', 20.0)
    """
    rng = np.random.default_rng(rng)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"n_rows and n_cols must be >= 1, got {n_rows}x{n_cols}")
    H0, W0 = int(panel_shape[0]), int(panel_shape[1])
    n, scale = n_rows * n_cols, pixel_scale_arcsec / 3600.0
    step_x, step_y = W0 * (1 - overlap), H0 * (1 - overlap)
    margin = int(np.ceil(0.5 * np.hypot(H0, W0) * (1 + size_range) * (1 + scale_range))) + 8
    tW = int(np.ceil(2 * margin + (n_cols - 1) * step_x))
    tH = int(np.ceil(2 * margin + (n_rows - 1) * step_y))
    truth_wcs = truth_grid_wcs(center, scale, (tH, tW))
    sky = make_sky((tH, tW), channels, rng=rng, star_density=star_density, fwhm=fwhm,
                   star_peak_range=star_peak_range, nebulae=nebulae,
                   nebula_amplitude=nebula_amplitude, sky_level=sky_level,
                   noise_sigma=noise_sigma)
    scales = scale * (1.0 + _spread(rng, n, scale_range))
    thetas = _spread(rng, n, rotation_deg)
    sizes = np.round(np.array([H0, W0]) * (1.0 + rng.uniform(-size_range, size_range, (n, 2))))
    gains = rng.uniform(gain_range[0], gain_range[1], (n, channels))
    offsets = rng.uniform(-offset_range, offset_range, (n, channels)) * noise_sigma
    direction = rng.uniform(0, 2 * np.pi, (n, channels))
    panels = []
    for k in range(n):
        r, c = divmod(k, n_cols)
        H, W = int(sizes[k, 0]), int(sizes[k, 1])
        w = tan_frame_wcs(truth_wcs, margin + c * step_x, margin + r * step_y, (H, W),
                          scales[k], np.radians(thetas[k]), None)
        centre = ((W - 1) / 2.0, (H - 1) / 2.0)
        unit = np.stack([np.cos(direction[k]), np.sin(direction[k])], axis=-1)
        extent = np.abs(unit[:, 0]) * W + np.abs(unit[:, 1]) * H
        slope = unit * (gradient * noise_sigma / extent)[:, np.newaxis]
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
        img = (gains[k] * sample_sky(sky, truth_wcs, w, BBox(0, H, 0, W)) + offsets[k]
               + slope[:, 0] * (xx - centre[0])[..., np.newaxis]
               + slope[:, 1] * (yy - centre[1])[..., np.newaxis])
        if add_noise:
            img = img + rng.normal(0.0, noise_sigma, img.shape)
        valid = _stacked_border((H, W), rng, border_fraction, border_tilt_deg)
        img[~valid] = np.nan if k % 2 == 0 else 0.0
        header = w.to_header(relax=True)
        header["PANELIDX"] = (k, "synthetic panel index")
        panels.append(SyntheticFrame(
            index=k, data=np.ascontiguousarray(img[..., 0] if channels == 1 else img,
                                               dtype=np.float32),
            header=header, wcs=w, gain=gains[k], offset=offsets[k], slope=slope, valid=valid,
            centre=centre, exptime=1.0))
    info = dict(kind="panels", n_rows=n_rows, n_cols=n_cols, panel_shape=(H0, W0),
                overlap=overlap, channels=channels, gradient=gradient,
                pixel_scales_arcsec=(scales * 3600.0).tolist(), rotations_deg=thetas.tolist(),
                shapes=[p.shape for p in panels],
                border_values=["nan" if k % 2 == 0 else "zero" for k in range(n)],
                pixel_scale_arcsec=pixel_scale_arcsec)
    return FrameSurvey(frames=panels, sky=sky, truth_wcs=truth_wcs, truth_shape=(tH, tW),
                       noise_sigma=float(noise_sigma), channels=channels, info=info)


def write_panel_set(panel_set, folder, *, rgb_layouts=("chw", "hwc"), weights=None,
                    prefix="panel"):
    """Write the panels of :func:`make_panel_set` as FITS files, as stackers write them.

    Parameters
    ----------
    panel_set : FrameSurvey
    folder : str or Path
        Created if needed; ``{prefix}_1.fits`` ... are written (replaced) there.
    rgb_layouts : sequence of {"chw", "hwc"}
        Axis order of RGB panels, cycled over the panels: ``(3, H, W)`` or ``(H, W, 3)``.
    weights : {None, "extension", "sidecar"}
        Also write each panel's weight (a frame count: ``10 + k`` on valid pixels, 0
        elsewhere) as a ``WEIGHT`` image extension, or as ``{prefix}_N.weight.fits``.
    prefix : str

    Returns
    -------
    list of Path
        The panel files, in panel order.

    Examples
    --------
    >>> import tempfile
    >>> s = make_panel_set(1, 2, panel_shape=(40, 60), rng=0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     [p.name for p in write_panel_set(s, d, weights="sidecar")]
    ['panel_1.fits', 'panel_2.fits']
    """
    from astropy.io import fits

    if weights not in WEIGHT_MODES:
        raise ValueError(f"weights must be one of {WEIGHT_MODES}, got {weights!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, p in enumerate(panel_set.frames):
        data = p.data
        if data.ndim == 3 and rgb_layouts[k % len(rgb_layouts)] == "chw":
            data = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        hdus = [fits.PrimaryHDU(data, p.header)]
        weight = np.where(p.valid, 10.0 + k, 0.0).astype(np.float32)
        path = folder / f"{prefix}_{k + 1}.fits"
        if weights == "extension":
            hdus.append(fits.ImageHDU(weight, name="WEIGHT"))
        elif weights == "sidecar":
            fits.PrimaryHDU(weight).writeto(path.with_name(f"{path.stem}.weight.fits"),
                                            overwrite=True)
        fits.HDUList(hdus).writeto(path, overwrite=True)
        paths.append(path)
    return paths
