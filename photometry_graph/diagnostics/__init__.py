"""Diagnostics: truth metrics, residual tables, report parsing, plots and the report page,
used by the notebooks, the pipeline's report and the benchmarks.

``metrics``  seam metric, fits to the truth, a mosaic against its truth, overlap pixels
``report``   one view of a result, a solution, a graph or a parsed ``grid_report.json``
``tables``   edge residuals, tile corrections, errors against the truth, text tables
``plots``    matplotlib figures (matplotlib imported when called)
``html``     the report of a run as one self-contained HTML page (``grid_report.html``)
``svg``      the page's figures written as SVG: colour scales, ticks, panels, colour bars
``panels``   a mosaic of panels against its truth: footprints, coverage, seams, gains
"""

from .report import (  # noqa: F401
    RESIDUAL_KEYS, GRAPH_KINDS, RunView, unpack_run, graph_from_report, graph_view,
    float_or_nan,
)
from .metrics import (  # noqa: F401
    bbox_boundaries, image_truth, fit_to_truth, masked_smooth, seam_metric, tile_cells,
    fit_truth_plane, truth_residual, mosaic_vs_truth, overlap_pixels, mosaic_vs_frame_truth,
    mosaic_vs_frame_survey,
)
from .tables import (  # noqa: F401
    EDGE_COLUMNS, TILE_COLUMNS, edge_residual_table, tile_table, truth_errors, truth_summary,
    format_table, demo_quality_table,
)
from .plots import (  # noqa: F401
    asinh_stretch, plot_images, plot_before_after, plot_overlap_graph, graph_edge_values,
    graph_edge_status, graph_node_boxes, STATUS_COLOURS, STATUS_LABELS, plot_edge_residuals,
    plot_residual_map, plot_solution_vs_truth, plot_overlap_scatter,
)
from .html import (  # noqa: F401
    WARNING_ADVICE, warning_advice, render_html_report,
)
from .panels import (  # noqa: F401
    panel_footprints, panel_cells, panel_gain_errors, star_gains, mosaic_vs_panels,
)
from .svg import (  # noqa: F401
    Panel, colours, colour_bar, nice_ticks, log_ticks, tick_labels, svg_figure, svg_text,
    backdrop_uri, backdrop_image, polyline, legend,
)

__all__ = [
    "RESIDUAL_KEYS", "GRAPH_KINDS", "RunView", "unpack_run", "graph_from_report", "graph_view",
    "float_or_nan", "bbox_boundaries", "image_truth", "fit_to_truth", "masked_smooth",
    "seam_metric", "tile_cells", "fit_truth_plane", "truth_residual", "mosaic_vs_truth",
    "overlap_pixels", "mosaic_vs_frame_truth", "mosaic_vs_frame_survey", "EDGE_COLUMNS",
    "TILE_COLUMNS", "edge_residual_table", "tile_table", "truth_errors", "truth_summary",
    "format_table", "demo_quality_table", "asinh_stretch", "plot_images", "plot_before_after",
    "plot_overlap_graph", "graph_edge_values", "graph_edge_status", "graph_node_boxes",
    "STATUS_COLOURS", "STATUS_LABELS", "plot_edge_residuals", "plot_residual_map",
    "plot_solution_vs_truth", "plot_overlap_scatter", "WARNING_ADVICE", "warning_advice",
    "render_html_report", "panel_footprints", "panel_cells", "panel_gain_errors", "star_gains",
    "mosaic_vs_panels", "Panel", "colours", "colour_bar", "nice_ticks", "log_ticks",
    "tick_labels", "svg_figure", "svg_text", "backdrop_uri", "backdrop_image", "polyline",
    "legend",
]
