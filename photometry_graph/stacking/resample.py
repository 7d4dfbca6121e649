"""Fast WCS-to-WCS reprojection by an interpolated coordinate map.

Sending every output pixel through the full WCS (what
``reproject.reproject_interp`` does) costs seconds per frame.  The mapping
between two celestial grids is smooth, so it is computed exactly only on a
coarse grid of output pixels (every ``grid_step`` pixels, plus the last row
and column), upsampled to full resolution with tensor-product cubic splines
(a linear operator applied as two small matrix products), and the image is
resampled with ``cv2.remap``.  The coordinate map agrees with the exact
transform to ~1e-4 px for ordinary frames, SIP distortion included.  Between two
gnomonic (TAN) grids the map is exactly projective: a 3x3 homography fitted to the coarse
nodes (:func:`wcs_homography`, once per frame for all the boxes it is reprojected onto)
then gives every pixel's coordinates with a few operations, without the spline products.
A box can read a crop of the frame (:func:`source_crop` says which; ``src_origin``), so
that a caller decodes only what a box needs; :func:`box_extent` finds that crop together
with the map of the box, for :func:`reproject_to_bbox` to use without looking for it again.

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
from dataclasses import dataclass, field, replace

import numpy as np

from .._log import get_logger, grid_debug
from ..core.masks import as_channels_last, compute_valid_mask
from ..core.tiles import BBox
from ..core.wcsgrid import celestial_part, frame_border, transform_pixels
from .curvature import half_second_differences, phase_weighted
from .homography import (apply_homography, fit_homography, homography_maps, inverse_homography,
                         pixels_within)

__all__ = ["reproject_to_bbox", "coordinate_map", "spline_upsample_matrix", "ORDERS",
           "wcs_homography", "BoxExtent", "box_extent", "source_crop", "HOMOGRAPHY_TOL"]

logger = get_logger(__name__)

#: Largest residual (pixels) of a projective fit to the exact transform at the coarse nodes
#: for the coordinate map to be computed from it (TAN to TAN: ~1e-9 px).
HOMOGRAPHY_TOL = 1e-5

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


def wcs_homography(src_wcs, dst_wcs, bbox, *, grid_step=32, tol=None):
    """The projective map from ``bbox`` of ``dst_wcs`` to ``src_wcs`` pixels, or None.

    Fitted to the exact transform at coarse nodes of ``bbox`` (every ``grid_step`` px);
    returned when it reproduces them to ``tol`` pixels (default :data:`HOMOGRAPHY_TOL`):
    TAN to TAN always, SIP-distorted frames or other projections not.  One such map per
    frame serves every tile and piece of it (the ``homography`` of
    :func:`reproject_to_bbox`).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> a = WCS(naxis=2); a.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> a.wcs.crval = [10, 20]; a.wcs.cdelt = [-1e-3, 1e-3]
    >>> b = a.deepcopy(); b.wcs.crval = [10.5, 20.3]
    >>> wcs_homography(b, a, BBox(0, 500, 0, 800)) is not None
    True
    """
    return _node_fit(src_wcs, dst_wcs, _as_bbox(bbox), max(2, int(grid_step)), tol)[0]


def _node_fit(src_wcs, dst_wcs, box, step, tol=None):
    """``(H, cx, cy)``: the source pixels ``cx``, ``cy`` of the coarse nodes of ``box``
    (every ``step`` px, and its last row and column), exactly transformed, and the
    projective map fitted to them when it reproduces them to ``tol`` (default
    :data:`HOMOGRAPHY_TOL`), else None (always None when a node is undefined)."""
    ny, nx = _nodes(box.shape[0], step), _nodes(box.shape[1], step)
    gy, gx = np.meshgrid(ny + box.y0, nx + box.x0, indexing="ij")
    gx, gy = gx.astype(np.float64), gy.astype(np.float64)
    cx, cy = transform_pixels(dst_wcs, src_wcs, gx, gy)
    if not (np.isfinite(cx).all() and np.isfinite(cy).all()):
        return None, cx, cy
    H, residual = fit_homography(gx, gy, cx, cy)
    return (H if residual <= (HOMOGRAPHY_TOL if tol is None else tol) else None), cx, cy


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
    return _coordinate_map(src_wcs, dst_wcs, _as_bbox(bbox), grid_step)


def _coordinate_map(src_wcs, dst_wcs, box, grid_step, fit=None):
    """:func:`coordinate_map` of ``box``; ``fit``: its :func:`_node_fit` at ``grid_step``
    when already made."""
    h, w = box.shape
    if grid_step is None or grid_step <= 1 or (h <= 4 and w <= 4):
        yy, xx = box.coordinates()
        return transform_pixels(dst_wcs, src_wcs, xx, yy)
    step = int(grid_step)
    H, cx, cy = _node_fit(src_wcs, dst_wcs, box, step) if fit is None else fit
    if not (np.isfinite(cx).all() and np.isfinite(cy).all()):
        grid_debug(logger, "coordinate map: %d undefined nodes in %s, exact transform used",
                   int((~np.isfinite(cx)).sum()), box)
        yy, xx = box.coordinates()
        return transform_pixels(dst_wcs, src_wcs, xx, yy)
    if H is not None:  # TAN to TAN: the map is projective, exactly
        return homography_maps(H, box)
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


def _channel_groups(C):
    """``(c0, c1)`` slices of ``C`` channels in groups of 1, 3 or 4 for OpenCV's warps.

    OpenCV interpolates 2-channel float images at positions rounded to 1/32 pixel (0.07
    of a unit-noise image's sigma off exact bilinear values), 1-, 3- and 4-channel ones
    exactly: a pair of channels goes one by one.

    Examples
    --------
    >>> _channel_groups(6)
    [(0, 4), (4, 5), (5, 6)]
    """
    groups, c0 = [], 0
    while c0 < C:
        c1 = c0 + (1 if C - c0 == 2 else min(4, C - c0))
        groups.append((c0, c1))
        c0 = c1
    return groups


def _by_channels(img, shape, warp):
    """``warp(part)`` of each group of channels of an (h, w, C) image -> (*shape, C) float32.

    OpenCV reads an image whose rows are apart (a crop) in place: only a part of the
    channels is copied."""
    groups = _channel_groups(img.shape[2])
    if len(groups) == 1:
        return np.asarray(warp(img), np.float32).reshape(tuple(shape) + (img.shape[2],))
    out = np.empty(tuple(shape) + (img.shape[2],), dtype=np.float32)
    for c0, c1 in groups:
        out[:, :, c0:c1] = warp(np.ascontiguousarray(img[:, :, c0:c1])).reshape(
            tuple(shape) + (c1 - c0,))
    return out


def _remap(img, mx, my, interpolation, border):
    """cv2.remap of an (h, w, C) float32 image (channels in groups: :func:`_channel_groups`)."""
    import cv2
    return _by_channels(img, mx.shape, lambda part: cv2.remap(part, mx, my, interpolation,
                                                              borderMode=border))


def _linear_with_curvature(sampler, sub, sub_valid):
    """Bilinear samples of ``sub`` and the smoothing bias ``p(1-p)/2 f'' + q(1-q)/2 f''``
    at the same points (see the module notes and :mod:`.curvature`)."""
    import cv2
    dxx, dyy = half_second_differences(sub, sub_valid)
    fx, fy = sampler.maps()
    term = phase_weighted(sampler(dxx, cv2.INTER_LINEAR), fx)
    del dxx
    term += phase_weighted(sampler(dyy, cv2.INTER_LINEAR), fy)
    return sampler(sub, cv2.INTER_LINEAR), term


def reproject_to_bbox(data, src_wcs, dst_wcs, bbox, *, grid_step=32, src_mask=None,
                      order="bilinear", valid_threshold=0.999, curvature_correction=False,
                      homography=None, src_origin=(0, 0), frame_shape=None,
                      with_footprint=True, clamp_edges=True, extent=None):
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
    homography : numpy.ndarray, shape (3, 3), optional
        The projective map from ``dst_wcs`` pixels to ``src_wcs`` pixels when the
        caller knows it (:func:`wcs_homography`, computed once per frame for all its
        boxes); otherwise it is looked for at the coarse nodes (TAN to TAN), and the
        interpolated coordinate map serves any other pair of projections.
    src_origin : tuple of int
        ``(row, column)`` of ``data[0, 0]`` in the source frame: ``data`` is a crop of
        the frame that ``src_wcs`` describes (:func:`source_crop`).
    frame_shape : tuple of int, optional
        ``(H, W)`` of the frame (default ``src_wcs.pixel_shape``, else the crop's extent
        from ``src_origin``).  With ``homography`` and ``frame_shape`` given, ``src_wcs``
        may be None.
    with_footprint : bool
        False returns ``out`` alone (its NaN say where it is not valid).
    extent : BoxExtent, optional
        :func:`box_extent` of ``bbox`` (with these WCS, ``homography``, ``frame_shape``
        and ``grid_step``), when the caller found it to choose the crop it reads: not
        looked for again.
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
    if src_mask is not None and np.shape(src_mask) != (H, W):
        raise ValueError(f"src_mask shape {np.shape(src_mask)} does not match the data shape "
                         f"{(H, W)}")
    if src_wcs is None and extent is None and (homography is None or frame_shape is None):
        raise ValueError("src_wcs may be None only with a homography and the frame_shape")
    if src_wcs is not None:
        celestial_part(src_wcs)
        celestial_part(dst_wcs)
    h, w = box.shape

    def nothing():
        out = np.full((h, w, C), np.nan, dtype=np.float32)
        return (out, np.zeros((h, w), np.float32)) if with_footprint else out

    maps = None
    if extent is None:
        fh, fw = frame_shape if frame_shape is not None else (
            tuple(src_wcs.pixel_shape)[::-1] if getattr(src_wcs, "pixel_shape", None)
            else (H + int(src_origin[0]), W + int(src_origin[1])))
        found = _extent(src_wcs, dst_wcs, box, (fh, fw), grid_step, homography)
        if found is None:
            return nothing()
        extent, maps = found
    elif extent.box != box:
        raise ValueError(f"the extent given is of the box {extent.box}, not of {box}")
    win, sampler, (cy0, cy1, cx0, cx1), limits = _box_mapping(extent, maps, (H, W),
                                                             src_origin)
    del maps
    sub = arr[cy0:cy1, cx0:cx1]
    sub_valid = None  # every pixel valid (the common case)
    if sub.dtype.kind == "f" and not _all_finite(sub):
        sub_valid = compute_valid_mask(sub, eps=-1)  # finite in every channel
    if src_mask is not None:
        given = np.asarray(src_mask, dtype=bool)[cy0:cy1, cx0:cx1]
        sub_valid = given if sub_valid is None else sub_valid & given
    if sub_valid is not None:
        if not sub_valid.any():
            return nothing()
        if sub_valid.all():
            sub_valid = None
    all_valid = sub_valid is None
    if all_valid:
        sub = sub.astype(np.float32, copy=False)
    else:
        sub = np.where(sub_valid[..., np.newaxis], sub, np.float32(0.0)).astype(
            np.float32, copy=False)
    ok = None
    if limits is not None:  # points outside the frame read replicated edge values: masked
        ok = sampler.inside(limits)
        if not ok.any():
            return nothing()
    vmap = None if all_valid else sub_valid.astype(np.float32)[..., np.newaxis]
    if mode == "nearest":
        res = sampler(sub, cv2.INTER_NEAREST)
        if vmap is not None:
            ok = _and(ok, sampler(vmap, cv2.INTER_NEAREST)[..., 0] > 0.5)
    else:
        term = None
        if curvature_correction:  # bilinear only (checked above)
            res, term = _linear_with_curvature(sampler, sub, None if all_valid else sub_valid)
        else:
            res = sampler(sub, cv2.INTER_LINEAR if mode == "linear" else cv2.INTER_CUBIC)
        if vmap is not None:
            ok, res = _edge_rule(sampler, sub, vmap, res, ok, mode=mode,
                                 valid_threshold=valid_threshold, clamp_edges=clamp_edges)
        if term is not None:
            res -= term
    if ok is not None:
        np.copyto(res, np.float32(np.nan), where=~ok[..., np.newaxis])
    if win == box:
        if not with_footprint:
            return res
        return res, (np.ones((h, w), np.float32) if ok is None else ok.astype(np.float32))
    sl = win.slices_in(box)
    if not with_footprint:
        out = nothing()
        out[sl] = res
        return out
    out, footprint = nothing()
    out[sl] = res
    footprint[sl] = 1.0 if ok is None else ok
    return out, footprint


def _all_finite(img):
    """Whether a float image ``(h, w, C)`` is finite: its sum is (one pass of OpenCV in
    float64; NaN and inf carry through).  False may also mean a float64 image whose sum
    overflows: the caller's mask of finite values then says the rest."""
    import cv2
    if img.shape[2] <= 4 and img.dtype in (np.float32, np.float64):
        return bool(np.isfinite(cv2.sumElems(img)).all())
    return bool(np.isfinite(img).all())


def _edge_rule(sampler, sub, vmap, res, inside, *, mode, valid_threshold, clamp_edges):
    """Validity and values of a bilinear or bicubic sampling near invalid source pixels.

    Interpolated where the kernel holds only valid pixels; within half a pixel of a
    valid source pixel otherwise, that pixel's value (``clamp_edges``: the output is
    clamped to the edge pixel, as the frame's outer half pixel is).  ``inside``: the
    pixels within the frame (None: all).  Returns ``(ok, res)``.
    """
    import cv2
    if mode == "linear":
        vres = sampler(vmap, cv2.INTER_LINEAR)[..., 0]
        full = vres > valid_threshold
        np.divide(res, np.maximum(vres, valid_threshold)[..., np.newaxis], out=res)
    else:
        from scipy import ndimage
        eroded = ndimage.minimum_filter(vmap[..., 0], size=3, mode="nearest")
        full = sampler(eroded[..., np.newaxis], cv2.INTER_LINEAR)[..., 0] > valid_threshold
    ok = _and(inside, full)
    if not clamp_edges:
        return ok, res
    near = _and(inside, ~full & (sampler(vmap, cv2.INTER_NEAREST)[..., 0] > 0.5))
    if near.any():
        res[near] = sampler(sub, cv2.INTER_NEAREST)[near]
    return ok | near, res


class _Sampler:
    """Samples images of a source crop at the pixels of a window.

    With a projective map (``hs``: window pixel -> crop pixel) bilinear and nearest
    sampling are one ``cv2.warpPerspective`` each, with no coordinate maps; the maps
    (``fx``, ``fy``, float32, crop pixels) are formed only when needed (other kernels,
    the curvature correction), or given (a spline coordinate map).
    """

    def __init__(self, shape, hs=None, maps=None):
        self.shape, self.hs, self._maps = shape, hs, maps

    def maps(self):
        """``(fx, fy)``: the crop coordinates of the window's pixels."""
        if self._maps is None:
            self._maps = homography_maps(self.hs, BBox(0, self.shape[0], 0, self.shape[1]),
                                         dtype=np.float32)
        return self._maps

    def __call__(self, img, interp, border=None):
        import cv2
        border = cv2.BORDER_REPLICATE if border is None else border
        if self.hs is None or interp == cv2.INTER_CUBIC:
            return _remap(img, *self.maps(), interp, border)
        h, w = self.shape
        return _by_channels(img, self.shape, lambda part: cv2.warpPerspective(
            part, self.hs, (w, h), flags=interp | cv2.WARP_INVERSE_MAP, borderMode=border))

    def inside(self, limits):
        """Pixels whose source position lies within ``limits`` = (x_lo, x_hi, y_lo, y_hi)."""
        import cv2
        x_lo, x_hi, y_lo, y_hi = limits
        if self.hs is not None and self._maps is None:
            ok = pixels_within(self.hs, self.shape, limits)
            if ok is not None:
                return ok
            # the nearest crop pixel of a position within the frame's edges is a crop pixel
            # on the frame (the crop reaches the frame's edge wherever a position can
            # cross it): a warp of ones, without maps
            h, w = self.shape
            ones = _ones((int(round(y_hi - y_lo)), int(round(x_hi - x_lo))))
            y0, x0 = int(round(y_lo + 0.5)), int(round(x_lo + 0.5))
            shift = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]]) @ self.hs
            got = cv2.warpPerspective(ones, shift, (w, h), flags=cv2.INTER_NEAREST
                                      | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=0)
            return got.view(bool)  # 0 or 1
        fx, fy = self.maps()
        with np.errstate(invalid="ignore"):
            return (fx >= x_lo) & (fx <= x_hi) & (fy >= y_lo) & (fy <= y_hi)


