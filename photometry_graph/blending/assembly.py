"""Assembly of corrected tiles into a seamless mosaic, chunk by chunk.

The canvas is cut into output chunks.  For each chunk the tiles that touch
the chunk plus a halo (the context the pyramid needs) are found through a
grid-bucket index of their boxes; only the part of each tile inside the halo
box is read (``tile.read`` on a memmap reads just those pages), corrected
with its :class:`~photometry_graph.core.correction.Correction`, given a feather
weight from its valid border (computed on a crop widened by the ramp, so it
equals the whole-tile weight), and all tiles are blended at once
(:func:`~photometry_graph.blending.blend.blend_layers`).  The blended chunk goes to a
``sink`` (or into an in-memory mosaic).  Memory is bounded by the chunk size
and the number of tiles meeting in a chunk, not by the canvas size.

Halo boxes start on multiples of ``2**(levels - 1)`` of the canvas grid, so
every chunk samples the pyramid exactly as a single whole-canvas pass would:
the result does not depend on the chunk size (to float rounding).
"""

import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .._log import get_logger, grid_debug, grid_info, grid_warning
from .._threads import check_workers
from .blend import (
    BLEND_METHODS,
    BlendLayer,
    blend_layers,
    feather_weight,
    levels_for_overlap,
    pyramid_halo,
)
from ..core.correction import Correction, apply_correction
from ..core.masks import compute_valid_mask
from ..core.tiles import BBox, TilePhotometryInfo

__all__ = ["AssemblyResult", "assemble_mosaic", "chunk_boxes", "BBoxIndex"]

logger = get_logger(__name__)


@dataclass
class AssemblyResult:
    """Outcome of :func:`assemble_mosaic`.

    Attributes
    ----------
    mosaic : numpy.ndarray or None
        ``(H, W, C)`` mosaic (NaN where no tile has data) when no sink was
        given, else None.
    weight_sum : numpy.ndarray or None
        ``(H, W)`` float32 sum of the tiles' blend weights (0 = no data)
        when no sink was given.
    canvas_shape : tuple of int
    n_channels : int
    blend : str
        Method used.
    levels : int
        Pyramid levels (1 = no pyramid).
    chunks_written : int
    pyramid_overlaps : int
        Overlapping tile pairs blended with pyramids.
    feathered_overlaps : int
        Overlapping tile pairs feathered (too narrow, feather mode or a
        fallback).
    fallbacks : int
        Chunks whose pyramid failed and were feathered instead.
    report : dict
        JSON-friendly summary.
    """

    mosaic: np.ndarray
    weight_sum: np.ndarray
    canvas_shape: tuple
    n_channels: int
    blend: str
    levels: int
    chunks_written: int = 0
    pyramid_overlaps: int = 0
    feathered_overlaps: int = 0
    fallbacks: int = 0
    report: dict = field(default_factory=dict)


