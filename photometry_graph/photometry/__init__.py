"""Photometric harmonization over overlap graphs: pairwise errors-in-variables fits,
the overlap graph, the global gain/offset/plane solve (its edge table, sparse least squares,
gains, offsets and joint refinement), guarded background matching, the chain with its
fallbacks, the frame photometry before stacking, and the gain ratio of an overlap from its
stars.
"""

from .outliers import (  # noqa: F401
    grown_outliers,
)
from .moments import (  # noqa: F401
    FitSettings, PixelDesign, GridDesign, solve_moments, spatial_blocks, fit_uncertainties,
    noise_ratio_bias, noise_ratio_uncertainty, NOISE_RATIO_FLOOR, sample_indices,
)
from .clipping import (  # noqa: F401
    clip_and_polish,
)
from .regression import (  # noqa: F401
    PairwiseFit, FIT_STATUSES, FIT_MODELS, SUBSAMPLE_METHODS, fit_pair, fit_pair_image, fit_ols,
    NOISE_ESTIMATORS, robust_noise_1d, MAX_REL_GAIN_ERROR, check_sampling,
)
from .overlap import (  # noqa: F401
    build_tile_overlap_graph, sparsify_overlap_graph, fit_overlap_edges, estimate_noise,
    find_overlapping_pairs, edge_status, fit_edge_channel, gain_estimates, GAIN_ESTIMATORS,
    star_search_nodes, NODE_SEARCH_COVERAGE, MIN_BRIDGES,
)
from .solve import (  # noqa: F401
    PhotometrySolution, solve_global_photometry, select_reference, SOLVE_MODELS,
    GRADIENT_GAUGES,
)
from .edges import (  # noqa: F401
    STATUS_FAILED, STATUS_OFFSET_ONLY, STATUS_OK, EdgeTable, ChannelProblem, collect_edges,
    edge_pixels, clean_sigma, edge_residuals, summarise_residuals,
)
from .lsq import (  # noqa: F401
    normal_matrix, solve_reweighted, irls, diag_inverse,
)
from .gains import (  # noqa: F401
    gains_for_channel,
)
from .offsets import (  # noqa: F401
    offsets_for_channel,
)
from .joint import (  # noqa: F401
    joint_refine,
)
from .background import (  # noqa: F401
    estimate_tile_background, overlap_differences, match_backgrounds, BackgroundMatchResult,
)
from .flatten import (  # noqa: F401
    BackgroundPlane, background_blocks, fit_background_plane, flatten_corrections,
)
from .harmonize import (  # noqa: F401
    HarmonizationResult, harmonize_tiles, graph_report,
)
from .frames import (  # noqa: F401
    FrameHarmonization, harmonize_frames, bin_frame_on_grid, binned_to_full_correction,
    masked_gaussian_blur,
)
from .stars import (  # noqa: F401
    StarRatio, StarCatalogue, STAR_STATUSES, GAIN_SOURCES, detect_stars, measure_star_ratio,
    combine_gain_estimates,
)
from .binned import (  # noqa: F401
    BIN_MIN_SIDE, BIN_MIN_FIT_PIXELS, binned_box, binnable, bin_overlap, binned_origin,
    binned_to_full_fit,
)
from .estimates import (  # noqa: F401
    combine_fit, calibrate_pixel_gains,
)
from .candidates import (  # noqa: F401
    CANDIDATE_CELLS, SPAN_ROWS, PARTIAL_OVERLAP, PER_DIRECTION, NODE_BRIDGES, MAX_HOLES,
    row_spans, MaskRows, mask_rows, joint_valid, candidate_pairs, overlap_groups, bridge_edges,
)

__all__ = [
    "grown_outliers", "FitSettings", "PixelDesign", "GridDesign", "solve_moments",
    "spatial_blocks", "fit_uncertainties", "noise_ratio_bias", "noise_ratio_uncertainty",
    "NOISE_RATIO_FLOOR", "sample_indices", "clip_and_polish", "PairwiseFit", "FIT_STATUSES",
    "FIT_MODELS", "SUBSAMPLE_METHODS", "fit_pair", "fit_pair_image", "fit_ols",
    "NOISE_ESTIMATORS", "robust_noise_1d", "MAX_REL_GAIN_ERROR", "check_sampling",
    "build_tile_overlap_graph", "sparsify_overlap_graph", "fit_overlap_edges", "estimate_noise",
    "find_overlapping_pairs", "edge_status", "fit_edge_channel", "gain_estimates",
    "GAIN_ESTIMATORS", "star_search_nodes", "NODE_SEARCH_COVERAGE", "MIN_BRIDGES",
    "PhotometrySolution",
    "solve_global_photometry", "select_reference", "SOLVE_MODELS", "GRADIENT_GAUGES",
    "STATUS_FAILED", "STATUS_OFFSET_ONLY", "STATUS_OK", "EdgeTable", "ChannelProblem",
    "collect_edges", "edge_pixels", "clean_sigma", "edge_residuals", "summarise_residuals",
    "normal_matrix", "solve_reweighted", "irls", "diag_inverse", "gains_for_channel",
    "offsets_for_channel", "joint_refine", "estimate_tile_background", "overlap_differences",
    "match_backgrounds", "BackgroundMatchResult", "BackgroundPlane", "background_blocks",
    "fit_background_plane", "flatten_corrections", "HarmonizationResult", "harmonize_tiles",
    "graph_report", "FrameHarmonization", "harmonize_frames", "bin_frame_on_grid",
    "binned_to_full_correction", "masked_gaussian_blur", "StarRatio", "StarCatalogue",
    "STAR_STATUSES", "GAIN_SOURCES", "detect_stars", "measure_star_ratio",
    "combine_gain_estimates", "BIN_MIN_SIDE", "BIN_MIN_FIT_PIXELS", "binned_box", "binnable",
    "bin_overlap", "binned_origin", "binned_to_full_fit", "combine_fit",
    "calibrate_pixel_gains", "CANDIDATE_CELLS", "SPAN_ROWS", "PARTIAL_OVERLAP", "PER_DIRECTION",
    "NODE_BRIDGES", "MAX_HOLES", "row_spans", "MaskRows", "mask_rows", "joint_valid",
    "candidate_pairs", "overlap_groups", "bridge_edges",
]
