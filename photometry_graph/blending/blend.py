"""Blending of overlapping tiles: feather weights and multi-band blending.

Weights
    Each tile gets a smooth weight that rises from 0 at its valid border
    (its bounding-box edge, or the edge of an empty zone) to 1 over ``ramp``
    pixels (:func:`feather_weight`); invalid pixels have weight 0.  At every
    pixel the weights of the covering tiles are normalised to sum to 1
    (:func:`normalise_weights`).

Feathering
    ``M = sum_i w_i I_i / sum_i w_i`` over the tiles that cover a pixel
    (:func:`feather_blend`).

Multi-band (Burt & Adelson)
    All tiles covering a region are blended at once, level by level::

        out = collapse_k( sum_i L_k(F_i) * G_k(w_i) / sum_j G_k(w_j) )

    with ``L_k`` the Laplacian pyramid of tile ``i`` and ``G_k`` the
    Gaussian pyramid of its normalised weight, never pair by pair.  The
    invalid pixels of tile ``i`` are filled, before its pyramid is built,
    with what the other tiles show there (the feather blend ``M``), so no
    NaN, zero or empty-zone value can reach a valid pixel.  Written as
    ``F_i = M + D_i`` with ``D_i = I_i - M`` on the valid pixels of ``i``
    and 0 elsewhere, and since ``sum_i G_k(w_i) / sum_j G_k(w_j) = 1``::

        out = M + collapse_k( sum_i L_k(D_i) * G_k(w_i) / sum_j G_k(w_j) )

    which is what is computed: the differences ``D_i`` are zero away from
    overlaps, so pyramids are only built around overlaps, on sub-blocks
    aligned to the pyramid's sampling grid; ``sum_j G_k(w_j)`` is the
    Gaussian pyramid of the coverage indicator, and at level 0, where the
    weights are the feather weights, ``sum_i w_i D_i = 0`` leaves only
    ``-sum_i w_i up(G_1 D_i)`` to accumulate.  (``fill="pushpull"``
    extrapolates ``D_i`` into the tile's invalid pixels with
    :func:`~photometry_graph.blending.pyramid.fill_invalid` instead of using zero.)

    A pixel covered by one tile returns exactly that tile's value: the
    multi-band correction is faded in over :func:`taper_width` pixels from
    the single-coverage pixels, so the hand-over has no step.  The number of
    levels follows the overlap width (:func:`levels_for_overlap`), so that
    the coarsest blur stays well inside the overlap.
"""

from dataclasses import dataclass, field

import cv2
import numpy as np

from .._log import get_logger
from .pyramid import fill_invalid, gaussian_levels, max_levels, pyr_down, pyr_up

__all__ = [
    "smoothstep",
    "feather_weight",
    "normalise_weights",
    "levels_for_overlap",
    "pyramid_halo",
    "taper_width",
    "overlap_width",
    "BlendLayer",
    "BlendOutput",
    "blend_layers",
    "feather_blend",
    "multiband_blend",
    "BLEND_METHODS",
]

logger = get_logger(__name__)

BLEND_METHODS = ("multiband", "feather", "none")
_FILL_METHODS = ("mosaic", "pushpull")


def smoothstep(t):
    """Smooth ramp ``3t^2 - 2t^3`` of ``t`` clipped to ``[0, 1]`` (float32).

    Examples
    --------
    >>> smoothstep([-1.0, 0.5, 2.0]).tolist()
    [0.0, 0.5, 1.0]
    """
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def _border_flags(border):
    if border is True or border is False:
        return (bool(border),) * 4
    flags = tuple(bool(b) for b in border)
    if len(flags) != 4:
        raise ValueError(
            "border must be True, False or four booleans (top, bottom, left, right), "
            f"got {border!r}"
        )
    return flags


