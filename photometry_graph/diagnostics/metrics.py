"""Diagnostics: seam metric, residual tables and plots.

The seam metric compares how fast the (smoothed) residual against the truth
changes near seams with how fast it changes elsewhere: a seamless mosaic
scores about 1, a mosaic with steps at tile borders scores well above.

The tables (:func:`edge_residual_table`, :func:`tile_table`,
:func:`truth_summary`) turn a harmonization result -- or the parsed
``grid_report.json`` of a run, so that a user's output folder can be
inspected -- into lists of dicts, printed with :func:`format_table` (no
pandas needed).  The plots (:func:`plot_overlap_graph`,
:func:`plot_overlap_scatter`, :func:`plot_edge_residuals`,
:func:`plot_before_after`, :func:`plot_residual_map`,
:func:`plot_solution_vs_truth`) import matplotlib (an optional extra) when
called and return the figure.  Nothing here reads or writes files.
"""

import numpy as np
from scipy import ndimage

from ..core.display import asinh_stretch
from ..core.masks import as_channels_last
from ..core.tiles import BBox
from ..core.wcsgrid import transform_pixels

__all__ = ["seam_metric", "bbox_boundaries", "fit_to_truth",
           "EDGE_COLUMNS", "TILE_COLUMNS", "edge_residual_table", "tile_table", "truth_summary",
           "format_table", "graph_from_report", "tile_cells", "fit_truth_plane",
           "mosaic_vs_truth",
           "asinh_stretch", "plot_images", "plot_before_after", "plot_overlap_graph",
           "plot_edge_residuals", "plot_residual_map", "plot_solution_vs_truth",
           "overlap_pixels", "plot_overlap_scatter", "mosaic_vs_frame_truth",
           "mosaic_vs_frame_survey", "demo_quality_table"]


def bbox_boundaries(bboxes, shape):
    """Boolean map of the box edges that lie strictly inside a canvas.

    Parameters
    ----------
    bboxes : iterable of BBox
        Boxes on the global grid (tiles, or frame footprints' boxes).
    shape : tuple of int
        ``(H, W)`` of the canvas.

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)
        True on the first and last row/column of every box, except where
        that line is the canvas edge itself.

    Examples
    --------
    >>> from photometry_graph.core.tiles import BBox
    >>> b = bbox_boundaries([BBox(0, 4, 0, 3)], (4, 6))
    >>> bool(b[:, 2].all()), bool(b[:, 0].any())
    (True, False)
    """
    H, W = int(shape[0]), int(shape[1])
    out = np.zeros((H, W), dtype=bool)
    for b in bboxes:
        c = b.clamp((H, W))
        if c.is_empty:
            continue
        ys, xs = slice(c.y0, c.y1), slice(c.x0, c.x1)
        if b.y0 > 0:
            out[c.y0, xs] = True
        if b.y1 < H:
            out[c.y1 - 1, xs] = True
        if b.x0 > 0:
            out[ys, c.x0] = True
        if b.x1 < W:
            out[ys, c.x1 - 1] = True
    return out


def _image_truth(image, truth, valid=None):
    """Channels-last float64 copies of a mosaic and its truth, and their joint valid mask."""
    img = as_channels_last(image).astype(np.float64)
    tru = as_channels_last(truth).astype(np.float64)
    if img.shape != tru.shape:
        raise ValueError(f"image shape {img.shape} and truth shape {tru.shape} differ; "
                         "render the truth on the mosaic's grid")
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    return img, tru, ok


def fit_to_truth(image, truth, valid=None):
    """Per-channel least-squares ``image ≈ alpha * truth + beta`` on valid pixels.

    Returns
    -------
    alpha, beta : numpy.ndarray, shape (C,)
    """
    img, tru, ok = _image_truth(image, truth, valid)
    if ok.sum() < 2:
        raise ValueError("fit_to_truth needs at least two valid pixels")
    alpha = np.empty(img.shape[2])
    beta = np.empty(img.shape[2])
    for c in range(img.shape[2]):
        t, m = tru[..., c][ok], img[..., c][ok]
        A = np.column_stack([t, np.ones_like(t)])
        (alpha[c], beta[c]), *_ = np.linalg.lstsq(A, m, rcond=None)
    return alpha, beta


def _masked_smooth(values, valid, sigma):
    """Normalised Gaussian smoothing that ignores invalid pixels."""
    v = np.where(valid, values, 0.0)
    w = ndimage.gaussian_filter(valid.astype(np.float64), sigma)
    s = ndimage.gaussian_filter(v, sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 1e-3, s / np.maximum(w, 1e-12), np.nan)


def seam_metric(image, truth, boundaries, *, valid=None, smooth_sigma=3.0,
                border_width=6, fit=True):
    """Seam strength of a mosaic against its truth.

    The residual ``image - (alpha * truth + beta)`` (``alpha, beta`` fitted
    globally per channel when ``fit``) is smoothed with a masked Gaussian to
    beat down the noise; the mean gradient magnitude of the smoothed residual
    within ``border_width`` pixels of a seam is divided by its mean farther
    than ``3 * border_width`` from every seam.

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty).
    truth : array_like, same shape
        Noise-free truth.
    boundaries : array_like of bool, shape (H, W)
        Seam lines (see :func:`bbox_boundaries`).
    valid : array_like of bool, optional
        Extra validity mask.
    smooth_sigma : float
        Gaussian sigma of the smoothing, pixels.
    border_width : int
        Half-width of the band around seams, pixels.
    fit : bool
        Fit a global gain and offset of the image against the truth first
        (the mosaic keeps its reference tile's photometric system).

    Returns
    -------
    float
        About 1 for a seamless mosaic; > 1 when residuals change faster at
        the seams.  Channels are pooled.

    Raises
    ------
    ValueError
        When there are no valid pixels near or away from the seams.
    """
    img, tru, ok = _image_truth(image, truth, valid)
    if fit:
        alpha, beta = fit_to_truth(img, tru, ok)
    else:
        alpha, beta = np.ones(img.shape[2]), np.zeros(img.shape[2])
    boundaries = np.asarray(boundaries, dtype=bool)
    dist = ndimage.distance_transform_edt(~boundaries) if boundaries.any() else \
        np.full(boundaries.shape, np.inf)
    # gradients are only trusted where the smoothing kernel saw valid pixels
    core = ndimage.binary_erosion(ok, iterations=int(np.ceil(2 * smooth_sigma)) + 1,
                                  border_value=0)
    near = core & (dist <= border_width)
    away = core & (dist > 3 * border_width)
    if not near.any() or not away.any():
        raise ValueError("seam_metric needs valid pixels both near and away from the seams")
    num = den = 0.0
    for c in range(img.shape[2]):
        res = img[..., c] - (alpha[c] * tru[..., c] + beta[c])
        sm = _masked_smooth(res, ok, smooth_sigma)
        gy, gx = np.gradient(sm)
        mag = np.hypot(gx, gy)
        num += float(np.mean(mag[near]))
        den += float(np.mean(mag[away]))
    return num / den


