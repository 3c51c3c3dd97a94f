"""The Omni family: `POST /v1/videos` (multipart), OpenAI-videos shaped."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefect_comet._responses import redact_url
from prefect_comet.client import CometClient
from prefect_comet.models import VideoJob, VideoOutput
from prefect_comet.providers.base import (
    DownloadSource,
    VideoProvider,
    checked_task_id,
    task_path,
    normalise_status,
    parse_progress,
    parse_timestamp,
)

CREATE_PATH = "/v1/videos"


class OmniVideoRequest(BaseModel):
    """An Omni text-to-video request.

    Args:
        prompt: What the video shows.
        model: The Omni model; only `omni-fast` is offered.
        seconds: Clip length, as a string: `"4"`, `"8"` or `"12"`.
        aspect_ratio: `16:9`, `9:16` or `1:1` (the API renders `1:1` landscape today).
        resolution: `720p` or `1080p` (the API renders `1080p` as 720p today).

    Example:
        ```python
        from prefect_comet import OmniVideoRequest

        request = OmniVideoRequest(prompt="Ocean waves at golden hour", aspect_ratio="9:16")
        ```
    """

    model_config = ConfigDict(extra="forbid")
    provider: ClassVar[str] = "omni"

    prompt: str = Field(description="What the video shows.")
    model: Literal["omni-fast"] = "omni-fast"
    seconds: Literal["4", "8", "12"] = "4"
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9"
    resolution: Literal["720p", "1080p"] = "720p"

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("seconds", mode="before")
    @classmethod
    def _seconds_as_string(cls, value: Any) -> Any:
        # The API wants a string; a user writing seconds=8 means "8".
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def to_form(self) -> dict[str, str]:
        """The multipart form fields, exactly as the create page lists them."""
        return self.model_dump()


class OmniProvider(VideoProvider):
    """Create, poll and download Omni jobs."""

    name = "omni"
    request_type = OmniVideoRequest

    async def create(
        self, client: CometClient, request: OmniVideoRequest, *, idempotency_key: str | None
    ) -> VideoJob:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = await client.create(CREATE_PATH, form=request.to_form(), headers=headers)
        job = _job_from_task(response.body)
        return job.model_copy(
            update={"idempotency_key": idempotency_key, "request": self.summarise(request)}
        )

    async def retrieve(self, client: CometClient, task_id: str) -> tuple[VideoJob, float | None]:
        response = await client.get_json(task_path(CREATE_PATH, task_id), task_id=task_id)
        hint = response.headers.get("openai-poll-after-ms")
        poll_after = float(hint) / 1000 if hint and hint.isdigit() else None
        return _job_from_task(response.body, task_id=task_id), poll_after

    async def download_sources(self, client: CometClient, job: VideoJob) -> list[DownloadSource]:
        # The content route is stable; the temporary video_url is the fallback.
        task_url = task_path(CREATE_PATH, job.task_id)
        urls = [f"{task_url}/content"]
        task = (await client.get_json(task_url, task_id=job.task_id)).body
        if isinstance(task.get("video_url"), str) and task["video_url"]:
            urls.append(task["video_url"])
        return [DownloadSource(urls=urls, output=_output(task))]


def _job_from_task(task: dict[str, Any], *, task_id: str | None = None) -> VideoJob:
    found_id = task.get("id") or task.get("task_id") or task_id
    error = task.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or str(error)
    video_url = task.get("video_url")
    return VideoJob(
        provider="omni",
        task_id=checked_task_id(found_id),
        status=normalise_status(task.get("status")),
        raw_status=str(task.get("status") or ""),
        progress=parse_progress(task.get("progress")),
        model=task.get("model"),
        created_at=parse_timestamp(task.get("created_at")),
        completed_at=parse_timestamp(task.get("completed_at")),
        outputs=[_output(task)] if video_url else [],
        error=str(error) if error else None,
    )


def _output(task: dict[str, Any]) -> VideoOutput:
    url = task.get("video_url")
    return VideoOutput(url=redact_url(url) if isinstance(url, str) and url else None)
