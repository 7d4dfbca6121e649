"""Frame images as stored -> the package's (H, W, C) float32 with NaN where invalid.

A frame's pixels come as a mono image (H, W), a colour cube (C, H, W) or (H, W, 3), or a 2-D
colour-filter (Bayer) raw.  :func:`image_layout` tells which from the data shape and the
Bayer pattern of the header (:class:`FrameInfo` holds what is known of a frame before its
pixels are loaded), :func:`frame_pixels` turns the stored array into channels-last
float32 with every invalid pixel NaN (for photometry, saturated pixels too:
:func:`saturation_level` reads the level from the header, :func:`saturation_pileup` finds
it in the data, :func:`saturated_mask` finds the pixels), :func:`frame_noise` measures a
frame's noise (and refuses a frame without usable pixels), and :func:`majority_channels`
keeps mono and colour data from being mixed in one mosaic.
"""

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .._log import get_logger, grid_warning
from .._stats import estimate_noise
from ..stacking.bayer import BAYER_CODES, bayer_pattern, debayer
from ..core.masks import compute_valid_mask
from .options import GridModeError
from .plan import as_float

__all__ = ["LAYOUTS", "FrameInfo", "image_layout", "frame_pixels", "frame_noise",
           "majority_channels", "usable_majority", "saturation_level", "saturation_pileup",
           "saturated_mask", "bayer_as_stored", "wcs_text", "wcs_state", "wcs_from_state"]

logger = get_logger(__name__)

#: Second differences read to measure a frame's noise (bands of rows; a MAD of 2e5
#: samples is good to ~0.3 %).
NOISE_SAMPLES = 200_000

#: How a stored image's axes lie: mono (H, W), planes (C, H, W), interleaved (H, W, C),
#: 2-D colour-filter raw.
LAYOUTS = ("mono", "chw", "hwc", "bayer")


@dataclass
class FrameInfo:
    """What is known of a frame before its pixels are loaded.

    ``layout``: ``"mono"`` (H, W), ``"chw"`` (C, H, W), ``"hwc"`` (H, W, C) or ``"bayer"``
    (2-D colour-filter raw with pattern ``bayer``); ``shape`` is (H, W); ``noise`` is the
    robust noise sigma of the raw pixels (:func:`frame_noise`); ``hdu`` the index of the
    image HDU in the file ``path``, ``coverage_hdu`` an optional weight/alpha HDU;
    ``saturation`` the stored value at or above which a pixel is saturated
    (:func:`saturation_level`, :func:`saturation_pileup`), or None; ``storage`` how the
    pixels lie in the file when they can be read straight from it (any rows and columns
    alone, see :func:`photometry_graph.pipeline.frameio.read_pixels`), or None;
    ``integer_top`` the value at or above which a pixel of an integer image holds the top
    of its stored range once scaled (None for float data);
    ``wcs_digest`` a digest of the WCS header, once it is computed
    (:func:`photometry_graph.pipeline.resume.frame_source`; not an argument, and not
    carried over by :func:`dataclasses.replace`, which may change the WCS).
    """

    index: int
    path: str
    hdu: int
    shape: tuple
    layout: str
    n_channels: int
    wcs: object
    exptime: float = 1.0
    bayer: str = None
    coverage_hdu: int = None
    noise: float = float("nan")
    saturation: float = None
    storage: dict = None
    integer_top: float = None
    wcs_digest: str = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self):
        """Pickled with its WCS as header text (:func:`wcs_state`): a frame goes to a
        worker at a third of the cost of astropy's own pickle of the WCS."""
        return dict(self.__dict__, wcs=wcs_state(self.wcs))

    def __setstate__(self, state):
        self.__dict__.update(state, wcs=wcs_from_state(state["wcs"]))

    def __copy__(self):  # the same WCS object, not one rebuilt from its pickled state
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new


#: What astropy keeps in a WCS's ``__dict__`` besides its caches (``*_cache``), and how a
#: WCS read with the default arguments holds it: another value, or another attribute, is
#: something its header text does not carry (:func:`wcs_state`).
_WCS_ATTRIBUTES = {"_preserve_units": False, "naxis": None, "_naxis": None,
                   "_pixel_bounds": None,
                   "_init_kwargs": {"keysel": None, "colsel": None, "preserve_units": False}}


