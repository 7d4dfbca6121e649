import numpy as np
import pytest
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st

from photometry_graph.datasets import make_frame_survey
from photometry_graph.core.tiles import BBox
from conftest import celestial_header
from photometry_graph.core.wcsgrid import (assign_frames_to_tiles, binned_wcs, build_global_grid,
                                           canvas_limit, celestial_pixel_scale, footprint_bbox,
                                           frame_border, geometry_outliers, tile_wcs,
                                           transform_pixels)

SCALE = 2.0 / 3600.0


def _header(kind, rot_deg=0.0, scale=SCALE, sip=False, shape=(200, 300)):
    return celestial_header(shape, crval=(150.0, 30.0), scale_arcsec=scale * 3600.0, kind=kind,
                            rot_deg=rot_deg,
                            sip={"A_2_0": 2e-5, "A_1_1": -1e-5, "B_0_2": 3e-5} if sip else None)


@pytest.mark.parametrize("kind,rot", [("cd", 0.0), ("cd", 33.0), ("pc", 0.0), ("pc", 20.0),
                                      ("cdelt", 0.0)])
def test_pixel_scale_for_every_header_form(kind, rot):
    w = WCS(_header(kind, rot))
    assert celestial_pixel_scale(w) == pytest.approx(SCALE, rel=1e-12)


def test_pixel_scale_of_a_sip_header_and_of_a_cube():
    w = WCS(_header("cd", 12.0, sip=True))
    assert w.sip is not None
    assert celestial_pixel_scale(w) == pytest.approx(SCALE, rel=1e-12)
    cube = WCS(naxis=3)
    cube.wcs.ctype = ["RA---TAN", "DEC--TAN", "FREQ"]
    cube.wcs.cdelt = [-3 / 3600, 3 / 3600, 1e6]
    assert celestial_pixel_scale(cube) == pytest.approx(3 / 3600, rel=1e-12)


def test_pixel_scale_rejects_non_celestial_wcs():
    w = WCS(naxis=2)
    with pytest.raises(ValueError, match="celestial"):
        celestial_pixel_scale(w)
    with pytest.raises(TypeError):
        celestial_pixel_scale("RA---TAN")


def _projected_corners(frame, g):
    bx, by = frame_border(frame.shape, step=4.0)
    return transform_pixels(frame.wcs, g.wcs, bx, by)


@pytest.mark.parametrize("sip", [False, True])
def test_global_grid_is_tan_north_up_and_covers_every_frame(sip):
    s = make_frame_survey(2, 3, frame_shape=(60, 90), rng=4, sip=sip, sip_amplitude=3.0,
                          rotation_deg_range=(-25, 25))
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=64, overlap=0.25)
    assert g.wcs.wcs.ctype[0] == "RA---TAN" and g.wcs.wcs.ctype[1] == "DEC--TAN"
    assert g.wcs.sip is None
    pm = g.wcs.pixel_scale_matrix
    assert pm[0, 1] == 0 and pm[1, 0] == 0 and pm[0, 0] < 0 < pm[1, 1]
    assert g.pixel_scale == pytest.approx(2.0 / 3600, rel=1e-9)
    H, W = g.shape
    all_x, all_y = [], []
    for f in s.frames:
        x, y = _projected_corners(f, g)
        all_x.append(x)
        all_y.append(y)
    x, y = np.concatenate(all_x), np.concatenate(all_y)
    tol = 2e-3
    assert x.min() >= -0.5 - tol and x.max() <= W - 0.5 + tol
    assert y.min() >= -0.5 - tol and y.max() <= H - 0.5 + tol
    # tight: the canvas is not larger than the footprints need
    assert x.min() < 0.5 and x.max() > W - 1.5 and y.min() < 0.5 and y.max() > H - 1.5
    # tiles cover the canvas
    covered = np.zeros(g.shape, bool)
    for b in g.tiles:
        covered[b.y0:b.y1, b.x0:b.x1] = True
    assert covered.all()


