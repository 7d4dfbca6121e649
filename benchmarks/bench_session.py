"""A smart-telescope session through ``grid-mode run``, SWarp and reproject, in one run.

N frames of 1080 x 1920 px (uint16 mono, or ``--bayer`` RGGB raws) of a 2 x 3 pointing
mosaic (:func:`photometry_graph.datasets.make_session`: ±25 px dithers, field rotation
drifting from -8° to +8° through the session, per-frame gain, sky offset, gradient and
noise, a few satellite trails, saturated stars; known truth) are written to a folder with a
``stack_plan.csv``.  Then, each in its own subprocess:

* ``grid-mode run`` (``grid_mode.py run``; ``--memory-mb`` budgets, ``--workers``, extra
  flags with ``--grid-args``);
* SWarp (``swarp``/``SWarp`` on the PATH, Debian package ``swarp``; skipped with a note
  otherwise): ``COMBINE_TYPE=AVERAGE``, ``SUBTRACT_BACK=Y``, ``NTHREADS=2``, other settings
  at their defaults;
* for N <= 40 mono frames, ``reproject_and_coadd(match_background=True)``
  (``bench_pipeline.PEER_SCRIPT``).

For each (``benchmarks/_measure.py``): wall time, seconds per frame, peak PSS of the whole
process tree (shared pages counted once; workers, SWarp, a dask cluster included) and peak
RSS, sampled every 70 ms, CPU utilisation (CPU seconds of the tree / (wall x CPUs)), and the
mosaic's quality against the truth (:func:`photometry_graph.diagnostics.mosaic_vs_truth`
on 512 px blocks inside the frames' footprint, star-free pixels: the spread of the block
gains -- of all blocks, and ``gain5`` of the blocks whose truth spans at least 5 noise
sigma (in a block of nearly flat sky the gain fitted is a residual gradient over a faint
structure) --, and the RMS of the residual smoothed over 4 px -- its large-scale part -- in noise
sigma, after a global gain + offset + plane fit; coverage = finite share of that
footprint).  For grid-mode the
stage times of its report, the frame photometry's fit count, and its frame gains against
the injected ones (RMS and worst, after the global gauge).  Ratios against SWarp are
of the same invocation; the machine's load is printed with them.  The frames of a session
or a scaling size are read once before its first contender, so that the contenders find
them in the page cache (``--small`` takes medians of interleaved runs instead).

Modes::

    python benchmarks/bench_session.py                          # 120 mono frames
    python benchmarks/bench_session.py --frames 40 --bayer
    python benchmarks/bench_session.py --memory-mb 256,512,1024  # each within budget, same mosaic
    python benchmarks/bench_session.py --scaling 60,120,240,480  # s/frame, memory; 4,993 frames
    python benchmarks/bench_session.py --scaling 60,480 --repeat 3  # sizes interleaved
    python benchmarks/bench_session.py --small                  # 9 x 410^2 and 4 x 160x512
    python benchmarks/bench_session.py --scheduler local-dask   # LocalCluster, 2 workers

``--small`` also runs grid-mode with ``--no-html-report`` and prints where each run's wall
time goes (stages, report page, the rest: interpreter, imports, outputs, exit) against
SWarp's; each contender runs ``--repeat`` times (3, interleaved), the run of median wall
time kept.

``--data DIR`` keeps the generated frames there and reuses them (generation takes ~0.4 s a
frame); ``--keep DIR`` keeps the outputs.
"""

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))
from _measure import load_note, measure  # noqa: E402

BLOCK = 512  # px, the blocks of the quality metrics
FULL_SESSION = 4993  # frames of the Seestar S50 session of M31 that the extrapolation uses
CLUSTER_SCRIPT = r"""
import sys
from dask.distributed import LocalCluster
cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                       dashboard_address=None)
print(cluster.scheduler_address, flush=True)
sys.stdin.read()  # serve until the benchmark closes our stdin
cluster.close()
"""


