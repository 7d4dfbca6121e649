"""What limits the frame gains of the faint field: noise, resampling or the estimator.

Accuracy, not speed.  For each variant (mono, RGB, Bayer) and seed, the faint frame survey
(:func:`photometry_graph.datasets.make_faint_frame_survey`, 5 x 5 frames of 512 px) goes
through the frame solve as grid mode runs it (``solve_frames`` of
``tests/photometry/test_faint_field.py``), and the script prints:

- ``worst``: the worst frame gain against the truth after the global gauge (as the tests);
- ``noise-free``: the same for a survey of the same kind drawn without noise: what the
  resampling and the debayering of the stars leave;
- ``pull``: RMS of (pixel gain - true ratio) / its sigma over the overlaps (1 when the
  sigmas are honest);
- ``sigma``: the median frame gain sigma of the solve, and ``expected``: the median worst
  frame gain of 2000 draws of independent frame errors with those sigmas (after the same
  gauge), with ``P``, the fraction of draws within the target (0.3 %, Bayer 0.5 %);
- with ``--mask-stars R``: the worst frame gain and the median pixel-gain sigma when the
  pixel fit of every overlap leaves out the pixels within ``R`` binned pixels of a compact
  source detected by sep in either image (the gain then comes from the extended emission
  and the sky; the stars' aperture fluxes still give theirs).

Run::

    python benchmarks/faint_frame_limits.py --channels 1 3 bayer --seeds 1 2 3
    python benchmarks/faint_frame_limits.py --channels 1 --seeds 1 2 3 --mask-stars 2
"""

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests" / "photometry"))

from photometry_graph.datasets import make_faint_frame_survey  # noqa: E402
from photometry_graph.photometry import overlap  # noqa: E402
from test_faint_field import solve_frames  # noqa: E402

logger = logging.getLogger("faint_frame_limits")

TARGETS = {"1": 0.003, "3": 0.003, "bayer": 0.005}


def compact_source_mask(image, valid, noise, radius):
    """Pixels within ``radius`` of a source that sep detects at 3 sigma in ``image``."""
    import sep
    data = np.where(valid, image, 0.0).astype(np.float64)
    invalid = ~valid
    box = int(np.clip(min(data.shape) // 4, 8, 64))
    data = data - sep.Background(data, mask=invalid, bw=box, bh=box).back()
    objects = sep.extract(np.where(valid, data, 0.0), 3.0, err=float(noise), mask=invalid,
                          minarea=3)
    mask = np.zeros(data.shape, dtype=bool)
    sep.mask_ellipse(mask, objects["x"], objects["y"], radius, radius, 0.0)
    return mask


def star_masked_fit(radius):
    """``fit_edge_channel`` whose pixel gain leaves out the compact sources of both images.

    The stars' gain and the offsets come from every jointly valid pixel as before; the
    pixel gain from those more than ``radius`` binned pixels from a detected source.
    """
    original = overlap.fit_edge_channel

    def fit(src_image, dst_image, joint, **kwargs):
        full = original(src_image, dst_image, joint, **kwargs)
        if not (full.noise_x > 0 and full.noise_y > 0):
            return full
        ok = joint & np.isfinite(src_image) & np.isfinite(dst_image)
        mask = (compact_source_mask(src_image, ok, full.noise_x, radius)
                | compact_source_mask(dst_image, ok, full.noise_y, radius))
        pixels = original(src_image, dst_image, ok & ~mask,
                          **dict(kwargs, gain_estimator="pixels"))
        return overlap.combine_fit(replace(full, a_pixels=pixels.a_pixels,
                                           sigma_a_pixels=pixels.sigma_a_pixels))

    return fit


def truth_pulls(survey, result):
    """RMS of (pixel gain - true ratio) / sigma over the overlaps and channels."""
    gains = np.array([np.atleast_1d(f.gain) for f in survey.frames], dtype=float)
    pulls = []
    for row in result.report["harmonize"]["gain_estimates"]["edges"]:
        a, s = row["a_pixels"], row["sigma_a_pixels"]
        if a is not None and s is not None and np.isfinite(a) and np.isfinite(s):
            truth = gains[row["dst"], row["channel"]] / gains[row["src"], row["channel"]]
            pulls.append((a - truth) / s)
    return float(np.sqrt(np.mean(np.square(pulls))))


def expected_worst(result, target, *, draws=2000, rng=0):
    """Median frame-gain sigma, median worst of random draws with it, P(worst < target)."""
    sigma = np.array([c.gain_err / c.gain for c in result.corrections.values()], dtype=float)
    sigma = np.nan_to_num(sigma, nan=0.0)
    e = np.random.default_rng(rng).normal(size=(draws,) + sigma.shape) * sigma
    log_gains = np.log1p(e)
    e = np.expm1(log_gains - log_gains.mean(axis=1, keepdims=True))  # the gauge of the tests
    worst = np.abs(e).max(axis=(1, 2))
    return float(np.median(sigma[sigma > 0])), float(np.median(worst)), \
        float(np.mean(worst < target))


def pixel_sigma(result):
    rows = result.report["harmonize"]["gain_estimates"]["edges"]
    s = [r["sigma_a_pixels"] / r["a_pixels"] for r in rows
         if r["sigma_a_pixels"] is not None and np.isfinite(r["sigma_a_pixels"])]
    return float(np.median(s))


def measure(channels, seed, mask_stars=0.0):
    """The numbers of one variant and seed (a dict of fractions)."""
    ch = channels if channels == "bayer" else int(channels)
    survey = make_faint_frame_survey(seed, channels=ch)
    result, err = solve_frames(survey)
    _, err_quiet = solve_frames(make_faint_frame_survey(seed, channels=ch, add_noise=False))
    sigma, worst, p = expected_worst(result, TARGETS[channels])
    out = {"worst": err["gain"].max(), "noise_free": err_quiet["gain"].max(),
           "pull": truth_pulls(survey, result), "sigma": sigma, "expected": worst, "p": p,
           "pixel_sigma": pixel_sigma(result)}
    if mask_stars > 0:
        with mock.patch.object(overlap, "fit_edge_channel", star_masked_fit(mask_stars)):
            masked, err_masked = solve_frames(survey)
        out.update(masked_worst=err_masked["gain"].max(), masked_sigma=pixel_sigma(masked))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", nargs="+", default=["1", "3", "bayer"],
                        choices=["1", "3", "bayer"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--mask-stars", type=float, default=0.0, metavar="R",
                        help="also fit the pixels without the compact sources (radius in "
                             "binned pixels; 0: not)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("photometry_graph").setLevel(logging.ERROR)
    for channels in args.channels:
        for seed in args.seeds:
            m = measure(channels, seed, args.mask_stars)
            line = (f"channels {channels:5s} seed {seed}: worst {100 * m['worst']:.3f} %, "
                    f"noise-free {100 * m['noise_free']:.3f} %, pixel sigma "
                    f"{100 * m['pixel_sigma']:.3f} %, pull {m['pull']:.2f}, frame sigma "
                    f"{100 * m['sigma']:.3f} %, expected worst {100 * m['expected']:.3f} % "
                    f"(P within {100 * TARGETS[channels]:.1f} %: {m['p']:.2f})")
            if "masked_worst" in m:
                line += (f"; stars masked: worst {100 * m['masked_worst']:.3f} %, pixel sigma "
                         f"{100 * m['masked_sigma']:.3f} %")
            logger.info(line)


if __name__ == "__main__":
    main()
