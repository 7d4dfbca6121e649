"""Plots: overlap graph, images, residual maps, edge residuals, solution vs truth, overlaps."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from astropy.wcs import WCS  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import AxesImage  # noqa: E402

from photometry_graph.datasets import make_survey  # noqa: E402
from photometry_graph.diagnostics.metrics import bbox_boundaries, overlap_pixels  # noqa: E402
from photometry_graph.diagnostics.plots import (  # noqa: E402
    plot_before_after, plot_edge_residuals, plot_overlap_graph, plot_overlap_scatter,
    plot_residual_map, plot_solution_vs_truth)
from photometry_graph.photometry.harmonize import harmonize_tiles  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_overlap_graph_draws_tiles_edges_and_reference(mono):
    _, res = mono
    fig = plot_overlap_graph(res, residuals="offset_after")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    lcs = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(lcs) == 1 and len(lcs[0].get_segments()) == res.graph.number_of_edges()
    assert np.isfinite(lcs[0].get_array()).sum() == res.graph.number_of_edges()
    outlines = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(outlines) == 1 and len(outlines[0].get_paths()) == res.graph.number_of_nodes()
    assert outlines[0].get_zorder() < lcs[0].get_zorder()  # under the edges
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


def test_plot_overlap_graph_colours_gains_from_the_stars(mono):
    _, res = mono
    graph = res.graph.copy()
    u, v = next(e for e in graph.edges if graph.edges[e]["status"] == "ok")
    graph.edges[u, v]["fits"] = [dataclasses.replace(f, gain_source="stars")
                                 for f in graph.edges[u, v]["fits"]]
    colours = plot_overlap_graph(graph).axes[0].collections[0].get_colors()
    blue = matplotlib.colors.to_rgba("tab:blue")
    assert sum(np.allclose(c, blue) for c in colours) == 1


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
