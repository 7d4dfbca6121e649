"""The frame pass of a run (:func:`photometry_graph.pipeline.pieces.frame_pass`)."""

import dataclasses

import numpy as np
import pytest

from photometry_graph.core.wcsgrid import build_global_grid
from photometry_graph.datasets import make_frame_survey
from photometry_graph.pipeline.demo import write_frame_survey
from photometry_graph.pipeline.frameio import read_frame_info
from photometry_graph.pipeline.options import resolve_options
from photometry_graph.pipeline.pieces import BinnedFile, frame_pass


def _frames_on_grid(folder, n, rng, **kw):
    """``n`` synthetic frames of 200 x 300 in a row, written to ``folder`` and read back, and
    their global grid."""
    survey = make_frame_survey(1, n, frame_shape=(200, 300), rng=rng, **kw)
    paths = write_frame_survey(survey, folder)
    files = sorted(p for p in paths.iterdir() if p.suffix == ".fits")
    infos = [read_frame_info(p, index=k) for k, p in enumerate(files)]
    grid = build_global_grid([f.wcs for f in infos], [f.shape for f in infos], tile_size=256)
    return infos, grid


def test_a_frame_pass_with_a_scratch_folder_writes_the_binned_frame_there(tmp_path):
    # the worker writes its binned frame and returns readers of its files: the same pixels
    # as the arrays it returns without a scratch folder
    infos, grid = _frames_on_grid(tmp_path / "frames", 2, 1)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    task = dict(index=1, frame=infos[1], options=resolve_options({}), grid_wcs=grid.wcs,
                grid_shape=grid.shape, bin_factor=4)
    noise, saturation, held, geometry = frame_pass(dict(task))
    noise2, saturation2, written, geometry2 = frame_pass(dict(task, scratch=str(scratch)))
    assert (noise2, saturation2) == (noise, saturation) and noise > 0
    assert written[0] == held[0]
    assert all(isinstance(f, BinnedFile) for f in written[1:])
    assert sorted(p.name for p in scratch.iterdir()) == ["frame_000001_data.npy",
                                                         "frame_000001_mask.npy"]
    np.testing.assert_array_equal(written[1](), held[1])
    np.testing.assert_array_equal(written[2](), held[2])
    assert held[2].any()
    assert not [p for p in scratch.iterdir() if ".tmp" in p.name]


def test_a_frame_pass_that_cannot_write_its_binned_frame_returns_the_arrays(tmp_path):
    # a full or unwritable scratch folder costs the frame nothing: the arrays travel back
    survey = make_frame_survey(1, 2, frame_shape=(200, 300), rng=1)
    paths = write_frame_survey(survey, tmp_path / "frames")
    info = read_frame_info(sorted(paths.glob("*.fits"))[0])
    grid = build_global_grid([info.wcs], [info.shape], tile_size=256)
    task = dict(index=0, frame=info, options=resolve_options({}), grid_wcs=grid.wcs,
                grid_shape=grid.shape, bin_factor=4, scratch=str(tmp_path / "missing"))
    _, _, binned, _ = frame_pass(task)
    assert isinstance(binned[1], np.ndarray) and binned[2].any()


def test_a_spilled_frame_maps_its_pixels_without_parsing_its_header(tmp_path, monkeypatch):
    # the readers know where the pixels lie in their files: np.load is not called, the
    # arrays are those written, read-only, and the readers travel to other processes
    import pickle
    from photometry_graph.core.tiles import BBox
    from photometry_graph.pipeline.pieces import spill_binned
    rng = np.random.default_rng(0)
    data = rng.normal(size=(30, 40, 1)).astype(np.float32)
    valid = rng.random((30, 40)) > 0.2
    box, fdata, fmask = spill_binned((BBox(2, 32, 5, 45), data, valid), tmp_path, 7)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load called"))
    for reader, arr in ((fdata, data), (fmask, valid)):
        got = pickle.loads(pickle.dumps(reader))()
        assert got.dtype == arr.dtype and not got.flags.writeable
        np.testing.assert_array_equal(got, arr)
    assert box == BBox(2, 32, 5, 45) and fdata.shape == (30, 40, 1)


