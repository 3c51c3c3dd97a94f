"""The small interface every API family implements."""

from __future__ import annotations

import re
from urllib.parse import quote
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel

from prefect_comet.client import CometClient
from prefect_comet.exceptions import ResponseFormatError
from prefect_comet.models import VideoJob, VideoOutput, VideoStatus

# Ids we accept from a server: they become URL path segments and file names.
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=+-]{0,127}")

# Status words of every family (Omni, OpenAI-style upper case, Kling native and wrapped).
_STATUS_WORDS: dict[str, VideoStatus] = {
    **dict.fromkeys(["queued", "submitted", "pending", "not_start"], VideoStatus.QUEUED),
    **dict.fromkeys(["in_progress", "processing", "running"], VideoStatus.RUNNING),
    **dict.fromkeys(["completed", "succeed", "succeeded", "success"], VideoStatus.SUCCEEDED),
    **dict.fromkeys(["failed", "failure", "error", "cancelled", "canceled"], VideoStatus.FAILED),
}


class DownloadSource(NamedTuple):
    """Where one result file can be fetched: candidate URLs, best first (they may be signed)."""

    urls: list[str]
    output: VideoOutput


class VideoProvider(ABC):
    """One API family: how to create, look at and download its jobs.

    A new family is one module with a request model and a subclass of this, added to
    `prefect_comet.providers.PROVIDERS`.
    """

    name: ClassVar[str]
    request_type: ClassVar[type[BaseModel]]
    can_find_by_key: ClassVar[bool] = False

    @abstractmethod
    async def create(
        self, client: CometClient, request: Any, *, idempotency_key: str | None
    ) -> VideoJob:
        """Send the create request once; return the new job."""

    @abstractmethod
    async def retrieve(self, client: CometClient, task_id: str) -> tuple[VideoJob, float | None]:
        """Look the job up; return it and the server's poll hint in seconds, if any."""

    @abstractmethod
    async def download_sources(self, client: CometClient, job: VideoJob) -> list[DownloadSource]:
        """Fresh download URLs of every result file (signed URLs expire, so ask anew)."""

    async def find_by_key(self, client: CometClient, idempotency_key: str) -> VideoJob | None:
        """Find a job by the key it was created under, where the API allows it."""
        return None

    def summarise(self, request: Any) -> dict[str, Any]:
        """The request as recorded in sidecars, ledgers and results (no bulky inline data)."""
        return request.model_dump(mode="json")


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
    return datetime.fromtimestamp(value / 1000 if milliseconds else value, tz=timezone.utc)
