"""Candidate overlaps of dense frame sets, against every pair counted by brute force."""

from collections import Counter

import networkx as nx
import numpy as np
import pytest

from photometry_graph.core.tiles import BBox
from photometry_graph.photometry import candidates
from photometry_graph.photometry.candidates import candidate_pairs


def _boxes(rng, n, clusters=1, empty=0):
    """Frame boxes around ``clusters`` pointings far apart, with dithers and sizes."""
    out = []
    for k in range(n):
        cy, cx = 5000 * (k % clusters), 3000 * (k % clusters)
        y0, x0 = cy + int(rng.integers(-200, 200)), cx + int(rng.integers(-300, 300))
        out.append(BBox(y0, y0 + int(rng.integers(150, 300)), x0,
                        x0 + int(rng.integers(200, 500))))
    for k in rng.choice(n, empty, replace=False):
        out[k] = BBox(0, 0, 0, 0)
    return out


def _brute(boxes):
    areas = {}
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            inter = boxes[i].intersection(boxes[j])
            if not inter.is_empty and inter.area > 0:
                areas[i, j] = inter.area
    return areas


@pytest.mark.parametrize("seed, clusters, per_node", [(0, 1, 3), (1, 3, 2), (2, 2, 5),
                                                      (3, 4, 1)])
def test_candidates_hold_each_box_largest_overlaps_and_its_components(seed, clusters,
                                                                       per_node):
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 60, clusters, empty=3)
    areas = _brute(boxes)
    pairs, total = candidate_pairs(boxes, per_node)
    assert total == len(areas)
    assert pairs == sorted(set(pairs)) and all(p in areas for p in pairs)
    assert len(pairs) < len(areas)  # not every pair (the point of it)
    chosen = set(pairs)
    for i in range(len(boxes)):  # the per_node largest of every box, ties to the lower index
        mine = sorted(((a, -(j if i == k else k)) for (k, j), a in areas.items() if i in (k, j)),
                      reverse=True)[:per_node]
        assert all((min(i, -m), max(i, -m)) in chosen for _, m in mine), i
    full, cand = nx.Graph(), nx.Graph()
    full.add_nodes_from(range(len(boxes)))
    cand.add_nodes_from(range(len(boxes)))
    full.add_edges_from(areas)
    cand.add_edges_from(pairs)
    assert ({frozenset(c) for c in nx.connected_components(full)}
            == {frozenset(c) for c in nx.connected_components(cand)})


def test_candidates_joining_components_that_the_largest_overlaps_leave_apart():
    # two dense groups and one box that bridges them with small overlaps: the largest
    # overlaps of every box stay inside its group; the bridge is added all the same
    left = [BBox(0, 100, k, 100 + k) for k in range(6)]
    right = [BBox(0, 100, 300 + k, 400 + k) for k in range(6)]
    bridge = [BBox(0, 100, 95, 305)]
    pairs, total = candidate_pairs(left + right + bridge, 2)
    g = nx.Graph(pairs)
    assert nx.is_connected(g) and 12 in g
    assert total == len(_brute(left + right + bridge))