def feather_weight(mask, *, ramp=32.0, border=True, roi=None):
    """Feathering weight that rises smoothly from the tile's valid border.

    ``w = smoothstep(d / ramp)`` with ``d`` the Euclidean distance (in
    pixels) from a valid pixel to the nearest invalid pixel or array edge,
    so a valid pixel next to the border has ``d = 1`` and a small positive
    weight; invalid pixels get 0.

    Parameters
    ----------
    mask : array_like of bool, shape (H, W)
        Valid pixels of the tile (or of a crop of it).
    ramp : float
        Width of the ramp in pixels (> 0); weights are 1 beyond it.
    border : bool or tuple of 4 bool
        Which array edges are the tile's border, as ``(top, bottom, left,
        right)``; ``True`` for all.  Set an edge to ``False`` when the array
        is a crop that continues past it, so the crop gives the same weights
        as the whole tile (it is exact when the crop extends ``ramp`` pixels
        past the region of interest).
    roi : tuple of slice, optional
        Return the weights of ``mask[roi]`` only (the distances still see
        the whole ``mask``).

    Returns
    -------
    numpy.ndarray, float32, shape (H, W) (or the shape of ``mask[roi]``)

    Examples
    --------
    >>> import numpy as np
    >>> w = feather_weight(np.ones((9, 9), bool), ramp=4)
    >>> [round(float(v), 3) for v in w[4]]
    [0.156, 0.5, 0.844, 1.0, 1.0, 1.0, 0.844, 0.5, 0.156]
    """
    m = np.ascontiguousarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    if not np.isfinite(ramp) or ramp <= 0:
        raise ValueError(f"ramp must be a positive number of pixels, got {ramp!r}")
    top, bottom, left, right = _border_flags(border)
    H, W = m.shape
    big = np.float32(ramp)
    dy = np.full(H, big, dtype=np.float32)
    dx = np.full(W, big, dtype=np.float32)
    if top:
        dy = np.minimum(dy, np.arange(1, H + 1, dtype=np.float32))
    if bottom:
        dy = np.minimum(dy, np.arange(H, 0, -1, dtype=np.float32))
    if left:
        dx = np.minimum(dx, np.arange(1, W + 1, dtype=np.float32))
    if right:
        dx = np.minimum(dx, np.arange(W, 0, -1, dtype=np.float32))
    if roi is None:
        roi = (slice(0, H), slice(0, W))
    elif len(roi) != 2 or not all(isinstance(r, slice) for r in roi):
        raise TypeError(f"roi must be a pair of slices, got {roi!r}")
    inv = np.float32(1.0 / ramp)
    # smoothstep is monotone: the min of the ramps is the ramp of the min distance
    w = np.minimum(smoothstep(dy[roi[0]] * inv)[:, np.newaxis],
                   smoothstep(dx[roi[1]] * inv)[np.newaxis, :])
    if not m.all():
        sub = m[roi]
        if m.any():
            dist = cv2.distanceTransform(m.view(np.uint8), cv2.DIST_L2, 5)[roi]
            np.minimum(dist, big, out=dist)
            dist *= inv
            np.minimum(w, smoothstep(dist), out=w)
        w[~sub] = 0.0
    return w


def normalise_weights(weights):
    """Scale weights so that at every pixel they sum to 1 (or are all 0).

    Parameters
    ----------
    weights : sequence of array_like, each (H, W), non-negative

    Returns
    -------
    list of numpy.ndarray, float32
        ``w_i / sum_j w_j`` where the sum is positive, 0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = normalise_weights([np.array([1.0, 3.0, 0.0]), np.array([1.0, 1.0, 0.0])])
    >>> (a + b).tolist()
    [1.0, 1.0, 0.0]
    """
    ws = [np.asarray(w, dtype=np.float32) for w in weights]
    if not ws:
        return []
    shape = ws[0].shape
    for w in ws:
        if w.shape != shape:
            raise ValueError(f"all weights must have the same shape, got {w.shape} and {shape}")
        if np.any(w < 0) or not np.isfinite(w).all():
            raise ValueError("weights must be finite and non-negative")
    total = np.sum(ws, axis=0, dtype=np.float32)
    pos = total > 0
    out = []
    for w in ws:
        n = np.zeros(shape, dtype=np.float32)
        np.divide(w, total, out=n, where=pos)
        out.append(n)
    return out


