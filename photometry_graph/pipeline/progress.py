"""Progress of a run: ``[GRID]`` log records carry it, to a host's callback or a console bar.

The pipeline reports progress as ``[GRID]`` INFO records whose ``grid_progress`` attribute
holds a percentage (:class:`Progress`).  :func:`callback_logging` forwards every ``[GRID]``
record of the package to a host program's ``progress_callback(message, progress, level)``;
:func:`console_logging` shows the records on a stream and the percentage as a tqdm bar
(the ``grid-mode`` command line).
"""

import logging
import sys
from contextlib import contextmanager

from tqdm import tqdm

from .._log import GRID_PREFIX, get_logger

__all__ = ["LEVELS", "PROGRESS_LINES", "reported", "Progress", "CallbackHandler",
           "callback_logging", "scaled_callback", "HostLevelFormatter", "TqdmLogHandler",
           "ConsoleProgress", "console_logging"]

#: logging level -> level name of the host program's callback
LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN",
          logging.ERROR: "ERROR", logging.CRITICAL: "ERROR"}


#: Progress lines a stage of many items (frames, mosaic chunks) logs between its first and
#: its last one, at most.
PROGRESS_LINES = 100


def reported(done, total, lines=PROGRESS_LINES):
    """Whether item ``done`` (from 1) of ``total`` gets a progress line of its own.

    The first, the last and about ``lines`` evenly spaced ones between: a session of
    thousands of frames logs a hundred lines, not one per frame (each line also costs the
    calling process ~1 ms of CPU while the workers compute).

    Examples
    --------
    >>> [k for k in range(1, 1001) if reported(k, 1000)][:4], reported(1000, 1000)
    ([1, 10, 20, 30], True)
    >>> sum(reported(k, 4993) for k in range(1, 4994))
    101
    """
    step = max(1, -(-int(total) // max(1, int(lines))))
    return done == 1 or done == total or done % step == 0


class CallbackHandler(logging.Handler):
    """Forward [GRID] log records to ``callback(message, progress, level)``.

    ``progress`` is the record's ``grid_progress`` (a percentage) or, for the records of a
    stage that carry none (its counts, its warnings), the last percentage reported (0 before
    any), so that every call gets a number; ``level`` is one of :data:`LEVELS`' values.
    Records without the ``[GRID]`` prefix are not forwarded; an exception raised by the
    callback is reported by :meth:`logging.Handler.handleError`, never raised into the run.
    """

    def __init__(self, callback):
        super().__init__(logging.DEBUG)
        self.callback = callback
        self.last = 0.0

    def emit(self, record):
        try:
            msg = record.getMessage()
            if msg.startswith(GRID_PREFIX):
                pct = getattr(record, "grid_progress", None)
                self.last = self.last if pct is None else pct
                self.callback(msg, self.last, LEVELS.get(record.levelno, "INFO"))
        except Exception:  # a host's callback must never break the run
            self.handleError(record)


class Progress:
    """Monotonic percentage over stages, reported as [GRID] INFO log records.

    ``stage(lo, hi)`` maps the fractions of the next messages to ``lo..hi`` percent;
    ``progress(message, fraction, *args)`` logs ``message % args`` with the percentage
    (never lower than one reported before) in the record's ``grid_progress``, or None when
    ``fraction`` is None.

    Parameters
    ----------
    logger : logging.Logger, optional
        Where the records go (default: the ``photometry_graph.pipeline.progress`` logger).

    Examples
    --------
    >>> p = Progress().stage(10, 30)
    >>> p("frame %d", 0.5, 1)
    >>> p.last
    20.0
    """

    def __init__(self, logger=None):
        self.logger = get_logger(__name__) if logger is None else logger
        self.lo, self.hi, self.last = 0.0, 100.0, 0.0

    def stage(self, lo, hi):
        """Map the next fractions to ``lo..hi`` percent; returns self."""
        self.lo, self.hi = float(lo), float(hi)
        return self

    def __call__(self, message, fraction=None, *args):
        pct = None
        if fraction is not None:
            pct = self.lo + (self.hi - self.lo) * min(max(float(fraction), 0.0), 1.0)
            pct = self.last = round(max(self.last, pct), 2)
        self.logger.info(f"{GRID_PREFIX} {message}", *args, extra={"grid_progress": pct})


@contextmanager
def callback_logging(callback):
    """Route the package's [GRID] records (INFO and up at least) to ``callback`` meanwhile.

    The ``photometry_graph`` logger gets a :class:`CallbackHandler` and, if needed, the
    INFO level; both are restored on exit.  ``callback=None`` does nothing.
    """
    if callback is None:
        yield
        return
    root, handler = logging.getLogger("photometry_graph"), CallbackHandler(callback)
    old = root.level
    root.setLevel(min(root.getEffectiveLevel(), logging.INFO))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def scaled_callback(callback, lo, hi):
    """``callback`` with the percentages of a run mapped to ``lo..hi`` (None: None).

    For a caller that makes several runs under one progress bar (the demo: its run and
    the plain run for comparison).

    Examples
    --------
    >>> got = []
    >>> cb = scaled_callback(lambda m, p, level, **kw: got.append(p), 80, 100)
    >>> cb("[GRID] half", 50.0, "INFO"); got
    [90.0]
    """
    if callback is None:
        return None

    def scaled(message, progress, level, **kwargs):
        pct = None if progress is None else lo + (hi - lo) * float(progress) / 100.0
        return callback(message, pct, level, **kwargs)
    return scaled


class HostLevelFormatter(logging.Formatter):
    """``LEVEL message`` with the host program's level names (:data:`LEVELS`: ``WARN``)."""

    def formatMessage(self, record):
        return f"{LEVELS.get(record.levelno, record.levelname)} {record.message}"


class TqdmLogHandler(logging.StreamHandler):
    """Log handler writing through tqdm, so that a progress bar is not broken.

    Records flagged ``grid_final_error`` (the error that ends a run, which the command
    line prints itself as its last line) are not shown, so that an error is printed once.
    """

    def filter(self, record):
        return not getattr(record, "grid_final_error", False) and super().filter(record)

    def emit(self, record):
        try:  # the line and its end in one write: a Ctrl-C between them would leave the
            # line open, and the command's last line would follow it on the same line
            tqdm.write(self.format(record) + "\n", file=self.stream, end="")
        except Exception:
            self.handleError(record)


class ConsoleProgress:
    """A tqdm bar (0-100 %) fed as ``progress_callback(message, progress, level)``.

    Parameters
    ----------
    stream : file object
        Where the bar is drawn.
    disable : bool
        No bar at all.
    """

    def __init__(self, stream, disable=False):
        self.bar = tqdm(total=100, disable=disable, file=stream,
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")

    def __call__(self, message, progress, level, **kwargs):
        if progress is not None and progress > self.bar.n:
            self.bar.update(progress - self.bar.n)

    def close(self):
        """Remove the bar (again: no effect)."""
        self.bar.close()


@contextmanager
def console_logging(*, quiet=False, verbose=0, stream=None):
    """Log to ``stream`` through tqdm and yield a :class:`ConsoleProgress` meanwhile.

    Each line starts with the level name the host program's callback gets (``INFO``,
    ``WARN``, ``ERROR``, ``DEBUG``).
    Records of the ``photometry_graph`` loggers are shown from INFO (``verbose``: DEBUG),
    other libraries' from WARNING (``verbose > 1``: DEBUG); ``quiet`` shows warnings and
    errors only and no bar.  The bar is drawn only when ``stream`` is a terminal.  The
    handler and the logger levels are restored on exit.

    Parameters
    ----------
    quiet : bool
    verbose : int
    stream : file object, optional
        Default: ``sys.stderr`` at the time of the call.
    """
    stream = sys.stderr if stream is None else stream
    handler = TqdmLogHandler(stream)  # progress travels in INFO records: filter here
    handler.setFormatter(HostLevelFormatter())
    handler.setLevel(logging.WARNING if quiet else logging.DEBUG)
    root, ours = logging.getLogger(), logging.getLogger("photometry_graph")
    saved = root.level, ours.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)
    ours.setLevel(logging.DEBUG if verbose else logging.INFO)
    bar = ConsoleProgress(stream, disable=quiet or not stream.isatty())
    try:
        yield bar
    finally:
        bar.close()
        root.removeHandler(handler)
        root.setLevel(saved[0])
        ours.setLevel(saved[1])
