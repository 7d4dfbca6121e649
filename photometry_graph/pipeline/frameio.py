"""Reading the frames of a run: header, celestial WCS, layout, pixels, noise.

:func:`read_frame_info` reads what is known of a frame before its pixels are loaded (a
:class:`~photometry_graph.pipeline.images.FrameInfo`); :func:`scan_frame` checks its pixels
once and measures its noise (and its saturation level when the header does not give it);
:func:`load_frame` loads its pixels (or a crop of them) as channels-last float32 with NaN
where invalid; :func:`read_pixels` reads the stored values of any rows and columns straight
from the file (plain FITS images; compressed ones through astropy).
:func:`scan_entry` is the worker task of the run's first stage.
"""

import os
import stat
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from ..core.tiles import BBox
from ..core.wcsgrid import celestial_pixel_scale
from .fileio import open_fits
from .images import (FrameInfo, bayer_as_stored, frame_noise, frame_pixels, image_layout,
                     saturation_level, saturation_pileup)
from .options import GridModeError
from .plan import as_float

__all__ = ["COVERAGE_EXTNAMES", "MIN_FRAME_SIDE", "file_problem", "celestial_wcs",
           "read_frame_info", "read_pixels", "load_frame", "scan_frame", "scan_entry",
           "integer_top"]

#: Names of an extension that holds a frame's per-pixel weights (coverage, alpha).
COVERAGE_EXTNAMES = ("COVERAGE", "ALPHA", "WEIGHT", "WEIGHTS")
#: Smallest frame side accepted, pixels: a 1x1 "frame" would only change the canvas.
MIN_FRAME_SIDE = 8
# what a file that is not a regular file is, by its stat mode
_SPECIAL = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
            (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
            (stat.S_ISSOCK, "a socket")]
# first bytes of the compressed files astropy reads (gzip, bzip2, zip)
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"PK\x03\x04")


def file_problem(path):
    """Why ``path`` cannot be a frame file without opening it, or None.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    str or None
        "the file does not exist", "it is a folder, not a FITS file", "it is a named pipe
        (FIFO), not a FITS file", "it is a character device, not a FITS file", "it is empty
        (0 bytes)", "it cannot be read (...)", or None for a regular, non-empty file.

    Examples
    --------
    >>> file_problem("/nonexistent/a.fits")
    'the file does not exist'
    >>> file_problem("/dev/null")
    'it is a character device, not a FITS file'
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return "the file does not exist"
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    except ValueError as exc:  # a NUL byte in the path
        return f"its path is not valid ({exc})"
    kind = next((what for test, what in _SPECIAL if test(st.st_mode)), None)
    if kind is not None or not stat.S_ISREG(st.st_mode):
        return f"it is {kind or 'not a regular file'}, not a FITS file"
    return "it is empty (0 bytes)" if st.st_size == 0 else None


def celestial_wcs(header, hdul=None):
    """The 2-D celestial WCS of a header (SIP honoured), its placement on the sky checked.

    Raises
    ------
    GridModeError
        When the WCS cannot be read, has no celestial axes, a ``CRVAL`` of them that is
        not a finite number (astropy would read it as 0), or a singular ``CD`` matrix
        (astropy would replace an all-zero one by the identity: 1 degree per pixel).
    """
    try:
        wcs = WCS(header, fobj=hdul, relax=True)
    except Exception as exc:  # astropy raises many kinds of errors on broken headers
        raise GridModeError(f"its WCS cannot be read ({exc})") from None
    if not wcs.has_celestial:
        raise GridModeError("it has no celestial WCS (plate-solve it first)")
    _check_celestial(header, (wcs.wcs.lng + 1, wcs.wcs.lat + 1))
    cel = wcs if wcs.naxis == 2 else wcs.celestial
    if not np.isfinite(cel.wcs.crval).all():
        raise GridModeError(f"its WCS has a non-finite reference point CRVAL "
                            f"{cel.wcs.crval.tolist()}")
    try:
        celestial_pixel_scale(cel)
    except ValueError as exc:
        raise GridModeError(f"its WCS cannot place it on the sky: {exc}") from None
    return cel


def _check_celestial(header, axes):
    """The header's ``CRVALn`` and ``CDi_j`` cards of the celestial ``axes`` (1-based)."""
    for n in axes:
        key = f"CRVAL{n}"
        if key in header:
            card = header.cards[key]
            try:
                value = float(card.value)
            except Exception:  # an unparsable card (e.g. NAN) raises astropy's VerifyError
                value = float("nan")
            if not np.isfinite(value):
                raw = card.image[10:].split("/")[0].strip(" '")
                raise GridModeError(f"its {key} is not a finite number ({raw}): the frame "
                                    "cannot be placed on the sky")
    keys = [[f"CD{i}_{j}" for j in axes] for i in axes]
    if any(k in header for row in keys for k in row):
        try:
            cd = np.array([[float(header.get(k, 0.0)) for k in row] for row in keys])
        except Exception:
            cd = np.full((2, 2), np.nan)
        det = np.linalg.det(cd) if np.isfinite(cd).all() else np.nan
        if not (np.isfinite(det) and det != 0):
            names = ", ".join(k for row in keys for k in row)
            raise GridModeError(f"its CD matrix is singular ({names} = {cd.ravel().tolist()}): "
                                "no pixel scale")


