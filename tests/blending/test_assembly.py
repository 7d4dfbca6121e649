import logging

import numpy as np
import pytest

from photometry_graph.blending import blend as blend_module
from photometry_graph.blending.assembly import BBoxIndex, assemble_mosaic, chunk_boxes
from photometry_graph.core.correction import Correction
from photometry_graph.datasets import make_survey
from photometry_graph.diagnostics import bbox_boundaries, fit_to_truth, seam_metric
from photometry_graph.photometry.harmonize import harmonize_tiles
from photometry_graph.core.tiles import BBox, TilePhotometryInfo


def _corrections_from_truth(survey, reference):
    exp = survey.expected_corrections(reference)
    return {t.tile_id: Correction(exp["gain"][k], exp["offset"][k], exp["slope"][k])
            for k, t in enumerate(survey.tiles)}


def _tile(tile_id, bbox, data, **kw):
    return TilePhotometryInfo(tile_id, bbox, data=np.asarray(data, np.float32), **kw)


@pytest.fixture(scope="module")
def rgb_survey():
    return make_survey(3, 3, 128, 0.25, channels=3, rng=11, empty_zones=True,
                       empty_value=np.nan)


# -- invariants -------------------------------------------------------------------------

@pytest.mark.parametrize("blend", ["multiband", "feather", "none"])
def test_one_tile_in_gives_exactly_that_tile_out(blend):
    s = make_survey(1, 1, 96, 0.25, channels=3, rng=1, empty_zones=True, empty_value=0.0)
    tile = s.tiles[0]
    res = assemble_mosaic([tile], (96, 96), blend=blend, chunk_size=32)
    data, mask = tile.get_data(), tile.mask
    assert res.mosaic.shape == (96, 96, 3) and res.mosaic.dtype == np.float32
    assert np.array_equal(res.mosaic[mask], data[mask])  # bitwise
    assert np.isnan(res.mosaic[~mask]).all()
    assert np.array_equal(res.weight_sum > 0, mask)
    assert res.pyramid_overlaps == 0 and res.chunks_written == 9


def test_tile_partly_outside_the_canvas_is_placed_with_the_right_offsets():
    data = np.arange(1.0, 1 + 40 * 50).reshape(40, 50)
    tile = _tile(7, BBox(-10, 30, 20, 70), data)  # 10 rows above, 10 columns right of canvas
    res = assemble_mosaic([tile], (25, 60), chunk_size=16)
    np.testing.assert_array_equal(res.mosaic[:25, 20:60, 0], data[10:35, :40])
    assert np.isnan(res.mosaic[:, :20]).all()
    far = _tile(8, BBox(100, 110, 0, 10), np.ones((10, 10)))
    res2 = assemble_mosaic([tile, far], (25, 60), chunk_size=16)  # ignored with a warning
    np.testing.assert_array_equal(res2.mosaic, res.mosaic)
    assert res2.report["n_tiles_outside_canvas"] == 1


def test_two_identical_overlapping_tiles_give_the_same_image_without_seam():
    s = make_survey(1, 1, 160, 0.25, rng=2, add_noise=False)
    truth = s.truth[..., 0].astype(np.float32)  # 160 x 160 noise-free sky
    a = _tile(0, BBox(0, 160, 0, 100), truth[:, :100])
    b = _tile(1, BBox(0, 160, 60, 160), truth[:, 60:])
    for blend in ("multiband", "feather", "none"):
        res = assemble_mosaic([a, b], (160, 160), blend=blend, chunk_size=64)
        np.testing.assert_allclose(res.mosaic[..., 0], truth, rtol=1e-6, atol=1e-4)
    assert res.report["n_overlaps"] == 1


def test_weights_of_overlapping_tiles_sum_to_one_in_the_blend():
    # a blend of tiles holding the constants 1 and 3 is sum_i w_i x_i: 1 + 2 w_B
    a = _tile(0, BBox(0, 40, 0, 70), np.ones((40, 70)))
    b = _tile(1, BBox(0, 40, 40, 110), np.full((40, 70), 3.0))
    res = assemble_mosaic([a, b], (40, 110), blend="feather", chunk_size=32)
    w_b = (res.mosaic[..., 0] - 1.0) / 2.0
    assert np.all((w_b >= 0) & (w_b <= 1))
    assert np.all(w_b[:, :40] == 0) and np.all(w_b[:, 70:] == 1)
    assert np.all(np.diff(w_b[20, 39:71]) > 0)  # w_A = 1 - w_B falls across the overlap


