"""Which overlaps of a dense set of frames are worth examining, without listing every pair.

A session of many frames of one field makes every frame overlap nearly every other one:
``n (n - 1) / 2`` pairs, 12 million for 5,000 frames.  The frame photometry fits only the
largest overlaps of every frame
(:func:`~photometry_graph.photometry.overlap.sparsify_overlap_graph`), so its graph needs
only the candidates for them: the largest overlaps of every frame, and the edges that keep
the graph's connected components those of all the overlaps (a maximum spanning forest).
They are found here in blocks of rows of the matrix of overlap sizes, measured on the
frames' valid span in each row (rotated frames fill 40-100 % of their boxes, so the boxes'
intersections rank them poorly) or on their boxes: memory ``O(n)`` per block row, never
the list of every pair; the forest takes one more pass, a row at a time (Prim's algorithm:
4,993 frames 7 s, where the rounds of Boruvka's took 48 s).

The largest overlaps of a frame are those with the other dithers of its pointing: nearly
the whole frame.  Its overlaps with the neighbouring pointings -- a fifth of it, say -- are
*partial* (:data:`PARTIAL_OVERLAP`), and none is among its largest when a pointing holds
more frames than that number: the pointings would then hang together by the single overlap
of a spanning tree each, and their gains drift apart by that one fit's error.  So the
candidates also hold the largest partial overlaps of every frame, and the graph's groups of
near-identical frames (:func:`overlap_groups`) get several overlaps between each other
(:func:`bridge_edges`).  The partial candidates are the largest of each direction (a
frame's pointing may have neighbours on every side, some overlapping it more than others).
"""

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .._threads import check_workers, thread_imap
from ..core.tiles import BBox  # noqa: F401 (the examples)

__all__ = ["CANDIDATE_CELLS", "SPAN_ROWS", "PARTIAL_OVERLAP", "PER_DIRECTION", "NODE_BRIDGES",
           "MAX_HOLES", "row_spans", "MaskRows", "mask_rows", "joint_valid", "candidate_pairs",
           "overlap_groups", "bridge_edges"]

#: Cells of the overlap matrix (times the rows of the nodes' spans) computed at once, shared
#: by the threads that measure them: ~24 MB of temporary arrays.
CANDIDATE_CELLS = 2_000_000
_EMPTY = 2 ** 30  # a row without a valid pixel: the span (_EMPTY, -_EMPTY) meets nothing
#: Groups of rows in which the nodes' spans measure an overlap: in each group of ``step``
#: of their common rows, the envelopes of two nodes' spans times the fewer of their valid
#: rows.  Exact for groups of one row; never smaller than the jointly valid pixels, so no
#: overlap is missed, and the ranking of the overlaps stays that of their valid pixels.
SPAN_ROWS = 64
#: An overlap is partial when it is smaller than this fraction of the largest overlap of its
#: node (of either node, for an edge of a graph): two pointings of a mosaic overlap by a
#: fraction of a frame, two dithers of one pointing by nearly all of it.
PARTIAL_OVERLAP = 0.5
#: Largest partial overlaps of a box kept in each direction (:func:`candidate_pairs`): the
#: frames of the next pointing that overlap a frame most are the few shifted towards it,
#: the same for every frame of its pointing; a second one spreads the candidates over more
#: of them (their overlaps then join distinct frames, :func:`bridge_edges`).
PER_DIRECTION = 2


def row_spans(mask, x0=0):
    """Where each row of ``mask`` is valid, first to last valid column: ``(start, stop)``
    arrays in columns ``x0 +``; an empty row gets a span that meets nothing.

    Examples
    --------
    >>> start, stop = row_spans(np.array([[0, 1, 1, 0], [0, 0, 0, 0]], bool), x0=10)
    >>> int(start[0]), int(stop[0]), bool(stop[1] < start[1])  # row 1: empty
    (11, 13, True)
    """
    mask = np.asarray(mask, bool)
    w = mask.shape[1]
    hit = mask.any(axis=1)
    start = np.where(hit, x0 + np.argmax(mask, axis=1), _EMPTY).astype(np.int32)
    stop = np.where(hit, x0 + w - np.argmax(mask[:, ::-1], axis=1), -_EMPTY).astype(np.int32)
    return start, stop


