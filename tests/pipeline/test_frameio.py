"""Reading frames: FITS layouts, Bayer raws, WCS flavours, coverage, saturation, empty pixels.

Moved from tests/test_grid_mode_io.py with the frame reading (photometry_graph.pipeline.frameio).
"""

import copy
import pickle
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from photometry_graph.pipeline.frameio import (file_problem, load_frame, read_frame_info,
                                               scan_entry, scan_frame)
from photometry_graph.pipeline.images import FrameInfo, wcs_from_state, wcs_state
from photometry_graph.pipeline.options import GridModeError
from photometry_graph.stacking.bayer import debayer

from conftest import cfa_raw, celestial_header, write_frame

def test_debayer_of_a_uniform_colour_raw():
    # unit tests of the demosaicing are in test_bayer.py
    rgb = debayer(cfa_raw("GBRG", {"R": 0.0, "G": 0.0, "B": 50.0}), "GBRG")
    np.testing.assert_allclose(rgb[2:-2, 2:-2].reshape(-1, 3).mean(0), [0, 0, 50], atol=0.5)


def test_bayer_frame_is_read_as_rgb_with_offsets(tmp_path):
    raw = cfa_raw("GRBG", {"R": 900.0, "G": 5.0, "B": 5.0}, shape=(20, 30))
    hdr = celestial_header((20, 30))
    # GRBG shifted by one column is RGGB: the red sites are where the header says
    path = write_frame(tmp_path / "b.fits", raw.astype(np.uint16), hdr,
                       extra={"BAYERPAT": "RGGB", "XBAYROFF": 1, "EXPTIME": 12.5})
    info = read_frame_info(path)
    assert (info.layout, info.bayer, info.n_channels, info.shape) == ("bayer", "GRBG", 3, (20, 30))
    assert info.exptime == 12.5
    data, weight = load_frame(info)
    assert weight is None and data.shape == (20, 30, 3)
    inner = data[3:-3, 3:-3].reshape(-1, 3)
    assert inner[:, 0].min() > 899 and np.abs(inner[:, 1:] - 5).max() < 1
    raw[4, 4] = 0  # an empty raw site never leaks into its neighbours: they become invalid
    path = write_frame(tmp_path / "b0.fits", raw.astype(np.uint16), hdr,
                       extra={"BAYERPAT": "GRBG"})
    data, _ = load_frame(read_frame_info(path), erode=1)
    assert np.isnan(data[3:6, 3:6]).all() and np.isfinite(data[7:10, 7:10]).all()


@pytest.mark.parametrize("layout", ["mono", "chw", "hwc"])
def test_layouts_are_read_channels_last(tmp_path, layout):
    base = np.arange(12 * 16, dtype=np.float32).reshape(12, 16) + 1
    cube = np.stack([base, 2 * base, 3 * base])
    data = {"mono": base, "chw": cube, "hwc": np.moveaxis(cube, 0, -1)}[layout]
    hdr = celestial_header((12, 16))
    path = write_frame(tmp_path / "f.fits", data, hdr, extra={"EXPOSURE": 4.0})
    info = read_frame_info(path)
    assert info.layout == layout and info.shape == (12, 16) and info.exptime == 4.0
    got, _ = load_frame(info, erode=0)
    want = base[..., None] if layout == "mono" else np.moveaxis(cube, 0, -1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["cd", "pc", "cdelt"])
def test_wcs_flavours_and_sip_are_honoured(tmp_path, kind):
    sip = {"A_2_0": 2e-5, "B_0_2": -3e-5, "A_1_1": 1e-5}
    hdr = celestial_header((30, 40), kind=kind, rot_deg=0.0 if kind == "cdelt" else 25.0,
                           sip=sip if kind == "cd" else None)
    path = write_frame(tmp_path / "w.fits", np.ones((30, 40), np.float32), hdr)
    info = read_frame_info(path)
    ref = WCS(hdr, relax=True)
    x, y = np.array([0.0, 39.0, 20.0]), np.array([0.0, 29.0, 5.0])
    np.testing.assert_allclose(info.wcs.all_pix2world(x, y, 0), ref.all_pix2world(x, y, 0),
                               atol=1e-10)
    assert (info.wcs.sip is not None) == (kind == "cd")
    assert info.exptime == 1.0 and read_frame_info(path, exposure=7.5).exptime == 7.5