@functools.lru_cache(maxsize=4)
def _ones(shape):
    """A read-only uint8 image of ones (a frame's: the same for all its boxes)."""
    ones = np.ones(shape, np.uint8)
    ones.setflags(write=False)
    return ones


def _and(a, b):
    """``a & b`` where ``a`` may be None (all True)."""
    return b if a is None else a & b


@dataclass(frozen=True, eq=False)
class BoxExtent:
    """Where the pixels of an output box fall in a frame (:func:`box_extent`).

    ``box`` is the output box, ``frame_shape`` the frame's ``(H, W)``, ``win`` the part
    of ``box`` that the frame can reach, ``homography`` the projective map of ``win``'s
    pixels (grid pixel -> frame pixel; None: a coordinate map serves, rebuilt from the
    nodes ``fit`` of :func:`_node_fit` between the WCS ``wcs`` = (source, grid) at
    ``grid_step``), ``limits`` the extremes ``(x_lo, x_hi, y_lo, y_hi)`` of the frame
    coordinates of ``win``'s pixels.  ``crop``: the frame pixels that
    :func:`reproject_to_bbox` reads for the box.
    """

    box: BBox
    frame_shape: tuple
    win: BBox
    homography: object
    limits: tuple
    fit: tuple = field(default=None, repr=False)
    wcs: tuple = field(default=(None, None), repr=False)
    grid_step: int = 32

    @property
    def crop(self):
        """The frame pixels read (bilinear and bicubic kernels included), a BBox."""
        return BBox(*_crop_of(self.limits, self.frame_shape))

    def maps(self):
        """The coordinate map of ``win`` (no homography)."""
        return _coordinate_map(*self.wcs, self.win, self.grid_step, self.fit)

    def on_window(self):
        """This extent for the box ``win``: what a reprojection onto ``box`` holds
        without its margin that the frame cannot reach (the same pixels)."""
        return replace(self, box=self.win)


