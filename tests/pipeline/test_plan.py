"""stack_plan.csv parsing and frame discovery (photometry_graph.pipeline.plan)."""

import logging
import math

import pytest

import grid_mode
from photometry_graph.pipeline import plan
from photometry_graph.pipeline.options import GridModeError
from photometry_graph.pipeline.plan import (PLAN_HEADER, as_float, detect_grid_mode, plan_entries,
                                   read_stack_plan)


def _touch(folder, *names):
    for n in names:
        (folder / n).write_bytes(b"")


def test_standard_plan_is_parsed_in_order_with_paths_relative_to_the_csv(tmp_path):
    (tmp_path / "sub").mkdir()
    _touch(tmp_path / "sub", "a.fits", "b.fits")
    (tmp_path / "stack_plan.csv").write_text(
        PLAN_HEADER + "\n"
        "2,1,EQ,4,S50,2024-01-01,L,10,sub/b.fits,150.0,20.0\n"
        "1,1,EQ,4,S50,2024-01-01,L,20,sub/a.fits,150.1,20.0\n")
    entries = read_stack_plan(tmp_path / "stack_plan.csv")
    assert [e.path for e in entries] == [tmp_path / "sub" / "a.fits", tmp_path / "sub" / "b.fits"]
    assert [e.exposure for e in entries] == [20.0, 10.0]
    assert entries[0].row["telescope"] == "S50"


@pytest.mark.parametrize("delim", [";", "\t", "|"])
def test_delimiter_bom_and_aliases_are_tolerated(tmp_path, delim):
    _touch(tmp_path, "x.fit", "y.FTS")
    text = delim.join(["Order", "FileName", "EXPTIME"]) + "\r\n"
    text += delim.join(["1", "x.fit", "15"]) + "\r\n" + delim.join(["2", "y.FTS", ""]) + "\r\n"
    (tmp_path / "stack_plan.csv").write_bytes(text.encode("utf-8-sig"))
    entries = read_stack_plan(tmp_path / "stack_plan.csv")
    assert [e.path.name for e in entries] == ["x.fit", "y.FTS"]
    assert [e.exposure for e in entries] == [15.0, None]


@pytest.mark.parametrize("value", [r"C:\Users\obs\seestar\lights\f1.fits",
                                   r"lights\f1.fits", "/elsewhere/on/another/disk/f1.fits"])
def test_foreign_paths_are_resolved_by_file_name_in_the_csv_folder(tmp_path, value):
    _touch(tmp_path, "f1.fits")
    (tmp_path / "stack_plan.csv").write_text(f'path\n"{value}"\n')
    assert read_stack_plan(tmp_path / "stack_plan.csv")[0].path == tmp_path / "f1.fits"


def test_windows_relative_subfolder_path_is_found(tmp_path):
    (tmp_path / "lights").mkdir()
    _touch(tmp_path / "lights", "f2.fits")
    (tmp_path / "stack_plan.csv").write_text("file\nlights\\f2.fits\n")
    assert read_stack_plan(tmp_path / "stack_plan.csv")[0].path == tmp_path / "lights" / "f2.fits"


def test_missing_files_are_kept_for_the_pipeline_to_skip(tmp_path):
    (tmp_path / "stack_plan.csv").write_text("file_path\nnope.fits\n")
    entry = read_stack_plan(tmp_path / "stack_plan.csv")[0]
    assert entry.path == tmp_path / "nope.fits" and not entry.path.exists()


def test_row_without_path_is_skipped_with_a_warning(tmp_path, caplog):
    _touch(tmp_path, "a.fits")
    (tmp_path / "stack_plan.csv").write_text("order,file_path\n1,\n2,a.fits\n")
    with caplog.at_level(logging.WARNING):
        entries = read_stack_plan(tmp_path / "stack_plan.csv")
    assert [e.path.name for e in entries] == ["a.fits"]
    assert "[GRID]" in caplog.text and "line 2" in caplog.text


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("\n \n", "is empty"),
    ("order,file_path\n", "lists no frame"),
    ("order,ra,dec\n1,10,20\n", "no file path column"),
])
def test_bad_plans_give_clear_errors(tmp_path, text, match):
    (tmp_path / "stack_plan.csv").write_text(text)
    with pytest.raises(GridModeError, match=match):
        read_stack_plan(tmp_path / "stack_plan.csv")


def test_unreadable_plan_gives_a_clear_error(tmp_path):
    with pytest.raises(GridModeError, match="cannot read the stack plan"):
        read_stack_plan(tmp_path / "missing.csv")


def test_detect_grid_mode(tmp_path):
    assert detect_grid_mode(tmp_path) is False
    assert detect_grid_mode(tmp_path / "does-not-exist") is False
    (tmp_path / "Stack_Plan.CSV").write_text("file_path\n")
    assert detect_grid_mode(tmp_path) is True


def test_without_plan_all_fits_files_are_taken(tmp_path, caplog):
    _touch(tmp_path, "b.FITS", "a.fit", "c.fts", "notes.txt", "d.png")
    (tmp_path / "sub.fits").mkdir()
    with caplog.at_level(logging.INFO):
        entries = plan_entries(tmp_path)
    assert [e.path.name for e in entries] == ["a.fit", "b.FITS", "c.fts"]
    assert "no stack_plan.csv" in caplog.text


def test_folder_without_plan_or_fits_is_an_error(tmp_path):
    _touch(tmp_path, "notes.txt")
    with pytest.raises(GridModeError, match="no stack_plan.csv and no FITS file"):
        plan_entries(tmp_path)


