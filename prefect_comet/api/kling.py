"""The Kling Omni family: create, query and download `/kling/v1/videos/omni-video` jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect_comet._files import redact_url, short_hash
from prefect_comet.api.answers import (
    checked_task_id,
    normalise_status,
    parse_progress,
    parse_seconds,
    parse_timestamp,
    parse_units,
    reason_text,
    task_path,
    text_value,
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
                    sources.append(DownloadSource([url], _output(video, url, watermarked, job.task_id)))
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


def _split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the gateway's outer object, the native task object) of a query answer's `data`.

    A native answer is both. A wrapped one keeps the job's state outside (`status`,
    `progress`, `fail_reason`) and the native object as `data.data.data`, which may be
    null or missing while the job runs or after it failed: a null one reads as `{}`, and
    without any `data.data` the outer object stands alone (it has no native fields).
    """
    if "task_status" in data or "data" not in data:
        return data, data
    inner = data["data"]
    if isinstance(inner, dict):
        inner = inner.get("data", inner)
    return data, inner if isinstance(inner, dict) else {}


def _native(data: dict[str, Any]) -> dict[str, Any]:
    """The native task object, also when a gateway wrapped it as `data.data.data` (or `{}`)."""
    return _split(data)[1]


def _job_from_data(data: dict[str, Any], *, task_id: str | None = None) -> VideoJob:
    # The native fields win; the outer ones (absent from a native answer) fill the gaps.
    outer, native = _split(data)
    found_id = checked_task_id(native.get("task_id") or outer.get("task_id") or task_id)
    raw_status = _text(native, "task_status", found_id) or _text(outer, "status", found_id) or ""
    status = normalise_status(raw_status)
    task_info = native.get("task_info") if isinstance(native.get("task_info"), dict) else {}
    error = reason_text(native.get("task_status_msg"), field="task_status_msg", task_id=found_id)
    videos = _videos(native)
    return VideoJob(
        provider="kling",
        task_id=found_id,
        status=status,
        raw_status=raw_status,
        progress=100 if status.value == "succeeded" else parse_progress(outer.get("progress"), task_id=found_id),
        created_at=_ms_time(native, "created_at", found_id),
        updated_at=_ms_time(native, "updated_at", found_id),
        outputs=[
            _output(video, video[field], field == "watermark_url", found_id)
            for video in videos
            for field in ("url", "watermark_url")
            if isinstance(video.get(field), str) and video[field]
        ],
        error=error or reason_text(outer.get("fail_reason"), field="fail_reason", task_id=found_id),
        external_task_id=text_value(
            task_info.get("external_task_id"), field="task_info.external_task_id", task_id=found_id
        ),
        cost_units=_units(outer, native, found_id),
    )


def _units(outer: dict[str, Any], native: dict[str, Any], task_id: str) -> float | None:
    """Kling's `final_unit_deduction` (a string of units): the native object's, else the outer one's.

    REFERENCE.md section 4: whether CometAPI passes it through is not known, so it is kept
    when present, wherever a wrapped answer puts it. Omni answers document no cost field.
    """
    for source in (native, outer):
        if source.get("final_unit_deduction") not in (None, ""):
            return parse_units(source["final_unit_deduction"], task_id=task_id)
    return None


def _text(data: dict[str, Any], field: str, task_id: str) -> str | None:
    return text_value(data.get(field), field=field, task_id=task_id)


def _ms_time(native: dict[str, Any], field: str, task_id: str) -> datetime | None:
    return parse_timestamp(native.get(field), milliseconds=True, field=field, task_id=task_id)


def _videos(native: dict[str, Any]) -> list[dict[str, Any]]:
    result = native.get("task_result")
    videos = result.get("videos") if isinstance(result, dict) else None
    return [video for video in videos if isinstance(video, dict)] if isinstance(videos, list) else []


def _output(video: dict[str, Any], url: str, watermarked: bool, task_id: str) -> VideoOutput:
    return VideoOutput(
        video_id=text_value(video.get("id"), field="videos[].id", task_id=task_id),
        url=redact_url(url),
        watermarked=watermarked,
        # Kling sends the duration as a string.
        duration_seconds=parse_seconds(video.get("duration"), field="videos[].duration", task_id=task_id),
    )


def _summarise(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as recorded: inline base64 images become a short fingerprint, a callback URL loses its token."""
    summary = dict(payload)
    if summary.get("callback_url"):
        summary["callback_url"] = redact_url(str(summary["callback_url"]))
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
