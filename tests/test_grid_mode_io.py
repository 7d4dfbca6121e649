"""The run's first stage (grid_mode._frames_stage): bad frames skipped with warnings.

The reading of one frame is tested in tests/pipeline/test_frameio.py, the output folder
checks in tests/pipeline/test_fileio.py, the output files in tests/pipeline/test_fileio.py.
"""

import logging
import os

import numpy as np
import pytest
from astropy.io import fits

import grid_mode
from grid_mode import GridModeError

def test_bad_frames_are_skipped_with_warnings(tmp_path, frame_factory, caplog):
    good = [frame_factory(f"g{k}.fits", crval=(150.0 + 0.003 * k, 20.0)) for k in range(2)]
    (tmp_path / "text.fits").write_text("this is not a FITS file\n")
    trunc = frame_factory("trunc.fits", shape=(200, 300))
    with open(trunc, "r+b") as f:
        f.truncate(os.path.getsize(trunc) // 2)
    nowcs = tmp_path / "nowcs.fits"
    fits.PrimaryHDU(np.ones((40, 60), np.float32)).writeto(nowcs)
    nan = frame_factory("nan.fits", data=np.full((40, 60), np.nan, np.float32))
    zero = frame_factory("zero.fits", data=np.zeros((40, 60), np.float32))
    rgb = frame_factory("rgb.fits", data=np.ones((3, 40, 60), np.float32))
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "table.fits")
    entries = [grid_mode.PlanEntry(path=p) for p in
               [*good, tmp_path / "missing.fits", tmp_path / "text.fits", trunc, nowcs, nan,
                zero, rgb, tmp_path / "table.fits"]]
    with caplog.at_level(logging.WARNING):  # headers, then the pixels of each frame
        frames = grid_mode._frames_stage(entries, grid_mode.GridOptions(),
                                         grid_mode._Progress())[0]
    assert [os.path.basename(f.path) for f in frames] == ["g0.fits", "g1.fits"]
    assert [f.index for f in frames] == [0, 1]
    assert all(np.isfinite(f.noise) and 0.7 < f.noise < 1.3 for f in frames)
    text = caplog.text
    for needle in ["missing.fits: the file does not exist", "text.fits: it is not a readable",
                   "trunc.fits: it is truncated", "nowcs.fits: it has no celestial WCS",
                   "nan.fits: it holds no usable pixel", "zero.fits: it holds no usable pixel",
                   "rgb.fits: 3 channel(s) while most frames have 1",
                   "table.fits: it holds no image HDU"]:
        assert needle in text, needle
    assert "Traceback" not in text


def test_no_usable_frame_is_an_error(tmp_path):
    (tmp_path / "a.fits").write_text("nope")
    with pytest.raises(GridModeError, match="no usable frame left: 1 listed"):
        grid_mode._read_frames([grid_mode.PlanEntry(path=tmp_path / "a.fits")],
                               grid_mode.GridOptions(), grid_mode._Progress())


@pytest.mark.parametrize("frame_photometry", [True, False])
def test_the_geometry_of_the_kept_frames_is_that_of_the_final_grid(tmp_path, frame_factory,
                                                                   frame_photometry):
    # the frames' footprints and homographies come from the workers' pass (with the binning)
    # or from the caller (without): one per kept frame, in their order, on the grid laid out
    # again without an empty frame that had widened the canvas
    from photometry_graph.pipeline.pieces import frame_geometry
    paths = [frame_factory(f"g{k}.fits", shape=(120, 160), rot_deg=4.0 * k,
                           crval=(150.0 + 0.02 * k, 20.0)) for k in range(3)]
    paths.insert(1, frame_factory("empty.fits", shape=(120, 160), crval=(150.3, 20.0),
                                  data=np.full((120, 160), np.nan, np.float32)))
    opts = grid_mode.GridOptions(frame_photometry=frame_photometry, workers=1)
    entries = [grid_mode.PlanEntry(path=p) for p in paths]
    wide = grid_mode._global_grid(grid_mode._read_frames(entries, opts, grid_mode._Progress()),
                                  opts)
    frames, grid, _, _, _, geometry = grid_mode._frames_stage(entries, opts,
                                                              grid_mode._Progress())
    assert [os.path.basename(f.path) for f in frames] == ["g0.fits", "g1.fits", "g2.fits"]
    assert grid.shape[1] < wide.shape[1] and len(geometry) == 3
    for f, (footprint, H) in zip(frames, geometry):
        want_fp, want_H = frame_geometry(f, grid.wcs, grid.shape)
        assert footprint == want_fp and H is not None
        corners = np.array([[footprint.x0, footprint.x1 - 1] * 2,
                            [footprint.y0] * 2 + [footprint.y1 - 1] * 2, [1.0] * 4])
        got, want = H @ corners, want_H @ corners
        np.testing.assert_allclose(got[:2] / got[2], want[:2] / want[2], rtol=0, atol=1e-6)
