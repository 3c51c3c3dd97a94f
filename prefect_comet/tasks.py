"""The Prefect tasks: create a video job, wait for it, persist its files; check the balance.

Each is a thin wrapper over its step in `steps/` that adds the run's logs, events and
artifacts. The tasks are async. In an async flow, await them; in a sync flow, use
`create_video.submit(...).result()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_HOME

from prefect_comet.api.client import OnRefused
from prefect_comet.api.families import VideoRequest
from prefect_comet.api.quota import AccountBalance
from prefect_comet.callbacks.wakeups import callback_wakeups
from prefect_comet.credentials import CometAPICredentials, borrow_client
from prefect_comet.exceptions import GenerationFailedError
from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION, DEFAULTS, IfOutcomeUnknown
from prefect_comet.steps.budget import Budget
from prefect_comet.steps.create_once import create_once, idempotency_key_for
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.steps.poll_cadence import PollPolicy
from prefect_comet.steps.storing import store_videos
from prefect_comet.steps.waiting import poll_until_terminal
from prefect_comet.ui.events import emit_video_event
from prefect_comet.ui.progress import LiveProgress, report_progress
from prefect_comet.ui.summary import publish_video


# NO_CACHE: the ledger, not Prefect's cache, decides whether a job exists. Prefect
# retries are safe because the same idempotency key never creates a second job.
@task(name="create-video", task_run_name="create-{request.provider}-video", cache_policy=NO_CACHE)
async def create_video(
    request: VideoRequest,
    credentials: CometAPICredentials | None = None,
    idempotency_key: str | None = None,
    ledger_uri: str | None = None,
    if_outcome_unknown: IfOutcomeUnknown = DEFAULTS.if_outcome_unknown,
    rate_limit: str | None = None,
) -> VideoJob:
    """Create the job for a request once per idempotency key, or resume the known one.

    Args:
        request: An `OmniVideoRequest` or `KlingOmniVideoRequest`.
        credentials: The CometAPI block; `COMETAPI_KEY` is used when omitted.
        idempotency_key: Jobs are created once per key; by default the key comes from
            the request and the flow run, so retries never pay twice.
        ledger_uri: An fsspec folder recording key → task id (e.g.
            `s3://bucket/videos/.comet-ledger`; use shared storage when runs may land on
            other machines). Default: `comet-ledger` under PREFECT_HOME on this machine.
        if_outcome_unknown: When a create may have reached the server without an answer
            and the job cannot be found by key: `"fail"` (raise, pay nothing twice) or
            `"recreate"` (send again).
        rate_limit: A Prefect global concurrency limit with slot decay: each paid create
            takes one slot (e.g. 500 a day for every flow of the account); a resumed job none.

    Returns:
        The job; its `task_id` is what every later step needs.

    Example:
        ```python
        job = await create_video(OmniVideoRequest(prompt="A red kite"), idempotency_key="kite-1")
        ```
    """
    return await create_and_announce(
        request, credentials, idempotency_key, ledger_uri, if_outcome_unknown, on_refused=None, rate_limit=rate_limit
    )


async def create_and_announce(
    request: VideoRequest,
    credentials: CometAPICredentials | None,
    idempotency_key: str | None,
    ledger_uri: str | None,
    if_outcome_unknown: IfOutcomeUnknown,
    *,
    on_refused: OnRefused | None,
    rate_limit: str | None = None,
    budget: Budget | None = None,
) -> VideoJob:
    """The body of `create_video`, also run inside a batch's job task with its refusal hook.

    Args:
        request: The generation request.
        credentials: The CometAPI block, or None for the environment.
        idempotency_key: The job's key; derived from the request and run when None.
        ledger_uri: The ledger folder; under PREFECT_HOME when None.
        if_outcome_unknown: See `create_video`.
        on_refused: What a refused create (429) waits for; see `CometClient.create`.
        rate_limit: See `create_video`.
        budget: What a paid create must fit in (a batch's `max_spend_usd`).

    Returns:
        The job.
    """
    key = idempotency_key or idempotency_key_for(request)
    home = PREFECT_HOME.value()
    async with borrow_client(credentials) as client:
        job = await create_once(
            client,
            request,
            idempotency_key=key,
            ledger=JobLedger(ledger_uri or str(home / "comet-ledger")),
            if_outcome_unknown=if_outcome_unknown,
            on_refused=on_refused,
            budget=budget,
            rate_limit=rate_limit,
            # Where a task id goes when the ledger cannot take it (a full or unwritable disk).
            backup=JobLedger(str(home / "comet-ledger-backup")),
        )
    emit_video_event("created", job)
    return job


# NO_CACHE: a cached result would report a status the server no longer holds.
@task(name="wait-for-video", task_run_name="wait-{job.task_id}", cache_policy=NO_CACHE)
async def wait_for_video(
    job: VideoJob,
    credentials: CometAPICredentials | None = None,
    timeout_seconds: float = DEFAULTS.timeout_seconds,
    poll_interval_seconds: float = DEFAULTS.poll_interval_seconds,
    max_poll_interval_seconds: float = DEFAULTS.max_poll_interval_seconds,
    publish_artifacts: bool = DEFAULTS.per_job_artifacts,
    wake_on_callbacks: bool = False,
) -> VideoJob:
    """Poll a job until it succeeds, fails or the deadline passes.

    With `wake_on_callbacks`, a `comet.video.callback` event for the job (emitted by the
    `prefect-comet callbacks` receiver) ends the current wait at once; polling goes on
    as the source of truth, as callbacks can be lost.

    Args:
        job: The job from `create_video` (or any job known by task id).
        credentials: The CometAPI block; `COMETAPI_KEY` is used when omitted.
        timeout_seconds: The overall deadline.
        poll_interval_seconds: The first interval; it grows towards the cap.
        max_poll_interval_seconds: The largest interval.
        publish_artifacts: Keep a progress artifact current while waiting.
        wake_on_callbacks: Look at the job as soon as its callback is heard.

    Returns:
        The succeeded job.

    Example:
        ```python
        job = await wait_for_video(job, timeout_seconds=600)
        ```
    """
    logger = get_run_logger()
    policy = PollPolicy(initial_interval=poll_interval_seconds, max_interval=max_poll_interval_seconds)

    progress = await LiveProgress.start(job) if publish_artifacts else LiveProgress(None)
    last = job

    def on_update(seen: VideoJob) -> None:
        nonlocal last
        report_progress(seen)
        progress.report(seen)
        if seen.raw_status != last.raw_status:  # log status changes only, not every progress tick
            logger.info("Job %s is %s (%s%%).", seen.task_id, seen.raw_status, seen.progress)
        last = seen

    try:
        async with borrow_client(credentials) as client, _sleep_for(job, wake_on_callbacks) as sleep:
            job = await poll_until_terminal(
                client, job, timeout_seconds=timeout_seconds, policy=policy, on_update=on_update, sleep=sleep
            )
    except GenerationFailedError as error:
        await progress.finish(last)
        emit_video_event("failed", last, error=str(error))
        raise
    await progress.finish(job)
    emit_video_event("completed", job)
    return job


Sleep = Callable[[float], Awaitable[None]]


@asynccontextmanager
async def _sleep_for(job: VideoJob, wake_on_callbacks: bool) -> AsyncIterator[Sleep | None]:
    """The sleep between looks: plain (None), or ended early by the job's callback."""
    if not wake_on_callbacks:
        yield None
        return
    async with callback_wakeups() as wakeups, wakeups.watching(job.task_id) as sleep:
        yield sleep


@task(name="persist-video", task_run_name="persist-{job.task_id}", cache_policy=NO_CACHE)
async def persist_video(
    job: VideoJob,
    destination: str = DEFAULT_DESTINATION,
    credentials: CometAPICredentials | None = None,
    max_video_bytes: int = DEFAULTS.max_video_bytes,
    publish_artifacts: bool = DEFAULTS.per_job_artifacts,
) -> StoredVideo:
    """Stream a finished job's videos into fsspec storage, verified, with a JSON sidecar.

    Args:
        job: A succeeded job.
        destination: Any fsspec URL or local folder (`./videos`, `s3://bucket/prefix`).
        credentials: The CometAPI block; `COMETAPI_KEY` is used when omitted.
        max_video_bytes: Refuse result files larger than this.
        publish_artifacts: Publish the summary and link artifacts of the video.

    Returns:
        The stored video (further files of the job in `extras`).

    Example:
        ```python
        stored = await persist_video(job, "s3://my-bucket/videos")
        ```
    """
    logger = get_run_logger()
    async with borrow_client(credentials) as client:
        stored = await store_videos(client, job, destination, max_bytes=max_video_bytes)
    logger.info(
        "Stored %s (%s bytes, %sx%s, %s s, sha256 %s).",
        stored.uri, stored.size_bytes, stored.width, stored.height,
        stored.duration_seconds, stored.sha256,
    )
    for mismatch in stored.mismatches:
        logger.warning("Task %s: the video is not what was asked for: %s.", stored.task_id, mismatch)
    if publish_artifacts:
        await publish_video(stored, job)
    emit_video_event("persisted", job, stored=stored)
    return stored


# NO_CACHE: a balance is a reading of the moment; a cached one would hide what was spent since.
@task(name="check-balance", cache_policy=NO_CACHE)
async def check_balance(credentials: CometAPICredentials | None = None) -> AccountBalance:
    """Read the account's balance and usage from CometAPI's query service, and log them.

    The query service takes the key in its URL, so that URL is never logged or kept; the
    log says the balance, the usage and the number of requests.

    Args:
        credentials: The CometAPI block; `COMETAPI_KEY` is used when omitted.

    Returns:
        The balance (`balance_usd`, None when unlimited), usage and each key's figures.

    Example:
        ```python
        balance = await check_balance(CometAPICredentials.load("comet"))
        if balance.balance_usd is not None and balance.balance_usd < 5:
            raise RuntimeError("Top up the CometAPI account first.")
        ```
    """
    logger = get_run_logger()
    block = credentials if credentials is not None else CometAPICredentials.from_env()
    balance = await block.get_balance()
    left = "unlimited" if balance.unlimited else _usd(balance.balance_usd)
    logger.info(
        "CometAPI balance: %s; used: %s over %s requests%s.",
        left, _usd(balance.used_usd),
        "an unknown number of" if balance.request_count is None else balance.request_count,
        f" (account {balance.username})" if balance.username else "",
    )
    for key in balance.api_keys:
        logger.info(
            "Key %s: %s left, %s used.",
            key.name or "(unnamed)", "unlimited" if key.unlimited else _usd(key.remain_usd),
            _usd(key.used_usd),
        )
    return balance


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} USD"
