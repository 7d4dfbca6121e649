"""Records of a run's pieces (photometry_graph.pipeline.resume): keys, files, reuse."""

import os
from dataclasses import fields

import numpy as np

from photometry_graph.pipeline.options import GridOptions
from photometry_graph.pipeline.resume import (INDIRECT_OPTIONS, PIECE_OPTIONS,
                                              UNRELATED_OPTIONS, PieceStore, file_signature,
                                              piece_key)


def test_every_run_option_is_known_to_change_pieces_or_not():
    # a new option must say whether pieces depend on it, else a rerun could reuse a piece
    # made with another value
    run = {f.name for f in fields(GridOptions) if f.metadata["run"]}
    known = set(INDIRECT_OPTIONS) | set(UNRELATED_OPTIONS)
    known |= {name for names in PIECE_OPTIONS.values() for name in names}
    assert run <= known <= {f.name for f in fields(GridOptions)}


def test_a_record_matches_only_its_key_and_unchanged_files(tmp_path):
    store = PieceStore(tmp_path / "resume")
    tile = tmp_path / "tile_0001.fits"
    tile.write_bytes(b"pixels")
    key = piece_key({"tile": 1, "frames": [file_signature(tile)], "gain": 1.0})
    assert store.save("tile_0001", key, files=[tile], payload={"n_frames": 3})
    assert store.lookup("tile_0001", key)["payload"] == {"n_frames": 3}
    assert store.lookup("tile_0001", "another key") is None
    assert PieceStore(tmp_path / "resume", reuse=False).lookup("tile_0001", key) is None
    st = tile.stat()
    os.utime(tile, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))  # the tile was touched
    assert store.lookup("tile_0001", key) is None
    tile.unlink()
    assert store.lookup("tile_0001", key) is None


def test_a_record_that_cannot_be_written_never_fails_the_piece(tmp_path):
    (tmp_path / "resume").write_text("a file where the folder should be")
    store = PieceStore(tmp_path / "resume")
    assert store.save("tile_0001", "k", arrays={"a": np.zeros(3)}) is False
    assert store.lookup("tile_0001", "k") is None


def test_arrays_round_trip_exactly_and_clear_removes_everything(tmp_path):
    store = PieceStore(tmp_path / "resume")
    data = np.random.default_rng(0).normal(size=(5, 7, 3)).astype(np.float32)
    assert store.save("binned_x", "k", arrays=dict(data=data, valid=data > 0,
                                                   box=np.array([1, 6, 2, 9])))
    back = store.load_arrays("binned_x")
    assert back["data"].dtype == np.float32 and np.array_equal(back["data"], data)
    assert back["valid"].dtype == bool and back["box"].tolist() == [1, 6, 2, 9]
    store.clear()
    assert not (tmp_path / "resume").exists()


def test_a_frames_description_digests_its_wcs_once_and_tells_wcs_apart(tmp_path,
                                                                        monkeypatch):
    # the WCS header's digest (~0.5 ms) is made once per frame and kept on it; two frames
    # whose WCS differ in one value differ in their description, the same WCS not
    import dataclasses
    import hashlib
    from photometry_graph.datasets import make_frame_survey
    from photometry_graph.pipeline.demo import write_frame_survey
    from photometry_graph.pipeline.frameio import read_frame_info
    from photometry_graph.pipeline.resume import frame_source
    survey = make_frame_survey(1, 2, frame_shape=(60, 90), rng=0)
    folder = write_frame_survey(survey, tmp_path / "frames")
    info = read_frame_info(sorted(folder.glob("*.fits"))[0])
    calls = []
    real = type(info.wcs).to_header_string

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(info.wcs), "to_header_string", counted)
    first, again = frame_source(info), frame_source(info)
    monkeypatch.undo()
    assert len(calls) == 1 and first == again
    assert first["wcs"] == hashlib.sha256(
        info.wcs.to_header_string(relax=True).encode()).hexdigest()
    moved = info.wcs.deepcopy()
    moved.wcs.crval = [moved.wcs.crval[0] + 1e-6, moved.wcs.crval[1]]
    other = dataclasses.replace(info, wcs=moved)  # a copy does not inherit the digest
    assert other.wcs_digest is None and frame_source(other)["wcs"] != first["wcs"]
    assert frame_source(dataclasses.replace(info))["wcs"] == first["wcs"]


def test_the_binned_frames_key_reads_the_grid_as_a_wcs_would(tmp_path):
    # frame_tasks writes the grid's header text into what a binned frame is made from, once
    # for all frames: the key is the one the grid's WCS object gives, so that the binned
    # frames of earlier runs are found again
    from photometry_graph.core.wcsgrid import build_global_grid
    from photometry_graph.datasets import make_frame_survey
    from photometry_graph.pipeline.demo import write_frame_survey
    from photometry_graph.pipeline.frameio import read_frame_info
    from photometry_graph.pipeline.framestage import frame_tasks
    from photometry_graph.pipeline.options import resolve_options
    from photometry_graph.pipeline.resume import RunPieces, frame_source, piece_key
    paths = write_frame_survey(make_frame_survey(1, 2, frame_shape=(120, 160), rng=0),
                               tmp_path / "frames")
    infos = [read_frame_info(p, index=k) for k, p in enumerate(sorted(paths.glob("*.fits")))]
    grid = build_global_grid([f.wcs for f in infos], [f.shape for f in infos], tile_size=256)
    opts = resolve_options({})
    tasks, _ = frame_tasks(infos, grid, opts, RunPieces(tmp_path / "out", opts), bin_factor=4)
    for t in tasks:
        made_from = dict(t["record"]["made_from"], grid=grid.wcs)
        assert made_from["frame"] == frame_source(t["frame"])
        assert t["record"]["key"] == piece_key(made_from)
