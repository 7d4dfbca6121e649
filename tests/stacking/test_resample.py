import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reproject import reproject_interp

from photometry_graph.datasets import make_frame_survey
from photometry_graph.stacking.resample import (coordinate_map, reproject_to_bbox,
                                       spline_upsample_matrix)
from photometry_graph.core.tiles import BBox
from photometry_graph.core.wcsgrid import (build_global_grid, footprint_bbox, tile_wcs,
                                           transform_pixels)


def _survey(sip, rotation, rng=3, shape=(200, 300)):
    s = make_frame_survey(1, 2, frame_shape=shape, rng=rng, sip=sip, sip_amplitude=4.0,
                          rotation_deg_range=rotation, empty_borders=False, nan_blob=False,
                          trail=False)
    g = build_global_grid(s.frame_wcs_list, s.frame_shapes, tile_size=256)
    return s, g


CASES = [(False, (15.0, 25.0)), (True, (-4.0, 4.0))]


@pytest.mark.parametrize("sip,rotation", CASES)
def test_coordinate_map_matches_the_exact_transform(sip, rotation):
    s, g = _survey(sip, rotation)
    f = s.frames[1]
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape).expand(20)  # partly off the frame
    mx, my = coordinate_map(f.wcs, g.wcs, box, grid_step=32)
    ex, ey = coordinate_map(f.wcs, g.wcs, box, grid_step=None)
    assert mx.shape == box.shape
    err = np.hypot(mx - ex, my - ey)
    assert np.isfinite(err).all()
    assert err.max() < 1e-2
    assert err.max() < 1e-3  # in practice ~1e-5 px


@pytest.mark.parametrize("sip,rotation", CASES)
def test_reprojection_matches_reproject_interp(sip, rotation):
    s, g = _survey(sip, rotation)
    f = s.frames[0]
    sigma = s.noise_sigma
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    out, fp = reproject_to_bbox(f.data, f.wcs, g.wcs, box)
    ref, ref_fp = reproject_interp((f.data.astype(np.float64), f.wcs), tile_wcs(g.wcs, box),
                                   shape_out=box.shape, order="bilinear")
    assert out.shape == box.shape + (1,) and out.dtype == np.float32
    mine = np.isfinite(out[..., 0])
    theirs = np.isfinite(ref)
    assert np.array_equal(mine, fp > 0)
    # same footprint except possibly a few pixels exactly on the frame edge
    assert (mine ^ theirs).sum() <= 0.002 * theirs.sum()
    both = mine & theirs
    diff = np.abs(out[..., 0][both] - ref[both])
    assert np.median(diff) < 1e-2 * sigma
    assert diff.max() < 0.05 * sigma


def test_invalid_source_pixels_do_not_bleed():
    s, g = _survey(False, (5.0, 10.0))
    f = s.frames[0]
    data = f.data.copy()
    H, W = data.shape
    bad = np.zeros((H, W), bool)
    bad[80:120, 100:160] = True                 # masked but holding a huge value
    data[bad] = 1e6
    data[20:30, 200:230] = np.nan               # NaN zone
    data[:, :4] = 1e6                           # masked border strip
    bad[:, :4] = True
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    # the strict rule (no clamping at the edges of invalid zones)
    out, fp = reproject_to_bbox(data, f.wcs, g.wcs, box, src_mask=~bad, clamp_edges=False)
    v = out[..., 0][fp > 0]
    assert np.isfinite(v).all() and v.max() < 1e4
    # the invalid zones are holes in the output
    clean, _ = reproject_to_bbox(f.data, f.wcs, g.wcs, box)
    lost = np.isfinite(clean[..., 0]) & ~np.isfinite(out[..., 0])
    assert lost.sum() > 0.8 * (bad.sum() + 300)
    # everywhere else the values are those of the clean image
    keep = np.isfinite(out[..., 0])
    np.testing.assert_allclose(out[..., 0][keep], clean[..., 0][keep], atol=1e-3)
    assert out.dtype == np.float32 and data[85, 120] == 1e6  # input untouched
    # the default clamps to the valid edge: a rim more, never a value from the bad zones
    clamped, fpc = reproject_to_bbox(data, f.wcs, g.wcs, box, src_mask=~bad)
    assert np.isfinite(clamped[..., 0][fpc > 0]).all() and clamped[fpc > 0].max() < 1e4
    rim = (fpc > 0) & ~(fp > 0)
    assert rim.sum() > 0 and not (fp > (fpc > 0)).any()
    np.testing.assert_allclose(clamped[..., 0][fp > 0], out[..., 0][fp > 0], atol=1e-3)