def test_global_grid_honours_a_requested_scale_and_rejects_bad_input():
    s = make_frame_survey(1, 2, frame_shape=(40, 60), rng=1)
    g1 = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=64)
    g2 = build_global_grid(s.frame_wcs_list, s.frame_shapes, pixel_scale=g1.pixel_scale * 2,
                           tile_size=64)
    assert g2.shape[0] == pytest.approx(g1.shape[0] / 2, abs=2)
    with pytest.raises(ValueError, match="no frames"):
        build_global_grid([], [])
    with pytest.raises(ValueError, match="shape"):
        build_global_grid(s.frame_wcs_list, [(3, 40, 60), (3, 40, 60)])


def test_global_grid_across_ra_zero():
    s = make_frame_survey(1, 3, frame_shape=(40, 60), rng=2, center=(0.01, 10.0))
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=64)
    # the canvas is the size of the pattern, not of the whole sky
    assert g.shape[1] < 3 * 60 + 40


def test_footprint_bbox_contains_the_frame_and_is_tight():
    s = make_frame_survey(1, 2, frame_shape=(60, 90), rng=3, sip=True, sip_amplitude=4.0,
                          rotation_deg_range=(10, 20))
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=64)
    for f in s.frames:
        box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape, margin=0)
        yy, xx = np.mgrid[0:f.shape[0], 0:f.shape[1]]
        gx, gy = transform_pixels(f.wcs, g.wcs, xx.astype(float), yy.astype(float))
        ix, iy = np.floor(gx + 0.5).astype(int), np.floor(gy + 0.5).astype(int)
        assert ix.min() >= box.x0 and ix.max() < box.x1
        assert iy.min() >= box.y0 and iy.max() < box.y1
        assert ix.min() <= box.x0 + 1 and ix.max() >= box.x1 - 2
        box2 = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape, margin=3)
        assert box2 == box.expand(3).clamp(g.shape)


def test_footprint_outside_the_canvas_is_none():
    s = make_frame_survey(1, 1, frame_shape=(40, 60), rng=0)
    far = s.frames[0].wcs.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 5.0, far.wcs.crval[1]]
    g = build_global_grid([s.frames[0].wcs], [s.frames[0].shape], tile_size=64)
    assert footprint_bbox(far, (40, 60), g.wcs, g.shape) is None
    behind = s.frames[0].wcs.deepcopy()
    behind.wcs.crval = [(behind.wcs.crval[0] + 180.0) % 360, -behind.wcs.crval[1]]
    assert footprint_bbox(behind, (40, 60), g.wcs, g.shape) is None


def _brute_assign(footprints, tiles):
    return [[i for i, f in enumerate(footprints) if f is not None and f.overlaps(t)]
            for t in tiles]


boxes = st.builds(lambda y, x, h, w: BBox(y, y + h, x, x + w),
                  st.integers(-20, 200), st.integers(-20, 200), st.integers(1, 80),
                  st.integers(1, 80))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(boxes, st.none()), max_size=25), st.lists(boxes, max_size=10))
def test_assign_frames_to_tiles_matches_brute_force(footprints, tiles):
    assert assign_frames_to_tiles(footprints, tiles) == _brute_assign(footprints, tiles)


def test_tile_wcs_shifts_the_reference_pixel():
    s = make_frame_survey(1, 2, frame_shape=(40, 60), rng=5)
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=32, overlap=0.2)
    box = g.tiles[-1]
    tw = tile_wcs(g.wcs, box)
    assert tw.pixel_shape == (box.shape[1], box.shape[0])
    lon_t, lat_t = tw.all_pix2world([0.0, 7.0], [0.0, 3.0], 0)
    lon_g, lat_g = g.wcs.all_pix2world([box.x0, box.x0 + 7.0], [box.y0, box.y0 + 3.0], 0)
    np.testing.assert_allclose(lon_t, lon_g, atol=1e-12)
    np.testing.assert_allclose(lat_t, lat_g, atol=1e-12)
    assert np.allclose(g.tile_wcs(len(g.tiles) - 1).wcs.crpix, tw.wcs.crpix)


