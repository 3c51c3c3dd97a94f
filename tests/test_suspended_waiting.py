"""Waiting without holding a worker: `wait="suspend"` deployment runs on a real server and process worker.

One `prefect server start`, the recipe's deployments (`prefect deploy --all`), a process
worker and an emulator whose jobs take a while. A 50-job batch run suspends while its jobs
render (the worker then has no child process), is resumed when they are done (by the
`comet-sweeper` deployment alone, or by the callback receiver with the sweeper paused), and
completes with 50 verified videos from exactly 50 creates.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

from tests._deployments import Stack, children, deployed_stack, flow_run_of
from tests._resilience import ledger_records, leftovers, uri_sha256
from tests._server import Background, free_port, http_ok, wait_until

LATENCY = 25.0  # seconds a job renders: long enough to see the run suspended meanwhile
JOBS = 50
SECRET = "callback-secret-" + secrets.token_hex(4)
CLI = str(Path(sys.executable).parent / "prefect-comet")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with deployed_stack(tmp_path_factory.mktemp("suspend"), latency=LATENCY, secret=SECRET) as stack:
        yield stack


def _prompts(stack: Stack, name: str, kling: bool = False) -> Path:
    path = stack.tmp / f"{name}.jsonl"
    extra = {"duration": "5", "aspect_ratio": "16:9"} if kling else {}  # Kling fields make a Kling request
    path.write_text("".join(json.dumps({"prompt": f"{name} clip {i}", **extra}) + "\n" for i in range(JOBS)))
    return path


async def _start_batch(stack: Stack, name: str, kling: bool = False, **parameters: object) -> UUID:
    async with stack.client() as client:
        deployment = await client.read_deployment_by_name("batch-from-file/batch-from-file")
        run = await client.create_flow_run_from_deployment(
            deployment.id,
            parameters={
                "prompts_uri": str(_prompts(stack, name, kling)), "destination": str(stack.tmp / name),
                "batch_key": name, "max_in_flight": JOBS, "poll_interval_seconds": 0.5, **parameters,
            },
        )
    return run.id


async def _state(stack: Stack, run_id: UUID) -> str:
    async with stack.client() as client:
        run = await client.read_flow_run(run_id)
    return run.state.name if run.state else ""


@dataclass(frozen=True)
class Sample:
    """One look at the run and the worker: when, the run's state, the worker's children, the run's own."""

    at: float
    state: str
    children: int
    of_the_run: int


async def _watch(stack: Stack, run_id: UUID, *, sweep_every: float | None, timeout: float = 600) -> list[Sample]:
    """Until the run is final, a sample every half second; a sweeper run every `sweep_every` s while suspended."""
    samples: list[Sample] = []
    last_sweep = time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await _state(stack, run_id)
        pids = children(stack.worker_pid)
        samples.append(Sample(time.monotonic(), state, len(pids), sum(flow_run_of(p) == str(run_id) for p in pids)))
        if state in ("Completed", "Failed", "Crashed", "Cancelled"):
            return samples
        if sweep_every is not None and state == "Suspended" and time.monotonic() - last_sweep >= sweep_every:
            async with stack.client() as client:
                sweeper = await client.read_deployment_by_name("comet-sweeper/comet-sweeper")
                await client.create_flow_run_from_deployment(sweeper.id)
            last_sweep = time.monotonic()
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} not final after {timeout} s: {samples[-1]}\n{stack.processes['worker'].tail(60)}")


async def _sweeper_runs(stack: Stack) -> int:
    async with stack.client() as client:
        sweeper = await client.read_deployment_by_name("comet-sweeper/comet-sweeper")
        return len(await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[sweeper.id]))))


def _assert_suspended_without_a_process(samples: list[Sample], *, no_sweeper: bool = False) -> None:
    assert [s for s in samples if s.state == "Running" and s.of_the_run], "the run's own process was never seen"
    suspended = [s for s in samples if s.state == "Suspended"]
    assert len(suspended) >= 10, f"the run was hardly ever seen suspended: {samples}"
    # Its process exits about a second after suspending (longer on a busy machine).
    settled = [s for s in suspended if s.at - suspended[0].at > 10]
    assert settled and not [s for s in settled if s.of_the_run], f"the suspended run kept its process: {suspended}"
    if no_sweeper:  # nothing else runs: the worker holds no process at all
        assert [s for s in settled if s.children == 0], f"the worker kept a child process: {suspended}"


