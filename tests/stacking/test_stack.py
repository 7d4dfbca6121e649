import numpy as np
import pytest

from photometry_graph.datasets import make_sky
from photometry_graph.stacking.stack import (estimate_frame_noise, inverse_variance_weight,
                                    stack_frames)
from photometry_graph.core.tiles import BBox

H, W = 120, 160
SIGMA = 1.0


def _frames(n=9, channels=1, seed=0, trail=True, cosmics=True, hole=True):
    rng = np.random.default_rng(seed)
    sky = make_sky((H, W), channels, rng=seed + 100)
    truth = sky.render(BBox(0, H, 0, W)).astype(np.float32)
    frames = [truth + rng.normal(0, SIGMA, truth.shape).astype(np.float32) for _ in range(n)]
    yy, xx = np.mgrid[:H, :W]
    trail_mask = np.abs(yy - 0.6 * xx - 15) < 1.5
    cosmic_mask = np.zeros((H, W), bool)
    if trail:
        frames[2][trail_mask] += 50 * SIGMA
    if cosmics:
        cosmic_mask = rng.random((H, W)) < 0.003
        cosmic_mask &= ~trail_mask  # one outlier per pixel for this test
        frames[5][cosmic_mask] += 300 * SIGMA
    hole_mask = np.zeros((H, W), bool)
    if hole:
        hole_mask[30:60, 40:90] = True
        frames[1][hole_mask] = np.nan
    return truth, frames, trail_mask, cosmic_mask, hole_mask


def _getter(frames, weights=None):
    calls = []

    def get(k):
        calls.append(k)
        return frames[k], (None if weights is None else weights[k])
    return get, calls


@pytest.mark.parametrize("method", ["kappa_sigma", "winsorized"])
def test_clipping_removes_the_trail_and_cosmic_hits(method):
    n = 9
    truth, frames, trail, cosmics, _ = _frames(n)
    get, _ = _getter(frames)
    out, cov = stack_frames(get, n, method=method)
    res = (out - truth)[..., 0]
    floor = SIGMA / np.sqrt(n)
    # along the trail and on the cosmic hits the residual is noise, not the outlier
    assert np.abs(res[trail]).max() < 3 * floor * 1.5
    assert abs(res[trail].mean()) < 0.5 * floor
    assert np.abs(res[cosmics]).max() < 4 * floor
    # rejected values lower the coverage there
    assert np.median(cov[trail]) == pytest.approx(n - 1)
    # clean pixels: close to the ideal noise of a mean of n frames
    clean = ~trail & ~cosmics
    assert np.sqrt(np.mean(res[clean] ** 2)) < 1.08 * floor


def test_plain_mean_keeps_outliers_and_median_does_not():
    n = 9
    truth, frames, trail, _, _ = _frames(n, cosmics=False)
    get, _ = _getter(frames)
    mean, _ = stack_frames(get, n, method="mean")
    med, _ = stack_frames(get, n, method="median")
    assert np.median((mean - truth)[..., 0][trail]) > 0.8 * 50 / n
    assert abs(np.median((med - truth)[..., 0][trail])) < 0.3


def test_mean_of_clean_frames_is_within_the_expected_noise():
    n = 16
    truth, frames, _, _, _ = _frames(n, channels=3, trail=False, cosmics=False, hole=False)
    get, _ = _getter(frames)
    for method in ("mean", "kappa_sigma", "winsorized"):
        out, cov = stack_frames(get, n, method=method)
        res = out - truth
        rms = np.sqrt(np.mean(res ** 2))
        assert rms == pytest.approx(SIGMA / np.sqrt(n), rel=0.06), method
        assert abs(res.mean()) < 3 * SIGMA / np.sqrt(n * res.size)
        if method == "mean":
            assert np.all(cov == n)


