import numpy as np
import pytest

from photometry_graph.blending import blend
from photometry_graph.blending.blend import (
    feather_blend,
    feather_weight,
    levels_for_overlap,
    multiband_blend,
    normalise_weights,
    overlap_width,
)
from photometry_graph.datasets import make_sky
from photometry_graph.core.tiles import BBox


def _truth(shape=(96, 160), channels=1, seed=0):
    """Noise-free sky with stars and nebulae (H, W, C)."""
    sky = make_sky(shape, channels, rng=seed, star_density=3e-3, nebulae=2)
    return sky.render(BBox(0, shape[0], 0, shape[1])).astype(np.float32)


def _two_tiles(truth, x_split=(100, 60)):
    """Tile A covers columns < x_split[0], tile B columns >= x_split[1] (overlap between)."""
    a = truth.copy()
    a[:, x_split[0]:] = np.nan
    b = truth.copy()
    b[:, :x_split[1]] = np.nan
    return a, b


def _weights(*images, ramp=40.0):
    # tiles end at their NaN edges; the canvas edges are not tile borders
    return [feather_weight(np.isfinite(im).all(axis=-1), ramp=ramp,
                           border=(False, False, True, True)) for im in images]


# -- weights --------------------------------------------------------------------------

def test_feather_weight_is_zero_on_invalid_and_rises_smoothly_from_the_border():
    mask = np.ones((60, 80), bool)
    mask[20:30, 30:45] = False  # an empty zone
    w = feather_weight(mask, ramp=10)
    assert w.dtype == np.float32
    assert np.all(w[~mask] == 0) and np.all(w[mask] > 0)
    assert w[45, 60] == 1.0 and w.max() == 1.0
    # monotone along a line leaving the border, with small steps (smooth ramp)
    row = w[45, :12]
    assert np.all(np.diff(row[:10]) > 0) and np.abs(np.diff(row)).max() < 0.2
    # edges that are not tile borders are not feathered
    w_open = feather_weight(np.ones((60, 80), bool), ramp=10, border=False)
    assert np.all(w_open == 1.0)
    w_lr = feather_weight(np.ones((60, 80), bool), ramp=10, border=(False, False, True, True))
    assert np.all(w_lr[:, 40] == 1.0) and w_lr[0, 0] == w_lr[30, 0] < 0.1


def test_feather_weight_of_a_crop_equals_the_whole_tile_weight():
    rng = np.random.default_rng(1)
    mask = np.ones((120, 150), bool)
    for _ in range(4):
        y, x = rng.integers(10, 110), rng.integers(10, 140)
        mask[y - 6:y + 6, x - 9:x + 9] = False
    ramp = 16
    whole = feather_weight(mask, ramp=ramp)
    # crop 40:80 x 50:100 widened by the ramp + 1, inner edges are not tile borders
    ext = (slice(40 - ramp - 1, 80 + ramp + 1), slice(50 - ramp - 1, 100 + ramp + 1))
    roi = (slice(ramp + 1, ramp + 41), slice(ramp + 1, ramp + 51))
    crop = feather_weight(mask[ext], ramp=ramp, border=False, roi=roi)
    np.testing.assert_allclose(crop, whole[40:80, 50:100], atol=1e-6)


def test_normalised_weights_sum_to_one_on_overlaps():
    a, b = _two_tiles(_truth())
    wa, wb = normalise_weights(_weights(a, b))
    overlap = np.isfinite(a[..., 0]) & np.isfinite(b[..., 0])
    total = wa + wb
    np.testing.assert_allclose(total[overlap], 1.0, atol=1e-6)  # w_A + w_B = 1
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # and 1 wherever one tile covers
    # the hand-over is smooth: w_A goes from 1 to 0 across the overlap in small steps
    row = wa[50, 55:105]
    assert row[0] == 1.0 and row[-1] == 0.0 and np.all(np.diff(row) <= 1e-7)
    assert np.abs(np.diff(row)).max() < 0.08
    assert normalise_weights([np.zeros(3)])[0].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="non-negative"):
        normalise_weights([np.array([-1.0])])


def test_levels_follow_the_overlap_width():
    widths = [2, 8, 16, 40, 64, 128, 256, 1024]
    levels = [levels_for_overlap(w, max_levels=10) for w in widths]
    assert levels == sorted(levels) and levels[0] == 1 and levels[1] == 1
    for w, n in zip(widths, levels):
        if n > 1:  # the coarsest blur (+-3 sigma) fits in half the overlap
            sigma = np.sqrt((4.0 ** (n - 1) - 1) / 3)
            assert 3 * sigma <= w / 4
    assert levels_for_overlap(1024) == 6  # default cap
    a, b = _two_tiles(_truth())
    assert overlap_width(_weights(a, b)) == pytest.approx(40, abs=2)


