"""Confirm accepted Kling callbacks in the background: one GET each, an event, a ledger note, a resume.

A callback is only a hint: what the API answers is what counts. Deliveries repeat and arrive
out of order, so one already queued, or of a task already confirmed done, costs no GET; one
that claims no end (submitted, processing) costs none either: it is told as unconfirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from prefect.events import emit_event
from prefect.logging import get_logger

from prefect_comet.api.answers import normalise_status
from prefect_comet.api.client import CometClient
from prefect_comet.api.families import PROVIDERS
from prefect_comet.api.kling import external_task_id_for
from prefect_comet.models import VideoJob
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.suspension.resuming import resume_if_ready
from prefect_comet.ui.events import video_resource_id

EVENT = "comet.video.callback"
QUEUE_SIZE = 1000  # deliveries waiting for their GET; beyond it the receiver answers 503
WORKERS = 4
RESUME_RETRY_SECONDS = (2.0, 5.0, 15.0)  # a run not suspended yet is asked again after these pauses
STOP_GRACE_SECONDS = 5.0
REMEMBERED = 10_000  # finished tasks and runs kept in memory, oldest dropped first

logger = get_logger("prefect_comet.callbacks")
Submitted = Literal["queued", "duplicate", "full"]


@dataclass(frozen=True)
class Delivery:
    """One callback the receiver accepted (its token was checked).

    Args:
        key: The idempotency key the callback URL named.
        task_id: The task id the body named.
        claimed_status: The status the body claimed: a hint, never trusted.
        flow_run_id: The flow run the callback URL named, if any.

    Example:
        ```python
        Delivery(key="kite-1", task_id="task_8f2c", claimed_status="succeed", flow_run_id=None)
        ```
    """

    key: str
    task_id: str
    claimed_status: str = ""
    flow_run_id: str | None = None


class CallbackConfirmer:
    """A bounded queue of deliveries and the workers that confirm them with the API.

    Args:
        ledger: Where to note what was confirmed (None: nowhere).
        queue_size: Deliveries that may wait; `submit` answers `"full"` beyond. (default: `QUEUE_SIZE`)
        workers: Deliveries confirmed at once. (default: `WORKERS`)

    Example:
        ```python
        confirmer = CallbackConfirmer(JobLedger("./videos/.comet-ledger"))
        confirmer.start(client)
        confirmer.submit(Delivery("kite-1", "task_8f2c", "succeed"))
        await confirmer.stop()
        ```
    """

    def __init__(self, ledger: JobLedger | None = None, *, queue_size: int | None = None, workers: int | None = None):
        self.ledger = ledger
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue(queue_size or QUEUE_SIZE)
        self._worker_count = workers or WORKERS
        self._client: CometClient | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._retries: dict[str, asyncio.Task[None]] = {}  # flow run id -> its resume retries
        self._pending: set[Delivery] = set()  # queued or being confirmed
        self._finished: dict[str, str] = {}  # task id -> key, confirmed succeeded or failed
        self._done: dict[str, set[str]] = {}  # flow run id -> its task ids confirmed done
        self._note_lock = asyncio.Lock()

    def start(self, client: CometClient) -> None:
        """Start the workers on the running loop, confirming with `client`.

        Args:
            client: The pooled CometAPI client, open while the confirmer runs.
        """
        self._client = client
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._worker_count)]

    async def stop(self) -> None:
        """Let queued deliveries finish (a few seconds at most), then end the workers and retries."""
        if self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), STOP_GRACE_SECONDS)
        tasks = [*self._workers, *self._retries.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers, self._retries = [], {}

    def submit(self, delivery: Delivery) -> Submitted:
        """Queue a delivery, unless it repeats one queued or a task already confirmed done.

        Args:
            delivery: The accepted callback.

        Returns:
            `"queued"`, `"duplicate"` (nothing to do) or `"full"` (the queue is full).
        """
        if self._finished.get(delivery.task_id) == delivery.key or delivery in self._pending:
            return "duplicate"
        try:
            self._queue.put_nowait(delivery)
        except asyncio.QueueFull:
            return "full"
        self._pending.add(delivery)
        return "queued"

    async def drained(self) -> None:
        """Wait until every queued delivery was confirmed (or dropped)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self.confirm(delivery)
            except Exception as error:  # one bad delivery never ends the worker
                logger.warning("Could not handle the callback for task %s: %s", delivery.task_id, _why(error))
            finally:
                self._pending.discard(delivery)
                self._queue.task_done()

    async def confirm(self, delivery: Delivery) -> None:
        """Ask the API about the delivery's task, then tell, note and resume what it confirmed.

        Args:
            delivery: The accepted callback.
        """
        assert self._client is not None, "start() the confirmer first"
        if not normalise_status(delivery.claimed_status).is_terminal:
            # Only an end is worth a status request: "processing" wakes no one and resumes nothing.
            self._emit(delivery, None)
            return
        try:
            job, _ = await PROVIDERS["kling"].retrieve(self._client, delivery.task_id)
        except Exception as error:  # after the client's own retries
            logger.warning(
                "Could not confirm the callback for task %s with the API (%s); told as unconfirmed.",
                delivery.task_id, _why(error),
            )
            self._emit(delivery, None)
            return
        expected = external_task_id_for(delivery.key)
        if job.task_id != delivery.task_id or (job.external_task_id and job.external_task_id != expected):
            logger.warning(
                "Dropped a callback for task %s: the API says it is not the job of the key its URL names.",
                delivery.task_id,
            )
            return
        self._emit(delivery, job)
        if self.ledger is not None:
            await self._note(delivery, job)
        if job.status.is_terminal:
            _remember(self._finished, job.task_id, delivery.key)
            if delivery.flow_run_id:
                _remember(self._done, delivery.flow_run_id, self._done.get(delivery.flow_run_id, set()))
                self._done[delivery.flow_run_id].add(job.task_id)
                await self._resume(delivery.flow_run_id)

    def _emit(self, delivery: Delivery, job: VideoJob | None) -> None:
        payload: dict[str, Any] = {"claimed_status": delivery.claimed_status or None, "confirmed": job is not None}
        if job is not None:
            payload.update(status=job.status.value, raw_status=job.raw_status or None, progress=job.progress)
        seen = job or VideoJob(provider="kling", task_id=delivery.task_id)
        related = []
        if delivery.flow_run_id:
            related.append(
                {"prefect.resource.id": f"prefect.flow-run.{delivery.flow_run_id}", "prefect.resource.role": "flow-run"}
            )
        try:
            emit_event(
                event=EVENT,
                resource={
                    "prefect.resource.id": video_resource_id(seen),
                    "comet.provider": "kling",
                    "comet.task-id": delivery.task_id,
                    "comet.key": delivery.key,
                },
                related=related,
                payload={name: value for name, value in payload.items() if value is not None},
            )
        except Exception as error:
            logger.warning("Could not emit %s for task %s: %s", EVENT, delivery.task_id, _why(error))

    async def _note(self, delivery: Delivery, job: VideoJob) -> None:
        assert self.ledger is not None
        try:
            async with self._note_lock:  # one read-then-write at a time, so a note never goes back
                await asyncio.to_thread(self.ledger.note_callback, delivery.key, job.task_id, job.status)
        except Exception as error:
            logger.warning("Could not note the callback for task %s in the ledger: %s", job.task_id, _why(error))

    async def _resume(self, flow_run_id: str) -> None:
        if await self._try_resume(flow_run_id):
            return
        retrying = self._retries.get(flow_run_id)
        if retrying is None or retrying.done():
            self._retries[flow_run_id] = asyncio.create_task(self._retry_resume(flow_run_id))

    async def _try_resume(self, flow_run_id: str) -> bool:
        try:
            return await resume_if_ready(flow_run_id, set(self._done.get(flow_run_id, ())))
        except Exception as error:
            logger.warning("Could not resume flow run %s: %s", flow_run_id, _why(error))
            return False

    async def _retry_resume(self, flow_run_id: str) -> None:
        """A run that suspends just after its job finished is not suspended yet: ask again a few times."""
        try:
            for pause in RESUME_RETRY_SECONDS:
                await asyncio.sleep(pause)
                if await self._try_resume(flow_run_id):
                    return
            logger.info("Flow run %s was not resumed by its callbacks; the sweeper looks at it again.", flow_run_id)
        finally:
            if self._retries.get(flow_run_id) is asyncio.current_task():
                del self._retries[flow_run_id]


def _remember(memory: dict[str, Any], name: str, value: Any) -> None:
    """Keep `name`, dropping the oldest entries beyond `REMEMBERED`."""
    memory.pop(name, None)
    memory[name] = value
    while len(memory) > REMEMBERED:
        del memory[next(iter(memory))]


def _why(error: BaseException) -> str:
    """One line about an error, never its traceback (whose frames could hold secrets)."""
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
