"""Settings of a Grid/Survey run: the options, their checks and the host program's keywords.

:class:`GridOptions` holds every setting of a run; each field carries its help text, its
allowed values and whether only ``run``/``demo`` use it, so that the Python keywords, the
command-line flags (:func:`add_option_arguments`) and the report share one definition.
:func:`resolve_options` also accepts the keywords of a desktop mosaic program that calls the
mode as a drop-in module (``stack_kappa_low``, ``stack_reject_algo``, ``zconfig`` ...) and
maps them onto ours; unknown keywords are ignored with a ``[GRID]`` warning.  Bad values
raise :class:`GridModeError` (a ``ValueError``).
"""

from dataclasses import asdict, dataclass, field, fields

from .._log import get_logger, grid_info, grid_warning
from .._threads import check_workers
from .parallel import default_workers
from ..stacking.stack import WEIGHT_METHODS

__all__ = ["GridModeError", "GridRunError", "EXIT_CODES", "GridOptions", "OPTION_HELP",
           "OPTION_CHOICES", "RUN_ONLY", "resolve_options", "check_options", "refuse_run_only",
           "n_workers", "add_option_arguments"]

logger = get_logger(__name__)


class GridModeError(ValueError, RuntimeError):
    """The Grid/Survey run cannot go on (bad input, nothing usable left, unwritable output).

    A ``ValueError`` (bad input) and a ``RuntimeError`` (failed run) alike, so that callers
    catching either see it.  ``grid_mode`` re-exports it as ``grid_mode.GridModeError``.

    Examples
    --------
    >>> isinstance(GridModeError("no usable frame"), (ValueError, RuntimeError))
    True
    """

    #: exit code of the command line: bad input or options
    exit_code = 2


class GridRunError(GridModeError):
    """The run failed while running: a piece could not be made, a full disk, a killed worker.

    A :class:`GridModeError` (callers catching that see it too) whose command-line exit code
    is 1, where bad input or options give 2 (see :data:`EXIT_CODES`).

    Examples
    --------
    >>> GridRunError("tile 3 could not be written").exit_code
    1
    """

    exit_code = 1


#: Exit codes of the ``grid-mode`` command line and what they mean.
EXIT_CODES = {0: "complete", 1: "failed during the run (a piece lost, disk full, a worker "
              "killed, an unexpected error)", 2: "bad input or options (nothing was done)",
              129: "ended by SIGHUP", 130: "interrupted (Ctrl-C, SIGINT)",
              143: "terminated (SIGTERM)"}


def _opt(default, text, choices=None, run=True):
    """A GridOptions field: its help, its allowed values, whether only run/demo use it."""
    return field(default=default, metadata=dict(help=text, choices=choices, run=run))


