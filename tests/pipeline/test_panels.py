"""Panels from any stacker (photometry_graph.pipeline.panels): found, read, gridded, tiled."""

import logging

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from photometry_graph.core.tiles import BBox
from photometry_graph.core.wcsgrid import celestial_pixel_scale, transform_pixels
from photometry_graph.datasets import make_panel_set, write_panel_set
from photometry_graph.pipeline.fileio import load_tiles
from photometry_graph.pipeline.options import GridModeError
from photometry_graph.pipeline.outputs import tile_header
from photometry_graph.pipeline.panels import (Panel, find_fits_files, integer_offset,
                                              is_project_tile, panel_grid, read_panel,
                                              read_reference, scan_panels, write_panel_tiles)

from conftest import celestial_header


@pytest.fixture(scope="module")
def panel_set():
    return make_panel_set(1, 2, panel_shape=(80, 120), channels=3, rng=3)


def test_find_fits_files_lists_images_not_weights_nor_hidden_files(tmp_path):
    for name in ["b.fits", "a.FIT", "c.fts", "a.weight.fits", ".hidden.fits", "notes.txt",
                 "d.fits.gz", "e.fits.fz", "e.weight.fits.fz", "f.txt.gz"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_fits_files(tmp_path)] == ["a.FIT", "b.fits", "c.fts",
                                                           "d.fits.gz", "e.fits.fz"]
    assert [p.name for p in find_fits_files([tmp_path / "c.fts", tmp_path / "b.fits"])] == [
        "c.fts", "b.fits"]
    with pytest.raises(GridModeError, match="does not exist"):
        find_fits_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GridModeError, match="no tile file .* nor any other FITS file"):
        find_fits_files(tmp_path / "empty")


def test_find_fits_files_leaves_out_compressed_copies_beside_their_panels(tmp_path, caplog):
    # fpack and gzip keep the file they compress: X.fits.fz beside X.fits is the same panel
    for name in ["p.fits", "p.fits.fz", "p.weight.fits", "q.FITS", "q.FITS.gz", "r.fits.fz"]:
        (tmp_path / name).write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        names = [p.name for p in find_fits_files(tmp_path)]
    assert names == ["p.fits", "q.FITS", "r.fits.fz"]
    assert "[GRID] 2 compressed copies of FITS files beside them left out" in caplog.text
    # files named one by one are taken as they are
    assert [p.name for p in find_fits_files([tmp_path / "p.fits", tmp_path / "p.fits.fz"])] \
        == ["p.fits", "p.fits.fz"]


def test_project_tiles_are_recognised_by_their_keywords(tmp_path):
    w = WCS(celestial_header((20, 30)))
    fits.PrimaryHDU(np.ones((20, 30), np.float32),
                    tile_header(w, BBox(0, 20, 0, 30), 1, (20, 30), 3)).writeto(tmp_path / "t.fits")
    fits.PrimaryHDU(np.ones((20, 30), np.float32), celestial_header((20, 30))).writeto(
        tmp_path / "p.fits")
    (tmp_path / "x.fits").write_text("not fits")
    assert [is_project_tile(tmp_path / n) for n in ("t.fits", "p.fits", "x.fits")] == [
        True, False, False]


def test_panel_files_are_read_with_their_weight(tmp_path, panel_set):
    for mode in ("extension", "sidecar"):
        paths = write_panel_set(panel_set, tmp_path / mode, weights=mode)
        for k, path in enumerate(paths):
            p = read_panel(path, index=k)
            assert p.n_channels == 3 and p.shape == panel_set.frames[k].shape
            assert p.layout == ("chw", "hwc")[k]
            data, weight = p.pixels()
            truth = panel_set.frames[k]
            inner = truth.valid & np.isfinite(data).all(axis=2)
            np.testing.assert_array_equal(data[inner], truth.data[inner])
            assert weight is not None and set(np.unique(weight[inner])) == {10.0 + k}
            assert not np.isfinite(data[~truth.valid]).any()  # NaN and zero borders alike


