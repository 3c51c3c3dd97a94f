"""`prefect-comet resume`: finish a job the ledger knows by task id: wait, store, pay nothing."""

from __future__ import annotations

from typing import Annotated

import typer
from prefect import flow

from prefect_comet._files import redact_url
from prefect_comet.cli._common import Block, Destination, Ledger, fail, ledger_for, prepare_run
from prefect_comet.credentials import CometAPICredentials
from prefect_comet.exceptions import GenerationFailedError
from prefect_comet.models import StoredVideo, VideoJob
from prefect_comet.options import DEFAULT_DESTINATION
from prefect_comet.steps.ledger import JobLedger, LedgerRecord
from prefect_comet.steps.storing import verified
from prefect_comet.tasks import persist_video, wait_for_video
from prefect_comet.testing.terminal import report, run_pipeline


def resume(
    key: Annotated[str, typer.Argument(metavar="KEY", help="The job's idempotency key (see prefect-comet jobs).")],
    ledger: Ledger = None,
    dest: Destination = DEFAULT_DESTINATION,
    block: Block = None,
) -> None:
    """Finish the job of KEY by its task id: wait for it and store it (no new create, nothing paid)."""
    the_ledger = ledger_for(ledger, dest)
    record = the_ledger.get(key)
    shown = redact_url(the_ledger.uri)
    if record is None:
        fail(f"the ledger at {shown} has no job for key {key!r}. What to do: list its keys with "
             f"`prefect-comet jobs --ledger {shown}`, or give the ledger the job was created with (--ledger/--dest).")
    if record.state == "stored" and (stored := verified(record.stored)) is not None:
        print(f"Already stored for key {key!r}; nothing to do.")
        report(stored)
        return
    if record.task_id is None:
        fail(_no_task_id(record, shown))
    if record.state == "failed":
        fail(f"the job of key {key!r} (task {record.task_id}) failed on the server: {record.error}. Nothing to "
             "resume. What to do: fix the request and generate it again under a new key.")
    credentials = prepare_run(dest, block=block)
    job = VideoJob(provider=record.provider, task_id=record.task_id, idempotency_key=key)
    run_pipeline(
        lambda poll_interval: resume_video(
            job, dest, the_ledger.uri, credentials, poll_interval_seconds=poll_interval
        ),
        emulator=False,
    )


def _no_task_id(record: LedgerRecord, ledger: str) -> str:
    if record.state == "creating":
        why = ("its create is being sent by another run right now, or that run died before the answer; "
               "look again in a few minutes (`prefect-comet jobs`)")
    else:
        why = "its create may have reached CometAPI, but no answer came"
    return (
        f"the job of key {record.key!r} has no task id in the ledger at {ledger} ({record.state}: {why}). "
        "Nothing was sent now. What to do: find the task in the CometAPI dashboard (with its task id, "
        "wait_for_video(VideoJob(provider=..., task_id=...)) finishes it), or generate the request again "
        "under a new --key (this may pay twice)."
    )


@flow(name="resume-video", flow_run_name="resume-{job.task_id}")
async def resume_video(
    job: VideoJob,
    destination: str,
    ledger_uri: str,
    credentials: CometAPICredentials | None = None,
    poll_interval_seconds: float = 2.0,
) -> StoredVideo:
    """Wait for a job known by task id, store its videos and mark its ledger record stored.

    Args:
        job: The job, by provider, task id and idempotency key.
        destination: Any fsspec URL or local folder.
        ledger_uri: The ledger holding the job's record.
        credentials: The CometAPI block; `COMETAPI_KEY` when omitted.
        poll_interval_seconds: The first poll interval.

    Returns:
        The stored video.
    """
    ledger = JobLedger(ledger_uri)
    try:
        done = await wait_for_video(job, credentials, poll_interval_seconds=poll_interval_seconds)
    except GenerationFailedError as error:
        ledger.record_outcome(job.idempotency_key or "", error=str(error))
        raise
    stored = await persist_video(done, destination, credentials)
    ledger.record_outcome(job.idempotency_key or "", stored=stored)
    return stored
