"""Parsing of results and reports: one view of a harmonization result, a solution, an
overlap graph or the parsed ``grid_report.json`` of a run.

:func:`unpack_run` normalises any of them into a :class:`RunView` (graph, edge residuals,
corrections, references, components, backgrounds, boxes), which the tables and plots read;
:func:`graph_from_report` rebuilds a light overlap graph from a report, so that a user's
output folder can be inspected.  Nothing here reads or writes files.
"""

from types import SimpleNamespace

import numpy as np

from ..core.tiles import BBox

__all__ = ["RESIDUAL_KEYS", "GRAPH_KINDS", "RunView", "unpack_run", "graph_from_report",
           "graph_view", "float_or_nan"]

_NAN = float("nan")

#: The overlap graphs of a run: the frames' (before stacking) and the tiles' (at assembly).
GRAPH_KINDS = ("frames", "tiles")

#: Keys of a solution's ``edge_residuals`` that hold one value per edge and channel.
RESIDUAL_KEYS = ("gain_before", "gain_after", "offset_before", "offset_after",
                 "corner_before", "corner_after", "gain_weight", "offset_weight")


def float_or_nan(value):
    """``float(value)``, or NaN when the value has no float (None, a string, an object).

    Examples
    --------
    >>> float_or_nan("2.5"), float_or_nan(None)
    (2.5, nan)
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _NAN
    return v


def _as_float_array(values):
    """Nested lists (``None`` for NaN) or arrays -> float ndarray."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=object)
    out = np.full(arr.shape, np.nan)
    flat = arr.ravel()
    res = out.ravel()
    for k, v in enumerate(flat):
        res[k] = float_or_nan(v)
    return res.reshape(arr.shape)


def _find_solution_dict(report, depth=0):
    """The dict holding ``edge_residuals`` inside a (parsed) report, or None."""
    if not isinstance(report, dict) or depth > 3:
        return None
    if "edge_residuals" in report:
        return report
    for key in ("solution", "harmonization", "photometry", "solve"):
        found = _find_solution_dict(report.get(key), depth + 1)
        if found is not None:
            return found
    for value in report.values():
        if isinstance(value, dict):
            found = _find_solution_dict(value, depth + 1)
            if found is not None:
                return found
    return None


def _find_background_dict(report, depth=0):
    """The dict of a background-matching summary (``shifts``/``backgrounds``) in a report."""
    if not isinstance(report, dict) or depth > 3:
        return None
    if "shifts" in report and "backgrounds" in report:
        return report
    for key in ("background", "harmonization"):
        found = _find_background_dict(report.get(key), depth + 1)
        if found is not None:
            return found
    return None


