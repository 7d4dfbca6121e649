"""Quality and cost of the mosaic assembly against peers, side by side in one run.

One synthetic survey with known truth (:func:`photometry_graph.datasets.make_survey`:
injected per-tile gains, offsets and gradients, empty zones) is written as tile
FITS files in the project's format (float32, NaN where empty, a TAN tile WCS
= the global WCS with CRPIX shifted, ``COVERAGE`` extension) in a temporary
folder.  Then, each in its own subprocess (clean peak memory):

* ``project``: ``grid_mode.assemble_tiles`` with the full photometry
  (overlap graph, global gain + plane solve, guarded background matching)
  and multi-band blending;
* ``project plain``: the same command with photometry, background matching
  and blending off (plain coverage-weighted placement);
* ``reproject match_bg``: ``reproject.mosaicking.reproject_and_coadd``
  (``reproject_interp``, ``match_background=True``) on the same output WCS
  and shape;
* ``plain mean``: ``reproject_and_coadd`` with ``match_background=False``
  (the baseline);
* ``swarp`` / ``montage``: when the ``swarp`` binary is on the PATH or
  MontagePy is importable (skipped with a note otherwise).

Every mosaic is compared with the noise-free truth
(:func:`photometry_graph.diagnostics.mosaic_vs_truth`): after a global fit
``mosaic ≈ alpha * truth + beta + plane`` (a mosaic keeps its reference
tile's photometric system), the spread of the local gains and offsets over
the tile cells, the residual RMS (noise included, and smoothed), the seam
metric at the tile borders (1 = seamless) and the coverage (finite fraction
of the pixels where some tile has data).  Wall time and peak RSS of each
subprocess are measured, and ratios against the reproject peer of the same
run are printed.

Run::

    python benchmarks/run_benchmarks.py            # 4x4 tiles of 512 px (a few minutes)
    python benchmarks/run_benchmarks.py --quick    # 3x3 tiles of 256 px (< 1 min)
    python benchmarks/run_benchmarks.py --large    # 10x10 tiles of 1024 px, 25 % overlap
    python benchmarks/run_benchmarks.py --figure docs/before_after.png   # README picture only

The table is printed as text and as Markdown, and saved (JSON + Markdown) to
``benchmarks/results/`` unless ``--no-save``.
"""

import argparse
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _measure import measure, self_peak_rss_mb  # noqa: E402

SIZES = {  # rows, cols, tile size, overlap
    "quick": (3, 3, 256, 0.2),
    "default": (4, 4, 512, 0.2),
    "large": (10, 10, 1024, 0.25),
}
PIXEL_SCALE_ARCSEC = 2.0
CRVAL = (83.8, -5.4)
METHODS = ("project", "project_plain", "reproject", "plain", "swarp", "montage")
LABELS = {"project": "project (photometry + multiband)",
          "project_plain": "project plain (no photometry, no blend)",
          "reproject": "reproject match_background", "plain": "plain mean (reproject)",
          "swarp": "SWarp", "montage": "Montage (MontagePy)"}


# ----------------------------------------------------------------------------- inputs
def global_wcs(shape):
    """North-up TAN WCS of the canvas (pixel scale ``PIXEL_SCALE_ARCSEC``)."""
    from photometry_graph.pipeline.demo import survey_wcs
    return survey_wcs(shape, PIXEL_SCALE_ARCSEC, CRVAL)


def make_benchmark_survey(rows, cols, tile_size, overlap, *, channels=1, rng=2024):
    """The survey every method sees: gains, offsets, gradients, empty zones (NaN)."""
    from photometry_graph.datasets import make_survey
    return make_survey(rows, cols, tile_size=tile_size, overlap=overlap, channels=channels,
                       rng=rng, gradient=2.0, empty_zones=True, empty_value=np.nan)


def write_tiles(survey, folder, wcs):
    """Write the survey's tiles as ``tile_0001.fits`` ... in the project's tile format."""
    from photometry_graph.pipeline.demo import write_tile_survey
    return write_tile_survey(survey, folder, wcs)


