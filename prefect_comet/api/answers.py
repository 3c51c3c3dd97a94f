"""Read values out of server answers without trusting them: ids, statuses, progress, times."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prefect_comet.exceptions import ResponseFormatError
from prefect_comet.models import VideoStatus

# Ids we accept from a server: they become URL path segments and file names.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}")

# Status words of every family (Omni, OpenAI-style upper case, Kling native and wrapped).
_STATUS_WORDS: dict[str, VideoStatus] = {
    **dict.fromkeys(["queued", "submitted", "pending", "not_start"], VideoStatus.QUEUED),
    **dict.fromkeys(["in_progress", "processing", "running"], VideoStatus.RUNNING),
    **dict.fromkeys(["completed", "succeed", "succeeded", "success"], VideoStatus.SUCCEEDED),
    **dict.fromkeys(["failed", "failure", "error", "cancelled", "canceled"], VideoStatus.FAILED),
}


def checked_task_id(raw: Any) -> str:
    """A task id from the server, refused when it could steer a URL or a file path."""
    task_id = str(raw or "")
    if not _TASK_ID.fullmatch(task_id) or ".." in task_id:
        shown = task_id[:40].encode("unicode_escape").decode()
        raise ResponseFormatError(
            f"CometAPI answered an implausible task id {shown!r}; refusing to use it in paths. "
            "What to do: report this answer to CometAPI support."
        )
    return task_id


def task_path(route: str, task_id: str) -> str:
    """`route/<task id>` with the id quoted, so no id can climb out of the route."""
    return f"{route}/{quote(task_id, safe='')}"


def normalise_status(raw: Any) -> VideoStatus:
    """Map any family's status word to a `VideoStatus`, case-insensitively."""
    return _STATUS_WORDS.get(str(raw or "").strip().lower(), VideoStatus.UNKNOWN)


def parse_progress(raw: Any) -> int | None:
    """Read `40`, `"40"` or `"40%"` as a percentage in 0-100."""
    try:
        return max(0, min(100, int(float(str(raw).strip().rstrip("%")))))
    except (TypeError, ValueError):
        return None


def parse_timestamp(raw: Any, *, milliseconds: bool = False) -> datetime | None:
    """Read a unix timestamp (seconds, or milliseconds for Kling) as an aware datetime."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return datetime.fromtimestamp(value / 1000 if milliseconds else value, tz=UTC)