def _assert_all_stored_once(stack: Stack, name: str) -> None:
    destination = stack.tmp / name
    keys = [f"{name}-{i}" for i in range(JOBS)]
    per_key = stack.emulator.created_per_key()
    assert {key: per_key.get(key) for key in keys} == dict.fromkeys(keys, 1)  # exactly 50 creates
    records = [r for r in ledger_records(destination)]
    assert sorted(r["state"] for r in records) == ["stored"] * JOBS
    for record in records:
        stored = record["stored"]
        assert uri_sha256(stored["uri"]) == stored["sha256"] == stack.emulator.sha256(record["task_id"])
    assert not [n for n in leftovers(destination) if "partial" in n]
    manifest = [json.loads(line) for p in destination.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert sorted(m["status"] for m in manifest) == ["stored"] * JOBS


@pytest.mark.asyncio(loop_scope="module")
async def test_a_suspended_batch_is_resumed_by_the_sweeper_alone(stack: Stack) -> None:
    run_id = await _start_batch(stack, "swept", wait="suspend")
    samples = await _watch(stack, run_id, sweep_every=15)
    assert samples[-1].state == "Completed", stack.processes["worker"].tail(80)
    _assert_suspended_without_a_process(samples)
    _assert_all_stored_once(stack, "swept")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_suspended_kling_batch_is_resumed_by_its_callbacks_with_the_sweeper_paused(stack: Stack) -> None:
    port = free_port()
    receiver = Background("receiver", [CLI, "callbacks", "--port", str(port)], env=stack.env, log_dir=stack.tmp)
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=60, what="the receiver",
                   process=receiver)
        sweeps_before = await _sweeper_runs(stack)
        run_id = await _start_batch(
            stack, "called", kling=True, wait="suspend", callback_base_url=f"http://127.0.0.1:{port}"
        )
        samples = await _watch(stack, run_id, sweep_every=None)  # no sweep: only callbacks can resume it
    finally:
        receiver.stop()
    assert samples[-1].state == "Completed", f"{stack.processes['worker'].tail(80)}\n{receiver.tail(40)}"
    _assert_suspended_without_a_process(samples, no_sweeper=True)
    _assert_all_stored_once(stack, "called")
    assert await _sweeper_runs(stack) == sweeps_before  # no sweep ran
    delivered = [d for d in stack.emulator.callbacks_sent if d.http_status == 202]
    assert {d.task_status for d in delivered} >= {"succeed"}


@pytest.mark.asyncio(loop_scope="module")
async def test_a_resume_before_the_run_suspended_is_refused_and_no_job_is_left_behind(stack: Stack) -> None:
    run_id = await _start_batch(stack, "early", wait="suspend")
    async with stack.client() as client:
        while (await _state(stack, run_id)) not in ("Running", "Suspended"):
            await asyncio.sleep(0.1)
        assert await _state(stack, run_id) == "Running"
        refused = await client.resume_flow_run(run_id)  # what a fast callback or sweep would send
    assert refused.status.value != "ACCEPT"
    samples = await _watch(stack, run_id, sweep_every=15)
    assert samples[-1].state == "Completed", stack.processes["worker"].tail(80)
    _assert_all_stored_once(stack, "early")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_sweeper_killed_mid_sweep_leaves_no_job_behind(stack: Stack) -> None:
    run_id = await _start_batch(stack, "killed", wait="suspend")
    while (await _state(stack, run_id)) != "Suspended":
        await asyncio.sleep(0.5)
    await asyncio.sleep(LATENCY)  # every job is done: only a sweep stands between the run and its videos
    emu = stack.emulator
    looked_before = sum(r.route == "omni.retrieve" for r in emu.requests)
    emu.add_fault("omni.retrieve", "http_503", times=30)  # the sweep's looks retry: it is caught mid-way
    async with stack.client() as client:
        sweeper = await client.read_deployment_by_name("comet-sweeper/comet-sweeper")
        sweep = await client.create_flow_run_from_deployment(sweeper.id)
    wait_until(lambda: sum(r.route == "omni.retrieve" for r in emu.requests) > looked_before, timeout=120,
               what="the sweep's first look")
    [sweep_process] = children(stack.worker_pid)
    os.kill(sweep_process, signal.SIGKILL)
    async with stack.client() as client:
        while True:
            killed = await client.read_flow_run(sweep.id)
            if killed.state and killed.state.is_final():
                break
            await asyncio.sleep(0.5)
    assert killed.state.name == "Crashed"
    assert await _state(stack, run_id) == "Suspended"
    samples = await _watch(stack, run_id, sweep_every=15)
    assert samples[-1].state == "Completed", stack.processes["worker"].tail(80)
    _assert_all_stored_once(stack, "killed")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_single_video_deployment_run_suspends_and_is_resumed(stack: Stack) -> None:
    destination = stack.tmp / "single"
    async with stack.client() as client:
        deployment = await client.read_deployment_by_name("text-to-video/text-to-video")
        run = await client.create_flow_run_from_deployment(
            deployment.id, parameters={"prompt": "one kite", "destination": str(destination), "wait": "suspend"}
        )
    samples = await _watch(stack, run.id, sweep_every=5)
    assert samples[-1].state == "Completed", stack.processes["worker"].tail(80)
    assert any(sample.state == "Suspended" for sample in samples)
    [record] = ledger_records(destination)
    assert record["state"] == "stored" and stack.emulator.created_per_key()[record["key"]] == 1
    assert uri_sha256(record["stored"]["uri"]) == stack.emulator.sha256(record["task_id"])


def test_a_local_run_asking_to_suspend_is_refused_before_paying(emulator, credentials) -> None:
    from prefect import flow

    from prefect_comet import OmniVideoRequest, generate_video, generate_videos
    from prefect_comet.exceptions import CannotSuspendError

    with pytest.raises(CannotSuspendError, match="deployment run at the top level"):
        asyncio.run(generate_video(OmniVideoRequest(prompt="a kite"), credentials=credentials, wait="suspend"))
    with pytest.raises(CannotSuspendError, match="local run"):
        asyncio.run(generate_videos([{"prompt": "a kite"}], credentials=credentials, wait="suspend"))

    @flow
    async def parent() -> None:
        await generate_video(OmniVideoRequest(prompt="a kite"), credentials=credentials, wait="suspend")

    with pytest.raises(CannotSuspendError, match="a subflow"):
        asyncio.run(parent())
    assert emulator.requests == []  # nothing was sent, nothing paid
