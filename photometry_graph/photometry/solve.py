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

1. the edges become arrays (:mod:`.edges`); the reference of each component
   (the most-connected node, counting the edges that carry a gain first;
   ties: most overlap pixels, then the most central, then the smallest id) is
   fixed at ``g = 1, o = 0, p = 0``;
2. log-gains are initialised along a maximum spanning tree from the
   reference, then refined by robust sparse weighted least squares
   (:mod:`.gains`, with the linear algebra of :mod:`.lsq`); nodes without a
   usable gain edge take their gain from their neighbours;
3. with the gains known, offsets (and planes) are linear: the same robust
   sparse least squares over every non-failed edge (:mod:`.offsets`);
4. (``joint="auto"``, the default) where some node has no usable gain edge,
   a joint robust Gauss-Newton refinement of gains, offsets and planes uses
   the overlap *moments* as gain information too (:mod:`.joint`).  When every
   node has gain edges the refinement is skipped by default: on the test
   surveys it did not improve the gains measurably (``joint=True`` forces it);
5. the gauge of the gradients (plane model).  Overlaps fix gradient *differences*
   only: adding one plane to every node's correction changes no overlap.  Fixing the
   reference's gradient (``gradient_gauge="reference"``) keeps the reference's own
   light-pollution gradient and spreads it over the whole mosaic as a tilt; the default
   (``"mean"``) shifts every gradient by the plane that makes their mean over the
   component's nodes zero -- the mean of many independent gradients, whose error
   shrinks like ``1 / sqrt(N)``.  The plane pivots on the reference's centre, so
   gains and offsets keep the reference (its correction is then that plane alone).
   Uncertainties stay relative to the reference.

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
from .._log import get_logger, graph_label, grid_info, grid_warning
from ..core.correction import Correction
from .edges import (STATUS_FAILED, STATUS_OK, collect_edges, edge_pixels, edge_residuals,
                    summarise_residuals)
from .gains import gains_for_channel
from .joint import joint_refine
from .offsets import offsets_for_channel

__all__ = ["PhotometrySolution", "solve_global_photometry", "select_reference",
           "SOLVE_MODELS", "GRADIENT_GAUGES"]

logger = get_logger(__name__)

SOLVE_MODELS = ("offset", "plane")
#: Possible values of ``gradient_gauge``: zero mean gradient over the nodes, or the
#: reference's gradient kept.
GRADIENT_GAUGES = ("mean", "reference")


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


# --------------------------------------------------------------------------- references


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


def _components(table, n):
    """Connected components over the edges with a usable channel, largest first.

    Returns the components (arrays of node indices) and the usable-edge mask.
    """
    usable = (table.status != STATUS_FAILED).any(axis=1)
    adj = sp.coo_matrix((np.ones(usable.sum()), (table.src[usable], table.dst[usable])),
                        shape=(n, n))
    n_comp, labels = csgraph.connected_components(adj, directed=False)
    comps = [np.nonzero(labels == c)[0] for c in range(n_comp)]
    comps.sort(key=lambda idx: (-len(idx), idx.min()))
    return comps, usable


def _choose_references(table, usable, comps, tile_ids, index, reference, centers):
    """Reference of each component: the given one, else :func:`_best_reference`."""
    n = len(tile_ids)
    refs_given = _normalise_references(reference, index)
    degree = (np.bincount(table.src[usable], minlength=n)
              + np.bincount(table.dst[usable], minlength=n))
    has_gain = (table.status == STATUS_OK).any(axis=1)
    gain_degree = (np.bincount(table.src[has_gain], minlength=n)
                   + np.bincount(table.dst[has_gain], minlength=n))
    pix = (np.bincount(table.src[usable], weights=table.pixels[usable], minlength=n)
           + np.bincount(table.dst[usable], weights=table.pixels[usable], minlength=n))
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
    return references


# --------------------------------------------------------------------------- main entry


@dataclass(frozen=True)
class _Settings:
    """Options of one call of :func:`solve_global_photometry` (validated)."""

    model: str
    origin: tuple
    iterations: int
    solver: str
    joint: object
    gain_prior: float
    gradient_gauge: str = "mean"


