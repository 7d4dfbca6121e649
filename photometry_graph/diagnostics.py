"""Diagnostics: seam metric, residual tables and plots.

The seam metric compares how fast the (smoothed) residual against the truth
changes near seams with how fast it changes elsewhere: a seamless mosaic
scores about 1, a mosaic with steps at tile borders scores well above.
"""

import numpy as np
from scipy import ndimage

from .masks import as_channels_last

__all__ = ["seam_metric", "bbox_boundaries", "fit_to_truth"]


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
    >>> from photometry_graph.tiles import BBox
    >>> b = bbox_boundaries([BBox(0, 4, 0, 3)], (4, 6))
    >>> b[:, 2].all(), b[:, 0].any()
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


def fit_to_truth(image, truth, valid=None):
    """Per-channel least-squares ``image ≈ alpha * truth + beta`` on valid pixels.

    Returns
    -------
    alpha, beta : numpy.ndarray, shape (C,)
    """
    img = as_channels_last(image).astype(np.float64)
    tru = as_channels_last(truth).astype(np.float64)
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if ok.sum() < 2:
        raise ValueError("fit_to_truth needs at least two valid pixels")
    alpha = np.empty(img.shape[2])
    beta = np.empty(img.shape[2])
    for c in range(img.shape[2]):
        t, m = tru[..., c][ok], img[..., c][ok]
        A = np.column_stack([t, np.ones_like(t)])
        (alpha[c], beta[c]), *_ = np.linalg.lstsq(A, m, rcond=None)
    return alpha, beta


def _masked_smooth(values, valid, sigma):
    """Normalised Gaussian smoothing that ignores invalid pixels."""
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
    img = as_channels_last(image).astype(np.float64)
    tru = as_channels_last(truth).astype(np.float64)
    if img.shape != tru.shape:
        raise ValueError(f"image shape {img.shape} and truth shape {tru.shape} differ")
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if fit:
        alpha, beta = fit_to_truth(img, tru, ok)
    else:
        alpha, beta = np.ones(img.shape[2]), np.zeros(img.shape[2])
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
        sm = _masked_smooth(res, ok, smooth_sigma)
        gy, gx = np.gradient(sm)
        mag = np.hypot(gx, gy)
        num += float(np.mean(mag[near]))
        den += float(np.mean(mag[away]))
    return num / den
