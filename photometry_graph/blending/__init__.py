"""From corrected tiles to the mosaic: Gaussian/Laplacian pyramids, feathering and
multi-band blending, chunked assembly in bounded memory.
"""

from .pyramid import (  # noqa: F401
    pyr_down, pyr_up, level_shapes, max_levels, build_gaussian_pyramid, gaussian_levels,
    build_laplacian_pyramid, reconstruct_from_laplacian, fill_invalid,
)
from .blend import (  # noqa: F401
    smoothstep, feather_weight, normalise_weights, levels_for_overlap, pyramid_halo,
    taper_width, overlap_width, BlendLayer, BlendOutput, blend_layers, feather_blend,
    multiband_blend, BLEND_METHODS,
)
from .assembly import (  # noqa: F401
    AssemblyResult, assemble_mosaic, chunk_boxes, BBoxIndex,
)

__all__ = [
    "pyr_down", "pyr_up", "level_shapes", "max_levels", "build_gaussian_pyramid",
    "gaussian_levels", "build_laplacian_pyramid", "reconstruct_from_laplacian", "fill_invalid",
    "smoothstep", "feather_weight", "normalise_weights", "levels_for_overlap", "pyramid_halo",
    "taper_width", "overlap_width", "BlendLayer", "BlendOutput", "blend_layers",
    "feather_blend", "multiband_blend", "BLEND_METHODS", "AssemblyResult", "assemble_mosaic",
    "chunk_boxes", "BBoxIndex",
]