@dataclass
class GridOptions:
    """Settings of a run: the keywords of ``grid_mode.run_grid_mode`` and flags of ``grid-mode``.

    Each field's meaning is in its ``metadata["help"]`` (collected in :data:`OPTION_HELP`);
    fields with a fixed set of values list them in :data:`OPTION_CHOICES`.  Build one from
    keywords with :func:`resolve_options`, which also checks the values.

    Examples
    --------
    >>> GridOptions(tile_size=512).overlap
    0.1
    """

    tile_size: int = _opt(2048, "tile height and width on the global grid, pixels")
    overlap: float = _opt(0.1, "overlap of neighbouring tiles: fraction of the tile size if "
                          "< 1, else pixels")
    pixel_scale: float = _opt(None, "mosaic pixel scale in arcsec/px (default: the frames' "
                              "or panels' median scale)", run=False)
    stack_method: str = _opt("kappa_sigma", "rejection of outliers (trails, hot pixels) "
                             "between the frames of a tile, or a plain mean/median",
                             ("kappa_sigma", "winsorized", "mean", "median"))
    stack_combine: str = _opt("mean", "how the values kept by the rejection are combined",
                              ("mean", "median"))
    kappa_low: float = _opt(3.0, "lower clipping threshold, sigma")
    kappa_high: float = _opt(3.0, "upper clipping threshold, sigma")
    winsor_limits: tuple = _opt((0.05, 0.05), "fractions winsorized at the low and high end")
    weight_method: str = _opt("exposure_noise", "frame weights: exposure x inverse noise "
                              "variance of the corrected frame, inverse variance, exposure, "
                              "or equal", WEIGHT_METHODS)
    radial_weight: bool = _opt(False, "down-weight frame corners: weight 1 inside "
                               "radial_feather_fraction of the half-diagonal, cosine fall-off")
    radial_feather_fraction: float = _opt(0.8, "part of the half-diagonal at full weight")
    radial_shape_power: float = _opt(2.0, "power of the radial fall-off")
    frame_photometry: bool = _opt(True, "match the frames before stacking (gain + offset or "
                                  "plane per frame, solved over their overlap graph)")
    frame_model: str = _opt("plane", "additive model of the frame solve", ("plane", "offset"))
    frame_overlaps: int = _opt(4, "largest overlaps fitted per frame by the frame solve "
                               "(many frames of one field all overlap: n(n-1)/2 pairs), "
                               "and up to 4 (or half this number, if larger) between "
                               "two pointings' dithers; "
                               "0 = every overlap")
    frame_smooth: float = _opt(None, "Gaussian sigma (px) of a blur of the frames seen by the "
                               "frame solve only; 0 = off (default: 2 for Bayer raws, whose "
                               "debayered planes carry demosaicing structure that differs "
                               "from frame to frame, 0 for mono and RGB frames)")
    gain_estimator: str = _opt("auto", "gain of every overlap (frames and tiles): the pixel "
                               "fit and the flux ratio of the stars both sides see, combined "
                               "by inverse variance (auto; the stars win where they disagree "
                               "by more than 3 sigma), or one of them",
                               ("auto", "pixels", "stars"), run=False)
    gradient_gauge: str = _opt("mean", "the gradient no overlap fixes (plane model): zero mean "
                               "over all frames/tiles, or the reference's own",
                               ("mean", "reference"), run=False)
    flatten: bool = _opt(False, "remove one global plane from the mosaic's background "
                         "(fitted on sigma-clipped background blocks, sources masked); off: "
                         "large-scale emission is kept", run=False)
    photometry: bool = _opt(True, "solve a gain + offset (+ plane) per tile at assembly",
                            run=False)
    model: str = _opt("plane", "additive model of the tile solve: offset or plane (gradient)",
                      ("plane", "offset"), run=False)
    background: bool = _opt(True, "match the tile backgrounds (guarded: reduced or skipped "
                            "where it would increase the overlap residuals)", run=False)
    blend: str = _opt("multiband", "multi-band (Laplacian pyramids), feathering, or none "
                      "(plain coverage-weighted placement)", ("multiband", "feather", "none"),
                      run=False)
    levels: int = _opt(None, "pyramid levels (default: from the overlap width)", run=False)
    chunk_size: int = _opt(1024, "output chunk size of the assembly, pixels; bounds memory",
                           run=False)
    workers: int = _opt(None, "worker processes for the tiles (1 = in-process; default: "
                        "CPUs, at most 4); also the assembly's threads", run=False)
    scheduler: object = _opt(None, "dask.distributed scheduler address (or a Client) for "
                             "the tiles, e.g. tcp://host:8786")
    memory_mb: float = _opt(1024.0, "memory budget of the whole run, MB: the calling "
                            "process and its workers together (PSS); workers, stacking "
                            "buffers and assembly threads are sized from it, the pixels do "
                            "not depend on it; a run that cannot fit says so at the start")
    allow_partial: bool = _opt(False, "when a tile cannot be made even after a second try, "
                               "assemble the mosaic without it (the report, the log and the "
                               "FITS header PARTIAL say what was lost) instead of failing")
    resume: bool = _opt(True, "reuse the finished pieces of an earlier run into the same "
                        "output folder whose inputs are unchanged (binned frames, frame "
                        "solve, tiles; recorded in OUTPUT_DIR/resume)")
    max_canvas: float = _opt(None, "largest global canvas accepted, megapixels (default: 4x "
                             "the frames' total area on the grid)")
    mask_eps: float = _opt(1e-6, "|x| <= mask_eps in every channel is empty (zero borders)",
                           run=False)
    saturation: float = _opt(None, "stored value at or above which a pixel is saturated; "
                             "saturated pixels and a 2 px margin stay out of the frame "
                             "photometry (default: the SATURATE keyword, else the value "
                             "at which a frame's brightest pixels pile up, or its "
                             "maximum when that is the top of its integer storage; "
                             "0 = off)")
    save_uint16: bool = _opt(False, "also write mosaic_grid_uint16.fits (finite range -> "
                             "0..65535, NaN -> 0)", run=False)
    save_tiff: str = _opt("none", "also write mosaic_grid.tif, a 16-bit TIFF for image editors, "
                          "rows flipped so that it shows the mosaic as FITS viewers do (north "
                          "up with the usual WCS): 'linear' maps the finite range to 0..65535 "
                          "as save_uint16 does, 'stretched' applies the preview's asinh "
                          "stretch; NaN -> 0", ("none", "linear", "stretched"), run=False)
    legacy_rgb_cube: bool = _opt(False, "write RGB mosaics as (H, W, 3), not (3, H, W)",
                                 run=False)
    preview_size: int = _opt(2048, "longest side of the preview PNG, pixels", run=False)
    html_report: bool = _opt(True, "write grid_report.html, the report drawn as one page "
                             "(previews, both overlap graphs, residuals, warnings)",
                             run=False)

    def to_dict(self):
        """JSON-friendly copy (a Client object as scheduler is shown by its repr)."""
        out = asdict(self)
        if not isinstance(out["scheduler"], (str, type(None))):
            out["scheduler"] = repr(out["scheduler"])
        return out


