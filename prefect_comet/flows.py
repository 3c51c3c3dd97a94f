"""Composite flows: from a request to a verified video in storage."""

from __future__ import annotations

from prefect import flow

from prefect_comet.credentials import CometAPICredentials
from prefect_comet.downloads import DEFAULT_MAX_BYTES
from prefect_comet.jobs import IfOutcomeUnknown, default_idempotency_key
from prefect_comet.models import StoredVideo
from prefect_comet.pipeline import GenerationOptions, produce_video
from prefect_comet.providers import VideoRequest


@flow(name="generate-video", flow_run_name="generate-{request.provider}-video")
async def generate_video(
    request: VideoRequest,
    destination: str = "./videos",
    credentials: CometAPICredentials | None = None,
    idempotency_key: str | None = None,
    if_outcome_unknown: IfOutcomeUnknown = "fail",
    timeout_seconds: float = 1800.0,
    poll_interval_seconds: float = 2.0,
    max_poll_interval_seconds: float = 15.0,
    max_video_bytes: int = DEFAULT_MAX_BYTES,
    strict_output: bool = False,
) -> StoredVideo:
    """Generate one video and store it, verified, under `destination`, paying at most once.

    A ledger beside the videos (`<destination>/.comet-ledger/`) maps the idempotency key
    to the task id as soon as it is known. Running again with the same key resumes that
    job (after a crash, a timeout, a retry) or, once stored, returns the stored video
    without any API call.

    Args:
        request: An `OmniVideoRequest` or `KlingOmniVideoRequest`.
        destination: Any fsspec URL or local folder (`./videos`, `s3://bucket/prefix`).
        credentials: The CometAPI block; `COMETAPI_KEY` and `COMETAPI_BASE_URL` are used
            when omitted.
        idempotency_key: One job per key. By default derived from the request and the flow
            run, so flow and task retries never create a second job.
        if_outcome_unknown: When a create may have reached the server unanswered and the
            job cannot be found by key: `"fail"` (default) or `"recreate"`.
        timeout_seconds: How long to wait for the generation.
        poll_interval_seconds: The first poll interval; it grows towards the cap.
        max_poll_interval_seconds: The largest poll interval.
        max_video_bytes: Refuse result files larger than this.
        strict_output: Fail (with `OutputMismatchError`) when the stored video's frame or
            duration differs from the request; by default it is a logged warning and a
            flag in the summary artifact.

    Returns:
        The stored video: URI, SHA-256, size and the frame size and duration read from it.

    Example:
        ```python
        from prefect import flow
        from prefect_comet import OmniVideoRequest, generate_video

        @flow
        async def daily_clip():
            stored = await generate_video(
                OmniVideoRequest(prompt="Ocean waves at golden hour"),
                destination="s3://my-bucket/clips",
                idempotency_key="daily-clip-2026-11-24",
            )
            return stored.uri
        ```
    """
    options = GenerationOptions(
        if_outcome_unknown=if_outcome_unknown,
        timeout_seconds=timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        max_poll_interval_seconds=max_poll_interval_seconds,
        max_video_bytes=max_video_bytes,
        strict_output=strict_output,
    )
    return await produce_video(
        request,
        idempotency_key=idempotency_key or default_idempotency_key(request),
        destination=destination,
        credentials=credentials,
        options=options,
    )
