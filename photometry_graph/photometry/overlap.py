"""The overlap graph of a set of nodes (tiles or frames) and its pairwise fits.

One node per tile, one edge per pair of tiles whose bounding boxes overlap
(diagonal neighbours included) and whose masks share valid pixels.  Each edge
carries the intersection box, the jointly valid pixel count and, after
:func:`fit_overlap_edges`, one :class:`~photometry_graph.photometry.regression.PairwiseFit`
per channel describing ``dst ~ a * src + b (+ plane)``.

The gain ``a`` of an edge has two estimators: the pixel fit (errors-in-variables over
every jointly valid pixel) and the flux ratio of the stars both nodes see
(:mod:`.stars`), immune to backgrounds, gradients and the noise ratio.
:func:`fit_edge_channel` combines them by inverse variance (the stars win when the two
disagree by more than 3 sigma) and fits the offset and the plane at the combined gain;
the fit records both estimates, their sigmas, the star count, the source of ``a`` and
the disagreement (``gain_estimator`` chooses: ``'auto'`` both, ``'pixels'``,
``'stars'``).

Overlapping pairs are found by a sort-and-sweep over the boxes' x intervals: about
``N log N + N * k`` box tests for N tiles (``k`` of them open at once), not ``N**2``.
"""

import importlib
import math
from dataclasses import replace

import networkx as nx
import numpy as np

from .._log import get_logger, graph_label, grid_debug, grid_info, grid_warning
from .._threads import LazyTasks, check_workers, thread_map
from .._stats import estimate_noise
from .binned import bin_overlap, binnable, binned_origin, binned_to_full_fit
from .candidates import bridge_edges, joint_valid
from .edges import edge_pixels
from .estimates import calibrate_pixel_gains, combine_fit
from .regression import (FIT_MODELS, MAX_REL_GAIN_ERROR, PairwiseFit, check_sampling,
                         fit_pair_image)
from ..core.tiles import BBox, TilePhotometryInfo  # noqa: F401 (BBox: doctests)

# estimate_noise (from _stats) is exported from here as before it moved
__all__ = ["build_tile_overlap_graph", "sparsify_overlap_graph", "fit_overlap_edges",
           "estimate_noise", "find_overlapping_pairs", "edge_status", "fit_edge_channel",
           "gain_estimates", "GAIN_ESTIMATORS",
           "star_search_nodes", "NODE_SEARCH_COVERAGE", "MIN_BRIDGES"]

#: Possible values of the ``gain_estimator`` argument: both estimators combined, the
#: pixel fit alone, the stars alone.
GAIN_ESTIMATORS = ("auto", "pixels", "stars")

logger = get_logger(__name__)

_STATUS_RANK = {"ok": 0, "offset_only": 1, "failed": 2}


def find_overlapping_pairs(bboxes):
    """Index pairs of boxes that share at least one pixel (sort and sweep).

    Parameters
    ----------
    bboxes : sequence of BBox
        Half-open boxes; empty boxes overlap nothing.

    Returns
    -------
    list of tuple of int
        ``(i, j)`` with ``i < j``, sorted.

    Examples
    --------
    >>> find_overlapping_pairs([BBox(0, 10, 0, 10), BBox(5, 15, 8, 20), BBox(0, 6, 12, 20)])
    [(0, 1), (1, 2)]
    """
    boxes = list(bboxes)
    order = sorted((i for i, b in enumerate(boxes) if not b.is_empty),
                   key=lambda i: boxes[i].x0)
    active = []  # indices whose x interval may still reach the sweep line
    pairs = []
    for i in order:
        bi = boxes[i]
        active = [j for j in active if boxes[j].x1 > bi.x0]
        for j in active:
            bj = boxes[j]
            if bj.y0 < bi.y1 and bi.y0 < bj.y1:
                pairs.append((j, i) if j < i else (i, j))
        active.append(i)
    return sorted(pairs)


def _prefetch_mask(tile):
    """Compute and cache the mask of a tile (errors surface later, where it is used)."""
    try:
        tile.mask
    except Exception:  # noqa: BLE001 - reported by the caller that needs the mask
        pass


def _ordered(a, b):
    """``(src, dst)`` with ``src`` the smaller id (insertion order if ids do not compare)."""
    try:
        return (a, b) if a < b else (b, a)
    except TypeError:
        return a, b


def _exact(rows):
    """True for :class:`~.candidates.MaskRows` that give their mask."""
    return rows is not None and rows.exact


