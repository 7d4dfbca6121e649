"""Command line of grid_mode: help, errors, exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import grid_mode
from photometry_graph.pipeline import assemble as assemble_stage
from photometry_graph.pipeline.demo import write_frame_survey


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        grid_mode.main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--tile-size", "--overlap", "--stack-method", "--kappa-low", "--kappa-high",
                 "--weight-method", "--no-frame-photometry", "--no-photometry", "--model",
                 "--no-background", "--blend", "--chunk-size", "--workers", "--scheduler",
                 "--verbose", "--quiet", "INPUT_DIR", "OUTPUT_DIR"]:
        assert flag in out, flag
    assert out.count("default") >= 10


def test_top_level_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit):
        grid_mode.main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("run", "assemble", "demo"))


def _one_line_error(capsys, argv, code=2):
    assert grid_mode.main(argv) == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("grid-mode: error:")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


def test_missing_input_folder(tmp_path, capsys):
    line = _one_line_error(capsys, ["run", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert "does not exist" in line


def test_output_equal_to_input(tmp_path, capsys):
    (tmp_path / "a.fits").write_text("x")
    line = _one_line_error(capsys, ["run", str(tmp_path), str(tmp_path)])
    assert "must differ from the input folder" in line


def test_empty_plan_and_plan_without_path_column(tmp_path, capsys):
    (tmp_path / "stack_plan.csv").write_text("")
    assert "is empty" in _one_line_error(capsys, ["run", str(tmp_path), str(tmp_path / "o")])
    (tmp_path / "stack_plan.csv").write_text("order,ra,dec\n1,2,3\n")
    assert "no file path column" in _one_line_error(capsys, ["run", str(tmp_path),
                                                             str(tmp_path / "o")])


def test_no_usable_frame(tmp_path, capsys):
    (tmp_path / "junk.fits").write_text("not fits")
    err_line = _one_line_error(capsys, ["run", str(tmp_path),
                                        str(tmp_path / "o"), "-q"])
    assert "no usable frame left" in err_line


def test_assemble_without_tiles(tmp_path, capsys):
    line = _one_line_error(capsys, ["assemble", str(tmp_path), str(tmp_path / "o")])
    assert "no tile file" in line


def test_bad_option_value_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        grid_mode.main(["run", str(tmp_path), str(tmp_path / "o"), "--blend", "pyramid"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_verbose_error_shows_the_traceback(tmp_path, capsys):
    assert grid_mode.main(["run", str(tmp_path / "nope"), str(tmp_path / "o"), "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "grid-mode: error:" in err


def test_module_runs_as_a_script(tmp_path):
    proc = subprocess.run([sys.executable, grid_mode.__file__, "run", str(tmp_path / "x"),
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("grid-mode: error:")


@pytest.fixture(scope="module")
def small_survey(tmp_path_factory):
    from photometry_graph.datasets import make_frame_survey
    root = tmp_path_factory.mktemp("cli")
    survey = make_frame_survey(2, 2, frame_shape=(160, 240), channels=1, rng=7)
    return write_frame_survey(survey, root / "frames"), root


def test_run_then_assemble_with_other_blending(small_survey, capsys):
    frames, root = small_survey
    assert grid_mode.main(["run", str(frames), str(root / "out"), "--tile-size", "192",
                           "--overlap", "0.25", "--workers", "1", "--kappa", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "mosaic:" in out and (root / "out" / "mosaic_grid.fits").exists()
    report = json.loads((root / "out" / "grid_report.json").read_text())
    assert report["options"]["kappa_low"] == 2.5 and report["options"]["tile_size"] == 192
    assert grid_mode.main(["assemble", str(root / "out" / "tiles"), str(root / "again"),
                           "--blend", "feather", "--no-background", "--model", "offset",
                           "--chunk-size", "100", "-q"]) == 0
    assert capsys.readouterr().out == ""
    again = json.loads((root / "again" / "grid_report.json").read_text())
    assert again["blending"]["blend"] == "feather" and again["options"]["chunk_size"] == 100
    with fits.open(root / "out" / "mosaic_grid.fits") as a, \
            fits.open(root / "again" / "mosaic_grid.fits") as b:
        assert a[0].data.shape == b[0].data.shape
        both = np.isfinite(a[0].data) & np.isfinite(b[0].data)
        assert both.mean() > 0.8
        assert np.median(np.abs(a[0].data - b[0].data)[both]) < 0.05


def test_demo_prints_its_summary(tmp_path, capsys):
    assert grid_mode.main(["demo", str(tmp_path / "demo"), "--workers", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "harmonized" in out and "plain" in out and "mosaic_grid.fits" in out
    page = tmp_path / "demo" / "grid_report.html"
    assert page.exists() and f"page:    {page}" in out  # the summary points at the page
    demo = json.loads((tmp_path / "demo" / "grid_report.json").read_text())["demo"]
    good, plain = demo["harmonized"], demo["plain"]
    assert good["seam_frame_borders"] <= 1.2 and good["seam_tile_borders"] <= 1.2
    assert plain["seam_frame_borders"] > 3 * good["seam_frame_borders"]
    assert good["frame_offset_spread_sigma"] < 0.3 < plain["frame_offset_spread_sigma"]
    assert (tmp_path / "demo" / "frames" / "stack_plan.csv").exists()


def test_an_early_failure_prints_one_error_and_leaves_no_empty_output_folder(tmp_path,
                                                                             capsys):
    (tmp_path / "junk.fits").write_text("not fits")
    line = _one_line_error(capsys, ["run", str(tmp_path), str(tmp_path / "new" / "out")])
    assert "no usable frame left" in line
    assert not (tmp_path / "new" / "out").exists()  # created by the run, removed again
    kept = tmp_path / "existing"
    kept.mkdir()
    assert grid_mode.main(["run", str(tmp_path), str(kept)]) == 2
    err = capsys.readouterr().err
    assert kept.is_dir()  # a folder that was there before is never removed
    assert err.count("no usable frame left") == 1  # printed once, not logged as well


def test_demo_help_shows_the_demo_defaults(capsys):
    with pytest.raises(SystemExit):
        grid_mode.main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "on the global grid, pixels (default: 256)" in out and "(default: 0.25)" in out
    assert "on the global grid, pixels (default: 2048)" not in out


def _run_only_flags():
    """One command line per option that only ``run`` uses, with a value argparse accepts."""
    from dataclasses import fields
    from photometry_graph.pipeline.options import OPTION_CHOICES, RUN_ONLY, GridOptions
    out = {}
    for f in fields(GridOptions):
        if f.name not in RUN_ONLY:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.default is True:
            out[f.name] = ["--no-" + flag[2:]]
        elif f.default is False:
            out[f.name] = [flag]
        elif f.name in OPTION_CHOICES:
            out[f.name] = [flag, OPTION_CHOICES[f.name][-1]]
        elif f.name == "winsor_limits":
            out[f.name] = [flag, "0.1", "0.1"]
        else:
            out[f.name] = [flag, "tcp://localhost:1" if f.type is object else "2"]
    out["kappa"] = ["--kappa", "2.5"]
    return out


RUN_ONLY_FLAGS = _run_only_flags()


def test_every_stacking_and_frame_option_is_a_run_only_option():
    assert set(RUN_ONLY_FLAGS) >= {
        "tile_size", "overlap", "stack_method", "stack_combine", "kappa_low", "kappa_high",
        "winsor_limits", "weight_method", "radial_weight", "frame_photometry", "frame_model",
        "frame_overlaps", "frame_smooth", "scheduler", "memory_mb", "saturation", "kappa"}
    assert not {"pixel_scale", "mask_eps", "blend", "model", "save_tiff"} & set(RUN_ONLY_FLAGS)


@pytest.mark.parametrize("name", sorted(RUN_ONLY_FLAGS))
def test_assemble_refuses_run_only_options_in_one_line(name, tmp_path, capsys):
    argv = ["assemble", str(tmp_path), str(tmp_path / "o")] + RUN_ONLY_FLAGS[name]
    line = _one_line_error(capsys, argv)
    assert RUN_ONLY_FLAGS[name][0] in line and "apply to grid-mode run only" in line
    assert not (tmp_path / "o").exists()


def test_assemble_from_python_refuses_run_only_options(tmp_path):
    with pytest.raises(grid_mode.GridModeError, match=r"--tile-size, --stack-method"):
        grid_mode.assemble_tiles(tmp_path, tmp_path / "o", tile_size=512,
                                 stack_method="median")
    with pytest.raises(grid_mode.GridModeError, match="stack_kappa_low"):
        grid_mode.assemble_tiles(tmp_path, tmp_path / "o", stack_kappa_low=2.0)


def test_help_documents_the_exit_codes_and_the_fault_options(capsys):
    with pytest.raises(SystemExit):
        grid_mode.main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("Exit codes: 0 complete; 1 failed during the run", "2 bad input or options",
                 "130 interrupted", "143 terminated", "--allow-partial", "--no-resume",
                 "--max-canvas", ".grid_mode.lock"):
        assert text in out, text


_SECOND_SIGNAL = """
import os, signal, sys, time
from photometry_graph.pipeline.cli import Interrupted, _stop_on_signals
with _stop_on_signals():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except Interrupted as exc:
        print("first", exc.signame, exc.exit_code, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)  # while cleaning up: ends at once
        time.sleep(5)
        print("never")
