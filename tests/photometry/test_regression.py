import json
import math

import numpy as np
import pytest

from photometry_graph.photometry.regression import (PairwiseFit, fit_ols, fit_pair,
                                                    fit_pair_image, robust_noise_1d)

from overlap_pairs import A_TRUE, B_TRUE, H, W, X0, Y0
from overlap_pairs import grid_coords as _coords, noisy_pair as _pair
from overlap_pairs import sky_signal as _sky_signal, smooth_signal as _smooth_signal


@pytest.mark.parametrize("seed", [0, 1])
def test_ols_is_attenuated_on_sky_dominated_overlap_but_fit_pair_is_not(seed):
    rng = np.random.default_rng(seed)
    # var(s) ~ noise^2: OLS slope ~ a/2; Deming is unbiased, with an honest sigma of ~2 %
    # (statistical, and the systematic of the measured noise ratio) that makes it count little
    x, y = _pair(_smooth_signal(rng, 1.0), rng, noise_y=1.5)
    a_ols, _ = fit_ols(x.ravel(), y.ravel())
    assert a_ols / A_TRUE - 1 < -0.03
    honest = fit_pair(x.ravel(), y.ravel(), coords=_coords())
    assert honest.status == "ok" and honest.gain_source == "pixels"
    assert abs(honest.a - A_TRUE) < 3 * honest.sigma_a
    assert 0.01 < honest.sigma_a / A_TRUE < 0.04 and honest.sigma_a_sys > 0.5 * honest.sigma_a
    # the hard threshold of earlier versions, on request: Deming knows it cannot fit a gain
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords(), min_signal_to_noise=3.0)
    assert fit.status == "offset_only" or abs(fit.a / A_TRUE - 1) < 0.005
    assert fit.status == "offset_only" and "signal" in fit.message
    assert fit.a == 1.0 and math.isinf(fit.sigma_a)
    # the moments still hold the relation: y_mean = a x_mean + b over the same pixels
    assert abs(fit.y_mean - A_TRUE * fit.x_mean - B_TRUE) < 0.05
    assert fit.noise_x == pytest.approx(1.0, rel=0.05)
    assert fit.noise_y == pytest.approx(1.5, rel=0.05)

    # moderate structure (var(s) = 25 noise^2): OLS still 4 % low, Deming accurate
    x, y = _pair(_smooth_signal(rng, 25.0), rng, noise_y=1.5)
    a_ols, _ = fit_ols(x.ravel(), y.ravel())
    assert a_ols / A_TRUE - 1 < -0.03
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords())
    assert fit.status == "ok"
    assert abs(fit.a / A_TRUE - 1) < 0.005


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stars_and_nebulae_give_an_accurate_gain(seed):
    s, _ = _sky_signal(seed)
    rng = np.random.default_rng(100 + seed)
    x, y = _pair(s, rng)
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords())
    assert fit.status == "ok", fit.message
    assert abs(fit.a / A_TRUE - 1) < 0.003
    assert abs(fit.b - B_TRUE) < 0.1
    assert fit.n_total == H * W and fit.n_used > 0.95 * H * W
    assert fit.rms == pytest.approx(math.sqrt(1.0 + A_TRUE ** 2), rel=0.1)


def test_deming_uses_the_noise_ratio():
    """Unequal noise: the given ratio is used; a wrong ratio biases a low-signal fit."""
    rng = np.random.default_rng(7)
    x, y = _pair(_smooth_signal(rng, 36.0), rng, noise_x=0.5, noise_y=2.0)
    good = fit_pair(x.ravel(), y.ravel(), noise_x=0.5, noise_y=2.0)
    wrong = fit_pair(x.ravel(), y.ravel(), noise_x=2.0, noise_y=0.5, max_rel_gain_error=1.0,
                     min_signal_to_noise=0.0)
    assert good.status == "ok"
    assert abs(good.a / A_TRUE - 1) < 0.005
    assert abs(wrong.a / A_TRUE - 1) > 0.02