def test_rows_without_order_come_last_in_row_order(tmp_path):
    _touch(tmp_path, "a.fits", "b.fits", "c.fits", "d.fits")
    (tmp_path / "stack_plan.csv").write_text("order,file_path\n,a.fits\n2,b.fits\nx,c.fits\n"
                                             "1,d.fits\n")
    entries = read_stack_plan(tmp_path / "stack_plan.csv")
    assert [e.path.name for e in entries] == ["d.fits", "b.fits", "a.fits", "c.fits"]
    assert [e.order for e in entries] == [1.0, 2.0, math.inf, math.inf]


@pytest.mark.parametrize("value, expected", [
    ("12.5", 12.5), (" 3 ", 3.0), (7, 7.0), ("", None), (None, None), ("abc", None),
    ("nan", None), ("inf", None), (float("-inf"), None),
])
def test_as_float_keeps_finite_numbers_only(value, expected):
    assert as_float(value) == expected


def test_grid_mode_keeps_the_plan_api():
    assert grid_mode.read_stack_plan is read_stack_plan
    assert grid_mode.detect_grid_mode is detect_grid_mode
    assert grid_mode.PlanEntry is plan.PlanEntry and grid_mode.PLAN_HEADER == PLAN_HEADER
    assert grid_mode.GridModeError is GridModeError


def test_duplicate_rows_are_merged_with_one_warning(tmp_path, caplog):
    _touch(tmp_path, "a.fits", "b.fits")
    (tmp_path / "sub").mkdir()
    (tmp_path / "stack_plan.csv").write_text(
        "order,file_path,exposure\n1,a.fits,10\n2,b.fits,20\n3,./a.fits,30\n4,sub/../a.fits,40\n"
        f"5,{tmp_path / 'b.fits'},50\n")
    with caplog.at_level(logging.WARNING):
        entries = read_stack_plan(tmp_path / "stack_plan.csv")
    assert [(e.path.name, e.exposure) for e in entries] == [("a.fits", 10.0), ("b.fits", 20.0)]
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["[GRID] stack_plan.csv: 3 duplicate row(s) merged: a.fits 3x, b.fits 2x "
                      "listed more than once (the first row of each is kept)"]


def _plan_of_one_frame(folder, rows):
    _touch(folder, "frame_0001.fits")
    row = "1,1,mount,4,scope,2024-01-01,L,10,frame_0001.fits,150.0,20.0\n"
    with open(folder / "stack_plan.csv", "w") as fh:
        fh.write(PLAN_HEADER + "\n")
        for _ in range(rows // 10_000):
            fh.write(row * 10_000)
    return folder / "stack_plan.csv"


def test_a_plan_of_one_frame_repeated_is_read_in_bounded_memory(tmp_path, caplog):
    import tracemalloc
    path = _plan_of_one_frame(tmp_path, 20_000)
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING):
            entries = read_stack_plan(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e.path.name for e in entries] == ["frame_0001.fits"]
    assert "19999 duplicate row(s) merged: frame_0001.fits 20000x" in caplog.text
    assert path.stat().st_size > 1.2e6 and peak < 0.5e6  # the file is never held whole


_MEASURE = """
import resource, sys, time
from photometry_graph.pipeline.plan import read_stack_plan
before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
if sys.argv[1] != "-":
    entries = read_stack_plan(sys.argv[1])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, time.perf_counter() - t0)
"""


@pytest.mark.slow
def test_a_million_row_plan_of_one_frame_is_merged_in_seconds_and_bounded_memory(tmp_path):
    import os
    import subprocess
    import sys
    path = _plan_of_one_frame(tmp_path, 1_000_000)

    def measure(arg):
        out = subprocess.run([sys.executable, "-c", _MEASURE, arg], capture_output=True,
                             text=True, check=True, env=dict(
                                 os.environ, PYTHONPATH=os.pathsep.join(sys.path))).stdout
        kb, seconds = out.split()
        return int(kb), float(seconds)

    grown_kb, seconds = measure(str(path))
    print(f"1e6-row plan ({path.stat().st_size / 1e6:.0f} MB): read in {seconds:.2f} s, "
          f"peak RSS +{grown_kb / 1024:.1f} MB")
    assert grown_kb < 16 * 1024  # the 64 MB file (4.5 GB once held as rows) is streamed


def test_a_csv_error_names_the_plan_and_the_line(tmp_path):
    (tmp_path / "stack_plan.csv").write_text("order,file_path\n1,a.fits\n2,\"" + "b" * 200_000
                                             + "\"\n")
    with pytest.raises(GridModeError, match=r"cannot parse the stack plan .*stack_plan.csv "
                                            r"\(line 3\): field larger than field limit"):
        read_stack_plan(tmp_path / "stack_plan.csv")


def test_gzipped_and_tile_compressed_fits_files_are_frames_too(tmp_path, caplog):
    _touch(tmp_path, "a.fits.gz", "b.FIT.GZ", "c.txt.gz", "d.fits.fz", "e.txt.fz")
    assert [e.path.name for e in plan_entries(tmp_path)] == ["a.fits.gz", "b.FIT.GZ",
                                                             "d.fits.fz"]
    _touch(tmp_path, "d.fits", "b.FIT")  # fpack and gzip keep what they compress
    with caplog.at_level(logging.WARNING):
        names = [e.path.name for e in plan_entries(tmp_path)]
    assert names == ["a.fits.gz", "b.FIT", "d.fits"]
    assert "2 compressed copies of FITS files beside them left out" in caplog.text
    _touch(tmp_path, "a.fits.fz")  # two compressed copies of one frame: the frame once
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        names = [e.path.name for e in plan_entries(tmp_path)]
    assert names == ["a.fits.fz", "b.FIT", "d.fits"]
    assert "3 compressed copies of FITS files beside them left out" in caplog.text
