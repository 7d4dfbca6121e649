"""The frames of a Grid/Survey run: the ``stack_plan.csv`` of the input folder, read leniently.

:func:`detect_grid_mode` tells whether a folder holds a stack plan, :func:`read_stack_plan`
parses one (sniffed delimiter, column aliases, foreign paths resolved by file name) and
:func:`plan_entries` lists the frames of an input folder: those of its plan, else all of its
FITS files.
"""

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .._log import get_logger, grid_info, grid_warning
from .options import GridModeError

__all__ = ["PLAN_NAME", "PLAN_HEADER", "FITS_SUFFIXES", "PATH_ALIASES", "EXPOSURE_ALIASES",
           "ORDER_ALIASES", "PlanEntry", "detect_grid_mode", "find_plan", "as_float",
           "read_stack_plan", "plan_entries"]

logger = get_logger(__name__)

PLAN_NAME = "stack_plan.csv"
PLAN_HEADER = "order,batch_id,mount,bortle,telescope,session_date,filter,exposure,file_path,ra,dec"
FITS_SUFFIXES = (".fit", ".fits", ".fts")
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
    """Parse a ``stack_plan.csv`` leniently.

    The delimiter is sniffed (``, ; tab |``), a UTF-8 BOM is tolerated, column names are
    case-insensitive with aliases (``file_path``/``path``/``file``/``filename``...,
    ``exposure``/``exptime``/``exp``), paths are taken relative to the CSV, and Windows or
    foreign paths are resolved by file name in the CSV's folder.  Rows without a path are
    skipped with a ``[GRID]`` warning.

    Parameters
    ----------
    csv_path : str or Path

    Returns
    -------
    list of PlanEntry
        Sorted by the ``order`` column when present (stable), else in row order.

    Raises
    ------
    GridModeError
        When the file cannot be read, is empty, lists no frame or has no path column.

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
        text = csv_path.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as exc:
        raise GridModeError(f"cannot read the stack plan {csv_path}: "
                            f"{exc.strerror or exc}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    if not rows:
        raise GridModeError(f"the stack plan {csv_path} is empty; write a header line "
                            f"({PLAN_HEADER}) and one line per frame")
    header = [re.sub(r"[\s\-]+", "_", c.strip().lower()) for c in rows[0]]
    col = {name: i for i, name in reversed(list(enumerate(header)))}
    path_col, exp_col, order_col = (next((col[a] for a in aliases if a in col), None) for
                                    aliases in (PATH_ALIASES, EXPOSURE_ALIASES, ORDER_ALIASES))
    if path_col is None:
        raise GridModeError(f"the stack plan {csv_path} has no file path column (found "
                            f"{', '.join(rows[0])}); name one of: {', '.join(PATH_ALIASES)}")
    if len(rows) < 2:
        raise GridModeError(f"the stack plan {csv_path} lists no frame (only a header line)")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        cell = dict(enumerate(row)).get
        if not cell(path_col, "").strip():
            grid_warning(logger, "%s line %d has no file path; skipped", csv_path.name, number)
            continue
        order = as_float(cell(order_col))
        entries.append(PlanEntry(path=_resolve_path(cell(path_col), csv_path.parent),
                                 order=math.inf if order is None else order,
                                 exposure=as_float(cell(exp_col)), row=dict(zip(header, row))))
    return sorted(entries, key=lambda e: e.order)


def plan_entries(input_folder):
    """The frames of an input folder: its stack plan's, else all of its FITS files.

    Parameters
    ----------
    input_folder : str or Path

    Returns
    -------
    list of PlanEntry
        The plan's entries (:func:`read_stack_plan`), else one entry per ``*.fit``,
        ``*.fits`` or ``*.fts`` file of the folder (any letter case), sorted by name.

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
                   if p.is_file() and p.suffix.lower() in FITS_SUFFIXES)
    if not files:
        raise GridModeError(f"no {PLAN_NAME} and no FITS file (*.fit, *.fits, *.fts) in "
                            f"{input_folder}")
    grid_info(logger, "no %s: using the %d FITS files of %s", PLAN_NAME, len(files), input_folder)
    return [PlanEntry(path=p) for p in files]
