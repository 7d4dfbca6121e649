"""A reproject-style Python API: images with a WCS in, one seamless mosaic out.

:func:`mosaic` takes what ``reproject.mosaicking.reproject_and_coadd`` takes (file names,
HDU lists and HDUs, ``(array, WCS)`` and ``(array, Header)`` tuples, ``NDData`` and
``CCDData``) and returns ``(array, footprint)`` as it does; in between it runs what
``grid-mode assemble`` runs on panels (:mod:`photometry_graph.pipeline.panels`): the inputs
are reprojected one at a time onto the common grid into temporary tile files, matched by
the graph photometry (pairwise fits, global gain/offset/plane solve, guarded background
matching) and blended with multi-band pyramids, chunk by chunk.  The same inputs give the
same mosaic through both doors.  ``harmonize_only=True`` stops before the coadding and
returns the per-input corrections and the overlap graph, for people who coadd with their
own tool.
"""

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._log import get_logger, grid_warning
from .blending.assembly import assemble_mosaic
from .pipeline.fileio import load_tiles, open_fits
from .pipeline.frameio import COVERAGE_EXTNAMES
from .pipeline.images import image_layout
from .pipeline.options import OPTION_HELP, GridModeError, n_workers, resolve_options
from .pipeline.panels import Panel, panel_grid, read_panel, tile_photometry, write_panel_tiles
from .pipeline.progress import ConsoleProgress, Progress, callback_logging, reported

__all__ = ["GAIN_ESTIMATORS", "MosaicHarmonization", "mosaic"]

logger = get_logger(__name__)

#: Values of ``gain_estimator``: the pixel fits, matched stars, or the best of both.
GAIN_ESTIMATORS = ("auto", "pixels", "stars")


@dataclass
class MosaicHarmonization:
    """What ``mosaic(..., harmonize_only=True)`` returns: the corrections, not the coadd.

    Input ``k`` reprojected onto the output grid (``wcs``, ``shape``) becomes, per channel,
    ``gain * data + offset + slope . ((x, y) - origin)`` with ``(x, y)`` the output grid's
    0-based pixel coordinates: ``photometry_graph.apply_correction(data_on_box, bboxes[k],
    corrections[k])`` applies it to the part of the grid in ``bboxes[k]``.

    Attributes
    ----------
    corrections : list of Correction or None
        One per input (None for an input without valid pixels on the grid).
    graph : networkx.Graph
        The overlap graph; node ``k + 1`` is input ``k``; edges carry the pairwise fits
        (``fits``), the overlap box and its valid pixel count (the graph's boxes are on the
        output grid cropped to the inputs' boxes, ``bboxes`` on the output grid itself).
    wcs : astropy.wcs.WCS
    shape : tuple of int
        The output grid.
    bboxes : list of BBox or None
        Each input's valid box on the output grid.
    report : dict
        The harmonization's report (fits, solve residuals, background decision, warnings).
    """

    corrections: list
    graph: object
    wcs: object
    shape: tuple
    bboxes: list
    report: dict = field(default_factory=dict)


def _hdu_pair(hdul, hdu_in, k):
    """(image HDU, weight HDU or None) of an HDUList."""
    images = [h for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2]
    if hdu_in is not None:
        image = hdul[hdu_in]
    elif images:
        image = images[0]
    else:
        raise ValueError(f"input {k}: the HDU list holds no image")
    weight = next((h for h in images if h is not image
                   and str(h.name).upper() in COVERAGE_EXTNAMES
                   and h.data.shape[-2:] == image.data.shape[-2:]), None)
    return image, weight


def _nddata_weight(nd, k):
    """Weight (H, W) of an NDData from its mask (True = bad) and uncertainty, or None."""
    from astropy.nddata import InverseVariance
    shape = np.shape(nd.data)
    weight = None
    if nd.uncertainty is not None:
        try:
            ivar = np.asarray(nd.uncertainty.represent_as(InverseVariance).array, float)
        except Exception as exc:  # noqa: BLE001 - e.g. an UnknownUncertainty
            grid_warning(logger, "input %d: its uncertainty (%s) is not used: %s", k,
                         type(nd.uncertainty).__name__, exc)
        else:
            ivar = np.broadcast_to(ivar, shape)
            ivar = np.where(np.isfinite(ivar) & (ivar > 0), ivar, 0.0)
            weight = ivar if ivar.ndim == 2 else _channel_mean(ivar, shape)
    if nd.mask is not None:
        bad = np.broadcast_to(np.asarray(nd.mask, bool), shape)
        bad = bad if bad.ndim == 2 else _channel_mean(bad, shape) > 0
        weight = np.where(bad, 0.0, 1.0 if weight is None else weight)
    return weight