#: Most invalid pixels inside the row spans of a mask that :func:`mask_rows` lists (a
#: binned frame of a session has a few dozen: saturated stars); with more, the mask is read.
MAX_HOLES = 4096
#: Row stride and offset of the global pixel indices of :attr:`MaskRows.holes` (rows and
#: columns from -2**30 to 2**30 give indices in int64).
_HOLE_STRIDE = 2 ** 32
_HOLE_OFFSET = 2 ** 30


@dataclass(frozen=True, eq=False)
class MaskRows:
    """A valid mask as the span of each of its rows and the invalid pixels inside them.

    Attributes
    ----------
    y0 : int
        The mask's first row on the global grid.
    start, stop : numpy.ndarray of int32
        The valid span of each row (:func:`row_spans`, global columns).
    holes : numpy.ndarray of int64 or None
        The invalid pixels inside the spans, sorted global indices
        ``(row + 2**30) * 2**32 + column + 2**30``; None when there are more than
        :data:`MAX_HOLES` (the spans alone then do not give the mask).

    Where ``holes`` is known the mask is the spans without the holes, and two such masks
    count their jointly valid pixels without being read (:func:`joint_valid`).
    """

    y0: int
    start: np.ndarray
    stop: np.ndarray
    holes: object

    @property
    def exact(self):
        """True when the spans and the holes give the mask."""
        return self.holes is not None

    def holes_inside(self, holes):
        """How many of the pixels ``holes`` (indices as :attr:`holes`) lie in the spans."""
        r = holes // _HOLE_STRIDE - _HOLE_OFFSET - self.y0
        c = holes % _HOLE_STRIDE - _HOLE_OFFSET
        on = (r >= 0) & (r < self.start.size)
        r, c = r[on], c[on]
        return int(np.count_nonzero((c >= self.start[r]) & (c < self.stop[r])))


def mask_rows(mask, y0, x0):
    """The :class:`MaskRows` of ``mask`` whose corner is at ``(y0, x0)`` of the global grid
    (its ``holes`` None when more than :data:`MAX_HOLES` of its pixels are invalid inside
    its spans).

    Examples
    --------
    >>> m = np.array([[0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]], bool)
    >>> r = mask_rows(m, 5, 10)
    >>> r.start.tolist(), r.stop[:2].tolist(), r.holes.size, r.exact
    ([11, 10, 1073741824], [14, 13], 1, True)
    """
    mask = np.asarray(mask, bool)
    start, stop = row_spans(mask, x0)
    cols = np.arange(x0, x0 + mask.shape[1], dtype=np.int64)
    inside = (cols >= start[:, np.newaxis]) & (cols < stop[:, np.newaxis])
    rows, c = np.nonzero(inside & ~mask)
    holes = None
    if rows.size <= MAX_HOLES:
        holes = ((rows.astype(np.int64) + (int(y0) + _HOLE_OFFSET)) * _HOLE_STRIDE
                 + c.astype(np.int64) + (int(x0) + _HOLE_OFFSET))
    return MaskRows(int(y0), start, stop, holes)


def joint_valid(a, b):
    """Pixels valid in both of two masks given as exact :class:`MaskRows`: the pixels both
    spans cover, row by row, less the holes of either inside the other's spans, plus the
    pixels that are holes of both (left out twice).

    Examples
    --------
    >>> a = np.ones((4, 6), bool); a[1, 2] = a[2, 5] = False
    >>> b = np.ones((3, 5), bool); b[0, 0] = False
    >>> ra, rb = mask_rows(a, -2, -3), mask_rows(b, -1, -1)
    >>> joint_valid(ra, rb), int((a[1:4, 2:6] & b[:, :4]).sum())
    (10, 10)
    """
    if not (a.exact and b.exact):
        raise ValueError("joint_valid needs the holes of both masks; read the masks instead")
    y0, y1 = max(a.y0, b.y0), min(a.y0 + a.start.size, b.y0 + b.start.size)
    if y1 <= y0:
        return 0
    ra, rb = slice(y0 - a.y0, y1 - a.y0), slice(y0 - b.y0, y1 - b.y0)
    # int32: an empty row's span (_EMPTY, -_EMPTY) makes -2**31 at the least
    both = np.minimum(a.stop[ra], b.stop[rb]) - np.maximum(a.start[ra], b.start[rb])
    n = int(np.maximum(both, 0).sum(dtype=np.int64))
    if a.holes.size:
        n -= b.holes_inside(a.holes)
    if b.holes.size:
        n -= a.holes_inside(b.holes)
        if a.holes.size:
            n += int(np.intersect1d(a.holes, b.holes, assume_unique=True).size)
    return n


