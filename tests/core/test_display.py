"""Display stretch: one asinh stretch with shared limits."""

import numpy as np

from photometry_graph.core.display import asinh_stretch


def test_asinh_stretch_shares_limits():
    a = np.linspace(0, 10, 100).reshape(10, 10)
    (sa, sb), lim = asinh_stretch([a, a + 5], low_pct=0, high_pct=100)
    assert lim.tolist() == [[0.0, 15.0]]
    assert sb.mean() > sa.mean() and sa.min() == 0.0 and sb.max() == 1.0


def test_asinh_stretch_with_given_limits_stretches_blocks_alike():
    img = np.linspace(0.0, 10.0, 200).reshape(10, 20)
    whole, limits = asinh_stretch([img])
    top, _ = asinh_stretch([img[:4]], limits=limits)
    bottom, _ = asinh_stretch([img[4:]], limits=limits)
    np.testing.assert_allclose(np.vstack([top[0], bottom[0]]), whole[0])
    assert not np.allclose(asinh_stretch([img[4:]])[0][0], bottom[0])  # its own percentiles