def _channel_mean(cube, shape):
    """Mean over the channel axis of a (C, H, W) or (H, W, C) cube of an image's shape."""
    return cube.mean(axis=0 if image_layout(shape)[0] == "chw" else -1)


def _weight_data(weight):
    if weight is None or isinstance(weight, np.ndarray):
        return weight
    if isinstance(weight, (str, Path)):
        with open_fits(weight) as hdul:
            return np.asarray(hdul[0].data, dtype=np.float32)
    return np.asarray(getattr(weight, "data", weight), dtype=np.float32)


def _as_panel(item, k, weight, hdu_in, mask_eps):
    """One input as a Panel; TypeError/ValueError saying what is wrong."""
    from astropy.io import fits
    from astropy.nddata import NDData

    if isinstance(item, (str, Path, os.PathLike)):
        try:
            panel = read_panel(item, index=k, mask_eps=mask_eps)
        except GridModeError as exc:
            raise ValueError(f"input {k} ({item}) cannot be used: {exc}") from None
        if weight is not None:  # input_weights: instead of the file's own weight
            panel.weight, panel.frame.coverage_hdu = _weight_data(weight), None
        return panel
    if isinstance(item, fits.HDUList):
        image, ext = _hdu_pair(item, hdu_in, k)
        data, wcs, weight = image.data, image.header, weight if weight is not None else ext
    elif isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        data, wcs = item.data, item.header
    elif isinstance(item, NDData):
        data, wcs = item.data, getattr(item.wcs, "low_level_wcs", item.wcs)
        own = _nddata_weight(item, k)
        weight = own if weight is None else (own if own is not None else 1.0) * weight
    elif isinstance(item, tuple) and len(item) == 2:
        data, wcs = item
    else:
        raise TypeError(f"input {k} is a {type(item).__name__}: give a file name, an HDUList, "
                        "an ImageHDU/PrimaryHDU, an (array, WCS) or (array, Header) tuple, "
                        "or an NDData/CCDData")
    if data is None or wcs is None:
        raise ValueError(f"input {k} has no {'data' if data is None else 'WCS'}")
    try:
        return Panel.from_array(k, np.asarray(data), wcs, weight=_weight_data(weight),
                                name=f"input {k}")
    except (GridModeError, ValueError) as exc:
        raise ValueError(f"input {k} cannot be used: {exc}") from None


def _output_grid(output_projection, shape_out):
    """(reference WCS or None, shape or None) from reproject's output arguments."""
    from astropy.io import fits
    from astropy.wcs import WCS

    if output_projection is None:
        if shape_out is not None:
            raise ValueError("shape_out needs an output_projection (a WCS or a Header)")
        return None, None
    if isinstance(output_projection, fits.Header):
        header = output_projection
        output_projection = WCS(header, relax=True)
        if shape_out is None and "NAXIS2" in header:
            shape_out = (header["NAXIS2"], header["NAXIS1"])
    elif not isinstance(output_projection, WCS):
        raise TypeError(f"output_projection must be an astropy WCS or Header, or None; got "
                        f"{type(output_projection).__name__}")
    if not output_projection.has_celestial:
        raise ValueError("output_projection has no celestial axes")
    if shape_out is None and output_projection.pixel_shape is not None:
        shape_out = tuple(output_projection.pixel_shape[::-1])
    return output_projection, None if shape_out is None else tuple(int(n) for n in
                                                                     tuple(shape_out)[-2:])


def _gain_estimator(value):
    """Options for ``gain_estimator``: forwarded when the harmonization has it."""
    if value not in GAIN_ESTIMATORS:
        raise ValueError(f"gain_estimator must be one of {GAIN_ESTIMATORS}, got {value!r}")
    if "gain_estimator" in OPTION_HELP:
        return {"gain_estimator": value}
    if value == "stars":
        grid_warning(logger, "gain_estimator='stars': this version fits gains on pixels only; "
                     "the pixel fits are used")
    return {}


