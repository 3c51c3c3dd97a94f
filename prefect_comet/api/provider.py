"""The small interface every API family implements: create, retrieve, download sources."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NamedTuple, TypeAlias

from pydantic import BaseModel

from prefect_comet.api.client import CometClient, OnRefused
from prefect_comet.models import VideoJob, VideoOutput

# A candidate URL found only when the ones before it fail (None: there is none).
LaterURL: TypeAlias = Callable[[], Awaitable[str | None]]


class DownloadSource(NamedTuple):
    """Where one result file can be fetched: candidate URLs, best first (they may be signed)."""

    urls: list[str | LaterURL]
    output: VideoOutput


class VideoProvider(ABC):
    """One API family: how to create, look at and download its jobs.

    A new family is one module with a request model and a subclass of this, added to
    `prefect_comet.api.families.PROVIDERS`.
    """

    name: ClassVar[str]
    request_type: ClassVar[type[BaseModel]]
    can_find_by_key: ClassVar[bool] = False

    @abstractmethod
    async def create(
        self,
        client: CometClient,
        request: Any,
        *,
        idempotency_key: str | None,
        on_refused: OnRefused | None = None,
    ) -> VideoJob:
        """Send the create request once (a 429 is asked of `on_refused`); return the new job."""

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
