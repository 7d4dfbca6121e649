"""Speed and accuracy of ``harmonize_tiles``: subsampled defaults vs. the exhaustive settings.

Two surveys with injected per-tile gain, offset and gradient errors (known truth):

* ``large`` -- 10 x 10 mono tiles of 1024 x 1024 px, 25 % overlap (~340 overlaps), the
  geometry of ``bench_assemble.py`` (same sky model: stars and 4 nebulae, gains 0.85-1.18,
  offsets +-30 sigma, 3 sigma peak-to-peak gradients, noise sigma 1).  The tiles are
  written as raw big-endian float32 files (the dtype of the tile FITS files) and read
  through lazy ``numpy.memmap`` callables, with a memmapped coverage map, exactly as
  ``grid_mode.assemble_tiles`` reads tile FITS files;
* ``small`` -- ``make_survey(5, 5, 512, 0.2, rng=6)`` in memory (the survey of
  ``tests/test_harmonize.py``).

Each survey is harmonized (``model='plane'``, background matching on) twice in the same
run, on fresh tile objects (no mask cached from the other run):

* ``new defaults`` -- ``harmonize_tiles`` as the pipeline calls it: the clipping
  iterations of each pairwise fit on a regular grid of 10 000 pixels of the overlap, the
  final fit (moments, block jackknife, status) on every pixel of it ("polish"); the noise
  of each tile from 120 000 second differences in bands of three rows of the overlap
  (clipped RMS); tile backgrounds on strided samples of 25 000 pixels, the guard's overlap
  differences from the fits' means; masks, fits and background step on ``min(2, cpu)``
  threads;
* ``exhaustive`` -- what the previous implementation did (with every pixel instead of its
  random 200 000 per overlap), measured by the same code: every jointly valid pixel in
  every step (``max_pixels=None``, ``noise_samples=None``,
  ``noise_estimator='mad'``; background ``max_pixels=None``, ``overlap_max_pixels=None``,
  ``use_fits=False``) on one thread (``workers=1``).

Printed per run: wall time and the time of each step, the ratio exhaustive / new, and the
errors against the truth: relative gain error of every tile (max and RMS, relative to the
reference tile) and the error of the additive term (offset + plane) at the four corners of
every tile (max and RMS, in noise sigma).

Run: ``python benchmarks/bench_harmonize.py`` (about 1.5 minutes: rendering the large
survey ~20 s, the exhaustive run ~30-40 s) or ``--small-only``.  ``--keep DIR`` keeps (and
reuses) the written large survey, ``--seed N`` draws another one.  Wall times depend on
the load of the machine (other processes on the same cores); compare the ratio of the
same run.
"""

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OVERLAP = 0.25
SEED = 2024
NEW = {}
EXHAUSTIVE = {"workers": 1,
              "fit_kwargs": {"max_pixels": None, "noise_samples": None,
                             "noise_estimator": "mad"},
              "background_kwargs": {"max_pixels": None, "overlap_max_pixels": None,
                                    "use_fits": False}}


class _Memmap:
    """Zero-argument callable: a fresh read-only memmap of one raw tile array."""

    def __init__(self, path, shape, channels_last=False):
        self.path, self.shape, self.channels_last = str(path), tuple(shape), channels_last

    def __call__(self):
        return np.memmap(self.path, dtype=">f4", mode="r", shape=self.shape)


def _geometry(n, tile):
    from photometry_graph.core.tiles import grid_layout

    step = tile - int(round(OVERLAP * tile))
    canvas = ((n - 1) * step + tile, (n - 1) * step + tile)
    return canvas, grid_layout(canvas, tile, OVERLAP)


