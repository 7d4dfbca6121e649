"""Faults injected on purpose: nothing is lost silently, one run per folder, interrupts, resume.

Small synthetic surveys (2 x 2 frames of 160 x 240 px, tiles of 192 px).  The tests that run
the command line in subprocesses, and send it signals, are marked slow.
"""

import json
import logging

import numpy as np
import pytest
from astropy.io import fits

import grid_mode
from photometry_graph.datasets import make_frame_survey
from photometry_graph.pipeline.demo import write_frame_survey
from photometry_graph.pipeline.fileio import LOCK_NAME, output_lock

SMALL = dict(tile_size=192, overlap=0.25, workers=1)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    survey = make_frame_survey(2, 2, frame_shape=(160, 240), channels=1, rng=7)
    return write_frame_survey(survey, root / "frames")


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
