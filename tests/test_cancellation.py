"""A deployment run cancelled while its jobs render: nothing is lost, nothing is paid twice.

A real `prefect server start`, the recipe's deployments, a process worker and an emulator whose
jobs take a while. The `batch-from-file` run is cancelled from the API once its jobs are
created; Prefect's worker kills its process and runs the flow's `on_cancellation` hook, which
marks the jobs `abandoned` in the ledger, emits `comet.video.abandoned` for each and lists
their task ids in the run's final state message. A second run with the same batch key then
stores every one of them without a single new create. A run whose process is killed outright
ends Crashed, and the worker's `on_crashed` hook does the same.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Cancelling

from tests._deployments import Stack, children, deployed_stack, flow_run_of
from tests._readback import wait_for_events
from tests._resilience import ledger_records, uri_sha256

JOBS = 6
LATENCY = 45.0  # long enough that every job still renders when the run is cancelled


async def _start(stack: Stack, destination: Path, prompts: Path) -> UUID:
    async with stack.client() as client:
        deployment = await client.read_deployment_by_name("batch-from-file/batch-from-file")
        run = await client.create_flow_run_from_deployment(deployment.id, parameters={
            "prompts_uri": str(prompts), "destination": str(destination), "batch_key": destination.name,
            "max_in_flight": JOBS, "poll_interval_seconds": 0.5, "wait": "poll",
        })
    return run.id


async def _until_final(stack: Stack, run_id: UUID, timeout: float = 300):  # noqa: ANN202
    deadline = time.monotonic() + timeout
    async with stack.client() as client:
        while time.monotonic() < deadline:
            run = await client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run.state
            await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} not final after {timeout} s\n{stack.processes['worker'].tail(60)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("cancel")
    with deployed_stack(tmp, latency=LATENCY, secret="callback-secret-" + secrets.token_hex(4)) as stack:
        yield stack


def _batch(stack: Stack, name: str) -> tuple[Path, Path]:
    prompts = stack.tmp / f"{name}.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"{name} clip {i}"}) + "\n" for i in range(JOBS)))
    return stack.tmp / name, prompts


async def _until_created(stack: Stack, destination: Path) -> None:
    deadline = time.monotonic() + 240
    while sum(r["state"] == "created" for r in ledger_records(destination)) < JOBS:
        assert time.monotonic() < deadline, f"jobs not created: {stack.processes['worker'].tail(60)}"
        await asyncio.sleep(0.5)


async def _final_with_abandoned(stack: Stack, run_id: UUID, timeout: float = 180):  # noqa: ANN202
    """The run's final state, once the hook has added the abandoned jobs to it (or `timeout` passed).

    The hook adds them after Prefect's worker has recorded Cancelled (or Crashed).
    """
    deadline = time.monotonic() + timeout
    while True:
        state = await _until_final(stack, run_id)
        if "abandoned" in (state.message or "") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(1)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_cancelled_deployment_run_abandons_its_jobs_and_a_rerun_stores_them_without_paying(
    stack: Stack,
) -> None:
    destination, prompts = _batch(stack, "cancelled")
    run_id = await _start(stack, destination, prompts)
    await _until_created(stack, destination)
    async with stack.client() as client:
        await client.set_flow_run_state(run_id, Cancelling(message="cancelled by the test"))

    state = await _final_with_abandoned(stack, run_id)
    assert state.type == StateType.CANCELLED, state
    records = ledger_records(destination)
    assert sorted(r["state"] for r in records) == ["abandoned"] * JOBS, records
    task_ids = {r["task_id"] for r in records}
    assert sorted(stack.emulator.created_per_key().values()) == [1] * JOBS
    for task_id in task_ids:
        assert task_id in (state.message or ""), state.message
    assert "prefect-comet resume KEY" in (state.message or "")
    async with stack.client() as client:
        # The batch runs as a subflow of the cancelled run: its jobs are recorded under either.
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id]))
        )
        runs = {f"prefect.flow-run.{run}" for run in [run_id, *(sub.id for sub in subflows)]}
        for record in records:
            assert f"prefect.flow-run.{record['flow_run_id']}" in runs
            events = await wait_for_events(
                client, f"cometapi.video.omni.{record['task_id']}", {"comet.video.abandoned"}
            )
            abandoned = events["comet.video.abandoned"]
            assert f"prefect.flow-run.{record['flow_run_id']}" in {resource.id for resource in abandoned.related}
            assert abandoned.payload["idempotency_key"] == record["key"]
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        assert [log for log in logs if all(task_id in log.message for task_id in task_ids)], "no log lists them"

    rerun = await _start(stack, destination, prompts)
    final = await _until_final(stack, rerun)
    assert final.type == StateType.COMPLETED, stack.processes["worker"].tail(80)
    assert sorted(stack.emulator.created_per_key().values()) == [1] * JOBS  # not one new create
    records = ledger_records(destination)
    assert sorted(r["state"] for r in records) == ["stored"] * JOBS
    assert {r["task_id"] for r in records} == task_ids
    for record in records:
        assert uri_sha256(record["stored"]["uri"]) == stack.emulator.sha256(record["task_id"])


@pytest.mark.asyncio(loop_scope="module")
async def test_a_crashed_deployment_run_abandons_its_jobs(stack: Stack) -> None:
    destination, prompts = _batch(stack, "crashed")
    run_id = await _start(stack, destination, prompts)
    await _until_created(stack, destination)
    [pid] = [pid for pid in children(stack.worker_pid) if flow_run_of(pid) == str(run_id)]
    os.kill(pid, signal.SIGKILL)  # no hook can run in the run's own process

    state = await _final_with_abandoned(stack, run_id)
    assert state.type == StateType.CRASHED, state
    records = ledger_records(destination)
    assert sorted(r["state"] for r in records) == ["abandoned"] * JOBS, records
    for record in records:
        assert record["task_id"] in (state.message or ""), state.message
