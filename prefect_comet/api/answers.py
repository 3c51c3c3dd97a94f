"""Read values out of server answers without trusting them: ids, statuses, progress, times, costs.

Odd data never crashes a job: a value out of range or of the wrong type is dropped (None),
with a warning on the `prefect_comet.api` logger naming the field and the task id. Only an
implausible task id is refused, because it would steer URLs and file names.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prefect_comet.exceptions import ResponseFormatError
from prefect_comet.models import VideoStatus

_logger = logging.getLogger("prefect_comet.api")

# Ids we accept from a server: they become URL path segments and file names.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}")
# A query string in a value we show: signed URLs carry secrets there.
_QUERY = re.compile(r"\?[^\s'\"\])}]*")

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


def parse_progress(raw: Any, *, field: str = "progress", task_id: str | None = None) -> int | None:
    """Read `40`, `"40"` or `"40%"` as a percentage in 0-100; anything else is dropped.

    Args:
        raw: The value the server sent.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The whole percentage, or None when absent, not a number, not finite or outside 0-100.

    Example:
        ```python
        parse_progress("40%")  # 40
        parse_progress("inf", task_id="t1")  # None, and a warning
        ```
    """
    if isinstance(raw, str):
        raw = raw.strip().removesuffix("%").strip()
    value = _number(raw, field, task_id)
    if value is None:
        return None
    # A hair outside (100.4, -0.2) is rounding; further out says nothing true about the job.
    if not -1 < value < 101:
        return _dropped(raw, field, task_id)
    return max(0, min(100, int(value)))


def parse_timestamp(
    raw: Any, *, milliseconds: bool = False, field: str = "created_at", task_id: str | None = None
) -> datetime | None:
    """Read a unix timestamp (seconds, or milliseconds for Kling) as an aware datetime.

    Args:
        raw: The value the server sent: a number or a numeric string.
        milliseconds: Whether the value counts milliseconds (Kling) instead of seconds.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The time in UTC, or None when absent, not a number, not finite or beyond what a
        datetime holds (year 1-9999; e.g. milliseconds sent where seconds are expected).

    Example:
        ```python
        parse_timestamp(1722769557)  # 2024-08-04 11:05:57+00:00
        parse_timestamp(1e12, task_id="t1")  # None (year 33658), and a warning
        ```
    """
    value = _number(raw, field, task_id)
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(value / 1000 if milliseconds else value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return _dropped(raw, field, task_id)


def parse_seconds(raw: Any, *, field: str = "duration", task_id: str | None = None) -> float | None:
    """Read a length of time in seconds (`5`, `"5.0"`); negative or non-finite values are dropped.

    Args:
        raw: The value the server sent.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The seconds, or None when absent, not a number, not finite or negative.

    Example:
        ```python
        parse_seconds("5.0")  # 5.0
        ```
    """
    value = _number(raw, field, task_id)
    if value is not None and value < 0:
        return _dropped(raw, field, task_id)
    return value


def parse_units(raw: Any, *, field: str = "final_unit_deduction", task_id: str | None = None) -> float | None:
    """Read a cost in units (Kling sends `"1"`, `"0.5"`); negative or non-finite values are dropped.

    Args:
        raw: The value the server sent: a number or a numeric string.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The units, or None when absent, not a number, not finite or negative.

    Example:
        ```python
        parse_units("1.5")  # 1.5
        parse_units("free", task_id="t1")  # None, and a warning
        ```
    """
    return parse_seconds(raw.strip() if isinstance(raw, str) else raw, field=field, task_id=task_id)


def text_value(raw: Any, *, field: str, task_id: str | None = None) -> str | None:
    """A field that should be text (a model name, an id): text and plain numbers are kept.

    Args:
        raw: The value the server sent.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The text, or None when absent, empty or of another type (a list, an object, true).

    Example:
        ```python
        text_value("omni-fast", field="model")  # "omni-fast"
        text_value({}, field="model", task_id="t1")  # None, and a warning
        ```
    """
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return str(raw)
    return _dropped(raw, field, task_id)


def reason_text(raw: Any, *, field: str, task_id: str | None = None) -> str | None:
    """A failure reason: text, or an error object's `message` (else its `code`).

    Args:
        raw: The value the server sent, e.g. `"Image pixel is invalid"` or `{"code", "message"}`.
        field: The field's name, for the warning.
        task_id: The job's task id, for the warning.

    Returns:
        The reason, or None when absent or of a shape no reason can be read from.

    Example:
        ```python
        reason_text({"code": "x", "message": "Bad prompt"}, field="error")  # "Bad prompt"
        ```
    """
    if isinstance(raw, dict):
        for key in ("message", "code"):
            if found := text_value(raw.get(key), field=f"{field}.{key}", task_id=task_id):
                return found
        # An object of empty fields (`{"code": "", "message": ""}`) says nothing: no warning.
        said = any(value not in (None, "") for value in raw.values())
        return _dropped(raw, field, task_id) if said else None
    found = text_value(raw, field=field, task_id=task_id)
    return (found.strip() or None) if found else None


def _number(raw: Any, field: str, task_id: str | None) -> float | None:
    """A finite float from a number or a numeric string; None (warned unless absent) otherwise."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return _dropped(raw, field, task_id)
    try:
        value = float(raw)
    except (OverflowError, ValueError):
        return _dropped(raw, field, task_id)
    return value if math.isfinite(value) else _dropped(raw, field, task_id)


def _dropped(raw: Any, field: str, task_id: str | None) -> None:
    """Warn that `field` was unusable and drop it."""
    try:
        shown = _QUERY.sub("?…", repr(raw)[:200])
    except ValueError:  # an int too long to print
        shown = "…"
    if len(shown) > 80:
        shown = shown[:80] + "…"
    _logger.warning(
        "CometAPI answered an unusable %s for task %s (%s %s); ignoring it.",
        field, task_id or "(unknown)", type(raw).__name__, shown,
    )
    return None
