"""The batch flow: many videos, bounded in flight, one connection pool, a manifest."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Sequence

import fsspec
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import concurrency
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from prefect_comet._atomic import write_atomically
from prefect_comet.batch_inputs import BatchItem, load_batch
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.downloads import DEFAULT_MAX_BYTES
from prefect_comet.exceptions import CometAPIError
from prefect_comet.jobs import IfOutcomeUnknown
from prefect_comet.ledger import request_fingerprint
from prefect_comet.models import StoredVideo
from prefect_comet.pipeline import GenerationOptions, produce_video
from prefect_comet.pool import shared_client
from prefect_comet.storage import uri_for
from prefect_comet.window import AdaptiveWindow, patient_creates, requeue_refused_create


class JobOutcome(BaseModel):
    """What became of one request of a batch (a manifest line)."""

    index: int
    idempotency_key: str
    provider: str
    prompt: str | None = None
    status: Literal["stored", "failed"]
    stored: StoredVideo | None = None
    error_type: str | None = None
    error: str | None = None


class BatchResult(BaseModel):
    """Every job's outcome and where the manifest was written.

    Example:
        ```python
        result = await generate_videos("s3://bucket/prompts.jsonl", "s3://bucket/videos")
        print(result.stored_count, "stored;", result.failed_count, "failed; see", result.manifest_uri)
        ```
    """

    manifest_uri: str
    outcomes: list[JobOutcome]

    @property
    def stored_count(self) -> int:
        return sum(outcome.status == "stored" for outcome in self.outcomes)

    @property
    def failed_count(self) -> int:
        return sum(outcome.status == "failed" for outcome in self.outcomes)


class BatchFailedError(CometAPIError):
    """Some jobs of a batch failed and partial results were not allowed."""


@flow(name="generate-videos")
async def generate_videos(
    requests: Sequence[Any] | str,
    destination: str = "./videos",
    credentials: CometAPICredentials | None = None,
    max_in_flight: int = 10,
    concurrency_limit: str | None = None,
    allow_partial: bool = False,
    batch_key: str | None = None,
    if_outcome_unknown: IfOutcomeUnknown = "fail",
    timeout_seconds: float = 1800.0,
    poll_interval_seconds: float = 2.0,
    max_poll_interval_seconds: float = 15.0,
    max_video_bytes: int = DEFAULT_MAX_BYTES,
    strict_output: bool = False,
    per_job_artifacts: bool = False,
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
    in its own task (see `patient_creates`) instead of in the window.

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
        await _require_limit(concurrency_limit)
    run_id = str(FlowRunContext.get().flow_run.id)
    keys = [
        item.idempotency_key or (f"{batch_key}-{index}" if batch_key else _auto_key(run_id, index, item))
        for index, item in enumerate(items)
    ]
    options = GenerationOptions(
        if_outcome_unknown=if_outcome_unknown,
        timeout_seconds=timeout_seconds,
        poll_interval_seconds=poll_interval_seconds,
        max_poll_interval_seconds=max_poll_interval_seconds,
        max_video_bytes=max_video_bytes,
        strict_output=strict_output,
        per_job_artifacts=per_job_artifacts,
    )
    runner = FlowRunContext.get().task_runner
    if isinstance(runner, ThreadPoolTaskRunner):
        outcomes = await _run_here(items, keys, destination, credentials, options, max_in_flight, concurrency_limit)
    else:
        outcomes = await _run_on_runner(
            items, keys, destination, credentials, options, max_in_flight, concurrency_limit
        )
    result = BatchResult(manifest_uri=_write_manifest(destination, outcomes), outcomes=outcomes)
    await _publish_table(result)
    get_run_logger().info(
        "Batch done: %s stored, %s failed; manifest %s", result.stored_count, result.failed_count, result.manifest_uri
    )
    if result.failed_count and not allow_partial:
        raise BatchFailedError(
            f"{result.failed_count} of {len(outcomes)} jobs failed (see {result.manifest_uri}). "
            "What to do: fix them and run the batch again with the same batch_key; stored "
            "videos are not paid for again. Set allow_partial=True to accept partial results."
        )
    return result


def _auto_key(run_id: str, index: int, item: BatchItem) -> str:
    # The flow run and position: a retried run resumes its jobs, a new run pays anew.
    request = item.request.model_dump(mode="json")
    return f"auto-{request_fingerprint({'scope': run_id, 'index': index, 'request': request})[:40]}"


async def _run_here(
    items: list[BatchItem],
    keys: list[str],
    destination: str,
    credentials: CometAPICredentials | None,
    options: GenerationOptions,
    max_in_flight: int,
    concurrency_limit: str | None,
) -> list[JobOutcome]:
    window = AdaptiveWindow(max_in_flight, patience=options.timeout_seconds)

    async def one(index: int) -> JobOutcome:
        try:
            async with _account_slot(concurrency_limit), window.slot() as slot:
                stored = await _generate_one(
                    index,
                    items[index].request,
                    keys[index],
                    destination,
                    credentials,
                    options,
                    on_admitted=slot.admitted,
                    on_generated=slot.release,
                )
        except Exception as error:
            return _outcome(index, items[index], keys[index], error=error)
        return _outcome(index, items[index], keys[index], stored=stored)

    # Holding the pooled client for the whole batch: every task borrows this one pool, and
    # a refused create waits in the window (inside its task) instead of failing it.
    async with shared_client(credentials) as client:
        client.on_create_refused = requeue_refused_create
        return list(await asyncio.gather(*(one(index) for index in range(len(items)))))


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
    on_admitted: Callable[[], None] | None = None,
    on_generated: Callable[[], None] | None = None,
) -> StoredVideo:
    if isinstance(credentials, str):  # a saved block's name: a worker elsewhere loads it
        credentials = await CometAPICredentials.aload(credentials)
    in_window = on_admitted is not None  # without: on a distributed runner's worker
    async with shared_client(credentials) as client, _account_slot(concurrency_limit):
        if not in_window:
            # No window holds this job back, and the account's parallel tasks may stay taken
            # longer than the client's retries last: a refused create waits here instead.
            client.on_create_refused = requeue_refused_create
        with contextlib.nullcontext() if in_window else patient_creates(options.timeout_seconds):
            return await produce_video(
                request,
                idempotency_key=idempotency_key,
                destination=destination,
                credentials=credentials,
                options=options,
                on_admitted=on_admitted,
                on_generated=on_generated,
                steps_as_tasks=False,
            )


async def _require_limit(name: str) -> None:
    # Prefect would run without limiting under a misspelt name; refuse it before paying.
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


def _account_slot(concurrency_limit: str | None) -> contextlib.AbstractAsyncContextManager[Any]:
    # A Prefect global concurrency limit is shared by every flow and worker of the account.
    return concurrency(concurrency_limit, occupy=1) if concurrency_limit else contextlib.nullcontext()


async def _run_on_runner(
    items: list[BatchItem],
    keys: list[str],
    destination: str,
    credentials: CometAPICredentials | None,
    options: GenerationOptions,
    max_in_flight: int,
    concurrency_limit: str | None,
) -> list[JobOutcome]:
    block_name = getattr(credentials, "_block_document_name", None)
    if credentials is not None and not block_name:
        raise ValueError(
            "credentials: with a distributed task runner, pass a saved block "
            "(CometAPICredentials.load('NAME')) so workers load it by name, never a raw key"
        )
    outcomes: list[JobOutcome | None] = [None] * len(items)
    pending: dict[Any, int] = {}
    queue = list(range(len(items)))
    while queue or pending:
        while queue and len(pending) < max_in_flight:
            index = queue.pop(0)
            future = _generate_one.submit(
                index, items[index].request, keys[index], destination, block_name, options, concurrency_limit
            )
            pending[future] = index
        done = await asyncio.to_thread(_first_done, list(pending))
        for future in done:
            index = pending.pop(future)
            try:
                stored = await asyncio.to_thread(future.result)
                outcomes[index] = _outcome(index, items[index], keys[index], stored=stored)
            except Exception as error:
                outcomes[index] = _outcome(index, items[index], keys[index], error=error)
    return [outcome for outcome in outcomes if outcome is not None]


def _first_done(futures: list[Any]) -> set[Any]:
    from prefect.futures import as_completed

    return {next(as_completed(futures))}


def _outcome(
    index: int,
    item: BatchItem,
    key: str,
    *,
    stored: StoredVideo | None = None,
    error: BaseException | None = None,
) -> JobOutcome:
    return JobOutcome(
        index=index,
        idempotency_key=key,
        provider=item.request.provider,
        prompt=getattr(item.request, "prompt", None),
        status="stored" if stored is not None else "failed",
        stored=stored,
        error_type=type(error).__name__ if error else None,
        error=str(error) if error else None,
    )


def _write_manifest(destination: str, outcomes: list[JobOutcome]) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = str(FlowRunContext.get().flow_run.id)[:8]
    fs, root = fsspec.core.url_to_fs(destination)
    fs.makedirs(root, exist_ok=True)
    path = f"{root.rstrip('/')}/manifest-{stamp}-{run}.jsonl"
    lines = "".join(outcome.model_dump_json() + "\n" for outcome in outcomes)
    write_atomically(fs, path, lines.encode())
    return uri_for(fs, path)


async def _publish_table(result: BatchResult) -> None:
    from prefect.artifacts import acreate_table_artifact

    rows = [
        {
            "#": outcome.index,
            "status": outcome.status,
            "prompt": (outcome.prompt or "")[:60],
            "task id": outcome.stored.task_id if outcome.stored else "",
            "uri": outcome.stored.uri if outcome.stored else "",
            "mismatch": "; ".join(outcome.stored.mismatches) if outcome.stored else "",
            "error": (outcome.error or "")[:120],
        }
        for outcome in result.outcomes
    ]
    try:
        await acreate_table_artifact(
            table=rows, key="video-batch", description=f"Manifest: {result.manifest_uri}"
        )
    except Exception as error:  # artifact trouble never fails a batch
        get_run_logger().warning("Could not publish the batch table artifact: %s", error)
