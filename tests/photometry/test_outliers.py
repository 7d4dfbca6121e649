import numpy as np
import pytest

from photometry_graph.photometry.outliers import grown_outliers


def test_grown_outliers_take_a_trail_not_the_noise_and_only_when_sparse():
    rng = np.random.default_rng(7)
    d = rng.normal(size=(120, 160))
    yy, xx = np.mgrid[:120, :160]
    dist = np.abs(yy - 0.4 * xx - 30)
    trail = 12.0 * np.exp(-0.5 * (dist / 1.5) ** 2)
    valid = np.ones(d.shape, bool)
    valid[:, :10] = False
    grown = grown_outliers(d + trail, valid, 4.0, 2.0)
    assert not grown[~valid].any()
    wings = valid & (trail > 2.5)          # the core and the wings above 2.5 sigma
    assert grown[wings].mean() > 0.99
    far = valid & (dist > 8)               # noise alone: a few isolated pixels at most
    assert grown[far].mean() < 0.002
    # a residual dominated by structure (a quarter of the pixels beyond kappa) is not grown
    assert not grown_outliers(d + 10.0 * (xx > 110), valid, 4.0, 2.0).any()


@pytest.mark.parametrize("n_seeds", [3, 30, 400])
def test_hysteresis_takes_the_8_connected_components_of_its_seeds(n_seeds):
    # few seeds are filled one by one, many labelled at once: the same components either way
    from scipy import ndimage

    from photometry_graph.photometry.outliers import _hysteresis

    rng = np.random.default_rng(n_seeds)
    d = rng.normal(0.0, 1.0, (120, 200))
    valid = rng.random(d.shape) > 0.05
    ys, xs = rng.integers(0, 120, n_seeds), rng.integers(0, 200, n_seeds)
    d[ys, xs] = rng.choice([-1.0, 1.0], n_seeds) * rng.uniform(4.5, 9.0, n_seeds)
    weak, seed = valid & (np.abs(d) > 2.0), valid & (np.abs(d) > 4.0)
    labels, _ = ndimage.label(weak, structure=np.ones((3, 3)))
    expected = np.isin(labels, labels[seed]) & weak
    assert seed.sum() >= min(n_seeds, 3) and expected.sum() > seed.sum()
    assert np.array_equal(_hysteresis(d, valid, 4.0, 2.0, radius=0), expected)
    ring = ndimage.binary_dilation(expected, structure=np.ones((3, 3))) & valid
    assert np.array_equal(_hysteresis(d, valid, 4.0, 2.0), ring)
