"""Figures of the report page written as SVG: panels, ticks, colour scales, shapes.

The page's graphs, maps and histograms are boxes, lines, dots and bars over a mosaic
preview: written as SVG elements they take milliseconds (drawn by matplotlib and encoded
as PNG they took 1-2 s of every run, most of it in tick and text objects), stay sharp at
any zoom, and every edge and node can carry a tooltip (its ids and values).  Everything
here is a pure function of numbers to text; nothing is imported beyond numpy and the
package's PNG encoder (OpenCV) for the backdrop.

Coordinates are figure pixels, y downwards; a :class:`Panel` maps data to them (y up).
"""

import base64
import html
import math

import numpy as np

from ..core.display import eight_bit, png_bytes

__all__ = ["Panel", "colours", "colour_bar", "nice_ticks", "log_ticks", "tick_labels",
           "svg_figure", "svg_text", "backdrop_uri", "backdrop_image", "polyline", "legend"]

#: Colour scales: anchors ``(position in [0, 1], (r, g, b))`` interpolated linearly.
COLOUR_SCALES = {
    "sequential": ((0.0, (45, 30, 92)), (0.3, (46, 96, 160)), (0.55, (35, 156, 140)),
                   (0.8, (126, 198, 90)), (1.0, (243, 227, 75))),
    "diverging": ((0.0, (59, 91, 189)), (0.5, (242, 240, 238)), (1.0, (192, 57, 43))),
}
_MISSING = "#9a9a9a"  # a value that is NaN
_FONT = "font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif"


def _attr(value):
    return html.escape(str(value), quote=True)


def colours(values, lo, hi, *, scale="sequential", log=False):
    """``#rrggbb`` of each value on a colour scale from ``lo`` to ``hi``.

    Parameters
    ----------
    values : array_like
    lo, hi : float
        The ends of the scale (values beyond are clipped to them).
    scale : {'sequential', 'diverging'}
    log : bool
        Logarithmic scale (``lo > 0``); values <= 0 take the colour of ``lo``.

    Returns
    -------
    list of str
        One colour per value; NaN values are grey.

    Examples
    --------
    >>> colours([0.0, 1.0, float("nan")], 0.0, 1.0)
    ['#2d1e5c', '#f3e34b', '#9a9a9a']
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(v)
    if log:
        lo, hi = math.log10(lo), math.log10(max(hi, lo * 10 if lo > 0 else 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            v = np.log10(np.where(v > 0, v, 10.0 ** lo))
    t = np.clip((v - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    anchors = COLOUR_SCALES[scale]
    pos = [a[0] for a in anchors]
    rgb = np.stack([np.interp(np.nan_to_num(t), pos, [a[1][c] for a in anchors])
                    for c in range(3)], axis=-1)
    rgb = np.rint(rgb).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" if ok else _MISSING
            for (r, g, b), ok in zip(rgb.tolist(), finite)]


def nice_ticks(lo, hi, n=5):
    """About ``n`` round values (1, 2 or 5 times a power of ten apart) inside ``[lo, hi]``.

    Examples
    --------
    >>> nice_ticks(0, 5174)
    [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [float(lo)] if math.isfinite(lo) else []
    raw = (hi - lo) / max(n, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)),
               key=lambda st: abs((hi - lo) / st - n))  # the count nearest n
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def log_ticks(lo, hi, n=6):
    """Powers of ten inside ``[lo, hi]`` (``lo > 0``), every k-th so that at most ``n``.

    Examples
    --------
    >>> log_ticks(2e-4, 3e3)
    [0.001, 0.1, 10.0, 1000.0]
    """
    if not (lo > 0 and hi >= lo):
        return []
    k0, k1 = math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9)
    every = max(1, math.ceil((k1 - k0 + 1) / n))
    return [10.0 ** k for k in range(k1, k0 - 1, -every)][::-1]


def tick_labels(values, log=False):
    """The texts of ticks: ``1e-04`` on a log scale; otherwise as many decimals as the
    step between them needs, so that no two read the same.

    Examples
    --------
    >>> tick_labels([0.001, 0.1], log=True), tick_labels([0.0, 2000.0])
    (['1e-03', '1e-01'], ['0', '2000'])
    >>> tick_labels([0.9999998, 1.0, 1.0000002])
    ['0.9999998', '1.0000000', '1.0000002']
    """
    if log:
        return [f"{v:.0e}" for v in values]
    steps = np.diff(np.asarray(values, dtype=np.float64))
    steps = steps[steps > 0]
    decimals = (max(0, -math.floor(math.log10(steps.min()) + 1e-9)) if steps.size else
                (6 if values and 0 < abs(values[0]) < 1 else 0))
    return [f"{v:.{min(decimals, 12)}f}" for v in values]


