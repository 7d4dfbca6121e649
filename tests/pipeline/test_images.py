"""Stored frame images -> channels-last float32 with NaN where invalid (photometry_graph.pipeline.images)."""

import logging

import numpy as np
import pytest

import grid_mode
from photometry_graph.pipeline.images import (FrameInfo, frame_noise, frame_pixels, image_layout,
                                     majority_channels, saturated_mask, saturation_level,
                                     saturation_pileup)


@pytest.mark.parametrize("shape, bayer, expected", [
    ((40, 60), None, ("mono", 1, (40, 60), None)),
    ((40, 60), " rggb ", ("bayer", 3, (40, 60), "RGGB")),
    ((3, 40, 60), None, ("chw", 3, (40, 60), None)),
    ((1, 40, 60), None, ("chw", 1, (40, 60), None)),
    ((40, 60, 3), None, ("hwc", 3, (40, 60), None)),
    ((3, 40, 60), "RGGB", ("chw", 3, (40, 60), "RGGB")),  # colour already: pattern unused
])
def test_image_layout(shape, bayer, expected):
    assert image_layout(shape, bayer) == expected


def test_bayer_offsets_shift_the_pattern():
    assert image_layout((40, 60), "RGGB", (1, 0))[3] == "GRBG"
    assert image_layout((40, 60), "RGGB", (0, 1))[3] == "GBRG"
    assert image_layout((40, 60), "RGGB", (2, 2))[3] == "RGGB"


@pytest.mark.parametrize("shape, bayer, match", [
    ((2, 40, 60), None, "data shape"), ((40, 60, 4), None, "data shape"),
    ((5, 40, 60, 3), None, "data shape"), ((40, 60), "RGBX", "Bayer pattern")])
def test_bad_layouts_are_value_errors(shape, bayer, match):
    with pytest.raises(ValueError, match=match):
        image_layout(shape, bayer)


def test_frame_pixels_chw_masks_empty_nan_and_uncovered_pixels():
    rng = np.random.default_rng(1)
    raw = rng.normal(100.0, 1.0, (3, 30, 40)).astype(np.float32)
    raw[:, :, :5] = 0.0  # empty border
    raw[1, 10, 20] = np.nan  # one channel NaN: the pixel is invalid
    weight = np.ones((30, 40), np.float32)
    weight[20:, 30:] = 0.0
    keep = raw.copy()
    data, w = frame_pixels(raw, "chw", weight=weight, mask_eps=1e-6, erode=0)
    assert data.shape == (30, 40, 3) and data.dtype == np.float32
    assert np.array_equal(raw, keep, equal_nan=True)  # input untouched
    assert np.isnan(data[:, :5]).all() and np.isnan(data[10, 20]).all()
    assert np.isnan(data[20:, 30:]).all() and (w[20:, 30:] == 0).all()
    assert np.array_equal(data[0, 10], raw[:, 0, 10]) and w[0, 10] == 1.0
    valid = np.isfinite(data).all(axis=2)
    assert np.array_equal(valid, w > 0)


def test_frame_pixels_erodes_the_valid_zone():
    raw = np.ones((20, 20), np.float32)
    raw[:, :5] = 0.0
    no_erode = np.isfinite(frame_pixels(raw, "mono", erode=0)[0][..., 0])
    eroded = np.isfinite(frame_pixels(raw, "mono", erode=2)[0][..., 0])
    assert no_erode[:, 5].all() and not eroded[:, 5:7].any() and eroded[:, 7].all()


def test_frame_pixels_bayer_debayers_and_keeps_empty_sites_out():
    raw = np.zeros((20, 20), np.float32)
    raw[0::2, 0::2] = 100.0  # red sites of RGGB
    raw[0::2, 1::2] = raw[1::2, 0::2] = 10.0  # green
    raw[1::2, 1::2] = 1.0  # blue
    raw[:, :4] = 0.0  # empty border
    data, _ = frame_pixels(raw, "bayer", "RGGB", erode=1)
    inner = data[6:14, 8:14]
    assert np.allclose(np.median(inner.reshape(-1, 3), axis=0), [100.0, 10.0, 1.0], rtol=0.02)
    assert np.isnan(data[:, :4]).all()  # the border does not leak in as zeros
    assert np.nanmin(data) > 0.5


def test_unknown_layout_is_an_error():
    with pytest.raises(ValueError, match="unknown image layout"):
        frame_pixels(np.ones((4, 4)), "cube")