def test_too_few_pixels_fail_with_a_message():
    rng = np.random.default_rng(0)
    x, y = _pair(_smooth_signal(rng, 100.0, h=10, w=30), rng)
    fit = fit_pair(x.ravel(), y.ravel(), min_pixels=500, src=3, dst=4, channel=2)
    assert fit.status == "failed"
    assert "min_pixels" in fit.message and "300" in fit.message
    assert (fit.a, fit.b, fit.src, fit.dst, fit.channel) == (1.0, 0.0, 3, 4, 2)
    assert math.isinf(fit.sigma_a) and math.isnan(fit.x_mean)
    all_nan = fit_pair(np.full(1000, np.nan), np.ones(1000))
    assert all_nan.status == "failed" and all_nan.n_total == 0


@pytest.mark.parametrize("a_true", [1.0, 1.15])
def test_flat_overlap_is_offset_only_with_right_moments(a_true):
    rng = np.random.default_rng(4)
    flat = np.full((H, W), 20.0)
    x, y = _pair(flat, rng, a=a_true, b=5.0)
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords(), model="plane")
    assert fit.status == "offset_only"
    assert "signal" in fit.message
    # y_mean - a x_mean is the offset difference, whatever a the solve finds
    assert abs(fit.y_mean - a_true * fit.x_mean - 5.0) < 0.05
    assert fit.sigma_y_mean == pytest.approx(1.0 / math.sqrt(fit.n_used), rel=0.1)
    assert np.allclose(fit.x_slope, 0.0, atol=6e-4) and np.allclose(fit.y_slope, 0.0, atol=6e-4)
    assert fit.centroid == pytest.approx((X0 + (W - 1) / 2, Y0 + (H - 1) / 2), abs=1.0)
    if a_true == 1.0:
        assert abs(fit.offset_at(*fit.centroid) - 5.0) < 0.05
        assert abs(fit.b - 5.0) < 3 * fit.sigma_b  # b is at the far origin (0, 0)


def test_plane_model_recovers_the_injected_plane_difference():
    s, _ = _sky_signal(5)
    rng = np.random.default_rng(5)
    coords = _coords()
    origin = (0.0, 0.0)
    q = np.array([0.010, -0.020])      # plane in src, per pixel (d/dx, d/dy)
    k = np.array([-0.015, 0.030])      # plane in dst
    rx = (coords[:, 0] - origin[0]).reshape(H, W)
    ry = (coords[:, 1] - origin[1]).reshape(H, W)
    x = s + q[0] * rx + q[1] * ry + rng.normal(0, 1, s.shape)
    y = A_TRUE * s + B_TRUE + k[0] * rx + k[1] * ry + rng.normal(0, 1, s.shape)
    p_true = k - A_TRUE * q
    fit = fit_pair(x.ravel(), y.ravel(), coords=coords, model="plane", origin=origin)
    assert fit.status == "ok"
    assert abs(fit.a / A_TRUE - 1) < 0.003
    assert abs(fit.px - p_true[0]) < 0.03 * abs(p_true[0])
    assert abs(fit.py - p_true[1]) < 0.03 * abs(p_true[1])
    corners = [(X0, Y0), (X0 + W - 1, Y0), (X0, Y0 + H - 1), (X0 + W - 1, Y0 + H - 1)]
    for cx, cy in corners:
        truth = B_TRUE + p_true[0] * (cx - origin[0]) + p_true[1] * (cy - origin[1])
        assert abs(fit.offset_at(cx, cy) - truth) < 0.05
    # the offset model cannot absorb the plane: its corner values are off
    off = fit_pair(x.ravel(), y.ravel(), coords=coords, model="offset")
    errs = [abs(off.offset_at(cx, cy) - B_TRUE - p_true @ np.array([cx, cy]))
            for cx, cy in corners]
    assert max(errs) > 1.0