def svg_text(x, y, text, *, size=11, anchor="middle", rotate=False, colour="#222",
             weight=None):
    """A ``<text>`` element at ``(x, y)`` (its baseline), optionally turned upwards."""
    turn = f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else ""
    bold = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{colour}"{bold}{turn}>{html.escape(str(text))}</text>')


class Panel:
    """A rectangle of a figure (pixels) that shows ``xlim`` x ``ylim`` of data, y up.

    Parameters
    ----------
    left, top, width, height : float
        The panel in figure pixels.
    xlim, ylim : tuple of float
    xlog, ylog : bool
        Logarithmic axes (limits > 0).

    Attributes
    ----------
    xlim, ylim : tuple of float
        As given.

    Examples
    --------
    >>> p = Panel(10, 20, 100, 50, (0, 10), (0, 5))
    >>> float(p.x(5)), float(p.y(0)), float(p.y(5))
    (60.0, 70.0, 20.0)
    """

    def __init__(self, left, top, width, height, xlim, ylim, *, xlog=False, ylog=False):
        self.left, self.top, self.width, self.height = left, top, width, height
        self.xlog, self.ylog = xlog, ylog
        self.xlim, self.ylim = tuple(xlim), tuple(ylim)
        self._x = self._range(xlim, xlog)
        self._y = self._range(ylim, ylog)

    @staticmethod
    def _range(lim, log):
        lo, hi = (math.log10(v) for v in lim) if log else (float(v) for v in lim)
        return lo, (hi if hi > lo else lo + 1.0)

    def x(self, v):
        """Figure x of data x."""
        v = np.log10(v) if self.xlog else np.asarray(v, dtype=np.float64)
        lo, hi = self._x
        return self.left + (v - lo) / (hi - lo) * self.width

    def y(self, v):
        """Figure y of data y (up on the page for larger values)."""
        v = np.log10(v) if self.ylog else np.asarray(v, dtype=np.float64)
        lo, hi = self._y
        return self.top + self.height - (v - lo) / (hi - lo) * self.height

    def box(self, y0, y1, x0, x1):
        """The ``x``, ``y``, ``width`` and ``height`` attributes of the pixels ``y0:y1``,
        ``x0:x1`` (their outer edges, half a pixel beyond the centres)."""
        left, right = float(self.x(x0 - 0.5)), float(self.x(x1 - 0.5))
        top, bottom = float(self.y(y1 - 0.5)), float(self.y(y0 - 0.5))
        return (f'x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
                f'height="{bottom - top:.1f}"')

    def colour_bar(self, lo, hi, **kw):
        """A :func:`colour_bar` right of the panel, along its height."""
        return colour_bar(self.left + self.width + 8, self.top + 10, 12, self.height - 20, lo,
                          hi, **kw)

    def clipped(self, body):
        """``body`` (figure coordinates) drawn inside the panel only: a nested viewport."""
        box = f"{self.left:.1f} {self.top:.1f} {self.width:.1f} {self.height:.1f}"
        x, y, w, h = box.split()
        return (f'<svg x="{x}" y="{y}" width="{w}" height="{h}" viewBox="{box}" '
                f'overflow="hidden">{body}</svg>')

    def frame(self, *, title=None, xlabel=None, ylabel=None, xticks=(), yticks=()):
        """The panel's border, ticks with their labels, axis labels and title."""
        L, T, W, H = self.left, self.top, self.width, self.height
        out = [f'<rect x="{L:.1f}" y="{T:.1f}" width="{W:.1f}" height="{H:.1f}" '
               'fill="none" stroke="#333" stroke-width="0.8"/>']
        for v, text in zip(xticks, tick_labels(xticks, self.xlog)):
            x = float(self.x(v))
            out.append(f'<line x1="{x:.1f}" y1="{T + H:.1f}" x2="{x:.1f}" y2="{T + H + 4:.1f}" '
                       'stroke="#333"/>')
            out.append(svg_text(x, T + H + 15, text, size=10))
        for v, text in zip(yticks, tick_labels(yticks, self.ylog)):
            y = float(self.y(v))
            out.append(f'<line x1="{L - 4:.1f}" y1="{y:.1f}" x2="{L:.1f}" y2="{y:.1f}" '
                       'stroke="#333"/>')
            out.append(svg_text(L - 6, y + 3.5, text, size=10, anchor="end"))
        if title:
            out.append(svg_text(L + W / 2, T - 7, title, size=12))
        if xlabel:
            out.append(svg_text(L + W / 2, T + H + 31, xlabel, size=10))
        if ylabel:
            out.append(svg_text(L - 44, T + H / 2, ylabel, size=10, rotate=True))
        return "".join(out)


