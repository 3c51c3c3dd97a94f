"""The terminal runner of the pipelines in `flows/`: an optional local emulator, a progress bar, a report."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.ui.progress import watch_progress


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
    COMETAPI_KEY point at it for the run's duration.
    """
    with ExitStack() as stack:
        poll_interval = 2.0
        if emulator:
            stack.enter_context(emulated_api(latency))
            poll_interval = 0.25
        progress = stack.enter_context(
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
            )
        )
        bar = progress.add_task("generating", total=100)

        def show(job: VideoJob) -> None:
            progress.update(bar, completed=job.progress or 0, description=f"{job.task_id} {job.raw_status}")

        stack.enter_context(watch_progress(show))
        stored = asyncio.run(start(poll_interval))
        progress.update(bar, completed=100)
    report(stored)
    return stored


@contextmanager
def emulated_api(latency: float = 3.0) -> Iterator[str]:
    """Serve a local CometAPI emulator and point COMETAPI_BASE_URL and COMETAPI_KEY at it.

    Example:
        ```python
        with emulated_api(latency=1.0) as base_url:
            asyncio.run(my_flow())
        ```
    """
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(latency=latency) as emulator:
        os.environ["COMETAPI_BASE_URL"] = emulator.base_url
        os.environ["COMETAPI_KEY"] = "sk-emulator"
        print(f"CometAPI emulator at {emulator.base_url}")
        yield emulator.base_url


def report(stored: StoredVideo) -> None:
    """Print where each stored file went and what it is."""
    for video in [stored, *stored.extras]:
        label = "watermarked copy" if video.watermarked else "video"
        print(f"Stored {label}: {video.uri}")
        print(f"  frame {video.width}x{video.height}, {video.duration_seconds} s, {video.size_bytes} bytes")
        print(f"  sha256 {video.sha256}")
    print(f"Sidecar: {stored.metadata_uri}")