@pytest.mark.parametrize("blend", ["multiband", "feather"])
def test_chunking_does_not_change_the_mosaic(rgb_survey, blend):
    s = rgb_survey
    corr = _corrections_from_truth(s, 4)
    big = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend=blend,
                          chunk_size=4096)
    scale = np.nanmax(np.abs(big.mosaic))
    for chunk in (96, 100):
        small = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend=blend,
                                chunk_size=chunk)
        assert small.chunks_written == len(chunk_boxes(s.canvas_shape, chunk)) > 4
        assert np.array_equal(np.isnan(small.mosaic), np.isnan(big.mosaic))
        assert np.nanmax(np.abs(small.mosaic - big.mosaic)) <= 1e-4 * scale
    threaded = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend=blend,
                               chunk_size=100, workers=2)
    np.testing.assert_array_equal(threaded.mosaic, small.mosaic)


def test_sink_receives_every_chunk_once_with_nan_where_no_weight(rgb_survey):
    s = rgb_survey
    ref = assemble_mosaic(s.tiles, s.canvas_shape, chunk_size=128)
    seen = np.zeros(s.canvas_shape, int)
    out = np.full(s.canvas_shape + (3,), -1.0, np.float32)

    def sink(bbox, data, weight_sum):
        assert data.shape == bbox.shape + (3,) and data.dtype == np.float32
        assert weight_sum.shape == bbox.shape
        assert np.array_equal(np.isnan(data).any(axis=-1), weight_sum == 0)
        seen[bbox.y0:bbox.y1, bbox.x0:bbox.x1] += 1
        out[bbox.y0:bbox.y1, bbox.x0:bbox.x1] = data

    res = assemble_mosaic(s.tiles, s.canvas_shape, chunk_size=128, sink=sink)
    assert res.mosaic is None and res.weight_sum is None
    assert np.all(seen == 1)
    np.testing.assert_array_equal(out, ref.mosaic)
    # the empty zones that no other tile covers stay empty; the rest is covered
    covered = np.zeros(s.canvas_shape, bool)
    for t in s.tiles:
        covered[t.bbox.y0:t.bbox.y1, t.bbox.x0:t.bbox.x1] |= t.mask
    assert np.array_equal(ref.weight_sum > 0, covered)


def test_corrections_are_applied_and_missing_ones_reported(caplog):
    s = make_survey(2, 2, 96, 0.25, rng=3, add_noise=False, gradient=4.0)
    corr = _corrections_from_truth(s, 0)
    res = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend="feather")
    # the mosaic is the truth in the reference tile's photometric system
    centre = np.array(s.tiles[0].bbox.center[::-1])
    plane = (s.slopes[0, 0, 0] * (np.arange(s.canvas_shape[1]) - centre[0])[None, :]
             + s.slopes[0, 0, 1] * (np.arange(s.canvas_shape[0]) - centre[1])[:, None])
    expected = s.gains[0, 0] * s.truth[..., 0] + s.offsets[0, 0] + plane
    np.testing.assert_allclose(res.mosaic[..., 0], expected, rtol=1e-5, atol=1e-3)
    del corr[3]
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res2 = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend="feather")
    assert res2.report["tiles_without_correction"] == ["3"]
    assert any(r.getMessage().startswith("[GRID]") and "no photometric correction" in
               r.getMessage() for r in caplog.records)


def test_plain_placement_is_the_coverage_weighted_mean():
    a = _tile(0, BBox(0, 10, 0, 12), np.full((10, 12), 2.0), coverage=np.full((10, 12), 3.0))
    b = _tile(1, BBox(0, 10, 8, 20), np.full((10, 12), 6.0), coverage=np.full((10, 12), 1.0))
    res = assemble_mosaic([a, b], (10, 20), blend="none", chunk_size=16)
    row = res.mosaic[5, :, 0]
    assert np.all(row[:8] == 2.0) and np.all(row[12:] == 6.0)
    np.testing.assert_allclose(row[8:12], (3 * 2.0 + 1 * 6.0) / 4)
    again = assemble_mosaic([a, b], (10, 20), blend="none", chunk_size=16)
    assert np.array_equal(again.mosaic, res.mosaic)  # reproducible plain mode


