"""Large files written in pieces and flushed to disk while they fill
(photometry_graph.pipeline.durable)."""

import os
import threading

import numpy as np
import pytest
from astropy.io import fits

from photometry_graph.pipeline import durable
from photometry_graph.pipeline.durable import BackgroundSync, pwrite_all, pwrite_rows
from photometry_graph.pipeline.fileio import fits_stream

from conftest import celestial_header


def test_pwrite_all_and_pwrite_rows_put_the_bytes_where_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(durable, "WRITE_PIECE", 7)  # many pieces, the last a short one
    path = tmp_path / "f.bin"
    path.write_bytes(b"." * 64)
    fd = os.open(path, os.O_WRONLY)
    try:
        pwrite_all(fd, np.frombuffer(b"abcdefghijklmnopqrstuvw", np.uint8), 3)
        rows = np.frombuffer(b"ABCDEF", np.uint8).reshape(3, 2)
        pwrite_rows(fd, rows, 40, 8)  # rows 8 bytes apart
    finally:
        os.close(fd)
    assert path.read_bytes() == (b"..." + b"abcdefghijklmnopqrstuvw" + b"." * 14 + b"AB"
                                 + b"." * 6 + b"CD" + b"." * 6 + b"EF" + b"." * 6)


class _SlowFsync:
    """``os.fsync`` replaced: records the descriptors, holds each call until released."""

    def __init__(self, error=None):
        self.calls, self.release, self.error = [], threading.Event(), error
        self.entered = threading.Semaphore(0)

    def __call__(self, fd):
        self.calls.append(fd)
        self.entered.release()
        self.release.wait(10)
        if self.error is not None and len(self.calls) == 1:
            raise self.error


def test_background_sync_flushes_every_so_many_bytes_one_at_a_time(monkeypatch):
    fake = _SlowFsync()
    monkeypatch.setattr(durable.os, "fsync", fake)
    sync = BackgroundSync(5, every=100)
    sync.wrote(60)
    assert sync.flushes == 0 and fake.calls == []  # not enough yet
    sync.wrote(40)
    assert fake.entered.acquire(timeout=10)  # the first flush runs, in a thread
    assert sync.flushes == 1 and fake.calls == [5]
    sync.wrote(500)  # while it runs no other starts: the bytes wait
    assert sync.flushes == 1
    fake.release.set()
    sync.wait()
    sync.wrote(1)  # the pending 501: the next flush
    sync.wait()
    assert sync.flushes == 2 and fake.calls == [5, 5]
    sync.finish()  # and what is left, here
    assert sync.flushes == 3 and fake.calls == [5, 5, 5]


def test_background_sync_raises_the_error_of_a_flush_in_the_background(monkeypatch):
    fake = _SlowFsync(error=OSError(5, "Input/output error"))
    fake.release.set()
    monkeypatch.setattr(durable.os, "fsync", fake)
    sync = BackgroundSync(3, every=1)
    sync.wrote(1)
    with pytest.raises(OSError, match="Input/output"):
        sync.finish()  # the later flush would succeed: the first one's error is kept
    assert fake.calls == [3]
    with pytest.raises(ValueError, match="positive number of bytes"):
        BackgroundSync(3, every=0)


def test_fits_stream_flushes_the_file_while_it_fills(tmp_path, monkeypatch):
    calls, real = [], os.fsync

    def fsync(fd):
        calls.append(threading.current_thread().name)
        real(fd)
    monkeypatch.setattr(durable.os, "fsync", fsync)
    monkeypatch.setattr(durable, "SYNC_BYTES", 40 * 10 * 4)  # a band of 10 rows
    full = np.random.default_rng(2).normal(size=(60, 40, 1)).astype(np.float32)
    target = tmp_path / "m.fits"
    with fits_stream(target, (60, 40), celestial_header((60, 40))) as out:
        for y0 in range(0, 60, 10):
            out.write(y0, 0, full[y0:y0 + 10])
    assert "grid-fsync" in calls and calls[-1] == threading.current_thread().name
    with fits.open(target) as hdul:
        np.testing.assert_array_equal(hdul[0].data, full[..., 0])
    # an error while it fills: the flush under way ends before the file is closed
    monkeypatch.setattr(durable, "SYNC_BYTES", 1)
    with pytest.raises(RuntimeError, match="boom"):
        with fits_stream(tmp_path / "n.fits", (60, 40), celestial_header((60, 40))) as out:
            out.write(0, 0, full[:10])
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fits"]
    assert not [t for t in threading.enumerate() if t.name == "grid-fsync"]
