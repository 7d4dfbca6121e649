"""The assembly stage (photometry_graph.pipeline.assemble): when the overlap fits' workers
are started, and the outputs it writes."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import grid_mode
from photometry_graph.core.tiles import BBox
from photometry_graph.pipeline import assemble as assemble_stage
from photometry_graph.pipeline.fileio import write_hdus
from photometry_graph.pipeline.outputs import tile_header

from conftest import celestial_header


def _tiles(folder, boxes, channels=None):
    folder.mkdir()
    grid_wcs = WCS(celestial_header((100, 100)), relax=True)
    rng = np.random.default_rng(3)
    for k, box in enumerate(boxes, start=1):
        header = tile_header(grid_wcs, box, k, (100, 100), 2)
        c = 1 if channels is None else channels[k - 1]
        data = rng.normal(100.0, 1.0, (c,) + box.shape).astype(np.float32)
        write_hdus(folder / f"tile_{k:04d}.fits", [
            fits.PrimaryHDU(data[0] if c == 1 else data, header),
            fits.ImageHDU(np.full(box.shape, 2.0, np.float32), name="COVERAGE")])
    return folder


@pytest.fixture
def calls(monkeypatch):
    """What the stage starts, stops and loads, in order (the photometry itself stubbed:
    no process is started)."""
    seen = []
    # the real rule: a server for a pool (2 workers or more) of 3 tasks or more
    monkeypatch.setattr(assemble_stage, "start_workers_early", lambda func, workers, n:
                        seen.append(("start", workers, n)) or
                        (None if workers <= 1 or n < 3 else "thread"))
    monkeypatch.setattr(assemble_stage, "stop_workers_early",
                        lambda thread: seen.append(("stop", thread)))
    real_load = assemble_stage.load_tiles
    monkeypatch.setattr(assemble_stage, "load_tiles",
                        lambda paths: seen.append(("load",)) or real_load(paths))
    real_photometry = assemble_stage.tile_photometry
    monkeypatch.setattr(assemble_stage, "tile_photometry", lambda tiles, shape, opts, workers:
                        seen.append(("fits", workers)) or
                        real_photometry(tiles, shape, opts, workers=1))
    return seen


# 2 x 2 tiles of 40 x 40 overlapping by 10 px: 6 overlapping pairs (diagonals included);
# a row of 4 tiles: 3 pairs
SQUARE = [BBox(y, y + 40, x, x + 40) for y in (0, 30) for x in (0, 30)]
ROW = [BBox(0, 40, x, x + 40) for x in (0, 30, 60, 90)]


def test_the_fits_workers_start_before_the_tiles_are_read_when_a_pool_is_likely(
        tmp_path, calls, monkeypatch):
    monkeypatch.setattr(assemble_stage, "IN_PROCESS_PIXELS", 4 * 40 * 40)  # = the tiles'
    tiles = _tiles(tmp_path / "tiles", SQUARE)
    grid_mode.assemble_tiles(tiles, tmp_path / "out", workers=2)
    assert calls == [("start", 2, 6), ("load",), ("fits", 2)]  # started once, used


def test_the_fits_workers_start_after_the_tiles_are_read_when_no_pool_is_likely(
        tmp_path, calls, monkeypatch):
    monkeypatch.setattr(assemble_stage, "IN_PROCESS_PIXELS", 4 * 40 * 40 + 1)
    tiles = _tiles(tmp_path / "tiles", SQUARE)
    grid_mode.assemble_tiles(tiles, tmp_path / "out", workers=2)
    assert calls == [("load",), ("start", 1, 6), ("fits", 1)]  # in this process (a no-op)
    calls.clear()
    grid_mode.assemble_tiles(tiles, tmp_path / "one", workers=1)
    assert calls == [("load",), ("start", 1, 6), ("fits", 1)]


def test_the_fits_workers_started_early_are_stopped_when_the_fits_run_here(
        tmp_path, calls, monkeypatch):
    monkeypatch.setattr(assemble_stage, "IN_PROCESS_PIXELS", 1)
    # the headers give 3 overlaps; the colour tile at the end is left out of the mono ones
    # when they are read: 2 overlaps are fitted here
    row = _tiles(tmp_path / "row", ROW, channels=[1, 1, 1, 3])
    grid_mode.assemble_tiles(row, tmp_path / "out", workers=2)
    assert calls == [("start", 2, 3), ("load",), ("stop", "thread"), ("fits", 2)]
    calls.clear()
    grid_mode.assemble_tiles(row, tmp_path / "plain", workers=2, photometry=False)
    assert calls == [("load",), ("fits", 2)]  # no photometry: no workers (background only)


def test_the_assembly_writes_the_mosaic_and_the_report_pictures(tmp_path, calls):
    tiles = _tiles(tmp_path / "tiles", SQUARE)
    res = grid_mode.assemble_tiles(tiles, tmp_path / "out")
    with fits.open(res.mosaic) as hdul:
        assert hdul[0].data.shape == (70, 70) and np.isfinite(hdul[0].data).all()
    assert res.preview.is_file() and res.html.is_file()
    plain = res.previews["plain"]  # the tiles as stacked, drawn while the mosaic blended
    assert plain.shape[:2] == res.previews["mosaic"].shape[:2] and np.isfinite(plain).all()
    assert abs(float(np.median(plain)) - 100.0) < 1.0
