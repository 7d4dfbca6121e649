"""Display stretch: one asinh stretch with shared limits."""

import numpy as np

from photometry_graph.core.display import asinh_stretch


def test_asinh_stretch_shares_limits():
    a = np.linspace(0, 10, 100).reshape(10, 10)
    (sa, sb), lim = asinh_stretch([a, a + 5], low_pct=0, high_pct=100)
    assert lim.tolist() == [[0.0, 15.0]]
    assert sb.mean() > sa.mean() and sa.min() == 0.0 and sb.max() == 1.0
