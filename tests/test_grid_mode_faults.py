"""Faults injected on purpose: nothing is lost silently, one run per folder, interrupts, resume.

Small synthetic surveys (2 x 2 frames of 160 x 240 px, tiles of 192 px).  The tests that run
the command line in subprocesses, and send it signals, are marked slow.
"""

import json
import logging
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import grid_mode
from photometry_graph.datasets import make_frame_survey
from photometry_graph.pipeline.demo import write_frame_survey
from photometry_graph.pipeline import tilestage
from photometry_graph.pipeline.fileio import LOCK_NAME, output_lock

SMALL = dict(tile_size=192, overlap=0.25, workers=1)


@pytest.fixture(scope="module")
def survey_frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    survey = make_frame_survey(2, 2, frame_shape=(160, 240), channels=1, rng=7)
    return survey, write_frame_survey(survey, root / "frames")


@pytest.fixture(scope="module")
def frames(survey_frames):
    return survey_frames[1]


@pytest.fixture(scope="module")
def clean(frames, tmp_path_factory):
    """The uninterrupted, fault-free run of the survey."""
    return grid_mode.run_grid_mode(frames, tmp_path_factory.mktemp("clean") / "out", **SMALL)


def _mosaic(path):
    with fits.open(path) as hdul:
        return hdul[0].data.copy(), hdul[0].header.copy()