def levels_for_overlap(width, *, max_levels=6):
    """Number of pyramid levels whose coarsest blur fits inside an overlap.

    The Gaussian of level ``k`` of a 5-tap binomial pyramid has
    ``sigma_k = sqrt((4**k - 1) / 3)`` pixels; the deepest level kept is the
    one with ``3 * sigma_k <= width / 4``: the coarsest blur (``+-3 sigma``)
    spans at most half of the overlap, so the weights it spreads stay well
    inside the overlap and the hand-over to single-tile pixels is smooth.

    Parameters
    ----------
    width : float
        Overlap width in pixels (the smaller side of the overlap box).
    max_levels : int
        Upper bound.

    Returns
    -------
    int
        Number of levels including level 0; 1 means "too small for a
        pyramid: feather".

    Examples
    --------
    >>> [levels_for_overlap(w) for w in (8, 16, 64, 256)]
    [1, 2, 4, 6]
    """
    if max_levels < 1:
        raise ValueError(f"max_levels must be >= 1, got {max_levels}")
    levels = 1
    while levels < max_levels:
        sigma = np.sqrt((4.0 ** levels - 1.0) / 3.0)
        if 3.0 * sigma > width / 4.0:
            break
        levels += 1
    return levels


def pyramid_halo(levels):
    """Pixels of context a multi-band blend with ``levels`` levels needs around a block.

    The binomial pyramid is compactly supported: a level-0 output pixel of
    the blend depends on inputs within a few ``2**(levels - 1)`` pixels;
    the halo adds a margin so that a chunked blend equals a whole-canvas
    blend to float rounding.

    Examples
    --------
    >>> pyramid_halo(1), pyramid_halo(5)
    (0, 48)
    """
    if levels <= 1:
        return 0
    return 3 * 2 ** (int(levels) - 1)


def taper_width(levels):
    """Distance over which the multi-band correction fades in from single coverage.

    Twice the blur (sigma) of the coarsest pyramid level, in pixels.
    """
    k = max(1, int(levels) - 1)
    return float(2.0 * np.sqrt((4.0 ** k - 1.0) / 3.0))


def overlap_width(weights):
    """Width of the zone covered by two or more of the given weight maps.

    Twice the largest distance from a multiply-covered pixel to the edge of
    that zone (the width of a strip); 0 when nothing overlaps.
    """
    count = None
    for w in weights:
        c = (np.asarray(w) > 0).astype(np.uint8)
        count = c if count is None else count + c
    if count is None:
        return 0.0
    multi = (count >= 2).astype(np.uint8)
    if not multi.any():
        return 0.0
    padded = np.pad(multi, 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)
    return float(2.0 * dist.max())


@dataclass
class BlendLayer:
    """One tile's contribution to a blend region.

    Attributes
    ----------
    y0, x0 : int
        Position of the layer's top-left pixel in the region.
    data : numpy.ndarray, shape (h, w, C)
        Pixels (any value, NaN included, on invalid pixels).
    valid : numpy.ndarray of bool, shape (h, w)
    weight : numpy.ndarray, shape (h, w)
        Non-negative blend weight; a pixel is covered by the layer where
        it is valid and its weight is positive.
    key : hashable, optional
        Tile identifier (for bookkeeping).
    """

    y0: int
    x0: int
    data: np.ndarray
    valid: np.ndarray
    weight: np.ndarray
    key: object = None

    @property
    def slices(self):
        """Slices of the layer inside the region."""
        h, w = self.valid.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


