import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402
from matplotlib.patches import Polygon  # noqa: E402

from photometry_graph.core.correction import Correction  # noqa: E402
from photometry_graph.datasets import make_survey  # noqa: E402
from photometry_graph.diagnostics import (  # noqa: E402
    EDGE_COLUMNS, TILE_COLUMNS, bbox_boundaries, edge_residual_table,
    format_table, graph_from_report, mosaic_vs_truth, overlap_pixels, plot_before_after,
    plot_edge_residuals, plot_overlap_graph, plot_overlap_scatter, plot_residual_map,
    plot_solution_vs_truth, tile_cells, tile_table, truth_summary)
from photometry_graph.photometry.harmonize import harmonize_tiles  # noqa: E402
from photometry_graph.core.tiles import BBox  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def mono():
    s = make_survey(3, 3, tile_size=128, overlap=0.25, rng=3, nebula_fill_tile=4)
    return s, harmonize_tiles(s.tiles, model="offset", background=True)


@pytest.fixture(scope="module")
def rgb_plane():
    s = make_survey(2, 3, tile_size=128, overlap=0.25, channels=3, gradient=3.0, rng=7)
    return s, harmonize_tiles(s.tiles, model="plane", background=False,
                              origin=(100.0, 50.0))


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


def _report_like_grid_mode(res, with_solution):
    """A grid_report.json-like dict through a JSON round trip."""
    harm = dict(res.report)
    if with_solution:
        harm["solution"] = res.solution.to_dict()
    report = {"tiles": [{"tile_id": t, "bbox": [b.y0, b.y1, b.x0, b.x1],
                         "correction": res.corrections[t].to_dict()}
                        for t, b in ((n, d["bbox"]) for n, d in res.graph.nodes(data=True))],
              "harmonization": harm}
    return json.loads(json.dumps(report, default=str))


@pytest.mark.parametrize("with_solution", [False, True])
def test_tables_and_graph_from_a_parsed_report(mono, with_solution):
    s, res = mono
    report = _report_like_grid_mode(res, with_solution)
    g = graph_from_report(report)
    assert set(g.nodes) == set(res.graph.nodes)
    assert {frozenset(e) for e in g.edges} == {frozenset(e) for e in res.graph.edges}
    rows = tile_table(report)
    assert [r["gain"] for r in rows] == [float(res.corrections[r["tile_id"]].gain[0])
                                         for r in rows]
    assert [r["tile_id"] for r in rows if r["reference"]] == res.solution.references
    assert truth_summary(report, s)["gain_error_max"] == pytest.approx(
        truth_summary(res, s)["gain_error_max"])
    erows = edge_residual_table(report)
    assert len(erows) == res.graph.number_of_edges()
    if with_solution:
        full = {(r["src"], r["dst"]): r for r in edge_residual_table(res)}
        for r in erows:
            np.testing.assert_allclose(r["offset_after"], full[(r["src"], r["dst"])][
                "offset_after"], rtol=1e-12)


def test_tile_cells_split_overlaps_in_the_middle():
    lab = tile_cells([BBox(0, 10, 0, 10), BBox(0, 10, 6, 16)], (12, 16))
    assert (lab[:10, :8] == 0).all() and (lab[:10, 8:] == 1).all() and (lab[10:] == -1).all()


def test_mosaic_vs_truth_measures_an_injected_step():
    s = make_survey(3, 3, tile_size=96, overlap=0.25, rng=2)
    boxes = [t.bbox for t in s.tiles]
    rng = np.random.default_rng(0)
    noisy = s.truth + rng.normal(0, s.noise_sigma, s.truth.shape)
    clean = mosaic_vs_truth(noisy, s.truth, boxes, noise_sigma=s.noise_sigma)
    assert clean["gain_spread"] < 0.01 and clean["offset_spread_sigma"] < 0.1
    assert clean["residual_rms_sigma"] == pytest.approx(1.0, abs=0.05)
    assert clean["coverage"] == 1.0 and clean["n_cells"] == 9
    stepped = noisy.copy()
    b = boxes[4]
    stepped[b.y0:b.y1, b.x0:b.x1] += 3.0 * s.noise_sigma
    stepped[:5] = np.nan
    bad = mosaic_vs_truth(stepped, s.truth, boxes, noise_sigma=s.noise_sigma)
    assert 2.3 < bad["offset_max_sigma"] < 3.1
    assert bad["seam"] > 2 * clean["seam"]
    assert bad["coverage"] == pytest.approx(1 - 5 / s.canvas_shape[0])


