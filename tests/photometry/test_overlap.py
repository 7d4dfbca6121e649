import json
import logging
import math
import sys

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import photometry_graph.photometry.overlap as overlap
from photometry_graph.datasets import make_overlap_pair, make_survey
from photometry_graph.photometry.overlap import (build_tile_overlap_graph, edge_status,
                                      find_overlapping_pairs, fit_overlap_edges,
                                      sparsify_overlap_graph)
from photometry_graph.photometry.regression import PairwiseFit
from photometry_graph.core.tiles import BBox, TilePhotometryInfo


def _brute_force_pairs(boxes):
    return sorted((i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
                  if boxes[i].overlaps(boxes[j]))


def _true_ratio(survey, fit):
    c = fit.channel
    a = survey.gains[fit.dst, c] / survey.gains[fit.src, c]
    b = survey.offsets[fit.dst, c] - a * survey.offsets[fit.src, c]
    return a, b


def _side_edges(graph):
    """Edges between left/right or top/bottom neighbours (not diagonal)."""
    return [(u, v) for u, v, e in graph.edges(data=True) if max(e["bbox"].shape) > 100]


boxes_strategy = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 15), st.integers(0, 40), st.integers(0, 15))
    .map(lambda t: BBox(t[0], t[0] + t[1], t[2], t[2] + t[3])),
    max_size=30)


@settings(max_examples=200, deadline=None)
@given(boxes_strategy)
def test_sweep_finds_exactly_the_brute_force_pairs(boxes):
    assert find_overlapping_pairs(boxes) == _brute_force_pairs(boxes)


@pytest.mark.parametrize("empty_value", [0.0, np.nan])
def test_3x3_survey_graph_has_20_edges_with_true_valid_counts(empty_value, caplog):
    s = make_survey(3, 3, tile_size=128, overlap=0.2, rng=2, empty_zones=True,
                    empty_value=empty_value)
    # same data but masks computed from the data (0 / NaN borders must be excluded)
    tiles = [TilePhotometryInfo(t.tile_id, t.bbox, data=t.data) for t in s.tiles]
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        g = build_tile_overlap_graph(tiles)
    assert g.number_of_nodes() == 9
    assert g.number_of_edges() == 20          # 12 side + 8 diagonal neighbours
    assert len(_side_edges(g)) == 12
    assert g.has_edge(0, 4) and g.has_edge(2, 4) and not g.has_edge(0, 2)
    assert "[GRID] Photometry: built overlap graph with 20 edges" in caplog.text
    zone_edges = 0
    for u, v, e in g.edges(data=True):
        ti, tj = s.tiles[u], s.tiles[v]
        inter = ti.bbox.intersection(tj.bbox)
        true_joint = (ti.mask[inter.slices_in(ti.bbox)] & tj.mask[inter.slices_in(tj.bbox)])
        assert e["bbox"] == inter and e["area"] == inter.area
        assert e["n_valid"] == int(true_joint.sum()) == e["weight"]
        assert (e["src"], e["dst"]) == (min(u, v), max(u, v))
        assert e["fits"] == []
        zone_edges += e["n_valid"] < e["area"]
    assert zone_edges > 0                     # the empty zones really cut some overlaps
    for k in g.nodes:
        assert g.nodes[k]["bbox"] == s.tiles[k].bbox and g.nodes[k]["tile"] is tiles[k]


def test_compute_valid_false_does_not_touch_the_data():
    def unreadable():
        raise AssertionError("data must not be read")

    tiles = [TilePhotometryInfo(k, BBox(0, 10, 8 * k, 8 * k + 10), data=unreadable)
             for k in range(3)]
    g = build_tile_overlap_graph(tiles, compute_valid=False)
    assert sorted(g.edges) == [(0, 1), (1, 2)]
    assert g.edges[0, 1]["n_valid"] == g.edges[0, 1]["area"] == 20


