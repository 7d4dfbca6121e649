"""Synthetic tile surveys: a grid of overlapping observed tiles with injected gains,
offsets, gradients, empty zones and outliers, and the corrections they imply.
"""

from dataclasses import dataclass, field

import numpy as np

from ..core.tiles import BBox, TilePhotometryInfo, grid_layout
from .sky import SkyModel, add_trail, draw_empty_zones, make_sky

__all__ = ["SyntheticSurvey", "expected_corrections", "make_survey"]


@dataclass
class SyntheticSurvey:
    """A grid of overlapping observed tiles with their injected truth.

    Attributes
    ----------
    tiles : list of TilePhotometryInfo
        Observed tiles (``tile_id`` = position in the list); data float32
        ``(h, w)`` for mono or ``(h, w, C)`` for RGB; masks are the true
        valid-pixel masks.
    sky : SkyModel
    truth : numpy.ndarray, shape (H, W, C)
        Noise-free sky on the canvas (what a perfect mosaic shows).
    gains, offsets : numpy.ndarray, shape (n_tiles, C)
        Injected multiplicative and additive errors (offset at tile centre).
    slopes : numpy.ndarray, shape (n_tiles, C, 2)
        Injected planar gradients, ``(d/dx, d/dy)`` per pixel.
    noise_sigma : float
    canvas_shape : tuple of int
    outlier_tile : int or None
        Tile that received the outlier (trail or misregistration).
    info : dict
        Parameters used.
    """

    tiles: list
    sky: SkyModel
    truth: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    slopes: np.ndarray
    noise_sigma: float
    canvas_shape: tuple
    outlier_tile: object = None
    info: dict = field(default_factory=dict)

    @property
    def n_channels(self):
        """Number of channels."""
        return self.truth.shape[2]

    def expected_corrections(self, reference, origin=(0.0, 0.0), *,
                             gradient_gauge="reference"):
        """Corrections that map every tile onto the reference tile's photometry.

        See :func:`expected_corrections`.
        """
        centres = np.array([t.bbox.center[::-1] for t in self.tiles])  # (x, y)
        return expected_corrections(self.gains, self.offsets, self.slopes, centres,
                                    reference, origin=origin, gradient_gauge=gradient_gauge)


def expected_corrections(gains, offsets, slopes, centres, reference, origin=(0.0, 0.0), *,
                         gradient_gauge="reference"):
    """Exact corrections implied by injected errors, relative to a reference.

    With ``observed_k = G_k sky + O_k + P_k . (r - c_k)`` the corrected node
    ``g_k observed_k + o_k + p_k . (r - origin)`` equals the (noise-free)
    reference node everywhere when::

        g_k = G_ref / G_k
        p_k = P_ref - g_k P_k
        o_k = O_ref - P_ref . (c_ref - origin) - g_k O_k + g_k P_k . (c_k - origin)

    Parameters
    ----------
    gains, offsets : numpy.ndarray, shape (n, C)
    slopes : numpy.ndarray, shape (n, C, 2)
        ``(d/dx, d/dy)``.
    centres : numpy.ndarray, shape (n, 2)
        Node centres ``(x, y)`` in global pixels.
    reference : int
        Index of the reference node.
    origin : tuple of float
        ``(x, y)`` origin of the plane term of the corrections.
    gradient_gauge : {"reference", "mean"}
        ``"mean"``: one plane ``q . (r - c_ref)`` added to every correction so that the
        slopes have zero mean over the nodes, as the global solve's default gauge does
        (gains, and the reference's offset at its centre, unchanged).

    Returns
    -------
    dict
        ``gain`` (n, C), ``offset`` (n, C) and ``slope`` (n, C, 2).
    """
    gains = np.asarray(gains, float)
    offsets = np.asarray(offsets, float)
    slopes = np.asarray(slopes, float)
    c = np.asarray(centres, float) - np.asarray(origin, float)  # (n, 2)
    g = gains[reference] / gains
    p = slopes[reference][np.newaxis] - g[..., np.newaxis] * slopes
    ref_term = (slopes[reference] * c[reference]).sum(axis=-1)  # (C,)
    own_term = (slopes * c[:, np.newaxis, :]).sum(axis=-1)  # (n, C)
    o = offsets[reference] - ref_term - g * offsets + g * own_term
    if gradient_gauge == "mean":
        q = -p.mean(axis=0)                                            # (C, 2)
        p = p + q
        o = o - (q * c[reference][np.newaxis, :]).sum(axis=-1)
    elif gradient_gauge != "reference":
        raise ValueError(f"gradient_gauge must be 'reference' or 'mean', got "
                         f"{gradient_gauge!r}")
    return {"gain": g, "offset": o, "slope": p}


