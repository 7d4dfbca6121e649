"""Tables: edge residuals, tile corrections, the truth summary, text tables."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from photometry_graph.core.correction import Correction
from photometry_graph.datasets import make_survey
from photometry_graph.diagnostics.tables import (
    EDGE_COLUMNS, TILE_COLUMNS, edge_residual_table, format_table, tile_table, truth_summary)


def _edge_index(solution):
    return {tuple(e): k for k, e in enumerate(solution.edge_residuals["edges"])}


@pytest.mark.parametrize("which", ["mono", "rgb_plane"])
def test_edge_table_has_one_row_per_edge_and_channel_with_fit_and_residuals(which, request):
    s, res = request.getfixturevalue(which)
    rows = edge_residual_table(res)
    C = s.n_channels
    assert len(rows) == res.graph.number_of_edges() * C
    assert all(list(r) == list(EDGE_COLUMNS) for r in rows)
    index = _edge_index(res.solution)
    er = res.solution.edge_residuals
    for r in rows:
        fit = res.graph.edges[r["src"], r["dst"]]["fits"][r["channel"]]
        assert r["a"] == fit.a and r["b"] == fit.b and r["status"] == fit.status
        assert r["n_valid"] == res.graph.edges[r["src"], r["dst"]]["n_valid"]
        k = index[(r["src"], r["dst"])]
        for key in ("gain_before", "gain_after", "offset_before", "offset_after"):
            np.testing.assert_equal(r[key], er[key][k, r["channel"]])
    before = np.nanmedian([abs(r["offset_before"]) for r in rows])
    after = np.nanmedian([abs(r["offset_after"]) for r in rows])
    assert after < 0.05 * before


def test_edge_table_from_a_solution_alone_has_residuals_but_no_fit(mono):
    _, res = mono
    rows = edge_residual_table(res.solution)
    assert len(rows) == len(res.solution.edge_residuals["edges"])
    assert all(np.isnan(r["a"]) for r in rows)
    full = {(r["src"], r["dst"]): r for r in edge_residual_table(res)}
    for r in rows:
        np.testing.assert_equal(r["offset_after"], full[(r["src"], r["dst"])]["offset_after"])


def test_edge_table_rejects_other_objects():
    with pytest.raises(TypeError, match="HarmonizationResult"):
        edge_residual_table(np.zeros(3))


@pytest.mark.parametrize("which", ["mono", "rgb_plane"])
def test_tile_table_rows_match_the_corrections(which, request):
    s, res = request.getfixturevalue(which)
    rows = tile_table(res)
    C = s.n_channels
    assert len(rows) == len(s.tiles) * C
    assert all(list(r) == [c for c in TILE_COLUMNS if c in r] for r in rows)
    for r in rows:
        corr = res.corrections[r["tile_id"]]
        c = r["channel"]
        assert r["gain"] == corr.gain[c] and r["offset"] == corr.offset[c]
        assert r["gain_err"] == corr.gain_err[c] or np.isnan(corr.gain_err[c])
        assert (r["slope_x"], r["slope_y"]) == tuple(corr.slope[c])
        assert r["component"] == 0
    refs = [r for r in rows if r["reference"]]
    assert {r["tile_id"] for r in refs} == set(res.solution.references)
    assert all(r["gain"] == 1.0 for r in refs)
    if res.background is not None:
        for r in rows:
            assert r["background"] == res.background.backgrounds[r["tile_id"]][r["channel"]]


def test_tile_table_with_survey_adds_the_truth(mono):
    s, res = mono
    rows = tile_table(res, s)
    summary = truth_summary(res, s)
    errs = [abs(r["gain_error"]) for r in rows if not r["reference"]]
    assert max(errs) == pytest.approx(summary["gain_error_max"])
    assert max(errs) < 0.02  # the solve recovers the injected gains


def _direct_errors(survey, result):
    """Relative gain and centre offset errors computed straight from the definitions."""
    ref = result.solution.references[0]
    e = survey.expected_corrections(ref)
    cr = result.corrections[ref]
    g_err, o_err, l_err = [], [], []
    for k, tile in enumerate(survey.tiles):
        if k == ref:
            continue
        c = result.corrections[k]
        yc, xc = tile.bbox.center

        def add(corr, x, y):
            return corr.offset + corr.slope[:, 0] * (x - corr.origin[0]) + \
                corr.slope[:, 1] * (y - corr.origin[1])

        want = cr.gain * (e["offset"][k] + e["slope"][k, :, 0] * xc
                          + e["slope"][k, :, 1] * yc) + add(cr, xc, yc)
        g_err.append(c.gain / (cr.gain * e["gain"][k]) - 1)
        o_err.append((add(c, xc, yc) - want) / (cr.gain * survey.noise_sigma))
        level = np.array([np.median(tile.get_data()[..., ch][tile.mask].astype(float))
                          for ch in range(survey.n_channels)])
        corrected = c.gain * level + add(c, xc, yc)
        exact = cr.gain * (e["gain"][k] * level) + want
        l_err.append((corrected - exact) / (cr.gain * survey.noise_sigma))
    return np.abs(g_err), np.abs(o_err), np.abs(l_err)


@pytest.mark.parametrize("which", ["mono", "rgb_plane"])
def test_truth_summary_matches_a_direct_computation(which, request):
    s, res = request.getfixturevalue(which)
    summary = truth_summary(res, s)
    g_err, o_err, l_err = _direct_errors(s, res)
    assert summary["references"] == res.solution.references
    assert summary["gain_error_max"] == pytest.approx(g_err.max(), rel=1e-9)
    assert summary["gain_error_rms"] == pytest.approx(np.sqrt(np.mean(g_err ** 2)), rel=1e-9)
    assert summary["offset_error_max_sigma"] == pytest.approx(o_err.max(), rel=1e-9)
    assert summary["offset_error_rms_sigma"] == pytest.approx(np.sqrt(np.mean(o_err ** 2)),
                                                              rel=1e-9)
    assert summary["level_error_max_sigma"] == pytest.approx(l_err.max(), rel=1e-9)
    # against the injected truth: gains within 3 %, tile levels within one noise sigma
    assert summary["gain_error_max"] < 0.03
    assert summary["level_error_max_sigma"] < 1.0
    json.dumps(summary)  # JSON-friendly


def test_truth_summary_ignores_a_common_shift_of_all_tiles(mono):
    s, res = mono
    shifted = {k: Correction(c.gain, c.offset + 7.5, c.slope, c.origin, c.gain_err,
                             c.offset_err, c.status) for k, c in res.corrections.items()}
    fake = SimpleNamespace(corrections=shifted, solution=res.solution, graph=res.graph,
                           background=None)
    a, b = truth_summary(res, s), truth_summary(fake, s)
    assert b["offset_error_max_sigma"] == pytest.approx(a["offset_error_max_sigma"], abs=1e-9)
    # ... but sees a shift of one tile
    shifted[0] = Correction(shifted[0].gain, shifted[0].offset + 4.0 * s.noise_sigma)
    c = truth_summary(fake, s)
    assert c["offset_error_max_sigma"] > 3.5 and c["worst_offset_tile"] == 0


def test_truth_summary_rejects_a_foreign_survey(mono):
    _, res = mono
    other = make_survey(1, 2, tile_size=64, rng=0)
    with pytest.raises(ValueError, match="not a tile of the survey"):
        truth_summary(res, other)


def test_format_table_shows_the_values():
    rows = [{"tile": 1, "gain": 1.0234567, "ref": True}, {"tile": 12, "gain": float("nan"),
                                                          "ref": False, "extra": None}]
    text = format_table(rows, floatfmt=".3f")
    lines = text.splitlines()
    assert lines[0].split() == ["tile", "gain", "ref", "extra"]
    assert "1.023" in lines[2] and "yes" in lines[2]
    assert "nan" in lines[3] and "12" in lines[3] and lines[3].rstrip().endswith("-")
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule aligned
    md = format_table(rows, ["tile", "gain"], markdown=True)
    assert md.splitlines()[0] == "| tile | gain |" and "| 1 | 1.023 |" in md.replace(
        "1.023", "1.023")
    short = format_table(rows, max_rows=1)
    assert "1 more row" in short and "12" not in short


def test_format_table_of_the_edge_table_contains_the_numbers(mono):
    _, res = mono
    rows = edge_residual_table(res)
    text = format_table(rows, ["src", "dst", "a", "offset_after"], floatfmt=".6g")
    assert format(rows[0]["a"], ".6g") in text
    assert format(rows[-1]["offset_after"], ".6g") in text
    assert len(text.splitlines()) == len(rows) + 2


def test_demo_quality_table_lines():
    from photometry_graph.diagnostics.tables import demo_quality_table
    good = dict(seam_tile_borders=1.02, seam_frame_borders=1.1, frame_offset_spread_sigma=0.12)
    plain = dict(seam_tile_borders=9.5, seam_frame_borders=12.25, frame_offset_spread_sigma=8.0)
    lines = demo_quality_table({"plain": plain, "harmonized": good}).splitlines()
    assert len(lines) == 3 and "seam at tiles" in lines[0] and "frame offsets" in lines[0]
    assert lines[1].split() == ["plain", "9.50", "12.25", "8.00", "sigma"]
    assert lines[2].split() == ["harmonized", "1.02", "1.10", "0.12", "sigma"]
