"""The flow `generate_video`, and the per-job sequence it shares with the batch flow."""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger

from prefect_comet._logging import current_flow_run_id
from prefect_comet.api.client import OnRefused
from prefect_comet.api.families import VideoRequest
from prefect_comet.api.kling_request import KlingOmniVideoRequest
from prefect_comet.callbacks.tokens import SECRET_VARIABLE, callback_secret, callback_url_for
from prefect_comet.credentials import CometAPICredentials, borrow_client
from prefect_comet.exceptions import (
    GenerationFailedError,
    LedgerDamagedError,
    OutputMismatchError,
    StillRendering,
    WaitTimeoutError,
)
from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION, DEFAULTS, GenerationOptions, IfOutcomeUnknown, WaitMode
from prefect_comet.steps.abandoning import abandon_unstored_jobs, label_run_with_ledger
from prefect_comet.steps.budget import Budget, PricePerJob
from prefect_comet.steps.create_once import idempotency_key_for
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.steps.storage_errors import ensure_writable, unusable_destination
from prefect_comet.steps.storing import stored_for_key, verified
from prefect_comet.steps.waiting import look_once
from prefect_comet.suspension.suspend import require_suspendable, suspend_until_done
from prefect_comet.tasks import create_and_announce, create_video, persist_video, wait_for_video


@flow(
    name="generate-video",
    flow_run_name="generate-{request.provider}-video",
    on_cancellation=[abandon_unstored_jobs],
    on_crashed=[abandon_unstored_jobs],
)
async def generate_video(
    request: VideoRequest,
    destination: str = DEFAULT_DESTINATION,
    credentials: CometAPICredentials | None = None,
    idempotency_key: str | None = None,
    ledger_uri: str | None = None,
    if_outcome_unknown: IfOutcomeUnknown = DEFAULTS.if_outcome_unknown,
    timeout_seconds: float = DEFAULTS.timeout_seconds,
    poll_interval_seconds: float = DEFAULTS.poll_interval_seconds,
    max_poll_interval_seconds: float = DEFAULTS.max_poll_interval_seconds,
    max_video_bytes: int = DEFAULTS.max_video_bytes,
    strict_output: bool = DEFAULTS.strict_output,
    wait: WaitMode = DEFAULTS.wait,
    callback_base_url: str | None = DEFAULTS.callback_base_url,
    max_spend_usd: float | None = None,
    price_per_job_usd: PricePerJob | None = None,
    create_rate_limit: str | None = DEFAULTS.create_rate_limit,
) -> StoredVideo:
    """Generate one video and store it, verified, under `destination`, paying at most once.

    A job ledger (by default beside the videos, `<destination>/.comet-ledger/`) maps the
    idempotency key to the task id as soon as it is known. Running again with the same key
    and ledger resumes that job (after a crash, a timeout, a retry, in another process) or,
    once stored, returns the stored video without any API call.

    Args:
        request: An `OmniVideoRequest` or `KlingOmniVideoRequest`.
        destination: Any fsspec URL or local folder (`./videos`, `s3://bucket/prefix`).
        credentials: The CometAPI block; `COMETAPI_KEY` and `COMETAPI_BASE_URL` are used
            when omitted.
        idempotency_key: One job per key. By default derived from the request and the flow
            run, so flow and task retries never create a second job.
        ledger_uri: The job ledger's folder (any fsspec URL). A key protects against paying
            twice wherever runs share its ledger: by default the ledger sits beside the
            videos, so give one shared `ledger_uri` to keep a key when `destination` changes.
        if_outcome_unknown: When a create may have reached the server unanswered and the
            job cannot be found by key: `"fail"` (default) or `"recreate"`.
        timeout_seconds: How long to wait for the generation.
        poll_interval_seconds: The first poll interval; it grows towards the cap.
        max_poll_interval_seconds: The largest poll interval.
        max_video_bytes: Refuse result files larger than this.
        strict_output: Fail (with `OutputMismatchError`) when the stored video's frame or
            duration differs from the request; by default it is a logged warning and a
            flag in the summary artifact.
        wait: `"poll"` waits in this run. `"suspend"` (deployment runs at the top level
            only; refused before paying otherwise) suspends the run while the job renders:
            its process exits, and the `comet-sweeper` deployment or the callback receiver
            resumes it when the job is done; the resumed run pays nothing again.
        callback_base_url: The public URL of a `prefect-comet callbacks` receiver. A Kling
            job then carries a `callback_url` with a per-job token (never the API key) and
            the wait ends at its callback; polling goes on, slowly, as the source of truth.
            Needs a callback secret (the block's `callback_secret` or
            `COMETAPI_CALLBACK_SECRET`). Omni has no callbacks: ignored there.
        max_spend_usd: Refuse (before paying, `BudgetExceededError`) a job whose price
            passes this or the account's balance (read from CometAPI's query service).
        price_per_job_usd: The job's price: one number, or prices by `model`,
            `model/mode`, `model/duration`, `model/mode/duration` or `*` (no price API is
            documented: take them from CometAPI's model page).
        create_rate_limit: A Prefect global concurrency limit with slot decay; the paid
            create takes one slot (`prefect gcl create NAME --limit 500
            --slot-decay-per-second 0.00579` keeps every flow of an account under 500 a day).

    Returns:
        The stored video: URI, SHA-256, size and the frame size and duration read from it.

    Example:
        ```python
        from prefect import flow
        from prefect_comet import OmniVideoRequest, generate_video

        @flow
        async def daily_clip():
            stored = await generate_video(
                OmniVideoRequest(prompt="Ocean waves at golden hour"),
                destination="s3://my-bucket/clips",
                idempotency_key="daily-clip-2026-11-24",
            )
            return stored.uri
        ```
    """
    options = GenerationOptions.from_parameters(locals())
    check_callbacks(credentials, options)
    if options.wait == "suspend":
        require_suspendable()
    await label_run_with_ledger(JobLedger.of(destination, ledger_uri))  # for its cancellation hook
    await require_rate_limit(options.create_rate_limit)
    budget = budget_for(credentials, max_spend_usd, price_per_job_usd)
    if budget is not None:
        await budget.check_estimate([request])
    key = idempotency_key or idempotency_key_for(request)
    while True:
        try:
            return await produce_video(
                request, idempotency_key=key, destination=destination, credentials=credentials,
                options=options, ledger_uri=ledger_uri,
            )
        except StillRendering as still:
            # Returns only when this round's suspension already fired: look again.
            await suspend_until_done(
                [still.job], resume_when_done=1, credentials_block=block_name(credentials),
                timeout_seconds=options.timeout_seconds,
            )


