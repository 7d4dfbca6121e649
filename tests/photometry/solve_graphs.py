"""Overlap graphs with exact (or noisy) pairwise-fit statistics from a known truth.

Shared by the tests of the global solve (test_solve, test_edges, test_lsq, test_gains).
"""

import networkx as nx
import numpy as np

from photometry_graph.datasets import expected_corrections
from photometry_graph.photometry.regression import PairwiseFit
from photometry_graph.core.tiles import BBox, grid_layout


class Truth:
    def __init__(self, gains, offsets, slopes, centres):
        self.gains, self.offsets, self.slopes, self.centres = gains, offsets, slopes, centres

    def expected(self, reference, origin=(0.0, 0.0), **kwargs):
        return expected_corrections(self.gains, self.offsets, self.slopes, self.centres,
                                    reference, origin=origin, **kwargs)


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
