import json
import logging

import networkx as nx
import numpy as np
import pytest

from photometry_graph.photometry import lsq as lsq_mod
from photometry_graph.datasets import expected_corrections
from photometry_graph.photometry.regression import PairwiseFit
from photometry_graph.photometry.solve import select_reference, solve_global_photometry
from photometry_graph.core.tiles import BBox, grid_layout


class Truth:
    def __init__(self, gains, offsets, slopes, centres):
        self.gains, self.offsets, self.slopes, self.centres = gains, offsets, slopes, centres

    def expected(self, reference, origin=(0.0, 0.0)):
        return expected_corrections(self.gains, self.offsets, self.slopes, self.centres,
                                    reference, origin=origin)


def edge_statistics_graph(rows, cols, *, tile=100, overlap=0.2, channels=1, rng=0,
                          gradient=0.0, noise=0.0, offset_only=(), id_offset=0, x_shift=0,
                          flip=()):
    """Overlap graph whose edges carry PairwiseFit statistics computed from known truth.

    Node k observes ``G_k sky + O_k + P_k.(r - c_k)``; on each overlap the sky is
    a random plane (level 20..80, small slope), so the moments of both nodes and
    the gain ratio follow exactly.  ``noise`` perturbs log a (relative) and the
    means (absolute) and sets matching sigmas.
    """
    rng = np.random.default_rng(rng)
    step = tile - int(round(overlap * tile))
    canvas = ((rows - 1) * step + tile, (cols - 1) * step + tile)
    boxes = [BBox(b.y0, b.y1, b.x0 + x_shift, b.x1 + x_shift)
             for b in grid_layout(canvas, tile, overlap)]
    n = len(boxes)
    C = channels
    G = rng.uniform(0.85, 1.18, (n, C))
    O = rng.uniform(-30, 30, (n, C))
    P = rng.normal(0, gradient / tile, (n, C, 2)) if gradient else np.zeros((n, C, 2))
    cen = np.array([b.center[::-1] for b in boxes])
    g = nx.Graph()
    for k, b in enumerate(boxes):
        g.add_node(k + id_offset, bbox=b, tile=None)
    for i in range(n):
        for j in range(i + 1, n):
            inter = boxes[i].intersection(boxes[j])
            if inter.is_empty:
                continue
            yc, xc = inter.center
            c = np.array([xc, yc])
            src, dst = (j, i) if (i, j) in flip else (i, j)
            fits = []
            for ch in range(C):
                level, grad = rng.uniform(20, 80), rng.normal(0, 0.01, 2)

                def plane(k):
                    mean = G[k, ch] * level + O[k, ch] + P[k, ch] @ (c - cen[k])
                    return mean, G[k, ch] * grad + P[k, ch]

                xm, xs = plane(src)
                ym, ys = plane(dst)
                a = G[dst, ch] / G[src, ch]
                sig_a, sig_m = (noise * a, noise * 10) if noise else (0.0, 0.0)
                if noise:
                    a *= np.exp(rng.normal(0, noise))
                    xm += rng.normal(0, sig_m)
                    ym += rng.normal(0, sig_m)
                status = "offset_only" if (i, j) in offset_only else "ok"
                fits.append(PairwiseFit(
                    src=src + id_offset, dst=dst + id_offset, channel=ch,
                    a=a if status == "ok" else 1.0, b=ym - a * xm,
                    sigma_a=sig_a if status == "ok" else np.inf, status=status,
                    centroid=(xc, yc), x_mean=xm, y_mean=ym, x_slope=tuple(xs),
                    y_slope=tuple(ys), sigma_x_mean=sig_m, sigma_y_mean=sig_m,
                    n_used=inter.area, n_total=inter.area))
            g.add_edge(i + id_offset, j + id_offset, src=src + id_offset, dst=dst + id_offset,
                       bbox=inter, area=inter.area, n_valid=inter.area, fits=fits,
                       weight=float(inter.area))
    return g, Truth(G, O, P, cen)


def assert_recovered(sol, truth, *, origin, gain_tol, offset_tol, slope_tol=None, skip=(),
                     id_offset=0):
    ref = sol.references[0] - id_offset
    exp = truth.expected(ref, origin)
    keep = np.array([k for k in range(len(sol.tile_ids)) if k not in skip])
    np.testing.assert_allclose(sol.gains[keep], exp["gain"][keep], rtol=0, atol=gain_tol)
    np.testing.assert_allclose(sol.offsets[keep], exp["offset"][keep], rtol=0, atol=offset_tol)
    if slope_tol is not None:
        np.testing.assert_allclose(sol.slopes[keep], exp["slope"][keep], rtol=0, atol=slope_tol)


