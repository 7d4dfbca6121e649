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
    """``os.fsync`` replaced: records the descriptors it gets, holds each call until
    released, fails the first one with ``error``."""

    def __init__(self, error=None):
        self.calls, self.release, self.error = [], threading.Event(), error
        self.entered = threading.Semaphore(0)

    def __call__(self, fd):
        self.calls.append(fd)
        self.entered.release()
        self.release.wait(10)
        if self.error is not None and len(self.calls) == 1:
            raise self.error


@pytest.fixture
def descriptors(monkeypatch):
    """The descriptors ``os.dup`` made and those ``os.close`` closed while the test runs."""
    seen = type("Descriptors", (), {})()
    seen.dups, seen.closed = [], []
    real_dup, real_close = os.dup, os.close

    def dup(fd):
        new = real_dup(fd)
        seen.dups.append(new)
        return new

    def close(fd):
        seen.closed.append(fd)
        real_close(fd)
    monkeypatch.setattr(durable.os, "dup", dup)
    monkeypatch.setattr(durable.os, "close", close)
    return seen


def test_background_sync_flushes_every_so_many_bytes_one_at_a_time(tmp_path, monkeypatch,
                                                                   descriptors):
    fake = _SlowFsync()
    monkeypatch.setattr(durable.os, "fsync", fake)
    with open(tmp_path / "f", "wb") as f:
        sync = BackgroundSync(f.fileno(), every=100)
        sync.wrote(60)
        assert sync.flushes == 0 and fake.calls == []  # not enough yet
        sync.wrote(40)
        assert fake.entered.acquire(timeout=10)  # the first flush runs, in a thread
        assert sync.flushes == 1 and fake.calls == descriptors.dups  # on its own descriptor
        sync.wrote(500)  # while it runs no other starts: the bytes wait
        assert sync.flushes == 1 and descriptors.closed == []
        fake.release.set()
        sync.wait()
        assert descriptors.closed == descriptors.dups  # closed by the flush when done
        sync.wrote(1)  # the pending 501: the next flush
        sync.wait()
        assert sync.flushes == 2 and len(fake.calls) == 2
        sync.finish()  # and what is left, here, on the writer's descriptor
        assert sync.flushes == 3 and fake.calls[-1] == f.fileno()
    assert descriptors.closed == descriptors.dups  # each flush closed its own


@pytest.mark.parametrize("fails", [False, True])
def test_finish_waits_for_the_flush_under_way_and_raises_its_error(tmp_path, monkeypatch,
                                                                   fails):
    fake = _SlowFsync(error=OSError(5, "Input/output error") if fails else None)
    monkeypatch.setattr(durable.os, "fsync", fake)
    with open(tmp_path / "f", "wb") as f:
        fd = f.fileno()
        sync = BackgroundSync(fd, every=1)
        sync.wrote(1)
        assert fake.entered.acquire(timeout=10)  # held
        outcome = []

        def finish():
            try:
                sync.finish()
                outcome.append("done")
            except OSError as exc:
                outcome.append(exc)
        waiter = threading.Thread(target=finish)
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive() and outcome == [] and len(fake.calls) == 1  # it waits
        fake.release.set()
        waiter.join(10)
    if fails:  # the later flush would succeed: the first one's error is kept
        assert len(outcome) == 1 and "Input/output" in str(outcome[0])
        assert len(fake.calls) == 1
    else:
        assert outcome == ["done"] and fake.calls[-1] == fd
    with pytest.raises(ValueError, match="positive number of bytes"):
        BackgroundSync(3, every=0)


def test_an_error_closing_the_flushs_descriptor_is_raised(tmp_path, monkeypatch):
    real_close = os.close
    dups = []
    real_dup = os.dup
    monkeypatch.setattr(durable.os, "dup", lambda fd: dups.append(real_dup(fd)) or dups[-1])

    def close(fd):
        real_close(fd)
        if fd in dups:  # a file system that writes at close (NFS)
            raise OSError(5, "Input/output error at close")
    monkeypatch.setattr(durable.os, "close", close)
    with open(tmp_path / "f", "wb") as f:
        sync = BackgroundSync(f.fileno(), every=1)
        sync.wrote(1)
        with pytest.raises(OSError, match="at close"):
            sync.finish()
    assert len(dups) == 1


def test_background_sync_leaves_the_flush_to_the_end_without_a_thread(tmp_path, monkeypatch,
                                                                      descriptors):
    import errno
    calls = []
    monkeypatch.setattr(durable.os, "fsync", calls.append)
    with open(tmp_path / "f", "wb") as f:
        off = BackgroundSync(f.fileno(), every=1, background=False)  # Windows
        off.wrote(10)
        assert calls == [] and off.flushes == 0
        off.finish()
        assert calls == [f.fileno()]

        def no_thread(self):
            raise RuntimeError("can't start new thread")
        monkeypatch.setattr(threading.Thread, "start", no_thread)
        sync = BackgroundSync(f.fileno(), every=1)
        sync.wrote(10)  # no error: the flush waits for the end
        assert sync.flushes == 0 and len(descriptors.dups) == 1
        assert descriptors.closed == descriptors.dups  # the descriptor made for it: closed
        sync.finish()
        assert calls == [f.fileno()] * 2 and sync.flushes == 1

        def no_descriptor(fd):
            raise OSError(errno.EMFILE, "Too many open files")
        monkeypatch.setattr(durable.os, "dup", no_descriptor)
        short = BackgroundSync(f.fileno(), every=1)
        short.wrote(10)  # no error either
        short.finish()
        assert calls == [f.fileno()] * 3 and short.flushes == 1


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


def test_an_error_while_a_flush_runs_leaves_nothing_and_does_not_wait_for_it(
        tmp_path, monkeypatch, descriptors):
    fake = _SlowFsync()
    monkeypatch.setattr(durable.os, "fsync", fake)
    monkeypatch.setattr(durable, "SYNC_BYTES", 1)
    full = np.zeros((10, 40, 1), np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with fits_stream(tmp_path / "n.fits", (60, 40), celestial_header((60, 40))) as out:
            out.write(0, 0, full)
            assert fake.entered.acquire(timeout=10)  # a flush is under way, held
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone at once
    assert len(descriptors.dups) == 1 and descriptors.dups[0] not in descriptors.closed
    assert len(descriptors.closed) == 1  # the writer's descriptor, closed without waiting
    flushing = [t for t in threading.enumerate() if t.name == "grid-fsync"]
    fake.release.set()
    for t in flushing:
        t.join(10)
    assert descriptors.closed[1:] == descriptors.dups  # the flush closed its own when done
