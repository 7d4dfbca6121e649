"""The demo: a synthetic frame survey with known truth, run end to end and measured.

:func:`write_frame_survey` writes a :class:`photometry_graph.datasets.FrameSurvey` as FITS
frames and a ``stack_plan.csv``; :func:`run_demo` runs the mode on it (and a plain run with
every correction off, for comparison) and measures both mosaics against the truth with
:func:`mosaic_quality`.
"""

from pathlib import Path

import numpy as np
from astropy.io import fits

from .._log import get_logger, grid_info
from ..core.tiles import BBox
from ..diagnostics import demo_quality_table, mosaic_vs_frame_survey
from .fileio import atomic, open_fits, write_hdus, write_html_report, write_json
from .frameio import celestial_wcs
from .plan import PLAN_HEADER, PLAN_NAME
from .progress import scaled_callback

__all__ = ["DEMO_DEFAULTS", "write_frame_survey", "write_tile_survey", "survey_wcs",
           "mosaic_quality", "run_demo", "demo_summary"]

logger = get_logger(__name__)

#: Grid options of the demo's run (its frames are 200 x 300 px).
DEMO_DEFAULTS = {"tile_size": 256, "overlap": 0.25}


def write_frame_survey(survey, folder, *, rgb_layout="chw"):
    """Write a :class:`photometry_graph.datasets.FrameSurvey` as FITS frames + stack_plan.csv.

    RGB frames are written as (3, H, W) (``rgb_layout="chw"``) or (H, W, 3) ("hwc").
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [PLAN_HEADER]
    for f in survey.frames:
        name = f"frame_{f.index:03d}.fits"
        data = np.moveaxis(f.data, -1, 0) if f.data.ndim == 3 and rgb_layout == "chw" else f.data
        write_hdus(folder / name, [fits.PrimaryHDU(np.ascontiguousarray(data), f.header)])
        lines.append(f"{f.index + 1},1,demo,4,synthetic,2024-01-01,L,{f.exptime:g},{name},,")
    with atomic(folder / PLAN_NAME) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def survey_wcs(shape, pixel_scale_arcsec=2.0, crval=(83.8, -5.4)):
    """North-up TAN WCS of a tile survey's canvas ``(H, W)`` (tiles carry no WCS of their own).

    Examples
    --------
    >>> survey_wcs((100, 200)).wcs.crpix.tolist()
    [100.5, 50.5]
    """
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = list(crval)
    w.wcs.cdelt = [-pixel_scale_arcsec / 3600.0, pixel_scale_arcsec / 3600.0]
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.set()
    return w


def write_tile_survey(survey, folder, wcs=None):
    """Write a :class:`photometry_graph.datasets.SyntheticSurvey`'s tiles as tile files.

    ``tile_0001.fits`` ... in the project's tile format (float32 data, NaN where invalid, the
    tile's WCS, its place on the global grid, a ``COVERAGE`` extension), what
    ``grid-mode assemble`` reads.  ``wcs``: of the survey's canvas (default
    :func:`survey_wcs`).  Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ny, nx = survey.canvas_shape
    wcs = survey_wcs(survey.canvas_shape) if wcs is None else wcs
    for k, tile in enumerate(survey.tiles):
        b = tile.bbox
        data = np.array(tile.get_data(), dtype=np.float32)
        mask = tile.mask
        data[~mask] = np.nan
        data = data[..., 0] if data.shape[2] == 1 else np.moveaxis(data, -1, 0)
        hdr = wcs.to_header()
        hdr["CRPIX1"] = wcs.wcs.crpix[0] - b.x0
        hdr["CRPIX2"] = wcs.wcs.crpix[1] - b.y0
        hdr["TILEID"] = (k + 1, "tile number (1-based)")
        hdr["GRID_Y0"], hdr["GRID_X0"] = b.y0, b.x0
        hdr["GRID_NY"], hdr["GRID_NX"] = ny, nx
        hdr["NFRAMES"] = 1
        write_hdus(folder / f"tile_{k + 1:04d}.fits",
                   [fits.PrimaryHDU(np.ascontiguousarray(data), hdr),
                    fits.ImageHDU(mask.astype(np.float32), name="COVERAGE")])
    return folder


