"""The report of a run as one self-contained HTML page (``grid_report.html``).

:func:`render_html_report` turns the parsed ``grid_report.json`` of a run (and the preview
images of the mosaic, when given) into one HTML page that opens from disk with no network:
the plots are SVG written here (:mod:`~photometry_graph.diagnostics.svg`: milliseconds where
matplotlib figures encoded as PNG took 1-2 s of every run; sharp at any zoom; each edge and
node names itself and its value in a tooltip), the previews plain pixels encoded by OpenCV
as PNG ``data:`` URIs, the tables are HTML.  It shows the before/after previews, the frame
graph and the tile graph drawn where their nodes lie on the mosaic with edges coloured by
fit status and by residual before/after, histograms of the overlap residuals, maps of the
solved gains, offsets and gradients, the background decision, the blending counts, the
warnings with what to do about them, the timings and the options -- and every other field
of the report in a generic form, so that nothing the JSON holds is hidden.  A section that
cannot be drawn says so in its place; the page is still written.  Nothing here reads or
writes files.
"""

import base64
import html
import json
import math
import re

import numpy as np

from .plots import (STATUS_COLOURS, STATUS_LABELS, graph_edge_status, graph_edge_values,
                    graph_node_boxes)
from .report import GRAPH_KINDS, float_or_nan, graph_view, unpack_run
from .svg import (Panel, backdrop_image, backdrop_uri, colours, legend, log_ticks,
                  nice_ticks, polyline, svg_figure, svg_text)
from .tables import demo_quality_table, edge_residual_table

__all__ = ["WARNING_ADVICE", "warning_advice", "render_html_report"]

#: (pattern of a ``[GRID]`` warning, what a user can do about it), first match wins.
WARNING_ADVICE = (
    (r"skipping .*: |skipped|not solved",
     "A frame or file could not be used and the run went on without it: check that it is "
     "a FITS image with a celestial WCS (plate-solved) and that it is not empty or truncated."),
    (r"unknown option|ignoring unknown|is accepted but|is done as|unknown stack_",
     "An option was not understood as given: check its spelling and values "
     "(grid-mode run --help)."),
    (r"disconnected components|no overlaps? with at least",
     "Some frames or tiles do not overlap the others: each group was solved on its own, so "
     "their levels may differ. Add frames that bridge the gap, or lower --tile-size's "
     "overlap requirements."),
    (r"no usable (overlap )?relation|no gain relation|no usable gain edge|from neighbours",
     "Some nodes could not get a gain from their own overlaps (too small or flat sky) and "
     "took it from their neighbours or kept gain 1. Larger overlaps or more stars help."),
    (r"could not be fitted|fit of overlap|pairwise fits failed",
     "An overlap could not be fitted and was left out of the solve; its neighbours still tie "
     "the nodes together. Look at that overlap (trails, bad pixels, misregistration)."),
    (r"global solve|falling back|background normalisation",
     "The photometric solve fell back to a simpler correction. Check the fits of the graph "
     "below; a run with --model offset may be more robust on few, small overlaps."),
    (r"source file\(s\) of the program changed",
     "The program's files changed during the run and its later workers could not start; "
     "the work ran in one process. Update the program between runs."),
    (r"worker processes|could not start",
     "Worker processes could not be used and the work ran in one process. From Python, "
     "call the API under if __name__ == \"__main__\": (or pass workers=1)."),
    (r"memory budget|do not fit the memory|binned .* to stay within",
     "The memory budget forced a slower path. Raise --memory-mb if the machine has the room."),
    (r"pyramid failed|feathering",
     "Multi-band blending failed on a part of the mosaic, which was feathered instead."),
    (r"tile .* failed|left out|have no photometric correction",
     "A tile was lost or left uncorrected: the mosaic may have a hole or a step there."),
    (r"background",
     "The background step could not be measured everywhere; the solve's corrections were kept."),
)

_DEFAULT_ADVICE = ("The run took its documented fallback and went on; the log line says which "
                   "step and why.")

# report keys drawn by a section of their own (every other key goes to "Everything else")
_KNOWN = {"input_folder", "tiles_dir", "grid", "frames", "frame_photometry", "tile_stacking",
          "version", "options", "canvas_shape", "channels", "layout", "mosaic_origin", "tiles",
          "harmonization", "blending", "timings", "outputs", "demo", "warnings"}