def test_large_gain_uncertainty_falls_back_to_offset_only():
    s, _ = _sky_signal(0, h=40, w=40, star_density=5e-4, nebulae=1)
    rng = np.random.default_rng(0)
    x, y = _pair(s, rng)
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords(40, 40), min_pixels=100,
                   min_signal_to_noise=0.0, max_rel_gain_error=1e-4)
    assert fit.status == "offset_only"
    assert "max_rel_gain_error" in fit.message
    assert math.isfinite(fit.sigma_b) and math.isfinite(fit.x_mean)


def test_noise_is_estimated_when_not_given():
    s, _ = _sky_signal(2)
    rng = np.random.default_rng(2)
    x, y = _pair(s, rng, noise_x=1.0, noise_y=2.0)
    perm = rng.permutation(H * W)
    # shuffled pixels with coordinates: neighbours are found from the coordinates
    fit = fit_pair(x.ravel()[perm], y.ravel()[perm], coords=_coords()[perm])
    assert fit.noise_x == pytest.approx(1.0, rel=0.05)
    assert fit.noise_y == pytest.approx(2.0, rel=0.05)
    assert fit.status == "ok" and abs(fit.a / A_TRUE - 1) < 0.003
    # raster order without coordinates
    assert robust_noise_1d(y.ravel()) == pytest.approx(2.0, rel=0.05)
    assert robust_noise_1d(y.ravel()[perm], _coords()[perm]) == pytest.approx(2.0, rel=0.05)


def test_inputs_are_not_modified_and_nans_are_ignored():
    s, _ = _sky_signal(4)
    rng = np.random.default_rng(4)
    x, y = _pair(s, rng)
    x = x.ravel(); y = y.ravel()
    x[:500] = np.nan
    xc, yc = x.copy(), y.copy()
    fit = fit_pair(x, y, coords=_coords())
    assert np.array_equal(x, xc, equal_nan=True) and np.array_equal(y, yc)
    assert fit.n_total == H * W - 500
    assert fit.status == "ok"


def test_bad_arguments_are_rejected():
    x = np.ones(1000)
    with pytest.raises(ValueError, match="model"):
        fit_pair(x, x, model="cubic")
    with pytest.raises(ValueError, match="coords"):
        fit_pair(x, x, model="plane")
    with pytest.raises(ValueError, match="same number"):
        fit_pair(x, x[:10])
    with pytest.raises(ValueError, match="coords"):
        fit_pair(x, x, coords=np.zeros((1000, 3)))
    with pytest.raises(ValueError, match="noise_x"):
        fit_pair(x, x, noise_x=-1.0)
    with pytest.raises(ValueError, match="grow_kappa"):
        fit_pair(x, x, grow_kappa=0.0)
    with pytest.raises(ValueError, match="constant"):
        fit_ols(x, x)


def test_fit_ols_matches_numpy_polyfit():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200); y = 3 * x + 1 + rng.normal(size=200)
    assert fit_ols(x, y) == pytest.approx(tuple(np.polyfit(x, y, 1)), rel=1e-10)


def test_failed_constructor_and_predict():
    f = PairwiseFit.failed("boom", src=1, dst=2, channel=1)
    assert f.status == "failed" and f.message == "boom" and not f.ok
    assert json.dumps(f.to_dict(), allow_nan=False)
    g = PairwiseFit(a=2.0, b=1.0, px=0.5, py=0.0, origin=(10.0, 0.0))
    assert g.predict(np.array([1.0]), x=np.array([12.0]), y=np.array([3.0]))[0] == 4.0
    with pytest.raises(ValueError, match="coordinates"):
        g.predict(np.array([1.0]))


# --------------------------------------------------------------------------- images


def _image_pair(seed, h=256, w=512, gradient=(0.0, 0.0), dtype=np.float32):
    s, _ = _sky_signal(seed, h, w, star_density=1.5e-3)
    rng = np.random.default_rng(seed + 50)
    x, y = _pair(s, rng)
    yy, xx = np.mgrid[:h, :w]
    y = y + gradient[0] * (xx - w / 2) + gradient[1] * (yy - h / 2)
    mask = np.ones((h, w), bool)
    mask[:20, :60] = False                      # an empty corner
    x[:20, :60] = np.nan
    return x.astype(dtype), y.astype(dtype), mask