def test_small_overlaps_are_dropped_and_isolated_nodes_kept():
    ones = np.ones((10, 10))
    tiles = [TilePhotometryInfo(0, BBox(0, 10, 0, 10), data=ones),
             TilePhotometryInfo(1, BBox(0, 10, 8, 18), data=ones),     # 20 px overlap
             TilePhotometryInfo(2, BBox(50, 60, 50, 60), data=ones)]   # alone
    assert build_tile_overlap_graph(tiles, min_overlap_pixels=20).number_of_edges() == 1
    g = build_tile_overlap_graph(tiles, min_overlap_pixels=21)
    assert g.number_of_edges() == 0 and g.number_of_nodes() == 3
    # an overlap where one tile is empty (zeros) has no valid pixel
    empty = ones.copy(); empty[:, :3] = 0.0
    tiles[0] = TilePhotometryInfo(0, BBox(0, 10, 0, 10), data=empty[:, ::-1])
    assert build_tile_overlap_graph(tiles).number_of_edges() == 0


def test_bad_tiles_are_rejected_with_a_message():
    ones = np.ones((4, 4))
    with pytest.raises(ValueError, match="duplicate tile_id 7"):
        build_tile_overlap_graph([TilePhotometryInfo(7, BBox(0, 4, 0, 4), data=ones),
                                  TilePhotometryInfo(7, BBox(0, 4, 2, 6), data=ones)])
    with pytest.raises(TypeError, match="TilePhotometryInfo"):
        build_tile_overlap_graph([BBox(0, 4, 0, 4)])


def test_string_tile_ids_work():
    ones = np.ones((10, 10))
    tiles = [TilePhotometryInfo("b", BBox(0, 10, 0, 10), data=ones),
             TilePhotometryInfo("a", BBox(0, 10, 5, 15), data=ones)]
    g = build_tile_overlap_graph(tiles)
    assert (g.edges["a", "b"]["src"], g.edges["a", "b"]["dst"]) == ("a", "b")


def test_fitted_gains_match_the_injected_ratios(caplog):
    s = make_survey(3, 3, 256, 0.2, rng=0, star_density=1.5e-3)
    g = build_tile_overlap_graph(s.tiles)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        counts = fit_overlap_edges(g, max_rel_gain_error=0.0015)
    assert sum(counts.values()) == 20 and counts["failed"] == 0
    assert "[GRID] Photometry: fitted 20 overlaps (ok=%d, offset-only=%d, failed=0)" % (
        counts["ok"], counts["offset_only"]) in caplog.text
    assert counts["ok"] >= 10
    for u, v, e in g.edges(data=True):
        (fit,) = e["fits"]
        assert isinstance(fit, PairwiseFit) and (fit.src, fit.dst) == (e["src"], e["dst"])
        assert e["status"] == fit.status
        a_true, b_true = _true_ratio(s, fit)
        if fit.status == "ok":
            assert abs(fit.a / a_true - 1) < 0.005
        # moments hold the relation on every edge that was not a failure
        err = fit.y_mean - a_true * fit.x_mean - b_true
        assert abs(err) < 4 * math.hypot(fit.sigma_y_mean, a_true * fit.sigma_x_mean)
        assert abs(err) < 0.05 * s.noise_sigma


def test_default_threshold_gains_are_within_their_uncertainty():
    s = make_survey(3, 3, 256, 0.2, rng=3, star_density=1.5e-3, empty_zones=True,
                    empty_value=np.nan)
    g = build_tile_overlap_graph(s.tiles)
    # the threshold of earlier versions (a gain only when sigma_a / a <= 1 %), on request
    counts = fit_overlap_edges(g, max_rel_gain_error=0.01)
    assert counts["ok"] >= 14
    for u, v in _side_edges(g):
        assert g.edges[u, v]["status"] == "ok"
    for u, v, e in g.edges(data=True):
        fit = e["fits"][0]
        assert fit.n_total <= e["n_valid"]
        if fit.status == "ok":
            a_true, _ = _true_ratio(s, fit)
            assert fit.sigma_a / fit.a <= 0.01
            assert abs(fit.a / a_true - 1) < 3.5 * fit.sigma_a
    # the default: every overlap gives a gain with an honest sigma (the corner overlaps
    # too, with a larger one), each within 3.5 sigma of the truth
    honest = fit_overlap_edges(g)
    assert honest["ok"] == g.number_of_edges() > counts["ok"]
    for u, v, e in g.edges(data=True):
        fit = e["fits"][0]
        a_true, _ = _true_ratio(s, fit)
        assert abs(fit.a / a_true - 1) < 3.5 * fit.sigma_a