def test_cube_with_a_third_wcs_axis_keeps_the_celestial_part(tmp_path):
    hdr = celestial_header((10, 12))
    hdr["CTYPE3"], hdr["CRVAL3"], hdr["CDELT3"], hdr["CRPIX3"] = "FREQ", 1e9, 1e6, 1
    path = write_frame(tmp_path / "c.fits", np.ones((3, 10, 12), np.float32), hdr)
    info = read_frame_info(path)
    assert info.wcs.naxis == 2 and info.wcs.has_celestial


def test_coverage_extension_becomes_pixel_weight_and_mask(tmp_path):
    data = np.full((20, 24), 5.0, np.float32)
    cov = np.ones((20, 24), np.float32)
    cov[:, :6] = 0.0
    cov[10:, 12:] = 0.5
    path = write_frame(tmp_path / "c.fits", data, celestial_header((20, 24)), coverage=cov)
    info = read_frame_info(path)
    assert info.coverage_hdu == 1
    got, weight = load_frame(info, erode=1)
    assert np.isnan(got[:, :7]).all() and np.isfinite(got[1:-1, 8:-1]).all()
    assert weight[15, 18] == 0.5 and weight[5, 3] == 0.0


def test_saturation_level_is_found_and_masks_only_on_request(tmp_path):
    data = np.full((20, 24), 1000, np.uint16)
    data[9:12, 11:14] = 65535                            # a clipped star core
    hdu = fits.PrimaryHDU(data, celestial_header((20, 24)))
    hdu.writeto(tmp_path / "u16.fits")
    with fits.open(tmp_path / "u16.fits") as hdul:      # stored as int16 + BZERO 32768
        assert hdul[0].header["BITPIX"] == 16 and hdul[0].header["BZERO"] == 32768
    info = read_frame_info(tmp_path / "u16.fits")
    assert info.saturation is None                      # no SATURATE keyword ...
    info = scan_frame(info, 1e-6)
    assert info.saturation == 65535.0                   # ... found in the data
    plain, _ = load_frame(info, erode=0)
    assert np.isfinite(plain).all() and plain[10, 12, 0] == 65535.0
    masked, _ = load_frame(info, erode=0, saturation=info.saturation)
    assert np.isnan(masked[7:14, 9:16]).all() and np.isfinite(masked).sum() == 20 * 24 - 49
    path = write_frame(tmp_path / "f.fits", data.astype(np.float32),
                       celestial_header((20, 24)), extra={"SATURATE": 50000.0})
    assert scan_frame(read_frame_info(path), 1e-6).saturation == 50000.0


@pytest.mark.parametrize("dtype, extra, top", [
    (np.uint16, {}, 65535.0),                       # int16 + BZERO 32768, read as uint16
    (np.uint8, {}, 255.0),                          # BITPIX 8, read as floats
    (np.int16, {"BLANK": -32768}, 32767.0),         # signed, BLANK: read as floats
    (np.uint16, {"BLANK": 0}, 65535.0)])            # unsigned, BLANK: read as floats
def test_one_pixel_at_the_top_of_the_stored_integers_is_a_saturation_level(tmp_path, dtype,
                                                                           extra, top):
    data = np.full((20, 24), 100, dtype)
    data[4, 5] = top                                     # a star core clipped at one pixel
    hdr = celestial_header((20, 24))
    hdr.update(extra)
    fits.PrimaryHDU(data, hdr).writeto(tmp_path / "f.fits")
    info = scan_frame(read_frame_info(tmp_path / "f.fits"), 1e-6)
    assert info.saturation == top
    masked, _ = load_frame(info, erode=0, saturation=info.saturation)
    assert np.isnan(masked[2:7, 3:8]).all() and np.isfinite(masked).sum() == 20 * 24 - 25
    data[4, 5] = top - 1                                 # bright, not clipped
    fits.PrimaryHDU(data, hdr).writeto(tmp_path / "g.fits")
    assert scan_frame(read_frame_info(tmp_path / "g.fits"), 1e-6).saturation is None


