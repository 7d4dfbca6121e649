"""Global celestial grid, frame footprints and tile WCS.

Pure functions on :class:`astropy.wcs.WCS` objects.  Pixel coordinates are
0-based with pixel centres at integers (a pixel ``i`` spans ``i - 0.5`` to
``i + 0.5``), as everywhere in the package.  Frame WCS may carry SIP
distortion: every transform here goes through ``all_pix2world`` /
``all_world2pix``, so the distortion is honoured, and frame borders are
sampled densely so that a curved border is not cut.
"""

from dataclasses import dataclass, field

import numpy as np
from astropy.wcs import WCS

from .._log import get_logger, grid_debug, grid_info, grid_warning
from .tiles import BBox, grid_layout

__all__ = [
    "celestial_part",
    "lonlat_from_world",
    "GlobalGrid",
    "celestial_pixel_scale",
    "build_global_grid",
    "footprint_bbox",
    "assign_frames_to_tiles",
    "tile_wcs",
    "binned_wcs",
    "transform_pixels",
    "frame_border",
    "MAX_SCALE_RATIO",
    "geometry_outliers",
    "canvas_limit",
]

logger = get_logger(__name__)


def celestial_part(wcs):
    """The 2-D celestial part of ``wcs``, its keywords normalised.

    Raises
    ------
    TypeError
        When ``wcs`` is not an ``astropy.wcs.WCS``.
    ValueError
        When it has no celestial axes.
    """
    if not isinstance(wcs, WCS):
        raise TypeError(f"expected an astropy.wcs.WCS, got {type(wcs).__name__}")
    if not wcs.has_celestial:
        raise ValueError("the WCS has no celestial axes (RA/DEC or GLON/GLAT); plate-solve the "
                         "frame or pass a celestial WCS")
    cel = wcs.celestial if wcs.naxis != 2 else wcs
    cel.wcs.set()  # normalises the header keywords (lng/lat indices); idempotent
    return cel


def celestial_pixel_scale(wcs):
    """Pixel scale of a celestial WCS in degrees per pixel.

    The scale is the square root of the pixel area given by the linear part
    of the WCS (``|det|`` of the pixel-scale matrix), which is the geometric
    mean of the two axis scales for any rotation.  CD matrices, PC + CDELT
    and CDELT-only headers are all handled (astropy normalises them into
    ``pixel_scale_matrix``); SIP distortion is a small correction on top of
    the linear part and is ignored here.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A WCS with celestial axes (extra axes are dropped).

    Returns
    -------
    float
        Degrees per pixel (positive).

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.cdelt = [-2 / 3600, 2 / 3600]
    >>> round(celestial_pixel_scale(w) * 3600, 6)
    2.0
    """
    cel = celestial_part(wcs)
    matrix = np.asarray(cel.pixel_scale_matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix))))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"the WCS has a singular or invalid pixel-scale matrix {matrix.tolist()}; "
                         "check CD/PC/CDELT in the header")
    return scale


def lonlat_from_world(cel, world):
    """Put the two world arrays returned by ``all_pix2world`` in (lon, lat) order."""
    if cel.wcs.lng == 1 and cel.wcs.lat == 0:
        return world[1], world[0]
    return world[0], world[1]


def _world_to_pixel(cel, lon, lat, tol):
    """``all_world2pix`` with lon/lat put in the WCS's axis order; never raises."""
    args = (lat, lon) if (cel.wcs.lng == 1 and cel.wcs.lat == 0) else (lon, lat)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        px, py = cel.all_world2pix(args[0], args[1], 0, tolerance=tol, maxiter=50, quiet=True)
    return np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)


def _same_frame(a, b):
    from astropy.wcs.utils import wcs_to_celestial_frame
    try:
        return wcs_to_celestial_frame(a).is_equivalent_frame(wcs_to_celestial_frame(b))
    except ValueError:
        return False


