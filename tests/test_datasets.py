import numpy as np
import pytest

from photometry_graph.datasets import make_sky, make_survey
from photometry_graph.core.tiles import BBox


def _corrected(survey, k, corr, origin):
    tile = survey.tiles[k]
    data = tile.get_data().astype(float)
    yy, xx = tile.bbox.coordinates()
    plane = (corr["slope"][k, :, 0] * (xx - origin[0])[..., None]
             + corr["slope"][k, :, 1] * (yy - origin[1])[..., None])
    return corr["gain"][k] * data + corr["offset"][k] + plane


@pytest.mark.parametrize("channels", [1, 3])
def test_expected_corrections_map_every_tile_onto_the_reference(channels):
    s = make_survey(3, 3, tile_size=64, channels=channels, gradient=3.0, rng=5,
                    add_noise=False, dtype=np.float64)
    origin = (10.0, -7.0)
    corr = s.expected_corrections(4, origin=origin)
    ref = s.tiles[4]
    ref_img = _corrected(s, 4, corr, origin)
    assert np.allclose(corr["gain"][4], 1.0) and np.allclose(corr["slope"][4], 0.0)
    for k, tile in enumerate(s.tiles):
        inter = tile.bbox.intersection(ref.bbox)
        if inter.is_empty:
            continue
        a = _corrected(s, k, corr, origin)[inter.slices_in(tile.bbox)]
        b = ref_img[inter.slices_in(ref.bbox)]
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-7)


def test_survey_is_reproducible_and_respects_ranges():
    a = make_survey(2, 3, tile_size=48, rng=11, empty_zones=True, empty_value=np.nan)
    b = make_survey(2, 3, tile_size=48, rng=11, empty_zones=True, empty_value=np.nan)
    assert np.array_equal(a.gains, b.gains)
    assert all(np.array_equal(x.get_data(), y.get_data(), equal_nan=True)
               for x, y in zip(a.tiles, b.tiles))
    assert a.gains.min() >= 0.85 and a.gains.max() <= 1.18
    assert np.abs(a.offsets).max() <= 30.0
    zone = a.info["empty_zones"][0]
    tile = a.tiles[zone]
    assert not tile.mask.all()
    assert np.isnan(tile.get_data()[~tile.mask]).all()
    assert np.isfinite(tile.get_data()[tile.mask]).all()


def test_star_flux_is_conserved_for_subpixel_positions():
    sky = make_sky((64, 64), rng=0, star_density=0, nebulae=0, sky_level=0.0)
    sky.star_x = np.array([31.3]); sky.star_y = np.array([20.8])
    sky.star_flux = np.array([1000.0]); sky.star_color = np.ones((1, 1))
    img = sky.render(BBox(0, 64, 0, 64))[..., 0]
    assert img.sum() == pytest.approx(1000.0, rel=1e-6)
    yy, xx = np.mgrid[:64, :64]
    assert (img * xx).sum() / img.sum() == pytest.approx(31.3, abs=1e-3)
    assert (img * yy).sum() / img.sum() == pytest.approx(20.8, abs=1e-3)


def test_misregistered_tile_is_shifted():
    s = make_survey(2, 2, tile_size=64, rng=3, outlier="misregistered", outlier_tile=0,
                    misregistration=(2, 3), add_noise=False, dtype=np.float64)
    t = s.tiles[0]
    clean = (t.get_data() - s.offsets[0]) / s.gains[0]
    shifted = s.sky.render(BBox(2, 66, 3, 67))
    np.testing.assert_allclose(clean, shifted, atol=1e-6)


def test_bad_arguments_are_rejected_with_a_message():
    with pytest.raises(ValueError, match="outlier"):
        make_survey(2, 2, tile_size=32, outlier="meteor")
    with pytest.raises(ValueError, match="channels"):
        make_sky((10, 10), channels=2)