def _compressed(path):
    """Whether ``path`` is a gzip, bzip2 or zip file (astropy reads them decompressed)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4).startswith(_COMPRESSED)
    except OSError:
        return False


def _check_complete(path, hdul, hdu):
    """Raise when the file is shorter than its header says (compressed files, and
    tile-compressed images such as fpack's ``.fits.fz``: when their data are read)."""
    if _compressed(path) or isinstance(hdul[hdu], fits.CompImageHDU):
        return
    header = hdul[hdu].header
    shape = [int(header[f"NAXIS{k}"]) for k in range(1, int(header["NAXIS"]) + 1)]
    nbytes = abs(int(header["BITPIX"])) // 8 * int(np.prod(shape))
    if os.stat(path).st_size < hdul[hdu].fileinfo()["datLoc"] + nbytes:
        raise GridModeError("it is truncated (shorter than its header says)")


def read_frame_info(path, *, index=0, exposure=None):
    """Read a frame's header: layout, celestial WCS (SIP honoured), exposure, Bayer pattern.

    ``EXPTIME`` (or ``EXPOSURE``) gives the exposure, else ``exposure`` (from the plan),
    else 1.  ``BAYERPAT`` (shifted by odd ``XBAYROFF``/``YBAYROFF``) marks 2-D raws.
    ``SATURATE`` gives the saturation level (else :func:`scan_frame` looks for it in the
    data).

    Raises
    ------
    GridModeError
        When the file is not FITS, is truncated, holds no image, no celestial WCS or a
        broken one (:func:`celestial_wcs`), or is smaller than :data:`MIN_FRAME_SIDE`.
        Compressed files (``.fits.gz``) are read as astropy reads them.
    """
    path = Path(path)
    try:
        with open_fits(path) as hdul:
            hdu = next((i for i, h in enumerate(hdul)
                        if h.is_image and h.header.get("NAXIS", 0) >= 2), None)
            if hdu is None:
                raise GridModeError("it holds no image HDU")
            header = hdul[hdu].header
            shape = tuple(int(header[f"NAXIS{k}"]) for k in range(int(header["NAXIS"]), 0, -1))
            _check_complete(path, hdul, hdu)
            wcs = celestial_wcs(header, hdul)
            try:
                layout, n_ch, shape, bayer = image_layout(shape, header.get("BAYERPAT"), [
                    int(as_float(header.get(k)) or 0) for k in ("XBAYROFF", "YBAYROFF")])
            except ValueError as exc:  # the data shape or the Bayer pattern
                raise GridModeError(str(exc)) from None
            if min(shape) < MIN_FRAME_SIDE:
                raise GridModeError(f"it is {shape[1]}x{shape[0]} px: too small to be a "
                                    f"frame (at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE})")
            cov = next((i for i, h in enumerate(hdul) if i != hdu and h.is_image
                        and str(h.name).upper() in COVERAGE_EXTNAMES
                        and tuple(h.shape or ()) == tuple(shape)), None)
            exptime = as_float(header.get("EXPTIME", header.get("EXPOSURE")))
            saturation = saturation_level(header)
            storage = _storage(path, hdul[hdu], header)
    except GridModeError:
        raise
    except Exception as exc:  # not FITS, unreadable, broken header: skipped with the reason
        if _compressed(path):
            raise GridModeError(f"it is compressed and cannot be read: truncated or corrupt "
                                f"({exc})") from None
        raise GridModeError(f"it is not a readable FITS image ({exc})") from None
    wcs.pixel_shape = (shape[1], shape[0])
    return FrameInfo(index=index, path=str(path), hdu=hdu, shape=tuple(shape), layout=layout,
                     n_channels=n_ch, wcs=wcs, bayer=bayer, coverage_hdu=cov,
                     exptime=float(exptime if exptime and exptime > 0 else exposure or 1.0),
                     saturation=saturation, storage=storage, integer_top=integer_top(header))


#: numpy types of the FITS ``BITPIX`` values (FITS data are big-endian).
_FITS_TYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


def _storage(path, hdu, header):
    """Where and how the pixels of a plain FITS image lie in its file, or None.

    None for what cannot be read at a byte offset: a compressed HDU, a gzipped file.
    """
    if type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU):
        return None
    with open(path, "rb") as fh:
        if fh.read(6) != b"SIMPLE":  # gzipped or otherwise wrapped
            return None
    bitpix = int(header["BITPIX"])
    if bitpix not in _FITS_TYPES:
        return None
    blank = header.get("BLANK") if bitpix > 0 else None
    return dict(offset=int(hdu.fileinfo()["datLoc"]), dtype=_FITS_TYPES[bitpix],
                bzero=float(header.get("BZERO", 0.0)), bscale=float(header.get("BSCALE", 1.0)),
                blank=None if blank is None else int(blank))


