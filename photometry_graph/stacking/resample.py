"""Fast WCS-to-WCS reprojection by an interpolated coordinate map.

Sending every output pixel through the full WCS (what
``reproject.reproject_interp`` does) costs seconds per frame.  The mapping
between two celestial grids is smooth, so it is computed exactly only on a
coarse grid of output pixels (every ``grid_step`` pixels, plus the last row
and column), upsampled to full resolution with tensor-product cubic splines
(a linear operator applied as two small matrix products), and the image is
resampled with ``cv2.remap``.  The coordinate map agrees with the exact
transform to ~1e-4 px for ordinary frames, SIP distortion included.

Invalid source pixels (NaN, or ``False`` in ``src_mask``) never bleed into
valid output pixels: the data are remapped with invalid pixels set to 0 and
a validity map (1 valid, 0 invalid) is remapped with the same kernel.

Rule for validity: an output pixel is valid when its centre lies within half a
pixel of the centre of a valid source pixel (the nearest source pixel is valid;
``-0.5 <= x <= W - 0.5`` at the frame's border), so the output covers exactly
what the valid source pixels cover.  Where every source pixel of its
interpolation kernel is valid (bilinear: interpolated validity above
``valid_threshold``, 0.999; bicubic: the whole 4x4 neighbourhood), the value is the
interpolated one; nearer than that to an invalid zone the output is clamped to the
edge pixel: the value of the nearest (valid) source pixel, as the frame's outer
half pixel takes the edge value (``reproject`` does the same there).
``clamp_edges=False`` leaves those edge pixels invalid instead
(the stricter rule of the frame photometry, which would rather lose a rim than
measure an extrapolated value).

Bilinear interpolation smooths: at a fractional position ``p`` between two
samples its value exceeds the true one by ``p (1 - p) / 2 * f''`` per axis
(Taylor expansion), so a star peak is flattened by an amount that depends
on where the output grid falls between the source pixels.  Two frames that
see the same star at different sub-pixel phases then disagree by up to a
percent or two at its peak.  ``curvature_correction=True`` subtracts that
term, estimated from the source's second differences, which makes the
resampled values independent of the phase to second order (used for the
frame photometry, where such disagreements bias the fitted gains).
"""

import functools

import numpy as np

from .._log import get_logger, grid_debug
from ..core.masks import as_channels_last
from ..core.tiles import BBox
from ..core.wcsgrid import celestial_part, frame_border, transform_pixels

__all__ = ["reproject_to_bbox", "coordinate_map", "spline_upsample_matrix", "ORDERS"]

logger = get_logger(__name__)

#: Accepted interpolation names (reproject's names and short aliases).
ORDERS = {
    "nearest-neighbor": "nearest", "nearest": "nearest", 0: "nearest",
    "bilinear": "linear", "linear": "linear", 1: "linear",
    "bicubic": "cubic", "cubic": "cubic", 3: "cubic",
}


def _as_bbox(bbox):
    box = bbox if isinstance(bbox, BBox) else BBox(*bbox)
    if box.is_empty:
        raise ValueError(f"the output box {box} is empty")
    return box


def spline_upsample_matrix(nodes, n_out):
    """Matrix that interpolates values at ``nodes`` onto ``0 .. n_out - 1``.

    Cubic not-a-knot spline interpolation (lower degree for fewer than four
    nodes) written as a linear operator, so that a coarse 2-D map ``M`` is
    upsampled with ``A_y @ M @ A_x.T``.

    Parameters
    ----------
    nodes : array_like of float
        Increasing positions of the coarse samples.
    n_out : int
        Number of output positions (``0 .. n_out - 1``).

    Returns
    -------
    numpy.ndarray, shape (n_out, len(nodes))

    Examples
    --------
    >>> A = spline_upsample_matrix([0, 4, 8, 9], 10)
    >>> bool(np.allclose(A @ np.array([0.0, 4, 8, 9]), np.arange(10)))
    True
    """
    from scipy.interpolate import make_interp_spline
    nodes = np.asarray(nodes, dtype=np.float64)
    n = nodes.size
    if n == 1:
        return np.ones((n_out, 1))
    k = min(3, n - 1)
    spline = make_interp_spline(nodes, np.eye(n), k=k)
    return spline(np.arange(n_out, dtype=np.float64))