def test_a_second_run_into_a_locked_folder_is_refused(frames, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        with pytest.raises(grid_mode.GridModeError, match="another grid-mode run is writing"):
            grid_mode.run_grid_mode(frames, out, **SMALL)
        assert grid_mode.main(["run", str(frames), str(out), "--workers", "1", "-q"]) == 2
        assert "another grid-mode run is writing into" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was done


def test_a_dead_runs_lock_and_temporaries_are_cleaned_up(frames, tmp_path, caplog):
    out = tmp_path / "out"
    (out / "tiles").mkdir(parents=True)
    (out / LOCK_NAME).write_text(json.dumps(dict(pid=1, host="elsewhere")))
    stale = [out / ".mosaic_grid.99.1.tmp.fits", out / "tiles" / ".tile_0001.99.2.tmp.fits"]
    for p in stale:
        p.write_bytes(b"half")
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = grid_mode.run_grid_mode(frames, out, **SMALL)
    assert res.mosaic.exists() and not any(p.exists() for p in stale)
    assert "taking over the lock of an earlier run that is gone (pid 1 on host elsewhere" \
        in caplog.text
    assert "removed 2 temporary file(s)" in caplog.text
    assert not (out / LOCK_NAME).exists()


def _with_extra_frames(frames, dest, extra):
    """A copy of the survey's folder whose plan also lists ``extra`` {name: (data, header)}."""
    dest.mkdir()
    lines = (frames / "stack_plan.csv").read_text().splitlines()
    for p in sorted(frames.glob("frame_*.fits")):
        (dest / p.name).write_bytes(p.read_bytes())
    for name, (data, header) in extra.items():
        fits.PrimaryHDU(data, header).writeto(dest / name)
        lines.append(f"99,1,demo,4,synthetic,2024-01-01,L,10,{name},,")
    (dest / "stack_plan.csv").write_text("\n".join(lines) + "\n")
    return dest


def test_frames_with_broken_geometry_are_skipped_and_the_canvas_is_right(frames, tmp_path,
                                                                          caplog):
    clean = grid_mode.run_grid_mode(frames, tmp_path / "clean", **SMALL)
    with fits.open(frames / "frame_001.fits") as hdul:
        data, header = hdul[0].data.copy(), hdul[0].header.copy()
    zero_cd = header.copy()
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        zero_cd[key] = 0.0  # astropy alone: 1 degree per pixel, a run that never ends
    far = header.copy()
    far["CRVAL1"] = header["CRVAL1"] + 40.0  # a wrong plate solution
    tiny = header.copy()
    tiny["CRPIX1"], tiny["CRPIX2"] = -2000.0, -2000.0  # 1x1 px, far outside the others
    src = _with_extra_frames(frames, tmp_path / "in", {
        "zero_cd.fits": (data, zero_cd), "nan_crval.fits": (data, header),
        "far.fits": (data, far), "tiny.fits": (data[:1, :1], tiny)})
    raw = bytearray((src / "nan_crval.fits").read_bytes())  # CRVAL1 = NAN: not valid FITS,
    at = bytes(raw).index(b"CRVAL1  = ")                   # astropy alone reads RA = 0
    raw[at + 10:at + 30] = b"%20s" % b"NAN"
    (src / "nan_crval.fits").write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = grid_mode.run_grid_mode(src, tmp_path / "out", **SMALL)
    assert res.report["grid"]["shape"] == clean.report["grid"]["shape"]
    assert len(res.report["frames"]) == 4
    for needle in ("zero_cd.fits: its CD matrix is singular",
                   "nan_crval.fits: its CRVAL1 is not a finite number (NAN)",
                   "tiny.fits: it is 1x1 px: too small to be a frame",
                   "far.fits: it lies 34.4 deg from the centre of the frames"):
        assert needle in caplog.text, needle
    a, b = _mosaic(clean.mosaic)[0], _mosaic(res.mosaic)[0]
    assert np.array_equal(a, b, equal_nan=True)


def test_a_canvas_larger_than_the_limit_is_refused_with_a_clear_message(frames, capsys):
    assert grid_mode.main(["run", str(frames), str(frames.parent / "big"), "--max-canvas",
                           "0.1", "-q", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "the global canvas would be" in err and "more than the limit of 0.1 Mpx" in err
    assert "--max-canvas" in err and "Traceback" not in err


def _valid_on(mosaic_path, survey, indices, erode=3):
    """Mosaic pixels on a valid pixel (``erode`` px inside) of one of the survey's frames."""
    from scipy import ndimage

    from photometry_graph.core.wcsgrid import transform_pixels
    data, header = _mosaic(mosaic_path)
    wcs = WCS(header).celestial
    yy, xx = np.mgrid[:data.shape[0], :data.shape[1]].astype(np.float64)
    union = np.zeros(data.shape, bool)
    for k in indices:
        f = survey.frames[k]
        valid = ndimage.binary_erosion(f.valid, iterations=erode) if erode else f.valid
        fx, fy = transform_pixels(wcs, f.wcs, xx, yy)
        ix, iy = np.rint(np.nan_to_num(fx, nan=-9)), np.rint(np.nan_to_num(fy, nan=-9))
        inside = (ix >= 0) & (ix < f.shape[1]) & (iy >= 0) & (iy < f.shape[0])
        union[inside] |= valid[iy[inside].astype(int), ix[inside].astype(int)]
    return union


def test_a_frame_truncated_after_the_scan_is_left_out_of_its_tiles(survey_frames, clean,
                                                                    tmp_path, caplog):
    survey, frames = survey_frames
    src = _with_extra_frames(frames, tmp_path / "in", {})
    victim = src / "frame_003.fits"

    def truncate_after_the_scan(message, progress, level, **kw):
        if "reading frames 4/4" in message:
            with open(victim, "r+b") as fh:
                fh.truncate(victim.stat().st_size // 2)

    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = grid_mode.run_grid_mode(src, tmp_path / "out", truncate_after_the_scan, **SMALL)
    lost = res.report["losses"]
    assert not lost["partial"] and not lost["tiles"] and lost["frames"]
    assert {f["path"] for f in lost["frames"]} == {str(victim)}
    assert all("it is truncated" in f["reason"] for f in lost["frames"])
    assert caplog.text.count(f"frame {victim} left out (GridModeError: it is truncated") == \
        len(lost["frames"])
    (img, header), full = _mosaic(res.mosaic), _mosaic(clean.mosaic)[0]
    assert img.shape == full.shape and header["PARTIAL"] is False  # the same canvas
    assert header["LOSTFRM"] == len(lost["frames"])
    others = _valid_on(res.mosaic, survey, [0, 1, 2])  # covered as by the fault-free run:
    assert others.mean() > 0.5 and np.isfinite(img[others]).mean() > 0.999
    assert np.array_equal(np.isfinite(img) & others, np.isfinite(full) & others)
    only = _valid_on(res.mosaic, survey, [3]) & ~_valid_on(res.mosaic, survey, [0, 1, 2], 0)
    assert only.sum() > 1000 and np.isfinite(full[only]).all()  # left out: none but edges
    assert np.isfinite(img[only]).mean() < 0.05


def _failing_writes(monkeypatch, names):
    """Tile files in ``names`` cannot be written: the disk is full."""
    import errno
    real, calls = tilestage.write_hdus, []

    def write_hdus(path, hdus):
        calls.append(path.name)
        if path.name in names or "*" in names:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, hdus)

    monkeypatch.setattr(tilestage, "write_hdus", write_hdus)
    return calls


def test_a_tile_that_cannot_be_written_fails_the_run_naming_the_loss(frames, tmp_path,
                                                                     monkeypatch, capsys):
    calls = _failing_writes(monkeypatch, {"tile_0002.fits"})
    out = tmp_path / "out"
    assert grid_mode.main(["run", str(frames), str(out), "--tile-size", "192", "--overlap",
                           "0.25", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert calls.count("tile_0002.fits") == 2  # tried once more
    assert "tile 2 failed (OSError: [Errno 28] No space left on device" in err
    line = [ln for ln in err.splitlines() if ln.startswith("grid-mode: error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "1 of 6 tiles could not be made, so no mosaic was assembled: tile 2 (OSError: " \
           "[Errno 28] No space left on device" in line[0]
    assert "run the same command again to resume" in line[0] and "--allow-partial" in line[0]
    assert not (out / "mosaic_grid.fits").exists()


def test_with_allow_partial_the_loss_is_in_the_report_the_log_and_the_header(
        frames, clean, tmp_path, monkeypatch, caplog):
    _failing_writes(monkeypatch, {"tile_0002.fits"})
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        res = grid_mode.run_grid_mode(frames, tmp_path / "out", allow_partial=True, **SMALL)
    lost = res.report["losses"]
    assert lost["partial"] and [t["tile_id"] for t in lost["tiles"]] == [2]
    assert "No space left on device" in lost["tiles"][0]["reason"]
    assert lost["tiles"][0]["frames"]  # the frames whose pixels the tile would have held
    assert json.loads(res.report_path.read_text())["losses"] == lost
    assert "partial mosaic: tile 2 is left out (OSError: [Errno 28]" in caplog.text
    img, header = _mosaic(res.mosaic)
    assert header["PARTIAL"] is True and header["LOSTTILE"] == 1
    assert "lost tile 2: OSError" in str(header["HISTORY"])
    assert [t["tile_id"] for t in res.report["tiles"]] == [1, 3, 4, 5, 6]
    assert np.isfinite(img).mean() < np.isfinite(_mosaic(clean.mosaic)[0]).mean()


@pytest.mark.parametrize("allow_partial", [False, True])
def test_a_full_disk_fails_the_run_even_when_partial_is_allowed(frames, tmp_path, monkeypatch,
                                                                 allow_partial):
    _failing_writes(monkeypatch, {"*"})
    with pytest.raises(grid_mode.GridModeError, match="6 of 6 tiles could not be made") as exc:
        grid_mode.run_grid_mode(frames, tmp_path / "out", allow_partial=allow_partial, **SMALL)
    assert exc.value.exit_code == 1


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="a read-only folder is writable for root")
def test_a_read_only_tiles_folder_fails_the_run_naming_the_tiles(frames, tmp_path, capsys):
    (tmp_path / "out" / "tiles").mkdir(parents=True)
    (tmp_path / "out" / "tiles").chmod(0o555)
    try:
        assert grid_mode.main(["run", str(frames), str(tmp_path / "out"), "--workers", "1",
                               "--tile-size", "192", "--overlap", "0.25", "-q"]) == 1
    finally:
        (tmp_path / "out" / "tiles").chmod(0o755)
    assert "6 of 6 tiles could not be made" in capsys.readouterr().err


# ------------------------------------------------------------------------------ resume
def _tile_frames(out):
    """Tile id -> the frame files its record says it was made from."""
    return {int(p.stem[5:]): {os.path.basename(f["file"]["path"])
                              for f in json.loads(p.read_text())["made_from"]["frames"]}
            for p in (out / "resume").glob("tile_*.json")}


def test_a_rerun_reuses_what_is_unchanged_and_redoes_what_depends_on_a_touched_frame(
        frames, tmp_path, caplog):
    src = _with_extra_frames(frames, tmp_path / "in", {})
    out, opts = tmp_path / "out", dict(SMALL, tile_size=128)  # more tiles than frames
    first = grid_mode.run_grid_mode(src, out, **opts)
    assert first.report["resume"]["reused"] == dict(binned_frames=0, frame_solve=False,
                                                    tiles=[])
    reference = _mosaic(first.mosaic)[0]  # a fresh, uninterrupted run
    ids = [t["tile_id"] for t in first.report["tiles"]]
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        again = grid_mode.run_grid_mode(src, out, **opts)
    assert again.report["resume"]["reused"] == dict(binned_frames=0, frame_solve=True,
                                                    tiles=ids)
    assert f"resume: reusing {len(ids)} of {len(ids)} tiles" in caplog.text
    assert all(s["reused"] for s in again.report["tile_stacking"])
    assert np.array_equal(_mosaic(again.mosaic)[0], reference, equal_nan=True)

    st = (src / "frame_001.fits").stat()  # touched: its pieces are made again, only they
    os.utime(src / "frame_001.fits", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    touched = grid_mode.run_grid_mode(src, out, **opts)
    with_it = {t for t, names in _tile_frames(out).items() if "frame_001.fits" in names}
    assert with_it and set(ids) - with_it
    assert touched.report["resume"]["reused"] == dict(
        binned_frames=3, frame_solve=False, tiles=sorted(set(ids) - with_it))
    assert np.array_equal(_mosaic(touched.mosaic)[0], reference, equal_nan=True)


def test_a_tile_option_redoes_the_tiles_and_no_resume_redoes_everything(frames, tmp_path):
    out = tmp_path / "out"
    grid_mode.run_grid_mode(frames, out, **SMALL)
    kappa = grid_mode.run_grid_mode(frames, out, kappa_low=2.0, **SMALL)
    assert kappa.report["resume"]["reused"] == dict(binned_frames=0, frame_solve=True,
                                                    tiles=[])
    blend = grid_mode.run_grid_mode(frames, out, kappa_low=2.0, blend="feather", **SMALL)
    assert len(blend.report["resume"]["reused"]["tiles"]) == len(blend.report["tiles"])
    fresh = grid_mode.run_grid_mode(frames, out, kappa_low=2.0, resume=False, **SMALL)
    assert fresh.report["resume"] == dict(folder=str(out / "resume"), enabled=False, reused=dict(
        binned_frames=0, frame_solve=False, tiles=[]))
    assert not any(s.get("reused") for s in fresh.report["tile_stacking"])
    assert sorted(p.name for p in (out / "resume").glob("tile_*.json")) == [
        f"tile_{t['tile_id']:04d}.json" for t in fresh.report["tiles"]]  # recorded anew


# --------------------------------------------- the command line in subprocesses (slow)
BIG = ["--tile-size", "160", "--overlap", "0.25"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A larger survey (3 x 3 frames of 240 x 360, 20-odd tiles) and its fault-free run."""
    root = tmp_path_factory.mktemp("big")
    survey = make_frame_survey(3, 3, frame_shape=(240, 360), channels=1, rng=2)
    frames = write_frame_survey(survey, root / "frames")
    ref = grid_mode.run_grid_mode(frames, root / "ref", tile_size=160, overlap=0.25, workers=1)
    return frames, _mosaic(ref.mosaic)[0]


class _Cli:
    """``python -m photometry_graph.pipeline run`` in its own process group; stderr read live."""

    def __init__(self, frames, out, *extra):
        import subprocess
        import sys
        import threading
        root = os.path.dirname(os.path.abspath(grid_mode.__file__))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get(
            "PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "photometry_graph.pipeline", "run", str(frames), str(out),
             *BIG, "--workers", "2", *extra], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr),
                                       daemon=True)
        self.reader.start()

    def wait_for(self, text, timeout=120):
        import time
        deadline = time.monotonic() + timeout
        while not any(text in ln for ln in self.lines):
            assert self.proc.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in: {''.join(self.lines)}"
            time.sleep(0.02)

    def finish(self, timeout=300):
        self.proc.wait(timeout)
        self.reader.join(10)
        return self.proc.returncode, "".join(self.lines)

    def kill(self):
        """kill -9 of the process group (nothing when it is over); the pipe closed."""
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.reader.join(10)
        self.proc.stderr.close()


def _leftovers(out):
    return [p for p in out.rglob("*") if ".tmp" in p.name or p.name == LOCK_NAME]


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder(big, tmp_path):
    frames, reference = big
    runs = [_Cli(frames, tmp_path / "out") for _ in range(2)]
    try:
        results = [r.finish() for r in runs]
    finally:
        for r in runs:
            r.kill()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "grid-mode: error: another grid-mode run is writing into" in refused
    assert "Traceback" not in refused
    assert np.array_equal(_mosaic(tmp_path / "out" / "mosaic_grid.fits")[0], reference,
                          equal_nan=True)
    assert not _leftovers(tmp_path / "out")


@pytest.mark.slow
def test_kill_9_during_stacking_then_a_rerun_reuses_the_finished_tiles(big, tmp_path):
    frames, reference = big
    src, out = _with_extra_frames(frames, tmp_path / "in", {}), tmp_path / "out"
    cli = _Cli(src, out)
    try:
        cli.wait_for("tile ")  # "tile N done": stacking is under way
        cli.wait_for("done, 3/")
    finally:
        cli.kill()  # kill -9 of the process group: the run, its workers, the forkserver
    finished = sorted(int(p.stem[5:]) for p in (out / "resume").glob("tile_*.json"))
    rerun = grid_mode.run_grid_mode(src, out, tile_size=160, overlap=0.25, workers=1)
    n_tiles = len(rerun.report["tiles"])
    assert 3 <= len(finished) < n_tiles
    assert rerun.report["resume"]["reused"]["tiles"] == finished
    assert rerun.report["resume"]["reused"]["frame_solve"]
    assert np.array_equal(_mosaic(rerun.mosaic)[0], reference, equal_nan=True)
    assert not _leftovers(out)

    st = (src / "frame_004.fits").stat()  # the middle frame: touched, its pieces redone
    os.utime(src / "frame_004.fits", ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    touched = grid_mode.run_grid_mode(src, out, tile_size=160, overlap=0.25, workers=1)
    with_it = {t for t, names in _tile_frames(out).items() if "frame_004.fits" in names}
    assert touched.report["resume"]["reused"] == dict(
        binned_frames=8, frame_solve=False,
        tiles=sorted(set(range(1, n_tiles + 1)) - with_it))
    assert np.array_equal(_mosaic(touched.mosaic)[0], reference, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("stage, signame, code", [
    ("Frame photometry: frame 1/", "SIGINT", 130),
    ("done, 1/", "SIGINT", 130),
    ("done, 1/", "SIGTERM", 143)])
def test_a_signal_stops_the_run_at_once_cleanly_and_a_rerun_resumes(big, tmp_path, stage,
                                                                    signame, code):
    import signal
    import time
    frames, reference = big
    out = tmp_path / "out"
    cli = _Cli(frames, out)
    try:
        cli.wait_for(stage)
        t0 = time.monotonic()
        cli.proc.send_signal(getattr(signal, signame))
        returncode, err = cli.finish(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        cli.kill()
    assert returncode == code and seconds < 2, (seconds, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    stops = [ln for ln in err.splitlines() if ln.startswith("grid-mode:")]
    assert stops == [f"grid-mode: stopped by {signame}; temporary files removed; run the same "
                     "command again to resume (finished pieces are reused)"], err
    assert not _leftovers(out) and not (out / "mosaic_grid.fits").exists()
    rerun = grid_mode.run_grid_mode(frames, out, tile_size=160, overlap=0.25, workers=1)
    reused = rerun.report["resume"]["reused"]
    assert reused["binned_frames"] >= 1 if stage.startswith("Frame") else reused["tiles"]
    assert np.array_equal(_mosaic(rerun.mosaic)[0], reference, equal_nan=True)