"""


def _python(code):
    """``python -c code`` with this test's import path: the finished process."""
    import os
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def test_a_first_signal_raises_and_a_second_ends_the_process_at_once():
    proc = _python(_SECOND_SIGNAL)
    assert proc.stdout.split("\n")[0] == "first SIGINT 130" and "never" not in proc.stdout
    assert proc.returncode == 143
    assert proc.stderr == ("grid-mode: stopped at once by a second SIGTERM; temporary files "
                           "may remain (the next run into this folder removes them); run the "
                           "same command again to resume\n")


_SIGNAL_AFTER_THE_RUN = """
import os, signal, time
from photometry_graph.pipeline.cli import _stop_on_signals
with _stop_on_signals() as received:
    received.append("done")  # the run is over: a signal now ends the process, silently
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
print("never")
"""


def test_a_signal_once_the_run_is_over_ends_the_process_silently():
    proc = _python(_SIGNAL_AFTER_THE_RUN)
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "")


def test_a_full_disk_while_writing_the_mosaic_is_exit_code_1(small_survey, monkeypatch,
                                                             capsys):
    import errno
    frames, root = small_survey

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(assemble_stage, "fits_stream", full)
    assert grid_mode.main(["run", str(frames), str(root / "full"), "--tile-size", "192",
                           "--workers", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "grid-mode: error: grid mode failed: OSError: [Errno 28] No space left" in err
    assert not [p for p in (root / "full").rglob("*") if ".tmp" in p.name]


def test_assemble_into_a_folder_in_use_is_refused(small_survey, tmp_path, capsys):
    from photometry_graph.pipeline.fileio import output_lock
    frames, root = small_survey
    assert grid_mode.main(["run", str(frames), str(root / "own"), "--tile-size", "192",
                           "--workers", "1", "-q"]) == 0
    with output_lock(tmp_path):
        assert grid_mode.main(["assemble", str(root / "own" / "tiles"), str(tmp_path),
                               "-q"]) == 2
    assert "another grid-mode run is writing into" in capsys.readouterr().err


def test_a_run_imports_no_plotting_library(small_survey, tmp_path):
    # the report page is SVG written by the package: a run loads no matplotlib (nor the
    # optional reproject and dask), only what its work needs: not scipy.ndimage (~0.15 s,
    # the diagnostics' metrics) nor the synthetic datasets (the demo's)
    folder, _ = small_survey
    code = (f"import sys, grid_mode; grid_mode.main(['run', {str(folder)!r}, "
            f"{str(tmp_path / 'o')!r}]); print(sorted(sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = set(eval(proc.stdout.strip().splitlines()[-1]))
    loaded = {m.split(".")[0] for m in modules}
    assert (tmp_path / "o" / "grid_report.html").exists() and "astropy" in loaded
    assert not {"matplotlib", "reproject", "dask"} & loaded
    assert "scipy.sparse" in modules  # the names are those of the modules loaded
    assert not {"scipy.ndimage", "photometry_graph.datasets"} & modules