_MAX_ROWS = 60  # rows of a table before "... N more"
_PREVIEW_PX = 640  # longest side of a preview on the page, px
_BACKDROP_PX = 400  # longest side of the backdrop of a graph or map panel, px


def warning_advice(message):
    """What a user can do about a ``[GRID]`` warning (:data:`WARNING_ADVICE`).

    Examples
    --------
    >>> warning_advice("[GRID] ignoring unknown option foo=1")[:22]
    'An option was not unde'
    """
    for pattern, advice in WARNING_ADVICE:
        if re.search(pattern, message, flags=re.IGNORECASE):
            return advice
    return _DEFAULT_ADVICE


# ------------------------------------------------------------------------------ formatting
def _esc(value):
    return html.escape(str(value), quote=True)


def _fmt(value):
    """A scalar for a table cell: floats to 4 significant digits, None as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "nan" if math.isnan(v) else _esc(format(v + 0.0, ".4g"))
    return _esc(value)


def _fmt_channels(values):
    """Per-channel values joined by " / " (one value shown alone)."""
    vals = list(np.ravel(values)) if np.ndim(values) else [values]
    return " / ".join(_fmt(float_or_nan(v)) for v in vals)


def _table(rows, columns, *, labels=None, max_rows=_MAX_ROWS, cls="data", total=None):
    """An HTML table of dicts (cells already HTML, or scalars formatted here); ``total``:
    the rows of which ``rows`` are the first ones (default ``len(rows)``)."""
    head = "".join(f"<th>{_esc(labels.get(c, c) if labels else c)}</th>" for c in columns)
    head = "" if cls == "kv" else f"<tr>{head}</tr>"  # key/value tables need no header
    body = []
    for row in rows[:max_rows]:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append(f"<td>{v.html if isinstance(v, _Html) else _fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    total = len(rows) if total is None else total
    more = (f'<p class="note">&hellip; {total - max_rows} more rows in grid_report.json</p>'
            if total > max_rows else "")
    return f'<table class="{cls}">{head}{"".join(body)}</table>{more}'


class _Html:
    """A table cell that is HTML already."""

    def __init__(self, text):
        self.html = text


def _generic(value, depth=0):
    """Any JSON value as HTML: dicts as key/value tables, lists of dicts as tables."""
    if isinstance(value, dict):
        if not value:
            return "<i>empty</i>"
        if depth >= 4:
            return f"<code>{_esc(json.dumps(value)[:400])}</code>"
        items = list(value.items())
        rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_generic(v, depth + 1)}</td></tr>"
                       for k, v in items[:_MAX_ROWS])
        more = (f"<tr><td colspan=2>&hellip; {len(items) - _MAX_ROWS} more</td></tr>"
                if len(items) > _MAX_ROWS else "")
        return f'<table class="kv">{rows}{more}</table>'
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(isinstance(v, dict) for v in value) and depth < 4:
            columns = list(dict.fromkeys(k for v in value[:_MAX_ROWS] for k in v))
            shown = _MAX_ROWS // 2  # only the rows shown are drawn
            rows = [{k: _Html(_generic(v.get(k), depth + 1)) for k in columns}
                    for v in value[:shown]]
            return _table(rows, columns, max_rows=shown, cls="data small", total=len(value))
        if all(not isinstance(v, (dict, list)) for v in value):
            shown = ", ".join(_fmt(v) for v in value[:24])
            return shown + (f" &hellip; ({len(value)} values)" if len(value) > 24 else "")
        return "[" + ", ".join(_generic(v, depth + 1) for v in value[:12]) + (
            " &hellip;" if len(value) > 12 else "") + "]"
    return _fmt(value)


def _note(text):
    return f'<p class="note">{_esc(text)}</p>'


# --------------------------------------------------------------------------------- figures
_WIDTH = 1200  # px, a figure of sky panels
_BEFORE, _AFTER = "#d62728", "#1f77b4"


def _img_tag(png, alt):
    """PNG bytes as an ``<img>`` with a ``data:`` URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _subsampled(image, longest):
    """``(image[::k, ::k], k)``: every ``k``-th pixel, ``k`` the smallest step that brings
    the longest side to at most ``longest`` px (what a figure of that size shows of it).

    Examples
    --------
    >>> img, k = _subsampled(np.zeros((1000, 300)), 400)
    >>> img.shape, k
    ((334, 100), 3)
    """
    img = np.asarray(image)
    k = max(1, math.ceil(max(img.shape[:2]) / longest))
    return img[::k, ::k], k


