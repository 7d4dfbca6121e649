"""Logging helpers shared by every stage.

Every message of the Grid/Survey work begins with ``[GRID]`` so that users (and
host applications that forward log records) can filter them.  Partial failures
are reported with :func:`grid_warning`, which logs at ``WARNING`` level; the
caller then takes its documented fallback.
"""

import logging
from contextlib import contextmanager

__all__ = ["GRID_PREFIX", "NODE_KINDS", "graph_label", "get_logger", "grid_info",
           "grid_warning", "grid_debug", "collected_warnings"]

GRID_PREFIX = "[GRID]"

#: What the nodes of an overlap graph are -> the stage name its log lines start with.
NODE_KINDS = {"tiles": "Photometry", "frames": "Frame photometry"}


def graph_label(node_kind):
    """Stage name and singular noun of the log lines about a graph of ``node_kind`` nodes.

    The tile graph keeps the documented wording (``[GRID] Photometry: built overlap graph
    with N edges``); the frame graph says what its nodes are.

    Examples
    --------
    >>> graph_label("tiles"), graph_label("frames")
    (('Photometry', 'tile'), ('Frame photometry', 'frame'))
    """
    if node_kind not in NODE_KINDS:
        raise ValueError(f"node_kind must be one of {sorted(NODE_KINDS)}, got {node_kind!r}")
    return NODE_KINDS[node_kind], node_kind[:-1]


def get_logger(name="photometry_graph"):
    """Return the project logger (or a child of it).

    Parameters
    ----------
    name : str
        Logger name; module loggers use ``photometry_graph.<module>``.

    Returns
    -------
    logging.Logger
    """
    return logging.getLogger(name)


def _prefixed(message):
    return message if message.startswith(GRID_PREFIX) else f"{GRID_PREFIX} {message}"


def grid_info(logger, message, *args):
    """Log ``message`` at INFO level with the ``[GRID]`` prefix."""
    logger.info(_prefixed(message), *args)


def grid_debug(logger, message, *args):
    """Log ``message`` at DEBUG level with the ``[GRID]`` prefix."""
    logger.debug(_prefixed(message), *args)


def grid_warning(logger, message, *args):
    """Log a partial failure at WARNING level with the ``[GRID]`` prefix.

    The caller is expected to continue with a fallback; this function never
    raises.
    """
    logger.warning(_prefixed(message), *args)


class _WarningCollector(logging.Handler):
    """Collect the messages of the warnings (and errors) logged while attached."""

    def __init__(self, messages):
        super().__init__(level=logging.WARNING)
        self.messages = messages

    def emit(self, record):
        try:
            self.messages.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken record must not break the run
            self.messages.append(str(record.msg))


@contextmanager
def collected_warnings(name="photometry_graph"):
    """Meanwhile, collect the warnings logged under the logger ``name`` (a list, yielded).

    The list fills as the warnings come (for a report that says what happened).

    Examples
    --------
    >>> with collected_warnings() as messages:
    ...     grid_warning(get_logger("photometry_graph.doc"), "careful")
    >>> messages
    ['[GRID] careful']
    """
    messages = []
    handler, logger = _WarningCollector(messages), logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
