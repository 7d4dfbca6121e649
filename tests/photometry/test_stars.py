"""The star estimator of a gain ratio, against injected truth.

Pairs come from :func:`photometry_graph.datasets.make_overlap_pair`: one overlap (128 x 512
unless said) seen by two nodes, ``src = S + offset + gradient + noise`` and
``dst = gain * S + offset + gradient + noise``, with ``S`` a sky level, smooth extended
emission (``signal_to_noise`` = its standard deviation in noise sigmas) and Gaussian stars,
either random (log-uniform peaks) or placed on a grid (``stars=(x, y, flux)``) where a
test needs to know which star is where.
"""

import math

import numpy as np
import pytest
import sep

from photometry_graph.datasets import make_overlap_pair
from photometry_graph.photometry.stars import (
    ANNULUS, STAR_STATUSES, StarCatalogue, StarRatio, combine_gain_estimates, detect_stars,
    measure_star_ratio,
)

GAIN = 1.1
SIGMA_PSF = 3.0 / 2.3548200450309493


def _measure(pair, **kw):
    return measure_star_ratio(pair.src, pair.dst, pair.valid, noise_src=pair.noise_src,
                              noise_dst=pair.noise_dst, saturated=pair.saturated, **kw)


def _grid_stars(peak, xs=np.arange(32.0, 480.0, 48.0), ys=(32.0, 64.0, 96.0)):
    """Stars on a grid (isolated: 32 px apart at least), flux from their peak in sigmas."""
    x, y = np.meshgrid(np.asarray(xs, float), np.asarray(ys, float))
    flux = np.broadcast_to(np.asarray(peak, float) * 2 * np.pi * SIGMA_PSF ** 2, x.size)
    return x.ravel() + 0.3, y.ravel() - 0.2, flux.copy()


def _sep_ratios(pair, x, y, r):
    """Ratios dst / src of annulus-subtracted fluxes of stars measured directly with sep
    (valid pixels only, whatever touches the apertures)."""
    out = []
    for img in (pair.src, pair.dst):
        data = np.where(pair.valid, img, 0.0)
        flux, _, _ = sep.sum_circle(data, x, y, r, mask=(~pair.valid).astype(np.uint8),
                                    bkgann=(ANNULUS[0] * r, ANNULUS[1] * r), subpix=0)
        out.append(flux)
    return out[1] / out[0]


# ---- accuracy against the truth --------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ratio_within_0p3_percent_with_20_stars_or_more(seed):
    pair = make_overlap_pair(n_stars=60, star_peak_range=(10.0, 500.0), signal_to_noise=2.0,
                             gain=GAIN, offsets=(5.0, -30.0), gradient_dst=(0.01, -0.02),
                             rng=seed)
    r = _measure(pair)
    assert r.status == "ok" and r.message == ""
    assert r.n_used >= 20
    assert r.n_used <= r.n_matched <= r.n_detected <= 60
    assert abs(r.ratio - GAIN) < 3 * r.sigma
    assert abs(r.ratio / GAIN - 1) < 0.003
    assert 3.0 <= r.fwhm < 3.8  # Gaussian FWHM 3 px, widened a little by the pixels
    assert r.aperture == pytest.approx(1.5 * r.fwhm)


def test_undersampled_stars_of_binned_images_still_measure_the_ratio():
    pair = make_overlap_pair((64, 256), n_stars=40, star_peak_range=(10.0, 500.0), fwhm=1.0,
                             gain=0.9, offsets=(0.0, 12.0), rng=4)
    r = _measure(pair)
    assert r.status == "ok" and r.n_used >= 15
    assert r.aperture == pytest.approx(2.0, abs=0.5)  # MIN_APERTURE or a little more
    assert abs(r.ratio - 0.9) < 3 * r.sigma


