"""`CometEmulator`: the public face; runs the server on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from .app import make_handler
from .callbacks import CallbackDelivery, CallbackSender
from .faults import FaultPlan
from .models import EmulatedJob, EmulatedVideo, RecordedRequest
from .server import HttpServer
from .state import EmulatorState, KlingWrappedInner, OmniFailureField, Settings


class CometEmulator:
    """A local CometAPI (Omni `/v1/videos` + Kling Omni) on loopback.

    Usable from sync and async code: the server runs on a private event loop in a
    background thread. `with CometEmulator() as emu:` (or `async with`) starts and stops it.

    Args:
        api_key: The key every API call must bear (None accepts any bearer key).
        latency: Seconds from create to completion.
        host: The address to listen on.
        port: The port (0 picks a free one).
        kling_parallel_limit: Unfinished Kling jobs allowed at once (1303 beyond it).
        kling_wrapped: Answer Kling queries in the wrapped gateway shape.
        content_redirect: The Omni content route answers a 302 to the signed file URL.
        fps: Frames per second of the rendered videos.
        pad_to_bytes: Pad result files to at least this many bytes.
        url_ttl: Seconds a signed result URL stays valid.
        kling_wrapped_inner: With `kling_wrapped`, where the native object is until the job
            succeeded: `"always"` inside (`data.data.data`), `"null"` (`data.data` is null) or
            `"missing"` (no `data.data`); only the outer `status`, `progress` and `fail_reason`
            tell the job's state then (REFERENCE.md section 5).
        omni_failure_field: Where a failed Omni job says why: `"error"` (an object with
            `code` and `message`), or `"fail_reason"` / `"error_message"` (a bare string, no
            `error` object).
        callback_repeats: A Kling job created with a `callback_url` gets its task object (the
            query's `data`, taken when a query first reports the status) POSTed on each status
            change; each delivery is POSTed this many times.
        callback_reorder: Hold a job's callbacks until it is final (or hangs), then send them
            latest status first.
        callback_loss: Probability (0..1) that a callback POST is silently dropped.
        callback_lose_statuses: Kling statuses (e.g. `{"succeed"}`) whose callbacks are always dropped.
        callback_delay: Seconds added before each callback delivery.
        callback_seed: Seed of the random draws for `callback_loss`.
        balance_usd: The account's starting balance in USD, served by the query service's
            `GET /user/quota?key=...` on the same base URL (None: unlimited, served as `-1`).
        price_per_job_usd: What each successful create (Omni and Kling) costs: it is taken
            from the balance and added to `charged_usd`.
        kling_units_per_job: Sent as `final_unit_deduction` in a Kling job's task data once it
            succeeded (None leaves the field out).
        poll_after_ms: Every Omni retrieve answer (`GET /v1/videos/{id}`) carries the header
            `openai-poll-after-ms: <value>`, the server's hint of when to look again (None: no header).

    The query route checks the `key` query parameter (not a bearer header) against `api_key`,
    and the request log keeps that parameter as `key=REDACTED`.

    Example:
        ```python
        with CometEmulator(kling_wrapped=True, kling_wrapped_inner="null") as emu:
            ...  # a Kling job's state is only outside until it succeeded
        ```
    """

    def __init__(
        self,
        api_key: str | None = None,
        latency: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        kling_parallel_limit: int | None = None,
        kling_wrapped: bool = False,
        content_redirect: bool = False,
        fps: int = 12,
        pad_to_bytes: int | None = None,
        url_ttl: float = 3600.0,
        kling_wrapped_inner: KlingWrappedInner = "always",
        omni_failure_field: OmniFailureField = "error",
        callback_repeats: int = 1,
        callback_reorder: bool = False,
        callback_loss: float = 0.0,
        callback_lose_statuses: Iterable[str] = (),
        callback_delay: float = 0.0,
        callback_seed: int = 0,
        balance_usd: float | None = 100.0,
        price_per_job_usd: float = 0.25,
        kling_units_per_job: str | None = "1",
        poll_after_ms: int | None = None,
    ) -> None:
        self.settings = Settings(  # raises ValueError for a bad option
            api_key, latency, kling_parallel_limit, kling_wrapped, content_redirect, fps, pad_to_bytes,
            url_ttl, kling_wrapped_inner, omni_failure_field, callback_repeats, callback_reorder,
            callback_loss, frozenset(callback_lose_statuses), callback_delay, callback_seed,
            balance_usd, price_per_job_usd, kling_units_per_job, poll_after_ms,
        )  # fmt: skip
        self.host, self.port = host, port
        self._faults = FaultPlan()
        self._state: EmulatorState | None = None
        self._callbacks: CallbackSender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> CometEmulator:
        """Start serving (returns once the port is bound)."""
        if self._thread is not None:
            raise RuntimeError("emulator already running")
        state = EmulatorState(self.settings, tempfile.mkdtemp(prefix="comet-emulator-"), self._faults)
        callbacks = CallbackSender(state)
        loop = asyncio.new_event_loop()
        server = HttpServer(make_handler(state))
        bound = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self.port = loop.run_until_complete(server.start(self.host, self.port))
            except BaseException as exc:  # e.g. port in use: re-raised by start()
                failure.append(exc)
                bound.set()
                loop.close()
                return
            state.base_url = f"http://{_url_host(self.host)}:{self.port}"
            bound.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(server.close())
                loop.run_until_complete(callbacks.close())  # pending deliveries are cancelled
                state.close()
                loop.run_until_complete(asyncio.sleep(0))  # let finished renders settle
                loop.close()

        thread = threading.Thread(target=run, name=f"comet-emulator-{id(self):x}", daemon=True)
        thread.start()
        bound.wait()
        if failure:
            thread.join()
            shutil.rmtree(state.workdir, ignore_errors=True)
            raise failure[0]
        self._state, self._loop, self._thread, self._callbacks = state, loop, thread, callbacks
        return self

    def stop(self) -> None:
        """Stop serving and delete this emulator's result files (jobs and records stay readable)."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = self._loop = None
        if self._state is not None:
            shutil.rmtree(self._state.workdir, ignore_errors=True)

    def __enter__(self) -> CometEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> CometEmulator:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    # -- inspection --------------------------------------------------------
    @property
    def _live(self) -> EmulatorState:
        if self._state is None:
            raise RuntimeError("emulator not started: use `with CometEmulator() as emu:` or emu.start()")
        return self._state

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return self._live.base_url

    @property
    def jobs(self) -> dict[str, EmulatedJob]:
        """task_id -> job, for both providers."""
        return self._live.jobs

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        return self._live.requests

    @property
    def callbacks_sent(self) -> list[CallbackDelivery]:
        """Every Kling callback delivery attempt so far (dropped ones too), in the order they ended."""
        if self._callbacks is None:
            raise RuntimeError("emulator not started: use `with CometEmulator() as emu:` or emu.start()")
        return list(self._callbacks.sent)

    @property
    def charged_usd(self) -> float:
        """What every create so far cost in USD (`price_per_job_usd` each)."""
        return self._live.charged_usd

    @property
    def balance_usd(self) -> float | None:
        """The balance left in USD, as the query route serves it (None: unlimited)."""
        return self._live.balance_usd

    def created_per_key(self) -> dict[str, int]:
        """Jobs created per idempotency key (Omni `Idempotency-Key` header, Kling `external_task_id`)."""
        return self._live.created_per_key()

    def bytes_served(self, task_id: str) -> int:
        """Result-file body bytes answered for `task_id` so far (content and file routes, GET).

        Counts each answer's body as sent in full (half for `truncate`, none for a reset), even
        when the client hung up before reading all of it.
        """
        return self._live.bytes_served[task_id]

    def _video(self, task_id: str, video_id: str | None) -> tuple[EmulatedJob, EmulatedVideo]:
        job = self.jobs.get(task_id)
        if job is None:
            raise KeyError(f"no job {task_id!r}")
        if not job.videos:
            raise LookupError(f"job {task_id!r} has no rendered result (not completed, or failed)")
        for video in job.videos:
            if video_id is None or video.video_id == video_id:
                return job, video
        raise KeyError(f"job {task_id!r} has no video {video_id!r}")

    def sha256(self, task_id: str, video_id: str | None = None, watermarked: bool = False) -> str:
        """sha256 hex of the bytes served for a result (first video unless `video_id`)."""
        _, video = self._video(task_id, video_id)
        if not watermarked:
            return video.sha256
        if video.watermark_sha256 is None:
            raise LookupError(f"job {task_id!r} has no watermarked copy")
        return video.watermark_sha256

    def signed_url(
        self, task_id: str, video_id: str | None = None, watermarked: bool = False, ttl: float | None = None
    ) -> str:
        """A fresh signed URL for a result file (`ttl` < 0 gives an already expired one)."""
        job, video = self._video(task_id, video_id)
        return self._live.file_url(job, video, watermarked, ttl)

    def issued_signatures(self) -> list[str]:
        """Every URL signature this emulator handed out (in answers or via `signed_url`)."""
        return list(self._live.signer.issued)

    # -- faults ------------------------------------------------------------
    def add_fault(self, route: str, kind: str, times: int = 1, **opts: Any) -> None:
        """Script `kind` for the next `times` requests to `route` (consumed in order)."""
        self._faults.add(route, kind, times, **opts)

    def set_fault_rate(
        self,
        rate: float,
        *,
        routes: Iterable[str] | None = None,
        kinds: Iterable[str] | None = None,
        seed: int = 0,
    ) -> None:
        """Random faults with probability `rate` per request; transient kinds unless `kinds`."""
        self._faults.set_rate(rate, routes, kinds, seed)

    def __repr__(self) -> str:
        where = self._state.base_url if self._thread and self._state else "stopped"
        return f"<CometEmulator {where}>"


def _url_host(host: str) -> str:
    """Host as written in a URL (IPv6 in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
