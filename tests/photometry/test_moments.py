import json
import math

import numpy as np
import pytest

from photometry_graph.photometry.regression import FIT_STATUSES, fit_pair

from overlap_pairs import A_TRUE, H, W
from overlap_pairs import grid_coords as _coords, noisy_pair as _pair, sky_signal as _sky_signal


@pytest.mark.parametrize("model", ["offset", "plane"])
def test_fit_is_consistent_with_its_moments(model):
    s, _ = _sky_signal(1)
    rng = np.random.default_rng(1)
    x, y = _pair(s, rng)
    y = y + 0.004 * _coords()[:, 0].reshape(H, W)
    origin = (250.0, -30.0)
    fit = fit_pair(x.ravel(), y.ravel(), coords=_coords(), model=model, origin=origin)
    assert fit.status == "ok" and fit.origin == origin and fit.model == model
    cx, cy = fit.centroid
    assert fit.offset_at(cx, cy) == pytest.approx(fit.y_mean - fit.a * fit.x_mean, abs=1e-9)
    if model == "plane":
        p = np.subtract(fit.y_slope, fit.a * np.asarray(fit.x_slope))
        assert (fit.px, fit.py) == pytest.approx(tuple(p), abs=1e-12)
        assert fit.px == pytest.approx(0.004, abs=2e-4)
    else:
        assert (fit.px, fit.py, fit.sigma_px, fit.sigma_py) == (0.0, 0.0, 0.0, 0.0)
    # the plane of dst holds the injected slope on top of a * src's slope
    assert fit.y_slope[0] - A_TRUE * fit.x_slope[0] == pytest.approx(0.004, abs=2e-4)
    d = fit.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["status"] == "ok"
    assert set(d) >= {"src", "dst", "channel", "a", "b", "px", "py", "sigma_a", "sigma_b",
                      "sigma_px", "sigma_py", "n_used", "n_total", "rms", "status", "message",
                      "origin", "centroid", "x_mean", "y_mean", "x_slope", "y_slope",
                      "sigma_x_mean", "sigma_y_mean", "noise_x", "noise_y"}
    assert fit.status in FIT_STATUSES


@pytest.mark.parametrize("use_coords", [True, False])
def test_uncertainties_match_the_scatter_over_noise_realisations(use_coords):
    h, w = 64, 256
    s, _ = _sky_signal(3, h=h, w=w, star_density=3e-4, nebulae=1)
    coords = _coords(h, w) if use_coords else None
    a_values, b_values, sig_a, sig_b = [], [], [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, y = _pair(s, rng, noise_y=1.3)
        fit = fit_pair(x.ravel(), y.ravel(), coords=coords, max_rel_gain_error=1.0)
        assert fit.status == "ok"
        a_values.append(fit.a); b_values.append(fit.b)
        sig_a.append(fit.sigma_a); sig_b.append(fit.sigma_b)
    ratio_a = np.std(a_values, ddof=1) / np.median(sig_a)
    ratio_b = np.std(b_values, ddof=1) / np.median(sig_b)
    assert 0.5 < ratio_a < 2.0
    assert 0.5 < ratio_b < 2.0
    assert abs(np.mean(a_values) / A_TRUE - 1) < 3 * np.median(sig_a) / math.sqrt(20) + 1e-3


def test_distinct_coordinates_by_counting_equal_np_unique():
    from photometry_graph.photometry.moments import _distinct

    rng = np.random.default_rng(3)
    for k in range(50):
        n = int(rng.integers(1, 3000))
        step = int(rng.integers(1, 4))
        c = (rng.integers(0, 2000, n) * step + rng.integers(-5000, 5000)).astype(np.float64)
        if k % 10 == 0:
            c[0] += 1e7   # a span far beyond the pixels: np.unique itself
        u, i = np.unique(c, return_inverse=True)
        u2, i2 = _distinct(c)
        assert u2.dtype == u.dtype and np.array_equal(u2, u) and np.array_equal(i2, i)


def test_moment_matrix_equals_the_dot_products_of_its_rows():
    from photometry_graph.photometry.moments import _moment_matrix

    rng = np.random.default_rng(8)
    for n in (1, 37, 5000, 8192, 20_000):
        Z = rng.normal(0, 1, (5, n)) * np.array([[1.0], [1.0], [1.0], [300.0], [300.0]])
        M = _moment_matrix(Z)
        ref = np.array([[np.dot(Z[i], Z[j]) for j in range(5)] for i in range(5)])
        assert np.array_equal(M, M.T)
        np.testing.assert_allclose(M, ref, rtol=1e-12, atol=1e-9 * np.abs(ref).max())
