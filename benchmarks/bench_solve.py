"""Speed and accuracy of the global photometric solve on 10,000 tiles.

Builds a 100 x 100 grid of overlapping tiles (edges to the 8 neighbours:
row, column and diagonal overlaps) whose edges carry pairwise statistics
computed from known per-tile gains, offsets and planar gradients, with a
little noise, then times :func:`photometry_graph.photometry.solve.solve_global_photometry`
for the offset and the plane models and prints the recovery error against the
truth and the ratio to the 2 s target.

Peer, measured in the same run: a dense least-squares solve (numpy: dense
normal equations solved with ``numpy.linalg.solve``) of the same equations,
without robust reweighting, on a 40 x 40 (1,600-tile) subgrid, compared with
the package's solve (robust, 6 reweighting iterations at most, with
uncertainties) on the same subgrid.

The machine's load average is printed: on a shared machine the absolute times
move with it; the ratios to the peer measured in the same run move less.

Run: ``python benchmarks/bench_solve.py`` (about a minute on 2 cores).
"""

import logging
import os
import time

import networkx as nx
import numpy as np

from photometry_graph.datasets import expected_corrections
from photometry_graph.photometry.regression import PairwiseFit
from photometry_graph.photometry.solve import solve_global_photometry
from photometry_graph.core.tiles import BBox

TARGET_S = 2.0


def synthetic_edge_graph(rows, cols, *, tile=512, overlap=0.2, rng=0, gradient=3.0,
                         noise=1e-3):
    """Overlap graph with PairwiseFit statistics from known truth (vectorised)."""
    rng = np.random.default_rng(rng)
    step = tile - int(round(overlap * tile))
    n = rows * cols
    r_idx, c_idx = np.divmod(np.arange(n), cols)
    boxes = [BBox(int(r) * step, int(r) * step + tile, int(c) * step, int(c) * step + tile)
             for r, c in zip(r_idx, c_idx)]
    G = rng.uniform(0.85, 1.18, n)
    O = rng.uniform(-30, 30, n)
    P = rng.normal(0, gradient / tile, (n, 2))
    cen = np.array([b.center[::-1] for b in boxes])
    pairs = []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ok = (r_idx + dr < rows) & (c_idx + dc >= 0) & (c_idx + dc < cols)
        i = np.nonzero(ok)[0]
        pairs.append(np.column_stack([i, i + dr * cols + dc]))
    pairs = np.concatenate(pairs)
    m = len(pairs)
    level = rng.uniform(20, 80, m)
    grad = rng.normal(0, 0.01, (m, 2))
    g = nx.Graph()
    for k, b in enumerate(boxes):
        g.add_node(k, bbox=b, tile=None)
    for e, (i, j) in enumerate(pairs.tolist()):
        inter = boxes[i].intersection(boxes[j])
        yc, xc = inter.center
        c = np.array([xc, yc])
        xm = G[i] * level[e] + O[i] + P[i] @ (c - cen[i])
        ym = G[j] * level[e] + O[j] + P[j] @ (c - cen[j])
        xs, ys = G[i] * grad[e] + P[i], G[j] * grad[e] + P[j]
        a = G[j] / G[i] * np.exp(rng.normal(0, noise))
        sig_m = 10 * noise
        xm += rng.normal(0, sig_m)
        ym += rng.normal(0, sig_m)
        fit = PairwiseFit(src=i, dst=j, a=a, b=ym - a * xm, sigma_a=noise * a, status="ok",
                          centroid=(xc, yc), x_mean=xm, y_mean=ym, x_slope=tuple(xs),
                          y_slope=tuple(ys), sigma_x_mean=sig_m, sigma_y_mean=sig_m,
                          n_used=inter.area, n_total=inter.area)
        g.add_edge(i, j, src=i, dst=j, bbox=inter, area=inter.area, n_valid=inter.area,
                   fits=[fit], weight=float(inter.area))
    truth = dict(gains=G[:, None], offsets=O[:, None], slopes=P[:, None, :], centres=cen)
    return g, truth


def errors(sol, truth, origin=(0.0, 0.0)):
    ref = sol.references[0]
    exp = expected_corrections(truth["gains"], truth["offsets"], truth["slopes"],
                               truth["centres"], ref, origin=origin)
    gain = np.abs(sol.gains / exp["gain"] - 1)
    # additive error at each tile's centre (the offset at a far origin mixes in slope errors)
    d = truth["centres"] - np.asarray(origin)
    add_sol = sol.offsets[:, 0] + (sol.slopes[:, 0] * d).sum(axis=1)
    add_exp = exp["offset"][:, 0] + (exp["slope"][:, 0] * d).sum(axis=1)
    return (float(np.sqrt(np.mean(gain ** 2))), float(gain.max()),
            float(np.sqrt(np.mean((add_sol - add_exp) ** 2))),
            float(np.abs(sol.slopes - exp["slope"]).max()))