def test_plot_overlap_graph_draws_tiles_edges_and_reference(mono):
    _, res = mono
    fig = plot_overlap_graph(res, residuals="offset_after")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lcs = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lcs) == 1 and len(lcs[0].get_segments()) == res.graph.number_of_edges()
    assert np.isfinite(lcs[0].get_array()).sum() == res.graph.number_of_edges()
    assert sum(isinstance(p, Polygon) for p in ax.patches) == res.graph.number_of_nodes()
    assert len(fig.axes) == 2  # colour bar
    stars = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in stars) == res.graph.number_of_nodes()
    # by fit status, on a bare graph (the default when no residuals are known)
    fig2 = plot_overlap_graph(res.graph)
    assert len(fig2.axes) == 1 and fig2.axes[0].get_legend() is not None
    colours = fig2.axes[0].collections[0].get_colors()
    n_ok = sum(res.graph.edges[e]["status"] == "ok" for e in res.graph.edges)
    green = matplotlib.colors.to_rgba("tab:green")
    assert sum(np.allclose(c, green) for c in colours) == n_ok


def test_plot_overlap_graph_at_sky_positions(mono):
    _, res = mono
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 20.0]
    w.wcs.crpix = [100.0, 100.0]
    w.wcs.cdelt = [-1 / 3600, 1 / 3600]
    fig = plot_overlap_graph(res, wcs=w, residuals="gain_before")
    ax = fig.axes[0]
    seg = np.concatenate(ax.collections[0].get_segments())
    assert np.all(np.abs(seg[:, 0] - 150.0) < 0.2) and np.all(np.abs(seg[:, 1] - 20.0) < 0.2)
    assert ax.xaxis_inverted() and "RA" in ax.get_xlabel()


def test_plot_overlap_graph_needs_residuals_it_can_find(mono):
    _, res = mono
    with pytest.raises(ValueError, match="needs the solution"):
        plot_overlap_graph(res.graph, residuals="offset_after")
    with pytest.raises(ValueError, match="residuals must be"):
        plot_overlap_graph(res, residuals="nonsense")


def test_plot_before_after_uses_one_stretch():
    rng = np.random.default_rng(1)
    a = rng.normal(10, 1, (32, 40))
    fig = plot_before_after(a, a + 3.0)
    imgs = [ax.get_images()[0] for ax in fig.axes]
    assert all(isinstance(i, AxesImage) for i in imgs) and len(imgs) == 2
    assert np.nanmean(imgs[1].get_array()) > np.nanmean(imgs[0].get_array()) + 0.1
    rgb = np.dstack([a, a, a])
    fig = plot_before_after(rgb, rgb)
    assert fig.axes[0].get_images()[0].get_array().shape == (32, 40, 3)


def test_plot_residual_map_and_edge_residuals(mono):
    s, res = mono
    boxes = [t.bbox for t in s.tiles]
    img = s.truth + 0.5
    img[:, :40] += 2.0
    fig = plot_residual_map(img, s.truth, boundaries=bbox_boundaries(boxes, s.canvas_shape))
    ax = fig.axes[0]
    assert len(ax.get_images()) == 1 and len(fig.axes) == 2
    assert len(ax.collections) >= 1  # seam contours
    fig = plot_edge_residuals(res, kind="offset")
    pcs = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert len(pcs) == 2 and all(len(c.get_offsets()) == res.graph.number_of_edges()
                                 for c in pcs)
    assert fig.axes[0].get_yscale() == "log"


def test_plot_solution_vs_truth(rgb_plane):
    s, res = rgb_plane
    fig = plot_solution_vs_truth(res, s)
    assert len(fig.axes) == 4
    # one error-bar container per channel in each panel
    assert all(len(ax.containers) == 3 for ax in fig.axes)
    gains = fig.axes[0].containers[0].lines[0].get_xydata()
    np.testing.assert_allclose(np.sort(gains[:, 1]),
                               np.sort([c.gain[0] for c in res.corrections.values()]))


def test_overlap_pixels_flag_the_trail():
    s = make_survey(1, 2, tile_size=128, overlap=0.3, rng=4, outlier="trail", outlier_tile=1)
    res = harmonize_tiles(s.tiles, background=False)
    p = overlap_pixels(res, (0, 1))
    fit = p["fit"]
    assert p["x"].size == fit.n_total
    n_clipped_fit = fit.n_total - fit.n_used
    assert n_clipped_fit > 20
    assert abs(int(p["clipped"].sum()) - n_clipped_fit) <= 0.25 * n_clipped_fit + 10
    fig = plot_overlap_scatter(res, (0, 1), max_points=5000)
    pcs = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert len(pcs) == 2 and len(pcs[1].get_offsets()) > 0
    assert len(fig.axes[0].get_lines()) == 2  # fitted line and 1:1


