"""The frames of a Grid/Survey run: the ``stack_plan.csv`` of the input folder, read leniently.

:func:`detect_grid_mode` tells whether a folder holds a stack plan, :func:`read_stack_plan`
parses one (sniffed delimiter, column aliases, foreign paths resolved by file name) and
:func:`plan_entries` lists the frames of an input folder: those of its plan, else all of its
FITS files.
"""

import csv
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._log import get_logger, grid_info, grid_warning
from ..launch import FITS_SUFFIXES  # the command applies the same
from .options import GridModeError

__all__ = ["PLAN_NAME", "PLAN_HEADER", "FITS_SUFFIXES", "PATH_ALIASES", "EXPOSURE_ALIASES",
           "ORDER_ALIASES", "PlanEntry", "detect_grid_mode", "find_plan", "as_float",
           "read_stack_plan", "plan_entries", "without_compressed_copies"]

logger = get_logger(__name__)

PLAN_NAME = "stack_plan.csv"
PLAN_HEADER = "order,batch_id,mount,bortle,telescope,session_date,filter,exposure,file_path,ra,dec"
PATH_ALIASES = ("file_path", "filepath", "path", "file", "filename", "file_name", "fits",
                "frame", "fullpath", "full_path")
EXPOSURE_ALIASES = ("exposure", "exptime", "exp", "exposure_time", "exp_time", "exposure_s")
ORDER_ALIASES = ("order", "index", "idx", "#")


@dataclass
class PlanEntry:
    """One frame listed by the stack plan (or found in the folder).

    Attributes
    ----------
    path : Path
        The frame file (it may not exist: the pipeline skips it with a warning).
    order : float
        The plan's ``order`` value; ``inf`` when absent.
    exposure : float or None
        The plan's exposure in seconds, used when the FITS header has none.
    row : dict
        The plan row, by normalised column name.
    """

    path: Path
    order: float = math.inf
    exposure: float = None
    row: dict = field(default_factory=dict)


def detect_grid_mode(input_folder):
    """Tell whether ``input_folder`` holds a ``stack_plan.csv`` (any letter case).

    Parameters
    ----------
    input_folder : str or Path

    Returns
    -------
    bool
        False too when the folder does not exist or cannot be listed.
    """
    return find_plan(input_folder) is not None


def find_plan(folder):
    """The ``stack_plan.csv`` of ``folder``, its name matched in any letter case.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    Path or None
        None when there is none or the folder cannot be listed.
    """
    try:
        with os.scandir(folder) as entries:
            return next((Path(e.path) for e in entries
                         if e.name.lower() == PLAN_NAME and e.is_file()), None)
    except OSError:
        return None


def as_float(value):
    """A finite float read from a CSV cell or a FITS header value, else None.

    Parameters
    ----------
    value : object

    Returns
    -------
    float or None
        None for missing, non-numeric or non-finite values.

    Examples
    --------
    >>> as_float(" 12.5 "), as_float(""), as_float("nan"), as_float(None)
    (12.5, None, None, None)
    """
    try:
        out = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _resolve_path(value, base):
    """Plan path: absolute, relative to the CSV, or (foreign/Windows paths) by name there."""
    text = value.strip().strip("\"'")
    posix = text.replace("\\", "/")
    drive = re.match(r"^[A-Za-z]:", posix)
    for cand in (Path(text).expanduser(), Path(posix[2:] if drive else posix)):
        cand = cand if cand.is_absolute() else base / cand
        if cand.is_file():
            return cand
    by_name = base / posix.rsplit("/", 1)[-1]
    return by_name if by_name.is_file() else base / Path(text)


