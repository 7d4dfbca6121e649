"""Accuracy sweep: how well ``grid-mode run`` recovers injected per-frame gains.

For each seed, a synthetic frame survey (2 x 3 frames by default)
(:func:`photometry_graph.datasets.make_frame_survey`: gains +-15 % per frame
and channel, offsets +-30 sigma, gradients, empty borders, a NaN blob and a
satellite trail) is written to a temporary folder and run through
:func:`grid_mode.run_grid_mode`.  The solved frame gain times the injected
gain must be the same for every frame; printed per seed is the worst
deviation of that product from its median over the frames (any channel),
then the median and the maximum over the seeds.

This measures accuracy (and prints the frame photometry's fit count and time); it backs
the frame-size statements of ``tests/test_grid_mode_e2e.py`` and the README.

Run::

    python benchmarks/frame_gains.py --channels 3 --frame-shape 200 300 --seeds 1-10
    python benchmarks/frame_gains.py --channels bayer --frame-shape 800 1200 --seeds 1-5
    python benchmarks/frame_gains.py --channels 1 --frame-shape 120 180 --frames-grid 10 10 \
        --frame-overlap 0.9 --frame-overlaps 0 --seeds 1-2     # every overlap fitted
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grid_mode  # noqa: E402
from photometry_graph.datasets import make_frame_survey  # noqa: E402
from photometry_graph.pipeline.demo import write_frame_survey  # noqa: E402

logger = logging.getLogger("frame_gains")


def worst_frame_gain_error(channels, frame_shape, seed, *, workers=1, grid=(2, 3),
                           frame_overlap=0.3, **options):
    """Worst relative deviation of solved x injected gain over the frames of one survey.

    Parameters
    ----------
    channels : {1, 3, "bayer"}
    frame_shape : tuple of int
    seed : int
    workers : int
    grid : tuple of int
        Frame pattern, rows x columns.
    frame_overlap : float
        Overlap of neighbouring frames (0.9: every frame overlaps most others).
    **options
        Further keywords of ``run_grid_mode`` (e.g. ``frame_overlaps``).

    Returns
    -------
    (float, float, dict)
        The worst deviation (fraction), the run's wall time in seconds, and the frame
        photometry's fit count and time.
    """
    survey = make_frame_survey(grid[0], grid[1], frame_shape=frame_shape,
                               overlap=frame_overlap, channels=channels, rng=seed)
    with tempfile.TemporaryDirectory() as tmp:
        frames = write_frame_survey(survey, Path(tmp) / "frames")
        t0 = time.perf_counter()
        result = grid_mode.run_grid_mode(frames, Path(tmp) / "out",
                                         tile_size=max(256, min(1024, frame_shape[0])),
                                         overlap=0.25, workers=workers, **options)
        elapsed = time.perf_counter() - t0
    injected = np.array([f.gain for f in survey.frames])
    solved = np.array([f["correction"]["gain"] for f in result.report["frames"]])
    product = solved * injected
    harmonize = result.report["frame_photometry"].get("harmonize", {})
    solve = {"fits": harmonize.get("edges"),
             "seconds": result.report["timings"]["frame_photometry"]}
    return float(np.abs(product / np.median(product, axis=0) - 1).max()), elapsed, solve


def _seeds(text):
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", default="3", choices=["1", "3", "bayer"])
    parser.add_argument("--frame-shape", type=int, nargs=2, default=(200, 300),
                        metavar=("H", "W"))
    parser.add_argument("--seeds", type=_seeds, default=_seeds("1-5"),
                        help="'1-10' or '1,3,5'")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--frames-grid", type=int, nargs=2, default=(2, 3), metavar=("R", "C"),
                        help="frame pattern (default 2 x 3)")
    parser.add_argument("--frame-overlap", type=float, default=0.3,
                        help="overlap of neighbouring frames (0.9: a stack of one field)")
    parser.add_argument("--frame-overlaps", type=int, default=None,
                        help="largest overlaps fitted per frame (grid-mode's option; 0 = all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("photometry_graph").setLevel(logging.ERROR)
    logging.getLogger("grid_mode").setLevel(logging.ERROR)
    channels = args.channels if args.channels == "bayer" else int(args.channels)
    shape = tuple(args.frame_shape)
    extra = {} if args.frame_overlaps is None else {"frame_overlaps": args.frame_overlaps}
    errors = []
    for seed in args.seeds:
        err, elapsed, solve = worst_frame_gain_error(
            channels, shape, seed, workers=args.workers, grid=tuple(args.frames_grid),
            frame_overlap=args.frame_overlap, **extra)
        errors.append(err)
        logger.info("channels %s, %dx%d frames of %dx%d, seed %d: worst frame gain %.2f %% "
                    "(%s overlaps fitted, frame photometry %.1f s, run %.1f s)", args.channels,
                    args.frames_grid[0], args.frames_grid[1], shape[0], shape[1], seed,
                    100 * err, solve["fits"], solve["seconds"], elapsed)
    logger.info("worst frame gain over %d seeds: median %.2f %%, max %.2f %%", len(errors),
                100 * float(np.median(errors)), 100 * max(errors))


if __name__ == "__main__":
    main()