def test_ratio_is_unchanged_by_an_offset_and_a_gradient_in_one_image():
    kw = dict(n_stars=50, star_peak_range=(10.0, 500.0), signal_to_noise=2.0, gain=GAIN)
    plain = _measure(make_overlap_pair(rng=3, **kw))
    # the same sky and noise (same seed), with offsets and strong gradients added
    shifted = _measure(make_overlap_pair(rng=3, offsets=(40.0, -80.0),
                                         gradient_src=(0.05, -0.1), **kw))
    both = _measure(make_overlap_pair(rng=3, offsets=(40.0, -80.0), gradient_src=(0.05, -0.1),
                                      gradient_dst=(-0.08, 0.12), **kw))
    for r in (shifted, both):
        assert r.status == "ok"
        assert abs(r.ratio - plain.ratio) < 0.25 * plain.sigma
        assert r.sigma == pytest.approx(plain.sigma, rel=0.2)


def _realisations(n, **kw):
    rs = [_measure(make_overlap_pair(rng=100 + k, **kw)) for k in range(n)]
    assert all(r.status == "ok" for r in rs)
    return np.array([r.ratio for r in rs]), np.array([r.sigma for r in rs])


@pytest.mark.parametrize("noise_dst", [1.0, 3.0])
def test_sigma_is_honest_and_the_ratio_unbiased_over_noise_realisations(noise_dst):
    # 30 noise (and sky) realisations; dst with the same or three times the noise of src
    ratio, sigma = _realisations(30, n_stars=50, signal_to_noise=2.0, gain=GAIN,
                                 noise_dst=noise_dst, offsets=(5.0, -30.0),
                                 gradient_dst=(0.01, 0.02))
    spread = ratio.std(ddof=1)
    assert sigma.mean() / 1.5 < spread < 1.5 * sigma.mean()
    # unbiased: the mean within 3 standard errors of the truth (0.15 % or less)
    assert spread / math.sqrt(ratio.size) < 0.0015
    assert abs(ratio.mean() - GAIN) < 3 * spread / math.sqrt(ratio.size)


def test_a_noise_ratio_far_from_one_changes_the_weights_not_the_ratio():
    kw = dict(n_stars=50, star_peak_range=(10.0, 500.0), gain=GAIN, rng=8)
    even = _measure(make_overlap_pair(**kw))
    uneven = _measure(make_overlap_pair(noise_dst=4.0, **kw))
    assert uneven.sigma > even.sigma
    assert abs(uneven.ratio - GAIN) < 3 * uneven.sigma
    assert abs(even.ratio - GAIN) < 3 * even.sigma


# ---- stars left out ----------------------------------------------------------------------

def test_saturated_stars_are_left_out_and_would_bias_the_ratio():
    peak = np.full(30, 200.0)
    bright = np.arange(0, 30, 5)  # 6 stars whose cores saturate in both images
    peak[bright] = 3000.0
    x, y, flux = _grid_stars(peak)
    pair = make_overlap_pair(stars=(x, y, flux), signal_to_noise=1.0, gain=GAIN,
                             saturation=600.0, rng=5)
    assert pair.saturated.any()
    # kappa=100: no clipping, so every star the exclusions keep enters the ratio
    r = _measure(pair, kappa=100.0)
    assert r.status == "ok"
    assert r.n_matched == 30
    assert r.n_saturated == bright.size
    assert r.n_used == 30 - bright.size
    assert abs(r.ratio - GAIN) < 3 * r.sigma
    # those stars, measured anyway, have their flux cut: their ratio is far off
    biased = _sep_ratios(pair, x[bright], y[bright], r.aperture)
    assert np.all(np.abs(biased / GAIN - 1) > 0.05)
    # without the saturation mask, unclipped, they pull the ratio off
    blind = measure_star_ratio(pair.src, pair.dst, pair.valid, noise_src=1.0, noise_dst=1.0,
                               kappa=100.0)
    assert blind.n_saturated == 0 and blind.n_used == 30
    assert abs(blind.ratio / GAIN - 1) > 0.01
    assert abs(blind.ratio - GAIN) > 5 * r.sigma


