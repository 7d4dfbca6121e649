"""Frames in pieces: one read per frame for the frame stage, a crop per band for the tiles.

A run reads each frame's pixels once in its frame stage (:func:`frame_pass`: the noise and
the saturation level of the scan, and the frame binned on the global grid for the frame
photometry), then, for each tile and each pass of its stacking, only what a band of the
tile needs (:class:`TilePieces`, the ``get_frame`` of
:func:`~photometry_graph.stacking.stack.stack_frames`): a crop of the frame decoded with
a margin (:func:`~photometry_graph.pipeline.frameio.load_frame`), reprojected through the
frame's homography -- computed once per frame (:func:`frame_geometry`: in the workers by
the frame pass when it bins the frames, else by the caller) -- and corrected.
A tile task carries :class:`FrameSource` records, without the frames' WCS objects where
a homography stands in for them (a WCS costs milliseconds to pickle); the frame pass's
tasks carry the grid's WCS as a :class:`SharedWCS`.
"""

import pickle
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.correction import apply_correction
from ..core.tiles import BBox
from ..core.wcsgrid import footprint_bbox
from ..photometry.frames import bin_frame_on_grid, masked_gaussian_blur
from ..stacking.resample import box_extent, reproject_to_bbox, wcs_homography
from ..stacking.stack import radial_weight
from .fileio import atomic
from .frameio import load_frame, read_pixels, scan_frame
from .options import frame_saturation, frame_smooth_sigma

__all__ = ["FrameSource", "frame_geometry", "frame_sources", "frame_pass", "SharedWCS",
           "unshared", "BinnedFile", "spill_binned", "TilePieces"]


class SharedWCS:
    """A WCS that many tasks carry: pickled once here, rebuilt once in each worker thread.

    astropy pickles a WCS through its FITS header (~1 ms) and rebuilds it from there
    (~1.5 ms); the frame pass sends the grid's WCS with each of a session's thousands of
    frames.  The pickle is made once, when the object is made; a worker thread keeps the
    WCS it rebuilt from it for the next tasks, the same as each task's own copy would be
    (:func:`unshared` gives the WCS of either).  The WCS is read, never changed: a copy
    (``copy.deepcopy``) in the same thread is that same WCS.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
    pickled : bytes, optional
        Its pickle, when known.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> w = WCS(naxis=2); w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> a, b = (pickle.loads(pickle.dumps(SharedWCS(w))) for _ in range(2))
    >>> unshared(a) is unshared(b), unshared(a).wcs.ctype[0]
    (True, 'RA---TAN')
    """

    def __init__(self, wcs, pickled=None):
        self.wcs = wcs
        self._pickled = (pickle.dumps(wcs, protocol=pickle.HIGHEST_PROTOCOL)
                         if pickled is None else pickled)

    def __reduce__(self):
        return _rebuilt_wcs, (self._pickled,)


#: The WCS each thread last rebuilt from a :class:`SharedWCS` pickle (astropy's WCS objects
#: are not shared between threads).
_REBUILT = threading.local()


def _rebuilt_wcs(pickled):
    """The :class:`SharedWCS` of a pickle, its WCS rebuilt once per thread."""
    if getattr(_REBUILT, "pickled", None) != pickled:
        _REBUILT.wcs, _REBUILT.pickled = pickle.loads(pickled), pickled
    return SharedWCS(_REBUILT.wcs, pickled)


def unshared(wcs):
    """The WCS of a :class:`SharedWCS`, or ``wcs`` itself."""
    return wcs.wcs if isinstance(wcs, SharedWCS) else wcs


@dataclass
class FrameSource:
    """What a tile needs of a frame: how to read it, where it lands, how it is corrected.

    ``info`` is the frame's :class:`~photometry_graph.pipeline.images.FrameInfo` (its
    ``wcs`` None when ``homography`` -- global grid pixel to frame pixel -- replaces it),
    ``footprint`` its box on the global grid, ``correction`` its photometric correction
    (None: as it is).
    """

    info: object
    homography: object
    footprint: BBox
    correction: object = None