def read_pixels(info, rows=None, cols=None):
    """The stored values of rows ``rows`` and columns ``cols`` of a frame, in its layout.

    Read straight from the file when :attr:`FrameInfo.storage` says how (only the bytes of
    those rows), else through astropy (the whole image).  ``BZERO``/``BSCALE`` are applied:
    unsigned 16-bit data (``BZERO = 32768``) come as uint16, other integers as float32
    (``BLANK`` as NaN), floats as float32.

    Parameters
    ----------
    info : FrameInfo
    rows, cols : tuple of int, optional
        ``(start, stop)`` of the frame's rows and columns (default all).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` for mono and Bayer frames, ``(C, h, w)`` or ``(h, w, C)`` as stored.
    """
    H, W = info.shape
    r0, r1 = rows or (0, H)
    c0, c1 = cols or (0, W)
    st = info.storage
    if st is None:
        with open_fits(info.path) as hdul:  # memmap=False: the data are read into memory here
            _check_complete(info.path, hdul, info.hdu)
            raw = np.asarray(hdul[info.hdu].data)
        raw = raw[:, r0:r1, c0:c1] if info.layout == "chw" else raw[r0:r1, c0:c1]
        return raw if raw.dtype in (np.uint16, np.float32) else raw.astype(np.float32)
    dt = np.dtype(st["dtype"])
    C = info.n_channels if info.layout in ("chw", "hwc") else 1
    rows_of = (lambda c: _read_rows(info.path, dt, st["offset"] + (c * H + r0) * W * dt.itemsize,
                                    (r1 - r0, W)))
    if info.layout == "chw":
        raw = np.stack([rows_of(c)[:, c0:c1] for c in range(C)])
    else:
        raw = _read_rows(info.path, dt, st["offset"] + r0 * W * C * dt.itemsize,
                         (r1 - r0, W, C) if info.layout == "hwc" else (r1 - r0, W))[:, c0:c1]
    if dt == np.dtype(">i2") and st["bzero"] == 32768 and st["bscale"] == 1 \
            and st["blank"] is None:  # unsigned 16-bit: flip the sign bit
        return raw.view(">u2") ^ np.uint16(0x8000)
    out = raw.astype(np.float32)
    if st["blank"] is not None:
        bad = raw == st["blank"]
    if st["bscale"] != 1.0:
        out *= np.float32(st["bscale"])
    if st["bzero"] != 0.0:
        out += np.float32(st["bzero"])
    if st["blank"] is not None:
        out[bad] = np.nan
    return out


def _read_rows(path, dtype, offset, shape):
    """``shape`` values of ``dtype`` at byte ``offset`` of ``path``; a short file is named so."""
    raw = np.fromfile(path, dtype=dtype, count=int(np.prod(shape)), offset=offset)
    if raw.size < np.prod(shape):
        raise GridModeError("it is truncated (shorter than its header says)")
    return raw.reshape(shape)


def _halo(info, crop, halo):
    """``crop`` grown by ``halo`` pixels within the frame (Bayer raws: from even rows and
    columns, so that the pattern is the frame's): ``(rows, cols)``."""
    H, W = info.shape
    y0, y1, x0, x1 = max(0, crop.y0 - halo), min(H, crop.y1 + halo), \
        max(0, crop.x0 - halo), min(W, crop.x1 + halo)
    if info.layout == "bayer":
        y0, x0 = y0 - y0 % 2, x0 - x0 % 2
    return (y0, y1), (x0, x1)


