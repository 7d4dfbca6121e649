"""Graph-based photometric harmonization and seamless blending of mosaic tiles.

The package holds the mathematics of Grid/Survey mode as pure functions on
arrays, masks and WCS objects; ``grid_mode`` runs the pipeline.  Stages, one
module each:

``masks``        valid-pixel masks
``tiles``        bounding boxes and the tile object
``overlap``      the overlap graph (networkx) and its pairwise fits
``regression``   errors-in-variables pairwise fits with clipping
``solve``        global per-tile gain/offset(/plane) solve
``background``   guarded SWarp-like background matching
``harmonize``    the photometric chain above, with fallbacks
``pyramid``      Gaussian/Laplacian pyramids (OpenCV)
``blend``        feathering weights and multi-band blending
``assembly``     chunked mosaic assembly in bounded memory
``wcsgrid``      global celestial grid and frame footprints
``resample``     fast WCS-to-WCS reprojection
``stack``        weighted, clipped stacking
``bayer``        debayering of raw colour frames
``frames``       frame photometry before stacking
``diagnostics``  residual tables, seam metric, plots
``datasets``     synthetic surveys with known truth

Pipeline support used by ``grid_mode`` (imported by module name, not
re-exported): ``options`` (run options, host keywords), ``progress``
(progress and log forwarding), ``parallel`` (tasks on a process pool or a
dask cluster), ``images`` (frame pixel layouts), ``outputs`` (output
headers, coverage and preview helpers), ``plan`` (the stack_plan.csv),
``fileio`` (atomic and streamed output files, lazily read tile files).
"""

from ._log import GRID_PREFIX  # noqa: F401
from .assembly import *  # noqa: F401,F403
from .background import *  # noqa: F401,F403
from .bayer import *  # noqa: F401,F403
from .blend import *  # noqa: F401,F403
from .correction import *  # noqa: F401,F403
from .frames import *  # noqa: F401,F403
from .harmonize import *  # noqa: F401,F403
from .masks import *  # noqa: F401,F403
from .overlap import *  # noqa: F401,F403
from .pyramid import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .resample import *  # noqa: F401,F403
from .solve import *  # noqa: F401,F403
from .stack import *  # noqa: F401,F403
from .tiles import *  # noqa: F401,F403
from .wcsgrid import *  # noqa: F401,F403

__version__ = "0.1.0"