def test_stars_near_invalid_pixels_are_left_out_and_would_bias_the_ratio():
    # aperture 4.5 px: annulus to 11.25 px, reach 12.75 px (plus a pixel's reach)
    invalid = np.zeros((128, 512), dtype=bool)
    invalid[:45, 185:266] = True  # a block: 2 stars of row 31.8 beside it, one under it
    invalid[104:, :] = True  # a strip: the 10 stars of row 95.8 are 8.2 px above it
    x, y, flux = _grid_stars(150.0)
    keep = ~invalid[np.rint(y).astype(int), np.rint(x).astype(int)]
    x, y, flux = x[keep], y[keep], flux[keep]
    # distance of each star to the nearest invalid pixel centre or the array's border
    ey, ex = np.nonzero(np.pad(invalid, 1, constant_values=True))
    dist = np.hypot(ex[None, :] - 1 - x[:, None], ey[None, :] - 1 - y[:, None]).min(axis=1)
    near = dist < 12.75
    assert near.sum() == 12 and np.all(dist[near] < 11) and np.all(dist[~near] > 15)
    # a strong gradient in dst: a truncated annulus is off-centre and misses its mean
    pair = make_overlap_pair(stars=(x, y, flux), signal_to_noise=1.0, gain=GAIN,
                             gradient_dst=(0.5, 1.0), empty=invalid, rng=6)
    r = _measure(pair, aperture=4.5, kappa=100.0)
    assert r.status == "ok"
    assert r.n_matched == x.size
    assert r.n_edge == near.sum()
    assert r.n_used == x.size - near.sum()
    assert abs(r.ratio - GAIN) < 3 * r.sigma
    biased = _sep_ratios(pair, x[near], y[near], 4.5)
    assert np.all(np.abs(biased - GAIN) > 5 * r.sigma)


def test_random_empty_zones_leave_the_ratio_unbiased():
    pair = make_overlap_pair(n_stars=80, star_peak_range=(10.0, 500.0), gain=GAIN,
                             gradient_dst=(0.2, -0.3), empty=True, rng=9)
    assert not pair.valid.all()
    r = _measure(pair)
    assert r.status == "ok" and r.n_edge > 0
    assert abs(r.ratio - GAIN) < 3 * r.sigma


def test_blends_and_doubles_are_left_out():
    x, y, flux = _grid_stars(100.0)
    n_single = x.size - 10
    # 5 unresolved doubles (3.5 px apart, one FWHM) and 5 resolved ones (4.5 px, inside the
    # aperture) replace the first ten stars' neighbours
    sep_px = np.r_[np.full(5, 3.5), np.full(5, 4.5)]
    x2, y2 = x[:10] + sep_px, y[:10]
    pair = make_overlap_pair(stars=(np.r_[x, x2], np.r_[y, y2], np.r_[flux, 0.7 * flux[:10]]),
                             signal_to_noise=1.0, gain=GAIN, rng=7)
    r = _measure(pair, aperture=4.5, kappa=100.0)
    assert r.status == "ok"
    # each double is one elongated detection or two (unmatched, or matched and each with a
    # third detection inside its aperture): none enters the ratio
    assert r.n_blended >= 8
    assert r.n_used == n_single
    assert abs(r.ratio - GAIN) < 3 * r.sigma


# ---- too few, failures, inputs -----------------------------------------------------------

def test_too_few_stars_below_min_stars():
    stars = _grid_stars(100.0, xs=(100.0, 250.0, 400.0), ys=(64.0,))
    pair = make_overlap_pair(stars=stars, rng=2)
    r = _measure(pair)
    assert r.status == "too_few"
    assert math.isnan(r.ratio) and math.isinf(r.sigma)
    assert r.n_matched == 3 and r.n_used == 0
    assert "min_stars=5" in r.message
    ok = _measure(pair, min_stars=3)
    assert ok.status == "ok" and ok.n_used == 3
    assert abs(ok.ratio - pair.gain) < 3 * ok.sigma


def test_no_star_and_a_bright_nebula_is_too_few_not_a_ratio():
    pair = make_overlap_pair(n_stars=0, signal_to_noise=10.0, rng=3)
    r = _measure(pair)
    assert r.status == "too_few" and r.n_matched < 5
    assert math.isnan(r.ratio)