def frame_geometry(info, grid_wcs, grid_shape):
    """Where a frame lands on the global grid: ``(footprint, homography)``.

    ``footprint`` is its box on the grid (:func:`~photometry_graph.core.wcsgrid.
    footprint_bbox`; None when it misses the canvas) and ``homography`` the projective map
    from the grid pixels of that box to the frame's pixels, fitted once for all the tiles
    and bands the frame is reprojected onto (None for a frame that keeps its WCS: SIP
    distortion, another projection; :func:`~photometry_graph.stacking.resample.
    wcs_homography`).  The frame pass computes it in the workers (:func:`frame_pass`).
    """
    footprint = footprint_bbox(info.wcs, info.shape, grid_wcs, grid_shape)
    if footprint is None:
        return None, None
    return footprint, wcs_homography(info.wcs, grid_wcs, footprint)


def frame_sources(frames, geometry, corrections):
    """:class:`FrameSource` of every frame (None where a frame misses the canvas).

    ``geometry``: each frame's ``(footprint, homography)`` (:func:`frame_geometry`).  A
    frame without a homography (SIP distortion, another projection) keeps its WCS
    (coordinate maps); the others travel without it.
    """
    return [None if fp is None else
            FrameSource(replace(f, wcs=None) if H is not None else f, H, fp, c)
            for f, (fp, H), c in zip(frames, geometry, corrections)]


def frame_pass(task):
    """Worker: a frame read once -- its scan, and its binned copy for the frame photometry.

    ``task``: ``frame`` (FrameInfo), ``options``, ``grid_wcs`` (a WCS or a
    :class:`SharedWCS`) and ``grid_shape`` (the global grid, optional), and for the
    binning ``bin_factor`` (None: no binning), ``record`` (where the binned frame is
    recorded for a rerun, or None) and ``scratch`` (a folder: the binned frame is written
    there, :func:`spill_binned`, and only its files travel back; None: the arrays do),
    binned through the homography of its geometry.  Returns ``(noise, saturation,
    binned, geometry)``: ``binned`` as :func:`~photometry_graph.photometry.frames.
    bin_frame_on_grid` returns it (None when not asked, the ValueError that skips the
    frame from the solve), ``geometry`` the frame's :func:`frame_geometry` on the grid
    (None without one: the caller computes it).  A frame that cannot be used at all
    raises.
    """
    info, opts, grid_wcs = task["frame"], task["options"], unshared(task.get("grid_wcs"))
    raw = read_pixels(info)
    scan_frame(info, opts.mask_eps, raw=raw)
    geometry = (frame_geometry(info, grid_wcs, task["grid_shape"])
                if grid_wcs is not None else None)
    binned = None
    if task.get("bin_factor"):
        try:
            data, _ = load_frame(info, mask_eps=opts.mask_eps, raw=raw,
                                 saturation=frame_saturation(opts, info.saturation))
            del raw
            data = masked_gaussian_blur(data, frame_smooth_sigma(opts, info.bayer))
            binned = bin_frame_on_grid(data, info.wcs, grid_wcs, task["grid_shape"],
                                       task["bin_factor"],
                                       homography=None if geometry is None else geometry[1])
        except ValueError as exc:  # skips the frame from the solve (warned there)
            binned = exc
        else:
            _record_binned(task.get("record"), binned)
            if binned is not None and task.get("scratch"):
                try:
                    binned = spill_binned(binned, Path(task["scratch"]), task["index"])
                except OSError:  # the arrays travel back: the caller writes them or says why
                    pass
    return info.noise, info.saturation, binned, geometry


def _record_binned(record, binned):
    """Save a binned frame as a piece of the run (``record``: store, name, key, made_from)."""
    if record is None:
        return
    arrays = None if binned is None else dict(
        box=np.array([binned[0].y0, binned[0].y1, binned[0].x0, binned[0].x1]),
        data=binned[1], valid=binned[2])
    record["store"].save(record["name"], record["key"], made_from=record["made_from"],
                         arrays=arrays)


class BinnedFile:
    """A binned frame written to a scratch folder (:func:`spill_binned`).

    Callable: each call maps the file afresh (nothing stays mapped between uses, so the
    process holds only what it reads); ``shape`` without reading it.  Serves as the lazy
    data of a :class:`~photometry_graph.core.tiles.TilePhotometryInfo`.  With the
    ``dtype`` and the ``offset`` of the pixels in the file (what :func:`spill_binned`
    knows), a call maps them without parsing the file's header (~0.4 ms: an overlap fit
    reads four such files, the frame solve's residuals two per overlap).
    """

    def __init__(self, path, shape, dtype=None, offset=None):
        self.path, self.shape = str(path), tuple(shape)
        self.dtype = None if dtype is None else np.dtype(dtype).str
        self.offset = None if offset is None else int(offset)

    def __call__(self):
        if self.offset is None or not all(self.shape):
            return np.load(self.path, mmap_mode="r")
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset,
                         shape=self.shape)


