"""Which overlaps of a dense set of frames are worth examining, without listing every pair.

A session of many frames of one field makes every frame overlap nearly every other one:
``n (n - 1) / 2`` pairs, 12 million for 5,000 frames.  The frame photometry fits only the
largest overlaps of every frame
(:func:`~photometry_graph.photometry.overlap.sparsify_overlap_graph`), so its graph needs
only the candidates for them: the largest box intersections of every
frame, and the edges that keep the graph's connected components those of all the
overlaps.  They are found here from the boxes alone, in blocks of rows of the
intersection-area matrix: memory ``O(n)`` per block row, never the list of every pair.
"""

import numpy as np

from ..core.tiles import BBox  # noqa: F401 (the examples)

__all__ = ["CANDIDATE_CELLS", "candidate_pairs"]

#: Cells of the intersection-area matrix computed at once (a block of rows): ~16 MB of
#: int64 per temporary array.
CANDIDATE_CELLS = 2_000_000


def _box_array(bboxes):
    """``(n, 4)`` int64 ``y0, y1, x0, x1`` of the boxes (an empty box: all zeros)."""
    rows = [(b.y0, b.y1, b.x0, b.x1) if not b.is_empty else (0, 0, 0, 0) for b in bboxes]
    return np.array(rows, np.int64).reshape(-1, 4)


def _areas(boxes, rows, min_area):
    """Intersection areas of the boxes ``rows`` with every box, ``(len(rows), n)``; a box
    with itself, and an intersection smaller than ``min_area``, count 0."""
    b, r = boxes, boxes[rows]
    h = np.minimum(r[:, 1, None], b[None, :, 1]) - np.maximum(r[:, 0, None], b[None, :, 0])
    w = np.minimum(r[:, 3, None], b[None, :, 3]) - np.maximum(r[:, 2, None], b[None, :, 2])
    area = np.maximum(h, 0) * np.maximum(w, 0)
    area[np.arange(len(rows)), rows] = 0
    area[area < min_area] = 0
    return area


def _blocks(n):
    step = max(1, CANDIDATE_CELLS // max(n, 1))
    return (np.arange(s, min(n, s + step)) for s in range(0, n, step))


def _ranked(area, n):
    """A key per cell, larger for a larger area and, at equal areas, a lower column: the
    order of the ranking (reproducible ties)."""
    return area * n + (n - 1 - np.arange(n))[None, :]


def _largest(boxes, per_node, min_area):
    """Index pairs ``(i, j)``, ``i < j``, among the ``per_node`` largest intersections of
    every box, and the number of intersecting pairs (of at least ``min_area`` pixels)."""
    n = len(boxes)
    found, total = set(), 0
    k = min(per_node, n - 1)
    for rows in _blocks(n):
        area = _areas(boxes, rows, min_area)
        total += int(np.count_nonzero(area))
        if k < 1:
            continue
        key = _ranked(area, n)
        top = np.argpartition(-key, k - 1, axis=1)[:, :k]
        for i, cols in zip(rows.tolist(), top.tolist()):
            found.update((min(i, j), max(i, j)) for j in cols if area[i - rows[0], j] > 0)
    return found, total // 2


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


def _connecting(boxes, pairs, min_area):
    """Edges that join the components of ``pairs`` wherever boxes of two of them intersect:
    the largest intersection out of every component, round after round (Boruvka), until no
    component meets another."""
    n, added = len(boxes), set()
    while True:
        comp = _components(n, pairs | added)
        if n and np.all(comp == comp[0]):  # one component: nothing to join
            return added
        best = {}  # component -> (key, i, j)
        for rows in _blocks(n):
            area = _areas(boxes, rows, min_area)
            area[comp[rows][:, None] == comp[None, :]] = 0
            key = _ranked(area, n)
            cols = np.argmax(key, axis=1)
            for r, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
                if area[r, j] > 0 and (comp[i] not in best or key[r, j] > best[comp[i]][0]):
                    best[comp[i]] = (key[r, j], i, j)
        new = {(min(i, j), max(i, j)) for _, i, j in best.values()} - added
        if not new:
            return added
        added |= new


def candidate_pairs(bboxes, per_node, min_area=1):
    """The overlaps worth examining among many boxes, from the boxes alone.

    Parameters
    ----------
    bboxes : sequence of BBox
        Boxes on one pixel grid (empty boxes overlap nothing).
    per_node : int
        Largest intersections kept for every box (>= 1).
    min_area : int
        Smaller intersections are no overlap (an edge needs at least that many jointly
        valid pixels, which the intersection bounds).

    Returns
    -------
    pairs : list of tuple of int
        ``(i, j)``, ``i < j``, sorted: the ``per_node`` largest intersections of every box
        (ties: the lower index first), and, where the boxes of two connected components of
        those pairs still intersect, the largest intersection joining them, so that the
        pairs make the same components as every intersection.
    total : int
        The number of intersecting pairs (of at least ``min_area`` pixels).

    Examples
    --------
    >>> boxes = [BBox(0, 10, 10 * k, 10 * k + 30) for k in range(6)]  # 2 neighbours a side
    >>> pairs, total = candidate_pairs(boxes, 1)
    >>> total, pairs
    (9, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])
    """
    if int(per_node) < 1:
        raise ValueError(f"per_node must be >= 1, got {per_node!r}")
    boxes = _box_array(bboxes)
    pairs, total = _largest(boxes, int(per_node), min_area)
    pairs |= _connecting(boxes, pairs, min_area)
    return sorted(pairs), total