# ---------------------------------------------------------------------------- frames
def session_frames(data_root, n, shape, *, bayer, seed, pointings=(2, 3)):
    """The session and its frames folder, written unless a complete copy is there."""
    from photometry_graph.datasets import make_session
    from photometry_graph.pipeline.demo import write_frame_survey

    session = make_session(n, tuple(shape), tuple(pointings), channels="bayer" if bayer else 1,
                           rng=seed)
    kind = "bayer" if bayer else "mono"
    folder = (Path(data_root) / f"session_{kind}_{n}_{shape[0]}x{shape[1]}_"
              f"{pointings[0]}x{pointings[1]}_s{seed}")
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        write_frame_survey(session, folder)
        done.write_text("ok\n")
        size = sum(p.stat().st_size for p in folder.glob("*.fits")) / 2 ** 20
        print(f"  wrote {n} {kind} frames of {shape[0]}x{shape[1]} ({size:.0f} MB) in "
              f"{time.perf_counter() - t0:.0f} s to {folder}", flush=True)
    return session, folder


def warm_page_cache(frames):
    """Read every file of the frames folder once, so that the contenders find the frames
    in the page cache (memory allowing): the first no longer reads them from the disk for
    the ones after it.  Returns the MB read."""
    total = 0
    for path in sorted(Path(frames).iterdir()):
        if path.is_file():
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return total / 2 ** 20


# ---------------------------------------------------------------------------- contenders
def swarp_binary():
    """The SWarp executable (``swarp``, or ``SWarp`` as Debian names it), or None."""
    return shutil.which("swarp") or shutil.which("SWarp")


