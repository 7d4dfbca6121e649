"""CPU of the work done per frame and per overlap fit, for several checkouts, alternated.

Two costs of a session that grow with its frames, measured on one core with nothing else
of the run around them:

* the frame pass (:func:`photometry_graph.pipeline.pieces.frame_pass`: read, scan, bin on
  the global grid) of the first ``--frames`` frames of a session folder, each task pickled
  and unpickled as a worker gets it, OpenCV on one thread;
* the overlap fits (``photometry.overlap._fit_edge``): the fit tasks of an in-process run of
  this checkout on the session, recorded once and replayed by every checkout.

Each checkout runs in its own subprocess, and the checkouts take turns for ``--rounds``
rounds: the machine's speed drifts by tens of percent within the hour, so only runs side by
side compare.  The last lines give each checkout's median ms per frame and per fit, and
whether its fits give the same numbers as this checkout's.

Run (the session written by ``bench_session.py --data``)::

    python benchmarks/frame_costs.py --session /tmp/speed_data/session_mono_60_1080x1920_2x3_s0 \\
        --compare /path/to/another/checkout
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_RECORD = r"""
import pickle, sys
import grid_mode
import photometry_graph.photometry.overlap as ov
folder, out, dest = sys.argv[1:4]
tasks, fit = [], ov._fit_edge
def recorded(task):
    tasks.append(task)
    return fit(task)
ov._fit_edge = recorded
grid_mode.run_grid_mode(folder, out, workers=1)
with open(dest, "wb") as fh:
    pickle.dump(tasks, fh)
"""

_MEASURE = r"""
import hashlib, json, pickle, sys, tempfile, time
from pathlib import Path
import cv2
cv2.setNumThreads(1)
import grid_mode
import photometry_graph.photometry.overlap as ov
from photometry_graph.core.wcsgrid import build_global_grid
from photometry_graph.pipeline.framestage import frame_tasks
from photometry_graph.pipeline.options import resolve_options
from photometry_graph.pipeline.pieces import frame_pass
from photometry_graph.pipeline.plan import plan_entries
from photometry_graph.pipeline.resume import RunPieces
folder, n, fits_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
opts = resolve_options({})
frames = grid_mode._read_frames(plan_entries(folder), opts, grid_mode._Progress())[:n]
grid = build_global_grid([f.wcs for f in frames], [f.shape for f in frames],
                         tile_size=opts.tile_size, overlap=opts.overlap)
with tempfile.TemporaryDirectory() as tmp:
    tasks, _ = frame_tasks(frames, grid, opts, RunPieces(Path(tmp), opts), bin_factor=4)
    t0 = time.process_time()
    for task in tasks:
        frame_pass(pickle.loads(pickle.dumps(task)))
    frame_s = time.process_time() - t0
with open(fits_path, "rb") as fh:
    fit_tasks = pickle.load(fh)
t0 = time.process_time()
results = [ov._fit_edge(task) for task in fit_tasks]
fit_s = time.process_time() - t0
numbers = [(f.a, f.sigma_a, f.b, f.n_used, f.a_pixels, f.a_stars) for fits in results
           for f in fits]
print(json.dumps(dict(frame_ms=1e3 * frame_s / max(len(tasks), 1),
                      fit_ms=1e3 * fit_s / max(len(fit_tasks), 1),
                      fits=len(fit_tasks),
                      digest=hashlib.sha256(repr(numbers).encode()).hexdigest()[:16])))
"""


def _run(checkout, code, *args):
    """``code`` in a subprocess of ``checkout``: its last line of output."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                         capture_output=True, text=True, check=True, cwd=str(checkout))
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def main(argv=None):
    """Record the fits once, then measure every checkout in turn for ``--rounds`` rounds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", required=True,
                        help="a folder of frames (e.g. one written by bench_session.py --data)")
    parser.add_argument("--frames", type=int, default=40, help="frames of the frame pass")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", action="append", default=[],
                        help="another checkout (repeatable)")
    args = parser.parse_args(argv)
    folder = Path(args.session).resolve()
    if not folder.is_dir():
        parser.error(f"{folder} is not a folder of frames; write one with "
                     "`python benchmarks/bench_session.py --data DIR --frames 60`")
    checkouts = [ROOT] + [Path(p).resolve() for p in args.compare]
    times = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        fits_path = Path(tmp) / "fits.pkl"
        _run(ROOT, _RECORD, folder, Path(tmp) / "out", fits_path)
        for k in range(args.rounds):
            for c in checkouts:
                res = json.loads(_run(c, _MEASURE, folder, args.frames, fits_path))
                times[c].append(res)
                print(f"round {k + 1} {c}: frame pass {res['frame_ms']:.1f} ms a frame, "
                      f"fits {res['fit_ms']:.2f} ms a fit ({res['fits']} fits, numbers "
                      f"{res['digest']})", flush=True)
    ref = times[ROOT][0]["digest"]
    for c in checkouts:
        frame = statistics.median(r["frame_ms"] for r in times[c])
        fit = statistics.median(r["fit_ms"] for r in times[c])
        same = all(r["digest"] == ref for r in times[c])
        print(f"{c}: median {frame:.1f} ms a frame, {fit:.2f} ms a fit; fits "
              f"{'the same numbers as' if same else 'DIFFERENT from'} {ROOT.name}")


if __name__ == "__main__":
    main()