def test_tile_wcs_of_a_sip_wcs_keeps_the_distortion_in_place():
    w = WCS(_header("cd", 5.0, sip=True))
    box = BBox(10, 50, -5, 40)
    tw = tile_wcs(w, box)
    a = np.array(tw.all_pix2world([[3.0, 4.0], [30.0, 20.0]], 0))
    b = np.array(w.all_pix2world([[3.0 + box.x0, 4.0 + box.y0], [30.0 + box.x0, 20.0 + box.y0]],
                                 0))
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_binned_wcs_pixel_centres():
    s = make_frame_survey(1, 1, frame_shape=(40, 60), rng=6)
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=64)
    for b in (2, 4, 5):
        wb = binned_wcs(g.wcs, b)
        i = np.array([0.0, 3.0, 7.0])
        j = np.array([0.0, 2.0, 5.0])
        lon_b, lat_b = wb.all_pix2world(i, j, 0)
        lon_f, lat_f = g.wcs.all_pix2world(b * i + (b - 1) / 2, b * j + (b - 1) / 2, 0)
        np.testing.assert_allclose(lon_b, lon_f, atol=1e-11)
        np.testing.assert_allclose(lat_b, lat_f, atol=1e-11)
        assert celestial_pixel_scale(wb) == pytest.approx(b * g.pixel_scale)
    with pytest.raises(ValueError, match="undistorted"):
        binned_wcs(WCS(_header("cd", sip=True)), 2)
    with pytest.raises(ValueError, match="integer"):
        binned_wcs(g.wcs, 1.5)


def _frame_wcs(ra, dec=30.0, scale=SCALE, shape=(200, 300)):
    return WCS(celestial_header(shape, crval=(ra, dec), scale_arcsec=scale * 3600.0))


def test_geometry_outliers_name_the_frames_that_do_not_fit():
    shapes = [(200, 300)] * 8
    ws = [_frame_wcs(150.0 + 0.1 * (k % 4), 30.0 + 0.1 * (k // 4)) for k in range(6)]
    ws += [_frame_wcs(150.1, scale=SCALE * 10), _frame_wcs(30.0)]  # 10x scale, far away
    out = geometry_outliers(ws, shapes)
    assert sorted(out) == [6, 7]
    assert "its pixel scale 20\"/px is 10x above the frames' median 2\"/px" in out[6]
    assert out[7].startswith("it lies 97.2 deg from the centre of the frames, most of which "
                             "lie within 0.1")
    assert geometry_outliers(ws[:6], shapes[:6]) == {}
    # a strip of frames is not an outlier at its ends; a dense field keeps its dithers
    strip = [_frame_wcs(150.0 + 0.1 * k) for k in range(30)]
    assert geometry_outliers(strip, [(200, 300)] * 30) == {}
    dithered = [_frame_wcs(150.0 + 1e-4 * k) for k in range(9)] + [_frame_wcs(150.3)]
    assert geometry_outliers(dithered, [(200, 300)] * 10) == {}


def test_a_canvas_beyond_the_limit_is_refused_before_the_tiles_are_laid_out():
    ws, shapes = [_frame_wcs(150.0), _frame_wcs(152.0)], [(200, 300)] * 2
    limit = canvas_limit(ws, shapes)
    assert limit == 4 * 2 * 200 * 300
    grid = build_global_grid(ws, shapes, tile_size=256, max_pixels=10 ** 7)
    assert grid.shape[0] * grid.shape[1] > limit  # two frames far apart: mostly empty sky
    with pytest.raises(ValueError, match=r"the global canvas would be \d+x\d+ px .* more than "
                                         r"the limit of 0.48 Mpx"):
        build_global_grid(ws, shapes, tile_size=256, max_pixels=limit)