def colour_bar(left, top, width, height, lo, hi, *, scale="sequential", log=False,
               label=None, steps=48):
    """A vertical colour bar from ``lo`` (bottom) to ``hi`` with ticks on its right, and
    ``label`` along it when the bar is long enough to hold it (no bar below 30 px)."""
    if height < 30:
        return ""
    if log:
        lo = max(lo, 1e-300)
        hi = max(hi, lo * 10)
        edges = np.logspace(math.log10(lo), math.log10(hi), steps + 1)
    else:
        hi = hi if hi > lo else lo + 1.0
        edges = np.linspace(lo, hi, steps + 1)
    mids = np.sqrt(edges[:-1] * edges[1:]) if log else (edges[:-1] + edges[1:]) / 2
    h = height / steps
    out = [f'<rect x="{left:.1f}" y="{top + height - (k + 1) * h:.2f}" width="{width:.1f}" '
           f'height="{h + 0.3:.2f}" fill="{c}"/>'
           for k, c in enumerate(colours(mids, lo, hi, scale=scale, log=log))]
    bar = Panel(left, top, width, height, (0, 1), (lo, hi), ylog=log)
    out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{width:.1f}" height="{height:.1f}" '
               'fill="none" stroke="#333" stroke-width="0.6"/>')
    ticks = log_ticks(lo, hi) if log else nice_ticks(lo, hi, 4)
    for v, text in zip(ticks, tick_labels(ticks, log)):
        y = float(bar.y(v))
        out.append(f'<line x1="{left + width:.1f}" y1="{y:.1f}" x2="{left + width + 4:.1f}" '
                   f'y2="{y:.1f}" stroke="#333"/>')
        out.append(svg_text(left + width + 6, y + 3.5, text, size=10, anchor="start"))
    if label and len(label) * 5.5 <= height:  # else longer than the bar: the title says it
        out.append(svg_text(left + width + 58, top + height / 2, label, size=10, rotate=True))
    return "".join(out)


def backdrop_uri(grey):
    """A grey picture (values in [0, 1], NaN transparent, row 0 at the bottom) as a PNG
    ``data:`` URI (:func:`~photometry_graph.core.display.png_bytes`).

    Examples
    --------
    >>> backdrop_uri(np.array([[0.0, np.nan], [1.0, 0.5]]))[:22]
    'data:image/png;base64,'
    """
    g = np.asarray(grey, dtype=np.float64)[::-1]
    level = eight_bit(np.clip(g, 0.0, 1.0))  # NaN: 0, and transparent
    rgba = np.dstack([level, level, level, np.where(np.isfinite(g), 255, 0).astype(np.uint8)])
    png = png_bytes(rgba, compression=1)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def backdrop_image(uri, panel, extent, *, opacity=0.45):
    """An ``<image>`` of ``uri`` (:func:`backdrop_uri`) in ``panel``, covering
    ``extent = (x0, x1, y0, y1)`` in data units."""
    x0, x1, y0, y1 = extent
    left, right = float(panel.x(x0)), float(panel.x(x1))
    top, bottom = float(panel.y(y1)), float(panel.y(y0))
    return (f'<image x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
            f'height="{bottom - top:.1f}" preserveAspectRatio="none" opacity="{opacity}" '
            f'style="image-rendering:pixelated" href="{uri}"/>')


def polyline(xs, ys, *, fill="none", stroke="#333", width=1.0, opacity=None):
    """A ``<polygon>`` (``fill`` given) or ``<polyline>`` through figure points."""
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    tag = "polygon" if fill != "none" else "polyline"
    alpha = f' opacity="{opacity}"' if opacity is not None else ""
    return (f'<{tag} points="{points}" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{width}"{alpha}/>')


def legend(left, top, entries, *, title=None, width=150):
    """A box of ``(colour, label)`` lines, top-left corner at ``(left, top)``."""
    rows = ([svg_text(left + 8, top + 14, title, size=10, anchor="start", weight="bold")]
            if title else [])
    y = top + (30 if title else 14)
    for colour, label in entries:
        rows.append(f'<line x1="{left + 6:.1f}" y1="{y - 4:.1f}" x2="{left + 20:.1f}" '
                    f'y2="{y - 4:.1f}" stroke="{colour}" stroke-width="4"/>')
        rows.append(svg_text(left + 24, y, label, size=9, anchor="start"))
        y += 14
    box = (f'<rect x="{left:.1f}" y="{top:.1f}" width="{width}" height="{y - top - 6:.1f}" '
           'fill="white" fill-opacity="0.85" stroke="#bbb"/>')
    return box + "".join(rows)


def svg_figure(width, height, body, alt):
    """The ``<svg>`` element of a figure of ``width`` x ``height`` px holding ``body``.

    Examples
    --------
    >>> svg_figure(10, 5, "", "nothing")[:31]
    '<svg width="10" height="5" view'
    """
    return (f'<svg width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
            f'aria-label="{_attr(alt)}" style="{_FONT};max-width:100%;height:auto">'
            f"{body}</svg>")
