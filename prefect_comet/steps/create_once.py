"""Where a paid create is made at most once per idempotency key (and where keys come from).

The ledger records the intent before the request is sent and the task id as soon as it is
known; a key the ledger knows resumes its job instead of paying again.
"""

from __future__ import annotations

import asyncio
import uuid

from prefect_comet import exceptions as exc
from prefect_comet.api.client import CometClient, OnRefused
from prefect_comet.api.families import VideoRequest, provider_for
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.options import IfOutcomeUnknown
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


async def create_once(
    client: CometClient,
    request: VideoRequest,
    *,
    idempotency_key: str,
    ledger: JobLedger | None,
    if_outcome_unknown: IfOutcomeUnknown = "fail",
    on_refused: OnRefused | None = None,
) -> VideoJob:
    """Return the job for `idempotency_key`: the one the ledger knows, or a newly created one.

    The ledger records the intent before the request is sent and the task id as soon as
    it is known. When a create may have reached the server without an answer, the job is
    looked up by key where the API allows it (Kling: `external_task_id`); otherwise
    `if_outcome_unknown` decides for a key whose earlier create ended that way: `"fail"`
    raises `CreateOutcomeUnknownError` (the default; nothing is paid twice), `"recreate"`
    sends the request once more. A send whose own outcome is unknown is never repeated
    on the spot.

    Args:
        client: The API client.
        request: The generation request.
        idempotency_key: The key; the same key never creates a second job.
        ledger: Where records live; None keeps no record.
        if_outcome_unknown: What to do when a create's outcome cannot be known.
        on_refused: Asked when the server refuses the create (429, Kling 1303): True
            resends (the caller waited for room), False leaves it to the client's back-off.

    Returns:
        The job (new, or resumed by task id).
    """
    provider = provider_for(request)
    fingerprint = request_fingerprint(request.model_dump(mode="json"))
    record = ledger.get(idempotency_key) if ledger else None
    if record is not None:
        if record.request_sha256 != fingerprint:
            raise exc.IdempotencyKeyReusedError(
                f"The idempotency key {idempotency_key!r} was first used for a different "
                "request. What to do: use a new key for a new request."
            )
        if record.task_id:
            return _resumed(record, request)
        found = await _look_up(client, request, idempotency_key)
        if found is not None:
            return _remember(ledger, record, found)
        if if_outcome_unknown == "fail":
            raise _unknown(idempotency_key, f"a create was started at {record.created_at:%Y-%m-%d %H:%M:%S} UTC")

    record = LedgerRecord(key=idempotency_key, provider=provider.name, request_sha256=fingerprint, state="creating")
    if ledger:
        record = ledger.put(record)
    try:
        job = await provider.create(
            client, request, idempotency_key=idempotency_key, on_refused=on_refused
        )
    except exc.CreateOutcomeUnknownError as error:
        # "recreate" replaces an earlier unknown outcome once; this send's own unknown
        # outcome is never resent on the spot, or one call could pay twice.
        job = await _look_up(client, request, idempotency_key)
        if job is None:
            raise _unknown(idempotency_key, str(error)) from error
    except exc.ResponseFormatError as error:
        # HTTP 200 with an unusable body: the server took (and bills) the job.
        raise _unknown(idempotency_key, f"the server accepted it but answered: {error}") from error
    except _REFUSED:
        if ledger:  # a refusal proves the server did not take the job
            ledger.forget(idempotency_key)
        raise
    return _remember(ledger, record, job)


def _remember(ledger: JobLedger | None, record: LedgerRecord, job: VideoJob) -> VideoJob:
    if ledger:
        ledger.put(record.model_copy(update={"state": "created", "task_id": job.task_id}))
    return job.model_copy(update={"idempotency_key": record.key})


def _resumed(record: LedgerRecord, request: VideoRequest) -> VideoJob:
    return VideoJob(
        provider=record.provider,
        task_id=str(record.task_id),
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
