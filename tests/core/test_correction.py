"""Photometric corrections applied to the pixels of a node (photometry_graph.core.correction)."""

import numpy as np
import pytest

from photometry_graph.core.correction import Correction, apply_correction
from photometry_graph.core.tiles import BBox


def _truth(data, box, c):
    yy, xx = np.mgrid[box.y0:box.y1, box.x0:box.x1].astype(np.float64)
    return np.stack([c.gain[k] * data[..., k].astype(np.float64) + c.offset[k]
                     + c.slope[k, 0] * (xx - c.origin[0]) + c.slope[k, 1] * (yy - c.origin[1])
                     for k in range(data.shape[2])], axis=-1)


@pytest.mark.parametrize("separable", [False, True])
def test_gain_offset_and_plane_in_global_pixels(separable):
    rng = np.random.default_rng(0)
    data = rng.normal(1000, 30, (40, 70, 2)).astype(np.float32)
    data[3, 4, 1] = np.nan
    box = BBox(1200, 1240, 3300, 3370)
    c = Correction([1.03, 0.97], [12.5, -4.0], slope=[[1.3e-3, -2.7e-3], [4e-4, 1e-3]],
                   origin=(2000.0, 1000.0))
    expect = _truth(data, box, c)
    got = apply_correction(data, box, c, separable=separable)
    assert got.dtype == np.float32 and got is not data
    ok = np.isfinite(expect)
    assert np.isnan(got[3, 4, 1]) and np.isfinite(got[ok]).all()
    # float32 outputs: within a few roundings of the exact values (~1e-7 relative)
    np.testing.assert_allclose(got[ok], expect[ok], rtol=3e-7, atol=0)
    exact = apply_correction(data, box, c, dtype=np.float64)
    np.testing.assert_allclose(exact[ok], expect[ok], rtol=1e-12)
    inplace = data.copy()
    assert apply_correction(inplace, box, c, copy=False, separable=separable) is inplace
    np.testing.assert_array_equal(inplace, got)
