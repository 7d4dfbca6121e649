"""Truth metrics: seam strength, fits to the truth, the quality of a mosaic against it.

The seam metric compares how fast the (smoothed) residual against the truth
changes near seams with how fast it changes elsewhere: a seamless mosaic
scores about 1, a mosaic with steps at tile borders scores well above.
:func:`mosaic_vs_truth` judges a mosaic per tile cell, :func:`mosaic_vs_frame_truth` and
:func:`mosaic_vs_frame_survey` per frame footprint; :func:`overlap_pixels` gives the pixel
pairs of one overlap and the pixels its fit rejects.  Nothing here reads or writes files.
"""

import numpy as np

from .._stats import MAD_TO_SIGMA, median
from ..core.masks import as_channels_last
from ..core.wcsgrid import transform_pixels
from ..photometry.outliers import grown_outliers
from .report import float_or_nan, unpack_run

__all__ = ["bbox_boundaries", "image_truth", "fit_to_truth", "masked_smooth", "seam_metric",
           "tile_cells", "fit_truth_plane", "truth_residual", "mosaic_vs_truth", "overlap_pixels",
           "mosaic_vs_frame_truth", "mosaic_vs_frame_survey"]

_NAN = float("nan")


def bbox_boundaries(bboxes, shape):
    """Boolean map of the box edges that lie strictly inside a canvas.

    Parameters
    ----------
    bboxes : iterable of BBox
        Boxes on the global grid (tiles, or frame footprints' boxes).
    shape : tuple of int
        ``(H, W)`` of the canvas.

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)
        True on the first and last row/column of every box, except where
        that line is the canvas edge itself.

    Examples
    --------
    >>> from photometry_graph.core.tiles import BBox
    >>> b = bbox_boundaries([BBox(0, 4, 0, 3)], (4, 6))
    >>> bool(b[:, 2].all()), bool(b[:, 0].any())
    (True, False)
    """
    H, W = int(shape[0]), int(shape[1])
    out = np.zeros((H, W), dtype=bool)
    for b in bboxes:
        c = b.clamp((H, W))
        if c.is_empty:
            continue
        ys, xs = slice(c.y0, c.y1), slice(c.x0, c.x1)
        if b.y0 > 0:
            out[c.y0, xs] = True
        if b.y1 < H:
            out[c.y1 - 1, xs] = True
        if b.x0 > 0:
            out[ys, c.x0] = True
        if b.x1 < W:
            out[ys, c.x1 - 1] = True
    return out


def image_truth(image, truth, valid=None):
    """Channels-last float64 copies of a mosaic and its truth, and their joint valid mask.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
    valid : array_like of bool, shape (H, W), optional
        Extra validity mask.

    Returns
    -------
    img, tru : numpy.ndarray, shape (H, W, C)
    ok : numpy.ndarray of bool, shape (H, W)
        Finite in every channel of both (and ``valid``).

    Raises
    ------
    ValueError
        When the shapes differ.
    """
    img = as_channels_last(image).astype(np.float64)
    tru = as_channels_last(truth).astype(np.float64)
    if img.shape != tru.shape:
        raise ValueError(f"image shape {img.shape} and truth shape {tru.shape} differ; "
                         "render the truth on the mosaic's grid")
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    return img, tru, ok


def fit_to_truth(image, truth, valid=None):
    """Per-channel least-squares ``image ≈ alpha * truth + beta`` on valid pixels.

    Returns
    -------
    alpha, beta : numpy.ndarray, shape (C,)
    """
    img, tru, ok = image_truth(image, truth, valid)
    if ok.sum() < 2:
        raise ValueError("fit_to_truth needs at least two valid pixels")
    alpha = np.empty(img.shape[2])
    beta = np.empty(img.shape[2])
    for c in range(img.shape[2]):
        t, m = tru[..., c][ok], img[..., c][ok]
        A = np.column_stack([t, np.ones_like(t)])
        (alpha[c], beta[c]), *_ = np.linalg.lstsq(A, m, rcond=None)
    return alpha, beta


