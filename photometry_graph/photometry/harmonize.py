"""One call from tiles to photometric corrections.

:func:`harmonize_tiles` chains the stages of the package::

    build_tile_overlap_graph -> fit_overlap_edges -> solve_global_photometry
        -> match_backgrounds (optional, guarded)

and never raises for a data problem: every advanced step that fails logs a
``[GRID]`` warning and falls back (a failed graph, fit or solve gives the plain
per-tile background normalisation towards the median background; a failed
background step keeps the solve's corrections; a single tile or tiles without
overlaps keep identity corrections).  Only bad arguments raise.
"""

from dataclasses import dataclass, field
import math
import time

import numpy as np

from .._json import jsonable
from .._log import collected_warnings, get_logger, graph_label, grid_info, grid_warning
from .._threads import check_workers, thread_map
from .background import match_backgrounds
from .candidates import PER_DIRECTION, candidate_pairs, mask_rows
from ..core.correction import identity_correction
from .overlap import (build_tile_overlap_graph, fit_overlap_edges, gain_estimates,
                      sparsify_overlap_graph)
from .solve import SOLVE_MODELS, solve_global_photometry
from ..core.tiles import TilePhotometryInfo, common_channels

__all__ = ["HarmonizationResult", "harmonize_tiles", "graph_report"]

logger = get_logger(__name__)

#: With ``max_degree``, the overlaps examined per node are its ``CANDIDATES_PER_DEGREE *
#: max(CANDIDATE_DEGREE, max_degree)`` largest, as measured on the nodes' valid spans
#: (:func:`candidate_pairs`, a bound of the jointly valid pixels that ranks them alike): the
#: ``max_degree`` largest are among them with a margin, and so are the next ``max_degree``
#: that nodes without a gain get (:func:`_fit_more_gain_edges`).
CANDIDATES_PER_DEGREE = 3
#: The candidates are those of at least this many overlaps a node, in as many directions,
#: whatever ``max_degree``: with 4 directions, a pointing in a 3 x 3 grid of pointings kept
#: no candidate towards its diagonal neighbours, and the joins between pointings
#: (:func:`~.overlap.sparsify_overlap_graph`) are chosen among the candidates.
CANDIDATE_DEGREE = 8


@dataclass
class HarmonizationResult:
    """Outcome of :func:`harmonize_tiles`.

    Attributes
    ----------
    corrections : dict
        ``{tile_id: Correction}`` for every tile.
    graph : networkx.Graph or None
        Overlap graph with the pairwise fits (None when it could not be built).
    solution : PhotometrySolution or None
        Global solve (None when skipped or failed before it returned).
    background : BackgroundMatchResult or None
        Background matching (None when disabled or failed).
    report : dict
        JSON-friendly summary: counts of tiles, edges, fits, components,
        references, residuals before/after, background decision, status,
        the ``[GRID]`` warnings issued, timings (``time_s`` in all,
        ``step_times_s`` per step: graph, fits, solve, background) and the graph itself
        (``graph``: :func:`graph_report`).
    status : str
        ``"ok"`` (everything ran), ``"partial"`` (the solve reported a partial
        solution or a later step fell back), ``"fallback"`` (the solve was
        replaced by background normalisation) or ``"identity"`` (nothing to
        harmonize, or nothing worked).
    """

    corrections: dict
    graph: object = None
    solution: object = None
    background: object = None
    report: dict = field(default_factory=dict)
    status: str = "ok"

    def to_dict(self):
        """The JSON-friendly report."""
        return self.report


