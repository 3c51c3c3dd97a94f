"""Kling Omni routes (`/kling/v1/videos/omni-video`): create, query, lookup by external id."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from .kling_rules import RuleError, validate
from .models import FAIL_MESSAGE, EmulatedJob, outcome_for
from .responses import json_response, kling_error, request_id
from .server import Request, Response
from .state import EmulatorState, Phase

NATIVE = {
    "queued": "submitted",
    "running": "processing",
    "succeeded": "succeed",
    "failed": "failed",
    "unknown": "mystery",
}
WRAPPED = {
    "queued": "SUBMITTED",
    "running": "IN_PROGRESS",
    "succeeded": "SUCCESS",
    "failed": "FAILURE",
    "unknown": "MYSTERY",
}


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def create(state: EmulatorState, request: Request, fault: str | None) -> Response:
    """`POST /kling/v1/videos/omni-video`: validate, enforce limits, submit a job."""
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        return kling_error(400, 1201, "body: must be valid JSON")

    def own_video(url: str) -> tuple[int, int, float] | None:
        job = state.own_job_for_url(url)
        return (job.width, job.height, job.duration_seconds) if job else None

    try:
        spec = validate(body, own_video)
    except RuleError as bad:
        return kling_error(400, 1201, str(bad))
    external = spec.external_task_id
    if external is not None and external in state.external_ids:
        return kling_error(
            400, 1201, f"external_task_id: duplicate, already used by task {state.external_ids[external]}"
        )
    limit = state.settings.kling_parallel_limit
    if limit is not None and state.unfinished("kling") >= limit:
        return kling_error(429, 1303, "parallel task limit exceeded")
    job = EmulatedJob(
        task_id=str(secrets.randbelow(9 * 10**17) + 10**17),
        provider="kling",
        request=body,
        created_at=time.time(),
        idempotency_key=external,
        width=spec.width,
        height=spec.height,
        duration_seconds=spec.duration,
        outcome=outcome_for(spec.prompt),
        watermark=spec.watermark,
        external_task_id=external,
    )
    state.add_job(job)
    created = _ms(job.created_at)
    data = {
        "task_id": job.task_id,
        "task_status": "submitted",
        "task_info": {"external_task_id": external},
        "task_status_msg": None,
        "created_at": created,
        "updated_at": created,
    }
    return json_response(200, {"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": data})


def native_data(
    state: EmulatorState, job: EmulatedJob, phase: Phase, status: str | None = None
) -> dict[str, Any]:
    """The native `data` object of a query answer.

    As the docs show it (REFERENCE.md section 5): `task_info` is `{}` unless an
    `external_task_id` was supplied, and an unfinished job has an empty `task_result: {}`.
    """
    failed = phase.name == "failed"
    external = job.external_task_id
    data: dict[str, Any] = {
        "task_id": job.task_id,
        "task_status": status or NATIVE[phase.name],
        "task_status_msg": (job.failure or FAIL_MESSAGE) if failed and not status else "",
        "task_info": {"external_task_id": external} if external is not None else {},
        "created_at": _ms(job.created_at),
        "updated_at": _ms(phase.since),
    }
    if phase.name in ("queued", "running") and not status:
        data["task_result"] = {}
    if phase.name == "succeeded" and not status:
        videos = []
        for video in job.videos:
            item = {"id": video.video_id, "url": state.file_url(job, video)}
            if video.watermark_path:
                item["watermark_url"] = state.file_url(job, video, watermarked=True)
            item["duration"] = f"{job.duration_seconds:.1f}"
            videos.append(item)
        data["task_result"] = {"videos": videos}
        if state.settings.kling_units_per_job is not None:
            # Documented for Kling (REFERENCE.md section 4): the units deducted, as a string.
            data["final_unit_deduction"] = state.settings.kling_units_per_job
    return data


def query_data(state: EmulatorState, job: EmulatedJob, phase: Phase, status: str | None = None) -> dict[str, Any]:
    """The `data` object a query answers for `job` at `phase`: the native task object, or with
    `kling_wrapped` the gateway's outer object. Kling callbacks post exactly this."""
    data = native_data(state, job, phase, status)
    if not state.settings.kling_wrapped:
        return data
    outer: dict[str, Any] = {
        "task_id": job.task_id,
        "status": "MYSTERY" if status else WRAPPED[phase.name],
        "progress": f"{phase.progress}%",
        "fail_reason": data["task_status_msg"] if phase.name == "failed" else "",
    }
    inner = state.settings.kling_wrapped_inner
    if inner == "always" or (phase.name == "succeeded" and not status):
        outer["data"] = {"code": 0, "message": "HTTP_OK", "data": data}
    elif inner == "null":
        outer["data"] = None
    return outer


def _answer(state: EmulatorState, job: EmulatedJob, fault: str | None) -> Response:
    mystery = "mystery" if fault == "unknown_status" else None
    data = query_data(state, job, state.phase(job), mystery)
    if state.settings.kling_wrapped:
        return json_response(200, {"code": "success", "data": data})
    return json_response(200, {"code": 0, "message": "SUCCEED", "request_id": request_id(), "data": data})


def _not_found(what: str) -> Response:
    return kling_error(404, 1203, f"task not found: {what}")


def query(state: EmulatorState, request: Request, fault: str | None, task_id: str) -> Response:
    """`GET /kling/v1/videos/omni-video/{task_id}`."""
    job = state.jobs.get(task_id)
    if job is None or job.provider != "kling":
        return _not_found(task_id)
    return _answer(state, job, fault)


def query_external(state: EmulatorState, request: Request, fault: str | None) -> Response:
    """`GET /kling/v1/videos/omni-video?external_task_id=X`."""
    external = request.query.get("external_task_id")
    if not external:
        return kling_error(400, 1201, "external_task_id: required query parameter")
    task_id = state.external_ids.get(external)
    if task_id is None:
        return _not_found(f"external_task_id {external}")
    return _answer(state, state.jobs[task_id], fault)