def box_extent(src_wcs, dst_wcs, bbox, *, frame_shape=None, homography=None, grid_step=32):
    """Where the pixels of ``bbox`` fall in a frame: a :class:`BoxExtent`, or None when
    they miss it.

    Found once for a box, it says which part of the frame to read (its ``crop``, what
    :func:`source_crop` returns) and serves :func:`reproject_to_bbox` (``extent``), which
    then does not look for it again.  Parameters as for :func:`source_crop`.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> e = box_extent(w, w, BBox(10, 20, 30, 40), frame_shape=(100, 100))
    >>> e.win, e.crop
    (BBox(y0=10, y1=20, x0=30, x1=40), BBox(y0=7, y1=24, x0=26, x1=44))
    """
    shape = tuple(frame_shape or tuple(src_wcs.pixel_shape)[::-1])
    found = _extent(src_wcs, dst_wcs, _as_bbox(bbox), shape, grid_step, homography)
    return None if found is None else found[0]


def _extent(src_wcs, dst_wcs, box, frame_shape, grid_step, homography):
    """``(BoxExtent, coordinate map or None)`` of ``box``, or None when its pixels miss the
    frame (:func:`box_extent`; the map, made to find the limits, is returned for use)."""
    fh, fw = frame_shape
    maps = fit = None
    if homography is None:
        win = _source_window(src_wcs, (fh, fw), dst_wcs, box)
        if win is None:
            return None
        fit = _node_fit(src_wcs, dst_wcs, win, max(2, int(grid_step)))
        homography = fit[0]
    else:
        win = _homography_window(homography, (fh, fw), box)
        if win is None:
            return None
    if homography is not None:
        # a projective map takes the box's corners to the extremes of the coordinates
        u, v = apply_homography(homography, np.array([win.x0, win.x1 - 1] * 2, np.float64),
                                np.array([win.y0] * 2 + [win.y1 - 1] * 2, np.float64))
        ext = (u.min(), u.max(), v.min(), v.max())
    else:
        maps = _coordinate_map(src_wcs, dst_wcs, win, grid_step, fit)
        with np.errstate(invalid="ignore"):
            ext = (np.nanmin(maps[0]), np.nanmax(maps[0]), np.nanmin(maps[1]),
                   np.nanmax(maps[1]))
    if not np.isfinite(ext).all() or ext[1] < -0.5 or ext[0] > fw - 0.5 \
            or ext[3] < -0.5 or ext[2] > fh - 0.5:
        return None
    return BoxExtent(box, (fh, fw), win, homography, ext, fit=None if maps is None else fit,
                     wcs=(src_wcs, dst_wcs), grid_step=grid_step), maps