#: Default blur of debayered frames for the frame solve (see ``GridOptions.frame_smooth``).
#: Measured (``benchmarks/frame_gains.py``, worst frame gain, Bayer 600x900, seeds 1-5):
#: blur 0 0.39-0.81 %, 1 px 0.23-0.55 %, 2 px 0.19-0.45 %.
FRAME_SMOOTH_BAYER = 2.0

#: Help text of every :class:`GridOptions` field, by field name.
OPTION_HELP = {f.name: f.metadata["help"] for f in fields(GridOptions)}
#: Allowed values of the fields that have a fixed set of them.
OPTION_CHOICES = {f.name: f.metadata["choices"] for f in fields(GridOptions)
                  if f.metadata["choices"]}
#: Options that only ``run`` (and ``demo``) use: stacking, frame photometry, tiling.
RUN_ONLY = tuple(f.name for f in fields(GridOptions) if f.metadata["run"])

# the host program's keywords -> ours
_RENAMES = {"stack_kappa_low": "kappa_low", "stack_kappa_high": "kappa_high",
            "apply_radial_weight": "radial_weight", "save_final_as_uint16": "save_uint16",
            "stack_final_combine": "stack_combine"}
_REJECT = {"kappa_sigma": "kappa_sigma", "winsorized_sigma_clip": "winsorized",
           "winsorized": "winsorized", "linear_fit_clip": "kappa_sigma", "none": None}
_WEIGHT = {"none": "none", "noise_variance": "noise", "noise_fwhm": "noise", "noise": "noise",
           "exposure": "exposure", "exposure_noise": "exposure_noise"}
_ZCONFIG = {"tile_size": ("grid_tile_size", "tile_size"),
            "overlap": ("grid_overlap", "tile_overlap", "overlap"),
            "workers": ("grid_workers", "num_workers", "workers"),
            "scheduler": ("grid_scheduler", "dask_scheduler"), "blend": ("grid_blend",),
            "chunk_size": ("grid_chunk_size",), "photometry": ("grid_photometry",),
            "background": ("grid_background",), "model": ("grid_model",),
            "frame_photometry": ("grid_frame_photometry",)}


