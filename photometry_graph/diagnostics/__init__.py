"""Diagnostics: truth metrics, residual tables, report parsing and plots, used by the
notebooks, the report and the benchmarks.
"""

from .metrics import (  # noqa: F401
    seam_metric, bbox_boundaries, fit_to_truth, EDGE_COLUMNS, TILE_COLUMNS, edge_residual_table,
    tile_table, truth_summary, format_table, graph_from_report, tile_cells, fit_truth_plane,
    mosaic_vs_truth, asinh_stretch, plot_images, plot_before_after, plot_overlap_graph,
    plot_edge_residuals, plot_residual_map, plot_solution_vs_truth, overlap_pixels,
    plot_overlap_scatter, mosaic_vs_frame_truth, mosaic_vs_frame_survey, demo_quality_table,
)

__all__ = [
    "seam_metric", "bbox_boundaries", "fit_to_truth", "EDGE_COLUMNS", "TILE_COLUMNS",
    "edge_residual_table", "tile_table", "truth_summary", "format_table", "graph_from_report",
    "tile_cells", "fit_truth_plane", "mosaic_vs_truth", "asinh_stretch", "plot_images",
    "plot_before_after", "plot_overlap_graph", "plot_edge_residuals", "plot_residual_map",
    "plot_solution_vs_truth", "overlap_pixels", "plot_overlap_scatter", "mosaic_vs_frame_truth",
    "mosaic_vs_frame_survey", "demo_quality_table",
]
