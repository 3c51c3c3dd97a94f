"""The batch flow `generate_videos`: many videos, bounded in flight, one connection pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from prefect_comet.api.client import OnRefused
from prefect_comet.batch.inputs import BatchItem, load_batch
from prefect_comet.batch.manifest import outcome_of, write_manifest
from prefect_comet.batch.parallel_limit import AdaptiveWindow, Patience, account_slot, require_limit
from prefect_comet.credentials import CometAPICredentials, borrow_client
from prefect_comet.exceptions import BatchFailedError, LedgerDamagedError, StillRendering
from prefect_comet.flows import block_name, budget_for, check_callbacks, produce_video, require_rate_limit, start_video
from prefect_comet.models import BatchResult, JobOutcome, StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION, DEFAULTS, GenerationOptions, IfOutcomeUnknown, WaitMode
from prefect_comet.steps.abandoning import abandon_unstored_jobs, label_run_with_ledger
from prefect_comet.steps.budget import Budget, PricePerJob
from prefect_comet.steps.create_once import idempotency_key_for
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.suspension.suspend import require_suspendable, suspend_until_done
from prefect_comet.ui.summary import publish_batch_table


@flow(name="generate-videos", on_cancellation=[abandon_unstored_jobs], on_crashed=[abandon_unstored_jobs])
async def generate_videos(
    requests: Sequence[Any] | str,
    destination: str = DEFAULT_DESTINATION,
    credentials: CometAPICredentials | None = None,
    max_in_flight: int = 10,
    concurrency_limit: str | None = None,
    allow_partial: bool = False,
    batch_key: str | None = None,
    ledger_uri: str | None = None,
    if_outcome_unknown: IfOutcomeUnknown = DEFAULTS.if_outcome_unknown,
    timeout_seconds: float = DEFAULTS.timeout_seconds,
    poll_interval_seconds: float = DEFAULTS.poll_interval_seconds,
    max_poll_interval_seconds: float = DEFAULTS.max_poll_interval_seconds,
    max_video_bytes: int = DEFAULTS.max_video_bytes,
    strict_output: bool = DEFAULTS.strict_output,
    per_job_artifacts: bool = False,
    wait: WaitMode = DEFAULTS.wait,
    resume_batch_size: int | None = None,
    callback_base_url: str | None = DEFAULTS.callback_base_url,
    max_spend_usd: float | None = None,
    price_per_job_usd: PricePerJob | None = None,
    create_rate_limit: str | None = DEFAULTS.create_rate_limit,
) -> BatchResult:
    """Generate many videos with at most `max_in_flight` jobs running at once.

    All requests are validated before the first is sent. Waiting costs one coroutine per
    job on one event loop and one connection pool; a refused create (429, Kling 1303)
    shrinks the window to what the server admits, and it grows back when the server takes
    more (see `AdaptiveWindow`). One job's failure does not stop the others. A JSONL
    manifest of every outcome is written beside the videos, and a table artifact shows it
    in the UI.

    Each job is one task run, `video-<index>`. With a task runner other than the default
    (e.g. `prefect_dask.DaskTaskRunner`) these run on the runner's workers; credentials
    then travel as the name of a saved block, never as a key, and a refused create waits
    in its own task (see `Patience`) instead of in the window.

    Args:
        requests: Requests (models or dicts), or the URL of a JSONL/CSV file of them.
        destination: Any fsspec URL or local folder.
        credentials: The CometAPI block; `COMETAPI_KEY` when omitted.
        max_in_flight: The most jobs running on the server at once (a finished job's
            download does not count).
        concurrency_limit: Name of a Prefect global concurrency limit shared with other
            flows that use the same account (create it with `prefect gcl create`).
        allow_partial: End the flow completed even when some jobs failed.
        batch_key: Job keys become `<batch_key>-<index>`: running the same batch again
            with the same key resumes it instead of paying again. By default keys are
            derived from the flow run.
        ledger_uri: The job ledger's folder (any fsspec URL); beside the videos by default.
            Runs that share it never pay twice for a key, whatever their destination.
        if_outcome_unknown: See `generate_video`.
        timeout_seconds: How long to wait for each generation.
        poll_interval_seconds: The first poll interval of each job.
        max_poll_interval_seconds: The largest poll interval.
        max_video_bytes: Refuse result files larger than this.
        strict_output: Fail (with `OutputMismatchError`) when the stored video's frame or
            duration differs from the request; by default it is a logged warning and a
            flag in the summary artifact.
        per_job_artifacts: Also publish each job's progress, summary and link artifacts
            (off by default: each is a server write, and the batch's table lists every job).
        wait: `"poll"` waits in this run. `"suspend"` (deployment runs at the top level
            only; refused before paying otherwise): after its creates the run suspends and
            its process exits; it is resumed (by the `comet-sweeper` deployment or the
            callback receiver) when its jobs are done, downloads them, creates the next
            ones (at most `max_in_flight` rendering) and suspends again until all are stored.
        resume_batch_size: With `wait="suspend"`, resume once this many of the rendering
            jobs are done (default: all of them).
        callback_base_url: See `generate_video`: Kling jobs call back a receiver there.
        max_spend_usd: The most the batch may spend. Before the first create, the estimate
            (`price_per_job_usd` × jobs) is checked against it and against the account's
            balance: over either, nothing is created (`BudgetExceededError`). During the
            batch, no job is created once the spend (the balance's fall, or the prices when
            the balance is unknown) would pass it: those jobs are `skipped` in the manifest.
        price_per_job_usd: See `generate_video`.
        create_rate_limit: See `generate_video`: shared by every flow of the account.

    Returns:
        Every job's outcome and the manifest's URI.

    Example:
        ```python
        from prefect_comet import OmniVideoRequest, generate_videos

        result = await generate_videos(
            [OmniVideoRequest(prompt=p) for p in ("A red kite", "A blue boat")],
            destination="s3://bucket/videos",
            max_in_flight=20,
            batch_key="launch-teaser",
        )
        ```
    """
    items = load_batch(requests)
    if concurrency_limit:
        await require_limit(concurrency_limit)
    keys = [
        item.idempotency_key or idempotency_key_for(item.request, index=index, batch_key=batch_key)
        for index, item in enumerate(items)
    ]
    plan = _Plan(
        items, keys, destination, ledger_uri, credentials, GenerationOptions.from_parameters(locals()),
        max_in_flight, concurrency_limit,
    )
    check_callbacks(credentials, plan.options)
    await label_run_with_ledger(JobLedger.of(destination, ledger_uri))  # for its cancellation hook
    await require_rate_limit(plan.options.create_rate_limit)
    context = FlowRunContext.get()
    budget = budget_for(credentials, max_spend_usd, price_per_job_usd)
    if budget is not None:
        if not isinstance(context.task_runner, ThreadPoolTaskRunner):
            raise ValueError("max_spend_usd: a budget needs the default task runner (one process admits every create)")
        await budget.check_estimate([item.request for item in items])
    plan = replace(plan, budget=budget)
    if wait == "suspend":
        require_suspendable()  # before anything is paid
        outcomes = await _run_suspending(plan, resume_batch_size or max_in_flight)
    elif isinstance(context.task_runner, ThreadPoolTaskRunner):
        outcomes = await _run_here(plan)
    else:
        outcomes = await _run_on_runner(plan)
    result = BatchResult(
        manifest_uri=write_manifest(destination, str(context.flow_run.id), outcomes), outcomes=outcomes
    )
    if budget is not None:
        result = result.model_copy(update={
            "spent_usd": await budget.spent_usd(),
            "balance_before_usd": budget.balance_before_usd,
            "balance_after_usd": budget.balance_after_usd,
        })
    await publish_batch_table(result)
    get_run_logger().info(
        "Batch done: %s stored, %s failed, %s skipped; spent %s; manifest %s", result.stored_count,
        result.failed_count, result.skipped_count,
        "unknown" if result.spent_usd is None else f"${result.spent_usd:.2f}", result.manifest_uri,
    )
    if result.failed_count and not allow_partial:
        raise BatchFailedError(
            f"{result.failed_count} of {len(outcomes)} jobs failed (see {result.manifest_uri}). "
            "What to do: fix them and run the batch again with the same batch_key; stored "
            "videos are not paid for again. Set allow_partial=True to accept partial results.",
            failed_count=result.failed_count,
            manifest_uri=result.manifest_uri,
        )
    return result


@dataclass(frozen=True)
class _Plan:
    """A validated batch: its requests, their keys and how to run them."""

    items: list[BatchItem]
    keys: list[str]
    destination: str
    ledger_uri: str | None
    credentials: CometAPICredentials | None
    options: GenerationOptions
    max_in_flight: int
    concurrency_limit: str | None
    budget: Budget | None = None

    def outcome(
        self, index: int, *, stored: StoredVideo | None = None, error: BaseException | None = None
    ) -> JobOutcome:
        """The manifest line of job `index`."""
        return outcome_of(index, self.items[index], self.keys[index], stored=stored, error=error)


async def _run_here(plan: _Plan) -> list[JobOutcome]:
    """Every job on this event loop, in one window that learns the parallel-task limit."""
    window = AdaptiveWindow(plan.max_in_flight, patience=plan.options.timeout_seconds)
    creates = _CreatesFirst()

    async def one(index: int) -> JobOutcome:
        try:
            async with account_slot(plan.concurrency_limit), window.slot() as slot:
                started: StoredVideo | VideoJob | Exception
                try:
                    async with creates.sending():
                        started = await start_video(
                            plan.items[index].request, idempotency_key=plan.keys[index],
                            destination=plan.destination, credentials=plan.credentials, options=plan.options,
                            ledger_uri=plan.ledger_uri, on_refused=slot.on_refused, steps_as_tasks=False,
                            budget=plan.budget,
                        )
                except Exception as error:  # the job's task run fails with it: a row like any other
                    started = error
                await creates.settled()
                stored = await _generate_one(
                    index,
                    plan.items[index].request,
                    plan.keys[index],
                    plan.destination,
                    plan.credentials,
                    plan.options,
                    ledger_uri=plan.ledger_uri,
                    on_admitted=slot.admitted,
                    on_generated=slot.release,
                    started=started,
                )
        except Exception as error:
            return plan.outcome(index, error=error)
        return plan.outcome(index, stored=stored)

    # Holding the pooled client for the whole batch: every task borrows this one pool.
    async with borrow_client(plan.credentials):
        return list(await asyncio.gather(*(one(index) for index in range(len(plan.items)))))


class _CreatesFirst:
    """Start the jobs' task runs once the creates being sent have left.

    A task run's start costs this event loop ~10 ms and the Prefect server a burst of writes;
    started between a hundred creates, they slowed the creates (100 creates spread over 3.6 s
    against the plain script's 1.5 s, and every job's end moves with its create). The jobs
    render meanwhile, so a task run may start a little later; never more than `MAX_HOLD_SECONDS`
    later, because a refused create can wait in the window for minutes.
    """

    MAX_HOLD_SECONDS = 2.0

    def __init__(self) -> None:
        self._sending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def sending(self) -> AsyncIterator[None]:
        """Hold task-run starts while the block sends a create."""
        self._sending += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._sending -= 1
            if not self._sending:
                self._idle.set()

    async def settled(self) -> None:
        """Wait until no create is being sent (at most `MAX_HOLD_SECONDS`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.MAX_HOLD_SECONDS)


# One task run per job (its steps run inside it): a batch of hundreds stays readable in the
# UI and costs the server a third of the writes of three task runs per job.
@task(name="generate-one-video", cache_policy=NO_CACHE, task_run_name="video-{index}")
async def _generate_one(
    index: int,
    request: Any,
    idempotency_key: str,
    destination: str,
    credentials: CometAPICredentials | str | None,
    options: GenerationOptions,
    concurrency_limit: str | None = None,
    ledger_uri: str | None = None,
    budget: Budget | None = None,
    on_refused: OnRefused | None = None,
    on_admitted: Callable[[], None] | None = None,
    on_generated: Callable[[], None] | None = None,
    started: StoredVideo | VideoJob | Exception | None = None,
) -> StoredVideo | VideoJob:
    """One job's create, wait and store; with `wait="suspend"`, the job still rendering instead.

    `started` is what `start_video` gave before the task run began (the job, its stored video,
    or why it could not be created); None creates it here.
    """
    if isinstance(started, Exception):
        raise started
    if isinstance(credentials, str):  # a saved block's name: a worker elsewhere loads it
        credentials = await CometAPICredentials.aload(credentials)
    if on_refused is None:
        # On a distributed runner's worker no window holds this job back, and the account's
        # parallel tasks may stay taken longer than the client's retries last.
        on_refused = Patience(options.timeout_seconds).on_refused
    async with borrow_client(credentials), account_slot(concurrency_limit):
        try:
            return await produce_video(
                request,
                idempotency_key=idempotency_key,
                destination=destination,
                credentials=credentials,
                options=options,
                ledger_uri=ledger_uri,
                on_admitted=on_admitted,
                on_generated=on_generated,
                on_refused=on_refused,
                steps_as_tasks=False,
                budget=budget,
                started=started,
            )
        except StillRendering as still:  # not a failure: the run suspends until it is done
            return still.job


async def _run_suspending(plan: _Plan, resume_batch_size: int) -> list[JobOutcome]:
    """Rounds until every job ends: finish the jobs that are done, start the next, then suspend.

    Each round looks once at every job the ledger knows (stored ones cost nothing), creates
    new ones while fewer than `max_in_flight` render, and suspends the run while any renders.
    A resumed run replays the flow: the same keys find the same jobs, nothing is paid twice.
    """
    ledger = JobLedger.of(plan.destination, plan.ledger_uri)
    gate = asyncio.Semaphore(plan.max_in_flight)  # downloads at once
    outcomes: dict[int, JobOutcome] = {}
    rendering: list[VideoJob] = []

    async def one(index: int) -> None:
        async with gate:
            try:
                result = await _generate_one(
                    index, plan.items[index].request, plan.keys[index], plan.destination, plan.credentials,
                    plan.options, plan.concurrency_limit, plan.ledger_uri, plan.budget,
                )
            except Exception as error:
                outcomes[index] = plan.outcome(index, error=error)
                return
        if isinstance(result, VideoJob):
            rendering.append(result)
        else:
            outcomes[index] = plan.outcome(index, stored=result)

    async with borrow_client(plan.credentials):
        while True:
            rendering.clear()
            open_ = [index for index in range(len(plan.items)) if index not in outcomes]
            known = [index for index in open_ if _started(ledger, plan.keys[index])]
            await asyncio.gather(*(one(index) for index in known))
            fresh = [index for index in open_ if index not in known]
            room = max(plan.max_in_flight - len(rendering), 0)
            await asyncio.gather(*(one(index) for index in fresh[:room]))
            if len(outcomes) == len(plan.items):
                return [outcomes[index] for index in range(len(plan.items))]
            if rendering:
                await suspend_until_done(
                    list(rendering), resume_when_done=resume_batch_size, credentials_block=block_name(plan.credentials),
                    timeout_seconds=plan.options.timeout_seconds,
                )


def _started(ledger: JobLedger, key: str) -> bool:
    """Whether the ledger knows the key (a record it cannot read counts: the job's own run says why)."""
    try:
        return ledger.get(key) is not None
    except (LedgerDamagedError, OSError):
        return True


async def _run_on_runner(plan: _Plan) -> list[JobOutcome]:
    """Each job as a task on the runner's workers (e.g. Dask), at most `max_in_flight` submitted."""
    saved_as = block_name(plan.credentials)
    if plan.credentials is not None and not saved_as:
        raise ValueError(
            "credentials: with a distributed task runner, pass a saved block "
            "(CometAPICredentials.load('NAME')) so workers load it by name, never a raw key"
        )
    outcomes: list[JobOutcome | None] = [None] * len(plan.items)
    pending: dict[Any, int] = {}
    queue = list(range(len(plan.items)))
    while queue or pending:
        while queue and len(pending) < plan.max_in_flight:
            index = queue.pop(0)
            future = _generate_one.submit(
                index,
                plan.items[index].request,
                plan.keys[index],
                plan.destination,
                saved_as,
                plan.options,
                plan.concurrency_limit,
                plan.ledger_uri,
            )
            pending[future] = index
        done = await asyncio.to_thread(_first_done, list(pending))
        for future in done:
            index = pending.pop(future)
            try:
                outcomes[index] = plan.outcome(index, stored=await asyncio.to_thread(future.result))
            except Exception as error:
                outcomes[index] = plan.outcome(index, error=error)
    return [outcome for outcome in outcomes if outcome is not None]


def _first_done(futures: list[Any]) -> set[Any]:
    from prefect.futures import as_completed

    return {next(as_completed(futures))}