def test_no_valid_pixel_fails_with_a_message():
    pair = make_overlap_pair((32, 64), n_stars=5, rng=1)
    r = measure_star_ratio(pair.src, pair.dst, np.zeros((32, 64), bool), noise_src=1.0,
                           noise_dst=1.0)
    assert r.status == "failed" and "no valid pixel" in r.message
    assert r.status in STAR_STATUSES


def test_inputs_are_not_modified_and_float32_works():
    pair = make_overlap_pair(n_stars=40, star_peak_range=(10.0, 500.0), empty=True, rng=11)
    src, dst = pair.src.astype(np.float32), pair.dst.astype(np.float32)
    copies = src.copy(), dst.copy(), pair.valid.copy()
    r = measure_star_ratio(src, dst, pair.valid, noise_src=1.0, noise_dst=1.0)
    assert r.status == "ok" and abs(r.ratio - pair.gain) < 3 * r.sigma
    np.testing.assert_array_equal(src, copies[0])
    np.testing.assert_array_equal(dst, copies[1])
    np.testing.assert_array_equal(pair.valid, copies[2])


@pytest.mark.parametrize("kw, words", [
    (dict(noise_src=0.0), "noise_src"),
    (dict(noise_dst=float("nan")), "noise_dst"),
    (dict(match_radius=0.0), "match_radius"),
    (dict(aperture=-1.0), "aperture"),
    (dict(min_stars=0), "min_stars"),
    (dict(kappa=0.0), "kappa"),
    (dict(max_iter=0), "max_iter"),
])
def test_bad_settings_raise(kw, words):
    img = np.zeros((16, 16))
    args = dict(noise_src=1.0, noise_dst=1.0)
    args.update(kw)
    with pytest.raises(ValueError, match=words):
        measure_star_ratio(img, img, np.ones((16, 16), bool), **args)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        measure_star_ratio(np.zeros((8, 8)), np.zeros((8, 9)), None, noise_src=1, noise_dst=1)
    with pytest.raises(ValueError, match="valid mask"):
        measure_star_ratio(np.zeros((8, 8)), np.zeros((8, 8)), np.ones((4, 4), bool),
                           noise_src=1, noise_dst=1)


def test_to_dict_is_strict_json():
    d = StarRatio(status="too_few", n_matched=2).to_dict()
    assert d["ratio"] is None and d["sigma"] is None and d["n_matched"] == 2


# ---- combination ---------------------------------------------------------------------------

def test_combination_is_the_inverse_variance_mean():
    a, s, source, disagree = combine_gain_estimates(1.00, 0.02, 1.03, 0.01)
    w1, w2 = 1 / 0.02 ** 2, 1 / 0.01 ** 2
    assert a == pytest.approx((w1 * 1.00 + w2 * 1.03) / (w1 + w2))
    assert s == pytest.approx(1 / math.sqrt(w1 + w2))
    assert s < 0.01
    assert (source, disagree) == ("combined", False)


def test_combination_trusts_the_stars_beyond_three_sigma():
    diff_sigma = math.hypot(0.01, 0.02)
    within = combine_gain_estimates(1.0 + 2.9 * diff_sigma, 0.01, 1.0, 0.02)
    assert within[2:] == ("combined", False)
    beyond = combine_gain_estimates(1.0 + 3.1 * diff_sigma, 0.01, 1.0, 0.02)
    assert beyond == (1.0, 0.02, "stars", True)
    # the threshold is an option
    assert combine_gain_estimates(1.0 + 3.1 * diff_sigma, 0.01, 1.0, 0.02,
                                  max_disagreement=4.0)[2] == "combined"


@pytest.mark.parametrize("a, s", [(float("nan"), 0.01), (1.0, float("inf")), (1.0, 0.0),
                                  (-0.5, 0.01), (None, None)])
def test_a_missing_estimate_leaves_the_other(a, s):
    assert combine_gain_estimates(a, s, 1.02, 0.005) == (1.02, 0.005, "stars", False)
    assert combine_gain_estimates(1.02, 0.005, a, s) == (1.02, 0.005, "pixels", False)
    a_none, s_none, source, disagree = combine_gain_estimates(a, s, a, s)
    assert math.isnan(a_none) and math.isinf(s_none) and source == "none" and not disagree