@pytest.mark.parametrize("seed, clusters, equal", [(6, 1, False), (7, 3, False), (8, 2, True)])
def test_the_forest_is_the_maximum_spanning_forest_of_every_overlap(seed, clusters, equal):
    # by overlap size, ties to the pair of lower indices: networkx on the brute-force graph
    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 50, clusters, empty=2)
    if equal:  # many overlaps of the same size: the tie rule decides
        boxes = [b if b.is_empty else BBox(b.y0 // 50 * 50, b.y0 // 50 * 50 + 200, b.x0 // 50
                                           * 50, b.x0 // 50 * 50 + 300) for b in boxes]
    n, areas = len(boxes), _brute(boxes)
    full = nx.Graph()
    full.add_nodes_from(range(n))
    full.add_weighted_edges_from((i, j, a * n * n + (n * n - 1 - (i * n + j)))
                                 for (i, j), a in areas.items())
    expected = {tuple(sorted(e)) for e in nx.maximum_spanning_tree(full).edges}
    forest = candidates._spanning_forest(candidates._Overlaps(boxes, None, 1))
    assert forest == expected
    assert expected <= set(candidate_pairs(boxes, 1)[0])


@pytest.mark.parametrize("seed, min_area", [(9, 50), (10, 1)])
def test_the_forest_of_sampled_spans_is_that_of_their_whole_matrix(seed, min_area):
    # each row of Prim's pass is measured against the nodes outside the trees only: the
    # forest is the maximum spanning tree of the whole matrix of the spans' sizes
    from photometry_graph.photometry.candidates import row_spans
    boxes, masks = _rotated_frames(np.random.default_rng(seed), 40)
    overlaps = candidates._Overlaps(boxes, [row_spans(m, b.x0) for b, m in zip(boxes, masks)],
                                    min_area)
    every = np.arange(overlaps.n)
    keys = candidates._edge_keys(overlaps(every), every, overlaps.n)
    assert np.array_equal(keys, keys.T)
    full = nx.Graph()
    full.add_nodes_from(range(overlaps.n))
    full.add_weighted_edges_from((i, j, keys[i, j]) for i, j in zip(*np.nonzero(keys >= 0))
                                 if i < j)
    expected = {tuple(sorted(e)) for e in nx.maximum_spanning_tree(full).edges}
    assert len(expected) >= overlaps.n - 3
    assert candidates._spanning_forest(overlaps) == expected


def test_overlaps_of_spans_in_any_rows_and_columns_are_those_of_every_group(monkeypatch):
    # a block of rows is measured on the groups of rows where one of them is valid, and
    # against any columns: the sums over every group of the whole matrix, frames spread
    # over many groups (a tall mosaic), some without a valid pixel
    from photometry_graph.photometry.candidates import row_spans
    rng = np.random.default_rng(11)
    boxes, masks = _rotated_frames(rng, 36)
    shifts = rng.integers(0, 1500, len(boxes))
    boxes = [BBox(b.y0 + int(d), b.y1 + int(d), b.x0, b.x1) for b, d in zip(boxes, shifts)]
    for k in (3, 17):
        masks[k] = np.zeros_like(masks[k])
    spans = [row_spans(m, b.x0) for b, m in zip(boxes, masks)]
    overlaps = candidates._Overlaps(boxes, spans, 1)
    start, stop, count, first, last = overlaps.spans
    both = np.maximum(np.minimum(stop[:, None], stop[None]) - np.maximum(start[:, None],
                                                                         start[None]), 0)
    whole = (both * np.minimum(count[:, None], count[None])).sum(axis=2, dtype=np.int64)
    np.fill_diagonal(whole, 0)
    assert np.count_nonzero(whole) > 20 and (last - first).max() < start.shape[1] // 2
    assert first[3] >= last[3] and first[17] >= last[17]
    np.testing.assert_array_equal(overlaps(np.arange(36)), whole)
    for _ in range(30):
        rows = np.sort(rng.choice(36, int(rng.integers(1, 6)), replace=False))
        cols = np.sort(rng.choice(36, int(rng.integers(1, 36)), replace=False))
        np.testing.assert_array_equal(overlaps(rows), whole[rows])
        np.testing.assert_array_equal(overlaps(rows, cols), whole[np.ix_(rows, cols)])


def test_candidates_do_not_depend_on_the_block_size(monkeypatch):
    boxes = _boxes(np.random.default_rng(5), 80, 2)
    reference = candidate_pairs(boxes, 3)
    monkeypatch.setattr(candidates, "CANDIDATE_CELLS", 97)  # blocks of one row
    assert candidate_pairs(boxes, 3) == reference


def test_candidates_do_not_depend_on_the_threads(monkeypatch):
    # blocks of one row measured on one thread and on three, with spans and partial
    # overlaps in eight directions: the same pairs and the same count
    rng = np.random.default_rng(8)
    boxes = _boxes(rng, 90, 3, empty=2)
    spans = [(np.full(b.shape[0], b.x0), np.full(b.shape[0], b.x1)) for b in boxes]
    monkeypatch.setattr(candidates, "CANDIDATE_CELLS", 900)  # blocks of one row
    one = candidate_pairs(boxes, 4, spans=spans, partial=8)
    assert len(list(candidates._Overlaps(boxes, spans, 1).blocks())) > 30
    assert candidate_pairs(boxes, 4, spans=spans, partial=8, workers=3) == one
    assert one[1] >= len(_brute(boxes)) and len(one[0]) > 90  # groups: never fewer


def test_candidates_of_degenerate_inputs():
    assert candidate_pairs([], 2) == ([], 0)
    assert candidate_pairs([BBox(0, 5, 0, 5)], 2) == ([], 0)
    assert candidate_pairs([BBox(0, 5, 0, 5), BBox(10, 15, 10, 15)], 2) == ([], 0)
    touching = [BBox(0, 10, 0, 10), BBox(0, 10, 8, 18)]  # 20 pixels in common
    assert candidate_pairs(touching, 1, min_area=21) == ([], 0)
    assert candidate_pairs(touching, 1, min_area=20) == ([(0, 1)], 1)
    with pytest.raises(ValueError, match="per_node"):
        candidate_pairs([BBox(0, 5, 0, 5)], 0)


def test_the_frame_graph_examines_the_candidates_only(monkeypatch):
    # a dense survey (up to 63 overlaps a tile) with max_degree 2: the overlap graph
    # counts the masks of the candidates of every tile (those of CANDIDATE_DEGREE = 8
    # overlaps: its 24 largest, the largest partial ones in 8 directions, what joins), not
    # of every pair (1,086 of 1,826); the fitted ones are among them
    from photometry_graph.datasets import make_survey
    from photometry_graph.photometry import harmonize
    survey = make_survey(8, 8, tile_size=96, overlap=0.85, rng=2)
    seen = []
    real = harmonize.build_tile_overlap_graph

    def recording(tiles, **kw):
        seen.append(kw.get("pairs"))
        return real(tiles, **kw)
    monkeypatch.setattr(harmonize, "build_tile_overlap_graph", recording)
    res = harmonize.harmonize_tiles(survey.tiles, background=False, max_degree=2,
                                    min_pixels=500)
    every = {p: a for p, a in _brute([t.bbox for t in survey.tiles]).items() if a >= 500}
    assert seen[0] is not None and len(seen[0]) < 0.7 * len(every)
    ids = [t.tile_id for t in survey.tiles]
    fitted = {tuple(sorted((ids.index(u), ids.index(v)))) for u, v in res.graph.edges}
    assert fitted <= set(seen[0])
    assert res.report["edges_not_fitted"] == len(every) - res.graph.number_of_edges()


def _rotated_frames(rng, n):
    """Masks of rotated frames (convex: one valid span per row) in their boxes."""
    import cv2
    boxes, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(150, 250), rng.uniform(200, 400)
        angle, (h, w) = rng.uniform(-0.6, 0.6), (rng.uniform(60, 100), rng.uniform(120, 180))
        c, s = np.cos(angle), np.sin(angle)
        corners = np.array([[cx + c * dx - s * dy, cy + s * dx + c * dy]
                            for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))]) / 2 + 100
        (x0, y0) = np.floor(corners.min(0)).astype(int)
        (x1, y1) = np.ceil(corners.max(0)).astype(int)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillConvexPoly(mask, np.round(corners - [x0, y0]).astype(np.int32), 1)
        boxes.append(BBox(int(y0), int(y1), int(x0), int(x1)))
        masks.append(mask.astype(bool))
    return boxes, masks