def _finite_or_none(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fit_counts(graph):
    """Per-channel fit status counts over all edges."""
    counts = {"ok": 0, "offset_only": 0, "failed": 0}
    for _, _, data in graph.edges(data=True):
        for f in data.get("fits") or []:
            counts[f.status if f.status in counts else "failed"] += 1
    return counts


def _nodes_without_gain_edge(graph, n_channels):
    """Nodes with, in some channel, no edge whose fit gives a gain (status ``ok``)."""
    out = []
    for node in graph.nodes:
        fits = [d.get("fits") or [] for _, _, d in graph.edges(node, data=True)]
        if any(not any(len(f) > c and f[c].status == "ok" for f in fits)
               for c in range(n_channels)):
            out.append(node)
    return out


def _fit_more_gain_edges(graph, full_graph, n_channels, fit_args, max_degree):
    """Fit the next overlaps of the nodes whose kept overlaps constrain no gain (in place).

    With honest uncertainties a faint overlap still gives a gain; a node whose largest
    overlaps give none (every fit degenerate: no signal range at all, no stars) gets its
    next ``max_degree`` largest overlaps fitted, once (not all of them: on a dense session
    that cascade fitted four times as many overlaps).  Returns the added fit counts.
    """
    lacking = _nodes_without_gain_edge(graph, n_channels)
    extra = set()
    for node in lacking:
        ranked = sorted(((u, v, w) for u, v, w in full_graph.edges(node, data="weight",
                                                                   default=0)
                         if not graph.has_edge(u, v)), key=lambda e: (-e[2], repr(e[1])))
        extra.update(tuple(sorted(e[:2], key=repr)) for e in ranked[:max_degree])
    if not extra:
        return {}
    sub = full_graph.edge_subgraph(sorted(extra, key=repr)).copy()
    counts = fit_overlap_edges(sub, **fit_args)
    graph.add_edges_from(sub.edges(data=True))
    stage, noun = graph_label(graph.graph.get("node_kind", "tiles"))
    grid_info(logger, f"{stage}: %d {noun}(s) had no gain in their largest overlaps; fitted "
              "%d more overlaps", len(lacking), len(extra))
    return counts


def harmonize_tiles(tiles, *, model="offset", background=True, origin=(0.0, 0.0),
                    min_pixels=500, min_overlap_pixels=None, reference=None, rng=None,
                    irls_iterations=6, fit_kwargs=None, solve_kwargs=None,
                    background_kwargs=None, workers=None, max_degree=None, node_kind="tiles",
                    gain_estimator="auto", gradient_gauge="mean"):
    """Photometric corrections that make overlapping tiles agree.

    Parameters
    ----------
    tiles : sequence of TilePhotometryInfo
        Nodes on one global pixel grid (tiles or frames) with unique
        ``tile_id``; not modified.
    model : {"offset", "plane"}
        Additive term of the corrections: a constant, or a plane (offset plus
        x/y slopes in global pixel coordinates, for gradients).
    background : bool
        Run the guarded SWarp-like background matching after the solve.
    origin : tuple of float
        ``(x, y)`` origin of the plane term of the corrections.
    min_pixels : int
        Smallest number of jointly valid pixels for a pairwise fit.
    min_overlap_pixels : int, optional
        Overlaps with fewer jointly valid pixels get no edge (default
        ``min_pixels``).
    reference : tile id or iterable of tile ids, optional
        Reference tile(s), at most one per connected component.
    rng : numpy.random.Generator or int, optional
        Subsampling of large overlaps in the fits (reproducible default).
    irls_iterations : int
        Robust reweighting iterations of the solve.
    fit_kwargs, solve_kwargs, background_kwargs : dict, optional
        Extra options of :func:`~photometry_graph.photometry.overlap.fit_overlap_edges`,
        :func:`~photometry_graph.photometry.solve.solve_global_photometry` and
        :func:`~photometry_graph.photometry.background.match_backgrounds`.  The fits
        run their outlier-clipping iterations on a regular subsample of large
        overlaps and their final estimates on every pixel (``fit_kwargs``
        ``max_pixels``, default 10 000; ``noise_samples``), and the background
        step measures tiles on strided samples (``background_kwargs``
        ``max_pixels``) and overlaps through the fits' means (``use_fits``);
        ``fit_kwargs=dict(max_pixels=None, noise_samples=None,
        noise_estimator='mad')`` and ``background_kwargs=dict(max_pixels=None,
        overlap_max_pixels=None, use_fits=False)`` give the exhaustive
        settings of earlier versions (several times slower, not more accurate:
        see ``benchmarks/bench_harmonize.py``).
    workers : int, optional
        Threads for the masks, the pairwise fits and the background step
        (default ``min(2, os.cpu_count())``); the result does not depend on it.
    max_degree : int, optional
        Fit only the ``max_degree`` largest overlaps of every node (plus a
        maximum spanning tree and up to ``max(4, max_degree // 2)`` overlaps between two
        groups of near-identical nodes, such as the dithers of two pointings;
        :func:`~photometry_graph.photometry.overlap.sparsify_overlap_graph`):
        for many frames of one field, where every pair overlaps.  A node whose
        kept overlaps give no gain at all (every fit degenerate) gets its next
        ``max_degree`` overlaps fitted, once.  None fits every overlap.  The report's
        ``fits_per_node`` is the number of fitted overlaps per node.
    node_kind : {"tiles", "frames"}
        What the nodes are, for the log lines (``[GRID] Frame photometry: built overlap
        graph with N edges (M frames, ...)``; the tiles keep the documented wording) and
        the report's ``graph``.
    gain_estimator : {"auto", "pixels", "stars"}
        Gain of every overlap from the pixel fit and the stars' flux ratio combined
        (``"auto"``), or from one of them
        (:func:`~photometry_graph.photometry.overlap.fit_edge_channel`); the report's
        ``gain_estimates`` holds both estimates of every edge, their sigmas, the star
        count, the source and the disagreements.
    gradient_gauge : {"mean", "reference"}
        The gradient left free by the overlaps (plane model): zero mean over all the
        nodes (default), or the reference's own
        (:func:`~photometry_graph.photometry.solve.solve_global_photometry`).

    Returns
    -------
    HarmonizationResult

    Raises
    ------
    TypeError, ValueError
        Bad arguments only (no tiles, not TilePhotometryInfo, unknown model,
        duplicate ids, unknown reference).

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(1, 2, tile_size=128, rng=0, gain_range=(1, 1))
    >>> res = harmonize_tiles(s.tiles, background=False)
    >>> res.status, sorted(res.corrections)
    ('ok', [0, 1])
    """
    t0 = time.perf_counter()
    tiles = list(tiles)
    if not tiles:
        raise ValueError("harmonize_tiles needs at least one tile")
    for t in tiles:
        if not isinstance(t, TilePhotometryInfo):
            raise TypeError(f"harmonize_tiles expects TilePhotometryInfo objects, got "
                            f"{type(t).__name__}")
    ids = [t.tile_id for t in tiles]
    if len(set(ids)) != len(ids):
        raise ValueError("tile ids must be unique; give every tile its own tile_id")
    if model not in SOLVE_MODELS:
        raise ValueError(f"model must be one of {SOLVE_MODELS}, got {model!r}")
    if max_degree is not None and not int(max_degree) >= 1:
        raise ValueError(f"max_degree must be None or >= 1, got {max_degree!r}")
    if reference is not None:
        refs = [reference] if not np.iterable(reference) or isinstance(reference, str) \
            else list(reference)
        unknown = [r for r in refs if r not in set(ids)]
        if unknown:
            raise ValueError(f"reference {unknown[0]!r} is not the id of a tile")
    workers = check_workers(workers)
    graph_label(node_kind)  # a ValueError for an unknown kind
    fit_kwargs = dict(fit_kwargs or {})
    fit_kwargs.setdefault("workers", workers)
    fit_kwargs.setdefault("gain_estimator", gain_estimator)
    solve_kwargs = dict(solve_kwargs or {})
    solve_kwargs.setdefault("gradient_gauge", gradient_gauge)
    background_kwargs = dict(background_kwargs or {})
    background_kwargs.setdefault("workers", workers)
    min_overlap = min_pixels if min_overlap_pixels is None else min_overlap_pixels

    with collected_warnings() as warnings:
        result = _run(tiles, model=model, background=background, origin=origin,
                      min_pixels=min_pixels, min_overlap=min_overlap, reference=reference,
                      rng=rng, irls_iterations=irls_iterations, fit_kwargs=fit_kwargs,
                      solve_kwargs=solve_kwargs, background_kwargs=background_kwargs,
                      workers=workers, max_degree=max_degree, node_kind=node_kind)
    result.report["warnings"] = list(warnings)
    result.report["time_s"] = time.perf_counter() - t0
    return result


def _identity(tiles, n_channels, status="fallback"):
    return {t.tile_id: identity_correction(n_channels, status=status) for t in tiles}


def _background_normalisation(tiles, graph, background_kwargs, report):
    """Fallback of a failed solve: per-tile shift towards the median background."""
    try:
        bg = match_backgrounds(tiles, None, graph, **background_kwargs)
    except Exception as exc:  # noqa: BLE001 - never crash the mode
        grid_warning(logger, "Harmonize: background normalisation failed too (%s: %s); "
                     "identity corrections", type(exc).__name__, exc)
        report["steps"].append("background_normalisation_failed")
        return None
    report["steps"].append("background_normalisation")
    report["background"] = bg.to_dict()
    return bg


class _Chain:
    """The state of one harmonization: its report, step clock and fallbacks."""

    def __init__(self, tiles, settings):
        self.tiles, self.settings = tiles, settings
        self.C = common_channels(tiles)
        self.report = {"tiles": len(tiles), "channels": self.C, "model": settings["model"],
                       "edges": 0, "fits": {"ok": 0, "offset_only": 0, "failed": 0},
                       "edge_fits": {"ok": 0, "offset_only": 0, "failed": 0},
                       "components": None, "references": [], "residuals": None,
                       "background": None, "steps": [], "status": None, "step_times_s": {}}
        self.clock = time.perf_counter()

    def lap(self, step):
        now = time.perf_counter()
        self.report["step_times_s"][step] = now - self.clock
        self.clock = now

    def finish(self, corrections, status, graph=None, solution=None, bg=None):
        self.report["status"] = status
        self.report["graph"] = graph_report(graph, solution, self.settings["node_kind"])
        stage, noun = graph_label(self.settings["node_kind"])
        grid_info(logger, f"{stage}: harmonized %d {noun}s over %d overlaps, status %s",
                  len(self.tiles), self.report["edges"], status)
        return HarmonizationResult(corrections=corrections, graph=graph, solution=solution,
                                   background=bg, report=self.report, status=status)

    def fallback(self, step, graph=None, solution=None):
        """Per-tile background normalisation after a failed ``step`` (identity if it fails)."""
        self.report["steps"].append(f"{step}_failed")
        bg = _background_normalisation(self.tiles, graph, self.settings["background_kwargs"],
                                       self.report)
        corr = bg.corrections if bg is not None else _identity(self.tiles, self.C)
        return self.finish(corr, "fallback" if bg is not None else "identity", graph=graph,
                           solution=solution, bg=bg)

    def all_references(self, graph=None):
        """Every tile its own reference: identity corrections."""
        self.report["components"] = len(self.tiles)
        self.report["references"] = [t.tile_id for t in self.tiles]
        return self.finish({t.tile_id: identity_correction(self.C, status="reference")
                            for t in self.tiles}, "identity", graph=graph)


def _run(tiles, **settings):
    chain = _Chain(tiles, settings)
    if len(tiles) == 1:  # an expected outcome, nothing for the user to do: INFO
        grid_info(logger, "%s: a single %s: nothing to harmonize; identity correction",
                  *graph_label(settings["node_kind"]))
        return chain.all_references()
    graph, full_graph = _graph_step(chain)
    if graph is None:
        return chain.fallback("graph")
    chain.lap("graph")
    chain.report["edges"] = graph.number_of_edges()
    chain.report["steps"].append("graph")
    if graph.number_of_edges() == 0:
        stage, noun = graph_label(settings["node_kind"])
        grid_warning(logger, f"{stage}: no overlaps with at least %d valid pixels between "
                     f"the %d {noun}s; identity corrections", settings["min_overlap"],
                     len(tiles))
        return chain.all_references(graph)
    if not _fits_step(chain, graph, full_graph):
        return chain.fallback("fits", graph)
    solution = _solve_step(chain, graph)
    if solution is None or solution.status == "failed":
        if solution is not None:
            grid_warning(logger, "Harmonize: global solve failed (%s); falling back to "
                         "per-tile background normalisation", solution.message)
        return chain.fallback("solve", graph, solution)
    corrections, bg = solution.corrections, None
    status = "ok" if solution.status == "ok" else "partial"
    if settings["background"]:
        corrections, bg, status = _background_step(chain, graph, corrections, status)
        chain.lap("background")
    return chain.finish(corrections, status, graph=graph, solution=solution, bg=bg)


def _mask_rows(tiles, workers):
    """Each node's mask as its row spans and holes (:func:`mask_rows`), each mask read
    once (the graph reads again only a mask with too many holes), on ``workers`` threads;
    None when a mask cannot be read (the candidates are then ranked on the boxes; the graph
    says why)."""
    try:
        return thread_map(lambda t: mask_rows(t.mask, t.bbox.y0, t.bbox.x0), tiles, workers)
    except Exception:  # noqa: BLE001 - reported where the graph reads that mask
        return None


def _graph_step(chain):
    """The overlap graph (None when it failed: warned) and, when sparsified, the graph of
    the candidates it was chosen from (:func:`candidate_pairs`: the
    :data:`CANDIDATES_PER_DEGREE` ``* max(CANDIDATE_DEGREE, max_degree)`` largest
    overlaps of every node, its largest partial ones in as many directions and what joins
    the components, never every pair of a dense session)."""
    s = chain.settings
    max_degree, pairs, total, rows = s["max_degree"], None, None, None
    degree = None if max_degree is None else max(CANDIDATE_DEGREE, int(max_degree))
    per_node = None if degree is None else CANDIDATES_PER_DEGREE * degree
    try:
        if max_degree is not None:
            # the masks read once, for the ranking and the counts
            rows = _mask_rows(chain.tiles, s["workers"])
            pairs, total = candidate_pairs([t.bbox for t in chain.tiles], per_node,
                                           min_area=max(1, s["min_overlap"]),
                                           spans=None if rows is None else
                                           [(r.start, r.stop) for r in rows],
                                           partial=degree, workers=s["workers"])
        graph = build_tile_overlap_graph(chain.tiles, min_overlap_pixels=s["min_overlap"],
                                         workers=s["workers"], node_kind=s["node_kind"],
                                         pairs=pairs, rows=rows)
    except Exception as exc:  # noqa: BLE001 - unreadable tiles etc.
        if isinstance(exc, (TypeError, ValueError)) and "duplicate" in str(exc):
            raise
        grid_warning(logger, "Harmonize: overlap graph failed (%s: %s); falling back to "
                     "per-tile background normalisation", type(exc).__name__, exc)
        return None, None
    if max_degree is None or not graph.number_of_edges():
        return graph, None
    full_graph, graph = graph, sparsify_overlap_graph(graph, max_degree)
    if graph.number_of_edges() == full_graph.number_of_edges() and len(pairs) == total:
        return graph, None  # every overlap is fitted
    full_graph.graph["unexamined"] = total - len(pairs)  # overlapping boxes left out
    stage, noun = graph_label(s["node_kind"])
    grid_info(logger, f"{stage}: fitting %d of %d overlaps (the %d largest per {noun}, a "
              f"maximum spanning tree and %d between groups of near-identical {noun}s, "
              f"chosen among %d: the %d largest per {noun} and its %d largest partial ones "
              f"in each of %d directions)", graph.number_of_edges(), total, max_degree,
              graph.graph.get("bridges", 0), full_graph.number_of_edges(), per_node,
              PER_DIRECTION, degree)
    return graph, full_graph


def _fits_step(chain, graph, full_graph):
    """Fit every edge (in place); False when the fits failed (warned)."""
    s, report = chain.settings, chain.report
    kwargs = dict(model=s["model"], origin=s["origin"], min_pixels=s["min_pixels"],
                  rng=s["rng"], **s["fit_kwargs"])
    try:
        edge_counts = fit_overlap_edges(graph, **kwargs)
        if full_graph is not None:
            more = _fit_more_gain_edges(graph, full_graph, chain.C, kwargs, s["max_degree"])
            edge_counts = {k: edge_counts.get(k, 0) + more.get(k, 0)
                           for k in set(edge_counts) | set(more)}
            report["edges"] = graph.number_of_edges()
            report["edges_not_fitted"] = (full_graph.number_of_edges()  # the overlaps
                                          - graph.number_of_edges()  # examined, and the
                                          + full_graph.graph["unexamined"])  # others
        chain.lap("fits")
        report["edge_fits"] = {k: int(v) for k, v in edge_counts.items()}
        report["fits"] = _fit_counts(graph)
        report["fits_per_node"] = graph.number_of_edges() / max(1, len(chain.tiles))
        report["gain_estimates"] = jsonable(dict(
            gain_estimates(graph), estimator=graph.graph.get("gain_estimator"),
            pixel_systematic=graph.graph.get("pixel_gain_systematic")))
        report["steps"].append("fits")
    except TypeError:
        raise
    except Exception as exc:  # noqa: BLE001 - never crash the mode
        grid_warning(logger, "Harmonize: pairwise fits failed (%s: %s); falling back to "
                     "per-tile background normalisation", type(exc).__name__, exc)
        return False
    return True


def _solve_step(chain, graph):
    """The global solve (None when it raised: warned); its summary goes into the report."""
    s, report = chain.settings, chain.report
    solution = None
    try:
        solution = solve_global_photometry(graph, model=s["model"], origin=s["origin"],
                                           reference=s["reference"],
                                           irls_iterations=s["irls_iterations"],
                                           n_channels=chain.C, **s["solve_kwargs"])
    except (TypeError, ValueError):
        raise
    except Exception as exc:  # noqa: BLE001 - never crash the mode
        grid_warning(logger, "Harmonize: global solve raised (%s: %s); falling back to "
                     "per-tile background normalisation", type(exc).__name__, exc)
    chain.lap("solve")
    if solution is not None:
        report["components"] = len(solution.components)
        report["references"] = list(solution.references)
        report["solve_status"] = solution.status
        report["solve_message"] = solution.message
        report["residuals"] = {k: _finite_or_none(v) for k, v in solution.summary.items()}
        report["steps"].append("solve")
    return solution


def _background_step(chain, graph, corrections, status):
    """Guarded background matching: ``(corrections, result or None, status)``."""
    try:
        bg = match_backgrounds(chain.tiles, corrections, graph,
                               **chain.settings["background_kwargs"])
    except TypeError:
        raise
    except Exception as exc:  # noqa: BLE001 - keep the solve's corrections
        grid_warning(logger, "Harmonize: background matching failed (%s: %s); keeping "
                     "the corrections of the global solve", type(exc).__name__, exc)
        chain.report["steps"].append("background_failed")
        return corrections, None, "partial"
    chain.report["background"] = bg.to_dict()
    chain.report["steps"].append("background")
    if bg.decision == "failed":
        return corrections, bg, "partial"
    return bg.corrections, bg, status


#: Fields of a pairwise fit that the edge already says (``graph_report`` leaves them out).
_EDGE_FIELDS = ("src", "dst", "channel", "origin", "model")


def graph_report(graph, solution=None, node_kind="tiles"):
    """The overlap graph, its pairwise fits and its edge residuals as JSON-friendly data.

    Parameters
    ----------
    graph : networkx.Graph or None
        From :func:`~photometry_graph.photometry.overlap.build_tile_overlap_graph`, fitted or
        not (None: no graph).
    solution : PhotometrySolution, optional
        Its ``edge_residuals`` (before/after the solve, per edge and channel) and references.
    node_kind : {"tiles", "frames"}

    Returns
    -------
    dict
        ``node_kind``; ``nodes``: ``{"id", "bbox"}`` (``[y0, y1, x0, x1]`` on the nodes'
        pixel grid); ``edges``: ``{"src", "dst", "bbox", "n_valid", "status", "fits"}``
        with one dict of :class:`~photometry_graph.photometry.regression.PairwiseFit`
        fields per channel; ``edge_residuals`` and ``references`` of the solution (None
        and ``[]`` without one).

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> res = harmonize_tiles(make_survey(1, 2, tile_size=96, rng=0).tiles, background=False)
    >>> g = res.report["graph"]
    >>> len(g["nodes"]), [(e["src"], e["dst"]) for e in g["edges"]], g["references"]
    (2, [(0, 1)], [0])
    """
    out = {"node_kind": node_kind, "nodes": [], "edges": [], "edge_residuals": None,
           "references": []}
    if graph is not None:
        out["nodes"] = [{"id": n, "bbox": b} for n, b in graph.nodes(data="bbox")]
        for _, _, d in graph.edges(data=True):
            fits = [{k: v for k, v in f.to_dict().items() if k not in _EDGE_FIELDS}
                    for f in d.get("fits") or [] if hasattr(f, "to_dict")]
            out["edges"].append({"src": d.get("src"), "dst": d.get("dst"),
                                 "bbox": d.get("bbox"), "n_valid": d.get("n_valid"),
                                 "status": d.get("status"), "fits": fits})
    if solution is not None:
        out["edge_residuals"] = solution.edge_residuals
        out["references"] = list(solution.references)
    return jsonable(out)
