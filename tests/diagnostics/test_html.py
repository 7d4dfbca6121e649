"""diagnostics.html: the report page from any report, never lost to one bad section."""

import json

import numpy as np
import pytest

from html_page import Page, edge_table
from photometry_graph._json import jsonable
from photometry_graph.diagnostics.html import render_html_report, warning_advice
from photometry_graph.diagnostics.report import graph_view, unpack_run


def _tile_report(result, survey):
    """A run's report as write_mosaic writes it, from a harmonization of a synthetic survey."""
    return jsonable({"canvas_shape": survey.canvas_shape, "channels": survey.n_channels,
                     "tiles": [{"tile_id": t.tile_id, "bbox": t.bbox,
                                "correction": result.corrections[t.tile_id]}
                               for t in survey.tiles],
                     "harmonization": result.report, "options": {"model": "offset"}})


def test_tile_graph_page_tables_every_edge_as_the_report_stores_it(mono):
    survey, result = mono
    report = json.loads(json.dumps(_tile_report(result, survey)))  # as read from disk
    page = Page(render_html_report(report, images=[("mosaic", survey.truth)]))
    section = page.sections["tiles-graph"]
    assert len(section["images"]) == 3 and "could not be drawn" not in section["text"]
    header, rows = edge_table(section)
    assert len(rows) == result.graph.number_of_edges() * survey.n_channels
    solved = {tuple(e) for e in result.solution.edge_residuals["edges"]}
    a_col, src_col, dst_col = (header.index(c) for c in ("gain ratio a", "src", "dst"))
    for row in rows:
        src, dst = int(row[src_col]), int(row[dst_col])
        assert (src, dst) in solved
        fit = result.graph.edges[src, dst]["fits"][0]  # channel 0 (mono)
        assert float(row[a_col]) == pytest.approx(fit.a, rel=1e-3)
    assert "No frame graph in this report" in page.sections["frames-graph"]["text"]


def test_graph_view_puts_the_frame_graph_on_the_mosaic_grid():
    report = {"mosaic_origin": [8, 4], "frames": [
        {"correction": {"gain": [1.0], "offset": [2.0], "slope": [[0.5, 0.0]],
                        "origin": [0.0, 0.0]}}, {"correction": None}],
        "frame_photometry": {"bin_factor": 4, "harmonize": {"graph": {
            "nodes": [{"id": 0, "bbox": [2, 10, 1, 11]}, {"id": 1, "bbox": [2, 10, 9, 19]}],
            "edges": [{"src": 0, "dst": 1, "n_valid": 64, "status": "ok",
                       "fits": [{"a": 1.1, "sigma_a": 0.01, "b": 3.0, "status": "ok"}]}],
            "edge_residuals": {"edges": [[0, 1]], "status": [["ok"]],
                               "offset_before": [[5.0]], "offset_after": [[0.1]]},
            "references": [1]}}}}
    view = graph_view(report, "frames")
    assert [n["bbox"] for n in view["tiles"]] == [[0, 32, 0, 40], [0, 32, 32, 72]]
    run = unpack_run(view)
    # the plane is the same function of the sky: 2 + 0.5 x_global = 2 + 0.5 (x_view + 4)
    corr = run.corrections[0]
    assert corr["offset"][0] + 0.5 * (0 - corr["origin"][0]) == pytest.approx(4.0)
    edge = run.graph.edges[0, 1]
    assert edge["n_valid"] == 64 and edge["fits"][0].a == 1.1
    assert run.residuals["offset_before"][0, 0] == 5.0 and run.references == [1]
    assert graph_view(report, "tiles") is None
    with pytest.raises(ValueError, match="kind must be"):
        graph_view(report, "panels")


def test_unknown_and_broken_sections_never_cost_the_page():
    report = {"canvas_shape": [10, 10], "tiles": [{"tile_id": 1, "bbox": [0, 10, 0, 10]}],
              "harmonization": {"graph": {"nodes": [{"id": 1, "bbox": "not a box"}]},
                                "status": "ok"},
              "resume": {"reused": {"tiles": [1, 2]}, "lost_frames": ["a.fits"]},
              "warnings": ["[GRID] ignoring unknown option fooo=1",
                           "[GRID] something nobody foresaw"]}
    page = Page(render_html_report(report, images=[("broken", np.full((4, 4), np.nan))]))
    assert "could not be drawn" in page.sections["tiles-graph"]["text"]
    other = page.sections["details"]["text"]
    assert "resume" in other and "reused" in other and "lost_frames" in other
    warnings = page.sections["warnings"]["text"]
    assert "check its spelling" in warnings and "documented fallback" in warnings
    with pytest.raises(TypeError, match="grid_report.json"):
        render_html_report([1, 2])


def test_warning_advice_says_what_to_do():
    assert "plate-solved" in warning_advice("[GRID] skipping a.fits: no celestial WCS")
    assert "__main__" in warning_advice("[GRID] worker processes died or could not start")
    assert "between runs" in warning_advice(
        "[GRID] worker processes died or could not start (BrokenProcessPool); ... 1 source "
        "file(s) of the program changed during the run (grid_mode.py)")
    assert "bridge" in warning_advice("[GRID] Photometry: the overlap graph has 2 "
                                      "disconnected components")


