"""Colour-filter-array (Bayer) raws: pattern names and demosaicing.

A one-shot colour camera (a smart telescope such as the Seestar S50) writes
2-D raws where each pixel sits behind one colour filter of a repeated 2x2
block.  FITS headers name the block by its top-left 2x2 sites (``BAYERPAT``,
e.g. ``"RGGB"``: red at (0, 0), green at (0, 1) and (1, 0), blue at (1, 1)),
possibly shifted by ``XBAYROFF``/``YBAYROFF`` when the raw was cropped.
OpenCV names its conversion codes after the block starting at the *second*
row and column, so every FITS name maps to a shifted OpenCV name
(:data:`BAYER_CODES`); a red-only scene must come out red (see the tests).
"""

import cv2
import numpy as np

__all__ = ["BAYER_CODES", "BAYER_PATTERNS", "bayer_pattern", "debayer"]

#: FITS ``BAYERPAT`` (top-left 2x2 block) -> OpenCV conversion code to RGB.
BAYER_CODES = {"RGGB": cv2.COLOR_BayerBG2RGB, "BGGR": cv2.COLOR_BayerRG2RGB,
               "GRBG": cv2.COLOR_BayerGB2RGB, "GBRG": cv2.COLOR_BayerGR2RGB}

#: The accepted pattern names.
BAYER_PATTERNS = tuple(BAYER_CODES)


def bayer_pattern(pattern, x_offset=0, y_offset=0):
    """Normalise a Bayer pattern name and shift it by a crop offset.

    Parameters
    ----------
    pattern : str
        Top-left 2x2 block, case-insensitive (``"rggb"``, ``" RGGB"``).
    x_offset, y_offset : int
        Column and row of the raw's first pixel in the sensor's pattern
        (FITS ``XBAYROFF``, ``YBAYROFF``); odd offsets swap the columns or
        the rows of the block.

    Returns
    -------
    str
        One of :data:`BAYER_PATTERNS`.

    Raises
    ------
    ValueError
        When the name is not one of :data:`BAYER_PATTERNS`.

    Examples
    --------
    >>> bayer_pattern("rggb", x_offset=1)
    'GRBG'
    >>> bayer_pattern("RGGB", y_offset=1)
    'GBRG'
    """
    p = str(pattern).strip().upper()
    if p not in BAYER_CODES:
        raise ValueError(f"unknown Bayer pattern {pattern!r}; use one of "
                         f"{', '.join(BAYER_PATTERNS)}")
    if int(x_offset) % 2:
        p = p[1] + p[0] + p[3] + p[2]
    if int(y_offset) % 2:
        p = p[2:] + p[:2]
    return p


def debayer(raw, pattern):
    """Demosaic a 2-D colour-filter raw (bilinear, OpenCV) into (H, W, 3) RGB float32.

    Float data is mapped linearly onto uint16 (OpenCV demosaics 8/16-bit data
    only) and back; integer data in [0, 65535] is converted exactly.
    Non-finite raw pixels make their 3x3 neighbourhood NaN.

    Parameters
    ----------
    raw : array_like, shape (H, W)
        The raw; never modified.
    pattern : str
        Its top-left 2x2 block (see :func:`bayer_pattern`).

    Returns
    -------
    numpy.ndarray, shape (H, W, 3), float32
        Red, green, blue; all NaN when no raw pixel is finite.

    Raises
    ------
    ValueError
        When ``pattern`` is unknown or ``raw`` is not 2-D.

    Examples
    --------
    >>> raw = np.zeros((6, 6)); raw[0::2, 0::2] = 100.0   # the red sites of an RGGB raw
    >>> np.round(debayer(raw, "RGGB")[2:4, 2:4].mean(axis=(0, 1)))
    array([100.,   0.,   0.], dtype=float32)
    """
    code = BAYER_CODES[bayer_pattern(pattern)]
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2:
        raise ValueError(f"a Bayer raw must be 2-D (H, W), got shape {raw.shape}")
    finite = np.isfinite(raw)
    if not finite.any():
        return np.full(raw.shape + (3,), np.nan, dtype=np.float32)
    lo, hi = float(raw[finite].min()), float(raw[finite].max())
    exact = lo >= 0 and hi <= 65535 and np.array_equal(raw[finite], np.round(raw[finite]))
    lo, scale = (0.0, 1.0) if exact else (lo, 65535.0 / max(hi - lo, 1e-30))
    u16 = np.round((np.where(finite, raw, lo) - lo) * scale).astype(np.uint16)
    rgb = (cv2.cvtColor(u16, code) / scale + lo).astype(np.float32)
    if not finite.all():
        rgb[cv2.dilate((~finite).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = np.nan
    return rgb