async def produce_video(
    request: VideoRequest,
    *,
    idempotency_key: str,
    destination: str,
    credentials: CometAPICredentials | None,
    options: GenerationOptions,
    ledger_uri: str | None = None,
    on_admitted: Callable[[], None] | None = None,
    on_generated: Callable[[], None] | None = None,
    on_refused: OnRefused | None = None,
    steps_as_tasks: bool = True,
    budget: Budget | None = None,
    started: StoredVideo | VideoJob | None = None,
) -> StoredVideo:
    """Create (or resume) the job for a key, wait for it and store its videos.

    The ledger is checked first: a key whose videos are stored and still verify returns
    them without any API call.

    Args:
        request: The generation request.
        idempotency_key: One job per key.
        destination: Any fsspec URL or local folder.
        credentials: The CometAPI block, or None for the environment.
        options: Timeouts, poll cadence, size cap, ambiguous-create policy.
        ledger_uri: The job ledger's folder; beside the videos when None.
        on_admitted: Called once the server has taken the job.
        on_generated: Called once the server is done with it (before the download).
        on_refused: What a refused create waits for (a batch's window); used with the steps
            inline (`steps_as_tasks=False`), as a task's parameters are recorded.
        steps_as_tasks: Run create, wait and persist as task runs of their own. A batch
            runs each job as one task and its steps inside it: a third of the server writes.
        budget: What the paid create must fit in (used with the steps inline).
        started: What `start_video` already gave for this key (the batch creates before the
            job's task run starts): the ledger check and the create are skipped.

    Returns:
        The stored video.

    Raises:
        StillRendering: With `options.wait == "suspend"`: the job is not done yet (the run
            suspends; nothing is downloaded).
    """
    ledger = JobLedger.of(destination, ledger_uri)
    if started is None:
        started = await start_video(
            request, idempotency_key=idempotency_key, destination=destination, credentials=credentials,
            options=options, ledger_uri=ledger_uri, on_refused=on_refused, steps_as_tasks=steps_as_tasks,
            budget=budget,
        )
    if isinstance(started, StoredVideo):
        return started
    job = started
    wait, persist = (wait_for_video, persist_video) if steps_as_tasks else (wait_for_video.fn, persist_video.fn)
    if on_admitted:
        on_admitted()
    if options.wait == "suspend":
        await _unless_done(job, credentials, ledger, options)
    calls_back = options.callback_base_url is not None and job.provider == "kling"
    interval = options.callback_poll_interval_seconds if calls_back else None
    try:
        job = await wait(
            job,
            credentials,
            timeout_seconds=options.timeout_seconds,
            poll_interval_seconds=interval or options.poll_interval_seconds,
            max_poll_interval_seconds=interval or options.max_poll_interval_seconds,
            publish_artifacts=options.per_job_artifacts,
            wake_on_callbacks=calls_back,
        )
    except GenerationFailedError as error:
        ledger.record_outcome(idempotency_key, error=str(error))
        raise
    if on_generated:
        on_generated()
    stored = await persist(
        job,
        destination,
        credentials,
        max_video_bytes=options.max_video_bytes,
        publish_artifacts=options.per_job_artifacts,
    )
    ledger.record_outcome(idempotency_key, stored=stored)
    return _checked(stored, options)


