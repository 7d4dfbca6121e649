"""Streamed per-pixel statistics of the stacking (photometry_graph.stacking.clip), against
the same statistics computed on all the values at once."""

import numpy as np
import pytest

from photometry_graph.stacking.clip import (COUNT_MAX_16, ClippedSums, ClipSettings, Moments,
                                            robust_bounds, trim_variance_ratio,
                                            winsor_scale_factor)


def _stack(seed=3, n=9, shape=(6, 7, 2)):
    rng = np.random.default_rng(seed)
    x = rng.normal(100, 2, (n,) + shape).astype(np.float32)
    x[rng.random(x.shape) < 0.05] += 40  # outliers
    x[rng.random(x.shape) < 0.3] = np.nan  # invalid: 0..n values per pixel
    x[:, 0, 0, 0] = np.nan  # no value at all
    x[2:, 0, 1, 0] = np.nan  # two values: nothing can be rejected
    return x


WHOLE = (slice(None), slice(0, 7))  # rows, pixel columns of the (6, 7, 2) band


def _moments(x, track):
    m = Moments(x.shape[1:], track)
    for frame in x:
        m.add(frame, WHOLE)
    return m


def _bounds(m, s, **kw):
    lo, hi = robust_bounds(m, s, **kw)
    return lo.reshape(m.shape), hi.reshape(m.shape)


@pytest.mark.parametrize("track", [1, 3])
def test_moments_count_sum_and_keep_the_extremes_in_order(track):
    x = _stack()
    m = _moments(x, track)
    n = m.n.reshape(x.shape[1:])
    np.testing.assert_array_equal(n, np.isfinite(x).sum(axis=0))
    srt = np.sort(np.where(np.isnan(x), np.inf, x), axis=0)
    np.testing.assert_array_equal(m.lows.reshape((track,) + n.shape), srt[:track])
    srt = -np.sort(np.where(np.isnan(x), np.inf, -x), axis=0)
    np.testing.assert_array_equal(m.highs.reshape((track,) + n.shape), srt[:track])
    ok = n > 0
    np.testing.assert_allclose(m.s1.reshape(n.shape)[ok], np.nansum(x.astype(float), 0)[ok],
                               rtol=1e-12)
    np.testing.assert_allclose(m.s2.reshape(n.shape)[ok],
                               np.nansum(x.astype(float) ** 2, 0)[ok], rtol=1e-12)


@pytest.mark.parametrize("method,track", [("kappa_sigma", 1), ("winsorized", 3)])
def test_counts_in_16_bits_give_the_bounds_of_32_bit_counts_in_blocks_of_any_rows(method,
                                                                                   track):
    x = _stack(n=25)
    wide = _moments(x, track)
    narrow = Moments(x.shape[1:], track, max_count=len(x))
    for frame in x:
        narrow.add(frame, WHOLE)
    assert wide.n.dtype == np.int32 and narrow.n.dtype == np.uint16
    assert Moments(x.shape[1:], track, max_count=COUNT_MAX_16 + 1).n.dtype == np.int32
    np.testing.assert_array_equal(narrow.n, wide.n)
    s = ClipSettings(method, 2.5, 3.0)
    ref = robust_bounds(wide, s, rows=64)
    assert np.isfinite(ref[0]).mean() > 0.5
    for rows in (1, 4, 16):
        for got, want in zip(robust_bounds(narrow, s, rows=rows), ref):
            np.testing.assert_array_equal(got, want)


def test_kappa_sigma_bounds_leave_the_extremes_out():
    x = _stack()
    s = ClipSettings("kappa_sigma", 2.5, 3.0)
    lo, hi = _bounds(_moments(x, 1), s, rows=2)  # rows: computed block by block
    for idx in np.ndindex(x.shape[1:]):
        v = np.sort(x[(slice(None),) + idx][np.isfinite(x[(slice(None),) + idx])]).astype(float)
        if v.size < 3:
            assert lo[idx] == -np.inf and hi[idx] == np.inf
            continue
        if v.size == 3:
            c, sd = v.mean(), v.std(ddof=1)
        else:
            c, sd = v[1:-1].mean(), v[1:-1].std(ddof=1) / np.sqrt(trim_variance_ratio(v.size))
        assert lo[idx] == pytest.approx(c - 2.5 * sd, abs=1e-4 * float(sd))
        assert hi[idx] == pytest.approx(c + 3.0 * sd, abs=1e-4 * float(sd))


def test_winsorized_bounds_replace_the_extremes_by_the_next_values():
    x = _stack(n=25)
    s = ClipSettings("winsorized", 3.0, 3.0, winsor_limits=(0.05, 0.1))
    lo, hi = _bounds(_moments(x, 3), s)
    checked = 0
    for idx in np.ndindex(x.shape[1:]):
        v = np.sort(x[(slice(None),) + idx][np.isfinite(x[(slice(None),) + idx])]).astype(float)
        n = v.size
        if n < 3:
            continue
        k_lo, k_hi = min(int(np.ceil(0.05 * n)), 2), min(int(np.ceil(0.1 * n)), 2)
        if k_lo + k_hi > n - 2:
            k_lo = k_hi = 0
        w = np.clip(v, v[k_lo], v[n - 1 - k_hi])
        sd = w.std(ddof=1) * winsor_scale_factor(0.5 * (k_lo + k_hi) / n)
        assert lo[idx] == pytest.approx(w.mean() - 3 * sd, abs=1e-4 * float(sd))
        assert hi[idx] == pytest.approx(w.mean() + 3 * sd, abs=1e-4 * float(sd))
        checked += 1
    assert checked > 50


def test_clipped_sums_average_the_kept_values_and_keep_a_pixel_whose_every_value_fails():
    x = _stack()
    m = _moments(x, 1)
    lo, hi = _bounds(m, ClipSettings("kappa_sigma", 3.0, 3.0))
    lo[1, 1, 0], hi[1, 1, 0] = 1e6, 2e6  # nothing within: the plain mean stays
    weights = np.linspace(0.5, 1.5, x.shape[0])
    sums = ClippedSums(m.shape, lo.reshape(m.n.shape), hi.reshape(m.n.shape))
    for frame, wk in zip(x, weights):
        sums.add(frame, WHOLE, wk)
    out, wsum = sums.result()
    w = np.where(np.isfinite(x), weights[:, None, None, None], 0.0)
    keep = np.isfinite(x) & (x >= lo) & (x <= hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kept = np.nansum(np.where(keep, x * w, 0), axis=0) / (w * keep).sum(axis=0)
        plain = np.nansum(x * w, axis=0) / w.sum(axis=0)
    expect = np.where((w * keep).sum(axis=0) > 0, kept, plain)
    np.testing.assert_allclose(out, expect, rtol=1e-6)
    assert out[1, 1, 0] == pytest.approx(plain[1, 1, 0], rel=1e-6)
    assert np.isnan(out[0, 0, 0]) and wsum[0, 0, 0] == 0
    assert (keep != np.isfinite(x)).any()  # something was rejected
    assert sums.used == int(keep.sum())
