"""The ``grid-mode`` command line: ``run``, ``assemble`` and ``demo``.

One flag per :class:`~photometry_graph.pipeline.options.GridOptions` field
(:func:`~photometry_graph.pipeline.options.add_option_arguments`); a progress bar on a
terminal; the exit codes of :data:`~photometry_graph.pipeline.options.EXIT_CODES`.

Signals (the command line only: a program that calls ``grid_mode.run_grid_mode`` keeps its
own handlers and gets an exception): the first SIGINT, SIGTERM or SIGHUP stops the run at
once (the workers are killed, the queued tasks cancelled, temporary files removed), prints
one line and exits 128 + the signal number; a second one ends the process immediately (one
line says so; temporary files may then remain, for the next run into the folder to remove).
"""

import argparse
import gc
import os
import signal
import sys
import threading
import traceback
from contextlib import contextmanager

import psutil

from .demo import DEMO_DEFAULTS, demo_summary, run_demo
from .options import (EXIT_CODES, OPTION_HELP, GridModeError, add_option_arguments,
                      refuse_run_only)
from .parallel import STOP_SIGNALS
from .progress import console_logging

__all__ = ["Interrupted", "build_parser", "main"]


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived: raised in the main thread by the command line's handler.

    A ``KeyboardInterrupt``, so that ``except Exception`` clauses of the run let it through.

    Examples
    --------
    >>> Interrupted(15).signame, Interrupted(15).exit_code
    ('SIGTERM', 143)
    """

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = int(signum)
        self.signame = signal.Signals(self.signum).name
        self.exit_code = 128 + self.signum


@contextmanager
def _stop_on_signals():
    """Meanwhile the first stop signal raises :class:`Interrupted`, a second exits at once.

    Yields a list: append to it when the run is over (a signal then only ends the process
    at once, without a traceback).  Handlers are installed only in the main thread; they
    are restored on exit unless a signal arrived (the process is ending: a late signal
    still ends it at once, silently).
    """
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received:  # a second signal, or the run is over: no more cleaning up
            if "done" not in received:
                _say_stopped_at_once(signum)
            _kill_children()
            os._exit(128 + signum)
        received.append(signum)
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        if not received or received == ["done"]:
            for s, h in old.items():
                signal.signal(s, h)


def _say_stopped_at_once(signum):
    """One line on stderr: a second signal ends the run without cleaning up (written with
    ``os.write``: the handler may have interrupted a write to ``sys.stderr``)."""
    name = signal.Signals(signum).name
    try:
        os.write(2, (f"grid-mode: stopped at once by a second {name}; temporary files may "
                     "remain (the next run into this folder removes them); run the same "
                     "command again to resume\n").encode())
    except OSError:  # pragma: no cover - stderr closed: nothing to tell
        pass


def _kill_children():
    """Kill every process this one started (workers, the forkserver), without waiting."""
    try:
        for child in psutil.Process().children(recursive=True):
            child.kill()
    except psutil.Error:  # pragma: no cover
        pass


def _epilog():
    codes = "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items())
    return ("Outputs: OUTPUT_DIR/tiles/tile_0001.fits..., mosaic_grid.fits, "
            "mosaic_grid_coverage.fits, grid_report.json, grid_report.html (the report to look "
            "at), mosaic_grid_preview.png; "
            "OUTPUT_DIR/resume records the finished pieces that a rerun reuses. One run per "
            f"output folder at a time (OUTPUT_DIR/.grid_mode.lock). Exit codes: {codes}.")


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
        "blending).", epilog=_epilog())
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
        p = sub.add_parser(name, parents=[parent], help=text, description=text,
                           epilog=_epilog())
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
    """Command-line entry point ``grid-mode``; returns the exit code (see ``--help``).

    Called as the command (``argv`` None: the process lives for this one run), the objects
    of the modules imported so far are frozen (``gc.freeze``): the garbage collector's
    passes during the run need not scan them again (0.3-0.5 s of a small run).
    """
    from grid_mode import assemble_tiles, run_grid_mode  # the run lives at the top level

    if argv is None:
        gc.freeze()

    args = build_parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k in OPTION_HELP and v is not None}
    given = list(options) + (["kappa"] if args.kappa is not None else [])
    if args.kappa is not None:
        options = dict(dict(kappa_low=args.kappa, kappa_high=args.kappa), **options)
    with console_logging(quiet=args.quiet, verbose=args.verbose, stream=sys.stderr) as bar, \
            _stop_on_signals() as received:
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
            received.append("done")
            bar.close()
            if args.command == "demo":
                print(demo_summary(result))
            elif not args.quiet:
                print(f"mosaic: {result.mosaic}\nreport: {result.report_path}")
            return 0
        except (GridModeError, OSError) as exc:
            received.append("done")
            bar.close()
            if args.verbose:
                traceback.print_exc()
            print(f"grid-mode: error: {exc}", file=sys.stderr)
            return getattr(exc, "exit_code", 1)  # an OSError here failed during the run
        except KeyboardInterrupt as exc:
            received.append("done")
            bar.close()
            name = getattr(exc, "signame", "SIGINT")
            print(f"grid-mode: stopped by {name}; temporary files removed; run the same "
                  "command again to resume (finished pieces are reused)", file=sys.stderr)
            return getattr(exc, "exit_code", 130)


if __name__ == "__main__":  # python -m photometry_graph.pipeline.cli (or -m ...pipeline)
    sys.exit(main())
