"""Progress as people see it: the progress artifact, and `watch_progress` for terminal bars."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact

from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.ui._quiet import warn
from prefect_comet.ui.labels import artifact_key, markdown_line, short_prompt

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


async def start_progress(job: VideoJob) -> UUID | None:
    """Create the progress artifact of a job (shown on the run's Artifacts tab).

    Args:
        job: The job just created (its progress, usually 0 or None, is the start).

    Returns:
        The artifact id for `update_progress`, or None when it could not be created.

    Example:
        ```python
        artifact_id = await start_progress(job)
        ```
    """
    try:
        return await acreate_progress_artifact(
            progress=_percent(job),
            key=artifact_key("progress", job.task_id),
            description=(
                f"Generation progress of CometAPI {job.provider} task `{job.task_id}`: "
                f"{markdown_line(short_prompt(job))}"
            ),
        )
    except Exception as error:
        warn("Could not create the progress artifact of task %s: %r", job.task_id, error)
        return None


async def update_progress(artifact_id: UUID | None, job: VideoJob) -> None:
    """Set a job's progress artifact to the job's progress (100 once it succeeded).

    Args:
        artifact_id: The id from `start_progress`; None does nothing.
        job: The job as last seen.

    Example:
        ```python
        await update_progress(artifact_id, seen_job)
        ```
    """
    if artifact_id is None:
        return
    try:
        await aupdate_progress_artifact(artifact_id=artifact_id, progress=_percent(job))
    except Exception as error:
        warn("Could not update the progress artifact of task %s: %r", job.task_id, error)


# At most one progress update per job in this many seconds (finish() always sends).
MIN_UPDATE_SECONDS = 5.0


class LiveProgress:
    """Keeps a job's progress artifact current from a synchronous progress callback.

    `report()` may be called on every poll from sync code; the updates run in the
    background, in order, and only the newest pending value is sent. `finish()` waits
    for them and sets the final value.

    Example:
        ```python
        progress = await LiveProgress.start(job)
        job = await poll_until_terminal(client, job, timeout_seconds=600, on_update=progress.report)
        await progress.finish(job)  # 100 once succeeded
        ```
    """

    def __init__(self, artifact_id: UUID | None) -> None:
        """Follow the progress artifact `artifact_id` (None: every call does nothing).

        Args:
            artifact_id: The id from `start_progress`.
        """
        self.artifact_id = artifact_id
        self._pending: VideoJob | None = None
        self._sender: asyncio.Task[None] | None = None
        self._last_report = float("-inf")

    @classmethod
    async def start(cls, job: VideoJob) -> LiveProgress:
        """Create the job's progress artifact and follow it.

        Args:
            job: The job just created.

        Returns:
            The live progress (inert when the artifact could not be created).

        Example:
            ```python
            progress = await LiveProgress.start(job)
            ```
        """
        return cls(await start_progress(job))

    def report(self, job: VideoJob) -> None:
        """Send `job`'s progress soon; callable from sync code inside the event loop.

        Args:
            job: The job as last seen.

        Example:
            ```python
            progress.report(seen_job)
            ```
        """
        if self.artifact_id is None:
            return
        # Each update is a server write; a batch of hundreds of jobs must not flood it.
        now = time.monotonic()
        if now - self._last_report < MIN_UPDATE_SECONDS and (job.progress or 0) < 100:
            return
        self._last_report = now
        self._pending = job
        try:
            if self._sender is None or self._sender.done():
                self._sender = asyncio.get_running_loop().create_task(self._send_pending())
        except RuntimeError:  # no running loop: finish() sends the newest value
            pass

    async def finish(self, job: VideoJob) -> None:
        """Wait for reported updates, then set the final progress (100 when succeeded).

        Args:
            job: The job as last seen.

        Example:
            ```python
            await progress.finish(job)
            ```
        """
        if self.artifact_id is None:
            return
        self._pending = job
        sender = self._sender
        if sender is not None and not sender.done():
            await asyncio.shield(sender)
        await self._send_pending()

    async def _send_pending(self) -> None:
        while self._pending is not None:
            job, self._pending = self._pending, None
            await update_progress(self.artifact_id, job)


def _percent(job: VideoJob) -> float:
    if job.status is VideoStatus.SUCCEEDED:
        return 100.0
    return float(min(max(job.progress or 0, 0), 100))