def _joint(boxes, masks, i, j):
    inter = boxes[i].intersection(boxes[j])
    if inter.is_empty:
        return 0
    return int(np.count_nonzero(masks[i][inter.slices_in(boxes[i])]
                                & masks[j][inter.slices_in(boxes[j])]))


def test_row_spans_measure_the_jointly_valid_pixels_of_convex_frames(monkeypatch):
    # rotated frames fill part of their boxes: the spans of their rows count the pixels
    # valid in both exactly (on every row), so the candidates hold every frame's largest
    # overlaps by valid pixels (the boxes' intersections rank them otherwise)
    from photometry_graph.photometry.candidates import row_spans
    monkeypatch.setattr(candidates, "SPAN_ROWS", 10_000)  # every row: exact sizes
    boxes, masks = _rotated_frames(np.random.default_rng(4), 40)
    spans = [row_spans(m, b.x0) for b, m in zip(boxes, masks)]
    for m, (a, e) in zip(masks, spans):
        rows = m.any(axis=1)
        assert np.array_equal((e - a)[rows], m.sum(axis=1)[rows])  # one interval a row
        assert np.all(e[~rows] < a[~rows])
    exact = {(i, j): _joint(boxes, masks, i, j) for i in range(40) for j in range(i + 1, 40)}
    exact = {p: v for p, v in exact.items() if v >= 50}
    pairs, total = candidate_pairs(boxes, 3, min_area=50, spans=spans)
    assert total == len(exact) and set(pairs) <= set(exact)
    for i in range(40):
        mine = sorted(((v, -(p[0] + p[1] - i)) for p, v in exact.items() if i in p),
                      reverse=True)[:3]
        assert all((min(i, -m), max(i, -m)) in pairs for _, m in mine), i
    g = nx.Graph()
    g.add_weighted_edges_from((i, j, v) for (i, j), v in exact.items())
    tree = nx.maximum_spanning_tree(g)
    assert {tuple(sorted(e)) for e in tree.edges} <= set(pairs)  # distinct weights here
    by_boxes, _ = candidate_pairs(boxes, 3, min_area=50)
    assert set(by_boxes) != set(pairs)  # what the spans change