@pytest.mark.parametrize("model,channels,gradient", [("offset", 1, 0.0), ("offset", 3, 0.0),
                                                     ("plane", 1, 3.0), ("plane", 3, 3.0)])
def test_exact_recovery_without_noise_on_10x10_graph(model, channels, gradient, caplog):
    g, truth = edge_statistics_graph(10, 10, channels=channels, gradient=gradient, rng=1)
    origin = (13.0, -5.0)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        sol = solve_global_photometry(g, model=model, origin=origin)
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


def test_noisy_statistics_recovered_within_reported_uncertainties():
    g, truth = edge_statistics_graph(6, 6, rng=2, noise=1e-3)
    sol = solve_global_photometry(g)
    exp = truth.expected(sol.references[0])
    err = np.abs(sol.gains - exp["gain"])[:, 0]
    sig = sol.gain_err[:, 0]
    free = np.array([t != sol.references[0] for t in sol.tile_ids])
    assert np.all(sig[free] > 0)
    # normalised errors look like a unit normal: none beyond 5 sigma, most within 3
    z = err[free] / sig[free]
    assert z.max() < 5 and np.mean(z < 3) > 0.9
    assert err.max() < 3e-3
    assert sol.uncertainty_method == "exact"


def test_outlier_edge_is_downweighted_and_others_recovered():
    g, truth = edge_statistics_graph(6, 6, rng=3)
    u, v = 14, 15
    fit = g.edges[u, v]["fits"][0]
    fit.a *= 1.05
    fit.y_mean += 15.0
    plain = solve_global_photometry(g, irls_iterations=0)
    robust = solve_global_photometry(g)
    exp = truth.expected(robust.references[0])
    err_plain = np.abs(plain.gains - exp["gain"]).max()
    err_robust = np.abs(robust.gains - exp["gain"]).max()
    assert err_plain > 1e-3
    assert err_robust < 1e-6 < err_plain
    assert np.abs(robust.offsets - exp["offset"]).max() < 1e-4
    k = robust.edge_residuals["edges"].index((u, v))
    assert robust.edge_residuals["gain_weight"][k, 0] < 0.01
    assert robust.edge_residuals["offset_weight"][k, 0] < 0.01
    others = np.delete(robust.edge_residuals["gain_weight"][:, 0], k)
    assert np.median(others) > 0.9


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


def test_forced_solve_failure_falls_back_to_identity_with_warning(monkeypatch, caplog):
    g, _ = edge_statistics_graph(10, 10, rng=6)

    def broken(normal, rhs):
        raise RuntimeError("Factor is exactly singular")

    monkeypatch.setattr(lsq_mod, "_solve_normal", broken)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        sol = solve_global_photometry(g)
    assert sol.status == "failed"
    assert "[GRID]" in caplog.text and "fallback" in caplog.text
    assert all(c.is_identity for c in sol.corrections.values())
    statuses = [sol.corrections[t].status for t in sol.tile_ids]
    assert statuses.count("reference") == 1 and statuses.count("fallback") == 99


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


def test_flipped_fit_direction_and_lsqr_solver_agree():
    g, truth = edge_statistics_graph(5, 5, rng=8, flip={(0, 1), (6, 7), (3, 9)})
    a = solve_global_photometry(g, model="plane", solver="direct")
    b = solve_global_photometry(g, model="plane", solver="lsqr")
    exp = truth.expected(a.references[0])
    np.testing.assert_allclose(a.gains, exp["gain"], atol=1e-9)
    np.testing.assert_allclose(b.gains, a.gains, atol=1e-7)
    np.testing.assert_allclose(b.offsets, a.offsets, atol=1e-4)


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


def test_to_dict_is_json_friendly():
    g, _ = edge_statistics_graph(3, 3, channels=3, rng=11)
    sol = solve_global_photometry(g, model="plane")
    text = json.dumps(sol.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["status"] == "ok" and len(back["tiles"]) == 9
    assert len(back["edge_residuals"]["offset_after"]) == g.number_of_edges()
    assert back["summary"]["offset_after_max"] < 1e-6
