"""Digest of the demo's outputs: shows that a change left the mosaics bit-identical.

Runs ``grid_mode.run_demo`` (its harmonized and plain runs) and a ``run_grid_mode`` call on
the demo's frames, then prints one SHA-256 per output array (FITS data of the mosaic, the
coverage and every tile; the preview PNG's pixels).  Run it before and after a change on the
same machine and compare the two printouts (``diff``)::

    python benchmarks/output_digest.py > before.txt
    ... change ...
    python benchmarks/output_digest.py > after.txt && diff before.txt after.txt

Timings, paths, versions and the memory plan's figures derived from the process's measured
memory in ``grid_report.json`` differ between runs by nature; the report's numbers that
depend on the pixels (corrections, residuals, demo quality) are digested after removing
those fields.
"""

import argparse
import hashlib
import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from astropy.io import fits

# the checkout this script belongs to, not another one installed in the environment
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOLATILE = {"timings", "seconds", "worker_pid", "outputs", "path", "input_folder", "time_s",
            "step_times_s", "tiles_dir", "frames_dir", "options", "folder",
            # the memory plan's figures that follow the process's measured memory
            "program_mb", "host_mb", "worker_mb", "stack_mb"}


def _array_digest(array):
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(str((array.dtype.str, array.shape)).encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def folder_digest(folder):
    """``{relative file name: digest}`` of a run's output folder (FITS data, PNG pixels, report)."""
    folder, out = Path(folder), {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel.startswith("frames") or not path.is_file():
            continue
        if path.suffix == ".fits":
            with fits.open(path) as hdul:
                out[rel] = " ".join(_array_digest(h.data) for h in hdul if h.data is not None)
        elif path.suffix == ".png":
            out[rel] = _array_digest(cv2.imread(str(path), cv2.IMREAD_UNCHANGED))
        elif path.name == "grid_report.json":
            report = _strip(json.loads(path.read_text()))
            out[rel] = hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()[:16]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 1])
    parser.add_argument("--no-report", action="store_true",
                        help="digest the pixels only, not grid_report.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import grid_mode

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for channels in args.channels:
            demo = Path(tmp) / f"demo_{channels}"
            grid_mode.run_demo(demo, channels=channels, workers=1)
            again = Path(tmp) / f"run_{channels}"
            grid_mode.run_grid_mode(demo / "frames", again, workers=2, tile_size=256,
                                    overlap=0.25)
            for name, folder in ((f"demo{channels}", demo), (f"demo{channels}/plain",
                                                              demo / "plain"),
                                 (f"run{channels}", again)):
                for rel, digest in folder_digest(folder).items():
                    if args.no_report and rel.endswith(".json"):
                        continue
                    if rel.startswith("plain/"):
                        continue
                    lines.append(f"{name}/{rel}  {digest}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
