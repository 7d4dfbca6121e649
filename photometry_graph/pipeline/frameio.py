"""Reading the frames of a run: header, celestial WCS, layout, pixels, noise.

:func:`read_frame_info` reads what is known of a frame before its pixels are loaded (a
:class:`~photometry_graph.pipeline.images.FrameInfo`); :func:`scan_frame` checks its pixels
once and measures its noise (and its saturation level when the header does not give it);
:func:`load_frame` loads its pixels as channels-last float32 with NaN where invalid.
:func:`scan_entry` is the worker task of the run's first stage.
"""

from pathlib import Path

import numpy as np
from astropy.wcs import WCS

from .fileio import open_fits
from .images import (FrameInfo, frame_noise, frame_pixels, image_layout, saturation_level,
                     saturation_pileup)
from .options import GridModeError
from .plan import as_float

__all__ = ["COVERAGE_EXTNAMES", "celestial_wcs", "read_frame_info", "load_frame",
           "scan_frame", "scan_entry"]

#: Names of an extension that holds a frame's per-pixel weights (coverage, alpha).
COVERAGE_EXTNAMES = ("COVERAGE", "ALPHA", "WEIGHT", "WEIGHTS")


def celestial_wcs(header, hdul=None):
    """The 2-D celestial WCS of a header (SIP honoured).

    Raises
    ------
    GridModeError
        When the WCS cannot be read or has no celestial axes.
    """
    try:
        wcs = WCS(header, fobj=hdul, relax=True)
    except Exception as exc:  # astropy raises many kinds of errors on broken headers
        raise GridModeError(f"its WCS cannot be read ({exc})") from None
    if not wcs.has_celestial:
        raise GridModeError("it has no celestial WCS (plate-solve it first)")
    return wcs if wcs.naxis == 2 else wcs.celestial


def read_frame_info(path, *, index=0, exposure=None):
    """Read a frame's header: layout, celestial WCS (SIP honoured), exposure, Bayer pattern.

    ``EXPTIME`` (or ``EXPOSURE``) gives the exposure, else ``exposure`` (from the plan),
    else 1.  ``BAYERPAT`` (shifted by odd ``XBAYROFF``/``YBAYROFF``) marks 2-D raws.
    ``SATURATE`` gives the saturation level (else :func:`scan_frame` looks for it in the
    data).

    Raises
    ------
    GridModeError
        When the file is not FITS, is truncated, holds no image or no celestial WCS.
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
            nbytes = abs(int(header["BITPIX"])) // 8 * int(np.prod(shape))
            if path.stat().st_size < hdul[hdu].fileinfo()["datLoc"] + nbytes:
                raise GridModeError("it is truncated (shorter than its header says)")
            wcs = celestial_wcs(header, hdul)
            try:
                layout, n_ch, shape, bayer = image_layout(shape, header.get("BAYERPAT"), [
                    int(as_float(header.get(k)) or 0) for k in ("XBAYROFF", "YBAYROFF")])
            except ValueError as exc:  # the data shape or the Bayer pattern
                raise GridModeError(str(exc)) from None
            cov = next((i for i, h in enumerate(hdul) if i != hdu and h.is_image
                        and str(h.name).upper() in COVERAGE_EXTNAMES
                        and tuple(h.shape or ()) == tuple(shape)), None)
            exptime = as_float(header.get("EXPTIME", header.get("EXPOSURE")))
            saturation = saturation_level(header)
    except GridModeError:
        raise
    except Exception as exc:  # not FITS, unreadable, broken header: skipped with the reason
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
    """
    with open_fits(info.path) as hdul:  # memmap=False: the data are read into memory here
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
    with open_fits(info.path) as hdul:
        raw = np.asarray(hdul[info.hdu].data, dtype=np.float32)
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
        if not Path(task["path"]).is_file():
            raise GridModeError("the file does not exist")
        info = read_frame_info(task["path"], index=task["index"], exposure=task["exposure"])
        return scan_frame(info, task["mask_eps"]), None
    except Exception as exc:  # GridModeError, or pixels that cannot be read
        return None, str(exc)