def build_tile_overlap_graph(tiles, *, min_overlap_pixels=1, compute_valid=True, workers=None,
                             node_kind="tiles", pairs=None, rows=None):
    """Build the overlap graph of a set of tiles.

    Parameters
    ----------
    tiles : iterable of TilePhotometryInfo
        Nodes on one global pixel grid; ``tile_id`` must be unique.
    min_overlap_pixels : int
        Edges with fewer jointly valid pixels are left out (logged at debug level).
    compute_valid : bool
        Count the pixels valid in *both* masks (reads the masks, which may load
        the data).  When False, ``n_valid`` is the intersection area and no
        mask is touched.  The count is exact; each tile's mask is computed
        once (and cached on the tile, where the fits and the blending find it).
    workers : int, optional
        Threads computing the masks of the tiles that have none yet (default
        ``min(2, os.cpu_count())``).
    node_kind : {"tiles", "frames"}
        What the nodes are: the graph attribute ``node_kind``, which the log lines of the
        graph, its fits and its solve name (:func:`photometry_graph._log.graph_label`).
    pairs : sequence of (int, int), optional
        The index pairs of ``tiles`` examined (e.g. from
        :func:`~photometry_graph.photometry.candidates.candidate_pairs`); default every
        pair whose boxes intersect.
    rows : sequence, optional
        Each tile's mask as its :class:`~photometry_graph.photometry.candidates.MaskRows`
        (or None): two tiles whose rows give their masks count their jointly valid pixels
        from them, the same count without reading either mask (a session's binned frames
        are read from files: the 111,069 candidate pairs of 4,993 frames 9.3 -> 2.9 s).

    Returns
    -------
    networkx.Graph
        Node ``tile_id`` with attributes ``bbox`` (BBox) and ``tile``.  Edge
        attributes: ``bbox`` (intersection BBox), ``area``, ``n_valid``,
        ``src``, ``dst`` (``src`` is the smaller id; fits are ``dst ~ a src + b``),
        ``fits`` (empty list until :func:`fit_overlap_edges`), ``weight``
        (= ``n_valid``).

    Raises
    ------
    TypeError
        If an element is not a :class:`TilePhotometryInfo`.
    ValueError
        If two tiles share a ``tile_id``.

    Examples
    --------
    >>> import numpy as np
    >>> ts = [TilePhotometryInfo(k, BBox(0, 8, 6 * k, 6 * k + 8), data=np.ones((8, 8)))
    ...       for k in range(3)]
    >>> g = build_tile_overlap_graph(ts)
    >>> sorted(g.edges), g.edges[0, 1]["n_valid"]
    ([(0, 1), (1, 2)], 16)
    """
    tiles = list(tiles)
    seen = {}
    for t in tiles:
        if not isinstance(t, TilePhotometryInfo):
            raise TypeError(
                f"build_tile_overlap_graph expects TilePhotometryInfo objects, got {type(t)!r}")
        if t.tile_id in seen:
            raise ValueError(
                f"duplicate tile_id {t.tile_id!r} (tiles with bboxes {seen[t.tile_id].bbox} and "
                f"{t.bbox}); give every tile a unique tile_id")
        seen[t.tile_id] = t
    workers = check_workers(workers)
    stage, noun = graph_label(node_kind)
    graph = nx.Graph(node_kind=node_kind)
    for t in tiles:
        graph.add_node(t.tile_id, bbox=t.bbox, tile=t)
    skipped = 0
    pairs = find_overlapping_pairs([t.bbox for t in tiles]) if pairs is None else pairs
    rows = [None] * len(tiles) if rows is None else list(rows)
    if compute_valid:
        in_pairs = sorted({k for pair in pairs for k in pair if not _exact(rows[k])})
        thread_map(lambda k: _prefetch_mask(tiles[k]), in_pairs, workers)
    held = (None, None)  # the mask of the last first node: the pairs of a node come in a run
    for i, j in pairs:
        ti, tj = tiles[i], tiles[j]
        inter = ti.bbox.intersection(tj.bbox)
        if inter.is_empty:  # a pair given that does not overlap
            continue
        if compute_valid and _exact(rows[i]) and _exact(rows[j]):
            n_valid = joint_valid(rows[i], rows[j])
        elif compute_valid:
            if held[0] != i:  # a mask read from a file is read once for the run
                held = (i, ti.mask)
            joint = held[1][inter.slices_in(ti.bbox)] & tj.mask[inter.slices_in(tj.bbox)]
            n_valid = int(np.count_nonzero(joint))
        else:
            n_valid = inter.area
        if n_valid < min_overlap_pixels:
            skipped += 1
            grid_debug(logger, "Photometry: overlap %r-%r skipped: %d jointly valid pixels "
                       "(< min_overlap_pixels=%d)", ti.tile_id, tj.tile_id, n_valid,
                       min_overlap_pixels)
            continue
        src, dst = _ordered(ti.tile_id, tj.tile_id)
        graph.add_edge(ti.tile_id, tj.tile_id, bbox=inter, area=inter.area, n_valid=n_valid,
                       src=src, dst=dst, fits=[], weight=n_valid)
    grid_info(logger, f"{stage}: built overlap graph with %d edges (%d {noun}s, %d overlaps "
              "below min_overlap_pixels)", graph.number_of_edges(), graph.number_of_nodes(),
              skipped)
    return graph


