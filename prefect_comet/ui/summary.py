"""Where the summary artifact is written: a stored video's summary, its link, the batch table.

Every function here swallows its own errors: an artifact is a view of a run, and trouble
writing it (server hiccup, odd prompt, unreadable poster) must never fail a paid generation.
Keys derive from the task id, so each job versions under its own keys in the Artifacts page.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

from prefect.artifacts import acreate_link_artifact, acreate_markdown_artifact, acreate_table_artifact

from prefect_comet._files import open_url, redact_url
from prefect_comet.models import BatchResult, StoredVideo, VideoJob
from prefect_comet.ui._quiet import warn
from prefect_comet.ui.labels import artifact_key, markdown_line, short_prompt

# Data URLs bloat the artifact row and the page; larger posters are left out.
MAX_INLINE_POSTER_BYTES = 60_000


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
            key=artifact_key("summary", stored.task_id),
            description=f"Stored video of {job.provider} task `{stored.task_id}`",
        )
    except Exception as error:
        warn("Could not create the summary artifact of task %s: %r", stored.task_id, error)
    try:
        await acreate_link_artifact(
            link=_link_target(stored.uri),
            link_text=redact_url(stored.uri),
            key=artifact_key("file", stored.task_id),
            description=f"The stored MP4 of {job.provider} task `{stored.task_id}`",
        )
    except Exception as error:
        warn("Could not create the file link artifact of task %s: %r", stored.task_id, error)


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
        lines += [f"> - {markdown_line(mismatch)}" for mismatch in mismatches]
        lines.append("")
    if poster:
        lines += [f"![poster](data:image/jpeg;base64,{base64.b64encode(poster).decode()})", ""]
    lines += [
        f"- **Prompt**: {markdown_line(short_prompt(job, max_chars=500))}",
        f"- **Model**: {markdown_line(stored.model or job.model or 'unknown')}",
        f"- **Task id**: `{_code(stored.task_id)}`",
        f"- **Provider**: {markdown_line(stored.provider)}",
    ]
    if stored.external_task_id:
        lines.append(f"- **External task id**: `{_code(stored.external_task_id)}`")
    lines.append(f"- **Cost**: {_units(_cost_units(stored, job))}")
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


async def publish_batch_table(result: BatchResult) -> None:
    """Publish a batch's outcomes: the `video-batch` table, one row per job, and the
    `video-batch-cost` markdown summary (counts, units, spend, balance before and after).

    Args:
        result: The batch's outcomes and manifest.

    Example:
        ```python
        await publish_batch_table(result)
        ```
    """
    rows = [
        {
            "#": outcome.index,
            "status": outcome.status,
            "prompt": (outcome.prompt or "")[:60],
            "task id": outcome.stored.task_id if outcome.stored else "",
            "uri": outcome.stored.uri if outcome.stored else "",
            "units": "" if outcome.cost_units is None else f"{outcome.cost_units:g}",
            "mismatch": "; ".join(outcome.stored.mismatches) if outcome.stored else "",
            "error": (outcome.error or "")[:120],
        }
        for outcome in result.outcomes
    ]
    try:
        await acreate_table_artifact(table=rows, key="video-batch", description=f"Manifest: {result.manifest_uri}")
    except Exception as error:  # artifact trouble never fails a batch
        warn("Could not publish the batch table artifact: %s", error)
    try:
        await acreate_markdown_artifact(
            markdown=batch_cost_markdown(result),
            key="video-batch-cost",
            description="What the batch did and spent",
        )
    except Exception as error:
        warn("Could not publish the batch cost summary artifact: %s", error)


def batch_cost_markdown(result: BatchResult) -> str:
    """The markdown of a batch's final summary: jobs, stored, failed, skipped, units, spend, balance.

    A figure the batch does not know (no units reported, no balance read) shows as `unknown`.

    Args:
        result: The batch's outcomes, with `spent_usd` and the balance before and after when known.

    Returns:
        Markdown text.

    Example:
        ```python
        print(batch_cost_markdown(result))
        ```
    """
    rows = [
        ("Jobs", str(len(result.outcomes))),
        ("Stored", str(result.stored_count)),
        ("Failed", str(result.failed_count)),
        ("Skipped (budget reached)", str(result.skipped_count)),
        ("Units deducted", _units(result.cost_units)),
        ("Spent", _usd(result.spent_usd)),
        ("Balance before", _usd(result.balance_before_usd)),
        ("Balance after", _usd(result.balance_after_usd)),
    ]
    lines = ["## Video batch", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines += ["", f"Manifest: `{_code(redact_url(result.manifest_uri))}`"]
    return "\n".join(lines) + "\n"


def _cost_units(stored: StoredVideo, job: VideoJob) -> float | None:
    return stored.cost_units if stored.cost_units is not None else job.cost_units


def _units(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g} units"


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} USD"


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
        with open_url(poster_uri, "rb") as file:
            data = file.read(MAX_INLINE_POSTER_BYTES + 1)
    except Exception as error:
        warn("Could not read the poster %s: %r", redact_url(poster_uri), error)
        return None
    return data if data and len(data) <= MAX_INLINE_POSTER_BYTES else None


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return markdown_line(text).replace("|", "\\|")


def _code(text: str) -> str:
    """Text safe inside a single-backtick code span."""
    return " ".join(text.split()).replace("`", "'")