@pytest.mark.parametrize("bscale, bzero", [(0.5, 100.0), (-1.0, 0.0), (0.01, -327.0)])
def test_the_top_of_scaled_integers_is_found_whatever_the_scale(tmp_path, bscale, bzero):
    # stored int16 scaled by BSCALE/BZERO (a negative scale turns the range over: the top
    # is the stored minimum); the physical top is a level at one pixel, a bright star is not
    edge = -32768 if bscale < 0 else 32767
    for clipped, name in ((edge, "top.fits"), (edge - np.sign(edge), "below.fits")):
        raw = np.full((20, 24), 100, np.int16)
        raw[4, 5], raw[10, 10] = clipped, 5000
        hdu = fits.PrimaryHDU(raw * bscale + bzero, celestial_header((20, 24)))
        hdu.scale("int16", bscale=bscale, bzero=bzero)
        hdu.writeto(tmp_path / name)
        info = scan_frame(read_frame_info(tmp_path / name), 1e-6)
        top = edge * bscale + bzero
        assert info.saturation == (pytest.approx(top, abs=1e-3) if clipped == edge else None)


def test_zero_borders_and_nan_become_invalid(tmp_path):
    data = np.full((20, 24), 7.0, np.float32)
    data[:3] = 0.0
    data[10, 10] = np.nan
    path = write_frame(tmp_path / "z.fits", data, celestial_header((20, 24)))
    got, _ = load_frame(read_frame_info(path), erode=1)
    assert np.isnan(got[:4]).all() and np.isnan(got[9:12, 9:12]).all()
    assert np.isfinite(got[5:9]).all()


def _replace_card(path, key, value_text):
    """Rewrite the value of card ``key`` in a FITS file's bytes (e.g. NAN, not valid FITS)."""
    raw = bytearray(path.read_bytes())
    at = bytes(raw).index(f"{key:<8}= ".encode())
    raw[at + 10:at + 30] = f"{value_text:>20}".encode()
    path.write_bytes(bytes(raw))


def test_broken_geometry_is_refused_with_the_reason(tmp_path):
    good = write_frame(tmp_path / "good.fits", np.ones((20, 30), np.float32),
                       celestial_header((20, 30)))
    assert read_frame_info(good).shape == (20, 30)
    nan = write_frame(tmp_path / "nan.fits", np.ones((20, 30), np.float32),
                      celestial_header((20, 30)))
    _replace_card(nan, "CRVAL1", "NAN")  # astropy alone would read RA = 0
    with pytest.raises(GridModeError, match=r"its CRVAL1 is not a finite number \(NAN\)"):
        read_frame_info(nan)
    hdr = celestial_header((20, 30))
    for key in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
        hdr[key] = 0.0  # astropy alone would make it the identity: 1 degree per pixel
    zero = write_frame(tmp_path / "zero.fits", np.ones((20, 30), np.float32), hdr)
    with pytest.raises(GridModeError, match="its CD matrix is singular"):
        read_frame_info(zero)
    tiny = write_frame(tmp_path / "tiny.fits", np.ones((1, 1), np.float32),
                       celestial_header((1, 1)))
    with pytest.raises(GridModeError, match="it is 1x1 px: too small to be a frame"):
        read_frame_info(tiny)


