"""The README's Python example, run verbatim as a script on small synthetic frames."""

import os
import re
import subprocess
import sys
from pathlib import Path

from photometry_graph.datasets import make_frame_survey
from photometry_graph.pipeline.demo import write_frame_survey

ROOT = Path(__file__).resolve().parents[1]


def readme_python_example():
    """The README's ```python block that calls run_grid_mode, as written there."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"),
                        flags=re.DOTALL)
    found = [b for b in blocks if "run_grid_mode(" in b]
    assert len(found) == 1, f"{len(found)} Python blocks call run_grid_mode in README.md"
    return found[0]


def test_readme_python_example_runs_verbatim_as_a_script(tmp_path):
    write_frame_survey(make_frame_survey(2, 2, frame_shape=(160, 240), channels=1, rng=3),
                       tmp_path / "frames")
    script = tmp_path / "example.py"
    script.write_text(readme_python_example(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "WARN" not in output, output[-3000:]
    # the callback printed the host's level names and a percentage in every call
    calls = [ln.split(" ", 2) for ln in proc.stdout.splitlines() if "[GRID]" in ln]
    assert calls and all(level == "INFO" and float(pct) >= 0 for level, pct, _ in calls)
    assert (tmp_path / "out" / "mosaic_grid.fits").exists()
    assert (tmp_path / "out" / "grid_report.html").exists()
    assert proc.stdout.strip().splitlines()[-1].endswith("grid_report.html")
