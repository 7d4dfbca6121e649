import math

import numpy as np
import pytest

from photometry_graph.core.masks import block_mean
from photometry_graph.core.tiles import BBox
from photometry_graph.datasets import make_survey
from photometry_graph.photometry.binned import (bin_overlap, binnable, binned_box,
                                                binned_origin, binned_to_full_fit)
from photometry_graph.photometry.overlap import build_tile_overlap_graph, fit_overlap_edges
from photometry_graph.photometry.regression import fit_pair_image


def _truth(s, fit, origin):
    """The injected relation of an edge: gain, offset at ``origin``, plane slopes."""
    a = s.gains[fit.dst, 0] / s.gains[fit.src, 0]
    centre = {k: np.array(t.bbox.center[::-1], float) for k, t in enumerate(s.tiles)}

    def plane_at(k):  # the tile's plane term at the origin
        return float(s.slopes[k, 0] @ (np.asarray(origin) - centre[k]))
    b = (s.offsets[fit.dst, 0] + plane_at(fit.dst)
         - a * (s.offsets[fit.src, 0] + plane_at(fit.src)))
    return a, b, s.slopes[fit.dst, 0] - a * s.slopes[fit.src, 0]


def test_block_mean_matches_the_means_and_keeps_invalid_values_out():
    rng = np.random.default_rng(0)
    data = rng.normal(5, 1, (9, 11, 2)).astype(np.float32)
    valid = rng.random((9, 11)) > 0.1
    data[~valid] = np.where(rng.random(data[~valid].shape) > 0.5, np.inf, np.nan)
    out, ok = block_mean(data, valid, 3)
    ref = np.where(valid[..., None], data, 0.0)[:9, :9].reshape(3, 3, 3, 3, 2)
    ref_ok = valid[:9, :9].reshape(3, 3, 3, 3).all(axis=(1, 3))
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(ok, ref_ok)
    np.testing.assert_allclose(out[ok], ref.mean(axis=(1, 3))[ok], rtol=1e-6)
    assert np.isnan(out[~ok]).all()


@pytest.mark.parametrize("b", [2, 4, 11, 22, 44, 49])
def test_block_mean_finds_every_whole_valid_block_at_any_block_size(b):
    # a validity of ones averaged in float32 is not exactly 1 at some sizes (11, 22, 44,
    # 49): the blocks are told by their invalid flags instead
    rng = np.random.default_rng(b)
    data = rng.normal(5, 1, (2 * b + 1, 3 * b, 6)).astype(np.float32)
    valid = np.ones(data.shape[:2], bool)
    valid[b + 1, 1] = False
    out, ok = block_mean(data, valid, b)
    assert ok.tolist() == [[True, True, True], [False, True, True]]
    ref = data[:2 * b].reshape(2, b, 3, b, 6).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(out[ok], ref[ok], rtol=1e-5)
    empty, none = block_mean(data[:b - 1], valid[:b - 1], b)  # less than one block
    assert empty.shape == (0, 3, 6) and none.shape == (0, 3)


def test_bin_overlap_takes_the_whole_blocks_of_the_global_grid():
    inter = BBox(3, 14, 5, 16)  # odd corners: blocks 2..6 (rows) and 3..7 (columns)
    yy, xx = inter.coordinates()
    src = (xx + 100.0 * yy)[..., None]
    mask = np.ones(inter.shape, bool)
    s, d, joint, box = bin_overlap(src, mask, 2 * src, mask, inter, 2)
    assert box == binned_box(inter, 2) == BBox(2, 7, 3, 8)
    by, bx = box.coordinates()
    # a block mean of a plane is the plane at the block's centre, b * i + (b - 1) / 2
    np.testing.assert_allclose(s[..., 0], (2 * bx + 0.5) + 100.0 * (2 * by + 0.5))
    np.testing.assert_allclose(d, 2 * s)
    assert joint.all()
    mask2 = mask.copy()
    mask2[4, 6] = False  # full pixel (7, 11): block (3, 5) of the binned grid
    _, _, joint, _ = bin_overlap(src, mask, src, mask2, inter, 2)
    assert np.argwhere(~joint).tolist() == [[3 - 2, 5 - 3]]


