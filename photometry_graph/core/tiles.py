"""Tiles on one global pixel grid: bounding boxes and the tile object.

Every node of an overlap graph (a stacked tile, or a single reprojected frame)
is an image placed on one global pixel grid by an integer bounding box.  The
bounding box may extend past the canvas; :meth:`BBox.clamp` and
:meth:`BBox.slices_in` give the parts that are inside and where they sit in the
node's own array.
"""

from dataclasses import dataclass

import numpy as np

from .masks import as_channels_last, compute_valid_mask

__all__ = ["BBox", "TilePhotometryInfo", "common_channels", "grid_layout"]


@dataclass(frozen=True, order=True)
class BBox:
    """Half-open integer box ``[y0, y1) x [x0, x1)`` on the global pixel grid.

    Examples
    --------
    >>> a = BBox(0, 10, 0, 10); b = BBox(5, 20, 8, 12)
    >>> a.intersection(b)
    BBox(y0=5, y1=10, x0=8, x1=10)
    >>> a.intersection(b).slices_in(b)
    (slice(0, 5, None), slice(0, 2, None))
    """

    y0: int
    y1: int
    x0: int
    x1: int

    def __post_init__(self):
        for name in ("y0", "y1", "x0", "x1"):
            value = getattr(self, name)
            if int(value) != value:
                raise TypeError(f"BBox.{name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def shape(self):
        """``(height, width)``, zero for empty boxes."""
        return (max(0, self.y1 - self.y0), max(0, self.x1 - self.x0))

    @property
    def area(self):
        """Number of pixels in the box."""
        h, w = self.shape
        return h * w

    @property
    def is_empty(self):
        """True when the box holds no pixel."""
        return self.area == 0

    @property
    def center(self):
        """``(yc, xc)`` centre in global pixel coordinates (pixel centres at integers)."""
        return ((self.y0 + self.y1 - 1) / 2.0, (self.x0 + self.x1 - 1) / 2.0)

    def intersection(self, other):
        """Return the overlap with ``other`` (possibly empty)."""
        y0, y1 = max(self.y0, other.y0), min(self.y1, other.y1)
        x0, x1 = max(self.x0, other.x0), min(self.x1, other.x1)
        return BBox(y0, max(y0, y1), x0, max(x0, x1))

    def overlaps(self, other):
        """True when the two boxes share at least one pixel."""
        return not self.intersection(other).is_empty

    def union(self, other):
        """Smallest box holding both boxes."""
        return BBox(min(self.y0, other.y0), max(self.y1, other.y1),
                    min(self.x0, other.x0), max(self.x1, other.x1))

    def clamp(self, canvas_shape):
        """Clip the box to a canvas of shape ``(H, W)`` starting at (0, 0)."""
        return self.intersection(BBox(0, int(canvas_shape[0]), 0, int(canvas_shape[1])))

    def expand(self, margin):
        """Grow the box by ``margin`` pixels on every side (no clamping)."""
        m = int(margin)
        return BBox(self.y0 - m, self.y1 + m, self.x0 - m, self.x1 + m)

    def slices_in(self, container):
        """Slices that select this box inside the array of box ``container``.

        Raises
        ------
        ValueError
            If this box is not inside ``container``.
        """
        if not (container.y0 <= self.y0 and self.y1 <= container.y1
                and container.x0 <= self.x0 and self.x1 <= container.x1):
            raise ValueError(f"{self} is not inside {container}; intersect the boxes first")
        return (slice(self.y0 - container.y0, self.y1 - container.y0),
                slice(self.x0 - container.x0, self.x1 - container.x0))

    def coordinates(self):
        """Global pixel coordinate grids ``(yy, xx)`` of the box, float64."""
        yy, xx = np.mgrid[self.y0:self.y1, self.x0:self.x1]
        return yy.astype(np.float64), xx.astype(np.float64)


class TilePhotometryInfo:
    """One node of an overlap graph: an image with a mask on the global grid.

    Parameters
    ----------
    tile_id : int
        Identifier, unique within a graph.
    bbox : BBox or tuple
        ``(y0, y1, x0, x1)``: where the array sits on the global pixel grid;
        its shape must equal the array's ``(H, W)``.
    data : array_like or callable, optional
        ``(H, W)`` or ``(H, W, C)`` array (a ``numpy.memmap`` or a FITS
        memmap works), or a zero-argument callable returning one, so that
        tiles can be loaded lazily.  Never modified.
    mask : numpy.ndarray of bool, shape (H, W), or callable, optional
        Valid-pixel mask; computed with :func:`compute_valid_mask` from
        ``data`` and ``coverage`` on first use when omitted.  A zero-argument
        callable returning it is called whenever the mask is used (nothing
        kept: a node whose data and mask live on disk).
    coverage : array_like, shape (H, W), optional
        Frames (or weight) per pixel.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the tile, carried along for outputs.
    meta : dict, optional
        Free-form metadata (file name, frame count, ...).
    mask_eps, mask_erode : float, int
        Passed to :func:`compute_valid_mask` when the mask is computed here.
    n_channels : int, optional
        Channel count, for lazily loaded data whose count is known from a header; else it
        is taken from ``data`` (its shape, without reading pixels, when it has one).

    Examples
    --------
    >>> import numpy as np
    >>> t = TilePhotometryInfo(1, BBox(0, 4, 0, 4), data=np.ones((4, 4)))
    >>> t.n_channels, int(t.mask.sum())
    (1, 16)
    """

    def __init__(self, tile_id, bbox, data=None, mask=None, coverage=None, wcs=None,
                 meta=None, *, mask_eps=1e-6, mask_erode=0, n_channels=None):
        self.tile_id = tile_id
        self.bbox = bbox if isinstance(bbox, BBox) else BBox(*bbox)
        if self.bbox.is_empty:
            raise ValueError(f"tile {tile_id} has an empty bounding box {self.bbox}")
        self.data = data
        self.coverage = coverage
        self.wcs = wcs
        self.meta = dict(meta or {})
        self.mask_eps = mask_eps
        self.mask_erode = mask_erode
        self._mask = None
        self._n_channels = None if n_channels is None else int(n_channels)
        if mask is not None:
            self.mask = mask

    def __repr__(self):
        return f"TilePhotometryInfo(tile_id={self.tile_id!r}, bbox={self.bbox!r})"

    def pixels_only(self):
        """This node with only what :meth:`read` needs: its data and mask (lazy ones stay
        lazy; a mask to compute is computed here, once), without its WCS, coverage and
        metadata -- light to send to another process.

        Examples
        --------
        >>> import numpy as np
        >>> t = TilePhotometryInfo(1, BBox(0, 2, 0, 2), data=np.ones((2, 2)), meta={"a": 1})
        >>> p = t.pixels_only()
        >>> p.meta, p.wcs, bool(p.mask.all()), p.read(BBox(0, 1, 0, 2))[0].shape
        ({}, None, True, (1, 2, 1))
        """
        mask = self._mask if self._mask is not None else self.mask
        return TilePhotometryInfo(self.tile_id, self.bbox, data=self.data, mask=mask,
                                  n_channels=self._n_channels)

    def cropped(self, region):
        """This node inside ``region`` only, with what :meth:`read` needs: data and mask in
        memory cut (views), lazy ones as readers of that crop alone (nothing read here, but
        for a mask still to be computed from lazy data) -- what another process needs of it
        to fit one overlap.

        Examples
        --------
        >>> import numpy as np
        >>> t = TilePhotometryInfo(1, BBox(0, 4, 0, 4), data=lambda: np.arange(16.0).reshape(4, 4))
        >>> c = t.cropped(BBox(1, 3, 2, 4))
        >>> c.bbox, c.mask.shape, c.get_data()[..., 0].tolist()
        (BBox(y0=1, y1=3, x0=2, x1=4), (2, 2), [[6.0, 7.0], [10.0, 11.0]])
        """
        sl = region.slices_in(self.bbox)
        data = _CropReader(self.data, sl) if callable(self.data) else self.get_data()[sl]
        mask = self._mask if self._mask is not None else self.mask
        mask = _CropReader(mask, sl) if callable(mask) else mask[sl]
        return TilePhotometryInfo(self.tile_id, region, data=data, mask=mask,
                                  n_channels=self._n_channels)

    def _check_shape(self, shape, what):
        if tuple(shape) != self.bbox.shape:
            raise ValueError(
                f"tile {self.tile_id}: {what} shape {tuple(shape)} does not match its "
                f"bounding box shape {self.bbox.shape}"
            )

    def get_data(self):
        """Return the image as a channels-last ``(H, W, C)`` array (lazy load)."""
        if self.data is None:
            raise ValueError(f"tile {self.tile_id} has no data")
        arr = self.data() if callable(self.data) else self.data
        arr = as_channels_last(arr)
        self._check_shape(arr.shape[:2], "data")
        return arr

    @property
    def n_channels(self):
        """Number of channels of the image, read from the pixels only when nothing else tells.

        Raises
        ------
        Exception
            Whatever loading lazily given data raises when the count is not known otherwise.
        """
        if self._n_channels is None:
            data = self.data if isinstance(self.data, np.ndarray) else self.get_data()
            self._n_channels = as_channels_last(data).shape[2]
        return self._n_channels

    @property
    def mask(self):
        """Valid-pixel mask ``(H, W)``, computed from the data on first use."""
        if self._mask is None:
            self._mask = compute_valid_mask(self.get_data(), eps=self.mask_eps,
                                            coverage=self.coverage, erode=self.mask_erode)
        if callable(self._mask):
            value = np.asarray(self._mask(), dtype=bool)
            self._check_shape(value.shape, "mask")
            return value
        return self._mask

    @mask.setter
    def mask(self, value):
        if callable(value):
            self._mask = value
            return
        value = np.asarray(value, dtype=bool)
        self._check_shape(value.shape, "mask")
        self._mask = value

    def overlaps(self, other):
        """True when the bounding boxes of two tiles share a pixel."""
        return self.bbox.overlaps(other.bbox)

    def read(self, region):
        """Data and mask inside ``region`` (a box of global coordinates).

        Parameters
        ----------
        region : BBox
            Must lie inside the tile's bounding box.

        Returns
        -------
        data : numpy.ndarray, shape (h, w, C)
            A view (or memmap slice) of the tile; do not modify it.
        mask : numpy.ndarray of bool, shape (h, w)
        """
        sl = region.slices_in(self.bbox)
        return self.get_data()[sl], self.mask[sl]


class _CropReader:
    """Zero-argument reader of the crop ``slices`` (rows, columns) of what ``load()``
    returns, lazy data or a lazy mask (picklable when ``load`` is)."""

    def __init__(self, load, slices):
        self.load, self.slices = load, slices

    def __call__(self):
        return self.load()[self.slices]


def common_channels(tiles, default=1):
    """Channel count of the first tile whose count can be known (``default`` when none).

    A lazily loaded tile that cannot be read is passed over: whoever needs its pixels
    reports it.

    Examples
    --------
    >>> common_channels([TilePhotometryInfo(1, BBox(0, 2, 0, 2), data=np.ones((2, 2, 3)))])
    3
    """
    for t in tiles:
        try:
            return int(t.n_channels)
        except Exception:  # noqa: BLE001 - an unreadable tile: try the next one
            continue
    return default


def _axis_spans(length, size, ov):
    """``(start, stop)`` of ``n`` equal spans of at most ``size`` covering ``[0, length)``."""
    if length <= size:
        return [(0, length)]
    n = -(-(length - ov) // (size - ov))  # fewest spans that keep the overlap
    span = -(-(length + (n - 1) * ov) // n)  # <= size
    step = (length - span) / (n - 1)
    return [(int(round(i * step)), int(round(i * step)) + span) for i in range(n)]


def grid_layout(canvas_shape, tile_size, overlap):
    """Cut a canvas into a grid of overlapping tile boxes.

    Parameters
    ----------
    canvas_shape : tuple of int
        ``(H, W)`` of the global grid.
    tile_size : int or tuple of int
        Largest tile height and width in pixels.
    overlap : float or int
        Smallest overlap between neighbours: a fraction of the tile size
        when < 1, otherwise a number of pixels.

    Returns
    -------
    list of BBox
        Row-major tile boxes covering the whole canvas and never leaving it.
        Along each axis the fewest tiles that keep the overlap are used, all
        of one size (at most ``tile_size``) and evenly spaced, so that no
        tile is mostly overlap and no work is spent outside the canvas.

    Examples
    --------
    >>> [(b.x0, b.x1) for b in grid_layout((100, 250), 100, 0.2)]
    [(0, 97), (76, 173), (153, 250)]
    >>> grid_layout((50, 60), 100, 0.2)[0].shape
    (50, 60)
    """
    th, tw = (tile_size, tile_size) if np.isscalar(tile_size) else tile_size
    th, tw = int(th), int(tw)
    if th <= 0 or tw <= 0:
        raise ValueError(f"tile size must be positive, got {tile_size!r}")
    ov_y = int(round(overlap * th)) if overlap < 1 else int(overlap)
    ov_x = int(round(overlap * tw)) if overlap < 1 else int(overlap)
    if ov_y >= th or ov_x >= tw or min(ov_x, ov_y) < 0:
        raise ValueError(f"overlap {overlap!r} must be smaller than the tile size {tile_size!r}")
    H, W = int(canvas_shape[0]), int(canvas_shape[1])
    return [BBox(y0, y1, x0, x1) for y0, y1 in _axis_spans(H, th, ov_y)
            for x0, x1 in _axis_spans(W, tw, ov_x)]
