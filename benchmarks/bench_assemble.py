"""Speed and memory of the tile assembly against reproject's ``reproject_and_coadd``.

A survey of 10 x 10 overlapping 1024 x 1024 mono tiles (25 % overlap, injected
per-tile gain, offset and gradient errors, noise) is written as tile FITS files
(``tile_0001.fits`` ..., float32 data, tile WCS, ``TILEID``/``GRID_*`` keywords,
``COVERAGE`` extension) in a temporary folder.  Each contender then runs in its
own subprocess, so that its peak memory is its own (its ``VmHWM``, and the peak PSS of its
process tree sampled by ``benchmarks/_measure.py``):

* ``assemble_tiles`` -- ``grid_mode.assemble_tiles``: lazy memmap reading,
  tile photometry (``harmonize_tiles``: overlap graph, robust fits, global
  gain/offset/plane solve, guarded background matching), chunked multi-band
  blending (``assemble_mosaic``) written through a sink into the output FITS,
  coverage map, report and preview: the whole assembly;
* ``own-wrapper`` -- the same mathematics through a minimal wrapper of this
  script (lazy tiles, ``harmonize_tiles`` + ``assemble_mosaic``, sink writing
  each chunk with ``os.pwrite`` into a preallocated FITS), to separate the
  library's memory from the output writer's; ``own-blend`` is that wrapper
  without the photometry (blending and writing only);
* ``reproject`` (the peer) -- ``reproject.mosaicking.reproject_and_coadd`` with
  ``match_background=True`` and ``reproject_interp`` on the same files, result
  written to FITS.

Then ``own-blend`` runs on a canvas 4x larger (20 x 20 tiles; ``--large-full``
adds the whole ``assemble_tiles``) to show that the blending's memory is
bounded by the chunk size and not by the canvas.  The seam metric
(``photometry_graph.diagnostics.seam_metric``, ~1 = seamless) of every result is
measured against the noise-free truth on a central crop, with the RMS of the
residual after a global gain + offset + plane fit (noise sigma = 1; it grows
with the tile-to-tile photometric errors left in the mosaic).

Run: ``python benchmarks/bench_assemble.py`` (several minutes: writing the
tiles, the peer takes ~2 min) or ``--small`` (4 x 4 tiles of 512 px, ~1 min).
Options: ``--skip-peer``, ``--skip-large``, ``--workers N`` (the overlap fits' processes and
the blending's threads; default: the package's, one per core, at most 4), ``--keep DIR``.
Targets: whole assembly <= 6 s on 2 cores and >= 18x faster than the peer, peak PSS
<= 1 GB.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import load_note, measure, self_peak_rss_mb  # noqa: E402

OVERLAP = 0.25
SEED = 2024
SIZES = {"full": (10, 1024), "small": (4, 512)}
SPEED_TARGET = 18.0
TIME_TARGET_S = 6.0
MEMORY_TARGET_MB = 1024.0


# -- synthetic tiles ------------------------------------------------------------------

def survey_geometry(n, tile):
    from photometry_graph.core.tiles import grid_layout

    step = tile - int(round(OVERLAP * tile))
    canvas = ((n - 1) * step + tile, (n - 1) * step + tile)
    return canvas, grid_layout(canvas, tile, OVERLAP)


def global_wcs(canvas):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 20.0]
    w.wcs.cdelt = [-2.0 / 3600.0, 2.0 / 3600.0]
    w.wcs.crpix = [(canvas[1] + 1) / 2.0, (canvas[0] + 1) / 2.0]
    w.wcs.cunit = ["deg", "deg"]
    return w


def make_sky_model(canvas):
    from photometry_graph.datasets import make_sky

    return make_sky(canvas, 1, rng=SEED, nebulae=4)


def write_tiles(tiles_dir, n, tile):
    """Render the observed tiles one by one (bounded memory) and write them as FITS."""
    from astropy.io import fits

    canvas, boxes = survey_geometry(n, tile)
    sky = make_sky_model(canvas)
    wcs = global_wcs(canvas)
    rng = np.random.default_rng(SEED + 1)
    n_frames = 12
    for k, box in enumerate(boxes):
        gain = rng.uniform(0.85, 1.18)
        offset = rng.uniform(-30.0, 30.0)
        angle = rng.uniform(0, 2 * np.pi)
        slope = 3.0 / (2 * tile) * np.array([np.cos(angle), np.sin(angle)])  # 3 sigma p-p
        img = sky.render(box)[..., 0]
        yc, xc = box.center
        yy, xx = np.ogrid[box.y0:box.y1, box.x0:box.x1]
        img = gain * img + offset + slope[0] * (xx - xc) + slope[1] * (yy - yc)
        img = (img + rng.standard_normal(img.shape)).astype(np.float32)
        tw = wcs.deepcopy()
        tw.wcs.crpix = [wcs.wcs.crpix[0] - box.x0, wcs.wcs.crpix[1] - box.y0]
        hdr = tw.to_header()
        hdr["TILEID"] = k + 1
        hdr["GRID_Y0"], hdr["GRID_X0"] = box.y0, box.x0
        hdr["GRID_NY"], hdr["GRID_NX"] = canvas
        hdr["NFRAMES"] = n_frames
        cov = np.full(box.shape, float(n_frames), np.float32)
        fits.HDUList([fits.PrimaryHDU(img, hdr),
                      fits.ImageHDU(cov, name="COVERAGE")]).writeto(
            tiles_dir / f"tile_{k + 1:04d}.fits", overwrite=True)
    return canvas, boxes


# -- contenders (each runs in its own subprocess) -----------------------------------------

class _LazyFits:
    """Zero-argument callable returning a tile's data as a fresh memmap (nothing held)."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self):
        from astropy.io import fits

        hdul = fits.open(self.path, memmap=True, lazy_load_hdus=True)
        return hdul[0].data


