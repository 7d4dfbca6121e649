"""Global per-tile photometric solve over the overlap graph.

Every node ``k`` of the overlap graph (a tile, or a frame) gets a correction,
per channel::

    corrected_k(r) = g_k * x_k(r) + o_k + p_k . (r - origin)

with ``p_k = 0`` for ``model="offset"``.  An edge with ``src = i`` and
``dst = j`` carries the pairwise fit ``dst ≈ a * src + b`` and the *moments*
of both nodes on the overlap: ``x_mean``/``y_mean`` (planes fitted to the src
and dst pixels, evaluated at the overlap centroid ``c``) and
``x_slope``/``y_slope`` (their ``(d/dx, d/dy)``).  Corrected nodes agree on the
overlap when

* gains: ``g_i = g_j * a``, i.e. ``log g_i - log g_j = log a`` (linear in the
  log-gains; only edges whose fit status is ``"ok"``);
* offsets at the centroid:
  ``o_i + p_i.(c - origin) - o_j - p_j.(c - origin) = g_j y_mean - g_i x_mean``
  (every non-failed edge, ``"offset_only"`` included: their gain ratio is
  unknown but the moments are valid);
* planes (``model="plane"``): ``p_i - p_j = g_j y_slope - g_i x_slope``.

The solve runs per connected component and per channel:

1. the reference of each component (the most-connected node, counting the
   edges that carry a gain first; ties: most overlap pixels, then the most
   central, then the smallest id) is fixed at ``g = 1, o = 0, p = 0``;
2. log-gains are initialised by propagating the edge ratios along a *maximum*
   spanning tree (weight ``1 / sigma^2``) from the reference, then refined by
   sparse weighted least squares over all edges, iteratively reweighted
   (Huber, then Tukey's biweight on residuals normalised by their sigma and a
   robust scale) so that an edge inconsistent with the loops it sits on (a
   misregistered tile, a trail) loses its weight;
3. with the gains known, offsets (and planes) are linear: the same robust
   sparse least squares over every non-failed edge.  Internally the offset of
   each node is parametrised at the node's own centre and slopes are scaled by
   a typical node size, so the system stays well conditioned whatever
   ``origin`` is.

Nodes without any usable gain edge (only ``"offset_only"`` edges, e.g. flat
sky or a misregistered tile) first take their gain from their neighbours: the
gain level of such a group is set so that the mean log-gain step across its
edges to already-solved nodes is zero (a lone node gets the geometric mean of
its solved neighbours); when no neighbour has a gain either, the gain is 1.
Both cases are logged with a ``[GRID]`` warning.  Then (``joint="auto"``, the
default) a joint robust Gauss-Newton refinement of gains, offsets and planes
uses the overlap *moments* as gain information too: a node's overlaps sit at
different sky levels (extended emission, gradients), so ``g_k`` is also the
slope of a line through its overlaps' moments.  On a 5 x 5 survey with planar
gradients this brought the gain of such tiles from 13 % off to 0.4 % and
their overlap-corner steps from 0.85 sigma to 0.05 sigma; on flat sky a weak
prior (``gain_prior``) keeps the neighbours' value.  When every node has gain
edges the refinement is skipped by default: on the test surveys it did not
improve the gains measurably (``joint=True`` forces it).

The edge table is built by :mod:`.edges`; the sparse least squares (normal
equations factorised with SuperLU, conjugate gradients for the reweighted
systems, or ``lsqr``) are in :mod:`.lsq`.

Failures never raise: a failed solve of a component (singular system,
non-finite result) gives identity corrections (``status="fallback"``) for its
nodes with a ``[GRID]`` warning.  Only bad arguments raise ``ValueError`` or
``TypeError``.
"""

from dataclasses import dataclass, field
import math
import time

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .._json import jsonable
from .._log import get_logger, grid_info, grid_warning
from .._stats import MAD_TO_SIGMA, robust_weights
from ..core.correction import Correction
from .edges import (STATUS_FAILED, STATUS_OK, clean_sigma, collect_edges, edge_pixels,
                    edge_residuals, summarise)
from .lsq import diag_inverse, irls, normal_matrix, resolve

__all__ = ["PhotometrySolution", "solve_global_photometry", "select_reference",
           "SOLVE_MODELS"]

logger = get_logger(__name__)

SOLVE_MODELS = ("offset", "plane")



# --------------------------------------------------------------------------- result