def test_the_frame_pass_gives_the_geometry_the_caller_would_compute(tmp_path):
    # the footprint and the homography of the tiles come from the workers: the task crosses
    # a process boundary (pickled: a WCS travels as its header, its values rounded in the
    # last digits), and what comes back is what the caller's own objects give, the same
    # box and the same map to 1e-6 px; a task without the grid leaves the geometry to the
    # caller
    import pickle
    from photometry_graph.core.wcsgrid import footprint_bbox
    from photometry_graph.pipeline.pieces import frame_geometry
    from photometry_graph.stacking.resample import wcs_homography
    kinds = []
    for sip in (False, True):  # TAN frames have a homography, SIP ones keep their WCS
        infos, grid = _frames_on_grid(tmp_path / f"frames_{sip}", 2, 2, sip=sip)
        for info in infos:
            task = dict(index=info.index, frame=info, options=resolve_options({}),
                        grid_wcs=grid.wcs, grid_shape=grid.shape, bin_factor=None)
            *_, geometry = frame_pass(pickle.loads(pickle.dumps(task)))
            footprint = footprint_bbox(info.wcs, info.shape, grid.wcs, grid.shape)
            assert geometry[0] == footprint and not footprint.is_empty
            expected = wcs_homography(info.wcs, grid.wcs, footprint)
            kinds.append(expected is None)
            if expected is None:
                assert geometry[1] is None
            else:
                corners = np.array([[footprint.x0, footprint.x1 - 1] * 2,
                                    [footprint.y0] * 2 + [footprint.y1 - 1] * 2, [1.0] * 4])
                got, want = geometry[1] @ corners, expected @ corners
                np.testing.assert_allclose(got[:2] / got[2], want[:2] / want[2], rtol=0,
                                           atol=1e-6)  # frame pixels
            *_, none = frame_pass(dict(index=0, frame=info, options=resolve_options({})))
            assert none is None
    assert kinds == [False, False, True, True]
    far = infos[0].wcs.deepcopy()
    far.wcs.crval = [far.wcs.crval[0] + 40.0, far.wcs.crval[1]]
    assert frame_geometry(dataclasses.replace(infos[0], wcs=far), grid.wcs,
                          grid.shape) == (None, None)


def test_tasks_carrying_the_grid_as_a_shared_wcs_bin_the_frames_alike(tmp_path, monkeypatch):
    # the frame tasks carry the grid pickled once (SharedWCS): each worker thread rebuilds it
    # once, and every task gets what its own pickled copy of the grid would give; the binning
    # reads the frame through the homography of the geometry, not one fitted to its own box
    # (values within 1e-6 of it)
    import pickle
    from photometry_graph.photometry.frames import bin_frame_on_grid
    from photometry_graph.pipeline.frameio import load_frame
    from photometry_graph.pipeline.pieces import SharedWCS, unshared
    infos, grid = _frames_on_grid(tmp_path / "frames", 3, 3)
    shared = SharedWCS(grid.wcs)
    opts = resolve_options({})
    tasks = [dict(index=k, frame=f, options=opts, grid_wcs=shared, grid_shape=grid.shape,
                  bin_factor=4) for k, f in enumerate(infos)]
    blobs = [pickle.dumps(t) for t in tasks]
    got = [pickle.loads(b) for b in blobs]
    assert unshared(got[0]["grid_wcs"]) is unshared(got[2]["grid_wcs"])
    made = shared._pickled   # the grid was pickled when shared, and every task reuses it
    assert made is not None and pickle.dumps(tasks[0]) and shared._pickled is made
    import photometry_graph.photometry.frames as frames_module
    fitted = []
    fit = frames_module.wcs_homography
    monkeypatch.setattr(frames_module, "wcs_homography",
                        lambda *a, **k: fitted.append(1) or fit(*a, **k))
    for task, blob in zip(got, blobs):
        plain = pickle.loads(pickle.dumps(dict(pickle.loads(blob),
                                               grid_wcs=pickle.loads(pickle.dumps(grid.wcs)))))
        *_, binned, geometry = frame_pass(task)
        *_, binned_plain, geometry_plain = frame_pass(plain)
        assert not fitted  # the binning took the geometry's homography
        assert geometry[0] == geometry_plain[0]
        np.testing.assert_array_equal(geometry[1], geometry_plain[1])
        assert binned[0] == binned_plain[0]
        np.testing.assert_array_equal(binned[1], binned_plain[1])
        # the homography of the geometry against one fitted to the binning's own box
        data, _ = load_frame(task["frame"], mask_eps=opts.mask_eps)
        own = bin_frame_on_grid(data, task["frame"].wcs, grid.wcs, grid.shape, 4)
        assert fitted  # fitted here, without a homography
        fitted.clear()
        assert own[0] == binned[0]
        np.testing.assert_array_equal(np.isnan(own[1]), np.isnan(binned[1]))
        np.testing.assert_allclose(binned[1], own[1], rtol=1e-6, atol=1e-6)


def test_a_shared_wcs_is_rebuilt_once_in_each_thread():
    # astropy's WCS objects are not shared between threads: each thread rebuilds its own
    import pickle
    from concurrent.futures import ThreadPoolExecutor
    from astropy.wcs import WCS
    from photometry_graph.pipeline.pieces import SharedWCS, unshared
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    blob = pickle.dumps(SharedWCS(w))

    def two():
        a, b = pickle.loads(blob), pickle.loads(blob)
        return unshared(a), unshared(b)

    with ThreadPoolExecutor(1) as pool:
        a1, b1 = pool.submit(two).result()
    here = two()
    assert a1 is b1 and here[0] is here[1] and here[0] is not a1
    assert list(here[0].wcs.crval) == list(a1.wcs.crval) == [150.0, 2.0]