def masked_smooth(values, valid, sigma):
    """Normalised Gaussian smoothing that ignores invalid pixels.

    Parameters
    ----------
    values : numpy.ndarray, shape (H, W)
    valid : numpy.ndarray of bool, shape (H, W)
    sigma : float
        Gaussian sigma, pixels.

    Returns
    -------
    numpy.ndarray, shape (H, W)
        Smoothed values; NaN where the kernel saw almost no valid pixel.
    """
    from scipy import ndimage  # imported when used: a run may never need it (~0.2 s)
    v = np.where(valid, values, 0.0)
    w = ndimage.gaussian_filter(valid.astype(np.float64), sigma)
    s = ndimage.gaussian_filter(v, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 1e-3, s / np.maximum(w, 1e-12), np.nan)


def seam_metric(image, truth, boundaries, *, valid=None, smooth_sigma=3.0,
                border_width=6, fit=True):
    """Seam strength of a mosaic against its truth.

    The residual ``image - (alpha * truth + beta)`` (``alpha, beta`` fitted
    globally per channel when ``fit``) is smoothed with a masked Gaussian to
    beat down the noise; the mean gradient magnitude of the smoothed residual
    within ``border_width`` pixels of a seam is divided by its mean farther
    than ``3 * border_width`` from every seam.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty).
    truth : array_like, same shape
        Noise-free truth.
    boundaries : array_like of bool, shape (H, W)
        Seam lines (see :func:`bbox_boundaries`).
    valid : array_like of bool, optional
        Extra validity mask.
    smooth_sigma : float
        Gaussian sigma of the smoothing, pixels.
    border_width : int
        Half-width of the band around seams, pixels.
    fit : bool
        Fit a global gain and offset of the image against the truth first
        (the mosaic keeps its reference tile's photometric system).

    Returns
    -------
    float
        About 1 for a seamless mosaic; > 1 when residuals change faster at
        the seams.  Channels are pooled.

    Raises
    ------
    ValueError
        When there are no valid pixels near or away from the seams.
    """
    img, tru, ok = image_truth(image, truth, valid)
    if fit:
        alpha, beta = fit_to_truth(img, tru, ok)
    else:
        alpha, beta = np.ones(img.shape[2]), np.zeros(img.shape[2])
    from scipy import ndimage
    boundaries = np.asarray(boundaries, dtype=bool)
    dist = ndimage.distance_transform_edt(~boundaries) if boundaries.any() else \
        np.full(boundaries.shape, np.inf)
    # gradients are only trusted where the smoothing kernel saw valid pixels
    core = ndimage.binary_erosion(ok, iterations=int(np.ceil(2 * smooth_sigma)) + 1,
                                  border_value=0)
    near = core & (dist <= border_width)
    away = core & (dist > 3 * border_width)
    if not near.any() or not away.any():
        raise ValueError("seam_metric needs valid pixels both near and away from the seams")
    num = den = 0.0
    for c in range(img.shape[2]):
        res = img[..., c] - (alpha[c] * tru[..., c] + beta[c])
        sm = masked_smooth(res, ok, smooth_sigma)
        gy, gx = np.gradient(sm)
        mag = np.hypot(gx, gy)
        num += float(np.mean(mag[near]))
        den += float(np.mean(mag[away]))
    return num / den


def tile_cells(bboxes, shape):
    """Label map assigning every pixel to the nearest tile centre among the tiles covering it.

    Distances are scaled by each tile's half size; in a regular grid this
    cuts every overlap in its middle, so each tile owns the region where a
    mosaic mostly shows it.

    Parameters
    ----------
    bboxes : sequence of BBox
    shape : tuple of int
        ``(H, W)`` of the canvas.

    Returns
    -------
    numpy.ndarray of int32, shape (H, W)
        Index into ``bboxes``; -1 where no box covers the pixel.

    Examples
    --------
    >>> from photometry_graph.core.tiles import BBox
    >>> lab = tile_cells([BBox(0, 4, 0, 6), BBox(0, 4, 4, 10)], (4, 10))
    >>> lab[0].tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """
    H, W = int(shape[0]), int(shape[1])
    labels = np.full((H, W), -1, dtype=np.int32)
    best = np.full((H, W), np.inf, dtype=np.float32)
    for k, b in enumerate(bboxes):
        c = b.clamp((H, W))
        if c.is_empty:
            continue
        yc, xc = b.center
        hy, hx = max(b.shape[0], 1) / 2.0, max(b.shape[1], 1) / 2.0
        dy = ((np.arange(c.y0, c.y1) - yc) / hy) ** 2
        dx = ((np.arange(c.x0, c.x1) - xc) / hx) ** 2
        d = (dy[:, None] + dx[None, :]).astype(np.float32)
        sl = (slice(c.y0, c.y1), slice(c.x0, c.x1))
        closer = d < best[sl]
        best[sl] = np.where(closer, d, best[sl])
        labels[sl] = np.where(closer, k, labels[sl])
    return labels