def test_combination_rejects_a_bad_threshold():
    with pytest.raises(ValueError, match="max_disagreement"):
        combine_gain_estimates(1.0, 0.01, 1.0, 0.01, max_disagreement=0.0)


def test_combined_star_and_pixel_estimates_of_one_pair():
    pair = make_overlap_pair(n_stars=40, star_peak_range=(10.0, 500.0), signal_to_noise=5.0,
                             gain=GAIN, rng=12)
    r = _measure(pair)
    a, s, source, disagree = combine_gain_estimates(GAIN + 0.5 * r.sigma, r.sigma, r.ratio,
                                                    r.sigma)
    assert source == "combined" and not disagree
    assert s == pytest.approx(r.sigma / math.sqrt(2))
    assert abs(a - GAIN) < 3 * s


# ---- catalogues found once per node ---------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_catalogues_of_whole_nodes_cropped_to_an_overlap_measure_the_same_ratio(seed):
    # a node searched once (its catalogue cropped to each overlap) and an overlap searched
    # on its own see the same stars: both ratios agree with the truth and each other
    pair = make_overlap_pair((256, 512), n_stars=120, star_peak_range=(10.0, 500.0),
                             signal_to_noise=2.0, gain=GAIN, offsets=(5.0, -30.0),
                             gradient_dst=(0.01, -0.02), rng=seed)
    cats = [detect_stars(img, pair.valid, noise=n) for img, n in
            ((pair.src, pair.noise_src), (pair.dst, pair.noise_dst))]
    assert all(len(c) >= 60 and 2.8 < c.fwhm < 4.0 for c in cats)
    rows, cols = slice(64, 192), slice(0, 512)  # the overlap: the middle half of the nodes
    src, dst, valid = pair.src[rows, cols], pair.dst[rows, cols], pair.valid[rows, cols]
    cropped = tuple(c.crop(0, 64, 512, 128) for c in cats)
    assert all(((c.y >= -0.5) & (c.y < 127.5)).all() for c in cropped)
    assert all(len(c) < len(full) for c, full in zip(cropped, cats))
    kw = dict(noise_src=pair.noise_src, noise_dst=pair.noise_dst)
    given = measure_star_ratio(src, dst, valid, catalogues=cropped, **kw)
    searched = measure_star_ratio(src, dst, valid, **kw)
    assert given.ok and searched.ok and given.n_used >= 20
    assert abs(given.n_used - searched.n_used) <= 0.2 * searched.n_used
    assert abs(given.ratio - GAIN) < 3 * given.sigma
    assert abs(given.ratio - searched.ratio) < searched.sigma
    # one side given, the other searched here
    mixed = measure_star_ratio(src, dst, valid, catalogues=(cropped[0], None), **kw)
    assert mixed.ok and abs(mixed.ratio - GAIN) < 3 * mixed.sigma


def test_detect_stars_on_an_empty_image_and_bad_input():
    assert len(detect_stars(np.full((32, 32), np.nan), noise=1.0)) == 0
    with pytest.raises(ValueError, match="2-D"):
        detect_stars(np.zeros((4, 4, 3)), noise=1.0)
    with pytest.raises(ValueError, match="noise"):
        detect_stars(np.zeros((8, 8)), noise=0.0)
    with pytest.raises(ValueError, match="catalogues must be a pair"):
        measure_star_ratio(np.zeros((8, 8)), np.zeros((8, 8)), np.ones((8, 8), bool),
                           noise_src=1.0, noise_dst=1.0,
                           catalogues=(StarCatalogue(*(np.zeros(0),) * 5),))


@pytest.mark.parametrize("shape", [(300, 500), (7, 9), (1, 50), (40, 1), (0, 5)])
def test_the_erosion_of_bad_zones_is_scipys(shape):
    # the star exclusions find the edges of bad zones by erode_mask's cross: scipy's
    # binary_erosion with the outside counted as set, also on strided views
    from scipy import ndimage
    from photometry_graph.core.masks import erode_mask
    rng = np.random.default_rng(shape[0])
    bad = rng.random(shape) > 0.6
    bad[:, :1] = True
    assert np.array_equal(erode_mask(bad, 1, connectivity=4),
                          ndimage.binary_erosion(bad, border_value=1))
    assert np.array_equal(erode_mask(bad[:, ::2], 1, connectivity=4),
                          ndimage.binary_erosion(bad[:, ::2], border_value=1))
    with pytest.raises(ValueError, match="connectivity"):
        erode_mask(bad, 1, connectivity=6)