@dataclass
class BlendOutput:
    """Result of :func:`blend_layers`.

    Attributes
    ----------
    image : numpy.ndarray, float32, shape (H, W, C)
        Blended pixels, NaN where no layer covers.
    weight_sum : numpy.ndarray, float32, shape (H, W)
        Sum of the (unnormalised) layer weights.
    n_cover : numpy.ndarray, float32, shape (H, W)
        Number of layers covering each pixel.
    pyramid : bool
        True when the multi-band correction was computed.
    info : dict
    """

    image: np.ndarray
    weight_sum: np.ndarray
    n_cover: np.ndarray
    pyramid: bool = False
    info: dict = field(default_factory=dict)


def _add_into(dst, src):
    """``dst += src`` in place; ``dst`` may be a view (OpenCV is ~3x faster than numpy)."""
    if src.ndim == 3 and src.shape[2] > 4:
        np.add(dst, src, out=dst)
    else:
        cv2.accumulate(src, dst)


def _add_product_into(dst, src, weight):
    """``dst += src * weight[..., None]`` in place; ``dst``/``src`` (h, w, C), weight (h, w)."""
    if src.ndim == 2 or src.shape[2] == 1:
        cv2.accumulateProduct(src, weight, dst)
    else:
        _add_into(dst, src * weight[:, :, np.newaxis])


def _accumulate(layers, shape, n_channels):
    """Weight sum, cover count, exact sums and the feather blend of the layers."""
    H, W = shape
    wsum = np.zeros((H, W), dtype=np.float32)
    ncov = np.zeros((H, W), dtype=np.float32)
    plain = np.zeros((H, W, n_channels), dtype=np.float32)
    weighted = np.zeros((H, W, n_channels), dtype=np.float32)
    prepared = []
    for layer in layers:
        data = np.asarray(layer.data)
        if data.ndim == 2:
            data = data[:, :, np.newaxis]
        weight = np.asarray(layer.weight, dtype=np.float32)
        if data.shape[:2] != weight.shape:
            raise ValueError(
                f"layer {layer.key!r}: data {data.shape} and weight {weight.shape} shapes disagree"
            )
        if data.shape[2] != n_channels:
            raise ValueError(f"layer {layer.key!r} has {data.shape[2]} channels, expected "
                             f"{n_channels}")
        h, w = weight.shape
        sl = (slice(layer.y0, layer.y0 + h), slice(layer.x0, layer.x0 + w))
        if layer.y0 < 0 or layer.x0 < 0 or layer.y0 + h > H or layer.x0 + w > W:
            raise ValueError(f"layer {layer.key!r} at ({layer.y0}, {layer.x0}) with shape "
                             f"{(h, w)} does not fit in the region {shape}")
        cover = weight > 0
        if layer.valid is not None:
            cover &= np.asarray(layer.valid, dtype=bool)
        n_cover = int(np.count_nonzero(cover))
        if n_cover == 0:
            continue
        if n_cover == cover.size:
            full = True
            clean = np.asarray(data, dtype=np.float32)
            wgt = weight
        else:
            full = False
            clean = np.where(cover[:, :, np.newaxis], data, np.float32(0.0)).astype(
                np.float32, copy=False)
            wgt = np.where(cover, weight, np.float32(0.0))
        _add_into(wsum[sl], wgt)
        cv2.accumulate(cover.view(np.uint8), ncov[sl])
        _add_into(plain[sl], clean)
        _add_product_into(weighted[sl], clean, wgt)
        prepared.append((layer, sl, None if full else cover, clean, wgt))
    covered = ncov > 0
    mosaic = np.full((H, W, n_channels), np.nan, dtype=np.float32)
    np.divide(weighted, wsum[:, :, np.newaxis], out=mosaic, where=covered[:, :, np.newaxis])
    # one covering layer: exactly its value (x + 0 + 0 ... is exact in float)
    np.copyto(mosaic, plain, where=(ncov == 1)[:, :, np.newaxis])
    return prepared, wsum, ncov, mosaic


