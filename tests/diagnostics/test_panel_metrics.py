"""Truth metrics of panel mosaics (photometry_graph.diagnostics.panels)."""

import numpy as np
import pytest
from scipy import ndimage

from photometry_graph.datasets import make_panel_set
from photometry_graph.diagnostics.panels import (mosaic_vs_panels, panel_cells,
                                                 panel_footprints, panel_gain_errors)


@pytest.fixture(scope="module")
def field():
    s = make_panel_set(1, 2, panel_shape=(120, 180), rng=6, noise_sigma=1.0)
    truth = s.render_truth(s.truth_wcs, s.truth_shape)
    feet = panel_footprints(s.truth_wcs, s.truth_shape, s)
    return s, truth, feet


def test_footprints_are_the_eroded_valid_zones_on_the_grid(field):
    s, _, feet = field
    for f, foot in zip(s.frames, feet):
        area = (s.info["pixel_scales_arcsec"][f.index] / 2.0) ** 2  # panel px / truth px
        eroded = ndimage.binary_erosion(f.valid, np.ones((3, 3)), iterations=2)
        assert foot.sum() == pytest.approx(eroded.sum() * area, rel=0.01)
    thin = panel_footprints(s.truth_wcs, s.truth_shape, s, border=0)
    assert all((t >= f).all() and t.sum() > f.sum() for t, f in zip(thin, feet))


def test_cells_split_the_union_through_the_overlap(field):
    _, _, feet = field
    cells = panel_cells(feet)
    union = feet[0] | feet[1]
    assert ((cells >= 0) == union).all()
    both = feet[0] & feet[1]
    share = (cells[both] == 0).mean()
    assert 0.2 < share < 0.8  # the overlap is cut, not given to one panel


def test_the_truth_itself_is_a_perfect_mosaic(field):
    s, truth, _ = field
    q = mosaic_vs_panels(truth, s.truth_wcs, s)
    assert q["coverage"] == 1.0 and q["gain_max_error"] < 1e-9
    assert q["panel_offset_max_sigma"] < 1e-6


def test_a_panel_off_in_gain_offset_and_a_hole_are_measured(field):
    s, truth, feet = field
    cells = panel_cells(feet)
    img = truth.copy()
    right = cells == 1
    img[right] = 1.02 * img[right] + 5.0
    hole = np.zeros(s.truth_shape, bool)
    ys, xs = np.nonzero(feet[0] & ~feet[1])
    hole[ys[:50], xs[:50]] = True
    img[hole] = np.nan
    q = mosaic_vs_panels(img, s.truth_wcs, s)
    assert q["coverage"] == pytest.approx(1 - 50 / (feet[0] | feet[1]).sum())
    g = np.array(q["panel_gains"])[:, 0]
    assert g[1] / g[0] == pytest.approx(1.02, abs=2e-3)
    assert q["panel_offset_spread_sigma"] > 3.0
    assert q["seam_panel_borders"] > 1.5  # a step where the cells meet, inside panel 0


def test_gain_errors_are_taken_against_the_reference(field):
    s, _, _ = field
    true = [f.gain for f in s.frames]
    exact = [1.0 / g * true[0] for g in true]
    assert np.abs(panel_gain_errors(exact, s, 0)).max() < 1e-12
    off = panel_gain_errors([exact[0], exact[1] * 1.003], s, 0)
    assert off[1, 0] == pytest.approx(0.003)
    assert np.isnan(panel_gain_errors([exact[0], None], s, 0)[1]).all()
