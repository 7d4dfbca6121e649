"""Gaussian and Laplacian image pyramids (float32, OpenCV engine).

Level 0 of a pyramid is the image itself; level ``k + 1`` is level ``k``
smoothed with the 5-tap binomial kernel ``[1, 4, 6, 4, 1] / 16`` and decimated
by 2 (:func:`cv2.pyrDown`).  Odd sizes are handled: level ``k`` of an
``(H, W)`` image has shape ``(ceil(H / 2**k), ceil(W / 2**k))`` and every
upsampling step is given its target size explicitly, so that
``reconstruct_from_laplacian(build_laplacian_pyramid(x, n))`` returns ``x`` to
float32 rounding for any shape.

Images are ``(H, W)`` or channels-last ``(H, W, C)``; every function returns
the same layout it was given.  Pyramids never see invalid pixels: fill them
first with :func:`fill_invalid` (a push-pull normalised convolution that only
uses valid pixels), or blend differences that are zero on invalid pixels as
:mod:`photometry_graph.blending.blend` does.
"""

import cv2
import numpy as np

__all__ = [
    "pyr_down",
    "pyr_up",
    "level_shapes",
    "max_levels",
    "build_gaussian_pyramid",
    "gaussian_levels",
    "build_laplacian_pyramid",
    "reconstruct_from_laplacian",
    "fill_invalid",
]

_CV_MAX_CHANNELS = 4


