import numpy as np
import pytest

from photometry_graph.core.correction import apply_correction
from photometry_graph.core.tiles import TilePhotometryInfo
from photometry_graph.datasets import make_faint_tile_survey
from photometry_graph.photometry.flatten import (background_blocks, fit_background_plane,
                                                 flatten_corrections)

TILT = np.array([0.004, -0.0025])   # a global tilt shared by every tile, sigma per pixel


def _tilted(survey, tilt=TILT):
    """The survey's tiles with one global plane added (sky units, as the mosaic sees it)."""
    tiles = []
    for t in survey.tiles:
        data = np.array(t.get_data(), dtype=np.float64)
        data = data[..., None] if data.ndim == 2 else data
        yy, xx = t.bbox.coordinates()
        data = data + (tilt[0] * xx + tilt[1] * yy)[..., None]
        tiles.append(TilePhotometryInfo(t.tile_id, t.bbox, data=data, mask=t.mask))
    return tiles


def test_blocks_mask_the_sources_and_the_plane_is_recovered():
    # tiles of one sky without gains and offsets: the background is the sky level plus the
    # tilt; stars, a trail and a faint nebula must not pull the plane
    survey = make_faint_tile_survey(4, rows=3, cols=3, tile_size=192, gain_range=(1, 1),
                                    offset_range=0.0, gradient=0.0, star_density=2e-3, nebulae=1)
    tiles = _tilted(survey)
    xy, values = background_blocks(tiles, block=32)
    assert values.shape == (len(xy), 1) and np.isfinite(values).mean() > 0.9
    pivot = (250.0, 250.0)
    plane = fit_background_plane(tiles, pivot=pivot, block=32)
    assert plane.slope[0] == pytest.approx(TILT, abs=2e-4)
    assert plane.level[0] == pytest.approx(20.0 + TILT @ np.array(pivot), abs=0.5)
    assert plane.n_used[0] > 0.5 * plane.n_blocks[0]
    # the corrections that flatten: the tilt is gone, the level at the pivot is kept
    flat = flatten_corrections({t.tile_id: None for t in tiles}, plane)
    again = fit_background_plane(tiles, flat, pivot=pivot, block=32)
    assert np.abs(again.slope).max() < 2e-5
    assert again.level[0] == pytest.approx(plane.level[0], abs=0.05)
    # on every pixel, the flattened value is the value minus the tilt about the pivot
    t = tiles[4]
    yy, xx = t.bbox.coordinates()
    out = apply_correction(t.get_data(), t.bbox, flat[t.tile_id])[..., 0]
    tilt = plane.slope[0, 0] * (xx - pivot[0]) + plane.slope[0, 1] * (yy - pivot[1])
    np.testing.assert_allclose(out, np.asarray(t.get_data())[..., 0] - tilt, atol=1e-4)
    assert flat[0].info["flatten_slope"] == plane.slope.tolist()


def test_too_few_blocks_is_a_clear_error():
    survey = make_faint_tile_survey(0, rows=1, cols=2, tile_size=40)
    with pytest.raises(ValueError, match="background blocks"):
        fit_background_plane(survey.tiles, block=32)
