import json
import logging

import numpy as np
import pytest

from photometry_graph.photometry.background import (estimate_tile_background, match_backgrounds,
                                         overlap_differences)
from photometry_graph.core.correction import Correction
from photometry_graph.datasets import make_survey
from photometry_graph.photometry.overlap import build_tile_overlap_graph, fit_overlap_edges
from photometry_graph.photometry.solve import solve_global_photometry


def solved(survey, model="offset"):
    graph = build_tile_overlap_graph(survey.tiles)
    fit_overlap_edges(graph, model=model)
    return graph, solve_global_photometry(graph, model=model)


def test_background_is_the_clipped_median_of_valid_pixels_only():
    rng = np.random.default_rng(0)
    img = rng.normal(50.0, 2.0, (200, 200, 3)) + np.array([0.0, 10.0, -5.0])
    img[20:30, 20:30] += 500.0                 # a bright star field: clipped
    mask = np.ones((200, 200), bool)
    mask[:, 150:] = False
    img[:, 150:] = 1e6                         # invalid pixels: never used
    img[5, 5, 1] = np.nan                      # a NaN inside the mask: ignored
    bg = estimate_tile_background(img, mask)
    assert bg.shape == (3,)
    np.testing.assert_allclose(bg, [50.0, 60.0, 45.0], atol=0.05)
    mono = estimate_tile_background(img[..., 0], mask)
    assert mono.shape == (1,) and mono[0] == pytest.approx(bg[0])


def test_strided_samples_give_the_background_of_all_pixels():
    survey = make_survey(1, 1, 512, 0.2, rng=7, nebulae=2, empty_zones=True,
                         empty_value=np.nan)
    tile = survey.tiles[0]
    data, mask = tile.get_data(), tile.mask
    full = estimate_tile_background(data, mask, max_pixels=None)
    sampled = estimate_tile_background(data, mask, max_pixels=20_000)
    # a median of 20 000 samples: ~1.25 / sqrt(2e4) ~ 0.01 sigma of the full one
    assert abs(sampled[0] - full[0]) < 0.03 * survey.noise_sigma
    res_full = match_backgrounds(survey.tiles, max_pixels=None)
    res = match_backgrounds(survey.tiles, max_pixels=20_000)
    assert abs(res.backgrounds[0][0] - res_full.backgrounds[0][0]) < 0.03
    with pytest.raises(ValueError, match="max_pixels"):
        estimate_tile_background(data, mask, max_pixels=0)


def test_overlap_differences_on_strided_samples_and_threads():
    survey = make_survey(2, 2, 256, 0.3, rng=8)
    corr = {k: Correction([1.0], [float(-survey.offsets[k, 0])], status="solved")
            for k in range(4)}
    pairs, full = overlap_differences(survey.tiles, corr, max_pixels=None, workers=1)
    pairs2, sampled = overlap_differences(survey.tiles, corr, max_pixels=2000, workers=2)
    assert pairs == pairs2 and len(pairs) == 6
    # medians of ~2 000 differences of two noisy tiles: within ~0.1 sigma of the full ones
    assert np.abs(sampled - full).max() < 0.12 * survey.noise_sigma
    with pytest.raises(ValueError, match="max_pixels"):
        overlap_differences(survey.tiles, corr, max_pixels=0)


