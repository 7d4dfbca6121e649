"""Faults of a whole ``grid-mode run`` on synthetic frames: interrupts, resume, big plans.

Three measurements, each against a peer measured in the same run:

1. **Interrupt.**  The command runs in a subprocess (``--workers 2``); a SIGINT is sent when
   the tiles start.  Printed: seconds from the signal to the exit, the exit code, tracebacks
   on stderr, processes of the run and temporary files left.  Peer: the tile stage of the
   uninterrupted run (what waiting for the queued tasks would cost).
2. **Resume.**  A fresh run; a run killed with ``kill -9`` of its process group when half of
   the tiles are done, then rerun; a rerun of a complete run.  Printed: wall times against
   the fresh run, what was reused, and whether the mosaics are identical bit for bit.
3. **Plan.**  A ``stack_plan.csv`` listing one frame 10^6 times: ``read_stack_plan`` against
   a bare ``csv.reader`` pass over the same file, each in its own subprocess (time and peak
   RSS growth).

Usage: ``python benchmarks/bench_faults.py [--frames-grid R C] [--frame-shape H W]``
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH",
                                                                             "")]))


def start(frames, out, opts):
    """The command in its own process group, its stderr collected live."""
    proc = subprocess.Popen([sys.executable, "-m", "photometry_graph.pipeline", "run",
                             str(frames), str(out), *opts], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    lines = []
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    return proc, lines


def wait_for(proc, lines, text):
    while not any(text in ln for ln in lines):
        if proc.poll() is not None:
            raise RuntimeError("the run ended before " + repr(text) + ":\n" + "".join(lines))
        time.sleep(0.01)


def run(frames, out, opts):
    t0 = time.perf_counter()
    proc, lines = start(frames, out, opts)
    proc.wait()
    if proc.returncode:
        raise RuntimeError("".join(lines))
    return time.perf_counter() - t0, json.loads((out / "grid_report.json").read_text())


def leftovers(out, session):
    import psutil
    procs = [p for p in psutil.process_iter(["cmdline", "status"])
             if (str(out) in " ".join(p.info["cmdline"] or []) or p.pid in session)
             and p.info["status"] != psutil.STATUS_ZOMBIE]  # zombies: dead, not reaped
    files = [p for p in out.rglob("*") if ".tmp" in p.name or p.name == ".grid_mode.lock"]
    return len(procs), len(files)


def interrupt(frames, root, opts, tile_seconds):
    import psutil
    out = root / "interrupted"
    proc, lines = start(frames, out, opts)
    wait_for(proc, lines, "done, 1/")
    session = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait()
    seconds = time.perf_counter() - t0
    time.sleep(0.5)
    n_procs, n_files = leftovers(out, session)
    err = "".join(lines)
    print(f"interrupt: SIGINT -> exit {proc.returncode} in {seconds:.2f} s "
          f"({seconds / tile_seconds:.3f}x the {tile_seconds:.1f} s tile stage); traceback "
          f"on stderr: {'Traceback' in err}; processes left: {n_procs}; temporary files "
          f"left: {n_files}; last line: {err.strip().splitlines()[-1]!r}")


def resume(frames, root, opts, fresh_seconds, mosaic):
    out = root / "killed"
    proc, lines = start(frames, out, opts)
    n_tiles = None
    while n_tiles is None:
        wait_for(proc, lines, "stacking ")
        n_tiles = int(next(ln for ln in lines if "stacking " in ln).split("stacking ")[1]
                      .split()[0])
    wait_for(proc, lines, f"done, {n_tiles // 2}/")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    seconds, report = run(frames, out, opts)
    same = (out / "mosaic_grid.fits").read_bytes() == mosaic
    reused = report["resume"]["reused"]
    print(f"resume after kill -9 at {n_tiles // 2}/{n_tiles} tiles: rerun {seconds:.1f} s = "
          f"{seconds / fresh_seconds:.2f}x the fresh run; reused {len(reused['tiles'])} "
          f"tiles, frame solve {reused['frame_solve']}; mosaic identical: {same}")
    seconds, report = run(frames, out, opts)
    same = (out / "mosaic_grid.fits").read_bytes() == mosaic
    print(f"rerun of a complete run: {seconds:.1f} s = {seconds / fresh_seconds:.2f}x the "
          f"fresh run; reused {len(report['resume']['reused']['tiles'])} tiles; mosaic "
          f"identical: {same}")


_PLAN = """
import csv, resource, sys, time
path = sys.argv[2]
before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
if sys.argv[1] == "plan":
    from photometry_graph.pipeline.plan import read_stack_plan
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    n = len(read_stack_plan(path))
else:
    with open(path, newline="") as fh:
        n = sum(1 for _ in csv.reader(fh))
print(n, time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                    - before) / 1024)
"""


def plan(root, rows=1_000_000):
    folder = root / "plan"
    folder.mkdir()
    (folder / "frame_0001.fits").write_bytes(b"")
    row = "1,1,mount,4,scope,2024-01-01,L,10,frame_0001.fits,150.0,20.0\n"
    with open(folder / "stack_plan.csv", "w") as fh:
        fh.write("order,batch_id,mount,bortle,telescope,session_date,filter,exposure,"
                 "file_path,ra,dec\n")
        for _ in range(rows // 10_000):
            fh.write(row * 10_000)
    res = {}
    for what in ("csv", "plan"):
        out = subprocess.run([sys.executable, "-c", _PLAN, what, str(folder / "stack_plan.csv")],
                             capture_output=True, text=True, env=ENV, check=True).stdout
        n, seconds, mb = out.split()
        res[what] = (int(n), float(seconds), float(mb))
    size = (folder / "stack_plan.csv").stat().st_size / 1e6
    print(f"plan of one frame x {rows:,} rows ({size:.0f} MB): read_stack_plan "
          f"{res['plan'][1]:.2f} s, +{res['plan'][2]:.1f} MB peak RSS, {res['plan'][0]} "
          f"frame; bare csv.reader pass {res['csv'][1]:.2f} s, +{res['csv'][2]:.1f} MB "
          f"({res['plan'][1] / res['csv'][1]:.2f}x its time)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames-grid", type=int, nargs=2, default=(3, 4))
    parser.add_argument("--frame-shape", type=int, nargs=2, default=(400, 600))
    parser.add_argument("--tile-size", type=int, default=256)
    args = parser.parse_args()
    from photometry_graph.datasets import make_frame_survey
    from photometry_graph.pipeline.demo import write_frame_survey
    print("load:", os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        survey = make_frame_survey(*args.frames_grid, frame_shape=tuple(args.frame_shape),
                                   channels=1, rng=1)
        frames = write_frame_survey(survey, root / "frames")
        opts = ["--tile-size", str(args.tile_size), "--workers", "2", "-q"]
        fresh_seconds, report = run(frames, root / "fresh", opts)
        print(f"fresh run: {len(survey.frames)} frames of {args.frame_shape[0]}x"
              f"{args.frame_shape[1]}, {len(report['tiles'])} tiles: {fresh_seconds:.1f} s "
              f"(tiles {report['timings']['tiles']:.1f} s)")
        mosaic = (root / "fresh" / "mosaic_grid.fits").read_bytes()
        interrupt(frames, root, opts[:-1], report["timings"]["tiles"])
        resume(frames, root, opts[:-1], fresh_seconds, mosaic)
        plan(root)
    print("load:", os.getloadavg())


if __name__ == "__main__":
    main()