def _as_image(image, what="image"):
    """Contiguous float32 2-D or 3-D array (no copy when already so)."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{what} must have shape (H, W) or (H, W, C), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or (arr.ndim == 3 and arr.shape[2] == 0):
        raise ValueError(f"{what} is empty (shape {arr.shape})")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _apply_cv(func, img):
    """Apply a cv2 pyramid step to a 2-D or 3-D float32 image, any channel count."""
    if img.ndim == 2:
        return func(img)
    c = img.shape[2]
    if c == 1:
        return func(np.ascontiguousarray(img[:, :, 0]))[:, :, np.newaxis]
    if c <= _CV_MAX_CHANNELS:
        return func(img)
    parts = []
    for start in range(0, c, _CV_MAX_CHANNELS):
        part = np.ascontiguousarray(img[:, :, start:start + _CV_MAX_CHANNELS])
        out = func(part) if part.shape[2] > 1 else func(part[:, :, 0])
        parts.append(out if out.ndim == 3 else out[:, :, np.newaxis])
    return np.concatenate(parts, axis=2)


def pyr_down(image):
    """Smooth and decimate by 2: ``(H, W[, C]) -> (ceil(H/2), ceil(W/2)[, C])``.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)

    Returns
    -------
    numpy.ndarray, float32

    Examples
    --------
    >>> import numpy as np
    >>> pyr_down(np.ones((5, 7, 3))).shape
    (3, 4, 3)
    """
    return _apply_cv(cv2.pyrDown, _as_image(image))


def pyr_up(image, shape):
    """Upsample by 2 to exactly ``shape[:2]`` (which must be ``2*h`` or ``2*h - 1``).

    Parameters
    ----------
    image : array_like, shape (h, w) or (h, w, C)
    shape : tuple of int
        Target ``(H, W)``; ``H`` in ``{2h - 1, 2h}`` and likewise for ``W``.

    Returns
    -------
    numpy.ndarray, float32, shape (H, W) or (H, W, C)
    """
    img = _as_image(image)
    H, W = int(shape[0]), int(shape[1])
    h, w = img.shape[:2]
    if H not in (2 * h - 1, 2 * h) or W not in (2 * w - 1, 2 * w):
        raise ValueError(
            f"pyr_up: target shape {(H, W)} is not twice the source shape {(h, w)} "
            "(or twice minus one for odd sizes)"
        )
    return _apply_cv(lambda a: cv2.pyrUp(a, dstsize=(W, H)), img)


def level_shapes(shape, levels):
    """Shapes ``(h_k, w_k)`` of the ``levels`` levels of a pyramid of ``shape``.

    Examples
    --------
    >>> level_shapes((5, 8), 3)
    [(5, 8), (3, 4), (2, 2)]
    """
    h, w = int(shape[0]), int(shape[1])
    out = []
    for _ in range(int(levels)):
        out.append((h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return out


def max_levels(shape, min_size=8):
    """Largest number of levels whose coarsest level is at least ``min_size`` px.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)`` of level 0.
    min_size : int
        Smallest allowed side of the coarsest level.

    Returns
    -------
    int
        At least 1 (the image itself).

    Examples
    --------
    >>> max_levels((256, 300), min_size=8)
    6
    >>> max_levels((5, 5), min_size=8)
    1
    """
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    h, w = int(shape[0]), int(shape[1])
    levels = 1
    while min((h + 1) // 2, (w + 1) // 2) >= min_size and max(h, w) > 1:
        h, w = (h + 1) // 2, (w + 1) // 2
        levels += 1
    return levels


def _check_levels(levels, shape):
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    levels = int(levels)
    limit = max_levels(shape, min_size=1)
    if levels > limit:
        raise ValueError(
            f"{levels} levels is too many for an image of shape {tuple(shape[:2])}: at most "
            f"{limit} (use max_levels(shape) to choose)"
        )
    return levels


def build_gaussian_pyramid(image, levels):
    """Gaussian pyramid ``[G_0 = image, G_1, ..., G_{levels-1}]``.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Finite values (fill invalid pixels first).
    levels : int
        Number of levels including the image itself (>= 1).

    Returns
    -------
    list of numpy.ndarray, float32
        ``G_0`` is a float32 copy of ``image``.

    Examples
    --------
    >>> import numpy as np
    >>> [g.shape for g in build_gaussian_pyramid(np.zeros((9, 6)), 3)]
    [(9, 6), (5, 3), (3, 2)]
    """
    img = _as_image(image)
    levels = _check_levels(levels, img.shape)
    return gaussian_levels(np.array(img, dtype=np.float32, copy=True), levels)


def gaussian_levels(img, levels):
    """Gaussian pyramid without validation or copy: ``img`` itself is level 0.

    For inner loops that already hold a float32 image and a level count that suits it;
    :func:`build_gaussian_pyramid` is the checked version.

    Examples
    --------
    >>> img = np.zeros((9, 6), np.float32)
    >>> pyr = gaussian_levels(img, 3)
    >>> pyr[0] is img, [g.shape for g in pyr]
    (True, [(9, 6), (5, 3), (3, 2)])
    """
    pyramid = [img]
    for _ in range(levels - 1):
        pyramid.append(pyr_down(pyramid[-1]))
    return pyramid


def build_laplacian_pyramid(image, levels):
    """Laplacian pyramid: ``levels - 1`` band-pass levels and the low-pass residual.

    ``L_k = G_k - pyr_up(G_{k+1})`` for ``k < levels - 1`` and
    ``L_{levels-1} = G_{levels-1}``.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Finite values.
    levels : int
        Number of levels (1 returns ``[image]``).

    Returns
    -------
    list of numpy.ndarray, float32

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(33, 20)).astype(np.float32)
    >>> y = reconstruct_from_laplacian(build_laplacian_pyramid(x, 4))
    >>> bool(np.abs(y - x).max() < 1e-5)
    True
    """
    img = _as_image(image)
    gauss = gaussian_levels(img, _check_levels(levels, img.shape))
    lap = []
    for k in range(len(gauss) - 1):
        band = gauss[k] - pyr_up(gauss[k + 1], gauss[k].shape)
        lap.append(band)
    lap.append(gauss[-1])
    return lap


def reconstruct_from_laplacian(pyramid):
    """Collapse a Laplacian pyramid back into an image.

    Parameters
    ----------
    pyramid : list of numpy.ndarray
        As returned by :func:`build_laplacian_pyramid` (or a weighted sum
        of such pyramids with the same level shapes).

    Returns
    -------
    numpy.ndarray, float32, shape of level 0
    """
    if len(pyramid) == 0:
        raise ValueError("cannot reconstruct an empty pyramid")
    img = _as_image(pyramid[-1], "pyramid level")
    for band in reversed(pyramid[:-1]):
        band = _as_image(band, "pyramid level")
        img = pyr_up(img, band.shape)
        img += band
    if len(pyramid) == 1:
        img = img.copy()
    return img


def fill_invalid(image, mask, *, levels=None, fill_value=0.0):
    """Fill invalid pixels from their valid neighbours (push-pull).

    The valid pixels (``mask`` True, or weight > 0 for a float mask) are
    averaged down a pyramid with their weights (normalised convolution); on
    the way back up, each level keeps its own weighted mean where it has
    weight and takes the upsampled coarser estimate where it has none::

        est_k = V_k + (1 - M_k) * pyr_up(est_{k+1})

    with ``V_k``, ``M_k`` the Gaussian pyramids of ``mask * image`` and of
    ``mask``.  Values of invalid pixels (NaN, 0, anything) are never read.
    Valid pixels keep their exact values.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
    mask : array_like, shape (H, W)
        Boolean validity, or weights in ``[0, 1]``.
    levels : int, optional
        Depth of the push-pull; ``None`` goes down to a single pixel, so
        every hole is filled when any pixel is valid.  A shallower pyramid
        keeps the fill local: holes farther than about ``2**levels`` pixels
        from valid data receive ``fill_value``.
    fill_value : float
        Value used where no valid pixel is within reach.

    Returns
    -------
    numpy.ndarray, float32, same shape as ``image``
        Finite everywhere.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.array([[1.0, np.nan, 3.0]] * 3)
    >>> out = fill_invalid(img, np.isfinite(img))
    >>> bool(np.isfinite(out).all()), float(out[1, 0]), 1.0 < float(out[1, 1]) < 3.0
    (True, 1.0, True)
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {arr.shape}")
    m = np.asarray(mask)
    if m.shape != arr.shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match the image shape {arr.shape[:2]}")
    weight = np.clip(m.astype(np.float32), 0.0, 1.0)
    if not np.isfinite(weight).all():
        raise ValueError("mask weights must be finite")
    valid = weight > 0
    arr3 = arr[:, :, np.newaxis] if arr.ndim == 2 else arr
    # invalid pixels are never read: multiply a zero-filled copy by the weight
    values = np.where(valid[:, :, np.newaxis], arr3, 0.0).astype(np.float32)
    if not np.isfinite(values).all():
        raise ValueError("image has non-finite values on pixels the mask marks valid")
    out_shape = arr.shape
    if valid.all():
        return values.reshape(out_shape).copy()
    if not valid.any():
        return np.full(out_shape, fill_value, dtype=np.float32)
    limit = max_levels(weight.shape, min_size=1)
    levels = limit if levels is None else max(1, min(int(levels), limit))
    values *= weight[:, :, np.newaxis]
    v_pyr = [values]
    m_pyr = [weight]
    for _ in range(levels - 1):
        v_pyr.append(pyr_down(v_pyr[-1]))
        m_pyr.append(pyr_down(m_pyr[-1]))
    top_v, top_m = v_pyr[-1], m_pyr[-1]
    est = np.full(top_v.shape, fill_value, dtype=np.float32)
    ok = top_m > 1e-6
    est[ok] = top_v[ok] / top_m[ok][:, np.newaxis]
    for k in range(levels - 2, -1, -1):
        up = pyr_up(est, v_pyr[k].shape)
        mk = np.clip(m_pyr[k], 0.0, 1.0)
        est = v_pyr[k] + (1.0 - mk)[:, :, np.newaxis] * up
    # exact values on valid pixels (a float mask may hold fractional weights)
    est = np.where(valid[:, :, np.newaxis], arr3, est).astype(np.float32)
    return est.reshape(out_shape)
