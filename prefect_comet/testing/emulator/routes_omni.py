"""Omni routes (`/v1/videos`, OpenAI-videos shaped): create, retrieve, content."""

from __future__ import annotations

import re
import secrets
import time
from email import policy
from email.parser import BytesParser
from typing import Any

from .files import serve_file
from .models import FAIL_MESSAGE, EmulatedJob, outcome_for
from .responses import gateway_error, json_response
from .server import Request, Response
from .state import EmulatorState

DEFAULTS = {"seconds": "4", "aspect_ratio": "16:9", "resolution": "720p"}
# The create page's enum; `seconds` and `resolution` are free strings there (checked below).
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
FIELDS = {"model", "prompt", *DEFAULTS}
# No maximum is documented; the client refuses more than this (prefect_comet.api.omni_request
# MAX_SECONDS), and the emulator is never kinder than the client.
MAX_SECONDS = 60
SECONDS = re.compile(r"[1-9][0-9]*")
RESOLUTION = re.compile(r"[1-9][0-9]{2,3}p")
# Observed frames (seed doc): 1:1 renders landscape, 1080p normalizes to 720p (and so does any
# other resolution here: the docs show no other frame).
FRAMES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1280, 720)}
STATUS = {
    "queued": "queued",
    "running": "in_progress",
    "succeeded": "completed",
    "failed": "failed",
    "unknown": "mystery",
}


class _Invalid(Exception):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


def _form(request: Request) -> dict[str, str]:
    """Parse a multipart/form-data body into text fields."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise _Invalid("", "request body must be multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=policy.HTTP).parsebytes(head + request.body)
    if not message.is_multipart():
        raise _Invalid("", "malformed multipart/form-data body")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise _Invalid("", "multipart part without a field name")
        payload = part.get_payload(decode=True) or b""
        if not isinstance(payload, bytes):
            raise _Invalid(str(name), f"{name} must be a plain form field")
        try:
            fields[str(name)] = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise _Invalid(str(name), f"{name} must be UTF-8 text") from None
    return fields


def _validate(fields: dict[str, str]) -> dict[str, str]:
    """Apply defaults and the documented rules; returns the normalized request."""
    for name in fields:
        if name not in FIELDS:
            raise _Invalid(name, f"{name} is not a supported field (allowed: {', '.join(sorted(FIELDS))})")
    if "model" not in fields:
        raise _Invalid("model", "model is required")
    if fields["model"] != "omni-fast":
        raise _Invalid("model", "model must be omni-fast")
    if not fields.get("prompt", "").strip():
        raise _Invalid("prompt", "prompt is required and must not be blank")
    values = {**DEFAULTS, **fields}
    if values["aspect_ratio"] not in ASPECT_RATIOS:
        raise _Invalid("aspect_ratio", f"aspect_ratio must be one of {', '.join(ASPECT_RATIOS)}")
    if not SECONDS.fullmatch(values["seconds"]) or int(values["seconds"]) > MAX_SECONDS:
        raise _Invalid("seconds", f"seconds must be a whole number of seconds from 1 to {MAX_SECONDS}")
    if not RESOLUTION.fullmatch(values["resolution"]):
        raise _Invalid("resolution", "resolution must be a frame height followed by p, like 720p")
    return values


def create(state: EmulatorState, request: Request, fault: str | None) -> Response:
    """`POST /v1/videos`: validate the form and queue a job."""
    try:
        values = _validate(_form(request))
    except _Invalid as bad:
        return gateway_error(400, bad.message, param=bad.param, code="invalid_request")
    width, height = FRAMES[values["aspect_ratio"]]
    job = EmulatedJob(
        task_id=f"task_{secrets.token_hex(12)}",
        provider="omni",
        request=values,
        created_at=time.time(),
        idempotency_key=request.headers.get("idempotency-key") or None,
        width=width,
        height=height,
        duration_seconds=float(values["seconds"]),
        outcome=outcome_for(values["prompt"]),
    )
    state.add_job(job)
    return json_response(200, {**task_object(state, job, job.created_at), "status": "queued", "progress": 0})


def task_object(
    state: EmulatorState, job: EmulatedJob, now: float | None = None, status: str | None = None
) -> dict[str, Any]:
    """The OpenAI-videos task object for `job` at `now`."""
    phase = state.phase(job, now)
    body: dict[str, Any] = {
        "id": job.task_id,
        "task_id": job.task_id,
        "object": "video",
        "model": job.request["model"],
        "status": status or STATUS[phase.name],
        "progress": phase.progress,
        "created_at": int(job.created_at),
    }
    if status is None and phase.name == "succeeded":
        body["completed_at"] = int(phase.since)
        body["video_url"] = state.file_url(job, job.videos[0])
    elif status is None and phase.name == "failed":
        reason = job.failure or FAIL_MESSAGE
        field = state.settings.omni_failure_field
        body[field] = {"code": "generation_failed", "message": reason} if field == "error" else reason
    return body


def _job(state: EmulatorState, task_id: str) -> EmulatedJob | None:
    job = state.jobs.get(task_id)
    return job if job is not None and job.provider == "omni" else None


def retrieve(state: EmulatorState, request: Request, fault: str | None, task_id: str) -> Response:
    """`GET /v1/videos/{id}`: the task object (with `openai-poll-after-ms` when `poll_after_ms` is set)."""
    job = _job(state, task_id)
    if job is None:
        return gateway_error(404, f"task {task_id} not found", type="invalid_request_error", code="not_found")
    hint = state.settings.poll_after_ms
    return json_response(
        200,
        task_object(state, job, status="mystery" if fault == "unknown_status" else None),
        [("openai-poll-after-ms", str(hint))] if hint is not None else None,
    )


def content(state: EmulatorState, request: Request, fault: str | None, task_id: str) -> Response:
    """`GET /v1/videos/{id}/content`: the MP4 (or a redirect to its signed URL)."""
    job = _job(state, task_id)
    if job is None:
        return gateway_error(404, f"task {task_id} not found", type="invalid_request_error", code="not_found")
    variant = request.query.get("variant", "video")
    if variant != "video":
        return gateway_error(
            400,
            f"variant {variant} is not available for this model",
            type="invalid_request_error",
            param="variant",
        )
    phase = state.phase(job)
    if phase.name != "succeeded":
        return gateway_error(
            400,
            f"video is not ready: task status is {STATUS[phase.name]}",
            type="invalid_request_error",
            code="video_not_ready",
        )
    video = job.videos[0]
    if state.settings.content_redirect:
        return Response(302, [("location", state.file_url(job, video))])
    return serve_file(request, video.path, video.size, video.sha256)