def grid_mode_cmd(frames, out, args, memory_mb=None, scheduler=None):
    cmd = [sys.executable, str(ROOT / "grid_mode.py"), "run", str(frames), str(out), "-q"]
    if memory_mb is not None:
        cmd += ["--memory-mb", str(memory_mb)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    if scheduler is not None:
        cmd += ["--scheduler", scheduler]
    return cmd + shlex.split(args.grid_args or "")


def swarp_cmd(frames, out):
    names = sorted(str(p) for p in Path(frames).glob("frame_*.fits"))
    (out / "frames.list").write_text("\n".join(names) + "\n")
    return [swarp_binary(), "@frames.list", "-IMAGEOUT_NAME", "coadd.fits",
            "-WEIGHTOUT_NAME", "coadd.weight.fits", "-COMBINE_TYPE", "AVERAGE",
            "-SUBTRACT_BACK", "Y", "-NTHREADS", "2", "-RESAMPLE_DIR", str(out),
            "-VERBOSE_TYPE", "QUIET", "-WRITE_XML", "N"]


def reproject_cmd(frames, out):
    from bench_pipeline import PEER_SCRIPT
    return [sys.executable, "-c", PEER_SCRIPT, str(frames), str(out / "mosaic.fits")]


# ---------------------------------------------------------------------------- quality
def frames_footprint(session, wcs, shape, erode=4):
    """Pixels of a mosaic grid inside at least one frame (``erode`` px from its edges)."""
    import cv2
    from photometry_graph.core.wcsgrid import transform_pixels

    H, W = session.info["frame_shape"]
    mask = np.zeros(shape, np.uint8)
    cx = np.array([-0.5, W - 0.5, W - 0.5, -0.5])
    cy = np.array([-0.5, -0.5, H - 0.5, H - 0.5])
    for f_wcs in session.frame_wcs_list:
        x, y = transform_pixels(f_wcs, wcs, cx, cy)
        cv2.fillConvexPoly(mask, np.round(np.column_stack([x, y])).astype(np.int32), 1)
    k = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    return cv2.erode(mask, k).astype(bool)


def read_mosaic(path, weight_path=None):
    """A mosaic file as ``(H, W, C)`` float32 (NaN where empty) and its celestial WCS."""
    from astropy.io import fits
    from astropy.wcs import WCS

    with fits.open(path) as hdul:
        data = np.array(hdul[0].data, dtype=np.float32)
        wcs = WCS(hdul[0].header).celestial
    img = data[..., None] if data.ndim == 2 else np.moveaxis(data, 0, -1)
    if weight_path is not None:  # SWarp writes 0 where nothing is covered
        with fits.open(weight_path) as hdul:
            img[np.asarray(hdul[0].data) <= 0] = np.nan
    return img, wcs


def session_quality(session, path, weight_path=None):
    """Block gain spread (%), large-scale residual (sigma) and coverage (%) vs the truth."""
    from photometry_graph.core.tiles import BBox
    from photometry_graph.diagnostics import mosaic_vs_truth

    img, wcs = read_mosaic(path, weight_path)
    shape = img.shape[:2]
    foot = frames_footprint(session, wcs, shape)
    truth = session.render_truth(wcs, shape)
    if truth.shape[2] != img.shape[2]:  # a raw (not debayered) peer mosaic of Bayer frames
        return dict(gain=float("nan"), gain5=float("nan"), resid=float("nan"),
                    coverage=float("nan"))
    blocks = [BBox(y, min(y + BLOCK, shape[0]), x, min(x + BLOCK, shape[1]))
              for y in range(0, shape[0], BLOCK) for x in range(0, shape[1], BLOCK)]
    blocks = [b for b in blocks if foot[b.y0:b.y1, b.x0:b.x1].mean() > 0.5]
    # star-free ("calm") pixels: a resampled star is flattened by an amount that depends on
    # its sub-pixel phase (1-4 % block gains of any resampling method); the saturated star
    # cores are clipped in the frames, not in the truth
    calm = np.abs(truth - session.render_truth(wcs, shape, stars=False)).max(axis=2) \
        < 0.05 * session.noise_sigma
    q = mosaic_vs_truth(img, truth, blocks, noise_sigma=session.noise_sigma,
                        valid=foot & calm, footprint=foot)
    return dict(gain=100 * q["gain_spread"], gain5=100 * q["gain_spread_structured"],
                resid=q["smooth_residual_rms_sigma"], coverage=100 * q["coverage"])


# ---------------------------------------------------------------------------- running
def run(label, cmd, n_frames, *, cwd=None, also=(), timeout=None):
    print(f"  running {label} ...", flush=True)
    m = measure(cmd, cwd=cwd, also=also, timeout=timeout)
    status = "" if m.ok else f" FAILED ({m.returncode}):\n    " + m.stderr_tail.replace(
        "\n", "\n    ")
    print(f"    {m.wall_s:.1f} s, PSS {m.peak_pss_mb:.0f} MB, RSS {m.peak_rss_mb:.0f} MB, "
          f"CPU {100 * m.cpu_util:.0f} %{status}", flush=True)
    return dict(label=label, m=m, n=n_frames)


def frame_gain_errors(session, report):
    """RMS and worst error (%) of the frame gains of a grid-mode report (its parsed JSON)
    against the truth: the log of a frame's fitted gain times its injected one, minus its
    mean over the frames (first channel); NaN when a frame was skipped or has no correction
    (the frame photometry off or failed)."""
    corrections = [f.get("correction") for f in report.get("frames") or []]
    injected = np.array([np.ravel(p["gain"])[0] for p in session.params])
    if len(corrections) != injected.size or any(c is None for c in corrections):
        return float("nan"), float("nan")
    fitted = np.array([c["gain"][0] for c in corrections])
    e = np.log(fitted * injected)
    e -= e.mean()
    return 100 * float(np.sqrt(np.mean(e * e))), 100 * float(np.abs(e).max())


def grid_stages(out, session):
    """Stage times (s), the frame photometry's fits (count, how many failed or gave an
    offset only), the run's [GRID] warnings and its frame gains against the truth
    (:func:`frame_gain_errors`), from a grid-mode report."""
    report = json.loads((Path(out) / "grid_report.json").read_text())
    t = report.get("timings", {})
    harm = (report.get("frame_photometry") or {}).get("harmonize") or {}
    status = harm.get("fits") or {}
    text = ", ".join(f"{k} {v:.1f}" for k, v in t.items() if k != "total")
    rms, worst = frame_gain_errors(session, report)
    return (f"{text}; frame fits {harm.get('edges')} (failed {status.get('failed', '?')}, "
            f"offset only {status.get('offset_only', '?')}); "
            f"{len(report.get('warnings') or [])} warning(s); "
            f"frame gains vs truth: rms {rms:.4f} %, worst {worst:.4f} %")


def table(rows, peer=None):
    """The printed table; time ratios against ``peer`` (a row of the same invocation)."""
    head = (f"  {'method':<34}{'frames':>7}{'wall s':>9}{'s/frame':>9}{'PSS MB':>8}"
            f"{'RSS MB':>8}{'CPU %':>7}{'gain %':>8}{'gain5 %':>8}{'resid σ':>8}{'cover %':>8}"
            f"{'peer/this':>10}")
    lines = [head, "  " + "-" * (len(head) - 2)]
    for r in rows:
        m, q = r["m"], r.get("q") or {}
        ratio = (f"{peer['m'].wall_s / m.wall_s:10.2f}" if peer is not None and m.ok
                 and peer["m"].ok else f"{'-':>10}")
        lines.append(f"  {r['label']:<34}{r['n']:>7}{m.wall_s:>9.1f}{m.wall_s / r['n']:>9.3f}"
                     f"{m.peak_pss_mb:>8.0f}{m.peak_rss_mb:>8.0f}{100 * m.cpu_util:>7.0f}"
                     f"{q.get('gain', float('nan')):>8.3f}{q.get('gain5', float('nan')):>8.3f}"
                     f"{q.get('resid', float('nan')):>8.3f}"
                     f"{q.get('coverage', float('nan')):>8.1f}{ratio}")
    return "\n".join(lines)


def compare_mosaics(a, b):
    """``(identical, max |a - b|)`` of two grid-mode mosaic files (NaN where NaN)."""
    x, _ = read_mosaic(a)
    y, _ = read_mosaic(b)
    if x.shape != y.shape:
        return False, float("inf")
    same_nan = np.array_equal(np.isnan(x), np.isnan(y))
    diff = float(np.nanmax(np.abs(x - y))) if np.isfinite(x).any() else 0.0
    return same_nan and diff == 0.0, diff if same_nan else float("inf")


def start_cluster():
    """A 2-worker dask LocalCluster in its own process: ``(process, scheduler address)``."""
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    address = proc.stdout.readline().strip()
    if not address:
        raise RuntimeError("the dask LocalCluster did not start")
    return proc, address


# ---------------------------------------------------------------------------- modes
def session_run(args, root, data):
    n = args.frames
    print(f"session of {n} {'Bayer' if args.bayer else 'mono'} frames of "
          f"{args.frame_shape[0]}x{args.frame_shape[1]}", flush=True)
    session, frames = session_frames(data, n, args.frame_shape, bayer=args.bayer, seed=args.seed)
    print(f"  read the frames once ({warm_page_cache(frames):.0f} MB) before the runs",
          flush=True)
    rows, outs = [], {}
    budgets = args.memory_mb or [None]
    for mb in budgets:
        label = "grid-mode run" + ("" if mb is None else f" --memory-mb {mb}")
        out = root / f"grid_{mb}"
        r = run(label, grid_mode_cmd(frames, out, args, mb), n, timeout=args.timeout)
        if r["m"].ok:
            r["q"] = session_quality(session, out / "mosaic_grid.fits")
            r["stages"] = grid_stages(out, session)
            outs[mb] = out
        rows.append(r)
    if args.scheduler == "local-dask":
        proc, address = start_cluster()
        try:
            out = root / "grid_dask"
            r = run("grid-mode run (LocalCluster, 2 w.)",
                    grid_mode_cmd(frames, out, args, budgets[0], scheduler=address), n,
                    also=[proc.pid], timeout=args.timeout)
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)
        if r["m"].ok:
            r["q"] = session_quality(session, out / "mosaic_grid.fits")
            r["stages"] = grid_stages(out, session)
            outs["dask"] = out
        rows.append(r)
    peer, notes = None, []
    if args.skip_swarp:
        notes.append("SWarp skipped (--skip-swarp)")
    elif swarp_binary() is None:
        notes.append("SWarp skipped: no `swarp`/`SWarp` on the PATH (apt-get install swarp)")
    else:
        out = root / "swarp"
        out.mkdir(parents=True, exist_ok=True)
        peer = run("SWarp (AVERAGE, SUBTRACT_BACK)", swarp_cmd(frames, out), n,
                   cwd=out, timeout=args.timeout)
        if peer["m"].ok:
            peer["q"] = session_quality(session, out / "coadd.fits", out / "coadd.weight.fits")
        if args.bayer:
            notes.append("SWarp co-adds the Bayer raws as they are (no debayering): a time "
                         "reference only, no quality")
        rows.append(peer)
        shutil.rmtree(out, ignore_errors=True)  # its resampled frames are large
    if n <= 40 and not args.bayer and not args.skip_reproject:
        out = root / "reproject"
        out.mkdir(parents=True, exist_ok=True)
        r = run("reproject_and_coadd(match_bg)", reproject_cmd(frames, out), n,
                timeout=args.timeout)
        if r["m"].ok:
            r["q"] = session_quality(session, out / "mosaic.fits")
        rows.append(r)
    print(f"\n{n} {'Bayer' if args.bayer else 'mono'} frames of {args.frame_shape[0]}x"
          f"{args.frame_shape[1]}; {load_note()} at the end")
    print(table(rows, peer))
    for r in rows:
        if r.get("stages"):
            print(f"  {r['label']}: {r['stages']}")
    keys = [k for k in outs if k != "dask"]
    for k in keys[1:]:
        same, diff = compare_mosaics(outs[keys[0]] / "mosaic_grid.fits",
                                     outs[k] / "mosaic_grid.fits")
        print(f"  mosaic --memory-mb {k} vs {keys[0]}: "
              + ("identical" if same else f"max |difference| {diff:.3g}"))
    if "dask" in outs and keys:
        same, diff = compare_mosaics(outs[keys[0]] / "mosaic_grid.fits",
                                     outs["dask"] / "mosaic_grid.fits")
        local, dask = rows[0]["m"].wall_s, rows[len(budgets)]["m"].wall_s
        print("  LocalCluster vs local run: mosaic "
              + ("identical" if same else f"max |difference| {diff:.3g}")
              + f", time x{dask / local:.2f}")
        m = rows[len(budgets)]["m"]
        print(f"  LocalCluster's processes during the run: system time {m.extra_sys_s:.2f} s, "
              f"{m.extra_faults:,} minor page faults")
    for note in notes:
        print(f"  {note}")


