import json
import logging

import networkx as nx
import numpy as np
import pytest

from photometry_graph.photometry.solve import select_reference, solve_global_photometry
from photometry_graph.core.tiles import BBox
from solve_graphs import assert_recovered, edge_statistics_graph


@pytest.mark.parametrize("model,channels,gradient", [("offset", 1, 0.0), ("offset", 3, 0.0),
                                                     ("plane", 1, 3.0), ("plane", 3, 3.0)])
def test_exact_recovery_without_noise_on_10x10_graph(model, channels, gradient, caplog):
    g, truth = edge_statistics_graph(10, 10, channels=channels, gradient=gradient, rng=1)
    origin = (13.0, -5.0)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        # the reference keeps its gradient here: every correction is relative to it
        sol = solve_global_photometry(g, model=model, origin=origin,
                                      gradient_gauge="reference")
    assert sol.status == "ok"
    assert "[GRID] Photometry: solved global gain/offset for 100 tiles" in caplog.text
    assert_recovered(sol, truth, origin=origin, gain_tol=1e-9, offset_tol=1e-5,
                     slope_tol=1e-9 if model == "plane" else None)
    ref = sol.references[0]
    c = sol.corrections[ref]
    assert c.status == "reference" and c.is_identity
    assert all(sol.corrections[t].status == "solved" for t in sol.tile_ids if t != ref)
    res = sol.edge_residuals
    assert np.nanmax(np.abs(res["offset_after"])) < 1e-6
    assert np.nanmax(np.abs(res["gain_after"])) < 1e-9
    assert np.nanmedian(np.abs(res["offset_before"])) > 1.0
    if model == "plane":
        assert np.nanmax(res["corner_after"]) < 1e-5


def test_two_components_each_get_a_reference_and_a_warning(caplog):
    g1, t1 = edge_statistics_graph(3, 3, rng=4)
    g2, t2 = edge_statistics_graph(3, 4, rng=5, id_offset=100, x_shift=10_000)
    g = nx.union(g1, g2)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        sol = solve_global_photometry(g)
    assert "[GRID]" in caplog.text and "2 disconnected components" in caplog.text
    assert len(sol.references) == 2 and len(sol.components) == 2
    assert sorted(len(c) for c in sol.components) == [9, 12]
    big, small = sol.components
    assert sol.references[0] in big and sol.references[1] in small
    for comp, ref, truth, off in ((big, sol.references[0], t2, 100),
                                  (small, sol.references[1], t1, 0)):
        exp = truth.expected(ref - off)
        rows = [sol.index(t) for t in comp]
        np.testing.assert_allclose(sol.gains[rows], exp["gain"], atol=1e-9)
        np.testing.assert_allclose(sol.offsets[rows], exp["offset"], atol=1e-6)
        assert sol.corrections[ref].status == "reference"
    assert sol.status == "ok"


def test_reference_selection_rules():
    g = nx.Graph()
    for k in range(4):
        g.add_node(k, bbox=BBox(0, 1, k, k + 1))
    g.add_edge(0, 1, n_valid=10)
    g.add_edge(1, 2, n_valid=10)
    g.add_edge(2, 3, n_valid=30)
    assert select_reference(g) == 2          # same degree as 1, more overlap pixels
    g.edges[2, 3]["n_valid"] = 10
    assert select_reference(g) == 1          # full tie: smallest id
    g.add_edge(1, 3, n_valid=1)
    assert select_reference(g) == 1          # most connected


def test_reference_is_a_node_with_gain_edges():
    # the centre of a 3 x 3 pattern is the most connected node, but here all its overlaps
    # are flat sky (offset-only fits): as the reference it would tie no gain to its own
    g, _ = edge_statistics_graph(3, 3, rng=3)
    flat = {tuple(sorted(e)) for e in g.edges(4)}
    g2, truth = edge_statistics_graph(3, 3, rng=3, offset_only=flat)
    assert select_reference(g) == 4 and g.degree[4] == max(dict(g.degree).values())
    ref = select_reference(g2)
    assert ref != 4
    sol = solve_global_photometry(g2)
    assert sol.references == [ref]
    others = [k for k in range(9) if k != 4]  # exact statistics: exact gains
    np.testing.assert_allclose(sol.gains[others], truth.expected(ref)["gain"][others],
                               rtol=1e-9)


def test_explicit_reference_is_honoured_and_bad_arguments_raise():
    g, truth = edge_statistics_graph(3, 3, rng=9)
    sol = solve_global_photometry(g, reference=8)
    assert sol.references == [8] and sol.corrections[8].is_identity
    np.testing.assert_allclose(sol.gains, truth.expected(8)["gain"], atol=1e-9)
    with pytest.raises(ValueError, match="reference"):
        solve_global_photometry(g, reference=42)
    with pytest.raises(ValueError, match="same connected component"):
        solve_global_photometry(g, reference=[0, 1])
    with pytest.raises(ValueError, match="model"):
        solve_global_photometry(g, model="quadratic")
    with pytest.raises(ValueError, match="solver"):
        solve_global_photometry(g, solver="magic")
    with pytest.raises(ValueError, match="origin"):
        solve_global_photometry(g, origin=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="irls_iterations"):
        solve_global_photometry(g, irls_iterations=-1)
    with pytest.raises(ValueError, match="no nodes"):
        solve_global_photometry(nx.Graph())
    with pytest.raises(TypeError, match="networkx"):
        solve_global_photometry({0: []})


def test_to_dict_is_json_friendly():
    g, _ = edge_statistics_graph(3, 3, channels=3, rng=11)
    sol = solve_global_photometry(g, model="plane")
    text = json.dumps(sol.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["status"] == "ok" and len(back["tiles"]) == 9
    assert len(back["edge_residuals"]["offset_after"]) == g.number_of_edges()
    assert back["summary"]["offset_after_max"] < 1e-6


def test_mean_gradient_gauge_keeps_the_reference_gain_and_level():
    g, truth = edge_statistics_graph(6, 6, gradient=3.0, rng=2)
    origin = (13.0, -5.0)
    sol = solve_global_photometry(g, model="plane", origin=origin)   # the default gauge
    ref = sol.references[0]
    exp = truth.expected(ref, origin, gradient_gauge="mean")
    np.testing.assert_allclose(sol.gains, exp["gain"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(sol.slopes, exp["slope"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(sol.offsets, exp["offset"], rtol=0, atol=1e-5)
    assert np.abs(sol.slopes.mean(axis=0)).max() < 1e-12
    # the reference keeps its gain and its level at its centre; only a plane is added
    c = sol.corrections[ref]
    yc, xc = g.nodes[ref]["bbox"].center
    assert c.gain[0] == 1.0 and not c.is_identity
    assert c.offset[0] + c.slope[0] @ (np.array([xc, yc]) - origin) == pytest.approx(0, abs=1e-9)
    # the reference gauge differs by one plane common to every node
    other = solve_global_photometry(g, model="plane", origin=origin, gradient_gauge="reference")
    shift = sol.slopes - other.slopes
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-12)
    assert np.abs(shift[0]).max() > 1e-4
    assert other.info.get("gradient_gauge_shift") is None and sol.info["gradient_gauge_shift"]
    with pytest.raises(ValueError, match="gradient_gauge"):
        solve_global_photometry(g, model="plane", gradient_gauge="median")
