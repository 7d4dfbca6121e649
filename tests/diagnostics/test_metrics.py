"""Truth metrics: tile cells, a mosaic against its truth per tile cell and per frame."""

import numpy as np
import pytest

from photometry_graph.core.tiles import BBox
from photometry_graph.datasets import make_survey
from photometry_graph.diagnostics.metrics import mosaic_vs_truth, tile_cells


def test_tile_cells_split_overlaps_in_the_middle():
    lab = tile_cells([BBox(0, 10, 0, 10), BBox(0, 10, 6, 16)], (12, 16))
    assert (lab[:10, :8] == 0).all() and (lab[:10, 8:] == 1).all() and (lab[10:] == -1).all()


def test_mosaic_vs_truth_measures_an_injected_step():
    s = make_survey(3, 3, tile_size=96, overlap=0.25, rng=2)
    boxes = [t.bbox for t in s.tiles]
    rng = np.random.default_rng(0)
    noisy = s.truth + rng.normal(0, s.noise_sigma, s.truth.shape)
    clean = mosaic_vs_truth(noisy, s.truth, boxes, noise_sigma=s.noise_sigma)
    assert clean["gain_spread"] < 0.01 and clean["offset_spread_sigma"] < 0.1
    assert clean["residual_rms_sigma"] == pytest.approx(1.0, abs=0.05)
    assert clean["coverage"] == 1.0 and clean["n_cells"] == 9
    stepped = noisy.copy()
    b = boxes[4]
    stepped[b.y0:b.y1, b.x0:b.x1] += 3.0 * s.noise_sigma
    stepped[:5] = np.nan
    bad = mosaic_vs_truth(stepped, s.truth, boxes, noise_sigma=s.noise_sigma)
    assert 2.3 < bad["offset_max_sigma"] < 3.1
    assert bad["seam"] > 2 * clean["seam"]
    assert bad["coverage"] == pytest.approx(1 - 5 / s.canvas_shape[0])


def test_structured_gain_spread_leaves_out_the_cells_of_flat_sky():
    # a truth with structure on the left half only; a gain error of 2 % in one left cell
    # shows in both spreads, a gradient over a flat right cell only in the one of all cells
    H, W, sigma = 64, 256, 1.0
    yy, xx = np.mgrid[:H, :W]
    truth = np.where(xx < 128, 100.0 + 20.0 * np.sin(xx / 5.0) * np.cos(yy / 7.0), 100.0)
    truth += 0.2 * sigma * np.sin(yy / 9.0 + xx / 11.0)  # a faint structure everywhere
    boxes = [BBox(0, H, 64 * k, 64 * k + 64) for k in range(4)]
    image = truth.copy()
    image[:, :64] = 1.02 * (truth[:, :64] - 100.0) + 100.0
    image[:, 192:] += 0.02 * sigma * (xx[:, 192:] - 224.0)  # a residual gradient
    q = mosaic_vs_truth(image, truth, boxes, noise_sigma=sigma, plane=False)
    assert q["n_cells"] == 4
    assert q["gain_spread_structured"] == pytest.approx(np.std([1.02, 1.0]), rel=0.05)
    assert q["gain_spread"] > 2 * q["gain_spread_structured"]
    flat = mosaic_vs_truth(image, truth, boxes, noise_sigma=sigma, structure_sigma=1e6)
    assert np.isnan(flat["gain_spread_structured"])


def test_mosaic_vs_frame_truth_measures_a_frame_step_and_ignores_a_trail():
    from photometry_graph.diagnostics.metrics import mosaic_vs_frame_truth
    s = make_survey(2, 3, tile_size=96, overlap=0.25, rng=4, add_noise=False)
    H, W = s.canvas_shape
    boxes = [t.bbox for t in s.tiles]
    yy, xx = np.mgrid[:H, :W]
    # three rotated "frame" footprints, crossing the tiles
    feet = [np.abs((xx - cx) * 0.96 + (yy - H / 2) * 0.28) < 45 for cx in (45, 120, 195)]
    rng = np.random.default_rng(0)
    sigma = s.noise_sigma
    # any global gain, offset and plane is allowed: the reference frame's system
    clean = 1.1 * s.truth + 5.0 + 0.01 * xx[..., None] + rng.normal(0, sigma, s.truth.shape)
    trail = np.abs(yy - 0.3 * xx - 20) < 2
    clean[trail] += 40 * sigma           # a legitimate outlier: clipped by the second fit
    clean[:4] = np.nan
    ok = mosaic_vs_frame_truth(clean, s.truth, feet, boxes, noise_sigma=sigma)
    assert len(ok["frame_offsets"]) == 3 and ok["frame_offset_max_sigma"] < 0.1
    assert ok["seam_frame_borders"] < 1.2 and ok["seam_tile_borders"] < 1.2
    stepped = clean.copy()
    only_mid = feet[1] & ~feet[0] & ~feet[2]
    stepped[only_mid] += 2.0 * sigma
    bad = mosaic_vs_frame_truth(stepped, s.truth, feet, boxes, noise_sigma=sigma)
    assert 1.0 < bad["frame_offset_spread_sigma"] < 2.5  # (the global fit takes a part)
    assert bad["seam_frame_borders"] > 1.5 * ok["seam_frame_borders"]
    none = mosaic_vs_frame_truth(clean, s.truth, [np.zeros((H, W), bool)], boxes,
                                 noise_sigma=sigma)
    assert none["frame_offsets"] == [] and np.isnan(none["frame_offset_max_sigma"])
    assert np.isnan(none["seam_frame_borders"]) and none["seam_tile_borders"] < 1.2
    with pytest.raises(ValueError, match="footprint shape"):
        mosaic_vs_frame_truth(clean, s.truth, [feet[0][1:]], boxes, noise_sigma=sigma)
    with pytest.raises(ValueError, match="noise_sigma"):
        mosaic_vs_frame_truth(clean, s.truth, feet, boxes, noise_sigma=0)


def test_mosaic_vs_frame_survey_finds_a_frame_step_on_the_survey_grid():
    from photometry_graph.datasets import make_frame_survey
    from photometry_graph.diagnostics.metrics import mosaic_vs_frame_survey
    s = make_frame_survey(1, 2, frame_shape=(60, 80), channels=1, rng=0,
                          rotation_deg_range=(0, 0))
    wcs, shape = s.truth_wcs, s.truth_shape
    clean = s.render_truth(wcs, shape)
    ok = mosaic_vs_frame_survey(clean[..., 0], wcs, s, [])  # (H, W) accepted too
    assert len(ok["frame_offsets"]) == 2 and ok["frame_offset_max_sigma"] < 0.01
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    fx, fy = s.frames[0].wcs.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
    fx1, fy1 = s.frames[1].wcs.world_to_pixel_values(*wcs.pixel_to_world_values(xx, yy))
    only0 = ((fx > -0.5) & (fx < 79.5) & (fy > -0.5) & (fy < 59.5)
             & ~((fx1 > -0.5) & (fx1 < 79.5) & (fy1 > -0.5) & (fy1 < 59.5)))
    step = clean + 2.0 * s.noise_sigma * only0[..., None]
    bad = mosaic_vs_frame_survey(step, wcs, s, [])
    assert bad["frame_offset_spread_sigma"] > 0.5
    assert bad["seam_frame_borders"] > 2 * ok["seam_frame_borders"]