@pytest.mark.parametrize("layout, shape", [("mono", (200, 200)), ("chw", (3, 200, 200)),
                                           ("hwc", (200, 200, 3)), ("bayer", (200, 200))])
def test_frame_noise_measures_the_injected_sigma(layout, shape):
    rng = np.random.default_rng(3)
    raw = rng.normal(500.0, 2.5, shape).astype(np.float32)
    assert frame_noise(raw, layout) == pytest.approx(2.5, rel=0.06)


@pytest.mark.parametrize("layout, shape, dtype, level", [
    ("mono", (300, 800), np.uint16, 900.0), ("chw", (3, 300, 800), np.uint16, 900.0),
    ("hwc", (300, 800, 3), np.uint16, 900.0), ("bayer", (300, 800), np.uint16, 900.0),
    ("mono", (300, 800), np.int32, 3.0e7), ("mono", (60, 80), np.uint16, 900.0)])
def test_frame_noise_of_stored_counts_equals_that_of_their_float_values(layout, shape, dtype,
                                                                        level):
    # a uint16 frame is measured without converting all of it: the bands of rows read are
    # converted, and the sigma is that of the float32 frame, bit for bit (sampled: 2 h w
    # differences exceed NOISE_SAMPLES; the small frame is read whole; empty zeros left out
    # of both); wider counts (int32 beyond 2**24) are rounded to float32 as before
    rng = np.random.default_rng(4)
    raw = np.clip(rng.normal(level, 12.0, shape), 0, None).astype(dtype)
    if layout == "hwc":
        raw[:, :40] = 0  # an empty border
    else:
        raw[..., :40] = 0
    as_float = raw.astype(np.float32)
    assert frame_noise(raw, layout) == frame_noise(as_float, layout, mask_eps=0.5)
    assert frame_noise(raw, layout) == pytest.approx(12.0, rel=0.1)


def test_frame_noise_refuses_an_empty_frame():
    raw = np.zeros((50, 50), np.float32)
    raw[0, :2] = 1.0  # far fewer than 0.1 % valid
    with pytest.raises(ValueError, match="no usable pixel"):
        frame_noise(raw, "mono")
    with pytest.raises(ValueError, match="no usable pixel"):
        frame_noise(np.full((3, 50, 50), np.nan), "chw")


def test_majority_channels_keeps_the_common_count_and_warns(caplog):
    items = [("a", 1), ("b", 3), ("c", 3), ("d", 1), ("e", 3)]
    with caplog.at_level(logging.WARNING):
        kept = majority_channels(items, lambda i: i[1], lambda i: i[0], "frames")
    assert kept == [("b", 3), ("c", 3), ("e", 3)]
    assert "skipping a: 1 channel(s) while most frames have 3" in caplog.text
    assert "[GRID]" in caplog.text and "skipping b" not in caplog.text
    tie = majority_channels([1, 3], lambda c: c, str, "tiles")
    assert tie == [3]  # ties: more channels
    assert majority_channels([], len, str, "frames") == []


def test_frame_info_is_re_exported_and_defaults():
    info = FrameInfo(index=0, path="f.fits", hdu=0, shape=(4, 5), layout="mono",
                     n_channels=1, wcs=None)
    assert grid_mode.FrameInfo is FrameInfo
    assert info.exptime == 1.0 and info.bayer is None and np.isnan(info.noise)


@pytest.mark.parametrize("layout, shape", [("mono", (8, 9)), ("hwc", (8, 9, 3)),
                                           ("bayer", (8, 10))])
def test_frame_pixels_never_modifies_its_input(layout, shape):
    raw = np.zeros(shape, np.float32)
    raw[2:, 2:] = 7.0
    keep = raw.copy()
    data, _ = frame_pixels(raw, layout, "RGGB", erode=0)
    assert np.isnan(data[0, 0]).all() and np.array_equal(raw, keep)


@pytest.mark.parametrize("header, expected", [
    ({"BITPIX": 16, "SATURATE": 60000.0}, 60000.0),
    ({"BITPIX": -32, "SATURATE": "50000"}, 50000.0),
    ({"BITPIX": 16, "BZERO": 32768}, None),                 # no keyword: look at the data
    ({"BITPIX": -32, "SATURATE": 0}, None),                 # not a level
    ({"BITPIX": -32, "SATURATE": "n/a"}, None),
])
def test_saturation_level_from_the_header(header, expected):
    assert saturation_level(header) == expected


