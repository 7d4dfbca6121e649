"""grid_report.html after a demo, a run and an assembly; the log lines of both graphs; the
progress a host's callback gets."""

import json
import logging
import math
import re

import pytest

import grid_mode
from html_page import edge_table, read_page
from photometry_graph.datasets import make_frame_survey
from photometry_graph.pipeline.demo import write_frame_survey

DOCUMENTED = ("[GRID] Photometry: built overlap graph with ",
              "[GRID] Photometry: solved global gain/offset for ",
              "[GRID] Blending: applied pyramidal blending on ")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo, with a host's callback recording every call: its output folder and calls."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    calls = []
    grid_mode.run_demo(out, workers=1,
                       progress_callback=lambda m, p, level, **kw: calls.append((m, p, level)))
    return out, calls


@pytest.fixture(scope="module")
def frame_run(tmp_path_factory):
    """``run_grid_mode`` on a mono frame survey, with a host's callback recording its calls."""
    root = tmp_path_factory.mktemp("run")
    frames = write_frame_survey(make_frame_survey(2, 2, frame_shape=(160, 240), channels=1,
                                                  rng=7), root / "frames")
    calls = []
    result = grid_mode.run_grid_mode(frames, root / "out",
                                     lambda m, p, level, **kw: calls.append((m, p, level)),
                                     tile_size=160, overlap=0.25, workers=1)
    return result, calls


def _graph_sections_show_every_edge(page, report):
    """Both graphs: drawn (graph, histograms, maps) and tabled edge by edge as stored."""
    for kind, graph in (("frames", report["frame_photometry"]["harmonize"]["graph"]),
                        ("tiles", report["harmonization"]["graph"])):
        section = page.sections[f"{kind}-graph"]
        assert len(section["images"]) >= 3, kind  # graph, residual histograms, maps
        assert "could not be drawn" not in section["text"], section["text"][:500]
        header, rows = edge_table(section)
        channels = len(graph["edges"][0]["fits"])
        assert len(rows) == min(60, len(graph["edges"]) * channels)
        res = graph["edge_residuals"]
        col = {name: header.index(name) for name in ("src", "dst", "channel",
                                                     "offset_before", "offset_after")}
        for row in rows:
            k = res["edges"].index([int(row[col["src"]]), int(row[col["dst"]])])
            c = int(row[col["channel"]])
            for key in ("offset_before", "offset_after"):
                assert float(row[col[key]]) == pytest.approx(res[key][k][c], rel=1e-3,
                                                              abs=1e-12), key


def test_demo_writes_a_self_contained_report_with_both_graphs(demo):
    out, _ = demo
    report = json.loads((out / "grid_report.json").read_text())
    assert report["outputs"]["html"] == str(out / "grid_report.html")
    page = read_page(out / "grid_report.html")
    _graph_sections_show_every_edge(page, report)
    # the frame graph is where the demo's correction happens: its residuals fall by decades
    frame_res = report["frame_photometry"]["harmonize"]["graph"]["edge_residuals"]
    before = max(abs(v) for row in frame_res["offset_before"] for v in row if v is not None)
    after = max(abs(v) for row in frame_res["offset_after"] for v in row if v is not None)
    assert after < before / 100
    previews = page.sections["previews"]
    assert len(previews["images"]) == 1 and "plain run" in page.sections["previews"]["text"]
    assert "harmonized" in page.sections["demo"]["text"]
    assert "seam at tiles" in page.sections["demo"]["text"]
    assert (out / "plain" / "grid_report.html").exists()  # every run writes its page


def test_demo_log_says_the_documented_lines_once_per_tile_graph_and_frames_for_frames(demo):
    _, calls = demo
    lines = [m for m, _, _ in calls]
    for start in DOCUMENTED:  # the plain run has no tile graph: once in all
        assert sum(m.startswith(start) for m in lines) == 1, start
    frame_lines = [m for m in lines if m.startswith("[GRID] Frame photometry:")]
    assert any(re.match(r"\[GRID\] Frame photometry: built overlap graph with \d+ edges "
                        r"\(6 frames", m) for m in frame_lines)
    assert "[GRID] Frame photometry: solved global gain/offset for 6 frames" in frame_lines
    # an expected outcome is no warning: the demo runs without one
    assert not [m for m, _, level in calls if level != "INFO"]