# ============================================================================ tables
#
# Everything below reads results (a HarmonizationResult, a PhotometrySolution,
# an overlap graph, or the parsed ``grid_report.json`` of a run) and returns
# plain lists of dicts or matplotlib figures.  Nothing here reads files.

_NAN = float("nan")

#: Columns of :func:`edge_residual_table`, in order.
EDGE_COLUMNS = ("src", "dst", "channel", "n_valid", "status", "a", "sigma_a", "b", "sigma_b",
                "n_used", "rms", "gain_before", "gain_after", "offset_before", "offset_after",
                "corner_before", "corner_after", "gain_weight", "offset_weight")

#: Columns of :func:`tile_table` (the last four only with a survey), in order.
TILE_COLUMNS = ("tile_id", "channel", "gain", "gain_err", "offset", "offset_err", "slope_x",
                "slope_y", "background", "bg_shift", "reference", "component", "status",
                "gain_true", "offset_true", "gain_error", "offset_error_sigma")

_RESIDUAL_KEYS = ("gain_before", "gain_after", "offset_before", "offset_after",
                  "corner_before", "corner_after", "gain_weight", "offset_weight")


def _float_or_nan(value):
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
        res[k] = _float_or_nan(v)
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


class _Run:
    """Normalised view of a result object or report dict (internal)."""

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
    for key in _RESIDUAL_KEYS:
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
    run = _Run()
    sol = _find_solution_dict(report)
    if sol is not None:
        run.residuals = _residuals_from_solution(sol)
        run.references = [_id_key(r) for r in sol.get("references", [])]
        run.components = [[_id_key(t) for t in comp] for comp in sol.get("components", [])]
        for key, corr in (sol.get("tiles") or {}).items():
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


def _unpack(obj, solution=None):
    """Normalise a result, solution, graph or report dict into a :class:`_Run`."""
    import networkx as nx

    if isinstance(obj, dict):
        run = _from_report(obj)
    else:
        run = _Run()
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
        (intersection), ``src``, ``dst`` and ``status`` (worst channel).
        No pixel is read, so edges carry no ``fits``.

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
            graph.add_edge(src, dst, src=src, dst=dst, bbox=bbox, status=status,
                           n_valid=bbox.area if bbox is not None else 0)
    else:
        nodes = list(graph.nodes(data="bbox"))
        for i, (u, bu) in enumerate(nodes):
            for v, bv in nodes[i + 1:]:
                inter = bu.intersection(bv)
                if not inter.is_empty:
                    graph.add_edge(u, v, src=u, dst=v, bbox=inter, n_valid=inter.area)
    return graph


def _residual_row_index(residuals):
    index = {}
    if residuals is None:
        return index
    for k, (s, d) in enumerate(residuals["edges"]):
        index[(s, d)] = (k, False)
        index.setdefault((d, s), (k, True))
    return index


def edge_residual_table(graph_or_result, solution=None):
    """Per edge and channel: the pairwise fit and the residuals before/after the solve.

    Parameters
    ----------
    graph_or_result : HarmonizationResult, PhotometrySolution, networkx.Graph or dict
        A :func:`~photometry_graph.photometry.harmonize.harmonize_tiles` result (graph
        with fits + solution), a solution alone (residuals only), an overlap
        graph with fits (pass ``solution`` for the residuals), or the parsed
        ``grid_report.json`` of a run.
    solution : PhotometrySolution, optional
        Residuals for a bare graph.

    Returns
    -------
    list of dict
        One row per edge and channel with the keys of :data:`EDGE_COLUMNS`:
        ``src``, ``dst`` (fit direction ``dst ≈ a·src + b``), ``channel``,
        ``n_valid`` (jointly valid pixels), ``status`` (fit status), ``a``,
        ``sigma_a``, ``b``, ``sigma_b``, ``n_used``, ``rms`` (NaN when the
        fit is not available), and from the solution's ``edge_residuals``:
        ``gain_before``/``gain_after`` (relative gain-ratio residual),
        ``offset_before``/``offset_after`` (difference of the corrected
        tiles at the overlap centroid, data units), ``corner_before``/
        ``corner_after`` (largest such difference at the overlap corners),
        ``gain_weight``/``offset_weight`` (robust weights).  Rows are sorted
        by ``(src, dst, channel)`` when the ids compare.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> from photometry_graph.photometry.overlap import build_tile_overlap_graph, fit_overlap_edges
    >>> s = make_survey(1, 2, tile_size=96, rng=0)
    >>> g = build_tile_overlap_graph(s.tiles); _ = fit_overlap_edges(g, min_pixels=100)
    >>> rows = edge_residual_table(g)
    >>> len(rows), rows[0]["src"], rows[0]["dst"]
    (1, 0, 1)
    """
    run = _unpack(graph_or_result, solution)
    res = run.residuals
    index = _residual_row_index(res)
    rows = []
    seen = set()

    def residual_values(key, c):
        out = {}
        if key is None:
            return {name: _NAN for name in _RESIDUAL_KEYS}
        k, _flipped = key
        for name in _RESIDUAL_KEYS:
            arr = res.get(name)
            out[name] = (float(arr[k, c]) if arr is not None and arr.ndim == 2
                         and c < arr.shape[1] else _NAN)
        return out

    graph = run.graph
    if graph is not None:
        for u, v, data in graph.edges(data=True):
            src, dst = data.get("src", u), data.get("dst", v)
            fits = list(data.get("fits") or [])
            key = index.get((src, dst))
            n_ch = len(fits)
            if not n_ch and key is not None and res.get("status") is not None:
                n_ch = res["status"].shape[1]
            for c in range(max(n_ch, 1)):
                fit = fits[c] if c < len(fits) else None
                status = (getattr(fit, "status", None) if fit is not None else None)
                if status is None and key is not None and res.get("status") is not None:
                    status = str(res["status"][key[0], c])
                row = dict(src=src, dst=dst, channel=c, n_valid=data.get("n_valid"),
                           status=status if status is not None else data.get("status", ""),
                           a=_float_or_nan(getattr(fit, "a", None)),
                           sigma_a=_float_or_nan(getattr(fit, "sigma_a", None)),
                           b=_float_or_nan(getattr(fit, "b", None)),
                           sigma_b=_float_or_nan(getattr(fit, "sigma_b", None)),
                           n_used=getattr(fit, "n_used", None),
                           rms=_float_or_nan(getattr(fit, "rms", None)))
                row.update(residual_values(key, c))
                rows.append(row)
            if key is not None:
                seen.add(key[0])
    if res is not None:  # edges known only to the solution (no graph given)
        for k, (src, dst) in enumerate(res["edges"]):
            if k in seen:
                continue
            n_ch = res["status"].shape[1] if res.get("status") is not None else \
                res["gain_after"].shape[1]
            for c in range(n_ch):
                row = dict(src=src, dst=dst, channel=c, n_valid=None,
                           status=str(res["status"][k, c]) if res.get("status") is not None
                           else "", a=_NAN, sigma_a=_NAN, b=_NAN, sigma_b=_NAN, n_used=None,
                           rms=_NAN)
                row.update(residual_values((k, False), c))
                rows.append(row)
    try:
        rows.sort(key=lambda r: (r["src"], r["dst"], r["channel"]))
    except TypeError:
        pass
    return rows


