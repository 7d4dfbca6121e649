"""Logging helpers shared by every stage.

Every message of the Grid/Survey work begins with ``[GRID]`` so that users (and
host applications that forward log records) can filter them.  Partial failures
are reported with :func:`grid_warning`, which logs at ``WARNING`` level; the
caller then takes its documented fallback.
"""

import logging

__all__ = ["GRID_PREFIX", "get_logger", "grid_info", "grid_warning", "grid_debug"]

GRID_PREFIX = "[GRID]"


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
