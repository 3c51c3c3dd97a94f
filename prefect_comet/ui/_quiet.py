"""Warn about UI trouble without ever failing a run."""

from __future__ import annotations

from prefect_comet._logging import run_logger


def warn(message: str, *args: object) -> None:
    """Log a warning to the run's log (or the package's, outside a run); never raises."""
    try:
        run_logger("prefect_comet.ui").warning(message, *args)
    except Exception:  # not even logging may fail a run
        pass
