"""Synthetic overlaps shared by the tests of the pairwise fits and of the noise estimators.

An overlap of ``H x W`` pixels at ``(X0, Y0)`` on the global grid; the dst image is
``A_TRUE * src + B_TRUE`` plus noise.
"""

import math

import numpy as np
from scipy import ndimage

from photometry_graph.core.tiles import BBox
from photometry_graph.datasets import make_sky

__all__ = ["H", "W", "X0", "Y0", "A_TRUE", "B_TRUE", "grid_coords", "smooth_signal",
           "sky_signal", "noisy_pair"]

H, W = 102, 512          # a 20 % overlap of 512 px tiles
X0, Y0 = 1000, 400       # where the overlap sits on the global grid
A_TRUE, B_TRUE = 1.08, 2.0


def grid_coords(h=H, w=W, x0=X0, y0=Y0):
    """``(n, 2)`` global pixel coordinates ``(x, y)`` of an ``(h, w)`` overlap in raster order."""
    yy, xx = np.mgrid[:h, :w]
    return np.column_stack([xx.ravel() + x0, yy.ravel() + y0]).astype(np.float64)


def smooth_signal(rng, var, h=H, w=W, level=20.0):
    """Sky level plus faint smooth structure of variance ``var`` (noise units)."""
    f = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (h, w)), 3.0)
    return level + f / f.std() * math.sqrt(var)


def sky_signal(seed, h=H, w=W, **kw):
    """Sky with stars and nebulae (plenty of signal range)."""
    sky = make_sky((h, w), rng=seed, **kw)
    return sky.render(BBox(0, h, 0, w))[..., 0], sky


def noisy_pair(s, rng, a=A_TRUE, b=B_TRUE, noise_x=1.0, noise_y=1.0):
    """src ``s + noise`` and dst ``a * s + b + noise`` of a signal ``s``."""
    x = s + rng.normal(0.0, noise_x, s.shape)
    y = a * s + b + rng.normal(0.0, noise_y, s.shape)
    return x, y
