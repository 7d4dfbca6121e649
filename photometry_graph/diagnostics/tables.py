"""Diagnostic tables: edge residuals, tile corrections and their errors against the truth.

The tables (:func:`edge_residual_table`, :func:`tile_table`, :func:`truth_summary`) turn a
harmonization result -- or the parsed ``grid_report.json`` of a run, so that a user's
output folder can be inspected -- into lists of dicts, printed with :func:`format_table`
(no pandas needed); :func:`demo_quality_table` prints the demo's quality measures.
Nothing here reads or writes files.
"""

import numpy as np

from .._stats import median
from .report import RESIDUAL_KEYS, float_or_nan, unpack_run

__all__ = ["EDGE_COLUMNS", "TILE_COLUMNS", "edge_residual_table", "tile_table", "truth_errors",
           "truth_summary", "format_table", "demo_quality_table"]

_NAN = float("nan")

#: Columns of :func:`edge_residual_table`, in order.
EDGE_COLUMNS = ("src", "dst", "channel", "n_valid", "status", "a", "sigma_a", "b", "sigma_b",
                "n_used", "rms", "gain_before", "gain_after", "offset_before", "offset_after",
                "corner_before", "corner_after", "gain_weight", "offset_weight")

#: Columns of :func:`tile_table` (the last four only with a survey), in order.
TILE_COLUMNS = ("tile_id", "channel", "gain", "gain_err", "offset", "offset_err", "slope_x",
                "slope_y", "background", "bg_shift", "reference", "component", "status",
                "gain_true", "offset_true", "gain_error", "offset_error_sigma")


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
    run = unpack_run(graph_or_result, solution)
    res = run.residuals
    index = _residual_row_index(res)
    rows = []
    seen = set()

    def residual_values(key, c):
        out = {}
        if key is None:
            return {name: _NAN for name in RESIDUAL_KEYS}
        k, _flipped = key
        for name in RESIDUAL_KEYS:
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
                           a=float_or_nan(getattr(fit, "a", None)),
                           sigma_a=float_or_nan(getattr(fit, "sigma_a", None)),
                           b=float_or_nan(getattr(fit, "b", None)),
                           sigma_b=float_or_nan(getattr(fit, "sigma_b", None)),
                           n_used=getattr(fit, "n_used", None),
                           rms=float_or_nan(getattr(fit, "rms", None)))
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
    run = unpack_run(result)
    comp = _component_of(run)
    refs = set(run.references)
    truth = truth_errors(run, survey) if survey is not None else None
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


def truth_errors(run, survey):
    """Solved corrections against the survey's exact ones, per tile and channel.

    Parameters
    ----------
    run : RunView
        From :func:`~photometry_graph.diagnostics.report.unpack_run`.
    survey : SyntheticSurvey

    Returns
    -------
    dict
        Arrays of shape (n, C), rows in the survey's tile order: ``gain_true``,
        ``offset_true`` (see :func:`truth_summary`), ``gain_solved``, ``offset_solved``,
        ``gain_err``, ``offset_err``, ``gain_error``, ``offset_error_sigma``,
        ``corner_error_sigma``, ``level_error_sigma``; ``index`` (tile id -> row),
        ``is_reference`` (n,) and ``reference_of`` (reference id per row, None outside
        the result).

    Raises
    ------
    ValueError
        When a reference of the result is not a tile of the survey, or the result names
        fewer references than components.
    """
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
            out[c] = median(v)
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
    run = unpack_run(result)
    t = truth_errors(run, survey)
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
