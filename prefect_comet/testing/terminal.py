"""The terminal runner of the pipelines in `flows/`: an optional local emulator, a progress bar, a report."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from prefect_comet.models import BatchResult, StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.ui.progress import watch_progress

T = TypeVar("T")
# The emulator's jobs end in seconds: look often. Against CometAPI the flows' own cadence holds.
EMULATOR_POLL_SECONDS = 0.25
API_POLL_SECONDS = 2.0


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every runnable pipeline takes: where to store, which key, which API."""
    parser.add_argument("--destination", default=DEFAULT_DESTINATION)
    parser.add_argument("--ledger", help="the job ledger's folder (default: beside the videos)")
    parser.add_argument("--block", help="name of a saved CometAPI Credentials block")
    parser.add_argument("--emulator", action="store_true", help="run against a local emulator")
    parser.add_argument("--latency", type=float, default=3.0, help="emulated generation seconds")


def run_pipeline(
    start: Callable[[float], Awaitable[StoredVideo]], *, emulator: bool, latency: float = 3.0
) -> StoredVideo:
    """Run `start(poll_interval_seconds)` with a progress bar, against an emulator if asked.

    With `emulator=True` a local CometAPI emulator serves the run; COMETAPI_BASE_URL and
    COMETAPI_KEY point at it for the run's duration. Prints where the video went.
    """
    stored = run_with_progress(start, emulator=emulator, latency=latency)
    report(stored)
    return stored


def run_with_progress(
    start: Callable[[float], Awaitable[T]], *, emulator: bool, latency: float = 3.0, jobs: int = 1
) -> T:
    """Run `start(poll_interval_seconds)` with one progress bar over `jobs` jobs; return its result.

    With `emulator=True` a local CometAPI emulator serves the run (see `emulated_api`).

    Example:
        ```python
        result = run_with_progress(lambda poll: generate_videos(requests, poll_interval_seconds=poll),
                                   emulator=True, jobs=len(requests))
        ```
    """
    with ExitStack() as stack:
        poll_interval = API_POLL_SECONDS
        if emulator:
            stack.enter_context(emulated_api(latency))
            poll_interval = EMULATOR_POLL_SECONDS
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
            )
        )
        bar = progress.add_task("generating", total=100 * jobs)
        percent: dict[str, int] = {}  # task id -> its progress; 100 once it ended

        def show(job: VideoJob) -> None:
            percent[job.task_id] = 100 if job.status.is_terminal else min(max(job.progress or 0, 0), 100)
            if jobs == 1:
                description = f"{job.task_id} {job.raw_status}"
            else:
                ended = sum(value == 100 for value in percent.values())
                description = f"{ended} of {jobs} jobs generated"
            progress.update(bar, completed=sum(percent.values()), description=description)

        stack.enter_context(watch_progress(show))
        result = asyncio.run(start(poll_interval))
        progress.update(bar, completed=100 * jobs)
    return result


@contextmanager
def emulated_api(latency: float = 3.0) -> Iterator[str]:
    """Serve a local CometAPI emulator and point COMETAPI_BASE_URL and COMETAPI_KEY at it.

    Both variables get their earlier values back when the block ends.

    Example:
        ```python
        with emulated_api(latency=1.0) as base_url:
            asyncio.run(my_flow())
        ```
    """
    from prefect_comet.testing.emulator import CometEmulator

    earlier = {name: os.environ.get(name) for name in ("COMETAPI_BASE_URL", "COMETAPI_QUERY_BASE_URL", "COMETAPI_KEY")}
    with CometEmulator(latency=latency) as emulator:
        os.environ["COMETAPI_BASE_URL"] = emulator.base_url
        os.environ["COMETAPI_QUERY_BASE_URL"] = emulator.base_url  # it serves the balance too
        os.environ["COMETAPI_KEY"] = "sk-emulator"
        print(f"CometAPI emulator at {emulator.base_url}")
        try:
            yield emulator.base_url
        finally:
            for name, value in earlier.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def report(stored: StoredVideo) -> None:
    """Print where each stored file went and what it is."""
    for video in [stored, *stored.extras]:
        label = "watermarked copy" if video.watermarked else "video"
        print(f"Stored {label}: {video.uri}")
        print(f"  frame {video.width}x{video.height}, {video.duration_seconds} s, {video.size_bytes} bytes")
        print(f"  sha256 {video.sha256}")
    print(f"Sidecar: {stored.metadata_uri}")


def report_batch(result: BatchResult) -> None:
    """Print one line per request (its index, `stored` or `failed`, where or why) and the manifest."""
    for outcome in result.outcomes:
        where = outcome.stored.uri if outcome.stored else " ".join(f"{outcome.error_type}: {outcome.error}".split())
        print(f"{outcome.index:>4} {outcome.status:<7} {where}")
    print(f"Manifest: {result.manifest_uri}")