@pytest.mark.parametrize("method", ["kappa_sigma", "winsorized", "mean", "median"])
def test_streaming_equals_in_memory(method, caplog):
    n = 10
    truth, frames, trail, cosmics, _ = _frames(n, channels=3, seed=4)
    get, calls = _getter(frames)
    mem, cov_mem, info_mem = stack_frames(get, n, method=method, return_info=True)
    assert not info_mem["streaming"] and len(calls) == n
    calls.clear()
    stream, cov_str, info_str = stack_frames(get, n, method=method, memory_budget_bytes=1,
                                             return_info=True)
    assert info_str["streaming"]
    # a mean takes one pass; clipping two (the first frame, read to learn the shape, is
    # kept); the median holds the values of a few rows at a time, read for each
    if method == "median":
        assert len(calls) > 2 * n
    else:
        assert len(calls) == (n if method == "mean" else 2 * n - 1)
    # the budget changes how often the frames are read, never the pixels
    np.testing.assert_array_equal(stream, mem)
    np.testing.assert_array_equal(cov_str, cov_mem)
    floor = SIGMA / np.sqrt(n)
    if method in ("kappa_sigma", "winsorized"):
        res = np.abs(stream - truth)[trail]
        assert res.max() < 3 * floor * 1.5
        assert np.abs(stream - truth)[cosmics].max() < 4 * floor
    assert not any("[GRID]" in r.getMessage() for r in caplog.records)


def test_nan_regions_and_coverage_counts():
    n = 6
    truth, frames, _, _, hole = _frames(n, trail=False, cosmics=False)
    frames = [f.copy() for f in frames]
    for k in range(n):  # a region no frame covers
        frames[k][:10, :20] = np.nan
    frames[3][100:, 100:] = np.nan
    get, _ = _getter(frames)
    for method in ("mean", "median", "kappa_sigma", "winsorized"):
        out, cov = stack_frames(get, n, method=method)
        assert out.dtype == np.float32 and cov.dtype == np.float32
        assert np.isnan(out[:10, :20]).all() and np.all(cov[:10, :20] == 0)
        assert np.isfinite(out[10:]).all()
        assert np.all(cov[hole] <= n - 1)
        if method in ("mean", "median"):
            assert np.all(cov[hole] == n - 1)
            assert np.all(cov[100:, 100:] == n - 1)
            assert cov[80, 20] == n
    # one frame only: its values, NaN where it is NaN
    out1, cov1 = stack_frames(lambda k: (frames[1], None), 1)
    np.testing.assert_array_equal(out1, frames[1])
    assert np.all(cov1[np.isnan(frames[1][..., 0])] == 0)


def test_weights_are_honoured():
    # two constant frames: the weighted mean follows the weights exactly
    a = np.full((8, 8), 10.0, np.float32)
    b = np.full((8, 8), 20.0, np.float32)
    pw = np.ones((8, 8), np.float32)
    pw[:4] = 3.0
    get = lambda k: ((a, None) if k == 0 else (b, pw))  # noqa: E731
    out, cov = stack_frames(get, 2, weights=[1.0, 2.0], method="mean")
    assert out[6, 0, 0] == pytest.approx((10 + 2 * 20) / 3)
    assert out[0, 0, 0] == pytest.approx((10 + 6 * 20) / 7)
    assert cov[6, 0] == pytest.approx(3.0) and cov[0, 0] == pytest.approx(7.0)
    # zero weight: the frame is ignored (and never read)
    get2, calls = _getter([a, b])
    out, cov = stack_frames(get2, 2, weights=[0.0, 1.0], method="kappa_sigma")
    assert np.all(out == 20.0) and np.all(cov == 1.0) and calls == [1]