def load_frame(info, *, mask_eps=1e-6, erode=1, saturation=None, crop=None, raw=None):
    """Load a frame as (H, W, C) float32, NaN where invalid, and its pixel weights.

    Invalid: non-finite, ``|x| <= mask_eps`` in every channel (empty borders; for Bayer raws
    per raw site, so that they cannot leak into their neighbours), or zero coverage; the
    valid zone is eroded by ``erode`` pixels (debayering already grows invalid zones by one).
    With a ``saturation`` level, saturated pixels and a 2 px margin are invalid too (for the
    frame photometry).  Returns ``(data, weight)``, ``weight`` the coverage/alpha HDU (H, W)
    or None.  With ``crop`` (a BBox of the frame's pixels) only that part, read with a
    margin so that every pixel is what the whole frame would give.  ``raw``: the frame's
    stored pixels, already read (:func:`read_pixels`; not with ``crop``).

    Raises
    ------
    GridModeError
        When the file has become shorter than its header says (truncated after the scan).
    """
    rows = cols = None
    if crop is not None:
        rows, cols = _halo(info, crop, erode + 3 + (0 if saturation is None else 2))
        raw = read_pixels(info, rows, cols)
        if info.layout == "bayer" and not bayer_as_stored(raw, mask_eps):
            # debayered through a scaling of the whole frame's range: the whole frame
            data, weight = load_frame(info, mask_eps=mask_eps, erode=erode,
                                      saturation=saturation)
            sl = crop.slices_in(BBox(0, info.shape[0], 0, info.shape[1]))
            return data[sl], None if weight is None else weight[sl]
    raw = read_pixels(info) if raw is None else raw
    weight = None
    if info.coverage_hdu is not None:
        with open_fits(info.path) as hdul:
            weight = np.array(hdul[info.coverage_hdu].data, dtype=np.float32)
        if crop is not None:
            weight = weight[rows[0]:rows[1], cols[0]:cols[1]]
    data, weight = frame_pixels(raw, info.layout, info.bayer, weight=weight, mask_eps=mask_eps,
                                erode=erode, saturation=saturation)
    if crop is None:
        return data, weight
    sl = (slice(crop.y0 - rows[0], crop.y1 - rows[0]), slice(crop.x0 - cols[0], crop.x1 - cols[0]))
    return data[sl], None if weight is None else weight[sl]


def scan_frame(info, mask_eps, *, raw=None):
    """Reject a frame without usable pixels (all NaN or zero); measure its noise sigma.

    A frame without a ``SATURATE`` keyword gets the level at which its brightest pixels
    pile up, or its maximum when that is the top of its integer storage
    (:func:`integer_top`; :func:`photometry_graph.pipeline.images.saturation_pileup`).
    ``raw``: the stored pixels when already read (:func:`read_pixels`).  Returns ``info``.
    """
    if raw is None:
        try:
            raw = read_pixels(info)
        except (OSError, EOFError, ValueError) as exc:  # e.g. a truncated .fits.gz
            raise GridModeError(f"its pixels cannot be read: it is truncated or corrupt "
                                f"({type(exc).__name__}: {exc})") from None
    info.noise = frame_noise(raw, info.layout, mask_eps=mask_eps)
    if info.saturation is None:
        info.saturation = saturation_pileup(raw, top=info.integer_top)
    return info


def integer_top(header):
    """The value at or above which a pixel of an integer FITS image holds the top of its
    stored range once scaled, or None (float data, or a ``BSCALE`` of 0).

    The larger end of ``BZERO + BSCALE * [type's smallest, type's largest]`` (a negative
    ``BSCALE`` turns the range over), less a margin for the float32 rounding of scaled
    values, under half of one ``BSCALE`` step.

    Examples
    --------
    >>> integer_top({"BITPIX": 16, "BZERO": 32768}) > 65534.9, integer_top({"BITPIX": -32})
    (True, None)
    >>> round(integer_top({"BITPIX": 8}), 3), round(integer_top({"BITPIX": 16, "BSCALE": -1}))
    (255.0, 32768)
    """
    bitpix = as_float(header.get("BITPIX"))
    if bitpix is None or int(bitpix) not in _FITS_TYPES or bitpix < 0:
        return None
    bzero = as_float(header.get("BZERO", 0.0)) or 0.0
    bscale = as_float(header.get("BSCALE", 1.0))
    if not bscale:
        return None
    limits = np.iinfo(np.dtype(_FITS_TYPES[int(bitpix)]))
    lo, hi = float(limits.min), float(limits.max)
    top = max(bzero + bscale * lo, bzero + bscale * hi)
    rounding = 4 * float(np.finfo(np.float32).eps) * (abs(bzero) + abs(bscale) * max(-lo, hi))
    return top - min(0.5 * abs(bscale), rounding)


def scan_entry(task):
    """Worker: :func:`read_frame_info` and :func:`scan_frame` of one planned frame.

    Returns ``(info, None)``, or ``(None, reason)`` for a frame to skip: the caller logs the
    reason (records logged in a worker process would be lost).
    """
    try:
        problem = file_problem(task["path"])
        if problem:
            raise GridModeError(problem)
        info = read_frame_info(task["path"], index=task["index"], exposure=task["exposure"])
        return scan_frame(info, task["mask_eps"]), None
    except Exception as exc:  # GridModeError, or pixels that cannot be read
        return None, str(exc)