def _component_of(run):
    comp = {}
    for k, members in enumerate(run.components):
        for t in members:
            comp[t] = k
    return comp


def tile_table(result, survey=None):
    """Per tile and channel: the correction, its uncertainty, background and role.

    Parameters
    ----------
    result : HarmonizationResult, PhotometrySolution or dict
        A harmonization result (final corrections, solution, background
        matching), a solution alone, or the parsed ``grid_report.json``.
    survey : SyntheticSurvey, optional
        Known truth: adds ``gain_true``, ``offset_true`` (the exact
        corrections relative to each component's reference, expressed in
        the reference's corrected system, offset at ``origin``),
        ``gain_error`` (relative) and ``offset_error_sigma`` (additive error
        at the tile centre in noise sigma) per row (see
        :func:`truth_summary`).

    Returns
    -------
    list of dict
        Keys of :data:`TILE_COLUMNS`: ``tile_id``, ``channel``, ``gain``,
        ``gain_err``, ``offset``, ``offset_err``, ``slope_x``, ``slope_y``,
        ``background`` (sigma-clipped background of the corrected tile,
        NaN when background matching did not run), ``bg_shift`` (applied
        background shift, included in ``offset``), ``reference`` (bool),
        ``component`` (index of the connected component, None when
        unknown), ``status`` (of the correction).

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> from photometry_graph.photometry.overlap import build_tile_overlap_graph, fit_overlap_edges
    >>> from photometry_graph.photometry.solve import solve_global_photometry
    >>> s = make_survey(1, 2, tile_size=96, rng=0)
    >>> g = build_tile_overlap_graph(s.tiles); _ = fit_overlap_edges(g, min_pixels=100)
    >>> rows = tile_table(solve_global_photometry(g))
    >>> [r["tile_id"] for r in rows], sum(r["reference"] for r in rows)
    ([0, 1], 1)
    """
    run = _unpack(result)
    comp = _component_of(run)
    refs = set(run.references)
    truth = _truth_errors(run, survey) if survey is not None else None
    rows = []
    for tid in run.tile_ids:
        corr = run.corrections.get(tid)
        if corr is None:
            n_ch = 1
            if truth is not None:
                n_ch = truth["gain_true"].shape[1]
        else:
            n_ch = corr["gain"].shape[0]
        bg = run.backgrounds.get(tid)
        shift = run.shifts.get(tid)
        for c in range(n_ch):
            row = dict(tile_id=tid, channel=c)
            if corr is None:
                row.update(gain=_NAN, gain_err=_NAN, offset=_NAN, offset_err=_NAN,
                           slope_x=_NAN, slope_y=_NAN, status="missing")
            else:
                row.update(gain=float(corr["gain"][c]), gain_err=float(corr["gain_err"][c]),
                           offset=float(corr["offset"][c]),
                           offset_err=float(corr["offset_err"][c]),
                           slope_x=float(corr["slope"][c, 0]),
                           slope_y=float(corr["slope"][c, 1]), status=corr["status"])
            row["background"] = (float(np.ravel(bg)[c]) if bg is not None
                                 and np.size(bg) > c else _NAN)
            row["bg_shift"] = (float(np.ravel(shift)[c]) if shift is not None
                               and np.size(shift) > c else 0.0)
            row["reference"] = tid in refs
            row["component"] = comp.get(tid)
            if truth is not None:
                k = truth["index"].get(tid)
                for name in ("gain_true", "offset_true", "gain_error", "offset_error_sigma"):
                    row[name] = (float(truth[name][k, c]) if k is not None
                                 and c < truth[name].shape[1] else _NAN)
            rows.append({k: row[k] for k in TILE_COLUMNS if k in row})
    return rows


def _truth_errors(run, survey):
    """Solved corrections against the survey's exact ones, per tile and channel."""
    ids = [t.tile_id for t in survey.tiles]
    index = {tid: k for k, tid in enumerate(ids)}
    n, C = len(ids), survey.n_channels
    out = {name: np.full((n, C), np.nan) for name in
           ("gain_true", "offset_true", "gain_error", "offset_error_sigma",
            "corner_error_sigma", "level_error_sigma", "gain_solved", "offset_solved",
            "gain_err", "offset_err")}
    out["index"] = index
    out["is_reference"] = np.zeros(n, dtype=bool)
    out["reference_of"] = [None] * n
    sigma = float(survey.noise_sigma)
    comps = run.components or ([list(run.tile_ids)] if run.references else [])
    refs = list(run.references)
    if len(refs) < len(comps):
        raise ValueError("the result names fewer references than connected components; "
                         "pass the HarmonizationResult or PhotometrySolution itself")
    centres = np.array([t.bbox.center[::-1] for t in survey.tiles], dtype=float)  # (x, y)
    for ref, members in zip(refs, comps):
        if ref not in index:
            raise ValueError(f"reference tile {ref!r} of the result is not a tile of the survey "
                             f"(tile ids {ids[:5]}...); pass the survey the result was made of")
        r = index[ref]
        cref = run.corrections.get(ref)
        if cref is None:
            continue
        exp = survey.expected_corrections(r, origin=(0.0, 0.0))
        out["is_reference"][r] = True
        g_ref = cref["gain"]

        def additive(corr, x, y):
            ox, oy = corr["origin"]
            return corr["offset"] + corr["slope"][:, 0] * (x - ox) + corr["slope"][:, 1] * (y - oy)

        for tid in members:
            k = index.get(tid)
            corr = run.corrections.get(tid)
            if k is None or corr is None:
                continue
            out["reference_of"][k] = ref
            e_g, e_o, e_p = exp["gain"][k], exp["offset"][k], exp["slope"][k]
            ox, oy = cref["origin"]
            out["gain_true"][k] = g_ref * e_g
            # the exact offset at the result's origin, in the reference's corrected system
            out["offset_true"][k] = (additive(cref, ox, oy) + g_ref * (
                e_o + e_p[:, 0] * ox + e_p[:, 1] * oy))
            out["gain_solved"][k] = corr["gain"]
            out["offset_solved"][k] = corr["offset"]
            out["gain_err"][k] = corr["gain_err"]
            out["offset_err"][k] = corr["offset_err"]
            with np.errstate(invalid="ignore", divide="ignore"):
                out["gain_error"][k] = corr["gain"] / (g_ref * e_g) - 1.0
            b = survey.tiles[k].bbox
            pts = [tuple(centres[k])] + [(x, y) for x in (b.x0, b.x1 - 1)
                                         for y in (b.y0, b.y1 - 1)]
            errs = []
            for x, y in pts:
                want = g_ref * (e_o + e_p[:, 0] * x + e_p[:, 1] * y) + additive(cref, x, y)
                errs.append((additive(corr, x, y) - want) / (g_ref * sigma))
            out["offset_error_sigma"][k] = errs[0]
            out["corner_error_sigma"][k] = np.max(np.abs(errs[1:]), axis=0)
            # error of the corrected tile at its own median level (what a seam shows):
            # a gain error on flat sky is largely absorbed by the offset
            level = _median_level(survey.tiles[k])
            out["level_error_sigma"][k] = errs[0] + (corr["gain"] - g_ref * e_g) * level / (
                g_ref * sigma)
    return out