def test_fit_pair_image_without_subsampling_is_fit_pair_on_all_valid_pixels():
    x, y, mask = _image_pair(3, h=64, w=200)
    img = fit_pair_image(x, y, mask, x0=X0, y0=Y0, noise_x=1.0, noise_y=1.0, model="plane",
                         origin=(X0, Y0), max_pixels=None)
    iy, ix = np.nonzero(mask)
    ref = fit_pair(x[iy, ix], y[iy, ix], coords=(ix + float(X0), iy + float(Y0)),
                   noise_x=1.0, noise_y=1.0, model="plane", origin=(X0, Y0))
    assert img.to_dict() == ref.to_dict()
    assert img.n_total == int(mask.sum())


@pytest.mark.parametrize("model", ["offset", "plane"])
def test_polished_fit_equals_exhaustive_fit_and_beats_the_subsample(model):
    grad = (0.004, -0.003) if model == "plane" else (0.0, 0.0)
    x, y, mask = _image_pair(4, gradient=grad)
    kw = dict(mask=mask, x0=X0, y0=Y0, model=model, origin=(X0 + 256, Y0 + 128))
    ex = fit_pair_image(x, y, max_pixels=None, **kw)
    po = fit_pair_image(x, y, max_pixels=8000, **kw)
    sub = fit_pair_image(x, y, max_pixels=8000, polish=False, **kw)
    assert ex.status == po.status == sub.status == "ok"
    assert po.n_total == ex.n_total == int(mask.sum()) and sub.n_total == 8000
    assert abs(po.n_used - ex.n_used) <= 0.001 * ex.n_total
    for key in ("a", "b", "px", "py"):
        sigma = getattr(ex, "sigma_" + key)
        assert abs(getattr(po, key) - getattr(ex, key)) <= 0.1 * sigma + 1e-12, key
        assert getattr(po, "sigma_" + key) == pytest.approx(sigma, rel=0.05, abs=1e-12)
    assert po.rms == pytest.approx(ex.rms, rel=1e-3)
    assert po.centroid == pytest.approx(ex.centroid, abs=0.05)
    # the outliers grown on the whole image (one pass after the subsample's rule) differ from
    # the converged exhaustive ones by a few pixels around stars: ~1 sigma of the src plane
    assert po.x_slope == pytest.approx(ex.x_slope, abs=5e-5)
    # both against the truth: the polished fit keeps the precision of every pixel
    assert abs(po.a - A_TRUE) < 4 * po.sigma_a and po.sigma_a < 0.6 * sub.sigma_a
    if model == "plane":
        assert abs(po.px - grad[0]) < 4 * po.sigma_px and abs(po.py - grad[1]) < 4 * po.sigma_py


def test_float32_and_float64_images_give_the_same_fit():
    x, y, mask = _image_pair(5)
    f32 = fit_pair_image(x, y, mask, model="plane", x0=X0, y0=Y0, max_pixels=6000)
    f64 = fit_pair_image(x.astype(np.float64), y.astype(np.float64), mask, model="plane",
                         x0=X0, y0=Y0, max_pixels=6000)
    big = fit_pair_image(x.astype(">f4"), y.astype(">f4"), mask, model="plane", x0=X0,
                         y0=Y0, max_pixels=6000)          # FITS byte order
    assert big.to_dict() == f32.to_dict()
    assert f32.n_used == f64.n_used
    for key in ("a", "b", "px", "py", "noise_x", "rms"):
        assert getattr(f32, key) == pytest.approx(getattr(f64, key), rel=1e-5, abs=1e-9)


def test_fit_pair_image_measures_the_noise_of_each_image():
    x, y, mask = _image_pair(6)
    y = y + np.random.default_rng(1).normal(0.0, 1.0, y.shape).astype(np.float32)  # sqrt(2)
    f = fit_pair_image(x, y, mask, max_pixels=5000)
    # second differences of white noise, slightly inflated by the wings of the (dense) stars
    assert f.noise_x == pytest.approx(1.0, rel=0.05)
    assert f.noise_y == pytest.approx(math.sqrt(2.0), rel=0.05)
    assert f.noise_y / f.noise_x == pytest.approx(math.sqrt(2.0), rel=0.03)