def resolve_options(options):
    """Our keywords, the host program's keywords and a ``zconfig`` object -> GridOptions.

    Parameters
    ----------
    options : dict
        Keywords of a run (not modified): :class:`GridOptions` fields (``None`` keeps the
        default), the host program's stack_kappa_low, stack_kappa_high,
        stack_final_combine, apply_radial_weight, save_final_as_uint16, stack_reject_algo,
        stack_weight_method, stack_norm_method, grid_rgb_equalize, and ``zconfig``, an
        object whose attributes (``grid_tile_size``, ``grid_overlap``, ``workers`` ...)
        give defaults that explicit keywords override.  Unknown keywords are ignored with
        a ``[GRID]`` warning.

    Returns
    -------
    GridOptions
        Checked by :func:`check_options`.

    Raises
    ------
    GridModeError
        When a value is not allowed (see :func:`check_options`).

    Examples
    --------
    >>> opts = resolve_options(dict(stack_kappa_low=2.5, stack_reject_algo="winsorized"))
    >>> opts.kappa_low, opts.stack_method
    (2.5, 'winsorized')
    """
    options, values = dict(options), {}
    zconfig = options.pop("zconfig", None)
    for name, attrs in _ZCONFIG.items():  # zconfig first: explicit keywords win
        found = [getattr(zconfig, a) for a in attrs if getattr(zconfig, a, None) is not None]
        if found:
            values[name] = found[0]
    for host, ours in _RENAMES.items():
        if options.get(host) is not None:
            values[ours] = options.pop(host)
        options.pop(host, None)
    reject = options.pop("stack_reject_algo", None)
    if reject is not None:
        if reject not in _REJECT or reject == "linear_fit_clip":
            grid_warning(logger, "stack_reject_algo %r is done as kappa-sigma (frames are "
                         "matched by the frame photometry solve)", reject)
        combine = "median" if values.get("stack_combine") == "median" else "mean"
        values["stack_method"] = _REJECT.get(reject, "kappa_sigma") or combine
    weight = options.pop("stack_weight_method", None)
    if weight is not None:
        if weight not in _WEIGHT:
            grid_warning(logger, "unknown stack_weight_method %r: exposure x inverse noise "
                         "variance is used", weight)
        values["weight_method"] = _WEIGHT.get(weight, "exposure_noise")
    if options.pop("stack_norm_method", None) is not None:
        grid_info(logger, "stack_norm_method: frames are normalised by the frame photometry "
                  "solve (gain + plane per frame); frame_photometry=False switches it off")
    if options.pop("grid_rgb_equalize", None):
        grid_warning(logger, "grid_rgb_equalize is accepted but no per-tile colour "
                     "equalisation is done (it makes colour casts and checkerboards): the "
                     "global per-channel photometric solve makes the colours consistent")
    for f in fields(GridOptions):
        if f.name in options:
            value = options.pop(f.name)
            if value is not None or f.default is None:
                values[f.name] = value
    for name, value in options.items():
        grid_warning(logger, "ignoring unknown option %s=%r", name, value)
    return check_options(GridOptions(**values))


def refuse_run_only(names, command="assemble"):
    """Refuse options that only ``run`` uses: a :class:`GridModeError` naming them.

    Parameters
    ----------
    names : iterable of str
        The options given (keywords or ``GridOptions`` fields); the host program's
        stacking keywords (``stack_kappa_low``, ``stack_reject_algo`` ...) and the command
        line's ``kappa`` count as run options too.
    command : str
        What refuses them, for the message.

    Examples
    --------
    >>> refuse_run_only(["blend", "model"])
    >>> refuse_run_only(["tile_size", "blend", "kappa"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    photometry_graph.pipeline.options.GridModeError: --tile-size, --kappa (tile_size, kappa) ...
    """
    host = {k for k, v in _RENAMES.items() if v in RUN_ONLY} | {
        "stack_reject_algo", "stack_weight_method", "stack_norm_method", "kappa"}
    given = [n for n in names if n in RUN_ONLY or n in host]
    on = {f.name for f in fields(GridOptions) if f.default is True}  # flags --no-X
    flags = [("--no-" if n in on else "--") + n.replace("_", "-") for n in given]
    if given:
        raise GridModeError(f"{', '.join(flags)} ({', '.join(given)}) apply to grid-mode run "
                            f"only (stacking, frame photometry, tiling); {command} takes tiles "
                            "or panels that are stacked already: drop them")


def check_options(opts):
    """Check and normalise a :class:`GridOptions` in place; return it.

    Choices are lower-cased and must be in :data:`OPTION_CHOICES`; numeric fields are
    converted to their type (``"512"`` -> 512); ``tile_size >= 16``, ``overlap`` in [0, 1)
    or fewer pixels than a tile, ``chunk_size >= 64``, ``workers >= 1``.

    Raises
    ------
    GridModeError
        Naming the option, what it must be and the value given.

    Examples
    --------
    >>> check_options(GridOptions(blend="Feather", tile_size="256")).blend
    'feather'
    """
    for name, choices in OPTION_CHOICES.items():
        value = str(getattr(opts, name)).lower()
        if value not in choices:
            raise GridModeError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        setattr(opts, name, value)
    try:
        for f in fields(GridOptions):
            value = getattr(opts, f.name)
            if f.type in (int, float) and value is not None:
                setattr(opts, f.name, f.type(value))
        opts.winsor_limits = tuple(float(v) for v in opts.winsor_limits)
    except (TypeError, ValueError) as exc:
        raise GridModeError(f"invalid numeric option: {exc}") from None
    for bad, what in [
            (opts.tile_size < 16, f"tile_size must be >= 16, got {opts.tile_size}"),
            (opts.max_canvas is not None and not opts.max_canvas > 0,
             f"max_canvas must be > 0 megapixels, got {opts.max_canvas}"),
            (opts.frame_overlaps < 0, f"frame_overlaps must be >= 0 (0 = all), got "
             f"{opts.frame_overlaps}"),
            (not 0 <= opts.overlap < (1 if opts.overlap < 1 else opts.tile_size),
             f"overlap must be in [0, 1) or fewer pixels than a tile, got {opts.overlap}"),
            (opts.chunk_size < 64, f"chunk_size must be >= 64, got {opts.chunk_size}")]:
        if bad:
            raise GridModeError(what)
    try:
        check_workers(opts.workers, default=lambda: None)
    except ValueError as exc:
        raise GridModeError(str(exc)) from None
    return opts