@pytest.mark.parametrize("channels", [1, 6])
def test_infinite_values_are_invalid_like_nan(channels):
    """A frame found finite by its sum is reprojected as it is; +inf and -inf (alone, or
    both in one crop, where the sum is NaN) are holes like NaN, with or without a mask."""
    s, g = _survey(False, (5.0, 10.0))
    f = s.frames[0]
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    data = np.repeat(f.data[..., np.newaxis], channels, axis=2)
    clean, fp_clean = reproject_to_bbox(data, f.wcs, g.wcs, box)
    assert np.isfinite(clean[fp_clean > 0]).all() and fp_clean.sum() > 0.5 * fp_clean.size
    for values in ([np.inf], [-np.inf], [np.inf, -np.inf]):
        for mask in (None, np.ones(f.shape, bool)):
            bad, holed = data.copy(), data.copy()
            for k, v in enumerate(values):
                bad[60 + 40 * k:70 + 40 * k, 100:120, -1] = v
                holed[60 + 40 * k:70 + 40 * k, 100:120, -1] = np.nan
            out, fp = reproject_to_bbox(bad, f.wcs, g.wcs, box, src_mask=mask)
            ref, fp_ref = reproject_to_bbox(holed, f.wcs, g.wcs, box, src_mask=mask)
            assert fp.sum() < fp_clean.sum() - 100 * len(values)
            np.testing.assert_array_equal(fp, fp_ref)
            np.testing.assert_array_equal(out, ref)


def test_output_covers_exactly_the_valid_source_pixels():
    """An output pixel whose centre lies within half a pixel of a valid source pixel's
    centre has a value (clamped to the edge pixel near invalid zones), and no other."""
    s, g = _survey(False, (5.0, 10.0))
    f = s.frames[0]
    H, W = f.data.shape
    valid = np.ones((H, W), bool)
    valid[50:90, 60:70] = False
    valid[120:, 250:] = False
    valid[:, :3] = False
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    out, fp = reproject_to_bbox(f.data, f.wcs, g.wcs, box, src_mask=valid)
    yy, xx = box.coordinates()
    fx, fy = transform_pixels(g.wcs, f.wcs, xx.astype(float), yy.astype(float))
    ix, iy = np.rint(fx), np.rint(fy)
    inside = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    expect = np.zeros(box.shape, bool)
    expect[inside] = valid[iy[inside].astype(int), ix[inside].astype(int)]
    # up to rounding at exact half-pixel positions (the coordinate map is good to ~1e-4 px)
    sure = (np.abs(np.abs(fx - ix) - 0.5) > 1e-3) & (np.abs(np.abs(fy - iy) - 0.5) > 1e-3)
    assert sure.mean() > 0.99 and np.array_equal((fp > 0)[sure], expect[sure])
    assert np.isfinite(out[..., 0][fp > 0]).all()
    # clamped values stay within the range of the valid source pixels around them
    clean, _ = reproject_to_bbox(f.data, f.wcs, g.wcs, box)
    edge = (fp > 0) & np.isfinite(clean[..., 0])
    assert np.abs(out[..., 0][edge] - clean[..., 0][edge]).max() < 10 * s.noise_sigma