def test_a_tile_compressed_panel_and_weight_file_are_read(tmp_path):
    # fpack's .fits.fz: the image is in the second HDU, and the weight file of X.fits.fz is
    # X.weight.fits.fz (of X.fits, X.weight.fits.fz too)
    data = np.arange(20 * 30, dtype=np.float32).reshape(20, 30) + 1
    weight = np.full((20, 30), 3.0, np.float32)
    for name, wname in (("p.fits.fz", "p.weight.fits.fz"), ("q.fits", "q.weight.fits.fz")):
        image = (fits.CompImageHDU(data, celestial_header((20, 30)), quantize_level=0)
                 if name.endswith(".fz") else fits.PrimaryHDU(data, celestial_header((20, 30))))
        fits.HDUList([fits.PrimaryHDU()] * name.endswith(".fz") + [image]).writeto(
            tmp_path / name)
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(weight, quantize_level=0)]
                     ).writeto(tmp_path / wname)
        pixels, w = read_panel(tmp_path / name).pixels()
        np.testing.assert_array_equal(pixels[1:-1, 1:-1, 0], data[1:-1, 1:-1])
        assert w is not None and np.all(w == 3.0)


def test_a_weight_file_of_another_shape_is_ignored_with_a_warning(tmp_path, caplog):
    fits.PrimaryHDU(np.ones((20, 30), np.float32), celestial_header((20, 30))).writeto(
        tmp_path / "p.fits")
    fits.PrimaryHDU(np.ones((10, 30), np.float32)).writeto(tmp_path / "p.weight.fits")
    with caplog.at_level(logging.WARNING):
        p = read_panel(tmp_path / "p.fits")
    assert p.weight is None and "ignoring the weight file" in caplog.text
    assert "p.weight.fits" in caplog.text


def test_unusable_files_are_skipped_with_a_warning_naming_file_and_reason(tmp_path, caplog):
    good = [tmp_path / "good1.fits", tmp_path / "good2.fits"]
    for path in good:
        fits.PrimaryHDU(np.random.default_rng(0).normal(10, 1, (20, 30)).astype(np.float32),
                        celestial_header((20, 30))).writeto(path)
    fits.PrimaryHDU(np.ones((20, 30), np.float32)).writeto(tmp_path / "nowcs.fits")
    fits.PrimaryHDU(np.full((20, 30), np.nan, np.float32),
                    celestial_header((20, 30))).writeto(tmp_path / "empty.fits")
    (tmp_path / "junk.fits").write_text("not fits")
    fits.PrimaryHDU(np.ones((3, 20, 30), np.float32), celestial_header((20, 30))).writeto(
        tmp_path / "rgb.fits")
    with caplog.at_level(logging.WARNING):
        panels = scan_panels(find_fits_files(tmp_path))
    assert [p.name for p in panels] == list(map(str, good))
    assert [p.index for p in panels] == [0, 1]
    text = caplog.text
    assert "empty.fits: it holds no usable pixel" in text
    assert "nowcs.fits: it has no celestial WCS" in text
    assert "junk.fits: it is not a readable FITS image" in text
    assert "rgb.fits: 3 channel(s) while most panels have 1" in text
    with pytest.raises(GridModeError, match="no usable panel left: 1 listed"):
        scan_panels([tmp_path / "junk.fits"])


