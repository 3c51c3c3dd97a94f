"""A concurrency window that learns the account's parallel-task limit from refused creates."""

from __future__ import annotations

import asyncio
import random
import time
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import AsyncIterator, Iterator

# The slot (or, on a distributed runner, the patience) of the job running in this context:
# the client's refusal hook finds it here, however deep in the create task the refusal happens.
_current_slot: ContextVar["_Slot | None"] = ContextVar("comet_window_slot", default=None)
_current_patience: ContextVar["_Patience | None"] = ContextVar("comet_create_patience", default=None)


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
        client.on_create_refused = requeue_refused_create
        async with window.slot() as slot:
            job = await create(...)  # a refusal waits in the window, then resends
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
    async def slot(self) -> AsyncIterator["_Slot"]:
        """Wait for room and hold it for one job until it is released or the block ends."""
        await self._enter()
        slot = _Slot(self)
        token = _current_slot.set(slot)
        try:
            yield slot
        finally:
            _current_slot.reset(token)
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

    async def _requeue(self, slot: "_Slot", retry_after: float | None) -> bool:
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


class _Slot:
    def __init__(self, window: AdaptiveWindow) -> None:
        self.window = window
        self.held = True
        self.first_refused_at: float | None = None

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


class _Patience:
    def __init__(self, seconds: float, probe_interval: float, max_wait: float) -> None:
        self.seconds = seconds
        self.probe_interval = probe_interval
        self.max_wait = max_wait
        self.refusals = 0
        self.first_refused_at: float | None = None

    async def wait(self, retry_after: float | None) -> bool:
        now = time.monotonic()
        self.first_refused_at = self.first_refused_at or now
        if now - self.first_refused_at > self.seconds:
            return False
        self.refusals += 1
        # Jittered and growing: jobs refused together on several workers ask again apart.
        cap = min(self.max_wait, self.probe_interval * 2**self.refusals)
        await asyncio.sleep(max(self.probe_interval, retry_after or 0.0, random.uniform(0, cap)))
        return True


@contextmanager
def patient_creates(seconds: float, probe_interval: float = 1.0, max_wait: float = 15.0) -> Iterator[None]:
    """Let a refused create (429, Kling 1303) wait and resend for up to `seconds`.

    For a job without a window: on a distributed task runner each job runs in a worker
    process, where no window of the batch can hold it back. Without this, a job would fail
    after the client's few retries whenever the account's parallel tasks are taken for
    longer than that. The waits grow (jittered) from `probe_interval` to `max_wait`.

    Args:
        seconds: How long a job may keep being refused before its create gives up.
        probe_interval: Least seconds between refused creates (Kling asks for 1 s).
        max_wait: Most seconds between tries.

    Example:
        ```python
        client.on_create_refused = requeue_refused_create
        with patient_creates(seconds=1800):
            job = await create(...)  # a refusal waits, then resends
        ```
    """
    token = _current_patience.set(_Patience(seconds, probe_interval, max_wait))
    try:
        yield
    finally:
        _current_patience.reset(token)


async def requeue_refused_create(retry_after: float | None) -> bool:
    """`CometClient.on_create_refused` hook: wait in the caller's window, then resend.

    Outside a window, a caller within `patient_creates` waits by itself instead.

    Returns:
        True when the caller may resend now; False outside a window and `patient_creates`
        (or after their patience), so the client backs off by its own policy.
    """
    slot = _current_slot.get()
    if slot is not None and slot.held:
        return await slot.window._requeue(slot, retry_after)
    patience = _current_patience.get()
    if patience is not None:
        return await patience.wait(retry_after)
    return False