def prepare(workdir, size, rng):
    """Survey -> tile files, truth and metadata in ``workdir``; returns the metadata."""
    rows, cols, tile, overlap = SIZES[size]
    t0 = time.perf_counter()
    survey = make_benchmark_survey(rows, cols, tile, overlap, rng=rng)
    wcs = global_wcs(survey.canvas_shape)
    write_tiles(survey, workdir / "tiles", wcs)
    np.save(workdir / "truth.npy", survey.truth.astype(np.float32))
    footprint = np.zeros(survey.canvas_shape, dtype=bool)
    for t in survey.tiles:
        footprint[t.bbox.y0:t.bbox.y1, t.bbox.x0:t.bbox.x1] |= t.mask
    np.save(workdir / "footprint.npy", footprint)
    meta = dict(size=size, rows=rows, cols=cols, tile_size=tile, overlap=overlap, rng=rng,
                canvas_shape=list(survey.canvas_shape), noise_sigma=survey.noise_sigma,
                bboxes=[[t.bbox.y0, t.bbox.y1, t.bbox.x0, t.bbox.x1] for t in survey.tiles],
                wcs_header=wcs.to_header().tostring(sep="\n"),
                prepare_s=time.perf_counter() - t0)
    (workdir / "meta.json").write_text(json.dumps(meta))
    return meta


# ----------------------------------------------------------------------------- methods
def _read_tiles(tiles_dir):
    from astropy.io import fits
    from astropy.wcs import WCS
    inputs, weights = [], []
    for path in sorted(Path(tiles_dir).glob("tile_*.fits")):
        with fits.open(path) as hdul:
            data = np.array(hdul[0].data, dtype=np.float32)
            inputs.append((data, WCS(hdul[0].header).celestial))
            weights.append(np.array(hdul["COVERAGE"].data, dtype=np.float32))
    return inputs, weights


def _write_mosaic(path, data, wcs):
    from astropy.io import fits
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), wcs.to_header()).writeto(
        path, overwrite=True)


def run_project(workdir, out, plain=False):
    import grid_mode
    options = dict(photometry=False, background=False, blend="none") if plain else \
        dict(photometry=True, background=True, blend="multiband", model="plane")
    res = grid_mode.assemble_tiles(workdir / "tiles", out, **options)
    return res.mosaic


def run_reproject(workdir, out, match_background):
    from astropy.io import fits
    from astropy.wcs import WCS
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd
    meta = json.loads((workdir / "meta.json").read_text())
    wcs = WCS(fits.Header.fromstring(meta["wcs_header"], sep="\n"))
    inputs, weights = _read_tiles(workdir / "tiles")
    mosaic, _ = reproject_and_coadd(inputs, wcs, shape_out=tuple(meta["canvas_shape"]),
                                    input_weights=weights, reproject_function=reproject_interp,
                                    combine_function="mean", match_background=match_background,
                                    blank_pixel_value=np.nan)
    path = Path(out) / "mosaic.fits"
    _write_mosaic(path, mosaic, wcs)
    return path


def _template_text(wcs, shape):
    """The output grid as the text header SWarp and Montage read (one card a line)."""
    from astropy.io import fits
    hdr = fits.Header()
    hdr["SIMPLE"], hdr["BITPIX"], hdr["NAXIS"] = True, -32, 2
    hdr["NAXIS1"], hdr["NAXIS2"] = int(shape[1]), int(shape[0])
    hdr.extend(wcs.to_header().cards)
    return "\n".join(card.image.rstrip() for card in hdr.cards) + "\nEND\n"


def run_swarp(workdir, out):
    """SWarp on the same grid: weighted co-addition after its background subtraction.

    ``BACK_SIZE`` is the tile size, so SWarp removes about one background
    level per tile (its background matching) rather than a local background
    map, which would also remove the extended emission.
    """
    from astropy.io import fits
    from astropy.wcs import WCS
    meta = json.loads((workdir / "meta.json").read_text())
    wcs = WCS(fits.Header.fromstring(meta["wcs_header"], sep="\n"))
    out = Path(out)
    names = []
    for path in sorted((workdir / "tiles").glob("tile_*.fits")):
        with fits.open(path) as hdul:  # SWarp wants the weight in its own file
            img = out / path.name
            wgt = out / path.name.replace(".fits", ".weight.fits")
            fits.PrimaryHDU(hdul[0].data, hdul[0].header).writeto(img, overwrite=True)
            fits.PrimaryHDU(hdul["COVERAGE"].data, hdul[0].header).writeto(wgt, overwrite=True)
            names.append(img.name)
    (out / "mosaic.head").write_text(_template_text(wcs, meta["canvas_shape"]))
    cmd = [_swarp_binary(), *names, "-IMAGEOUT_NAME", "mosaic.fits",
           "-WEIGHTOUT_NAME", "mosaic.weight.fits", "-WEIGHT_TYPE", "MAP_WEIGHT",
           "-WEIGHT_SUFFIX", ".weight.fits", "-COMBINE_TYPE", "WEIGHTED",
           "-RESAMPLING_TYPE", "BILINEAR", "-SUBTRACT_BACK", "Y",
           "-BACK_SIZE", str(meta["tile_size"]), "-BACK_FILTERSIZE", "1",
           "-BLANK_BADPIXELS", "Y",
           "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N", "-NTHREADS", "1"]
    subprocess.run(cmd, cwd=out, check=True)
    return out / "mosaic.fits"


