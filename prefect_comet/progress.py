"""Let a program watch generation progress, e.g. to drive a terminal progress bar."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from prefect_comet.models import VideoJob

ProgressCallback = Callable[[VideoJob], None]
# Process-wide rather than a context variable: Prefect may run a task in another thread.
_callbacks: list[ProgressCallback] = []


@contextmanager
def watch_progress(callback: ProgressCallback) -> Iterator[None]:
    """Call `callback(job)` whenever a job's status or progress changes inside the block.

    Args:
        callback: Receives the fresh `VideoJob`; its exceptions are ignored.

    Example:
        ```python
        with watch_progress(lambda job: print(job.task_id, job.progress)):
            await generate_video(OmniVideoRequest(prompt="A red kite"))
        ```
    """
    _callbacks.append(callback)
    try:
        yield
    finally:
        _callbacks.remove(callback)


def report_progress(job: VideoJob) -> None:
    """Tell every watcher about a job; a failing watcher never fails the run."""
    for callback in list(_callbacks):
        try:
            callback(job)
        except Exception:  # a display problem must not cost a paid video
            pass
