"""From frames to tiles: debayering, fast WCS-to-WCS resampling and weighted, clipped,
streaming stacking.
"""

from .bayer import (  # noqa: F401
    BAYER_CODES, BAYER_PATTERNS, bayer_pattern, debayer,
)
from .resample import (  # noqa: F401
    reproject_to_bbox, coordinate_map, spline_upsample_matrix, ORDERS, wcs_homography,
    BoxExtent, box_extent, source_crop, HOMOGRAPHY_TOL,
)
from .stack import (  # noqa: F401
    stack_frames, estimate_frame_noise, inverse_variance_weight, STACK_METHODS, WEIGHT_METHODS,
    BAND_ROWS, NOISE_FLOOR, frame_weights, radial_weight, frame_on_tile,
)
from .clip import (  # noqa: F401
    ClipSettings, STATE_BYTES, COUNT_MAX_16, trim_variance_ratio, winsor_scale_factor, Moments,
    robust_bounds, ClippedSums, masked_median,
)
from .homography import (  # noqa: F401
    fit_homography, apply_homography, homography_maps, inverse_homography, pixels_within,
)
from .curvature import (  # noqa: F401
    half_second_differences, phase_weighted,
)

__all__ = [
    "BAYER_CODES", "BAYER_PATTERNS", "bayer_pattern", "debayer", "reproject_to_bbox",
    "coordinate_map", "spline_upsample_matrix", "ORDERS", "wcs_homography", "BoxExtent",
    "box_extent", "source_crop", "HOMOGRAPHY_TOL", "stack_frames", "estimate_frame_noise",
    "inverse_variance_weight", "STACK_METHODS", "WEIGHT_METHODS", "BAND_ROWS", "NOISE_FLOOR",
    "frame_weights", "radial_weight", "frame_on_tile", "ClipSettings", "STATE_BYTES",
    "COUNT_MAX_16", "trim_variance_ratio", "winsor_scale_factor", "Moments", "robust_bounds",
    "ClippedSums", "masked_median", "fit_homography", "apply_homography", "homography_maps",
    "inverse_homography", "pixels_within", "half_second_differences", "phase_weighted",
]