def test_sampled_rows_of_the_spans_rank_the_overlaps_as_the_valid_pixels_do():
    # every 5th row (SPAN_ROWS of ~300 rows) measures the overlaps within a few pixels a
    # row: the largest overlaps of every frame and the spanning tree stay the same
    from photometry_graph.photometry.candidates import row_spans
    boxes, masks = _rotated_frames(np.random.default_rng(7), 40)
    spans = [row_spans(m, b.x0) for b, m in zip(boxes, masks)]
    sampled, _ = candidate_pairs(boxes, 6, min_area=50, spans=spans)
    exact = {(i, j): _joint(boxes, masks, i, j) for i in range(40) for j in range(i + 1, 40)}
    g = nx.Graph()
    g.add_weighted_edges_from((i, j, v) for (i, j), v in exact.items() if v >= 50)
    assert {tuple(sorted(e)) for e in nx.maximum_spanning_tree(g).edges} <= set(sampled)
    for i in range(40):  # the 3 largest of every frame among its 6 candidates
        mine = sorted(((v, p) for p, v in exact.items() if i in p and v >= 50),
                      reverse=True)[:3]
        assert all(p in sampled for _, p in mine), i


def test_thin_overlaps_of_a_tall_mosaic_and_short_boxes_are_never_missed():
    # the spans are measured in groups of rows (SPAN_ROWS groups): an overlap of a few
    # rows, or a box shorter than a group, still counts, and the candidates join what
    # every overlap joins
    from photometry_graph.photometry.candidates import row_spans
    boxes = [BBox(r * 675, r * 675 + 750, c * 900, c * 900 + 1000)
             for r in range(10) for c in range(2)]  # 2 columns, 10 rows, 10 % overlaps
    boxes += [BBox(6700, 6706, 100, 200)]  # 6 rows, inside the last row of frames
    spans = [row_spans(np.ones(b.shape, bool), b.x0) for b in boxes]
    pairs, total = candidate_pairs(boxes, 2, spans=spans)
    every = _brute(boxes)
    assert total == len(every)
    g = nx.Graph(list(every))
    g.add_nodes_from(range(len(boxes)))
    h = nx.Graph(pairs)
    h.add_nodes_from(range(len(boxes)))
    assert nx.number_connected_components(h) == nx.number_connected_components(g) == 1