def read_stack_plan(csv_path):
    """Parse a ``stack_plan.csv`` leniently, in memory bounded by the number of frames.

    The delimiter is sniffed (``, ; tab |``), a UTF-8 BOM is tolerated, column names are
    case-insensitive with aliases (``file_path``/``path``/``file``/``filename``...,
    ``exposure``/``exptime``/``exp``), paths are taken relative to the CSV, and Windows or
    foreign paths are resolved by file name in the CSV's folder.  Rows without a path are
    skipped, and rows naming a frame listed before (by any spelling of its path) are
    merged into the first, each with one ``[GRID]`` warning.  The file is read row by row.

    Parameters
    ----------
    csv_path : str or Path

    Returns
    -------
    list of PlanEntry
        One per frame, sorted by the ``order`` column when present (stable), else in row
        order.

    Raises
    ------
    GridModeError
        When the file cannot be read or parsed (naming the file and the line), is empty,
        lists no frame or has no path column.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "stack_plan.csv").write_text("Order;Path;EXPTIME\\n1;a.fits;10\\n")
    >>> [(e.path.name, e.exposure) for e in read_stack_plan(d / "stack_plan.csv")]
    [('a.fits', 10.0)]
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, encoding="utf-8-sig", errors="replace", newline="") as fh:
            try:
                dialect = csv.Sniffer().sniff(fh.read(65536), delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            fh.seek(0)
            reader = csv.reader(fh, dialect)
            try:
                entries = _plan_rows(reader, csv_path)
            except csv.Error as exc:
                raise GridModeError(f"cannot parse the stack plan {csv_path} (line "
                                    f"{reader.line_num}): {exc}") from None
    except OSError as exc:
        raise GridModeError(f"cannot read the stack plan {csv_path}: "
                            f"{exc.strerror or exc}") from None
    return sorted(entries, key=lambda e: e.order)


def _plan_rows(reader, csv_path):
    """The entries of a plan's rows, read one at a time: one per frame, duplicates merged."""
    rows = (r for r in reader if any(c.strip() for c in r))
    first = next(rows, None)
    if first is None:
        raise GridModeError(f"the stack plan {csv_path} is empty; write a header line "
                            f"({PLAN_HEADER}) and one line per frame")
    header = [re.sub(r"[\s\-]+", "_", c.strip().lower()) for c in first]
    col = {name: i for i, name in reversed(list(enumerate(header)))}
    path_col, exp_col, order_col = (next((col[a] for a in aliases if a in col), None) for
                                    aliases in (PATH_ALIASES, EXPOSURE_ALIASES, ORDER_ALIASES))
    if path_col is None:
        raise GridModeError(f"the stack plan {csv_path} has no file path column (found "
                            f"{', '.join(first)}); name one of: {', '.join(PATH_ALIASES)}")
    entries, by_frame, resolved = [], {}, {}  # frame -> its entry; path text -> frame
    no_path, repeats = [], {}
    for row in rows:
        text = row[path_col].strip() if path_col < len(row) else ""
        if not text:
            no_path.append(reader.line_num)
            continue
        if text not in resolved:
            path = _resolve_path(text, csv_path.parent)
            try:
                resolved[text] = (path, os.path.realpath(path))
            except ValueError:  # a NUL byte: the frame is skipped as a bad path later
                resolved[text] = (path, str(path))
        path, frame = resolved[text]
        if frame in by_frame:
            repeats[frame] = repeats.get(frame, 0) + 1
            continue
        cell = dict(enumerate(row)).get
        order = as_float(cell(order_col))
        by_frame[frame] = len(entries)
        entries.append(PlanEntry(path=path, order=math.inf if order is None else order,
                                 exposure=as_float(cell(exp_col)), row=dict(zip(header, row))))
    if no_path:
        grid_warning(logger, "%s: %d line(s) without a file path skipped (line %s)",
                     csv_path.name, len(no_path), ", ".join(map(str, no_path[:5]))
                     + (", ..." if len(no_path) > 5 else ""))
    if repeats:
        top = sorted(repeats.items(), key=lambda kv: -kv[1])[:3]
        grid_warning(logger, "%s: %d duplicate row(s) merged: %s listed more than once (the "
                     "first row of each is kept)", csv_path.name, sum(repeats.values()),
                     ", ".join(f"{Path(f).name} {n + 1}x" for f, n in top)
                     + (f" and {len(repeats) - 3} more frames" if len(repeats) > 3 else ""))
    if not entries and not no_path:
        raise GridModeError(f"the stack plan {csv_path} lists no frame (only a header line)")
    return entries


def plan_entries(input_folder):
    """The frames of an input folder: its stack plan's, else all of its FITS files.

    Parameters
    ----------
    input_folder : str or Path

    Returns
    -------
    list of PlanEntry
        The plan's entries (:func:`read_stack_plan`), else one entry per ``*.fit``,
        ``*.fits`` or ``*.fts`` file of the folder (any letter case; gzipped or
        fpack-compressed too, unless the same file lies uncompressed beside it), sorted by
        name.

    Raises
    ------
    GridModeError
        When the plan is unusable, or there is no plan and no FITS file.
    """
    plan = find_plan(input_folder)
    if plan is not None:
        entries = read_stack_plan(plan)
        grid_info(logger, "stack plan %s: %d frames listed", plan, len(entries))
        return entries
    files = sorted(p for p in Path(input_folder).iterdir()
                   if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES))
    if not files:
        raise GridModeError(f"no {PLAN_NAME} and no FITS file (*.fit, *.fits, *.fts, also "
                            f"gzipped or fpack-compressed: .gz, .fz) in {input_folder}")
    files, copies = without_compressed_copies(files)
    if copies:
        grid_warning(logger, "%d compressed copies of FITS files beside them left out (e.g. "
                     "%s): each frame is used once", len(copies), copies[0].name)
    grid_info(logger, "no %s: using the %d FITS files of %s", PLAN_NAME, len(files), input_folder)
    return [PlanEntry(path=p) for p in files]


def without_compressed_copies(files):
    """``(kept, left_out)``: ``X.fits.gz`` or ``X.fits.fz`` left out when ``X.fits`` is among
    ``files`` (gzip and fpack keep the file they compress unless told otherwise): the
    same name, letter case included, with ``.gz`` or ``.fz`` added.  Without ``X.fits``,
    of ``X.fits.fz`` and ``X.fits.gz`` the first in ``files`` is kept.

    Parameters
    ----------
    files : sequence of Path

    Returns
    -------
    (list of Path, list of Path)
        The files kept, in their order, and the compressed copies left out.

    Examples
    --------
    >>> kept, copies = without_compressed_copies(
    ...     [Path("a.fits"), Path("a.fits.fz"), Path("b.fits.fz"), Path("b.fits.gz"),
    ...      Path("C.fits.gz"), Path("c.fits")])
    >>> [p.name for p in kept], [p.name for p in copies]
    (['a.fits', 'b.fits.fz', 'C.fits.gz', 'c.fits'], ['a.fits.fz', 'b.fits.gz'])
    """
    names = {p.name for p in files}  # gzip and fpack add their suffix to the name as it is
    seen, kept, copies = set(), [], []
    for p in files:
        compressed = p.name.lower().endswith((".gz", ".fz"))
        base = p.name[:-3] if compressed else p.name
        if compressed and (base in names or base in seen):
            copies.append(p)
        else:
            kept.append(p)
            seen.add(base)
    return kept, copies