def _grey_backdrop(image):
    """The mosaic preview as a faint grey backdrop (NaN transparent) sampled to the size
    the panels draw it at: ``(backdrop, k)`` (every ``k``-th preview pixel), or None."""
    if image is None:
        return None
    from ..core.display import asinh_stretch

    img, k = _subsampled(image, _BACKDROP_PX)
    img = np.asarray(img, dtype=np.float64)
    grey = img.mean(axis=2) if img.ndim == 3 else img
    return asinh_stretch([grey])[0][0], k


class _Sky:
    """Where the graphs and maps are drawn: the mosaic's pixel grid, the preview behind."""

    def __init__(self, canvas_shape=None, backdrop=None, step=1):
        self.shape, self.backdrop, self.step = canvas_shape, backdrop, step
        self._uri = None

    def panels(self, n, boxes):
        """``(width, height, panels)`` of a figure of ``n`` panels side by side on the
        mosaic (or on the union of ``boxes``, rows ``[y0, y1, x0, x1]``, when its shape is
        unknown), one data pixel square on the page, room for a colour bar right of each."""
        if self.shape and min(self.shape) >= 1:
            xlim, ylim = (-0.5, self.shape[1] - 0.5), (-0.5, self.shape[0] - 0.5)
        else:
            b = np.asarray(boxes, dtype=float).reshape(-1, 4)
            b = b if len(b) else np.array([[0.0, 1.0, 0.0, 1.0]])
            xlim = (b[:, 2].min() - 0.5, b[:, 3].max() - 0.5)
            ylim = (b[:, 0].min() - 0.5, b[:, 1].max() - 0.5)
        left, top = 62, 28
        slot = (_WIDTH - left - 10) / n
        w, h = xlim[1] - xlim[0], ylim[1] - ylim[0]
        pw = slot - 100
        ph = min(pw * h / max(w, 1e-9), 420.0)
        pw = min(pw, ph * w / max(h, 1e-9))
        ph = max(ph, 90.0)  # a very wide mosaic: its pixels drawn taller than wide
        panels = [Panel(left + k * slot, top, pw, ph, xlim, ylim) for k in range(n)]
        return _WIDTH, top + ph + 42, panels

    def draw(self, panel, title, labels):
        """``(under, frame)``: the preview under ``panel``, and its border and title with
        ticks and axis labels when ``labels`` (the first panel of a row: the others share
        them)."""
        out = []
        if self.backdrop is not None:
            if self._uri is None:  # encoded once, drawn in every panel
                self._uri = backdrop_uri(self.backdrop)
            bh, bw = self.backdrop.shape
            s = self.step
            out.append(backdrop_image(self._uri, panel, (-0.5 * s, (bw - 0.5) * s, -0.5 * s,
                                                         (bh - 0.5) * s)))
        ticks = dict(xticks=nice_ticks(*panel.xlim, 5), yticks=nice_ticks(*panel.ylim, 4),
                     xlabel="x (mosaic pixel)", ylabel="y (mosaic pixel)") if labels else {}
        return "".join(out), panel.frame(title=title, **ticks)


def _sky(images, shape, preview_step=None):
    """The :class:`_Sky` of a page: the canvas ``shape``, the last preview as backdrop
    (sampled to :data:`_BACKDROP_PX`), the mosaic pixels per backdrop pixel."""
    step = preview_step or 1
    drawn = _guarded(lambda: _grey_backdrop(images[-1][1]), "backdrop") if images else None
    if not isinstance(drawn, tuple):
        return _Sky(shape, None, step)
    backdrop, k = drawn
    if preview_step is None and shape:
        step = max(1, math.ceil(max(shape) / max(np.shape(images[-1][1])[:2])))
    return _Sky(shape, backdrop, step * k)


def _abs_values(run, key):
    arr = (run.residuals or {}).get(key)
    if arr is None:
        return np.zeros(0)
    vals = np.abs(np.asarray(arr, dtype=float)).ravel()
    return vals[np.isfinite(vals)]


def _graph_layout(run):
    """Node ids, boxes, centres ``(x, y)`` and edges ``(u, v, data)`` of a run's graph."""
    by_node = graph_node_boxes(run.graph)
    nodes, boxes = list(by_node), list(by_node.values())
    centre = {n: (b.center[1], b.center[0]) for n, b in by_node.items()}
    return nodes, boxes, centre, list(run.graph.edges(data=True))