async def start_video(
    request: VideoRequest,
    *,
    idempotency_key: str,
    destination: str,
    credentials: CometAPICredentials | None,
    options: GenerationOptions,
    ledger_uri: str | None = None,
    on_refused: OnRefused | None = None,
    steps_as_tasks: bool = True,
    budget: Budget | None = None,
) -> StoredVideo | VideoJob:
    """The first half of `produce_video`: the key's stored video, or the job created (or resumed) for it.

    A key whose videos are stored and still verify returns them without any API call; else
    the destination is checked and the job created once (see `produce_video` for the args).
    """
    ledger = JobLedger.of(destination, ledger_uri)
    stored = _already_stored(ledger, idempotency_key, destination)
    if stored is not None:
        get_run_logger().info("Already stored for idempotency key %s: %s", idempotency_key, stored.uri)
        return _checked(stored, options)
    ensure_writable(destination)  # a destination that cannot take the video fails before paying
    request = with_callback_url(request, idempotency_key, credentials, options)
    if steps_as_tasks:
        return await create_video(
            request, credentials, idempotency_key, ledger.uri, options.if_outcome_unknown, options.create_rate_limit
        )
    return await create_and_announce(
        request, credentials, idempotency_key, ledger.uri, options.if_outcome_unknown, on_refused=on_refused,
        rate_limit=options.create_rate_limit, budget=budget,
    )


def budget_for(
    credentials: CometAPICredentials | None, max_spend_usd: float | None, prices: PricePerJob | None
) -> Budget | None:
    """The run's budget when a cap or prices are given (the balance is read only then)."""
    if max_spend_usd is None and prices is None:
        return None
    if max_spend_usd is not None and max_spend_usd < 0:
        raise ValueError(f"max_spend_usd: must be 0 or more, got {max_spend_usd}")

    async def read_balance() -> float | None:
        block = credentials or CometAPICredentials.from_env()
        return (await block.get_balance()).balance_usd

    return Budget(max_spend_usd, prices, read_balance)