def _own_blend(tiles_dir, out_dir, workers):
    return _own_wrapper(tiles_dir, out_dir, workers, photometry=False)


def _own_wrapper(tiles_dir, out_dir, workers, photometry=True):
    from astropy.io import fits

    from photometry_graph.blending.assembly import assemble_mosaic
    from photometry_graph.photometry.harmonize import harmonize_tiles
    from photometry_graph.pipeline.parallel import default_workers
    from photometry_graph.core.tiles import BBox, TilePhotometryInfo

    tiles = []
    canvas = None
    for path in sorted(Path(tiles_dir).glob("tile_*.fits")):
        with fits.open(path, memmap=True) as hdul:
            hdr = hdul[0].header
            h, w = int(hdr["NAXIS2"]), int(hdr["NAXIS1"])
            y0, x0 = int(hdr["GRID_Y0"]), int(hdr["GRID_X0"])
            canvas = (int(hdr["GRID_NY"]), int(hdr["GRID_NX"]))
            header = hdr.copy()
        tiles.append(TilePhotometryInfo(int(hdr["TILEID"]), BBox(y0, y0 + h, x0, x0 + w),
                                        data=_LazyFits(path)))
    origin = ((canvas[1] - 1) / 2.0, (canvas[0] - 1) / 2.0)
    t0 = time.perf_counter()
    corrections = None
    if photometry:
        corrections = harmonize_tiles(tiles, model="plane", background=True, origin=origin,
                                      rng=0).corrections
    t_harm = time.perf_counter() - t0
    # preallocated FITS: header then big-endian float32 rows written with os.pwrite
    hdr = fits.Header()
    hdr["SIMPLE"], hdr["BITPIX"], hdr["NAXIS"] = True, -32, 2
    hdr["NAXIS1"], hdr["NAXIS2"] = canvas[1], canvas[0]
    for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CUNIT1", "CUNIT2"):
        if key in header:
            hdr[key] = header[key]
    head = hdr.tostring().encode("ascii")
    nbytes = canvas[0] * canvas[1] * 4
    path = Path(out_dir) / "mosaic_own.fits"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + -(-nbytes // 2880) * 2880)
    fd = os.open(path, os.O_WRONLY)
    try:
        def sink(bbox, data, weight_sum):
            block = np.ascontiguousarray(data[..., 0], dtype=">f4")
            for r in range(block.shape[0]):
                offset = len(head) + ((bbox.y0 + r) * canvas[1] + bbox.x0) * 4
                os.pwrite(fd, block[r].tobytes(), offset)

        t0 = time.perf_counter()
        res = assemble_mosaic(tiles, canvas, corrections=corrections, blend="multiband",
                              chunk_size=1024, sink=sink, workers=workers or default_workers())
    finally:
        os.close(fd)
    return {"mosaic": str(path), "levels": res.levels, "chunks": res.chunks_written,
            "pyramid_overlaps": res.pyramid_overlaps,
            "timings": {"harmonize": t_harm, "assembly": time.perf_counter() - t0}}


def _assemble_tiles(tiles_dir, out_dir, workers):
    import grid_mode

    res = grid_mode.assemble_tiles(tiles_dir, out_dir, workers=workers)
    blending = res.report.get("blending", {})
    return {"mosaic": str(res.mosaic), "levels": blending.get("levels"),
            "chunks": blending.get("chunks_written"),
            "pyramid_overlaps": blending.get("pyramid_overlaps"),
            "timings": res.report.get("timings")}


def _peer(tiles_dir, out_dir, workers):
    from astropy.io import fits
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    paths = sorted(str(p) for p in Path(tiles_dir).glob("tile_*.fits"))
    with fits.open(paths[0]) as hdul:
        hdr = hdul[0].header
        canvas = (int(hdr["GRID_NY"]), int(hdr["GRID_NX"]))
        y0, x0 = int(hdr["GRID_Y0"]), int(hdr["GRID_X0"])
        out_hdr = fits.Header()
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CUNIT1",
                    "CUNIT2"):
            out_hdr[key] = hdr[key]
        out_hdr["CRPIX1"], out_hdr["CRPIX2"] = hdr["CRPIX1"] + x0, hdr["CRPIX2"] + y0
    out_hdr["NAXIS"], out_hdr["NAXIS1"], out_hdr["NAXIS2"] = 2, canvas[1], canvas[0]
    array, footprint = reproject_and_coadd(
        paths, out_hdr, shape_out=canvas, input_weights=paths, hdu_in=0,
        hdu_weights="COVERAGE", reproject_function=reproject_interp, combine_function="mean",
        match_background=True)
    array = np.where(footprint > 0, array, np.nan).astype(np.float32)
    path = Path(out_dir) / "mosaic_peer.fits"
    fits.PrimaryHDU(array, out_hdr).writeto(path, overwrite=True)
    return {"mosaic": str(path)}