@functools.lru_cache(maxsize=64)
def _upsample_for(length, step):
    """``spline_upsample_matrix`` for the nodes of ``_nodes(length, step)``, cached.

    Every frame of a survey maps onto tiles and windows of a few sizes: the
    matrices repeat.  Returned read-only (shared between calls).
    """
    mat = spline_upsample_matrix(_nodes(length, step), length)
    mat.setflags(write=False)
    return mat


def _nodes(length, step):
    nodes = np.arange(0, length, step, dtype=np.int64)
    if nodes[-1] != length - 1:
        nodes = np.append(nodes, length - 1)
    return nodes


def coordinate_map(src_wcs, dst_wcs, bbox, grid_step=32):
    """Source pixel coordinates of every output pixel of ``bbox``.

    Parameters
    ----------
    src_wcs : astropy.wcs.WCS
        WCS of the source image (SIP honoured).
    dst_wcs : astropy.wcs.WCS
        WCS of the output grid; ``bbox`` is in its pixel coordinates.
    bbox : BBox
        Output box ``(y0, y1, x0, x1)``.
    grid_step : int or None
        Spacing of the exactly transformed nodes; ``None`` or ``<= 1``
        transforms every pixel exactly (slow; used as the reference in
        tests).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``map_x``, ``map_y`` of shape ``bbox.shape``, float64, 0-based source
        pixel coordinates; NaN where the position has no sky coordinate or
        the inverse distortion does not converge.  When a coarse node is
        undefined the whole box is transformed exactly.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> mx, my = coordinate_map(w, w, BBox(0, 50, 0, 70), grid_step=16)
    >>> bool(np.allclose(mx[3, 5], 5.0, atol=1e-6) and np.allclose(my[3, 5], 3.0, atol=1e-6))
    True
    """
    box = _as_bbox(bbox)
    h, w = box.shape
    if grid_step is None or grid_step <= 1 or (h <= 4 and w <= 4):
        yy, xx = box.coordinates()
        return transform_pixels(dst_wcs, src_wcs, xx, yy)
    step = int(grid_step)
    ny, nx = _nodes(h, step), _nodes(w, step)
    gy, gx = np.meshgrid(ny + box.y0, nx + box.x0, indexing="ij")
    cx, cy = transform_pixels(dst_wcs, src_wcs, gx.astype(np.float64), gy.astype(np.float64))
    if not (np.isfinite(cx).all() and np.isfinite(cy).all()):
        grid_debug(logger, "coordinate map: %d undefined nodes in %s, exact transform used",
                   int((~np.isfinite(cx)).sum()), box)
        yy, xx = box.coordinates()
        return transform_pixels(dst_wcs, src_wcs, xx, yy)
    Ay = _upsample_for(h, step)
    Ax = _upsample_for(w, step)
    # anchor on the first node so that the products carry small numbers
    ref_x, ref_y = cx[0, 0], cy[0, 0]
    map_x = Ay @ ((cx - ref_x) @ Ax.T) + ref_x
    map_y = Ay @ ((cy - ref_y) @ Ax.T) + ref_y
    return map_x, map_y


def _source_window(src_wcs, src_shape, dst_wcs, box):
    """Part of ``box`` that the source frame can reach, or None."""
    bx, by = frame_border(src_shape, step=16.0)
    gx, gy = transform_pixels(src_wcs, dst_wcs, bx, by)
    ok = np.isfinite(gx) & np.isfinite(gy)
    if not ok.all():
        # part of the border is not on the output projection: use the whole box
        return box
    win = BBox(int(np.floor(gy.min())) - 1, int(np.ceil(gy.max())) + 2,
               int(np.floor(gx.min())) - 1, int(np.ceil(gx.max())) + 2)
    win = win.intersection(box)
    return None if win.is_empty else win