def test_plane_fits_recover_injected_gradient_differences():
    s = make_survey(3, 3, 256, 0.2, rng=1, gradient=8.0, star_density=1.5e-3)
    origin = (100.0, 50.0)
    g = build_tile_overlap_graph(s.tiles)
    counts = fit_overlap_edges(g, model="plane", origin=origin)
    assert counts["ok"] >= 8 and g.graph["fit_model"] == "plane"
    for u, v, e in g.edges(data=True):
        fit = e["fits"][0]
        assert fit.model == "plane" and fit.origin == origin
        if fit.status == "failed":
            continue
        a_true = s.gains[fit.dst, 0] / s.gains[fit.src, 0]
        p_true = s.slopes[fit.dst, 0] - a_true * s.slopes[fit.src, 0]
        # the planar moments carry the gradient difference for every edge, to the
        # precision noise allows across the overlap's narrow side
        p_mom = np.subtract(fit.y_slope, a_true * np.asarray(fit.x_slope))
        narrow = min(e["bbox"].shape)
        tol = 4 * math.hypot(1.0, a_true) / math.sqrt(fit.n_used * narrow ** 2 / 12)
        assert np.abs(p_mom - p_true).max() < tol
        if fit.status == "ok":
            assert abs(fit.px - p_true[0]) < 4 * fit.sigma_px + 1e-4
            assert abs(fit.py - p_true[1]) < 4 * fit.sigma_py + 1e-4


def test_rgb_edges_get_one_fit_per_channel():
    s = make_survey(2, 2, 128, 0.25, channels=3, rng=4, star_density=2e-3)
    g = build_tile_overlap_graph(s.tiles)
    fit_overlap_edges(g)
    for u, v, e in g.edges(data=True):
        assert [f.channel for f in e["fits"]] == [0, 1, 2]
        for f in e["fits"]:
            if f.status == "ok":
                a_true, _ = _true_ratio(s, f)
                assert abs(f.a / a_true - 1) < 3.5 * f.sigma_a


def test_subsampling_is_reproducible():
    s = make_survey(1, 2, 128, 0.3, rng=5, star_density=2e-3)
    n_valid = build_tile_overlap_graph(s.tiles).edges[0, 1]["n_valid"]
    for kw, n_total in ((dict(polish=False), 2000),
                        (dict(polish=False, subsample="random", rng=np.random.default_rng(9)),
                         2000),
                        (dict(), n_valid)):        # polished: the fit uses every pixel
        runs = []
        for _ in range(2):
            g = build_tile_overlap_graph(s.tiles)
            kw_run = dict(kw)
            if "rng" in kw_run:
                kw_run["rng"] = np.random.default_rng(9)
            fit_overlap_edges(g, max_pixels=2000, min_pixels=200, **kw_run)
            runs.append(g.edges[0, 1]["fits"][0])
        assert runs[0].n_total == n_total
        assert runs[0].to_dict() == runs[1].to_dict()