def test_panel_set_draws_panels_each_on_its_own_grid():
    from photometry_graph.core.wcsgrid import celestial_pixel_scale
    from photometry_graph.datasets import make_panel_set
    s = make_panel_set(rng=2)
    scales = np.array([celestial_pixel_scale(p.wcs) * 3600 for p in s.frames])
    rot = np.degrees([np.arctan2(p.wcs.wcs.cd[0, 1], -p.wcs.wcs.cd[0, 0]) for p in s.frames])
    assert len(s.frames) == 6 and s.info["kind"] == "panels"
    assert np.abs(scales / 2.0 - 1).max() == pytest.approx(0.1) and np.ptp(scales) > 0.1
    assert np.abs(rot).max() == pytest.approx(20.0) and np.allclose(rot, s.info["rotations_deg"])
    assert len({p.shape for p in s.frames}) == 6
    gains = np.array([p.gain for p in s.frames])
    assert gains.min() >= 0.85 and gains.max() <= 1.15 and np.ptp(gains) > 0.1
    for k, p in enumerate(s.frames):
        border = p.data[~p.valid]
        assert 0.01 < (~p.valid).mean() < 0.3
        assert np.isnan(border).all() if k % 2 == 0 else (border == 0).all()
        assert np.isfinite(p.data[p.valid]).all()


def test_panel_pixels_are_the_truth_through_their_own_photometry():
    from photometry_graph.datasets import make_panel_set
    s = make_panel_set(1, 2, panel_shape=(60, 90), rng=4, add_noise=False)
    for p in s.frames:
        truth = s.render_truth(p.wcs, p.shape)
        yy, xx = np.mgrid[:p.shape[0], :p.shape[1]]
        model = p.model(truth, xx, yy)[..., 0]
        np.testing.assert_allclose(p.data[p.valid], model[p.valid], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("weights", [None, "extension", "sidecar"])
def test_write_panel_set_writes_layouts_and_weights(tmp_path, weights):
    from astropy.io import fits
    from photometry_graph.datasets import make_panel_set, write_panel_set
    s = make_panel_set(1, 2, panel_shape=(40, 60), channels=3, rng=0)
    paths = write_panel_set(s, tmp_path, weights=weights)
    shapes = [fits.getdata(p).shape for p in paths]
    assert shapes == [(3,) + s.frames[0].shape, s.frames[1].shape + (3,)]
    with fits.open(paths[0]) as hdul:
        assert (len(hdul) == 2) == (weights == "extension")
        assert hdul[0].header["PANELIDX"] == 0 and hdul[0].header["CTYPE1"] == "RA---TAN"
    sidecar = tmp_path / "panel_2.weight.fits"
    assert sidecar.exists() == (weights == "sidecar")
    if weights == "sidecar":
        np.testing.assert_array_equal(fits.getdata(sidecar) > 0, s.frames[1].valid)
    with pytest.raises(ValueError, match="weights"):
        write_panel_set(s, tmp_path, weights="alpha")


def test_session_frames_follow_their_injected_gain_offset_gradient_and_noise():
    from photometry_graph.datasets import make_session

    s = make_session(14, frame_shape=(80, 120), pointings=(1, 2), rng=3, star_density=0,
                     saturated_stars=0, trails=1, dither=4.0, rotation_deg=(-8, 8))
    assert len(s.frames) == 14 and [p["pointing"] for p in s.params[:4]] == [0, 1, 0, 1]
    assert s.params[0]["rotation_deg"] == pytest.approx(-8) and \
        s.params[-1]["rotation_deg"] == pytest.approx(8)
    assert sum(p["trail"] for p in s.params) == 1
    H, W = 80, 120
    xx = np.arange(W) - (W - 1) / 2.0
    yy = np.arange(H) - (H - 1) / 2.0
    for k in (2, 9):
        p, f = s.params[k], s.frames[k]
        assert f.data.dtype == np.uint16 and f.data.shape == (H, W)
        assert np.array_equal(f.data, s.frames[k].data)  # rendered the same every time
        if p["trail"]:
            continue
        truth = s.render_truth(p["wcs"], (H, W))[..., 0]
        model = (p["gain"][0] * truth + p["offset"][0] + p["slope"][0, 0] * xx[None, :]
                 + p["slope"][0, 1] * yy[:, None])
        resid = f.data - model
        assert abs(np.mean(resid)) < 4 * p["noise"] / np.sqrt(resid.size)
        assert np.std(resid) == pytest.approx(np.hypot(p["noise"], 12 ** -0.5), rel=0.05)
