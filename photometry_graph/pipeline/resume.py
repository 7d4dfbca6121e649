"""Resume: every finished piece of a run records what it was made from; a rerun reuses it.

A piece of a run (a frame binned for the frame photometry, the frame solve, a tile) is made
from input files and settings.  Once it is complete, its record is written atomically into
``OUTPUT_DIR/resume`` (:class:`PieceStore`): a key (a hash of everything the piece was made
from: the input files' paths, sizes and modification times, the settings and results it
used, the package version and a digest of its code), that description itself, and the
size and time of the files the piece wrote.  A rerun computes each piece's key again and
reuses the piece when the record's key and files still match; anything else is made again.
The pieces are deterministic, so that a resumed run gives the same mosaic, bit for bit, as
an uninterrupted one.
"""

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._log import get_logger, grid_info
from ..core.correction import Correction
from .fileio import atomic, write_json
from .images import wcs_text
from .options import GridOptions

__all__ = ["RESUME_DIR", "PIECE_OPTIONS", "INDIRECT_OPTIONS", "UNRELATED_OPTIONS",
           "package_version", "code_digest",
           "file_signature", "frame_source", "piece_options", "piece_key",
           "correction_from_dict", "PieceStore", "RunPieces"]

logger = get_logger("photometry_graph.grid_mode")

#: The folder of the records, in the output folder.
RESUME_DIR = "resume"
#: The options each kind of piece reads (besides the values it is given).
PIECE_OPTIONS = {
    "binned frame": ("mask_eps", "saturation", "frame_smooth"),
    "frame solve": ("frame_model", "frame_overlaps", "gain_estimator", "gradient_gauge"),
    "tile": ("stack_method", "stack_combine", "kappa_low", "kappa_high", "winsor_limits",
             "radial_weight", "radial_feather_fraction", "radial_shape_power", "mask_eps"),
}
#: Run options that change pieces only through the values the pieces are given (the grid,
#: the binning, the frame weights, whether the frames are solved at all).
INDIRECT_OPTIONS = ("tile_size", "overlap", "pixel_scale", "weight_method", "frame_photometry")
#: Run options that change no piece (the assembly's options are left out too).
UNRELATED_OPTIONS = ("scheduler", "workers", "allow_partial", "resume", "max_canvas",
                     "memory_mb")


@functools.lru_cache(maxsize=1)
def package_version():
    """The installed version of the package (``"unknown"`` when it is not installed).

    Read once a process: reading it parses the package's metadata (~0.5 ms, half the cost
    of recording a binned frame).
    """
    try:
        return importlib.metadata.version("photometry-graph")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


