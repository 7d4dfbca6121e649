"""Wall time and peak memory of the whole ``grid-mode run`` against reproject, in one run.

A synthetic survey of ``R x C`` overlapping plate-solved mono frames
(:func:`photometry_graph.datasets.make_frame_survey`; default 6 x 6 = 36
frames of 1080 x 1920 px, a Seestar-sized frame, with injected gains,
offsets, gradients, empty borders, a NaN blob and a satellite trail) is
written as FITS frames + ``stack_plan.csv``
(:func:`photometry_graph.pipeline.demo.write_frame_survey`) in a temporary folder.  Then, each
in its own subprocess so that its memory is its own:

* ``grid-mode run --workers 1``: the full pipeline (frame photometry,
  tiled stacking with rejection, tile photometry, background matching,
  multi-band blending, mosaic written to disk), in-process;
* ``grid-mode run --workers 2``: the same with two worker processes;
* ``reproject match_bg``: a peer script that loads every frame with
  astropy (data + WCS; values ``|x| <= 1e-6`` -- the empty borders -- set
  to NaN, as ``grid-mode`` does with its default ``--mask-eps``), computes
  the output WCS with ``reproject.mosaicking.find_optimal_celestial_wcs``,
  calls ``reproject.mosaicking.reproject_and_coadd(...,
  reproject_function=reproject.reproject_interp, match_background=True)``
  and writes the mosaic with astropy.

Measured for each subprocess (``benchmarks/_measure.py``): the wall time from start to
exit, the peak PSS of its process tree (worker processes included, shared pages counted
once) and its peak RSS -- the larger of (a) the peak, over samples every 50 ms with psutil,
of the summed RSS of the process and all its descendants and (b) the largest high-water
mark ``VmHWM`` of one of them (it catches peaks shorter than the sampling interval).  Printed: a
table of method, wall time, peak RSS and the ratios of both to the
reproject peer of the same run, plus the speed-up of ``--workers 2`` over
``--workers 1``.  Frame generation is not timed in the table.

Run::

    python benchmarks/bench_pipeline.py                       # 36 frames of 1080x1920 (slow)
    python benchmarks/bench_pipeline.py --frames-grid 2 2 --frame-shape 270 480   # quick check
    python benchmarks/bench_pipeline.py --skip-peer --keep /tmp/bench_frames
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import measure  # noqa: E402

# The peer, run as ``python -c PEER_SCRIPT FRAMES_DIR OUTPUT_FITS``.
PEER_SCRIPT = r"""
import sys
from pathlib import Path
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
import reproject
from reproject.mosaicking import find_optimal_celestial_wcs, reproject_and_coadd

folder, out = Path(sys.argv[1]), Path(sys.argv[2])
inputs = []
for path in sorted(folder.glob("*.fits")):
    with fits.open(path) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
        wcs = WCS(hdul[0].header).celestial
    data = np.squeeze(data)
    data[np.abs(data) <= 1e-6] = np.nan
    inputs.append((data, wcs))
wcs_out, shape_out = find_optimal_celestial_wcs(inputs)
mosaic, footprint = reproject_and_coadd(inputs, wcs_out, shape_out=shape_out,
                                        reproject_function=reproject.reproject_interp,
                                        match_background=True)