def fit_truth_plane(image, truth, valid=None, *, plane=True, max_pixels=2_000_000, rng=0):
    """Per-channel least squares ``image ≈ alpha * truth + beta (+ gx * x + gy * y)``.

    A mosaic keeps the photometric system of its reference tile, gradient
    included: the plane removes it before residuals are judged.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
    valid : array_like of bool, optional
        Pixels to fit (default: finite in both).
    plane : bool
        Fit the plane term (``gx``, ``gy`` per pixel, ``x``, ``y`` the
        column and row indices); False gives :func:`fit_to_truth`'s model.
    max_pixels : int
        Fit a random subsample (through ``rng``) of at most this many pixels.
    rng : numpy.random.Generator or int

    Returns
    -------
    alpha, beta, gx, gy : numpy.ndarray, shape (C,)

    Examples
    --------
    >>> t = np.random.default_rng(0).normal(10, 2, (20, 30))
    >>> yy, xx = np.mgrid[:20, :30]
    >>> a, b, gx, gy = fit_truth_plane(2 * t + 1 + 0.1 * xx, t)
    >>> (np.round([a[0], b[0], gx[0], gy[0]], 6) + 0.0).tolist()  # + 0.0: no -0.0
    [2.0, 1.0, 0.1, 0.0]
    """
    img = as_channels_last(image)
    tru = as_channels_last(truth)
    if img.shape != tru.shape:
        raise ValueError(f"image shape {img.shape} and truth shape {tru.shape} differ")
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    iy, ix = np.nonzero(ok)
    if iy.size < 4:
        raise ValueError("fit_truth_plane needs at least four valid pixels")
    if iy.size > max_pixels:
        pick = np.random.default_rng(rng).choice(iy.size, int(max_pixels), replace=False)
        iy, ix = iy[pick], ix[pick]
    C = img.shape[2]
    out = np.zeros((4, C))
    for c in range(C):
        t = np.asarray(tru[iy, ix, c], dtype=np.float64)
        m = np.asarray(img[iy, ix, c], dtype=np.float64)
        cols = [t, np.ones_like(t)]
        if plane:
            cols += [ix.astype(np.float64), iy.astype(np.float64)]
        coef = np.linalg.lstsq(np.column_stack(cols), m, rcond=None)[0]
        out[:len(coef), c] = coef
    return out[0], out[1], out[2], out[3]


def truth_residual(img, tru, ok, coef, noise_sigma):
    """``((image - beta - plane) / alpha - truth) / noise_sigma``, NaN outside ``ok``.

    Parameters
    ----------
    img, tru : numpy.ndarray, shape (H, W, C)
    ok : numpy.ndarray of bool, shape (H, W)
    coef : tuple of numpy.ndarray
        ``(alpha, beta, gx, gy)`` per channel, as :func:`fit_truth_plane` returns them.
    noise_sigma : float

    Returns
    -------
    numpy.ndarray, shape (H, W, C)
    """
    alpha, beta, gx, gy = coef
    H, W, C = img.shape
    out = np.full((H, W, C), np.nan)
    xx = np.arange(W, dtype=np.float64)[None, :]
    yy = np.arange(H, dtype=np.float64)[:, None]
    for c in range(C):
        model = beta[c] + gx[c] * xx + gy[c] * yy
        with np.errstate(invalid="ignore"):
            r = ((img[..., c] - model) / alpha[c] - tru[..., c]) / noise_sigma
        out[..., c] = np.where(ok, r, np.nan)
    return out