def test_identity_and_integer_shift_are_exact():
    s, g = _survey(False, (0.0, 0.0))
    f = s.frames[0]
    rgb = np.stack([f.data, 2 * f.data, -f.data], axis=-1)
    box = BBox(-7, 150, 11, 250)
    out, fp = reproject_to_bbox(rgb, f.wcs, f.wcs, box)
    np.testing.assert_allclose(out[7:, :, :], rgb[0:150, 11:250, :], atol=1e-4)
    assert not fp[:7].any() and np.isnan(out[:7]).all() and fp[7:].all()


def test_more_than_four_channels_and_all_orders():
    s, g = _survey(False, (3.0, 6.0))
    f = s.frames[0]
    cube = np.stack([f.data + k for k in range(5)], axis=-1)
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    lin, fpl = reproject_to_bbox(cube, f.wcs, g.wcs, box, order="bilinear")
    assert lin.shape == box.shape + (5,)
    ok = fpl > 0
    np.testing.assert_allclose(lin[ok][:, 4] - lin[ok][:, 0], 4.0, atol=1e-3)
    near, fpn = reproject_to_bbox(cube, f.wcs, g.wcs, box, order="nearest-neighbor")
    cub, fpc = reproject_to_bbox(cube, f.wcs, g.wcs, box, order="bicubic")
    # bicubic needs a larger valid neighbourhood; nearest a smaller one
    assert fpc.sum() <= fpl.sum() <= fpn.sum()
    both = (fpc > 0) & ok
    # smooth regions agree between kernels (stars differ); check the typical pixel
    assert np.median(np.abs(cub[both][:, 0] - lin[both][:, 0])) < 0.5
    # nearest returns source values only
    vals = set(np.unique(f.data).tolist())
    sample = near[fpn > 0][:200, 0]
    assert all(v in vals for v in sample.tolist())
    with pytest.raises(ValueError, match="interpolation"):
        reproject_to_bbox(cube, f.wcs, g.wcs, box, order="lanczos")


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5, 6])
def test_every_channel_count_is_interpolated_exactly(channels):
    # OpenCV rounds the positions of 2-channel images to 1/32 px: pairs go one by one
    from scipy import ndimage
    s, g = _survey(False, (3.0, 6.0))
    f = s.frames[0]
    cube = np.stack([f.data * (k + 1) for k in range(channels)], axis=-1)
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    out, fp = reproject_to_bbox(cube, f.wcs, g.wcs, box)
    mx, my = coordinate_map(f.wcs, g.wcs, box)
    ok = fp > 0
    exact = ndimage.map_coordinates(f.data.astype(np.float64), [my[ok], mx[ok]], order=1,
                                    mode="nearest")
    for k in range(channels):
        np.testing.assert_allclose(out[ok][:, k], (k + 1) * exact, rtol=1e-5, atol=1e-3)


def test_box_off_the_frame_and_bad_inputs():
    s, g = _survey(False, (0.0, 1.0))
    f = s.frames[0]
    out, fp = reproject_to_bbox(f.data, f.wcs, f.wcs, BBox(1000, 1010, 1000, 1020))
    assert out.shape == (10, 20, 1) and np.isnan(out).all() and not fp.any()
    with pytest.raises(ValueError, match="channels-last"):
        reproject_to_bbox(np.zeros((3, 40, 60), np.float32), f.wcs, f.wcs, BBox(0, 5, 0, 5))
    with pytest.raises(ValueError, match="src_mask"):
        reproject_to_bbox(f.data, f.wcs, f.wcs, BBox(0, 5, 0, 5), src_mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="empty"):
        reproject_to_bbox(f.data, f.wcs, f.wcs, BBox(0, 0, 0, 5))