def _check_data(data, src_wcs):
    arr = np.asanyarray(data)
    if arr.ndim == 3 and arr.shape[2] > 4 and arr.shape[0] <= 4:
        raise ValueError(f"data of shape {arr.shape} looks like a (C, H, W) cube; pass it "
                         "channels-last with numpy.moveaxis(data, 0, -1)")
    arr = as_channels_last(arr)
    ps = getattr(src_wcs, "pixel_shape", None)
    if ps is not None and tuple(ps) != (arr.shape[1], arr.shape[0]):
        grid_debug(logger, "source WCS pixel_shape %s differs from the data shape %s",
                   ps, arr.shape[:2])
    return arr


def _remap(img, mx, my, interpolation, border):
    """cv2.remap of an (h, w, C) float32 image, channels in groups of 1, 3 or 4.

    OpenCV interpolates 2-channel float images at positions rounded to 1/32 pixel (0.07
    of a unit-noise image's sigma off exact bilinear values), 1-, 3- and 4-channel ones
    exactly: a pair of channels is remapped one by one.
    """
    import cv2
    C = img.shape[2]
    out = np.empty(mx.shape + (C,), dtype=np.float32)
    c0 = 0
    while c0 < C:
        c1 = c0 + (1 if C - c0 == 2 else min(4, C - c0))
        part = np.ascontiguousarray(img[:, :, c0:c1])
        res = cv2.remap(part, mx, my, interpolation, borderMode=border)
        out[:, :, c0:c1] = res.reshape(mx.shape + (c1 - c0,))
        c0 = c1
    return out


def _second_differences(sub, sub_valid):
    """Second differences along x and y of an (h, w, C) image, 0 where undefined.

    A difference is defined where the pixel and both neighbours along the
    axis are valid and inside the array; elsewhere it is 0 (no correction).
    """
    dxx = np.zeros_like(sub)
    dyy = np.zeros_like(sub)
    dxx[:, 1:-1] = sub[:, :-2] - 2.0 * sub[:, 1:-1] + sub[:, 2:]
    dyy[1:-1] = sub[:-2] - 2.0 * sub[1:-1] + sub[2:]
    if sub_valid is not None:
        okx = np.zeros_like(sub_valid)
        okx[:, 1:-1] = sub_valid[:, :-2] & sub_valid[:, 1:-1] & sub_valid[:, 2:]
        oky = np.zeros_like(sub_valid)
        oky[1:-1] = sub_valid[:-2] & sub_valid[1:-1] & sub_valid[2:]
        dxx[~okx] = 0.0
        dyy[~oky] = 0.0
    return dxx, dyy


def _curvature_term(sub, sub_valid, fx, fy, border):
    """Bilinear smoothing bias ``p(1-p)/2 f'' + q(1-q)/2 f''`` at the mapped points."""
    import cv2
    dxx, dyy = _second_differences(sub, sub_valid)
    px = fx - np.floor(fx)
    py = fy - np.floor(fy)
    term = _remap(dxx, fx, fy, cv2.INTER_LINEAR, border)
    term *= (0.5 * px * (1.0 - px))[..., np.newaxis]
    term_y = _remap(dyy, fx, fy, cv2.INTER_LINEAR, border)
    term_y *= (0.5 * py * (1.0 - py))[..., np.newaxis]
    term += term_y
    return term


