"""Per-node photometric corrections and how they are applied.

A correction maps a node's pixels into the common photometric system::

    corrected(r) = gain * data(r) + offset + slope . (r - origin)

per channel, with ``r = (x, y)`` in global pixel coordinates.  The plane term
is zero unless a gradient model was solved.
"""

from dataclasses import dataclass, field

import numpy as np

from .masks import as_channels_last

__all__ = ["Correction", "apply_correction", "identity_correction"]


@dataclass
class Correction:
    """Gain, offset and optional plane of one node, per channel.

    Attributes
    ----------
    gain : numpy.ndarray, shape (C,)
    offset : numpy.ndarray, shape (C,)
    slope : numpy.ndarray, shape (C, 2)
        ``(d/dx, d/dy)`` per global pixel.
    origin : tuple of float
        ``(x, y)`` global origin of the plane term.
    gain_err, offset_err : numpy.ndarray, shape (C,)
        One-sigma uncertainties (NaN when unknown).
    status : str
        ``"solved"``, ``"reference"`` or ``"fallback"``.

    Examples
    --------
    >>> c = identity_correction(3)
    >>> c.gain.tolist(), c.is_identity
    ([1.0, 1.0, 1.0], True)
    """

    gain: np.ndarray
    offset: np.ndarray
    slope: np.ndarray = None
    origin: tuple = (0.0, 0.0)
    gain_err: np.ndarray = None
    offset_err: np.ndarray = None
    status: str = "solved"
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.gain = np.atleast_1d(np.asarray(self.gain, dtype=np.float64))
        self.offset = np.atleast_1d(np.asarray(self.offset, dtype=np.float64))
        n = self.gain.shape[0]
        if self.offset.shape != (n,):
            raise ValueError(f"gain has {n} channels but offset has shape {self.offset.shape}")
        self.slope = (np.zeros((n, 2)) if self.slope is None
                      else np.asarray(self.slope, dtype=np.float64).reshape(n, 2))
        nan = np.full(n, np.nan)
        self.gain_err = nan.copy() if self.gain_err is None else np.asarray(self.gain_err, float)
        self.offset_err = (nan.copy() if self.offset_err is None
                           else np.asarray(self.offset_err, float))

    @property
    def n_channels(self):
        """Number of channels."""
        return self.gain.shape[0]

    @property
    def is_identity(self):
        """True when applying the correction changes nothing."""
        return bool(np.all(self.gain == 1) and np.all(self.offset == 0)
                    and np.all(self.slope == 0))

    def to_dict(self):
        """JSON-friendly representation."""
        return {"gain": self.gain.tolist(), "offset": self.offset.tolist(),
                "slope": self.slope.tolist(), "origin": list(self.origin),
                "gain_err": [None if not np.isfinite(v) else float(v) for v in self.gain_err],
                "offset_err": [None if not np.isfinite(v) else float(v)
                               for v in self.offset_err],
                "status": self.status}


def identity_correction(n_channels, status="fallback"):
    """A correction that leaves data unchanged (gain 1, offset 0)."""
    return Correction(np.ones(n_channels), np.zeros(n_channels), status=status)


def apply_correction(data, bbox, correction, *, dtype=np.float32, copy=True, step=1,
                     separable=False):
    """Apply a :class:`Correction` to the pixels of a node.

    Parameters
    ----------
    data : array_like, shape (h, w) or (h, w, C)
        Pixels; not modified.
    bbox : BBox
        Where ``data`` sits on the global grid (for the plane term).
    correction : Correction or None
        ``None`` returns a copy.
    dtype : numpy dtype
        Output type.
    copy : bool
        False corrects ``data`` in place when it is already channels-last ``dtype``.
    step : int
        ``data`` holds every ``step``-th row and column of ``bbox`` from its first pixel
        (a sample of it): the plane is evaluated at those pixels.
    separable : bool
        Add the plane's column term and its row term one after the other in ``dtype``
        (two passes at memory speed), not their sum as a float64 image: each pixel is
        rounded twice, ~1e-7 of its value in float32 (what the stacking of many frames
        takes).

    Returns
    -------
    numpy.ndarray, shape (h, w, C)
        Corrected copy (or ``data``); NaN stays NaN.  Invalid pixels are corrected like
        the others: callers mask them.
    """
    arr = as_channels_last(data)
    out = np.array(arr, dtype=dtype, copy=copy or None)
    if correction is None:
        return out
    if correction.n_channels != out.shape[2]:
        raise ValueError(f"correction has {correction.n_channels} channels, data has "
                         f"{out.shape[2]}")
    out *= correction.gain.astype(dtype)
    if not np.any(correction.slope):
        out += correction.offset.astype(dtype)
        return out
    h, w = out.shape[:2]
    x = (bbox.x0 + step * np.arange(w) - correction.origin[0]).astype(dtype)
    y = (bbox.y0 + step * np.arange(h) - correction.origin[1]).astype(dtype)
    for c in range(out.shape[2]):
        sx, sy = correction.slope[c]
        if separable:
            out[:, :, c] += (correction.offset[c] + sx * x).astype(dtype)[np.newaxis, :]
            out[:, :, c] += (sy * y).astype(dtype)[:, np.newaxis]
            continue
        out[:, :, c] += (correction.offset[c] + sx * x)[np.newaxis, :].astype(dtype) \
            + (sy * y)[:, np.newaxis]
    return out
