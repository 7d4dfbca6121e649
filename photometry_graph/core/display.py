"""Display stretches of images: one asinh stretch with shared limits for several images.

The stretch maps chosen percentiles of the finite pixels to 0 and 1 per channel and
brightens faint levels with an ``arcsinh``; it is used by the PNG previews of the pipeline
and by the diagnostics plots, so that both show a mosaic the same way.  :func:`eight_bit`
and :func:`png_bytes` turn a stretched image into the bytes of a PNG for both.
"""

import numpy as np

from .masks import as_channels_last

__all__ = ["asinh_stretch", "eight_bit", "png_bytes"]


def asinh_stretch(images, *, low_pct=0.5, high_pct=99.8, stretch=12.0, reference=None,
                  limits=None):
    """Apply one asinh stretch to several images (same limits for all).

    Parameters
    ----------
    images : sequence of array_like, shape (H, W) or (H, W, C)
        Images on comparable scales (e.g. a mosaic before and after).
    low_pct, high_pct : float
        Percentiles of the finite pixels mapped to 0 and 1 (per channel).
    stretch : float
        Strength of the asinh (larger brightens faint levels).
    reference : int, optional
        Take the percentiles from this image only (default: pooled over all).
    limits : array_like, shape (C, 2), optional
        ``(low, high)`` per channel to use instead of percentiles (e.g. the limits an
        earlier call returned, to stretch the blocks of a large image alike).

    Returns
    -------
    stretched : list of numpy.ndarray
        Float arrays in [0, 1], ``(H, W)`` for one channel else ``(H, W, C)``;
        NaN where the input is not finite.
    limits : numpy.ndarray, shape (C, 2)
        ``(low, high)`` per channel.

    Examples
    --------
    >>> out, lim = asinh_stretch([np.arange(10.0).reshape(2, 5)], low_pct=0, high_pct=100)
    >>> float(out[0][0, 0]), float(out[0][1, 4]), lim.tolist()
    (0.0, 1.0, [[0.0, 9.0]])
    """
    arrs = [as_channels_last(np.asarray(im, dtype=np.float64)) for im in images]
    if not arrs:
        raise ValueError("asinh_stretch needs at least one image")
    C = arrs[0].shape[2]
    if any(a.shape[2] != C for a in arrs):
        raise ValueError("all images must have the same number of channels")
    if limits is None:
        limits = _percentile_limits(arrs if reference is None else [arrs[int(reference)]],
                                    low_pct, high_pct)
    limits = np.asarray(limits, dtype=np.float64).reshape(C, 2)
    out = []
    norm = np.arcsinh(stretch)
    for a in arrs:
        x = (a - limits[:, 0]) / (limits[:, 1] - limits[:, 0])
        with np.errstate(invalid="ignore"):
            y = np.arcsinh(stretch * np.clip(x, 0.0, 1.0)) / norm
        out.append(y[..., 0] if C == 1 else y)
    return out, limits


def _percentile_limits(pool, low_pct, high_pct):
    """``(low, high)`` percentiles of the finite pixels of ``pool`` per channel."""
    C = pool[0].shape[2]
    limits = np.zeros((C, 2))
    for c in range(C):
        vals = np.concatenate([a[..., c][np.isfinite(a[..., c])] for a in pool])
        if vals.size == 0:
            limits[c] = (0.0, 1.0)
            continue
        lo, hi = np.percentile(vals, [low_pct, high_pct])
        limits[c] = (lo, hi if hi > lo else lo + 1.0)
    return limits


def eight_bit(stretched):
    """A stretched image (floats in [0, 1], NaN where there is no data) as 8 bits, NaN black.

    Examples
    --------
    >>> eight_bit(np.array([0.0, 0.5, 1.0, np.nan])).tolist()
    [0, 128, 255, 0]
    """
    return np.round(255 * np.nan_to_num(stretched, nan=0.0)).astype(np.uint8)


def png_bytes(picture, *, compression=None):
    """The PNG bytes of an 8-bit picture, ``(h, w)`` grey, ``(h, w, 3)`` RGB or ``(h, w, 4)``
    RGBA, encoded by OpenCV (row 0 at the top of the picture).

    Parameters
    ----------
    picture : numpy.ndarray of uint8
    compression : int, optional
        OpenCV's PNG compression level, 0-9 (None: its default).

    Returns
    -------
    bytes

    Raises
    ------
    RuntimeError
        When OpenCV cannot encode the picture.

    Examples
    --------
    >>> png_bytes(np.zeros((2, 3, 3), np.uint8))[:4]
    b'\\x89PNG'
    """
    import cv2

    pic = np.asarray(picture)
    if pic.ndim == 3:  # OpenCV writes BGR (BGRA)
        pic = np.ascontiguousarray(pic[..., [2, 1, 0, 3][:pic.shape[2]]])
    params = [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]
    ok, buf = cv2.imencode(".png", pic, params)
    if not ok:
        raise RuntimeError("OpenCV could not encode the picture as PNG")
    return buf.tobytes()