# --------------------------------------------------------------------------- pointings
def _pointings(rng, per_pointing, columns=2, width=100, step=80, dither=3, rows=1,
               step_y=80):
    """Boxes of ``rows`` x ``columns`` pointings (side neighbours overlapping by
    ``width - step`` and ``100 - step_y`` pixels), each with ``per_pointing`` dithers: box
    k belongs to pointing ``k % (rows * columns)``."""
    out, n = [], rows * columns
    for k in range(per_pointing * n):
        dy, dx = (int(v) for v in rng.integers(-dither, dither + 1, size=2))
        y0, x0 = step_y * ((k % n) // columns) + dy, step * (k % columns) + dx
        out.append(BBox(y0, y0 + 100, x0, x0 + width))
    return out


def test_candidates_keep_the_largest_partial_overlap_of_every_box_in_each_direction():
    # 12 dithers per pointing and 4 largest per box: the largest overlaps of a box are
    # dithers of its pointing; its largest partial one in each direction is kept on request
    boxes = _pointings(np.random.default_rng(0), 12)
    areas = _brute(boxes)
    across = {p for p in areas if p[0] % 2 != p[1] % 2}
    plain, total = candidate_pairs(boxes, 4)
    assert total == len(areas) and len(set(plain) & across) == 1  # the spanning forest's
    pairs, _ = candidate_pairs(boxes, 4, partial=8)
    assert set(plain) <= set(pairs) and set(pairs) <= set(areas)
    centre = np.array([((b.y0 + b.y1) / 2, (b.x0 + b.x1) / 2) for b in boxes])
    for i in range(len(boxes)):
        mine = {p: a for p, a in areas.items() if i in p}
        largest = max(mine.values())
        sectors = {}
        for p, a in mine.items():
            j = p[0] + p[1] - i
            dy, dx = centre[j] - centre[i]
            s = int(np.floor((np.arctan2(dy, dx) / (2 * np.pi) + 1 / 16) * 8)) % 8
            if a < candidates.PARTIAL_OVERLAP * largest:
                sectors.setdefault(s, []).append((a, -min(p), -max(p), p))
        for options in sectors.values():
            assert max(options)[3] in pairs  # ties: the pair of lower indices


def test_candidates_of_unequal_neighbours_join_every_pair_of_pointings():
    # 3 x 3 pointings of 20 dithers, overlapping by 20 % side by side and 10 % one above
    # the other: every box's partial overlaps are larger with its side neighbours, yet the
    # pointings above and below keep many candidates too, and the sparsified graph joins
    # every pair of side neighbours by several overlaps (4 asked; the central pointing's
    # frames are shared among its eight neighbours)
    from photometry_graph.photometry.overlap import sparsify_overlap_graph

    boxes = _pointings(np.random.default_rng(4), 20, columns=3, rows=3, step=80, step_y=90)
    pairs, _ = candidate_pairs(boxes, 24, partial=8)
    g = nx.Graph()
    g.add_nodes_from(range(len(boxes)))
    g.add_weighted_edges_from((i, j, boxes[i].intersection(boxes[j]).area) for i, j in pairs)
    h = sparsify_overlap_graph(g, 8)
    joins = {}
    for u, v in h.edges:
        if u % 9 != v % 9:
            joins[frozenset((u % 9, v % 9))] = joins.get(frozenset((u % 9, v % 9)), 0) + 1
    sides = [frozenset((p, p + 1)) for p in range(9) if p % 3 < 2] + \
        [frozenset((p, p + 3)) for p in range(6)]
    counts = {frozenset((p % 9, q % 9)) for p, q in pairs if p % 9 != q % 9}
    assert set(sides) <= counts
    assert all(joins.get(side, 0) >= 2 for side in sides), joins
    assert sum(joins.get(side, 0) for side in sides) >= 3.5 * len(sides), joins


def _graph(boxes):
    g = nx.Graph()
    g.add_nodes_from(range(len(boxes)))
    g.add_weighted_edges_from((i, j, a) for (i, j), a in _brute(boxes).items())
    return g


def test_overlap_groups_are_the_pointings_of_a_session_and_one_group_of_a_tile_grid():
    g = _graph(_pointings(np.random.default_rng(1), 10, columns=3))
    groups = candidates.overlap_groups(g)
    assert all(groups[n] == n % 3 for n in g)  # the first box of each pointing names it
    tiles = [BBox(75 * r, 75 * r + 100, 75 * c, 75 * c + 100) for r in range(3)
             for c in range(4)]  # 25 % overlaps: sides alike, corners partial
    assert set(candidates.overlap_groups(_graph(tiles)).values()) == {0}
    assert candidates.overlap_groups(nx.empty_graph(3)) == {0: 0, 1: 1, 2: 2}


@pytest.mark.parametrize("per_pair", [1, 3, 6])
def test_bridge_edges_join_pointings_by_several_distinct_frames(per_pair):
    boxes = _pointings(np.random.default_rng(2), 10, columns=3)
    g = _graph(boxes)
    tree = {frozenset(e) for e in nx.maximum_spanning_tree(g).edges}
    added = candidates.bridge_edges(g, tree, per_pair)
    kept = tree | {frozenset(e) for e in added}
    assert all(g.has_edge(*e) and frozenset(e) not in tree for e in added)
    joins = {}
    for u, v in map(tuple, kept):
        if u % 3 != v % 3:
            joins.setdefault(frozenset((u % 3, v % 3)), []).append((u, v))
    assert set(joins) == {frozenset((0, 1)), frozenset((1, 2))}  # 0 and 2 do not overlap
    for pair, edges in joins.items():
        assert len(edges) == max(1, min(per_pair, 10 // 2))
        nodes = [n for e in edges for n in e]
        assert len(nodes) == len(set(nodes))  # a frame joins two pointings once
    uses = Counter(n for e in added for n in e)
    assert max(uses.values(), default=0) <= candidates.NODE_BRIDGES
    # the largest overlaps go first: a pair's first added one is its largest between
    # frames that join none of the two pointings yet
    for pair in joins:
        mine = [e for e in added if frozenset((e[0] % 3, e[1] % 3)) == pair]
        if mine:
            busy = {n for u, v in map(tuple, tree) if frozenset((u % 3, v % 3)) == pair
                    for n in (u, v)}
            free = [w for u, v, w in g.edges(data="weight")
                    if frozenset((u % 3, v % 3)) == pair and not busy & {u, v}]
            assert g.edges[mine[0]]["weight"] == max(free)
            w = [g.edges[e]["weight"] for e in mine]
            assert w == sorted(w, reverse=True)
    assert candidates.bridge_edges(g, tree, 0) == []


def test_bridge_edges_join_a_central_pointing_to_each_of_its_neighbours():
    # 3 x 3 pointings of 8 dithers: the central one overlaps eight others; every pair of
    # side neighbours gets its overlaps (4 = half of 8), the central frames shared in turn
    boxes = _pointings(np.random.default_rng(3), 8, columns=3, rows=3)
    g = _graph(boxes)
    tree = {frozenset(e) for e in nx.maximum_spanning_tree(g).edges}
    kept = tree | {frozenset(e) for e in candidates.bridge_edges(g, tree, 4)}
    joins = Counter(frozenset((u % 9, v % 9)) for u, v in map(tuple, kept) if u % 9 != v % 9)
    sides = [frozenset((p, p + 1)) for p in range(9) if p % 3 < 2] + \
        [frozenset((p, p + 3)) for p in range(6)]
    assert all(joins[side] >= 2 for side in sides), joins
    assert sum(joins[side] for side in sides) >= 3 * len(sides)


def test_bridge_edges_leave_a_self_loop_alone():
    g = nx.Graph()
    g.add_weighted_edges_from([(0, 1, 100), (2, 3, 100), (1, 2, 20), (0, 3, 19), (0, 0, 5)])
    assert candidates.bridge_edges(g, {frozenset((1, 2)), frozenset((0,))}, 2) == []


def test_bridge_edges_add_nothing_to_a_row_of_frames_or_to_single_nodes():
    # a row of frames offset by 40 % of their width: the side overlaps are alike, one group
    boxes = [BBox(0, 100, 40 * k, 40 * k + 100) for k in range(8)]
    g = _graph(boxes)
    assert set(candidates.overlap_groups(g).values()) == {0}
    assert candidates.bridge_edges(g, set(), 4) == []
    # a group of two and a single node: half of one node is none
    g = nx.Graph()
    g.add_weighted_edges_from([(0, 1, 100), (1, 2, 30), (2, 0, 25)])
    assert candidates.overlap_groups(g) == {0: 0, 1: 0, 2: 2}
    assert candidates.bridge_edges(g, set(), 4) == []


@pytest.mark.parametrize("seed, shift", [(0, 0), (1, 0), (2, -300)])
def test_mask_rows_count_the_jointly_valid_pixels_of_masks_with_holes(seed, shift):
    # rotated frames with invalid pixels inside them (saturated stars), a row left empty
    # and a hole on a span's edge, some at negative rows and columns of the grid: the
    # counts from the spans and the holes are those of the masks, pair by pair
    from photometry_graph.photometry.candidates import joint_valid, mask_rows
    rng = np.random.default_rng(seed)
    boxes, masks = _rotated_frames(rng, 30)
    boxes = [BBox(b.y0 + shift, b.y1 + shift, b.x0 + 2 * shift, b.x1 + 2 * shift)
             for b in boxes]
    for m in masks:
        ys, xs = np.nonzero(m)
        pick = rng.choice(ys.size, size=int(rng.integers(0, 40)), replace=False)
        m[ys[pick], xs[pick]] = False
        m[ys[0], xs[0]] = False                       # the first pixel of a span
        m[int(rng.integers(0, m.shape[0]))] = False   # an empty row
    rows = [mask_rows(m, b.y0, b.x0) for b, m in zip(boxes, masks)]
    assert all(r.exact for r in rows) and sum(r.holes.size for r in rows) > 300
    overlapping = 0
    for i in range(30):
        for j in range(30):
            n = _joint(boxes, masks, i, j)
            assert joint_valid(rows[i], rows[j]) == n, (i, j)
            overlapping += n > 0 and i != j
    assert overlapping > 100
    # a copy with holes of its own besides the original's: the pixels that are holes of both
    # are left out once
    twin = masks[0].copy()
    ys, xs = np.nonzero(twin)
    twin[ys[::97], xs[::97]] = False
    holes = rows[0].holes
    b0 = boxes[0]
    rb = mask_rows(twin, b0.y0, b0.x0)
    shared = np.intersect1d(holes, rb.holes)
    assert 0 < shared.size < rb.holes.size
    assert joint_valid(rows[0], rb) == int((masks[0] & twin).sum())
    # too many holes: the spans alone do not give the mask, which is read instead
    sieve = np.ones((40, 300), bool)
    sieve[:, 1:-1:2] = False
    loose = mask_rows(sieve, 0, 0)
    assert not loose.exact and loose.start.tolist() == [0] * 40
    with pytest.raises(ValueError, match="read the masks"):
        joint_valid(loose, rows[0])


def test_the_graph_counts_pairs_with_mask_rows_as_with_masks():
    # tiles whose masks are not read: the graph of their rows is the graph of their masks
    from photometry_graph.core.tiles import TilePhotometryInfo
    from photometry_graph.photometry.candidates import mask_rows
    from photometry_graph.photometry.overlap import build_tile_overlap_graph
    rng = np.random.default_rng(7)
    boxes, masks = _rotated_frames(rng, 25)
    for m in masks:
        m[rng.random(m.shape) < 0.003] = False
    tiles = [TilePhotometryInfo(k, b, data=np.ones(m.shape + (1,), np.float32), mask=m)
             for k, (b, m) in enumerate(zip(boxes, masks))]
    pairs = [(i, j) for i in range(25) for j in range(i + 1, 25)]
    rows = [mask_rows(m, b.y0, b.x0) for b, m in zip(boxes, masks)]
    rows[3] = None  # a node without rows: its pairs read both masks
    reads = Counter()

    def reader(k, m):
        def read():
            reads[k] += 1
            return m
        return read
    counted = [TilePhotometryInfo(k, b, data=np.ones(m.shape + (1,), np.float32),
                                  mask=reader(k, m))
               for k, (b, m) in enumerate(zip(boxes, masks))]
    by_rows = build_tile_overlap_graph(counted, pairs=pairs, rows=rows, min_overlap_pixels=20)
    by_masks = build_tile_overlap_graph(tiles, pairs=pairs, min_overlap_pixels=20)
    assert by_rows.number_of_edges() > 40
    assert sorted(by_rows.edges(data="n_valid")) == sorted(by_masks.edges(data="n_valid"))
    partners = {k for k in range(25) if k != 3 and boxes[k].overlaps(boxes[3])}
    assert reads[3] >= 1 and set(reads) - {3} <= partners
    assert all(reads[k] == 1 for k in set(reads) - {3})