#: Overlaps that :func:`sparsify_overlap_graph` seeks between two groups of near-identical
#: nodes by default, whatever a smaller ``max_degree`` (up to this many: distinct nodes, at
#: most half of the smaller group; :func:`~.candidates.bridge_edges`): the gains of two
#: pointings' dithers agree through them (120 frames of 2 x 3 pointings, 4 overlaps a frame: 2
#: bridges instead of 4 left the frame gains about as good, 0.031 % against 0.028 % RMS,
#: but the gains of the mosaic's structured blocks spread 0.077 % instead of 0.063 %).
MIN_BRIDGES = 4


def sparsify_overlap_graph(graph, max_degree, bridges=None):
    """The overlap graph with only the largest overlaps of every node.

    Many frames of one field all overlap each other: ``n (n - 1) / 2`` pairwise
    fits, most of them redundant.  An edge is kept when it is among the
    ``max_degree`` largest (``weight``, the jointly valid pixel count) of
    either of its nodes, or on a maximum spanning tree of the graph, so the
    connected components are those of the full graph, or when it joins two
    groups of near-identical nodes (the dithers of two pointings, whose largest
    overlaps are all within their pointing) that would otherwise hang together
    by fewer than ``bridges`` edges (:func:`~.candidates.bridge_edges`); a node
    can thus keep more than ``max_degree`` edges, but the total stays below
    ``n * max_degree + 2 n``.  Ties are broken by the node ids (reproducible).

    Parameters
    ----------
    graph : networkx.Graph
        From :func:`build_tile_overlap_graph`; not modified.
    max_degree : int
        Largest overlaps kept per node, >= 1.
    bridges : int, optional
        Edges wanted between two groups of near-identical nodes (default the larger of
        :data:`MIN_BRIDGES` and ``max_degree // 2``; 0: none added).

    Returns
    -------
    networkx.Graph
        A new graph with every node and the kept edges (attributes shared
        with ``graph``).

    Raises
    ------
    ValueError
        ``max_degree`` below 1.

    Examples
    --------
    >>> import networkx as nx
    >>> g = nx.complete_graph(6)
    >>> nx.set_edge_attributes(g, {e: 10 * e[0] + e[1] for e in g.edges}, "weight")
    >>> h = sparsify_overlap_graph(g, 2)
    >>> h.number_of_edges() < g.number_of_edges(), nx.is_connected(h)
    (True, True)
    """
    k = int(max_degree)
    if k < 1:
        raise ValueError(f"max_degree must be >= 1, got {max_degree!r}")
    keep = set()
    for node in graph.nodes:
        ranked = sorted(graph.edges(node, data="weight", default=0),
                        key=lambda e: (-e[2], repr(e[1])))
        keep.update(frozenset(e[:2]) for e in ranked[:k])
    keep.update(frozenset(e) for e in nx.maximum_spanning_tree(graph, weight="weight").edges)
    added = bridge_edges(graph, keep, max(MIN_BRIDGES, k // 2) if bridges is None
                         else int(bridges))
    keep.update(frozenset(e) for e in added)
    out = nx.Graph()
    out.graph.update(graph.graph, bridges=len(added))
    out.add_nodes_from(graph.nodes(data=True))
    out.add_edges_from((u, v, d) for u, v, d in graph.edges(data=True)
                       if frozenset((u, v)) in keep)
    return out


def edge_status(fits):
    """Worst status of a list of per-channel fits (``'failed'`` for an empty list)."""
    if not fits:
        return "failed"
    return max((f.status for f in fits), key=lambda s: _STATUS_RANK.get(s, 2))


def _n_channels_or_one(graph, node):
    try:
        return int(graph.nodes[node]["tile"].n_channels)
    except Exception:  # the tile cannot be read: one placeholder fit
        return 1


def _star_ratio(src, dst, joint, fit, star_kwargs, catalogues):
    """The stars' gain ratio of one channel (a ``StarRatio``), or None when not measurable."""
    from .stars import measure_star_ratio
    noise_src, noise_dst = fit.noise_x, fit.noise_y
    if not (noise_src > 0 and noise_dst > 0):  # NaN compares False
        return None
    # the pixels outside `joint` are left out by measure_star_ratio itself
    return measure_star_ratio(src, dst, joint, noise_src=noise_src, noise_dst=noise_dst,
                              catalogues=catalogues, **star_kwargs)


#: A node is searched for stars once when its fitted overlaps add up to this many times
#: its pixels.  A search costs more per pixel on a whole node than on its overlaps (more
#: sources, larger buffers: measured 1.6 times on tiles of 1024 x 1024 and their borders),
#: and a tile's borders overlap at its corners (1.25 times its pixels for 25 % overlaps);
#: a frame among its dithers overlaps 4-8 times its pixels.
NODE_SEARCH_COVERAGE = 2.0


def star_search_nodes(graph, edges):
    """The nodes whose stars are searched once over their whole box.

    A node whose fitted overlaps add up to :data:`NODE_SEARCH_COVERAGE` times its pixels
    or more (a frame among its dithers, which overlaps most of its neighbours) is searched
    once (:func:`~.stars.detect_stars`) and its catalogue cropped to each overlap; the
    others (a tile, whose overlaps are thin borders) are searched inside each overlap.

    Parameters
    ----------
    graph : networkx.Graph
        An overlap graph (:func:`build_tile_overlap_graph`).
    edges : iterable of tuple
        The edges to fit.

    Returns
    -------
    list
        Node ids, in the order first met in ``edges``.

    Examples
    --------
    Three dithers of one field in a chain: the middle one overlaps twice its pixels.

    >>> g = nx.Graph()
    >>> for k in range(3):
    ...     g.add_node(k, tile=TilePhotometryInfo(k, BBox(0, 10, 0, 10)))
    >>> g.add_edge(0, 1, bbox=BBox(0, 10, 0, 10)); g.add_edge(1, 2, bbox=BBox(0, 10, 0, 10))
    >>> star_search_nodes(g, [(0, 1), (1, 2)])
    [1]
    """
    area = {}
    for u, v in edges:
        inter = graph.edges[u, v]["bbox"].area
        for node in (u, v):
            area[node] = area.get(node, 0) + inter
    return [n for n, a in area.items()
            if a >= NODE_SEARCH_COVERAGE * graph.nodes[n]["tile"].bbox.area]


def _node_catalogues(task):
    """Per-channel star catalogues of a whole node, ``task = (tile, noise_samples)`` (None
    for a channel that fails: its overlaps are then searched one by one)."""
    from .stars import detect_stars
    tile, noise_samples = task
    data, mask = tile.read(tile.bbox)
    try:
        noise = estimate_noise(data, mask, max_samples=noise_samples,
                               estimator="auto" if noise_samples else "mad")
    except Exception as exc:  # noqa: BLE001 - no valid pixel: search the overlaps instead
        grid_debug(logger, "Photometry: node %r not searched for stars (%s)", tile.tile_id,
                   exc)
        return []
    out = []
    for c in range(data.shape[2]):
        try:
            out.append(detect_stars(data[..., c], mask, noise=float(noise[c])))
        except Exception as exc:  # sep's limits, no noise: search the overlaps instead
            grid_debug(logger, "Photometry: star search of node %r channel %d failed (%s); "
                       "searched per overlap", tile.tile_id, c, exc)
            out.append(None)
    return out


def _cropped_catalogue(cats, tile, inter, channel):
    """The catalogue ``cats[channel]`` of ``tile`` inside ``inter`` (None when not found)."""
    if not cats or len(cats) <= channel or cats[channel] is None:
        return None
    return cats[channel].crop(inter.x0 - tile.bbox.x0, inter.y0 - tile.bbox.y0,
                              inter.x1 - inter.x0, inter.y1 - inter.y0)


def fit_edge_channel(src_image, dst_image, joint, *, gain_estimator="auto", star_kwargs=None,
                     catalogues=None, **fit_kw):
    """The fit of one channel of an overlap: pixel and star gain estimates combined.

    Parameters
    ----------
    src_image, dst_image : numpy.ndarray, shape (h, w)
        The two nodes inside their intersection (one channel).
    joint : numpy.ndarray of bool, shape (h, w)
        Jointly valid pixels.
    gain_estimator : {'auto', 'pixels', 'stars'}
        ``'auto'``: the pixel fit and the stars' flux ratio, combined by inverse variance
        (:func:`~.stars.combine_gain_estimates`: the stars alone when the two disagree by
        more than 3 sigma); ``'pixels'``: the pixel fit alone; ``'stars'``: the stars
        alone (an edge with too few stars has no gain: offset-only).
    star_kwargs : dict, optional
        Options of :func:`~.stars.measure_star_ratio` (``min_stars``, ``aperture`` ...).
    catalogues : tuple, optional
        The stars of either node inside the overlap, already found
        (:func:`~.stars.measure_star_ratio` ``catalogues``).
    **fit_kw
        Options of :func:`~photometry_graph.photometry.regression.fit_pair_image`.

    Returns
    -------
    PairwiseFit
        ``a``, ``sigma_a``: the combined gain (the offset and the plane fitted at it);
        ``a_pixels``, ``sigma_a_pixels``, ``a_stars``, ``sigma_a_stars``, ``n_stars``,
        ``gain_source`` and ``gain_disagree`` say how.

    Raises
    ------
    ValueError
        Unknown ``gain_estimator`` (and bad fit options).
    """
    if gain_estimator not in GAIN_ESTIMATORS:
        raise ValueError(f"gain_estimator must be one of {GAIN_ESTIMATORS}, got "
                         f"{gain_estimator!r}")
    pix = fit_pair_image(src_image, dst_image, joint, **fit_kw)
    if gain_estimator == "pixels" or pix.status == "failed":
        return pix
    stars = _star_ratio(src_image, dst_image, joint, pix, dict(star_kwargs or {}), catalogues)
    if stars is not None:
        pix = replace(pix, n_stars=int(stars.n_used), a_stars=stars.ratio if stars.ok
                      else math.nan, sigma_a_stars=stars.sigma if stars.ok else math.inf)
    why = "" if stars is None or stars.ok else f"no gain from the stars ({stars.message})"
    return combine_fit(pix, gain_estimator,
                       fit_kw.get("max_rel_gain_error", MAX_REL_GAIN_ERROR), why)


def _edge_task(graph, nodes, u, v, catalogues, seed, settings, *, cut=False, bin_factor=1):
    """The picklable task of one edge's fits (:func:`_fit_edge`): the two nodes (pixels only,
    read where it runs; ``cut``: :func:`_overlap_only`), their catalogues, the settings, and
    the overlap's binning (``bin_factor`` when binnable and no node was searched whole)."""
    edge = graph.edges[u, v]
    src, dst, inter = edge["src"], edge["dst"], edge["bbox"]
    b = bin_factor if bin_factor > 1 and (catalogues.get(src), catalogues.get(dst)) == \
        (None, None) and binnable(inter, edge_pixels(edge), bin_factor,
                                  settings["min_pixels"]) else 1
    tiles, cats = zip(*(_overlap_only(nodes[n], catalogues.get(n), inter) if cut else
                        (nodes[n], catalogues.get(n)) for n in (src, dst)))
    return dict(tiles=tiles, ids=(src, dst), inter=inter, catalogues=cats, seed=seed,
                settings=settings, bin=b)


def _overlap_only(tile, cats, inter):
    """A node and its catalogues cut to ``inter`` (only the overlap travels: the pixels of
    a node in memory, the reader of a lazy one, and the mask, of the overlap alone)."""
    try:
        node = tile.cropped(inter)
    except Exception:  # noqa: BLE001 - the task reads it, and reports what fails
        return tile, cats
    return node, [_cropped_catalogue(cats, tile, inter, c)
                  for c in range(len(cats or []))] or cats


def _fit_edge(task):
    """Fit one edge from :func:`_edge_task`; returns the list of per-channel PairwiseFit."""
    (t_src, t_dst), (src, dst), inter = task["tiles"], task["ids"], task["inter"]
    d_src, m_src = t_src.read(inter)
    d_dst, m_dst = t_dst.read(inter)
    if d_src.shape[2] != d_dst.shape[2]:
        raise ValueError(f"tiles {src!r} and {dst!r} have {d_src.shape[2]} and "
                         f"{d_dst.shape[2]} channels")
    s = dict(task["settings"])
    fit_kwargs = s.pop("fit_kwargs")
    origin, b = s["origin"], task["bin"]  # b > 1: block means, fits told at full resolution
    d_src, d_dst, joint, box = bin_overlap(d_src, m_src, d_dst, m_dst, inter, b)
    s["origin"] = binned_origin(origin, b)
    rng = None if task["seed"] is None else np.random.default_rng(task["seed"])
    fits = []
    for c in range(d_src.shape[2]):
        cats = tuple(_cropped_catalogue(k, t, inter, c)
                     for k, t in zip(task["catalogues"], (t_src, t_dst)))
        try:
            # the noise of both tiles is measured on the overlap itself by fit_pair_image
            fit = fit_edge_channel(
                d_src[..., c], d_dst[..., c], joint, catalogues=cats, x0=box.x0,
                y0=box.y0, src=src, dst=dst, channel=c, rng=rng, **s, **fit_kwargs)
            fit = binned_to_full_fit(fit, b, origin)
        except Exception as exc:  # never crash the mode on one overlap
            grid_warning(logger, "Photometry: fit of overlap %r->%r channel %d failed (%s: %s); "
                         "the edge is marked failed", src, dst, c, type(exc).__name__, exc)
            fit = PairwiseFit.failed(f"fit raised {type(exc).__name__}: {exc}", src=src,
                                     dst=dst, channel=c, n_total=int(np.count_nonzero(joint)),
                                     origin=origin, model=s["model"])
        fits.append(fit)
    return fits


def _failed_edge_fits(graph, u, v, exc, origin, model):
    edge = graph.edges[u, v]
    grid_warning(logger, "Photometry: overlap %r->%r could not be fitted (%s: %s); "
                 "the edge is marked failed", edge["src"], edge["dst"],
                 type(exc).__name__, exc)
    return [PairwiseFit.failed(f"fit raised {type(exc).__name__}: {exc}",
                               src=edge["src"], dst=edge["dst"], channel=c,
                               origin=origin, model=model)
            for c in range(_n_channels_or_one(graph, edge["src"]))]


def _available_estimator(gain_estimator):
    """``gain_estimator``, or ``'pixels'`` (warned) when the star estimator cannot be imported."""
    if gain_estimator not in GAIN_ESTIMATORS:
        raise ValueError(f"gain_estimator must be one of {GAIN_ESTIMATORS}, got "
                         f"{gain_estimator!r}")
    if gain_estimator == "pixels":
        return gain_estimator
    try:
        importlib.import_module(".stars", __package__)
    except ImportError as exc:
        grid_warning(logger, "Photometry: the star gain estimator is not available (%s: %s); "
                     "gains from the pixel fits alone", type(exc).__name__, exc)
        return "pixels"
    return gain_estimator


def _task_runner(task_map, workers):
    """``run(func, tasks)``: the results in order, an exception in place of a failed one
    (``task_map``, else ``workers`` threads)."""
    def guarded(func, task):
        try:
            return func(task)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            return exc

    def run(func, tasks):
        if task_map is not None:
            return list(task_map(func, tasks))
        return thread_map(lambda t: guarded(func, t), tasks, workers)
    return run


def fit_overlap_edges(graph, *, model="offset", origin=(0.0, 0.0), min_pixels=500, kappa=4.0,
                      max_iter=10, max_pixels=10_000, subsample="grid", polish=True,
                      noise_samples=120_000, noise_estimator="auto", rng=None, workers=None,
                      gain_estimator="auto", star_kwargs=None, task_map=None, bin_factor=1,
                      **fit_kwargs):
    """Fit every edge of an overlap graph (in place).

    For each edge the two tiles are read inside the intersection, only
    jointly valid pixels are used, the per-pixel noise of each tile is measured
    there with :func:`estimate_noise` (it sets the noise ratio of the
    errors-in-variables fit), and
    :func:`~photometry_graph.photometry.regression.fit_pair_image` fits
    ``dst ~ a * src + b (+ plane)`` per channel: robust clipping iterations on
    a regular subsample of the overlap, final estimates from all its pixels.

    Parameters
    ----------
    graph : networkx.Graph
        From :func:`build_tile_overlap_graph`.
    model : {'offset', 'plane'}
    origin : tuple of float
        ``(x, y)`` global origin of ``b`` and of the plane.
    min_pixels, kappa, max_iter
        Passed to :func:`~photometry_graph.photometry.regression.fit_pair`.
    max_pixels : int or None
        The clipping iterations of overlaps with more jointly valid pixels run
        on a subsample of this many (``None``: on every pixel, the exhaustive
        and slowest setting).  With ``polish`` the fit itself still uses every
        pixel, so the result does not lose precision (the iterations only
        decide which pixels are outliers).
    subsample : {'grid', 'random'}
        ``'grid'`` (default): a regular grid of row and column strides, the
        same pixels every run (a fair share of the star pixels, rows read in
        order); ``'random'``: uniform random pixels drawn from ``rng``.
    polish : bool
        Final estimates from every valid pixel of the overlap (default) or,
        when ``False``, from the subsample only (faster, about
        ``sqrt(n / max_pixels)`` times less precise).
    noise_samples : int or None
        Second differences per tile and edge used to measure the noise
        (:func:`estimate_noise` ``max_samples``, bands of three rows spread
        over the overlap; ``None``: the whole overlap, at most 100 000).
    noise_estimator : {'auto', 'clipped', 'mad'}
        :func:`estimate_noise` ``estimator``.  The gain of a low-contrast
        overlap depends on the noise *ratio* of the two tiles (0.05 % of gain
        per 1 % of ratio at signal-to-noise 3), so a sampled noise must be
        measured precisely: ``'auto'`` uses the clipped RMS (~2.5 times as
        efficient as the MAD) on overlaps measured on bands of rows, so that
        120 000 samples are as precise as the MAD of the whole overlap, and
        the MAD of all differences (as before) on smaller overlaps.
    rng : numpy.random.Generator or int, optional
        Source of ``subsample='random'`` (one child seed per edge, drawn in
        edge order, so threads change nothing); ``None`` means seed 0.
    workers : int, optional
        Threads fitting edges in parallel (default ``min(2, os.cpu_count())``);
        the results are identical to ``workers=1``.
    gain_estimator : {'auto', 'pixels', 'stars'}
        The gain estimators of every edge (see :func:`fit_edge_channel`); without the
        star estimator's library (``sep``) the pixel fits alone, with a ``[GRID]``
        warning.
    star_kwargs : dict, optional
        Options of :func:`~.stars.measure_star_ratio`.
    task_map : callable, optional
        ``task_map(func, tasks)`` returns ``[func(t) for t in tasks]`` (an exception in
        place of a result that raised), computed elsewhere: in worker processes, on a
        cluster.  The tasks -- the star search of a node, the fits of an edge -- and
        ``func`` (a top-level function of this module) are picklable; the results are
        those of the default, ``workers`` threads in this process.
    bin_factor : int
        Overlaps large enough (:func:`~.binned.binnable`) are fitted on the means of
        ``bin_factor x bin_factor`` blocks of both nodes, aligned on the global grid
        (:func:`~.binned.bin_overlap`; the star search, the dearest part, costs several
        times less), and their fits told at full resolution
        (:func:`~.binned.binned_to_full_fit`: the noise, the pixel counts and the RMS of
        those fits are those of the blocks).  1 (default): every overlap at full
        resolution.
    **fit_kwargs
        Other :func:`~photometry_graph.photometry.regression.fit_pair` options
        (``max_rel_gain_error``, ``noise_ratio_error``, ``min_signal_to_noise``,
        ``n_blocks``).

    Returns
    -------
    dict
        Edge counts ``{'ok', 'offset_only', 'failed'}``; an edge counts with the
        worst status of its channels (also stored as edge attribute ``status``).
        Each edge gets ``fits``: list of PairwiseFit, one per channel.  A fit
        that raises becomes a ``'failed'`` PairwiseFit with a ``[GRID]`` warning.

    Examples
    --------
    >>> from photometry_graph.datasets import make_survey
    >>> s = make_survey(1, 2, tile_size=128, rng=0)
    >>> g = build_tile_overlap_graph(s.tiles)
    >>> counts = fit_overlap_edges(g)
    >>> sorted(counts)
    ['failed', 'offset_only', 'ok']
    """
    if model not in FIT_MODELS:
        raise ValueError(f"model must be one of {FIT_MODELS}, got {model!r}")
    check_sampling(max_pixels=max_pixels, subsample=subsample,
                   noise_estimator=noise_estimator)
    if noise_samples is not None and int(noise_samples) < 1:
        raise ValueError(f"noise_samples must be >= 1 or None, got {noise_samples!r}")
    workers = check_workers(workers)
    if int(bin_factor) != bin_factor or bin_factor < 1:
        raise ValueError(f"bin_factor must be a positive integer, got {bin_factor!r}")
    gain_estimator = _available_estimator(gain_estimator)
    max_pixels = None if max_pixels is None else int(max_pixels)
    rng = np.random.default_rng(0 if rng is None else rng)
    origin = (float(origin[0]), float(origin[1]))
    counts = {"ok": 0, "offset_only": 0, "failed": 0}
    graph.graph["fit_model"] = model
    graph.graph["origin"] = origin
    graph.graph["gain_estimator"] = gain_estimator
    edges = list(graph.edges)
    try:
        edges.sort(key=lambda e: (graph.edges[e]["src"], graph.edges[e]["dst"]))
    except TypeError:
        pass
    seeds = rng.integers(0, 2 ** 63 - 1, size=len(edges)) if subsample == "random" else None
    run = _task_runner(task_map, workers)
    nodes = {}
    for n in {n for e in edges for n in e}:
        try:
            nodes[n] = graph.nodes[n]["tile"].pixels_only()
        except Exception:  # noqa: BLE001 - its mask cannot be computed: its reads will fail
            nodes[n] = graph.nodes[n]["tile"]
    catalogues = {}
    if gain_estimator != "pixels":
        searched = star_search_nodes(graph, edges)
        found = run(_node_catalogues, [(nodes[n], noise_samples) for n in searched])
        catalogues = {n: [] if isinstance(c, BaseException) else c
                      for n, c in zip(searched, found)}  # unreadable: the fits will say
    settings = dict(model=model, origin=origin, min_pixels=min_pixels, kappa=kappa,
                    max_iter=max_iter, max_pixels=max_pixels, subsample=subsample,
                    polish=polish, noise_samples=noise_samples,
                    noise_estimator=noise_estimator, gain_estimator=gain_estimator,
                    star_kwargs=dict(star_kwargs or {}), fit_kwargs=fit_kwargs)
    tasks = LazyTasks(enumerate(edges), lambda ke: _edge_task(  # made as they are sent
        graph, nodes, *ke[1], catalogues, None if seeds is None else int(seeds[ke[0]]),
        settings, cut=task_map is not None, bin_factor=int(bin_factor)))
    for (u, v), fits in zip(edges, run(_fit_edge, tasks)):
        if isinstance(fits, BaseException):  # reading the tiles failed: keep going
            fits = _failed_edge_fits(graph, u, v, fits, origin, model)
        graph.edges[u, v]["fits"] = fits
    if gain_estimator == "auto" and edges:
        calibrate_pixel_gains(graph.edge_subgraph(edges), max_rel_gain_error=fit_kwargs.get(
            "max_rel_gain_error", MAX_REL_GAIN_ERROR))
    for u, v in edges:
        status = edge_status(graph.edges[u, v]["fits"])
        graph.edges[u, v]["status"] = status
        counts[status] += 1
    stage = graph_label(graph.graph.get("node_kind", "tiles"))[0]
    grid_info(logger, f"{stage}: fitted %d overlaps (ok=%d, offset-only=%d, failed=%d)",
              len(edges), counts["ok"], counts["offset_only"], counts["failed"])
    if gain_estimator != "pixels" and edges:
        summary = gain_estimates(graph.edge_subgraph(edges))
        grid_info(logger, "Photometry: gains by source %s (%s); %d disagreement(s) between the "
                  "pixel and the star estimates (the stars kept)", summary["sources"],
                  gain_estimator, summary["disagreements"])
    return counts


#: Fields of a fit that :func:`gain_estimates` reports per edge and channel.
_ESTIMATE_FIELDS = ("a", "sigma_a", "a_pixels", "sigma_a_pixels", "sigma_a_sys", "a_stars",
                    "sigma_a_stars", "n_stars", "gain_source", "gain_disagree", "status")


def gain_estimates(graph):
    """The gain estimates of every fitted edge and channel, and their counts.

    Parameters
    ----------
    graph : networkx.Graph
        With ``fits`` (:func:`fit_overlap_edges`).

    Returns
    -------
    dict
        ``sources`` (count per ``gain_source``), ``disagreements`` (edge channels whose
        pixel and star gains differ by more than 3 sigma), ``with_stars`` (edge channels
        with a star estimate) and ``edges``: one dict per edge and channel with ``src``,
        ``dst``, ``channel`` and the fit's ``a``, ``sigma_a``, ``a_pixels``,
        ``sigma_a_pixels``, ``sigma_a_sys``, ``a_stars``, ``sigma_a_stars``,
        ``n_stars``, ``gain_source``, ``gain_disagree`` and ``status``.
    """
    rows, sources = [], {}
    for _, _, data in graph.edges(data=True):
        for fit in data.get("fits") or []:
            row = {"src": fit.src, "dst": fit.dst, "channel": fit.channel}
            row.update((k, getattr(fit, k)) for k in _ESTIMATE_FIELDS)
            rows.append(row)
            sources[fit.gain_source] = sources.get(fit.gain_source, 0) + 1
    return {"sources": sources, "disagreements": sum(bool(r["gain_disagree"]) for r in rows),
            "with_stars": sum(math.isfinite(r["a_stars"]) for r in rows), "edges": rows}
