"""A concurrency window that learns the account's parallel-task limit from 429 answers."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class AdaptiveWindow:
    """Bound the jobs in flight; shrink when the server refuses, grow back as jobs finish.

    A refused create (429, Kling 1303) sets the limit to the number of jobs the server has
    admitted, so no further job starts until one finishes. Each finished job lets the
    limit grow by one (up to `maximum`), probing for room again.

    Args:
        maximum: The most jobs in flight at once.

    Example:
        ```python
        window = AdaptiveWindow(maximum=20)
        async with window.slot() as slot:
            job = await create(...)
            slot.admitted()
            ...
        ```
    """

    def __init__(self, maximum: int) -> None:
        if maximum < 1:
            raise ValueError("max_in_flight: must be at least 1")
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self.admitted_count = 0
        self._changed = asyncio.Condition()

    def rate_limited(self) -> None:
        """The server refused a job: hold the window at what it has admitted."""
        self.limit = max(1, self.admitted_count)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator["_Slot"]:
        """Wait for room, hold it for one job, give it back (and grow) when done."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.active < self.limit)
            self.active += 1
        slot = _Slot(self)
        try:
            yield slot
        finally:
            async with self._changed:
                self.active -= 1
                if slot.was_admitted:
                    self.admitted_count -= 1
                    self.limit = min(self.maximum, self.limit + 1)
                self._changed.notify_all()


class _Slot:
    def __init__(self, window: AdaptiveWindow) -> None:
        self._window = window
        self.was_admitted = False

    def admitted(self) -> None:
        """The server took this slot's job."""
        if not self.was_admitted:
            self.was_admitted = True
            self._window.admitted_count += 1