@functools.lru_cache(maxsize=1)
def code_digest():
    """The package version and a SHA-256 of the code that makes the pieces (once a process).

    The package's modules and ``grid_mode.py`` next to it: a changed code makes its pieces
    anew even when the version number stays.
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(package_version().encode())
    for path in sorted(root.rglob("*.py")) + [root.parent / "grid_mode.py"]:
        if path.is_file():
            digest.update(str(path.relative_to(root.parent)).encode() + path.read_bytes())
    return digest.hexdigest()


def file_signature(path):
    """``{"path", "size", "mtime_ns"}`` of a file: what a piece made from it depends on.

    Examples
    --------
    >>> sorted(file_signature(__file__))
    ['mtime_ns', 'path', 'size']
    """
    st = os.stat(path)
    return {"path": os.path.realpath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def frame_source(info):
    """What a frame contributes to a piece: its file's signature and what the scan read.

    Parameters
    ----------
    info : FrameInfo

    Returns
    -------
    dict
        The file signature, HDU, shape, layout, Bayer pattern, exposure, noise, saturation
        and a digest of the WCS header (not the frame's index in the run), computed once
        per frame (kept in ``info.wcs_digest``: ~0.5 ms a frame, 2 s for 4,993 frames).
    """
    if info.wcs_digest is None:
        info.wcs_digest = hashlib.sha256(wcs_text(info.wcs).encode()).hexdigest()
    return dict(file=file_signature(info.path), hdu=info.hdu, shape=list(info.shape),
                layout=info.layout, bayer=info.bayer, coverage_hdu=info.coverage_hdu,
                exptime=info.exptime, noise=info.noise, saturation=info.saturation,
                wcs=info.wcs_digest)


def piece_options(opts, piece):
    """The options a kind of piece reads (:data:`PIECE_OPTIONS`), by name.

    Examples
    --------
    >>> piece_options(GridOptions(kappa_low=2.5, workers=3), "tile")["kappa_low"]
    2.5
    >>> piece_options(GridOptions(kappa_low=2.5), "binned frame")
    {'mask_eps': 1e-06, 'saturation': None, 'frame_smooth': None}
    """
    return {name: getattr(opts, name) for name in PIECE_OPTIONS[piece]}


def piece_key(made_from):
    """SHA-256 of what a piece is made from (JSON, keys sorted) and of the code.

    Floats enter with every digit (``repr``); numpy values as lists; a WCS as its header.

    Examples
    --------
    >>> piece_key({"a": 1.0}) == piece_key({"a": 1.0}) != piece_key({"a": 1.0 + 1e-15})
    True
    """
    text = json.dumps(made_from, sort_keys=True, default=_plain)
    return hashlib.sha256((code_digest() + text).encode()).hexdigest()


def _plain(obj):
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if hasattr(obj, "to_header_string"):  # a WCS
        return wcs_text(obj)
    return obj.to_dict() if hasattr(obj, "to_dict") else str(obj)


def correction_from_dict(d):
    """A :class:`~photometry_graph.core.correction.Correction` from its ``to_dict()``.

    Examples
    --------
    >>> c = Correction([1.25], [0.5], slope=[[1e-3, 2e-3]], origin=(3.0, 4.0))
    >>> back = correction_from_dict(json.loads(json.dumps(c.to_dict())))
    >>> back.gain.tolist(), back.slope.tolist(), back.origin, bool(np.isnan(back.gain_err[0]))
    ([1.25], [[0.001, 0.002]], (3.0, 4.0), True)
    """
    def nan(values):
        return [np.nan if v is None else v for v in values]

    return Correction(d["gain"], d["offset"], slope=d["slope"], origin=tuple(d["origin"]),
                      gain_err=nan(d["gain_err"]), offset_err=nan(d["offset_err"]),
                      status=d["status"])


@dataclass
class PieceStore:
    """The records of a run's pieces: ``folder/<name>.json`` (+ ``<name>.npz`` arrays).

    Picklable: workers write the records of the pieces they make.

    Parameters
    ----------
    folder : Path
        ``OUTPUT_DIR/resume``.
    reuse : bool
        False: nothing is reused (records are still written for the next run).

    Examples
    --------
    >>> import tempfile
    >>> store = PieceStore(Path(tempfile.mkdtemp()) / "resume")
    >>> key = piece_key({"frame": "a.fits", "bin": 4})
    >>> store.save("binned_a", key, arrays={"data": np.arange(3.0)}, payload={"n": 3})
    True
    >>> rec = store.lookup("binned_a", key)
    >>> rec["payload"], store.load_arrays("binned_a")["data"].tolist()
    ({'n': 3}, [0.0, 1.0, 2.0])
    >>> store.lookup("binned_a", piece_key({"frame": "a.fits", "bin": 8})) is None
    True
    """

    folder: Path
    reuse: bool = True

    def path(self, name, suffix=".json"):
        """The record file (or with ``suffix`` its array file) of piece ``name``."""
        return Path(self.folder) / f"{name}{suffix}"

    def lookup(self, name, key):
        """The record of piece ``name`` if made from ``key`` with its files unchanged, else None."""
        if not self.reuse:
            return None
        try:
            record = json.loads(self.path(name).read_text(encoding="utf-8"))
            if record.get("key") != key:
                return None
            for f in record.get("files", []):
                st = os.stat(f["path"])
                if (st.st_size, st.st_mtime_ns) != (f["size"], f["mtime_ns"]):
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record

    def save(self, name, key, *, made_from=None, files=(), arrays=None, payload=None):
        """Record a complete piece, atomically; its ``arrays`` go into ``<name>.npz`` first.

        Returns False when the record could not be written (the piece is then simply made
        again by the next run): a record never fails the piece itself.
        """
        try:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            files = list(files)
            if arrays is not None:
                with atomic(self.path(name, ".npz")) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **arrays)
                files.append(self.path(name, ".npz"))
            write_json(self.path(name), dict(key=key, version=package_version(),
                                             made_from=made_from, payload=payload,
                                             files=[file_signature(p) for p in files]),
                       indent=None)  # read by the next run only
            return True
        except OSError:
            return False

    def load_arrays(self, name):
        """The arrays saved with piece ``name``, as a dict."""
        with np.load(self.path(name, ".npz"), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def clear(self):
        """Remove every record (``--no-resume``)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class RunPieces:
    """Where a run's pieces and their records go, what they are made from, what was reused.

    Parameters
    ----------
    out : Path
        The output folder: records in ``out/RESUME_DIR``, tiles in ``out/tiles``.
    opts : GridOptions
        ``opts.resume`` False clears the records of earlier runs.
    report : dict
        Filled with the folder, whether resuming is on and what was reused.
    """

    out: Path
    opts: GridOptions
    report: dict = field(default_factory=dict)

    def __post_init__(self):
        self.store = PieceStore(self.out / RESUME_DIR, reuse=self.opts.resume)
        self.tiles_dir = self.out / "tiles"
        if not self.opts.resume:
            self.store.clear()
        self.report.update(folder=str(self.store.folder), enabled=self.opts.resume,
                           reused={"binned_frames": 0, "frame_solve": False, "tiles": []})

    @staticmethod
    def binned_name(frame):
        """The piece name of ``frame``'s binned pixels (from its real path)."""
        return "binned_" + hashlib.sha256(os.path.realpath(frame.path).encode()).hexdigest()[:20]

    def reused(self, what, value, text):
        """Note what an earlier run's pieces gave: ``value`` in the report, ``text`` logged."""
        self.report["reused"][what] = value
        if value:
            grid_info(logger, "resume: reusing %s of an earlier run into %s", text, self.out)