def run_montage(workdir, out):
    """Montage through MontagePy: project, fit background differences, correct, co-add."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from MontagePy.main import (mAdd, mBgExec, mBgModel, mDiffFitExec, mImgtbl, mOverlaps,
                                mProjExec)
    meta = json.loads((workdir / "meta.json").read_text())
    wcs = WCS(fits.Header.fromstring(meta["wcs_header"], sep="\n"))
    out = Path(out).resolve()
    for name in ("raw", "proj", "diff", "corr"):
        (out / name).mkdir(exist_ok=True)
    for path in sorted((workdir / "tiles").glob("tile_*.fits")):
        with fits.open(path) as hdul:
            fits.PrimaryHDU(hdul[0].data, hdul[0].header).writeto(out / "raw" / path.name)
    (out / "mosaic.hdr").write_text(_template_text(wcs, meta["canvas_shape"]))
    os.chdir(out)  # Montage joins the table's file names to the folder: keep both relative
    steps = [
        lambda: mImgtbl("raw", "raw.tbl"),
        lambda: mProjExec("raw", "raw.tbl", "mosaic.hdr", projdir="proj", quickMode=True),
        lambda: mImgtbl("proj", "proj.tbl"),
        lambda: mOverlaps("proj.tbl", "diffs.tbl"),
        lambda: mDiffFitExec("proj", "diffs.tbl", "mosaic.hdr", "diff", "fits.tbl"),
        lambda: mBgModel("proj.tbl", "fits.tbl", "corrections.tbl"),
        lambda: mBgExec("proj", "proj.tbl", "corrections.tbl", "corr"),
        lambda: mImgtbl("corr", "corr.tbl"),
        lambda: mAdd("corr", "corr.tbl", "mosaic.hdr", "mosaic.fits"),
    ]
    for step in steps:  # MontagePy returns a status dict instead of raising
        status = step()
        if str(status.get("status", "0")) != "0" or int(status.get("failed", 0) or 0):
            raise RuntimeError(f"Montage step failed: {status}")
        if "count" in status and int(status["count"]) == 0:
            raise RuntimeError(f"Montage step found no image: {status}")
    return out / "mosaic.fits"


def worker(method, workdir):
    """Run one method in this (fresh) process; print a JSON line with time and memory."""
    workdir = Path(workdir)
    out = workdir / f"out_{method}"
    out.mkdir(exist_ok=True)
    # imports before the clock starts: only the work is timed
    import astropy.io.fits  # noqa: F401
    import reproject.mosaicking  # noqa: F401
    if method.startswith("project"):
        import grid_mode  # noqa: F401
    t0 = time.perf_counter()
    if method == "project":
        path = run_project(workdir, out)
    elif method == "project_plain":
        path = run_project(workdir, out, plain=True)
    elif method in ("reproject", "plain"):
        path = run_reproject(workdir, out, match_background=(method == "reproject"))
    elif method == "swarp":
        path = run_swarp(workdir, out)
    elif method == "montage":
        path = run_montage(workdir, out)
    else:
        raise SystemExit(f"unknown method {method!r}; choose one of {METHODS}")
    wall = time.perf_counter() - t0
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # SWarp
    print("BENCH_RESULT " + json.dumps(dict(method=method, wall_s=wall, mosaic=str(path),
                                            self_peak_mb=self_peak_rss_mb(),
                                            children_peak_mb=child_mb)))


def _swarp_binary():
    """Path of the SWarp executable (``swarp``, or ``SWarp`` as Debian names it), or None."""
    return shutil.which("swarp") or shutil.which("SWarp")


def available(method):
    """(usable, note) for the optional peers."""
    if method == "swarp":
        return (_swarp_binary() is not None,
                "SWarp skipped: no `swarp` (or `SWarp`) binary on the PATH "
                "(e.g. apt-get install swarp)")
    if method == "montage":
        try:
            import MontagePy.main  # noqa: F401
            return True, ""
        except ImportError:
            return False, "Montage skipped: MontagePy is not importable (pip install MontagePy)"
    return True, ""


def run_in_subprocess(method, workdir, timeout):
    """Run ``worker(method)`` in a child process, sampling its memory (process tree)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
           "--workdir", str(workdir)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    m = measure(cmd, env=env, timeout=timeout, interval=0.05)
    if m.returncode == "timeout":
        raise RuntimeError(f"{method} did not finish within {timeout:.0f} s")
    lines = [ln for ln in m.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if not m.ok or not lines:
        raise RuntimeError(f"{method} failed (exit {m.returncode}):\n{m.stderr_tail}")
    result = json.loads(lines[-1][len("BENCH_RESULT "):])
    # sampled process tree (sum of RSS), own high-water mark, peak of a waited child (SWarp)
    result["peak_rss_mb"] = max(m.peak_rss_mb, result["self_peak_mb"],
                                result["children_peak_mb"])
    result["peak_pss_mb"] = m.peak_pss_mb
    return result


# ----------------------------------------------------------------------------- evaluation
def load_mosaic(path, canvas_shape, canvas_wcs):
    """A method's mosaic on the survey canvas ((H, W) float32, NaN where empty).

    The mosaic is placed by its WCS: every method writes the canvas' TAN
    projection, possibly with a shifted CRPIX (a cropped canvas).
    """
    from astropy.io import fits
    from astropy.wcs import WCS
    with fits.open(path) as hdul:
        data = np.array(hdul[0].data, dtype=np.float32)
        wcs = WCS(hdul[0].header).celestial
    data = data[0] if data.ndim == 3 and data.shape[0] == 1 else data
    dx = canvas_wcs.wcs.crpix[0] - wcs.wcs.crpix[0]
    dy = canvas_wcs.wcs.crpix[1] - wcs.wcs.crpix[1]
    x0, y0 = int(round(dx)), int(round(dy))
    if abs(dx - x0) > 1e-3 or abs(dy - y0) > 1e-3:
        raise ValueError(f"{path}: the mosaic is not on the canvas pixel grid "
                         f"(CRPIX offset {dx:.3f}, {dy:.3f})")
    out = np.full(canvas_shape, np.nan, dtype=np.float32)
    ys, xs = max(0, y0), max(0, x0)
    ye = min(canvas_shape[0], y0 + data.shape[0])
    xe = min(canvas_shape[1], x0 + data.shape[1])
    out[ys:ye, xs:xe] = data[ys - y0:ye - y0, xs - x0:xe - x0]
    return out


def evaluate(result, meta, truth, footprint):
    from astropy.io import fits
    from astropy.wcs import WCS
    from photometry_graph.diagnostics import mosaic_vs_truth
    from photometry_graph.core.tiles import BBox
    wcs = WCS(fits.Header.fromstring(meta["wcs_header"], sep="\n"))
    img = load_mosaic(result["mosaic"], tuple(meta["canvas_shape"]), wcs)
    if result["method"] in ("swarp", "montage"):
        img[img == 0] = np.nan  # their fill value for uncovered pixels
    boxes = [BBox(*b) for b in meta["bboxes"]]
    q = mosaic_vs_truth(img, truth, boxes, noise_sigma=meta["noise_sigma"], footprint=footprint)
    return q


def _row(method, r, q):
    return {"method": LABELS.get(method, method), "wall s": r["wall_s"],
            "peak RSS MB": r["peak_rss_mb"], "gain spread %": 100 * q["gain_spread"],
            "offset spread σ": q["offset_spread_sigma"], "resid RMS σ": q["residual_rms_sigma"],
            "smooth resid σ": q["smooth_residual_rms_sigma"], "seam": q["seam"],
            "coverage %": 100 * q["coverage"]}


def _ratio_rows(rows, peer):
    keys = [("wall s", "time"), ("peak RSS MB", "peak RSS"), ("offset spread σ", "offset spread"),
            ("smooth resid σ", "smooth resid"), ("seam", "seam")]
    out = []
    for r in rows:
        out.append({"method": r["method"], **{f"{name} / reproject": r[k] / peer[k]
                                              if peer[k] else float("nan")
                                              for k, name in keys}})
    return out


def benchmark(size, *, rng=2024, methods=METHODS, keep=False, timeout=3600.0, save=True,
              results_dir=HERE / "results"):
    """Run every method on one survey; print and return the tables."""
    from photometry_graph.diagnostics import format_table
    workdir = Path(tempfile.mkdtemp(prefix="grid_bench_"))
    notes = []
    try:
        rows, cols, tile, overlap = SIZES[size]
        print(f"# preparing a {rows}x{cols} survey of {tile} px tiles ({overlap:.0%} overlap) "
              f"in {workdir}", flush=True)
        meta = prepare(workdir, size, rng)
        truth = np.load(workdir / "truth.npy")
        footprint = np.load(workdir / "footprint.npy")
        results = {}
        for method in methods:
            ok, note = available(method)
            if not ok:
                notes.append(note)
                continue
            print(f"# running {LABELS[method]} ...", flush=True)
            try:
                r = run_in_subprocess(method, workdir, timeout)
                r["quality"] = evaluate(r, meta, truth, footprint)
                results[method] = r
            except Exception as exc:  # a failed peer is reported, the others still run
                notes.append(f"{LABELS[method]} failed: {exc}")
        table = [_row(m, r, r["quality"]) for m, r in results.items()]
        ratios = _ratio_rows(table, _row("reproject", results["reproject"],
                                         results["reproject"]["quality"])) \
            if "reproject" in results else []
    finally:
        if keep:
            print(f"# inputs and outputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    H, W = meta["canvas_shape"]
    title = (f"{rows}x{cols} tiles of {tile} px, {overlap:.0%} overlap, canvas {W}x{H}, "
             f"mono, noise sigma {meta['noise_sigma']:g}; {platform.machine()}, "
             f"{os.cpu_count()} CPU(s)")
    text = [title, "", format_table(table, floatfmt=".3g")]
    if ratios:
        text += ["", format_table(ratios, floatfmt=".3g")]
    text += [""] + notes
    md = [f"**{title}**", "", format_table(table, floatfmt=".3g", markdown=True)]
    if ratios:
        md += ["", format_table(ratios, floatfmt=".3g", markdown=True)]
    md += [""] + [f"- {n}" for n in notes]
    print("\n".join(text))
    print("\n# Markdown\n")
    print("\n".join(md))
    if save:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        (results_dir / f"benchmark_{size}_{stamp}.md").write_text("\n".join(md) + "\n")
        (results_dir / f"benchmark_{size}_{stamp}.json").write_text(json.dumps(
            {"meta": {k: v for k, v in meta.items() if k != "wcs_header"}, "table": table,
             "ratios": ratios, "notes": notes,
             "raw": {m: {k: v for k, v in r.items()} for m, r in results.items()}},
            indent=1, default=float))
        print(f"\n# saved to {results_dir}/benchmark_{size}_{stamp}.md/.json")
    return table, ratios, notes


# ----------------------------------------------------------------------------- figure
def before_after_figure(path, *, rng=11, dpi=72):
    """README picture: plain placement vs harmonized + multi-band blended, same stretch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from photometry_graph.blending.assembly import assemble_mosaic
    from photometry_graph.datasets import make_survey
    from photometry_graph.diagnostics import plot_before_after
    from photometry_graph.photometry.harmonize import harmonize_tiles
    s = make_survey(3, 3, tile_size=256, overlap=0.2, channels=3, rng=rng, gradient=1.0,
                    empty_zones=True, empty_value=np.nan)
    H, W = s.canvas_shape
    plain = assemble_mosaic(s.tiles, s.canvas_shape, blend="none").mosaic
    res = harmonize_tiles(s.tiles, model="plane", background=True,
                          origin=((W - 1) / 2.0, (H - 1) / 2.0))
    blended = assemble_mosaic(s.tiles, s.canvas_shape, corrections=res.corrections,
                              blend="multiband").mosaic
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    plot_before_after(plain, blended, ax=axes,
                      titles=("plain placement (3x3 tiles with injected gains, offsets, "
                              "gradients)", "harmonized (graph solve) + multi-band blend"),
                      reference=1)
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    from PIL import Image  # a matplotlib dependency
    buf.seek(0)
    # noisy RGB compresses badly: a 256-colour palette keeps the README light
    Image.open(buf).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(
        path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="3x3 tiles of 256 px (< 1 min)")
    size.add_argument("--large", action="store_true", help="10x10 tiles of 1024 px, 25%% "
                      "overlap")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (default: all available)")
    p.add_argument("--seed", type=int, default=2024, help="survey seed")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    p.add_argument("--timeout", type=float, default=3600.0, help="per method, seconds")
    p.add_argument("--figure", metavar="PNG", help="only write the README before/after figure")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.workdir)
    if args.figure:
        before_after_figure(args.figure)
        return None
    size = "quick" if args.quick else "large" if args.large else "default"
    benchmark(size, rng=args.seed, methods=args.methods, keep=args.keep, timeout=args.timeout,
              save=not args.no_save)
    return None


if __name__ == "__main__":
    main()
