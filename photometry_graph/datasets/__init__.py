"""Synthetic skies and surveys with known truth.

The same generators feed the tests, the demo, the notebooks and the
benchmarks, so that every photometric claim of the project is checked against
injected values.  Every random choice goes through an ``rng`` argument
(anything :func:`numpy.random.default_rng` accepts).

Photometric model of an observed node ``k`` (tile or frame) at global pixel
``r = (x, y)``::

    observed_k(r) = gain_k * sky(r) + offset_k + slope_k . (r - centre_k) + noise

with ``centre_k`` the centre of node ``k``'s bounding box, so that
``offset_k`` is the additive error at the node's centre.

The modules: ``sky`` (skies and artefacts), ``tile_survey`` (tile grids), ``frame_survey``
(plate-solved frames), ``panels`` (panels stacked one by one, each on its own grid),
``pairs`` (overlap pairs with a known gain ratio).
"""

from .sky import (  # noqa: F401
    SkyModel, make_sky, draw_empty_zones, add_trail,
)
from .tile_survey import (  # noqa: F401
    SyntheticSurvey, expected_corrections, make_survey,
)
from .frame_survey import (  # noqa: F401
    SyntheticFrame, FrameSurvey, make_frame_survey, sample_sky, truth_grid_wcs, tan_frame_wcs,
    bayer_mosaic,
)
from .panels import (  # noqa: F401
    make_panel_set, write_panel_set, WEIGHT_MODES,
)
from .pairs import (  # noqa: F401
    OverlapPair, make_overlap_pair,
)
from .faint_field import (  # noqa: F401
    FAINT_FIELD, SEEING_RANGE, make_faint_frame_survey, make_faint_tile_survey,
    frame_correction_errors,
)
from .session import (  # noqa: F401
    Session, make_session,
)

__all__ = [
    "SkyModel", "make_sky", "draw_empty_zones", "add_trail", "SyntheticSurvey",
    "expected_corrections", "make_survey", "SyntheticFrame", "FrameSurvey", "make_frame_survey",
    "sample_sky", "truth_grid_wcs", "tan_frame_wcs", "bayer_mosaic", "make_panel_set",
    "write_panel_set", "WEIGHT_MODES", "OverlapPair", "make_overlap_pair", "FAINT_FIELD",
    "SEEING_RANGE", "make_faint_frame_survey", "make_faint_tile_survey",
    "frame_correction_errors", "Session", "make_session",
]