@dataclass
class PhotometrySolution:
    """Result of :func:`solve_global_photometry`.

    Attributes
    ----------
    corrections : dict
        ``{tile_id: Correction}`` for every node of the graph.
    references : list
        Reference node of each connected component (same order as
        ``components``).
    components : list of list
        Node ids of each connected component (largest first).
    tile_ids : list
        Node ids in the row order of the arrays below.
    gains, offsets : numpy.ndarray, shape (n, C)
        Solved gains and offsets (offset at ``origin``).
    slopes : numpy.ndarray, shape (n, C, 2)
        Solved plane slopes ``(d/dx, d/dy)`` (zeros for ``model="offset"``).
    gain_err, offset_err : numpy.ndarray, shape (n, C)
        One-sigma uncertainties relative to the component's reference (zero
        for references, NaN for fallbacks).  ``offset_err`` is at ``origin``.
    slope_err : numpy.ndarray, shape (n, C, 2)
    offset_err_center : numpy.ndarray, shape (n, C)
        Uncertainty of the additive term at each node's own centre (what
        matters for a seam; ``offset_err`` at a far ``origin`` is larger).
    uncertainty_method : str
        ``"exact"`` (diagonal of the inverse normal matrix) for systems of at
        most 1,000 unknowns, ``"diagonal"`` (inverse of the normal matrix's
        diagonal: an under-estimate that ignores the accumulation of errors
        along paths from the reference) for larger ones.  Both are scaled by
        the robust residual scale when it exceeds 1 (edge sigmas that are
        too small).
    edge_residuals : dict
        Per edge (rows, order of ``edges``) and channel (columns):
        ``edges`` (list of ``(src, dst)``), ``status`` (fit status strings),
        ``gain_before``/``gain_after`` (gain-ratio residual
        ``g_src / (g_dst a) - 1``, identity corrections before; NaN when the
        edge has no gain ratio), ``offset_before``/``offset_after`` (difference
        of the corrected src and dst planes at the centroid, data units of the
        corrected system), ``corner_before``/``corner_after`` (largest absolute
        such difference at the four corners of the overlap box),
        ``gain_weight``/``offset_weight`` (final robust weights in [0, 1]).
    summary : dict
        Median and maximum absolute residuals before/after.
    status : str
        ``"ok"``, ``"partial"`` (some nodes fell back, or some tiles took
        their gain from neighbours) or ``"failed"`` (all identity).
    message : str
    model : str
    origin : tuple of float
    info : dict
        Iterations, robust scales, timings, counts.
    """

    corrections: dict
    references: list
    components: list
    tile_ids: list
    gains: np.ndarray
    offsets: np.ndarray
    slopes: np.ndarray
    gain_err: np.ndarray
    offset_err: np.ndarray
    slope_err: np.ndarray
    offset_err_center: np.ndarray
    edge_residuals: dict
    summary: dict
    status: str
    message: str
    model: str
    origin: tuple
    uncertainty_method: str = "exact"
    info: dict = field(default_factory=dict)

    @property
    def n_channels(self):
        """Number of channels."""
        return int(self.gains.shape[1])

    def index(self, tile_id):
        """Row of ``tile_id`` in the arrays."""
        return self.tile_ids.index(tile_id)

    def to_dict(self, *, include_edges=True):
        """JSON-friendly representation (NaN becomes ``None``).

        Parameters
        ----------
        include_edges : bool
            Include the per-edge residual table (large for big graphs).
        """
        out = {
            "status": self.status,
            "message": self.message,
            "model": self.model,
            "origin": [float(v) for v in self.origin],
            "references": [jsonable(r) for r in self.references],
            "components": [[jsonable(t) for t in comp] for comp in self.components],
            "uncertainty_method": self.uncertainty_method,
            "summary": jsonable(self.summary),
            "info": jsonable(self.info),
            "tiles": {str(t): self.corrections[t].to_dict() for t in self.tile_ids},
        }
        if include_edges:
            out["edge_residuals"] = jsonable(self.edge_residuals)
        return out


# --------------------------------------------------------------------------- helpers


def _sorted_ids(ids):
    ids = list(ids)
    try:
        return sorted(ids)
    except TypeError:
        return sorted(ids, key=repr)


def _edge_usable(data):
    fits = data.get("fits") or []
    return any(getattr(f, "status", "failed") in ("ok", "offset_only") for f in fits)


def select_reference(graph, nodes=None):
    """Pick the reference node: most gain edges, most connected, most overlap pixels, central.

    Centrality is geometric (distance of the node's bbox centre to the mean
    centre of the candidates, when nodes carry a ``bbox``): a central
    reference shortens the paths along which gain errors accumulate.  Remaining
    ties go to the smallest id.

    Parameters
    ----------
    graph : networkx.Graph
        Overlap graph; edge attributes ``fits`` (usable edges have at least
        one non-failed fit; edges without ``fits`` count as usable here) and
        ``n_valid``.
    nodes : iterable, optional
        Restrict the choice to these nodes (a connected component).

    Returns
    -------
    hashable
        The chosen node id.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.Graph(); g.add_edges_from([(1, 2), (2, 3)])
    >>> select_reference(g)
    2
    """
    nodes = list(graph.nodes if nodes is None else nodes)
    if not nodes:
        raise ValueError("cannot select a reference among zero nodes")
    ids = _sorted_ids(nodes)
    degree = np.zeros(len(ids))
    gain_degree = np.zeros(len(ids))
    pixels = np.zeros(len(ids))
    centres = np.zeros((len(ids), 2))
    for k, node in enumerate(ids):
        for _, _, data in graph.edges(node, data=True):
            if "fits" in data and not _edge_usable(data):
                continue
            degree[k] += 1
            gain_degree[k] += "fits" not in data or any(
                getattr(f, "status", "failed") == "ok" for f in data["fits"])
            pixels[k] += edge_pixels(data)
        centres[k] = _node_center(graph, node)[0]
    return ids[_best_reference(np.arange(len(ids)), degree, pixels, centres, gain_degree)]


def _best_reference(idx, degree, pixels, centres, gain_degree=None):
    """Index (into the full arrays) of the reference among ``idx``.

    Most gain edges (edges with a fitted gain in some channel: a reference
    whose overlaps are all offset-only ties no other node's gain to its
    own), then most connected, then most overlap pixels, then nearest to the
    mean centre of ``idx``, then the first of ``idx`` (ids are sorted).
    """
    idx = np.asarray(idx)
    gain_degree = degree if gain_degree is None else gain_degree
    distance = np.hypot(*(centres[idx] - centres[idx].mean(axis=0)).T)
    order = np.lexsort((np.arange(len(idx)), distance, -pixels[idx], -degree[idx],
                        -gain_degree[idx]))
    return idx[order[0]]


def _valid_origin(origin):
    try:
        o = tuple(float(v) for v in origin)
    except TypeError as exc:
        raise TypeError(f"origin must be a pair (x, y) of numbers, got {origin!r}") from exc
    if len(o) != 2 or not all(math.isfinite(v) for v in o):
        raise ValueError(f"origin must be a finite pair (x, y), got {origin!r}")
    return o


def _node_center(graph, node):
    bbox = graph.nodes[node].get("bbox")
    if bbox is None:
        tile = graph.nodes[node].get("tile")
        bbox = getattr(tile, "bbox", None)
    if bbox is None:
        return (0.0, 0.0), 1.0
    yc, xc = bbox.center
    h, w = bbox.shape
    return (float(xc), float(yc)), float(max(h, w, 1))


def _n_channels(graph, override):
    if override is not None:
        return int(override)
    for _, _, data in graph.edges(data=True):
        fits = data.get("fits")
        if fits:
            return len(fits)
    for node in graph.nodes:
        tile = graph.nodes[node].get("tile")
        if tile is not None:
            try:
                return int(tile.n_channels)
            except Exception:  # noqa: BLE001 - a tile that cannot load: decide elsewhere
                continue
    return 1


# --------------------------------------------------------------------------- gains