class BBoxIndex:
    """Grid-bucket spatial index of boxes.

    Parameters
    ----------
    boxes : sequence of BBox
    cell : int
        Bucket size in pixels.

    Examples
    --------
    >>> idx = BBoxIndex([BBox(0, 10, 0, 10), BBox(50, 60, 50, 60)], cell=16)
    >>> idx.query(BBox(5, 20, 5, 20))
    [0]
    """

    def __init__(self, boxes, cell):
        if cell < 1:
            raise ValueError(f"cell must be >= 1, got {cell}")
        self.boxes = list(boxes)
        self.cell = int(cell)
        self._buckets = defaultdict(list)
        for i, b in enumerate(self.boxes):
            if b.is_empty:
                continue
            for cy in range(b.y0 // self.cell, (b.y1 - 1) // self.cell + 1):
                for cx in range(b.x0 // self.cell, (b.x1 - 1) // self.cell + 1):
                    self._buckets[(cy, cx)].append(i)

    def query(self, box):
        """Sorted indices of the boxes sharing a pixel with ``box``."""
        if box.is_empty:
            return []
        found = set()
        for cy in range(box.y0 // self.cell, (box.y1 - 1) // self.cell + 1):
            for cx in range(box.x0 // self.cell, (box.x1 - 1) // self.cell + 1):
                found.update(self._buckets.get((cy, cx), ()))
        return sorted(i for i in found if self.boxes[i].overlaps(box))


def chunk_boxes(canvas_shape, chunk_size):
    """Row-major output chunks of at most ``chunk_size`` pixels a side.

    Examples
    --------
    >>> [(c.y0, c.y1, c.x0, c.x1) for c in chunk_boxes((5, 7), 4)]
    [(0, 4, 0, 4), (0, 4, 4, 7), (4, 5, 0, 4), (4, 5, 4, 7)]
    """
    H, W = int(canvas_shape[0]), int(canvas_shape[1])
    c = int(chunk_size)
    return [BBox(y, min(y + c, H), x, min(x + c, W))
            for y in range(0, H, c) for x in range(0, W, c)]


def _halo_region(chunk, halo, align, canvas_shape):
    """Chunk grown by ``halo``, origin aligned down to ``align``, clamped to the canvas."""
    H, W = canvas_shape
    y0 = max(0, (chunk.y0 - halo) // align * align)
    x0 = max(0, (chunk.x0 - halo) // align * align)
    return BBox(y0, min(H, chunk.y1 + halo), x0, min(W, chunk.x1 + halo))


def _read_region(tile, box):
    """Data view and valid mask of ``tile`` inside ``box`` (inside its bbox).

    A tile whose mask is not loaded yet gets its mask computed on the crop
    only (widened by the erosion), so a lazily read tile is never loaded
    nor masked whole here.
    """
    if not isinstance(tile, TilePhotometryInfo) or getattr(tile, "_mask", None) is not None:
        return tile.read(box)
    erode = int(getattr(tile, "mask_erode", 0) or 0)
    big = box.expand(erode).intersection(tile.bbox) if erode else box
    sl = big.slices_in(tile.bbox)
    data = tile.get_data()[sl]
    cov = None if tile.coverage is None else np.asarray(tile.coverage[sl])
    mask = compute_valid_mask(data, eps=tile.mask_eps, coverage=cov, erode=erode)
    inner = box.slices_in(big)
    return data[inner], mask[inner]


def _coverage_weight(tile, box, valid):
    """Plain-placement weight: the tile's coverage where valid (1 without coverage)."""
    if getattr(tile, "coverage", None) is None:
        return valid.astype(np.float32)
    cov = np.asarray(tile.coverage[box.slices_in(tile.bbox)], dtype=np.float32)
    cov = np.where(np.isfinite(cov) & (cov > 0), cov, np.float32(1e-6))
    return np.where(valid, cov, np.float32(0.0)).astype(np.float32)


def _resolve_corrections(corrections, tiles):
    """Per-tile Correction (or None) and the ids without one."""
    if corrections is None:
        return [None] * len(tiles), []
    if hasattr(corrections, "corrections"):  # a HarmonizationResult / PhotometrySolution
        corrections = corrections.corrections
    if not hasattr(corrections, "get"):
        raise TypeError("corrections must be a dict {tile_id: Correction}, an object with a "
                        f".corrections dict, or None; got {type(corrections).__name__}")
    out, missing = [], []
    for t in tiles:
        c = corrections.get(t.tile_id)
        if c is None:
            missing.append(t.tile_id)
        elif not isinstance(c, Correction):
            raise TypeError(f"correction of tile {t.tile_id!r} is a {type(c).__name__}, "
                            "expected photometry_graph.core.correction.Correction")
        out.append(c)
    return out, missing


@dataclass
class _Plan:
    tiles: list
    boxes: list  # clamped to the canvas
    corrections: list
    canvas_shape: tuple
    n_channels: int
    method: str
    levels: int
    ramp: float
    halo: int
    align: int
    fill: str
    index: BBoxIndex
    dtype: object


@dataclass
class _ChunkOut:
    chunk: BBox
    image: np.ndarray
    weight_sum: np.ndarray
    pairs: set
    pyramid: bool
    fallback: bool
    seconds: float


def _layer(plan, k, region):
    """BlendLayer of tile ``k`` inside ``region`` (None when it has no valid pixel there)."""
    tile = plan.tiles[k]
    crop = plan.boxes[k].intersection(region)
    if crop.is_empty:
        return None
    if plan.method == "none":
        data, valid = _read_region(tile, crop)
        weight = _coverage_weight(tile, crop, valid)
    else:
        H, W = plan.canvas_shape
        ext = crop.expand(int(np.ceil(plan.ramp)) + 1).intersection(plan.boxes[k])
        data_ext, valid_ext = _read_region(tile, ext)
        # a tile edge is a feathering border unless it lies on (or past) the canvas edge:
        # nothing can take over there, and feathering it would skew the other weights
        tb = tile.bbox
        border = (ext.y0 == tb.y0 and tb.y0 > 0, ext.y1 == tb.y1 and tb.y1 < H,
                  ext.x0 == tb.x0 and tb.x0 > 0, ext.x1 == tb.x1 and tb.x1 < W)
        sl = crop.slices_in(ext)
        if not valid_ext[sl].any():
            return None
        weight = feather_weight(valid_ext, ramp=plan.ramp, border=border, roi=sl)
        data, valid = data_ext[sl], valid_ext[sl]
    if not valid.any():
        return None
    data = apply_correction(data, crop, plan.corrections[k])
    return BlendLayer(crop.y0 - region.y0, crop.x0 - region.x0, data, valid, weight,
                      key=plan.tiles[k].tile_id)


def _chunk_pairs(layers, chunk, region):
    """Pairs of tile ids whose valid pixels meet inside the chunk."""
    pairs = set()
    cy0, cy1 = chunk.y0 - region.y0, chunk.y1 - region.y0
    cx0, cx1 = chunk.x0 - region.x0, chunk.x1 - region.x0
    for i in range(len(layers)):
        a = layers[i]
        ah, aw = a.valid.shape
        for j in range(i + 1, len(layers)):
            b = layers[j]
            bh, bw = b.valid.shape
            y0, y1 = max(a.y0, b.y0, cy0), min(a.y0 + ah, b.y0 + bh, cy1)
            x0, x1 = max(a.x0, b.x0, cx0), min(a.x0 + aw, b.x0 + bw, cx1)
            if y0 >= y1 or x0 >= x1:
                continue
            va = a.valid[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
            vb = b.valid[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
            if np.any(va & vb):
                key = (a.key, b.key) if str(a.key) <= str(b.key) else (b.key, a.key)
                pairs.add(key)
    return pairs


def _process_chunk(plan, chunk):
    t0 = time.perf_counter()
    halo = plan.halo if plan.method == "multiband" else 0
    region = _halo_region(chunk, halo, plan.align, plan.canvas_shape)
    layers = []
    for k in plan.index.query(region):
        layer = _layer(plan, k, region)
        if layer is not None:
            layers.append(layer)
    inner = chunk.slices_in(region)
    pyramid = fallback = False
    if not layers:
        image = np.full(chunk.shape + (plan.n_channels,), np.nan, dtype=plan.dtype)
        return _ChunkOut(chunk, image, np.zeros(chunk.shape, np.float32), set(), False, False,
                         time.perf_counter() - t0)
    method = "feather" if plan.method == "multiband" and plan.levels < 2 else plan.method
    try:
        out = blend_layers(layers, region.shape, method=method, levels=plan.levels,
                           fill=plan.fill, roi=inner)
        pyramid = out.pyramid
    except Exception as exc:  # noqa: BLE001 - any pyramid failure falls back to feathering
        if method != "multiband":
            raise
        grid_warning(logger, "Blending: pyramid failed on chunk %s (%s: %s); feathering "
                     "this chunk instead", tuple((chunk.y0, chunk.y1, chunk.x0, chunk.x1)),
                     type(exc).__name__, exc)
        out = blend_layers(layers, region.shape, method="feather", roi=inner)
        fallback = True
    image = np.ascontiguousarray(out.image, dtype=plan.dtype)
    wsum = np.ascontiguousarray(out.weight_sum)
    pairs = _chunk_pairs(layers, chunk, region)
    return _ChunkOut(chunk, image, wsum, pairs, pyramid, fallback, time.perf_counter() - t0)


def _overlap_widths(boxes, index):
    """Smaller side of every overlapping pair of (clamped) boxes, keyed by index pair."""
    widths = {}
    for i, b in enumerate(boxes):
        for j in index.query(b):
            if j <= i:
                continue
            inter = b.intersection(boxes[j])
            widths[(i, j)] = min(inter.shape)
    return widths


def _reference_width(widths):
    """Narrowest overlap that is not a sliver (< half the median width)."""
    if not widths:
        return 0.0
    w = np.array(sorted(widths.values()), dtype=float)
    regular = w[w >= 0.5 * np.median(w)]
    return float(regular.min())


def assemble_mosaic(tiles, canvas_shape, *, corrections=None, blend="multiband", levels=None,
                    chunk_size=1024, feather_ramp=None, sink=None, progress=None,
                    dtype=np.float32, workers=1, fill="mosaic", max_levels=6):
    """Assemble (corrected) tiles into one mosaic, chunk by chunk.

    Parameters
    ----------
    tiles : sequence of TilePhotometryInfo
        Tiles on the canvas grid (boxes may extend past the canvas); data
        may be lazy (memmaps or callables); the same channel count for all.
    canvas_shape : tuple of int
        ``(H, W)`` of the mosaic.
    corrections : dict {tile_id: Correction}, optional
        Photometric corrections (``gain * data + offset + plane``); an
        object with a ``.corrections`` dict (e.g. the result of
        ``harmonize_tiles``) is accepted.  Tiles without one are used as
        they are, with a ``[GRID]`` warning.
    blend : {"multiband", "feather", "none"}
        ``"multiband"``: Laplacian-pyramid blend of all covering tiles with
        feather weights; ``"feather"``: feather-weighted mean; ``"none"``:
        plain placement, the coverage-weighted mean of the covering tiles
        (with ``corrections=None`` the reproducible plain mode).
    levels : int, optional
        Pyramid levels; default from the narrowest regular overlap
        (:func:`~photometry_graph.blending.blend.levels_for_overlap`).  Overlaps too
        narrow for a pyramid are feathered.
    chunk_size : int
        Side of the output chunks (>= 16); bounds the memory.
    feather_ramp : float, optional
        Width of the feather ramp in pixels; default the narrowest regular
        overlap width, so weights cross-fade over the whole overlap.
    sink : callable, optional
        ``sink(chunk_bbox, data, weight_sum)`` called once per chunk, in
        row-major order, with ``data`` ``(h, w, C)`` (``dtype``, NaN where
        ``weight_sum == 0``) and ``weight_sum`` ``(h, w)`` float32.  When
        None the mosaic is returned in memory.
    progress : callable, optional
        ``progress(done_chunks, total_chunks)``.
    dtype : numpy dtype
        Output type (computations are float32).
    workers : int
        Threads processing chunks in parallel (OpenCV releases the GIL).
    fill : {"mosaic", "pushpull"}
        How a tile's pyramid sees its invalid pixels (see
        :func:`~photometry_graph.blending.blend.blend_layers`).
    max_levels : int
        Cap of the automatic number of levels.

    Returns
    -------
    AssemblyResult

    Examples
    --------
    >>> import numpy as np
    >>> from photometry_graph.core.tiles import BBox, TilePhotometryInfo
    >>> t = TilePhotometryInfo(0, BBox(0, 8, 0, 8), data=np.arange(1.0, 65.0).reshape(8, 8))
    >>> res = assemble_mosaic([t], (8, 8), chunk_size=16)
    >>> bool(np.array_equal(res.mosaic[..., 0], t.get_data()[..., 0]))
    True
    """
    t_start = time.perf_counter()
    canvas_shape, chunk_size, workers, dtype = _check_arguments(
        blend=blend, canvas_shape=canvas_shape, chunk_size=chunk_size, workers=workers,
        levels=levels, feather_ramp=feather_ramp, sink=sink, dtype=dtype)
    all_tiles = list(tiles)
    inside, n_channels = _tiles_on_canvas(all_tiles, canvas_shape)
    corr_list, missing = _resolve_corrections(corrections, inside)
    if missing:
        grid_warning(logger, "Blending: %d tile(s) have no photometric correction and are used "
                     "as they are: %s", len(missing), missing[:10])
    for t, c in zip(inside, corr_list):
        if c is not None and c.n_channels != n_channels:
            raise ValueError(f"correction of tile {t.tile_id!r} has {c.n_channels} channels, "
                             f"the tiles have {n_channels}")

    boxes = [t.bbox.clamp(canvas_shape) for t in inside]
    cell = max(chunk_size, int(np.median([max(b.shape) for b in boxes])))
    index = BBoxIndex(boxes, cell)
    widths = _overlap_widths(boxes, index)
    ref_width = _reference_width(widths)
    if blend == "multiband":
        n_levels = int(levels) if levels is not None else levels_for_overlap(
            ref_width, max_levels=max_levels)
        if n_levels < 2 and widths:
            grid_info(logger, "Blending: overlaps too narrow for a pyramid (%.0f px): feathering",
                      ref_width)
    else:
        n_levels = 1
    ramp = float(feather_ramp) if feather_ramp is not None else max(2.0, ref_width)
    halo = pyramid_halo(n_levels)
    plan = _Plan(tiles=inside, boxes=boxes, corrections=corr_list, canvas_shape=canvas_shape,
                 n_channels=n_channels, method=blend, levels=n_levels, ramp=ramp, halo=halo,
                 align=2 ** max(0, n_levels - 1), fill=fill, index=index, dtype=dtype)
    grid_info(logger, "Blending: %d tiles, canvas %dx%d, method %s, %d level(s), ramp %.0f px, "
              "chunks of %d px (halo %d px), %d worker(s)", len(inside), canvas_shape[0],
              canvas_shape[1], blend, n_levels, ramp, chunk_size, halo, workers)

    tally = _Tally(plan, sink, progress)
    chunks = chunk_boxes(canvas_shape, chunk_size)
    tally.total = len(chunks)
    if workers == 1:
        for chunk in chunks:
            tally.consume(_process_chunk(plan, chunk))
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = []
            for chunk in chunks:
                pending.append(pool.submit(_process_chunk, plan, chunk))
                if len(pending) >= 2 * workers:
                    tally.consume(pending.pop(0).result())
            for fut in pending:
                tally.consume(fut.result())

    narrow = _narrow_pairs(widths, inside, max_levels)
    feathered = tally.feathered | (tally.pyramid & narrow)
    m_pyr, m_feather = len(tally.pyramid - feathered), len(feathered)
    if blend == "multiband":
        grid_info(logger, "Blending: applied pyramidal blending on %d overlaps", m_pyr)
    grid_info(logger, "Blending: feathered %d overlaps", m_feather)
    if blend == "none":
        grid_info(logger, "Blending: plain placement of %d overlaps", len(tally.placed))
    grid_info(logger, "Blending: %d chunks written", tally.written)
    grid_info(logger, "Blending: %d fallbacks used", tally.fallbacks)
    elapsed = time.perf_counter() - t_start
    grid_debug(logger, "Blending: %.2f s wall, %.2f s in chunks", elapsed, tally.seconds)
    report = {
        "blend": blend,
        "levels": n_levels,
        "fill": fill,
        "feather_ramp_px": ramp,
        "reference_overlap_px": ref_width,
        "chunk_size": chunk_size,
        "halo_px": halo if blend == "multiband" else 0,
        "workers": workers,
        "n_tiles": len(inside),
        "n_tiles_outside_canvas": len(all_tiles) - len(inside),
        "n_overlaps": len(widths),
        "pyramid_overlaps": m_pyr,
        "feathered_overlaps": m_feather,
        "placed_overlaps": len(tally.placed),
        "narrow_overlaps": len(narrow),
        "chunks_written": tally.written,
        "fallbacks": tally.fallbacks,
        "tiles_without_correction": [str(i) for i in missing],
        "seconds": round(elapsed, 3),
    }
    return AssemblyResult(mosaic=tally.mosaic, weight_sum=tally.weight_sum,
                          canvas_shape=canvas_shape, n_channels=n_channels, blend=blend,
                          levels=n_levels, chunks_written=tally.written, pyramid_overlaps=m_pyr,
                          feathered_overlaps=m_feather, fallbacks=tally.fallbacks, report=report)


def _check_arguments(*, blend, canvas_shape, chunk_size, workers, levels, feather_ramp, sink,
                     dtype):
    """Validated ``(canvas_shape, chunk_size, workers, dtype)`` of :func:`assemble_mosaic`."""
    if blend not in BLEND_METHODS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {BLEND_METHODS}")
    if len(canvas_shape) != 2 or min(int(canvas_shape[0]), int(canvas_shape[1])) < 1:
        raise ValueError(f"canvas_shape must be (H, W) with positive sizes, got {canvas_shape!r}")
    if int(chunk_size) != chunk_size or chunk_size < 16:
        raise ValueError(f"chunk_size must be an integer >= 16, got {chunk_size!r}")
    if workers is None:
        raise ValueError("workers must be a positive integer, got None")
    workers = check_workers(workers)
    if levels is not None and (int(levels) != levels or levels < 1):
        raise ValueError(f"levels must be None or an integer >= 1, got {levels!r}")
    if feather_ramp is not None and not (np.isfinite(feather_ramp) and feather_ramp > 0):
        raise ValueError(f"feather_ramp must be a positive number of pixels, got {feather_ramp!r}")
    if sink is not None and not callable(sink):
        raise TypeError("sink must be callable as sink(chunk_bbox, data, weight_sum)")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a floating type (NaN marks empty pixels), got {dtype}")
    return (int(canvas_shape[0]), int(canvas_shape[1])), int(chunk_size), workers, dtype


def _tiles_on_canvas(all_tiles, canvas_shape):
    """The tiles that touch the canvas (others warned about) and their common channel count."""
    if not all_tiles:
        raise ValueError("no tiles to assemble")
    ids = [t.tile_id for t in all_tiles]
    if len(set(ids)) != len(ids):
        raise ValueError("tile ids must be unique")
    canvas = BBox(0, canvas_shape[0], 0, canvas_shape[1])
    inside = [t for t in all_tiles if t.bbox.overlaps(canvas)]
    if len(inside) < len(all_tiles):
        grid_warning(logger, "Blending: %d tile(s) lie outside the %dx%d canvas and are ignored",
                     len(all_tiles) - len(inside), *canvas_shape)
    if not inside:
        raise ValueError("no tile overlaps the canvas; check the tile boxes and canvas_shape")
    channels = {t.n_channels for t in inside}
    if len(channels) != 1:
        raise ValueError(f"tiles have different channel counts {sorted(channels)}; "
                         "assemble mono and colour tiles separately")
    return inside, channels.pop()


def _narrow_pairs(widths, inside, max_levels):
    """Tile-id pairs too narrow for the pyramid: the level-0 weights feather them."""
    id_of = {i: t.tile_id for i, t in enumerate(inside)}
    narrow = set()
    for (i, j), w in widths.items():
        if levels_for_overlap(w, max_levels=max_levels) < 2:
            a, b = id_of[i], id_of[j]
            narrow.add((a, b) if str(a) <= str(b) else (b, a))
    return narrow


class _Tally:
    """Receives the processed chunks in order: the sink (or the in-memory mosaic) and counts."""

    def __init__(self, plan, sink, progress):
        self.sink, self.progress, self.blend, self.total = sink, progress, plan.method, 0
        H, W = plan.canvas_shape
        self.canvas = BBox(0, H, 0, W)
        self.mosaic = self.weight_sum = None
        if sink is None:
            self.mosaic = np.full((H, W, plan.n_channels), np.nan, dtype=plan.dtype)
            self.weight_sum = np.zeros((H, W), dtype=np.float32)
        self.pyramid, self.feathered, self.placed = set(), set(), set()
        self.written = self.fallbacks = 0
        self.seconds = 0.0

    def consume(self, res):
        if self.sink is None:
            sl = res.chunk.slices_in(self.canvas)
            self.mosaic[sl] = res.image
            self.weight_sum[sl] = res.weight_sum
        else:
            self.sink(res.chunk, res.image, res.weight_sum)
        self.written += 1
        self.seconds += res.seconds
        if res.fallback:
            self.fallbacks += 1
            self.feathered.update(res.pairs)
        elif res.pyramid:
            self.pyramid.update(res.pairs)
        elif self.blend == "none":
            self.placed.update(res.pairs)
        else:
            self.feathered.update(res.pairs)
        if self.progress is not None:
            self.progress(self.written, self.total)
