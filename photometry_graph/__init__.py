"""Graph-based photometric harmonization and seamless blending of mosaic tiles.

The package holds the mathematics of Grid/Survey mode as pure functions on arrays, masks
and WCS objects; ``grid_mode`` runs the pipeline.  The subpackages follow the data flow:

``core``         tiles and bounding boxes, corrections, valid-pixel masks, the global grid
``stacking``     debayering, fast WCS-to-WCS resampling, weighted clipped stacking
``photometry``   pairwise fits, the overlap graph, the global solve, background matching,
                 the harmonization chain and the frame photometry
``blending``     pyramids, feathering and multi-band blending, chunked assembly
``pipeline``     options, the stack plan, file I/O, task dispatch, progress
``diagnostics``  truth metrics, residual tables, plots
``datasets``     synthetic skies, surveys and panel sets with known truth

:func:`mosaic` (module ``api``) is the reproject-style entry point: images with a WCS in,
``(array, footprint)`` out.

The names below are the ones a user calls; everything else is imported from its
subpackage (``from photometry_graph.photometry import fit_pair``).  They are loaded on first
use, so that ``import photometry_graph`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "GRID_PREFIX": "._log",
    "BBox": ".core.tiles",
    "TilePhotometryInfo": ".core.tiles",
    "Correction": ".core.correction",
    "apply_correction": ".core.correction",
    "compute_valid_mask": ".core.masks",
    "build_global_grid": ".core.wcsgrid",
    "debayer": ".stacking.bayer",
    "reproject_to_bbox": ".stacking.resample",
    "stack_frames": ".stacking.stack",
    "fit_pair": ".photometry.regression",
    "estimate_noise": "._stats",
    "build_tile_overlap_graph": ".photometry.overlap",
    "fit_overlap_edges": ".photometry.overlap",
    "solve_global_photometry": ".photometry.solve",
    "match_backgrounds": ".photometry.background",
    "harmonize_tiles": ".photometry.harmonize",
    "harmonize_frames": ".photometry.frames",
    "build_laplacian_pyramid": ".blending.pyramid",
    "reconstruct_from_laplacian": ".blending.pyramid",
    "blend_layers": ".blending.blend",
    "assemble_mosaic": ".blending.assembly",
    "mosaic": ".api",
}
_SUBPACKAGES = ("core", "stacking", "photometry", "blending", "pipeline", "diagnostics",
                "datasets")

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API) | set(_SUBPACKAGES))