def test_mosaic_vs_frame_truth_measures_a_frame_step_and_ignores_a_trail():
    from photometry_graph.diagnostics import mosaic_vs_frame_truth
    s = make_survey(2, 3, tile_size=96, overlap=0.25, rng=4, add_noise=False)
    H, W = s.canvas_shape
    boxes = [t.bbox for t in s.tiles]
    yy, xx = np.mgrid[:H, :W]
    # three rotated "frame" footprints, crossing the tiles
    feet = [np.abs((xx - cx) * 0.96 + (yy - H / 2) * 0.28) < 45 for cx in (45, 120, 195)]
    rng = np.random.default_rng(0)
    sigma = s.noise_sigma
    # any global gain, offset and plane is allowed: the reference frame's system
    clean = 1.1 * s.truth + 5.0 + 0.01 * xx[..., None] + rng.normal(0, sigma, s.truth.shape)
    trail = np.abs(yy - 0.3 * xx - 20) < 2
    clean[trail] += 40 * sigma           # a legitimate outlier: clipped by the second fit
    clean[:4] = np.nan
    ok = mosaic_vs_frame_truth(clean, s.truth, feet, boxes, noise_sigma=sigma)
    assert len(ok["frame_offsets"]) == 3 and ok["frame_offset_max_sigma"] < 0.1
    assert ok["seam_frame_borders"] < 1.2 and ok["seam_tile_borders"] < 1.2
    stepped = clean.copy()
    only_mid = feet[1] & ~feet[0] & ~feet[2]
    stepped[only_mid] += 2.0 * sigma
    bad = mosaic_vs_frame_truth(stepped, s.truth, feet, boxes, noise_sigma=sigma)
    assert 1.0 < bad["frame_offset_spread_sigma"] < 2.5  # (the global fit takes a part)
    assert bad["seam_frame_borders"] > 1.5 * ok["seam_frame_borders"]
    none = mosaic_vs_frame_truth(clean, s.truth, [np.zeros((H, W), bool)], boxes,
                                 noise_sigma=sigma)
    assert none["frame_offsets"] == [] and np.isnan(none["frame_offset_max_sigma"])
    assert np.isnan(none["seam_frame_borders"]) and none["seam_tile_borders"] < 1.2
    with pytest.raises(ValueError, match="footprint shape"):
        mosaic_vs_frame_truth(clean, s.truth, [feet[0][1:]], boxes, noise_sigma=sigma)
    with pytest.raises(ValueError, match="noise_sigma"):
        mosaic_vs_frame_truth(clean, s.truth, feet, boxes, noise_sigma=0)


def test_mosaic_vs_frame_survey_finds_a_frame_step_on_the_survey_grid():
    from photometry_graph.datasets import make_frame_survey
    from photometry_graph.diagnostics import mosaic_vs_frame_survey
    s = make_frame_survey(1, 2, frame_shape=(60, 80), channels=1, rng=0,
                          rotation_deg_range=(0, 0))
    wcs, shape = s.truth_wcs, s.truth_shape
    clean = s.render_truth(wcs, shape)
    ok = mosaic_vs_frame_survey(clean[..., 0], wcs, s, [])  # (H, W) accepted too
    assert len(ok["frame_offsets"]) == 2 and ok["frame_offset_max_sigma"] < 0.01
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    fx, fy = s.frames[0].wcs.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
    fx1, fy1 = s.frames[1].wcs.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
    only0 = ((fx > -0.5) & (fx < 79.5) & (fy > -0.5) & (fy < 59.5)
             & ~((fx1 > -0.5) & (fx1 < 79.5) & (fy1 > -0.5) & (fy1 < 59.5)))
    step = clean + 2.0 * s.noise_sigma * only0[..., None]
    bad = mosaic_vs_frame_survey(step, wcs, s, [])
    assert bad["frame_offset_spread_sigma"] > 0.5
    assert bad["seam_frame_borders"] > 2 * ok["seam_frame_borders"]


def test_demo_quality_table_lines():
    from photometry_graph.diagnostics import demo_quality_table
    good = dict(seam_tile_borders=1.02, seam_frame_borders=1.1, frame_offset_spread_sigma=0.12)
    plain = dict(seam_tile_borders=9.5, seam_frame_borders=12.25, frame_offset_spread_sigma=8.0)
    lines = demo_quality_table({"plain": plain, "harmonized": good}).splitlines()
    assert len(lines) == 3 and "seam at tiles" in lines[0] and "frame offsets" in lines[0]
    assert lines[1].split() == ["plain", "9.50", "12.25", "8.00", "sigma"]
    assert lines[2].split() == ["harmonized", "1.02", "1.10", "0.12", "sigma"]
