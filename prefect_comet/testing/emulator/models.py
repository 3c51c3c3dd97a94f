"""Plain data records the emulator keeps about jobs and requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Provider = Literal["omni", "kling"]
# What a job will do, chosen from prompt markers at create time.
Outcome = Literal["succeed", "fail", "hang", "unknown"]

FAIL_MESSAGE = "Emulated generation failure (prompt asked for [fail])"


@dataclass
class EmulatedVideo:
    """One rendered result file (and its optional watermarked copy) on disk."""

    video_id: str
    path: str
    sha256: str
    size: int
    watermark_path: str | None = None
    watermark_sha256: str | None = None


@dataclass
class EmulatedJob:
    """A generation task as the emulator tracks it."""

    task_id: str
    provider: Provider
    request: dict[str, Any]
    created_at: float
    idempotency_key: str | None
    width: int
    height: int
    duration_seconds: float
    videos: list[EmulatedVideo] = field(default_factory=list)
    outcome: Outcome = "succeed"
    watermark: bool = False
    external_task_id: str | None = None
    ready_at: float | None = None  # when the result files finished rendering
    failure: str | None = None  # set when rendering itself failed


@dataclass
class RecordedRequest:
    """A request as received (the Authorization header is redacted)."""

    method: str
    path: str
    route: str | None
    headers: dict[str, str]
    query: str = ""
    fault: str | None = None  # fault kind injected into this request, if any
    time: float = 0.0  # unix time when the request was received
    body: bytes = b""  # kept for JSON bodies only, so tests can see what a client sent


def outcome_for(prompt: str) -> Outcome:
    """Read the behaviour markers a prompt may carry."""
    if "[fail]" in prompt:
        return "fail"
    if "[hang]" in prompt:
        return "hang"
    if "[unknown]" in prompt:
        return "unknown"
    return "succeed"
