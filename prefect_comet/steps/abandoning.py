"""A cancelled or crashed run's unstored jobs: marked `abandoned`, announced, and how to collect them.

Neither API family documents a route to cancel a job, so a job whose run is cancelled keeps
rendering (and billing) on the server. If such a route is ever documented, cancel the job in
`_abandon`, before its record is marked.

How the jobs are found: a run that creates or resumes a job writes its flow run id into the
job's ledger record, and, before its first create, puts the ledger's URI on itself as a flow
run label (`comet.ledger.<hash>`). Prefect runs `on_cancellation` and `on_crashed` hooks in the
run's own process or, for a deployment run, in the worker that started it: the labels tell
either one where the ledgers are, whatever its working directory.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.logging.loggers import flow_run_logger

from prefect_comet._files import redact_url, short_hash
from prefect_comet._logging import current_flow_run_id, run_logger
from prefect_comet.models import VideoJob, VideoStatus
from prefect_comet.steps.ledger import JobLedger, LedgerRecord
from prefect_comet.ui.events import emit_video_event

LEDGER_LABEL = "comet.ledger"
# How many task ids the final state message lists; the run's log lists them all.
MESSAGE_TASK_IDS = 20
# Subflows of subflows are followed this deep (a pipeline's batch flow is one level).
SUBFLOW_DEPTH = 3
# Prefect's runner records Cancelled after the hooks; the message is added once it has.
RESTATE_WAIT_SECONDS = 120.0
RESTATE_SETTLE_SECONDS = 15.0
_labels: dict[tuple[int, str, str], asyncio.Future[None]] = {}


async def label_run_with_ledger(ledger: JobLedger) -> None:
    """Put the ledger's URI on the current flow run (once per run and ledger) and wait for it.

    The flows call this first, while the server is idle; `create_once` only starts it
    (`start_labelling`), so a busy server never holds back a paid create.

    Example:
        ```python
        await label_run_with_ledger(JobLedger.beside("s3://bucket/videos"))
        ```
    """
    labelling = start_labelling(ledger)
    if labelling is not None:
        await labelling


def start_labelling(ledger: JobLedger) -> asyncio.Future[None] | None:
    """Start putting the ledger's URI on the current flow run, once per run and ledger; None outside a run."""
    run_id = current_flow_run_id()
    if run_id is None:
        return None
    key = (id(asyncio.get_running_loop()), run_id, ledger.location)
    if key not in _labels:
        _labels[key] = asyncio.ensure_future(_label(run_id, ledger.location))
    return _labels[key]


async def _label(run_id: str, location: str) -> None:
    if redact_url(location) != location:  # a URL carrying credentials never goes on a run
        run_logger().warning("The ledger's URL carries credentials: if this run is cancelled, its "
                             "unstored jobs are not marked abandoned (`prefect-comet jobs` lists them).")
        return
    try:
        async with get_client() as client:
            await client.update_flow_run_labels(UUID(run_id), {f"{LEDGER_LABEL}.{short_hash(location)}": location})
    except Exception as error:
        run_logger().warning(
            "Could not label flow run %s with its ledger (%s): if it is cancelled, its unstored jobs are "
            "not marked abandoned (`prefect-comet jobs` lists them).", run_id, type(error).__name__,
        )


@dataclass(frozen=True)
class Abandoned:
    """What a stopped run left: jobs created and not stored, and creates whose outcome is unknown.

    Args:
        jobs: The abandoned jobs' records (each has its task id).
        unknown: Records of creates that were being sent when the run stopped (no task id).
        ledgers: The ledgers they are in.
    """

    jobs: list[LedgerRecord]
    unknown: list[LedgerRecord]
    ledgers: list[str]

    def message(self) -> str:
        """What the run's log and final state say: the task ids, and how to collect them."""
        parts = []
        if self.jobs:
            listed = ", ".join(record.task_id or "" for record in self.jobs[:MESSAGE_TASK_IDS])
            more = f" and {len(self.jobs) - MESSAGE_TASK_IDS} more" if len(self.jobs) > MESSAGE_TASK_IDS else ""
            ledgers = " ".join(f"--ledger {redact_url(uri)}" for uri in self.ledgers[:1])
            parts.append(
                f"{len(self.jobs)} jobs created and not stored are abandoned; they may still render and bill on "
                f"CometAPI: tasks {listed}{more}. Collect them without paying again: run again with the same "
                f"keys (the same batch_key), or `prefect-comet resume KEY {ledgers}` each "
                f"(`prefect-comet jobs {ledgers} --state abandoned` lists them)."
            )
        if self.unknown:
            keys = ", ".join(record.key for record in self.unknown[:MESSAGE_TASK_IDS])
            parts.append(
                f"{len(self.unknown)} creates were being sent (keys {keys}): their outcome is unknown; a run "
                "with the same keys finds them (Kling) or follows if_outcome_unknown."
            )
        return " ".join(parts)


