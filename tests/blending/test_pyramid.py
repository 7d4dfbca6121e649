import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from photometry_graph.blending.pyramid import (
    build_gaussian_pyramid,
    build_laplacian_pyramid,
    fill_invalid,
    level_shapes,
    max_levels,
    pyr_down,
    pyr_up,
    reconstruct_from_laplacian,
)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), channels=st.sampled_from([None, 1, 3, 6]),
       seed=st.integers(0, 2 ** 16), data=st.data())
def test_laplacian_round_trip_any_shape(h, w, channels, seed, data):
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=shape) * rng.uniform(1, 1000)).astype(np.float32)
    levels = data.draw(st.integers(1, max_levels((h, w), min_size=1)))
    pyr = build_laplacian_pyramid(x, levels)
    assert len(pyr) == levels
    assert [p.shape[:2] for p in pyr] == level_shapes((h, w), levels)
    y = reconstruct_from_laplacian(pyr)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y - x).max() <= 1e-4 * max(1.0, float(np.abs(x).max()))


@pytest.mark.parametrize("shape", [(64, 64), (63, 65), (1, 17), (64, 31, 3), (33, 33, 1)])
def test_round_trip_even_odd_mono_rgb(shape):
    x = np.random.default_rng(1).uniform(0, 5e4, shape).astype(np.float32)
    levels = max_levels(shape, min_size=2)
    y = reconstruct_from_laplacian(build_laplacian_pyramid(x, levels))
    assert np.abs(y - x).max() / np.abs(x).max() < 1e-6


def test_gaussian_pyramid_shapes_types_and_input_untouched():
    x = np.arange(9 * 13, dtype=np.float64).reshape(9, 13)
    before = x.copy()
    pyr = build_gaussian_pyramid(x, 4)
    assert [p.shape for p in pyr] == [(9, 13), (5, 7), (3, 4), (2, 2)]
    assert all(p.dtype == np.float32 for p in pyr)
    assert np.array_equal(x, before)
    pyr[0][0, 0] = -1.0  # level 0 is a copy
    assert x[0, 0] == 0.0
    # a constant image stays constant at every level (normalised kernel, reflective border)
    const = build_gaussian_pyramid(np.full((21, 10, 3), 7.0), 4)
    assert all(np.allclose(p, 7.0) for p in const)


def test_more_than_four_channels_match_per_channel_processing():
    x = np.random.default_rng(2).normal(size=(23, 18, 6)).astype(np.float32)
    down = pyr_down(x)
    for c in range(6):
        np.testing.assert_allclose(down[..., c], pyr_down(x[..., c]), atol=1e-6)
    up = pyr_up(down, x.shape)
    for c in range(6):
        np.testing.assert_allclose(up[..., c], pyr_up(down[..., c], x.shape), atol=1e-6)


def test_max_levels_and_bad_arguments():
    assert max_levels((256, 256), min_size=8) == 6
    assert max_levels((7, 100), min_size=8) == 1
    assert max_levels((1, 1), min_size=1) == 1
    with pytest.raises(ValueError, match="levels"):
        build_gaussian_pyramid(np.zeros((8, 8)), 0)
    with pytest.raises(ValueError, match="too many"):
        build_laplacian_pyramid(np.zeros((8, 8)), 10)
    with pytest.raises(ValueError, match="twice"):
        pyr_up(np.zeros((4, 4)), (10, 8))
    with pytest.raises(ValueError, match="shape"):
        build_gaussian_pyramid(np.zeros((2, 3, 4, 5)), 1)
    with pytest.raises(ValueError, match="empty"):
        reconstruct_from_laplacian([])


def _hole_scene(rng):
    yy, xx = np.mgrid[:48, :64]
    img = (10 + 0.2 * xx + 0.1 * yy + rng.normal(0, 0.01, (48, 64))).astype(np.float32)
    mask = np.ones((48, 64), bool)
    mask[15:30, 20:41] = False
    return img, mask


@pytest.mark.parametrize("junk", [np.nan, 0.0, 1e6])
def test_fill_invalid_never_reads_invalid_pixels(junk):
    img, mask = _hole_scene(np.random.default_rng(3))
    reference = fill_invalid(img, mask)
    spoiled = img.copy()
    spoiled[~mask] = junk
    out = fill_invalid(spoiled, mask)
    assert np.isfinite(out).all()
    assert np.array_equal(out, reference)
    assert np.array_equal(out[mask], img[mask])  # valid pixels are kept exactly


def test_fill_invalid_is_a_smooth_interpolation_of_the_neighbours():
    img, mask = _hole_scene(np.random.default_rng(4))
    out = fill_invalid(img, mask)
    hole = out[~mask]
    # within the range of the surrounding data, and close to the underlying plane
    assert hole.min() >= img[mask].min() and hole.max() <= img[mask].max()
    yy, xx = np.mgrid[:48, :64]
    plane = 10 + 0.2 * xx + 0.1 * yy
    assert np.abs(out - plane)[~mask].max() < 1.5  # the plane spans 15 units here


def test_fill_invalid_channels_levels_and_empty_masks():
    rng = np.random.default_rng(5)
    img = rng.normal(size=(40, 40, 3)).astype(np.float32)
    mask = np.zeros((40, 40), bool)
    mask[:5, :5] = True
    # a shallow push-pull leaves far holes at fill_value
    shallow = fill_invalid(img, mask, levels=2, fill_value=-99.0)
    assert shallow.shape == img.shape
    assert np.all(shallow[-1, -1] == -99.0)
    deep = fill_invalid(img, mask)
    assert np.isfinite(deep).all() and not np.any(deep == -99.0)
    assert np.array_equal(fill_invalid(img, np.zeros((40, 40), bool), fill_value=3.0),
                          np.full(img.shape, 3.0, np.float32))
    assert np.array_equal(fill_invalid(img, np.ones((40, 40), bool)), img)
    with pytest.raises(ValueError, match="mask shape"):
        fill_invalid(img, np.ones((4, 4), bool))