def _spanning_tree_init(n_nodes, ref_local, e_src, e_dst, logratio, sig):
    """Log-gains propagated from the reference along a maximum spanning tree.

    The tree maximises the summed edge weights ``1 / sigma^2`` (Kruskal);
    it is computed as the *minimum* spanning tree of ``sigma^2`` (the same
    tree: only the order of the weights matters) with
    :func:`scipy.sparse.csgraph.minimum_spanning_tree`, about 30 times faster
    than :func:`networkx.maximum_spanning_tree` on 10^4 nodes.

    Returns an array of log-gains (NaN where no tree path exists).
    """
    out = np.full(n_nodes, np.nan)
    out[ref_local] = 0.0
    if len(e_src) == 0:
        return out
    cost = np.maximum(np.asarray(sig, float) ** 2, 1e-300)
    graph = sp.coo_matrix((cost, (e_src, e_dst)), shape=(n_nodes, n_nodes)).tocsr()
    tree = csgraph.minimum_spanning_tree(graph)
    order, pred = csgraph.breadth_first_order(tree, ref_local, directed=False,
                                              return_predecessors=True)
    # signed log ratio per ordered pair: l_s - l_d = lr
    step = {}
    for s_, d_, lr in zip(e_src.tolist(), e_dst.tolist(), np.asarray(logratio).tolist()):
        step[(s_, d_)] = lr
        step[(d_, s_)] = -lr
    for node in order[1:].tolist():
        parent = int(pred[node])
        out[node] = out[parent] - step[(parent, node)]
    return out


def _solve_log_gains(nodes_local, ref_local, edges, logratio, sig, *, iterations, solver):
    """Robust log-gains of one connected set of nodes (reference fixed at 0).

    ``edges``: (k, 2) local node indices (src, dst); ``logratio``: log a.
    Returns log-gains, their variance, robust weights, info.
    """
    n = nodes_local
    free = np.ones(n, dtype=bool)
    free[ref_local] = False
    col = np.cumsum(free) - 1
    k = edges.shape[0]
    init = _spanning_tree_init(n, ref_local, edges[:, 0], edges[:, 1], logratio, sig)
    rows, cols, vals = [], [], []
    for side, sign in ((0, 1.0), (1, -1.0)):
        nodes = edges[:, side]
        keep = free[nodes]
        rows.append(np.nonzero(keep)[0])
        cols.append(col[nodes[keep]])
        vals.append(np.full(keep.sum(), sign))
    design = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(k, n - 1))
    x0 = init[free]
    x0 = np.where(np.isfinite(x0), x0, 0.0)
    x, robust, info = irls(design, logratio, sig, iterations=iterations, x0=x0,
                           solver=solver)
    var, method = diag_inverse(info["weights"], design, None, n - 1)
    scale = max(1.0, info["scale"].get(0, 1.0))
    out = np.zeros(n)
    out[free] = x
    v = np.zeros(n)
    v[free] = var * scale ** 2
    info["method"] = method
    info["tree"] = init
    return out, v, robust, info


# --------------------------------------------------------------------------- main entry