def test_frame_survey_run_writes_the_report_page(frame_run):
    result, _ = frame_run
    assert result.html.exists() and result.html.parent == result.mosaic.parent
    page = read_page(result.html)
    _graph_sections_show_every_edge(page, result.report)
    assert len(page.sections["previews"]["images"]) == 1
    for anchor in ("summary", "warnings", "background", "blending", "timings", "options"):
        assert anchor in page.sections, anchor
    assert "no usable frame" not in page.sections["warnings"]["text"]


def test_assemble_writes_a_page_without_a_frame_graph(frame_run, tmp_path):
    result, _ = frame_run
    again = grid_mode.assemble_tiles(result.tiles_dir, tmp_path / "again", workers=1)
    page = read_page(again.html)
    assert "No frame graph in this report" in page.sections["frames-graph"]["text"]
    assert len(page.sections["tiles-graph"]["images"]) >= 3


def test_every_callback_call_of_a_run_has_a_rising_percentage(frame_run):
    _, calls = frame_run
    pcts = [p for _, p, _ in calls]
    assert calls and all(isinstance(p, float) and math.isfinite(p) for p in pcts)
    assert pcts == sorted(pcts) and pcts[-1] == 100.0
    assert {level for _, _, level in calls} <= {"INFO", "WARN", "ERROR", "DEBUG"}


def test_demo_progress_covers_both_runs(demo):
    _, calls = demo
    plain = [p for m, p, _ in calls if "plain" in m]
    assert plain and min(plain) >= 80.0 - 1e-9  # the plain run: the last fifth of the bar
    main = [p for m, p, _ in calls if m.startswith("[GRID] tile photometry done")]
    assert main and main[0] < 80.0
    pcts = [p for _, p, _ in calls]
    assert pcts == sorted(pcts) and pcts[-1] == 100.0


@pytest.mark.slow
def test_a_larger_survey_keeps_every_edge_in_the_json_and_a_readable_page(tmp_path):
    """42 frames, many overlaps: the JSON keeps every edge, the page shows the first ones
    and says how many more the JSON holds (it stays one file that opens from disk)."""
    frames = write_frame_survey(make_frame_survey(6, 7, frame_shape=(200, 300), channels=1,
                                                  rng=11), tmp_path / "frames")
    result = grid_mode.run_grid_mode(frames, tmp_path / "out", tile_size=512, overlap=0.25)
    graph = result.report["frame_photometry"]["harmonize"]["graph"]
    assert len(graph["nodes"]) == 42
    assert len(graph["edges"]) == len(graph["edge_residuals"]["edges"]) > 60
    page = read_page(result.html)
    section = page.sections["frames-graph"]
    _, rows = edge_table(section)
    assert len(rows) == 60
    assert f"{len(graph['edges']) - 60} more rows in grid_report.json" in section["text"]
    assert len(section["images"]) >= 3


def test_a_page_that_cannot_be_drawn_is_a_warning_and_the_run_succeeds(frame_run, tmp_path,
                                                                       monkeypatch, caplog):
    import photometry_graph.pipeline.fileio as fileio

    def broken(report, **kw):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(fileio, "render_html_report", broken)
    result, _ = frame_run
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        again = grid_mode.assemble_tiles(result.tiles_dir, tmp_path / "again", workers=1)
    assert again.mosaic.exists() and again.report_path.exists()
    assert not again.html.exists() and not list((tmp_path / "again").glob(".*.tmp*"))
    assert "the HTML report" in caplog.text and "RuntimeError: no fonts" in caplog.text


def test_no_html_report_writes_no_page(frame_run, tmp_path):
    result, _ = frame_run
    assert grid_mode.main(["assemble", str(result.tiles_dir), str(tmp_path / "again"),
                           "--workers", "1", "--no-html-report", "-q"]) == 0
    report = json.loads((tmp_path / "again" / "grid_report.json").read_text())
    assert "html" not in report["outputs"] and report["options"]["html_report"] is False
    assert not (tmp_path / "again" / "grid_report.html").exists()