def _stars_with_scatter(rng, n, a_true, eps):
    s = rng.gamma(0.8, 3000.0, n) + 100.0
    vs, vd = rng.uniform(50, 500, n), rng.uniform(50, 500, n)
    fs = s + rng.normal(0, 1, n) * np.sqrt(vs)
    fd = a_true * s * (1 + eps * rng.normal(0, 1, n)) + rng.normal(0, 1, n) * np.sqrt(vd)
    return fs, vs, fd, vd


def test_star_ratio_newton_steps_find_the_chi2_minimum():
    from scipy import optimize

    from photometry_graph.photometry.stars import _best_ratio, _residuals

    def chi2(a, stars, eps2):
        r, v, _ = _residuals(a, stars, eps2)
        return float(np.sum(r * r / v))

    rng = np.random.default_rng(5)
    for k in range(60):
        a_true = rng.uniform(0.5, 2.0)
        stars = _stars_with_scatter(rng, int(rng.integers(5, 300)), a_true, 0.02)
        eps2 = (0.0, 1e-4, 4e-4)[k % 3]
        a0 = a_true * rng.uniform(0.8, 1.25)
        ref = optimize.minimize_scalar(chi2, bounds=(a0 / 4, 4 * a0), method="bounded",
                                       args=(stars, eps2), options={"xatol": 1e-13 * a0}).x
        assert abs(_best_ratio(stars, eps2, a0) - ref) <= 1e-8 * ref
    # a start far off: the steps leave [a0 / 4, 4 a0] or converge; either way the minimum
    stars = _stars_with_scatter(rng, 40, 3.9, 0.0)
    a = _best_ratio(stars, 0.0, 1.0)
    assert 0.25 < a < 4.0
    assert chi2(a, stars, 0.0) <= min(chi2(a * 0.999, stars, 0.0), chi2(a * 1.001, stars, 0.0))


def test_ratio_reads_no_invalid_pixel_and_is_the_same_in_single_precision():
    # invalid holes and a band among the stars: the stars near them are left out, and the
    # fluxes of the others (measured without a mask) read valid pixels only
    pair = make_overlap_pair(n_stars=80, star_peak_range=(10.0, 500.0), signal_to_noise=2.0,
                             gain=GAIN, offsets=(5.0, -30.0), rng=6)
    valid = pair.valid.copy()
    valid[:, 200:230] = False
    valid[40:60, 300:330] = False
    src32, dst32 = pair.src.astype(np.float32), pair.dst.astype(np.float32)
    runs = [measure_star_ratio(np.where(valid, s, fill), np.where(valid, d, fill), valid,
                               noise_src=pair.noise_src, noise_dst=pair.noise_dst)
            for s, d in ((src32, dst32), (src32.astype(np.float64), dst32.astype(np.float64)))
            for fill in (np.nan, 0.0, 1e30)]
    assert runs[0].status == "ok" and runs[0].n_edge > 0
    assert abs(runs[0].ratio - GAIN) < 3 * runs[0].sigma
    for r in runs[1:]:
        assert (r.ratio, r.sigma, r.n_used, r.n_edge) == (runs[0].ratio, runs[0].sigma,
                                                          runs[0].n_used, runs[0].n_edge)


