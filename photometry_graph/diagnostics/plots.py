"""Diagnostic plots: overlap graph, edge residuals, images, residual maps, solution vs truth.

The plots (:func:`plot_overlap_graph`, :func:`plot_overlap_scatter`,
:func:`plot_edge_residuals`, :func:`plot_images`, :func:`plot_before_after`,
:func:`plot_residual_map`, :func:`plot_solution_vs_truth`) import matplotlib when called
and return the figure.  Nothing here reads or writes files.
"""

import numpy as np

from ..core.display import asinh_stretch
from .metrics import fit_truth_plane, image_truth, masked_smooth, overlap_pixels, truth_residual
from .report import RESIDUAL_KEYS, float_or_nan, unpack_run
from .tables import edge_residual_table, truth_errors

# asinh_stretch (its home is core.display) is re-exported: the stretch the plots use
__all__ = ["asinh_stretch", "plot_images", "plot_before_after", "plot_overlap_graph",
           "graph_edge_values", "graph_edge_status", "graph_node_boxes", "STATUS_COLOURS",
           "STATUS_LABELS",
           "plot_edge_residuals", "plot_residual_map", "plot_solution_vs_truth",
           "plot_overlap_scatter"]

_NAN = float("nan")


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the diagnostics plots need matplotlib, a dependency of the "
                          "package: pip install matplotlib") from exc
    return plt