def solve_global_photometry(graph, *, model="offset", origin=(0.0, 0.0), reference=None,
                            irls_iterations=6, solver="direct", joint="auto", gain_prior=0.05,
                            n_channels=None):
    """Solve per-node gain, offset (and plane) corrections over an overlap graph.

    Parameters
    ----------
    graph : networkx.Graph
        Overlap graph from :func:`photometry_graph.photometry.overlap.build_tile_overlap_graph`
        with ``fits`` filled by ``fit_overlap_edges``: nodes carry ``bbox``
        (node centres for the internal parametrisation); edges ``src``,
        ``dst``, ``bbox``, ``n_valid`` and ``fits`` (one PairwiseFit-like
        object per channel with ``status``, ``a``, ``sigma_a``, ``centroid``,
        ``x_mean``, ``y_mean``, ``x_slope``, ``y_slope``, ``sigma_x_mean``,
        ``sigma_y_mean``).  Not modified.
    model : {"offset", "plane"}
        ``"plane"`` also solves per-node slopes ``(d/dx, d/dy)``.
    origin : tuple of float
        ``(x, y)`` global origin of the plane term of the corrections.
    reference : node id or iterable of node ids, optional
        Reference node(s), at most one per connected component; the others
        are chosen automatically (:func:`select_reference`: most gain edges,
        most connected, most overlap pixels, most central, smallest id).
    irls_iterations : int
        Robust reweighting iterations (0 = plain weighted least squares).
    solver : {"direct", "lsqr"}
        Normal equations with a sparse LU factorisation (default), or
        ``scipy.sparse.linalg.lsqr`` started from the spanning-tree solution.
    joint : {"auto", True, False}
        Joint refinement of gains with offsets through the overlap moments:
        ``"auto"`` runs it for a component and channel where some node has
        no usable gain edge.
    gain_prior : float
        Sigma (in log-gain) of the prior that keeps a node without gain
        edges near its neighbours' gain during the joint refinement.
    n_channels : int, optional
        Number of channels when no edge carries fits.

    Returns
    -------
    PhotometrySolution

    Raises
    ------
    TypeError, ValueError
        Bad arguments only (not a graph, empty graph, unknown model or
        solver, unknown reference, two references in one component).

    Examples
    --------
    >>> import networkx as nx
    >>> from types import SimpleNamespace
    >>> from photometry_graph.core.tiles import BBox
    >>> g = nx.Graph()
    >>> g.add_node(0, bbox=BBox(0, 10, 0, 10)); g.add_node(1, bbox=BBox(0, 10, 8, 18))
    >>> fit = SimpleNamespace(src=0, dst=1, status="ok", a=2.0, sigma_a=0.01,
    ...     centroid=(8.5, 4.5), x_mean=10.0, y_mean=25.0, x_slope=(0, 0),
    ...     y_slope=(0, 0), sigma_x_mean=0.1, sigma_y_mean=0.1)
    >>> g.add_edge(0, 1, src=0, dst=1, bbox=BBox(0, 10, 8, 10), n_valid=20, fits=[fit])
    >>> sol = solve_global_photometry(g, reference=1)
    >>> round(float(sol.corrections[0].gain[0]), 6), round(float(sol.corrections[0].offset[0]), 6)
    (2.0, 5.0)
    """
    t_start = time.perf_counter()
    if not isinstance(graph, nx.Graph) or graph.is_directed():
        raise TypeError(f"graph must be an undirected networkx.Graph, got {type(graph).__name__}")
    if graph.number_of_nodes() == 0:
        raise ValueError("the overlap graph has no nodes; build it from at least one tile")
    if model not in SOLVE_MODELS:
        raise ValueError(f"model must be one of {SOLVE_MODELS}, got {model!r}")
    if joint not in (True, False, "auto"):
        raise ValueError(f"joint must be True, False or 'auto', got {joint!r}")
    if not gain_prior > 0:
        raise ValueError(f"gain_prior must be positive, got {gain_prior!r}")
    if solver not in ("direct", "lsqr"):
        raise ValueError(f"solver must be 'direct' or 'lsqr', got {solver!r}")
    if int(irls_iterations) != irls_iterations or irls_iterations < 0:
        raise ValueError(f"irls_iterations must be a non-negative integer, got "
                         f"{irls_iterations!r}")
    origin = _valid_origin(origin)

    tile_ids = _sorted_ids(graph.nodes)
    index = {t: k for k, t in enumerate(tile_ids)}
    n = len(tile_ids)
    C = _n_channels(graph, n_channels)
    table = collect_edges(graph, index, C)
    if table.n_missing:
        grid_warning(logger, "Photometry: %d edge(s) carry no pairwise fits; treated as failed "
                     "(run fit_overlap_edges first)", table.n_missing)

    # components over edges with at least one usable channel
    usable = (table.status != STATUS_FAILED).any(axis=1)
    adj = sp.coo_matrix((np.ones(usable.sum()), (table.src[usable], table.dst[usable])),
                        shape=(n, n))
    n_comp, labels = csgraph.connected_components(adj, directed=False)
    comps = [np.nonzero(labels == c)[0] for c in range(n_comp)]
    comps.sort(key=lambda idx: (-len(idx), idx.min()))

    refs_given = _normalise_references(reference, index)
    degree = (np.bincount(table.src[usable], minlength=n)
              + np.bincount(table.dst[usable], minlength=n))
    has_gain = (table.status == STATUS_OK).any(axis=1)
    gain_degree = (np.bincount(table.src[has_gain], minlength=n)
                   + np.bincount(table.dst[has_gain], minlength=n))
    pix = (np.bincount(table.src[usable], weights=table.pixels[usable], minlength=n)
           + np.bincount(table.dst[usable], weights=table.pixels[usable], minlength=n))
    centers = np.zeros((n, 2))
    sizes = np.ones(n)
    for k, t in enumerate(tile_ids):
        centers[k], sizes[k] = _node_center(graph, t)
    references = []
    for idx in comps:
        members = set(idx.tolist())
        given = [r for r in refs_given if index[r] in members]
        if len(given) > 1:
            raise ValueError(f"references {given} lie in the same connected component; "
                             "give at most one reference per component")
        if given:
            references.append(given[0])
        else:
            references.append(tile_ids[_best_reference(idx, degree, pix, centers,
                                                        gain_degree)])
    length = float(np.median(sizes)) if n else 1.0

    gains = np.ones((n, C))
    offsets = np.zeros((n, C))
    slopes = np.zeros((n, C, 2))
    gain_err = np.full((n, C), np.nan)
    off_err = np.full((n, C), np.nan)
    off_err_c = np.full((n, C), np.nan)
    slope_err = np.full((n, C, 2), np.nan)
    status = np.array(["solved"] * n, dtype=object)
    m = len(table.keys)
    gain_w = np.full((m, C), np.nan)
    off_w = np.full((m, C), np.nan)
    info = {"iterations_gain": [], "iterations_offset": [], "scale_gain": [],
            "scale_offset": [], "gain_from_neighbours": 0, "gain_set_to_one": 0,
            "uncertainty_method": "exact"}
    n_failed_components = 0

    if n_comp > 1:
        grid_warning(logger, "Photometry: the overlap graph has %d disconnected components; "
                     "each is solved with its own reference (references: %s)", n_comp,
                     ", ".join(str(r) for r in references))

    for idx, ref in zip(comps, references):
        ref_k = index[ref]
        status[ref_k] = "reference"
        gains[ref_k] = 1.0
        gain_err[ref_k] = off_err[ref_k] = off_err_c[ref_k] = 0.0
        slope_err[ref_k] = 0.0
        if len(idx) == 1:
            has_edges = graph.degree(ref) > 0
            if has_edges:
                status[ref_k] = "fallback"
                gain_err[ref_k] = off_err[ref_k] = off_err_c[ref_k] = np.nan
                slope_err[ref_k] = np.nan
                grid_warning(logger, "Photometry: tile %s has no usable overlap relation "
                             "(all its fits failed); identity correction", ref)
            continue
        try:
            res = _solve_component(table, idx, ref_k, centers, length, C, model, origin,
                                   irls_iterations, solver, info, joint=joint,
                                   gain_prior=gain_prior)
        except (RuntimeError, ValueError, np.linalg.LinAlgError, ArithmeticError) as exc:
            n_failed_components += 1
            grid_warning(logger, "Photometry: global solve failed for the component of "
                         "reference %s (%d tiles): %s; identity corrections (fallback)",
                         ref, len(idx), exc)
            for k in idx:
                if k != ref_k:
                    status[k] = "fallback"
            continue
        for key, arr in (("gain", gains), ("offset", offsets), ("slope", slopes),
                         ("gain_err", gain_err), ("offset_err", off_err),
                         ("offset_err_center", off_err_c), ("slope_err", slope_err)):
            arr[idx] = res[key][idx]
        for k in res["fallback_nodes"]:
            status[k] = "fallback"
        rows = res["edge_rows"]
        gain_w[rows] = res["gain_w"][rows]
        off_w[rows] = res["off_w"][rows]

    corrections = {}
    for k, t in enumerate(tile_ids):
        if status[k] == "fallback":
            gains[k], offsets[k], slopes[k] = 1.0, 0.0, 0.0
            gain_err[k] = off_err[k] = off_err_c[k] = np.nan
            slope_err[k] = np.nan
        corrections[t] = Correction(gains[k].copy(), offsets[k].copy(),
                                    slope=slopes[k].copy() if model == "plane" else None,
                                    origin=origin, gain_err=gain_err[k].copy(),
                                    offset_err=off_err[k].copy(), status=str(status[k]))

    edge_res = edge_residuals(table, gains, offsets, slopes, origin)
    edge_res["gain_weight"] = gain_w
    edge_res["offset_weight"] = off_w
    summary = summarise(edge_res)

    n_fallback = int(np.sum(status == "fallback"))
    n_solved = n - n_fallback
    n_nonref_solved = int(np.sum(status == "solved"))
    if n > len(references) and n_nonref_solved == 0:
        sol_status = "failed"
    elif n_fallback or info["gain_set_to_one"] or n_failed_components:
        sol_status = "partial"
    else:
        sol_status = "ok"
    if n == 1:
        message = "single node: identity correction"
    else:
        message = (f"{n_solved} of {n} tiles solved in {n_comp} component(s); "
                   f"{n_fallback} fallback(s)")
        if info["gain_from_neighbours"]:
            message += f"; {info['gain_from_neighbours']} gain(s) from neighbours"
    grid_info(logger, "Photometry: solved global gain/offset for %d tiles", n_solved)
    grid_info(logger, "Photometry: edge offset residual |median| %.4g / max %.4g before, "
              "%.4g / %.4g after; gain-ratio residual %.3g / %.3g before, %.3g / %.3g after",
              summary["offset_before_median"], summary["offset_before_max"],
              summary["offset_after_median"], summary["offset_after_max"],
              summary["gain_before_median"], summary["gain_before_max"],
              summary["gain_after_median"], summary["gain_after_max"])
    info["time_s"] = time.perf_counter() - t_start
    info["n_edges"] = m
    info["n_components"] = n_comp
    info["n_fallback"] = n_fallback
    info["scale_length"] = length
    return PhotometrySolution(
        corrections=corrections, references=references,
        components=[[tile_ids[k] for k in idx] for idx in comps], tile_ids=tile_ids,
        gains=gains, offsets=offsets, slopes=slopes, gain_err=gain_err, offset_err=off_err,
        slope_err=slope_err, offset_err_center=off_err_c, edge_residuals=edge_res,
        summary=summary, status=sol_status, message=message, model=model, origin=origin,
        uncertainty_method=info["uncertainty_method"], info=info)