mosaic[footprint == 0] = np.nan
fits.PrimaryHDU(mosaic.astype(np.float32), wcs_out.to_header()).writeto(out, overwrite=True)
"""

def grid_mode_command():
    """The ``grid-mode`` console script next to the running interpreter, or a ``-c`` fallback."""
    exe = Path(sys.executable).parent / "grid-mode"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys, grid_mode; sys.exit(grid_mode.main())"]


def write_frames(folder, grid, shape):
    """Generate the synthetic survey and write it; return the generation time in s."""
    from photometry_graph.pipeline.demo import write_frame_survey
    from photometry_graph.datasets import make_frame_survey

    t0 = time.perf_counter()
    survey = make_frame_survey(n_rows=grid[0], n_cols=grid[1], frame_shape=tuple(shape),
                               channels=1, rng=0)
    write_frame_survey(survey, folder)
    return time.perf_counter() - t0


def format_table(rows, peer_name):
    """Text table of the measured rows with ratios against the peer row."""
    peer = next((r for r in rows if r["method"] == peer_name and r["ok"]), None)
    head = (f"{'method':<26}{'wall s':>10}{'peak RSS MB':>14}{'peak PSS MB':>14}"
            f"{'time/peer':>11}{'RSS/peer':>10}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        t_ratio = f"{r['wall'] / peer['wall']:.2f}" if peer else "-"
        m_ratio = f"{r['rss'] / peer['rss']:.2f}" if peer else "-"
        status = "ok" if r["ok"] else f"FAILED ({r['code']})"
        lines.append(f"{r['method']:<26}{r['wall']:>10.1f}{r['rss'] / 2**20:>14.0f}"
                     f"{r['pss'] / 2**20:>14.0f}{t_ratio:>11}{m_ratio:>10}  {status}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-grid", nargs=2, type=int, default=(6, 6), metavar=("R", "C"),
                        help="frame pattern, rows x columns (default: 6 6 = 36 frames)")
    parser.add_argument("--frame-shape", nargs=2, type=int, default=(1080, 1920),
                        metavar=("H", "W"), help="frame height and width (default: 1080 1920)")
    parser.add_argument("--skip-peer", action="store_true",
                        help="do not run the reproject_and_coadd peer")
    parser.add_argument("--keep", metavar="DIR",
                        help="write frames and outputs to DIR and keep them (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=0.0, metavar="S",
                        help="kill a method after S seconds (default: no limit)")
    args = parser.parse_args(argv)
    if min(args.frames_grid) < 1 or min(args.frame_shape) < 16:
        parser.error("--frames-grid needs >= 1 and --frame-shape >= 16 px")

    if args.keep:
        root = Path(args.keep)
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    frames = root / "frames"
    try:
        n = args.frames_grid[0] * args.frames_grid[1]
        h, w = args.frame_shape
        print(f"writing {n} frames of {h}x{w} px to {frames} ...", flush=True)
        gen = write_frames(frames, args.frames_grid, args.frame_shape)
        size_mb = sum(p.stat().st_size for p in frames.glob("*.fits")) / 2**20
        print(f"  generated in {gen:.1f} s ({size_mb:.0f} MB of FITS)", flush=True)

        gm = grid_mode_command()
        peer_name = "reproject match_bg"
        runs = [
            ("grid-mode --workers 1", gm + ["run", str(frames), str(root / "out_w1"),
                                            "--workers", "1", "-q"]),
            ("grid-mode --workers 2", gm + ["run", str(frames), str(root / "out_w2"),
                                            "--workers", "2", "-q"]),
        ]
        if not args.skip_peer:
            runs.append((peer_name, [sys.executable, "-c", PEER_SCRIPT, str(frames),
                                     str(root / "reproject_mosaic.fits")]))
        rows = []
        for name, cmd in runs:
            print(f"running {name} ...", flush=True)
            m = measure(cmd, timeout=args.timeout, interval=0.05)
            rows.append({"method": name, "wall": m.wall_s, "rss": m.peak_rss_mb * 2**20,
                         "pss": m.peak_pss, "code": m.returncode, "ok": m.ok})
            print(f"  {m.wall_s:.1f} s, {m.peak_rss_mb:.0f} MB RSS, {m.peak_pss_mb:.0f} MB PSS"
                  + ("" if m.ok else f", FAILED ({m.returncode})"), flush=True)
            if not m.ok and m.stderr_tail:
                print("  " + m.stderr_tail.replace("\n", "\n  "), flush=True)

        print()
        print(f"{n} frames of {h}x{w} px, {psutil.cpu_count()} CPUs; peak RSS = process tree")
        print(format_table(rows, peer_name))
        w1, w2 = rows[0], rows[1]
        if w1["ok"] and w2["ok"]:
            print(f"\nworkers 2 vs 1: speed-up {w1['wall'] / w2['wall']:.2f}x, "
                  f"peak RSS ratio {w2['rss'] / w1['rss']:.2f}")
        if args.keep:
            print(f"\nframes and outputs kept in {root}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
