"""How long finished jobs of each kind took, remembered on this machine.

A job's kind is its provider, model and the request fields that change render time. The
wait uses the typical (median) duration of a kind as its finish estimate when the server
reports no progress, so it looks often only near the expected end.

The durations also live in `comet-durations.json` under PREFECT_HOME: each run of a
deployment is a new process, and without the file every run would start knowing nothing.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections import deque
from pathlib import Path

import fsspec
from prefect.logging import get_logger

from prefect_comet._files import write_atomically
from prefect_comet.models import VideoJob

# Fields of a request summary (Omni form or Kling payload) that plausibly change render time.
_KIND_FIELDS = ("seconds", "duration", "mode", "size", "resolution", "aspect_ratio", "sound")
# Recent jobs only, so the estimate follows a server that gets faster or slower.
_KEEP = 20
FILE_NAME = "comet-durations.json"
# No generation takes a day; a longer server duration means odd timestamps, not a slow job.
_MAX_PLAUSIBLE_SECONDS = 86_400.0
# A batch finishes many jobs of one kind within seconds: write the first, then at most this often.
_SAVE_EVERY_SECONDS = 30.0

_durations: dict[str, deque[float]] = {}
_lock = threading.Lock()  # tasks of one batch may finish on different worker threads
_loaded_from: Path | None = None
_last_saved = 0.0
_logger = get_logger("prefect_comet.durations")


def _kind_of(job: VideoJob) -> str:
    fields = [[name, str(job.request[name])] for name in _KIND_FIELDS if job.request.get(name) is not None]
    return json.dumps([job.provider, job.model, fields])


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
    global _last_saved
    seconds = _server_duration(job)
    if seconds is None or seconds <= 0:
        seconds = local_elapsed
    if seconds <= 0:
        return
    kind = _kind_of(job)
    with _lock:
        _load()
        first_of_kind = kind not in _durations
        _durations.setdefault(kind, deque(maxlen=_KEEP)).append(seconds)
        if first_of_kind or time.monotonic() - _last_saved >= _SAVE_EVERY_SECONDS:
            _save()
            _last_saved = time.monotonic()


def typical(job: VideoJob) -> float | None:
    """The median duration of recent finished jobs of `job`'s kind, or None if none finished yet.

    Example:
        ```python
        typical(job)  # 120.4
        ```
    """
    with _lock:
        _load()
        seen = list(_durations.get(_kind_of(job), ()))
    return statistics.median(seen) if seen else None


def forget_all() -> None:
    """Forget every remembered duration, in this process and on disk (for tests)."""
    global _loaded_from
    with _lock:
        _durations.clear()
        _loaded_from = None
        _file().unlink(missing_ok=True)


def _file() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / FILE_NAME


def _read(path: Path) -> dict[str, list[float]]:
    # An estimate is a convenience: a missing or damaged file means "nothing learned yet".
    try:
        kinds = json.loads(path.read_text())["kinds"]
        return {str(kind): [value for value in map(float, seconds) if value > 0] for kind, seconds in kinds.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        _logger.warning("Ignoring the learned durations in %s: %r", path, error)
        return {}


def _load() -> None:
    """Seed memory from the file once per PREFECT_HOME (tests switch it)."""
    global _loaded_from
    path = _file()
    if _loaded_from == path:
        return
    _loaded_from = path
    for kind, seconds in _read(path).items():
        _durations.setdefault(kind, deque(maxlen=_KEEP)).extend(seconds)


def _save() -> None:
    path = _file()
    # Keep kinds that other processes learned; for ours, memory already holds the file's.
    merged = {**_read(path), **{kind: list(seconds) for kind, seconds in _durations.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(fsspec.filesystem("file"), str(path), json.dumps({"kinds": merged}).encode())
    except OSError as error:
        _logger.warning("Could not save the learned durations to %s: %r", path, error)


def _server_duration(job: VideoJob) -> float | None:
    finished = job.completed_at or job.updated_at
    if job.created_at is None or finished is None:
        return None
    seconds = (finished - job.created_at).total_seconds()
    # A server clock gone odd (a created_at of -1, say) must not teach us a 56-year render.
    return seconds if 0 < seconds <= _MAX_PLAUSIBLE_SECONDS else None