def _normalise_references(reference, index):
    if reference is None:
        return []
    if isinstance(reference, (str, bytes)) or not np.iterable(reference):
        refs = [reference]
    else:
        refs = list(reference)
    for r in refs:
        if r not in index:
            raise ValueError(f"reference {r!r} is not a node of the overlap graph")
    return refs


def _solve_component(table, idx, ref_k, centers, length, C, model, origin, iterations,
                     solver, info, joint="auto", gain_prior=0.05):
    """Solve one connected component, every channel; raises on numerical failure.

    Returns arrays over all nodes (only the rows ``idx`` are meaningful).
    """
    n_all = centers.shape[0]
    in_comp = np.zeros(n_all, dtype=bool)
    in_comp[idx] = True
    edge_rows = np.nonzero(in_comp[table.src] & in_comp[table.dst])[0]
    local = np.full(n_all, -1, dtype=np.int64)
    local[idx] = np.arange(len(idx))
    nl = len(idx)
    ref_l = int(local[ref_k])
    m = len(table.keys)
    res = {"gain": np.ones((n_all, C)), "offset": np.zeros((n_all, C)),
           "slope": np.zeros((n_all, C, 2)), "gain_err": np.zeros((n_all, C)),
           "offset_err": np.zeros((n_all, C)), "offset_err_center": np.zeros((n_all, C)),
           "slope_err": np.zeros((n_all, C, 2)), "gain_w": np.full((m, C), np.nan),
           "off_w": np.full((m, C), np.nan), "edge_rows": edge_rows}
    fallback = set()
    es, ed = local[table.src[edge_rows]], local[table.dst[edge_rows]]
    cen = centers[idx]
    org = np.asarray(origin, dtype=float)
    for c in range(C):
        st = table.status[edge_rows, c]
        usable = st != STATUS_FAILED
        reach = _reachable(nl, ref_l, es[usable], ed[usable])
        if not reach.all():
            lost = idx[~reach]
            grid_warning(logger, "Photometry: channel %d: %d tile(s) have no usable relation "
                         "to the reference in this channel; identity correction", c, len(lost))
            fallback.update(lost.tolist())
            usable &= reach[es] & reach[ed]
        # ---- gains (log-linear, "ok" edges only)
        ok = (st == STATUS_OK) & usable
        logg, var_logg, w_gain = _gains_for_channel(
            nl, ref_l, es, ed, ok, usable, table, edge_rows, c, iterations, solver, info, reach)
        res["gain_w"][edge_rows[ok], c] = w_gain
        g = np.exp(logg)
        # ---- offsets and planes (linear once gains are known)
        o_t, p_t, var_o, var_p, w_off = _offsets_for_channel(
            nl, ref_l, es[usable], ed[usable], table, edge_rows[usable], c, g, cen, length,
            model, iterations, solver, info, reach)
        res["off_w"][edge_rows[usable], c] = w_off
        blind = reach & ~np.isfinite(var_logg)
        if joint is True or (joint == "auto" and blind.any()):
            logg, o_t, p_t, var_logg, var_o, var_p, w_gain, w_off = _joint_refine(
                nl, ref_l, es, ed, ok, usable, table, edge_rows, c, logg, var_logg, o_t, p_t,
                cen, length, model, iterations, gain_prior, info, reach)
            info["joint_refined"] = info.get("joint_refined", 0) + 1
            res["gain_w"][edge_rows[ok], c] = w_gain
            res["off_w"][edge_rows[usable], c] = w_off
            g = np.exp(logg)
        p = p_t / length
        d = cen - org
        res["gain"][idx, c] = g
        res["gain_err"][idx, c] = g * np.sqrt(var_logg)
        res["slope"][idx, c] = p
        res["slope_err"][idx, c] = np.sqrt(var_p) / length
        res["offset"][idx, c] = o_t - (p * d).sum(axis=1)
        res["offset_err_center"][idx, c] = np.sqrt(var_o)
        res["offset_err"][idx, c] = np.sqrt(var_o + (var_p / length ** 2 * d ** 2).sum(axis=1))
    res["fallback_nodes"] = sorted(fallback)
    return res


