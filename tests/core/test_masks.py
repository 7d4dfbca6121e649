"""Valid-pixel masks: empty values, NaN, coverage, erosion."""

import numpy as np
import pytest
from scipy import ndimage

from photometry_graph.core.masks import as_channels_last, compute_valid_mask, erode_mask


def test_empty_value_nan_and_coverage_are_invalid():
    img = np.ones((4, 5, 3), np.float32)
    img[0, 0] = 0.0                    # zero in every channel: the empty fill
    img[1, 1, 1] = np.nan              # one channel NaN: the pixel is not valid
    img[2, 2] = [0.0, 0.0, 5.0]        # a real value in one channel: valid
    cov = np.ones((4, 5))
    cov[3, 4] = 0
    mask = compute_valid_mask(img, coverage=cov)
    expected = np.ones((4, 5), bool)
    expected[0, 0] = expected[1, 1] = expected[3, 4] = False
    np.testing.assert_array_equal(mask, expected)


def test_negative_eps_keeps_zeros_and_input_is_not_modified():
    img = np.zeros((3, 3))
    before = img.copy()
    assert compute_valid_mask(img, eps=-1).all()
    assert not compute_valid_mask(img).any()
    np.testing.assert_array_equal(img, before)


@pytest.mark.parametrize("shape", [(60, 80), (7, 5), (1, 9), (9, 1)])
@pytest.mark.parametrize("pixels", [1, 2, 3])
def test_erosion_matches_a_binary_erosion_with_valid_border(shape, pixels):
    rng = np.random.default_rng(pixels)
    mask = rng.random(shape) > 0.1
    expected = ndimage.binary_erosion(mask, structure=np.ones((3, 3), bool),
                                      iterations=pixels, border_value=1)
    got = erode_mask(mask, pixels)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, expected)


def test_erosion_pushes_back_holes_not_the_array_edge():
    mask = np.ones((20, 20), bool)
    mask[10, 10] = False
    out = erode_mask(mask, 2)
    assert out[0].all() and out[:, -1].all()         # the array edge is not shrunk
    assert not out[8:13, 8:13].any() and out[7, 7]   # the hole grows by 2 px (8-connected)
    assert erode_mask(mask, 0) is not mask and erode_mask(mask, 0).sum() == 399


def test_channels_last_and_bad_shapes():
    assert as_channels_last(np.zeros((4, 5))).shape == (4, 5, 1)
    with pytest.raises(ValueError, match="moveaxis"):
        as_channels_last(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="empty image"):
        compute_valid_mask(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="coverage shape"):
        compute_valid_mask(np.ones((3, 3)), coverage=np.ones((2, 3)))