async def abandon_unstored_jobs(flow: Any, flow_run: FlowRun, state: State) -> None:
    """Prefect hook: mark the jobs a cancelled or crashed run created and did not store `abandoned`.

    Each abandoned job gets a `comet.video.abandoned` event; the run's log lists every task id
    and the final state's message the first ones, with the command that collects them. A run
    with the same keys resumes them by task id: nothing is paid again. The run's subflows (a
    pipeline's batch) are covered too. `generate_video`, `generate_videos` and the pipelines in
    `flows/` carry it; give it to your own flows that call the tasks.

    Args:
        flow: The flow (from Prefect).
        flow_run: The run that was cancelled or crashed.
        state: Its Cancelling or Crashed state.

    Example:
        ```python
        from prefect import flow
        from prefect_comet import abandon_unstored_jobs

        @flow(on_cancellation=[abandon_unstored_jobs], on_crashed=[abandon_unstored_jobs])
        async def nightly(): ...
        ```
    """
    logger = flow_run_logger(flow_run, flow)
    async with get_client() as client:
        runs = await _run_and_subflows(client, flow_run.id)
    left = await asyncio.to_thread(_abandon, runs)
    if not (left.jobs or left.unknown):
        return
    message = left.message()
    logger.warning("This run stopped (%s). %s", state.name, message)
    if state.is_final():  # Crashed already: the message is added now
        await _add_to_final_state(flow_run.id, message)
    else:
        # Cancelling: Prefect records Cancelled once the hooks return, and a worker runs them in
        # a process that ends with them: a detached process of its own adds the message then.
        subprocess.Popen(
            [sys.executable, "-m", __name__, str(flow_run.id), message],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )


async def _run_and_subflows(client: PrefectClient, run_id: UUID) -> list[FlowRun]:
    runs = [await client.read_flow_run(run_id)]  # read again: the hook's copy may predate the labels
    parents = [run_id]
    for _ in range(SUBFLOW_DEPTH):
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=parents)), limit=200
        )
        if not children:
            break
        runs += children
        parents = [child.id for child in children]
    return runs


def _abandon(runs: Iterable[FlowRun]) -> Abandoned:
    runs = list(runs)
    run_ids = {str(run.id) for run in runs}
    ledgers = sorted({uri for run in runs for name, uri in (run.labels or {}).items()
                      if name.startswith(f"{LEDGER_LABEL}.") and isinstance(uri, str)})
    left = Abandoned(jobs=[], unknown=[], ledgers=ledgers)
    for uri in ledgers:
        ledger = JobLedger(uri)
        for record in ledger.records():
            if record.flow_run_id not in run_ids:
                continue
            if record.state == "created":
                record = ledger.put(record.model_copy(update={"state": "abandoned"}))
                emit_video_event("abandoned", _job_of(record), flow_run_id=record.flow_run_id)
            if record.state == "abandoned":
                left.jobs.append(record)
            elif record.state == "creating":  # the create may have reached the server
                left.unknown.append(ledger.put(record.model_copy(update={"state": "unknown"})))
    return left


def _job_of(record: LedgerRecord) -> VideoJob:
    return VideoJob(provider=record.provider, task_id=record.task_id or "", status=VideoStatus.UNKNOWN,
                    idempotency_key=record.key, created_at=record.created_at)


async def _add_to_final_state(run_id: UUID, message: str) -> None:
    """Once the run is Cancelled or Crashed, record that state again with `message` added.

    Watches a while after: Prefect's runner may record its own Cancelled after ours.
    """
    loop = asyncio.get_running_loop()
    deadline, settled = loop.time() + RESTATE_WAIT_SECONDS, None
    try:
        async with get_client() as client:
            while loop.time() < deadline and (settled is None or loop.time() < settled):
                state = (await client.read_flow_run(run_id)).state
                if state is not None and state.type in (StateType.CANCELLED, StateType.CRASHED):
                    if message not in (state.message or ""):
                        said = f"{state.message or ''} {message}".strip()
                        await client.set_flow_run_state(run_id, State(type=state.type, name=state.name, message=said),
                                                        force=True)
                    settled = settled or loop.time() + RESTATE_SETTLE_SECONDS
                elif state is not None and state.is_final():  # completed after all: nothing to add
                    return
                await asyncio.sleep(1.0)
    except Exception as error:  # the log already lists every task id
        run_logger().warning("Could not add the abandoned jobs to run %s's final state: %r", run_id, error)


if __name__ == "__main__":  # the detached process started by `abandon_unstored_jobs`
    asyncio.run(_add_to_final_state(UUID(sys.argv[1]), sys.argv[2]))