def test_special_files_are_named_for_what_they_are(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.fits")
    (tmp_path / "dir.fits").mkdir()
    (tmp_path / "empty.fits").write_bytes(b"")
    reasons = {name: scan_entry(dict(index=0, path=str(path), exposure=None, mask_eps=1e-6))
               for name, path in [("pipe", tmp_path / "pipe.fits"), ("zero", "/dev/zero"),
                                  ("dir", tmp_path / "dir.fits"),
                                  ("empty", tmp_path / "empty.fits"),
                                  ("missing", tmp_path / "missing.fits")]}
    assert {k: v[1] for k, v in reasons.items()} == {
        "pipe": "it is a named pipe (FIFO), not a FITS file",
        "zero": "it is a character device, not a FITS file",
        "dir": "it is a folder, not a FITS file", "empty": "it is empty (0 bytes)",
        "missing": "the file does not exist"}
    assert file_problem(tmp_path / "missing" / "x.fits") == "the file does not exist"


def test_gzipped_frames_are_read_and_a_truncated_one_is_named_so(tmp_path):
    import gzip
    rng = np.random.default_rng(1)
    data = rng.normal(100, 2, (40, 60)).astype(np.float32)
    plain = write_frame(tmp_path / "f.fits", data, celestial_header((40, 60)))
    packed = tmp_path / "f.fits.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    info, reason = scan_entry(dict(index=0, path=str(packed), exposure=None, mask_eps=1e-6))
    assert reason is None and info.shape == (40, 60) and 1.5 < info.noise < 2.5
    assert np.array_equal(load_frame(info, erode=0)[0][..., 0], data)
    cut = tmp_path / "cut.fits.gz"
    cut.write_bytes(packed.read_bytes()[:len(packed.read_bytes()) // 2])
    info, reason = scan_entry(dict(index=0, path=str(cut), exposure=None, mask_eps=1e-6))
    assert info is None and "truncated or corrupt" in reason


def test_tile_compressed_frames_are_read_and_a_truncated_one_is_named_so(tmp_path):
    # fpack's .fits.fz: the image in a compressed binary table after an empty primary HDU;
    # its header's size is the image's, not the file's (it was refused as "truncated")
    rng = np.random.default_rng(2)
    data = rng.normal(1000, 20, (40, 60)).astype(np.uint16)
    data[7, 9] = 65535                                    # a clipped core: uint16 still
    packed = tmp_path / "f.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, celestial_header((40, 60)))]
                 ).writeto(packed)
    info, reason = scan_entry(dict(index=0, path=str(packed), exposure=None, mask_eps=1e-6))
    assert reason is None and info.shape == (40, 60) and info.hdu == 1
    assert 15 < info.noise < 25 and info.saturation == 65535.0
    assert np.array_equal(load_frame(info, erode=0)[0][..., 0], data.astype(np.float32))
    cut = tmp_path / "cut.fits.fz"
    cut.write_bytes(packed.read_bytes()[:packed.stat().st_size - 2000])  # into its data
    info, reason = scan_entry(dict(index=0, path=str(cut), exposure=None, mask_eps=1e-6))
    assert info is None and "truncated or corrupt" in reason


def test_a_frame_truncated_after_the_scan_is_named_so_when_loaded(tmp_path):
    path = write_frame(tmp_path / "f.fits", np.ones((40, 60), np.float32),
                       celestial_header((40, 60)))
    info = read_frame_info(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(GridModeError, match="it is truncated"):
        load_frame(info)


def _stored(kind, shape, rng):
    """Stored pixels of one kind of frame, with empty (0) borders and a few odd values."""
    if kind == "uint16":
        data = rng.integers(200, 60000, shape).astype(np.uint16)
    elif kind == "int32":
        data = rng.integers(-5000, 60000, shape).astype(np.int32)
    else:
        data = rng.normal(500, 20, shape).astype(np.float32)
        data[..., 5:9, 20:26] = np.nan
    data[..., :3, :] = 0
    data[..., -4:] = 0
    data[..., 17, 11] = 0
    return data


@pytest.mark.parametrize("kind,layout", [("uint16", "mono"), ("uint16", "bayer"),
                                         ("int32", "mono"), ("float32", "mono"),
                                         ("float32", "chw"), ("uint16", "sat"),
                                         ("int32", "bayer"), ("float32", "bayer")])
def test_a_crop_of_a_frame_reads_and_decodes_like_the_whole_frame(tmp_path, kind, layout):
    from photometry_graph.core.tiles import BBox
    from photometry_graph.pipeline.frameio import read_pixels
    rng = np.random.default_rng(5)
    shape = (3, 40, 52) if layout == "chw" else (40, 52)
    data = _stored(kind, shape, rng)
    extra = {"BAYERPAT": "RGGB"} if layout == "bayer" else {}
    path = write_frame(tmp_path / "f.fits", data, celestial_header((40, 52)), extra=extra)
    info = read_frame_info(path)
    assert info.storage is not None
    with fits.open(path) as hdul:  # astropy's reading of the stored values
        ref = np.asarray(hdul[0].data, dtype=np.float64)
    got = read_pixels(info)
    np.testing.assert_array_equal(np.asarray(got, np.float64), ref)
    sat = 59000.0 if layout == "sat" else None
    full, _ = load_frame(info, saturation=sat)
    for crop in (BBox(0, 40, 0, 52), BBox(7, 23, 9, 30), BBox(1, 12, 40, 52)):
        part, _ = load_frame(info, crop=crop, saturation=sat)
        np.testing.assert_array_equal(part, full[crop.y0:crop.y1, crop.x0:crop.x1])
        rows = read_pixels(info, (crop.y0, crop.y1), (crop.x0, crop.x1))
        np.testing.assert_array_equal(np.asarray(rows, np.float64),
                                      ref[..., crop.y0:crop.y1, crop.x0:crop.x1])
    assert np.isnan(full[:4]).all() and np.isfinite(full[20, 30]).all()


@pytest.mark.parametrize("kind", ["uint16", "float32"])
def test_a_crop_of_a_gzipped_bayer_raw_is_what_the_whole_frame_gives(tmp_path, kind):
    # read through astropy (no byte offsets): a float raw is debayered over the whole
    # frame's range, a uint16 one as stored; either way a crop is the whole frame's pixels
    import gzip
    import shutil
    from photometry_graph.core.tiles import BBox
    data = _stored(kind, (40, 52), np.random.default_rng(9))
    if kind == "float32":
        data[20:24, 30:34] = 4000.0  # a crop without it has another range
    path = write_frame(tmp_path / "f.fits", data, celestial_header((40, 52)),
                       extra={"BAYERPAT": "RGGB"})
    with open(path, "rb") as src, gzip.open(tmp_path / "f.fits.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    info = read_frame_info(tmp_path / "f.fits.gz")
    assert info.storage is None and info.layout == "bayer"
    full, _ = load_frame(info)
    for crop in (BBox(0, 40, 0, 52), BBox(6, 18, 8, 28), BBox(1, 12, 40, 52)):
        part, _ = load_frame(info, crop=crop)
        np.testing.assert_array_equal(part, full[crop.y0:crop.y1, crop.x0:crop.x1])


def test_blank_values_are_nan_and_astropy_reads_what_offsets_cannot(tmp_path):
    from photometry_graph.pipeline.frameio import read_pixels
    data = np.arange(40 * 52, dtype=np.int16).reshape(40, 52)
    hdr = celestial_header((40, 52))
    hdr["BLANK"] = 7
    path = tmp_path / "b.fits"
    fits.PrimaryHDU(data, hdr).writeto(path)
    info = read_frame_info(path)
    got = read_pixels(info)
    assert np.isnan(got[0, 7]) and got[0, 8] == 8
    info.storage = None  # a frame that cannot be read at a byte offset: through astropy
    got = read_pixels(info, (0, 9), (2, 9))
    assert got.dtype == np.float32 and np.isnan(got[0, 5]) and got[3, 4] == data[3, 6]
    np.testing.assert_array_equal(np.isnan(got), data[:9, 2:9] == 7)


@pytest.mark.parametrize("kind, sip", [("cd", True), ("pc", False), ("cdelt", False)])
def test_a_frame_pickles_its_wcs_as_header_text_with_the_same_transforms(tmp_path, kind, sip):
    hdr = celestial_header((30, 40), kind=kind, rot_deg=0.0 if kind == "cdelt" else 25.0,
                           sip={"A_2_0": 2e-5, "B_0_2": -3e-5, "A_1_1": 1e-5} if sip else None)
    info = read_frame_info(write_frame(tmp_path / "w.fits", np.ones((30, 40), np.float32), hdr))
    info.noise = 2.5  # (NaN until the scan: NaN != NaN below)
    data = pickle.dumps(info)
    assert b"SIMPLE  =" not in data  # not astropy's pickle: a whole FITS file made in memory
    got = pickle.loads(data)
    ref = pickle.loads(pickle.dumps(info.wcs))  # astropy's own round trip, as before
    assert type(got.wcs) is WCS and got.wcs.pixel_shape == ref.pixel_shape == (40, 30)
    assert (got.wcs.sip is not None) == sip
    xy = np.random.default_rng(0).uniform(-50, 90, (500, 2))
    np.testing.assert_array_equal(got.wcs.all_pix2world(xy, 0), ref.all_pix2world(xy, 0))
    sky = ref.all_pix2world(xy, 0)
    np.testing.assert_array_equal(got.wcs.all_world2pix(sky, 0), ref.all_world2pix(sky, 0))
    assert got.wcs.to_header_string(relax=True) == ref.to_header_string(relax=True)
    assert replace(got, wcs=None) == replace(info, wcs=None)  # the rest as it was
    assert pickle.loads(pickle.dumps(replace(info, wcs=None))).wcs is None


def _wcs_beyond_its_header(kind):
    """A WCS of a kind that its header text does not say whole."""
    from astropy.wcs import DistortionLookupTable
    hdr = celestial_header((30, 40))
    if kind == "preserve_units":  # arcsec axes kept in arcsec
        for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            hdr[k] *= 3600.0
        hdr["CUNIT1"] = hdr["CUNIT2"] = "arcsec"
        hdr["CRVAL1"], hdr["CRVAL2"] = 150.0 * 3600, 20.0 * 3600
        return WCS(hdr, preserve_units=True)
    if kind == "alternate":
        alt = fits.Header({k + "A": v for k, v in hdr.items() if k[-1].isdigit()})
        alt["CRVAL1A"] += 0.01
        return WCS(alt, key="A")
    if kind == "three shape":  # a cube's shape on its celestial axes
        hdr.update(NAXIS=3, NAXIS1=40, NAXIS2=30, NAXIS3=3)
        return WCS(hdr, naxis=2)
    w = WCS(hdr)
    w.pixel_shape = (40, 30)
    if kind == "bounds":
        w.pixel_bounds = [(0, 39), (5, 29)]
    elif kind == "attribute":
        w.note = "set on it"
    elif kind == "lookup table":
        w.cpdis1 = DistortionLookupTable(np.full((3, 4), 0.05, np.float32), (1.0, 1.0),
                                         (0.0, 0.0), (20.0, 20.0))
    return w


@pytest.mark.parametrize("kind", ["bounds", "attribute", "lookup table", "alternate",
                                  "preserve_units", "three shape"])
def test_a_wcs_its_header_does_not_hold_is_left_to_its_own_pickle(kind):
    w = _wcs_beyond_its_header(kind)
    assert wcs_state(w) is w and wcs_from_state(w) is w
    if kind == "lookup table":  # (astropy cannot pickle a table made this way: no header)
        return
    info = FrameInfo(index=0, path="f.fits", hdu=0, shape=(30, 40), layout="mono",
                     n_channels=1, wcs=w)
    got, ref = pickle.loads(pickle.dumps(info)).wcs, pickle.loads(pickle.dumps(w))
    xy = np.random.default_rng(1).uniform(0, 30, (200, 2))
    np.testing.assert_array_equal(got.all_pix2world(xy, 0), ref.all_pix2world(xy, 0))
    assert got.pixel_bounds == ref.pixel_bounds and got.pixel_shape == ref.pixel_shape
    assert got.to_header_string(relax=True) == ref.to_header_string(relax=True)
    # the same WCS but plain: its header says it all
    plain = WCS(celestial_header((30, 40)))
    assert wcs_state(plain)[0] == "header" and wcs_state(plain)[2] is None
    assert copy.copy(info).wcs is w  # a copy shares the WCS
