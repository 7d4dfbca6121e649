"""Pipeline support for ``grid_mode``: options and host keywords, the stack plan, frame
pixel layouts, file I/O, output headers, task dispatch and progress.
"""

from .options import (  # noqa: F401
    GridModeError, GridRunError, EXIT_CODES, GridOptions, OPTION_HELP, OPTION_CHOICES, RUN_ONLY,
    resolve_options, check_options, refuse_run_only, n_workers, add_option_arguments,
)
from .plan import (  # noqa: F401
    PLAN_NAME, PLAN_HEADER, FITS_SUFFIXES, PATH_ALIASES, EXPOSURE_ALIASES, ORDER_ALIASES,
    PlanEntry, detect_grid_mode, find_plan, as_float, read_stack_plan, plan_entries,
    without_compressed_copies,
)
from .images import (  # noqa: F401
    LAYOUTS, FrameInfo, image_layout, frame_pixels, frame_noise, majority_channels,
    usable_majority, saturation_level, saturation_pileup, saturated_mask, bayer_as_stored,
    wcs_text, wcs_state, wcs_from_state,
)
from .fileio import (  # noqa: F401
    check_output_folder, discard_if_empty, LOCK_NAME, output_lock, remove_temporaries,
    open_fits, atomic, write_hdus, FitsStream, fits_stream, write_json, write_html_report,
    write_preview, write_uint16, write_tiff, TileHDU, read_tile_header, load_tiles,
)
from .durable import (  # noqa: F401
    WRITE_PIECE, SYNC_BYTES, pwrite_all, pwrite_rows, BackgroundSync,
)
from .outputs import (  # noqa: F401
    GridResult, chunk_coverage, ChunkSummary, plain_preview, uint16_block, tile_header,
    mosaic_header,
)
from .heap import reused_heap, glibc, HEAP_IDLE_S  # noqa: F401
from .parallel import (  # noqa: F401
    map_tasks, ordered_map, TASKS_IN_FLIGHT, fit_task_map, default_workers, pool_workers,
    stop_pool,
    STOP_SIGNALS, single_threaded, start_workers_early, stop_workers_early,
    changed_sources,
)
from .cluster import (  # noqa: F401
    CLUSTER_BATCH, cluster_batches, cluster_results, cluster_session,
)
from .progress import (  # noqa: F401
    LEVELS, PROGRESS_LINES, reported, Progress, CallbackHandler, callback_logging,
    scaled_callback, HostLevelFormatter, TqdmLogHandler, ConsoleProgress, console_logging,
)
from .cli import (  # noqa: F401
    Interrupted, build_parser, main,
)
from .demo import (  # noqa: F401
    DEMO_DEFAULTS, write_frame_survey, write_tile_survey, survey_wcs, mosaic_quality, run_demo,
    demo_summary,
)
from .frameio import (  # noqa: F401
    COVERAGE_EXTNAMES, MIN_FRAME_SIDE, file_problem, celestial_wcs, read_frame_info,
    read_pixels, load_frame, scan_frame, scan_entry, integer_top,
)
from .panels import (  # noqa: F401
    WEIGHT_SUFFIX, TILE_FIT_BIN, Panel, find_fits_files, is_project_tile, read_panel,
    scan_panels, read_reference, panel_grid, integer_offset, write_panel_tiles, tile_photometry,
)
from .resume import (  # noqa: F401
    RESUME_DIR, PIECE_OPTIONS, INDIRECT_OPTIONS, UNRELATED_OPTIONS, package_version,
    code_digest, file_signature, frame_source, piece_options, piece_key,
    correction_from_dict, PieceStore, RunPieces,
)
from .assemble import (  # noqa: F401
    panel_tiles, write_mosaic,
)
from .budget import (  # noqa: F401
    MemoryPlan, plan_memory, plan_tiles, proc_field_bytes, process_pss_bytes, release_memory,
    MB, WORKER_MB, SERVER_MB, MAIN_GROWTH_MB, SOLVE_MB, SOLVE_PER_BINNED, SOLVE_TASK_MB,
    PROGRAM_MB, REPORT_PAGE_MB, IN_PROCESS_PIXELS, PLANNED_SHARE, MIN_STACK_MB,
)
from .framestage import (  # noqa: F401
    FRAME_BIN, FRAME_MIN_PIXELS, SCRATCH_DIR, read_headers, frame_tasks, kept_result,
    gather_frames, solve_frames,
)
from .pieces import (  # noqa: F401
    FrameSource, frame_geometry, frame_sources, frame_pass, SharedWCS, unshared, BinnedFile,
    spill_binned, TilePieces,
)
from .tilestage import (  # noqa: F401
    FrameFailed, stack_tile, build_tile, tally_tile, loss_message,
)