def transform_pixels(src_wcs, dst_wcs, x, y, *, tol=1e-6, check_roundtrip=True):
    """Map pixel positions of ``src_wcs`` to pixel positions of ``dst_wcs``.

    The full WCS is used (``all_pix2world`` then ``all_world2pix``, so SIP
    distortion is included); when the two celestial frames differ (ICRS
    vs. FK5 vs. Galactic) the sky positions are transformed with
    :mod:`astropy.coordinates`.

    Parameters
    ----------
    src_wcs, dst_wcs : astropy.wcs.WCS
    x, y : array_like
        0-based pixel coordinates in ``src_wcs`` (same shape).
    tol : float
        Convergence tolerance (pixels) of the inverse distortion.
    check_roundtrip : bool
        Map the result back and set positions that do not return to within
        0.1 px to NaN (a divergent inverse SIP far outside a frame, or a
        point behind a TAN projection).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``x``, ``y`` in ``dst_wcs`` pixels, NaN where undefined.
    """
    src = celestial_part(src_wcs)
    dst = celestial_part(dst_wcs)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    shape = x.shape
    xf, yf = x.ravel(), y.ravel()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        lon, lat = lonlat_from_world(src, src.all_pix2world(xf, yf, 0))
    if not _same_frame(src, dst):
        from astropy.coordinates import SkyCoord
        from astropy.wcs.utils import wcs_to_celestial_frame
        import astropy.units as u
        ok = np.isfinite(lon) & np.isfinite(lat)
        lon2 = np.full_like(lon, np.nan)
        lat2 = np.full_like(lat, np.nan)
        if ok.any():
            sc = SkyCoord(lon[ok] * u.deg, lat[ok] * u.deg, frame=wcs_to_celestial_frame(src))
            sc = sc.transform_to(wcs_to_celestial_frame(dst))
            sph = sc.spherical
            lon2[ok] = sph.lon.deg
            lat2[ok] = sph.lat.deg
        lon, lat = lon2, lat2
    px, py = _world_to_pixel(dst, lon, lat, tol)
    if check_roundtrip:
        back_x, back_y = transform_pixels(dst, src, px, py, tol=tol, check_roundtrip=False)
        with np.errstate(invalid="ignore"):
            bad = ~((np.abs(back_x - xf) < 0.1) & (np.abs(back_y - yf) < 0.1))
        px[bad] = np.nan
        py[bad] = np.nan
    return px.reshape(shape), py.reshape(shape)


def frame_border(frame_shape, *, step=16.0):
    """Points along the outer pixel edges of a frame.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)``.
    step : float
        Largest spacing between samples in pixels (at least 8 samples per
        side), dense enough to follow SIP distortion.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``x``, ``y`` of the border points (pixel edges at ``-0.5`` and
        ``W - 0.5`` / ``H - 0.5``).
    """
    H, W = _shape2(frame_shape)
    nx = max(8, int(np.ceil(W / step)) + 1)
    ny = max(8, int(np.ceil(H / step)) + 1)
    xs = np.linspace(-0.5, W - 0.5, nx)
    ys = np.linspace(-0.5, H - 0.5, ny)
    x = np.concatenate([xs, xs, np.full(ny, -0.5), np.full(ny, W - 0.5)])
    y = np.concatenate([np.full(nx, -0.5), np.full(nx, H - 0.5), ys, ys])
    return x, y


def _shape2(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"frame shape must be (H, W) with positive sizes, got {shape}; for "
                         "(C, H, W) or (H, W, C) cubes pass the 2-D image shape")
    return shape


@dataclass
class GlobalGrid:
    """The global pixel grid of a mosaic and its tile layout.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
        Celestial TAN WCS, north up, east left, no distortion.
    shape : tuple of int
        ``(H, W)`` of the canvas.
    tiles : list of BBox
        Overlapping tile boxes (row-major) covering the canvas.
    pixel_scale : float
        Degrees per pixel.
    info : dict
        How the grid was built (tile size, overlap, number of frames).
    """

    wcs: WCS
    shape: tuple
    tiles: list
    pixel_scale: float
    info: dict = field(default_factory=dict)

    def tile_wcs(self, index):
        """WCS of tile ``index`` (see :func:`tile_wcs`)."""
        return tile_wcs(self.wcs, self.tiles[index])


def _pixel_range(coords, eps=1e-3):
    """First and last pixel index (inclusive) reached by edge coordinates.

    Pixel ``i`` spans ``[i - 0.5, i + 0.5)``; an edge lying on a pixel
    boundary (within ``eps``) does not reach into the next pixel.
    """
    lo = int(np.floor(np.min(coords) + 0.5 + eps))
    hi = int(np.ceil(np.max(coords) - 0.5 - eps))
    return lo, max(lo, hi)


