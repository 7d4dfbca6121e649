"""Graph-based photometric harmonization and seamless blending of mosaic tiles."""

from ._log import GRID_PREFIX
from .correction import Correction, apply_correction, identity_correction
from .masks import as_channels_last, compute_valid_mask, erode_mask
from .tiles import BBox, TilePhotometryInfo, grid_layout

__version__ = "0.1.0"
