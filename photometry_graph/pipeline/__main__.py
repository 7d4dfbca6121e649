"""``python -m photometry_graph.pipeline run|assemble|demo ...``: the ``grid-mode`` command."""

import sys

from photometry_graph.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
