"""Display stretch: one asinh stretch with shared limits."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("channels", [None, 3, 4])
def test_png_bytes_keep_grey_rgb_and_rgba_pixels(channels):
    import cv2

    from photometry_graph.core.display import png_bytes
    rng = np.random.default_rng(5)
    pic = rng.integers(0, 256, (5, 7) if channels is None else (5, 7, channels), np.uint8)
    back = cv2.imdecode(np.frombuffer(png_bytes(pic, compression=1), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    if channels:  # OpenCV reads BGR(A)
        back = back[..., [2, 1, 0, 3][:channels]]
    assert np.array_equal(back, pic)