def _star(x, y, r):
    """A five-pointed star centred on ``(x, y)`` (figure pixels)."""
    k = np.arange(10)
    rad = np.where(k % 2 == 0, r, r * 0.45)
    ang = np.pi / 2 + k * np.pi / 5
    return polyline(x + rad * np.cos(ang), y - rad * np.sin(ang), fill="gold", stroke="#222",
                    width=0.8)


def _graph_panel(panel, layout, edge_colour, tips, refs, annotate):
    """Outlines, edges (coloured, with their tooltips), nodes and references in ``panel``."""
    nodes, boxes, centre, edges = layout
    out = ['<g fill="none" stroke="#999" stroke-width="0.7">']
    out += [f"<rect {panel.box(b.y0, b.y1, b.x0, b.x1)}/>" for b in boxes]
    out.append('</g><g stroke-width="2.5" stroke-linecap="round">')
    for (u, v, _), colour, tip in zip(edges, edge_colour, tips):
        (xu, yu), (xv, yv) = centre[u], centre[v]
        out.append(f'<line x1="{panel.x(xu):.1f}" y1="{panel.y(yu):.1f}" '
                   f'x2="{panel.x(xv):.1f}" y2="{panel.y(yv):.1f}" stroke="{colour}">'
                   f"<title>{_esc(tip)}</title></line>")
    out.append('</g><g fill="#111">')
    for n in nodes:
        x, y = panel.x(centre[n][0]), panel.y(centre[n][1])
        out.append(f"<g><title>{_esc(n)} (reference)</title>{_star(x, y, 9.0)}</g>" if n in refs
                   else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>{_esc(n)}</title>'
                   "</circle>")
        if annotate:
            out.append(svg_text(x + 5, y - 5, n, size=9, anchor="start"))
    return "".join(out) + "</g>"


def _graph_figure(view, run, sky):
    """Status, residual before and residual after of one graph, side by side (``run``:
    ``view`` unpacked), as an SVG figure whose edges name their nodes and values."""
    layout = _graph_layout(run)
    nodes, boxes, _, edges = layout
    noun, refs = view["node_kind"], set(run.references)
    width, height, panels = sky.panels(3, [(b.y0, b.y1, b.x0, b.x1) for b in boxes])
    before, after = _abs_values(run, "offset_before"), _abs_values(run, "offset_after")
    both = np.concatenate([before, after])
    both = both[both > 0]
    lo, hi = (float(both.min()), float(both.max())) if both.size else (1e-6, 1.0)
    hi = max(hi, lo * 10)
    status = [graph_edge_status(d) for _, _, d in edges]
    body = []
    for k, (panel, key, title) in enumerate(zip(
            panels, (None, "offset_before", "offset_after"),
            (f"{len(nodes)} {noun}: fit status per edge", "|offset residual| before the solve",
             "|offset residual| after (same colour scale)"))):
        unsolved = key is not None and view.get("edge_residuals") is None
        under, frame = sky.draw(panel, f"{title}: no solve" if unsolved else title, k == 0)
        if key is None:
            tips = [f"{u} - {v}: {STATUS_LABELS.get(s, s)}" for (u, v, _), s in
                    zip(edges, status)]
            body.append(panel.clipped(under + _graph_panel(
                panel, layout, [STATUS_COLOURS.get(s, "#222") for s in status], tips, refs,
                len(nodes) <= 40)))
            seen = [s for s in STATUS_COLOURS if s != "stars" or s in status]
            # right of the panel, where the other panels have their colour bars
            body.append(legend(panel.left + panel.width + 4, panel.top,
                               [(STATUS_COLOURS[s], STATUS_LABELS[s]) for s in seen],
                               title="fit status", width=90))
        elif not unsolved:
            values, label = graph_edge_values(run, key, None)
            vals = [values.get((u, v), math.nan) for u, v, _ in edges]
            tips = [f"{u} - {v}: {val:.4g}" for (u, v, _), val in zip(edges, vals)]
            body.append(panel.clipped(under + _graph_panel(
                panel, layout, colours(vals, lo, hi, log=True), tips, refs, False)))
            body.append(panel.colour_bar(lo, hi, log=True, label=label))
        else:
            body.append(panel.clipped(under))
        body.append(frame)
    return svg_figure(width, height, "".join(body), f"the {noun} graph")