def _reachable(n, ref, e_src, e_dst):
    """Nodes connected to ``ref`` by the given edges (local indices)."""
    if n == 1 or len(e_src) == 0:
        out = np.zeros(n, dtype=bool)
        out[ref] = True
        return out
    adj = sp.coo_matrix((np.ones(len(e_src)), (e_src, e_dst)), shape=(n, n))
    _, lab = csgraph.connected_components(adj, directed=False)
    return lab == lab[ref]


def _gains_for_channel(nl, ref_l, es, ed, ok, usable, table, edge_rows, c, iterations,
                       solver, info, reach):
    """Log-gains of one component and channel.

    Groups of nodes linked by "ok" edges are solved separately; the group of
    the reference is anchored at log g = 0, other groups (and lone nodes) are
    levelled on their already-solved neighbours through their remaining
    (offset-only) edges, else set to gain 1.
    """
    logg = np.zeros(nl)
    var = np.full(nl, np.nan)
    var[ref_l] = 0.0
    rows_ok = edge_rows[ok]
    lr = np.log(table.a[rows_ok, c])
    sig = clean_sigma(table.sig_loga[rows_ok, c], np.ones(len(rows_ok), dtype=bool), 1e-3)
    s_ok, d_ok = es[ok], ed[ok]
    weights = np.ones(len(rows_ok))
    if len(rows_ok):
        adj = sp.coo_matrix((np.ones(len(rows_ok)), (s_ok, d_ok)), shape=(nl, nl))
        n_groups, lab = csgraph.connected_components(adj, directed=False)
    else:
        n_groups, lab = nl, np.arange(nl)
    assigned = np.zeros(nl, dtype=bool)
    for gidx in range(n_groups):
        members = np.nonzero(lab == gidx)[0]
        if not reach[members].any():
            continue
        sel = (lab[s_ok] == gidx)
        if len(members) == 1:
            continue
        if ref_l in members:
            anchor = ref_l
        else:  # provisional anchor: the member with most gain edges
            counts = np.bincount(np.concatenate([s_ok[sel], d_ok[sel]]), minlength=nl)
            anchor = int(members[np.argmax(counts[members])])
        loc = np.full(nl, -1, dtype=np.int64)
        loc[members] = np.arange(len(members))
        edges = np.column_stack([loc[s_ok[sel]], loc[d_ok[sel]]])
        x, v, robust, sinfo = _solve_log_gains(len(members), int(loc[anchor]), edges,
                                               lr[sel], sig[sel], iterations=iterations,
                                               solver=solver)
        logg[members] = x
        var[members] = v
        weights[sel] = robust
        info["iterations_gain"].append(sinfo["iterations"])
        info["scale_gain"].append(sinfo["scale"].get(0, np.nan))
        if sinfo["method"] == "diagonal":
            info["uncertainty_method"] = "diagonal"
        if ref_l in members:
            assigned[members] = True
    if not assigned[ref_l]:
        assigned[ref_l] = True
    # level the other groups on their solved neighbours (any usable edge)
    pending = {g for g in range(n_groups) if not assigned[lab == g].any()
               and reach[lab == g].any()}
    su, du = es[usable], ed[usable]
    while pending:
        progress = False
        for gidx in sorted(pending):
            members = lab == gidx
            link_a = members[su] & assigned[du]
            link_b = members[du] & assigned[su]
            if not (link_a.any() or link_b.any()):
                continue
            steps = np.concatenate([logg[du[link_a]] - logg[su[link_a]],
                                    logg[su[link_b]] - logg[du[link_b]]])
            logg[members] += float(np.mean(steps))
            var[members] = np.nan
            assigned[members] = True
            info["gain_from_neighbours"] += int(members.sum())
            pending.discard(gidx)
            progress = True
        if not progress:
            break
    if pending:
        left = int(sum((lab == g).sum() for g in pending))
        info["gain_set_to_one"] += left
        for g in pending:
            logg[lab == g] = 0.0
        grid_warning(logger, "Photometry: channel %d: %d tile(s) have no gain relation to "
                     "any solved tile; gain set to 1", c, left)
    n_neigh = int(np.sum(assigned & ~np.isfinite(var)))
    if n_neigh:
        grid_warning(logger, "Photometry: channel %d: %d tile(s) have no usable gain edge "
                     "(offset-only overlaps); gain taken from their neighbours", c, n_neigh)
    return logg, var, weights