def mosaic(input_data, output_projection=None, shape_out=None, *, input_weights=None,
           hdu_in=None, model="plane", blend="multiband", photometry=True, background=True,
           gain_estimator="auto", levels=None, chunk_size=1024, workers=None, mask_eps=1e-6,
           pixel_scale=None, progress_bar=False, harmonize_only=False, work_dir=None):
    """Mosaic images with a celestial WCS into one photometrically seamless image.

    Called like ``reproject.mosaicking.reproject_and_coadd`` (without its
    ``reproject_function``): each input is reprojected onto the output grid (the fast
    bilinear WCS remap of :mod:`photometry_graph.stacking.resample`), the overlap graph of
    the inputs gets a gain and an offset (or plane) per input from robust
    errors-in-variables fits of every overlap and a global solve, the backgrounds are
    matched where that does not increase the overlap residuals, and the corrected inputs
    are blended with Laplacian pyramids.  The inputs go through temporary tile files (in
    ``work_dir``): memory holds one input at a time, then the output.  Exactly what
    ``grid-mode assemble`` does with panel files: the same inputs give the same mosaic.

    Parameters
    ----------
    input_data : iterable
        Each item: a FITS file name (a weight extension or ``NAME.weight.fits`` beside it
        is used), an ``HDUList`` (``hdu_in`` or its first image; a ``WEIGHT``/``COVERAGE``
        extension is used), an ``ImageHDU``/``PrimaryHDU``, an ``(array, WCS)`` or
        ``(array, Header)`` tuple, or an ``NDData``/``CCDData`` (its ``mask``, True = bad,
        and its ``uncertainty``, as inverse-variance weights, are used).  Arrays are mono
        ``(H, W)`` or colour ``(3, H, W)`` / ``(H, W, 3)`` (not mixed); NaN and ``|x| <=
        mask_eps`` (zero borders) are no data.
    output_projection : astropy.wcs.WCS or astropy.io.fits.Header, optional
        The output grid.  None: the optimal north-up TAN grid covering every input at
        their median pixel scale (or ``pixel_scale``), or the inputs' own pixel grid when
        they share one.
    shape_out : tuple of int, optional
        ``(H, W)`` of the output; default the Header's ``NAXIS`` or the WCS's
        ``pixel_shape``; when neither tells, ``output_projection``'s pixel grid is
        extended to cover every input.
    input_weights : list, optional
        Per input: a weight array ``(H, W)``, a FITS file name or an HDU; 0 = no data.
        Weights are the coverage of ``blend="none"`` and mark pixels without data; the
        other blends weigh inputs by their distance to their valid border.
    hdu_in : int or str, optional
        HDU of the ``HDUList`` inputs.
    model : {"plane", "offset"}
        Additive term per input: an offset, or an offset plus a gradient.
    blend : {"multiband", "feather", "none"}
    photometry, background : bool
        Run the photometric solve; run the guarded background matching.
    gain_estimator : {"auto", "pixels", "stars"}
        How pairwise gains are measured, forwarded to the harmonization when it offers the
        choice; a version that fits pixels only uses them (warned for ``"stars"``).
    levels : int, optional
        Pyramid levels (default: from the overlap width).
    chunk_size : int
        Output chunk size of the blending; bounds its memory.
    workers : int, optional
        Threads of the blending.
    mask_eps : float
    pixel_scale : float, optional
        Arcsec per pixel of the optimal grid (not with ``output_projection``).
    progress_bar : bool
        Show a progress bar (tqdm, on stderr).
    harmonize_only : bool
        Return the corrections and the graph (:class:`MosaicHarmonization`) without
        coadding.
    work_dir : str or Path, optional
        Where the temporary tiles go (default: the system's temporary folder); removed
        afterwards.

    Returns
    -------
    array : numpy.ndarray, float32
        ``shape_out`` for mono inputs, ``(C,) + shape_out`` for colour ones; NaN where no
        input has data.
    footprint : numpy.ndarray, float32, ``shape_out``
        1 where ``array`` has data, 0 elsewhere.

    Or, with ``harmonize_only=True``, a :class:`MosaicHarmonization`.

    Raises
    ------
    TypeError, ValueError
        For inputs that cannot be used (saying which and why) and bad arguments.

    Examples
    --------
    >>> from photometry_graph.datasets import make_panel_set
    >>> s = make_panel_set(1, 2, panel_shape=(60, 90), rng=1)
    >>> array, footprint = mosaic([(p.data, p.wcs) for p in s.frames], workers=1)
    >>> array.shape == footprint.shape, bool(np.isnan(array[footprint == 0]).all())
    (True, True)
    """
    opts = resolve_options(dict(model=model, blend=blend, photometry=photometry,
                                background=background, levels=levels, chunk_size=chunk_size,
                                workers=workers, mask_eps=mask_eps, pixel_scale=pixel_scale,
                                **_gain_estimator(gain_estimator)))
    items = list(input_data)
    weights = [None] * len(items) if input_weights is None else list(input_weights)
    if len(weights) != len(items):
        raise ValueError(f"{len(weights)} input_weights for {len(items)} inputs")
    if not items:
        raise ValueError("mosaic needs at least one input")
    panels = [_as_panel(item, k, w, hdu_in, opts.mask_eps)
              for k, (item, w) in enumerate(zip(items, weights))]
    if len({p.n_channels for p in panels}) > 1:
        raise ValueError(f"the inputs mix channel counts {sorted({p.n_channels for p in panels})}"
                         ": give mono or colour images, not both")
    reference, shape = _output_grid(output_projection, shape_out)
    wcs, shape, _ = panel_grid(panels, reference=reference, shape=shape,
                               pixel_scale=opts.pixel_scale)
    bar = ConsoleProgress(None, disable=not progress_bar) if progress_bar else None
    with callback_logging(bar), tempfile.TemporaryDirectory(prefix="photometry_graph_",
                                                            dir=work_dir) as tmp:
        progress = Progress(logger).stage(0, 40)
        paths, _ = write_panel_tiles(panels, wcs, shape, tmp, mask_eps=opts.mask_eps,
                                     progress=progress)
        tiles, canvas, _, origin = load_tiles(paths)
        result, corrections, report = tile_photometry(tiles, canvas, opts)
        progress.stage(40, 60)("photometry done", 1.0)
        out = (_harmonization(tiles, result, corrections, report, origin, wcs, shape,
                              len(panels)) if harmonize_only else
               _coadd(tiles, canvas, corrections, opts, origin, shape, progress.stage(60, 100)))
    if bar is not None:
        bar.close()
    return out


