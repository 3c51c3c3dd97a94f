"""Prefect artifacts for a video job: live progress, a summary of what was stored, a link.

Every function here swallows its own errors: an artifact is a view of a run, and trouble
writing it (server hiccup, odd prompt, unreadable poster) must never fail a paid generation.
Keys derive from the task id, so each job versions under its own keys in the Artifacts page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

import fsspec
from prefect.artifacts import (
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger

from prefect_comet._responses import redact_url
from prefect_comet.models import StoredVideo, VideoJob, VideoStatus

# Data URLs bloat the artifact row and the page; larger posters are left out.
MAX_INLINE_POSTER_BYTES = 60_000
MAX_KEY_SLUG_CHARS = 60
SHORT_PROMPT_CHARS = 80

_KEY_UNSAFE = re.compile(r"[^a-z0-9]+")
_KEY_LOSSLESS = re.compile(r"[a-z0-9_-]+")


def artifact_slug(task_id: str) -> str:
    """Turn a task id into the part of an artifact key that names the job.

    Prefect keys allow lowercase letters, numbers and dashes only. Ids that lose
    information on the way (upper case, other characters) get a short hash suffix so
    two jobs never share a key.

    Args:
        task_id: The server's task id.

    Returns:
        A key-safe slug, e.g. `task-8f2c` for `task_8f2c`.

    Example:
        ```python
        artifact_slug("task_8f2c")  # "task-8f2c"
        artifact_slug("Task/8F2C")  # "task-8f2c-1b0e5f3a"
        ```
    """
    slug = _KEY_UNSAFE.sub("-", task_id.lower()).strip("-")[:MAX_KEY_SLUG_CHARS].strip("-")
    if slug and _KEY_LOSSLESS.fullmatch(task_id) and len(task_id) <= MAX_KEY_SLUG_CHARS:
        return slug
    digest = hashlib.sha256(task_id.encode()).hexdigest()[:8]
    return f"{slug}-{digest}" if slug else f"task-{digest}"


def progress_key(job: VideoJob) -> str:
    """The progress artifact key of a job, e.g. `video-progress-task-8f2c`.

    Args:
        job: The job.

    Returns:
        The artifact key.

    Example:
        ```python
        progress_key(VideoJob(provider="omni", task_id="task_1"))  # "video-progress-task-1"
        ```
    """
    return f"video-progress-{artifact_slug(job.task_id)}"


def summary_key(task_id: str) -> str:
    """The summary artifact key of a job, e.g. `video-summary-task-8f2c`.

    Args:
        task_id: The server's task id.

    Returns:
        The artifact key.

    Example:
        ```python
        summary_key("task_1")  # "video-summary-task-1"
        ```
    """
    return f"video-summary-{artifact_slug(task_id)}"


def file_key(task_id: str) -> str:
    """The link artifact key of a job's stored file, e.g. `video-file-task-8f2c`.

    Args:
        task_id: The server's task id.

    Returns:
        The artifact key.

    Example:
        ```python
        file_key("task_1")  # "video-file-task-1"
        ```
    """
    return f"video-file-{artifact_slug(task_id)}"


def short_prompt(job: VideoJob, max_chars: int = SHORT_PROMPT_CHARS) -> str:
    """A one-line prompt of a job for titles and descriptions.

    Kling storyboards without a main prompt use their shots' prompts.

    Args:
        job: The job; its `request` holds the prompt as sent.
        max_chars: Longer prompts are cut and end in an ellipsis.

    Returns:
        The prompt on one line, or the task id when the request holds none.

    Example:
        ```python
        short_prompt(job)  # "Ocean waves rolling onto a sandy beach at golden hour"
        ```
    """
    prompt = job.request.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        shots = job.request.get("multi_prompt") or []
        prompt = " / ".join(
            str(shot.get("prompt")) for shot in shots if isinstance(shot, dict) and shot.get("prompt")
        )
    text = " ".join(str(prompt or "").split()) or job.task_id
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


async def start_progress(job: VideoJob) -> UUID | None:
    """Create the progress artifact of a job (shown on the run's Artifacts tab).

    Args:
        job: The job just created (its progress, usually 0 or None, is the start).

    Returns:
        The artifact id for `update_progress`, or None when it could not be created.

    Example:
        ```python
        artifact_id = await start_progress(job)
        ```
    """
    try:
        return await acreate_progress_artifact(
            progress=_percent(job),
            key=progress_key(job),
            description=(
                f"Generation progress of CometAPI {job.provider} task `{job.task_id}`: "
                f"{_inline(short_prompt(job))}"
            ),
        )
    except Exception as error:
        _warn("Could not create the progress artifact of task %s: %r", job.task_id, error)
        return None


async def update_progress(artifact_id: UUID | None, job: VideoJob) -> None:
    """Set a job's progress artifact to the job's progress (100 once it succeeded).

    Args:
        artifact_id: The id from `start_progress`; None does nothing.
        job: The job as last seen.

    Example:
        ```python
        await update_progress(artifact_id, seen_job)
        ```
    """
    if artifact_id is None:
        return
    try:
        await aupdate_progress_artifact(artifact_id=artifact_id, progress=_percent(job))
    except Exception as error:
        _warn("Could not update the progress artifact of task %s: %r", job.task_id, error)


# At most one progress update per job in this many seconds (finish() always sends).
MIN_UPDATE_SECONDS = 5.0


class LiveProgress:
    """Keeps a job's progress artifact current from a synchronous progress callback.

    `report()` may be called on every poll from sync code; the updates run in the
    background, in order, and only the newest pending value is sent. `finish()` waits
    for them and sets the final value.

    Example:
        ```python
        progress = await LiveProgress.start(job)
        job = await poll_until_terminal(client, job, timeout_seconds=600, on_update=progress.report)
        await progress.finish(job)  # 100 once succeeded
        ```
    """

    def __init__(self, artifact_id: UUID | None) -> None:
        """Follow the progress artifact `artifact_id` (None: every call does nothing).

        Args:
            artifact_id: The id from `start_progress`.
        """
        self.artifact_id = artifact_id
        self._pending: VideoJob | None = None
        self._sender: asyncio.Task[None] | None = None
        self._last_report = float("-inf")

    @classmethod
    async def start(cls, job: VideoJob) -> LiveProgress:
        """Create the job's progress artifact and follow it.

        Args:
            job: The job just created.

        Returns:
            The live progress (inert when the artifact could not be created).

        Example:
            ```python
            progress = await LiveProgress.start(job)
            ```
        """
        return cls(await start_progress(job))

    def report(self, job: VideoJob) -> None:
        """Send `job`'s progress soon; callable from sync code inside the event loop.

        Args:
            job: The job as last seen.

        Example:
            ```python
            progress.report(seen_job)
            ```
        """
        if self.artifact_id is None:
            return
        # Each update is a server write; a batch of hundreds of jobs must not flood it.
        now = time.monotonic()
        if now - self._last_report < MIN_UPDATE_SECONDS and (job.progress or 0) < 100:
            return
        self._last_report = now
        self._pending = job
        try:
            if self._sender is None or self._sender.done():
                self._sender = asyncio.get_running_loop().create_task(self._send_pending())
        except RuntimeError:  # no running loop: finish() sends the newest value
            pass

    async def finish(self, job: VideoJob) -> None:
        """Wait for reported updates, then set the final progress (100 when succeeded).

        Args:
            job: The job as last seen.

        Example:
            ```python
            await progress.finish(job)
            ```
        """
        if self.artifact_id is None:
            return
        self._pending = job
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.shield(sender)
        await self._send_pending()

    async def _send_pending(self) -> None:
        while self._pending is not None:
            job, self._pending = self._pending, None
            await update_progress(self.artifact_id, job)


async def publish_video(stored: StoredVideo, job: VideoJob) -> None:
    """Publish a stored video: a markdown summary and a link to the file.

    The summary shows the prompt, model, ids, what was requested next to what the file
    is (frame, duration, codec, fps, size, SHA-256), timings, further files (watermarked
    copies) and the first-frame poster; a **MISMATCH** line lists every difference.

    Args:
        stored: The stored video, as returned by `persist_video`.
        job: The succeeded job it came from.

    Example:
        ```python
        stored = await persist_video(job, "./videos")
        await publish_video(stored, job)
        ```
    """
    try:
        await acreate_markdown_artifact(
            markdown=summary_markdown(stored, job, poster=_read_poster(stored.poster_uri)),
            key=summary_key(stored.task_id),
            description=f"Stored video of {job.provider} task `{stored.task_id}`",
        )
    except Exception as error:
        _warn("Could not create the summary artifact of task %s: %r", stored.task_id, error)
    try:
        await acreate_link_artifact(
            link=_link_target(stored.uri),
            link_text=redact_url(stored.uri),
            key=file_key(stored.task_id),
            description=f"The stored MP4 of {job.provider} task `{stored.task_id}`",
        )
    except Exception as error:
        _warn("Could not create the file link artifact of task %s: %r", stored.task_id, error)


def summary_markdown(stored: StoredVideo, job: VideoJob, *, poster: bytes | None = None) -> str:
    """The markdown of a stored video's summary artifact.

    Args:
        stored: The stored video.
        job: The job it came from.
        poster: A JPEG to show inline, or None.

    Returns:
        Markdown text.

    Example:
        ```python
        print(summary_markdown(stored, job))
        ```
    """
    request = job.request
    lines = [f"## Video `{_code(stored.task_id)}`", ""]
    mismatches = _all_mismatches(stored)
    if mismatches:
        lines += ["> ⚠️ **MISMATCH**: the file is not what was requested.", ">"]
        lines += [f"> - {_inline(mismatch)}" for mismatch in mismatches]
        lines.append("")
    if poster:
        lines += [f"![poster](data:image/jpeg;base64,{base64.b64encode(poster).decode()})", ""]
    lines += [
        f"- **Prompt**: {_inline(short_prompt(job, max_chars=500))}",
        f"- **Model**: {_inline(stored.model or job.model or 'unknown')}",
        f"- **Task id**: `{_code(stored.task_id)}`",
        f"- **Provider**: {_inline(stored.provider)}",
    ]
    if stored.external_task_id:
        lines.append(f"- **External task id**: `{_code(stored.external_task_id)}`")
    lines += [
        f"- **Storage**: `{_code(redact_url(stored.uri))}`",
        "",
        "### Requested vs observed",
        "",
        "| | requested | observed |",
        "|---|---|---|",
        f"| Frame | {_cell(_requested_frame(request))} | {_frame(stored)} |",
        f"| Duration | {_cell(_requested_duration(request))} | {_seconds(stored.duration_seconds)} |",
        f"| Codec / fps | | {_cell(stored.codec or 'not measured')} / {_fps(stored.fps)} |",
        f"| Size | | {_size(stored.size_bytes)} |",
        f"| SHA-256 | | `{stored.sha256}` |",
        "",
        "### Timings",
        "",
        "| created | completed | generation |",
        "|---|---|---|",
        f"| {_time(job.created_at)} | {_time(job.completed_at)} | {_elapsed(job)} |",
    ]
    if stored.extras:
        lines += [
            "",
            "### Further files",
            "",
            "| file | watermarked | frame | duration | size | SHA-256 |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{_code(redact_url(extra.uri)).replace('|', '%7C')}` | {'yes' if extra.watermarked else 'no'} | "
            f"{_frame(extra)} | {_seconds(extra.duration_seconds)} | {_size(extra.size_bytes)} | "
            f"`{extra.sha256}` |"
            for extra in stored.extras
        ]
    if stored.metadata_uri:
        lines += ["", f"Sidecar: `{_code(redact_url(stored.metadata_uri))}`"]
    return "\n".join(lines) + "\n"


def _percent(job: VideoJob) -> float:
    if job.status is VideoStatus.SUCCEEDED:
        return 100.0
    return float(min(max(job.progress or 0, 0), 100))


def _all_mismatches(stored: StoredVideo) -> list[str]:
    found = list(stored.mismatches)
    for extra in stored.extras:
        name = Path(redact_url(extra.uri)).name
        found += [f"{name}: {mismatch}" for mismatch in extra.mismatches]
    return found


def _requested_frame(request: dict[str, object]) -> str:
    parts = [str(request[field]) for field in ("aspect_ratio", "resolution") if request.get(field)]
    return ", ".join(parts) or "not set"


def _requested_duration(request: dict[str, object]) -> str:
    seconds = request.get("seconds") or request.get("duration")
    return f"{seconds} s" if seconds else "not set"


def _frame(stored: StoredVideo) -> str:
    if stored.width is None or stored.height is None:
        return "not measured"
    return f"{stored.width}x{stored.height}"


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:g} s"


def _fps(value: float | None) -> str:
    return "not measured" if value is None else f"{value:g} fps"


def _size(size_bytes: int) -> str:
    megabytes = size_bytes / 1_000_000
    return f"{megabytes:.2f} MB ({size_bytes:,} bytes)" if megabytes >= 0.01 else f"{size_bytes:,} bytes"


def _time(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "?"


def _elapsed(job: VideoJob) -> str:
    if job.created_at is None or job.completed_at is None:
        return "?"
    return f"{(job.completed_at - job.created_at).total_seconds():g} s"


def _link_target(uri: str) -> str:
    """Where the link artifact points: a `file://` URL for local files, the URI otherwise."""
    public = redact_url(uri)
    if "://" in public:
        return public
    return Path(public).resolve().as_uri()


def _read_poster(poster_uri: str | None) -> bytes | None:
    if not poster_uri:
        return None
    try:
        with fsspec.open(poster_uri, "rb") as file:
            data = file.read(MAX_INLINE_POSTER_BYTES + 1)
    except Exception as error:
        _warn("Could not read the poster %s: %r", redact_url(poster_uri), error)
        return None
    return data if data and len(data) <= MAX_INLINE_POSTER_BYTES else None


def _inline(text: str) -> str:
    """Text safe inside a markdown line: no HTML, no line breaks."""
    return " ".join(text.split()).replace("<", "&lt;").replace(">", "&gt;")


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return _inline(text).replace("|", "\\|")


def _code(text: str) -> str:
    """Text safe inside a single-backtick code span."""
    return " ".join(text.split()).replace("`", "'")


def _warn(message: str, *args: object) -> None:
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger]
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = get_logger("prefect_comet.artifacts")
    try:
        logger.warning(message, *args)
    except Exception:  # not even logging may fail a run
        pass
