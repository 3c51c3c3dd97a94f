"""Wait for a job: poll until it ends, deadline-bound and tolerant of passing trouble.

How long to sleep between looks is decided in `poll_cadence`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prefect_comet import exceptions as exc
from prefect_comet.api.client import CometClient
from prefect_comet.api.families import provider_for
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.steps import learned_durations
from prefect_comet.steps.poll_cadence import PollCadence, PollPolicy

# Failures that a later poll may not meet; the deadline still bounds them.
_PASSING = (exc.RateLimitError, exc.ServerError, exc.ResponseFormatError)


async def poll_until_terminal(
    client: CometClient,
    job: VideoJob,
    *,
    timeout_seconds: float,
    policy: PollPolicy = PollPolicy(),
    on_update: Callable[[VideoJob], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> VideoJob:
    """Look at `job` until it succeeds; raise when it fails, stalls or the deadline passes.

    Args:
        client: The API client.
        job: The job to follow.
        timeout_seconds: The overall deadline, measured on a monotonic clock.
        policy: The polling cadence.
        on_update: Called whenever status or progress changes.
        sleep: How to wait between looks (`asyncio.sleep` when None); a callback's
            wake-up ends it early.

    Returns:
        The succeeded job.

    Raises:
        GenerationFailedError: The server ended the job as failed.
        UnknownStatusError: The server answered an unknown status for too long.
        WaitTimeoutError: The deadline passed; the message holds the task id.
    """
    provider = provider_for(job)
    started = time.monotonic()
    deadline = started + timeout_seconds
    cadence = PollCadence(policy, started)
    unknown_since: float | None = None
    last = job
    looked = False
    while True:
        hint = None
        trouble: exc.CometAPIError | None = None
        try:
            seen, hint = await provider.retrieve(client, job.task_id)
            if seen.task_id != job.task_id:  # never adopt another task's answer (and video)
                raise exc.ResponseFormatError(
                    f"A status answer for task {job.task_id} named another task.", task_id=job.task_id
                )
        except _PASSING as error:
            seen, trouble = last, error  # keep waiting; the deadline bounds an outage
        else:
            seen = _carry_over(job, seen)
            if (seen.status, seen.progress) != (last.status, last.progress) and on_update:
                on_update(seen)
            last = seen
        now = time.monotonic()
        if seen.status is VideoStatus.SUCCEEDED:
            # Done at our first look: our own count says nothing about how long it took.
            learned_durations.remember(seen, now - started if looked else 0.0)
            return seen
        if seen.status is VideoStatus.FAILED:
            raise exc.GenerationFailedError(
                f"The generation failed: {seen.error or seen.raw_status}. What to do: change "
                "the request (the server's reason is above) and create a new job.",
                task_id=job.task_id,
            )
        unknown_since = (unknown_since or now) if seen.status is VideoStatus.UNKNOWN else None
        if unknown_since is not None and now - unknown_since >= policy.unknown_status_grace:
            raise exc.UnknownStatusError(
                f"The server kept answering the unknown status {seen.raw_status!r}. What to do: "
                "check the job in the CometAPI dashboard; resume with wait_for_video by task id.",
                task_id=job.task_id,
            )
        if now >= deadline:
            cause = f" The last answer was unusable: {trouble}" if trouble else ""
            raise exc.WaitTimeoutError(
                f"The job did not finish within {timeout_seconds:g} s; last status "
                f"{seen.raw_status or seen.status.value!r}. It may still finish: resume with "
                f"wait_for_video using this task id.{cause}",
                task_id=job.task_id,
                last_status=seen.raw_status or seen.status.value,
            )
        wait = cadence.next_wait(seen, now, hint)
        looked = True
        await (sleep or asyncio.sleep)(min(wait, deadline - now))


async def look_once(client: CometClient, job: VideoJob) -> VideoJob:
    """One look at a job (for a run that suspends instead of polling); passing trouble keeps `job`.

    Args:
        client: The API client.
        job: The job to look at.

    Returns:
        The job as the server sees it now.
    """
    try:
        seen, _hint = await provider_for(job).retrieve(client, job.task_id)
    except _PASSING:
        return job
    if seen.task_id != job.task_id:
        raise exc.ResponseFormatError(
            f"A status answer for task {job.task_id} named another task.", task_id=job.task_id
        )
    return _carry_over(job, seen)


def _carry_over(created: VideoJob, seen: VideoJob) -> VideoJob:
    """Keep what only the create step knew (request, key, model) on the fresh view."""
    return seen.model_copy(
        update={
            "request": created.request,
            "idempotency_key": created.idempotency_key,
            "model": seen.model or created.model,
            "external_task_id": seen.external_task_id or created.external_task_id,
            "created_at": seen.created_at or created.created_at,
        }
    )
