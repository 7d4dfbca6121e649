"""The ``grid-mode`` command line: ``run``, ``assemble`` and ``demo``.

One flag per :class:`~photometry_graph.pipeline.options.GridOptions` field
(:func:`~photometry_graph.pipeline.options.add_option_arguments`); a progress bar on a
terminal; exit codes 0 success, 2 bad input, 1 unexpected failure, 130 interrupted.
"""

import argparse
import sys
import traceback

from .demo import DEMO_DEFAULTS, demo_summary, run_demo
from .options import OPTION_HELP, GridModeError, add_option_arguments, refuse_run_only
from .progress import console_logging

__all__ = ["build_parser", "main"]


def _options_parent(defaults=None):
    """A parent parser with one flag per option, its help showing ``defaults`` where given."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("options ((run) = run and demo only)")
    add_option_arguments(group, defaults)  # one flag per GridOptions field
    group.add_argument("--kappa", type=float, metavar="K", help="(run) set both kappas")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="debug messages, and tracebacks on errors")
    group.add_argument("-q", "--quiet", action="store_true",
                       help="warnings and errors only, no progress bar")
    return common


def build_parser():
    """The ``grid-mode`` argument parser: ``run``, ``assemble`` and ``demo`` with every option.

    The demo's help shows the demo's own defaults (:data:`~.demo.DEMO_DEFAULTS`).
    """
    parser = argparse.ArgumentParser(
        prog="grid-mode", description="Grid/Survey mode: stack overlapping plate-solved FITS "
        "frames into the tiles of a global grid and assemble them into one photometrically "
        "seamless mosaic (frame and tile photometry solved over overlap graphs, multi-band "
        "blending).", epilog="Outputs: OUTPUT_DIR/tiles/tile_0001.fits..., mosaic_grid.fits, "
        "mosaic_grid_coverage.fits, grid_report.json, grid_report.html (the report to look "
        "at), mosaic_grid_preview.png. Exit codes: 0 success, 2 bad input, 1 unexpected "
        "failure, 130 interrupted.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _options_parent()
    for name, args, text in [
            ("run", ("input_dir", "output_dir"), "stack the frames listed in "
             "INPUT_DIR/stack_plan.csv (or all FITS files of INPUT_DIR), assemble the mosaic"),
            ("assemble", ("input", "output_dir"), "assemble this project's tiles "
             "(tile_0001.fits ...) or plate-solved panels from any stacker (FITS images with "
             "a celestial WCS: a folder, or files) into the mosaic; (run) options are "
             "refused"),
            ("demo", ("output_dir",), "synthetic survey with injected errors end to end, "
             "measured against its truth (default OUTPUT_DIR: ./grid_demo_output)")]:
        parent = _options_parent(DEMO_DEFAULTS) if name == "demo" else common
        p = sub.add_parser(name, parents=[parent], help=text, description=text)
        for arg in args:
            p.add_argument(arg, metavar=arg.upper(), **(
                dict(nargs="?", default="grid_demo_output") if name == "demo" else
                dict(nargs="+") if arg == "input" else {}))
        if name == "assemble":
            p.add_argument("--reference", metavar="FILE", help="a FITS file whose pixel grid "
                           "(projection, scale, rotation) the mosaic takes, extended to cover "
                           "every panel (default: the optimal north-up TAN grid of the panels, "
                           "or their own grid when they share one)")
    return parser


def main(argv=None):
    """Command-line entry point ``grid-mode``; returns the exit code."""
    from grid_mode import assemble_tiles, run_grid_mode  # the run lives at the top level

    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k in OPTION_HELP and v is not None}
    given = list(options) + (["kappa"] if args.kappa is not None else [])
    if args.kappa is not None:
        options = dict(dict(kappa_low=args.kappa, kappa_high=args.kappa), **options)
    with console_logging(quiet=args.quiet, verbose=args.verbose, stream=sys.stderr) as bar:
        try:
            if args.command == "run":
                result = run_grid_mode(args.input_dir, args.output_dir, bar, **options)
            elif args.command == "assemble":
                refuse_run_only(given)
                result = assemble_tiles(args.input[0] if len(args.input) == 1 else args.input,
                                        args.output_dir, bar, reference=args.reference,
                                        **options)
            else:
                result = run_demo(args.output_dir, progress_callback=bar, **options)
            bar.close()
            if args.command == "demo":
                print(demo_summary(result))
            elif not args.quiet:
                print(f"mosaic: {result.mosaic}\nreport: {result.report_path}")
            return 0
        except (GridModeError, OSError) as exc:
            bar.close()
            if args.verbose:
                traceback.print_exc()
            print(f"grid-mode: error: {exc}", file=sys.stderr)
            return 1 if getattr(exc, "__cause__", None) is not None else 2
        except KeyboardInterrupt:
            bar.close()
            print("grid-mode: interrupted (no partial output file was left)", file=sys.stderr)
            return 130