def _edge_rule(sub, vmap, fx, fy, res, inside, *, mode, valid_threshold, clamp_edges):
    """Validity and values of a bilinear or bicubic remap near invalid source pixels.

    Interpolated where the kernel holds only valid pixels; within half a pixel of a
    valid source pixel otherwise, that pixel's value (``clamp_edges``: the output is
    clamped to the edge pixel, as the frame's outer half pixel is).  Returns
    ``(ok, res)``.
    """
    import cv2
    border = cv2.BORDER_REPLICATE
    vres = _remap(vmap, fx, fy, cv2.INTER_LINEAR, border)[..., 0]
    if mode == "linear":
        full = vres > valid_threshold
        np.divide(res, np.maximum(vres, valid_threshold)[..., np.newaxis], out=res)
    else:
        from scipy import ndimage
        eroded = ndimage.minimum_filter(vmap[..., 0], size=3, mode="nearest")
        full = _remap(eroded[..., np.newaxis], fx, fy, cv2.INTER_LINEAR, border)[..., 0] \
            > valid_threshold
    ok = inside & full
    if not clamp_edges:
        return ok, res
    near = inside & ~full & (_remap(vmap, fx, fy, cv2.INTER_NEAREST, border)[..., 0] > 0.5)
    if near.any():
        res[near] = _remap(sub, fx, fy, cv2.INTER_NEAREST, border)[near]
    return ok | near, res