def write_large(folder, n=10, tile=1024, seed=SEED):
    """Render the large survey tile by tile into raw memmap files; return its truth."""
    from photometry_graph.datasets import make_sky

    meta_path = folder / "truth.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("seed") == seed:
            return meta
    canvas, boxes = _geometry(n, tile)
    sky = make_sky(canvas, 1, rng=seed, nebulae=4)
    rng = np.random.default_rng(seed + 1)
    gains, offsets, slopes = [], [], []
    for k, box in enumerate(boxes):
        gain = rng.uniform(0.85, 1.18)
        offset = rng.uniform(-30.0, 30.0)
        angle = rng.uniform(0, 2 * np.pi)
        slope = 3.0 / (2 * tile) * np.array([np.cos(angle), np.sin(angle)])
        img = sky.render(box)[..., 0]
        yc, xc = box.center
        yy, xx = np.ogrid[box.y0:box.y1, box.x0:box.x1]
        img = gain * img + offset + slope[0] * (xx - xc) + slope[1] * (yy - yc)
        img = img + rng.standard_normal(img.shape)
        mm = np.memmap(folder / f"tile_{k:04d}.f4", dtype=">f4", mode="w+", shape=box.shape)
        mm[:] = img
        mm.flush()
        del mm
        gains.append([gain])
        offsets.append([offset])
        slopes.append([slope.tolist()])
    cov = np.memmap(folder / "coverage.f4", dtype=">f4", mode="w+", shape=(tile, tile))
    cov[:] = 12.0
    cov.flush()
    del cov
    meta = {"seed": seed, "canvas": list(canvas),
            "boxes": [[b.y0, b.y1, b.x0, b.x1] for b in boxes],
            "gains": gains, "offsets": offsets, "slopes": slopes}
    meta_path.write_text(json.dumps(meta))
    return meta


def large_tiles(folder, meta):
    """Fresh lazily read tiles (memmap data and coverage, masks computed on first use)."""
    from photometry_graph.core.tiles import BBox, TilePhotometryInfo

    boxes = [BBox(*b) for b in meta["boxes"]]
    return [TilePhotometryInfo(k, b, data=_Memmap(folder / f"tile_{k:04d}.f4", b.shape),
                               coverage=_Memmap(folder / "coverage.f4", b.shape)())
            for k, b in enumerate(boxes)]


def errors_vs_truth(result, gains, offsets, slopes, boxes, origin):
    """Gain (relative) and additive-term (sigma, at tile corners) errors vs. the truth."""
    from photometry_graph.datasets import expected_corrections

    ref = result.solution.references[0]
    centres = np.array([b.center[::-1] for b in boxes], float)
    exp = expected_corrections(gains, offsets, slopes, centres, ref, origin=origin)
    ids = range(len(boxes))
    g = np.array([result.corrections[k].gain for k in ids])
    o = np.array([result.corrections[k].offset for k in ids])
    p = np.array([result.corrections[k].slope for k in ids])
    gain_err = np.abs(g / exp["gain"] - 1.0).ravel()
    add_err = []
    for k, b in enumerate(boxes):
        for x, y in ((b.x0, b.y0), (b.x1 - 1, b.y0), (b.x0, b.y1 - 1), (b.x1 - 1, b.y1 - 1)):
            r = np.array([x - origin[0], y - origin[1]])
            got = o[k] + p[k] @ r
            want = exp["offset"][k] + exp["slope"][k] @ r
            add_err.append(np.abs(got - want))
    add_err = np.concatenate(add_err)
    return {"gain_max": float(gain_err.max()), "gain_rms": float(np.sqrt(np.mean(gain_err ** 2))),
            "add_max": float(add_err.max()), "add_rms": float(np.sqrt(np.mean(add_err ** 2)))}


def _step_times(result):
    """Times of the steps (graph, fits, solve, background) from the run's report."""
    return result.report.get("step_times_s", {})


def run_once(make_tiles, settings, origin, truth):
    from photometry_graph.photometry.harmonize import harmonize_tiles

    tiles = make_tiles()
    t0, c0 = time.perf_counter(), time.process_time()
    res = harmonize_tiles(tiles, model="plane", background=True, origin=origin, rng=0,
                          **settings)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    err = errors_vs_truth(res, *truth, [t.bbox for t in tiles], origin)
    fits = res.report.get("fits", {})
    bg = res.report.get("background") or {}
    return {"wall": wall, "cpu": cpu, "steps": _step_times(res), "status": res.status, **err,
            "fits_ok": fits.get("ok"), "fits_offset_only": fits.get("offset_only"),
            "fits_failed": fits.get("failed"), "bg": bg.get("decision"),
            "bg_residual_before": bg.get("residual_before")}