def test_spline_upsampling_reproduces_cubic_polynomials():
    nodes = np.array([0, 32, 64, 96, 99])
    A = spline_upsample_matrix(nodes, 100)
    t = np.arange(100.0)
    poly = lambda x: 0.3 + 0.01 * x - 2e-4 * x ** 2 + 3e-6 * x ** 3  # noqa: E731
    np.testing.assert_allclose(A @ poly(nodes.astype(float)), poly(t), atol=1e-9)
    assert spline_upsample_matrix([0], 5).shape == (5, 1)


def _shifted_star(phase, sigma=2.5, size=41):
    """A Gaussian star sampled on a grid and the WCS of a grid offset by ``phase`` px."""
    from astropy.wcs import WCS
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [size // 2 + 1, size // 2 + 1]
    w.wcs.cdelt = [-2e-4, 2e-4]
    dst = w.deepcopy()
    dst.wcs.crpix = [size // 2 + 1 - phase[0], size // 2 + 1 - phase[1]]
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = size // 2

    def star(x, y):
        return 100.0 * np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma ** 2))

    # destination pixel (x, y) sits at source pixel (x + px, y + py)
    return star(xx, yy), w, dst, star(xx + phase[0], yy + phase[1])


@pytest.mark.parametrize("phase", [(0.5, 0.5), (0.25, 0.6), (0.7, 0.1)])
def test_curvature_correction_makes_bilinear_star_peaks_phase_independent(phase):
    img, src, dst, truth = _shifted_star(phase)
    box = BBox(0, 41, 0, 41)
    plain, _ = reproject_to_bbox(img, src, dst, box)
    fixed, _ = reproject_to_bbox(img, src, dst, box, curvature_correction=True)
    core = np.s_[5:-5, 5:-5]
    err_plain = np.abs(plain[..., 0] - truth)[core].max()
    err_fixed = np.abs(fixed[..., 0] - truth)[core].max()
    # a star of sigma 2.5 px (a star blurred as in the frame photometry): plain bilinear
    # flattens its peak by p(1-p)/2 f'' per axis, 1-4 % of the peak; the correction leaves
    # the fourth-order remainder (measured: 10x smaller; 3x smaller at sigma 1.2 px)
    assert err_plain > 1.0
    assert err_fixed < 0.15 * err_plain
    peak = np.unravel_index(np.argmax(truth), truth.shape)
    assert abs(plain[peak][0] / truth[peak] - 1) > 0.01
    assert abs(fixed[peak][0] / truth[peak] - 1) < 0.005


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 0.999), st.floats(0.0, 0.999))
def test_curvature_corrected_star_is_within_half_a_percent_at_any_phase(px, py):
    # measured over a 12 x 12 grid of phases: at most 0.36 % of the peak (plain: 3.6 %)
    img, src, dst, truth = _shifted_star((px, py))
    fixed, _ = reproject_to_bbox(img, src, dst, BBox(0, 41, 0, 41), curvature_correction=True)
    assert np.abs(fixed[..., 0] - truth)[5:-5, 5:-5].max() < 0.005 * truth.max()


def test_curvature_correction_keeps_flat_fields_masks_and_rejects_other_orders():
    img, src, dst, _ = _shifted_star((0.3, 0.4))
    flat = np.full_like(img, 7.0)
    flat[18:22, 18:22] = np.nan
    box = BBox(0, 41, 0, 41)
    out, fp = reproject_to_bbox(flat, src, dst, box, curvature_correction=True)
    plain, fp_plain = reproject_to_bbox(flat, src, dst, box)
    np.testing.assert_array_equal(fp, fp_plain)  # same valid pixels as without it
    ok = fp > 0
    assert np.isnan(out[~ok]).all()
    np.testing.assert_allclose(out[ok, 0], 7.0, rtol=1e-5)
    with pytest.raises(ValueError, match="bilinear"):
        reproject_to_bbox(img, src, dst, box, order="bicubic", curvature_correction=True)