def _show(ax, img, title=None):
    """imshow a stretched image (NaN black for RGB, masked for mono), origin lower."""
    if img.ndim == 2:
        cmap = _pyplot().get_cmap("gray").with_extremes(bad="black")
        art = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=0.0, vmax=1.0,
                        origin="lower", interpolation="nearest")
    else:
        art = ax.imshow(np.nan_to_num(img[..., :3], nan=0.0), origin="lower",
                        interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return art


def plot_images(images, titles=None, *, axes=None, low_pct=0.5, high_pct=99.8, stretch=12.0,
                reference=None, figsize=None):
    """Show images side by side with the same asinh stretch.

    Parameters
    ----------
    images : sequence of array_like, shape (H, W) or (H, W, C)
    titles : sequence of str, optional
    axes : sequence of matplotlib Axes, optional
        One per image; a new figure is made when omitted.
    low_pct, high_pct, stretch, reference
        See :func:`asinh_stretch`.
    figsize : tuple, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    images = list(images)
    if axes is None:
        n = len(images)
        fig, axes = plt.subplots(1, n, figsize=figsize or (4.0 * n, 4.2), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(np.ravel(axes))
        if len(axes) != len(images):
            raise ValueError(f"got {len(axes)} axes for {len(images)} images")
        fig = axes[0].figure
    stretched, _ = asinh_stretch(images, low_pct=low_pct, high_pct=high_pct, stretch=stretch,
                                 reference=reference)
    titles = list(titles) if titles is not None else [None] * len(images)
    for ax, img, title in zip(axes, stretched, titles):
        _show(ax, img, title)
    return fig


def plot_before_after(before, after, ax=None, *, titles=("before", "after"), **stretch_kw):
    """Two images side by side with the same asinh stretch.

    Parameters
    ----------
    before, after : array_like, shape (H, W) or (H, W, C)
        E.g. the plain placement and the harmonized, blended mosaic.
    ax : pair of matplotlib Axes, optional
    titles : pair of str
    **stretch_kw
        ``low_pct``, ``high_pct``, ``stretch``, ``reference`` (see :func:`asinh_stretch`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    return plot_images([before, after], titles, axes=ax, **stretch_kw)


def graph_edge_values(run, residuals, channel):
    """Value per graph edge to colour it by, and the colour-bar label.

    Parameters
    ----------
    run : RunView
        A run unpacked by :func:`~photometry_graph.diagnostics.report.unpack_run`.
    residuals : str, dict or None
        As :func:`plot_overlap_graph` takes it (a key of the solution's edge residuals, or
        a dict ``{(u, v): value}``).
    channel : int or None
        One channel, or None for the worst one.

    Returns
    -------
    values : dict or None
        ``{(u, v): value}`` with both orders of every edge (None for ``residuals=None``).
    label : str or None
    """
    if residuals is None:
        return None, None
    if isinstance(residuals, dict):
        vals = {}
        for (u, v), val in residuals.items():
            vals[(u, v)] = vals[(v, u)] = float(val)
        return vals, "residual"
    if residuals not in RESIDUAL_KEYS:
        raise ValueError(f"residuals must be None, a dict {{(u, v): value}} or one of "
                         f"{RESIDUAL_KEYS}, got {residuals!r}")
    if run.residuals is None or residuals not in run.residuals:
        raise ValueError(f"residuals={residuals!r} needs the solution: pass a HarmonizationResult,"
                         " a report with edge residuals, or solution=")
    arr = np.abs(run.residuals[residuals])
    vals = {}
    for k, (s, d) in enumerate(run.residuals["edges"]):
        row = arr[k] if channel is None else arr[k, channel:channel + 1]
        with np.errstate(invalid="ignore"):
            v = float(np.nanmax(row)) if np.isfinite(row).any() else _NAN
        vals[(s, d)] = vals[(d, s)] = v
    label = {"gain": "|gain-ratio residual|", "offset": "|offset residual| (data units)",
             "corner": "|corner residual| (data units)"}.get(residuals.split("_")[0],
                                                             residuals)
    return vals, f"{label}, {residuals.split('_')[1]}"


#: Edge colours by fit status ("stars": gain from the stars), of :func:`plot_overlap_graph`
#: and of the report page (matplotlib's tab: green, blue, orange and red).
STATUS_COLOURS = {"ok": "#2ca02c", "stars": "#1f77b4", "offset_only": "#ff7f0e",
                  "failed": "#d62728"}
#: Their names in legends and tooltips.
STATUS_LABELS = {"ok": "ok", "stars": "star estimate", "offset_only": "offset-only",
                 "failed": "failed"}


def _from_stars(fit):
    """Whether a fit's gain came from the stars (``gain_source == "stars"``, as an attribute
    of a :class:`~photometry_graph.photometry.regression.PairwiseFit` or a key of its JSON)."""
    source = fit.get("gain_source") if isinstance(fit, dict) else getattr(fit, "gain_source", None)
    return source == "stars"


def graph_node_boxes(graph):
    """``{node: BBox}`` of an overlap graph: a node's ``bbox``, else its tile's.

    Raises
    ------
    ValueError
        When a node has neither.
    """
    bboxes = {n: (d.get("bbox") if d.get("bbox") is not None else
                  getattr(d.get("tile"), "bbox", None)) for n, d in graph.nodes(data=True)}
    missing = [n for n, b in bboxes.items() if b is None]
    if missing:
        raise ValueError(f"nodes {missing[:5]} have no bbox; build the graph with "
                         "build_tile_overlap_graph")
    return bboxes


def graph_edge_status(data):
    """Worst fit status of an edge: ``'ok'``, ``'offset_only'``, ``'failed'``, or
    ``'stars'`` for an ok edge whose gain is from its stars (``data``: the edge's
    attributes, ``status`` and ``fits`` as objects or their JSON).

    Examples
    --------
    >>> graph_edge_status({"fits": [{"status": "ok"}, {"status": "offset_only"}]})
    'offset_only'
    >>> graph_edge_status({"fits": [{"status": "ok", "gain_source": "stars"}]})
    'stars'
    """
    fits = data.get("fits") or []
    s = data.get("status")
    if s is None and fits:
        st = [f.get("status", "failed") if isinstance(f, dict) else
              getattr(f, "status", "failed") for f in fits]
        s = "failed" if "failed" in st else "offset_only" if "offset_only" in st else "ok"
    s = s or "ok"
    return "stars" if s == "ok" and any(_from_stars(f) for f in fits) else s


def plot_overlap_graph(graph, ax=None, residuals="auto", *, solution=None, channel=None,
                       wcs=None, cmap="viridis", vmin=None, vmax=None, log=True, annotate=True,
                       show_tiles=True, title=None):
    """Draw the overlap graph: tiles at their positions, edges coloured by residual.

    Parameters
    ----------
    graph : networkx.Graph, HarmonizationResult, dict or RunView
        An overlap graph (nodes with ``bbox``), a harmonization result (graph
        + solution), a parsed ``grid_report.json``, or any of them unpacked
        (:func:`~photometry_graph.diagnostics.report.unpack_run`).
    ax : matplotlib Axes, optional
    residuals : str, dict or None
        Colour of the edges: a key of the solution's ``edge_residuals``
        (``"offset_after"``, ``"offset_before"``, ``"gain_after"``,
        ``"corner_after"``...; absolute value, worst channel unless
        ``channel``), a dict ``{(u, v): value}``, or None to colour by fit
        status (green ok, blue gain from the stars, orange offset-only, red failed).  ``"auto"``:
        ``"offset_after"`` when the residuals are known, else the status.
    solution : PhotometrySolution, optional
        Residuals for a bare graph.
    channel : int, optional
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of the pixel grid of the boxes: nodes are then drawn
        at their sky positions (RA, Dec in degrees, RA increasing to the left).
    cmap : str
    vmin, vmax : float, optional
    log : bool
        Logarithmic colour scale (residuals span decades before/after).
    annotate : bool
        Write the tile ids.
    show_tiles : bool
        Draw the tile outlines.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Artists: a ``LineCollection`` of edges, a ``PathCollection`` of node
        markers, a ``PolyCollection`` of the tile outlines, a colour bar when
        ``residuals`` is not None; the reference tile(s) are drawn as stars.
    """
    import networkx as nx
    plt = _pyplot()
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.colors import LogNorm, Normalize

    run = unpack_run(graph, solution)
    g = run.graph
    if g is None:
        raise ValueError("no graph to draw: pass an overlap graph, a HarmonizationResult or a "
                         "report with the tiles' boxes")
    if not isinstance(g, nx.Graph):
        raise TypeError(f"graph must be a networkx.Graph, got {type(g).__name__}")
    bboxes = graph_node_boxes(g)

    def to_plot(x, y):
        if wcs is None:
            return np.asarray(x, float), np.asarray(y, float)
        ra, dec = wcs.pixel_to_world_values(np.asarray(x, float), np.asarray(y, float))
        return np.asarray(ra, float), np.asarray(dec, float)

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5.5))
    else:
        fig = ax.figure
    nodes = list(g.nodes)
    cx = np.array([bboxes[n].center[1] for n in nodes])
    cy = np.array([bboxes[n].center[0] for n in nodes])
    px, py = to_plot(cx, cy)
    pos = {n: (px[k], py[k]) for k, n in enumerate(nodes)}
    edges = list(g.edges(data=True))
    segs = [(pos[u], pos[v]) for u, v, _ in edges]
    if isinstance(residuals, str) and residuals == "auto":
        residuals = "offset_after" if run.residuals is not None else None
    values, label = graph_edge_values(run, residuals, channel)
    if values is None:
        stat = [graph_edge_status(d) for _, _, d in edges]
        lc = LineCollection(segs, colors=[STATUS_COLOURS.get(s, "k") for s in stat],
                            linewidths=2.5)
        ax.add_collection(lc)
        for s, colour in STATUS_COLOURS.items():
            if s != "stars" or s in stat:
                ax.plot([], [], color=colour, lw=2.5, label=STATUS_LABELS[s])
        ax.legend(loc="best", fontsize=8, title="fit status", title_fontsize=8)
    else:
        vals = np.array([values.get((u, v), _NAN) for u, v, _ in edges])
        fin = vals[np.isfinite(vals)]
        lo = vmin if vmin is not None else (float(fin.min()) if fin.size else 0.0)
        hi = vmax if vmax is not None else (float(fin.max()) if fin.size else 1.0)
        if log:
            pos_vals = fin[fin > 0]
            lo = vmin if vmin is not None else (float(pos_vals.min()) if pos_vals.size else 1e-6)
            lo = max(lo, 1e-12)
            hi = max(hi, lo * 10)
            norm = LogNorm(vmin=lo, vmax=hi)
            plot_vals = np.where(np.isfinite(vals), np.maximum(vals, lo), np.nan)
        else:
            norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
            plot_vals = vals
        lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=3.0)
        lc.set_array(np.ma.masked_invalid(plot_vals))
        ax.add_collection(lc)
        fig.colorbar(lc, ax=ax, label=label, shrink=0.85)
    if show_tiles:  # the outlines: one artist, under the edges
        corners = np.array([[(b.x0, b.y0), (b.x1, b.y0), (b.x1, b.y1), (b.x0, b.y1)]
                            for b in (bboxes[n] for n in nodes)], float) - 0.5
        qx, qy = to_plot(corners[..., 0].ravel(), corners[..., 1].ravel())
        ax.add_collection(PolyCollection(np.stack([qx, qy], -1).reshape(corners.shape),
                                         closed=True, facecolors="none", edgecolors="0.6",
                                         linewidths=0.8, zorder=0.9))
    refs = set(run.references)
    is_ref = np.array([n in refs for n in nodes])
    ax.scatter(px[~is_ref], py[~is_ref], s=40, c="k", zorder=3)
    if is_ref.any():
        ax.scatter(px[is_ref], py[is_ref], s=220, marker="*", c="gold", edgecolors="k",
                   zorder=4, label="reference")
    if annotate:
        for n, (x, y) in pos.items():
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.autoscale_view()
    # sky positions: one degree of RA spans cos(Dec) of a degree on the sky
    aspect = 1.0 if wcs is None else 1.0 / max(np.cos(np.radians(np.mean(py))), 1e-3)
    ax.set_aspect(aspect, adjustable="datalim")
    if wcs is None:
        ax.set_xlabel("x (global pixel)")
        ax.set_ylabel("y (global pixel)")
    else:
        ax.set_xlabel("RA (deg)")
        ax.set_ylabel("Dec (deg)")
        if not ax.xaxis_inverted():
            ax.invert_xaxis()
    ax.set_title(title if title is not None else
                 f"overlap graph: {g.number_of_nodes()} tiles, {g.number_of_edges()} edges",
                 fontsize=10)
    return fig