@dataclass
class _NodeResults:
    """Per-node (and per-edge weight) results, filled component by component."""

    gains: np.ndarray
    offsets: np.ndarray
    slopes: np.ndarray
    gain_err: np.ndarray
    offset_err: np.ndarray
    offset_err_center: np.ndarray
    slope_err: np.ndarray
    status: np.ndarray
    gain_weight: np.ndarray
    offset_weight: np.ndarray

    @classmethod
    def empty(cls, n, n_channels, n_edges):
        """Identity gains and offsets, NaN uncertainties and weights, status ``"solved"``."""
        C, m = n_channels, n_edges
        return cls(gains=np.ones((n, C)), offsets=np.zeros((n, C)), slopes=np.zeros((n, C, 2)),
                   gain_err=np.full((n, C), np.nan), offset_err=np.full((n, C), np.nan),
                   offset_err_center=np.full((n, C), np.nan),
                   slope_err=np.full((n, C, 2), np.nan),
                   status=np.array(["solved"] * n, dtype=object),
                   gain_weight=np.full((m, C), np.nan), offset_weight=np.full((m, C), np.nan))

    def set_errors(self, k, value):
        """Set every uncertainty of node ``k`` to ``value``."""
        self.gain_err[k] = self.offset_err[k] = self.offset_err_center[k] = value
        self.slope_err[k] = value

    def set_reference(self, k):
        """Node ``k`` is a reference: gain 1, zero uncertainties."""
        self.status[k] = "reference"
        self.gains[k] = 1.0
        self.set_errors(k, 0.0)

    def store(self, idx, res):
        """Copy the rows ``idx`` of a component solution (see :func:`_solve_component`)."""
        for key, arr in (("gain", self.gains), ("offset", self.offsets), ("slope", self.slopes),
                         ("gain_err", self.gain_err), ("offset_err", self.offset_err),
                         ("offset_err_center", self.offset_err_center),
                         ("slope_err", self.slope_err)):
            arr[idx] = res[key][idx]
        for k in res["fallback_nodes"]:
            self.status[k] = "fallback"
        rows = res["edge_rows"]
        self.gain_weight[rows] = res["gain_w"][rows]
        self.offset_weight[rows] = res["off_w"][rows]

    def corrections(self, tile_ids, model, origin):
        """One :class:`Correction` per node; fallback nodes are reset to identity first."""
        out = {}
        for k, t in enumerate(tile_ids):
            if self.status[k] == "fallback":
                self.gains[k], self.offsets[k], self.slopes[k] = 1.0, 0.0, 0.0
                self.set_errors(k, np.nan)
            out[t] = Correction(self.gains[k].copy(), self.offsets[k].copy(),
                                slope=self.slopes[k].copy() if model == "plane" else None,
                                origin=origin, gain_err=self.gain_err[k].copy(),
                                offset_err=self.offset_err[k].copy(), status=str(self.status[k]))
        return out


def _check_arguments(graph, model, joint, gain_prior, solver, irls_iterations, gradient_gauge):
    if not isinstance(graph, nx.Graph) or graph.is_directed():
        raise TypeError(f"graph must be an undirected networkx.Graph, got {type(graph).__name__}")
    if graph.number_of_nodes() == 0:
        raise ValueError("the overlap graph has no nodes; build it from at least one tile")
    if model not in SOLVE_MODELS:
        raise ValueError(f"model must be one of {SOLVE_MODELS}, got {model!r}")
    if gradient_gauge not in GRADIENT_GAUGES:
        raise ValueError(f"gradient_gauge must be one of {GRADIENT_GAUGES}, got "
                         f"{gradient_gauge!r}")
    if joint not in (True, False, "auto"):
        raise ValueError(f"joint must be True, False or 'auto', got {joint!r}")
    if not gain_prior > 0:
        raise ValueError(f"gain_prior must be positive, got {gain_prior!r}")
    if solver not in ("direct", "lsqr"):
        raise ValueError(f"solver must be 'direct' or 'lsqr', got {solver!r}")
    if int(irls_iterations) != irls_iterations or irls_iterations < 0:
        raise ValueError(f"irls_iterations must be a non-negative integer, got "
                         f"{irls_iterations!r}")


