"""Core objects shared by every stage: tiles and bounding boxes, per-node photometric
corrections, valid-pixel masks, the global celestial grid and the display stretch.
"""

from .tiles import (  # noqa: F401
    BBox, TilePhotometryInfo, common_channels, grid_layout,
)
from .correction import (  # noqa: F401
    Correction, apply_correction, identity_correction,
)
from .masks import (  # noqa: F401
    compute_valid_mask, as_channels_last, erode_mask, block_mean,
)
from .display import (  # noqa: F401
    asinh_stretch, eight_bit, png_bytes,
)
from .wcsgrid import (  # noqa: F401
    celestial_part, lonlat_from_world, GlobalGrid, celestial_pixel_scale, build_global_grid,
    footprint_bbox, assign_frames_to_tiles, tile_wcs, binned_wcs, transform_pixels,
    frame_border, MAX_SCALE_RATIO, geometry_outliers, canvas_limit,
)

__all__ = [
    "BBox", "TilePhotometryInfo", "common_channels", "grid_layout", "Correction",
    "apply_correction", "identity_correction", "compute_valid_mask", "as_channels_last",
    "erode_mask", "block_mean", "asinh_stretch", "eight_bit", "png_bytes", "celestial_part",
    "lonlat_from_world", "GlobalGrid", "celestial_pixel_scale", "build_global_grid",
    "footprint_bbox", "assign_frames_to_tiles", "tile_wcs", "binned_wcs", "transform_pixels",
    "frame_border", "MAX_SCALE_RATIO", "geometry_outliers", "canvas_limit",
]
