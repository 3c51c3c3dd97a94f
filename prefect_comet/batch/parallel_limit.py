"""The parallel-task limit: a window that learns it from refused creates, and the account's limit.

A refused create (HTTP 429, Kling 1303) asks the job's `on_refused` hook what to do: a job
in the batch's window waits there (`Slot.on_refused`); a job on a distributed runner waits
by itself (`Patience.on_refused`). Both hooks are handed to the create step explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prefect.concurrency.asyncio import concurrency


class AdaptiveWindow:
    """Bound the jobs running on the server; shrink when it refuses, grow when it admits.

    A refused create (429, Kling 1303) gives its slot back and sets the limit to the jobs
    still in flight; the refused job waits at least `probe_interval` and queues again.
    While the window is below `maximum` and full, one waiting job probes the server every
    `probe_interval` seconds, because the server frees a slot before our polls see its job
    end. A probe the server admits raises the limit.

    Args:
        maximum: The most jobs in flight at once.
        probe_interval: Least seconds between refused creates (Kling asks for 1 s).
        patience: Seconds a job may keep being refused before its create gives up.

    Example:
        ```python
        window = AdaptiveWindow(maximum=20)
        async with window.slot() as slot:
            job = await create(..., on_refused=slot.on_refused)  # waits in the window, resends
            slot.admitted()
            await wait(job)
            slot.release()  # the server is done with it: the next job may start
            await persist(job)
        ```
    """

    def __init__(self, maximum: int, probe_interval: float = 1.0, patience: float = 3600.0) -> None:
        if maximum < 1:
            raise ValueError("max_in_flight: must be at least 1")
        self.maximum = maximum
        self.limit = maximum
        self.active = 0
        self.refusals = 0
        self.probe_interval = probe_interval
        self.patience = patience
        self._probing = False
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait for room and hold it for one job until it is released or the block ends."""
        await self._enter()
        slot = Slot(self)
        try:
            yield slot
        finally:
            slot.release()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _enter(self) -> None:
        while self.active >= self.limit:
            if not self._probing and self.limit < self.maximum and self.active < self.maximum:
                await self._wait_as_prober()
                break
            await self._changed.wait()
        self.active += 1

    async def _wait_as_prober(self) -> None:
        """Wait for room, but no longer than `probe_interval`: then ask the server anyway."""
        self._probing = True
        deadline = time.monotonic() + self.probe_interval
        try:
            while self.active >= self.limit and (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    pass
        finally:
            self._probing = False
            self._notify()  # another waiter takes over probing

    async def _requeue(self, slot: Slot, retry_after: float | None) -> bool:
        now = time.monotonic()
        slot.first_refused_at = slot.first_refused_at or now
        if now - slot.first_refused_at > self.patience:
            return False
        self.refusals += 1
        slot.release()
        self.limit = max(1, self.active)
        await asyncio.sleep(max(self.probe_interval, retry_after or 0.0))
        await self._enter()
        slot.held = True
        return True


class Slot:
    """One job's place in an `AdaptiveWindow`."""

    def __init__(self, window: AdaptiveWindow) -> None:
        self.window = window
        self.held = True
        self.first_refused_at: float | None = None

    async def on_refused(self, retry_after: float | None) -> bool:
        """The create step's refusal hook: give the slot back, wait for room, resend.

        Returns:
            True when the caller may resend now; False once the slot is released or the
            window's patience is used up, so the client backs off by its own policy.
        """
        if not self.held:
            return False
        return await self.window._requeue(self, retry_after)

    def admitted(self) -> None:
        """The server took this slot's job (a probe beyond the limit proves more room)."""
        window = self.window
        self.first_refused_at = None
        if window.active > window.limit:
            window.limit = min(window.maximum, window.active)
            window._notify()

    def release(self) -> None:
        """The job no longer runs on the server: let the next one start."""
        if self.held:
            self.held = False
            self.window.active -= 1
            self.window._notify()


class Patience:
    """Let a refused create wait and resend for up to `seconds`, for a job without a window.

    On a distributed task runner each job runs in a worker process, where no window of the
    batch can hold it back. Without this, a job would fail after the client's few retries
    whenever the account's parallel tasks are taken for longer than that. The waits grow
    (jittered, so jobs refused together on several workers ask again apart) from
    `probe_interval` to `max_wait`.

    Args:
        seconds: How long a job may keep being refused before its create gives up.
        probe_interval: Least seconds between refused creates (Kling asks for 1 s).
        max_wait: Most seconds between tries.

    Example:
        ```python
        job = await create(..., on_refused=Patience(seconds=1800).on_refused)
        ```
    """

    def __init__(self, seconds: float, probe_interval: float = 1.0, max_wait: float = 15.0) -> None:
        self.seconds = seconds
        self.probe_interval = probe_interval
        self.max_wait = max_wait
        self.refusals = 0
        self.first_refused_at: float | None = None

    async def on_refused(self, retry_after: float | None) -> bool:
        """The create step's refusal hook: wait, then resend, until patience runs out.

        Returns:
            True when the caller may resend now; False after `seconds` of refusals.
        """
        now = time.monotonic()
        self.first_refused_at = self.first_refused_at or now
        if now - self.first_refused_at > self.seconds:
            return False
        self.refusals += 1
        cap = min(self.max_wait, self.probe_interval * 2**self.refusals)
        await asyncio.sleep(max(self.probe_interval, retry_after or 0.0, random.uniform(0, cap)))
        return True


async def require_limit(name: str) -> None:
    """Refuse a global concurrency limit that does not exist, before anything is paid.

    Prefect would run without limiting under a misspelt name.

    Raises:
        ValueError: No global concurrency limit has that name.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ValueError(
                f"concurrency_limit: no global concurrency limit is named {name!r}; create it "
                f"first (prefect gcl create {name} --limit N)"
            ) from None


def account_slot(concurrency_limit: str | None) -> contextlib.AbstractAsyncContextManager[Any]:
    """Hold one slot of a Prefect global concurrency limit (shared by every flow and worker
    of the account) for as long as the block runs; nothing when no limit is named."""
    return concurrency(concurrency_limit, occupy=1) if concurrency_limit else contextlib.nullcontext()
