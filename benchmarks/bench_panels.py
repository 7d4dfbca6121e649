"""Panels from any stacker: ``grid-mode assemble`` and ``mosaic()`` against reproject, in one run.

A synthetic panel set (:func:`photometry_graph.datasets.make_panel_set`: 2 x 3 panels of
one field, each on its own TAN grid with pixel scale +-10 %, rotation up to 20 deg, sizes
+-10 %, NaN or zero borders, per-panel gain +-15 %, offset +-30 sigma and a gradient) is
written as FITS files in a temporary folder.  Then, each in its own subprocess:

* ``assemble`` -- ``grid_mode.assemble_tiles(PANELS, OUT)``, what ``grid-mode assemble``
  runs: panels reprojected one at a time onto the optimal grid into tile files, overlap
  graph, pairwise fits, global gain/offset/plane solve, guarded background matching,
  chunked multi-band blending, mosaic + coverage + report + preview written;
* ``mosaic`` -- ``photometry_graph.mosaic(files)`` (the Python API, the same engine), the
  array written to FITS;
* ``reproject`` (the peer) -- the panels read with astropy (``|x| <= 1e-6`` set to NaN, as
  ``mask_eps`` does), ``reproject.mosaicking.reproject_and_coadd(...,
  reproject_function=reproject_interp, match_background=True)`` on the same output grid,
  written to FITS; ``reproject_plain`` the same without background matching (baseline).

Measured per subprocess: wall time (imports excluded, reading and writing included), the
peak RSS and the peak PSS (proportional set size: shared pages split between the
processes that map them) of its process tree, polled every 50 ms with psutil, and its own
``VmHWM``.  Measured per mosaic, against the noise-free truth rendered on its grid
(:func:`photometry_graph.diagnostics.mosaic_vs_panels`): the spread of the panels' local
gains (aperture photometry of the stars of each panel's part of the mosaic against the
truth, relative to their median), the spread of their offsets (noise sigma, after a
global gain + offset + plane fit, star-free pixels), the seam metric at the panel borders
(1 = seamless) and the coverage of the union of the panels' valid footprints; for the two
entry points of this project also the solved gains against the injected ones (worst
panel, after the reference panel's gauge).

Run::

    python benchmarks/bench_panels.py                          # 2 x 3 panels of 480 x 720
    python benchmarks/bench_panels.py --panel-shape 1200 1800  # closer to real panels
    python benchmarks/bench_panels.py --channels 3 --faint     # RGB, a faint field
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("assemble", "mosaic", "reproject", "reproject_plain")
PEER = "reproject"
POLL_S = 0.05
# the faint field of the frame surveys (make_frame_survey's sky) instead of stacked panels'
FAINT = dict(nebula_amplitude=(5.0, 40.0), star_density=5e-4, star_peak_range=(3.0, 300.0))


def _grid_header(workdir):
    from astropy.io import fits
    return fits.Header.fromstring((workdir / "grid.txt").read_text(), sep="\n")


def _panel_paths(workdir):
    return sorted((workdir / "panels").glob("panel_*.fits"))


def _write(path, data, header):
    from astropy.io import fits
    fits.PrimaryHDU(np.asarray(data, np.float32), header).writeto(path, overwrite=True)
    return path


def run_method(method, workdir, out):
    """The work of one method (in its subprocess); returns the mosaic path."""
    if method == "assemble":
        import grid_mode
        return grid_mode.assemble_tiles(workdir / "panels", out).mosaic
    header = _grid_header(workdir)
    if method == "mosaic":
        from photometry_graph import mosaic
        array, _ = mosaic([str(p) for p in _panel_paths(workdir)])
        return _write(out / "mosaic.fits", array, header)
    from astropy.io import fits
    from astropy.wcs import WCS
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd
    inputs = []
    for path in _panel_paths(workdir):
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float32)
            wcs = WCS(hdul[0].header).celestial
        data = np.moveaxis(data, 0, -1) if data.ndim == 3 and data.shape[0] == 3 else data
        data[(np.abs(data) <= 1e-6).all(axis=-1) if data.ndim == 3 else
             np.abs(data) <= 1e-6] = np.nan
        inputs.append((data, wcs))
    wcs, shape = WCS(header), (header["NAXIS2"], header["NAXIS1"])
    planes = []
    for c in range(inputs[0][0].shape[2] if inputs[0][0].ndim == 3 else 1):
        planes.append(reproject_and_coadd(
            [(d if d.ndim == 2 else d[..., c], w) for d, w in inputs], wcs, shape_out=shape,
            reproject_function=reproject_interp, match_background=method == PEER)[0])
    return _write(out / "mosaic.fits", planes[0] if len(planes) == 1 else np.stack(planes),
                  header)


def worker(method, workdir):
    """Run one method in this fresh process; print its wall time and own peak memory."""
    workdir = Path(workdir)
    out = workdir / f"out_{method}"
    out.mkdir(exist_ok=True)
    import astropy.io.fits  # noqa: F401 - imports before the clock starts
    import grid_mode  # noqa: F401
    import reproject.mosaicking  # noqa: F401
    t0 = time.perf_counter()
    path = run_method(method, workdir, out)
    wall = time.perf_counter() - t0
    hwm = next((int(ln.split()[1]) / 1024.0 for ln in open("/proc/self/status")
                if ln.startswith("VmHWM:")), float("nan")) if os.path.exists("/proc") else 0.0
    print("BENCH_RESULT " + json.dumps(dict(method=method, wall_s=wall, mosaic=str(path),
                                            hwm_mb=hwm)))


def _tree_memory(proc):
    """(RSS, PSS) in bytes summed over a psutil process and its descendants."""
    import psutil
    rss = pss = 0
    try:
        tree = [proc] + proc.children(recursive=True)
    except psutil.Error:
        tree = [proc]
    for p in tree:
        try:
            info = p.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def run_in_subprocess(method, workdir, timeout):
    """``worker(method)`` in a child process; its result with the tree's peak RSS and PSS."""
    import psutil
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", method, str(workdir)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    proc, peak, t0 = psutil.Process(child.pid), np.zeros(2), time.perf_counter()
    while child.poll() is None:
        peak = np.maximum(peak, _tree_memory(proc))
        if time.perf_counter() - t0 > timeout:
            child.kill()
            child.communicate()
            raise RuntimeError(f"{method} did not finish within {timeout:.0f} s")
        time.sleep(POLL_S)
    stdout, stderr = child.communicate()
    lines = [ln for ln in stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if child.returncode != 0 or not lines:
        raise RuntimeError(f"{method} failed (exit {child.returncode}):\n"
                           + "\n".join(stderr.strip().splitlines()[-8:]))
    result = json.loads(lines[-1][len("BENCH_RESULT "):])
    result["peak_rss_mb"] = max(peak[0] / 2 ** 20, result["hwm_mb"])
    result["peak_pss_mb"] = peak[1] / 2 ** 20
    return result


def prepare(workdir, args):
    """Write the panel set and the common output grid; return the panel set."""
    from photometry_graph.datasets import make_panel_set, write_panel_set
    from photometry_graph.pipeline.panels import panel_grid, scan_panels
    s = make_panel_set(args.rows, args.cols, tuple(args.panel_shape), channels=args.channels,
                       rng=args.seed, **(FAINT if args.faint else {}))
    paths = write_panel_set(s, workdir / "panels")
    wcs, shape, _ = panel_grid(scan_panels(paths))
    header = wcs.to_header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, shape[1], shape[0]
    (workdir / "grid.txt").write_text(header.tostring(sep="\n"))
    return s


def evaluate(method, result, panel_set):
    """Quality of one mosaic against the truth (and the solved gains of this project)."""
    from astropy.io import fits
    from astropy.wcs import WCS
    from photometry_graph.diagnostics.panels import mosaic_vs_panels, panel_gain_errors
    with fits.open(result["mosaic"]) as hdul:
        data, wcs = hdul[0].data.astype(np.float64), WCS(hdul[0].header).celestial
    q = mosaic_vs_panels(data, wcs, panel_set)
    q["solved_gain_max"] = float("nan")
    if method == "assemble":
        report = json.loads((Path(result["mosaic"]).parent / "grid_report.json").read_text())
        corr = {t["tile_id"]: t["correction"] for t in report["tiles"]}
        gains = [corr[p["tile_id"]]["gain"] for p in report["panels"]]
        ref = [corr[p["tile_id"]]["status"] for p in report["panels"]].index("reference")
        q["solved_gain_max"] = float(np.abs(panel_gain_errors(gains, panel_set, ref)).max())
    return q


def table(rows):
    """Markdown table of the results and of the ratios to the peer."""
    head = ("| method | wall s | peak RSS MB | peak PSS MB | gain spread % | gain max % | "
            "solved gain max % | offset spread σ | seam | coverage % |")
    lines = [head, "|" + "---|" * 10]
    for m, r, q in rows:
        lines.append(f"| {m} | {r['wall_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_pss_mb']:.0f} | {100 * q['gain_spread']:.3f} | "
                     f"{100 * q['gain_max_error']:.3f} | {100 * q['solved_gain_max']:.3f} | "
                     f"{q['panel_offset_spread_sigma']:.3f} | {q['seam_panel_borders']:.3f} | "
                     f"{100 * q['coverage']:.3f} |")
    peer = next((r, q) for m, r, q in rows if m == PEER) if any(m == PEER for m, _, _ in
                                                               rows) else None
    if peer is not None:
        lines += ["", "| method | time / peer | PSS / peer | gain spread / peer | "
                  "offset spread / peer | seam / peer |", "|" + "---|" * 6]
        pr, pq = peer
        for m, r, q in rows:
            lines.append(f"| {m} | {r['wall_s'] / pr['wall_s']:.2f} | "
                         f"{r['peak_pss_mb'] / pr['peak_pss_mb']:.2f} | "
                         f"{q['gain_spread'] / pq['gain_spread']:.2f} | "
                         f"{q['panel_offset_spread_sigma'] / pq['panel_offset_spread_sigma']:.2f}"
                         f" | {q['seam_panel_borders'] / pq['seam_panel_borders']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"]:  # one method, in the subprocess of run_in_subprocess
        return worker(*argv[1:3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--cols", type=int, default=3)
    parser.add_argument("--panel-shape", type=int, nargs=2, default=(480, 720),
                        metavar=("H", "W"))
    parser.add_argument("--channels", type=int, choices=(1, 3), default=1)
    parser.add_argument("--faint", action="store_true", help="the frame surveys' faint field")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    args = parser.parse_args(argv)
    import psutil
    with tempfile.TemporaryDirectory(prefix="bench_panels_") as tmp:
        workdir = Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        s = prepare(workdir, args)
        shapes = [p.shape for p in s.frames]
        print(f"{len(shapes)} panels of {args.panel_shape[0]}x{args.panel_shape[1]} px "
              f"(+-10 %), {args.channels} channel(s), {'faint' if args.faint else 'stacked'} "
              f"field, seed {args.seed}; {psutil.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        rows = []
        for method in args.methods:
            r = run_in_subprocess(method, workdir, args.timeout)
            rows.append((method, r, evaluate(method, r, s)))
            print(f"  {method}: {r['wall_s']:.2f} s, {r['peak_pss_mb']:.0f} MB PSS", flush=True)
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
