"""What flows pass around: a job on the server, a video in storage, the outcomes of a batch."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field


class VideoStatus(str, Enum):
    """A job's state, the same words for every API family."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        """True when the job will not change any more."""
        return self in (VideoStatus.SUCCEEDED, VideoStatus.FAILED)


class VideoOutput(BaseModel):
    """One file a finished job offers. The URL is kept without its signed query string.

    Args:
        video_id: The provider's id of this video, when it has one.
        url: The result URL without query string (signatures are secrets).
        watermarked: Whether this is the watermarked copy.
        duration_seconds: The duration the provider reports.
    """

    model_config = ConfigDict(frozen=True)

    video_id: str | None = None
    url: str | None = None
    watermarked: bool = False
    duration_seconds: float | None = None


class VideoJob(BaseModel):
    """A generation job on the server, as last seen.

    Args:
        provider: The API family, `omni` or `kling`.
        task_id: The server's task id; with it a job can always be resumed.
        status: The normalised status.
        raw_status: The status word the server used.
        progress: Progress in percent, when the server reports it.
        model: The model that renders the job.
        created_at: When the server created the job.
        updated_at: When the server last changed the job.
        completed_at: When the job finished.
        outputs: The result files (URLs without their signatures).
        error: The server's failure reason.
        external_task_id: The user-defined task id (Kling).
        idempotency_key: The key the job was created under.
        request: The request that created the job, as sent (images summarised).
        cost_units: The units the server says it deducted for the job (Kling's
            `final_unit_deduction`), when it says so; None when it does not.

    Example:
        ```python
        job = await create_video(OmniVideoRequest(prompt="A red kite"))
        print(job.task_id, job.status)
        ```
    """

    provider: str
    task_id: str
    status: VideoStatus = VideoStatus.QUEUED
    raw_status: str = ""
    progress: int | None = None
    model: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    outputs: list[VideoOutput] = Field(default_factory=list)
    error: str | None = None
    external_task_id: str | None = None
    idempotency_key: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    cost_units: float | None = None

    @property
    def result_urls(self) -> list[str]:
        """The result URLs, without their signed query strings."""
        return [output.url for output in self.outputs if output.url]


class StoredVideo(BaseModel):
    """A verified video in the user's storage.

    Args:
        uri: Where the MP4 is (an fsspec URL or local path).
        sha256: Hex SHA-256 of the stored bytes.
        size_bytes: Size of the stored file.
        task_id: The server's task id.
        provider: The API family.
        model: The model that rendered it.
        width: Frame width read from the file (None without the `media` extra).
        height: Frame height read from the file.
        duration_seconds: Duration read from the file.
        metadata_uri: Where the JSON sidecar is.
        codec: The video codec read from the file, e.g. `h264`.
        fps: Average frames per second read from the file.
        poster_uri: Where a small JPEG of the first frame is.
        mismatches: How the file differs from the request (frame shape, size, duration).
        video_id: The provider's id of this video, when it has one.
        watermarked: Whether this is the watermarked copy.
        external_task_id: The user-defined task id (Kling).
        extras: Further files of the same job (more videos, watermarked copies).
        cost_units: The units the server deducted for the job (Kling's `final_unit_deduction`),
            when it said so.

    Example:
        ```python
        stored = generate_video(OmniVideoRequest(prompt="A red kite"), destination="s3://bucket/videos")
        print(stored.uri, stored.width, stored.height, stored.sha256)
        ```
    """

    uri: str
    sha256: str
    size_bytes: int
    task_id: str
    provider: str
    model: str | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    metadata_uri: str | None = None
    codec: str | None = None
    fps: float | None = None
    poster_uri: str | None = None
    mismatches: list[str] = Field(default_factory=list)
    video_id: str | None = None
    watermarked: bool = False
    external_task_id: str | None = None
    extras: list[StoredVideo] = Field(default_factory=list)
    cost_units: float | None = None


class JobOutcome(BaseModel):
    """What became of one request of a batch (a manifest line).

    Args:
        index: The request's position in the batch.
        idempotency_key: The key its job was created under.
        provider: The API family.
        prompt: The request's prompt, if it has one.
        status: `stored`, `failed`, or `skipped` (not created: the budget was reached).
        stored: The stored video, when stored.
        error_type: The exception's class name, when failed (or skipped).
        error: The exception's message, when failed; why it was skipped, when skipped.
    """

    index: int
    idempotency_key: str
    provider: str
    prompt: str | None = None
    status: Literal["stored", "failed", "skipped"]
    stored: StoredVideo | None = None
    error_type: str | None = None
    error: str | None = None

    @computed_field  # written into each manifest line
    @property
    def cost_units(self) -> float | None:
        """The units the server deducted for this job, when it was stored and the server said so."""
        return self.stored.cost_units if self.stored is not None else None


class BatchResult(BaseModel):
    """Every job's outcome and where the manifest was written.

    Args:
        manifest_uri: The JSONL manifest of every outcome.
        outcomes: One outcome per request, in order.
        spent_usd: What the batch spent in USD, when it is known.
        balance_before_usd: The account's balance before the first create, when it was read.
        balance_after_usd: The account's balance after the last job, when it was read.

    Example:
        ```python
        result = await generate_videos("s3://bucket/prompts.jsonl", "s3://bucket/videos")
        print(result.stored_count, "stored;", result.failed_count, "failed; see", result.manifest_uri)
        ```
    """

    manifest_uri: str
    outcomes: list[JobOutcome]
    spent_usd: float | None = None
    balance_before_usd: float | None = None
    balance_after_usd: float | None = None

    @property
    def stored_count(self) -> int:
        """How many jobs were stored."""
        return sum(outcome.status == "stored" for outcome in self.outcomes)

    @property
    def failed_count(self) -> int:
        """How many jobs failed."""
        return sum(outcome.status == "failed" for outcome in self.outcomes)


    @property
    def skipped_count(self) -> int:
        """How many jobs were not created because the budget was reached."""
        return sum(outcome.status == "skipped" for outcome in self.outcomes)

    @property
    def cost_units(self) -> float | None:
        """The units the server deducted for the stored jobs, or None when it reported none."""
        units = [outcome.cost_units for outcome in self.outcomes if outcome.cost_units is not None]
        return sum(units) if units else None