def test_inverse_variance_weights_lower_the_noise():
    rng = np.random.default_rng(3)
    truth = np.zeros((100, 100), np.float32)
    sig = [1.0, 1.0, 4.0, 4.0]
    frames = [truth + rng.normal(0, s, truth.shape).astype(np.float32) for s in sig]
    noise = [estimate_frame_noise(f)[0] for f in frames]
    assert noise == pytest.approx(sig, rel=0.1)
    w = [inverse_variance_weight(s) for s in noise]
    get, _ = _getter(frames)
    eq, _ = stack_frames(get, 4, method="mean")
    iv, _ = stack_frames(get, 4, weights=w, method="mean")
    assert np.std(iv) < 0.8 * np.std(eq)
    assert np.std(iv) == pytest.approx(1 / np.sqrt(2 + 2 / 16), rel=0.1)
    assert inverse_variance_weight([np.nan]) == 0.0


def test_bad_arguments_are_rejected():
    f = np.zeros((4, 4), np.float32)
    get = lambda k: (f, None)  # noqa: E731
    with pytest.raises(ValueError, match="method"):
        stack_frames(get, 2, method="sum")
    with pytest.raises(ValueError, match="weights"):
        stack_frames(get, 2, weights=[1.0])
    with pytest.raises(ValueError, match="at least one"):
        stack_frames(get, 0)
    with pytest.raises(ValueError, match="shape"):
        stack_frames(lambda k: (np.zeros((4, 4 + k)), None), 2)
    with pytest.raises(ValueError, match="winsor"):
        stack_frames(get, 2, method="winsorized", winsor_limits=(0.6, 0.5))
    with pytest.raises(ValueError, match="every frame weight"):
        stack_frames(get, 2, weights=[0, 0])


def test_frame_weights_follow_exposure_and_corrected_noise():
    from photometry_graph.stacking.stack import frame_weights
    t, sigma = [10.0, 20.0, 10.0, 10.0], [1.0, 1.0, 2.0, np.nan]
    w = frame_weights(t, sigma, gains=[1.0, 1.0, 1.0, 1.0])
    assert w.mean() == pytest.approx(1.0)
    # exposure x (median sigma / sigma)**2; unknown noise counts as the median frame's
    np.testing.assert_allclose(w / w[0], [1.0, 2.0, 0.25, 1.0])
    # a frame scaled by the photometry by a gain of 2 has twice the noise
    w = frame_weights([1, 1, 1], [1.0, 1.0, 1.0], gains=[1.0, -2.0, 1.0], method="noise")
    np.testing.assert_allclose(w / w[0], [1.0, 0.25, 1.0])
    np.testing.assert_allclose(frame_weights(t, sigma, method="exposure"), np.array(t) / 12.5)
    np.testing.assert_array_equal(frame_weights(t, sigma, method="none"), np.ones(4))
    np.testing.assert_array_equal(frame_weights([0, -1], [1, 1], method="exposure"), [1, 1])


def test_frame_weights_reject_bad_arguments():
    from photometry_graph.stacking.stack import frame_weights
    with pytest.raises(ValueError, match="unknown frame weight method"):
        frame_weights([1], [1], method="fwhm")
    with pytest.raises(ValueError, match="one of each per frame"):
        frame_weights([1, 2], [1])


def test_radial_weight_is_flat_inside_and_falls_to_the_corners():
    from photometry_graph.stacking.stack import radial_weight
    w = radial_weight((60, 90), fraction=0.5, power=2.0)
    assert w.dtype == np.float32 and w.shape == (60, 90)
    assert np.array_equal(w, w[::-1]) and np.array_equal(w, w[:, ::-1])  # symmetric
    assert (w[25:35, 35:55] == 1.0).all() and w.min() >= 1e-3 and w[0, 0] < 0.01
    diag = w[np.arange(30), np.round(np.arange(30) * 1.5).astype(int)][::-1]  # centre -> corner
    assert np.all(np.diff(diag) <= 0)
    assert (radial_weight((60, 90), fraction=0.99) == 1.0).mean() > 0.95
    assert (radial_weight((60, 90), fraction=0.5, power=1.0) >= w).all()