def mosaic_vs_truth(image, truth, bboxes, *, noise_sigma=1.0, valid=None, footprint=None,
                    plane=True, smooth_sigma=4.0, min_pixels=100, structure_sigma=5.0):
    """Photometric quality of a mosaic measured against the noise-free truth.

    The mosaic is first fitted globally as ``alpha * truth + beta`` (+ a
    plane) per channel (:func:`fit_truth_plane`: a mosaic keeps the
    photometric system and gradient of its reference tile); ``r = ((image -
    beta - plane) / alpha - truth) / noise_sigma`` is the residual in noise
    sigma of the truth's units.  Per tile *cell* (the part of the canvas
    nearest to that tile's centre, see :func:`tile_cells`) ``(image - beta -
    plane) / alpha`` is fitted again as ``a_k * truth + b_k``: the local
    gains ``a_k`` and the local offsets (median of ``r`` in the cell) show
    what the harmonization left.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty) and truth on the same grid.
    bboxes : sequence of BBox
        Tile boxes on that grid (seams, cells).
    noise_sigma : float
        Noise per pixel of the tiles (the unit of the offsets).
    valid : array_like of bool, optional
        Pixels to use (default: finite in both).
    footprint : array_like of bool, optional
        Pixels where some tile has valid data: ``coverage`` is the fraction
        of them that are finite in the mosaic (default: union of the boxes).
    plane : bool
        Include the plane in the global fit.
    smooth_sigma : float
        Gaussian sigma (pixels) of the smoothed residual (noise beaten down,
        large-scale errors kept).
    min_pixels : int
        Cells with fewer valid pixels are skipped.
    structure_sigma : float
        ``gain_spread_structured`` takes the cells whose truth spans at least this
        many ``noise_sigma`` (peak to peak): in a cell of nearly flat sky the local
        gain is a residual gradient divided by a faint structure, not a gain.

    Returns
    -------
    dict
        ``alpha``, ``beta`` (per channel); ``gain_spread`` (std of the local
        gains, all cells and channels); ``gain_spread_structured`` (the same over
        the cells of ``structure_sigma``, NaN without any); ``gain_max_error`` (largest
        ``|a_k - 1|``); ``offset_spread_sigma`` (std of the local offsets);
        ``offset_max_sigma``; ``residual_rms_sigma`` (RMS of ``r``, noise
        included); ``smooth_residual_rms_sigma`` (RMS of ``r`` after a
        masked Gaussian smoothing); ``seam`` (:func:`seam_metric` of the
        plane-removed mosaic on the box borders, NaN when it cannot be
        measured); ``coverage``; ``n_cells``.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(2, 2, tile_size=64, rng=0, add_noise=False)
    >>> q = mosaic_vs_truth(s.truth, s.truth, [t.bbox for t in s.tiles])
    >>> round(q["gain_spread"], 6), round(q["residual_rms_sigma"], 6)
    (0.0, 0.0)
    """
    img, tru, _ = image_truth(image, truth)
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be positive, got {noise_sigma!r}")
    H, W, C = img.shape
    bboxes = list(bboxes)
    finite = np.isfinite(img).all(axis=2)
    ok = finite & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if footprint is None:
        footprint = np.zeros((H, W), dtype=bool)
        for b in bboxes:
            c = b.clamp((H, W))
            footprint[c.y0:c.y1, c.x0:c.x1] = True
    footprint = np.asarray(footprint, dtype=bool)
    coverage = float(np.count_nonzero(finite & footprint) / max(np.count_nonzero(footprint), 1))
    coef = fit_truth_plane(img, tru, ok, plane=plane)
    resid = truth_residual(img, tru, ok, coef, noise_sigma)
    rms = float(np.sqrt(np.mean(resid[ok] ** 2)))
    smooth = []
    for c in range(C):
        sm = masked_smooth(np.nan_to_num(resid[..., c]), ok, smooth_sigma)
        smooth.append(sm[ok & np.isfinite(sm)])
    smooth = np.concatenate(smooth)
    labels = tile_cells(bboxes, (H, W))
    gains, offsets, structured = [], [], []
    for k in range(len(bboxes)):
        cell = ok & (labels == k)
        if np.count_nonzero(cell) < min_pixels:
            continue
        for c in range(C):
            t = tru[..., c][cell]
            if np.ptp(t) <= 0:
                continue
            m = t + resid[..., c][cell] * noise_sigma  # (image - beta - plane) / alpha
            gains.append(np.polyfit(t, m, 1)[0])
            offsets.append(float(np.median(resid[..., c][cell])))
            structured.append(np.ptp(t) >= structure_sigma * noise_sigma)
    gains = np.asarray(gains)
    rich = gains[np.asarray(structured, dtype=bool)]
    offsets = np.asarray(offsets)
    flat = img - (coef[2] * np.arange(W)[None, :, None] + coef[3] * np.arange(H)[:, None, None])
    try:
        seam = float(seam_metric(flat, tru, bbox_boundaries(bboxes, (H, W)), valid=ok))
    except (ValueError, ZeroDivisionError):  # no seam band, or a residual without gradient
        seam = _NAN
    return {
        "alpha": coef[0].tolist(), "beta": coef[1].tolist(),
        "gain_spread": float(np.std(gains)) if gains.size else _NAN,
        "gain_spread_structured": float(np.std(rich)) if rich.size else _NAN,
        "gain_max_error": float(np.max(np.abs(gains - 1))) if gains.size else _NAN,
        "offset_spread_sigma": float(np.std(offsets)) if offsets.size else _NAN,
        "offset_max_sigma": float(np.max(np.abs(offsets))) if offsets.size else _NAN,
        "residual_rms_sigma": rms,
        "smooth_residual_rms_sigma": float(np.sqrt(np.mean(smooth ** 2))) if smooth.size
        else _NAN,
        "seam": seam, "coverage": coverage, "n_cells": int(len(gains) // max(C, 1)),
    }


def overlap_pixels(graph, edge, channel=0, *, kappa=4.0, grow_kappa=2.0, max_points=None,
                   rng=0):
    """Pixel pairs of one overlap, the edge's fit and which pixels the fit rejects.

    Parameters
    ----------
    graph : networkx.Graph or HarmonizationResult
        Overlap graph with tiles on the nodes and fits on the edges
        (:func:`~photometry_graph.photometry.overlap.fit_overlap_edges`).
    edge : tuple
        ``(u, v)`` node ids.
    channel : int
    kappa : float
        Clipping threshold of the fit: a pixel is rejected when
        ``|dst - a*src - b - plane|`` exceeds ``kappa`` times
        ``sqrt(noise_dst**2 + a**2 noise_src**2)`` (or the robust spread of
        the residuals, when larger), the rule of
        :func:`~photometry_graph.photometry.regression.fit_pair`.
    grow_kappa : float or None
        As in ``fit_pair``: pixels joined to a rejected one through residuals
        beyond ``grow_kappa`` scales (and a one-pixel ring) are rejected too,
        unless that would reject more than a quarter of the pixels.
    max_points : int, optional
        Random subsample (through ``rng``) for plotting.
    rng : numpy.random.Generator or int

    Returns
    -------
    dict
        ``x`` (src values), ``y`` (dst values), ``coords`` ((n, 2) global
        ``(x, y)``), ``clipped`` (bool), ``predicted`` (the fit's dst), ``fit``
        (the PairwiseFit), ``src``, ``dst``.
    """
    run = unpack_run(graph)
    g = run.graph
    if g is None or not g.has_edge(*edge):
        raise ValueError(f"edge {edge!r} is not in the graph")
    data = g.edges[edge]
    src, dst = data.get("src", edge[0]), data.get("dst", edge[1])
    fits = data.get("fits") or []
    if channel >= len(fits):
        raise ValueError(f"edge {edge!r} has no fit for channel {channel}; run "
                         "fit_overlap_edges first")
    fit = fits[channel]
    t_src, t_dst = g.nodes[src].get("tile"), g.nodes[dst].get("tile")
    if t_src is None or t_dst is None:
        raise ValueError("the graph's nodes carry no tiles (a graph rebuilt from a report has "
                         "no pixels); build it with build_tile_overlap_graph")
    inter = data["bbox"]
    d_src, m_src = t_src.read(inter)
    d_dst, m_dst = t_dst.read(inter)
    joint = m_src & m_dst
    iy, ix = np.nonzero(joint)
    x = np.asarray(d_src[iy, ix, channel], dtype=np.float64)
    y = np.asarray(d_dst[iy, ix, channel], dtype=np.float64)
    gx, gy = ix + inter.x0, iy + inter.y0
    pred = fit.a * x + fit.offset_at(gx.astype(float), gy.astype(float))
    r = y - pred
    nx_, ny_ = float_or_nan(fit.noise_x), float_or_nan(fit.noise_y)
    scale = np.sqrt(ny_ ** 2 + fit.a ** 2 * nx_ ** 2) if np.isfinite(nx_ + ny_) else 0.0
    fin = r[np.isfinite(r)]
    robust = MAD_TO_SIGMA * median(np.abs(fin - median(fin))) if fin.size else 0.0
    scale = max(scale, robust)
    with np.errstate(invalid="ignore"):
        clipped = ~(np.abs(r) <= kappa * scale) if scale > 0 else np.zeros(r.shape, bool)
    if scale > 0 and grow_kappa is not None and grow_kappa < kappa and clipped.any():
        d = np.zeros(joint.shape)
        d[iy, ix] = r / scale
        clipped |= grown_outliers(d, joint & np.isfinite(d), kappa, grow_kappa)[iy, ix]
    if max_points is not None and iy.size > max_points:
        pick = np.sort(np.random.default_rng(rng).choice(iy.size, int(max_points), replace=False))
        x, y, gx, gy, pred, clipped = (v[pick] for v in (x, y, gx, gy, pred, clipped))
    return dict(x=x, y=y, coords=np.column_stack([gx, gy]), clipped=clipped, predicted=pred,
                fit=fit, src=src, dst=dst)


def mosaic_vs_frame_truth(image, truth, footprints, tile_bboxes, *, noise_sigma=1.0, calm=None,
                          clip_sigma=5.0, min_pixels=100):
    """Frame-to-frame offsets and seams of a mosaic of *frames* against the truth.

    :func:`mosaic_vs_truth` judges a mosaic per tile cell; a mosaic stacked
    from frames has a second kind of border inside the tiles: where one
    frame ends.  Here the regions are the frames' footprints (any shape, e.g.
    rotated frames) and the fit is robust to outliers that the stacking
    legitimately kept (a satellite trail covered by too few frames).

    The mosaic is fitted as ``alpha * truth + beta + gx * x + gy * y`` per
    channel (:func:`fit_truth_plane`: the reference frame's photometric
    system and gradient are arbitrary) on the ``calm`` pixels, twice: the
    second fit leaves out pixels whose residual exceeds ``clip_sigma``
    times the larger of ``noise_sigma`` and the residual's robust spread.
    The residual ``image - model`` is then summarised per footprint.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty) and noise-free truth on the same grid.
    footprints : sequence of array_like of bool, shape (H, W)
        Where each frame lies on the mosaic grid.
    tile_bboxes : sequence of BBox
        Tile boxes on the mosaic grid.
    noise_sigma : float
        Noise per pixel (the unit of the offsets).
    calm : array_like of bool, shape (H, W), optional
        Pixels to fit, e.g. star-free ones (stars are where resampling
        differs most); default all.  Non-finite pixels are never used.
    clip_sigma : float
        Outlier threshold of the second fit.
    min_pixels : int
        Footprints with fewer fitted pixels get no offset.

    Returns
    -------
    dict
        ``frame_offsets`` (list per measured footprint of the median
        residual per channel, in noise sigma), ``frame_offset_spread_sigma``
        (largest peak-to-peak over the footprints, any channel),
        ``frame_offset_max_sigma`` (largest ``|offset|``; both NaN when no
        footprint could be measured), and the :func:`seam_metric` (1 =
        seamless) at the footprints' borders (``seam_frame_borders``) and at
        the tile borders (``seam_tile_borders``), NaN when not measurable.

    Raises
    ------
    ValueError
        When shapes differ or ``noise_sigma`` is not positive.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(2, 2, tile_size=64, rng=0, add_noise=False)
    >>> left = np.zeros(s.canvas_shape, bool); left[:, :60] = True
    >>> q = mosaic_vs_frame_truth(s.truth + 2.0, s.truth, [left, ~left],
    ...                           [t.bbox for t in s.tiles])
    >>> q["frame_offset_max_sigma"] < 1e-6
    True
    """
    img, tru, _ = image_truth(image, truth)
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be positive, got {noise_sigma!r}")
    shape = img.shape[:2]
    good = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if calm is not None:
        good &= np.asarray(calm, dtype=bool)
    calm = good
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    for _ in range(2):
        alpha, beta, gx, gy = fit_truth_plane(img, tru, good)
        resid = img - (alpha * tru + beta + gx * xx[..., None] + gy * yy[..., None])
        spread = MAD_TO_SIGMA * median(np.abs(resid[calm]).ravel())
        with np.errstate(invalid="ignore"):
            good = calm & (np.abs(resid) < clip_sigma * max(noise_sigma, spread)).all(axis=2)
    from scipy import ndimage
    borders, offsets = np.zeros(shape, bool), []
    for inside in footprints:
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != shape:
            raise ValueError(f"footprint shape {inside.shape} differs from the mosaic's {shape}")
        borders |= inside & ~ndimage.binary_erosion(inside)
        if (inside & good).sum() >= min_pixels:
            offsets.append(np.median(resid[inside & good], axis=0) / noise_sigma)
    offsets = np.asarray(offsets).reshape(-1, img.shape[2])

    def seam(boundaries):
        try:
            return float(seam_metric(img, tru, boundaries, valid=good))
        except (ValueError, ZeroDivisionError):  # no seam band, or no residual gradient
            return _NAN

    return dict(
        frame_offsets=offsets.tolist(),
        frame_offset_spread_sigma=float(np.ptp(offsets, axis=0).max()) if len(offsets) else _NAN,
        frame_offset_max_sigma=float(np.abs(offsets).max()) if len(offsets) else _NAN,
        seam_frame_borders=seam(borders),
        seam_tile_borders=seam(bbox_boundaries(tile_bboxes, shape)))


def mosaic_vs_frame_survey(image, wcs, survey, tile_bboxes, *, border=2):
    """:func:`mosaic_vs_frame_truth` of a mosaic of a synthetic frame survey, on its grid.

    The survey's truth is rendered on the mosaic grid with and without stars; the fit uses
    the star-free ("calm") pixels, where the stars change the truth by less than 0.05 noise
    sigma.  The footprints are the frames' pixels on the mosaic grid, ``border`` pixels
    inside their edges (resampling makes the edges unreliable).

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        The mosaic, NaN where empty.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    survey : photometry_graph.datasets.FrameSurvey
        Supplies ``render_truth``, ``frames`` (``wcs``, ``shape``) and ``noise_sigma``.
    tile_bboxes : sequence of BBox
        Tile boxes on the mosaic grid.
    border : int

    Returns
    -------
    dict
        As :func:`mosaic_vs_frame_truth`: ``frame_offsets``,
        ``frame_offset_spread_sigma``, ``frame_offset_max_sigma`` (noise sigma),
        ``seam_frame_borders``, ``seam_tile_borders`` (1 = seamless).

    Examples
    --------
    >>> from photometry_graph.datasets import make_frame_survey
    >>> s = make_frame_survey(1, 2, frame_shape=(60, 80), channels=1, rng=0)
    >>> img = s.render_truth(s.truth_wcs, s.truth_shape)
    >>> q = mosaic_vs_frame_survey(img, s.truth_wcs, s, [])
    >>> q["frame_offset_max_sigma"] < 0.01
    True
    """
    img = as_channels_last(image)
    shape, sigma = img.shape[:2], survey.noise_sigma
    truth = survey.render_truth(wcs, shape)
    calm = np.abs(truth - survey.render_truth(wcs, shape, stars=False)).max(axis=2) < 0.05 * sigma
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    feet = []
    for f in survey.frames:
        fx, fy = transform_pixels(wcs, f.wcs, xx, yy)
        feet.append((fx > border) & (fx < f.shape[1] - 1 - border) & (fy > border)
                    & (fy < f.shape[0] - 1 - border))
    return mosaic_vs_frame_truth(img, truth, feet, tile_bboxes, noise_sigma=sigma, calm=calm)
