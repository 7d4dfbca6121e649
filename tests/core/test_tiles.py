"""Tile geometry: boxes and the grid layout of the global canvas."""

import numpy as np
import pytest

from photometry_graph.core.tiles import BBox, grid_layout


@pytest.mark.parametrize("canvas", [(100, 250), (4977, 8688), (1332, 2324), (2048, 2049),
                                    (50, 60), (3000, 1)])
@pytest.mark.parametrize("tile,overlap", [(2048, 0.1), (100, 0.2), (256, 64)])
def test_layout_covers_the_canvas_with_bounded_tiles_and_overlaps(canvas, tile, overlap):
    boxes = grid_layout(canvas, tile, overlap)
    cover = np.zeros(canvas, np.int32)
    for b in boxes:
        assert 0 <= b.y0 < b.y1 <= canvas[0] and 0 <= b.x0 < b.x1 <= canvas[1]
        assert b.shape[0] <= tile and b.shape[1] <= tile
        cover[b.y0:b.y1, b.x0:b.x1] += 1
    assert cover.min() >= 1
    ov = int(round(overlap * tile)) if overlap < 1 else overlap
    for axis in (0, 1):
        starts = sorted({(b.y0, b.y1) if axis == 0 else (b.x0, b.x1) for b in boxes})
        sizes = {s1 - s0 for s0, s1 in starts}
        assert len(sizes) == 1  # one tile size per axis
        for (a0, a1), (b0, b1) in zip(starts, starts[1:]):
            assert a1 - b0 >= ov - 1  # neighbours keep (about) the requested overlap
        if len(starts) > 1:  # and use no more tiles than needed for it
            n, size = len(starts), tile
            assert (n - 1) * (size - ov) + ov < canvas[axis]


def test_layout_rejects_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        grid_layout((10, 10), 0, 0.1)
    with pytest.raises(ValueError, match="smaller than the tile size"):
        grid_layout((10, 10), 8, 8)


def test_bbox_intersection_union_and_slices():
    a, b = BBox(0, 10, 0, 20), BBox(5, 15, 10, 30)
    assert a.intersection(b) == BBox(5, 10, 10, 20)
    assert a.union(b) == BBox(0, 15, 0, 30)
    assert a.intersection(BBox(20, 30, 0, 5)).is_empty
    assert not a.overlaps(BBox(10, 12, 0, 5))  # half-open: touching is not overlapping
    img = np.arange(15 * 30).reshape(15, 30)
    ys, xs = a.intersection(b).slices_in(b)
    assert img[ys, xs].shape == (5, 10)