def _histogram_figure(view, run):
    """Histograms of the absolute offset and gain-ratio residuals before/after."""
    body = []
    for k, (kind, unit) in enumerate((("offset", "data units"), ("gain", "relative"))):
        before, after = _abs_values(run, f"{kind}_before"), _abs_values(run, f"{kind}_after")
        vals = np.concatenate([before, after])
        vals = vals[vals > 0]
        left = 70 + k * 450
        if not vals.size:
            body.append(svg_text(left + 170, 120, f"{kind}: no residual", size=12))
            continue
        hi = math.log10(vals.max())
        lo = max(math.log10(vals.min()), hi - 7)  # an exact 0 (1e-16) would stretch the axis
        bins = np.logspace(lo - 0.1, max(hi, lo + 1) + 0.1, 30)
        counts = [np.histogram(np.maximum(v, bins[0]), bins=bins)[0] for v in (before, after)]
        top = max(int(max(c.max() for c in counts)), 1) * 1.08
        panel = Panel(left, 28, 340, 190, (bins[0], bins[-1]), (0, top), xlog=True)
        entries = []
        for v, c, colour, label in ((before, counts[0], _BEFORE, "before"),
                                    (after, counts[1], _AFTER, "after")):
            xs = np.repeat(panel.x(bins), 2)
            ys = np.concatenate([[panel.y(0)], np.repeat(panel.y(c), 2), [panel.y(0)]])
            body.append(polyline(xs, ys, fill=colour, stroke=colour, width=0.8, opacity=0.6))
            entries.append((colour, f"{label} (median {np.median(v):.3g})" if v.size
                            else label))
        body.append(panel.frame(xticks=log_ticks(bins[0], bins[-1]),
                                yticks=nice_ticks(0, top, 4), ylabel="edges",
                                xlabel=f"|{kind} residual| per edge and channel ({unit})"))
        body.append(legend(left + 8, 34, entries, width=170))
    return svg_figure(_WIDTH * 0.75, 268, "".join(body), f"{view['node_kind']} residual "
                      "histograms")


