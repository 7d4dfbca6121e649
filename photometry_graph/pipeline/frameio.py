"""Reading the frames of a run: header, celestial WCS, layout, pixels, noise.

:func:`read_frame_info` reads what is known of a frame before its pixels are loaded (a
:class:`~photometry_graph.pipeline.images.FrameInfo`); :func:`scan_frame` checks its pixels
once and measures its noise (and its saturation level when the header does not give it);
:func:`load_frame` loads its pixels as channels-last float32 with NaN where invalid.
:func:`scan_entry` is the worker task of the run's first stage.
"""

import os
import stat
from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from ..core.wcsgrid import celestial_pixel_scale
from .fileio import open_fits
from .images import (FrameInfo, frame_noise, frame_pixels, image_layout, saturation_level,
                     saturation_pileup)
from .options import GridModeError
from .plan import as_float

__all__ = ["COVERAGE_EXTNAMES", "MIN_FRAME_SIDE", "file_problem", "celestial_wcs",
           "read_frame_info", "load_frame", "scan_frame", "scan_entry"]

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
    """Raise when the file is shorter than its header says (compressed files: when read)."""
    if _compressed(path):
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
                     saturation=saturation)


def load_frame(info, *, mask_eps=1e-6, erode=1, saturation=None):
    """Load a frame as (H, W, C) float32, NaN where invalid, and its pixel weights.

    Invalid: non-finite, ``|x| <= mask_eps`` in every channel (empty borders; for Bayer raws
    per raw site, so that they cannot leak into their neighbours), or zero coverage; the
    valid zone is eroded by ``erode`` pixels (debayering already grows invalid zones by one).
    With a ``saturation`` level, saturated pixels and a 2 px margin are invalid too (for the
    frame photometry).  Returns ``(data, weight)``, ``weight`` the coverage/alpha HDU (H, W)
    or None.

    Raises
    ------
    GridModeError
        When the file has become shorter than its header says (truncated after the scan).
    """
    with open_fits(info.path) as hdul:  # memmap=False: the data are read into memory here
        _check_complete(info.path, hdul, info.hdu)
        raw = hdul[info.hdu].data
        weight = (None if info.coverage_hdu is None
                  else np.array(hdul[info.coverage_hdu].data, dtype=np.float32))
    return frame_pixels(raw, info.layout, info.bayer, weight=weight, mask_eps=mask_eps,
                        erode=erode, saturation=saturation)


def scan_frame(info, mask_eps):
    """Reject a frame without usable pixels (all NaN or zero); measure its noise sigma.

    A frame without a ``SATURATE`` keyword gets the level at which its brightest pixels
    pile up, if they do (:func:`photometry_graph.pipeline.images.saturation_pileup`).
    """
    try:
        with open_fits(info.path) as hdul:
            raw = np.asarray(hdul[info.hdu].data, dtype=np.float32)
    except (OSError, EOFError, ValueError) as exc:  # e.g. a truncated .fits.gz
        raise GridModeError(f"its pixels cannot be read: it is truncated or corrupt "
                            f"({type(exc).__name__}: {exc})") from None
    info.noise = frame_noise(raw, info.layout, mask_eps=mask_eps)
    if info.saturation is None:
        info.saturation = saturation_pileup(raw)
    return info


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
