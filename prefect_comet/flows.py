"""Composite flows: from a request to a verified video in storage."""

from __future__ import annotations

from prefect import flow

from prefect_comet.credentials import CometAPICredentials
from prefect_comet.downloads import DEFAULT_MAX_BYTES
from prefect_comet.models import StoredVideo
from prefect_comet.providers import VideoRequest
from prefect_comet.tasks import create_video, persist_video, wait_for_video


@flow(name="generate-video", flow_run_name="generate-{request.provider}-video")
async def generate_video(
    request: VideoRequest,
    destination: str = "./videos",
    credentials: CometAPICredentials | None = None,
    timeout_seconds: float = 1800.0,
    poll_interval_seconds: float = 2.0,
    max_poll_interval_seconds: float = 15.0,
    max_video_bytes: int = DEFAULT_MAX_BYTES,
) -> StoredVideo:
    """Generate one video and store it, verified, under `destination`.

    Args:
        request: An `OmniVideoRequest` or `KlingOmniVideoRequest`.
        destination: Any fsspec URL or local folder (`./videos`, `s3://bucket/prefix`).
        credentials: The CometAPI block; `COMETAPI_KEY` and `COMETAPI_BASE_URL` are used
            when omitted.
        timeout_seconds: How long to wait for the generation.
        poll_interval_seconds: The first poll interval; it grows towards the cap.
        max_poll_interval_seconds: The largest poll interval.
        max_video_bytes: Refuse result files larger than this.

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
            )
            return stored.uri
        ```
    """
    job = await create_video(request, credentials)
    job = await wait_for_video(
        job,
        credentials,
        timeout_seconds=timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        max_poll_interval_seconds=max_poll_interval_seconds,
    )
    return await persist_video(job, destination, credentials, max_video_bytes=max_video_bytes)
