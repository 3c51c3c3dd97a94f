"""Kling callbacks: POST a job's task object to its `callback_url` on each status change."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from .models import EmulatedJob
from .routes_kling import NATIVE, query_data
from .state import QUEUED_FRACTION, EmulatorState, Phase

log = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds one POST may take; no retries
POLL = 0.01  # re-check pause once a boundary is due (e.g. success waiting for its render)
FINAL = ("succeeded", "failed", "unknown")  # phases a job never leaves


@dataclass(frozen=True)
class CallbackDelivery:
    """One callback delivery attempt.

    The callback URL is not repeated here: it usually carries the receiver's per-job token (it
    is in the job's `request["callback_url"]`; treat it as a secret).

    Attributes:
        time: Unix time (`time.time()`) the POST started, or would have for a dropped one.
        task_id: The Kling task the callback is about.
        task_status: The native Kling status of the posted task object (`submitted`,
            `processing`, `succeed`, `failed`; `mystery` for a `[unknown]` job).
        http_status: The receiver's answer status; None for a connection error, a timeout
            or a dropped delivery.
        dropped: Not sent, on purpose (`callback_loss` or `callback_lose_statuses`).
    """

    time: float
    task_id: str
    task_status: str
    http_status: int | None
    dropped: bool


@dataclass(frozen=True)
class _Snapshot:
    """A status's task object, taken when a query first reported that status."""

    status: str
    body: bytes


class CallbackSender:
    """Follows every Kling job created with a `callback_url` and posts its status changes.

    Runs on the emulator's event loop: one watcher task per job wakes at the phase boundaries
    of the shared timeline (`EmulatorState.phase`), snapshots the query's `data` object the
    moment a query reports a new status, and hands it to that job's sender task, which posts
    each snapshot in turn (or, with `callback_reorder`, all of them latest first once the job
    is final). A snapshot is therefore never sent before a query reports its status.

    Every status of the timeline gets its callback even when the loop was too busy to look
    in time: `submitted` is the object as of the create, and a `processing` the watcher missed
    is the object a query answered halfway through the job.
    """

    def __init__(self, state: EmulatorState) -> None:
        self._state = state
        self._settings = state.settings
        self._random = random.Random(state.settings.callback_seed)
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.sent: list[CallbackDelivery] = []
        state.job_hooks.append(self.watch)

    def watch(self, job: EmulatedJob) -> None:
        """Start following `job` if it is a Kling job with a `callback_url` (on the loop)."""
        url = job.request.get("callback_url") if job.provider == "kling" else None
        if self._closed or not isinstance(url, str) or not url:
            return
        queue: asyncio.Queue[_Snapshot | None] = asyncio.Queue()
        first = self._snapshot(job, job.created_at)  # as create answered it (`submitted`, unless latency is 0)
        self._spawn(self._follow(job, first, queue))
        self._spawn(self._drain(job.task_id, url, queue))

    async def close(self) -> None:
        """Cancel pending deliveries and close the HTTP client."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _snapshot(self, job: EmulatedJob, at: float | None = None) -> tuple[Phase, _Snapshot]:
        """The query's `data` object at `at` (now by default) and the Kling status it reports."""
        phase = self._state.phase(job, at)
        body = json.dumps(query_data(self._state, job, phase), separators=(",", ":")).encode()
        return phase, _Snapshot(NATIVE[phase.name], body)

    def _pause(self, job: EmulatedJob, phase: Phase) -> float:
        """Seconds until the job's next phase boundary (at least POLL)."""
        latency = self._settings.latency
        fraction = QUEUED_FRACTION if phase.name == "queued" else 1.0
        return max(POLL, job.created_at + fraction * latency - time.time())

    async def _follow(
        self, job: EmulatedJob, first: tuple[Phase, _Snapshot], queue: asyncio.Queue[_Snapshot | None]
    ) -> None:
        """Watch `job` until it is final; queue a snapshot per status change."""
        reorder = self._settings.callback_reorder
        phase, snapshot = first
        held = [snapshot]
        if not reorder:
            queue.put_nowait(snapshot)
        while phase.name not in FINAL and not (job.outcome == "hang" and phase.name == "running"):
            await asyncio.sleep(self._pause(job, phase))
            seen = phase.name
            phase, snapshot = self._snapshot(job)
            if phase.name == seen:
                continue
            steps = [snapshot]
            if seen == "queued" and phase.name != "running":  # the loop looked too late for `processing`
                steps.insert(0, self._snapshot(job, job.created_at + self._settings.latency / 2)[1])
            for step in steps:
                held.append(step)
                if not reorder:
                    queue.put_nowait(step)
        if reorder:
            for snapshot in reversed(held):
                queue.put_nowait(snapshot)
        queue.put_nowait(None)

    async def _drain(self, task_id: str, url: str, queue: asyncio.Queue[_Snapshot | None]) -> None:
        """Post the queued snapshots one after another, each `callback_repeats` times."""
        while (snapshot := await queue.get()) is not None:
            if self._settings.callback_delay:
                await asyncio.sleep(self._settings.callback_delay)
            for _ in range(self._settings.callback_repeats):
                await self._post(task_id, url, snapshot)

    async def _post(self, task_id: str, url: str, snapshot: _Snapshot) -> None:
        started = time.time()
        loss = self._settings.callback_loss
        if snapshot.status in self._settings.callback_lose_statuses or (loss and self._random.random() < loss):
            self.sent.append(CallbackDelivery(started, task_id, snapshot.status, None, True))
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=TIMEOUT, trust_env=False)
        status: int | None = None
        try:
            response = await self._client.post(
                url, content=snapshot.body, headers={"content-type": "application/json"}
            )
            status = response.status_code
        except Exception as exc:  # a receiver that is down or broken only shows in the record
            log.debug("emulator callback for task %s failed: %s", task_id, type(exc).__name__)
        self.sent.append(CallbackDelivery(started, task_id, snapshot.status, status, False))
