import numpy as np
import pytest

from photometry_graph.stacking.curvature import half_second_differences, phase_weighted


def _reference(sub, valid):
    """Half second differences written out pixel by pixel (0 where undefined)."""
    h, w, C = sub.shape
    dxx, dyy = np.zeros_like(sub), np.zeros_like(sub)
    for y in range(h):
        for x in range(w):
            if 0 < x < w - 1 and valid[y, x - 1:x + 2].all():
                dxx[y, x] = (sub[y, x - 1] + sub[y, x + 1]) / 2 - sub[y, x]
            if 0 < y < h - 1 and valid[y - 1:y + 2, x].all():
                dyy[y, x] = (sub[y - 1, x] + sub[y + 1, x]) / 2 - sub[y, x]
    return dxx, dyy


@pytest.mark.parametrize("C", [1, 3, 4])
@pytest.mark.parametrize("with_invalid", [False, True])
def test_half_second_differences_match_the_definition(C, with_invalid):
    rng = np.random.default_rng(C)
    # a crop of a larger frame (rows apart in memory), as the reprojection passes it
    sub = rng.normal(100.0, 10.0, (25, 40, C)).astype(np.float32)[3:20, 5:28]
    valid = np.ones((17, 23), bool)
    if with_invalid:
        valid[rng.random((17, 23)) < 0.08] = False
        valid[5:8, 10:13] = False
    dxx, dyy = half_second_differences(sub, valid if with_invalid else None)
    rx, ry = _reference(sub.astype(np.float64), valid)
    assert dxx.dtype == np.float32 and dxx.shape == sub.shape
    np.testing.assert_allclose(dxx, rx, atol=1e-4)
    np.testing.assert_allclose(dyy, ry, atol=1e-4)
    if with_invalid:  # undefined differences are exactly 0
        assert (dxx[:, :, 0][~valid] == 0).all() and (dyy[:, :, 0][~valid] == 0).all()


def test_half_second_differences_of_a_parabola():
    y, x = np.mgrid[0:9, 0:11].astype(np.float32)
    img = (3 * x ** 2 - 2 * y ** 2)[..., np.newaxis]
    dxx, dyy = half_second_differences(img)
    np.testing.assert_array_equal(dxx[:, 1:-1, 0], 3.0)
    np.testing.assert_array_equal(dyy[1:-1, :, 0], -2.0)
    assert (dxx[:, [0, -1]] == 0).all() and (dyy[[0, -1]] == 0).all()


def test_phase_weighted_is_p_one_minus_p():
    rng = np.random.default_rng(1)
    f = rng.uniform(-20, 2000, (31, 47)).astype(np.float32)
    img = rng.normal(0, 5, (31, 47, 2)).astype(np.float32)
    p = f.astype(np.float64) - np.floor(f.astype(np.float64))
    want = img * (p * (1 - p))[..., np.newaxis]
    got = phase_weighted(img.copy(), f)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # integer positions: no weight
    assert not phase_weighted(img.copy(), np.round(f)).any()