def reproject_to_bbox(data, src_wcs, dst_wcs, bbox, *, grid_step=32, src_mask=None,
                      order="bilinear", valid_threshold=0.999, curvature_correction=False,
                      clamp_edges=True):
    """Reproject an image onto a box of another celestial grid.

    Parameters
    ----------
    data : array_like, shape (H, W) or (H, W, C)
        Source image, channels last; NaN marks invalid pixels.  Not modified.
    src_wcs : astropy.wcs.WCS
        Celestial WCS of ``data`` (SIP honoured).
    dst_wcs : astropy.wcs.WCS
        WCS of the output grid (usually the global TAN grid).
    bbox : BBox
        Output box in ``dst_wcs`` pixel coordinates (may extend past any
        canvas).
    grid_step : int
        Spacing of the exactly transformed nodes of the coordinate map
        (see :func:`coordinate_map`).
    src_mask : array_like of bool, shape (H, W), optional
        ``False`` marks further invalid source pixels.
    order : {"bilinear", "nearest-neighbor", "bicubic"}
        Interpolation (also "linear", "nearest", "cubic", 1, 0, 3).
    valid_threshold : float
        Minimum interpolated validity of an interpolated (not clamped) output
        pixel (see the module notes).
    curvature_correction : bool
        Bilinear only: subtract the interpolation's smoothing bias
        ``p (1 - p) / 2`` times the second difference, per axis, so that
        star peaks come out the same whatever the sub-pixel phase (see the
        module notes).  Raises white pixel noise by up to ~1.3x at a
        half-pixel phase on both axes (much less on smooth, e.g. blurred,
        images); meant for photometric comparisons, not for images.
    clamp_edges : bool
        Output pixels within half a pixel of a valid source pixel but nearer
        than the kernel to an invalid one are valid, clamped to the edge pixel
        (default); ``False`` leaves them invalid.

    Returns
    -------
    out : numpy.ndarray, shape (h, w, C), float32
        NaN outside the source footprint and where invalid source pixels
        would contribute.
    footprint : numpy.ndarray, shape (h, w), float32
        1.0 where ``out`` is valid, 0.0 elsewhere.

    Raises
    ------
    ValueError
        Unknown ``order``, bad shapes, empty box, ``curvature_correction``
        with an order other than bilinear.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> img = np.arange(40 * 60, dtype=np.float32).reshape(40, 60)
    >>> out, fp = reproject_to_bbox(img, w, w, BBox(-5, 35, 10, 80))
    >>> bool(np.allclose(out[5:, :50, 0], img[:35, 10:60])), float(fp[:5].sum())
    (True, 0.0)
    """
    import cv2
    box = _as_bbox(bbox)
    try:
        mode = ORDERS[order]
    except (KeyError, TypeError):
        raise ValueError(f"unknown interpolation order {order!r}; use one of "
                         "'bilinear', 'nearest-neighbor', 'bicubic'") from None
    if curvature_correction and mode != "linear":
        raise ValueError(f"curvature_correction applies to bilinear interpolation only, not "
                         f"to order={order!r}; drop it or use order='bilinear'")
    arr = _check_data(data, src_wcs)
    H, W, C = arr.shape
    if H >= 32767 or W >= 32767:
        raise ValueError(f"source image {H}x{W} is too large for cv2.remap; split it first")
    valid = np.isfinite(arr).all(axis=2)
    if src_mask is not None:
        m = np.asarray(src_mask, dtype=bool)
        if m.shape != (H, W):
            raise ValueError(f"src_mask shape {m.shape} does not match the data shape {(H, W)}")
        valid &= m
    celestial_part(src_wcs)
    celestial_part(dst_wcs)
    h, w = box.shape
    out = np.full((h, w, C), np.nan, dtype=np.float32)
    footprint = np.zeros((h, w), dtype=np.float32)
    if not valid.any():
        return out, footprint
    win = _source_window(src_wcs, (H, W), dst_wcs, box)
    if win is None:
        return out, footprint
    mx, my = coordinate_map(src_wcs, dst_wcs, win, grid_step)
    with np.errstate(invalid="ignore"):
        inside = (mx >= -0.5) & (mx <= W - 0.5) & (my >= -0.5) & (my <= H - 0.5)
    if not inside.any():
        return out, footprint
    # crop the source to what the map reaches (plus the kernel's reach); points
    # outside the frame read replicated edge values and are masked by ``inside``
    pad = 3
    cx0 = min(W - 1, max(0, int(np.floor(np.nanmin(mx))) - pad))
    cx1 = max(cx0 + 1, min(W, int(np.ceil(np.nanmax(mx))) + pad + 1))
    cy0 = min(H - 1, max(0, int(np.floor(np.nanmin(my))) - pad))
    cy1 = max(cy0 + 1, min(H, int(np.ceil(np.nanmax(my))) + pad + 1))
    sub_valid = valid[cy0:cy1, cx0:cx1]
    all_valid = bool(sub_valid.all())
    sub = arr[cy0:cy1, cx0:cx1]
    if all_valid:
        sub = sub.astype(np.float32, copy=False)
    else:
        sub = np.where(sub_valid[..., np.newaxis], sub, 0.0).astype(np.float32)
    fx = mx.astype(np.float32)
    fy = my.astype(np.float32)
    fx -= cx0
    fy -= cy0
    if not (np.isfinite(fx).all() and np.isfinite(fy).all()):
        fx[~np.isfinite(fx)] = -1.0e6
        fy[~np.isfinite(fy)] = -1.0e6
    border = cv2.BORDER_REPLICATE
    vmap = None if all_valid else sub_valid.astype(np.float32)[..., np.newaxis]
    if mode == "nearest":
        res = _remap(sub, fx, fy, cv2.INTER_NEAREST, border)
        ok = inside
        if vmap is not None:
            ok = ok & (_remap(vmap, fx, fy, cv2.INTER_NEAREST, border)[..., 0] > 0.5)
    else:
        res = _remap(sub, fx, fy, cv2.INTER_LINEAR if mode == "linear" else cv2.INTER_CUBIC,
                     border)
        ok = inside
        if vmap is not None:
            ok, res = _edge_rule(sub, vmap, fx, fy, res, ok, mode=mode,
                                 valid_threshold=valid_threshold, clamp_edges=clamp_edges)
        if curvature_correction:
            res -= _curvature_term(sub, None if all_valid else sub_valid, fx, fy, border)
    res[~ok] = np.nan
    sl = win.slices_in(box)
    out[sl] = res
    footprint[sl] = ok.astype(np.float32)
    return out, footprint
