"""Gains of nodes without gain edges: from their neighbours, then from the moments."""

import logging

import numpy as np
import pytest

from photometry_graph.photometry.solve import solve_global_photometry
from solve_graphs import edge_statistics_graph


def test_tile_with_only_offset_edges_takes_gain_from_neighbours_then_moments(caplog):
    g, truth = edge_statistics_graph(4, 4, rng=7)
    lone = 5
    for _, _, data in g.edges(lone, data=True):
        f = data["fits"][0]
        f.status, f.a, f.sigma_a = "offset_only", 1.0, np.inf
    exp = truth.expected(0)
    others = [k for k in range(16) if k != lone]
    # separate solves: the gain of the lone tile is the geometric mean of its neighbours'
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        sol = solve_global_photometry(g, reference=0, joint=False)
    assert "gain taken from their neighbours" in caplog.text
    neigh = [sol.index(t) for t in g.neighbors(lone)]
    geo = np.exp(np.mean(np.log(sol.gains[neigh, 0])))
    assert sol.gains[sol.index(lone), 0] == pytest.approx(geo, rel=1e-9)
    assert np.isnan(sol.corrections[lone].gain_err[0])
    np.testing.assert_allclose(sol.gains[others], exp["gain"][others], atol=1e-9)
    assert abs(sol.gains[lone, 0] / exp["gain"][lone, 0] - 1) > 1e-3
    # default (joint="auto"): the overlap moments at different sky levels pin the gain
    auto = solve_global_photometry(g, reference=0)
    assert auto.info["joint_refined"] == 1
    np.testing.assert_allclose(auto.gains, exp["gain"], atol=1e-6)
    np.testing.assert_allclose(auto.offsets, exp["offset"], atol=1e-4)
    assert np.nanmax(np.abs(auto.edge_residuals["offset_after"])) < 1e-4
