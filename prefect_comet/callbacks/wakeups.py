"""Wake a waiting job on its callback: one subscription to `comet.video.callback` events per event loop.

The receiver emits an event for every confirmed callback; a run waiting for that job (in
any process, on any machine) hears it from the Prefect server and looks at the job at once
instead of at its next slow poll. A lost event only costs time: the poll goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.settings import PREFECT_API_URL
from prefect.types import DateTime

from prefect_comet._logging import run_logger
from prefect_comet.api.answers import normalise_status
from prefect_comet.models import VideoStatus

CALLBACK_EVENT = "comet.video.callback"
_RECONNECT_SECONDS = 5.0


class CallbackWakeups:
    """Rings the jobs whose callbacks arrive; a job's sleep ends at its ring.

    Example:
        ```python
        async with callback_wakeups() as wakeups, wakeups.watching("task_1") as sleep:
            await sleep(40)  # returns early when task_1's callback arrives
        ```
    """

    def __init__(self) -> None:
        self._rings: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._users = 0
        self.connected = asyncio.Event()

    def ring(self, task_id: str) -> None:
        """Wake the job `task_id` (kept until its next sleep when it is not sleeping now)."""
        if task_id in self._rings:
            self._rings[task_id].set()

    @asynccontextmanager
    async def watching(self, task_id: str) -> AsyncIterator[Callable[[float], Awaitable[None]]]:
        """A sleep for one job that a callback for it ends early.

        A ring between two sleeps (while the job is being looked at) is kept, so the next
        sleep returns at once: no callback falls between a look and a sleep.

        Args:
            task_id: The job's task id.

        Returns:
            An async `sleep(seconds)` for this job.
        """
        ring = self._rings.setdefault(task_id, asyncio.Event())

        async def sleep(seconds: float) -> None:
            try:
                await asyncio.wait_for(ring.wait(), timeout=max(seconds, 0.0))
            except TimeoutError:
                pass
            ring.clear()

        try:
            yield sleep
        finally:
            self._rings.pop(task_id, None)

    async def _listen(self) -> None:
        warned = False
        while True:
            since = DateTime.now("UTC") - timedelta(seconds=5)
            event_filter = EventFilter(
                event=EventNameFilter(name=[CALLBACK_EVENT]), occurred=EventOccurredFilter(since=since)
            )
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    self.connected.set()
                    async for event in subscriber:
                        task_id = event.resource.get("comet.task-id")
                        if task_id and _tells_an_end(event.payload):
                            self.ring(task_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the slow poll goes on without wake-ups
                self.connected.clear()
                if not warned:
                    run_logger().warning("Not hearing callbacks (%r); polling slowly until they come back.", error)
                    warned = True
            await asyncio.sleep(_RECONNECT_SECONDS)


def _tells_an_end(payload: dict[str, object]) -> bool:
    """A callback worth a look: the API confirmed an end, or the receiver could not ask and one is claimed."""
    if payload.get("confirmed"):
        return payload.get("status") in (VideoStatus.SUCCEEDED.value, VideoStatus.FAILED.value)
    return normalise_status(payload.get("claimed_status")).is_terminal


_per_loop: dict[asyncio.AbstractEventLoop, CallbackWakeups] = {}


@asynccontextmanager
async def callback_wakeups() -> AsyncIterator[CallbackWakeups]:
    """The event loop's wake-ups, listening while at least one waiter uses them.

    Returns:
        The shared `CallbackWakeups` of the running loop.

    Example:
        ```python
        async with callback_wakeups() as wakeups:
            ...
        ```
    """
    loop = asyncio.get_running_loop()
    wakeups = _per_loop.setdefault(loop, CallbackWakeups())
    wakeups._users += 1
    if wakeups._listener is None and PREFECT_API_URL.value():
        wakeups._listener = asyncio.create_task(wakeups._listen())
        try:  # callbacks that come before the subscription would be heard only at the next poll
            await asyncio.wait_for(wakeups.connected.wait(), timeout=10)
        except TimeoutError:
            pass
    try:
        yield wakeups
    finally:
        wakeups._users -= 1
        if wakeups._users == 0:
            _per_loop.pop(loop, None)
            if wakeups._listener is not None:
                wakeups._listener.cancel()
                await asyncio.gather(wakeups._listener, return_exceptions=True)