@pytest.mark.parametrize("model", ["offset", "plane"])
def test_polished_subsample_fit_equals_the_exhaustive_fit(model):
    # clipping iterations on 5 000 of the ~24 000 pixels, final fit on all of them
    s = make_survey(2, 1, 256, 0.4, rng=11, star_density=1.5e-3,
                    gradient=4.0 if model == "plane" else 0.0)
    fits = {}
    for name, kw in (("exhaustive", dict(max_pixels=None)), ("polished", dict(max_pixels=5000)),
                     ("subsample", dict(max_pixels=5000, polish=False))):
        g = build_tile_overlap_graph(s.tiles)
        fit_overlap_edges(g, model=model, origin=(128.0, 128.0), **kw)
        fits[name] = g.edges[0, 1]["fits"][0]
    ex, po, sub = fits["exhaustive"], fits["polished"], fits["subsample"]
    assert ex.status == po.status == "ok"
    assert po.n_total == ex.n_total and abs(po.n_used - ex.n_used) <= 0.002 * ex.n_total
    # same pixels up to a handful at the clipping threshold: same estimates to a small
    # fraction of their uncertainties, and the same uncertainties
    assert abs(po.a - ex.a) < 0.25 * ex.sigma_a
    assert abs(po.b - ex.b) < 0.25 * ex.sigma_b
    assert po.sigma_a == pytest.approx(ex.sigma_a, rel=0.05)
    assert po.rms == pytest.approx(ex.rms, rel=0.01)
    assert po.x_mean == pytest.approx(ex.x_mean, abs=0.01)
    if model == "plane":
        assert abs(po.px - ex.px) < 0.25 * ex.sigma_px
        assert abs(po.py - ex.py) < 0.25 * ex.sigma_py
    # the subsample alone is measurably less precise
    assert sub.n_total == 5000 and sub.sigma_a > 1.5 * ex.sigma_a


def test_threaded_fits_equal_serial_fits():
    s = make_survey(2, 2, 128, 0.25, rng=4, star_density=2e-3)
    results = []
    for workers in (1, 2):
        g = build_tile_overlap_graph(s.tiles, workers=workers)
        fit_overlap_edges(g, model="plane", workers=workers, max_pixels=1000)
        results.append({e: [f.to_dict() for f in g.edges[e]["fits"]] for e in g.edges})
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="workers"):
        fit_overlap_edges(g, workers=0)


def test_a_failing_fit_marks_the_edge_failed_and_warns(monkeypatch, caplog):
    s = make_survey(2, 2, 96, 0.25, rng=6)
    g = build_tile_overlap_graph(s.tiles)

    def boom(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(overlap, "fit_pair_image", boom)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        counts = fit_overlap_edges(g)
    assert counts == {"ok": 0, "offset_only": 0, "failed": g.number_of_edges()}
    for u, v, e in g.edges(data=True):
        (fit,) = e["fits"]
        assert fit.status == "failed" and "synthetic failure" in fit.message
        assert fit.a == 1.0 and fit.b == 0.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(r.getMessage().startswith("[GRID]") for r in warnings)


def test_unreadable_tile_gives_failed_edges_not_a_crash(caplog):
    ones = np.ones((10, 10))
    good = TilePhotometryInfo(0, BBox(0, 10, 0, 10), data=ones)

    def broken():
        raise OSError("file vanished")

    bad = TilePhotometryInfo(1, BBox(0, 10, 5, 15), data=broken, mask=np.ones((10, 10), bool))
    g = build_tile_overlap_graph([good, bad])
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        counts = fit_overlap_edges(g)
    assert counts["failed"] == 1
    assert "file vanished" in g.edges[0, 1]["fits"][0].message
    assert "[GRID]" in caplog.text


def test_too_small_overlap_is_failed_without_warning(caplog):
    s = make_survey(1, 2, 64, 0.1, rng=0)         # 6 x 64 px overlap < min_pixels
    g = build_tile_overlap_graph(s.tiles)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        counts = fit_overlap_edges(g)
    assert counts["failed"] == 1
    assert "min_pixels" in g.edges[0, 1]["fits"][0].message
    assert not caplog.records


def test_bad_fit_arguments_are_rejected():
    g = nx.Graph()
    with pytest.raises(ValueError, match="model"):
        fit_overlap_edges(g, model="spline")
    with pytest.raises(ValueError, match="max_pixels"):
        fit_overlap_edges(g, max_pixels=0)
    with pytest.raises(ValueError, match="subsample"):
        fit_overlap_edges(g, subsample="every other")
    with pytest.raises(ValueError, match="noise_estimator"):
        fit_overlap_edges(g, noise_estimator="std")


def test_edge_status_is_the_worst_channel():
    ok, off, bad = (PairwiseFit(status=x) for x in ("ok", "offset_only", "failed"))
    assert edge_status([ok, off]) == "offset_only"
    assert edge_status([ok, bad, off]) == "failed"
    assert edge_status([ok]) == "ok" and edge_status([]) == "failed"


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 14), st.integers(1, 5), st.integers(0, 2 ** 31 - 1),
       st.floats(0.3, 1.0))
