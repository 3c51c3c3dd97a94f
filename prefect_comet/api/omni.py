"""The Omni family: create, retrieve and download `/v1/videos` jobs (OpenAI-videos shaped)."""

from __future__ import annotations

from typing import Any

from prefect_comet._files import redact_url
from prefect_comet.api.answers import (
    checked_task_id,
    normalise_status,
    parse_progress,
    parse_timestamp,
    reason_text,
    task_path,
    text_value,
)
from prefect_comet.api.client import CometClient, OnRefused
from prefect_comet.api.omni_request import OmniVideoRequest
from prefect_comet.api.provider import DownloadSource, VideoProvider
from prefect_comet.models import VideoJob, VideoOutput

CREATE_PATH = "/v1/videos"


class OmniProvider(VideoProvider):
    """Create, poll and download Omni jobs."""

    name = "omni"
    request_type = OmniVideoRequest

    async def create(
        self,
        client: CometClient,
        request: OmniVideoRequest,
        *,
        idempotency_key: str | None,
        on_refused: OnRefused | None = None,
    ) -> VideoJob:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = await client.create(
            CREATE_PATH, form=request.to_form(), headers=headers, on_refused=on_refused
        )
        job = _job_from_task(response.body)
        return job.model_copy(
            update={"idempotency_key": idempotency_key, "request": self.summarise(request)}
        )

    async def retrieve(self, client: CometClient, task_id: str) -> tuple[VideoJob, float | None]:
        response = await client.get_json(task_path(CREATE_PATH, task_id), task_id=task_id)
        hint = response.headers.get("openai-poll-after-ms")
        poll_after = float(hint) / 1000 if hint and hint.isascii() and hint.isdigit() else None
        return _job_from_task(response.body, task_id=task_id), poll_after

    async def download_sources(self, client: CometClient, job: VideoJob) -> list[DownloadSource]:
        # The content route is stable; the temporary (signed) video_url is the fallback, read
        # fresh only when that route will not serve the file: no request before the download.
        task_url = task_path(CREATE_PATH, job.task_id)

        async def signed_url() -> str | None:
            task = (await client.get_json(task_url, task_id=job.task_id)).body
            url = task.get("video_url")
            return url if isinstance(url, str) and url else None

        output = job.outputs[0] if job.outputs else VideoOutput()
        return [DownloadSource(urls=[f"{task_url}/content", signed_url], output=output)]


def _job_from_task(task: dict[str, Any], *, task_id: str | None = None) -> VideoJob:
    found_id = checked_task_id(task.get("id") or task.get("task_id") or task_id)
    status = text_value(task.get("status"), field="status", task_id=found_id) or ""
    # Some gateways leave out the `error` object and say why in a plain field instead.
    error = next(
        (
            reason
            for field in ("error", "fail_reason", "error_message")
            if (reason := reason_text(task.get(field), field=field, task_id=found_id))
        ),
        None,
    )
    return VideoJob(
        provider="omni",
        task_id=found_id,
        status=normalise_status(status),
        raw_status=status,
        progress=parse_progress(task.get("progress"), task_id=found_id),
        model=text_value(task.get("model"), field="model", task_id=found_id),
        created_at=parse_timestamp(task.get("created_at"), field="created_at", task_id=found_id),
        completed_at=parse_timestamp(task.get("completed_at"), field="completed_at", task_id=found_id),
        outputs=[_output(task)] if isinstance(task.get("video_url"), str) and task["video_url"] else [],
        error=error,
    )


def _output(task: dict[str, Any]) -> VideoOutput:
    url = task.get("video_url")
    return VideoOutput(url=redact_url(url) if isinstance(url, str) and url else None)
