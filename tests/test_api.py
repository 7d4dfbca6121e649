"""The reproject-style API (photometry_graph.api.mosaic): inputs in every form, outputs."""

import logging

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

import photometry_graph
from photometry_graph.api import GAIN_ESTIMATORS, mosaic
from photometry_graph.core.correction import apply_correction
from photometry_graph.core.wcsgrid import footprint_bbox
from photometry_graph.datasets import make_panel_set, write_panel_set
from photometry_graph.pipeline.options import OPTION_HELP
from photometry_graph.pipeline.panels import Panel
from photometry_graph.stacking.resample import reproject_to_bbox

from conftest import celestial_header


@pytest.fixture(scope="module")
def panels():
    return make_panel_set(1, 3, panel_shape=(80, 120), rng=5, scale_range=0.05,
                          rotation_deg=8.0)


@pytest.fixture(scope="module")
def baseline(panels):
    return mosaic([(p.data, p.wcs) for p in panels.frames], workers=1)


def _inputs(form, panels, folder):
    frames = panels.frames
    if form == "files":
        return [str(p) for p in write_panel_set(panels, folder)]
    if form == "paths+weights":
        return write_panel_set(panels, folder, weights="sidecar")
    if form == "hdulist":
        return [fits.HDUList([fits.PrimaryHDU(p.data, p.header)]) for p in frames]
    if form == "primary_hdu":
        return [fits.PrimaryHDU(p.data, p.header) for p in frames]
    if form == "image_hdu":
        return [fits.ImageHDU(p.data, p.header) for p in frames]
    if form == "array_wcs":
        return [(p.data, p.wcs) for p in frames]
    if form == "array_header":
        return [(p.data, p.header) for p in frames]
    if form == "nddata":
        return [NDData(p.data, wcs=p.wcs) for p in frames]
    # CCDData: the border holds garbage, only the mask says it is no data; a constant
    # uncertainty (inverse-variance weights) does not change a multi-band blend
    return [CCDData(np.where(p.valid, p.data, 1234.5), unit="adu", wcs=p.wcs, mask=~p.valid,
                    uncertainty=StdDevUncertainty(np.full(p.shape, 2.0))) for p in frames]


FORMS = ["files", "paths+weights", "hdulist", "primary_hdu", "image_hdu", "array_wcs",
         "array_header", "nddata", "ccddata_mask_uncertainty"]


@pytest.mark.parametrize("form", FORMS)
def test_inputs_in_every_accepted_form_give_the_same_mosaic(form, panels, baseline, tmp_path):
    array, footprint = mosaic(_inputs(form, panels, tmp_path), workers=1)
    assert array.shape == baseline[0].shape and array.dtype == np.float32
    np.testing.assert_array_equal(footprint, baseline[1])
    np.testing.assert_allclose(array, baseline[0], rtol=1e-6, atol=1e-4)


def test_mosaic_is_in_the_curated_api():
    assert photometry_graph.mosaic is mosaic and "mosaic" in photometry_graph.__all__


def test_footprint_marks_the_finite_pixels_and_an_output_grid_is_honoured(panels, baseline):
    array, footprint = baseline
    assert set(np.unique(footprint)) == {0.0, 1.0}
    np.testing.assert_array_equal(footprint == 1, np.isfinite(array))
    h = mosaic([(p.data, p.wcs) for p in panels.frames], harmonize_only=True)
    same, _ = mosaic([(p.data, p.wcs) for p in panels.frames], h.wcs, h.shape, workers=1)
    np.testing.assert_allclose(same, array, rtol=1e-6, atol=1e-4)
    header = h.wcs.to_header()
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, h.shape[1], h.shape[0]
    from_header, _ = mosaic([(p.data, p.wcs) for p in panels.frames], header, workers=1)
    np.testing.assert_allclose(from_header, array, rtol=1e-6, atol=1e-4)
    bigger, fp = mosaic([(p.data, p.wcs) for p in panels.frames], h.wcs,
                        (h.shape[0] + 20, h.shape[1] + 30), workers=1)
    assert bigger.shape == (h.shape[0] + 20, h.shape[1] + 30)
    assert np.isnan(bigger[h.shape[0]:]).all() and not fp[h.shape[0]:].any()


def test_harmonize_only_gives_corrections_that_reproduce_the_mosaic(panels, baseline):
    h = mosaic([(p.data, p.wcs) for p in panels.frames], harmonize_only=True)
    assert len(h.corrections) == 3 and h.graph.number_of_nodes() == 3
    assert [c.status for c in h.corrections].count("reference") == 1
    assert all("tile" not in d for _, d in h.graph.nodes(data=True))
    assert all(d["fits"] for _, _, d in h.graph.edges(data=True))
    array = baseline[0]
    valid = []
    for k, f in enumerate(panels.frames):  # reprojected as mosaic() does, then corrected
        data = Panel.from_array(k, f.data, f.wcs).pixels()[0]
        big = footprint_bbox(f.wcs, f.shape, h.wcs, h.shape)
        tile, fp = reproject_to_bbox(data, f.wcs, h.wcs, big)
        sl = h.bboxes[k].slices_in(big)
        valid.append((h.bboxes[k], fp[sl] > 0, apply_correction(tile[sl], h.bboxes[k],
                                                                h.corrections[k])[..., 0]))
    checked = 0
    for k, (box, ok, corrected) in enumerate(valid):
        others = np.zeros(h.shape, bool)
        for j, (b, o, _) in enumerate(valid):
            others[b.y0:b.y1, b.x0:b.x1] |= o if j != k else False
        # far from every other input (the pyramid's reach), the mosaic is input k corrected
        far = ndimage.distance_transform_edt(~others)[box.y0:box.y1, box.x0:box.x1] > 30
        alone = ok & far
        checked += alone.sum() > 500
        np.testing.assert_allclose(array[box.y0:box.y1, box.x0:box.x1][alone],
                                   corrected[alone], rtol=1e-5, atol=1e-3)
    assert checked == 2  # the outer inputs (the middle one overlaps both)