def _multiband_correction(prepared, mosaic, wsum, ncov, levels, fill):
    """``collapse_k(sum_i L_k(D_i) G_k(w_i) / G_k(covered))`` on the region."""
    H, W, C = mosaic.shape
    levels = max(1, min(int(levels), max_levels((H, W), min_size=1)))
    if levels < 2:
        return None
    align = 2 ** (levels - 1)
    halo = pyramid_halo(levels)
    covered = (ncov > 0).astype(np.float32)
    inv_den = []
    for d in gaussian_levels(covered, levels):
        inv = np.zeros(d.shape, dtype=np.float32)
        np.divide(np.float32(1.0), d, out=inv, where=d > 1e-6)
        inv_den.append(inv)
    # acc[0] holds MINUS the level-0 band (see below)
    acc = [np.zeros(d.shape + (C,), dtype=np.float32) for d in inv_den]
    multi = ncov >= 2
    used = 0
    for layer, sl, cover, clean, w in prepared:
        mc = multi[sl] if cover is None else (cover & multi[sl])
        rows = np.flatnonzero(mc.any(axis=1))
        if rows.size == 0:
            continue  # D_i is zero on this layer: it adds nothing
        cols = np.flatnonzero(mc.any(axis=0))
        used += 1
        by0, by1 = sl[0].start + rows[0], sl[0].start + rows[-1] + 1
        bx0, bx1 = sl[1].start + cols[0], sl[1].start + cols[-1] + 1
        sy0 = max(0, (by0 - halo) // align * align)
        sx0 = max(0, (bx0 - halo) // align * align)
        sy1, sx1 = min(H, by1 + halo), min(W, bx1 + halo)
        # part of the layer inside the sub-block
        ly0, ly1 = max(sl[0].start, sy0), min(sl[0].stop, sy1)
        lx0, lx1 = max(sl[1].start, sx0), min(sl[1].stop, sx1)
        src = (slice(ly0 - sl[0].start, ly1 - sl[0].start),
               slice(lx0 - sl[1].start, lx1 - sl[1].start))
        dst = (slice(ly0 - sy0, ly1 - sy0), slice(lx0 - sx0, lx1 - sx0))
        reg = (slice(ly0, ly1), slice(lx0, lx1))
        shape = (sy1 - sy0, sx1 - sx0)
        diff = np.zeros(shape + (C,), dtype=np.float32)
        wn = np.zeros(shape, dtype=np.float32)
        d = diff[dst]
        np.subtract(clean[src], mosaic[reg], out=d)
        if cover is None:
            cv2.divide(w[src], wsum[reg], dst=wn[dst])
        else:
            c = cover[src]
            np.divide(w[src], wsum[reg], out=wn[dst], where=c)
            np.copyto(d, np.float32(0.0), where=~c[:, :, np.newaxis])
        if fill == "pushpull":
            inside = np.zeros(shape, dtype=bool)
            inside[dst] = True if cover is None else cover[src]
            diff = fill_invalid(diff, inside, levels=levels)
        if C == 1:
            diff = diff[:, :, 0]
        # Level 0 of the blend: sum_i w_i L_0(D_i) = sum_i w_i D_i - sum_i w_i up(G_1 D_i),
        # and sum_i w_i D_i = sum_i w_i I_i - M = 0: only the second term is accumulated
        # (with its sign flipped), and only where w_i > 0, i.e. on the layer itself.
        gd = [diff, pyr_down(diff)]
        for _ in range(levels - 2):
            gd.append(pyr_down(gd[-1]))
        gw = gaussian_levels(wn, levels)
        up = pyr_up(gd[1], shape)
        _add_product_into(acc[0][reg], up[dst] if C > 1 else up[dst][:, :, np.newaxis],
                          wn[dst])
        for k in range(1, levels):
            oy, ox = sy0 >> k, sx0 >> k
            hk, wk = gw[k].shape
            band = gd[k] - pyr_up(gd[k + 1], gd[k].shape) if k < levels - 1 else gd[k]
            ratio = gw[k]
            ratio *= inv_den[k][oy:oy + hk, ox:ox + wk]
            target = acc[k][oy:oy + hk, ox:ox + wk]
            _add_product_into(target, band if C > 1 else band[:, :, np.newaxis], ratio)
    if used == 0:
        return None
    img = acc[-1]
    for k in range(levels - 2, -1, -1):
        img = pyr_up(img, acc[k].shape)
        if img.ndim == 2:
            img = img[:, :, np.newaxis]
        if k == 0:
            img -= acc[0]
        else:
            img += acc[k]
    return img


def blend_layers(layers, shape, *, method="multiband", levels=5, fill="mosaic", roi=None):
    """Blend all layers that cover a region at once.

    Parameters
    ----------
    layers : sequence of BlendLayer
        Tiles (or tile crops) placed in the region; data ``(h, w, C)``.
        The weight must be positive exactly where the layer has data.
    shape : tuple of int
        ``(H, W)`` of the region.  For a multi-band blend of a region cut
        out of a larger canvas, the region's origin should sit on a
        multiple of ``2**(levels - 1)`` of the canvas grid, so that all
        regions sample the pyramid alike.
    method : {"multiband", "feather", "none"}
        ``"feather"`` and ``"none"`` both return the weighted mean
        (``"none"`` is meant for hard, e.g. coverage, weights).
    levels : int
        Pyramid levels for ``"multiband"`` (1 means feathering).
    fill : {"mosaic", "pushpull"}
        What a tile's pyramid sees on its invalid pixels: the blend of the
        other tiles (``"mosaic"``, exact no-bleed) or its own difference to
        that blend extrapolated by push-pull.
    roi : tuple of slice, optional
        Part of the region to return (e.g. a chunk without its halo);
        default the whole region.

    Returns
    -------
    BlendOutput
        Arrays cover ``roi``.
    """
    if method not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {method!r}; choose one of {BLEND_METHODS}")
    if fill not in _FILL_METHODS:
        raise ValueError(f"unknown fill {fill!r}; choose one of {_FILL_METHODS}")
    H, W = int(shape[0]), int(shape[1])
    if roi is None:
        roi = (slice(0, H), slice(0, W))
    ry0, ry1, _ = roi[0].indices(H)
    rx0, rx1, _ = roi[1].indices(W)
    roi = (slice(ry0, ry1), slice(rx0, rx1))
    layers = list(layers)
    if not layers:
        shape_roi = (ry1 - ry0, rx1 - rx0)
        return BlendOutput(np.full(shape_roi + (1,), np.nan, dtype=np.float32),
                           np.zeros(shape_roi, np.float32), np.zeros(shape_roi, np.float32))
    first = np.asarray(layers[0].data)
    n_channels = 1 if first.ndim == 2 else first.shape[2]
    prepared, wsum, ncov, mosaic = _accumulate(layers, (H, W), n_channels)
    out = BlendOutput(mosaic[roi], wsum[roi], ncov[roi], info={"layers": len(prepared)})
    if method != "multiband" or levels is None or levels < 2:
        return out
    multi = ncov >= 2
    if not multi[roi].any():
        return out
    corr = _multiband_correction(prepared, mosaic, wsum, ncov, levels, fill)
    if corr is None:
        return out
    # the multi-band correction fades out towards pixels covered by one tile, which
    # keep their exact value: no step where the coverage changes.  The distance is
    # computed on the roi widened by the taper width, which makes it exact on the roi.
    width = taper_width(levels)
    m = int(np.ceil(width)) + 1
    ey0, ey1, ex0, ex1 = max(0, ry0 - m), min(H, ry1 + m), max(0, rx0 - m), min(W, rx1 + m)
    dist = cv2.distanceTransform(multi[ey0:ey1, ex0:ex1].astype(np.uint8), cv2.DIST_L2, 5)
    dist = dist[ry0 - ey0:ry1 - ey0, rx0 - ex0:rx1 - ex0]
    taper = smoothstep(dist * np.float32(1.0 / width))  # 0 where fewer than 2 tiles
    c = corr[roi]
    c *= taper[:, :, np.newaxis]
    out.image += c
    out.pyramid = True
    return out


def _as_layers(images, weights):
    images = [np.asarray(im) for im in images]
    weights = [np.asarray(w) for w in weights]
    if len(images) != len(weights):
        raise ValueError(f"got {len(images)} images but {len(weights)} weight maps")
    if not images:
        raise ValueError("nothing to blend: give at least one image")
    shape = images[0].shape
    layers = []
    for k, (im, w) in enumerate(zip(images, weights)):
        if im.shape != shape:
            raise ValueError(f"image {k} has shape {im.shape}, expected {shape}")
        if w.shape != shape[:2]:
            raise ValueError(f"weight {k} has shape {w.shape}, expected {shape[:2]}")
        im3 = im[:, :, np.newaxis] if im.ndim == 2 else im
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(im3).all(axis=2) & np.isfinite(w) & (w > 0)
        layers.append(BlendLayer(0, 0, im3, valid, np.where(valid, w, 0.0), key=k))
    return layers, shape


def feather_blend(images, weights):
    """Weighted mean of images: ``sum_i w_i I_i / sum_i w_i``.

    Parameters
    ----------
    images : sequence of array_like, each (H, W) or (H, W, C)
        Same shape; NaN (or anything) where the weight is 0.
    weights : sequence of array_like, each (H, W)
        Non-negative; a pixel with weight 0 or a non-finite value is not
        covered by that image.

    Returns
    -------
    numpy.ndarray, float32
        Same shape as the images; NaN where no image covers; exactly the
        image's value where only one covers.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1.0, 1.0, np.nan]]); b = np.array([[np.nan, 3.0, 3.0]])
    >>> feather_blend([a, b], [np.ones((1, 3)), np.ones((1, 3))]).tolist()
    [[1.0, 2.0, 3.0]]
    """
    layers, shape = _as_layers(images, weights)
    out = blend_layers(layers, shape[:2], method="feather")
    return out.image.reshape(shape) if len(shape) == 2 else out.image


def multiband_blend(images, weights, levels=None, *, fill="mosaic"):
    """Multi-band (Laplacian pyramid) blend of all images at once.

    Parameters
    ----------
    images : sequence of array_like, each (H, W) or (H, W, C)
        Same shape; NaN (or anything) where the weight is 0.
    weights : sequence of array_like, each (H, W)
        Non-negative blend weights, e.g. :func:`feather_weight` of each
        image's valid mask; normalised internally.
    levels : int, optional
        Pyramid levels; default :func:`levels_for_overlap` of
        :func:`overlap_width`.  1 feathers.
    fill : {"mosaic", "pushpull"}
        See :func:`blend_layers`.

    Returns
    -------
    numpy.ndarray, float32
        Same shape as the images; NaN where no image covers; exactly the
        image's value where only one covers.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(1).normal(size=(40, 60)).astype(np.float32)
    >>> a = x.copy(); a[:, 40:] = np.nan
    >>> b = x.copy(); b[:, :20] = np.nan
    >>> wa = feather_weight(np.isfinite(a), ramp=20); wb = feather_weight(np.isfinite(b), ramp=20)
    >>> bool(np.allclose(multiband_blend([a, b], [wa, wb], levels=3), x, atol=1e-5))
    True
    """
    layers, shape = _as_layers(images, weights)
    if levels is None:
        levels = levels_for_overlap(overlap_width([layer.weight for layer in layers]))
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    out = blend_layers(layers, shape[:2], method="multiband", levels=int(levels), fill=fill)
    return out.image.reshape(shape) if len(shape) == 2 else out.image