def test_aperture_sums_never_read_masked_pixels():
    from photometry_graph.photometry.stars import _aperture_fluxes

    rng = np.random.default_rng(2)
    img = rng.normal(0, 1, (80, 120)) * 5 + 20
    valid = rng.random(img.shape) > 0.1
    valid[:, :15] = False
    invalid = (~valid).view(np.uint8)
    x, y = rng.uniform(30, 110, 40), rng.uniform(10, 70, 40)
    zero = _aperture_fluxes(np.where(valid, img, 0.0), invalid, x, y, (3.0, 4.5, 7.5), 5.0)
    nan = _aperture_fluxes(np.where(valid, img, np.nan), invalid, x, y, (3.0, 4.5, 7.5), 5.0)
    for u, v in zip(zero, nan):
        assert np.all(np.isfinite(v)) and np.array_equal(u, v)


def test_read_only_images_measure_the_same_ratio_as_writable_ones():
    # binned frames beyond the memory plan are mapped read-only from their scratch files;
    # sep takes writable buffers only, so the star estimate must not fail on them
    pair = make_overlap_pair(n_stars=60, star_peak_range=(10.0, 500.0), signal_to_noise=2.0,
                             gain=GAIN, offsets=(5.0, -30.0), rng=4)
    src, dst = (np.array(img, dtype=np.float32) for img in (pair.src, pair.dst))
    kw = dict(noise_src=pair.noise_src, noise_dst=pair.noise_dst)
    writable = measure_star_ratio(src, dst, pair.valid, **kw)
    for img in (src, dst):
        img.setflags(write=False)
    cats = [detect_stars(img, pair.valid, noise=n) for img, n in
            ((src, pair.noise_src), (dst, pair.noise_dst))]
    read_only = measure_star_ratio(src, dst, pair.valid, **kw)
    assert writable.ok and read_only.ok and writable.n_used >= 20
    assert read_only.ratio == writable.ratio and read_only.sigma == writable.sigma
    assert abs(read_only.ratio - GAIN) < 3 * read_only.sigma
    given = measure_star_ratio(src, dst, pair.valid, catalogues=tuple(cats), **kw)
    assert given.ok and not (src.flags.writeable or dst.flags.writeable)


def _plane_with_np_median(image, valid):
    """The search's plane removal as it was written with ``np.median`` (the reference of
    the one with the package's median, which must give the same values, bit for bit)."""
    import warnings
    h, w = image.shape
    step = max(1, math.ceil(math.sqrt(np.count_nonzero(valid) / 5_000)))
    yy, xx = np.nonzero(valid[::step, ::step])
    v = image[yy * step, xx * step]
    design = np.column_stack([np.ones(v.size), xx * step - w / 2.0, yy * step - h / 2.0])
    keep = np.ones(v.size, dtype=bool)
    for _ in range(2):
        d = design[keep]
        coef = np.linalg.lstsq(d.T @ d, d.T @ v[keep], rcond=None)[0]
        res = v - design @ coef
        with warnings.catch_warnings():  # no sample left: NaN, with numpy's warnings
            warnings.simplefilter("ignore", RuntimeWarning)
            mad = np.median(np.abs(res[keep] - np.median(res[keep])))
        if mad > 0:
            keep = np.abs(res) <= 3.0 * 1.4826 * mad
    return image - (coef[0] + coef[1] * (np.arange(w) - w / 2.0)[np.newaxis, :]
                    + coef[2] * (np.arange(h) - h / 2.0)[:, np.newaxis])


@pytest.mark.parametrize("seed", range(4))
def test_the_searchs_plane_is_the_same_as_with_numpys_median(seed):
    from photometry_graph.photometry.stars import _without_plane
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :256]
    sky = 1000.0 + 0.05 * xx - 0.02 * yy + rng.normal(0, 1, xx.shape)
    valid = rng.random(xx.shape) > 0.1
    # a bright disk at the centre pulls the first plane away from every sky sample: the
    # second pass keeps none of them (np.median of nothing: NaN, the first plane stays)
    disk = sky + 1000.0 * ((xx - 128) ** 2 + (yy - 64) ** 2 < 20 ** 2)
    for image in (sky, disk, sky[:7, :9], sky.astype(np.float32)):
        v = valid[:image.shape[0], :image.shape[1]]
        np.testing.assert_array_equal(_without_plane(image, v), _plane_with_np_median(image, v))
    cat = detect_stars(disk, noise=1.0)  # the search goes on (it raised on an empty sample)
    assert len(cat) >= 1