def _node_values(view, run):
    """Per node: box, mean gain, mean offset at the node centre, mean gradient across it."""
    out = []
    for node in view["tiles"]:
        corr = run.corrections.get(node["tile_id"])
        y0, y1, x0, x1 = node["bbox"]
        if corr is None:
            continue
        cx, cy = (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0
        ox, oy = corr["origin"]
        slope = corr["slope"]
        level = corr["offset"] + slope[:, 0] * (cx - ox) + slope[:, 1] * (cy - oy)
        across = np.hypot(slope[:, 0] * (x1 - x0), slope[:, 1] * (y1 - y0))
        out.append((node, float(np.mean(corr["gain"])), float(np.mean(level)),
                    float(np.mean(across)), corr))
    return out


def _maps_figure(view, run, sky):
    """Maps of the solved gains, offsets (at each node's centre) and gradients."""
    values = _node_values(view, run)
    if not values:
        return _note("no solved corrections to map")
    alpha = 0.8 if view["node_kind"] == "tiles" else 0.35
    width, height, panels = sky.panels(3, [v[0]["bbox"] for v in values])
    body = []
    for k, (panel, title) in enumerate(zip(panels, (
            "gain (mean over channels)", "offset at the node centre (data units)",
            "gradient: change across the node (data units)"))):
        vals = np.array([v[k + 1] for v in values])
        fin = vals[np.isfinite(vals)]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        scale = "diverging" if k < 2 else "sequential"
        under, frame = sky.draw(panel, title, k == 0)
        boxes = [under, f'<g fill-opacity="{alpha}" stroke="#111" stroke-width="0.6">']
        boxes += [f'<rect {panel.box(*v[0]["bbox"])} fill="{colour}"><title>'
                  f'{_esc(v[0]["tile_id"])}: {val:.5g}</title></rect>'
                  for v, val, colour in zip(values, vals, colours(vals, lo, hi, scale=scale))]
        body.append(panel.clipped("".join(boxes) + "</g>"))
        body.append(panel.colour_bar(lo, hi, scale=scale))
        body.append(frame)
    return svg_figure(width, height, "".join(body), f"{view['node_kind']} corrections")


def _preview_strip(images, gap=8):
    """The previews side by side with one asinh stretch: one PNG, encoded by OpenCV.

    Each preview is sampled to at most :data:`_PREVIEW_PX` px (the page shows no more),
    drawn with row 0 at the bottom (as the mosaic's FITS file is shown), NaN black.
    """
    from ..core.display import asinh_stretch, eight_bit, png_bytes

    titles = [t for t, _ in images]
    sampled = [np.asarray(_subsampled(im, _PREVIEW_PX)[0], dtype=np.float64)
               for _, im in images]
    stretched, _ = asinh_stretch(sampled)
    h = max(s.shape[0] for s in stretched)
    parts = []
    for s in stretched:
        if s.ndim == 3 and s.shape[2] >= 3:
            rgb = s[..., :3]
        else:  # grey (two channels: their mean)
            rgb = np.repeat((s if s.ndim == 2 else s.mean(axis=2))[..., None], 3, axis=2)
        rgb = eight_bit(rgb)[::-1]
        pad = np.full((h, rgb.shape[1] + gap, 3), 255, np.uint8)  # white: the gap, and above
        pad[h - rgb.shape[0]:, :rgb.shape[1]] = rgb  # a lower preview (bottoms aligned)
        parts.append(pad)
    strip = np.concatenate(parts, axis=1)[:, :-gap]
    caption = " | ".join(titles) + (" (one asinh stretch for all)" if len(titles) > 1 else "")
    return (_img_tag(png_bytes(strip, compression=1), "previews")
            + f'<p class="caption">{_esc(caption)}</p>')


# -------------------------------------------------------------------------------- sections
def _residual_line(res):
    """``median before -> after`` of a harmonization's residual summary."""
    if not isinstance(res, dict):
        return "&ndash;"
    return (f"{_fmt(res.get('offset_before_median'))} &rarr; "
            f"{_fmt(res.get('offset_after_median'))}")


def _summary_section(report):
    fp = report.get("frame_photometry") or {}
    harm = report.get("harmonization") or {}
    shape = report.get("canvas_shape") or ["?", "?"]
    rows = [("input", report.get("input_folder") or report.get("tiles_dir")),
            ("mosaic", f"{shape[1]} x {shape[0]} px, {report.get('channels', '?')} channel(s)"),
            ("frames", len(report.get("frames") or []) or None),
            ("tiles", len(report.get("tiles") or [])),
            ("frame photometry", f"{fp.get('status', 'off')}; {fp.get('n_solved', 0)} of "
                                 f"{fp.get('n_frames', 0)} frames solved" if fp.get("status")
             else "off"),
            ("frame overlap offsets, median", _Html(
                f"{_fmt((fp.get('overlap_offsets_before') or {}).get('median'))} &rarr; "
                f"{_fmt((fp.get('overlap_offsets_after') or {}).get('median'))}")),
            ("tile photometry", harm.get("status") or "off"),
            ("tile overlap offsets, |median|", _Html(_residual_line(harm.get("residuals")))),
            ("background", (harm.get("background") or {}).get("decision")),
            ("blending", (report.get("blending") or {}).get("blend")),
            ("total time", f"{float_or_nan((report.get('timings') or {}).get('total')):.1f} s"),
            ("outputs", _Html("<br>".join(
                f"{_esc(k)}: <code>{_esc(v)}</code>"
                for k, v in (report.get("outputs") or {}).items())))]
    return _table([{"k": k, "v": v} for k, v in rows if v is not None], ["k", "v"],
                  cls="kv")


def _run_warnings(report):
    """Every [GRID] warning of the run (the run's own list, else the harmonizations')."""
    if isinstance(report.get("warnings"), list):
        return [str(w) for w in report["warnings"]]
    out = []
    for harm in ((report.get("frame_photometry") or {}).get("harmonize"),
                 report.get("harmonization")):
        if isinstance(harm, dict):
            out += [str(w) for w in harm.get("warnings") or []]
    return out


def _warnings_section(report):
    warnings = _run_warnings(report)
    if not warnings:
        return '<p class="ok">No warning: every step ran as planned.</p>'
    rows = [{"warning": w, "what to do": warning_advice(w)} for w in warnings]
    return _table(rows, ["warning", "what to do"], max_rows=200)


def _edges_table(run):
    rows = edge_residual_table(run)
    columns = ["src", "dst", "channel", "n_valid", "status", "a", "sigma_a", "b",
               "offset_before", "offset_after", "gain_before", "gain_after"]
    return _table(rows, columns, labels={"a": "gain ratio a", "sigma_a": "σ(a)",
                                         "b": "offset b"})


def _nodes_table(view, run):
    rows = []
    for node, _, level, across, corr in _node_values(view, run):
        rows.append({"id": node["tile_id"], "gain": _Html(_fmt_channels(corr["gain"])),
                     "σ(gain)": _Html(_fmt_channels(corr["gain_err"])),
                     "offset at centre": _Html(_fmt(level)),
                     "change across": _Html(_fmt(across)), "status": corr["status"]})
    return _table(rows, ["id", "gain", "σ(gain)", "offset at centre", "change across",
                         "status"])


def _graph_section(report, kind, sky):
    view = graph_view(report, kind)
    if view is None:
        what = ("frame photometry was off or had fewer than two frames" if kind == "frames"
                else "the tile photometry was off or had a single tile")
        return _note(f"No {kind[:-1]} graph in this report ({what}).")
    n_edges = len(view["edges"]) or len((view.get("edge_residuals") or {}).get("edges", []))
    parts = [f"<p>{len(view['tiles'])} {kind}, {n_edges} fitted overlaps; reference "
             f"{_esc(', '.join(str(r) for r in view['references']) or '-')}.  Boxes and edges "
             "are drawn where the nodes lie on the mosaic (x to the right, y up, as the "
             "previews); an edge joins the centres of two overlapping nodes.</p>"]
    try:
        run = unpack_run(view)  # once for every figure and table of the section
    except Exception as exc:  # noqa: BLE001 - the report is a view, never a reason to fail
        return parts[0] + _note(f"The {kind[:-1]} graph could not be read "
                                f"({type(exc).__name__}: {exc}); grid_report.json holds it.")
    for title, func in (("graph", lambda: _graph_figure(view, run, sky)),
                        ("histograms", lambda: _histogram_figure(view, run)),
                        ("maps", lambda: _maps_figure(view, run, sky))):
        parts.append(_guarded(func, title))
    parts.append("<details><summary>per-node corrections</summary>"
                 + _guarded(lambda: _nodes_table(view, run), "nodes") + "</details>")
    parts.append("<details><summary>per-edge fits and residuals</summary>"
                 + _guarded(lambda: _edges_table(run), "edges") + "</details>")
    return "".join(parts)


def _background_section(report):
    harm = report.get("harmonization") or {}
    bg = harm.get("background")
    if not isinstance(bg, dict):
        return _note("No background matching in this run (off, or no tile photometry).")
    head = (f"<p><b>{_esc(bg.get('decision'))}</b> (fraction {_fmt(bg.get('fraction'))} of the "
            f"proposed shifts): {_esc(bg.get('message', ''))}</p>")
    rows = []
    for tid, level in (bg.get("backgrounds") or {}).items():
        rows.append({"tile": tid, "background": _Html(_fmt_channels(level)),
                     "proposed shift": _Html(_fmt_channels((bg.get("proposed_shifts") or {})
                                                           .get(tid, []))),
                     "applied shift": _Html(_fmt_channels((bg.get("shifts") or {})
                                                          .get(tid, [])))})
    return head + _table(rows, ["tile", "background", "proposed shift", "applied shift"])


def _timings_section(report):
    timings = dict(report.get("timings") or {})
    total = float_or_nan(timings.pop("total", None))
    rows = []
    steps = [(k, v) for k, v in timings.items()]
    for name, harm in (("frame photometry", (report.get("frame_photometry") or {})
                        .get("harmonize")), ("tile photometry", report.get("harmonization"))):
        for k, v in ((harm or {}).get("step_times_s") or {}).items():
            steps.append((f"{name}: {k}", v))
    scale = max([float_or_nan(v) for _, v in steps if np.isfinite(float_or_nan(v))] + [1e-9])
    for name, sec in steps:
        sec = float_or_nan(sec)
        width = 0 if not np.isfinite(sec) else round(300 * sec / scale)
        rows.append({"step": name, "seconds": sec,
                     "": _Html(f'<span class="bar" style="width:{width}px"></span>')})
    return (f"<p>total {total:.2f} s</p>" if np.isfinite(total) else "") + _table(
        rows, ["step", "seconds", ""], max_rows=200)


def _demo_section(report):
    demo = report.get("demo")
    if not isinstance(demo, dict):
        return ""
    text = _esc(demo_quality_table(demo))
    return ("<p>The demo's mosaics against the truth of its synthetic survey (seam metric: "
            "1 = seamless; frame offsets: spread between the frames' regions of the "
            f"mosaic).</p><pre>{text}</pre><details><summary>the injected errors and every "
            f"measure</summary>{_generic(demo)}</details>")


def _guarded(func, what):
    """``func()``, or a note in its place when it fails (a report is never lost to a plot)."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001 - one section must not cost the page
        return _note(f"The {what} could not be drawn ({type(exc).__name__}: {exc}); "
                     "grid_report.json holds its data.")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;
max-width:1400px;padding:0 1.5em 3em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{border-bottom:2px solid #ddd;padding-top:.6em}
nav a{margin-right:1em}img{max-width:100%;height:auto;display:block;margin:.5em 0}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
table.data th{background:#f3f3f3}table.small{font-size:.8em}table.kv th{background:#fafafa}
.note{color:#8a5a00}.ok{color:#1a7f37}
.bar{display:inline-block;height:.8em;background:#4c72b0;min-width:1px}
details{margin:.4em 0}summary{cursor:pointer;color:#245}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
"""


def render_html_report(report, *, images=None, title=None, preview_step=None):
    """The HTML page of a run's report: one self-contained string.

    Parameters
    ----------
    report : dict
        The parsed ``grid_report.json`` of a run (any version: missing sections are said
        to be missing, unknown ones are shown generically).
    images : sequence of (str, numpy.ndarray), optional
        Previews to show side by side with one stretch, e.g. ``[("plain placement",
        before), ("this run", after)]``, arrays ``(h, w)`` or ``(h, w, C)`` sampled every
        ``preview_step`` mosaic pixels (row 0 = mosaic row 0).  The last one is also the
        backdrop of the graphs and maps.
    title : str, optional
    preview_step : int, optional
        Mosaic pixels per preview pixel (default: from the preview and the canvas shape).

    Returns
    -------
    str
        An HTML5 document; images are PNG ``data:`` URIs, nothing is loaded from anywhere.

    Examples
    --------
    >>> page = render_html_report({"tiles": [], "a_new_section": {"answer": 42}})
    >>> page.startswith("<!DOCTYPE html>"), "a_new_section" in page, "42" in page
    (True, True, True)
    """
    if not isinstance(report, dict):
        raise TypeError(f"report must be the parsed grid_report.json dict, got "
                        f"{type(report).__name__}")
    images = [(str(t), im) for t, im in images or [] if im is not None]
    shape = report.get("canvas_shape")
    shape = tuple(shape) if isinstance(shape, (list, tuple)) and len(shape) == 2 else None
    sky = _sky(images, shape, preview_step)
    sections = [("summary", "Summary", lambda: _summary_section(report)),
                ("warnings", "Warnings and what to do", lambda: _warnings_section(report)),
                ("previews", "Before / after", lambda: _preview_strip(images) if images
                 else _note("No preview image was given to the report."))]
    sections += [(f"{k}-graph", f"The {k[:-1]} graph" + (" (before stacking)" if k == "frames"
                                                        else " (at assembly)"),
                  lambda k=k: _graph_section(report, k, sky)) for k in GRAPH_KINDS]
    sections += [
        ("background", "Background decision", lambda: _background_section(report)),
        ("blending", "Blending", lambda: _generic(report.get("blending") or {})),
        ("demo", "Against the truth (demo)", lambda: _demo_section(report)),
        ("timings", "Timings", lambda: _timings_section(report)),
        ("options", "Options", lambda: _generic(report.get("options") or {})),
        ("details", "Frames, tiles and every other field", lambda: _details_section(report))]
    body, nav = [], []
    for anchor, heading, func in sections:
        content = _guarded(func, heading.lower())
        if content:
            nav.append(f'<a href="#{anchor}">{_esc(heading)}</a>')
            body.append(f'<section id="{anchor}"><h2>{_esc(heading)}</h2>{content}</section>')
    title = title or "Grid/Survey mode report"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_esc(title)}</h1><nav>{''.join(nav)}</nav>{''.join(body)}</body></html>\n")


def _details_section(report):
    """The frames, the tiles and the report's other fields, generically."""
    parts = []
    for key, label in (("frames", "frames"), ("tile_stacking", "tile stacking"),
                       ("tiles", "tiles"), ("frame_photometry", "frame photometry, all fields"),
                       ("harmonization", "tile photometry, all fields"), ("grid", "grid")):
        if report.get(key):
            parts.append(f"<details><summary>{_esc(label)}</summary>"
                         f"{_generic(report[key])}</details>")
    other = {k: v for k, v in report.items() if k not in _KNOWN}
    if other:
        parts.append("<h3>Other fields</h3>" + _generic(other))
    return "".join(parts)