async def require_rate_limit(name: str | None) -> None:
    """Refuse a create rate limit that does not exist or has no slot decay, before anything is paid.

    Raises:
        ValueError: Naming the limit and how to create it.
    """
    if not name:
        return
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            limit = None
    if limit is None or not limit.slot_decay_per_second:
        raise ValueError(
            f"create_rate_limit: {name!r} must be a global concurrency limit with slot decay; create it "
            f"first (prefect gcl create {name} --limit 500 --slot-decay-per-second 0.00579 for 500 a day)"
        )


def block_name(credentials: CometAPICredentials | None) -> str | None:
    """The name a saved block was loaded by (what another process may load), else None."""
    return getattr(credentials, "_block_document_name", None)


def check_callbacks(credentials: CometAPICredentials | None, options: GenerationOptions) -> str | None:
    """The callback secret when callbacks are asked for, checked before anything is paid.

    Raises:
        ValueError: `callback_base_url` is not an http(s) URL, or no callback secret is set.
    """
    base = options.callback_base_url
    if not base:
        return None
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"callback_base_url: must be an http(s) URL of a callback receiver, got {base!r}")
    configured = getattr(credentials, "callback_secret", None)
    secret = callback_secret(configured.get_secret_value() if configured else None)
    if secret is None:
        raise ValueError(
            "callback_base_url: needs a callback secret to sign each job's callback URL. What to do: "
            f"set callback_secret on the credentials block or the {SECRET_VARIABLE} environment variable "
            "(the same one the receiver uses)."
        )
    return secret


def with_callback_url(
    request: VideoRequest, key: str, credentials: CometAPICredentials | None, options: GenerationOptions
) -> VideoRequest:
    """The request with its per-job `callback_url` when callbacks are on (Kling only)."""
    secret = check_callbacks(credentials, options)
    if secret is None or not isinstance(request, KlingOmniVideoRequest) or request.callback_url:
        return request
    url = callback_url_for(options.callback_base_url or "", key, secret, current_flow_run_id())
    return request.model_copy(update={"callback_url": url})


async def _unless_done(
    job: VideoJob, credentials: CometAPICredentials | None, ledger: JobLedger, options: GenerationOptions
) -> None:
    """For a suspending run: one look; a job still rendering raises `StillRendering` (or times out)."""
    async with borrow_client(credentials) as client:
        seen = await look_once(client, job)
    if seen.status.is_terminal:
        return
    record = ledger.get(job.idempotency_key or "")
    age = time.time() - record.created_at.timestamp() if record is not None else 0.0
    if age > options.timeout_seconds:
        raise WaitTimeoutError(
            f"The job did not finish within {options.timeout_seconds:g} s; last status "
            f"{seen.raw_status or seen.status.value!r}. It may still finish: resume with "
            "wait_for_video using this task id.",
            task_id=job.task_id,
            last_status=seen.raw_status or seen.status.value,
        )
    raise StillRendering(seen)


def _already_stored(ledger: JobLedger, key: str, destination: str) -> StoredVideo | None:
    """The key's verified video, from its ledger record, or from its sidecar when the record is damaged."""
    try:
        record = ledger.get(key)
    except OSError as error:  # e.g. a path through a regular file: one line saying what to do
        problem = unusable_destination(error, ledger.uri)
        if problem is None:
            raise
        raise problem from error
    except LedgerDamagedError:
        stored = stored_for_key(destination, key)
        if stored is None:
            raise
        get_run_logger().warning("The ledger record of key %s is damaged; its sidecar names %s.", key, stored.uri)
        return stored
    return verified(record.stored) if record is not None and record.state == "stored" else None


def _checked(stored: StoredVideo, options: GenerationOptions) -> StoredVideo:
    # The video stays stored (it was paid for); strict output only fails the run.
    if options.strict_output and stored.mismatches:
        raise OutputMismatchError(
            f"The video stored at {stored.uri} is not what was asked for: "
            f"{'; '.join(stored.mismatches)}. What to do: accept it (strict_output=False) "
            "or change the request.",
            task_id=stored.task_id,
        )
    return stored
