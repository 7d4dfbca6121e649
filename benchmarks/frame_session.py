"""Frame photometry of a dense session: overlaps fitted per frame and time, two checkouts.

A session of many frames of one field (default 120 mono frames of 1080 x 1920 on a 10 x 12
pattern with 90 % overlap: every frame overlaps dozens of others; the faint field's sky,
:data:`photometry_graph.datasets.FAINT_FIELD`, with seeing that changes from frame to frame,
``SEEING_RANGE``) is generated once with
:func:`photometry_graph.datasets.make_frame_survey` and written as FITS frames (cached in
``--cache``).  Then, for this checkout and for every ``--compare`` checkout (e.g. a
worktree of the main branch before a change), a subprocess runs grid mode's frame
photometry on it as ``grid-mode run`` does (``grid_mode._frames_stage`` and
``pipeline.framestage.solve_frames``, with ``--workers``; the time then includes the one
read of each frame; a checkout without them: ``grid_mode._read_frames`` and
``grid_mode._frame_photometry``, the time without the scan), and prints its time, the
overlaps it fitted, the fits per frame and the worst frame gain against the injected truth
(``|g_k G_k / mean - 1|``); the last line gives the time ratio of the first checkout to
each other one.  Both run in the same invocation, on the same frames.

Run::

    python benchmarks/frame_session.py --compare /path/to/main/checkout
    python benchmarks/frame_session.py --frames-grid 4 5 --frame-shape 540 960   # ~1 min
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time
import numpy as np
import grid_mode
from photometry_graph.core.wcsgrid import build_global_grid
from photometry_graph.pipeline.options import resolve_options
from photometry_graph.pipeline.plan import plan_entries

folder, workers = sys.argv[1], int(sys.argv[2])
opts = resolve_options(dict(workers=workers, tile_size=2048, overlap=0.1))
progress = grid_mode._Progress()
if hasattr(grid_mode, "_frames_stage"):  # each frame read once: scan, binning, then the solve
    from photometry_graph.pipeline.framestage import solve_frames
    t0 = time.perf_counter()
    import inspect
    frames, grid, plan, binned, *_ = grid_mode._frames_stage(plan_entries(folder), opts,
                                                             progress)
    kw = dict(workers=plan.solve_workers) if "workers" in inspect.signature(
        solve_frames).parameters else {}  # the fits in the workers, as grid mode runs them
    corrections, report = solve_frames(frames, binned, grid, opts, progress, None, None, **kw)
else:  # a checkout that scans the frames first, then bins them in the frame photometry
    frames = grid_mode._read_frames(plan_entries(folder), opts, progress)
    grid = build_global_grid([f.wcs for f in frames], [f.shape for f in frames],
                             tile_size=opts.tile_size, overlap=opts.overlap)
    t0 = time.perf_counter()
    corrections, report = grid_mode._frame_photometry(frames, grid, opts, progress)
seconds = time.perf_counter() - t0
gains = [None if c is None else c.gain.tolist() for c in corrections]
harm = report.get("harmonize", {})
print(json.dumps(dict(seconds=seconds, edges=harm.get("edges"),
                      edges_not_fitted=harm.get("edges_not_fitted", 0), gains=gains,
                      paths=[f.path for f in frames])))
"""


def make_session(folder, grid, shape, overlap, seed, faint):
    """Write the session once (frames + stack_plan.csv + truth.json); return the folder."""
    from photometry_graph.datasets import FAINT_FIELD, SEEING_RANGE, make_frame_survey
    from photometry_graph.pipeline.demo import write_frame_survey
    folder = Path(folder)
    if (folder / "truth.json").exists():
        return folder
    survey = make_frame_survey(grid[0], grid[1], frame_shape=shape, overlap=overlap,
                               channels=1, rng=seed,
                               **(dict(FAINT_FIELD, fwhm_range=SEEING_RANGE) if faint else {}))
    write_frame_survey(survey, folder)
    truth = {f"frame_{f.index:03d}.fits": f.gain.tolist() for f in survey.frames}
    (folder / "truth.json").write_text(json.dumps(truth))
    return folder


def run_checkout(checkout, folder, workers):
    """Grid mode's frame photometry of ``checkout`` in a subprocess: its printed summary."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder), str(workers)], env=env,
                         capture_output=True, text=True, check=True, cwd=str(checkout))
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["wall"] = time.perf_counter() - t0
    truth = json.loads((Path(folder) / "truth.json").read_text())
    eff = np.array([np.multiply(g, truth[Path(p).name]) for g, p in
                    zip(res["gains"], res["paths"]) if g is not None])
    res["worst_gain"] = float(np.abs(eff / np.exp(np.mean(np.log(eff), axis=0)) - 1).max())
    res["frames"] = len(res["paths"])
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-grid", type=int, nargs=2, default=(10, 12), metavar=("R", "C"))
    parser.add_argument("--frame-shape", type=int, nargs=2, default=(1080, 1920),
                        metavar=("H", "W"))
    parser.add_argument("--frame-overlap", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sky", choices=["faint", "bright"], default="faint",
                        help="the faint field's sky (datasets.FAINT_FIELD: emission of 1-3 "
                             "sigma, sparse stars; seeing that changes, SEEING_RANGE) or "
                             "make_frame_survey's default (bright emission and stars)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default=None,
                        help="folder of the generated session (default: a folder in /tmp)")
    parser.add_argument("--compare", action="append", default=[],
                        help="another checkout to run on the same frames (repeatable)")
    args = parser.parse_args(argv)
    r, c = args.frames_grid
    h, w = args.frame_shape
    cache = args.cache or (f"/tmp/frame_session_{args.sky}_{r}x{c}_{h}x{w}_{args.frame_overlap}"
                           f"_{args.seed}")
    t0 = time.perf_counter()
    folder = make_session(cache, (r, c), (h, w), args.frame_overlap, args.seed,
                          args.sky == "faint")
    print(f"session: {r * c} frames of {h}x{w}, overlap {args.frame_overlap}, {args.sky} sky, "
          f"in {folder} "
          f"({time.perf_counter() - t0:.0f} s to prepare)")
    results = []
    for checkout in [ROOT] + [Path(p).resolve() for p in args.compare]:
        res = run_checkout(checkout, folder, args.workers)
        results.append(res)
        edges = res["edges"]
        print(f"{checkout}: frame photometry {res['seconds']:.1f} s (subprocess "
              f"{res['wall']:.1f} s), {edges} overlaps fitted of "
              f"{edges + res['edges_not_fitted']}, {edges / res['frames']:.2f} fits per "
              f"frame, worst frame gain {100 * res['worst_gain']:.2f} %")
    load = os.getloadavg()[0]
    for checkout, res in zip(args.compare, results[1:]):
        print(f"time ratio this checkout / {checkout}: "
              f"{results[0]['seconds'] / res['seconds']:.2f} (load {load:.2f} on "
              f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