CONTENDERS = {"assemble_tiles": _assemble_tiles, "own-wrapper": _own_wrapper,
              "own-blend": _own_blend, "reproject": _peer}


IMPORTS = {"assemble_tiles": ["grid_mode"],
           "own-wrapper": ["astropy.io.fits", "photometry_graph.blending.assembly",
                           "photometry_graph.photometry.harmonize"],
           "own-blend": ["astropy.io.fits", "photometry_graph.blending.assembly",
                         "photometry_graph.photometry.harmonize"],
           "reproject": ["astropy.io.fits", "reproject", "reproject.mosaicking"]}


def child_main(method, tiles_dir, out_dir, workers):
    """Run one contender; print a JSON line with wall/CPU time and peak RSS."""
    import importlib
    import logging

    logging.basicConfig(level=logging.WARNING)
    for name in IMPORTS[method]:  # imports are neither timed nor part of the baseline delta
        importlib.import_module(name)
    base = resource.getrusage(resource.RUSAGE_SELF)
    base_rss = self_peak_rss_mb()
    t0 = time.perf_counter()
    info = CONTENDERS[method](tiles_dir, out_dir, workers)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    info.update(method=method, wall_s=wall,
                cpu_s=(usage.ru_utime + usage.ru_stime) - (base.ru_utime + base.ru_stime),
                peak_rss_mb=self_peak_rss_mb(), baseline_rss_mb=base_rss)
    print("RESULT " + json.dumps(info, default=str), flush=True)


