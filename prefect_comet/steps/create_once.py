"""Where a paid create is made at most once per idempotency key (and where keys come from).

The ledger records the intent before the request is sent and the task id as soon as it is
known; a key the ledger knows resumes its job instead of paying again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect.concurrency.asyncio import rate_limit as prefect_rate_limit

from prefect_comet import exceptions as exc
from prefect_comet._logging import current_flow_run_id, run_logger
from prefect_comet.api.client import CometClient, OnRefused
from prefect_comet.api.families import VideoRequest, provider_for
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.options import IfOutcomeUnknown
from prefect_comet.steps.abandoning import start_labelling
from prefect_comet.steps.budget import Budget
from prefect_comet.steps.ledger import JobLedger, LedgerRecord, request_fingerprint

# Create failures that prove the server did not take the job (the client raises
# CreateOutcomeUnknownError for everything after sending that proves nothing).
_REFUSED = (
    exc.BadRequestError,
    exc.AuthenticationError,
    exc.AccountError,
    exc.RateLimitError,
    exc.ServerError,
)


def idempotency_key_for(
    request: VideoRequest, *, index: int | None = None, batch_key: str | None = None
) -> str:
    """The key of a job whose caller gave none, for a single video and a batch alike.

    In a batch with a `batch_key`, job `index` is `<batch_key>-<index>`, so running the batch
    again resumes it. Otherwise the key comes from the request, its place in the batch and
    the current flow run (outside a flow run, the task run): retries of the run reuse its
    jobs, a new run pays anew. Two identical requests in one flow run share a key, so pass
    explicit keys to generate variants of one request.

    Args:
        request: The generation request.
        index: The request's position in a batch; None for a single video.
        batch_key: The batch's key, if it was given one.

    Returns:
        The idempotency key.

    Example:
        ```python
        idempotency_key_for(OmniVideoRequest(prompt="A red kite"))  # "auto-3f2a..."
        idempotency_key_for(request, index=3, batch_key="nightly")  # "nightly-3"
        ```
    """
    if batch_key and index is not None:
        return f"{batch_key}-{index}"
    from prefect.runtime import flow_run, task_run

    scope = flow_run.get_id() or task_run.get_id() or uuid.uuid4().hex
    payload: dict[str, object] = {"scope": str(scope), "request": request.model_dump(mode="json")}
    if index is not None:
        payload["index"] = index
    return f"auto-{request_fingerprint(payload)[:40]}"


# A job that was just created may take a moment to show up in a lookup by key.
_LOOKUP_DELAYS = (0.0, 1.0, 3.0)
# How often a run that lost the claim of a key looks at the winner's record.
_FOLLOW_SECONDS = 0.2


async def create_once(
    client: CometClient,
    request: VideoRequest,
    *,
    idempotency_key: str,
    ledger: JobLedger | None,
    if_outcome_unknown: IfOutcomeUnknown = "fail",
    on_refused: OnRefused | None = None,
    backup: JobLedger | None = None,
    budget: Budget | None = None,
    rate_limit: str | None = None,
) -> VideoJob:
    """Return the job for `idempotency_key`: the one the ledger knows, or a newly created one.

    The key's first record is claimed exclusively before the request is sent, so of two runs
    that start one key at once only one sends; the other follows the winner's record until
    the task id is there and resumes that job (or, when the record stays unchanged for the
    ledger's claim timeout, treats it as left behind). The task id is logged the moment the
    create answers and recorded before anything else can fail; when the ledger cannot be
    written it goes to `backup`, and the error that follows names it.

    When a create may have reached the server without an answer, the job is looked up by
    key where the API allows it (Kling: `external_task_id`); otherwise `if_outcome_unknown`
    decides for a key whose earlier create ended that way: `"fail"` raises
    `CreateOutcomeUnknownError` (the default; nothing is paid twice), `"recreate"` sends the
    request once more. A send whose own outcome is unknown is never repeated on the spot.

    Args:
        client: The API client.
        request: The generation request.
        idempotency_key: The key; the same key never creates a second job.
        ledger: Where records live; None keeps no record.
        if_outcome_unknown: What to do when a create's outcome cannot be known.
        on_refused: Asked when the server refuses the create (429, Kling 1303): True
            resends (the caller waited for room), False leaves it to the client's back-off.
        backup: A second ledger (on this machine) for a task id the ledger cannot take.
        budget: What a paid create must fit in; a job it cannot cover is not created
            (`BudgetExceededError`) and its key stays free.
        rate_limit: A Prefect global concurrency limit with slot decay, one slot taken per
            paid create (resumed jobs take none).

    Returns:
        The job (new, or resumed by task id).
    """
    provider = provider_for(request)
    fingerprint = request_fingerprint(_what_is_paid_for(request))
    run_id = current_flow_run_id()
    fresh = LedgerRecord(
        key=idempotency_key, provider=provider.name, request_sha256=fingerprint, state="creating", flow_run_id=run_id
    )
    if ledger is None:
        return await _send(client, request, fresh, None, None, on_refused, _Paid(budget, rate_limit))
    start_labelling(ledger)  # a cancelled run's hook finds this ledger by it (the flows waited for it)
    while True:
        record = await _settled(ledger, idempotency_key, backup)
        if record is None:
            if ledger.claim(fresh):
                return await _send(client, request, fresh, ledger, backup, on_refused, _Paid(budget, rate_limit))
            continue  # another run claimed the key a moment ago: follow its record
        if record.request_sha256 != fingerprint:
            raise exc.IdempotencyKeyReusedError(
                f"The idempotency key {idempotency_key!r} was first used for a different "
                "request. What to do: use a new key for a new request."
            )
        task_id = record.task_id or _rescued_task_id(backup, idempotency_key)
        if task_id:
            if record.task_id is None:  # found in the backup: the main ledger learns it now
                record = _remember_id(ledger, record.model_copy(update={"flow_run_id": run_id}), task_id, backup)
            elif record.state in ("created", "abandoned") and record.flow_run_id != run_id:
                # This run holds the job now: if it is cancelled in turn, its hook finds the job.
                record = ledger.put(record.model_copy(update={"state": "created", "flow_run_id": run_id}))
            return _resumed(record, request, task_id)
        found = await _look_up(client, request, idempotency_key)
        if found is not None:
            return _remember(ledger, record.model_copy(update={"flow_run_id": run_id}), found, backup)
        if if_outcome_unknown == "fail":
            raise _unknown(idempotency_key, f"a create was started at {record.created_at:%Y-%m-%d %H:%M:%S} UTC")
        resent = ledger.put(record.model_copy(update={"state": "creating", "flow_run_id": run_id}))  # ours now
        return await _send(client, request, resent, ledger, backup, on_refused, _Paid(budget, rate_limit))


async def _settled(ledger: JobLedger, key: str, backup: JobLedger | None) -> LedgerRecord | None:
    """The key's record once no live run is creating it; None while nobody holds the key.

    A `creating` record without a task id belongs to a run sending the create right now,
    unless it stayed unchanged for the ledger's claim timeout (the run died), or the task id
    it lacks is in `backup` (the run could not write it here).
    """
    seen, since, said = None, time.monotonic(), False
    while True:
        record = ledger.get(key)
        if record is None or record.state != "creating" or record.task_id:
            return record
        if _rescued_task_id(backup, key):
            return record
        now = time.monotonic()
        if record.updated_at != seen:
            seen, since = record.updated_at, now
        age = (datetime.now(UTC) - record.updated_at).total_seconds()
        if max(age, now - since) > ledger.claim_timeout_seconds:
            return record
        if not said:
            said = True
            run_logger("prefect_comet.ledger").info(
                "Another run is creating the job for idempotency key %s; following its ledger record.", key
            )
        await asyncio.sleep(_FOLLOW_SECONDS)


async def _send(
    client: CometClient,
    request: VideoRequest,
    record: LedgerRecord,
    ledger: JobLedger | None,
    backup: JobLedger | None,
    on_refused: OnRefused | None,
    paid: _Paid,
) -> VideoJob:
    """Send the create once for a claimed key, and record what came of it."""
    key = record.key

    async def refused(retry_after: float | None) -> bool:
        if ledger is not None:  # a live sender keeps its claim fresh while it waits for room
            ledger.put(record)
        return await on_refused(retry_after) if on_refused is not None else False

    try:
        async with paid.admitted(request):
            job = await provider_for(request).create(client, request, idempotency_key=key, on_refused=refused)
    except exc.CreateOutcomeUnknownError as error:
        # "recreate" replaces an earlier unknown outcome once; this send's own unknown
        # outcome is never resent on the spot, or one call could pay twice.
        job = await _look_up(client, request, key)
        if job is None:
            _mark_unknown(ledger, record)
            raise _unknown(key, str(error)) from error
    except exc.ResponseFormatError as error:
        # HTTP 200 with an unusable body: the server took (and bills) the job.
        _mark_unknown(ledger, record)
        raise _unknown(key, f"the server accepted it but answered: {error}") from error
    except (*_REFUSED, exc.BudgetExceededError):
        if ledger:  # a refusal proves the server did not take the job: the key is free again
            ledger.forget(key)
        raise
    run_logger().info("CometAPI created %s task %s for idempotency key %s.", job.provider, job.task_id, key)
    return _remember(ledger, record, job, backup)


@dataclass(frozen=True)
class _Paid:
    """What a paid create must pass first: the budget, then a slot of the create rate limit."""

    budget: Budget | None
    rate_limit: str | None

    @asynccontextmanager
    async def admitted(self, request: VideoRequest) -> AsyncIterator[None]:
        async with self.budget.admitted(request) if self.budget else nullcontext():
            if self.rate_limit:
                await prefect_rate_limit(self.rate_limit, strict=True)
            yield


def _remember(ledger: JobLedger | None, record: LedgerRecord, job: VideoJob, backup: JobLedger | None) -> VideoJob:
    if ledger is not None:
        _remember_id(ledger, record, job.task_id, backup)
    return job.model_copy(update={"idempotency_key": record.key})


def _remember_id(ledger: JobLedger, record: LedgerRecord, task_id: str, backup: JobLedger | None) -> LedgerRecord:
    """Record the task id; when the ledger cannot take it, keep it in `backup` and say so."""
    created = record.model_copy(update={"state": "created", "task_id": task_id})
    try:
        return ledger.put(created)
    except OSError as error:
        kept = ""
        if backup is not None:
            try:
                backup.put(created)
                kept = f" It is kept in {backup.uri}, so a re-run with the same key resumes it."
            except OSError:
                pass
        raise exc.StorageError(
            f"The job for idempotency key {record.key!r} was created as task {task_id}, but the ledger "
            f"at {ledger.uri} could not record it ({error.strerror or type(error).__name__}).{kept} "
            "What to do: free space or fix access, then run again with the same key: nothing is paid again.",
            task_id=task_id,
        ) from error


def _rescued_task_id(backup: JobLedger | None, key: str) -> str | None:
    try:
        record = backup.get(key) if backup is not None else None
    except exc.LedgerDamagedError:
        return None
    return record.task_id if record is not None else None


def _mark_unknown(ledger: JobLedger | None, record: LedgerRecord) -> None:
    """No live run is creating this key any more; the outcome of its create is unknown."""
    if ledger is None:
        return
    try:
        ledger.put(record.model_copy(update={"state": "unknown"}))
    except OSError as error:  # the error that follows says what to do either way
        run_logger().warning("Could not mark key %s as unknown in the ledger: %r", record.key, error)


def _resumed(record: LedgerRecord, request: VideoRequest, task_id: str) -> VideoJob:
    run_logger().info("Resuming %s task %s of idempotency key %s.", record.provider, task_id, record.key)
    return VideoJob(
        provider=record.provider,
        task_id=task_id,
        status=VideoStatus.QUEUED,
        idempotency_key=record.key,
        created_at=record.created_at,
        request=provider_for(request).summarise(request),
    )


async def _look_up(client: CometClient, request: VideoRequest, key: str) -> VideoJob | None:
    provider = provider_for(request)
    for delay in _LOOKUP_DELAYS:
        await asyncio.sleep(delay)
        try:
            found = await provider.find_by_key(client, key)
        except exc.CometAPIError:
            found = None
        if found is not None or not provider.can_find_by_key:
            return found
    return None


def _unknown(key: str, reason: str) -> exc.CreateOutcomeUnknownError:
    return exc.CreateOutcomeUnknownError(
        f"The job for idempotency key {key!r} may exist, but its task id is not known "
        f"({reason}). It was not sent again, so nothing is paid twice. What to do: find the "
        "task in the CometAPI dashboard and resume it with wait_for_video, or create it anew "
        "with if_outcome_unknown='recreate' (this may pay twice)."
    )


def _what_is_paid_for(request: VideoRequest) -> dict[str, object]:
    """The request as fingerprinted: a callback URL (it names the waiting run) is not part of the job."""
    payload = request.model_dump(mode="json")
    if payload.get("callback_url") is not None:
        payload["callback_url"] = None  # a fingerprint as if none had been given: older records match
    return payload
