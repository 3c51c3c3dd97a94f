"""How long finished jobs of each kind took, remembered in this process.

A job's kind is its provider, model and the request fields that change render time. The
wait uses the typical (median) duration of a kind as its finish estimate when the server
reports no progress, so it looks often only near the expected end.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from typing import Hashable

from prefect_comet.models import VideoJob

# Fields of a request summary (Omni form or Kling payload) that plausibly change render time.
_KIND_FIELDS = ("seconds", "duration", "mode", "size", "resolution", "aspect_ratio", "sound")
# Recent jobs only, so the estimate follows a server that gets faster or slower.
_KEEP = 20

_Kind = tuple[Hashable, ...]
_durations: dict[_Kind, deque[float]] = {}
_lock = threading.Lock()  # tasks of one batch may finish on different worker threads


def _kind_of(job: VideoJob) -> _Kind:
    fields = tuple(
        (name, str(job.request[name])) for name in _KIND_FIELDS if job.request.get(name) is not None
    )
    return (job.provider, job.model, fields)


def remember(job: VideoJob, local_elapsed: float) -> None:
    """Record how long a succeeded job took.

    Args:
        job: The succeeded job. With `created_at` and `completed_at` (or `updated_at`) its
            duration is measured on the server's clock, which also counts time before we looked.
        local_elapsed: Seconds we saw it run; used when the server's times are missing.

    Example:
        ```python
        remember(job, local_elapsed=118.5)
        ```
    """
    seconds = _server_duration(job)
    if seconds is None or seconds <= 0:
        seconds = local_elapsed
    if seconds <= 0:
        return
    with _lock:
        _durations.setdefault(_kind_of(job), deque(maxlen=_KEEP)).append(seconds)


def typical(job: VideoJob) -> float | None:
    """The median duration of recent finished jobs of `job`'s kind, or None if none finished yet.

    Example:
        ```python
        typical(job)  # 120.4
        ```
    """
    with _lock:
        seen = list(_durations.get(_kind_of(job), ()))
    return statistics.median(seen) if seen else None


def forget_all() -> None:
    """Forget every remembered duration (for tests)."""
    with _lock:
        _durations.clear()


def _server_duration(job: VideoJob) -> float | None:
    finished = job.completed_at or job.updated_at
    if job.created_at is None or finished is None:
        return None
    return (finished - job.created_at).total_seconds()