def test_nddata_uncertainty_and_mask_weigh_the_plain_coadd():
    rng = np.random.default_rng(0)
    hdr = celestial_header((30, 40))
    base = rng.normal(100, 1, (30, 40)).astype(np.float32)
    mask = np.zeros((30, 40), bool)
    mask[:, :10] = True
    a = NDData(base, wcs=WCS(hdr), uncertainty=StdDevUncertainty(np.ones((30, 40))))
    b = NDData(base + 10, wcs=WCS(hdr), uncertainty=StdDevUncertainty(np.full((30, 40), 2.0)),
               mask=mask)
    out, _ = mosaic([a, b], photometry=False, background=False, blend="none", workers=1)
    inner = np.isfinite(out)
    inner[:, :12] = False  # masked columns (and the one-pixel erosion next to them)
    np.testing.assert_allclose(out[inner], (base + 2.0)[inner], rtol=1e-6)  # 1 : 1/4
    np.testing.assert_allclose(out[2:-2, 2:9], base[2:-2, 2:9], rtol=1e-6)  # a alone
    weighted, _ = mosaic([(base, hdr), (base + 10, hdr)], photometry=False, background=False,
                         blend="none", input_weights=[np.ones((30, 40)), np.full((30, 40), 3.0)])
    np.testing.assert_allclose(weighted[5, 20], base[5, 20] + 7.5, rtol=1e-6)


def test_colour_inputs_come_back_channels_first(panels):
    f = make_panel_set(1, 2, panel_shape=(60, 90), channels=3, rng=1).frames
    array, footprint = mosaic([(f[0].data, f[0].wcs), (np.moveaxis(f[1].data, -1, 0),
                                                       f[1].header)], workers=1)
    assert array.shape == (3,) + footprint.shape


def test_bad_inputs_and_arguments_say_what_is_wrong(panels):
    good = (panels.frames[0].data, panels.frames[0].wcs)
    with pytest.raises(TypeError, match="input 1 is a int"):
        mosaic([good, 3])
    with pytest.raises(ValueError, match="input 0 cannot be used: it has no celestial WCS"):
        mosaic([(panels.frames[0].data, WCS(naxis=2))])
    with pytest.raises(ValueError, match="input 0 .*nope.fits.* cannot be used"):
        mosaic(["nope.fits"])
    with pytest.raises(ValueError, match="mix channel counts"):
        mosaic([good, (np.ones((3, 20, 30)), panels.frames[1].wcs)])
    with pytest.raises(ValueError, match="shape_out needs an output_projection"):
        mosaic([good], shape_out=(10, 10))
    with pytest.raises(TypeError, match="output_projection"):
        mosaic([good], "north")
    with pytest.raises(ValueError, match="gain_estimator"):
        mosaic([good], gain_estimator="photons")
    with pytest.raises(ValueError, match="2 input_weights for 1 inputs"):
        mosaic([good], input_weights=[None, None])
    with pytest.raises(ValueError, match="at least one input"):
        mosaic([])
    with pytest.raises(ValueError, match="blend"):
        mosaic([good], blend="pyramid")


def test_gain_estimator_is_forwarded_or_said_to_be_unavailable(panels, caplog):
    assert GAIN_ESTIMATORS == ("auto", "pixels", "stars")
    inputs = [(p.data, p.wcs) for p in panels.frames[:2]]
    with caplog.at_level(logging.WARNING):
        h = mosaic(inputs, gain_estimator="stars", harmonize_only=True)
    assert h.corrections[0] is not None
    if "gain_estimator" not in OPTION_HELP:
        assert "gain_estimator='stars': this version fits gains on pixels only" in caplog.text


def test_progress_bar_and_work_dir(panels, tmp_path, capsys):
    inputs = [(p.data, p.wcs) for p in panels.frames[:2]]
    mosaic(inputs, progress_bar=True, work_dir=tmp_path, workers=1)
    assert "100%" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # the temporary tiles are gone


def test_readme_mosaic_example_runs_verbatim(tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    blocks = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(encoding="utf-8"),
                        flags=re.DOTALL)
    found = [b for b in blocks if "mosaic(inputs" in b]
    assert len(found) == 1
    (tmp_path / "example.py").write_text(found[0], encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("gain ")]
    assert len(lines) == 6  # one line per panel: gain x injected = product
    reference = [float(ln[-1]) for ln in lines if float(ln[1]) == 1.0]
    assert len(reference) == 1  # gains are relative to the reference panel's
    assert all(abs(float(ln[-1]) / reference[0] - 1) < 0.003 for ln in lines)
