"""Prefect events for a video job's life: created, completed, failed, persisted, abandoned.

The events carry a resource per job (`cometapi.video.<provider>.<task id>`), so automations
can react to a finished or failed generation and the event feed groups a job's events.
Emitting never raises: an event is a notification, not part of producing the video.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.context import FlowRunContext, TaskRunContext
from prefect.events import emit_event

from prefect_comet._files import redact_url
from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.ui._quiet import warn
from prefect_comet.ui.labels import short_prompt

VideoEventKind = Literal["created", "completed", "failed", "persisted", "abandoned"]
EVENT_PREFIX = "comet.video"
MAX_ERROR_CHARS = 1000


def video_resource_id(job: VideoJob) -> str:
    """The event resource id of a job, e.g. `cometapi.video.omni.task_8f2c`.

    Args:
        job: The job.

    Returns:
        The `prefect.resource.id` used by every event of this job.

    Example:
        ```python
        video_resource_id(VideoJob(provider="omni", task_id="task_1"))  # "cometapi.video.omni.task_1"
        ```
    """
    return f"cometapi.video.{job.provider}.{job.task_id}"


def emit_video_event(
    kind: VideoEventKind,
    job: VideoJob,
    *,
    stored: StoredVideo | None = None,
    error: str | None = None,
    flow_run_id: str | None = None,
) -> None:
    """Emit `comet.video.<kind>` for a job, related to the current flow and task run.

    Args:
        kind: What happened: `created`, `completed`, `failed`, `persisted` or `abandoned`.
        job: The job as last seen.
        stored: The stored video, for `persisted`.
        error: Why it failed, for `failed` (the job's own error is used when omitted).
        flow_run_id: The flow run to relate when this code runs outside it (a hook in a worker).

    Example:
        ```python
        emit_video_event("created", job)
        emit_video_event("persisted", job, stored=stored)
        emit_video_event("failed", job, error=str(exc))
        ```
    """
    try:
        emit_event(
            event=f"{EVENT_PREFIX}.{kind}",
            resource={
                "prefect.resource.id": video_resource_id(job),
                "prefect.resource.name": short_prompt(job),
                "comet.provider": job.provider,
                "comet.task-id": job.task_id,
            },
            related=_run_resources(flow_run_id),
            payload=_payload(job, stored, error),
        )
    except Exception as failure:  # includes EventTooLarge, which emit_event re-raises
        warn("Could not emit %s.%s for task %s: %r", EVENT_PREFIX, kind, job.task_id, failure)


def _run_resources(flow_run_id: str | None = None) -> list[dict[str, str]]:
    """The current flow run and task run (or the given flow run) as related resources."""
    related: list[dict[str, str]] = []
    if flow_run_id is not None:
        return [{"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}]
    flow_run_context = FlowRunContext.get()
    task_run_context = TaskRunContext.get()
    flow_run = flow_run_context.flow_run if flow_run_context else None
    if flow_run is not None:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                "prefect.resource.role": "flow-run",
                "prefect.resource.name": flow_run.name,
            }
        )
    elif task_run_context and task_run_context.task_run.flow_run_id:
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{task_run_context.task_run.flow_run_id}",
                "prefect.resource.role": "flow-run",
            }
        )
    if task_run_context:
        task_run = task_run_context.task_run
        related.append(
            {
                "prefect.resource.id": f"prefect.task-run.{task_run.id}",
                "prefect.resource.role": "task-run",
                "prefect.resource.name": task_run.name,
            }
        )
    return related


def _payload(job: VideoJob, stored: StoredVideo | None, error: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": job.status.value,
        "raw_status": job.raw_status or None,
        "progress": job.progress,
        "model": job.model,
        "external_task_id": job.external_task_id,
        "idempotency_key": job.idempotency_key,
        "error": (error or job.error or "")[:MAX_ERROR_CHARS] or None,
        # The units the server deducted (Kling's final_unit_deduction), once it says so.
        "cost_units": job.cost_units if job.cost_units is not None else (stored.cost_units if stored else None),
    }
    if stored is not None:
        payload.update(
            uri=redact_url(stored.uri),
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            width=stored.width,
            height=stored.height,
            duration_seconds=stored.duration_seconds,
            codec=stored.codec,
            mismatches=stored.mismatches or None,
            extras=[redact_url(extra.uri) for extra in stored.extras] or None,
        )
    return {name: value for name, value in payload.items() if value is not None}