def _page_images(page_text, section):
    """The PNG images of a page's section, decoded (RGB)."""
    import base64

    import cv2

    out = []
    for src in Page(page_text).sections[section]["images"]:
        data = np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8)
        out.append(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def test_previews_are_one_strip_of_their_pixels_with_one_stretch():
    from photometry_graph.core.display import asinh_stretch

    rng = np.random.default_rng(3)
    before = rng.normal(100.0, 10.0, (90, 60))
    after = before + 40.0
    after[0, 0] = np.nan  # mosaic row 0 is drawn at the bottom, an empty pixel black
    page = render_html_report({"canvas_shape": [90, 60]},
                              images=[("plain", before), ("harmonized", after)])
    (strip,) = _page_images(page, "previews")
    assert strip.shape == (90, 60 + 8 + 60, 3)
    assert (strip[:, 60:68] == 255).all()  # the gap between them
    expected = [np.round(255 * np.nan_to_num(s, nan=0.0))[::-1]
                for s in asinh_stretch([before, after])[0]]
    for got, want in ((strip[:, :60], expected[0]), (strip[:, 68:], expected[1])):
        assert np.array_equal(got[..., 0], want) and (got == got[..., :1]).all()
    assert strip[-1, 68].tolist() == [0, 0, 0]
    assert strip[..., 0][:, 68:].mean() > strip[..., 0][:, :60].mean() + 50  # one stretch
    text = Page(page).sections["previews"]["text"]
    assert "plain | harmonized (one asinh stretch for all)" in text


def test_large_previews_and_backdrops_are_sampled_to_the_size_the_page_shows():
    from photometry_graph.diagnostics.html import _BACKDROP_PX, _PREVIEW_PX, _sky

    rgb = np.random.default_rng(4).random((1500, 2048, 3))
    page = render_html_report({"canvas_shape": [3000, 4096]}, images=[("mosaic", rgb)])
    (strip,) = _page_images(page, "previews")
    assert max(strip.shape[:2]) <= _PREVIEW_PX and strip.shape[1] == 2048 // 4
    for step in (None, 2):  # the preview samples every 2nd mosaic pixel
        sky = _sky([("mosaic", rgb)], (3000, 4096), preview_step=step)
        assert max(sky.backdrop.shape) <= _BACKDROP_PX
        # the backdrop spans the canvas, to within one of its pixels
        span = np.array(sky.backdrop.shape) * sky.step
        assert ((span >= (3000, 4096)) & (span < np.array((3000, 4096)) + sky.step)).all()


def test_graph_figure_draws_every_edge_with_its_status_and_residual_colour(mono):
    import re

    from photometry_graph.diagnostics.plots import STATUS_COLOURS, graph_edge_status
    from photometry_graph.diagnostics.svg import COLOUR_SCALES

    survey, result = mono
    report = json.loads(json.dumps(_tile_report(result, survey)))
    page = render_html_report(report, images=[("mosaic", survey.truth)])
    start = page.index('aria-label="the tiles graph"')
    svg = page[start:page.index("aria-label=", start + 1)]  # up to the next figure
    drawn = re.findall(r'stroke="(#[0-9a-f]{6})"><title>(\d+) - (\d+): ([^<]*)</title>', svg)
    g = result.graph
    n = g.number_of_edges()
    assert len(drawn) == 3 * n
    status, before, after = drawn[:n], drawn[n:2 * n], drawn[2 * n:]  # the three panels
    for colour, u, v, text in status:
        s = graph_edge_status(g.edges[int(u), int(v)])
        assert colour == STATUS_COLOURS[s] and text in ("ok", "star estimate", "offset-only",
                                                       "failed")
    # one log scale for both residual panels: the largest residual has its top colour, the
    # smallest its bottom one
    values = [(float(text), colour) for colour, _, _, text in before + after]
    top, bottom = ("#%02x%02x%02x" % COLOUR_SCALES["sequential"][k][1] for k in (-1, 0))
    assert max(values)[1] == top and min(values)[1] == bottom
    # the solve shrank every residual
    assert min(float(t) for *_, t in before) > max(float(t) for *_, t in after)


@pytest.mark.parametrize("shape", [[600, 12000], [12000, 600], [0, 0]])
def test_sky_figures_of_any_mosaic_shape_are_drawn_with_positive_sizes(mono, shape):
    import re

    survey, result = mono
    report = json.loads(json.dumps(dict(_tile_report(result, survey), canvas_shape=shape)))
    page = render_html_report(report, images=[("mosaic", survey.truth)])
    assert "could not be drawn" not in page
    sizes = [float(v) for v in re.findall(r' (?:width|height)="(-?[0-9.]+)"', page)]
    assert sizes and min(sizes) >= 0
    panels = re.findall(r'<svg x="[0-9.]+" y="[0-9.]+" width="([0-9.]+)" height="([0-9.]+)"',
                        page)  # every panel's viewport: tall enough to read
    assert len(panels) == 6 and min(float(h) for _, h in panels) >= 90


def test_a_long_list_of_records_draws_only_the_rows_it_shows(monkeypatch):
    # a 4,993-frame report holds lists of tens of thousands of records: the page draws the
    # rows it shows and counts the others, whatever their cells hold
    import photometry_graph.diagnostics.html as page
    drawn = []
    plain = page._generic

    def counting(value, depth=0):
        drawn.append(depth)
        return plain(value, depth)

    monkeypatch.setattr(page, "_generic", counting)
    rows = [{"k": k, "gains": [1.0, 2.0]} for k in range(5000)]
    out = counting(rows)
    shown = page._MAX_ROWS // 2
    assert out.count("<tr>") == shown + 1
    assert f"&hellip; {5000 - shown} more rows in grid_report.json" in out
    assert len(drawn) == 1 + 2 * shown   # the list, then two cells a row