def test_frame_on_tile_reprojects_weights_and_applies_the_correction():
    from astropy.wcs import WCS

    from photometry_graph.core.correction import Correction
    from photometry_graph.stacking.stack import frame_on_tile
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt, w.wcs.crval, w.wcs.crpix = [-1e-3, 1e-3], [10, 10], [1, 1]
    yy, xx = np.mgrid[:40, :50]
    frame = np.stack([xx + 100.0, yy + 200.0], axis=-1).astype(np.float32)
    frame[5:8, 5:8] = np.nan
    weight = np.full((40, 50), 0.5, np.float32)
    before = frame.copy()
    corr = Correction(gain=np.array([2.0, 1.0]), offset=np.array([1.0, -5.0]),
                      slope=np.zeros((2, 2)))
    box = BBox(0, 20, 30, 60)
    out, wt = frame_on_tile(frame, w, w, box, weight=weight, correction=corr)
    assert np.array_equal(frame, before, equal_nan=True)
    assert out.shape == (20, 30, 2) and out.dtype == np.float32 and wt.dtype == np.float32
    inside = wt > 0
    assert inside[:, :20].all() and not inside[:, 20:].any()   # the frame ends at x = 50
    assert np.isnan(out[~inside]).all()
    np.testing.assert_allclose(wt[inside], 0.5, atol=1e-6)
    # identity geometry: the tile is the frame's crop, gain and offset applied
    np.testing.assert_allclose(out[:, :20, 0], 2 * (xx[:20, 30:] + 100.0) + 1, atol=1e-3)
    np.testing.assert_allclose(out[:, :20, 1], yy[:20, 30:] + 195.0, atol=1e-3)
    # invalid frame pixels stay invalid (and keep no weight)
    out2, wt2 = frame_on_tile(frame, w, w, BBox(0, 20, 0, 20))
    assert np.isnan(out2[6, 6]).all() and wt2[6, 6] == 0 and wt2[15, 15] == 1.0


