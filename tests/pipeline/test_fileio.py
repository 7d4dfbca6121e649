"""Output files and tile reading (photometry_graph.pipeline.fileio): atomic, streamed, lazy."""

import json
import logging
import warnings

import cv2
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from photometry_graph.pipeline.fileio import (LOCK_NAME, atomic, check_output_folder,
                                              fits_stream, load_tiles, output_lock,
                                              read_tile_header, remove_temporaries, write_hdus,
                                              write_json, write_preview, write_tiff,
                                              write_uint16)
from photometry_graph.pipeline.options import GridModeError
from photometry_graph.pipeline.outputs import tile_header
from photometry_graph.core.tiles import BBox

from conftest import celestial_header


def test_atomic_leaves_the_target_untouched_on_error(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp != target
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_write_json_is_strict_json(tmp_path):
    written = write_json(tmp_path / "r.json", {"a": np.float32(0.5), "bad": float("nan"),
                                               "box": BBox(0, 1, 2, 3), "t": (1, np.inf)})
    assert written == {"a": 0.5, "bad": None, "box": [0, 1, 2, 3], "t": [1, None]}
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and json.loads(text) == written


def test_fits_stream_writer_is_atomic(tmp_path):
    target = tmp_path / "m.fits"
    hdr = celestial_header((30, 50))
    with pytest.raises(RuntimeError, match="boom"):
        with fits_stream(target, (3, 30, 50), hdr, "chw") as out:
            out.write(0, 0, np.ones((10, 50, 3), np.float32))
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with fits_stream(target, (30, 50), hdr) as out:
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layout", ["mono", "chw", "hwc"])
def test_fits_stream_writes_chunks_in_every_layout(tmp_path, layout):
    rng = np.random.default_rng(0)
    C = 1 if layout == "mono" else 3
    full = rng.normal(size=(30, 50, C)).astype(np.float32)
    full[3:5, 7:9] = np.nan
    shape = {"mono": (30, 50), "chw": (C, 30, 50), "hwc": (30, 50, C)}[layout]
    target = tmp_path / "m.fits"
    with fits_stream(target, shape, celestial_header((30, 50)), layout) as out:
        for y0, y1, x0, x1 in [(0, 16, 0, 50), (16, 30, 0, 20), (16, 30, 20, 50)]:
            out.write(y0, x0, full[y0:y1, x0:x1])  # full-row and partial-row chunks
        back = out.read(10, 25)
        assert back.dtype == np.float32 and back.shape == (15, 50, C)
        np.testing.assert_array_equal(back, full[10:25])
    assert [p.name for p in tmp_path.iterdir()] == ["m.fits"]
    assert target.stat().st_size % 2880 == 0
    with fits.open(target) as hdul:
        data = hdul[0].data
        assert data.dtype == np.dtype(">f4") and data.shape == shape
        want = {"mono": full[..., 0], "chw": np.moveaxis(full, -1, 0), "hwc": full}[layout]
        np.testing.assert_array_equal(data, want)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2-D CD matrix on a 3-axis header: 'cdfix'
            assert WCS(hdul[0].header).celestial.has_celestial


@pytest.fixture
def pwrite_calls(monkeypatch):
    """The byte counts of the ``os.pwrite`` calls made while the test runs."""
    import os
    calls, real = [], os.pwrite

    def pwrite(fd, data, offset):
        calls.append(memoryview(data).nbytes)
        return real(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", pwrite)
    return calls


@pytest.mark.parametrize("layout", ["mono", "chw"])
def test_fits_stream_writes_a_band_of_chunks_at_once(tmp_path, layout, pwrite_calls):
    # chunks of one row band are gathered and written in one call per plane; a band left
    # incomplete (another band starts, a read, the end) is written as far as it goes
    calls = pwrite_calls
    C = 1 if layout == "mono" else 2
    full = np.random.default_rng(1).normal(size=(24, 40, C)).astype(np.float32)
    shape = (24, 40) if layout == "mono" else (C, 24, 40)
    target = tmp_path / "m.fits"
    with fits_stream(target, shape, celestial_header((24, 40)), layout) as out:
        for x0 in range(0, 40, 16):
            out.write(0, x0, full[0:10, x0:x0 + 16])
        assert calls == [10 * 40 * 4] * C  # the complete band, one call per plane
        calls.clear()
        out.write(10, 0, full[10:20, 0:16])  # an incomplete band, then the next one
        out.write(20, 16, full[20:24, 16:40])
        assert calls == [16 * 4] * (10 * C)  # the first, row by row: its written columns
        np.testing.assert_array_equal(out.read(20, 24)[:, 16:], full[20:24, 16:])
        out.write(10, 16, full[10:20, 16:40])
        out.write(20, 0, full[20:24, 0:16])
    with fits.open(target) as hdul:
        data = hdul[0].data
        want = full[..., 0] if layout == "mono" else np.moveaxis(full, -1, 0)
        np.testing.assert_array_equal(data, want)


def test_tile_hdu_reads_crops_and_maps_data_lazily(tmp_path):
    data = np.arange(3 * 12 * 16, dtype=np.float32).reshape(3, 12, 16)
    cov = np.arange(12 * 16, dtype=np.float32).reshape(12, 16) / 7
    path = tmp_path / "tile_0001.fits"
    hdr = celestial_header((12, 16))
    hdr["TILEID"], hdr["GRID_Y0"], hdr["GRID_X0"], hdr["NFRAMES"] = 1, 5, 9, 3
    fits.HDUList([fits.PrimaryHDU(data, hdr),
                  fits.ImageHDU(cov, name="COVERAGE")]).writeto(path)
    meta = read_tile_header(path)
    assert meta["shape"] == (12, 16) and meta["n_channels"] == 3 and meta["n_frames"] == 3
    np.testing.assert_array_equal(meta["data"](), np.moveaxis(data, 0, -1))
    c = meta["coverage"]
    assert c.shape == (12, 16)
    np.testing.assert_array_equal(c[2:7, 3:11], cov[2:7, 3:11])
    np.testing.assert_array_equal(c[::2, 5:], cov[::2, 5:])
    np.testing.assert_array_equal(np.asarray(c), cov)
    assert np.asarray(c[2:7, 3:11]).dtype == np.float32 and c[12:, :].shape == (0, 16)
    crop = c[2:7, 3:11]  # a copy in memory: nothing of the file stays mapped
    assert type(crop) is np.ndarray and crop.base is None and crop.flags.writeable


def test_preview_is_an_asinh_stretch_over_finite_pixels(tmp_path):
    img = np.linspace(0, 100, 400, dtype=np.float32).reshape(20, 20, 1)
    img[:2] = np.nan
    write_preview(tmp_path / "p.png", img, origin="upper")
    out = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint8 and out.shape == (20, 20)
    assert out[:2].max() == 0 and out[-1, -1] == 255
    assert np.all(np.diff(out[10].astype(int)) >= 0)
    assert out[10, 10] > 255 * 0.5  # asinh lifts the middle of the range
    write_preview(tmp_path / "c.png", np.full((4, 6, 3), np.nan))
    assert cv2.imread(str(tmp_path / "c.png")).shape == (4, 6, 3)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["c.png", "p.png"]


def test_uint16_copy_maps_the_range_block_by_block(tmp_path):
    full = np.linspace(-1.0, 3.0, 3 * 40 * 30, dtype=np.float32).reshape(40, 30, 3)
    full[5, 5] = np.nan
    hdr = celestial_header((40, 30))
    with fits_stream(tmp_path / "m.fits", (3, 40, 30), hdr, "chw") as mosaic:
        mosaic.write(0, 0, full)
        write_uint16(tmp_path / "u.fits", mosaic, (3, 40, 30), hdr, -1.0, 3.0)
    with fits.open(tmp_path / "u.fits") as hdul:
        u16, h = hdul[0].data, hdul[0].header
        assert u16.dtype == np.uint16 and u16.shape == (3, 40, 30)
        assert h["FLTMIN"] == -1.0 and h["FLTMAX"] == 3.0 and "CD1_1" in h
        assert u16[0, 0, 0] == 0 and u16[2, -1, -1] == 65535 and u16[:, 5, 5].max() == 0
        want = np.round((np.moveaxis(full, -1, 0) + 1.0) / 4.0 * 65535)
        np.testing.assert_allclose(u16[:, 10:], want[:, 10:], atol=1)


@pytest.mark.parametrize("layout", ["chw", "hwc", "mono"])
def test_tiff_copy_is_flipped_and_mapped_block_by_block(tmp_path, layout):
    import tifffile
    from photometry_graph.pipeline.outputs import ChunkSummary
    C = 1 if layout == "mono" else 3
    full = np.linspace(-1.0, 3.0, C * 40 * 30, dtype=np.float32).reshape(40, 30, C)
    full[5, 5] = np.nan
    shape = {"mono": (40, 30), "chw": (3, 40, 30), "hwc": (40, 30, 3)}[layout]
    summary = ChunkSummary((40, 30), C, preview_size=16)
    summary.add(BBox(0, 40, 0, 30), full)
    with fits_stream(tmp_path / "m.fits", shape, celestial_header((40, 30)), layout) as m:
        m.write(0, 0, full)
        write_tiff(tmp_path / "lin.tif", m, summary)
        write_tiff(tmp_path / "str.tif", m, summary, stretch=True)
    lin, stretched = (tifffile.imread(tmp_path / n) for n in ("lin.tif", "str.tif"))
    assert lin.dtype == np.uint16 and lin.shape == (40, 30) + ((3,) if C == 3 else ())
    want = np.round((full[::-1] + 1.0) / 4.0 * 65535).reshape(lin.shape)
    ok = np.isfinite(full[::-1]).all(axis=2).reshape(40, 30)
    np.testing.assert_allclose(lin[ok], want[ok], atol=1)  # row 0 of the TIFF: the last row
    assert (lin[~ok] == 0).all() and (stretched[~ok] == 0).all()
    order = np.argsort(full[::-1][..., 0][ok])
    assert np.all(np.diff(stretched.reshape(40, 30, C)[..., 0][ok][order].astype(int)) >= 0)
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["lin.tif", "m.fits", "str.tif"]


def test_preview_origin_lower_puts_row_0_at_the_bottom(tmp_path):
    img = np.zeros((10, 12, 1), np.float32)
    img[0, :3] = 100.0  # first row, first columns
    write_preview(tmp_path / "p.png", img)
    out = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert out[-1, :3].min() == 255 and out[0].max() == 0
    with pytest.raises(ValueError, match="origin"):
        write_preview(tmp_path / "q.png", img, origin="top")


def _write_tile(path, grid_wcs, bbox, tile_id, channels, value):
    data = np.full((channels,) + bbox.shape, value, np.float32)
    header = tile_header(grid_wcs, bbox, tile_id, (100, 100), 2)
    write_hdus(path, [fits.PrimaryHDU(data[0] if channels == 1 else data, header),
                      fits.ImageHDU(np.full(bbox.shape, 2.0, np.float32), name="COVERAGE")])


def test_load_tiles_crops_the_canvas_and_skips_bad_files(tmp_path, caplog):
    grid_wcs = WCS(celestial_header((100, 100)), relax=True)
    boxes = {1: BBox(20, 40, 30, 60), 2: BBox(30, 50, 50, 80), 3: BBox(0, 10, 0, 10)}
    for t, channels in [(1, 3), (2, 3), (3, 1)]:
        _write_tile(tmp_path / f"tile_{t:04d}.fits", grid_wcs, boxes[t], t, channels, 10.0 * t)
    (tmp_path / "tile_0004.fits").write_text("not a FITS file")
    with caplog.at_level(logging.WARNING):
        tiles, shape, wcs, origin = load_tiles(sorted(tmp_path.glob("tile_*.fits")))
    assert "skipping tile file" in caplog.text and "tile_0004" in caplog.text
    assert "tile_0003" in caplog.text  # mono among colour tiles: left out, warned
    assert [t.tile_id for t in tiles] == [1, 2] and origin == (20, 30) and shape == (30, 50)
    assert tiles[0].bbox == BBox(0, 20, 0, 30) and tiles[1].bbox == BBox(10, 30, 20, 50)
    assert tiles[1].n_channels == 3 and tiles[1].meta["n_frames"] == 2
    np.testing.assert_array_equal(np.asarray(tiles[1].data()), 20.0)
    np.testing.assert_allclose(wcs.pixel_to_world_values(0, 0),
                               grid_wcs.pixel_to_world_values(30, 20))
    with pytest.raises(GridModeError, match="no readable tile file"):
        load_tiles([tmp_path / "tile_0004.fits"])


def test_output_folder_checks(tmp_path):
    with pytest.raises(GridModeError, match="must differ from the input folder"):
        check_output_folder(tmp_path, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(GridModeError, match="not writable"):
        check_output_folder(tmp_path, blocker / "out")


def test_one_run_per_output_folder(tmp_path):
    import os
    import socket
    with output_lock(tmp_path) as lock:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(GridModeError, match="another grid-mode run is writing into") as exc:
            with output_lock(tmp_path):
                pass
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(exc.value)
        assert json.loads(lock.read_text()) == owner  # the refused run changed nothing
    assert list(tmp_path.iterdir()) == []


def test_the_lock_of_a_dead_run_is_taken_over_with_a_warning(tmp_path, caplog):
    import os
    import socket
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(pid=int(dead), host=socket.gethostname(),
                                                      started="2024-01-01T00:00:00")))
    with caplog.at_level(logging.WARNING, logger="photometry_graph"):
        with output_lock(tmp_path) as lock:
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of an earlier run that is gone (pid {dead} on host" in \
        caplog.text
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_interrupted_writes_are_removed(tmp_path):
    (tmp_path / "tiles").mkdir()
    keep = [tmp_path / "mosaic_grid.fits", tmp_path / "tiles" / "tile_0001.fits",
            tmp_path / ".hidden.fits", tmp_path / "tiles" / ".tile_0002.x.tmp.fits"]
    gone = [tmp_path / ".mosaic_grid.123.1700000000000000000.tmp.fits",
            tmp_path / "tiles" / ".tile_0003.45.1700000000000000001.tmp.fits",
            tmp_path / ".grid_report.9.17.tmp.json", tmp_path / ".grid_write_probe.77"]
    for p in keep + gone:
        p.write_bytes(b"x")
    with pytest.raises(FileNotFoundError):  # a write whose temporary file was removed
        with atomic(tmp_path / "tiles" / "tile_0004.fits") as tmp:  # the names atomic makes
            tmp.write_bytes(b"y")
            assert remove_temporaries(tmp_path) == len(gone) + 1
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)


def test_fits_stream_without_a_band_writes_each_block_as_it_comes(tmp_path, pwrite_calls):
    # band_bytes=0 (a tight memory plan): no row band is held, every block goes out at once
    calls = pwrite_calls
    full = np.random.default_rng(2).normal(size=(24, 40, 1)).astype(np.float32)
    target = tmp_path / "m.fits"
    with fits_stream(target, (24, 40), celestial_header((24, 40)), band_bytes=0) as out:
        out.write(0, 0, full[0:10, 0:16])
        assert calls == [16 * 4] * 10  # written at once, row by row
        for y0, y1, x0, x1 in ((0, 10, 16, 40), (10, 24, 0, 16), (10, 24, 16, 40)):
            out.write(y0, x0, full[y0:y1, x0:x1])
        assert len(calls) == 10 + 10 + 14 + 14 and out._band is None
    with fits.open(target) as hdul:
        np.testing.assert_array_equal(hdul[0].data, full[..., 0])


def test_write_json_puts_each_record_of_a_long_list_on_its_line(tmp_path):
    rows = [{"path": f"frame_{k}.fits", "gain": [1.0 + k / 100], "bad": float("nan")}
            for k in range(500)]
    payload = {"frames": rows, "grid": {"shape": [10, 20], "tiles": {"a": 1}}, "n": 3}
    written = write_json(tmp_path / "r.json", payload)
    text = (tmp_path / "r.json").read_text()
    assert json.loads(text) == written and written["frames"][7]["bad"] is None
    lines = text.splitlines()
    assert len(lines) == 500 + 11   # the records, and the keys and brackets around them
    assert lines[2] == '    {"path": "frame_0.fits", "gain": [1.0], "bad": null},'
    assert '  "grid": {' in lines and '    "shape": [10, 20],' in lines
    one_line = write_json(tmp_path / "s.json", payload, indent=None)
    assert one_line == written and len((tmp_path / "s.json").read_text().splitlines()) == 1
