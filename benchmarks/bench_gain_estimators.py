"""Gain ratio of one overlap from its pixels, from its stars and from both, against the truth.

Every case is one synthetic overlap pair
(:func:`photometry_graph.datasets.make_overlap_pair`, 128 x 512 pixels by default): the same
sky seen by two nodes, ``dst = gain * src`` with a gain drawn in 0.85-1.15, offsets of
+-30 sigma, a planar gradient of up to 3 sigma peak to peak over the overlap in each
image, Gaussian noise of 1 sigma in src and 0.7-1.5 sigma in dst, smooth extended emission
and Gaussian stars (FWHM 3 px, peaks log-uniform in 5-300 sigma).

The sweep runs over

- the overlap's signal-to-noise: the standard deviation of the noise-free extended signal
  (the sky and its extended emission, stars excluded) over the valid pixels, divided by the
  noise sigma of src (0.5 to 10);
- the number of stars in the overlap (0 to 200);

and, for each cell, over seeds (new sky, stars, noise, gain, offsets and gradients).

The estimators:

- **pixels**: :func:`photometry_graph.photometry.regression.fit_pair_image` with the plane
  model and its package defaults (no signal-to-noise threshold: an honest ``sigma_a``,
  statistical and the systematic of the noise ratio; offset-only only for a degenerate
  overlap, ``sigma_a / a > 25 %``), with its own ``sigma_a``; a fit whose status is not
  ``ok`` (``offset_only``) gives no gain;
- **stars**: :func:`photometry_graph.photometry.stars.measure_star_ratio` with its defaults;
- **combined**: :func:`photometry_graph.photometry.stars.combine_gain_estimates` of the two.

Both estimators get the same per-pixel noise of each image: measured on the overlap with
:func:`photometry_graph.estimate_noise` (as the overlap fits do), or the injected truth
with ``--true-noise``; ``--noise-bias F`` multiplies the noise given for dst by ``F`` (a
misestimated noise ratio, as correlated noise after resampling gives: it biases the pixel
slope on faint overlaps, and only weights the stars); ``--fwhm-dst`` gives dst another
PSF than src's 3 px (seeing that changed between the nodes: star pixels then disagree).

Printed per cell: how many seeds gave a gain (``n``), the median and the worst relative
gain error (%) of each estimator over the seeds that gave one, the median number of stars
used, the median sigma of the combination (%), and ``worse``: the number of seeds where the
combination's error exceeds the smaller of the two estimators' errors by more than the
combination's sigma.  The last lines check the same on the medians of each cell, count the
disagreements (the stars trusted) and time the two estimators against each other.

Run::

    python benchmarks/bench_gain_estimators.py            # 5 x 5 cells x 20 seeds, ~1 min
    python benchmarks/bench_gain_estimators.py --quick    # 3 seeds, ~10 s
    python benchmarks/bench_gain_estimators.py --quick --noise-bias 0.8
    python benchmarks/bench_gain_estimators.py --quick --fwhm-dst 4
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from photometry_graph.datasets import make_overlap_pair  # noqa: E402
from photometry_graph.photometry import (  # noqa: E402
    combine_gain_estimates, estimate_noise, fit_pair_image, measure_star_ratio,
)

SNRS = (0.5, 1.0, 2.0, 5.0, 10.0)
STARS = (0, 5, 20, 50, 200)


def draw_pair(shape, snr, n_stars, seed, *, fwhm_dst=None):
    """One overlap pair of the sweep (see the module docstring); ``seed`` as
    :func:`numpy.random.default_rng` takes it."""
    rng = np.random.default_rng(seed)
    h, w = shape
    slopes = [(rng.uniform(-3, 3) / w, rng.uniform(-3, 3) / h) for _ in range(2)]
    return make_overlap_pair(shape, n_stars=n_stars, signal_to_noise=snr,
                             gain=rng.uniform(0.85, 1.15), noise_src=1.0,
                             noise_dst=rng.uniform(0.7, 1.5),
                             offsets=tuple(rng.uniform(-30, 30, 2)), gradient_src=slopes[0],
                             gradient_dst=slopes[1], fwhm=3.0, fwhm_dst=fwhm_dst, rng=rng)


def run_case(pair, *, true_noise, noise_bias=1.0):
    """Relative errors, sigmas and times of the three estimators on one pair."""
    if true_noise:
        noise = (pair.noise_src, pair.noise_dst)
    else:
        noise = tuple(float(estimate_noise(img, pair.valid, max_samples=120_000,
                                           estimator="auto")[0])
                      for img in (pair.src, pair.dst))
    noise = (noise[0], noise[1] * noise_bias)
    t0 = time.perf_counter()
    fit = fit_pair_image(pair.src, pair.dst, pair.valid, noise_x=noise[0], noise_y=noise[1],
                         model="plane")
    t1 = time.perf_counter()
    star = measure_star_ratio(pair.src, pair.dst, pair.valid, noise_src=noise[0],
                              noise_dst=noise[1], saturated=pair.saturated)
    t2 = time.perf_counter()
    a_pix = fit.a if fit.ok else np.nan
    a, sigma, source, disagree = combine_gain_estimates(a_pix, fit.sigma_a, star.ratio,
                                                        star.sigma)
    g = pair.gain
    return dict(pix=abs(a_pix / g - 1), star=abs(star.ratio / g - 1), comb=abs(a / g - 1),
                sigma=sigma / g, source=source, disagree=disagree, used=star.n_used,
                snr_fit=fit.signal_to_noise, t_pix=t1 - t0, t_star=t2 - t1)


def _pct(values, how):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return f"{100 * how(v):7.3f}" if v.size else "      -"


def summarise(cell):
    """One table row's numbers for the results of one cell."""
    worse = 0
    for r in cell:
        best = np.nanmin([r["pix"], r["star"]]) if r["source"] != "none" else np.nan
        if np.isfinite(best) and r["comb"] > best + r["sigma"]:
            worse += 1
    out = {"worse": worse, "disagree": sum(r["disagree"] for r in cell)}
    for key in ("pix", "star", "comb"):
        v = np.array([r[key] for r in cell], float)
        out[key + "_n"] = int(np.isfinite(v).sum())
        out[key + "_med"] = _pct(v, np.median)
        out[key + "_max"] = _pct(v, np.max)
        out[key + "_median"] = float(np.median(v[np.isfinite(v)])) if np.isfinite(v).any() \
            else np.nan
    out["sigma"] = _pct([r["sigma"] for r in cell], np.median)
    out["sigma_median"] = float(np.median([r["sigma"] for r in cell]))
    out["used"] = int(np.median([r["used"] for r in cell]))
    out["snr_fit"] = float(np.nanmedian([r["snr_fit"] for r in cell]))
    return out


