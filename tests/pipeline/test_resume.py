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
