import numpy as np

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