def _unit_vectors(lon, lat):
    lo, la = np.radians(lon), np.radians(lat)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def _make_tan(lon0, lat0, scale, template):
    """North-up TAN WCS centred on ``(lon0, lat0)`` in the frame of ``template``."""
    w = WCS(naxis=2)
    lng_t = template.wcs.ctype[template.wcs.lng][:4].rstrip("-")
    lat_t = template.wcs.ctype[template.wcs.lat][:4].rstrip("-")
    w.wcs.ctype = [f"{lng_t:-<4}-TAN", f"{lat_t:-<4}-TAN"]
    w.wcs.crval = [lon0, lat0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-scale, scale]
    w.wcs.cunit = ["deg", "deg"]
    if template.wcs.radesys:
        w.wcs.radesys = template.wcs.radesys
    if np.isfinite(template.wcs.equinox):
        w.wcs.equinox = template.wcs.equinox
    w.wcs.set()
    return w


def _sky_points(cel, template, x, y):
    """(lon, lat) in degrees, in the celestial frame of ``template``, of pixels of ``cel``."""
    if _same_frame(cel, template):
        with np.errstate(invalid="ignore"):
            return lonlat_from_world(cel, cel.all_pix2world(x, y, 0))
    from astropy.wcs.utils import pixel_to_skycoord, wcs_to_celestial_frame
    sc = pixel_to_skycoord(x, y, cel, origin=0, mode="all")
    sph = sc.transform_to(wcs_to_celestial_frame(template)).spherical
    return sph.lon.deg, sph.lat.deg


#: Largest ratio between a frame's pixel scale and the median of the frames' (either way).
MAX_SCALE_RATIO = 4.0


def geometry_outliers(frame_wcs_list, frame_shapes, *, max_scale_ratio=MAX_SCALE_RATIO):
    """Frames whose geometry does not fit with the others', and why.

    A frame is an outlier when its pixel scale cannot be computed or differs from the
    median scale of the frames by more than ``max_scale_ratio`` (either way), or (three
    frames or more) when its centre lies farther from the frames' median centre than 3 times
    the median such distance plus 2 frame diagonals: a frame on another part of the sky (a
    wrong plate solution, a stray file) would only stretch the canvas over empty sky.

    Parameters
    ----------
    frame_wcs_list : sequence of astropy.wcs.WCS
    frame_shapes : sequence of tuple
        ``(H, W)`` of each frame.
    max_scale_ratio : float

    Returns
    -------
    dict
        ``{frame index: reason}``; empty when every frame fits.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> def frame(ra, scale):
    ...     w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ...     w.wcs.crval = [ra, 20]; w.wcs.crpix = [50, 40]; w.wcs.cdelt = [-scale, scale]
    ...     return w
    >>> ws = [frame(10, 1e-3), frame(10.05, 1e-3), frame(10.1, 1e-3), frame(10, 1.0),
    ...       frame(200, 1e-3)]
    >>> sorted(geometry_outliers(ws, [(80, 100)] * 5))
    [3, 4]
    """
    cels = [celestial_part(w) for w in frame_wcs_list]
    shapes = [_shape2(s) for s in frame_shapes]
    out, scales = {}, np.full(len(cels), np.nan)
    for k, c in enumerate(cels):
        try:
            scales[k] = celestial_pixel_scale(c)
        except ValueError as exc:
            out[k] = str(exc)
    med = float(np.nanmedian(scales)) if np.isfinite(scales).any() else np.nan
    for k in np.flatnonzero(np.isfinite(scales)):
        ratio = max(scales[k] / med, med / scales[k])
        if ratio > max_scale_ratio:
            out[int(k)] = (f"its pixel scale {scales[k] * 3600:.4g}\"/px is {ratio:.3g}x "
                           f"{'above' if scales[k] > med else 'below'} the frames' median "
                           f"{med * 3600:.4g}\"/px")
    keep = [k for k in range(len(cels)) if k not in out]
    if len(keep) < 3:
        return out
    centres = np.array([_unit_vectors(*_sky_points(cels[k], cels[keep[0]],
                                                   np.array([(shapes[k][1] - 1) / 2.0]),
                                                   np.array([(shapes[k][0] - 1) / 2.0])))[0]
                        for k in keep])
    ok = np.isfinite(centres).all(axis=1)
    middle = np.median(centres[ok], axis=0) if ok.any() else np.array([0.0, 0.0, 1.0])
    middle /= np.linalg.norm(middle) or 1.0
    dist = np.degrees(np.arccos(np.clip(centres @ middle, -1.0, 1.0)))
    diag = np.median([scales[k] * np.hypot(*shapes[k]) for k in keep])
    typical = float(np.median(dist[ok])) if ok.any() else 0.0
    for k, d, good in zip(keep, dist, ok):
        if not good or d > 3 * typical + 2 * diag:
            out[k] = (f"it lies {d:.3g} deg from the centre of the frames, most of which lie "
                      f"within {typical:.3g} deg of it (a wrong plate solution?)" if good else
                      "its centre cannot be placed on the sky")
    return out