def _crop_of(ext, frame_shape, pad=3):
    """The frame pixels ``(y0, y1, x0, x1)`` that coordinates within ``ext`` read (bilinear
    and bicubic kernels included), clipped to the frame."""
    fh, fw = frame_shape
    x0 = min(fw - 1, max(0, int(np.floor(ext[0])) - pad))
    x1 = max(x0 + 1, min(fw, int(np.ceil(ext[1])) + pad + 1))
    y0 = min(fh - 1, max(0, int(np.floor(ext[2])) - pad))
    y1 = max(y0 + 1, min(fh, int(np.ceil(ext[3])) + pad + 1))
    return y0, y1, x0, x1


def source_crop(src_wcs, dst_wcs, bbox, *, frame_shape=None, homography=None, grid_step=32):
    """The part of a frame that :func:`reproject_to_bbox` reads for ``bbox``, or None.

    A caller can read and decode only that part of the frame (rows and columns, a BBox),
    and pass it with its ``src_origin``: the result is the same as with the whole frame.
    ``src_wcs``, ``dst_wcs`` and ``bbox`` (in ``dst_wcs`` pixels), ``homography`` and
    ``grid_step`` as for :func:`reproject_to_bbox`; ``frame_shape`` the frame's ``(H,
    W)`` (default ``src_wcs.pixel_shape``).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> source_crop(w, w, BBox(10, 20, 30, 40), frame_shape=(100, 100))
    BBox(y0=7, y1=24, x0=26, x1=44)
    """
    found = box_extent(src_wcs, dst_wcs, bbox, frame_shape=frame_shape, homography=homography,
                       grid_step=grid_step)
    return None if found is None else found.crop