def test_sparsified_graph_keeps_the_largest_overlaps_and_the_components(n, k, seed, p):
    rng = np.random.default_rng(seed)
    g = nx.gnp_random_graph(n, p, seed=seed)
    g.add_edges_from((u + n, v + n) for u, v in list(g.edges))   # a second component
    for u, v in g.edges:
        g.edges[u, v]["weight"] = int(rng.integers(1, 10_000))
    before = {e: dict(d) for e, d in g.edges.items()}
    h = sparsify_overlap_graph(g, k)
    assert {e: dict(d) for e, d in g.edges.items()} == before     # input untouched
    assert set(h.nodes) == set(g.nodes) and set(h.edges) <= set(g.edges)
    assert sorted(map(sorted, nx.connected_components(h))) == \
        sorted(map(sorted, nx.connected_components(g)))
    assert h.number_of_edges() <= g.number_of_nodes() * (k + 2)
    assert h.graph["bridges"] <= g.number_of_nodes()
    for node in g.nodes:  # every node keeps its k largest overlaps
        weights = sorted((d for _, _, d in g.edges(node, data="weight")), reverse=True)
        kept = sorted((d for _, _, d in h.edges(node, data="weight")), reverse=True)
        assert kept[:k] == weights[:k]
    with pytest.raises(ValueError, match="max_degree"):
        sparsify_overlap_graph(g, 0)


