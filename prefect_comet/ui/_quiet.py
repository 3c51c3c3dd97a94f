"""Warn about UI trouble without ever failing a run."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger


def warn(message: str, *args: object) -> None:
    """Log a warning to the run's log (or the package's, outside a run); never raises."""
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = get_logger("prefect_comet.ui")
    try:
        logger.warning(message, *args)
    except Exception:  # not even logging may fail a run
        pass