def _box_mapping(found, maps, src_shape, src_origin):
    """Where the pixels of the box of ``found`` (a :class:`BoxExtent`; ``maps`` its
    coordinate map when at hand) read the source array.

    Returns ``(win, sampler, crop, limits)``: ``win`` is the part of the box that the
    frame can reach; ``sampler`` (:class:`_Sampler`) samples images of ``crop`` = ``(y0,
    y1, x0, x1)``, the part of the source array that ``win`` reads (plus the kernel's
    reach), at its pixels; ``limits`` = the frame's edges ``(x_lo, x_hi, y_lo, y_hi)`` in
    crop coordinates, or None when every pixel of ``win`` falls inside the frame.
    ``src_shape`` is the array's shape, ``src_origin`` = (row, column) of its corner in the
    frame (a crop of the frame).
    """
    H, W = src_shape
    sy0, sx0 = (int(v) for v in src_origin)
    fh, fw = found.frame_shape
    win, homography, ext = found.win, found.homography, found.limits
    y0, y1, x0, x1 = _crop_of(ext, (fh, fw))
    if y0 < sy0 or x0 < sx0 or y1 > sy0 + H or x1 > sx0 + W:
        raise ValueError(f"the source array ({H}x{W} at {(sy0, sx0)} of the frame) does not "
                         f"cover the part of the frame that {win} reads ({BBox(y0, y1, x0, x1)}"
                         "; see source_crop)")
    inside = ext[0] >= -0.5 and ext[1] <= fw - 0.5 and ext[2] >= -0.5 and ext[3] <= fh - 0.5
    if homography is not None:  # window pixel -> crop pixel
        hs = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]]) @ homography @ np.array(
            [[1.0, 0, win.x0], [0, 1.0, win.y0], [0, 0, 1.0]])
        sampler = _Sampler(win.shape, hs=hs / hs[2, 2])
    else:
        maps = found.maps() if maps is None else maps
        fx = maps[0].astype(np.float32)
        fy = maps[1].astype(np.float32)
        del maps
        fx -= x0
        fy -= y0
        bad = ~(np.isfinite(fx) & np.isfinite(fy))
        if bad.any():
            fx[bad] = -1.0e6
            fy[bad] = -1.0e6
            inside = False
        sampler = _Sampler(win.shape, maps=(fx, fy))
    limits = None if inside else (-0.5 - x0, fw - 0.5 - x0, -0.5 - y0, fh - 0.5 - y0)
    return win, sampler, (y0 - sy0, y1 - sy0, x0 - sx0, x1 - sx0), limits


def _homography_window(H, frame_shape, box):
    """Part of ``box`` that a frame mapped by ``H`` (box pixel -> frame pixel) can reach."""
    fh, fw = frame_shape
    u = np.array([-0.5, fw - 0.5, fw - 0.5, -0.5])
    v = np.array([-0.5, -0.5, fh - 0.5, fh - 0.5])
    gx, gy = apply_homography(inverse_homography(H), u, v)
    if not (np.isfinite(gx).all() and np.isfinite(gy).all()):
        return box
    win = BBox(int(np.floor(gy.min())) - 1, int(np.ceil(gy.max())) + 2,
               int(np.floor(gx.min())) - 1, int(np.ceil(gx.max())) + 2).intersection(box)
    return None if win.is_empty else win
