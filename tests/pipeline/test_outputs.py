"""Pure pieces of the output files (photometry_graph.pipeline.outputs)."""

import json

import numpy as np
import pytest
from astropy.wcs import WCS

from photometry_graph._json import jsonable
from photometry_graph.pipeline.outputs import (ChunkSummary, chunk_coverage, mosaic_header,
                                      tile_header, uint16_block)
from photometry_graph.core.tiles import BBox, TilePhotometryInfo
from photometry_graph.core.wcsgrid import tile_wcs


def _tile(tile_id, bbox, coverage, data=None):
    data = np.ones(bbox.shape + (1,), np.float32) if data is None else data
    return TilePhotometryInfo(tile_id, bbox, data=data, coverage=coverage)


def test_chunk_coverage_takes_the_largest_valid_coverage():
    a = _tile(1, BBox(0, 10, 0, 10), np.full((10, 10), 2.0, np.float32))
    cov_b = np.full((10, 10), 5.0, np.float32)
    cov_b[0, 0] = np.nan
    data_b = np.ones((10, 10, 1), np.float32)
    data_b[:, -2:] = np.nan  # invalid pixels of b do not count
    b = _tile(2, BBox(5, 15, 5, 15), cov_b, data_b)
    c = _tile(3, BBox(0, 5, 10, 15), None)  # no coverage: counts as 0
    cov = chunk_coverage([a, b, c], BBox(0, 20, 0, 20))
    assert cov.shape == (20, 20) and cov.dtype == np.float32
    assert cov[2, 2] == 2.0 and cov[7, 7] == 5.0 and cov[12, 12] == 5.0
    assert cov[5, 5] == 2.0  # b's NaN coverage there: a's 2 remains
    assert cov[12, 13] == 0.0 and cov[2, 12] == 0.0 and cov[18, 18] == 0.0
    part = chunk_coverage([a, b, c], BBox(4, 8, 4, 8))
    assert np.array_equal(part, cov[4:8, 4:8])


@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_chunk_summary_gathers_preview_range_and_area(chunk):
    rng = np.random.default_rng(0)
    canvas = rng.normal(0.0, 1.0, (45, 70, 3)).astype(np.float32)
    canvas[:5] = np.nan
    s = ChunkSummary((45, 70), 3, preview_size=20)
    for y in range(0, 45, chunk):
        for x in range(0, 70, chunk):
            box = BBox(y, min(y + chunk, 45), x, min(x + chunk, 70))
            s.add(box, canvas[box.y0:box.y1, box.x0:box.x1])
    assert s.step == 4
    assert np.array_equal(s.preview, canvas[::4, ::4], equal_nan=True)
    assert s.lo == np.nanmin(canvas) and s.hi == np.nanmax(canvas)
    assert s.area == 45 * 70


def test_chunk_summary_of_an_empty_mosaic():
    s = ChunkSummary((10, 10), 1)
    s.add(BBox(0, 10, 0, 10), np.full((10, 10, 1), np.nan, np.float32))
    assert s.step == 1 and s.lo == np.inf and s.hi == -np.inf and s.area == 100
    assert np.isnan(s.preview).all()


def test_chunk_summary_range_leaves_out_infinite_values():
    s = ChunkSummary((2, 6), 1)
    s.add(BBox(0, 2, 0, 3), np.array([[np.inf, 2.0, np.nan], [-1.0, -np.inf, 0.5]],
                                     np.float32)[..., None])
    assert (s.lo, s.hi) == (-1.0, 2.0)
    s.add(BBox(0, 2, 3, 6), np.array([[np.nan, 7.0, 3.0], [np.nan, -2.5, 1.0]],
                                     np.float32)[..., None])
    assert (s.lo, s.hi) == (-2.5, 7.0)


def test_uint16_block_maps_the_range_and_nan():
    block = np.array([[-1.0, 0.0, 5.0], [10.0, 20.0, np.nan]], np.float32)
    u = uint16_block(block, 0.0, 10.0).astype(np.int64) + 32768
    assert uint16_block(block, 0.0, 10.0).dtype == np.int16
    assert u.tolist() == [[0, 0, 32768], [65535, 65535, 0]]
    assert (uint16_block(block, np.inf, -np.inf).astype(int) + 32768 == 0).all()


def test_jsonable_gives_strict_json():
    class Result:
        def to_dict(self):
            return {"gain": np.float32(1.25), "offsets": np.array([0.5, np.nan])}

    payload = {"box": BBox(1, 2, 3, 4), "r": Result(), "t": (1, np.int64(2)),
               "bad": [float("inf"), -np.inf], "other": object, "nested": {"x": np.nan}}
    out = jsonable(payload)
    assert out["box"] == [1, 2, 3, 4] and out["r"] == {"gain": 1.25, "offsets": [0.5, None]}
    assert out["t"] == [1, 2] and out["bad"] == [None, None] and out["nested"] == {"x": None}
    assert out["other"] == str(object)
    json.dumps(out, allow_nan=False)  # strict JSON: raises on NaN
    assert "nan" not in json.dumps(out).lower()
    assert isinstance(payload["box"], BBox)  # input untouched


def _grid_wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 20.0]
    w.wcs.crpix = [500.5, 400.5]
    w.wcs.cdelt = [-1 / 1800.0, 1 / 1800.0]
    return w


def test_tile_header_places_the_tile_on_the_grid():
    grid, bbox = _grid_wcs(), BBox(300, 556, 200, 456)
    h = tile_header(grid, bbox, 7, (1000, 800), 12)
    assert (h["TILEID"], h["GRID_Y0"], h["GRID_X0"]) == (7, 300, 200)
    assert (h["GRID_NY"], h["GRID_NX"], h["NFRAMES"]) == (1000, 800, 12)
    local = WCS(h)
    sky_local = local.pixel_to_world_values(10.0, 20.0)
    sky_grid = grid.pixel_to_world_values(210.0, 320.0)
    assert np.allclose(sky_local, sky_grid, rtol=0, atol=1e-10)
    assert np.allclose(local.wcs.crpix, tile_wcs(grid, bbox).wcs.crpix)


def test_mosaic_header():
    h = mosaic_header(_grid_wcs(), 9, (16, 32))
    assert (h["NTILES"], h["GRID_Y0"], h["GRID_X0"]) == (9, 16, 32)
    assert h["CTYPE1"] == "RA---TAN" and h["CRPIX1"] == 500.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunk_coverage_of_non_finite_coverage_is_finite(dtype):
    # NaN counts as 0, an infinite coverage is the largest float32 (no overflow warning)
    cov = np.full((4, 4), 3.0, dtype)
    cov[0, 0], cov[1, 1], cov[2, 2] = np.nan, np.inf, -np.inf
    out = chunk_coverage([_tile(1, BBox(0, 4, 0, 4), cov)], BBox(0, 4, 0, 6))
    assert out[0, 0] == 0.0 and out[1, 1] == np.finfo(np.float32).max and out[2, 2] == 0.0
    assert out[3, 3] == 3.0 and not out[:, 4:].any()