@pytest.mark.parametrize("sip", [False, True])
def test_tan_frames_map_through_one_homography_sip_frames_do_not(sip):
    from photometry_graph.stacking.homography import apply_homography
    from photometry_graph.stacking.resample import wcs_homography
    s, g = _survey(sip, (15.0, 25.0))
    f = s.frames[0]
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    H = wcs_homography(f.wcs, g.wcs, box)
    if sip:
        assert H is None  # the distortion is not projective: the spline map serves
        return
    yy, xx = BBox(box.y0, box.y1, box.x0, box.x1).coordinates()
    ex, ey = coordinate_map(f.wcs, g.wcs, box, grid_step=None)  # every pixel, exactly
    hx, hy = apply_homography(H, xx, yy)
    assert np.hypot(hx - ex, hy - ey).max() < 1e-6


def test_a_crop_of_the_frame_reprojects_like_the_frame():
    from photometry_graph.stacking.resample import source_crop, wcs_homography
    s, g = _survey(False, (15.0, 25.0))
    f = s.frames[1]
    data = f.data.copy()
    data[40:60, 100:130] = np.nan
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    band = BBox(box.y0 + 50, box.y0 + 110, box.x0, box.x1)
    H = wcs_homography(f.wcs, g.wcs, box)
    full, fp = reproject_to_bbox(data, f.wcs, g.wcs, band)
    crop = source_crop(f.wcs, g.wcs, band)
    assert crop.area < 0.8 * data.shape[0] * data.shape[1]
    for homography in (None, H):
        part, fp_part = reproject_to_bbox(data[crop.y0:crop.y1, crop.x0:crop.x1], f.wcs, g.wcs,
                                          band, src_origin=(crop.y0, crop.x0),
                                          homography=homography)
        np.testing.assert_array_equal(part, full)
        np.testing.assert_array_equal(fp_part, fp)
    with pytest.raises(ValueError, match="does not cover"):
        reproject_to_bbox(data[crop.y0 + 1:crop.y1], f.wcs, g.wcs, band,
                          src_origin=(crop.y0 + 1, 0))


@pytest.mark.parametrize("sip", [False, True])
def test_a_box_extent_found_once_serves_the_crop_and_the_reprojection(sip):
    from photometry_graph.stacking.resample import box_extent, source_crop, wcs_homography
    s, g = _survey(sip, (15.0, 25.0))
    f = s.frames[1]
    box = footprint_bbox(f.wcs, f.shape, g.wcs, g.shape)
    band = BBox(box.y0 + 40, box.y0 + 90, box.x0 - 5, box.x1)
    H = None if sip else wcs_homography(f.wcs, g.wcs, box)
    e = box_extent(f.wcs, g.wcs, band, homography=H)
    assert e.crop == source_crop(f.wcs, g.wcs, band, homography=H)
    assert (e.homography is None) == sip and e.win.area <= band.area
    assert 0 <= e.crop.y0 and e.crop.y1 <= f.shape[0]
    assert e.crop.area < 0.8 * f.shape[0] * f.shape[1]
    ref, ref_fp = reproject_to_bbox(f.data, f.wcs, g.wcs, band, homography=H)
    crop = f.data[e.crop.y0:e.crop.y1, e.crop.x0:e.crop.x1]
    got, fp = reproject_to_bbox(crop, f.wcs, g.wcs, band, homography=H, extent=e,
                                src_origin=(e.crop.y0, e.crop.x0))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(fp, ref_fp)
    assert 0 < fp.sum() < band.area
    with pytest.raises(ValueError, match="extent given is of the box"):
        reproject_to_bbox(crop, f.wcs, g.wcs, BBox(band.y0, band.y1 - 1, band.x0, band.x1),
                          extent=e, src_origin=(e.crop.y0, e.crop.x0))
    assert box_extent(f.wcs, g.wcs, BBox(box.y1 + 50, box.y1 + 60, box.x0, box.x1)) is None