def plot_edge_residuals(result, ax=None, *, kind="offset", channel=None, solution=None,
                        title=None):
    """Absolute edge residuals before and after the solve, edge by edge (log scale).

    Parameters
    ----------
    result : HarmonizationResult, PhotometrySolution, graph or dict
        Anything :func:`edge_residual_table` accepts.
    ax : matplotlib Axes, optional
    kind : {"offset", "gain", "corner"}
    channel : int, optional
        Default: all channels (one marker per edge and channel).
    solution : PhotometrySolution, optional

    Returns
    -------
    matplotlib.figure.Figure
        Two ``PathCollection`` (before, after) on a log y axis.
    """
    plt = _pyplot()
    if kind not in ("offset", "gain", "corner"):
        raise ValueError(f"kind must be 'offset', 'gain' or 'corner', got {kind!r}")
    rows = edge_residual_table(result, solution)
    if channel is not None:
        rows = [r for r in rows if r["channel"] == channel]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.0, 3.8))
    else:
        fig = ax.figure
    x = np.arange(len(rows))
    before = np.abs([r[f"{kind}_before"] for r in rows])
    after = np.abs([r[f"{kind}_after"] for r in rows])
    floor = 1e-12
    ax.scatter(x, np.maximum(before, floor), marker="o", label="before", color="tab:red", s=18)
    ax.scatter(x, np.maximum(after, floor), marker="s", label="after", color="tab:blue", s=18)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['src']}-{r['dst']}" + (f":{r['channel']}" if channel is None
                                                     and len({q['channel'] for q in rows}) > 1
                                                     else "") for r in rows],
                       rotation=90, fontsize=7)
    unit = {"offset": "data units", "gain": "relative", "corner": "data units"}[kind]
    ax.set_ylabel(f"|{kind} residual| ({unit})")
    ax.legend(fontsize=8)
    ax.set_title(title if title is not None else f"{kind} residual per edge before / after "
                 "the solve", fontsize=10)
    fig.tight_layout()
    return fig