def _status_and_message(status, n_references, n_comp, n_failed_components, info):
    """Overall status and message of the solution, and the number of fallback nodes."""
    n = len(status)
    n_fallback = int(np.sum(status == "fallback"))
    n_solved = n - n_fallback
    n_nonref_solved = int(np.sum(status == "solved"))
    if n > n_references and n_nonref_solved == 0:
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
    return sol_status, message, n_fallback


def _log_summary(n_solved, summary, node_kind):
    stage, noun = graph_label(node_kind)
    grid_info(logger, f"{stage}: solved global gain/offset for %d {noun}s", n_solved)
    grid_info(logger, f"{stage}: edge offset residual |median| %.4g / max %.4g before, "
              "%.4g / %.4g after; gain-ratio residual %.3g / %.3g before, %.3g / %.3g after",
              summary["offset_before_median"], summary["offset_before_max"],
              summary["offset_after_median"], summary["offset_after_max"],
              summary["gain_before_median"], summary["gain_before_max"],
              summary["gain_after_median"], summary["gain_after_max"])


def solve_global_photometry(graph, *, model="offset", origin=(0.0, 0.0), reference=None,
                            irls_iterations=6, solver="direct", joint="auto", gain_prior=0.05,
                            n_channels=None, gradient_gauge="mean"):
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
    gradient_gauge : {"mean", "reference"}
        Plane model: the gradients of each component have zero mean over its nodes
        (default), or the reference keeps its own (see the module notes).

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
    _check_arguments(graph, model, joint, gain_prior, solver, irls_iterations, gradient_gauge)
    origin = _valid_origin(origin)
    settings = _Settings(model=model, origin=origin, iterations=irls_iterations, solver=solver,
                         joint=joint, gain_prior=gain_prior, gradient_gauge=gradient_gauge)

    tile_ids = _sorted_ids(graph.nodes)
    index = {t: k for k, t in enumerate(tile_ids)}
    n = len(tile_ids)
    C = _n_channels(graph, n_channels)
    table = collect_edges(graph, index, C)
    if table.n_missing:
        grid_warning(logger, "Photometry: %d edge(s) carry no pairwise fits; treated as failed "
                     "(run fit_overlap_edges first)", table.n_missing)

    # components over edges with at least one usable channel
    comps, usable = _components(table, n)
    n_comp = len(comps)
    centers = np.zeros((n, 2))
    sizes = np.ones(n)
    for k, t in enumerate(tile_ids):
        centers[k], sizes[k] = _node_center(graph, t)
    references = _choose_references(table, usable, comps, tile_ids, index, reference, centers)
    length = float(np.median(sizes)) if n else 1.0

    m = len(table.keys)
    nodes = _NodeResults.empty(n, C, m)
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
        nodes.set_reference(ref_k)
        if len(idx) == 1:
            if graph.degree(ref) > 0:
                nodes.status[ref_k] = "fallback"
                nodes.set_errors(ref_k, np.nan)
                grid_warning(logger, "Photometry: tile %s has no usable overlap relation "
                             "(all its fits failed); identity correction", ref)
            continue
        try:
            res = _solve_component(table, idx, ref_k, centers, length, settings, info)
        except (RuntimeError, ValueError, np.linalg.LinAlgError, ArithmeticError) as exc:
            n_failed_components += 1
            grid_warning(logger, "Photometry: global solve failed for the component of "
                         "reference %s (%d tiles): %s; identity corrections (fallback)",
                         ref, len(idx), exc)
            for k in idx:
                if k != ref_k:
                    nodes.status[k] = "fallback"
            continue
        nodes.store(idx, res)

    corrections = nodes.corrections(tile_ids, model, origin)
    edge_res = edge_residuals(table, nodes.gains, nodes.offsets, nodes.slopes, origin)
    edge_res["gain_weight"] = nodes.gain_weight
    edge_res["offset_weight"] = nodes.offset_weight
    summary = summarise_residuals(edge_res)

    sol_status, message, n_fallback = _status_and_message(
        nodes.status, len(references), n_comp, n_failed_components, info)
    _log_summary(n - n_fallback, summary, graph.graph.get("node_kind", "tiles"))
    info["time_s"] = time.perf_counter() - t_start
    info["n_edges"] = m
    info["n_components"] = n_comp
    info["n_fallback"] = n_fallback
    info["scale_length"] = length
    return PhotometrySolution(
        corrections=corrections, references=references,
        components=[[tile_ids[k] for k in idx] for idx in comps], tile_ids=tile_ids,
        gains=nodes.gains, offsets=nodes.offsets, slopes=nodes.slopes,
        gain_err=nodes.gain_err, offset_err=nodes.offset_err, slope_err=nodes.slope_err,
        offset_err_center=nodes.offset_err_center, edge_residuals=edge_res, summary=summary,
        status=sol_status, message=message, model=model, origin=origin,
        uncertainty_method=info["uncertainty_method"], info=info)