def test_background_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="no valid pixel"):
        estimate_tile_background(np.ones((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="does not match"):
        estimate_tile_background(np.ones((4, 4)), np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="kappa"):
        estimate_tile_background(np.ones((4, 4)), np.ones((4, 4), bool), kappa=0)
    nan = np.full((4, 4), np.nan)
    with pytest.raises(ValueError, match="finite"):
        estimate_tile_background(nan, np.ones((4, 4), bool))


def test_matching_applies_when_it_helps_and_respects_masks():
    # tiles that differ only by an offset, flat sky: shifting to the median target is right
    survey = make_survey(3, 3, 128, 0.2, rng=1, gain_range=(1.0, 1.0), nebulae=0,
                         empty_zones=True, empty_value=np.nan)
    res = match_backgrounds(survey.tiles)
    assert res.decision == "applied" and res.fraction == 1.0 and res.verified
    assert res.residual_after < 0.1 * res.residual_before
    # backgrounds are measured on valid pixels only (NaN zones would poison them)
    assert all(np.all(np.isfinite(b)) for b in res.backgrounds.values())
    ref = survey.expected_corrections(0)["offset"]
    shifts = np.array([res.shifts[k] for k in range(9)])
    # relative shifts equal the injected relative offsets (within noise and star leakage)
    np.testing.assert_allclose(shifts - shifts[0], ref - ref[0], atol=0.1)


def test_guard_never_increases_the_overlap_residual_after_a_solve():
    survey = make_survey(3, 3, 256, 0.2, rng=2)
    graph, sol = solved(survey)
    res = match_backgrounds(survey.tiles, sol.corrections, graph)
    assert res.residual_after <= res.residual_before * 1.01
    assert res.mean_after <= res.mean_before * 1.01
    # the guard reads the overlaps through the fits' means (no pixel read) ...
    _, diffs = overlap_differences(survey.tiles, res.corrections, graph, use_fits=True)
    assert np.median(np.abs(diffs)) == pytest.approx(res.residual_after, rel=1e-6, abs=1e-9)
    # ... which agree with the medians of the pixel differences to well within the noise
    _, pix = overlap_differences(survey.tiles, res.corrections, graph)
    assert np.abs(diffs - pix).max() < 0.05 * survey.noise_sigma
    pixel_guard = match_backgrounds(survey.tiles, sol.corrections, graph, use_fits=False)
    assert pixel_guard.residual_after <= pixel_guard.residual_before * 1.01
    assert np.median(np.abs(pix)) == pytest.approx(
        match_backgrounds(survey.tiles, res.corrections, graph, use_fits=False,
                          guard=False).residual_before, rel=1e-6, abs=1e-9)


def test_nebula_tile_naive_shift_recreates_steps_guarded_one_does_not(caplog):
    survey = make_survey(3, 3, 256, 0.2, rng=3, nebula_fill_tile=4)
    graph, sol = solved(survey)
    naive = match_backgrounds(survey.tiles, sol.corrections, graph, guard=False)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        guarded = match_backgrounds(survey.tiles, sol.corrections, graph)
    sigma = survey.noise_sigma
    # the nebula tile's median is far above the target: the naive shift pulls it down
    assert naive.proposed_shifts[4][0] < -5 * sigma
    assert naive.decision == "applied"
    assert naive.residual_after > 10 * naive.residual_before
    assert naive.residual_after > 1.0 * sigma
    assert guarded.decision in ("reduced", "skipped")
    assert guarded.residual_after <= guarded.residual_before * 1.01
    assert guarded.residual_naive == pytest.approx(naive.residual_after)
    assert "[GRID] Background:" in caplog.text
    assert ("shifts skipped" if guarded.decision == "skipped" else "reduced to") in caplog.text


def test_partial_shift_is_reduced_not_dropped(caplog):
    # identity corrections on tiles with offsets AND a nebula tile: part of the shift helps
    survey = make_survey(3, 3, 256, 0.2, rng=3, gain_range=(1.0, 1.0), nebula_fill_tile=4)
    naive = match_backgrounds(survey.tiles, guard=False)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        res = match_backgrounds(survey.tiles)
    assert naive.residual_after > 1.5 * naive.residual_before
    assert res.decision == "reduced" and 0.0 < res.fraction < 1.0
    assert res.residual_after < res.residual_before < res.residual_naive
    assert res.mean_after <= res.mean_before
    assert "reduced to" in caplog.text
    # the guard reducing the shifts is an expected outcome: said at INFO, not as a warning
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for k in range(9):
        np.testing.assert_allclose(res.shifts[k], res.fraction * res.proposed_shifts[k])


def test_inputs_not_modified_and_result_json_friendly():
    survey = make_survey(2, 2, 96, 0.2, rng=5)
    corr = {k: Correction([1.1], [2.0], status="solved") for k in range(4)}
    res = match_backgrounds(survey.tiles, corr)
    assert all(c.offset[0] == 2.0 and "background_shift" not in c.info for c in corr.values())
    assert all(res.corrections[k] is not corr[k] for k in range(4))
    for k in range(4):
        assert res.corrections[k].offset[0] == pytest.approx(2.0 + res.shifts[k][0])
        assert res.corrections[k].status == "solved"
    text = json.dumps(res.to_dict(), allow_nan=False)
    assert json.loads(text)["decision"] == res.decision


def test_unmeasurable_tiles_and_bad_arguments(caplog):
    survey = make_survey(1, 2, 64, 0.2, rng=6)
    dead = survey.tiles[1]
    dead.mask = np.zeros(dead.bbox.shape, bool)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = match_backgrounds(survey.tiles)
    assert "background not measured" in caplog.text
    assert np.all(res.shifts[1] == 0)
    with pytest.raises(ValueError, match="no tiles"):
        match_backgrounds([])
    with pytest.raises(ValueError, match="steps"):
        match_backgrounds(survey.tiles, steps=0)