def plot_residual_map(image, truth, *, valid=None, boundaries=None, fit=True, plane=True,
                      smooth_sigma=2.0, noise_sigma=1.0, ax=None, vmax=None, title=None,
                      cmap="RdBu_r"):
    """Map of the (smoothed) residual of a mosaic against its truth, seams overlaid.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
    valid : array_like of bool, optional
    boundaries : array_like of bool, shape (H, W), optional
        Seam lines drawn as contours (see :func:`bbox_boundaries`).
    fit : bool
        Fit ``image ≈ alpha * truth + beta (+ plane)`` first (per channel,
        :func:`fit_truth_plane`); the map is ``((image - beta - plane) /
        alpha - truth) / noise_sigma``, channel mean.
    plane : bool
        Include the plane in the fit (a mosaic keeps its reference tile's
        gradient).
    smooth_sigma : float
        Masked Gaussian smoothing in pixels (0: none).
    noise_sigma : float
    ax : matplotlib Axes, optional
    vmax : float, optional
        Symmetric colour limit (default: 99th percentile of ``|residual|``).
    title : str, optional
    cmap : str

    Returns
    -------
    matplotlib.figure.Figure
        An ``AxesImage`` of the residual, a colour bar, and seam contours
        when ``boundaries`` is given.
    """
    plt = _pyplot()
    img, tru, ok = image_truth(image, truth, valid)
    C = img.shape[2]
    coef = (fit_truth_plane(img, tru, ok, plane=plane) if fit else
            (np.ones(C), np.zeros(C), np.zeros(C), np.zeros(C)))
    res = truth_residual(img, tru, ok, coef, noise_sigma).mean(axis=2)
    if smooth_sigma and smooth_sigma > 0:
        res = np.where(ok, masked_smooth(np.nan_to_num(res), ok, smooth_sigma), np.nan)
    if vmax is None:
        fin = np.abs(res[np.isfinite(res)])
        vmax = float(np.percentile(fin, 99)) if fin.size else 1.0
        vmax = vmax if vmax > 0 else 1.0
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 5.0))
    else:
        fig = ax.figure
    art = ax.imshow(np.ma.masked_invalid(res), cmap=cmap, vmin=-vmax, vmax=vmax,
                    origin="lower", interpolation="nearest")
    fig.colorbar(art, ax=ax, label="residual vs truth (noise sigma)", shrink=0.85)
    if boundaries is not None:
        b = np.asarray(boundaries, dtype=float)
        if b.any():
            ax.contour(b, levels=[0.5], colors="k", linewidths=0.4, alpha=0.5)
    ax.set_title(title if title is not None else "residual against the truth", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def plot_solution_vs_truth(result, survey, *, channel=None, axes=None):
    """Solved gains and offsets against the survey's truth, with error bars.

    Top row: solved against exact gain and offset (in the reference's
    corrected system, see :func:`truth_summary`) with the 1:1 line; bottom
    row: per tile, the relative gain error and the offset error at the tile
    centre (noise sigma) with the solve's one-sigma error bars.  Reference
    tiles are drawn as stars.

    Parameters
    ----------
    result : HarmonizationResult, PhotometrySolution or dict
    survey : SyntheticSurvey
    channel : int, optional
        Default: all channels (one colour each).
    axes : array of 4 matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    run = unpack_run(result)
    t = truth_errors(run, survey)
    ids = [tile.tile_id for tile in survey.tiles]
    n, C = t["gain_true"].shape
    chans = range(C) if channel is None else [int(channel)]
    if axes is None:
        fig, axes = plt.subplots(2, 2, figsize=(10.0, 7.5))
    else:
        axes = np.asarray(axes).reshape(2, 2)
        fig = axes[0, 0].figure
    colours = ["k"] if C == 1 else ["tab:red", "tab:green", "tab:blue"]
    ref = t["is_reference"]
    sigma = float(survey.noise_sigma)
    g_ref = np.ones((n, C))
    for k in range(n):
        r = t["reference_of"][k]
        if r is not None and run.corrections.get(r) is not None:
            g_ref[k] = run.corrections[r]["gain"]
    x = np.arange(n)
    for c in chans:
        col = colours[c % len(colours)]
        lab = None if C == 1 else f"channel {c}"
        for ax, key in ((axes[0, 0], "gain"), (axes[0, 1], "offset")):
            ax.errorbar(t[f"{key}_true"][:, c], t[f"{key}_solved"][:, c],
                        yerr=np.nan_to_num(t[f"{key}_err"][:, c]), fmt="o", color=col, ms=4,
                        capsize=2, label=lab)
            ax.scatter(t[f"{key}_true"][ref, c], t[f"{key}_solved"][ref, c], marker="*",
                       s=200, c="gold", edgecolors="k", zorder=4)
        off = 0.0 if C == 1 else (c - (C - 1) / 2) * 0.15
        with np.errstate(invalid="ignore", divide="ignore"):
            rel_err = t["gain_err"][:, c] / t["gain_true"][:, c]
            off_err = t["offset_err"][:, c] / (g_ref[:, c] * sigma)
        ax = axes[1, 0]
        ax.errorbar(x + off, 100 * t["gain_error"][:, c], yerr=100 * np.nan_to_num(rel_err),
                    fmt="o", color=col, ms=4, capsize=2, label=lab)
        ax.scatter(x[ref] + off, 100 * t["gain_error"][ref, c], marker="*", s=200, c="gold",
                   edgecolors="k", zorder=4)
        ax = axes[1, 1]
        ax.errorbar(x + off, t["offset_error_sigma"][:, c], yerr=np.nan_to_num(off_err),
                    fmt="o", color=col, ms=4, capsize=2, label=lab)
        ax.scatter(x[ref] + off, t["offset_error_sigma"][ref, c], marker="*", s=200,
                   c="gold", edgecolors="k", zorder=4)
    for ax, key in ((axes[0, 0], "gain"), (axes[0, 1], "offset")):
        vals = np.concatenate([t[f"{key}_true"].ravel(), t[f"{key}_solved"].ravel()])
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = vals.min(), vals.max()
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--", zorder=0)
        ax.set_xlabel(f"exact {key} (truth)")
        ax.set_ylabel(f"solved {key}")
        ax.set_title(f"{key}s against the truth", fontsize=10)
    for ax, ylabel in ((axes[1, 0], "gain error (%)"),
                       (axes[1, 1], "offset error at tile centre (sigma)")):
        ax.axhline(0.0, color="0.5", lw=1, ls="--", zorder=0)
        ax.set_xticks(x)
        ax.set_xticklabels([str(i) for i in ids], fontsize=7)
        ax.set_xlabel("tile")
        ax.set_ylabel(ylabel)
    axes[1, 0].set_title("gain error per tile (1-sigma bars)", fontsize=10)
    axes[1, 1].set_title("offset error per tile (1-sigma bars)", fontsize=10)
    if C > 1 and channel is None:
        axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_overlap_scatter(graph, edge, channel=0, *, ax=None, kappa=4.0, max_points=20000,
                         rng=0, title=None):
    """Scatter of ``dst`` against ``src`` on one overlap with the fitted line and clipped pixels.

    Parameters
    ----------
    graph, edge, channel, kappa, max_points, rng
        See :func:`overlap_pixels`.
    ax : matplotlib Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Two scatter collections (kept, clipped), the fitted line
        ``dst = a*src + (y_mean - a*x_mean)`` and the 1:1 line.
    """
    plt = _pyplot()
    p = overlap_pixels(graph, edge, channel, kappa=kappa, max_points=max_points, rng=rng)
    fit = p["fit"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5.0))
    else:
        fig = ax.figure
    keep = ~p["clipped"]
    ax.scatter(p["x"][keep], p["y"][keep], s=2, c="tab:blue", alpha=0.4, linewidths=0,
               label=f"used ({int(keep.sum())})", rasterized=True)
    ax.scatter(p["x"][~keep], p["y"][~keep], s=8, c="tab:red", marker="x", linewidths=0.6,
               label=f"clipped ({int((~keep).sum())})", rasterized=True)
    fin = np.isfinite(p["x"])
    lo, hi = (np.percentile(p["x"][fin], [0, 100]) if fin.any() else (0.0, 1.0))
    xs = np.linspace(lo, hi, 50)
    xm, ym = float_or_nan(fit.x_mean), float_or_nan(fit.y_mean)
    intercept = (ym - fit.a * xm) if np.isfinite(xm + ym) else fit.b
    ax.plot(xs, fit.a * xs + intercept, color="k", lw=1.5,
            label=f"fit: a={fit.a:.4f}, status {fit.status}")
    ax.plot(xs, xs, color="0.5", lw=1, ls="--", label="1:1")
    ax.set_xlabel(f"tile {p['src']} (src)")
    ax.set_ylabel(f"tile {p['dst']} (dst)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title if title is not None else
                 f"overlap {p['src']}->{p['dst']} channel {channel}: "
                 f"n_used {fit.n_used}/{fit.n_total}", fontsize=10)
    return fig
