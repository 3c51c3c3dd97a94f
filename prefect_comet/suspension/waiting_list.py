"""A suspended run's waiting list: its jobs still rendering, kept as an artifact of the run.

The list lives on the Prefect server, beside the run: the sweeper and the callback receiver
read it from any machine without sharing storage with the run, and a person sees in the UI
what the run waits for.
"""

from __future__ import annotations

import json
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort
from pydantic import BaseModel, Field, ValidationError

from prefect_comet._logging import run_logger
from prefect_comet.models import VideoJob

KEY_PREFIX = "comet-waiting-"


class WaitingJob(BaseModel):
    """One job a suspended run waits for.

    Args:
        key: The job's idempotency key.
        provider: The API family (`omni` or `kling`).
        task_id: The server's task id.
        status: Its status when the run suspended.
        progress: Its progress then (0-100).
    """

    key: str
    provider: str
    task_id: str
    status: str = ""
    progress: int | None = None

    @classmethod
    def of(cls, job: VideoJob) -> WaitingJob:
        """The waiting-list entry of a job."""
        return cls(
            key=job.idempotency_key or "", provider=job.provider, task_id=job.task_id,
            status=job.raw_status or job.status.value, progress=job.progress,
        )


class WaitingList(BaseModel):
    """What a suspended run waits for, and when it should be resumed.

    Args:
        flow_run_id: The suspended run.
        jobs: Its jobs still rendering.
        resume_when_done: Resume once this many of them are done (succeeded or failed).
        credentials_block: The saved credentials block the run uses, to poll with the same
            account (None: the sweeper's own credentials).
        round: How many times the run has suspended, this one included.
        deadline: When (Unix time) the earliest job passes its timeout: the run is resumed
            then even if not done, to fail that job instead of waiting forever.
    """

    flow_run_id: str
    jobs: list[WaitingJob]
    resume_when_done: int = Field(ge=1)
    credentials_block: str | None = None
    round: int = 1
    deadline: float | None = None

    def ready(self, done_task_ids: set[str], now: float | None = None) -> bool:
        """Whether enough of the jobs are done (or one is past its timeout) to resume the run."""
        done = sum(job.task_id in done_task_ids for job in self.jobs)
        late = self.deadline is not None and (now or time.time()) >= self.deadline
        return late or done >= min(self.resume_when_done, len(self.jobs))


def artifact_key(flow_run_id: str | UUID) -> str:
    """The artifact key of a run's waiting list (one per run; each round adds a version)."""
    return f"{KEY_PREFIX}{flow_run_id}"


async def publish_waiting_list(waiting: WaitingList) -> None:
    """Publish the waiting list as a table artifact of the run (the latest one counts).

    Args:
        waiting: The list.

    Example:
        ```python
        await publish_waiting_list(WaitingList(flow_run_id=run_id, jobs=jobs, resume_when_done=1))
        ```
    """
    rows = [job.model_dump() for job in waiting.jobs]
    description = (
        f"Suspended (round {waiting.round}) until {min(waiting.resume_when_done, len(rows))} of these "
        f"{len(rows)} CometAPI jobs are done. The `comet-sweeper` deployment (or the callback "
        "receiver) resumes the run; nothing is paid again."
    )
    async with get_client() as client:
        await client.create_artifact(
            ArtifactCreate(
                key=artifact_key(waiting.flow_run_id),
                type="table",
                data=json.dumps(rows),
                description=description,
                flow_run_id=UUID(waiting.flow_run_id),
                metadata_={"comet_waiting_list": waiting.model_dump_json(exclude={"jobs"})},
            )
        )


async def read_waiting_lists(flow_run_ids: list[str]) -> dict[str, WaitingList]:
    """The latest waiting list of each run that has one.

    Args:
        flow_run_ids: The runs to look up.

    Returns:
        Waiting lists by flow run id; runs without one (or with an unreadable one) are left out.
    """
    if not flow_run_ids:
        return {}
    async with get_client() as client:
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key(i) for i in flow_run_ids])),
            sort=ArtifactSort.CREATED_DESC,
        )
    found: dict[str, WaitingList] = {}
    for artifact in artifacts:  # newest first: the first of each run is its current list
        run_id = (artifact.key or "").removeprefix(KEY_PREFIX)
        if run_id in found:
            continue
        try:
            header = json.loads((artifact.metadata_ or {})["comet_waiting_list"])
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            found[run_id] = WaitingList(**{**header, "jobs": rows})
        except (KeyError, TypeError, ValueError, ValidationError) as error:
            run_logger().warning("The waiting list of flow run %s is unreadable (%s); skipped.", run_id, error)
    return found
