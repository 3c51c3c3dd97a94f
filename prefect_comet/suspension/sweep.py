"""One sweep: look at every job of every suspended run, and resume the runs whose jobs are done.

Stateless on purpose: a sweep killed half-way leaves nothing behind, the next one redoes it;
a resume refused (the run is not suspended yet) is tried again at the next sweep.
"""

from __future__ import annotations

import asyncio
import time

from prefect.blocks.core import Block
from pydantic import BaseModel

from prefect_comet._logging import run_logger
from prefect_comet.credentials import CometAPICredentials, borrow_client
from prefect_comet.models import VideoJob
from prefect_comet.steps.waiting import look_once
from prefect_comet.suspension.resuming import resume, suspended_runs
from prefect_comet.suspension.waiting_list import WaitingList, read_waiting_lists

# Looks in flight at once: a sweep of thousands of jobs stays one short process.
_LOOKS_AT_ONCE = 20


class SweepReport(BaseModel):
    """What one sweep did.

    Args:
        runs: Suspended runs with a waiting list.
        jobs_looked_at: Status requests sent.
        done: Jobs found done (succeeded or failed).
        resumed: The runs resumed.
    """

    runs: int = 0
    jobs_looked_at: int = 0
    done: int = 0
    resumed: list[str] = []


async def sweep_once(credentials: CometAPICredentials | None = None, max_runs: int = 200) -> SweepReport:
    """Poll the jobs of suspended runs once and resume each run whose waiting list is ready.

    Args:
        credentials: Used for runs whose waiting list names no saved block
            (`COMETAPI_KEY` when None).
        max_runs: The most suspended runs looked at in one sweep.

    Returns:
        What the sweep did.

    Example:
        ```python
        report = await sweep_once()
        report.resumed  # flow run ids
        ```
    """
    runs = await suspended_runs(limit=max_runs)
    lists = await read_waiting_lists([str(run.id) for run in runs])
    report = SweepReport(runs=len(lists))
    gate = asyncio.Semaphore(_LOOKS_AT_ONCE)
    for run_id, waiting in lists.items():
        block = await _credentials_of(waiting, credentials)
        async with borrow_client(block) as client:

            async def look(job: VideoJob) -> VideoJob:
                async with gate:
                    return await look_once(client, job)

            seen = await asyncio.gather(
                *(look(VideoJob(provider=job.provider, task_id=job.task_id)) for job in waiting.jobs)
            )
        done = {job.task_id for job in seen if job.status.is_terminal}
        report.jobs_looked_at += len(seen)
        report.done += len(done)
        if waiting.ready(done, time.time()) and await resume(run_id):
            report.resumed.append(run_id)
    run_logger().info(
        "Swept %s suspended runs: %s jobs looked at, %s done, %s runs resumed.",
        report.runs, report.jobs_looked_at, report.done, len(report.resumed),
    )
    return report


async def _credentials_of(waiting: WaitingList, fallback: CometAPICredentials | None) -> CometAPICredentials | None:
    """The run's own saved block when it names one (same account as its jobs), else `fallback`."""
    if waiting.credentials_block:
        loaded: Block = await CometAPICredentials.aload(waiting.credentials_block)
        return loaded  # type: ignore[return-value]
    return fallback