def mosaic_quality(survey, mosaic_path, tile_bboxes):
    """Seam metrics and frame-to-frame offsets of a mosaic file against a survey's truth.

    Reads the mosaic and measures it with
    :func:`photometry_graph.diagnostics.mosaic_vs_frame_survey` (frame footprints 2 px
    inside their borders, star-free pixels; ``tile_bboxes`` on the mosaic grid).
    """
    with open_fits(mosaic_path) as hdul:
        data, wcs = hdul[0].data.astype(np.float64), celestial_wcs(hdul[0].header, hdul)
    img = data[..., None] if data.ndim == 2 else np.moveaxis(data, 0, -1) \
        if data.shape[0] in (1, 3) else data
    return mosaic_vs_frame_survey(img, wcs, survey, tile_bboxes, border=2)


def run_demo(output_dir="grid_demo_output", *, channels=3, rng=0, progress_callback=None,
             **options):
    """Synthetic survey end to end: frames with injected errors -> mosaic, measured vs. truth.

    Writes 6 frames of 200x300 px (gain +-15 %, offset +-30 sigma, 3 sigma gradients, empty
    borders, a NaN blob, a satellite trail; :func:`photometry_graph.datasets.make_frame_survey`)
    and their stack_plan.csv to ``output_dir/frames``, runs the mode into ``output_dir`` and,
    for comparison, a plain run with every correction off into ``output_dir/plain``; their
    :func:`mosaic_quality` goes into the report (``report["demo"]``, with ``survey``: the
    arguments of :func:`~photometry_graph.datasets.make_frame_survey` that rebuild the
    survey and its truth), the log and ``grid_report.html``, which shows the plain run's
    preview beside the harmonized one.

    Returns
    -------
    GridResult
    """
    from grid_mode import run_grid_mode  # the run itself lives at the top level

    from ..datasets import make_frame_survey  # not imported by a run (~0.07 s)

    out = Path(output_dir)
    recipe = dict(n_rows=2, n_cols=3, frame_shape=(200, 300), channels=channels, rng=rng)
    survey = make_frame_survey(**recipe)
    frames_dir = write_frame_survey(survey, out / "frames")
    options = dict(DEMO_DEFAULTS, **options)
    html = options.get("html_report", True)
    # one progress bar over both runs: the plain run is the quick one
    # its page is drawn once, below, with the demo's measures and the plain run beside it
    result = run_grid_mode(frames_dir, out, scaled_callback(progress_callback, 0, 80),
                           **dict(options, html_report=False))
    plain = run_grid_mode(frames_dir, out / "plain", scaled_callback(progress_callback, 80, 100),
                          **dict(options, frame_photometry=False, photometry=False,
                                 background=False, blend="none"))
    boxes = [BBox(*t["bbox"]) for t in result.report["tiles"]]
    demo = {"harmonized": mosaic_quality(survey, result.mosaic, boxes),
            "plain": mosaic_quality(survey, plain.mosaic, boxes),
            "injected": survey.info, "frames_dir": str(frames_dir), "survey": recipe}
    extra = {"demo": demo}
    if html:  # the page the run left to the demo
        result.html = result.report_path.with_suffix(".html")
        extra["outputs"] = dict(result.report["outputs"], html=str(result.html))
        extra["options"] = dict(result.report["options"], html_report=True)
    result.report = write_json(result.report_path, dict(result.report, **extra))
    if html:
        write_html_report(result.html, result.report, [
            ("plain run: every correction off", plain.previews["mosaic"]),
            ("harmonized", result.previews["mosaic"])], title="Grid/Survey mode demo")
    for name in ("plain", "harmonized"):
        q = demo[name]
        grid_info(logger, "demo %s: seam metric %.2f at tile borders, %.2f at frame borders "
                  "(1 = seamless); frame offsets spread %.2f sigma", name,
                  q["seam_tile_borders"], q["seam_frame_borders"],
                  q["frame_offset_spread_sigma"])
    return result


def demo_summary(result):
    """The lines the command line prints after the demo: outputs and the quality table."""
    page = [] if result.html is None else [f"page:    {result.html} (open it in a browser)"]
    return "\n".join([f"mosaic:  {result.mosaic}", f"preview: {result.preview}",
                      f"report:  {result.report_path}", *page, "seam metric: 1 = seamless; "
                      "frame offsets: spread between the frames' regions of the mosaic",
                      demo_quality_table(result.report["demo"])])