def report(name, n_tiles, n_edges, new, old):
    print(f"\n{name}: {n_tiles} tiles, {n_edges} overlaps, model='plane', background on")
    hdr = (f"  {'run':<14} {'wall s':>8} {'cpu s':>7} {'graph':>7} {'fits':>7} {'solve':>7} "
           f"{'bg':>7} {'gain max':>10} {'gain rms':>10} {'add max σ':>10} {'add rms σ':>10} "
           f"{'fits ok/off/fail':>17} {'bg decision':>12}")
    print(hdr)
    for label, r in (("new defaults", new), ("exhaustive", old)):
        st = r["steps"]
        print(f"  {label:<14} {r['wall']:8.2f} {r['cpu']:7.2f} {st.get('graph', math.nan):7.2f} "
              f"{st.get('fits', math.nan):7.2f} {st.get('solve', math.nan):7.2f} "
              f"{st.get('background', math.nan):7.2f} {r['gain_max']:10.2e} "
              f"{r['gain_rms']:10.2e} {r['add_max']:10.4f} {r['add_rms']:10.4f} "
              f"{r['fits_ok']:>5}/{r['fits_offset_only']}/{r['fits_failed']:<6} "
              f"{str(r['bg']):>12}")
    print(f"  speed-up (exhaustive / new): {old['wall'] / new['wall']:.1f}x; gain error ratio "
          f"new/exhaustive: max {new['gain_max'] / old['gain_max']:.2f}, rms "
          f"{new['gain_rms'] / old['gain_rms']:.2f}; additive error ratio: max "
          f"{new['add_max'] / old['add_max']:.2f}, rms {new['add_rms'] / old['add_rms']:.2f}")


def bench_small():
    from photometry_graph.datasets import make_survey
    from photometry_graph.core.tiles import TilePhotometryInfo

    s = make_survey(5, 5, 512, 0.2, rng=6)

    def make_tiles():  # fresh objects: same arrays and true masks
        return [TilePhotometryInfo(t.tile_id, t.bbox, data=t.data, mask=t.mask) for t in s.tiles]

    truth = (s.gains, s.offsets, s.slopes)
    origin = ((s.canvas_shape[1] - 1) / 2.0, (s.canvas_shape[0] - 1) / 2.0)
    new = run_once(make_tiles, NEW, origin, truth)
    old = run_once(make_tiles, EXHAUSTIVE, origin, truth)
    report("small (make_survey 5x5 of 512 px, 20 % overlap, in memory)", 25, 72, new, old)
    return new, old


def bench_large(folder, seed=SEED):
    meta = write_large(folder, seed=seed)
    truth = (np.array(meta["gains"]), np.array(meta["offsets"]), np.array(meta["slopes"]))
    canvas = meta["canvas"]
    origin = ((canvas[1] - 1) / 2.0, (canvas[0] - 1) / 2.0)
    make_tiles = lambda: large_tiles(folder, meta)  # noqa: E731
    new = run_once(make_tiles, NEW, origin, truth)
    old = run_once(make_tiles, EXHAUSTIVE, origin, truth)
    report(f"large (10x10 of 1024 px, 25 % overlap, memmapped big-endian float32, seed {seed})",
           100, 342, new, old)
    return new, old


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small-only", action="store_true", help="only the 5x5 survey")
    parser.add_argument("--keep", help="write (or reuse) the large survey in this folder")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the large survey")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("photometry_graph").setLevel(logging.ERROR)
    bench_small()
    if args.small_only:
        return 0
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_harm_"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        bench_large(folder, args.seed)
        print(f"\n(total {time.perf_counter() - t0:.0f} s including rendering the survey)")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