def run_child(method, tiles_dir, out_dir, workers):
    """Run one contender in a subprocess; its result, with the peak PSS of its process tree."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, __file__, "--child", method, str(tiles_dir), str(out_dir)]
    cmd += [] if workers is None else ["--workers", str(workers)]
    m = measure(cmd, interval=0.05)
    for line in m.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]), peak_pss_mb=m.peak_pss_mb)
    raise RuntimeError(f"{method} failed (exit {m.returncode}):\n{m.stderr_tail}")


# -- quality -------------------------------------------------------------------------

def quality_on_crop(mosaic_path, canvas, boxes, crop=1536):
    """Seam metric and residual RMS (noise units) of a mosaic on a central crop vs the truth.

    The residual is taken after a global gain + offset + plane fit to the truth.
    """
    from astropy.io import fits

    from photometry_graph.diagnostics import bbox_boundaries, seam_metric
    from photometry_graph.core.tiles import BBox

    c = min(crop, canvas[0], canvas[1])
    y0, x0 = (canvas[0] - c) // 2, (canvas[1] - c) // 2
    box = BBox(y0, y0 + c, x0, x0 + c)
    truth = make_sky_model(canvas).render(box)[..., 0]
    with fits.open(mosaic_path, memmap=True) as hdul:
        data = hdul[0].data
        data = data[0] if data.ndim == 3 else data
        img = np.array(data[box.y0:box.y1, box.x0:box.x1], dtype=np.float32)
    shifted = [BBox(b.y0 - y0, b.y1 - y0, b.x0 - x0, b.x1 - x0) for b in boxes]
    seam = seam_metric(img, truth, bbox_boundaries(shifted, (c, c)))
    # global gain, offset and plane: a mosaic is only defined up to those (the reference
    # tile's photometry, and its gradient when a plane model is solved)
    yy, xx = np.mgrid[0:c, 0:c] / float(c)
    ok = np.isfinite(img)
    design = np.column_stack([truth[ok], np.ones(ok.sum()), xx[ok], yy[ok]])
    coef, *_ = np.linalg.lstsq(design, img[ok].astype(np.float64), rcond=None)
    resid = img[ok] - design @ coef
    return seam, float(np.sqrt(np.mean(resid ** 2)))


# -- driver ----------------------------------------------------------------------------

def _row(r, ref=None):
    ratio = "" if ref is None else f"{ref['wall_s'] / r['wall_s']:8.1f}x"
    seam, rms = r.get("seam"), r.get("rms")
    return (f"  {r['label']:<34} {r['wall_s']:8.1f} s {r['cpu_s']:8.1f} s "
            f"{r['peak_rss_mb']:9.0f} MB {r['peak_pss_mb']:9.0f} MB "
            f"{r['baseline_rss_mb']:6.0f} MB "
            f"{'' if seam is None else f'{seam:6.2f}':>6} "
            f"{'' if rms is None else f'{rms:6.2f}':>6} {ratio}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="4 x 4 tiles of 512 px")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-own", action="store_true")
    parser.add_argument("--large-full", action="store_true",
                        help="also run the whole assemble_tiles (photometry) on the 4x canvas")
    parser.add_argument("--workers", type=int, default=None,
                        help="assemble_tiles' overlap fit processes and blending threads "
                             "(the own wrappers': blending threads) (default: the "
                             "package's, one per core, at most 4)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the files in this folder")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "TILES", "OUT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child[0], args.child[1], args.child[2], args.workers)

    n, tile = SIZES["small" if args.small else "full"]
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_assemble_"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        runs = [("1x", n)] + ([] if args.skip_large else [("4x", 2 * n)])
        for tag, nn in runs:
            tiles_dir = root / f"tiles_{tag}"
            tiles_dir.mkdir(exist_ok=True)
            t0 = time.perf_counter()
            canvas, boxes = write_tiles(tiles_dir, nn, tile)
            print(f"[{tag}] wrote {len(boxes)} tiles of {tile} px (canvas {canvas[1]}x"
                  f"{canvas[0]}) in {time.perf_counter() - t0:.0f} s", flush=True)
            if tag == "1x":
                methods = ["assemble_tiles"] + ([] if args.skip_own else
                                                ["own-wrapper", "own-blend"])
                methods += [] if args.skip_peer else ["reproject"]
            else:
                methods = ["own-blend"] + (["assemble_tiles"] if args.large_full else [])
            for method in methods:
                r = run_child(method, tiles_dir, root / f"out_{tag}_{method}", args.workers)
                r["label"] = f"{method} [{tag} canvas]"
                r["tag"], r["canvas"] = tag, canvas
                try:
                    r["seam"], r["rms"] = quality_on_crop(r["mosaic"], canvas, boxes)
                except Exception as exc:  # quality is informative only
                    r["seam"] = r["rms"] = None
                    print(f"  quality of {method} failed: {exc}")
                print(f"  {method}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB",
                      flush=True)
                results.append(r)
            if args.keep is None:  # --keep keeps the tiles too
                shutil.rmtree(tiles_dir, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    by = {(r["tag"], r["method"]): r for r in results}
    peer = by.get(("1x", "reproject"))
    print()
    print(f"Assembly of {n}x{n} tiles of {tile} px, {int(OVERLAP * 100)} % overlap "
          f"(workers={args.workers or 'the default'}); {load_note()}")
    print(f"  {'contender':<34} {'wall':>10} {'cpu':>10} {'peak RSS':>12} {'tree PSS':>12} "
          f"{'imports':>9} "
          f"{'seam':>6} {'rms':>6} {'vs peer':>9}")
    for r in results:
        print(_row(r, peer if (peer and r is not peer and r["tag"] == "1x") else None))
    ours = by.get(("1x", "assemble_tiles"))
    if peer and ours:
        speed = peer["wall_s"] / ours["wall_s"]
        print(f"\n  speed-up of the whole assembly vs reproject_and_coadd: {speed:.1f}x "
              f"(target >= {SPEED_TARGET:.0f}x: {'met' if speed >= SPEED_TARGET else 'NOT met'})"
              f"; peer RSS / ours: {peer['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x")
    if ours:
        print(f"  wall time of the whole assembly: {ours['wall_s']:.1f} s (target <= "
              f"{TIME_TARGET_S:.0f} s: {'met' if ours['wall_s'] <= TIME_TARGET_S else 'NOT met'})"
              f"; peak RSS {ours['peak_rss_mb']:.0f} MB, peak PSS of the process tree "
              f"{ours['peak_pss_mb']:.0f} MB (target <= {MEMORY_TARGET_MB:.0f} MB: "
              f"{'met' if ours['peak_pss_mb'] <= MEMORY_TARGET_MB else 'NOT met'})")
    for r in results:
        if r.get("timings"):
            t = r["timings"]
            print(f"  {r['label']}: photometry (harmonize_tiles) {t.get('harmonize', 0):.1f} s, "
                  f"blending + writing {t.get('assembly', 0):.1f} s")
    for method in ("assemble_tiles", "own-blend"):
        a, b = by.get(("1x", method)), by.get(("4x", method))
        if a and b:
            area = (b["canvas"][0] * b["canvas"][1]) / (a["canvas"][0] * a["canvas"][1])
            print(f"  {method}: canvas x{area:.1f} -> time x{b['wall_s'] / a['wall_s']:.1f}, "
                  f"peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f} "
                  f"({a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