def test_a_fit_on_block_means_is_the_full_resolution_relation():
    # noise-free but for a trace: the relation, plane included, comes back exactly
    rng = np.random.default_rng(3)
    inter = BBox(37, 237, 51, 351)
    yy, xx = inter.coordinates()
    sky = 20 + rng.gamma(0.5, 40.0, inter.shape)
    origin, a, b, px, py = (120.0, 80.0), 1.2, 3.0, 0.01, -0.02
    src = sky + rng.normal(0, 1e-3, sky.shape)
    dst = a * sky + b + px * (xx - origin[0]) + py * (yy - origin[1]) \
        + rng.normal(0, 1e-3, sky.shape)
    mask = np.ones(inter.shape, bool)
    s, d, joint, box = bin_overlap(src[..., None], mask, dst[..., None], mask, inter, 2)
    fit = fit_pair_image(s[..., 0], d[..., 0], joint, x0=box.x0, y0=box.y0, model="plane",
                         origin=binned_origin(origin, 2))
    full = binned_to_full_fit(fit, 2, origin)
    assert full.origin == origin and full.status == "ok"
    np.testing.assert_allclose([full.a, full.b, full.px, full.py], [a, b, px, py],
                               rtol=1e-4, atol=1e-5)
    # the moments: the relation holds at the mapped centroid, the slopes of both images
    assert math.isclose(full.offset_at(*full.centroid), full.y_mean - full.a * full.x_mean,
                        rel_tol=1e-9, abs_tol=1e-9)
    np.testing.assert_allclose(np.subtract(full.y_slope, a * np.asarray(full.x_slope)),
                               [px, py], atol=1e-5)


def test_binned_tile_overlaps_give_the_gains_of_full_resolution_within_their_sigma():
    s = make_survey(1, 2, tile_size=512, overlap=0.4, rng=7, gradient=8.0,
                    star_density=1.5e-3)
    origin = (300.0, 200.0)
    fits = {}
    for b in (1, 2):
        g = build_tile_overlap_graph(s.tiles)
        fit_overlap_edges(g, model="plane", origin=origin, bin_factor=b)
        fits[b] = g.edges[0, 1]["fits"][0]
    full, binned = fits[1], fits[2]
    a, off, p = _truth(s, binned, origin)
    assert binned.status == "ok" and binned.origin == origin and binned.n_stars >= 20
    assert binned.n_total == pytest.approx(full.n_total / 4, rel=0.02)  # the blocks
    for f in (full, binned):
        assert abs(f.a - a) < 3 * f.sigma_a
        assert abs(f.a_stars - a) < 3 * f.sigma_a_stars
        assert abs(f.b - off) < 4 * f.sigma_b + 1e-3
        assert abs(f.px - p[0]) < 4 * f.sigma_px + 1e-5
        assert abs(f.py - p[1]) < 4 * f.sigma_py + 1e-5
    assert abs(binned.a - full.a) < math.hypot(binned.sigma_a, full.sigma_a)
    assert binned.sigma_a < 1.3 * full.sigma_a  # the blocks keep the precision


def test_small_overlaps_are_fitted_at_full_resolution():
    s = make_survey(1, 2, tile_size=128, overlap=0.25, rng=5, star_density=2e-3)
    fits = []
    for b in (1, 2):
        g = build_tile_overlap_graph(s.tiles)
        fit_overlap_edges(g, bin_factor=b)
        fits.append(g.edges[0, 1]["fits"][0])
    assert not binnable(g.edges[0, 1]["bbox"], g.edges[0, 1]["n_valid"], 2, 500)
    assert fits[0].to_dict() == fits[1].to_dict()
    with pytest.raises(ValueError, match="bin_factor"):
        fit_overlap_edges(g, bin_factor=0)