def wcs_text(wcs):
    """A WCS's header text: what a frame's WCS is pickled as (:func:`wcs_state`) and what
    :func:`~photometry_graph.pipeline.resume.piece_key` and
    :func:`~photometry_graph.pipeline.resume.frame_source` read of it (given in place of
    the WCS in what a piece is made from, it makes the same key)."""
    return wcs.to_header_string(relax=True)


def wcs_state(wcs):
    """What a WCS is pickled as: ``("header", text, pixel_shape)`` or the WCS itself.

    astropy pickles a WCS as a whole FITS file made in memory and read back (~1.7 ms to
    pickle, ~2.7 ms to unpickle a frame's); its header text makes the same WCS in ~0.5 +
    ~1.3 ms (:func:`wcs_from_state`).  A WCS that its header text does not say whole is
    left to its own pickle: distortion lookup tables, an alternate key, pixel bounds, a
    pixel shape of another length than its axes, arguments other than the defaults
    (``preserve_units``, ``keysel``, ``colsel``) or attributes set on it; so is anything
    but a WCS.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]; w.pixel_shape = (30, 20)
    >>> kind, text, shape = wcs_state(w)
    >>> kind, shape, wcs_from_state((kind, text, shape)).wcs.ctype[0]
    ('header', (30, 20), 'RA---TAN')
    """
    from astropy.wcs import WCS
    if type(wcs) is not WCS or not _plain_wcs(wcs):
        return wcs
    shape = None if wcs.pixel_shape is None else tuple(int(v) for v in wcs.pixel_shape)
    return "header", wcs_text(wcs), shape


def _plain_wcs(wcs):
    """Whether the header text of ``wcs`` (a ``WCS``) says all of it (:func:`wcs_state`)."""
    attributes = {k: v for k, v in vars(wcs).items() if not k.endswith("_cache")}
    if set(attributes) - set(_WCS_ATTRIBUTES) or any(
            attributes.get(k, v) != v for k, v in _WCS_ATTRIBUTES.items() if v is not None):
        return False
    shape = wcs.pixel_shape
    return (not wcs.wcs.alt.strip() and wcs.pixel_bounds is None
            and (shape is None or len(shape) == wcs.naxis)
            and all(getattr(wcs, name, None) is None
                    for name in ("cpdis1", "cpdis2", "det2im1", "det2im2")))


def wcs_from_state(state):
    """The WCS of :func:`wcs_state`'s ``state`` (a WCS or anything else: itself)."""
    if not (isinstance(state, tuple) and len(state) == 3 and state[0] == "header"):
        return state
    from astropy.wcs import WCS
    wcs = WCS(state[1], relax=True)
    wcs.pixel_shape = state[2]
    return wcs


def saturation_level(header):
    """Saturation level written in a frame's header (``SATURATE``), or None.

    Parameters
    ----------
    header : mapping
        The image HDU's FITS header.

    Returns
    -------
    float or None
        The keyword's value when it is a positive number.

    Examples
    --------
    >>> saturation_level({"SATURATE": 60000}), saturation_level({"SATURATE": "n/a"})
    (60000.0, None)
    """
    level = as_float(header.get("SATURATE"))
    return level if level is not None and level > 0 else None


def saturation_pileup(raw, *, min_pixels=4, top=None):
    """The value at which a frame's brightest pixels are clipped (star cores), or None.

    Saturated pixels all hold the same, largest value of the frame (65535, 65520 for
    12-bit data scaled to 16 bits, 1.0 for normalised data, ...), whatever the camera; in a
    frame without saturation the maximum is a lone star peak.  The maximum is taken as the
    saturation level when at least ``min_pixels`` values (any channel) equal it, or when it
    is the top of the range of the integers the frame is stored in (65535 for unsigned 16
    bits): a value there was clipped, however few pixels hold it.  A star whose core clips
    at one or two pixels lost some of its flux, and in an overlap fit its ratio, precise
    for so bright a star, would pull the gain (by up to ~1 % on a synthetic session).

    Parameters
    ----------
    raw : array_like
        The stored data, any layout (not modified); NaN ignored.
    min_pixels : int
        Fewest pixels at the maximum that make it a pile-up.
    top : float, optional
        The value at or above which a pixel holds the top of the frame's integer storage
        (:attr:`FrameInfo.integer_top`), where ``raw`` no longer says it (integers read as
        floats: 8-bit data, data with a ``BLANK`` value or a scale); default: the top of
        ``raw``'s type when it is an unsigned integer, else none.

    Returns
    -------
    float or None

    Examples
    --------
    >>> img = np.arange(100.0).reshape(10, 10)
    >>> saturation_pileup(img) is None
    True
    >>> img[4:6, 4:6] = 200.0
    >>> saturation_pileup(img)
    200.0
    >>> raw = np.full((8, 8), 900, np.uint16); raw[3, 3] = 65535
    >>> saturation_pileup(raw), saturation_pileup(raw.astype(np.float32))
    (65535.0, None)
    >>> saturation_pileup(raw.astype(np.float32), top=65535.0)
    65535.0
    """
    arr = np.asarray(raw)
    if arr.dtype.kind in "ui":  # no NaN
        peak = arr.max() if arr.size else np.nan
    else:
        with np.errstate(invalid="ignore"):
            peak = np.nanmax(arr) if arr.size and not np.isnan(arr).all() else np.nan
    if not np.isfinite(peak) or peak <= 0:
        return None
    if top is None and arr.dtype.kind == "u":
        top = np.iinfo(arr.dtype).max
    if top is not None and peak >= top:
        return float(peak)
    return float(peak) if int(np.count_nonzero(arr == peak)) >= min_pixels else None