# -- quality against the truth -------------------------------------------------------

def test_assembled_survey_is_seamless_against_truth(caplog):
    s = make_survey(3, 3, 256, 0.25, rng=21)
    boundaries = bbox_boundaries([t.bbox for t in s.tiles], s.canvas_shape)
    corrections = harmonize_tiles(s.tiles).corrections  # the real pipeline
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        res = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corrections,
                              blend="multiband", chunk_size=256)
    plain = assemble_mosaic(s.tiles, s.canvas_shape, blend="none")
    seam = seam_metric(res.mosaic, s.truth, boundaries)
    seam_plain = seam_metric(plain.mosaic, s.truth, boundaries)
    assert seam <= 1.2, seam  # measured ~1.0
    assert seam_plain > 2.0, seam_plain  # measured ~6-30 depending on the draw
    assert np.isfinite(res.mosaic).all()
    assert res.levels >= 2 and res.pyramid_overlaps == 20 and res.fallbacks == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "[GRID] Blending: applied pyramidal blending on 20 overlaps" in messages
    assert any(m.startswith("[GRID] Blending: feathered 0 overlaps") for m in messages)
    # the photometry is the reference tile's: a fit against the truth is close to a pure gain
    alpha, beta = fit_to_truth(res.mosaic, s.truth)
    assert abs(beta[0]) < 2.0 + 0.5 * abs(s.offsets).max()
    assert 0.8 < alpha[0] < 1.25


def test_pyramid_failure_falls_back_to_feathering(monkeypatch, caplog, rgb_survey):
    s = rgb_survey
    corr = _corrections_from_truth(s, 4)
    feather = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend="feather")

    def broken(*args, **kwargs):
        raise RuntimeError("pyramid exploded")

    monkeypatch.setattr(blend_module, "_multiband_correction", broken)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = assemble_mosaic(s.tiles, s.canvas_shape, corrections=corr, blend="multiband",
                              chunk_size=128)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("[GRID]") and "pyramid failed" in m for m in warnings)
    # every chunk holding an overlap fell back (one corner chunk has none)
    assert 0 < res.fallbacks <= res.chunks_written == len(chunk_boxes(s.canvas_shape, 128))
    assert res.fallbacks == len(warnings)
    assert res.pyramid_overlaps == 0 and res.feathered_overlaps == 20
    np.testing.assert_allclose(res.mosaic, feather.mosaic, rtol=1e-6, atol=1e-5)


# -- helpers and arguments -----------------------------------------------------------

def test_bbox_index_finds_exactly_the_overlapping_boxes():
    rng = np.random.default_rng(4)
    boxes = []
    for _ in range(60):
        y, x = rng.integers(-50, 500, 2)
        h, w = rng.integers(1, 120, 2)
        boxes.append(BBox(y, y + h, x, x + w))
    index = BBoxIndex(boxes, cell=64)
    for _ in range(40):
        y, x = rng.integers(-20, 480, 2)
        q = BBox(y, y + rng.integers(1, 200), x, x + rng.integers(1, 200))
        assert index.query(q) == [i for i, b in enumerate(boxes) if b.overlaps(q)]


def test_bad_arguments_are_rejected_with_a_message():
    t = _tile(0, BBox(0, 8, 0, 8), np.ones((8, 8)))
    with pytest.raises(ValueError, match="unknown blend"):
        assemble_mosaic([t], (8, 8), blend="median")
    with pytest.raises(ValueError, match="chunk_size"):
        assemble_mosaic([t], (8, 8), chunk_size=4)
    with pytest.raises(ValueError, match="no tiles"):
        assemble_mosaic([], (8, 8))
    with pytest.raises(ValueError, match="channel"):
        assemble_mosaic([t, _tile(1, BBox(0, 8, 0, 8), np.ones((8, 8, 3)))], (8, 8))
    with pytest.raises(ValueError, match="no tile overlaps"):
        assemble_mosaic([_tile(2, BBox(20, 28, 0, 8), np.ones((8, 8)))], (8, 8))
    with pytest.raises(TypeError, match="Correction"):
        assemble_mosaic([t], (8, 8), corrections={0: (1.0, 0.0)})
    with pytest.raises(ValueError, match="floating"):
        assemble_mosaic([t], (8, 8), dtype=np.int16)
