"""Poll a job until it ends: deadline-bound, backing off, tolerant of passing trouble."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

from prefect_comet import _durations
from prefect_comet import exceptions as exc
from prefect_comet.client import CometClient
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.providers import provider_for

# Failures that a later poll may not meet; the deadline still bounds them.
_PASSING = (exc.RateLimitError, exc.ServerError, exc.ResponseFormatError)


@dataclass(frozen=True)
class PollPolicy:
    """How often to look at a running job.

    The interval starts short (fast jobs are seen quickly) and grows to a cap (long
    jobs cost few requests). Once the server's progress rises, the finish is estimated
    from its rate and the wait is half the estimated remaining time (within
    `initial_interval` and `max_interval`), so the end is seen soon after it comes.
    Without progress, the estimate is how long finished jobs of the same kind took in
    this process; past it, the wait is a quarter of the lateness (within the same bounds).
    A server hint (`openai-poll-after-ms`) wins when sent.

    Args:
        initial_interval: Seconds before the second look.
        max_interval: Largest interval in seconds.
        backoff: Factor the interval grows by after each look.
        unknown_status_grace: Seconds an unknown status is tolerated before giving up.

    Example:
        ```python
        PollPolicy(initial_interval=5, max_interval=20)
        ```
    """

    initial_interval: float = 2.0
    max_interval: float = 15.0
    backoff: float = 1.5
    unknown_status_grace: float = 300.0


async def poll_until_terminal(
    client: CometClient,
    job: VideoJob,
    *,
    timeout_seconds: float,
    policy: PollPolicy = PollPolicy(),
    on_update: Callable[[VideoJob], None] | None = None,
) -> VideoJob:
    """Look at `job` until it succeeds; raise when it fails, stalls or the deadline passes.

    Args:
        client: The API client.
        job: The job to follow.
        timeout_seconds: The overall deadline, measured on a monotonic clock.
        policy: The polling cadence.
        on_update: Called whenever status or progress changes.

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
    interval = policy.initial_interval
    unknown_since: float | None = None
    last = job
    looked = False
    eta = _FinishEstimate()
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
        eta.observe(now, seen.progress)
        if seen.status is VideoStatus.SUCCEEDED:
            # Done at our first look: our own count says nothing about how long it took.
            _durations.remember(seen, now - started if looked else 0.0)
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
        remaining = eta.remaining(now)
        if remaining is None:
            remaining = _learned_remaining(seen, now - started)
        wait = hint if hint is not None else _next_wait(policy, interval, remaining)
        looked = True
        await asyncio.sleep(min(wait, deadline - now))
        interval = min(interval * policy.backoff, policy.max_interval)


def _next_wait(policy: PollPolicy, interval: float, remaining: float | None) -> float:
    """Half the time left before the estimated end; a quarter of the lateness after it."""
    if remaining is None:
        return interval
    wait = remaining / 2 if remaining > 0 else -remaining / 4
    return min(max(wait, policy.initial_interval), policy.max_interval)


def _learned_remaining(job: VideoJob, since_first_look: float) -> float | None:
    """Seconds until a job of this kind typically ends (negative once late), or None."""
    typical = _durations.typical(job)
    if typical is None:
        return None
    elapsed = since_first_look
    if job.created_at is not None:
        # The server's creation time also counts the time before we looked (a resumed
        # job); a negative age means the clocks disagree, so our own count is safer.
        age = time.time() - job.created_at.timestamp()
        if age >= 0:
            elapsed = age
    return typical - elapsed


class _FinishEstimate:
    """Estimate when a job ends from how fast its progress has risen so far."""

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None
        self._latest: tuple[float, int] | None = None

    def observe(self, now: float, progress: int | None) -> None:
        if progress is None or progress <= 0:
            return
        if self._first is None:
            self._first = (now, progress)
        self._latest = (now, progress)

    def remaining(self, now: float) -> float | None:
        """Seconds until 100 %, or None while the rate is unknown."""
        if self._first is None or self._latest is None:
            return None
        (t0, p0), (t1, p1) = self._first, self._latest
        if p1 <= p0 or t1 <= t0:
            return None
        rate = (p1 - p0) / (t1 - t0)
        return max(0.0, (100 - p1) / rate - (now - t1))


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