def test_fit_pair_image_rejects_bad_arguments():
    x, y, mask = _image_pair(7, h=32, w=32)
    with pytest.raises(ValueError, match="2-D"):
        fit_pair_image(x.ravel(), y.ravel())
    with pytest.raises(ValueError, match="mask shape"):
        fit_pair_image(x, y, mask[:10])
    with pytest.raises(ValueError, match="subsample"):
        fit_pair_image(x, y, subsample="sparse")
    with pytest.raises(ValueError, match="max_pixels"):
        fit_pair_image(x, y, max_pixels=0)
    with pytest.raises(ValueError, match="estimator"):
        fit_pair_image(x, y, noise_estimator="std")


# --------------------------------------------------------------------------- honest sigma


def test_systematic_term_is_the_bias_of_a_misestimated_noise_ratio():
    """noise_ratio_bias predicts the slope bias of a wrong noise ratio (noise^2 / signal^2)."""
    from photometry_graph.photometry.moments import noise_ratio_bias
    delta, var_s = 0.3, 4.0          # ratio 30 % too high; signal-to-noise 2
    errors = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        x, y = _pair(_smooth_signal(rng, var_s, h=400, w=500), rng)
        fit = fit_pair(x.ravel(), y.ravel(), noise_x=1.0, noise_y=math.sqrt(1 + delta))
        errors.append(fit.a / A_TRUE - 1)
    predicted = -noise_ratio_bias(A_TRUE, var_s, 1.0, 1.0, delta) / A_TRUE
    assert np.mean(errors) == pytest.approx(predicted, rel=0.2)
    # the sigma of a fit carries that term for the ratio's own uncertainty
    fit = fit_pair(x.ravel(), y.ravel(), noise_x=1.0, noise_y=1.0, noise_ratio_error=0.1)
    assert fit.sigma_a_sys == pytest.approx(noise_ratio_bias(fit.a, var_s, 1, 1, 0.1), rel=0.1)
    assert fit.sigma_a ** 2 > fit.sigma_a_sys ** 2


@pytest.mark.parametrize("var_s", [0.5, 2.0, 9.0])
def test_faint_overlaps_give_gains_with_honest_sigmas(var_s):
    """From signal-to-noise 0.7 to 3 the fits are 'ok' and their errors match their sigmas."""
    z = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        x, y = _pair(_smooth_signal(rng, var_s), rng, noise_y=1.3)
        fit = fit_pair_image(x, y, x0=X0, y0=Y0, model="plane")   # noise measured
        assert fit.status == "ok" and fit.sigma_a_sys > 0
        z.append((fit.a - A_TRUE) / fit.sigma_a)
    assert 0.4 < np.sqrt(np.mean(np.square(z))) < 1.5
    assert np.abs(z).max() < 3.5


def test_degenerate_overlaps_stay_offset_only_and_a_gain_from_elsewhere_fits_the_offset():
    rng = np.random.default_rng(3)
    x, y = _pair(np.full((H, W), 20.0), rng)                      # no signal range at all
    fit = fit_pair_image(x, y, x0=X0, y0=Y0, model="plane", origin=(0.0, 0.0))
    assert fit.status == "offset_only" and math.isinf(fit.sigma_a)
    assert fit.gain_source == "none"
    # the gain measured elsewhere (the stars): the offset and plane at it, from the moments
    at = fit.at_gain(A_TRUE, 0.002, gain_source="stars")
    assert at.status == "ok" and (at.a, at.sigma_a, at.gain_source) == (A_TRUE, 0.002, "stars")
    assert at.offset_at(*at.centroid) == pytest.approx(B_TRUE, abs=0.05)
    assert at.offset_at(*at.centroid) == pytest.approx(at.y_mean - A_TRUE * at.x_mean)
    assert np.allclose((at.px, at.py), 0.0, atol=1e-3)
