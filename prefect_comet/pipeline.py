"""The steps of one generation, shared by the single-video and batch flows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prefect.logging import get_run_logger

from prefect_comet.credentials import CometAPICredentials
from prefect_comet.downloads import DEFAULT_MAX_BYTES
from prefect_comet.exceptions import GenerationFailedError, OutputMismatchError
from prefect_comet.jobs import IfOutcomeUnknown, record_outcome, stored_for
from prefect_comet.ledger import JobLedger
from prefect_comet.models import StoredVideo
from prefect_comet.providers import VideoRequest
from prefect_comet.tasks import create_video, persist_video, wait_for_video


@dataclass(frozen=True)
class GenerationOptions:
    """How each job is created, waited for and stored (the flows' tuning parameters)."""

    if_outcome_unknown: IfOutcomeUnknown = "fail"
    timeout_seconds: float = 1800.0
    poll_interval_seconds: float = 2.0
    max_poll_interval_seconds: float = 15.0
    max_video_bytes: int = DEFAULT_MAX_BYTES
    strict_output: bool = False
    # Per-job artifacts cost server writes; a batch shows its manifest table instead.
    per_job_artifacts: bool = True


async def produce_video(
    request: VideoRequest,
    *,
    idempotency_key: str,
    destination: str,
    credentials: CometAPICredentials | None,
    options: GenerationOptions,
    on_admitted: Callable[[], None] | None = None,
    on_generated: Callable[[], None] | None = None,
    steps_as_tasks: bool = True,
) -> StoredVideo:
    """Create (or resume) the job for a key, wait for it and store its videos.

    The ledger beside the videos is checked first: a key whose videos are stored and
    still verify returns them without any API call.

    Args:
        request: The generation request.
        idempotency_key: One job per key.
        destination: Any fsspec URL or local folder.
        credentials: The CometAPI block, or None for the environment.
        options: Timeouts, poll cadence, size cap, ambiguous-create policy.
        on_admitted: Called once the server has taken the job.
        on_generated: Called once the server is done with it (before the download).
        steps_as_tasks: Run create, wait and persist as task runs of their own. A batch
            runs each job as one task and its steps inside it: a third of the server writes.

    Returns:
        The stored video.
    """
    ledger = JobLedger.beside(destination)
    stored = stored_for(ledger, idempotency_key)
    if stored is not None:
        get_run_logger().info("Already stored for idempotency key %s: %s", idempotency_key, stored.uri)
        return _checked(stored, options)
    create, wait, persist = (
        (create_video, wait_for_video, persist_video)
        if steps_as_tasks
        else (create_video.fn, wait_for_video.fn, persist_video.fn)
    )
    job = await create(
        request,
        credentials,
        idempotency_key=idempotency_key,
        ledger_uri=ledger.uri,
        if_outcome_unknown=options.if_outcome_unknown,
    )
    if on_admitted:
        on_admitted()
    try:
        job = await wait(
            job,
            credentials,
            timeout_seconds=options.timeout_seconds,
            poll_interval_seconds=options.poll_interval_seconds,
            max_poll_interval_seconds=options.max_poll_interval_seconds,
            publish_artifacts=options.per_job_artifacts,
        )
    except GenerationFailedError as error:
        record_outcome(ledger, idempotency_key, error=str(error))
        raise
    if on_generated:
        on_generated()
    stored = await persist(
        job,
        destination,
        credentials,
        max_video_bytes=options.max_video_bytes,
        publish_artifacts=options.per_job_artifacts,
    )
    record_outcome(ledger, idempotency_key, stored=stored)
    return _checked(stored, options)


def _checked(stored: StoredVideo, options: GenerationOptions) -> StoredVideo:
    # The video stays stored (it was paid for); strict output only fails the run.
    if options.strict_output and stored.mismatches:
        raise OutputMismatchError(
            f"The video stored at {stored.uri} is not what was asked for: "
            f"{'; '.join(stored.mismatches)}. What to do: accept it (strict_output=False) "
            "or change the request.",
            task_id=stored.task_id,
        )
    return stored