def frame_smooth_sigma(opts, bayer):
    """Blur sigma (px) of a frame for the frame solve: the option, or its default by frame kind.

    Parameters
    ----------
    opts : GridOptions
    bayer : str or None
        The frame's Bayer pattern (``None`` for mono and RGB frames).

    Returns
    -------
    float

    Examples
    --------
    >>> frame_smooth_sigma(GridOptions(), "RGGB"), frame_smooth_sigma(GridOptions(), None)
    (2.0, 0.0)
    >>> frame_smooth_sigma(GridOptions(frame_smooth=1.5), None)
    1.5
    """
    if opts.frame_smooth is not None:
        return float(opts.frame_smooth)
    return FRAME_SMOOTH_BAYER if bayer else 0.0


def frame_saturation(opts, header_level):
    """Saturation level of a frame for the frame photometry, or None (no masking).

    Parameters
    ----------
    opts : GridOptions
    header_level : float or None
        The frame's level from its header (``FrameInfo.saturation``).

    Returns
    -------
    float or None

    Examples
    --------
    >>> frame_saturation(GridOptions(), 65535.0), frame_saturation(GridOptions(), None)
    (65535.0, None)
    >>> frame_saturation(GridOptions(saturation=0), 65535.0) is None
    True
    """
    level = header_level if opts.saturation is None else opts.saturation
    return None if level is None or not level > 0 else float(level)


def n_workers(opts):
    """Worker processes for the tiles and threads of the assembly (default: CPUs, <= 4).

    Examples
    --------
    >>> n_workers(GridOptions(workers=3))
    3
    """
    return opts.workers or default_workers()


def add_option_arguments(group, defaults=None):
    """Add one command-line flag per :class:`GridOptions` field to an argparse group.

    ``tile_size`` becomes ``--tile-size``; a boolean that is on by default becomes
    ``--no-X`` (``store_false``), one that is off ``--X``; choices, ``winsor_limits`` (two
    values) and the numeric types are checked by argparse.  Every flag defaults to
    ``None`` (= the option's default), so that only the flags given reach the run; help
    texts of options that only ``run``/``demo`` use start with "(run)".

    Parameters
    ----------
    group : argparse.ArgumentParser or argparse._ArgumentGroup
        Modified in place.
    defaults : dict, optional
        Defaults shown in the help instead of the fields' own (the demo's tile size...).

    Examples
    --------
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> add_option_arguments(p)
    >>> vars(p.parse_args(["--tile-size", "512", "--no-background"]))["tile_size"]
    512
    """
    for f in fields(GridOptions):
        name, flag = f.name, "--" + f.name.replace("_", "-")
        default = (defaults or {}).get(name, f.default)
        off = default is True  # --no-X switches off what is on by default
        text = (("(run) " if f.metadata["run"] else "") + ("do not " if off else "")
                + f.metadata["help"].replace("%", "%%"))
        if isinstance(default, bool):
            group.add_argument("--no-" + flag[2:] if off else flag, dest=name, default=None,
                               action="store_false" if off else "store_true", help=text)
            continue
        kw = (dict(choices=OPTION_CHOICES[name]) if name in OPTION_CHOICES else
              dict(type=float, nargs=2, metavar=("LOW", "HIGH")) if name == "winsor_limits"
              else dict(type=str if f.type is object else f.type,
                        metavar=name.split("_")[-1].upper()))
        group.add_argument(flag, dest=name, default=None, help=text + (
            "" if default is None else f" (default: {default})"), **kw)
