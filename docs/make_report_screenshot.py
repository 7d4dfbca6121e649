"""Render the demo's grid_report.html and take the README's screenshot of it.

Runs ``grid-mode demo`` into a temporary folder (or uses ``--folder``, the output folder of
any run), times the rendering of its page against the run itself, and photographs the page
with headless Chromium (Debian's ``chromium``)::

    python docs/make_report_screenshot.py                  # -> docs/report.png
    python docs/make_report_screenshot.py --folder OUT --output shot.png --height 4000
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grid_mode  # noqa: E402
from photometry_graph.diagnostics.html import render_html_report  # noqa: E402


def screenshot(page, output, width, height):
    """Photograph ``page`` (a file) with headless Chromium into ``output`` (PNG)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--screenshot={output}",
                        f"--window-size={width},{height}", Path(page).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="output folder of a run (default: run the demo)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "report.png"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "demo"
        if not args.folder:
            t0 = time.perf_counter()
            grid_mode.run_demo(folder)
            print(f"demo (both runs, pages included): {time.perf_counter() - t0:.2f} s")
        report = json.loads((folder / "grid_report.json").read_text(encoding="utf-8"))
        render_html_report(report)  # the first page (imports, caches) not timed
        t0, c0 = time.perf_counter(), time.process_time()
        page = render_html_report(report)  # the page without its previews, timed alone
        print(f"render_html_report: {time.perf_counter() - t0:.2f} s wall, "
              f"{time.process_time() - c0:.2f} s CPU for {len(page)} bytes; the run's own "
              f"total: {report['timings']['total']:.2f} s wall; load {load:.2f} on "
              f"{os.cpu_count()} cores")
        screenshot(folder / "grid_report.html", args.output, args.width, args.height)
    print(f"screenshot: {args.output}")


if __name__ == "__main__":
    main()