def _median_level(tile):
    """Median of the valid pixels of a tile per channel (NaN when none)."""
    data = tile.get_data()
    mask = tile.mask
    out = np.full(data.shape[2], np.nan)
    for c in range(data.shape[2]):
        v = np.asarray(data[..., c][mask], dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            out[c] = np.median(v)
    return out


def truth_summary(result, survey):
    """How far solved corrections are from the injected truth of a synthetic survey.

    Every component's corrections are compared with
    :meth:`~photometry_graph.datasets.SyntheticSurvey.expected_corrections`
    relative to that component's reference tile, after mapping them into the
    reference's corrected system (so a background shift of the reference, or
    any correction it carries, does not count as an error): with ``g_r`` and
    ``A_r(x, y)`` the gain and additive term of the reference, tile ``k``
    should have gain ``g_r * G_k`` and additive term ``g_r * E_k(x, y) +
    A_r(x, y)``, ``(G_k, E_k)`` the exact corrections.

    Parameters
    ----------
    result : HarmonizationResult, PhotometrySolution or dict
        What :func:`tile_table` accepts (with the references and components).
    survey : SyntheticSurvey
        The survey the result was computed from (tile ids must match).

    Returns
    -------
    dict
        ``references``; ``n_tiles``; ``n_channels``; ``gain_error_max``,
        ``gain_error_rms`` (relative gain error ``g_k / (g_r G_k) - 1`` over
        non-reference tiles and channels); ``offset_error_max_sigma``,
        ``offset_error_rms_sigma`` (error of the additive term at the tile
        centres, in noise sigma of the reference tile); ``corner_error_max_sigma``
        (largest error at a tile corner: shows wrong planes);
        ``level_error_max_sigma``, ``level_error_rms_sigma`` (error of the
        corrected tile at its centre and its median level: gain and offset
        errors together, what a seam would show; on flat sky a gain error is
        mostly absorbed by the offset);
        ``worst_gain_tile``, ``worst_offset_tile``; ``per_tile``: lists
        ``tile_id``, ``gain_error``, ``offset_error_sigma`` and
        ``level_error_sigma`` (n, C).

    Raises
    ------
    ValueError
        When a reference of the result is not a tile of the survey.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> from photometry_graph.photometry.overlap import build_tile_overlap_graph, fit_overlap_edges
    >>> from photometry_graph.photometry.solve import solve_global_photometry
    >>> s = make_survey(1, 2, tile_size=96, rng=0, add_noise=False, nebula_fill_tile=0)
    >>> g = build_tile_overlap_graph(s.tiles); _ = fit_overlap_edges(g, min_pixels=100)
    >>> summary = truth_summary(solve_global_photometry(g), s)
    >>> summary["n_tiles"], summary["offset_error_max_sigma"] < 1
    (2, True)
    """
    run = _unpack(result)
    t = _truth_errors(run, survey)
    other = ~t["is_reference"]
    ge = np.abs(t["gain_error"][other])
    oe = np.abs(t["offset_error_sigma"][other])
    ce = np.abs(t["corner_error_sigma"][other])
    le = np.abs(t["level_error_sigma"][other])
    ids = [tile.tile_id for tile in survey.tiles]

    def stat(v, kind):
        v = v[np.isfinite(v)]
        if v.size == 0:
            return _NAN
        return float(v.max()) if kind == "max" else float(np.sqrt(np.mean(v ** 2)))

    def worst(arr):
        a = np.where(other[:, None] & np.isfinite(arr), np.abs(arr), -np.inf)
        if not np.isfinite(a).any():
            return None
        return ids[int(np.argmax(a.max(axis=1)))]

    return {
        "references": list(run.references),
        "n_tiles": len(ids),
        "n_channels": int(survey.n_channels),
        "gain_error_max": stat(ge, "max"),
        "gain_error_rms": stat(ge, "rms"),
        "offset_error_max_sigma": stat(oe, "max"),
        "offset_error_rms_sigma": stat(oe, "rms"),
        "corner_error_max_sigma": stat(ce, "max"),
        "level_error_max_sigma": stat(le, "max"),
        "level_error_rms_sigma": stat(le, "rms"),
        "worst_gain_tile": worst(t["gain_error"]),
        "worst_offset_tile": worst(t["offset_error_sigma"]),
        "per_tile": {"tile_id": ids, "gain_error": t["gain_error"].tolist(),
                     "offset_error_sigma": t["offset_error_sigma"].tolist(),
                     "level_error_sigma": t["level_error_sigma"].tolist()},
    }


def _format_value(value, floatfmt):
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        v = float(value) + 0.0  # no "-0"
        return "nan" if np.isnan(v) else format(v, floatfmt)
    if isinstance(value, (list, tuple, np.ndarray)):
        return "[" + ", ".join(_format_value(v, floatfmt) for v in value) + "]"
    return str(value)


def format_table(rows, columns=None, *, floatfmt=".4g", max_rows=None, markdown=False):
    """Format a list of dicts as a fixed-width (or Markdown) text table.

    Parameters
    ----------
    rows : sequence of dict
        Table rows (e.g. from :func:`edge_residual_table`).
    columns : sequence of str, optional
        Columns to show, in order (default: keys of the first row, then any
        new key of later rows).
    floatfmt : str
        Format spec of floats (NaN is shown as ``nan``, None as ``-``).
    max_rows : int, optional
        Show at most this many rows, then a line saying how many were left out.
    markdown : bool
        Write a GitHub Markdown table instead of aligned columns.

    Returns
    -------
    str

    Examples
    --------
    >>> print(format_table([{"tile": 1, "gain": 1.0234567}, {"tile": 2, "gain": float("nan")}]))
    tile   gain
    ----  -----
       1  1.023
       2    nan
    """
    rows = list(rows)
    if columns is None:
        columns = []
        for r in rows:
            for key in r:
                if key not in columns:
                    columns.append(key)
    columns = list(columns)
    shown = rows if max_rows is None else rows[:int(max_rows)]
    cells = [[_format_value(r.get(c), floatfmt) for c in columns] for r in shown]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |",
                 "|" + "|".join("---" if k == 0 else "---:" for k in range(len(columns))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
    else:
        widths = [max([len(str(c))] + [len(row[k]) for row in cells])
                  for k, c in enumerate(columns)]
        numeric = [all(_is_number(r.get(c)) for r in shown) and bool(shown) for c in columns]
        lines = ["  ".join(str(c).rjust(w) if num else str(c).ljust(w)
                           for c, w, num in zip(columns, widths, numeric)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        for row in cells:
            lines.append("  ".join(v.rjust(w) if num else v.ljust(w)
                                   for v, w, num in zip(row, widths, numeric)).rstrip())
    if max_rows is not None and len(rows) > len(shown):
        lines.append(f"... {len(rows) - len(shown)} more row(s)")
    return "\n".join(lines)


def _is_number(value):
    return (value is None or (isinstance(value, (int, float, np.integer, np.floating))
                              and not isinstance(value, (bool, np.bool_))))


# ===================================================================== mosaic vs truth


def tile_cells(bboxes, shape):
    """Label map assigning every pixel to the nearest tile centre among the tiles covering it.

    Distances are scaled by each tile's half size; in a regular grid this
    cuts every overlap in its middle, so each tile owns the region where a
    mosaic mostly shows it.

    Parameters
    ----------
    bboxes : sequence of BBox
    shape : tuple of int
        ``(H, W)`` of the canvas.

    Returns
    -------
    numpy.ndarray of int32, shape (H, W)
        Index into ``bboxes``; -1 where no box covers the pixel.

    Examples
    --------
    >>> lab = tile_cells([BBox(0, 4, 0, 6), BBox(0, 4, 4, 10)], (4, 10))
    >>> lab[0].tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """
    H, W = int(shape[0]), int(shape[1])
    labels = np.full((H, W), -1, dtype=np.int32)
    best = np.full((H, W), np.inf, dtype=np.float32)
    for k, b in enumerate(bboxes):
        c = b.clamp((H, W))
        if c.is_empty:
            continue
        yc, xc = b.center
        hy, hx = max(b.shape[0], 1) / 2.0, max(b.shape[1], 1) / 2.0
        dy = ((np.arange(c.y0, c.y1) - yc) / hy) ** 2
        dx = ((np.arange(c.x0, c.x1) - xc) / hx) ** 2
        d = (dy[:, None] + dx[None, :]).astype(np.float32)
        sl = (slice(c.y0, c.y1), slice(c.x0, c.x1))
        closer = d < best[sl]
        best[sl] = np.where(closer, d, best[sl])
        labels[sl] = np.where(closer, k, labels[sl])
    return labels


def fit_truth_plane(image, truth, valid=None, *, plane=True, max_pixels=2_000_000, rng=0):
    """Per-channel least squares ``image ≈ alpha * truth + beta (+ gx * x + gy * y)``.

    A mosaic keeps the photometric system of its reference tile, gradient
    included: the plane removes it before residuals are judged.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
    valid : array_like of bool, optional
        Pixels to fit (default: finite in both).
    plane : bool
        Fit the plane term (``gx``, ``gy`` per pixel, ``x``, ``y`` the
        column and row indices); False gives :func:`fit_to_truth`'s model.
    max_pixels : int
        Fit a random subsample (through ``rng``) of at most this many pixels.
    rng : numpy.random.Generator or int

    Returns
    -------
    alpha, beta, gx, gy : numpy.ndarray, shape (C,)

    Examples
    --------
    >>> t = np.random.default_rng(0).normal(10, 2, (20, 30))
    >>> yy, xx = np.mgrid[:20, :30]
    >>> a, b, gx, gy = fit_truth_plane(2 * t + 1 + 0.1 * xx, t)
    >>> (np.round([a[0], b[0], gx[0], gy[0]], 6) + 0.0).tolist()  # + 0.0: no -0.0
    [2.0, 1.0, 0.1, 0.0]
    """
    img = as_channels_last(image)
    tru = as_channels_last(truth)
    if img.shape != tru.shape:
        raise ValueError(f"image shape {img.shape} and truth shape {tru.shape} differ")
    ok = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    iy, ix = np.nonzero(ok)
    if iy.size < 4:
        raise ValueError("fit_truth_plane needs at least four valid pixels")
    if iy.size > max_pixels:
        pick = np.random.default_rng(rng).choice(iy.size, int(max_pixels), replace=False)
        iy, ix = iy[pick], ix[pick]
    C = img.shape[2]
    out = np.zeros((4, C))
    for c in range(C):
        t = np.asarray(tru[iy, ix, c], dtype=np.float64)
        m = np.asarray(img[iy, ix, c], dtype=np.float64)
        cols = [t, np.ones_like(t)]
        if plane:
            cols += [ix.astype(np.float64), iy.astype(np.float64)]
        coef = np.linalg.lstsq(np.column_stack(cols), m, rcond=None)[0]
        out[:len(coef), c] = coef
    return out[0], out[1], out[2], out[3]


def _truth_residual(img, tru, ok, coef, noise_sigma):
    """``((image - beta - plane) / alpha - truth) / noise_sigma``, NaN outside ``ok``."""
    alpha, beta, gx, gy = coef
    H, W, C = img.shape
    out = np.full((H, W, C), np.nan)
    xx = np.arange(W, dtype=np.float64)[None, :]
    yy = np.arange(H, dtype=np.float64)[:, None]
    for c in range(C):
        model = beta[c] + gx[c] * xx + gy[c] * yy
        with np.errstate(invalid="ignore"):
            r = ((img[..., c] - model) / alpha[c] - tru[..., c]) / noise_sigma
        out[..., c] = np.where(ok, r, np.nan)
    return out


def mosaic_vs_truth(image, truth, bboxes, *, noise_sigma=1.0, valid=None, footprint=None,
                    plane=True, smooth_sigma=4.0, min_pixels=100):
    """Photometric quality of a mosaic measured against the noise-free truth.

    The mosaic is first fitted globally as ``alpha * truth + beta`` (+ a
    plane) per channel (:func:`fit_truth_plane`: a mosaic keeps the
    photometric system and gradient of its reference tile); ``r = ((image -
    beta - plane) / alpha - truth) / noise_sigma`` is the residual in noise
    sigma of the truth's units.  Per tile *cell* (the part of the canvas
    nearest to that tile's centre, see :func:`tile_cells`) ``(image - beta -
    plane) / alpha`` is fitted again as ``a_k * truth + b_k``: the local
    gains ``a_k`` and the local offsets (median of ``r`` in the cell) show
    what the harmonization left.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty) and truth on the same grid.
    bboxes : sequence of BBox
        Tile boxes on that grid (seams, cells).
    noise_sigma : float
        Noise per pixel of the tiles (the unit of the offsets).
    valid : array_like of bool, optional
        Pixels to use (default: finite in both).
    footprint : array_like of bool, optional
        Pixels where some tile has valid data: ``coverage`` is the fraction
        of them that are finite in the mosaic (default: union of the boxes).
    plane : bool
        Include the plane in the global fit.
    smooth_sigma : float
        Gaussian sigma (pixels) of the smoothed residual (noise beaten down,
        large-scale errors kept).
    min_pixels : int
        Cells with fewer valid pixels are skipped.

    Returns
    -------
    dict
        ``alpha``, ``beta`` (per channel); ``gain_spread`` (std of the local
        gains, all cells and channels); ``gain_max_error`` (largest
        ``|a_k - 1|``); ``offset_spread_sigma`` (std of the local offsets);
        ``offset_max_sigma``; ``residual_rms_sigma`` (RMS of ``r``, noise
        included); ``smooth_residual_rms_sigma`` (RMS of ``r`` after a
        masked Gaussian smoothing); ``seam`` (:func:`seam_metric` of the
        plane-removed mosaic on the box borders, NaN when it cannot be
        measured); ``coverage``; ``n_cells``.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(2, 2, tile_size=64, rng=0, add_noise=False)
    >>> q = mosaic_vs_truth(s.truth, s.truth, [t.bbox for t in s.tiles])
    >>> round(q["gain_spread"], 6), round(q["residual_rms_sigma"], 6)
    (0.0, 0.0)
    """
    img, tru, _ = _image_truth(image, truth)
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be positive, got {noise_sigma!r}")
    H, W, C = img.shape
    bboxes = list(bboxes)
    finite = np.isfinite(img).all(axis=2)
    ok = finite & np.isfinite(tru).all(axis=2)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if footprint is None:
        footprint = np.zeros((H, W), dtype=bool)
        for b in bboxes:
            c = b.clamp((H, W))
            footprint[c.y0:c.y1, c.x0:c.x1] = True
    footprint = np.asarray(footprint, dtype=bool)
    coverage = float(np.count_nonzero(finite & footprint) / max(np.count_nonzero(footprint), 1))
    coef = fit_truth_plane(img, tru, ok, plane=plane)
    resid = _truth_residual(img, tru, ok, coef, noise_sigma)
    rms = float(np.sqrt(np.mean(resid[ok] ** 2)))
    smooth = []
    for c in range(C):
        sm = _masked_smooth(np.nan_to_num(resid[..., c]), ok, smooth_sigma)
        smooth.append(sm[ok & np.isfinite(sm)])
    smooth = np.concatenate(smooth)
    labels = tile_cells(bboxes, (H, W))
    gains, offsets = [], []
    for k in range(len(bboxes)):
        cell = ok & (labels == k)
        if np.count_nonzero(cell) < min_pixels:
            continue
        for c in range(C):
            t = tru[..., c][cell]
            if np.ptp(t) <= 0:
                continue
            m = t + resid[..., c][cell] * noise_sigma  # (image - beta - plane) / alpha
            gains.append(np.polyfit(t, m, 1)[0])
            offsets.append(float(np.median(resid[..., c][cell])))
    gains = np.asarray(gains)
    offsets = np.asarray(offsets)
    flat = img - (coef[2] * np.arange(W)[None, :, None] + coef[3] * np.arange(H)[:, None, None])
    try:
        seam = float(seam_metric(flat, tru, bbox_boundaries(bboxes, (H, W)), valid=ok))
    except (ValueError, ZeroDivisionError):  # no seam band, or a residual without gradient
        seam = _NAN
    return {
        "alpha": coef[0].tolist(), "beta": coef[1].tolist(),
        "gain_spread": float(np.std(gains)) if gains.size else _NAN,
        "gain_max_error": float(np.max(np.abs(gains - 1))) if gains.size else _NAN,
        "offset_spread_sigma": float(np.std(offsets)) if offsets.size else _NAN,
        "offset_max_sigma": float(np.max(np.abs(offsets))) if offsets.size else _NAN,
        "residual_rms_sigma": rms,
        "smooth_residual_rms_sigma": float(np.sqrt(np.mean(smooth ** 2))) if smooth.size
        else _NAN,
        "seam": seam, "coverage": coverage, "n_cells": int(len(gains) // max(C, 1)),
    }


# ============================================================================== plots
#
# matplotlib is an optional extra: it is imported inside the functions.


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the diagnostics plots need matplotlib: "
                          "pip install 'photometry-graph[plots]'") from exc
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


def _edge_values(run, residuals, channel):
    """Value per graph edge (u, v) to colour by, and the colour-bar label."""
    if residuals is None:
        return None, None
    if isinstance(residuals, dict):
        vals = {}
        for (u, v), val in residuals.items():
            vals[(u, v)] = vals[(v, u)] = float(val)
        return vals, "residual"
    if residuals not in _RESIDUAL_KEYS:
        raise ValueError(f"residuals must be None, a dict {{(u, v): value}} or one of "
                         f"{_RESIDUAL_KEYS}, got {residuals!r}")
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


def plot_overlap_graph(graph, ax=None, residuals="auto", *, solution=None, channel=None,
                       wcs=None, cmap="viridis", vmin=None, vmax=None, log=True, annotate=True,
                       show_tiles=True, title=None):
    """Draw the overlap graph: tiles at their positions, edges coloured by residual.

    Parameters
    ----------
    graph : networkx.Graph, HarmonizationResult or dict
        An overlap graph (nodes with ``bbox``), a harmonization result (graph
        + solution), or a parsed ``grid_report.json``.
    ax : matplotlib Axes, optional
    residuals : str, dict or None
        Colour of the edges: a key of the solution's ``edge_residuals``
        (``"offset_after"``, ``"offset_before"``, ``"gain_after"``,
        ``"corner_after"``...; absolute value, worst channel unless
        ``channel``), a dict ``{(u, v): value}``, or None to colour by fit
        status (green ok, orange offset-only, red failed).  ``"auto"``:
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
        markers, one ``Polygon`` per tile outline, a colour bar when
        ``residuals`` is not None; the reference tile(s) are drawn as stars.
    """
    import networkx as nx
    plt = _pyplot()
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Polygon

    run = _unpack(graph, solution)
    g = run.graph
    if g is None:
        raise ValueError("no graph to draw: pass an overlap graph, a HarmonizationResult or a "
                         "report with the tiles' boxes")
    if not isinstance(g, nx.Graph):
        raise TypeError(f"graph must be a networkx.Graph, got {type(g).__name__}")
    bboxes = {n: (d.get("bbox") if d.get("bbox") is not None else
                  getattr(d.get("tile"), "bbox", None)) for n, d in g.nodes(data=True)}
    missing = [n for n, b in bboxes.items() if b is None]
    if missing:
        raise ValueError(f"nodes {missing[:5]} have no bbox; build the graph with "
                         "build_tile_overlap_graph")

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
    if show_tiles:
        for n in nodes:
            b = bboxes[n]
            xs = np.array([b.x0, b.x1, b.x1, b.x0]) - 0.5
            ys = np.array([b.y0, b.y0, b.y1, b.y1]) - 0.5
            qx, qy = to_plot(xs, ys)
            ax.add_patch(Polygon(np.column_stack([qx, qy]), closed=True, fill=False,
                                 edgecolor="0.6", linewidth=0.8))
    edges = list(g.edges(data=True))
    segs = [(pos[u], pos[v]) for u, v, _ in edges]
    if isinstance(residuals, str) and residuals == "auto":
        residuals = "offset_after" if run.residuals is not None else None
    values, label = _edge_values(run, residuals, channel)
    if values is None:
        colours = {"ok": "tab:green", "offset_only": "tab:orange", "failed": "tab:red"}
        stat = []
        for u, v, d in edges:
            s = d.get("status")
            if s is None and d.get("fits"):
                st = [getattr(f, "status", "failed") for f in d["fits"]]
                s = "failed" if "failed" in st else "offset_only" if "offset_only" in st else "ok"
            stat.append(s or "ok")
        lc = LineCollection(segs, colors=[colours.get(s, "k") for s in stat], linewidths=2.5)
        ax.add_collection(lc)
        for s, colour in colours.items():
            ax.plot([], [], color=colour, lw=2.5, label=s.replace("_", "-"))
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
    img, tru, ok = _image_truth(image, truth, valid)
    C = img.shape[2]
    coef = (fit_truth_plane(img, tru, ok, plane=plane) if fit else
            (np.ones(C), np.zeros(C), np.zeros(C), np.zeros(C)))
    res = _truth_residual(img, tru, ok, coef, noise_sigma).mean(axis=2)
    if smooth_sigma and smooth_sigma > 0:
        res = np.where(ok, _masked_smooth(np.nan_to_num(res), ok, smooth_sigma), np.nan)
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
    run = _unpack(result)
    t = _truth_errors(run, survey)
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
        ax = axes[0, 0]
        ax.errorbar(t["gain_true"][:, c], t["gain_solved"][:, c],
                    yerr=np.nan_to_num(t["gain_err"][:, c]), fmt="o", color=col, ms=4,
                    capsize=2, label=lab)
        ax.scatter(t["gain_true"][ref, c], t["gain_solved"][ref, c], marker="*", s=200,
                   c="gold", edgecolors="k", zorder=4)
        ax = axes[0, 1]
        ax.errorbar(t["offset_true"][:, c], t["offset_solved"][:, c],
                    yerr=np.nan_to_num(t["offset_err"][:, c]), fmt="o", color=col, ms=4,
                    capsize=2, label=lab)
        ax.scatter(t["offset_true"][ref, c], t["offset_solved"][ref, c], marker="*", s=200,
                   c="gold", edgecolors="k", zorder=4)
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


def overlap_pixels(graph, edge, channel=0, *, kappa=4.0, grow_kappa=2.0, max_points=None,
                   rng=0):
    """Pixel pairs of one overlap, the edge's fit and which pixels the fit rejects.

    Parameters
    ----------
    graph : networkx.Graph or HarmonizationResult
        Overlap graph with tiles on the nodes and fits on the edges
        (:func:`~photometry_graph.photometry.overlap.fit_overlap_edges`).
    edge : tuple
        ``(u, v)`` node ids.
    channel : int
    kappa : float
        Clipping threshold of the fit: a pixel is rejected when
        ``|dst - a*src - b - plane|`` exceeds ``kappa`` times
        ``sqrt(noise_dst**2 + a**2 noise_src**2)`` (or the robust spread of
        the residuals, when larger), the rule of
        :func:`~photometry_graph.photometry.regression.fit_pair`.
    grow_kappa : float or None
        As in ``fit_pair``: pixels joined to a rejected one through residuals
        beyond ``grow_kappa`` scales (and a one-pixel ring) are rejected too,
        unless that would reject more than a quarter of the pixels.
    max_points : int, optional
        Random subsample (through ``rng``) for plotting.
    rng : numpy.random.Generator or int

    Returns
    -------
    dict
        ``x`` (src values), ``y`` (dst values), ``coords`` ((n, 2) global
        ``(x, y)``), ``clipped`` (bool), ``predicted`` (the fit's dst), ``fit``
        (the PairwiseFit), ``src``, ``dst``.
    """
    run = _unpack(graph)
    g = run.graph
    if g is None or not g.has_edge(*edge):
        raise ValueError(f"edge {edge!r} is not in the graph")
    data = g.edges[edge]
    src, dst = data.get("src", edge[0]), data.get("dst", edge[1])
    fits = data.get("fits") or []
    if channel >= len(fits):
        raise ValueError(f"edge {edge!r} has no fit for channel {channel}; run "
                         "fit_overlap_edges first")
    fit = fits[channel]
    t_src, t_dst = g.nodes[src].get("tile"), g.nodes[dst].get("tile")
    if t_src is None or t_dst is None:
        raise ValueError("the graph's nodes carry no tiles (a graph rebuilt from a report has "
                         "no pixels); build it with build_tile_overlap_graph")
    inter = data["bbox"]
    d_src, m_src = t_src.read(inter)
    d_dst, m_dst = t_dst.read(inter)
    joint = m_src & m_dst
    iy, ix = np.nonzero(joint)
    x = np.asarray(d_src[iy, ix, channel], dtype=np.float64)
    y = np.asarray(d_dst[iy, ix, channel], dtype=np.float64)
    gx, gy = ix + inter.x0, iy + inter.y0
    pred = fit.a * x + fit.offset_at(gx.astype(float), gy.astype(float))
    r = y - pred
    nx_, ny_ = _float_or_nan(fit.noise_x), _float_or_nan(fit.noise_y)
    scale = np.sqrt(ny_ ** 2 + fit.a ** 2 * nx_ ** 2) if np.isfinite(nx_ + ny_) else 0.0
    fin = r[np.isfinite(r)]
    robust = 1.482602218505602 * float(np.median(np.abs(fin - np.median(fin)))) if fin.size \
        else 0.0
    scale = max(scale, robust)
    with np.errstate(invalid="ignore"):
        clipped = ~(np.abs(r) <= kappa * scale) if scale > 0 else np.zeros(r.shape, bool)
    if scale > 0 and grow_kappa is not None and grow_kappa < kappa and clipped.any():
        from ..photometry.regression import grown_outliers
        d = np.zeros(joint.shape)
        d[iy, ix] = r / scale
        clipped |= grown_outliers(d, joint & np.isfinite(d), kappa, grow_kappa)[iy, ix]
    if max_points is not None and iy.size > max_points:
        pick = np.sort(np.random.default_rng(rng).choice(iy.size, int(max_points), replace=False))
        x, y, gx, gy, pred, clipped = (v[pick] for v in (x, y, gx, gy, pred, clipped))
    return dict(x=x, y=y, coords=np.column_stack([gx, gy]), clipped=clipped, predicted=pred,
                fit=fit, src=src, dst=dst)


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
    xm, ym = _float_or_nan(fit.x_mean), _float_or_nan(fit.y_mean)
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


def mosaic_vs_frame_truth(image, truth, footprints, tile_bboxes, *, noise_sigma=1.0, calm=None,
                          clip_sigma=5.0, min_pixels=100):
    """Frame-to-frame offsets and seams of a mosaic of *frames* against the truth.

    :func:`mosaic_vs_truth` judges a mosaic per tile cell; a mosaic stacked
    from frames has a second kind of border inside the tiles: where one
    frame ends.  Here the regions are the frames' footprints (any shape, e.g.
    rotated frames) and the fit is robust to outliers that the stacking
    legitimately kept (a satellite trail covered by too few frames).

    The mosaic is fitted as ``alpha * truth + beta + gx * x + gy * y`` per
    channel (:func:`fit_truth_plane`: the reference frame's photometric
    system and gradient are arbitrary) on the ``calm`` pixels, twice: the
    second fit leaves out pixels whose residual exceeds ``clip_sigma``
    times the larger of ``noise_sigma`` and the residual's robust spread.
    The residual ``image - model`` is then summarised per footprint.

    Parameters
    ----------
    image, truth : array_like, shape (H, W) or (H, W, C)
        Mosaic (NaN where empty) and noise-free truth on the same grid.
    footprints : sequence of array_like of bool, shape (H, W)
        Where each frame lies on the mosaic grid.
    tile_bboxes : sequence of BBox
        Tile boxes on the mosaic grid.
    noise_sigma : float
        Noise per pixel (the unit of the offsets).
    calm : array_like of bool, shape (H, W), optional
        Pixels to fit, e.g. star-free ones (stars are where resampling
        differs most); default all.  Non-finite pixels are never used.
    clip_sigma : float
        Outlier threshold of the second fit.
    min_pixels : int
        Footprints with fewer fitted pixels get no offset.

    Returns
    -------
    dict
        ``frame_offsets`` (list per measured footprint of the median
        residual per channel, in noise sigma), ``frame_offset_spread_sigma``
        (largest peak-to-peak over the footprints, any channel),
        ``frame_offset_max_sigma`` (largest ``|offset|``; both NaN when no
        footprint could be measured), and the :func:`seam_metric` (1 =
        seamless) at the footprints' borders (``seam_frame_borders``) and at
        the tile borders (``seam_tile_borders``), NaN when not measurable.

    Raises
    ------
    ValueError
        When shapes differ or ``noise_sigma`` is not positive.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(2, 2, tile_size=64, rng=0, add_noise=False)
    >>> left = np.zeros(s.canvas_shape, bool); left[:, :60] = True
    >>> q = mosaic_vs_frame_truth(s.truth + 2.0, s.truth, [left, ~left],
    ...                           [t.bbox for t in s.tiles])
    >>> q["frame_offset_max_sigma"] < 1e-6
    True
    """
    img, tru, _ = _image_truth(image, truth)
    if not noise_sigma > 0:
        raise ValueError(f"noise_sigma must be positive, got {noise_sigma!r}")
    shape = img.shape[:2]
    good = np.isfinite(img).all(axis=2) & np.isfinite(tru).all(axis=2)
    if calm is not None:
        good &= np.asarray(calm, dtype=bool)
    calm = good
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    for _ in range(2):
        alpha, beta, gx, gy = fit_truth_plane(img, tru, good)
        resid = img - (alpha * tru + beta + gx * xx[..., None] + gy * yy[..., None])
        spread = 1.4826 * np.median(np.abs(resid[calm]))
        with np.errstate(invalid="ignore"):
            good = calm & (np.abs(resid) < clip_sigma * max(noise_sigma, spread)).all(axis=2)
    borders, offsets = np.zeros(shape, bool), []
    for inside in footprints:
        inside = np.asarray(inside, dtype=bool)
        if inside.shape != shape:
            raise ValueError(f"footprint shape {inside.shape} differs from the mosaic's {shape}")
        borders |= inside & ~ndimage.binary_erosion(inside)
        if (inside & good).sum() >= min_pixels:
            offsets.append(np.median(resid[inside & good], axis=0) / noise_sigma)
    offsets = np.asarray(offsets).reshape(-1, img.shape[2])

    def seam(boundaries):
        try:
            return float(seam_metric(img, tru, boundaries, valid=good))
        except (ValueError, ZeroDivisionError):  # no seam band, or no residual gradient
            return _NAN

    return dict(
        frame_offsets=offsets.tolist(),
        frame_offset_spread_sigma=float(np.ptp(offsets, axis=0).max()) if len(offsets) else _NAN,
        frame_offset_max_sigma=float(np.abs(offsets).max()) if len(offsets) else _NAN,
        seam_frame_borders=seam(borders),
        seam_tile_borders=seam(bbox_boundaries(tile_bboxes, shape)))


def mosaic_vs_frame_survey(image, wcs, survey, tile_bboxes, *, border=2):
    """:func:`mosaic_vs_frame_truth` of a mosaic of a synthetic frame survey, on its grid.

    The survey's truth is rendered on the mosaic grid with and without stars; the fit uses
    the star-free ("calm") pixels, where the stars change the truth by less than 0.05 noise
    sigma.  The footprints are the frames' pixels on the mosaic grid, ``border`` pixels
    inside their edges (resampling makes the edges unreliable).

    Parameters
    ----------
    image : array_like, shape (H, W) or (H, W, C)
        The mosaic, NaN where empty.
    wcs : astropy.wcs.WCS
        Its celestial WCS.
    survey : photometry_graph.datasets.FrameSurvey
        Supplies ``render_truth``, ``frames`` (``wcs``, ``shape``) and ``noise_sigma``.
    tile_bboxes : sequence of BBox
        Tile boxes on the mosaic grid.
    border : int

    Returns
    -------
    dict
        As :func:`mosaic_vs_frame_truth`: ``frame_offsets``,
        ``frame_offset_spread_sigma``, ``frame_offset_max_sigma`` (noise sigma),
        ``seam_frame_borders``, ``seam_tile_borders`` (1 = seamless).

    Examples
    --------
    >>> from photometry_graph.datasets import make_frame_survey
    >>> s = make_frame_survey(1, 2, frame_shape=(60, 80), channels=1, rng=0)
    >>> img = s.render_truth(s.truth_wcs, s.truth_shape)
    >>> q = mosaic_vs_frame_survey(img, s.truth_wcs, s, [])
    >>> q["frame_offset_max_sigma"] < 0.01
    True
    """
    img = as_channels_last(image)
    shape, sigma = img.shape[:2], survey.noise_sigma
    truth = survey.render_truth(wcs, shape)
    calm = np.abs(truth - survey.render_truth(wcs, shape, stars=False)).max(axis=2) < 0.05 * sigma
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    feet = []
    for f in survey.frames:
        fx, fy = transform_pixels(wcs, f.wcs, xx, yy)
        feet.append((fx > border) & (fx < f.shape[1] - 1 - border) & (fy > border)
                    & (fy < f.shape[0] - 1 - border))
    return mosaic_vs_frame_truth(img, truth, feet, tile_bboxes, noise_sigma=sigma, calm=calm)


def demo_quality_table(demo):
    """Text table of the demo's quality measures, plain run against harmonized run.

    Parameters
    ----------
    demo : dict
        ``{"plain": q, "harmonized": q}`` with ``q`` from :func:`mosaic_vs_frame_survey`
        (``seam_tile_borders``, ``seam_frame_borders``, ``frame_offset_spread_sigma``).

    Returns
    -------
    str
        A header line and one line per run.

    Examples
    --------
    >>> q = dict(seam_tile_borders=1.0, seam_frame_borders=1.1, frame_offset_spread_sigma=0.2)
    >>> print(demo_quality_table({"plain": q, "harmonized": q}).splitlines()[1])
    plain                 1.00      1.10     0.20 sigma
    """
    rows = [f"{'':12s}{'seam at tiles':>14s}{'at frames':>10s}{'frame offsets':>15s}"]
    for name in ("plain", "harmonized"):
        q = demo[name]
        rows.append(f"{name:12s}{q['seam_tile_borders']:14.2f}{q['seam_frame_borders']:10.2f}"
                    f"{q['frame_offset_spread_sigma']:9.2f} sigma")
    return "\n".join(rows)
