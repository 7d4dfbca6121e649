"""Speed and accuracy of the fast WCS-to-WCS remap against reproject_interp.

One 1080x1920 plate-solved frame (a Seestar-sized frame, slightly rotated,
optionally with SIP distortion) is put onto a 2000x2000 tile of a global TAN
grid, once with ``reproject.reproject_interp(order='bilinear')`` and once
with :func:`photometry_graph.stacking.resample.reproject_to_bbox`, in the same run.
Printed: both times, their ratio, the coordinate-map error against the exact
per-pixel transform and the pixel differences in units of the noise sigma.

Run: ``python benchmarks/bench_resample.py [--sip] [--repeat N]``.
"""

import argparse
import time

import numpy as np
from astropy.wcs import WCS, Sip
from reproject import reproject_interp

from photometry_graph.datasets import make_sky
from photometry_graph.stacking.resample import coordinate_map, reproject_to_bbox
from photometry_graph.core.tiles import BBox
from photometry_graph.core.wcsgrid import tile_wcs


def make_inputs(sip, rng):
    H, W = 1080, 1920
    scale = 2.4 / 3600
    frame = WCS(naxis=2)
    frame.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if sip else ["RA---TAN", "DEC--TAN"]
    frame.wcs.crval = [83.8, -5.4]
    frame.wcs.crpix = [(W + 1) / 2, (H + 1) / 2]
    th = np.radians(7.0)
    frame.wcs.cd = scale * np.array([[-np.cos(th), np.sin(th)], [np.sin(th), np.cos(th)]])
    if sip:
        a = np.zeros((4, 4))
        b = np.zeros((4, 4))
        a[2, 0], a[0, 2], b[1, 1], a[3, 0], b[0, 3] = 2e-6, -1e-6, 1.5e-6, 3e-10, -2e-10
        frame.sip = Sip(a, b, None, None, frame.wcs.crpix)
    frame.wcs.set()
    # global grid: north up, same scale, tangent point offset from the frame centre
    glob = WCS(naxis=2)
    glob.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    glob.wcs.crval = [83.5, -5.2]
    glob.wcs.cdelt = [-scale, scale]
    glob.wcs.crpix = [800.0, 900.0]
    glob.wcs.set()
    cx, cy = glob.all_world2pix([[83.8, -5.4]], 0)[0]
    box = BBox(int(cy) - 1000, int(cy) + 1000, int(cx) - 1000, int(cx) + 1000)
    sky = make_sky((H, W), 1, rng=rng, star_density=3e-4, nebulae=4)
    data = sky.render(BBox(0, H, 0, W))[..., 0] + rng.normal(0, 1.0, (H, W))
    return data.astype(np.float32), frame, glob, box


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sip", action="store_true", help="give the frame SIP distortion")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of the fast remap")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    data, frame, glob, box = make_inputs(args.sip, rng)
    tw = tile_wcs(glob, box)

    t0 = time.perf_counter()
    ref, ref_fp = reproject_interp((data.astype(np.float64), frame), tw, shape_out=box.shape,
                                   order="bilinear")
    t_ref = time.perf_counter() - t0

    times = []
    for _ in range(max(1, args.repeat)):
        t0 = time.perf_counter()
        out, fp = reproject_to_bbox(data, frame, glob, box, grid_step=32)
        times.append(time.perf_counter() - t0)
    t_fast = min(times)

    sub = BBox(box.y0 + 500, box.y0 + 1500, box.x0 + 500, box.x0 + 1500)
    mx, my = coordinate_map(frame, glob, sub, 32)
    ex, ey = coordinate_map(frame, glob, sub, None)
    map_err = np.hypot(mx - ex, my - ey)

    mine, theirs = np.isfinite(out[..., 0]), np.isfinite(ref)
    both = mine & theirs
    diff = np.abs(out[..., 0][both] - ref[both])
    sigma = 1.0
    print(f"frame 1080x1920 -> tile 2000x2000, SIP={'yes' if args.sip else 'no'}")
    print(f"reproject_interp (bilinear): {t_ref:8.3f} s")
    print(f"reproject_to_bbox (step 32): {t_fast:8.3f} s   (best of {len(times)})")
    print(f"speed ratio: {t_ref / t_fast:8.1f}x")
    print(f"coordinate map error (1000x1000 px, vs exact): max {map_err.max():.2e} px, "
          f"median {np.median(map_err):.2e} px")
    print(f"valid pixels: both {both.sum()}, only fast {(mine & ~theirs).sum()}, "
          f"only reproject {(theirs & ~mine).sum()}")
    print(f"|difference| / sigma: median {np.median(diff) / sigma:.2e}, "
          f"99th pct {np.percentile(diff, 99) / sigma:.2e}, max {diff.max() / sigma:.2e}")


if __name__ == "__main__":
    main()
