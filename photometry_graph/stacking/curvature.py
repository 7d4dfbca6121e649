"""The curvature correction of bilinear resampling (``curvature_correction`` of
:func:`photometry_graph.stacking.resample.reproject_to_bbox`).

Bilinear interpolation at a fractional position ``p`` between two samples exceeds the true
value by ``p (1 - p) / 2 * f''`` per axis (Taylor expansion): a star peak is flattened by an
amount that depends on the sub-pixel phase.  The correction subtracts that term, with
``f''`` the source's second differences resampled bilinearly at the same points.  The
factor 1/2 is carried by the differences (:func:`half_second_differences`: a scaling by a
power of two, exact in floating point), so that the term is ``p (1 - p)`` times the
resampled half differences, per axis.
"""

import numpy as np

__all__ = ["half_second_differences", "phase_weighted"]


def half_second_differences(sub, valid=None):
    """Half second differences ``(f[i-1] + f[i+1]) / 2 - f[i]`` along x and y of an image.

    A difference is defined where the pixel and both its neighbours along the axis are
    valid and inside the array; elsewhere it is 0 (no correction).

    Parameters
    ----------
    sub : numpy.ndarray, shape (h, w, C), float32
        Image, finite everywhere (invalid pixels filled with any finite value).
    valid : numpy.ndarray of bool, shape (h, w), optional
        Valid pixels (default all).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``dxx``, ``dyy``, shape (h, w, C), float32.

    Examples
    --------
    >>> img = (np.arange(5.0, dtype=np.float32) ** 2)[np.newaxis, :, np.newaxis]
    >>> dxx, dyy = half_second_differences(np.repeat(img, 3, axis=0))
    >>> dxx[1, :, 0].tolist(), float(np.abs(dyy).max())
    ([0.0, 1.0, 1.0, 1.0, 0.0], 0.0)
    """
    import cv2
    h, w, C = sub.shape
    # channels interleaved: the neighbours along x are C apart in the flattened rows (a
    # view of a crop whose rows are apart: OpenCV reads it in place)
    flat = sub.reshape(h, w * C)
    kx = np.zeros((1, 2 * C + 1), np.float32)
    kx[0, [0, -1]], kx[0, C] = 0.5, -1.0
    dxx = cv2.filter2D(flat, -1, kx, borderType=cv2.BORDER_CONSTANT).reshape(h, w, C)
    dyy = cv2.filter2D(flat, -1, np.array([[0.5], [-1.0], [0.5]], np.float32),
                       borderType=cv2.BORDER_CONSTANT).reshape(h, w, C)
    if valid is None or valid.all():
        dxx[:, [0, -1]] = 0.0
        dyy[[0, -1]] = 0.0
        return dxx, dyy
    # a 3-pixel minimum along the axis, the array's outside invalid: the defined differences
    v = np.ascontiguousarray(valid, dtype=np.uint8)
    for d, k in ((dxx, (1, 3)), (dyy, (3, 1))):
        ok = cv2.erode(v, np.ones(k, np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        np.multiply(d, ok[..., np.newaxis], out=d)
    return dxx, dyy


def phase_weighted(img, f):
    """``img`` multiplied in place by ``p (1 - p)``, ``p`` the fractional part of ``f``.

    Parameters
    ----------
    img : numpy.ndarray, shape (h, w, C), float32
        Modified and returned.
    f : numpy.ndarray, shape (h, w), float32
        Positions (not modified).

    Examples
    --------
    >>> img = np.full((1, 3, 1), 2.0, np.float32)
    >>> phase_weighted(img, np.array([[3.0, 0.5, -1.25]], np.float32))[..., 0].tolist()
    [[0.0, 0.5, 0.375]]
    """
    p = np.floor(f)
    np.subtract(f, p, out=p)
    q = np.subtract(np.float32(1.0), p)
    np.multiply(q, p, out=q)
    img *= q[..., np.newaxis]
    return img
