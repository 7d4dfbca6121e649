"""The edge table: fits made the other way round, failed fits."""

import logging

import networkx as nx
import numpy as np

from photometry_graph.photometry.regression import PairwiseFit
from photometry_graph.photometry.solve import solve_global_photometry
from photometry_graph.core.tiles import BBox
from solve_graphs import edge_statistics_graph


def test_flipped_fit_direction_and_lsqr_solver_agree():
    g, truth = edge_statistics_graph(5, 5, rng=8, flip={(0, 1), (6, 7), (3, 9)})
    a = solve_global_photometry(g, model="plane", solver="direct")
    b = solve_global_photometry(g, model="plane", solver="lsqr")
    exp = truth.expected(a.references[0])
    np.testing.assert_allclose(a.gains, exp["gain"], atol=1e-9)
    np.testing.assert_allclose(b.gains, a.gains, atol=1e-7)
    np.testing.assert_allclose(b.offsets, a.offsets, atol=1e-4)


def test_failed_edges_isolate_a_tile_and_single_node_graph(caplog):
    g, truth = edge_statistics_graph(3, 3, rng=10)
    for _, _, data in g.edges(8, data=True):
        data["fits"] = [PairwiseFit.failed("too few pixels", src=data["src"], dst=data["dst"])]
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        sol = solve_global_photometry(g)
    assert sol.corrections[8].status == "fallback" and sol.corrections[8].is_identity
    assert sol.status == "partial"
    assert "tile 8 has no usable overlap relation" in caplog.text
    exp = truth.expected(sol.references[0])
    np.testing.assert_allclose(sol.gains[:8], exp["gain"][:8], atol=1e-9)

    single = nx.Graph()
    single.add_node("a", bbox=BBox(0, 5, 0, 5))
    s1 = solve_global_photometry(single, n_channels=3)
    assert s1.references == ["a"] and s1.corrections["a"].is_identity
    assert s1.corrections["a"].n_channels == 3 and s1.status == "ok"
