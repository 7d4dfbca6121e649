"""Options of a run, the host program's keywords and the command-line flags
(photometry_graph.pipeline.options)."""

import argparse
import logging
import types

import pytest

import grid_mode
from photometry_graph.pipeline.options import (OPTION_CHOICES, OPTION_HELP, GridModeError, GridOptions,
                                      add_option_arguments, check_options, n_workers,
                                      resolve_options)


def test_grid_mode_re_exports_the_same_objects():
    assert grid_mode.GridModeError is GridModeError
    assert grid_mode.GridOptions is GridOptions and grid_mode.OPTION_HELP is OPTION_HELP
    assert grid_mode._resolve_options is resolve_options
    err = GridModeError("x")
    assert isinstance(err, grid_mode.GridModeError)
    assert isinstance(err, ValueError) and isinstance(err, RuntimeError)


def test_every_field_has_help_and_choices_are_the_allowed_values():
    assert set(OPTION_HELP) == set(GridOptions.__dataclass_fields__)
    assert all(isinstance(text, str) and text for text in OPTION_HELP.values())
    assert OPTION_CHOICES["blend"] == ("multiband", "feather", "none")
    assert "tile_size" not in OPTION_CHOICES


def test_host_keywords_are_mapped_to_our_options(caplog):
    with caplog.at_level(logging.INFO):
        opts = resolve_options(dict(
            stack_norm_method="linear_fit", stack_weight_method="noise_variance",
            stack_reject_algo="winsorized_sigma_clip", stack_kappa_low=2.5,
            stack_kappa_high=4.0, winsor_limits=(0.1, 0.2), stack_final_combine="mean",
            apply_radial_weight=True, radial_feather_fraction=0.7, radial_shape_power=3.0,
            save_final_as_uint16=True, legacy_rgb_cube=True, grid_rgb_equalize=True,
            zconfig=types.SimpleNamespace(grid_tile_size=512, overlap=0.2, workers=1),
            frobnicate=3))
    assert opts.stack_method == "winsorized" and opts.weight_method == "noise"
    assert (opts.kappa_low, opts.kappa_high, opts.winsor_limits) == (2.5, 4.0, (0.1, 0.2))
    assert opts.radial_weight and opts.radial_feather_fraction == 0.7
    assert opts.save_uint16 and opts.legacy_rgb_cube
    assert (opts.tile_size, opts.overlap, opts.workers) == (512, 0.2, 1)
    assert "ignoring unknown option frobnicate" in caplog.text
    assert "no per-tile colour equalisation" in caplog.text
    assert all(r.getMessage().startswith("[GRID]") for r in caplog.records)


@pytest.mark.parametrize("reject, combine, method, final", [
    ("none", "median", "median", "median"), ("none", "mean", "mean", "mean"),
    ("kappa_sigma", None, "kappa_sigma", "mean"),
    ("kappa_sigma", "median", "kappa_sigma", "median"),
    ("none", None, "mean", "mean"), ("linear_fit_clip", None, "kappa_sigma", "mean")])
def test_rejection_and_final_combine(reject, combine, method, final):
    opts = resolve_options(dict(stack_reject_algo=reject, stack_final_combine=combine))
    assert (opts.stack_method, opts.stack_combine) == (method, final)


def test_explicit_keywords_win_over_zconfig_and_the_input_is_not_modified():
    options = dict(tile_size=300, zconfig=types.SimpleNamespace(tile_size=512, grid_blend="none"))
    opts = resolve_options(options)
    assert opts.tile_size == 300 and opts.blend == "none"
    assert set(options) == {"tile_size", "zconfig"}


def test_none_keeps_the_default():
    assert resolve_options(dict(tile_size=None, kappa_low=None)).tile_size == 2048


@pytest.mark.parametrize("bad", [dict(blend="pyramid"), dict(tile_size=4), dict(overlap=-1),
                                 dict(workers=0), dict(chunk_size="big"),
                                 dict(overlap=5000, tile_size=256), dict(frame_overlaps=-1)])
def test_bad_option_values_are_clear_errors(bad):
    with pytest.raises(GridModeError, match=next(iter(bad)) + "|numeric"):
        resolve_options(bad)


def test_check_options_normalises_case_and_numeric_strings():
    opts = check_options(GridOptions(blend="Feather", tile_size="256", kappa_low="2",
                                     winsor_limits=["0.1", 0.2]))
    assert opts.blend == "feather" and opts.tile_size == 256 and opts.kappa_low == 2.0
    assert opts.winsor_limits == (0.1, 0.2)


def test_n_workers():
    assert n_workers(GridOptions(workers=3)) == 3
    assert 1 <= n_workers(GridOptions()) <= 4


def test_to_dict_shows_a_client_by_its_repr():
    class Client:
        def __repr__(self):
            return "<Client tcp://x>"

    assert GridOptions(scheduler=Client()).to_dict()["scheduler"] == "<Client tcp://x>"
    assert GridOptions(scheduler="tcp://h:1").to_dict()["scheduler"] == "tcp://h:1"


def test_command_line_flags_follow_the_fields():
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    given = vars(parser.parse_args(["--tile-size", "512", "--no-background", "--radial-weight",
                                    "--winsor-limits", "0.1", "0.2", "--blend", "feather"]))
    assert given["tile_size"] == 512 and given["blend"] == "feather"
    assert given["background"] is False and given["radial_weight"] is True
    assert given["winsor_limits"] == [0.1, 0.2]
    assert given["overlap"] is None and given["photometry"] is None  # not given: default
    assert set(given) == set(OPTION_HELP)
    assert resolve_options({k: v for k, v in given.items() if v is not None}).tile_size == 512
    with pytest.raises(SystemExit):
        parser.parse_args(["--blend", "pyramid"])
