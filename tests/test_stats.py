import numpy as np
import pytest

from photometry_graph._stats import estimate_noise, image_noise

from overlap_pairs import sky_signal as _sky_signal


def test_estimate_noise_is_robust_per_channel():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    sigmas = np.array([1.0, 2.0, 0.5])
    img = 50 + 0.3 * xx[..., None] - 0.2 * yy[..., None] + rng.normal(0, 1, (h, w, 3)) * sigmas
    stars = rng.integers(0, h * w, 150)
    img.reshape(-1, 3)[stars] += 500.0                 # hot pixels / star cores
    mask = np.ones((h, w), dtype=bool)
    mask[40:80, 60:100] = False
    img[40:80, 60:100] = np.nan                       # invalid zone, excluded by the mask
    est = estimate_noise(img, mask)
    np.testing.assert_allclose(est, sigmas, rtol=0.05)
    # bands of three rows only (~6 000 differences), clipped RMS: same answer
    sampled = estimate_noise(img, mask, max_samples=6000, estimator="clipped")
    np.testing.assert_allclose(sampled, sigmas, rtol=0.05)
    assert np.isnan(estimate_noise(np.ones((2, 2)))).all()
    with pytest.raises(ValueError, match="mask shape"):
        estimate_noise(img, mask[:10])
    with pytest.raises(ValueError, match="estimator"):
        estimate_noise(img, mask, estimator="std")
    with pytest.raises(ValueError, match="max_samples"):
        estimate_noise(img, mask, max_samples=0)


def test_noise_estimators_are_robust_to_stars_and_clipped_is_more_precise():
    s, _ = _sky_signal(8, 256, 512)                 # default star density and nebulae
    rng = np.random.default_rng(9)
    ones = np.ones(s.shape, bool)
    est = {"mad": [], "clipped": []}
    for _ in range(30):
        img = s + rng.normal(0.0, 1.0, s.shape)
        for name in est:
            est[name].append(image_noise(img, ones, 40_000, name))
    for name, values in est.items():
        assert abs(np.mean(values) - 1.0) < 0.02, name   # stars hardly inflate either
    # the clipped RMS is the more efficient estimator: less scatter for the same samples
    assert np.std(est["clipped"]) < 0.8 * np.std(est["mad"])
    with pytest.raises(ValueError, match="estimator"):
        image_noise(s, ones, 1000, "std")


def test_clipped_noise_fixed_point_equals_a_full_rescan_at_every_step():
    import math

    from photometry_graph._stats import (_CLIP_C, _CLIP_K, _sigma_from_second_differences,
                                         _thinned, median)

    def reference(d):  # every step clips the whole sample again
        dev = np.abs(d)
        sigma = 1.482602218505602 * median(_thinned(dev, 20_000))
        sq = dev * dev
        total = float(sq.sum(dtype=np.float64))
        for _ in range(20):
            out = sq[sq > (_CLIP_K * sigma) ** 2]
            new = math.sqrt(max(total - float(out.sum(dtype=np.float64)), 0.0)
                            / max(sq.size - out.size, 1)) / _CLIP_C
            done = abs(new - sigma) <= 1e-4 * sigma
            sigma = new
            if done:
                break
        return sigma / math.sqrt(6.0)

    rng = np.random.default_rng(4)
    for k in range(40):
        n = int(rng.integers(50, 60_000))
        d = rng.normal(0, rng.uniform(0.5, 5), n)
        hit = rng.integers(0, n, int(n * rng.uniform(0, 0.4)))    # stars: up to 40 %
        d[hit] += rng.gamma(1.0, 30.0, hit.size) * rng.choice([-1, 1], hit.size)
        if k % 4 == 3:  # a MAD far above the noise: the threshold falls several times
            d = rng.normal(0, 1, n)
            hit = rng.random(n) < 0.45
            d[hit] = rng.choice([-1, 1], hit.sum()) * rng.uniform(5, 30, hit.sum())
        d = d.astype((np.float32, np.float64)[k % 2])
        assert _sigma_from_second_differences([d], None, "clipped") == reference(d)


def test_median_is_numpys_bit_for_bit_in_double_precision():
    # (in single precision numpy averages the middle two in float32, this in float64)
    from photometry_graph._stats import median
    rng = np.random.default_rng(4)
    for n in list(range(1, 40)) + [999, 1000, 4096]:
        v = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        assert median(v) == float(np.median(v)), n
    assert median(np.array([1.0, 1.0 + 2.0 ** -52])) == float(np.median([1.0, 1.0 + 2.0 ** -52]))
    assert median(np.array([3.0, 1.0, 2.0, 10.0])) == 2.5