@settings(max_examples=40, deadline=None)
@given(angle=st.floats(-180.0, 180.0), scale=st.floats(0.5, 2.0),
       tilt=st.floats(-2e-4, 2e-4), shift=st.floats(-60.0, 60.0))
def test_the_pixels_inside_the_frame_are_found_row_by_row_as_by_their_positions(
        angle, scale, tilt, shift):
    # the runs of each row of a projective map (rotated, scaled, tilted, shifted) are the
    # pixels whose source position lies within the limits, edges included, as the
    # positions themselves tell; a map that folds inside the window is left to the warp
    from photometry_graph.stacking.homography import pixels_within
    from photometry_graph.stacking.homography import homography_maps
    t = np.radians(angle)
    hs = np.array([[scale * np.cos(t), -scale * np.sin(t), shift],
                   [scale * np.sin(t), scale * np.cos(t), -shift / 2],
                   [tilt, -tilt / 3, 1.0]])
    shape, limits = (90, 130), (-0.5, 79.5, -0.5, 49.5)
    got = pixels_within(hs, shape, limits)
    fx, fy = homography_maps(hs, BBox(0, shape[0], 0, shape[1]))
    den = tilt * np.arange(shape[1])[None, :] - tilt / 3 * np.arange(shape[0])[:, None] + 1.0
    if (den <= 0).any():
        assert got is None
        return
    want = (fx >= limits[0]) & (fx <= limits[1]) & (fy >= limits[2]) & (fy <= limits[3])
    near = np.minimum.reduce([np.abs(fx - limits[0]), np.abs(fx - limits[1]),
                              np.abs(fy - limits[2]), np.abs(fy - limits[3])]) < 1e-9
    assume(want.any() and not want.all())  # the frame's edges cross the window
    assert got.shape == shape and np.array_equal(got[~near], want[~near])


def test_a_map_that_folds_inside_the_window_finds_the_pixels_inside_by_a_warp():
    from photometry_graph.stacking.homography import pixels_within
    from photometry_graph.stacking.resample import _Sampler
    hs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-0.02, 0.0, 1.0]])  # folds at u = 50
    assert pixels_within(hs, (20, 80), (-0.5, 39.5, -0.5, 9.5)) is None
    got = _Sampler((20, 80), hs=hs).inside((-0.5, 39.5, -0.5, 9.5))
    u, v = np.meshgrid(np.arange(80.0), np.arange(20.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = u / (1.0 - 0.02 * u), v / (1.0 - 0.02 * u)
    want = (x >= -0.5) & (x <= 39.5) & (y >= -0.5) & (y <= 9.5)
    assert got.shape == (20, 80) and 100 < want.sum() and np.array_equal(got, want)
    assert pixels_within(np.eye(3), (0, 7), (-0.5, 9.5, -0.5, 9.5)).shape == (0, 7)
    assert pixels_within(np.eye(3), (3, 7), (-0.5, np.nan, -0.5, 9.5)) is None


def test_pixels_on_a_frame_edge_are_inside_and_wide_windows_are_found_row_by_row():
    from photometry_graph.stacking.homography import pixels_within
    # positions exactly on the limits (x = 2u + 0.5 = 2.5 and 8.5; y = 2v + 0.5 = 0.5, 4.5)
    hs = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    got = pixels_within(hs, (5, 7), (2.5, 8.5, 0.5, 4.5))
    want = np.zeros((5, 7), bool)
    want[0:3, 1:5] = True
    assert np.array_equal(got, want)
    # wider than an int16 column index: one run a row, set row by row
    hs = np.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])  # y = v + u / 2
    got = pixels_within(hs, (3, 40_000), (100.0, 39_000.0, -0.5, 20_000.0))
    u = np.arange(40_000)
    want = [(u >= 100) & (u <= 39_000) & (v + u / 2 <= 20_000.0) for v in range(3)]
    assert np.array_equal(got, np.array(want))