def _offsets_for_channel(nl, ref_l, es, ed, table, rows, c, g, cen, length, model,
                         iterations, solver, info, reach):
    """Offsets at node centres (and scaled slopes) of one component and channel."""
    plane = model == "plane"
    npar = 3 if plane else 1
    free = reach.copy()
    free[ref_l] = False
    col = np.full(nl, -1, dtype=np.int64)
    col[free] = np.arange(free.sum())
    nfree = int(free.sum())
    k = len(rows)
    xm, ym = table.xm[rows, c], table.ym[rows, c]
    sxm, sym = table.sxm[rows, c], table.sym[rows, c]
    gi, gj = g[es], g[ed]
    rhs_o = gj * ym - gi * xm
    with np.errstate(invalid="ignore"):
        sig_o = np.sqrt((gj * sym) ** 2 + (gi * sxm) ** 2)
    sig_o = clean_sigma(sig_o, np.ones(k, dtype=bool), 1e-2)
    centroid = table.centroid[rows, c]
    r_i, c_i, v_i = [], [], []
    row_id = np.arange(k)
    for nodes, sign in ((es, 1.0), (ed, -1.0)):
        keep = free[nodes]
        base = col[nodes[keep]] * npar
        r_i.append(row_id[keep]); c_i.append(base); v_i.append(np.full(keep.sum(), sign))
        if plane:
            dd = (centroid[keep] - cen[nodes[keep]]) / length
            for ax in range(2):
                r_i.append(row_id[keep]); c_i.append(base + 1 + ax)
                v_i.append(sign * dd[:, ax])
    rhs = [rhs_o]
    sig = [sig_o]
    groups = [np.zeros(k, dtype=np.int64)]
    n_rows = k
    if plane:
        xs, ys = table.xs[rows, c], table.ys[rows, c]
        for ax in range(2):
            val = length * (gj * ys[:, ax] - gi * xs[:, ax])
            good = np.isfinite(val)
            ext = table.extent[rows, ax]
            s_ax = sig_o * np.sqrt(12.0) / ext * length
            rid = n_rows + np.arange(good.sum())
            idx_good = np.nonzero(good)[0]
            for nodes, sign in ((es, 1.0), (ed, -1.0)):
                nn = nodes[idx_good]
                keep = free[nn]
                r_i.append(rid[keep]); c_i.append(col[nn[keep]] * npar + 1 + ax)
                v_i.append(np.full(keep.sum(), sign))
            rhs.append(val[good]); sig.append(s_ax[good])
            groups.append(np.full(good.sum(), 1 + ax, dtype=np.int64))
            n_rows += int(good.sum())
    design = sp.csr_matrix((np.concatenate(v_i), (np.concatenate(r_i), np.concatenate(c_i))),
                           shape=(n_rows, nfree * npar))
    rhs = np.concatenate(rhs)
    sig = np.concatenate(sig)
    groups = np.concatenate(groups)
    ridge = None
    if plane:  # a whisper of regularisation keeps leaf nodes without slope rows solvable
        ridge = np.zeros(nfree * npar)
        ridge[np.arange(nfree) * npar + 1] = ridge[np.arange(nfree) * npar + 2] = (
            1e-12 * float(np.median(1.0 / sig_o ** 2)))
    x, robust, sinfo = irls(design, rhs, sig, iterations=iterations, groups=groups,
                            ridge=ridge, solver=solver)
    var, method = diag_inverse(sinfo["weights"], design, ridge, nfree * npar)
    if method == "diagonal":
        info["uncertainty_method"] = "diagonal"
    scale = {gk: max(1.0, v) for gk, v in sinfo["scale"].items()}
    var = var * scale.get(0, 1.0) ** 2
    info["iterations_offset"].append(sinfo["iterations"])
    info["scale_offset"].append(sinfo["scale"].get(0, np.nan))
    o_t = np.zeros(nl)
    p_t = np.zeros((nl, 2))
    var_o = np.zeros(nl)
    var_p = np.zeros((nl, 2))
    sol = x.reshape(nfree, npar)
    vv = var.reshape(nfree, npar)
    o_t[free] = sol[:, 0]
    var_o[free] = vv[:, 0]
    if plane:
        p_t[free] = sol[:, 1:]
        var_p[free] = vv[:, 1:]
    var_o[~reach] = np.nan
    var_p[~reach] = np.nan
    return o_t, p_t, var_o, var_p, robust[:k]


