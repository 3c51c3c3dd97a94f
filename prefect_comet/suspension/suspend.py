"""Suspend the current deployment run until its jobs are done: checked before paying, one key per round.

A suspended run's process exits (its worker holds nothing) and is started again from the
first line of the flow when resumed; the ledger then finds every job by its key, so the
resumed run pays nothing again and goes on with the downloads.
"""

from __future__ import annotations

import time

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.flow_runs import asuspend_flow_run

from prefect_comet._logging import run_logger
from prefect_comet.exceptions import CannotSuspendError
from prefect_comet.models import VideoJob
from prefect_comet.suspension.waiting_list import WaitingJob, WaitingList, publish_waiting_list

PAUSE_KEY_PREFIX = "comet-wait-"


def require_suspendable() -> str:
    """Check that the current run can suspend, before anything is paid.

    Returns:
        The flow run id.

    Raises:
        CannotSuspendError: Not a top-level deployment run (a local run, a subflow, a task).
    """
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    if run is None or run.deployment_id is None or run.parent_task_run_id is not None:
        where = "a subflow" if run is not None and run.parent_task_run_id is not None else "a local run"
        raise CannotSuspendError(
            f"wait: 'suspend' needs a deployment run at the top level, and this is {where}. "
            "What to do: run it from a deployment (run_deployment(..., as_subflow=False)), "
            "or use wait='poll'."
        )
    return str(run.id)


async def suspend_until_done(
    jobs: list[VideoJob], *, resume_when_done: int, credentials_block: str | None, timeout_seconds: float
) -> None:
    """Publish the run's waiting list and suspend it; its process exits.

    Returns only when this round's suspension already happened (the run was resumed and is
    replaying the flow): the caller then looks at its jobs again.

    Args:
        jobs: The jobs still rendering.
        resume_when_done: Resume once this many of them are done.
        credentials_block: The run's saved credentials block, for the sweeper.
        timeout_seconds: How long a job may render; the run is resumed to fail a later one.

    Raises:
        CannotSuspendError: Not a top-level deployment run.
    """
    flow_run_id = require_suspendable()
    async with get_client() as client:
        fired = (await client.read_flow_run(FlowRunContext.get().flow_run.id)).empirical_policy.pause_keys or set()
    round_ = 1 + sum(key.startswith(PAUSE_KEY_PREFIX) for key in fired)
    await publish_waiting_list(
        WaitingList(
            flow_run_id=flow_run_id,
            jobs=[WaitingJob.of(job) for job in jobs],
            resume_when_done=max(1, min(resume_when_done, len(jobs))),
            credentials_block=credentials_block,
            round=round_,
            deadline=min((job.created_at.timestamp() if job.created_at else time.time()) for job in jobs)
            + timeout_seconds,
        )
    )
    run_logger().info(
        "Suspending until %s of %s jobs are done (round %s): %s",
        min(resume_when_done, len(jobs)), len(jobs), round_, ", ".join(job.task_id for job in jobs),
    )
    await asuspend_flow_run(key=f"{PAUSE_KEY_PREFIX}{round_}")