# --------------------------------------------------------------------------- one component


def _reachable(n, ref, e_src, e_dst):
    """Nodes connected to ``ref`` by the given edges (local indices)."""
    if n == 1 or len(e_src) == 0:
        out = np.zeros(n, dtype=bool)
        out[ref] = True
        return out
    adj = sp.coo_matrix((np.ones(len(e_src)), (e_src, e_dst)), shape=(n, n))
    _, lab = csgraph.connected_components(adj, directed=False)
    return lab == lab[ref]


def _solve_component(table, idx, ref_k, centers, length, settings, info):
    """Solve one connected component, every channel; raises on numerical failure.

    Per channel: gains (:func:`.gains.gains_for_channel`), then offsets and
    planes (:func:`.offsets.offsets_for_channel`), then, where some node has
    no usable gain edge (or ``joint=True``), the joint refinement
    (:func:`.joint.joint_refine`).  Returns arrays over all nodes (only the
    rows ``idx`` are meaningful).
    """
    n_all = centers.shape[0]
    C = table.status.shape[1]
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
    org = np.asarray(settings.origin, dtype=float)
    steps = {"iterations": settings.iterations, "solver": settings.solver}
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
        ok = (st == STATUS_OK) & usable
        rows_ok, rows_usable = edge_rows[ok], edge_rows[usable]
        problem = table.channel_problem(c, rows_ok, rows_usable, local, ref=ref_l, reach=reach,
                                        centres=cen, length=length, model=settings.model)
        # ---- gains (log-linear, "ok" edges only)
        logg, var_logg, w_gain = gains_for_channel(problem, info, **steps)
        res["gain_w"][rows_ok, c] = w_gain
        g = np.exp(logg)
        # ---- offsets and planes (linear once gains are known)
        o_t, p_t, var_o, var_p, w_off = offsets_for_channel(problem, g, info, **steps)
        res["off_w"][rows_usable, c] = w_off
        blind = reach & ~np.isfinite(var_logg)
        if settings.joint is True or (settings.joint == "auto" and blind.any()):
            logg, o_t, p_t, var_logg, var_o, var_p, w_gain, w_off = joint_refine(
                problem, logg, var_logg, o_t, p_t, info, iterations=settings.iterations,
                gain_prior=settings.gain_prior)
            info["joint_refined"] = info.get("joint_refined", 0) + 1
            res["gain_w"][rows_ok, c] = w_gain
            res["off_w"][rows_usable, c] = w_off
            g = np.exp(logg)
        p = p_t / length
        if settings.model == "plane" and settings.gradient_gauge == "mean":
            # one plane q.(r - reference centre) added to every node: no overlap changes
            q = -p[reach].mean(axis=0)
            p = p + q
            o_t = o_t + ((cen - cen[ref_l]) * q).sum(axis=1)
            info.setdefault("gradient_gauge_shift", []).append([float(v) for v in q])
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
