"""Grid/Survey mode end to end on synthetic plate-solved frames with known truth.

Each survey: 6 frames of 200x300 px (2 x 3, 30 % overlap, rotated by up to 3 degrees),
injected per-frame gain (+-15 %), offset (+-30 sigma), planar gradient (3 sigma peak to
peak), zero-valued empty borders, a NaN blob and a satellite trail; tiles of 256 px.
"""

import hashlib
import logging
import os
import re
import warnings

import cv2
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

import grid_mode
from photometry_graph.pipeline import assemble as assemble_stage
from photometry_graph.pipeline.demo import mosaic_quality, write_frame_survey
from photometry_graph.pipeline.images import frame_pixels
from photometry_graph.datasets import make_frame_survey
from photometry_graph.core.tiles import BBox
from photometry_graph.core.wcsgrid import transform_pixels

FAST = dict(tile_size=256, overlap=0.25, workers=1)
LEVELS = {"INFO", "WARN", "ERROR", "DEBUG"}


def _hash_tree(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _read_mosaic(path):
    with fits.open(path) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = hdul[0].data.astype(np.float64)
        wcs = WCS(hdul[0].header).celestial
    img = data[..., None] if data.ndim == 2 else np.moveaxis(data, 0, -1)
    return img, wcs


class Run:
    """A survey written to disk and the Grid mode run on it."""

    def __init__(self, tmp_path_factory, channels, seed, **options):
        root = tmp_path_factory.mktemp(f"grid_{channels}")
        self.survey = make_frame_survey(2, 3, frame_shape=(200, 300), channels=channels,
                                        rng=seed)
        self.frames_dir = write_frame_survey(self.survey, root / "frames")
        self.before = _hash_tree(self.frames_dir)
        self.result = grid_mode.run_grid_mode(self.frames_dir, root / "out",
                                              **dict(FAST, **options))
        self.after = _hash_tree(self.frames_dir)
        self.img, self.wcs = _read_mosaic(self.result.mosaic)
        self.shape = self.img.shape[:2]
        yy, xx = np.mgrid[:self.shape[0], :self.shape[1]].astype(np.float64)
        self.xx, self.yy = xx, yy
        self.truth = self.survey.render_truth(self.wcs, self.shape)
        self.smooth = self.survey.render_truth(self.wcs, self.shape, stars=False)
        self.tiles = [BBox(*t["bbox"]) for t in self.result.report["tiles"]]

    def frame_coords(self, frame):
        return transform_pixels(self.wcs, frame.wcs, self.xx, self.yy)

    def valid_union(self):
        """Mosaic pixels that fall on a valid pixel of at least one frame."""
        union = np.zeros(self.shape, bool)
        for f in self.survey.frames:
            fx, fy = self.frame_coords(f)
            ix, iy = np.rint(np.nan_to_num(fx, nan=-9)), np.rint(np.nan_to_num(fy, nan=-9))
            inside = (ix >= 0) & (ix < f.shape[1]) & (iy >= 0) & (iy < f.shape[0])
            valid = np.zeros(self.shape, bool)
            valid[inside] = f.valid[iy[inside].astype(int), ix[inside].astype(int)]
            union |= valid
        return union

    def residual(self):
        """Mosaic minus (alpha truth + beta + plane), fitted per channel on star-free pixels.

        The plane is the mosaic-wide freedom left by the reference frame's own gradient.
        """
        ok = np.isfinite(self.img).all(2) & np.isfinite(self.truth).all(2)
        calm = ok & (np.abs(self.truth - self.smooth).max(2) < 0.05)
        terms = [np.ones(self.shape), self.xx / self.shape[1], self.yy / self.shape[0]]
        res, self.alpha = np.full(self.img.shape, np.nan), np.ones(self.img.shape[2])
        fit = calm
        for _ in range(2):  # the second fit leaves out the outliers (the trail)
            for c in range(self.img.shape[2]):
                cols = [self.truth[..., c]] + terms
                A = np.column_stack([t[fit] for t in cols])
                coef = np.linalg.lstsq(A, self.img[..., c][fit], rcond=None)[0]
                self.alpha[c] = coef[0]
                res[..., c] = self.img[..., c] - sum(k * t for k, t in zip(coef, cols))
            with np.errstate(invalid="ignore"):
                fit = calm & (np.abs(res) < 5 * self.survey.noise_sigma).all(2)
        trail = np.zeros(self.shape, bool)
        for f in self.survey.frames:  # the trail is a legitimate outlier where < 3 frames
            if f.has_trail:
                fx, fy = self.frame_coords(f)
                trail |= (fx >= 0) & (fx < f.shape[1]) & (fy >= 0) & (fy < f.shape[0])
        return res, calm, trail


@pytest.fixture(scope="module", params=[1, 3, "bayer"], ids=["mono", "rgb", "bayer"])
def run(request, tmp_path_factory):
    return Run(tmp_path_factory, request.param, seed=3)


def test_inputs_are_never_modified(run):
    assert run.before == run.after and len(run.before) == 7


def test_mosaic_covers_the_union_of_the_frames_without_holes(run):
    union = run.valid_union()
    finite = np.isfinite(run.img).all(2)
    square = np.ones((3, 3), bool)
    # 1 px frame-edge erosion + 1 px bilinear footprint + 1 px rasterising the rotated union
    inner = ndimage.binary_erosion(union, square, iterations=4)
    assert inner.sum() > 0.8 * union.sum()
    assert finite[inner].all()
    outside = ~ndimage.binary_dilation(union, square, iterations=3)
    assert not finite[outside].any()  # NaN where no frame has data


def test_mosaic_coverage_equals_the_union_of_the_valid_frame_pixels(run):
    """Every mosaic pixel whose centre lies within half a pixel of a valid frame pixel's
    centre (the pixels the pipeline reads as valid) has a value: no rim is lost around
    the frames' empty borders, NaN blob or edges, whatever the rotation."""
    layout = {1: "mono", 3: "hwc", "bayer": "bayer"}[run.survey.channels]
    union = np.zeros(run.shape, bool)
    for f in run.survey.frames:
        data, _ = frame_pixels(f.data, layout, f.bayer_pattern)
        valid = np.isfinite(data).all(axis=2)
        fx, fy = run.frame_coords(f)
        ix, iy = np.rint(np.nan_to_num(fx, nan=-9)), np.rint(np.nan_to_num(fy, nan=-9))
        inside = (ix >= 0) & (ix < f.shape[1]) & (iy >= 0) & (iy < f.shape[0])
        on = np.zeros(run.shape, bool)
        on[inside] = valid[iy[inside].astype(int), ix[inside].astype(int)]
        union |= on
    finite = np.isfinite(run.img).all(2)
    assert (finite & union).sum() >= 0.9999 * union.sum()
    assert not (finite & ~ndimage.binary_dilation(union)).any()


def test_stars_land_where_the_wcs_says(run):
    sky = run.survey.sky
    sx, sy = transform_pixels(run.survey.truth_wcs, run.wcs, sky.star_x, sky.star_y)
    sigma = sky.fwhm / 2.3548
    peak = sky.star_flux * sky.star_color.mean(1) / (2 * np.pi * sigma ** 2)
    img = run.img.sum(2)
    finite = np.isfinite(img)
    errors = []
    for k in np.flatnonzero(peak > 40 * run.survey.noise_sigma):
        d = np.hypot(sx - sx[k], sy - sy[k])
        if np.any((d > 0) & (d < 12) & (peak > 0.02 * peak[k])):
            continue  # not isolated
        x0, y0 = int(round(sx[k])), int(round(sy[k]))
        if not (12 <= x0 < run.shape[1] - 12 and 12 <= y0 < run.shape[0] - 12):
            continue
        win = img[y0 - 10:y0 + 11, x0 - 10:x0 + 11]
        if not finite[y0 - 10:y0 + 11, x0 - 10:x0 + 11].all():
            continue
        yy, xx = np.mgrid[-10:11, -10:11]
        r = np.hypot(xx + x0 - sx[k], yy + y0 - sy[k])
        ring = win[(r > 7) & (r < 10)]
        bg = np.median(ring)
        if np.abs(ring - bg).max() > 8 * run.survey.noise_sigma:
            continue  # the trail or another source crosses the background annulus
        ap = r < 4.5
        w = (win - bg)[ap]
        cx = (w * (xx[ap] + x0)).sum() / w.sum()
        cy = (w * (yy[ap] + y0)).sum() / w.sum()
        errors.append(np.hypot(cx - sx[k], cy - sy[k]))
    errors = np.array(errors)
    assert len(errors) >= 5
    assert errors.max() < 0.3 and np.median(errors) < 0.1


def test_injected_photometric_errors_are_removed(run):
    noise = run.survey.noise_sigma
    res, calm, trail = run.residual()
    good = calm & ~ndimage.binary_dilation(trail & (np.abs(res).max(2) > 2 * noise),
                                           iterations=4)
    # offsets: blocks of 40 px over the whole mosaic, relative to one global fit
    medians = []
    for y in range(0, run.shape[0] - 39, 40):
        for x in range(0, run.shape[1] - 39, 40):
            sel = good[y:y + 40, x:x + 40]
            if sel.sum() > 400:
                medians.append(np.median(res[y:y + 40, x:x + 40][sel], axis=0))
    medians = np.array(medians) / noise
    assert len(medians) > 50
    assert np.abs(medians).max() <= 0.3
    # local gains per frame region (the measure asked for): the residual regressed on the
    # smooth truth (with a local plane), relative to the median region, where the truth has
    # >= 3 sigma of non-planar range (often only one region per colour channel qualifies)
    local = {}
    for f in run.survey.frames:
        fx, fy = run.frame_coords(f)
        region = good & (fx > 2) & (fx < f.shape[1] - 3) & (fy > 2) & (fy < f.shape[0] - 3)
        for c in range(run.img.shape[2]):
            t = run.smooth[..., c][region]
            A = np.column_stack([t, np.ones_like(t), run.xx[region], run.yy[region]])
            flat = t - A[:, 1:] @ np.linalg.lstsq(A[:, 1:], t, rcond=None)[0]
            if flat.std() > 3 * noise:
                delta = np.linalg.lstsq(A, res[..., c][region], rcond=None)[0][0]
                local.setdefault(c, []).append(delta / run.alpha[c])
    spread = [np.abs(np.array(v) - np.median(v)).max() for v in local.values() if len(v) > 1]
    assert all(s <= 0.005 for s in spread)
    assert spread or run.survey.channels != 1
    # and per frame against the injected gains: corrected gain x injected gain is the same
    # for every frame.  Measured with benchmarks/frame_gains.py (max deviation from the median
    # frame, 200x300 frames): mono 0.22-0.44 % (seeds 1-10), RGB 0.38-0.86 % (seeds 1-6),
    # Bayer 0.74-2.81 % (seeds 1-5); without noise (seeds 1-5) <= 0.03 % (mono, RGB) and
    # <= 0.15 % (Bayer).  The frame solve is limited by the noise in the small overlaps (G
    # and B hold fainter nebulae; Bayer R and B have a quarter of the samples), so for colour
    # frames the 0.5 % target is met on larger frames
    # (test_colour_frame_gains_within_half_a_percent_on_larger_frames).  Seed 3: 0.30, 0.75,
    # 1.39 % (the limits leave room for other BLAS/OpenCV builds).
    injected = np.array([f.gain for f in run.survey.frames])
    solved = np.array([f["correction"]["gain"] for f in run.result.report["frames"]])
    product = solved * injected
    worst = np.abs(product / np.median(product, axis=0) - 1).max()
    assert worst <= {1: 0.005, 3: 0.0125, "bayer": 0.02}[run.survey.channels]
    # offsets per frame region and seams (frame borders inside tiles, tile borders)
    q = mosaic_quality(run.survey, run.result.mosaic, run.tiles)
    assert q["frame_offset_max_sigma"] <= 0.3
    assert q["seam_tile_borders"] <= 1.2 and q["seam_frame_borders"] <= 1.2


@pytest.mark.parametrize("channels, shape", [(3, (400, 600)), ("bayer", (600, 900))],
                         ids=["rgb", "bayer"])
def test_colour_frame_gains_within_half_a_percent_on_larger_frames(tmp_path, channels, shape):
    # The same survey (injected gains +-15 % per frame and channel, offsets, gradients, empty
    # borders, NaN blob, trail) on frames large enough for the overlaps to pin every colour
    # gain.  Worst frame over seeds 1-5 (benchmarks/frame_gains.py): RGB 400x600 0.17-0.29 %,
    # Bayer 600x900 0.19-0.45 % (Bayer R and B have a quarter of the samples); RGB 600x900
    # 0.10-0.26 %, Bayer 800x1200 0.15-0.27 %.  Seed 3: 0.22 % and 0.19 %.
    survey = make_frame_survey(2, 3, frame_shape=shape, channels=channels, rng=3)
    frames_dir = write_frame_survey(survey, tmp_path / "frames")
    result = grid_mode.run_grid_mode(frames_dir, tmp_path / "out", tile_size=1024,
                                     overlap=0.25, workers=1)
    injected = np.array([f.gain for f in survey.frames])
    solved = np.array([f["correction"]["gain"] for f in result.report["frames"]])
    assert solved.shape == injected.shape == (6, 3)
    product = solved * injected
    assert np.abs(product / np.median(product, axis=0) - 1).max() <= 0.005


def test_zero_valued_borders_never_darken_the_mosaic(run):
    res, calm, _ = run.residual()
    finite = np.isfinite(res).all(2)
    edge_band = np.zeros(run.shape, bool)
    for f in run.survey.frames:
        if f.valid.all():
            continue
        fx, fy = run.frame_coords(f)
        inside = (fx >= 0) & (fx < f.shape[1] - 1) & (fy >= 0) & (fy < f.shape[0] - 1)
        ix, iy = np.rint(np.where(inside, fx, 0)).astype(int), np.rint(np.where(inside, fy, 0)
                                                                    ).astype(int)
        empty = inside & ~f.valid[iy, ix]
        edge_band |= ndimage.binary_dilation(empty, iterations=4) & ~empty
    sel = edge_band & finite & calm
    assert sel.sum() > 200
    assert np.median(res[sel]) > -0.3 * run.survey.noise_sigma
    assert np.percentile(res[sel].mean(1), 1) > -5 * run.survey.noise_sigma


def test_outputs_tiles_and_report(run):
    r = run.result
    C = run.img.shape[2]
    with fits.open(r.mosaic) as hdul:
        assert hdul[0].data.dtype == np.dtype(">f4")
        assert hdul[0].data.shape == (run.shape if C == 1 else (3,) + run.shape)
    with fits.open(r.coverage) as hdul:
        cov = hdul[0].data
        assert cov.shape == run.shape
        finite = np.isfinite(run.img).all(2)
        assert (cov[finite] > 0).all() and (cov[~finite] == 0).all()
        assert 0.5 < cov[finite].min() and cov.max() < 7
    preview = cv2.imread(str(r.preview), cv2.IMREAD_UNCHANGED)
    assert preview.shape[:2] == run.shape and preview.max() > 200
    tiles = sorted(r.tiles_dir.glob("tile_*.fits"))
    assert [t.name for t in tiles][:2] == ["tile_0001.fits", "tile_0002.fits"]
    origin = r.report["mosaic_origin"]
    with fits.open(tiles[1]) as hdul, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hdr = hdul[0].header
        assert hdr["TILEID"] == 2 and hdr["NFRAMES"] >= 2
        tile = hdul[0].data
        assert tile.dtype == np.dtype(">f4") and hdul["COVERAGE"].data.shape == tile.shape[-2:]
        twcs = WCS(hdr).celestial
    y0, x0 = hdr["GRID_Y0"] - origin[0], hdr["GRID_X0"] - origin[1]
    world = twcs.pixel_to_world_values(5.0, 7.0)
    np.testing.assert_allclose(run.wcs.world_to_pixel_values(*world), (x0 + 5.0, y0 + 7.0),
                               atol=1e-6)
    rep = r.report
    for key in ("tiles", "harmonization", "blending", "timings", "options", "frames",
                "frame_photometry", "grid", "outputs"):
        assert key in rep, key
    harm = rep["harmonization"]
    assert harm["edges"] and harm["fits"] and "background" in harm and "residuals" in harm
    assert rep["frame_photometry"]["n_solved"] == 6
    # both gain estimates of every overlap, their sigmas, the star count, the source and
    # the disagreement, frames and tiles alike; the disagreements counted
    frame_est = rep["frame_photometry"]["harmonize"]["gain_estimates"]
    for est in (harm["gain_estimates"], frame_est):
        assert est["estimator"] == "auto" and est["edges"]
        assert est["disagreements"] == sum(e["gain_disagree"] for e in est["edges"])
        assert {"a_pixels", "sigma_a_pixels", "a_stars", "sigma_a_stars", "n_stars",
                "gain_source", "gain_disagree"} <= set(est["edges"][0])
    assert rep["frame_photometry"]["gain_disagreements"] == frame_est["disagreements"]
    assert 1 <= rep["frame_photometry"]["fits_per_frame"] <= 10
    assert rep["blending"]["blend"] == "multiband"


@pytest.fixture(scope="module")
def mono_frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("mono")
    survey = make_frame_survey(2, 3, frame_shape=(200, 300), channels=1, rng=3)
    return survey, write_frame_survey(survey, root / "frames"), root


def test_plain_mode_is_reproducible_coverage_weighted_placement(mono_frames):
    survey, frames, root = mono_frames
    plain = dict(FAST, frame_photometry=False, photometry=False, background=False,
                 blend="none")
    a = grid_mode.run_grid_mode(frames, root / "plain_a", **plain)
    b = grid_mode.run_grid_mode(frames, root / "plain_b", **dict(plain, chunk_size=96))
    img_a, _ = _read_mosaic(a.mosaic)
    img_b, _ = _read_mosaic(b.mosaic)
    assert np.array_equal(img_a, img_b, equal_nan=True)
    # where a single tile covers a pixel the mosaic is that tile, untouched
    origin = a.report["mosaic_origin"]
    boxes = [BBox(*t["bbox"]) for t in a.report["tiles"]]
    with fits.open(a.tiles_dir / "tile_0001.fits") as hdul:
        tile = hdul[0].data.astype(np.float64)
        cov = hdul["COVERAGE"].data
        y0, x0 = hdul[0].header["GRID_Y0"] - origin[0], hdul[0].header["GRID_X0"] - origin[1]
    only = np.ones(tile.shape, bool)
    for bb in boxes[1:]:
        inter = bb.intersection(boxes[0])
        if not inter.is_empty:
            only[inter.slices_in(boxes[0])] = False
    sub = img_a[y0:y0 + tile.shape[0], x0:x0 + tile.shape[1], 0]
    sel = only & (cov > 0) & np.isfinite(tile)
    sel[:1], sel[-1:], sel[:, :1], sel[:, -1:] = False, False, False, False
    assert sel.sum() > 1000 and np.allclose(sub[sel], tile[sel], rtol=0, atol=1e-5)
    # and without the corrections the injected errors are plainly visible
    q = mosaic_quality(survey, a.mosaic, boxes)
    assert q["frame_offset_max_sigma"] > 3 and q["seam_frame_borders"] > 1.5


def test_drop_in_call_with_the_host_keywords_reports_progress(tmp_path, caplog):
    survey = make_frame_survey(2, 2, frame_shape=(160, 240), channels=3, rng=5)
    frames = write_frame_survey(survey, tmp_path / "frames", rgb_layout="hwc")
    calls = []

    def callback(message, progress, level, **extra):
        calls.append((message, progress, level))

    zconfig = type("ZConfig", (), {"grid_tile_size": 192, "grid_overlap": 0.2,
                                   "workers": 1})()
    with caplog.at_level(logging.WARNING):
        res = grid_mode.run_grid_mode(
            str(frames), str(tmp_path / "out"), callback, stack_norm_method="linear_fit",
            stack_weight_method="noise_variance", stack_reject_algo="winsorized_sigma_clip",
            stack_kappa_low=3.0, stack_kappa_high=3.0, winsor_limits=(0.05, 0.05),
            stack_final_combine="mean", apply_radial_weight=True, radial_feather_fraction=0.8,
            radial_shape_power=2.0, save_final_as_uint16=True, legacy_rgb_cube=True,
            grid_rgb_equalize=True, zconfig=zconfig, some_future_option=1)
    assert all(level in LEVELS and msg.startswith("[GRID]") for msg, _, level in calls)
    pct = [p for _, p, _ in calls if p is not None]
    assert len(pct) > 10 and pct == sorted(pct) and pct[0] < 5 and pct[-1] == 100
    assert any(level == "WARN" and "grid_rgb_equalize" in msg for msg, _, level in calls)
    assert any(level == "WARN" and "some_future_option" in msg for msg, _, level in calls)
    assert res.report["options"]["stack_method"] == "winsorized"
    assert res.report["options"]["tile_size"] == 192
    with fits.open(res.mosaic) as hdul:
        cube = hdul[0].data
    assert cube.ndim == 3 and cube.shape[2] == 3  # legacy (H, W, 3)
    with fits.open(res.uint16) as hdul:
        u16 = hdul[0].data
    assert u16.dtype == np.uint16 and u16.shape == cube.shape
    finite = np.isfinite(cube)
    assert u16[~finite].max() == 0 and u16[finite].max() == 65535
    order = np.argsort(cube[finite])[:: max(1, finite.sum() // 500)]
    assert np.all(np.diff(u16[finite][order].astype(int)) >= 0)


def test_failures_raise_a_grid_mode_error_and_reach_the_callback(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.fits").write_text("nope")
    calls = []
    with pytest.raises(grid_mode.GridModeError, match="no usable frame left"):
        grid_mode.run_grid_mode(tmp_path / "in", tmp_path / "out",
                                lambda m, p, lv: calls.append((m, p, lv)))
    assert calls[-1][2] == "ERROR" and "no usable frame" in calls[-1][0]
    assert isinstance(grid_mode.GridModeError("x"), (RuntimeError, ValueError))


def test_bad_frames_among_good_ones_are_skipped(mono_frames, tmp_path, caplog):
    survey, frames, _ = mono_frames
    src = tmp_path / "in"
    src.mkdir()
    lines = [grid_mode.PLAN_HEADER]
    for i, p in enumerate(sorted(frames.glob("frame_*.fits"))):
        (src / p.name).write_bytes(p.read_bytes())
        lines.append(f"{i},1,m,4,t,d,L,10,{p.name},,")
    with fits.open(src / "frame_005.fits") as hdul:  # a frame of another shape: fine
        fits.PrimaryHDU(hdul[0].data[20:170, 10:280], hdul[0].header).writeto(src / "crop.fits")
    with fits.open(src / "frame_005.fits") as hdul:
        hdr = hdul[0].header
        fits.PrimaryHDU(np.zeros((200, 300), np.float32), hdr).writeto(src / "zero.fits")
        fits.PrimaryHDU(np.ones((3, 200, 300), np.float32), hdr).writeto(src / "rgb.fits")
    for name in ("crop.fits", "zero.fits", "rgb.fits", "gone.fits"):
        lines.append(f"9,1,m,4,t,d,L,10,{name},,")
    (src / "stack_plan.csv").write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        res = grid_mode.run_grid_mode(src, tmp_path / "out", **FAST)
    assert len(res.report["frames"]) == 7
    for needle in ("zero.fits: it holds no usable pixel", "rgb.fits: 3 channel(s)",
                   "gone.fits: the file does not exist"):
        assert needle in caplog.text
    assert "Traceback" not in caplog.text


def test_interrupted_run_leaves_no_final_file_and_a_rerun_succeeds(mono_frames, tmp_path,
                                                                  monkeypatch):
    _, frames, _ = mono_frames
    real = assemble_stage.assemble_mosaic

    def failing(*args, sink=None, **kwargs):
        calls = []

        def bad_sink(*a):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt("simulated interruption while writing")
            sink(*a)

        return real(*args, sink=bad_sink, **kwargs)

    monkeypatch.setattr(assemble_stage, "assemble_mosaic", failing)
    with pytest.raises(KeyboardInterrupt):
        grid_mode.run_grid_mode(frames, tmp_path / "out", **dict(FAST, chunk_size=128))
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    # no mosaic, no coverage, no temporary file, no lock: the tiles and their records
    assert names == ["resume", "tiles"]
    monkeypatch.setattr(assemble_stage, "assemble_mosaic", real)
    res = grid_mode.run_grid_mode(frames, tmp_path / "out", **FAST)
    assert res.mosaic.exists() and res.coverage.exists() and res.report_path.exists()
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_process_pool_and_dask_cluster_give_the_same_mosaic(mono_frames, tmp_path, caplog):
    distributed = pytest.importorskip("dask.distributed")
    _, frames, _ = mono_frames
    ref = grid_mode.run_grid_mode(frames, tmp_path / "one", **FAST)
    pool = grid_mode.run_grid_mode(frames, tmp_path / "pool", **dict(FAST, workers=2))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            caplog.at_level(logging.INFO, logger="photometry_graph"):
        caplog.clear()
        dask_run = grid_mode.run_grid_mode(frames, tmp_path / "dask",
                                           **dict(FAST, scheduler=cluster.scheduler_address))
    # on a cluster the binned frames go to the scratch folder (the fits carry readers of
    # their crops, not pixels), which is gone at the end
    assert "binned frames go to" in caplog.text and "the cluster's workers" in caplog.text
    assert not (tmp_path / "dask/.binned_frames").exists()
    pids = {s["worker_pid"] for s in pool.report["tile_stacking"]}
    assert os.getpid() not in pids  # the tiles were stacked by worker processes
    # and the overlap fits of the frame and the tile photometry ran there too
    for stage in ("frame_photometry", "harmonization"):
        assert [r.report[stage]["fit_workers"] for r in (ref, pool, dask_run)] == \
            [1, 2, "cluster"]
    a, _ = _read_mosaic(ref.mosaic)
    for other in (pool, dask_run):
        b, _ = _read_mosaic(other.mosaic)
        assert np.array_equal(a, b, equal_nan=True)


def test_saturated_star_cores_do_not_bias_the_frame_gains(tmp_path):
    # Saturated cores do not scale with a frame's gain: clipped at the same level in every
    # frame they pull the fitted gain ratios towards 1.  The level is found where the
    # brightest pixels pile up (no SATURATE keyword here).  Seed 1, level 150 (0.05 % of the
    # pixels, the cores of the brightest stars): worst frame gain 0.31 % masked, 1.74 %
    # unmasked; seeds 1-3 at level 100: 0.42-0.67 % vs 0.76-2.37 % (400x600 frames;
    # unsaturated 0.12-0.45 %).
    survey = make_frame_survey(2, 3, frame_shape=(400, 600), channels=1, rng=1)
    level = 150.0
    for f in survey.frames:
        f.data = np.minimum(f.data, level)
    frames_dir = write_frame_survey(survey, tmp_path / "frames")
    injected = np.array([f.gain for f in survey.frames])

    def worst(**options):
        result = grid_mode.run_grid_mode(frames_dir, tmp_path / f"out{len(options)}",
                                         tile_size=512, overlap=0.25, workers=1, **options)
        assert all(f["saturation"] == (level if not options else None)
                   for f in result.report["frames"])
        product = np.array([f["correction"]["gain"] for f in result.report["frames"]]) * injected
        return np.abs(product / np.median(product, axis=0) - 1).max()

    assert worst() <= 0.005
    assert worst(saturation=0) > 0.01  # the same frames with the masking switched off


def test_a_star_core_clipped_at_one_pixel_does_not_bias_the_frame_gains(tmp_path):
    # uint16 frames of one field, gains 0.9-1.1, one star bright enough that its core
    # clips at 65535 in one pixel of two frames (too few to pile up).  Its flux ratio,
    # precise for so bright a star, pulled the overlap gains of those frames: worst frame
    # gain 0.50 % and 3 disagreements between the pixel and the star estimates, against
    # 0.08 % and none when the clipped pixel is masked.
    from photometry_graph.datasets import make_session

    session = make_session(6, (300, 400), (1, 1), rng=0, saturated_stars=1, noise_sigma=13.5,
                           gain_range=(0.9, 1.1), trails=0)
    frames_dir = write_frame_survey(session, tmp_path / "frames")
    clipped = [int(np.count_nonzero(fits.getdata(p) == 65535))
               for p in sorted(frames_dir.glob("frame_*.fits"))]
    assert sorted(clipped) == [0, 0, 0, 0, 1, 1]
    injected = np.array([p["gain"][0] for p in session.params])

    def worst(**options):
        result = grid_mode.run_grid_mode(frames_dir, tmp_path / f"out{len(options)}",
                                         workers=1, html_report=False, **options)
        frames = result.report["frames"]
        product = np.array([f["correction"]["gain"][0] for f in frames]) * injected
        return (np.abs(product / np.median(product) - 1).max(),
                result.report["frame_photometry"]["gain_disagreements"],
                [f["saturation"] for f, n in zip(frames, clipped) if n])

    error, disagreements, levels = worst()
    assert error < 0.0015 and disagreements == 0 and levels == [65535.0, 65535.0]
    error, disagreements, levels = worst(saturation=0)  # the clipped pixels left in
    assert error > 0.003 and disagreements > 0 and levels == [None, None]


@pytest.mark.parametrize("channels", [1, "bayer"])
def test_a_small_memory_budget_changes_how_often_frames_are_read_never_the_mosaic(
        tmp_path, caplog, monkeypatch, channels):
    # binned frames beyond the budget go to a scratch folder (the same solve), tiles are
    # stacked band by band with every frame read again (the same pixels): the plan of a
    # budget too small for everything, forced here on frames that fit any budget
    import dataclasses
    survey = make_frame_survey(2, 3, frame_shape=(200, 300), channels=channels, rng=3)
    frames = write_frame_survey(survey, tmp_path / "frames")
    plans = {name: getattr(grid_mode, name) for name in ("plan_memory", "plan_tiles")}
    small = dict(spill=True, stack_bytes=1, assembly_threads=1)
    runs = {}
    for name, change in (("roomy", {}), ("small", small)):
        for stage, plan in plans.items():  # the start's plan, and the tiles' re-plan
            monkeypatch.setattr(grid_mode, stage, lambda *a, change=change, plan=plan, **k:
                                dataclasses.replace(plan(*a, **k), **change))
        with caplog.at_level(logging.INFO, logger="photometry_graph"):
            caplog.clear()
            res = grid_mode.run_grid_mode(frames, tmp_path / name,
                                          **dict(FAST, tile_size=512))
        runs[name] = res, caplog.text
    (roomy, _), (small, text) = runs["roomy"], runs["small"]
    assert "binned frames go to" in text and not (tmp_path / "small/.binned_frames").exists()
    stacks = [t["stack"] for t in small.report["tile_stacking"]]
    assert all(st["streaming"] and st["groups"] == st["bands"] for st in stacks)
    assert max(st["bands"] for st in stacks) > 1
    assert not any(t["stack"]["streaming"] for t in roomy.report["tile_stacking"])
    assert [f["correction"] for f in small.report["frames"]] == \
        [f["correction"] for f in roomy.report["frames"]]
    with fits.open(roomy.mosaic) as a, fits.open(small.mosaic) as b:
        np.testing.assert_array_equal(a[0].data, b[0].data)
    injected = np.array([f.gain for f in survey.frames])
    product = np.array([f["correction"]["gain"] for f in small.report["frames"]]) * injected
    assert np.abs(product / np.median(product, axis=0) - 1).max() < 0.015


def test_a_budget_too_small_is_refused_at_the_start_with_what_it_needs(mono_frames):
    # the memory plan is made from the headers, before any pixel is read or tile written
    survey, frames, root = mono_frames
    with pytest.raises(grid_mode.GridModeError, match=r"memory_mb=40 is too small for these frames: one "
                       r"process needs about \d+ MB.*raise --memory-mb to (\d+)") as exc:
        grid_mode.run_grid_mode(frames, root / "tiny", **dict(FAST, memory_mb=40))
    needed = int(re.search(r"raise --memory-mb to (\d+)", str(exc.value)).group(1))
    assert not list((root / "tiny").glob("tiles/*.fits"))
    # what it said is enough (+20 MB: this test process may have grown in between)
    res = grid_mode.run_grid_mode(frames, root / "enough", **dict(FAST, memory_mb=needed + 20))
    assert res.report["memory_plan"]["start"]["workers"] == 1 and res.mosaic.exists()
