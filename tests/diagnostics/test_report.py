"""Report parsing: the graph and the tables from a parsed grid_report.json."""

import json

import numpy as np
import pytest

from photometry_graph.diagnostics.report import graph_from_report
from photometry_graph.diagnostics.tables import edge_residual_table, tile_table, truth_summary


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