def _joint_refine(nl, ref_l, es, ed, ok, usable, table, edge_rows, c, logg, var_logg, o_t, p_t,
                  cen, length, model, iterations, gain_prior, info, reach):
    """Joint robust Gauss-Newton refinement of log-gains, offsets (and planes).

    The separate solves use the gain ratios ``a`` for the gains and the
    moments only for the offsets.  But the moments constrain the gains too:
    an edge asks ``g_i x_mean + O_i(c) = g_j y_mean + O_j(c)``, and a node's
    overlaps sit at different sky levels (extended emission), so its gain is
    also the slope of a line through its overlaps' moments.  This step
    minimises the robust weighted sum over the gain rows (``log a``), the
    moment rows and the plane rows together, starting from the separate
    solution (which it only refines; a few Gauss-Newton steps, each with
    Huber, then Tukey weights per kind of row).  Nodes whose gain came from
    their neighbours keep a weak prior ``log g = log g0`` (sigma
    ``gain_prior``): on flat sky the moments cannot tell a gain from an
    offset.
    """
    plane = model == "plane"
    npar = 4 if plane else 2
    free = reach.copy()
    free[ref_l] = False
    col = np.full(nl, -1, dtype=np.int64)
    col[free] = np.arange(free.sum())
    nfree = int(free.sum())
    if nfree == 0:
        return (logg, o_t, p_t, var_logg, np.zeros(nl), np.zeros((nl, 2)),
                np.ones(int(ok.sum())), np.ones(int(usable.sum())))
    x = np.zeros(nfree * npar)
    fi = np.nonzero(free)[0]
    x[col[fi] * npar] = logg[fi]
    x[col[fi] * npar + 1] = o_t[fi]
    if plane:
        x[col[fi] * npar + 2] = p_t[fi, 0]
        x[col[fi] * npar + 3] = p_t[fi, 1]
    prior_nodes = fi[~np.isfinite(var_logg[fi])]
    prior_val = logg[prior_nodes].copy()

    # static edge data
    rows_g = edge_rows[ok]
    gs, gd = es[ok], ed[ok]
    lr = np.log(table.a[rows_g, c])
    sig_g = clean_sigma(table.sig_loga[rows_g, c], np.ones(len(rows_g), dtype=bool), 1e-3)
    rows_o = edge_rows[usable]
    os_, od = es[usable], ed[usable]
    xm, ym = table.xm[rows_o, c], table.ym[rows_o, c]
    sxm, sym = table.sxm[rows_o, c], table.sym[rows_o, c]
    cent = table.centroid[rows_o, c]
    di = (cent - cen[os_]) / length
    dj = (cent - cen[od]) / length
    if plane:
        xs, ys = table.xs[rows_o, c] * length, table.ys[rows_o, c] * length
        ext = table.extent[rows_o] / length
        slope_ok = np.isfinite(xs) & np.isfinite(ys)
    ko, kg = len(rows_o), len(rows_g)

    def unpack(vec):
        lg = np.zeros(nl)
        ot = np.zeros(nl)
        pt = np.zeros((nl, 2))
        lg[fi] = vec[col[fi] * npar]
        ot[fi] = vec[col[fi] * npar + 1]
        if plane:
            pt[fi, 0] = vec[col[fi] * npar + 2]
            pt[fi, 1] = vec[col[fi] * npar + 3]
        return lg, ot, pt

    def system(vec):
        """Residuals, sigmas, groups and the sparse Jacobian at ``vec``."""
        lg, ot, pt = unpack(vec)
        g = np.exp(lg)
        R, S, Gp, rr, cc, vv = [], [], [], [], [], []
        n_rows = 0

        def add(rows_idx, nodes, par, values):
            keep = free[nodes]
            rr.append(rows_idx[keep])
            cc.append(col[nodes[keep]] * npar + par)
            vv.append(np.broadcast_to(values, nodes.shape)[keep])

        # gain rows
        rid = np.arange(kg) + n_rows
        R.append(lg[gs] - lg[gd] - lr)
        S.append(sig_g)
        Gp.append(np.zeros(kg, dtype=np.int64))
        add(rid, gs, 0, 1.0)
        add(rid, gd, 0, -1.0)
        n_rows += kg
        # moment rows
        rid = np.arange(ko) + n_rows
        gi, gj = g[os_], g[od]
        r = gi * xm - gj * ym + ot[os_] - ot[od]
        if plane:
            r = r + (pt[os_] * di).sum(axis=1) - (pt[od] * dj).sum(axis=1)
        with np.errstate(invalid="ignore"):
            so = np.sqrt((gj * sym) ** 2 + (gi * sxm) ** 2)
        so = clean_sigma(so, np.ones(ko, dtype=bool), 1e-2)
        R.append(r)
        S.append(so)
        Gp.append(np.ones(ko, dtype=np.int64))
        add(rid, os_, 0, gi * xm)
        add(rid, od, 0, -gj * ym)
        add(rid, os_, 1, 1.0)
        add(rid, od, 1, -1.0)
        if plane:
            for ax in range(2):
                add(rid, os_, 2 + ax, di[:, ax])
                add(rid, od, 2 + ax, -dj[:, ax])
        n_rows += ko
        if plane:
            for ax in range(2):
                sel = np.nonzero(slope_ok[:, ax])[0]
                rid = np.arange(len(sel)) + n_rows
                a_s, a_d = os_[sel], od[sel]
                R.append(g[a_s] * xs[sel, ax] - g[a_d] * ys[sel, ax] + pt[a_s, ax] - pt[a_d, ax])
                S.append(so[sel] * np.sqrt(12.0) / ext[sel, ax])
                Gp.append(np.full(len(sel), 2 + ax, dtype=np.int64))
                add(rid, a_s, 0, g[a_s] * xs[sel, ax])
                add(rid, a_d, 0, -g[a_d] * ys[sel, ax])
                add(rid, a_s, 2 + ax, 1.0)
                add(rid, a_d, 2 + ax, -1.0)
                n_rows += len(sel)
        if len(prior_nodes):
            rid = np.arange(len(prior_nodes)) + n_rows
            R.append(lg[prior_nodes] - prior_val)
            S.append(np.full(len(prior_nodes), float(gain_prior)))
            Gp.append(np.full(len(prior_nodes), 4, dtype=np.int64))
            add(rid, prior_nodes, 0, 1.0)
            n_rows += len(prior_nodes)
        J = sp.csr_matrix((np.concatenate(vv).astype(float),
                           (np.concatenate(rr), np.concatenate(cc))),
                          shape=(n_rows, nfree * npar))
        return np.concatenate(R), np.concatenate(S), np.concatenate(Gp), J

    ridge = None
    if plane:
        ridge = np.zeros(nfree * npar)
        base = np.arange(nfree) * npar
        ridge[base + 2] = ridge[base + 3] = 1e-12 * float(np.median(1.0 / 1e-2 ** 2))
    robust = None
    lu = None
    n_it = 0
    n_steps = max(int(iterations), 5)
    for it in range(n_steps + 1):
        r, sig, groups, J = system(x)
        z = r / sig
        if robust is None:
            # variance component of each kind of row, once, from the separate solution
            # (the start point): the sigmas of a kind may all be off by a factor, and the
            # relative weight of gain and moment rows depends on it.  Re-estimating it
            # while iterating would feed back (the moment rows' residuals shrink as their
            # weight grows), so it stays fixed; the counts correct for fitted unknowns.
            robust = np.ones(len(r))
            vscale = np.ones(len(r))
            owned = {0: nfree, 1: nfree * (npar - 1)}
            for gk in np.unique(groups):
                sel = groups == gk
                if gk == 4:
                    continue
                m_g = int(sel.sum())
                dof = max(m_g - owned.get(int(gk), 0), 1)
                s_g = MAD_TO_SIGMA * float(np.median(np.abs(z[sel]))) * math.sqrt(m_g / dof)
                vscale[sel] = max(s_g, 1e-3)
            info.setdefault("variance_components", []).append(
                {int(gk): float(vscale[groups == gk][0]) for gk in np.unique(groups)})
        elif iterations > 0:
            for gk in np.unique(groups):
                sel = groups == gk
                if gk == 4:  # priors are neither rescaled nor robustified
                    continue
                robust[sel] = robust_weights(z[sel] / vscale[sel],
                                             "huber" if it < 2 else "tukey")
        w = robust / (vscale * sig) ** 2
        normal = normal_matrix(J, w, ridge)
        delta, lu = resolve(normal, -(J.T @ (w * r)), None if lu is None else
                            np.zeros(normal.shape[0]), lu)
        x = x + delta
        n_it = it + 1
        if it >= 3 and np.max(np.abs(delta)) <= 1e-10 * (1.0 + np.max(np.abs(x))):
            break
    r, sig, groups, J = system(x)
    w = robust / (vscale * sig) ** 2
    var, method = diag_inverse(w, J, ridge, nfree * npar)
    if method == "diagonal":
        info["uncertainty_method"] = "diagonal"
    z = r / sig
    for gk in (0, 1):
        sel = groups == gk
        if sel.any():
            scale = max(1.0, 1.4826 * float(np.median(np.abs(z[sel]))))
            info.setdefault("scale_joint", []).append(scale)
    scale_all = max(1.0, 1.4826 * float(np.median(np.abs(z[groups == 1])))) if ko else 1.0
    var = var * scale_all ** 2
    info.setdefault("iterations_joint", []).append(n_it)
    lg, ot, pt = unpack(x)
    vv = var.reshape(nfree, npar)
    var_l = np.zeros(nl)
    var_o = np.zeros(nl)
    var_p = np.zeros((nl, 2))
    var_l[fi] = vv[:, 0]
    var_o[fi] = vv[:, 1]
    if plane:
        var_p[fi] = vv[:, 2:]
    for arr in (var_l, var_o):
        arr[~reach] = np.nan
    var_p[~reach] = np.nan
    return lg, ot, pt, var_l, var_o, var_p, robust[:kg], robust[kg:kg + ko]
