"""Pipeline support for ``grid_mode``: options and host keywords, the stack plan, frame
pixel layouts, file I/O, output headers, task dispatch and progress.
"""

from .options import (  # noqa: F401
    GridModeError, GridOptions, OPTION_HELP, OPTION_CHOICES, resolve_options, check_options,
    n_workers, add_option_arguments,
)
from .plan import (  # noqa: F401
    PLAN_NAME, PLAN_HEADER, FITS_SUFFIXES, PATH_ALIASES, EXPOSURE_ALIASES, ORDER_ALIASES,
    PlanEntry, detect_grid_mode, find_plan, as_float, read_stack_plan, plan_entries,
)
from .images import (  # noqa: F401
    LAYOUTS, FrameInfo, image_layout, frame_pixels, frame_noise, majority_channels,
    saturation_level, saturation_pileup, saturated_mask,
)
from .fileio import (  # noqa: F401
    open_fits, atomic, write_hdus, FitsStream, fits_stream, write_json, write_preview,
    write_uint16, TileHDU, read_tile_header, load_tiles,
)
from .outputs import (  # noqa: F401
    chunk_coverage, ChunkSummary, uint16_block, tile_header, mosaic_header,
)
from .parallel import (  # noqa: F401
    map_tasks, default_workers,
)
from .progress import (  # noqa: F401
    LEVELS, Progress, CallbackHandler, callback_logging, TqdmLogHandler, ConsoleProgress,
    console_logging,
)

__all__ = [
    "GridModeError", "GridOptions", "OPTION_HELP", "OPTION_CHOICES", "resolve_options",
    "check_options", "n_workers", "add_option_arguments", "PLAN_NAME", "PLAN_HEADER",
    "FITS_SUFFIXES", "PATH_ALIASES", "EXPOSURE_ALIASES", "ORDER_ALIASES", "PlanEntry",
    "detect_grid_mode", "find_plan", "as_float", "read_stack_plan", "plan_entries", "LAYOUTS",
    "FrameInfo", "image_layout", "frame_pixels", "frame_noise", "majority_channels",
    "saturation_level", "saturation_pileup", "saturated_mask", "open_fits", "atomic",
    "write_hdus", "FitsStream", "fits_stream", "write_json", "write_preview", "write_uint16",
    "TileHDU", "read_tile_header", "load_tiles", "chunk_coverage", "ChunkSummary",
    "uint16_block", "tile_header", "mosaic_header", "map_tasks", "default_workers",
    "LEVELS", "Progress", "CallbackHandler", "callback_logging", "TqdmLogHandler",
    "ConsoleProgress", "console_logging",
]