# -- blends ----------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
def test_one_image_in_gives_exactly_that_image(channels):
    t = _truth(channels=channels)
    a, _ = _two_tiles(t)
    img = a if channels > 1 else a[..., 0]
    w = _weights(a)
    for out in (multiband_blend([img], w, levels=4), feather_blend([img], w)):
        assert out.shape == img.shape
        assert np.array_equal(out, img, equal_nan=True)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fill", ["mosaic", "pushpull"])
def test_identical_overlapping_tiles_give_the_same_image_without_seam(channels, fill):
    t = _truth(channels=channels)
    a, b = _two_tiles(t)
    out = multiband_blend([a, b], _weights(a, b), levels=4, fill=fill)
    np.testing.assert_allclose(out, t, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("empty", ["nan", "zero"])
def test_no_bleed_from_an_empty_zone(empty):
    """An empty zone of A inside the overlap (covered by B) leaves every pixel as if A
    held the true values there, and its content (NaN, 0, anything) never matters."""
    t = _truth(channels=3, seed=2)
    a, b = _two_tiles(t)
    zone = np.zeros(t.shape[:2], bool)
    zone[30:60, 70:90] = True  # inside the overlap, next to valid pixels of A

    def run(fill_value):
        a2 = a.copy()
        a2[zone] = fill_value
        mask = np.isfinite(a2).all(axis=-1) & ~zone
        wa = feather_weight(mask, ramp=40, border=(False, False, True, True))
        return multiband_blend([a2, b], [wa, _weights(b)[0]], levels=4)

    out = run(np.nan if empty == "nan" else 0.0)
    with_truth = run(t[zone])  # same zone, same masks, true values inside
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, with_truth, rtol=1e-6, atol=1e-5)
    # both tiles see the same sky: the blend is the sky, right up to the zone's edge
    np.testing.assert_allclose(out, t, rtol=1e-5, atol=1e-4)


def test_invalid_content_never_changes_the_blend_of_disagreeing_tiles():
    t = _truth(seed=3)
    a, b = _two_tiles(t)
    b = b + 5.0  # the tiles disagree: a real blend
    zone = np.zeros(t.shape[:2], bool)
    zone[20:70, 75:95] = True
    outs = []
    for junk in (np.nan, 0.0, 1e6):
        a2 = a.copy()
        a2[zone] = junk
        mask = np.isfinite(a2[..., 0]) & ~zone
        wa = feather_weight(mask, ramp=40, border=(False, False, True, True))
        a2[~mask] = np.where(np.isnan(junk), np.nan, junk)
        outs.append(multiband_blend([a2[..., 0], b[..., 0]], [wa, _weights(b)[0]], levels=4))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    # inside the zone only B covers: exactly B
    assert np.array_equal(outs[0][zone], b[..., 0][zone])


def test_offset_between_tiles_is_handed_over_without_a_step():
    t = _truth(seed=4)[..., 0]
    a, b = _two_tiles(t[..., None])
    a, b = a[..., 0], b[..., 0] + 10.0
    w = _weights(a[..., None], b[..., None])
    for out in (multiband_blend([a, b], w, levels=4), feather_blend([a, b], w)):
        resid = out - t  # 0 on A only, 10 on B only, a ramp in between
        assert np.array_equal(out[:, :60], a[:, :60]) and np.array_equal(out[:, 100:],
                                                                          b[:, 100:])
        step = np.abs(np.diff(resid, axis=1)).max()
        assert step < 10.0 * 3.0 / 40  # smoothstep hand-over: at most 1.5x the mean slope x 2


def test_multiband_channels_are_independent_and_levels_one_is_feathering():
    t = _truth(channels=3, seed=5)
    a, b = _two_tiles(t)
    b = b * np.array([1.1, 0.9, 1.0], np.float32)
    w = _weights(a, b)
    rgb = multiband_blend([a, b], w, levels=4)
    for c in range(3):
        mono = multiband_blend([a[..., c], b[..., c]], w, levels=4)
        np.testing.assert_allclose(rgb[..., c], mono, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(multiband_blend([a, b], w, levels=1), feather_blend([a, b], w))
    auto = multiband_blend([a, b], w)  # levels from the 40 px overlap
    assert np.isfinite(auto).all()


def test_bad_blend_arguments_are_rejected():
    a = np.ones((8, 8))
    with pytest.raises(ValueError, match="weight maps"):
        multiband_blend([a, a], [np.ones((8, 8))])
    with pytest.raises(ValueError, match="shape"):
        feather_blend([a, np.ones((8, 9))], [np.ones((8, 8)), np.ones((8, 9))])
    with pytest.raises(ValueError, match="levels"):
        multiband_blend([a], [np.ones((8, 8))], levels=0)
    with pytest.raises(ValueError, match="ramp"):
        feather_weight(np.ones((4, 4), bool), ramp=0)
    with pytest.raises(ValueError, match="unknown blend"):
        blend.blend_layers([], (4, 4), method="median")