def saturated_mask(raw, layout, level, *, grow=2):
    """Pixels at or above ``level`` in any channel of a stored frame, grown by ``grow`` px.

    Saturated star cores do not scale with the frame's gain, so they must stay out of the
    photometric fits; their neighbours (bloom, and the debayering or a blur that spreads
    them) go with them.

    Parameters
    ----------
    raw : array_like
        The stored data in ``layout`` (not modified).
    layout : str
        One of :data:`LAYOUTS`.
    level : float
        Saturation level in stored units (see :func:`saturation_level` and
        :func:`saturation_pileup`).
    grow : int
        Dilation of the saturated zone, pixels.

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)

    Examples
    --------
    >>> raw = np.zeros((7, 7), np.uint16); raw[3, 3] = 65535
    >>> m = saturated_mask(raw, "mono", 65535.0, grow=1)
    >>> int(m.sum()), bool(m[2:5, 2:5].all())
    (9, True)
    """
    arr = np.asarray(raw)
    with np.errstate(invalid="ignore"):
        hit = arr >= level - 1e-6 * abs(level)  # float rounding of scaled integers
    if layout in ("chw", "hwc"):
        hit = hit.any(axis=0 if layout == "chw" else 2)
    if grow > 0 and hit.any():
        import cv2
        k = np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)
        hit = cv2.dilate(hit.astype(np.uint8), k).astype(bool)
    return hit


def image_layout(shape, bayer=None, offsets=(0, 0)):
    """Layout, channel count and (H, W) of a stored image from its shape and Bayer pattern.

    Parameters
    ----------
    shape : tuple of int
        The data shape as numpy gives it (FITS ``NAXISn`` reversed).
    bayer : str, optional
        The header's ``BAYERPAT`` (case and blanks ignored); it makes a 2-D image a raw.
    offsets : (int, int)
        ``XBAYROFF``, ``YBAYROFF`` of a cropped raw (odd values shift the pattern).

    Returns
    -------
    layout : str
        One of :data:`LAYOUTS`.
    n_channels : int
        3 for a Bayer raw (after debayering), 1 or 3 otherwise.
    hw : tuple of int
        (H, W).
    pattern : str or None
        The raw's pattern shifted by ``offsets`` (see :func:`photometry_graph.stacking.bayer.
        bayer_pattern`); for 3-D data the normalised ``bayer`` as given (unused).

    Raises
    ------
    ValueError
        When the shape is not (H, W), (1 or 3, H, W) or (H, W, 3), or the pattern is not
        one of :data:`photometry_graph.stacking.bayer.BAYER_CODES`.

    Examples
    --------
    >>> image_layout((3, 100, 200))
    ('chw', 3, (100, 200), None)
    >>> image_layout((100, 200), "rggb", offsets=(1, 0))
    ('bayer', 3, (100, 200), 'GRBG')
    """
    shape = tuple(int(n) for n in shape)
    bayer = str(bayer or "").strip().upper() or None
    if len(shape) == 2:
        if bayer is None:
            return "mono", 1, shape, None
        if bayer not in BAYER_CODES:
            raise ValueError(f"its Bayer pattern {bayer!r} is not one of "
                             f"{', '.join(BAYER_CODES)}")
        return "bayer", 3, shape, bayer_pattern(bayer, *offsets)
    if len(shape) == 3 and shape[0] in (1, 3):
        return "chw", shape[0], shape[1:], bayer
    if len(shape) == 3 and shape[2] == 3:
        return "hwc", 3, shape[:2], bayer
    raise ValueError(f"its data shape {shape} is not (H, W), (3, H, W) or (H, W, 3)")


