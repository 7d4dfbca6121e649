"""Truth metrics of a mosaic of panels (:func:`photometry_graph.datasets.make_panel_set`).

A panel mosaic is judged per panel: where each panel's valid pixels land on the mosaic
grid (:func:`panel_footprints`), whether the mosaic covers all of them, whether it steps at
their borders (the seam metric at the panel borders), what local gain and offset each
panel's part of the mosaic keeps against the truth (:func:`mosaic_vs_panels`), and how far
the solved gains are from the injected ones (:func:`panel_gain_errors`).
"""

import numpy as np

from ..core.masks import as_channels_last
from ..core.wcsgrid import footprint_bbox, transform_pixels
from ..stacking.resample import coordinate_map
from .metrics import mosaic_vs_frame_truth

__all__ = ["panel_footprints", "panel_cells", "panel_gain_errors", "star_gains",
           "mosaic_vs_panels"]


def panel_footprints(wcs, shape, panel_set, *, border=2):
    """Where each panel's valid pixels land on a grid.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The grid.
    shape : tuple of int
        ``(H, W)``.
    panel_set : FrameSurvey
        Its ``frames`` carry ``wcs``, ``shape`` and ``valid``.
    border : int
        The valid zones are eroded by this many pixels first, 8-connected (the reading of
        a panel erodes by one and bilinear resampling needs the next pixel: a grid pixel
        whose nearest panel pixel is that deep inside the valid zone can be made from it).

    Returns
    -------
    list of numpy.ndarray of bool, shape (H, W)
        True where the grid pixel's centre falls on an eroded valid pixel (nearest).
    """
    feet = []
    from scipy import ndimage  # imported when used: a run may never need it (~0.2 s)
    for f in panel_set.frames:
        foot = np.zeros(shape, dtype=bool)
        feet.append(foot)
        box = footprint_bbox(f.wcs, f.shape, wcs, shape)
        if box is None:
            continue
        valid = ndimage.binary_erosion(f.valid, np.ones((3, 3), bool), iterations=border,
                                       border_value=0) if border else f.valid
        fx, fy = coordinate_map(f.wcs, wcs, box)  # panel pixel of every grid pixel
        with np.errstate(invalid="ignore"):
            ix, iy = np.round(fx), np.round(fy)
            inside = (ix >= 0) & (ix < f.shape[1]) & (iy >= 0) & (iy < f.shape[0])
        sub = foot[box.y0:box.y1, box.x0:box.x1]
        sub[inside] = valid[iy[inside].astype(np.intp), ix[inside].astype(np.intp)]
    return feet


def panel_cells(footprints):
    """Label map: each pixel goes to the panel it lies deepest inside (-1: none).

    The cut runs through the middle of every overlap, as in a mosaic each panel mostly
    shows where it is farthest from its border.

    Examples
    --------
    >>> a = np.zeros((3, 8), bool); a[:, :5] = True
    >>> panel_cells([a, ~np.zeros((3, 8), bool) & (np.arange(8) >= 3)])[1].tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    """
    from scipy import ndimage
    depth = np.stack([ndimage.distance_transform_edt(np.pad(f, 1))[1:-1, 1:-1]
                      for f in footprints])
    labels = np.argmax(depth, axis=0).astype(np.int32)
    labels[depth.max(axis=0) <= 0] = -1
    return labels


def panel_gain_errors(gains, panel_set, reference):
    """Solved gains against the injected ones, relative to the reference panel.

    A gain solve fixes the reference at 1 (the gauge): panel ``k`` is right when
    ``gain_k * injected_k`` equals ``gain_ref * injected_ref``.

    Parameters
    ----------
    gains : sequence of array_like or None
        Solved gain per panel and channel (None: not solved, NaN).
    panel_set : FrameSurvey
        ``frames[k].gain`` are the injected gains.
    reference : int
        Index of the reference panel.

    Returns
    -------
    numpy.ndarray, shape (n_panels, C)
        ``(gain_k * injected_k) / (gain_ref * injected_ref) - 1``.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> s = NS(frames=[NS(gain=np.array([1.0])), NS(gain=np.array([0.8]))])
    >>> panel_gain_errors([[1.0], [1.25]], s, 0).ravel().tolist()
    [0.0, 0.0]
    """
    true = np.array([f.gain for f in panel_set.frames], dtype=np.float64)
    solved = np.array([np.full(true.shape[1], np.nan) if g is None else np.asarray(g, float)
                       for g in gains])
    prod = solved * true
    return prod / prod[reference] - 1.0