def canvas_limit(frame_wcs_list, frame_shapes, *, pixel_scale=None, factor=4.0):
    """Largest sensible global canvas, pixels: ``factor`` x the frames' total area on it.

    Parameters
    ----------
    frame_wcs_list : sequence of astropy.wcs.WCS
    frame_shapes : sequence of tuple
        ``(H, W)`` of each frame.
    pixel_scale : float, optional
        Degrees per pixel of the grid (default: the frames' median scale).
    factor : float

    Returns
    -------
    int

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> canvas_limit([w, w], [(80, 100), (80, 100)])
    64000
    """
    scales = np.array([celestial_pixel_scale(w) for w in frame_wcs_list])
    scale = float(np.median(scales)) if pixel_scale is None else float(pixel_scale)
    areas = [np.prod(_shape2(s)) * (k / scale) ** 2 for s, k in zip(frame_shapes, scales)]
    return int(np.ceil(factor * float(np.sum(areas))))


def build_global_grid(frame_wcs_list, frame_shapes, *, pixel_scale=None, tile_size=2048,
                      overlap=0.1, border_step=16.0, max_pixels=None):
    """Build a global TAN grid covering every frame, and its tile layout.

    The grid is north up at the median native pixel scale of the frames
    (or ``pixel_scale``), centred on the mean direction of the frame
    borders, in the celestial frame of the first WCS.  Its extent is the
    bounding box of every frame border (sampled every ``border_step``
    pixels and projected with the full, SIP-aware WCS), so the canvas
    contains every frame footprint.  This is what
    ``reproject.mosaicking.find_optimal_celestial_wcs`` does for
    ``auto_rotate=False``, with denser border sampling for distorted frames.

    Parameters
    ----------
    frame_wcs_list : sequence of astropy.wcs.WCS
        Celestial WCS of each frame.
    frame_shapes : sequence of tuple
        ``(H, W)`` of each frame.
    pixel_scale : float, optional
        Degrees per pixel of the grid; default the median native scale.
    tile_size : int or tuple of int
        Tile height and width (see :func:`photometry_graph.core.tiles.grid_layout`).
    overlap : float or int
        Tile overlap (fraction when < 1, else pixels).
    border_step : float
        Spacing of the border samples in frame pixels.
    max_pixels : int, optional
        Largest canvas accepted (see :func:`canvas_limit`); checked before the tiles are
        laid out.

    Returns
    -------
    GlobalGrid

    Raises
    ------
    ValueError
        No frames, mismatched lists, frames without a celestial WCS, or a canvas larger
        than ``max_pixels``.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.crpix = [50.5, 40.5]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> g = build_global_grid([w], [(80, 100)], tile_size=64, overlap=0.25)
    >>> len(g.tiles), g.wcs.wcs.ctype[0], 80 <= g.shape[0] <= 81, 100 <= g.shape[1] <= 101
    (4, 'RA---TAN', True, True)
    """
    wcs_list = list(frame_wcs_list)
    shapes = [_shape2(s) for s in frame_shapes]
    if not wcs_list:
        raise ValueError("no frames: build_global_grid needs at least one frame WCS")
    if len(wcs_list) != len(shapes):
        raise ValueError(f"got {len(wcs_list)} WCS but {len(shapes)} frame shapes")
    cels = [celestial_part(w) for w in wcs_list]
    scales = np.array([celestial_pixel_scale(c) for c in cels])
    scale = float(np.median(scales)) if pixel_scale is None else float(pixel_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"pixel_scale must be positive (degrees per pixel), got {pixel_scale!r}")
    template = cels[0]
    template.wcs.set()

    # Border points of every frame on the sky, in the template's frame.
    pts_lon, pts_lat = [], []
    for c, shp in zip(cels, shapes):
        lon, lat = _sky_points(c, template, *frame_border(shp, step=border_step))
        pts_lon.append(lon)
        pts_lat.append(lat)
    lon = np.concatenate(pts_lon)
    lat = np.concatenate(pts_lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    if not ok.any():
        raise ValueError("no frame border could be projected on the sky; check the frames' WCS")
    vec = _unit_vectors(lon[ok], lat[ok]).mean(axis=0)
    vec /= np.linalg.norm(vec)
    lon0 = float(np.degrees(np.arctan2(vec[1], vec[0])) % 360.0)
    lat0 = float(np.degrees(np.arcsin(np.clip(vec[2], -1, 1))))
    w = _make_tan(lon0, lat0, scale, template)
    px, py = _world_to_pixel(w, lon[ok], lat[ok], 1e-8)
    good = np.isfinite(px) & np.isfinite(py)
    if not good.all():
        grid_warning(logger, "%d frame border points could not be projected on the global "
                     "grid (field wider than a TAN projection allows?)", int((~good).sum()))
    px, py = px[good], py[good]
    # pixel index containing the extreme points; canvas from the first to the last
    x0, x1 = _pixel_range(px)
    y0, y1 = _pixel_range(py)
    W, H = x1 - x0 + 1, y1 - y0 + 1
    if max_pixels is not None and W * H > max_pixels:
        raise ValueError(f"the global canvas would be {W}x{H} px ({W * H / 1e6:.4g} Mpx), "
                         f"more than the limit of {max_pixels / 1e6:.4g} Mpx")
    w.wcs.crpix = [1.0 - x0, 1.0 - y0]
    w.wcs.set()
    w.pixel_shape = (W, H)
    tiles = grid_layout((H, W), tile_size, overlap)
    info = dict(n_frames=len(wcs_list), tile_size=tile_size, overlap=overlap,
                pixel_scale_arcsec=scale * 3600.0,
                native_scale_arcsec_range=[float(scales.min() * 3600), float(scales.max() * 3600)])
    grid_info(logger, "global grid %dx%d px at %.3f arcsec/px, %d tiles, %d frames",
              W, H, scale * 3600.0, len(tiles), len(wcs_list))
    return GlobalGrid(wcs=w, shape=(H, W), tiles=tiles, pixel_scale=scale, info=info)


def footprint_bbox(frame_wcs, frame_shape, global_wcs, canvas_shape, *, margin=2,
                   border_step=16.0):
    """Bounding box of a frame's footprint on the global grid.

    The frame border (sampled every ``border_step`` px, SIP included) is
    projected into global pixels; the box holds every global pixel touched,
    grown by ``margin`` and clamped to the canvas.

    Parameters
    ----------
    frame_wcs : astropy.wcs.WCS
    frame_shape : tuple of int
        ``(H, W)`` of the frame.
    global_wcs : astropy.wcs.WCS
    canvas_shape : tuple of int
        ``(H, W)`` of the global canvas.
    margin : int
        Extra pixels on every side.
    border_step : float
        Spacing of the border samples in frame pixels.

    Returns
    -------
    BBox or None
        ``None`` when the frame does not touch the canvas.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crval = [10, 20]; w.wcs.crpix = [1, 1]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> footprint_bbox(w, (10, 20), w, (100, 100), margin=0)
    BBox(y0=0, y1=10, x0=0, x1=20)
    """
    bx, by = frame_border(frame_shape, step=border_step)
    gx, gy = transform_pixels(frame_wcs, global_wcs, bx, by, tol=1e-6)
    good = np.isfinite(gx) & np.isfinite(gy)
    if not good.any():
        return None
    if not good.all():
        grid_debug(logger, "%d of %d border points of a frame are not on the global "
                   "projection", int((~good).sum()), good.size)
    gx, gy = gx[good], gy[good]
    (ylo, yhi), (xlo, xhi) = _pixel_range(gy), _pixel_range(gx)
    box = BBox(ylo, yhi + 1, xlo, xhi + 1)
    box = box.expand(margin).clamp(canvas_shape)
    return None if box.is_empty else box


def assign_frames_to_tiles(footprints, tiles):
    """Frames whose footprint box overlaps each tile.

    Vectorised: frames are sorted by ``x0`` once; for each tile only the
    frames that start left of the tile's right edge are tested, with numpy.

    Parameters
    ----------
    footprints : sequence of BBox or None
        One box per frame (``None`` for frames off the canvas).
    tiles : sequence of BBox

    Returns
    -------
    list of list of int
        For each tile, the (sorted) indices of the frames overlapping it.

    Examples
    --------
    >>> assign_frames_to_tiles([BBox(0, 5, 0, 5), None, BBox(4, 9, 4, 9)],
    ...                        [BBox(0, 4, 0, 4), BBox(3, 8, 3, 8)])
    [[0], [0, 2]]
    """
    idx = np.array([i for i, f in enumerate(footprints) if f is not None and not f.is_empty],
                   dtype=np.int64)
    if idx.size == 0:
        return [[] for _ in tiles]
    arr = np.array([[footprints[i].y0, footprints[i].y1, footprints[i].x0, footprints[i].x1]
                    for i in idx], dtype=np.int64)
    order = np.argsort(arr[:, 2], kind="stable")
    arr, idx = arr[order], idx[order]
    out = []
    for t in tiles:
        n = int(np.searchsorted(arr[:, 2], t.x1, side="left"))  # frames with x0 < tile.x1
        a = arr[:n]
        hit = (a[:, 3] > t.x0) & (a[:, 0] < t.y1) & (a[:, 1] > t.y0)
        out.append(sorted(idx[:n][hit].tolist()))
    return out


def _shift_sip(sip, dx, dy):
    from astropy.wcs import Sip
    crpix = np.asarray(sip.crpix, dtype=np.float64)
    return Sip(sip.a, sip.b, sip.ap, sip.bp, [crpix[0] - dx, crpix[1] - dy])


def tile_wcs(global_wcs, bbox):
    """WCS of a tile: the global WCS with CRPIX shifted by the tile origin.

    Parameters
    ----------
    global_wcs : astropy.wcs.WCS
    bbox : BBox
        The tile's box on the global grid (may extend past the canvas).

    Returns
    -------
    astropy.wcs.WCS
        A copy whose pixel (0, 0) is global pixel ``(bbox.y0, bbox.x0)``;
        ``pixel_shape`` is set to the tile's ``(W, H)``.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.crpix = [10, 20]
    >>> tile_wcs(w, BBox(5, 15, 3, 13)).wcs.crpix.tolist()
    [7.0, 15.0]
    """
    bbox = bbox if isinstance(bbox, BBox) else BBox(*bbox)
    w = global_wcs.deepcopy()
    w.wcs.crpix = [w.wcs.crpix[0] - bbox.x0, w.wcs.crpix[1] - bbox.y0]
    if w.sip is not None:
        w.sip = _shift_sip(w.sip, bbox.x0, bbox.y0)
    w.wcs.set()
    h, wd = bbox.shape
    w.pixel_shape = (wd, h)
    return w


def binned_wcs(wcs, factor):
    """WCS of a grid binned by an integer ``factor`` (no distortion allowed).

    Binned pixel ``i`` covers pixels ``factor*i .. factor*i + factor - 1``
    of the original grid, so its centre is original pixel
    ``factor*i + (factor - 1)/2``.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        A celestial WCS without SIP (e.g. :attr:`GlobalGrid.wcs`).
    factor : int

    Returns
    -------
    astropy.wcs.WCS

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> w.wcs.crpix = [1, 1]; w.wcs.cdelt = [-1e-3, 1e-3]
    >>> binned_wcs(w, 4).wcs.crpix.tolist()
    [0.625, 0.625]
    """
    b = int(factor)
    if b < 1 or b != factor:
        raise ValueError(f"bin factor must be a positive integer, got {factor!r}")
    w = celestial_part(wcs).deepcopy()
    if w.sip is not None or w.cpdis1 is not None or w.det2im1 is not None:
        raise ValueError("binned_wcs needs an undistorted WCS (the global TAN grid); "
                         "reproject distorted frames onto the global grid first")
    if b == 1:
        return w
    crpix0 = np.asarray(w.wcs.crpix, dtype=np.float64) - 1.0  # 0-based
    w.wcs.crpix = (crpix0 - (b - 1) / 2.0) / b + 1.0
    if w.wcs.has_cd():
        w.wcs.cd = np.asarray(w.wcs.cd) * b
    else:
        w.wcs.cdelt = np.asarray(w.wcs.cdelt) * b
    w.wcs.set()
    if w.pixel_shape is not None:
        w.pixel_shape = tuple(int(np.ceil(n / b)) for n in w.pixel_shape)
    return w