@pytest.mark.parametrize("top", [65535.0, 65520.0, 1.0])  # 16 bit, 12 bit scaled, normalised
def test_saturation_pileup_finds_clipped_cores_only(top):
    rng = np.random.default_rng(0)
    img = rng.normal(0.1 * top, 0.01 * top, (3, 60, 80))
    img[1, 30, 40] = 0.9 * top                              # an unsaturated star peak
    assert saturation_pileup(img) is None
    clipped = img.copy()
    clipped[:, 10:12, 10:12] = top                          # a clipped core
    clipped[0, 0, 0] = np.nan
    assert saturation_pileup(clipped) == top
    assert saturation_pileup(clipped, min_pixels=13) is None
    assert saturation_pileup(np.full((4, 4), np.nan)) is None
    assert saturation_pileup(np.zeros((4, 4))) is None      # an empty frame has no level


@pytest.mark.parametrize("dtype", [np.uint16, np.dtype(">u2"), np.uint8])
def test_a_single_pixel_at_the_top_of_an_unsigned_range_is_clipped(dtype):
    top = np.iinfo(dtype).max
    raw = np.full((30, 40), top // 10, dtype)
    raw[12, 20] = top - 1                                   # a bright, unclipped peak
    assert saturation_pileup(raw) is None
    raw[5, 7] = top                                         # one clipped core pixel
    assert saturation_pileup(raw) == float(top)
    assert saturation_pileup(raw.astype(np.float32)) is None  # floats: 4 pixels needed
    data, _ = frame_pixels(raw, "mono", erode=0, saturation=saturation_pileup(raw))
    assert np.isnan(data[3:8, 5:10]).all() and np.isfinite(data).sum() == 30 * 40 - 25


def test_saturated_pixels_are_masked_with_a_margin_in_every_layout():
    rgb = np.full((3, 20, 30), 100.0, np.float32)
    rgb[2, 10, 15] = 65535.0                       # one channel saturated is enough
    m = saturated_mask(rgb, "chw", 65535.0, grow=2)
    assert m.shape == (20, 30) and m.sum() == 25 and m[8:13, 13:18].all()
    assert saturated_mask(np.moveaxis(rgb, 0, -1), "hwc", 65535.0, grow=2).sum() == 25
    assert not saturated_mask(rgb, "chw", 70000.0).any()
    data, _ = frame_pixels(rgb, "chw", erode=0, saturation=65535.0)
    assert np.isnan(data[8:13, 13:18]).all()
    assert np.isfinite(data).sum(axis=2)[~m].min() == 3  # nothing else lost
    plain, _ = frame_pixels(rgb, "chw", erode=0)
    assert np.isfinite(plain).all()                      # images keep their star cores
    raw = np.full((20, 30), 100.0, np.float32)
    raw[10, 15] = 65535.0                                # one Bayer site
    bayer, _ = frame_pixels(raw, "bayer", "RGGB", erode=0, saturation=65535.0)
    assert np.isnan(bayer[8:13, 13:18]).all() and np.isfinite(bayer[:5, :5]).all()


@pytest.mark.parametrize("layout, shape", [("mono", (60, 80)), ("chw", (3, 60, 80)),
                                           ("hwc", (60, 80, 3)), ("bayer", (60, 80))])
@pytest.mark.parametrize("zeros", [False, True])
def test_integer_frames_take_the_float_path_s_mask_noise_and_level(layout, shape, zeros):
    """Stored integers are read through shortcuts (no NaN, empty means 0): the pixels, the
    noise and the level of a pile-up of clipped pixels are those of the same values stored
    as floats (a single clipped pixel is told by the integers alone)."""
    rng = np.random.default_rng(5)
    raw = rng.normal(3000.0, 40.0, shape).astype(np.uint16)
    pixels = (lambda rows, cols: (slice(None), rows, cols)) if layout == "chw" \
        else (lambda rows, cols: (rows, cols))
    raw[pixels(slice(20, 23), slice(30, 33))] = 65535
    if zeros:
        raw[pixels(slice(0, 4), slice(None))] = 0
    as_float = raw.astype(np.float32)
    assert saturation_pileup(raw) == saturation_pileup(as_float) == 65535.0
    assert frame_noise(raw, layout) == frame_noise(as_float, layout)
    for saturation in (None, 65535.0):
        got, _ = frame_pixels(raw, layout, "RGGB", erode=1, saturation=saturation)
        want, _ = frame_pixels(as_float, layout, "RGGB", erode=1, saturation=saturation)
        np.testing.assert_array_equal(got, want)
        assert np.isnan(got).any() == (zeros or saturation is not None)
