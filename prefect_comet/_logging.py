"""The logger of the current Prefect run, or the package's own outside a run."""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger


def run_logger(fallback: str = "prefect_comet") -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger inside a flow or task run (its lines reach the UI), else `fallback`'s.

    Example:
        ```python
        run_logger().info("CometAPI created task %s", task_id)
        ```
    """
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger(fallback)