def _id_key(value):
    """Hashable node id from JSON (lists become tuples; numeric strings stay strings)."""
    if isinstance(value, list):
        return tuple(_id_key(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunView:
    """Normalised view of a result object or report dict, as :func:`unpack_run` makes it.

    Attributes
    ----------
    graph : networkx.Graph or None
        Overlap graph (nodes with ``bbox``; edges with ``fits`` unless rebuilt from a report).
    residuals : dict or None
        ``edges`` (list of ``(src, dst)``), ``status`` and the :data:`RESIDUAL_KEYS`
        arrays, shape (m, C).
    corrections : dict
        Tile id -> dict of ``gain``, ``offset``, ``slope``, ``gain_err``, ``offset_err``,
        ``origin``, ``status`` (None when the tile has no correction).
    references, components, tile_ids : list
    backgrounds, shifts : dict
        Tile id -> per-channel background and background shift.
    bboxes : dict
        Tile id -> BBox.
    """

    def __init__(self):
        self.graph = None
        self.residuals = None      # dict: edges, status (m, C), *_before/_after (m, C)
        self.corrections = {}      # tile_id -> dict(gain, offset, slope, origin, ...)
        self.references = []
        self.components = []
        self.tile_ids = []
        self.backgrounds = {}
        self.shifts = {}
        self.bboxes = {}


def _correction_dict(corr):
    """A Correction (or its to_dict()) -> dict of float arrays."""
    if corr is None:
        return None
    get = corr.get if isinstance(corr, dict) else (lambda k, d=None: getattr(corr, k, d))
    gain = _as_float_array(get("gain"))
    if gain is None:
        return None
    gain = np.atleast_1d(gain)
    n = gain.shape[0]
    offset = np.atleast_1d(_as_float_array(get("offset", [0.0] * n)))
    slope = get("slope")
    slope = np.zeros((n, 2)) if slope is None else _as_float_array(slope).reshape(n, 2)
    gerr = get("gain_err")
    oerr = get("offset_err")
    origin = get("origin", (0.0, 0.0)) or (0.0, 0.0)
    return dict(gain=gain, offset=offset, slope=slope,
                gain_err=np.full(n, np.nan) if gerr is None else
                np.atleast_1d(_as_float_array(gerr)),
                offset_err=np.full(n, np.nan) if oerr is None else
                np.atleast_1d(_as_float_array(oerr)),
                origin=(float(origin[0]), float(origin[1])),
                status=str(get("status", "")))


def _residuals_from_solution(sol):
    """Edge residuals of a PhotometrySolution (object or dict) as float arrays."""
    er = sol.get("edge_residuals") if isinstance(sol, dict) else getattr(sol, "edge_residuals",
                                                                          None)
    if not er:
        return None
    out = {"edges": [tuple(_id_key(v) for v in e) for e in er.get("edges", [])]}
    m = len(out["edges"])
    status = er.get("status")
    out["status"] = (np.asarray(status, dtype=object).reshape(m, -1) if status is not None
                     else None)
    for key in RESIDUAL_KEYS:
        if key in er and er[key] is not None:
            arr = _as_float_array(er[key])
            out[key] = arr.reshape(m, -1) if arr.size else np.zeros((m, 0))
    return out


def _bbox_from(value):
    if value is None:
        return None
    if isinstance(value, BBox):
        return value
    try:
        return BBox(*[int(v) for v in value])
    except (TypeError, ValueError):
        return None


def _from_report(report):
    run = RunView()
    sol = _find_solution_dict(report)
    if sol is not None:
        run.residuals = _residuals_from_solution(sol)
        run.references = [_id_key(r) for r in sol.get("references", [])]
        run.components = [[_id_key(t) for t in comp] for comp in sol.get("components", [])]
        sol_tiles = sol.get("tiles")  # a solution's {id: correction} (not a report's list)
        for key, corr in (sol_tiles if isinstance(sol_tiles, dict) else {}).items():
            run.corrections[_report_id(key)] = _correction_dict(corr)
    for entry in report.get("tiles", []) if isinstance(report.get("tiles"), list) else []:
        tid = _id_key(entry.get("tile_id"))
        run.bboxes[tid] = _bbox_from(entry.get("bbox"))
        if entry.get("correction") is not None:
            run.corrections[tid] = _correction_dict(entry["correction"])
        elif tid not in run.corrections:
            run.corrections[tid] = None
    if not run.references:
        harm = report.get("harmonization") if isinstance(report.get("harmonization"), dict) \
            else report
        refs = harm.get("references")
        if isinstance(refs, list):
            run.references = [_id_key(r) for r in refs]
        comps = harm.get("components")
        if isinstance(comps, list) and all(isinstance(c, list) for c in comps):
            run.components = [[_id_key(t) for t in c] for c in comps]
    bg = _find_background_dict(report)
    if bg is not None:
        run.backgrounds = {_report_id(k): _as_float_array(v)
                           for k, v in (bg.get("backgrounds") or {}).items()}
        run.shifts = {_report_id(k): _as_float_array(v)
                      for k, v in (bg.get("shifts") or {}).items()}
    run.tile_ids = list(run.bboxes) or list(run.corrections)
    if run.bboxes:
        run.graph = graph_from_report(report)
    return run


def _report_id(key):
    """JSON object keys are strings: turn ``"3"`` back into ``3``."""
    if isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            return key
    return key


def unpack_run(obj, solution=None):
    """Normalise a result, solution, graph or report dict into a :class:`RunView`.

    Parameters
    ----------
    obj : HarmonizationResult, PhotometrySolution, networkx.Graph, dict or RunView
        A harmonization result, a solution, an overlap graph, the parsed
        ``grid_report.json`` of a run, or a view unpacked already (returned as it is,
        so that one report is unpacked once for several figures and tables).
    solution : PhotometrySolution, optional
        Residuals and references for a bare graph.

    Returns
    -------
    RunView

    Raises
    ------
    TypeError
        When ``obj`` is none of these.
    """
    import networkx as nx

    if isinstance(obj, RunView) and solution is None:  # unpacked already
        return obj
    if isinstance(obj, dict):
        run = _from_report(obj)
    else:
        run = RunView()
        if isinstance(obj, nx.Graph):
            run.graph = obj
        elif hasattr(obj, "edge_residuals"):  # a PhotometrySolution
            solution = obj if solution is None else solution
        elif hasattr(obj, "solution") or hasattr(obj, "graph"):  # a HarmonizationResult
            run.graph = getattr(obj, "graph", None)
            solution = getattr(obj, "solution", None) if solution is None else solution
            corrections = getattr(obj, "corrections", None) or {}
            run.corrections = {k: _correction_dict(v) for k, v in corrections.items()}
            _background_into(run, getattr(obj, "background", None))
        else:
            raise TypeError(
                "expected a HarmonizationResult, a PhotometrySolution, an overlap graph "
                f"(networkx.Graph) or a parsed grid_report.json dict, got {type(obj).__name__}")
        if solution is not None:
            run.residuals = _residuals_from_solution(solution)
            run.references = list(getattr(solution, "references", []) or [])
            run.components = [list(c) for c in getattr(solution, "components", []) or []]
            sol_corr = getattr(solution, "corrections", None) or {}
            for k, v in sol_corr.items():
                run.corrections.setdefault(k, _correction_dict(v))
            run.tile_ids = list(getattr(solution, "tile_ids", []) or [])
        if run.graph is not None:
            for node, data in run.graph.nodes(data=True):
                run.bboxes[node] = data.get("bbox")
            if not run.tile_ids:
                run.tile_ids = list(run.graph.nodes)
        if not run.tile_ids:
            run.tile_ids = list(run.corrections)
    if not run.components and run.references:
        run.components = [list(run.tile_ids)] if len(run.references) == 1 else []
    return run


def _background_into(run, background):
    """Copy per-tile backgrounds and shifts of a background-matching result."""
    if background is None:
        return
    if isinstance(background, dict):
        bgs, shifts = background.get("backgrounds"), background.get("shifts")
    else:
        bgs, shifts = getattr(background, "backgrounds", None), getattr(background, "shifts",
                                                                       None)
    run.backgrounds = {_report_id(k): _as_float_array(v) for k, v in (bgs or {}).items()}
    run.shifts = {_report_id(k): _as_float_array(v) for k, v in (shifts or {}).items()}


def graph_from_report(report):
    """Rebuild a light overlap graph from a parsed ``grid_report.json``.

    Parameters
    ----------
    report : dict
        The parsed report of a grid-mode run (``json.load`` of
        ``grid_report.json``): its ``tiles`` list (``tile_id``, ``bbox`` as
        ``[y0, y1, x0, x1]``) and, when the photometry ran, the solution's
        ``edge_residuals``.

    Returns
    -------
    networkx.Graph
        Nodes with ``bbox``; one edge per overlapping pair of boxes, or per
        edge of the solution when the report has one, with ``bbox``
        (intersection), ``src``, ``dst``, ``status`` (worst channel), ``n_valid`` and, when
        the report holds the graph (``graph`` of the harmonization report), ``fits``: one
        object per channel with the attributes of the stored pairwise fit (``a``,
        ``sigma_a``, ``b``, ...).  No pixel is read.

    Examples
    --------
    >>> g = graph_from_report({"tiles": [{"tile_id": 1, "bbox": [0, 10, 0, 10]},
    ...                                  {"tile_id": 2, "bbox": [0, 10, 8, 18]}]})
    >>> sorted(g.edges), g.edges[1, 2]["bbox"]
    ([(1, 2)], BBox(y0=0, y1=10, x0=8, x1=10))
    """
    import networkx as nx

    if not isinstance(report, dict):
        raise TypeError(f"report must be the parsed grid_report.json dict, got "
                        f"{type(report).__name__}")
    graph = nx.Graph()
    for entry in report.get("tiles") or []:
        bbox = _bbox_from(entry.get("bbox"))
        if bbox is not None:
            graph.add_node(_id_key(entry.get("tile_id")), bbox=bbox)
    sol = _find_solution_dict(report)
    res = _residuals_from_solution(sol) if sol is not None else None
    fits = _report_fits(sol)
    if res is not None and res["edges"]:
        for k, (src, dst) in enumerate(res["edges"]):
            status = "failed"
            if res.get("status") is not None:
                vals = [str(s) for s in res["status"][k]]
                status = ("failed" if "failed" in vals else
                          "offset_only" if "offset_only" in vals else "ok")
            bbox = None
            if src in graph and dst in graph:
                bbox = graph.nodes[src]["bbox"].intersection(graph.nodes[dst]["bbox"])
            n_valid, edge_fits = fits.get((src, dst), (None, []))
            if n_valid is None:
                n_valid = bbox.area if bbox is not None else 0
            graph.add_edge(src, dst, src=src, dst=dst, bbox=bbox, status=status,
                           n_valid=n_valid, fits=edge_fits)
    else:
        nodes = list(graph.nodes(data="bbox"))
        for i, (u, bu) in enumerate(nodes):
            for v, bv in nodes[i + 1:]:
                inter = bu.intersection(bv)
                if not inter.is_empty:
                    graph.add_edge(u, v, src=u, dst=v, bbox=inter, n_valid=inter.area)
    return graph


def _report_fits(sol):
    """``{(src, dst): (n_valid, [fit per channel])}`` of a report's graph section."""
    out = {}
    edges = sol.get("edges") if isinstance(sol, dict) else None
    for e in edges if isinstance(edges, list) else []:
        if isinstance(e, dict) and "src" in e and "dst" in e:
            key = (_id_key(e["src"]), _id_key(e["dst"]))
            out[key] = (e.get("n_valid"), [SimpleNamespace(**f) for f in e.get("fits") or []
                                           if isinstance(f, dict)])
    return out


def _graph_section(report, kind):
    """The stored graph of ``kind`` in a parsed report (None when it holds none)."""
    if kind == "tiles":
        harm = report.get("harmonization")
    else:
        harm = (report.get("frame_photometry") or {}).get("harmonize")
    sec = harm.get("graph") if isinstance(harm, dict) else None
    return sec if isinstance(sec, dict) and sec.get("nodes") else None


def _shifted_correction(corr, dx, dy):
    """A stored correction with its plane origin moved by ``(-dx, -dy)`` (same values)."""
    if not isinstance(corr, dict):
        return corr
    origin = corr.get("origin") or (0.0, 0.0)
    return dict(corr, origin=[float(origin[0]) - dx, float(origin[1]) - dy])


def graph_view(report, kind="tiles"):
    """The frame or tile graph of a run, on the mosaic's pixel grid, as a report to read.

    Parameters
    ----------
    report : dict
        The parsed ``grid_report.json`` of a run.
    kind : {"tiles", "frames"}
        The tile graph (solved at assembly) or the frame graph (solved before stacking, on
        frames binned ``frame_photometry.bin_factor`` times).

    Returns
    -------
    dict or None
        A report of that graph alone, which :func:`unpack_run`, :func:`graph_from_report`,
        the tables and the plots read like a run's report: ``tiles`` (one entry per node:
        ``tile_id``, ``bbox`` on the mosaic's pixel grid, ``correction`` in those pixel
        coordinates), ``edges`` (the stored fits), ``edge_residuals``, ``references`` and
        ``node_kind``.  None when the report holds no such graph (a run without frame
        photometry, or a report written before the graphs were stored).

    Examples
    --------
    >>> report = {"mosaic_origin": [0, 10], "frame_photometry": {"bin_factor": 4,
    ...           "harmonize": {"graph": {"nodes": [{"id": 0, "bbox": [0, 5, 3, 8]}],
    ...                                   "edges": [], "references": [0]}}}}
    >>> graph_view(report, "frames")["tiles"]
    [{'tile_id': 0, 'bbox': [0, 20, 2, 22], 'correction': None}]
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"kind must be one of {GRAPH_KINDS}, got {kind!r}")
    sec = _graph_section(report, kind)
    if sec is None:
        return None
    scale, (oy, ox) = 1, (0, 0)
    corrections = {}
    if kind == "frames":
        scale = int((report.get("frame_photometry") or {}).get("bin_factor") or 1)
        oy, ox = report.get("mosaic_origin") or (0, 0)
        for k, f in enumerate(report.get("frames") or []):
            corrections[k] = _shifted_correction(f.get("correction"), ox, oy)
    else:
        for t in report.get("tiles") or []:
            corrections[_id_key(t.get("tile_id"))] = t.get("correction")
    nodes = []
    for n in sec["nodes"]:
        y0, y1, x0, x1 = n["bbox"]
        nid = _id_key(n["id"])
        nodes.append({"tile_id": nid, "bbox": [y0 * scale - oy, y1 * scale - oy,
                                               x0 * scale - ox, x1 * scale - ox],
                      "correction": corrections.get(nid)})
    return {"node_kind": kind, "tiles": nodes, "edges": sec.get("edges") or [],
            "edge_residuals": sec.get("edge_residuals"),
            "references": sec.get("references") or []}