def spill_binned(binned, folder, k):
    """Write a binned frame ``(box, data, mask)`` to ``folder``; return it with
    :class:`BinnedFile` objects in place of the data and the mask."""
    box, data, valid = binned
    out = [box]
    for name, arr in (("data", data), ("mask", valid)):
        path = folder / f"frame_{k:06d}_{name}.npy"
        arr = np.ascontiguousarray(arr)
        with atomic(path) as tmp:  # a task run twice never leaves half a file
            with open(tmp, "wb") as fh:
                np.save(fh, arr)  # a header, then the pixels in C order
        out.append(BinnedFile(path, arr.shape, arr.dtype, path.stat().st_size - arr.nbytes))
    return tuple(out)


class TilePieces:
    """``get_frame(k, bands)`` of one tile's stacking: the pieces of its frames on bands.

    Parameters
    ----------
    sources : list of FrameSource
        The tile's frames.
    grid_wcs : astropy.wcs.WCS
    bbox : BBox
        The tile on the global grid.
    mask_eps : float
    radial : tuple, optional
        ``(fraction, power)`` of a radial weight of every frame
        (:func:`~photometry_graph.stacking.stack.radial_weight`).
    """

    def __init__(self, sources, grid_wcs, bbox, *, mask_eps=1e-6, radial=None):
        self.sources, self.grid_wcs, self.bbox = sources, grid_wcs, bbox
        self.mask_eps, self.radial, self._radial = mask_eps, radial, {}

    def windows(self):
        """Each frame's window in the tile, ``(y0, y1, x0, x1)``."""
        out = []
        for s in self.sources:
            w = self.bbox.intersection(s.footprint)
            out.append((0, 0, 0, 0) if w.is_empty else (
                w.y0 - self.bbox.y0, w.y1 - self.bbox.y0, w.x0 - self.bbox.x0,
                w.x1 - self.bbox.x0))
        return out

    def _weight(self, info, crop):
        """Per-pixel weight of a crop of the frame (radial weight), or None."""
        if self.radial is None:
            return None
        if info.shape not in self._radial:
            self._radial = {info.shape: radial_weight(info.shape, *self.radial)}
        return self._radial[info.shape][crop.y0:crop.y1, crop.x0:crop.x1]

    def __call__(self, k, bands):
        src, b = self.sources[k], self.bbox
        info = src.info
        boxes = [BBox(b.y0 + r0, b.y0 + r1, b.x0, b.x1).intersection(src.footprint)
                 for r0, r1 in bands]
        extents = [None if box.is_empty else box_extent(
            info.wcs, self.grid_wcs, box, frame_shape=info.shape, homography=src.homography)
            for box in boxes]
        used = [e.crop for e in extents if e is not None]
        empty = (np.empty((0, 0, info.n_channels), np.float32), None, (0, 0))
        if not used:
            return [empty] * len(bands)
        crop = used[0]
        for c in used[1:]:
            crop = crop.union(c)
        data, weight = load_frame(info, mask_eps=self.mask_eps, crop=crop)
        radial = self._weight(info, crop)
        if radial is not None:
            weight = radial if weight is None else weight * radial
        src_mask = None
        if weight is not None:  # the weight travels through the reprojection as a channel
            src_mask = np.isfinite(data).all(axis=2)
            data = np.concatenate([data, weight[..., np.newaxis]], axis=2)
        pieces = []
        for e in extents:
            if e is None:
                pieces.append(empty)
                continue
            e = e.on_window()  # without the margin of the band that the frame cannot reach
            box = e.box
            kw = dict(homography=src.homography, src_mask=src_mask, extent=e,
                      src_origin=(crop.y0, crop.x0), frame_shape=info.shape)
            pw = None
            if weight is None:  # the NaN of the data say where it is valid
                out = reproject_to_bbox(data, info.wcs, self.grid_wcs, box, **kw,
                                        with_footprint=False)
            else:
                out, foot = reproject_to_bbox(data, info.wcs, self.grid_wcs, box, **kw)
                out, pw = out[..., :-1], np.nan_to_num(out[..., -1], nan=0.0) * (foot > 0)
            out = apply_correction(out, box, src.correction, copy=False, separable=True)
            pieces.append((out, pw, (box.y0 - b.y0, box.x0 - b.x0)))
        return pieces

