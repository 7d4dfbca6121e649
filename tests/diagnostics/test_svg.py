"""diagnostics.svg: the page's figures as SVG text (scales, ticks, panels)."""

import re

import numpy as np
import pytest

from photometry_graph.diagnostics.svg import (COLOUR_SCALES, Panel, colour_bar, colours,
                                              log_ticks, nice_ticks, tick_labels)


def _rgb(hex_colour):
    return tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))


def test_colours_run_from_the_first_to_the_last_anchor_and_log_scales_by_decades():
    first, last = (COLOUR_SCALES["diverging"][k][1] for k in (0, -1))
    got = colours([-5.0, 0.0, 10.0, 99.0, np.nan], 0.0, 10.0, scale="diverging")
    assert [_rgb(c) for c in got[:3]] == [first, first, last]  # clipped at both ends
    assert got[3] == got[2] and got[4] == "#9a9a9a"  # beyond hi: hi's colour; NaN: grey
    # a log scale puts 10 halfway between 1 and 100, as a linear one puts 0.5 in [0, 1]
    assert colours([10.0], 1.0, 100.0, log=True) == colours([0.5], 0.0, 1.0)
    assert colours([0.0], 1.0, 100.0, log=True) == colours([1.0], 1.0, 100.0, log=True)


@pytest.mark.parametrize("lo, hi", [(0, 5174), (-0.5, 2245.5), (0.99991, 1.00013),
                                    (-731.2, 12.5), (3e-7, 4e-7), (12, 13)])
def test_nice_ticks_are_round_evenly_spaced_and_read_differently(lo, hi):
    ticks = nice_ticks(lo, hi, 5)
    assert 3 <= len(ticks) <= 8
    assert lo - 1e-12 <= ticks[0] and ticks[-1] <= hi + 1e-12
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0], rtol=1e-6)
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels)
    assert all(float(t) == pytest.approx(v, abs=steps[0] * 1e-6) for t, v in zip(labels, ticks))


def test_log_ticks_are_decades_inside_the_range_at_most_n():
    assert log_ticks(2e-4, 3e3) == [1e-3, 1e-1, 1e1, 1e3]
    assert log_ticks(1.0, 1e12, n=4) == [1e0, 1e4, 1e8, 1e12]
    assert log_ticks(2.0, 3.0) == [] and log_ticks(0.0, 1.0) == []
    assert tick_labels([1e-3, 1e3], log=True) == ["1e-03", "1e+03"]


def test_panel_maps_data_to_figure_pixels_with_y_up_and_log_axes():
    p = Panel(50, 20, 200, 100, (-0.5, 99.5), (0.0, 10.0))
    assert float(p.x(-0.5)) == 50 and float(p.x(99.5)) == 250 and float(p.x(49.5)) == 150
    assert float(p.y(0.0)) == 120 and float(p.y(10.0)) == 20
    q = Panel(0, 0, 300, 100, (1e-3, 1e0), (0, 1), xlog=True)
    assert np.allclose(q.x([1e-3, 1e-2, 1e-1, 1.0]), [0, 100, 200, 300])
    frame = p.frame(title="t", xticks=[0, 50], yticks=[0, 5, 10], xlabel="x", ylabel="y")
    assert frame.count("<line") == 5 and ">t</text>" in frame and ">50</text>" in frame


def test_colour_bar_spans_its_scale_bottom_to_top():
    bar = colour_bar(10, 0, 12, 100, 1e-3, 1e3, log=True, label="residual", steps=20)
    fills = re.findall(r'y="([0-9.]+)" width="12.0" height="[0-9.]+" fill="(#[0-9a-f]{6})"',
                       bar)
    assert len(fills) == 20
    (y_first, c_first), (y_last, c_last) = fills[0], fills[-1]
    assert float(y_first) > float(y_last)  # the first step is drawn at the bottom
    assert c_first == colours([1e-3 * 10 ** 0.15], 1e-3, 1e3, log=True)[0]
    assert c_last == colours([1e3 / 10 ** 0.15], 1e-3, 1e3, log=True)[0]
    assert all(f">1e{k:+03d}</text>" in bar for k in (-3, -1, 1, 3)) and "residual" in bar