def test_panels_from_arrays_in_any_layout_give_the_same_pixels(panel_set):
    f = panel_set.frames[0]
    hwc = Panel.from_array(0, f.data, f.wcs).pixels()[0]
    chw = Panel.from_array(0, np.moveaxis(f.data, -1, 0), f.header).pixels()[0]
    np.testing.assert_array_equal(hwc, chw)
    assert Panel.from_array(0, f.data[..., 1], f.wcs).pixels()[0].shape == f.shape + (1,)
    with pytest.raises(GridModeError, match="celestial"):
        Panel.from_array(0, f.data, WCS(naxis=2))
    with pytest.raises(GridModeError, match="weight"):
        Panel.from_array(0, f.data, f.wcs, weight=np.ones((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        Panel.from_array(0, np.ones((4, 5, 6, 7)), f.wcs)


def test_the_optimal_grid_is_north_up_and_covers_every_panel(panel_set):
    panels = [Panel.from_array(k, f.data, f.wcs) for k, f in enumerate(panel_set.frames)]
    wcs, shape, info = panel_grid(panels)
    assert info["kind"] == "optimal" and wcs.wcs.ctype[0] == "RA---TAN"
    cd = wcs.pixel_scale_matrix
    assert cd[0, 1] == 0 and cd[1, 0] == 0 and cd[1, 1] > 0  # north up
    median = np.median([celestial_pixel_scale(f.wcs) for f in panel_set.frames])
    assert celestial_pixel_scale(wcs) == pytest.approx(median)
    for f in panel_set.frames:
        H, W = f.shape
        gx, gy = transform_pixels(f.wcs, wcs, np.array([-0.5, W - 0.5, -0.5, W - 0.5]),
                                  np.array([-0.5, -0.5, H - 0.5, H - 0.5]))
        assert gx.min() >= -0.5 and gy.min() >= -0.5
        assert gx.max() <= shape[1] - 0.5 and gy.max() <= shape[0] - 0.5
    wcs2, _, info2 = panel_grid(panels, pixel_scale=3.0)
    assert info2["kind"] == "optimal" and celestial_pixel_scale(wcs2) * 3600 == pytest.approx(3)


def test_a_reference_grid_is_kept_as_given_or_extended_to_the_panels(panel_set, tmp_path):
    panels = [Panel.from_array(k, f.data, f.wcs) for k, f in enumerate(panel_set.frames)]
    ref = panel_set.frames[1].wcs
    wcs, shape, info = panel_grid(panels, reference=ref, shape=(50, 70))
    assert info["kind"] == "reference" and shape == (50, 70) and wcs.pixel_shape == (70, 50)
    wcs, shape, info = panel_grid(panels, reference=ref)
    off = integer_offset(ref, panel_set.frames[1].shape, wcs)
    assert off is not None and min(off) >= 0  # pixel-aligned with the reference
    assert shape[0] > panel_set.frames[1].shape[0] and shape[1] > panel_set.frames[1].shape[1]
    with pytest.raises(GridModeError, match="not both"):
        panel_grid(panels, reference=ref, pixel_scale=2.0)
    with pytest.raises(GridModeError, match="output projection"):
        panel_grid(panels, shape=(10, 10))
    fits.PrimaryHDU(np.zeros((50, 70), np.float32), ref.to_header()).writeto(tmp_path / "r.fits")
    rw, rshape = read_reference(tmp_path / "r.fits")
    assert rshape == (50, 70) and np.allclose(rw.wcs.crval, ref.wcs.crval)
    (tmp_path / "bad.fits").write_text("x")
    with pytest.raises(GridModeError, match="reference .*bad.fits cannot be used"):
        read_reference(tmp_path / "bad.fits")


def _aligned_panels(rng):
    """Three mono panels cut from one image on one TAN grid, NaN borders, one with weights."""
    hdr = celestial_header((200, 300), kind="cdelt")
    sky = rng.normal(100, 1, (200, 300)).astype(np.float32)
    cuts = [(0, 90, 0, 140), (60, 200, 0, 150), (30, 170, 120, 300)]
    panels = []
    for k, (y0, y1, x0, x1) in enumerate(cuts):
        data = sky[y0:y1, x0:x1].copy()
        data[:3] = np.nan
        w = WCS(hdr).deepcopy()
        w.wcs.crpix = [w.wcs.crpix[0] - x0, w.wcs.crpix[1] - y0]
        weight = np.full(data.shape, 5.0, np.float32) if k == 2 else None
        panels.append(Panel.from_array(k, data, w, weight=weight))
    return sky, cuts, panels


def test_pixel_aligned_panels_keep_their_grid_and_are_copied_not_resampled(tmp_path):
    sky, cuts, panels = _aligned_panels(np.random.default_rng(1))
    wcs, shape, info = panel_grid(panels)
    assert info["kind"] == "aligned" and shape == (200, 300)
    paths, report = write_panel_tiles(panels, wcs, shape, tmp_path)
    assert not any(r["resampled"] for r in report)
    tiles, canvas, _, origin = load_tiles(paths)
    for t, (y0, y1, x0, x1) in zip(tiles, cuts):
        data, mask = t.read(t.bbox)
        yy, xx = np.nonzero(mask)
        got = data[yy, xx, 0]
        np.testing.assert_array_equal(got, sky[yy + t.bbox.y0 + origin[0],
                                                xx + t.bbox.x0 + origin[1]])
    assert np.unique(np.asarray(tiles[2].coverage)[tiles[2].mask]).tolist() == [5.0]


def test_resampled_tiles_match_the_truth_and_carry_the_panel_weight(tmp_path, panel_set):
    panels = [Panel.from_array(k, f.data, f.wcs, weight=np.where(f.valid, 2.0 + k, 0.0))
              for k, f in enumerate(panel_set.frames)]
    wcs, shape, _ = panel_grid(panels)
    paths, report = write_panel_tiles(panels, wcs, shape, tmp_path)
    assert all(r["resampled"] for r in report) and len(paths) == 2
    for path, f, r in zip(paths, panel_set.frames, report):
        with fits.open(path) as hdul:
            assert hdul[0].header["PANEL"] == "input %d" % (r["tile_id"] - 1)
            data, cov = np.moveaxis(hdul[0].data, 0, -1), hdul["COVERAGE"].data
        box = r["bbox"]
        valid = np.isfinite(data).all(axis=2)
        assert (cov[valid] == r["tile_id"] + 1.0).all() and (cov[~valid] == 0).all()
        truth = panel_set.render_truth(wcs, shape, bbox=box)
        yy, xx = box.coordinates()
        fx, fy = transform_pixels(wcs, f.wcs, xx, yy)
        model = f.model(truth, fx, fy)
        resid = (data - model)[valid]
        assert np.median(np.abs(resid)) < 1.5 * panel_set.noise_sigma


def test_a_panel_off_the_grid_is_skipped_with_a_warning(tmp_path, panel_set, caplog):
    panels = [Panel.from_array(k, f.data, f.wcs) for k, f in enumerate(panel_set.frames)]
    ref = panel_set.frames[0].wcs
    with caplog.at_level(logging.WARNING):
        paths, report = write_panel_tiles(panels, ref, (20, 20), tmp_path)
    assert len(paths) == 1 and report[1]["bbox"] is None
    assert "skipping input 1: no valid pixel on the output grid" in caplog.text


def test_tile_photometry_fits_large_overlaps_on_block_means():
    from photometry_graph.datasets import make_faint_tile_survey
    from photometry_graph.pipeline.options import resolve_options
    from photometry_graph.pipeline.panels import TILE_FIT_BIN, tile_photometry

    s = make_faint_tile_survey(4, rows=2, cols=2, tile_size=480, overlap=0.25)
    shape = (max(t.bbox.y1 for t in s.tiles), max(t.bbox.x1 for t in s.tiles))
    result, corrections, report = tile_photometry(s.tiles, shape, resolve_options({}))
    assert report["fit_bin_factor"] == TILE_FIT_BIN == 2
    for _, _, e in result.graph.edges(data=True):  # every overlap (120 px wide) binned
        assert e["fits"][0].n_total <= e["n_valid"] / 4 + 2 * sum(e["bbox"].shape)
    # the gains against the truth (the faint field's tolerance of the tile survey)
    eff = np.array([corrections[t.tile_id].gain[0] for t in s.tiles]) * s.gains[:, 0]
    assert np.abs(eff / np.exp(np.mean(np.log(eff))) - 1).max() < 0.003
    assert report["fits"]["failed"] == 0
