"""The current Prefect run: its logger (the package's own outside a run) and its flow run id."""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
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


def current_flow_run_id() -> str | None:
    """The id of the flow run this code runs in (also inside a task on a remote worker), else None."""
    flow_run_context = FlowRunContext.get()
    if flow_run_context is not None and flow_run_context.flow_run is not None:
        return str(flow_run_context.flow_run.id)
    task_run_context = TaskRunContext.get()
    if task_run_context is not None and task_run_context.task_run.flow_run_id:
        return str(task_run_context.task_run.flow_run_id)
    return None