def make_survey(rows=3, cols=3, tile_size=256, overlap=0.2, channels=1, *, rng=None,
                gain_range=(0.85, 1.18), offset_range=30.0, gradient=0.0,
                noise_sigma=1.0, sky_level=20.0, star_density=5e-4, fwhm=3.0,
                nebulae=3, nebula_amplitude=(5.0, 40.0), nebula_fill_tile=None,
                empty_zones=False, empty_value=0.0, outlier=None, outlier_tile=None,
                misregistration=(3, 4), add_noise=True, dtype=np.float32,
                star_peak_range=(3.0, 300.0)):
    """Make a grid of overlapping observed tiles with injected photometric errors.

    Parameters
    ----------
    rows, cols : int
        Grid size.
    tile_size : int
        Tile height and width in pixels.
    overlap : float
        Overlap between neighbours as a fraction of ``tile_size``.
    channels : int
        1 (mono) or 3 (RGB, with independent per-channel gains: a colour
        cast per tile).
    rng : numpy.random.Generator or int, optional
    gain_range : tuple of float
        Injected gains are uniform in this range.
    offset_range : float
        Injected offsets are uniform in ``[-offset_range, offset_range]``
        times ``noise_sigma``.
    gradient : float
        Peak-to-peak amplitude (in ``noise_sigma``) of the planar gradient
        injected in each tile, over the tile; 0 for none.
    noise_sigma : float
        Gaussian noise per pixel.
    sky_level, star_density, fwhm, nebulae, nebula_amplitude, star_peak_range
        Passed to :func:`make_sky`.
    nebula_fill_tile : int, optional
        Add a bright extended source that fills this tile (a nebula that
        raises the tile's median well above the others).
    empty_zones : bool
        Give about a third of the tiles (at least one) an empty border strip
        and an empty round blob.
    empty_value : float
        Value of empty pixels: 0.0 (reprojection fill) or ``numpy.nan``.
    outlier : {None, "trail", "misregistered"}
        Add a satellite trail to one tile, or misregister one tile by
        ``misregistration`` pixels ``(dy, dx)``.
    outlier_tile : int, optional
        Tile index for the outlier (default: a random interior-ish tile).
    misregistration : tuple of int
    add_noise : bool
        Add the Gaussian noise (switch off to check the photometric model
        exactly; ``noise_sigma`` stays the unit of the other levels).
    dtype : numpy dtype
        Data type of the tiles.

    Returns
    -------
    SyntheticSurvey

    Examples
    --------
    >>> s = make_survey(2, 2, tile_size=64, rng=1)
    >>> len(s.tiles), s.tiles[0].get_data().shape
    (4, (64, 64, 1))
    """
    rng = np.random.default_rng(rng)
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows}x{cols}")
    step = tile_size - int(round(overlap * tile_size))
    canvas = ((rows - 1) * step + tile_size, (cols - 1) * step + tile_size)
    boxes = grid_layout(canvas, tile_size, overlap)
    n = len(boxes)
    sky = make_sky(canvas, channels, rng=rng, star_density=star_density, fwhm=fwhm,
                   nebulae=nebulae, nebula_amplitude=nebula_amplitude, sky_level=sky_level,
                   noise_sigma=noise_sigma, star_peak_range=star_peak_range)
    if nebula_fill_tile is not None:
        yc, xc = boxes[nebula_fill_tile].center
        color = sky.blob_color[:1] if len(sky.blob_color) else np.ones((1, channels))
        extra = np.array([[xc, yc, 0.45 * tile_size, 0.4 * tile_size, 0.3,
                           60.0 * noise_sigma]])
        sky.blobs = np.vstack([sky.blobs, extra])
        sky.blob_color = np.vstack([sky.blob_color, color])
    truth = sky.render(BBox(0, canvas[0], 0, canvas[1]))

    gains = rng.uniform(gain_range[0], gain_range[1], (n, channels))
    offsets = rng.uniform(-offset_range, offset_range, (n, channels)) * noise_sigma
    slopes = np.zeros((n, channels, 2))
    if gradient:
        direction = rng.uniform(0, 2 * np.pi, (n, channels))
        # peak to peak over a tile of a plane s.(r - c) is |sx| w + |sy| h
        unit = np.stack([np.cos(direction), np.sin(direction)], axis=-1)
        extent = np.abs(unit[..., 0]) * tile_size + np.abs(unit[..., 1]) * tile_size
        slopes = unit * (gradient * noise_sigma / extent)[..., np.newaxis]

    if outlier not in (None, "trail", "misregistered"):
        raise ValueError(f"outlier must be None, 'trail' or 'misregistered', got {outlier!r}")
    if outlier is not None and outlier_tile is None:
        outlier_tile = int(rng.integers(n))

    zone_tiles = set()
    if empty_zones:
        k = max(1, n // 3)
        zone_tiles = set(rng.choice(n, size=k, replace=False).tolist())

    tiles = []
    for k, box in enumerate(boxes):
        if outlier == "misregistered" and k == outlier_tile:
            dy, dx = misregistration
            clean = sky.render(BBox(box.y0 + dy, box.y1 + dy, box.x0 + dx, box.x1 + dx))
        else:
            clean = truth[box.slices_in(BBox(0, canvas[0], 0, canvas[1]))]
        yy, xx = box.coordinates()
        yc, xc = box.center
        plane = (slopes[k, :, 0] * (xx - xc)[..., np.newaxis]
                 + slopes[k, :, 1] * (yy - yc)[..., np.newaxis])
        img = gains[k] * clean + offsets[k] + plane
        if add_noise:
            img += rng.normal(0.0, noise_sigma, img.shape)
        if outlier == "trail" and k == outlier_tile:
            add_trail(img, rng, 50.0 * noise_sigma)
        valid = np.ones(box.shape, dtype=bool)
        if k in zone_tiles:
            zone = draw_empty_zones(*box.shape, rng)
            img[zone] = empty_value
            valid &= ~zone
        data = img.astype(dtype)
        if channels == 1:
            data = data[..., 0]
        tiles.append(TilePhotometryInfo(k, box, data=data, mask=valid,
                                        meta={"row": k // len(set(b.x0 for b in boxes)),
                                              "col": k % len(set(b.x0 for b in boxes))}))
    info = dict(rows=rows, cols=cols, tile_size=tile_size, overlap=overlap, channels=channels,
                gradient=gradient, empty_zones=sorted(zone_tiles), outlier=outlier,
                nebula_fill_tile=nebula_fill_tile)
    return SyntheticSurvey(tiles=tiles, sky=sky, truth=truth, gains=gains, offsets=offsets,
                           slopes=slopes, noise_sigma=float(noise_sigma), canvas_shape=canvas,
                           outlier_tile=outlier_tile, info=info)
