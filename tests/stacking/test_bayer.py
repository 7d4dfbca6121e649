"""Bayer pattern names and demosaicing (photometry_graph.stacking.bayer)."""

import numpy as np
import pytest

from photometry_graph.stacking.bayer import BAYER_PATTERNS, bayer_pattern, debayer

from conftest import CFA_SITES, cfa_raw


@pytest.mark.parametrize("pattern", sorted(CFA_SITES))
@pytest.mark.parametrize("colour", ["R", "G", "B"])
def test_a_single_colour_scene_stays_in_its_colour(pattern, colour):
    scene = {"R": 0.0, "G": 0.0, "B": 0.0}
    scene[colour] = 1000.0
    rgb = debayer(cfa_raw(pattern, scene), pattern)
    inner = rgb[2:-2, 2:-2].reshape(-1, 3)
    expected = np.array([scene["R"], scene["G"], scene["B"]])
    np.testing.assert_allclose(inner, np.broadcast_to(expected, inner.shape), atol=1.0)


def test_float_data_and_nan_neighbourhoods():
    raw = cfa_raw("RGGB", {"R": 10.25, "G": -3.5, "B": 7.125})
    raw[8, 8] = np.nan
    before = raw.copy()
    rgb = debayer(raw, "rggb")
    assert np.array_equal(raw, before, equal_nan=True)  # input untouched
    assert rgb.dtype == np.float32 and rgb.shape == (16, 20, 3)
    assert np.isnan(rgb[7:10, 7:10]).all() and np.isfinite(rgb[2:5, 2:5]).all()
    assert np.isfinite(rgb[:, 12:]).all()  # only the 3x3 neighbourhood is lost
    np.testing.assert_allclose(rgb[2:5, 2:5].reshape(-1, 3).mean(0), [10.25, -3.5, 7.125],
                               atol=1e-3)


def test_integer_raws_are_exact_and_empty_raws_are_nan():
    raw = cfa_raw("BGGR", {"R": 65535, "G": 1, "B": 0}).astype(np.uint16)
    rgb = debayer(raw, "BGGR")
    assert np.array_equal(rgb[4:-4, 4:-4].reshape(-1, 3).mean(0), [65535.0, 1.0, 0.0])
    assert np.isnan(debayer(np.full((4, 4), np.nan), "RGGB")).all()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown Bayer pattern"):
        debayer(np.zeros((4, 4)), "RGBW")
    with pytest.raises(ValueError, match="must be 2-D"):
        debayer(np.zeros((3, 4, 4)), "RGGB")


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_pattern_shift_matches_cropping_the_raw(pattern):
    """A raw cropped by (dy, dx) pixels has the pattern shifted by (dy, dx)."""
    scene = {"R": 900.0, "G": 30.0, "B": 5.0}
    raw = cfa_raw(pattern, scene, shape=(18, 22))
    for dy in (0, 1):
        for dx in (0, 1):
            shifted = bayer_pattern(pattern.lower(), x_offset=dx, y_offset=dy)
            rgb = debayer(raw[dy:, dx:], shifted)
            np.testing.assert_allclose(rgb[3:-3, 3:-3].reshape(-1, 3).mean(0),
                                       [900.0, 30.0, 5.0], atol=1.0)
    assert bayer_pattern(" gbrg ", 2, 4) == "GBRG"