@pytest.mark.parametrize("k, bridges, joins", [(8, None, 4), (8, 0, 1), (8, 2, 2), (2, None, 4)])
def test_sparsified_graph_joins_two_pointings_by_several_overlaps(k, bridges, joins):
    # two pointings of 12 dithers each: a dither overlaps the others of its pointing by
    # 90-99 % and the next pointing's by 15-25 %; the largest overlaps stay within the
    # pointings, and a spanning tree alone joins them by a single overlap
    rng = np.random.default_rng(7)
    g = nx.Graph()
    for u in range(24):
        for v in range(u + 1, 24):
            same = u // 12 == v // 12
            g.add_edge(u, v, weight=int(rng.integers(9_000, 9_900) if same
                                        else rng.integers(1_500, 2_500)))
    h = sparsify_overlap_graph(g, k, bridges=bridges)
    across = [(u, v) for u, v in h.edges if u // 12 != v // 12]
    assert len(across) == joins and h.graph["bridges"] == joins - 1
    assert len({n for e in across for n in e}) == 2 * joins  # distinct frames
    # the tree's overlap is the heaviest between the pointings; the added ones are the next
    # heaviest between frames that join none yet
    crossing = sorted(((d, u, v) for u, v, d in g.edges(data="weight") if u // 12 != v // 12),
                      reverse=True)
    expected, used = [], set()
    for _, u, v in crossing:
        if len(expected) < joins and not used & {u, v}:
            expected.append(frozenset((u, v)))
            used |= {u, v}
    assert {frozenset(e) for e in across} == set(expected)


# --------------------------------------------------------------------------- gain estimators


def _estimates(pair, estimator, **kw):
    return overlap.fit_edge_channel(pair.src, pair.dst, pair.valid, gain_estimator=estimator,
                                    model="plane", **kw)


def test_pixel_and_star_gains_are_combined_by_inverse_variance():
    # a faint overlap (extended signal-to-noise 1) with 80 stars, offsets and gradients
    pair = make_overlap_pair(n_stars=80, signal_to_noise=1.0, gain=1.07, offsets=(5.0, -20.0),
                             gradient_dst=(0.004, -0.002), rng=3)
    pix, stars, auto = (_estimates(pair, e) for e in ("pixels", "stars", "auto"))
    assert pix.gain_source == "pixels" and math.isnan(pix.a_stars) and pix.n_stars == 0
    assert stars.gain_source == "stars" and stars.n_stars >= 20
    assert (stars.a, stars.sigma_a) == (stars.a_stars, stars.sigma_a_stars)
    assert auto.gain_source == "combined" and not auto.gain_disagree
    assert auto.a_pixels == pytest.approx(pix.a) and auto.a_stars == pytest.approx(stars.a)
    w = np.array([auto.sigma_a_pixels, auto.sigma_a_stars]) ** -2.0
    assert auto.sigma_a == pytest.approx(w.sum() ** -0.5)
    assert auto.a == pytest.approx((w @ [auto.a_pixels, auto.a_stars]) / w.sum())
    for fit in (pix, stars, auto):
        assert fit.status == "ok" and abs(fit.a - pair.gain) < 3 * fit.sigma_a
    # the offset and the plane are fitted at the combined gain: the star-free pixels agree
    yy, xx = np.mgrid[:pair.src.shape[0], :pair.src.shape[1]]
    resid = pair.dst - auto.predict(pair.src, xx, yy)
    assert abs(np.nanmedian(resid[pair.valid])) < 0.1 * pair.noise_dst
    assert json.dumps(auto.to_dict(), allow_nan=False)


def test_the_stars_win_where_the_noise_ratio_is_wrong_and_say_so():
    # a faint overlap whose dst noise is taken for 0.9 instead of 1.5 (correlated noise
    # after resampling fools the noise estimate): the pixel slope is biased, with a small
    # sigma; the stars' fluxes do not depend on the noise ratio
    pair = make_overlap_pair(n_stars=60, signal_to_noise=1.5, gain=1.12, noise_dst=1.5, rng=6)
    fit = _estimates(pair, "auto", noise_x=1.0, noise_y=0.9)
    assert fit.gain_disagree and fit.gain_source == "stars" and "stars" in fit.message
    assert abs(fit.a_pixels - pair.gain) > 3 * fit.sigma_a_pixels
    assert abs(fit.a_pixels - fit.a_stars) > 3 * np.hypot(fit.sigma_a_pixels, fit.sigma_a_stars)
    assert fit.a == fit.a_stars and abs(fit.a - pair.gain) < 3 * fit.sigma_a


def test_stars_alone_give_no_gain_without_stars():
    pair = make_overlap_pair(n_stars=0, signal_to_noise=3.0, gain=1.1, rng=1)
    fit = _estimates(pair, "stars")
    assert fit.status == "offset_only" and fit.gain_source == "none" and fit.n_stars == 0
    assert math.isinf(fit.sigma_a) and fit.a == 1.0 and "stars" in fit.message
    assert abs(fit.a_pixels - pair.gain) < 3 * fit.sigma_a_pixels   # still reported
    with pytest.raises(ValueError, match="gain_estimator"):
        _estimates(pair, "psf")


def test_graph_fits_report_both_estimates_and_count_disagreements(caplog):
    s = make_survey(2, 2, 256, 0.25, rng=4, star_density=2e-3, nebulae=0)
    g = build_tile_overlap_graph(s.tiles)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        fit_overlap_edges(g, model="plane")
    est = overlap.gain_estimates(g)
    assert len(est["edges"]) == g.number_of_edges() == 6
    assert est["with_stars"] >= 4 and est["sources"].get("combined", 0) >= 4
    assert est["disagreements"] == sum(r["gain_disagree"] for r in est["edges"])
    for row in est["edges"]:
        fit = g.edges[row["src"], row["dst"]]["fits"][0]
        assert (row["a"], row["a_stars"], row["n_stars"]) == (fit.a, fit.a_stars, fit.n_stars)
    assert "[GRID] Photometry: gains by source" in caplog.text


def test_without_the_star_library_the_pixel_fits_carry_on(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "photometry_graph.photometry.stars", None)
    s = make_survey(1, 2, 128, 0.3, rng=2)
    g = build_tile_overlap_graph(s.tiles)
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        counts = fit_overlap_edges(g)
    assert counts["ok"] == 1 and g.graph["gain_estimator"] == "pixels"
    assert "star gain estimator is not available" in caplog.text


def test_nodes_overlapped_many_times_are_searched_for_stars_once(monkeypatch):
    # three dithers of one field: each overlaps the others entirely, so each is searched
    # once and its catalogue cropped to every overlap; the star gains match the truth
    import photometry_graph.photometry.stars as stars
    calls = []
    real = stars.detect_stars
    monkeypatch.setattr(stars, "detect_stars", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = build_tile_overlap_graph(_dithers())
    assert overlap.star_search_nodes(g, g.edges) == [0, 1, 2]
    fit_overlap_edges(g, gain_estimator="stars", workers=1)
    assert len(calls) == 3
    gains = {0: 1.0, 1: 1.1, 2: 0.8}
    for u, v, d in g.edges(data=True):
        f = d["fits"][0]
        truth = gains[f.dst] / gains[f.src]
        assert f.gain_source == "stars" and f.n_stars >= 40
        assert abs(f.a_stars - truth) < 3 * f.sigma_a_stars + 1e-9


def _pickled_map(func, tasks):
    """A task_map as a process pool runs it: tasks and results through pickle."""
    import pickle
    out = []
    for t in tasks:
        try:
            out.append(pickle.loads(pickle.dumps(func(pickle.loads(pickle.dumps(t))))))
        except Exception as exc:  # noqa: BLE001
            out.append(exc)
    return out


def _dithers():
    """Three dithers of one field (each searched once for stars), gains 1, 1.1, 0.8."""
    kw = dict(n_stars=120, star_peak_range=(10.0, 500.0), signal_to_noise=2.0, rng=5)
    p1 = make_overlap_pair((256, 384), gain=1.1, **kw)
    p2 = make_overlap_pair((256, 384), gain=0.8, **kw)
    return [TilePhotometryInfo(k, BBox(0, 256, 0, 384), data=d, mask=p1.valid)
            for k, d in enumerate((p1.src, p1.dst, p2.dst))]


def test_tasks_sent_elsewhere_carry_the_overlap_of_nodes_held_in_memory():
    # shifted dithers: a task holds the two nodes cut to their overlap (and the catalogues
    # cut alike), and fits exactly as the threads fitting the whole nodes here do
    kw = dict(n_stars=150, star_peak_range=(10.0, 500.0), signal_to_noise=2.0, rng=7)
    p1 = make_overlap_pair((256, 600), gain=1.1, **kw)
    p2 = make_overlap_pair((256, 600), gain=0.8, **kw)

    def nodes():
        return [TilePhotometryInfo(k, BBox(0, 256, x0, x0 + 384), data=d[:, x0:x0 + 384],
                                   mask=p1.valid[:, x0:x0 + 384])
                for k, (d, x0) in enumerate(((p1.src, 0), (p1.dst, 40), (p2.dst, 80),
                                             (p2.src, 216)))]
    sent = []

    def recording_map(func, tasks):
        sent.extend(t for t in tasks if func is overlap._fit_edge)
        return _pickled_map(func, tasks)
    here, there = build_tile_overlap_graph(nodes()), build_tile_overlap_graph(nodes())
    assert fit_overlap_edges(here, model="plane") == \
        fit_overlap_edges(there, model="plane", task_map=recording_map)
    assert len(sent) == 6
    assert overlap.star_search_nodes(here, list(here.edges))  # cut catalogues are used too
    assert any(k is not None for task in sent for k in task["catalogues"])
    for task in sent:
        assert all(t.bbox == task["inter"] for t in task["tiles"])
        assert all(t.data.shape[:2] == task["inter"].shape for t in task["tiles"])
    for u, v in here.edges:
        for a, b in zip(here.edges[u, v]["fits"], there.edges[u, v]["fits"]):
            assert a.a == b.a and a.b == b.b and a.sigma_a == b.sigma_a
            assert a.a_stars == b.a_stars and a.n_stars == b.n_stars > 0
    # a node read from a file travels as the reader of its overlap (nothing is read here)
    # with the mask of the overlap alone; the task reads those pixels where it runs
    reads, pixels = [], np.arange(100.0).reshape(10, 10)

    def load():
        reads.append(1)
        return pixels
    lazy = TilePhotometryInfo(9, BBox(0, 10, 0, 10), data=load, mask=pixels > 20)
    node, cats = overlap._overlap_only(lazy, None, BBox(0, 5, 2, 5))
    assert cats is None and reads == [] and node.tile_id == 9
    assert node.bbox == BBox(0, 5, 2, 5) and node.mask.shape == (5, 3)
    data, mask = node.read(BBox(1, 3, 3, 5))
    np.testing.assert_array_equal(data[..., 0], pixels[1:3, 3:5])
    np.testing.assert_array_equal(mask, pixels[1:3, 3:5] > 20)
    masks = []  # a mask read from disk too: read where the task runs, the overlap alone

    def load_mask():
        masks.append(1)
        return pixels > 30
    lazier = TilePhotometryInfo(9, BBox(0, 10, 0, 10), data=load, mask=load_mask)
    node = overlap._overlap_only(lazier, None, BBox(2, 6, 0, 4))[0]
    assert masks == [] and reads == [1]
    np.testing.assert_array_equal(node.mask, pixels[2:6, 0:4] > 30)


def test_fits_elsewhere_through_a_task_map_are_those_made_here(caplog):
    here, there = build_tile_overlap_graph(_dithers()), build_tile_overlap_graph(_dithers())
    assert fit_overlap_edges(here, model="plane") == \
        fit_overlap_edges(there, model="plane", task_map=_pickled_map)
    for u, v in here.edges:
        for a, b in zip(here.edges[u, v]["fits"], there.edges[u, v]["fits"]):
            assert a.a == b.a and a.b == b.b and a.sigma_a == b.sigma_a
            assert a.a_stars == b.a_stars and a.n_stars == b.n_stars > 0
    # a task that fails elsewhere (a worker lost) fails its edge only, with a warning
    calls = []

    def flaky(func, tasks):
        out = _pickled_map(func, tasks)
        calls.append(func.__name__)
        if func is overlap._fit_edge:
            out[0] = MemoryError("worker lost")
        return out
    g = build_tile_overlap_graph(_dithers())
    with caplog.at_level(logging.WARNING):
        counts = fit_overlap_edges(g, task_map=flaky)
    assert calls == ["_node_catalogues", "_fit_edge"]
    assert counts["failed"] == 1 and sum(counts.values()) == 3
    assert "[GRID]" in caplog.text and "MemoryError" in caplog.text


@pytest.mark.parametrize("bin_factor", [1, 2])
def test_edges_without_a_valid_pixel_count_are_fitted(bin_factor):
    # a graph made elsewhere may carry the boxes alone: the fits count the box's pixels
    p = make_overlap_pair((128, 256), gain=1.1, rng=1)
    g = build_tile_overlap_graph([TilePhotometryInfo(k, BBox(0, 128, 0, 256), data=d,
                                                     mask=p.valid)
                                  for k, d in enumerate((p.src, p.dst))])
    for e in g.edges:
        del g.edges[e]["n_valid"]
    assert fit_overlap_edges(g, bin_factor=bin_factor) == {"ok": 1, "offset_only": 0,
                                                           "failed": 0}
    (fit,) = g.edges[0, 1]["fits"]
    assert abs(fit.a - 1.1) < 4 * fit.sigma_a
