"""Shared fixtures of the tests: tiny plate-solved FITS frames (grid_mode), harmonized
synthetic surveys (diagnostics)."""

import os

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import settings

from photometry_graph.datasets import make_survey
from photometry_graph.photometry.harmonize import harmonize_tiles

# CI runs the property tests on a fixed sequence of examples (reproducible failures);
# elsewhere hypothesis draws new examples on every run.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def celestial_header(shape, *, crval=(150.0, 20.0), scale_arcsec=2.0, kind="cd", rot_deg=0.0,
                     crpix=None, sip=None):
    """2-D TAN header for a frame of ``shape`` (H, W): CD, PC+CDELT or CDELT-only, optional SIP."""
    h, w = shape
    s = scale_arcsec / 3600.0
    c, sn = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    hdr = fits.Header()
    suffix = "-SIP" if sip else ""
    hdr["CTYPE1"], hdr["CTYPE2"] = "RA---TAN" + suffix, "DEC--TAN" + suffix
    hdr["CRVAL1"], hdr["CRVAL2"] = crval
    hdr["CRPIX1"], hdr["CRPIX2"] = crpix if crpix else ((w + 1) / 2.0, (h + 1) / 2.0)
    hdr["CUNIT1"], hdr["CUNIT2"] = "deg", "deg"
    if kind == "cd":
        hdr["CD1_1"], hdr["CD1_2"], hdr["CD2_1"], hdr["CD2_2"] = -s * c, s * sn, s * sn, s * c
    elif kind == "pc":
        hdr["CDELT1"], hdr["CDELT2"] = -s, s
        hdr["PC1_1"], hdr["PC1_2"], hdr["PC2_1"], hdr["PC2_2"] = c, -sn, sn, c
    else:
        hdr["CDELT1"], hdr["CDELT2"] = -s, s
    if sip:
        hdr["A_ORDER"] = hdr["B_ORDER"] = 2
        for key, value in sip.items():
            hdr[key] = value
    return hdr


def write_frame(path, data, header, *, extra=None, coverage=None):
    """Write ``data`` with ``header`` (+ keywords ``extra``, + a COVERAGE HDU) to ``path``."""
    hdr = header.copy()
    for key, value in (extra or {}).items():
        hdr[key] = value
    hdus = [fits.PrimaryHDU(np.asarray(data), hdr)]
    if coverage is not None:
        hdus.append(fits.ImageHDU(np.asarray(coverage, np.float32), name="COVERAGE"))
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


#: Filter of each 2x2 site of a colour-filter array, in row-major order.
CFA_SITES = {"RGGB": ("R", "G", "G", "B"), "BGGR": ("B", "G", "G", "R"),
             "GRBG": ("G", "R", "B", "G"), "GBRG": ("G", "B", "R", "G")}


def cfa_raw(pattern, values, shape=(16, 20)):
    """A CFA raw of a uniform colour scene: each site gets its filter's value."""
    raw = np.zeros(shape)
    for site, (dy, dx) in zip(CFA_SITES[pattern], [(0, 0), (0, 1), (1, 0), (1, 1)]):
        raw[dy::2, dx::2] = values[site]
    return raw


@pytest.fixture
def frame_factory(tmp_path):
    """Write a small noisy mono frame; returns ``make(name, **kw) -> Path``."""
    rng = np.random.default_rng(0)

    def make(name, shape=(40, 60), data=None, extra=None, coverage=None, **kw):
        img = rng.normal(100.0, 1.0, shape).astype(np.float32) if data is None else data
        hdr = celestial_header(shape, **kw)
        return write_frame(tmp_path / name, img, hdr, extra=extra, coverage=coverage)

    return make


# harmonized synthetic surveys of the diagnostics tests (tests/diagnostics)
@pytest.fixture(scope="module")
def mono():
    s = make_survey(3, 3, tile_size=128, overlap=0.25, rng=3, nebula_fill_tile=4)
    return s, harmonize_tiles(s.tiles, model="offset", background=True)


@pytest.fixture(scope="module")
def rgb_plane():
    s = make_survey(2, 3, tile_size=128, overlap=0.25, channels=3, gradient=3.0, rng=7)
    return s, harmonize_tiles(s.tiles, model="plane", background=False,
                              origin=(100.0, 50.0))
