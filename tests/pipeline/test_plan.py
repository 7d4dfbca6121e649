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