def dense_peer(graph, reference, model):
    """Plain dense least squares of the same equations (gains, then offsets/planes)."""
    nodes = sorted(graph.nodes)
    index = {t: k for k, t in enumerate(nodes)}
    n = len(nodes)
    free = [k for k in range(n) if nodes[k] != reference]
    col = {k: q for q, k in enumerate(free)}
    edges = list(graph.edges(data=True))
    A = np.zeros((len(edges), n - 1))
    b = np.zeros(len(edges))
    for e, (_, _, d) in enumerate(edges):
        f = d["fits"][0]
        i, j = index[f.src], index[f.dst]
        if i in col:
            A[e, col[i]] += 1.0
        if j in col:
            A[e, col[j]] -= 1.0
        b[e] = np.log(f.a)
    logg = np.zeros(n)
    logg[free] = np.linalg.solve(A.T @ A, A.T @ b)
    g = np.exp(logg)
    npar = 3 if model == "plane" else 1
    centres = np.array([graph.nodes[t]["bbox"].center[::-1] for t in nodes])
    rows, rhs = [], []
    for _, _, d in edges:
        f = d["fits"][0]
        i, j = index[f.src], index[f.dst]
        row = np.zeros((n - 1) * npar)
        c = np.asarray(f.centroid)
        for k, sign in ((i, 1.0), (j, -1.0)):
            if k in col:
                row[col[k] * npar] += sign
                if npar == 3:
                    row[col[k] * npar + 1:col[k] * npar + 3] += sign * (c - centres[k]) / 512
        rows.append(row)
        rhs.append(g[j] * f.y_mean - g[i] * f.x_mean)
        if npar == 3:
            for ax in range(2):
                row = np.zeros((n - 1) * npar)
                for k, sign in ((i, 1.0), (j, -1.0)):
                    if k in col:
                        row[col[k] * npar + 1 + ax] += sign
                rows.append(row)
                rhs.append(512 * (g[j] * f.y_slope[ax] - g[i] * f.x_slope[ax]))
    design = np.array(rows)
    x = np.linalg.solve(design.T @ design, design.T @ np.array(rhs))
    return g, x


def timed(fn, *args, repeat=1, **kwargs):
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average at start: {load:.1f} on {os.cpu_count()} cores")
    graphs = {}
    for model, gradient in (("offset", 0.0), ("plane", 3.0)):
        t1 = time.perf_counter()
        graphs[model] = synthetic_edge_graph(100, 100, rng=0, gradient=gradient)
        g = graphs[model][0]
        print(f"built 100x100 synthetic edge statistics ({model} truth): "
              f"{g.number_of_nodes()} tiles, {g.number_of_edges()} edges in "
              f"{time.perf_counter() - t1:.1f} s")
    print()
    print(f"{'model':8s} {'time [s]':>9s} {'/2 s':>6s} {'gain rms':>9s} {'gain max':>9s} "
          f"{'add. rms':>9s} {'slope max':>10s}  status")
    for model in ("offset", "plane"):
        graph, truth = graphs[model]
        t, sol = timed(solve_global_photometry, graph, model=model, repeat=2)
        g_rms, g_max, o_rms, s_max = errors(sol, truth)
        print(f"{model:8s} {t:9.2f} {t / TARGET_S:6.2f} {g_rms:9.2e} {g_max:9.2e} "
              f"{o_rms:9.4f} {s_max:10.2e}  {sol.status} (uncertainties: "
              f"{sol.uncertainty_method})")
    print("gain errors relative; additive error (data units) at tile centres; truth: "
          "per-edge log-ratio noise 1e-3, moment noise 0.01, reference = tile "
          f"{sol.references[0]}")

    print()
    print("peer: dense least squares (numpy) of the same equations, 40x40 = 1,600 tiles")
    sub_nodes = [r * 100 + c for r in range(40) for c in range(40)]
    print(f"{'model':8s} {'package [s]':>11s} {'dense [s]':>10s} {'dense/pkg':>10s} "
          f"{'gain max (pkg)':>15s} {'gain max (dense)':>17s}")
    for model in ("offset", "plane"):
        graph, truth = graphs[model]
        sub = graph.subgraph(sub_nodes).copy()
        t_pkg, sol = timed(solve_global_photometry, sub, model=model, repeat=2)
        ref = sol.references[0]
        t_dense, (g_dense, _) = timed(dense_peer, sub, ref, model)
        exp = expected_corrections(truth["gains"][sub_nodes], truth["offsets"][sub_nodes],
                                   truth["slopes"][sub_nodes], truth["centres"][sub_nodes],
                                   sub_nodes.index(ref))
        err_pkg = np.abs(sol.gains[:, 0] / exp["gain"][:, 0] - 1).max()
        err_dense = np.abs(g_dense / exp["gain"][:, 0] - 1).max()
        print(f"{model:8s} {t_pkg:11.2f} {t_dense:10.2f} {t_dense / t_pkg:10.1f} "
              f"{err_pkg:15.2e} {err_dense:17.2e}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntotal benchmark time {time.perf_counter() - t0:.0f} s (load average at end "
          f"{load:.1f})")


if __name__ == "__main__":
    main()