def _box_array(bboxes):
    """``(n, 4)`` int64 ``y0, y1, x0, x1`` of the boxes (an empty box: all zeros)."""
    rows = [(b.y0, b.y1, b.x0, b.x1) if not b.is_empty else (0, 0, 0, 0) for b in bboxes]
    return np.array(rows, np.int64).reshape(-1, 4)


class _Overlaps:
    """Blocks of rows of the matrix of overlap sizes between nodes: the intersection areas
    of their boxes or, given the valid span of each row of each node
    (:func:`row_spans`), the pixels both spans cover, row by row (the jointly valid pixels
    where each row of a node is valid on one interval, as frames and their empty corners
    are).  Sizes below ``min_area``, and a node with itself, count 0."""

    def __init__(self, bboxes, spans, min_area):
        self.boxes, self.min_area = _box_array(bboxes), min_area
        self.n = len(self.boxes)
        self.spans = None if spans is None else self._on_rows(spans)

    def _on_rows(self, spans):
        """The spans in groups of ``step`` of the nodes' common rows (at most
        :data:`SPAN_ROWS` groups): ``(start, stop, rows, first, last)``, the first three
        ``(n, groups)``, the envelope of a node's spans in a group and its rows with a
        valid pixel there; the last two ``(n,)``, the groups ``first .. last - 1`` of each
        node outside which it has no valid row (``first >= last`` for none)."""
        y_min = int(self.boxes[:, 0].min()) if self.n else 0
        height = max(1, int(self.boxes[:, 1].max()) - y_min if self.n else 0)
        step = -(-height // SPAN_ROWS)
        shape = (self.n, -(-height // step))
        start, stop = np.full(shape, _EMPTY, np.int32), np.full(shape, -_EMPTY, np.int32)
        rows = np.zeros(shape, np.int32)
        for k, ((y0, _, _, _), (a, b)) in enumerate(zip(self.boxes, spans)):
            g0, pad = divmod(int(y0) - y_min, step)
            groups = -(-(pad + len(a)) // step)
            pa = np.full(groups * step, _EMPTY, np.int32)
            pb = np.full(groups * step, -_EMPTY, np.int32)
            pa[pad:pad + len(a)], pb[pad:pad + len(b)] = a, b
            start[k, g0:g0 + groups] = pa.reshape(groups, step).min(axis=1)
            stop[k, g0:g0 + groups] = pb.reshape(groups, step).max(axis=1)
            rows[k, g0:g0 + groups] = (pb > pa).reshape(groups, step).sum(axis=1)
        valued = rows > 0  # each node's groups with a valid row: first .. last
        some = valued.any(axis=1)  # (none: first = groups, last = 0)
        first = np.where(some, np.argmax(valued, axis=1), shape[1])
        last = np.where(some, shape[1] - np.argmax(valued[:, ::-1], axis=1), 0)
        return start, stop, rows, first, last

    def blocks(self, cells=None):
        """Blocks of rows (index arrays) of about ``cells`` cells each (default
        :data:`CANDIDATE_CELLS`)."""
        per_row = self.n * (1 if self.spans is None else self.spans[0].shape[1])
        step = max(1, (CANDIDATE_CELLS if cells is None else cells) // max(per_row, 1))
        return (np.arange(s, min(self.n, s + step)) for s in range(0, self.n, step))

    def __call__(self, rows, cols=None):
        """Overlap sizes of the nodes ``rows`` with the nodes ``cols`` (default all):
        ``(len(rows), len(cols))`` int64."""
        def of(a):  # the columns' part of a per-node array (all of it: no copy)
            return a if cols is None else a[cols]

        b, r = of(self.boxes), self.boxes[rows]
        if self.spans is None:
            h = np.minimum(r[:, 1, None], b[None, :, 1]) - np.maximum(r[:, 0, None], b[None, :, 0])
            w = np.minimum(r[:, 3, None], b[None, :, 3]) - np.maximum(r[:, 2, None], b[None, :, 2])
            size = np.maximum(h, 0) * np.maximum(w, 0)
        else:
            start, stop, count, first, last = self.spans  # at least the valid pixels
            # only the groups where one of the rows has a valid row: elsewhere the fewer
            # valid rows of two nodes are none (a mosaic's frame covers a part of its rows)
            lo = int(first[rows].min())
            g = slice(lo, max(lo, int(last[rows].max())))
            both = (np.minimum(stop[rows, g][:, None], of(stop)[None, :, g]) -
                    np.maximum(start[rows, g][:, None], of(start)[None, :, g]))
            np.maximum(both, 0, out=both)
            both *= np.minimum(count[rows, g][:, None], of(count)[None, :, g])
            size = both.sum(axis=2, dtype=np.int64)
        if cols is None:  # a node with itself
            size[np.arange(len(rows)), rows] = 0
        else:
            size[rows[:, None] == cols[None, :]] = 0
        size[size < self.min_area] = 0
        return size


def _edge_keys(size, rows, n, cols=None):
    """A key per cell (of ``rows`` and ``cols``, default all ``n`` nodes) that orders the
    edges (larger for a larger overlap; at equal sizes, the pair of lower indices first),
    the same from either end of an edge; -1 where there is no edge."""
    cols = np.arange(n) if cols is None else cols
    lo = np.minimum(rows[:, None], cols[None, :])
    hi = np.maximum(rows[:, None], cols[None, :])
    key = size * (n * n) + (n * n - 1 - (lo * n + hi))
    key[size == 0] = -1
    return key


def _top_pairs(key, rows, k):
    """``(i, j)``, ``i < j``, of the ``k`` largest keys of each row (keys >= 0 only)."""
    top = np.argpartition(-key, k - 1, axis=1)[:, :k]
    return {(min(i, j), max(i, j)) for r, (i, cols) in enumerate(zip(rows.tolist(),
                                                                      top.tolist()))
            for j in cols if key[r, j] >= 0}


def _directions(boxes, rows, sectors):
    """Sector (0 .. ``sectors - 1``) of the direction from each box of ``rows`` to every box,
    by the angle between their centres."""
    cy, cx = (boxes[:, 0] + boxes[:, 1]) / 2.0, (boxes[:, 2] + boxes[:, 3]) / 2.0
    angle = np.arctan2(cy[None, :] - cy[rows][:, None], cx[None, :] - cx[rows][:, None])
    return np.floor((angle / (2 * np.pi) + 0.5 / sectors) * sectors).astype(np.int64) % sectors


def _partial_pairs(overlaps, size, key, rows, sectors):
    """The :data:`PER_DIRECTION` largest partial overlaps (:data:`PARTIAL_OVERLAP`) of each
    box of ``rows`` in each of ``sectors`` directions: a frame's overlaps with every
    neighbouring pointing, whichever of them overlaps most."""
    partial = size < PARTIAL_OVERLAP * size.max(axis=1, keepdims=True)
    direction = _directions(overlaps.boxes, rows, sectors)
    found = set()
    for s in range(sectors):
        found |= _top_pairs(np.where(partial & (direction == s), key, -1), rows, PER_DIRECTION)
    return found


def _largest(overlaps, per_node, partial=0, workers=1):
    """Index pairs ``(i, j)``, ``i < j``, among the ``per_node`` largest overlaps of every
    node (:func:`_edge_keys` order) and its largest partial ones in each of ``partial``
    directions (:func:`_partial_pairs`), and the number of overlapping pairs; the blocks of
    rows on ``workers`` threads, each a ``workers``-th of :data:`CANDIDATE_CELLS` (the
    memory of one block before), their pairs merged as they come."""
    k = min(per_node, overlaps.n - 1)
    workers = check_workers(workers)
    found, total = set(), 0
    for pairs, count in thread_imap(lambda rows: _block_pairs(overlaps, rows, k, partial),
                                    overlaps.blocks(max(1, CANDIDATE_CELLS // workers)),
                                    workers):
        found |= pairs
        total += count
    return found, total // 2


def _block_pairs(overlaps, rows, k, partial):
    """The pairs of :func:`_largest` found in the rows ``rows`` of the matrix (the ``k``
    largest overlaps of each and its largest partial ones), and the overlaps counted
    there."""
    size = overlaps(rows)
    count = int(np.count_nonzero(size))
    if k < 1:
        return set(), count
    key = _edge_keys(size, rows, overlaps.n)
    found = _top_pairs(key, rows, k)
    if partial >= 1:
        found |= _partial_pairs(overlaps, size, key, rows, int(partial))
    return found, count


def _components(n, pairs):
    """Component label of every node of the graph of ``pairs`` (union-find)."""
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return np.array([root(i) for i in range(n)], np.int64)


def _spanning_forest(overlaps):
    """The maximum spanning forest of the overlap graph, by overlap size (Prim's algorithm:
    each tree grows by the largest overlap between it and a node outside; the keys of
    :func:`_edge_keys` make the forest unique): one row of the matrix per node, a single
    pass over it, each row measured against the nodes outside the trees only (half the
    matrix in all)."""
    n = overlaps.n
    best = np.full(n, -1, np.int64)  # the largest key from the growing tree to each node
    link = np.zeros(n, np.int64)  # the tree's node of that key
    left = np.arange(n)  # the nodes outside the trees, in their order
    forest = set()
    for _ in range(n):
        at = int(np.argmax(best[left]))  # the lowest node of the largest key
        v = int(left[at])
        if best[v] < 0:  # no overlap reaches the trees: a new tree, from the lowest node left
            at, v = 0, int(left[0])
        else:
            u = int(link[v])
            forest.add((min(u, v), max(u, v)))
        left = np.delete(left, at)
        if not left.size:
            break
        row = np.array([v])
        key = _edge_keys(overlaps(row, left), row, n, left)[0]
        closer = key > best[left]
        best[left[closer]] = key[closer]
        link[left[closer]] = v
    return forest


def candidate_pairs(bboxes, per_node, min_area=1, spans=None, partial=0, workers=1):
    """The overlaps worth examining among many boxes, from the boxes alone.

    Parameters
    ----------
    bboxes : sequence of BBox
        Boxes on one pixel grid (empty boxes overlap nothing).
    per_node : int
        Largest intersections kept for every box (>= 1).
    min_area : int
        Smaller overlaps are none (an edge needs at least that many jointly valid pixels,
        which the intersection bounds).
    spans : sequence of (numpy.ndarray, numpy.ndarray), optional
        The valid span of each row of each box (:func:`row_spans`): the overlaps are then
        measured as the pixels both spans cover, row by row (rotated frames fill 40-100 %
        of their boxes), not as the boxes' intersections.
    partial : int
        Directions (sectors of the angle between the boxes' centres) in which every box
        also keeps its :data:`PER_DIRECTION` largest partial overlaps (below
        :data:`PARTIAL_OVERLAP` times its largest overlap: another pointing's frames);
        default none.
    workers : int, optional
        Threads measuring the blocks of rows of the matrix of overlap sizes (numpy
        releases the GIL in its large operations; None: two, or one on one core), in
        blocks that together take the memory of one block on one thread; the same pairs
        on any count.

    Returns
    -------
    pairs : list of tuple of int
        ``(i, j)``, ``i < j``, sorted: the ``per_node`` largest overlaps of every box
        (ties: the lower index first), its largest partial ones in each of ``partial``
        directions, and the maximum spanning forest of all the overlaps by size.  The
        pairs make the same components as every overlap, and where the jointly valid
        pixels of the overlaps rank as their sizes do, the maximum spanning tree of a
        graph weighted by them is among the pairs.
    total : int
        The number of overlapping pairs (of at least ``min_area`` pixels).

    Examples
    --------
    >>> boxes = [BBox(0, 10, 10 * k, 10 * k + 30) for k in range(6)]  # 2 neighbours a side
    >>> pairs, total = candidate_pairs(boxes, 1)
    >>> total, pairs
    (9, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])
    """
    if int(per_node) < 1:
        raise ValueError(f"per_node must be >= 1, got {per_node!r}")
    overlaps = _Overlaps(bboxes, spans, min_area)
    pairs, total = _largest(overlaps, int(per_node), int(partial), workers)
    pairs |= _spanning_forest(overlaps)
    return sorted(pairs), total


def overlap_groups(graph, weight="weight"):
    """The groups of near-identical nodes of an overlap graph: the components of its
    overlaps that are not partial for either node (:data:`PARTIAL_OVERLAP`).

    The dithers of one pointing make a group; a grid of tiles, whose overlaps with its
    side neighbours are all alike, makes one group of them all.

    Parameters
    ----------
    graph : networkx.Graph
        Edges weighted by the overlaps' sizes (``weight``).
    weight : str
        The edge attribute of the sizes.

    Returns
    -------
    dict
        Node -> the first node of its group (in the graph's node order).

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.Graph()
    >>> g.add_weighted_edges_from([(0, 1, 90), (2, 3, 95), (1, 2, 20)])
    >>> overlap_groups(g)
    {0: 0, 1: 0, 2: 2, 3: 2}
    """
    edges = list(graph.edges(data=weight, default=0))
    largest = dict.fromkeys(graph.nodes, 0)
    for u, v, w in edges:
        largest[u], largest[v] = max(largest[u], w), max(largest[v], w)
    nodes = list(graph.nodes)
    index = {n: k for k, n in enumerate(nodes)}
    close = [(index[u], index[v]) for u, v, w in edges
             if w >= PARTIAL_OVERLAP * max(largest[u], largest[v])]
    return {n: nodes[root] for n, root in zip(nodes, _components(len(nodes), close))}


#: Added overlaps (:func:`bridge_edges`) a node takes part in at most.
NODE_BRIDGES = 2


def bridge_edges(graph, kept, per_pair, weight="weight"):
    """Overlaps to fit besides ``kept`` so that groups of near-identical nodes hang
    together by several overlaps, not by the one of a spanning tree.

    Between two groups (:func:`overlap_groups`) that overlap, the largest overlaps are
    added until ``per_pair`` of them join the groups (those in ``kept`` count), at most half
    of the smaller group's nodes (a single node is no group: nothing is added between
    single nodes).  A node joins its group to another one once at most (kept overlaps
    included: several nodes' errors average) and takes part in :data:`NODE_BRIDGES` added
    overlaps at most (``len(graph)`` added at most in all); the pairs of groups take their
    overlaps in turn, so that a pointing with neighbours on every side joins each of them.

    Parameters
    ----------
    graph : networkx.Graph
        The overlaps to choose from, weighted by size (``weight``).
    kept : set of frozenset
        The overlaps chosen already (node pairs).
    per_pair : int
        Overlaps wanted between two groups.
    weight : str

    Returns
    -------
    list of tuple
        The added ``(u, v)``.

    Examples
    --------
    Two pointings of four dithers each, joined by one kept overlap: one more (half of four
    nodes), from two other nodes.

    >>> import networkx as nx
    >>> g = nx.Graph()
    >>> g.add_weighted_edges_from((a, b, 95) for a in range(8) for b in range(a + 1, 8)
    ...                           if a // 4 == b // 4)
    >>> g.add_weighted_edges_from([(0, 4, 20), (0, 5, 19), (1, 5, 18), (2, 6, 17)])
    >>> bridge_edges(g, {frozenset((0, 4))}, per_pair=3)
    [(1, 5)]
    """
    group = overlap_groups(graph, weight)
    size = Counter(group.values())
    order = {n: k for k, n in enumerate(graph.nodes)}
    partners = {}  # node -> the groups it joins its own to
    joined = Counter()
    for u, v in (tuple(e) for e in kept if len(e) == 2):
        if group[u] != group[v]:
            joined[frozenset((group[u], group[v]))] += 1
            partners.setdefault(u, set()).add(group[v])
            partners.setdefault(v, set()).add(group[u])
    queues = {}  # pair of groups -> its overlaps not kept, largest first
    for u, v, w in graph.edges(data=weight, default=0):
        if group[u] != group[v] and frozenset((u, v)) not in kept:
            u, v = sorted((u, v), key=order.get)
            queues.setdefault(frozenset((group[u], group[v])), []).append(
                (-w, order[u], order[v], u, v))
    wanted = {pair: min(int(per_pair), min(size[g] for g in pair) // 2) for pair in queues}
    pairs = sorted((p for p in queues if joined[p] < wanted[p]),
                   key=lambda p: sorted(order[g] for g in p))
    for pair in pairs:
        queues[pair] = sorted(queues[pair], key=lambda e: e[:3], reverse=True)  # pop() largest
    taken, added = Counter(), []
    while pairs:
        for pair in pairs:
            while queues[pair]:
                *_, u, v = queues[pair].pop()
                if all(taken[n] < NODE_BRIDGES and group[m] not in partners.get(n, ())
                       for n, m in ((u, v), (v, u))):
                    added.append((u, v))
                    joined[pair] += 1
                    for n, m in ((u, v), (v, u)):
                        taken[n] += 1
                        partners.setdefault(n, set()).add(group[m])
                    break
        pairs = [p for p in pairs if queues[p] and joined[p] < wanted[p]]
    return added