__all__ = [
    "GridModeError", "GridRunError", "EXIT_CODES", "GridOptions", "OPTION_HELP",
    "OPTION_CHOICES", "RUN_ONLY", "resolve_options", "check_options", "refuse_run_only",
    "n_workers", "add_option_arguments", "PLAN_NAME", "PLAN_HEADER", "FITS_SUFFIXES",
    "PATH_ALIASES", "EXPOSURE_ALIASES", "ORDER_ALIASES", "PlanEntry", "detect_grid_mode",
    "find_plan", "as_float", "read_stack_plan", "plan_entries",
    "without_compressed_copies", "LAYOUTS", "FrameInfo",
    "image_layout", "frame_pixels", "frame_noise", "majority_channels", "usable_majority",
    "saturation_level", "saturation_pileup", "saturated_mask", "bayer_as_stored", "wcs_text",
    "wcs_state", "wcs_from_state",
    "check_output_folder", "discard_if_empty", "LOCK_NAME", "output_lock", "remove_temporaries",
    "open_fits", "atomic", "write_hdus", "FitsStream", "fits_stream", "write_json",
    "write_html_report", "write_preview", "write_uint16", "write_tiff", "TileHDU",
    "read_tile_header", "load_tiles", "WRITE_PIECE", "SYNC_BYTES", "pwrite_all", "pwrite_rows",
    "BackgroundSync", "GridResult", "chunk_coverage", "ChunkSummary",
    "plain_preview", "uint16_block", "tile_header", "mosaic_header", "map_tasks", "ordered_map",
    "CLUSTER_BATCH", "cluster_batches", "cluster_results",
    "TASKS_IN_FLIGHT", "fit_task_map", "default_workers", "pool_workers", "stop_pool",
    "STOP_SIGNALS",
    "single_threaded", "reused_heap", "glibc", "HEAP_IDLE_S", "start_workers_early",
    "stop_workers_early", "cluster_session", "changed_sources", "LEVELS", "PROGRESS_LINES",
    "reported", "Progress", "CallbackHandler", "callback_logging", "scaled_callback",
    "HostLevelFormatter", "TqdmLogHandler", "ConsoleProgress", "console_logging",
    "Interrupted", "build_parser", "main",
    "DEMO_DEFAULTS", "write_frame_survey", "write_tile_survey", "survey_wcs",
    "mosaic_quality", "run_demo", "demo_summary", "COVERAGE_EXTNAMES", "MIN_FRAME_SIDE",
    "file_problem", "celestial_wcs", "read_frame_info", "read_pixels", "load_frame",
    "scan_frame", "scan_entry", "integer_top", "WEIGHT_SUFFIX", "TILE_FIT_BIN", "Panel",
    "find_fits_files", "is_project_tile", "read_panel", "scan_panels", "read_reference", "panel_grid",
    "integer_offset", "write_panel_tiles", "tile_photometry", "RESUME_DIR", "PIECE_OPTIONS",
    "INDIRECT_OPTIONS", "UNRELATED_OPTIONS", "package_version", "code_digest",
    "file_signature",
    "frame_source", "piece_options", "piece_key", "correction_from_dict", "PieceStore",
    "RunPieces", "panel_tiles", "write_mosaic", "MemoryPlan", "plan_memory", "plan_tiles",
    "proc_field_bytes", "process_pss_bytes", "release_memory", "MB", "WORKER_MB", "SERVER_MB",
    "MAIN_GROWTH_MB", "SOLVE_MB", "SOLVE_PER_BINNED", "SOLVE_TASK_MB", "PROGRAM_MB",
    "REPORT_PAGE_MB", "IN_PROCESS_PIXELS", "PLANNED_SHARE", "MIN_STACK_MB", "FRAME_BIN",
    "FRAME_MIN_PIXELS", "SCRATCH_DIR", "read_headers", "frame_tasks", "kept_result",
    "gather_frames", "solve_frames", "FrameSource", "frame_geometry", "frame_sources",
    "frame_pass", "SharedWCS", "unshared", "BinnedFile", "spill_binned", "TilePieces",
    "FrameFailed", "stack_tile", "build_tile", "tally_tile", "loss_message",
]