def scaling_run(args, root, data):
    """grid-mode on each size of ``--scaling``, ``--repeat`` rounds (default 1).

    Each round runs every size, in turn, in ascending order on odd rounds and descending on
    even ones, so that the machine's drift (tens of percent within an hour) falls on all
    sizes alike; per size the run of median wall time is kept.  Besides the seconds a frame,
    a line ``wall = fixed + per_frame * frames`` is fitted to those runs: the part of a run
    that does not grow with its frames, and what each frame costs.
    """
    repeats = max(1, args.repeat or 1)
    sizes, prepared = sorted(set(args.scaling)), {}
    mb = args.memory_mb[0] if args.memory_mb else None
    runs = {n: [] for n in sizes}
    for k in range(repeats):
        for n in (sizes if k % 2 == 0 else sizes[::-1]):
            if n not in prepared:  # written at its first run (kept until the last round)
                prepared[n] = session_frames(data, n, args.frame_shape, bayer=args.bayer,
                                             seed=args.seed)
            session, frames = prepared[n]
            print(f"session of {n} frames" + (f", round {k + 1}/{repeats}" if repeats > 1
                                              else ""), flush=True)
            warm_page_cache(frames)
            out = root / f"grid_{n}_{k}"
            r = run("grid-mode run", grid_mode_cmd(frames, out, args, mb), n,
                    timeout=args.timeout)
            if r["m"].ok:  # the quality too: what goes wrong at scale shows there (~9 s a size)
                r["stages"] = grid_stages(out, session)
                r["q"] = session_quality(session, out / "mosaic_grid.fits")
            runs[n].append(r)
            if args.keep is None:  # a session's outputs take GBs (binned frames kept to resume)
                shutil.rmtree(out, ignore_errors=True)
    if not args.data:
        for _, frames in prepared.values():
            shutil.rmtree(frames, ignore_errors=True)
    rows = []
    for n in sizes:  # the median run (of an even number, the slower of the middle two)
        ok = [r for r in runs[n] if r["m"].ok] or runs[n]
        rows.append(sorted(ok, key=lambda r: r["m"].wall_s)[len(ok) // 2])
    rounds = f", the median of {repeats} interleaved runs a size" if repeats > 1 else ""
    print(f"\nscaling, {'Bayer' if args.bayer else 'mono'} frames of {args.frame_shape[0]}x"
          f"{args.frame_shape[1]}{rounds}; {load_note()} at the end")
    print(table(rows))
    for r in rows:
        walls = ", ".join(f"{x['m'].wall_s:.1f}" for x in runs[r["n"]] if x["m"].ok)
        print(f"  {r['n']} frames: {r.get('stages')}" + (f"; walls {walls} s" if repeats > 1
                                                          else ""))
    good = [r for r in rows if r["m"].ok]
    if good:
        print(scaling_summary([r["n"] for r in good], [r["m"].wall_s for r in good],
                              [r["m"].peak_pss_mb for r in good]))


def scaling_summary(frames, walls, pss):
    """The scaling's last lines: the spread of the seconds a frame around their median, the
    fixed and per-frame parts of a run (a least-squares line through ``(frames, walls)``,
    with two sizes or more) and the full session extrapolated from the largest run's
    seconds a frame and from that line.  ``frames`` ascending (the runs that succeeded).

    Examples
    --------
    >>> print(scaling_summary([60, 480], [12.0, 54.0], [700, 840]))
      s/frame 0.113-0.200 (within 28 % of the median); peak PSS 700-840 MB
      wall = 6.0 s + 0.100 s a frame: the fixed part is 50 % of 60 frames', 11 % of 480's
      4993 frames extrapolated from the largest run (480 frames): 9.4 min, from the line: 8.4 min
    """
    n, w = np.asarray(frames, float), np.asarray(walls, float)
    per = w / n
    mid = np.median(per)
    lines = [f"  s/frame {per.min():.3f}-{per.max():.3f} (within "
             f"{100 * np.abs(per / mid - 1).max():.0f} % of the median); peak PSS "
             f"{min(pss):.0f}-{max(pss):.0f} MB"]
    full = f"  {FULL_SESSION} frames extrapolated from the largest run ({n[-1]:.0f} frames): " \
        f"{per[-1] * FULL_SESSION / 60:.1f} min"
    if np.unique(n).size >= 2:
        slope, fixed = np.polyfit(n, w, 1)
        lines.append(f"  wall = {fixed:.1f} s + {slope:.3f} s a frame: the fixed part is "
                     f"{100 * fixed / w[0]:.0f} % of {n[0]:.0f} frames', "
                     f"{100 * fixed / w[-1]:.0f} % of {n[-1]:.0f}'s")
        # the line does not spread the fixed part over the frames
        full += f", from the line: {(fixed + slope * FULL_SESSION) / 60:.1f} min"
    lines.append(full)
    return "\n".join(lines)


def median_runs(contenders, repeats):
    """Run each contender ``repeats`` times, interleaved (each round runs them all, so that
    they share the machine's load alike); per contender the run of median wall time (of
    those that succeeded).

    ``contenders``: ``{key: (label, make_cmd, n, cwd)}``, ``make_cmd(k)`` the ``k``-th
    command and its output folder.
    """
    runs = {key: [] for key in contenders}
    for k in range(repeats):
        for key, (label, make_cmd, n, cwd) in contenders.items():
            cmd, out = make_cmd(k)
            runs[key].append(dict(run(label, cmd, n, cwd=cwd), out=out))
    best = {}
    for key, rs in runs.items():
        ok = [r for r in rs if r["m"].ok] or rs
        best[key] = sorted(ok, key=lambda r: r["m"].wall_s)[len(ok) // 2]
    return best


def small_run(args, root, data):
    rows, splits = [], []
    for n, shape, pointings in ((9, (410, 410), (3, 3)), (4, (160, 512), (2, 2))):
        session, frames = session_frames(data, n, shape, bayer=False, seed=args.seed,
                                         pointings=pointings)
        label = f"{n} x {shape[0]}x{shape[1]}"
        sw = root / f"swarp_{n}"
        contenders = dict(
            grid=(f"grid-mode run, {label}", lambda k: (
                grid_mode_cmd(frames, root / f"grid_{n}_{k}", args), root / f"grid_{n}_{k}"),
                n, None),
            bare=(f"grid-mode, no page, {label}", lambda k: (
                grid_mode_cmd(frames, root / f"bare_{n}_{k}", args) + ["--no-html-report"],
                root / f"bare_{n}_{k}"), n, None),
            # the imports alone, their objects frozen as the command freezes them: unfrozen,
            # the interpreter's last collections at exit walk them (~0.18 s more)
            imp=("python -c 'import grid_mode'", lambda k: (
                [sys.executable, "-c", "import gc, grid_mode; gc.freeze()"], None), 1, None))
        if swarp_binary() and not args.skip_swarp:
            sw.mkdir(parents=True, exist_ok=True)
            contenders["swarp"] = (f"SWarp, {label}", lambda k: (swarp_cmd(frames, sw), sw),
                                   n, sw)
        best = median_runs(contenders, args.repeat or 3)
        r = best["grid"]
        if r["m"].ok:
            r["q"] = session_quality(session, r["out"] / "mosaic_grid.fits")
        for g in (r, best["bare"]):
            if g["m"].ok:
                g["timings"] = json.loads((g["out"] / "grid_report.json").read_text())["timings"]
        p = best.get("swarp")
        if p is not None and p["m"].ok:
            p["q"] = session_quality(session, sw / "coadd.fits", sw / "coadd.weight.fits")
        rows += [best[k] for k in ("grid", "bare", "swarp") if k in best]
        splits.append(small_split(r, best["bare"], p, best["imp"]["m"].wall_s))
    print(f"\nsmall runs (each the median of {args.repeat or 3} interleaved runs); "
          f"{load_note()} at the end")
    print(table(rows))
    for text in splits:
        print(text)


def small_split(run_, bare, peer, import_s):
    """Where the wall time of a small grid-mode run goes, against SWarp's whole run.

    The stages are the run's own timings (``grid_report.json``); the report page is the
    difference to the same run with ``--no-html-report``; the rest (the interpreter and the
    imports, the other outputs, the exit) is that run's wall time less its stages.  The
    fixed overhead is the wall time beyond the stages.
    """
    m, t = run_["m"], run_.get("timings")
    if not m.ok or t is None or not bare["m"].ok:
        return f"  {run_['label']}: failed"
    stages = float(t.get("total", float("nan")))
    page = m.wall_s - bare["m"].wall_s
    rest = bare["m"].wall_s - float(bare["timings"].get("total", float("nan")))
    text = ", ".join(f"{k} {v:.2f}" for k, v in t.items() if k != "total")
    lines = [f"  {run_['label']}: wall {m.wall_s:.2f} s = stages {stages:.2f} ({text}) + "
             f"report page {page:.2f} + interpreter, imports, other outputs and exit "
             f"{rest:.2f} (python -c 'import grid_mode' alone {import_s:.2f})",
             f"    fixed overhead (wall - stages) {m.wall_s - stages:.2f} s, "
             f"{rest:.2f} s without the page"]
    if peer is not None and peer["m"].ok:
        lines[-1] += (f"; SWarp {peer['m'].wall_s:.2f} s: {m.wall_s - peer['m'].wall_s:+.2f} s "
                      f"(x{m.wall_s / peer['m'].wall_s:.2f}), without the page "
                      f"{bare['m'].wall_s - peer['m'].wall_s:+.2f} s "
                      f"(x{bare['m'].wall_s / peer['m'].wall_s:.2f})")
    return "\n".join(lines)


def parse_list(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--frame-shape", type=int, nargs=2, default=(1080, 1920), metavar=("H", "W"))
    p.add_argument("--bayer", action="store_true", help="RGGB raws instead of mono frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-mb", type=parse_list, default=None, metavar="MB[,MB...]",
                   help="grid-mode budgets to run (mosaics compared); default: its default")
    p.add_argument("--workers", type=int, default=None, help="grid-mode --workers")
    p.add_argument("--grid-args", default="", help="further grid-mode flags, one string")
    p.add_argument("--scaling", type=parse_list, default=None, metavar="N[,N...]",
                   help="grid-mode on sessions of these sizes: s/frame and memory")
    p.add_argument("--small", action="store_true",
                   help="9 frames of 410x410 and 4 of 160x512: fixed overhead vs SWarp")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="runs of each contender (--small, default 3) or of each size "
                   "(--scaling, default 1), interleaved, the median kept")
    p.add_argument("--scheduler", choices=["local-dask"], default=None,
                   help="also run grid-mode on a 2-worker dask LocalCluster")
    p.add_argument("--skip-swarp", action="store_true")
    p.add_argument("--skip-reproject", action="store_true")
    p.add_argument("--data", type=Path, default=None,
                   help="keep and reuse the generated frames in this folder")
    p.add_argument("--keep", type=Path, default=None, help="keep the outputs in this folder")
    p.add_argument("--timeout", type=float, default=None, help="seconds per contender")
    args = p.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_session_"))
    root.mkdir(parents=True, exist_ok=True)
    data = args.data or root / "frames"
    print(load_note() + " at the start", flush=True)
    try:
        if args.small:
            small_run(args, root, data)
        elif args.scaling:
            scaling_run(args, root, data)
        else:
            session_run(args, root, data)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
