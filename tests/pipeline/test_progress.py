"""Progress records, the host callback bridge and the console output (photometry_graph.pipeline.progress)."""

import io
import logging

import grid_mode
from photometry_graph._log import get_logger, grid_info, grid_warning
from photometry_graph.pipeline.progress import (PROGRESS_LINES, ConsoleProgress, Progress,
                                                callback_logging, console_logging, reported)


def _progress_of(caplog):
    return [getattr(r, "grid_progress", None) for r in caplog.records]


def test_a_stage_of_many_items_logs_about_a_hundred_evenly_spaced_lines():
    # a session of thousands of frames: the first, the last and evenly spaced ones between;
    # a stage of up to PROGRESS_LINES items logs every one
    for total in (1, 2, 37, PROGRESS_LINES, PROGRESS_LINES + 1, 4993, 100_000):
        shown = [k for k in range(1, total + 1) if reported(k, total)]
        assert shown[0] == 1 and shown[-1] == total
        assert len(shown) <= PROGRESS_LINES + 2
        if total <= PROGRESS_LINES:
            assert shown == list(range(1, total + 1))
        else:
            gaps = set(b - a for a, b in zip(shown[1:-2], shown[2:-1]))
            assert len(gaps) == 1 and len(shown) >= PROGRESS_LINES // 2
    assert [k for k in range(1, 11) if reported(k, 10, lines=3)] == [1, 4, 8, 10]


def test_progress_maps_stages_and_never_goes_back(caplog):
    log = get_logger("photometry_graph.test_progress")
    p = Progress(log)
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        p.stage(10, 30)("frame %d of %d", 0.5, 1, 2)
        p("no percentage")
        p.stage(0, 100)("lower than before", 0.05)
        p.stage(30, 80)("clipped", 7.0)
    assert _progress_of(caplog) == [20.0, None, 20.0, 80.0]
    assert caplog.records[0].getMessage() == "[GRID] frame 1 of 2"
    assert {r.name for r in caplog.records} == {"photometry_graph.test_progress"}


def test_grid_mode_progress_reports_on_the_pipeline_logger(caplog):
    with caplog.at_level(logging.INFO, logger="photometry_graph"):
        grid_mode._Progress()("step", 0.5)
    assert caplog.records[0].name == "photometry_graph.grid_mode"
    assert caplog.records[0].grid_progress == 50.0


def test_callback_receives_grid_records_with_host_levels():
    got = []
    log = get_logger("photometry_graph.test_progress")
    root = logging.getLogger("photometry_graph")
    before = (root.level, list(root.handlers))
    with callback_logging(lambda msg, pct, level: got.append((msg, pct, level))):
        Progress(log).stage(0, 10)("half", 0.5)
        grid_warning(log, "careful")
        log.info("not ours")  # no [GRID] prefix: not forwarded
    grid_info(log, "after the block")  # not forwarded either
    # a record without a percentage of its own gets the last one: every call has a number
    assert got == [("[GRID] half", 5.0, "INFO"), ("[GRID] careful", 5.0, "WARN")]
    assert (root.level, list(root.handlers)) == before


def test_a_failing_callback_never_breaks_the_run(monkeypatch):
    monkeypatch.setattr(logging, "raiseExceptions", False)  # handleError stays silent

    calls = []

    def broken(*args):
        calls.append(args)
        raise RuntimeError("host bug")

    with callback_logging(broken):
        grid_info(get_logger("photometry_graph.test_progress"), "still running")
        reached = True
    assert reached and calls == [("[GRID] still running", 0.0, "INFO")]  # 0: before any


def test_callback_none_changes_nothing():
    root = logging.getLogger("photometry_graph")
    before = (root.level, list(root.handlers))
    with callback_logging(None):
        assert (root.level, list(root.handlers)) == before


def test_console_logging_filters_levels_and_restores_them():
    log = get_logger("photometry_graph.test_progress")
    root, ours = logging.getLogger(), logging.getLogger("photometry_graph")
    before = (root.level, ours.level, list(root.handlers))
    stream = io.StringIO()
    with console_logging(quiet=False, verbose=0, stream=stream) as bar:
        grid_info(log, "info shown")
        log.debug("[GRID] debug hidden")
        bar("x", 40.0, "INFO")
        assert bar.bar.disable  # not a terminal: no bar
    with console_logging(quiet=True, stream=stream):
        grid_info(log, "quiet hides info")
        grid_warning(log, "quiet shows warnings")
    text = stream.getvalue()
    assert "INFO [GRID] info shown" in text and "debug hidden" not in text
    assert "quiet hides info" not in text and "WARN [GRID] quiet shows warnings" in text
    assert (root.level, ours.level, list(root.handlers)) == before


def test_console_progress_bar_only_moves_forward():
    bar = ConsoleProgress(io.StringIO())
    bar("a", 30.0, "INFO")
    bar("b", 20.0, "INFO", extra="host keywords are accepted")
    bar("c", None, "WARN")
    assert bar.bar.n == 30.0
    bar("d", 55.5, "INFO")
    assert bar.bar.n == 55.5
    bar.close()
    bar.close()  # again: no effect


def test_a_console_line_is_written_with_its_end_in_one_write():
    # a Ctrl-C between a line and its newline would leave the line open: the command's
    # "stopped by SIGINT" would follow it on the same line
    from photometry_graph.pipeline.progress import TqdmLogHandler

    class Writes(io.StringIO):
        def __init__(self):
            super().__init__()
            self.calls = []

        def write(self, s):
            self.calls.append(s)
            return super().write(s)

    stream = Writes()
    handler = TqdmLogHandler(stream)
    logger = logging.getLogger("photometry_graph.test_one_write")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("reading frames 3/9")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "reading frames 3/9\n"
    assert [c for c in stream.calls if c] == ["reading frames 3/9\n"]