def _windowed(frames, rng):
    """Each frame cut to a random window of the tile (NaN outside it in the full version)."""
    full, wins = [], []
    for f in frames:
        y0, x0 = rng.integers(0, H // 3), rng.integers(0, W // 3)
        y1, x1 = rng.integers(2 * H // 3, H + 1), rng.integers(2 * W // 3, W + 1)
        g = np.full_like(f, np.nan)
        g[y0:y1, x0:x1] = f[y0:y1, x0:x1]
        full.append(g)
        wins.append((f[y0:y1, x0:x1], (y0, x0)))
    return full, wins


@pytest.mark.parametrize("method,budget", [("kappa_sigma", None), ("winsorized", None),
                                           ("median", None), ("mean", None),
                                           ("kappa_sigma", 1)])
def test_frames_given_as_windows_stack_like_full_frames(method, budget):
    # a mosaic's frames cover parts of a tile: windows must give the full frames' result
    n = 7
    _, frames, *_ = _frames(n, channels=3, seed=4)
    full, wins = _windowed(frames, np.random.default_rng(1))
    kw = dict(method=method) if budget is None else dict(method=method,
                                                         memory_budget_bytes=budget)
    ref, ref_cov = stack_frames(lambda k: (full[k], None), n, **kw)
    got, cov = stack_frames(lambda k: (wins[k][0], None, wins[k][1]), n, shape=(H, W), **kw)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(cov, ref_cov, atol=1e-5)
    # some pixels have fewer than 3 frames: the sparse clipping path is exercised
    assert (cov < 3).any() and (cov >= 5).any()


def test_windows_need_the_tile_shape_and_must_fit_it():
    f = np.ones((10, 10), np.float32)
    with pytest.raises(ValueError, match="tile shape"):
        stack_frames(lambda k: (f, None, (0, 0)), 2)
    with pytest.raises(ValueError, match="does not fit the tile"):
        stack_frames(lambda k: (f, None, (5 * k, 0)), 2, shape=(12, 10))


def test_frame_on_tile_window_is_the_crop_of_the_full_tile():
    from astropy.wcs import WCS

    from photometry_graph.stacking.stack import frame_on_tile
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cdelt, w.wcs.crval, w.wcs.crpix = [-1e-3, 1e-3], [10, 10], [1, 1]
    frame = np.random.default_rng(0).normal(10, 1, (40, 50)).astype(np.float32)
    box = BBox(-10, 30, 20, 80)
    full, wt_full = frame_on_tile(frame, w, w, box)
    part, wt, (oy, ox) = frame_on_tile(frame, w, w, box, footprint=BBox(-2, 42, -2, 52))
    assert (oy, ox) == (8, 0) and part.shape[:2] == (32, 32)
    np.testing.assert_array_equal(part, full[oy:oy + 32, ox:ox + 32])
    assert wt_full.sum() == wt.sum()
    empty, wt_e, _ = frame_on_tile(frame, w, w, box, footprint=BBox(100, 120, 0, 10))
    assert empty.size == 0 and wt_e.size == 0


@pytest.mark.parametrize("method", ["kappa_sigma", "winsorized", "mean", "median"])
def test_bands_read_piecewise_at_any_budget_give_the_same_pixels(method):
    # frames as windows read band by band (band_reader): every budget -- all kept in
    # memory, a few bands at a time, one band and nothing kept -- the same bits
    n = 9
    _, frames, *_ = _frames(n, channels=3, seed=5)
    _, wins = _windowed(frames, np.random.default_rng(2))
    calls = []

    def pieces(k, bands):
        calls.append((k, tuple(bands)))
        (data, (y0, x0)) = wins[k]
        out = []
        for r0, r1 in bands:
            a, b = max(r0, y0), min(r1, y0 + data.shape[0])
            out.append((data[a - y0:b - y0], None, (a, x0)) if a < b else
                       (np.empty((0, 0, 3), np.float32), None, (0, 0)))
        return out

    windows = [(y0, y0 + d.shape[0], x0, x0 + d.shape[1]) for d, (y0, x0) in wins]
    kw = dict(method=method, shape=(H, W, 3), windows=windows, band_rows=16,
              band_reader=True, return_info=True)
    ref, ref_cov, info = stack_frames(pieces, n, memory_budget_bytes=2 ** 30, **kw)
    assert not info["streaming"] and info["bands"] == 8 and info["groups"] == 1
    reads = len(calls)
    for budget in (2_400_000, 60_000, 1):  # one group and few kept; single bands
        calls.clear()
        got, cov, info = stack_frames(pieces, n, memory_budget_bytes=budget, **kw)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(cov, ref_cov)
        assert info["streaming"] and len(calls) >= reads
    full, full_cov = stack_frames(lambda k: (wins[k][0], None, wins[k][1]), n, method=method,
                                  shape=(H, W))
    np.testing.assert_array_equal(full, ref)  # the same as the whole windows at once


def test_a_frame_whose_last_piece_stayed_in_memory_is_read_again_whole():
    # every frame kept but the last, whose last piece stays held from the first pass: the
    # second pass reads its other pieces (a regression: it lost the held one)
    from photometry_graph.stacking.clip import STATE_BYTES
    n = 6
    _, frames, *_ = _frames(n, channels=1, seed=6)

    def pieces(k, bands):
        return [(frames[k][r0:r1], None, (r0, 0)) for r0, r1 in bands]

    # the accumulators of every band at once (8 bands of 16 rows), and the first 5 frames
    state = (STATE_BYTES["moments"] + STATE_BYTES["track"] + 8) * W * 16 * -(-H // 16)
    kept = (n - 1) * frames[0].nbytes
    kw = dict(shape=(H, W, 1), band_rows=16, band_reader=True, return_info=True)
    ref, _, _ = stack_frames(pieces, n, **kw)
    got, _, info = stack_frames(pieces, n, memory_budget_bytes=state + kept + 100, **kw)
    np.testing.assert_array_equal(got, ref)
    assert info["groups"] == 1 and info["reads"] == n + 1


def test_a_pixel_whose_every_value_is_rejected_keeps_its_plain_weighted_mean():
    # the values 1, 2, 4, 5 of a patch: the trimmed centre 3 with kappa 0.1 rejects all
    # four, and the stacking averages them in a pass over the bands that hold the patch;
    # elsewhere every frame says 10 (scale 0: kept, the bounds being inclusive)
    frames = [np.full((64, 20, 1), 10.0, np.float32) for _ in range(4)]
    for f, v in zip(frames, (1.0, 2.0, 4.0, 5.0)):
        f[40:44, 3:7] = v
    kw = dict(method="kappa_sigma", kappa_low=0.1, kappa_high=0.1, weights=[1, 2, 3, 4],
              shape=(64, 20, 1), band_rows=16, band_reader=True, return_info=True)
    calls = []

    def pieces(k, bands):
        calls.append(k)
        return [(frames[k][r0:r1], None, (r0, 0)) for r0, r1 in bands]

    for budget in (2 ** 30, 1):  # all in memory; nothing kept
        calls.clear()
        out, cov, info = stack_frames(pieces, 4, memory_budget_bytes=budget, **kw)
        assert out[40:44, 3:7, 0] == pytest.approx(np.full((4, 4), 3.7), rel=1e-6)
        assert np.all(cov[40:44, 3:7] == 10.0)
        rest = np.ones((64, 20), bool)
        rest[40:44, 3:7] = False
        assert np.all(out[rest, 0] == 10.0) and np.all(cov[rest] == 10.0)
        assert info["rejected_values"] == 4 * 16
        if budget == 1:  # band by band, two passes each; a third for the patch's band only
            assert info["groups"] == 4 and len(calls) == 4 * 2 * 4 + 4
        else:
            assert info["groups"] == 1 and info["passes"] == 3 and len(calls) == 4


def test_smaller_groups_of_bands_when_their_pieces_then_stay_in_memory():
    # 8 frames of 64 x 4000 px, 4 bands of 16 rows: all at once, the accumulators leave
    # room for 12 of the 32 pieces (the rest read again in the second pass), three bands
    # at a time for 21 of 24; two groups of two bands keep all theirs, each frame read
    # once per group
    from photometry_graph.stacking.clip import STATE_BYTES
    rng = np.random.default_rng(8)
    frames = [rng.normal(100, 1, (64, 4000, 1)).astype(np.float32) for _ in range(8)]
    frames[3][10:30, 100:200] += 50  # something to reject
    calls = []

    def pieces(k, bands):
        calls.append((k, tuple(bands)))
        return [(frames[k][r0:r1], None, (r0, 0)) for r0, r1 in bands]

    kw = dict(shape=(64, 4000, 1), band_rows=16, band_reader=True, return_info=True)
    ref, ref_cov, info = stack_frames(pieces, 8, memory_budget_bytes=2 ** 30, **kw)
    assert info["groups"] == 1 and info["reads"] == 8 and not info["streaming"]
    band = (STATE_BYTES["moments"] + STATE_BYTES["track"] + 8) * 4000 * 16
    budget = 4 * band + 3 * 2 ** 20  # pieces of 256 kB
    calls.clear()
    got, cov, info = stack_frames(pieces, 8, memory_budget_bytes=budget, **kw)
    assert info["groups"] == 2 and info["reads"] == 16 == len(calls)
    assert sorted(calls) == sorted([(k, ((0, 16), (16, 32))) for k in range(8)]
                                   + [(k, ((32, 48), (48, 64))) for k in range(8)])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(cov, ref_cov)
    assert info["rejected_values"] > 2000  # the bright patch