def star_gains(image, truth, cells, star_xy, *, radius=6, annulus=(9, 14), min_snr=50.0,
               noise_sigma=1.0, min_stars=3):
    """Local gain of each cell of a mosaic from aperture photometry of stars.

    Resampling flattens star peaks by a few percent, but keeps their aperture fluxes; and
    a sky-dominated panel holds no other signal that tells its gain.  For every star whose
    aperture and annulus are finite in both images, its flux above the annulus median is
    measured on the mosaic and on the truth (the same pixels, so that blends, smooth
    backgrounds and the sampling cancel); a cell's gain is the median of its stars'
    flux ratios.

    Parameters
    ----------
    image, truth : numpy.ndarray, shape (H, W, C)
    cells : numpy.ndarray of int, shape (H, W)
        Cell label of every pixel (-1: none), e.g. :func:`panel_cells`.
    star_xy : (array_like, array_like)
        Star positions ``x``, ``y`` on the grid.
    radius : float
        Aperture radius, pixels.
    annulus : (float, float)
        Inner and outer radius of the background annulus.
    min_snr : float
        Stars whose truth flux is below ``min_snr`` times the aperture's noise are left out.
    noise_sigma : float
    min_stars : int
        Cells with fewer stars get NaN.

    Returns
    -------
    numpy.ndarray, shape (n_cells, C)
        Median flux ratio mosaic / truth per cell and channel.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :60]
    >>> star = lambda x, y: 100 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.0)
    >>> t = (10 + star(15, 20) + star(45, 20))[..., None]
    >>> cells = np.where(xx < 30, 0, 1)
    >>> g = star_gains(t * np.where(xx < 30, 1.0, 0.9)[..., None], t, cells,
    ...                ([15, 45], [20, 20]), min_stars=1)
    >>> np.round(g[:, 0], 6).tolist()
    [1.0, 0.9]
    """
    H, W, C = image.shape
    r_out = int(np.ceil(annulus[1]))
    dy, dx = np.mgrid[-r_out:r_out + 1, -r_out:r_out + 1]
    dist = np.hypot(dx, dy)
    ap, an = dist <= radius, (dist >= annulus[0]) & (dist <= annulus[1])
    ratios = [[] for _ in range(int(cells.max()) + 1 if cells.size else 0)]
    for x, y in zip(*(np.round(np.asarray(v, float)) for v in star_xy)):
        if not (np.isfinite(x) and np.isfinite(y) and r_out <= x < W - r_out
                and r_out <= y < H - r_out):
            continue
        y, x = int(y), int(x)
        k = cells[y, x]
        box = (slice(y - r_out, y + r_out + 1), slice(x - r_out, x + r_out + 1))
        img, tru = image[box], truth[box]
        if k < 0 or not (np.isfinite(img[ap | an]).all() and np.isfinite(tru[ap | an]).all()):
            continue
        f_img = (img[ap] - np.median(img[an], axis=0)).sum(axis=0)
        f_tru = (tru[ap] - np.median(tru[an], axis=0)).sum(axis=0)
        if (f_tru > min_snr * noise_sigma * np.sqrt(ap.sum())).all():
            ratios[k].append(f_img / f_tru)
    return np.array([np.median(r, axis=0) if len(r) >= min_stars else np.full(C, np.nan)
                     for r in ratios]).reshape(-1, C)


def mosaic_vs_panels(image, wcs, panel_set, *, border=2, min_pixels=100):
    """Coverage, seams and per-panel photometry of a mosaic of a synthetic panel set.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, C) or (C, H, W)
        The mosaic, NaN where empty (a (3, H, W) colour cube is moved channels last).
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    panel_set : FrameSurvey
        From :func:`~photometry_graph.datasets.make_panel_set`.
    border : int
        Erosion of the panels' valid zones (see :func:`panel_footprints`).
    min_pixels : int
        Panels with fewer measured pixels get no offset.

    Returns
    -------
    dict
        ``coverage`` (finite mosaic pixels among the union of the panels' footprints),
        ``seam_panel_borders`` (the seam metric at the footprints' borders on star-free
        pixels, 1 = seamless), ``panel_offsets`` / ``panel_offset_spread_sigma`` /
        ``panel_offset_max_sigma`` (median residual per footprint after a global gain +
        offset + plane fit, noise sigma), ``panel_gains`` (:func:`star_gains` of each
        panel's cell, :func:`panel_cells`, divided by their median), ``gain_spread``
        (their standard deviation) and ``gain_max_error`` (largest ``|gain - 1|``).

    Examples
    --------
    >>> from photometry_graph.datasets import make_panel_set
    >>> s = make_panel_set(1, 2, panel_shape=(80, 120), rng=0)
    >>> img = s.render_truth(s.truth_wcs, s.truth_shape)
    >>> q = mosaic_vs_panels(img, s.truth_wcs, s)
    >>> q["coverage"], q["gain_max_error"] < 1e-9
    (1.0, True)
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    img = as_channels_last(img)
    shape, sigma = img.shape[:2], panel_set.noise_sigma
    truth = panel_set.render_truth(wcs, shape)
    stars = np.abs(truth - panel_set.render_truth(wcs, shape, stars=False)).max(axis=2)
    feet = panel_footprints(wcs, shape, panel_set, border=border)
    union = np.any(feet, axis=0)
    finite = np.isfinite(img).all(axis=2)
    q = mosaic_vs_frame_truth(img, truth, feet, [], noise_sigma=sigma, min_pixels=min_pixels,
                              calm=stars < 0.05 * sigma)  # resampling flattens star peaks
    sky = panel_set.sky
    xy = transform_pixels(panel_set.truth_wcs, wcs, sky.star_x, sky.star_y)
    gains = star_gains(img, truth, panel_cells(feet), xy, noise_sigma=sigma)
    gains = gains / np.nanmedian(gains, axis=0)
    return dict(coverage=float(np.count_nonzero(finite & union) / max(union.sum(), 1)),
                seam_panel_borders=q["seam_frame_borders"], panel_offsets=q["frame_offsets"],
                panel_offset_spread_sigma=q["frame_offset_spread_sigma"],
                panel_offset_max_sigma=q["frame_offset_max_sigma"],
                panel_gains=gains.tolist(), gain_spread=float(np.nanstd(gains)),
                gain_max_error=float(np.nanmax(np.abs(gains - 1.0))))
