"""The Kling Omni family: create, query and download `/kling/v1/videos/omni-video` jobs."""

from __future__ import annotations

from typing import Any

from prefect_comet._files import redact_url, short_hash
from prefect_comet.api.answers import (
    checked_task_id,
    normalise_status,
    parse_progress,
    parse_timestamp,
    task_path,
)
from prefect_comet.api.client import CometClient, OnRefused
from prefect_comet.api.kling_request import KlingOmniVideoRequest
from prefect_comet.api.provider import DownloadSource, VideoProvider
from prefect_comet.exceptions import NotFoundError, ResponseFormatError
from prefect_comet.models import VideoJob, VideoOutput

ROUTE = "/kling/v1/videos/omni-video"


class KlingProvider(VideoProvider):
    """Create, poll and download Kling Omni jobs; both query shapes are understood."""

    name = "kling"
    request_type = KlingOmniVideoRequest
    can_find_by_key = True

    async def create(
        self,
        client: CometClient,
        request: KlingOmniVideoRequest,
        *,
        idempotency_key: str | None,
        on_refused: OnRefused | None = None,
    ) -> VideoJob:
        payload = request.to_payload()
        # external_task_id is unique per account: a lost job can be found again by it,
        # and a resent create with the same one is refused rather than paid twice.
        if idempotency_key and not payload.get("external_task_id"):
            payload["external_task_id"] = external_task_id_for(idempotency_key)
        response = await client.create(ROUTE, json=payload, on_refused=on_refused)
        job = _job_from_data(_data(response.body))
        return job.model_copy(
            update={
                "idempotency_key": idempotency_key,
                "external_task_id": job.external_task_id or payload.get("external_task_id"),
                "model": payload.get("model_name", "kling-video-o1"),
                "request": _summarise(payload),  # with the external_task_id actually sent
            }
        )

    async def retrieve(self, client: CometClient, task_id: str) -> tuple[VideoJob, float | None]:
        response = await client.get_json(task_path(ROUTE, task_id), task_id=task_id)
        return _job_from_data(_data(response.body), task_id=task_id), None

    async def download_sources(self, client: CometClient, job: VideoJob) -> list[DownloadSource]:
        response = await client.get_json(task_path(ROUTE, job.task_id), task_id=job.task_id)
        sources = []
        for video in _videos(_native(_data(response.body))):
            for url_field, watermarked in (("url", False), ("watermark_url", True)):
                url = video.get(url_field)
                if isinstance(url, str) and url:
                    sources.append(DownloadSource([url], _output(video, url, watermarked)))
        return sources

    def summarise(self, request: KlingOmniVideoRequest) -> dict[str, Any]:
        return _summarise(request.to_payload())

    async def find_by_key(self, client: CometClient, idempotency_key: str) -> VideoJob | None:
        try:
            response = await client.get_json(
                ROUTE, params={"external_task_id": external_task_id_for(idempotency_key)}
            )
        except NotFoundError:
            return None
        return _job_from_data(_data(response.body))


def external_task_id_for(idempotency_key: str) -> str:
    """The key itself when Kling accepts it as `external_task_id` (≤ 64 printable, no spaces)."""
    if len(idempotency_key) <= 64 and idempotency_key.isprintable() and not any(
        ch.isspace() for ch in idempotency_key
    ):
        return idempotency_key
    # Never shortened differently: a job in flight is found again by exactly this id.
    return "key-" + short_hash(idempotency_key, 48)


def _data(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data")
    if not isinstance(data, dict):
        raise ResponseFormatError("CometAPI answered a Kling envelope without a `data` object.")
    return data


def _native(data: dict[str, Any]) -> dict[str, Any]:
    """The native task object, also when a gateway wrapped it as `data.data.data`."""
    inner = data.get("data")
    if "task_status" not in data and isinstance(inner, dict):
        inner = inner.get("data", inner)
        if isinstance(inner, dict):
            return inner
    return data


def _job_from_data(data: dict[str, Any], *, task_id: str | None = None) -> VideoJob:
    native = _native(data)
    wrapped = native is not data
    found_id = native.get("task_id") or data.get("task_id") or task_id
    raw_status = native.get("task_status") or data.get("status") or ""
    status = normalise_status(raw_status)
    progress = parse_progress(data.get("progress")) if wrapped else None
    task_info = native.get("task_info") if isinstance(native.get("task_info"), dict) else {}
    error = native.get("task_status_msg") or (data.get("fail_reason") if wrapped else None)
    videos = _videos(native)
    return VideoJob(
        provider="kling",
        task_id=checked_task_id(found_id),
        status=status,
        raw_status=str(raw_status),
        progress=100 if status.value == "succeeded" else progress,
        created_at=parse_timestamp(native.get("created_at"), milliseconds=True),
        updated_at=parse_timestamp(native.get("updated_at"), milliseconds=True),
        outputs=[
            _output(video, video[field], field == "watermark_url")
            for video in videos
            for field in ("url", "watermark_url")
            if isinstance(video.get(field), str) and video[field]
        ],
        error=str(error) if error else None,
        external_task_id=task_info.get("external_task_id"),
    )


def _videos(native: dict[str, Any]) -> list[dict[str, Any]]:
    result = native.get("task_result")
    videos = result.get("videos") if isinstance(result, dict) else None
    return [video for video in videos or [] if isinstance(video, dict)]


def _output(video: dict[str, Any], url: str, watermarked: bool) -> VideoOutput:
    try:
        duration = float(video.get("duration"))  # Kling sends it as a string
    except (TypeError, ValueError):
        duration = None
    return VideoOutput(
        video_id=str(video["id"]) if video.get("id") is not None else None,
        url=redact_url(url),
        watermarked=watermarked,
        duration_seconds=duration,
    )


def _summarise(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as recorded: inline base64 images become a short fingerprint."""
    summary = dict(payload)
    images = []
    for image in payload.get("image_list", []):
        url = str(image.get("image_url", ""))
        if not url.startswith(("http://", "https://")):
            digest = short_hash(url, 16)
            image = {**image, "image_url": f"<base64 image, {len(url)} chars, sha256 {digest}>"}
        elif "?" in url:
            image = {**image, "image_url": redact_url(url)}
        images.append(image)
    if images:
        summary["image_list"] = images
    return summary