def _coadd(tiles, canvas, corrections, opts, origin, shape, progress):
    """Blend the corrected tiles into (array, footprint) of the output shape."""
    array = np.full((tiles[0].n_channels,) + shape, np.nan, dtype=np.float32)  # as FITS
    oy, ox = origin

    def sink(bbox, data, weight_sum):
        array[:, oy + bbox.y0:oy + bbox.y1, ox + bbox.x0:ox + bbox.x1] = np.moveaxis(data, -1, 0)

    assemble_mosaic(tiles, canvas, corrections=corrections, blend=opts.blend,
                    levels=opts.levels, chunk_size=opts.chunk_size, sink=sink,
                    workers=n_workers(opts), progress=lambda done, total: reported(
                        done, total) and progress("blending chunk %d/%d", done / total, done,
                                                  total))
    footprint = np.isfinite(array).all(axis=0).astype(np.float32)
    return (array[0] if array.shape[0] == 1 else array), footprint


def _harmonization(tiles, result, corrections, report, origin, wcs, shape, n_inputs):
    """The corrections in output-grid coordinates and the graph without the tiles' pixels."""
    from .core.tiles import BBox

    oy, ox = origin
    by_id = {t.tile_id: t for t in tiles}
    out, boxes = [None] * n_inputs, [None] * n_inputs
    for tid, corr in (corrections or {}).items():
        corr.origin = (corr.origin[0] + ox, corr.origin[1] + oy)
        b = by_id[tid].bbox
        out[tid - 1], boxes[tid - 1] = corr, BBox(b.y0 + oy, b.y1 + oy, b.x0 + ox, b.x1 + ox)
    graph = getattr(result, "graph", None)
    if graph is not None:
        for _, data in graph.nodes(data=True):
            data.pop("tile", None)  # its pixels are in temporary files, gone on return
    return MosaicHarmonization(corrections=out, graph=graph, wcs=wcs, shape=shape,
                               bboxes=boxes, report=report)
