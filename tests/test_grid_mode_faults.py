"""Faults injected on purpose: nothing is lost silently, one run per folder, interrupts, resume.

Small synthetic surveys (2 x 2 frames of 160 x 240 px, tiles of 192 px).  The tests that run
the command line in subprocesses, and send it signals, are marked slow.
"""

import json
import logging

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