HEADER = ("  S/N stars | fit S/N |  pixels: n   med %  worst % |  stars: n used   med %  worst %"
          " | combined: n   med %  worst % sigma % | worse")


def row(snr, n_stars, s):
    return (f"{snr:5.1f} {n_stars:5d} | {s['snr_fit']:7.2f} | {s['pix_n']:9d} {s['pix_med']} "
            f"{s['pix_max']}  | {s['star_n']:8d} {s['used']:4d} {s['star_med']} "
            f"{s['star_max']}  | {s['comb_n']:10d} {s['comb_med']} {s['comb_max']} "
            f"{s['sigma']} | {s['worse']:5d}")


def _median_check(s):
    """Is the cell's median combined error within its median sigma of the better
    estimator's median error?"""
    best = np.nanmin([s["pix_median"], s["star_median"]]) if (
        np.isfinite(s["pix_median"]) or np.isfinite(s["star_median"])) else np.nan
    return not np.isfinite(best) or s["comb_median"] <= best + s["sigma_median"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds per cell (~10 s)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default 20)")
    parser.add_argument("--shape", type=int, nargs=2, default=(128, 512), metavar=("H", "W"))
    parser.add_argument("--true-noise", action="store_true",
                        help="give both estimators the injected noise instead of measuring it")
    parser.add_argument("--noise-bias", type=float, default=1.0,
                        help="multiply the noise of dst given to both estimators (e.g. 0.8: a "
                             "noise ratio misestimated by 20 %%, as correlated noise does)")
    parser.add_argument("--fwhm-dst", type=float, default=None,
                        help="PSF FWHM of dst in pixels (src: 3; default the same): seeing "
                             "that differs between the two nodes")
    args = parser.parse_args(argv)
    n_seeds = args.seeds or (3 if args.quick else 20)
    print(f"overlap {args.shape[0]} x {args.shape[1]}, {n_seeds} seeds per cell, noise "
          f"{'injected' if args.true_noise else 'measured (estimate_noise)'}, dst noise x "
          f"{args.noise_bias:g}, FWHM src 3 dst {args.fwhm_dst or 3.0:g} px; load "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("errors: |estimated gain / true gain - 1| in %; '-': no estimate in any seed")
    print(HEADER)
    all_results, worse, median_fail, disagree = [], 0, [], 0
    for i, snr in enumerate(SNRS):
        for n_stars in STARS:
            pairs = (draw_pair(tuple(args.shape), snr, n_stars, [k, i, n_stars],
                               fwhm_dst=args.fwhm_dst) for k in range(n_seeds))
            cell = [run_case(pair,
                             true_noise=args.true_noise, noise_bias=args.noise_bias)
                    for pair in pairs]
            s = summarise(cell)
            print(row(snr, n_stars, s), flush=True)
            all_results += cell
            worse += s["worse"]
            disagree += s["disagree"]
            if not _median_check(s):
                median_fail.append((snr, n_stars))
    n = len(all_results)
    print(f"\ncombination worse than the better estimator by more than its sigma: {worse} of "
          f"{n} cases")
    print("cells whose median combined error exceeds the better median by more than the "
          f"median sigma: {median_fail if median_fail else 'none'}")
    print(f"pixel and star estimates disagreeing beyond 3 sigma (stars trusted): {disagree} "
          f"of {n} cases")
    t_pix = np.median([r["t_pix"] for r in all_results])
    t_star = np.median([r["t_star"] for r in all_results])
    print(f"median time per overlap: fit_pair_image {1000 * t_pix:.1f} ms, measure_star_ratio "
          f"{1000 * t_star:.1f} ms (x{t_star / t_pix:.2f} of the pixel fit); load "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