def bayer_as_stored(raw, mask_eps):
    """Whether :func:`frame_pixels` debayers these Bayer values as stored: integers within
    0-65535 (empty sites are 0).  Any crop of such a raw then gives the pixels of the whole
    frame; floats are debayered through a scaling of their own range (:func:`debayer`).

    Examples
    --------
    >>> raw = np.zeros((2, 2), np.uint16)
    >>> bayer_as_stored(raw, 1e-6), bayer_as_stored(raw.astype(np.float32), 1e-6)
    (True, False)
    """
    raw = np.asarray(raw)
    return bool(raw.dtype.kind in "ui" and 0 <= mask_eps < 1 and raw.min() >= 0
                and raw.max() <= 65535)


def frame_pixels(raw, layout, bayer=None, *, weight=None, mask_eps=1e-6, erode=1,
                 saturation=None):
    """A stored frame as (H, W, C) float32, NaN where invalid, and its pixel weights.

    Invalid: non-finite, ``|x| <= mask_eps`` in every channel (empty borders; for Bayer raws
    per raw site, so that they cannot leak into their neighbours), or zero ``weight``; the
    valid zone is eroded by ``erode`` pixels (debayering already grows invalid zones by one,
    so raws are eroded by one pixel less).  With ``saturation``, saturated pixels and their
    neighbours (:func:`saturated_mask`) are invalid too: for photometry, not for images.

    Parameters
    ----------
    raw : array_like
        The stored data in ``layout`` (not modified).
    layout : str
        One of :data:`LAYOUTS` (see :func:`image_layout`).
    bayer : str, optional
        Pattern of a ``"bayer"`` raw.
    weight : array_like, shape (H, W), optional
        Coverage or alpha of the frame; 0 (or NaN) = no data.
    mask_eps : float
    erode : int
    saturation : float, optional
        Saturation level in stored units; None = no saturation masking.

    Returns
    -------
    data : numpy.ndarray, shape (H, W, C), float32
    weight : numpy.ndarray, shape (H, W), float32, or None
        ``weight`` with invalid pixels 0, or None when none was given.

    Examples
    --------
    >>> raw = np.ones((2, 4, 5), np.float32); raw[:, 0, 0] = 0.0
    >>> data, _ = frame_pixels(raw, "chw", erode=0)
    >>> data.shape, bool(np.isnan(data[0, 0]).all()), float(data[1, 1, 1])
    ((4, 5, 2), True, 1.0)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown image layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    saturated = None if saturation is None else saturated_mask(raw, layout, saturation)
    raw = np.asarray(raw)
    integers = raw.dtype.kind in "ui" and 0 <= mask_eps < 1  # no NaN; empty means 0
    if layout == "bayer" and bayer_as_stored(raw, mask_eps):
        # debayered as stored (exactly as debayer() does with integer data, without its
        # float64 round trip); empty sites spoil their 3x3 neighbourhood as there
        data = cv2.cvtColor(raw.astype(np.uint16, copy=False),
                            BAYER_CODES[bayer_pattern(bayer)]).astype(np.float32)
        empty = raw == 0
        if empty.any():
            data[cv2.dilate(empty.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = np.nan
        erode = max(0, erode - 1)
    elif layout == "bayer":
        raw = np.array(raw, dtype=np.float32)
        with np.errstate(invalid="ignore"):
            raw[np.abs(raw) <= mask_eps] = np.nan
        data, erode = debayer(raw, bayer), max(0, erode - 1)
    else:
        arr = raw.astype(np.float32)
        data = {"chw": lambda: np.ascontiguousarray(np.moveaxis(arr, 0, -1)),
                "hwc": lambda: arr, "mono": lambda: arr[:, :, None]}[layout]()
    if integers and layout != "bayer" and weight is None \
            and np.count_nonzero(raw) == raw.size:  # the common case: nothing empty
        if saturated is not None:  # (the erosion of a mask without a hole changes nothing)
            data[saturated] = np.nan
        return data, None
    valid = compute_valid_mask(data, eps=mask_eps, coverage=weight, erode=erode)
    if saturated is not None:
        valid &= ~saturated
    data[~valid] = np.nan
    if weight is not None:
        weight = np.where(valid, np.nan_to_num(weight, nan=0.0), 0.0).astype(np.float32)
    return data, weight


def frame_noise(raw, layout, *, mask_eps=1e-6):
    """Robust noise sigma of a stored frame (median over channels); refuse an empty frame.

    One colour of a Bayer raw is measured (neighbours of different colours differ by more
    than the noise).

    Parameters
    ----------
    raw : array_like
        The stored data in ``layout`` (not modified).
    layout : str
        One of :data:`LAYOUTS`.
    mask_eps : float
        ``|x| <= mask_eps`` in every channel is empty.

    Returns
    -------
    float
        NaN when no channel's noise can be measured.

    Raises
    ------
    ValueError
        When fewer than 0.1 % of the pixels are valid (all NaN or zero).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(frame_noise(rng.normal(100, 2, (200, 200)), "mono"), 1)
    2.0
    """
    stored = np.asarray(raw)
    view = {"chw": lambda a: np.moveaxis(a, 0, -1),
            "bayer": lambda a: a[::2, ::2]}.get(layout, lambda a: a)
    if stored.dtype.kind in "ui" and 0 <= mask_eps < 1:  # empty means 0, no NaN
        # counts of up to 16 bits, exact in float32: the noise converts only the rows it
        # reads (~10 % of them); wider ones are converted here, as float32, first
        arr = view(stored if stored.dtype.itemsize <= 2 else stored.astype(np.float32))
        valid = arr != 0
        valid = valid.any(axis=2) if valid.ndim == 3 else valid
    else:
        arr = view(np.asarray(stored, dtype=np.float32))
        valid = compute_valid_mask(arr, eps=mask_eps)
    if np.count_nonzero(valid) < 1e-3 * valid.size:
        raise ValueError("it holds no usable pixel (all NaN or zero)")
    # bands of rows giving ~2e5 differences: the sample the whole image was thinned to
    sigma = estimate_noise(arr, valid, max_samples=NOISE_SAMPLES)
    return float(np.median(sigma[np.isfinite(sigma)])) if np.isfinite(sigma).any() \
        else math.nan


def majority_channels(items, channels, name, kind):
    """Items with the most common channel count (ties: more channels); the others are warned.

    Mono and colour data are not mixed in one mosaic.

    Parameters
    ----------
    items : list
    channels : callable
        ``channels(item)`` -> channel count.
    name : callable
        ``name(item)`` -> what the warning calls the item (a path).
    kind : str
        What the items are, for the warning ("frames", "tiles").

    Returns
    -------
    list
        The items kept, in their order.

    Examples
    --------
    >>> majority_channels([1, 3, 3], lambda c: c, str, "frames")
    [3, 3]
    """
    counts = {c: sum(channels(i) == c for i in items) for c in {channels(i) for i in items}}
    keep = max(counts, key=lambda c: (counts[c], c)) if counts else None
    for item in items:
        if channels(item) != keep:
            grid_warning(logger, "skipping %s: %d channel(s) while most %s have %d (mono and "
                         "colour are not mixed in one mosaic)", name(item), channels(item),
                         kind, keep)
    return [i for i in items if channels(i) == keep]


def usable_majority(items, channels, name, kind, listed):
    """The usable items of a run's input, renumbered: :func:`majority_channels`, then ``index``.

    Parameters
    ----------
    items : list
        What could be read (the rest was skipped with a warning); each has an ``index``.
    channels, name : callable
        As for :func:`majority_channels`.
    kind : str
        Plural noun of the items ("frames", "panels").
    listed : int
        How many there were to read, for the error.

    Returns
    -------
    list
        The items kept, ``index`` set to 0, 1, ... in their order.

    Raises
    ------
    GridModeError
        When no item is left.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> [i.index for i in usable_majority([NS(index=4, c=1)], lambda i: i.c, str, "frames", 3)]
    [0]
    """
    items = majority_channels(items, channels, name, kind)
    if not items:
        raise GridModeError(f"no usable {kind[:-1]} left: {listed} listed, all skipped (see "
                            "the warnings above)")
    for k, item in enumerate(items):
        item.index = k
    return items
