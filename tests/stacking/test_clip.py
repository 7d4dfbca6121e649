"""Clipping kernels of the stacking (photometry_graph.stacking.clip).

test_sparse_clipping_equals_clipping_every_pixel moved from tests/stacking/test_stack.py.
"""

import numpy as np
import pytest

from photometry_graph.stacking.clip import ClipSettings, clip_block, clip_sparse


@pytest.mark.parametrize("method", ["kappa_sigma", "winsorized"])
def test_sparse_clipping_equals_clipping_every_pixel(method):
    # only pixels with >= 3 values can lose one: clipping just those gives the same mask
    rng = np.random.default_rng(3)
    n, npix, C = 8, 500, 3
    x = rng.normal(0, 1, (n, npix * C)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] += 40  # outliers
    w = (rng.random((n, npix)) < rng.random(npix)).astype(np.float32)  # 0..8 frames per pixel
    w = np.repeat(w, C, axis=1)
    x[w == 0] = 0
    settings = ClipSettings(method, 3.0, 3.0, 3, (0.1, 0.1))
    dense = clip_block(x, w, settings, C)
    sparse = clip_sparse(x, w, settings, C)
    assert np.array_equal(dense, sparse)
    assert (dense != (w > 0)).any()  # something was rejected
