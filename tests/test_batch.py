"""The batch flow against the emulator: bounded, adaptive, resumable, with a manifest."""

from __future__ import annotations

import asyncio
import json
import uuid

import fsspec
import pytest
from prefect import flow

from prefect_comet import KlingOmniVideoRequest, OmniVideoRequest, generate_videos
from prefect_comet.exceptions import BatchFailedError
from tests.conftest import API_KEY, FAST


def _max_unfinished(emulator) -> int:
    """The most jobs the emulator held unfinished at once, from creation and ready times."""
    spans = [(job.created_at, job.created_at + emulator.settings.latency) for job in emulator.jobs.values()]
    return max(sum(start <= t < end for start, end in spans) for t, _ in spans)


async def test_list_batch_stores_everything_within_the_window(emulator, credentials, tmp_path):
    requests = [OmniVideoRequest(prompt=f"clip {n}") for n in range(8)]

    result = await generate_videos(requests, destination=str(tmp_path), credentials=credentials, max_in_flight=3, **FAST)

    assert result.stored_count == 8 and result.failed_count == 0
    assert {o.stored.sha256 for o in result.outcomes} == {emulator.sha256(o.stored.task_id) for o in result.outcomes}
    assert _max_unfinished(emulator) <= 3
    lines = [json.loads(line) for line in open(result.manifest_uri)]
    assert [line["status"] for line in lines] == ["stored"] * 8


async def test_requests_from_a_jsonl_file_and_a_csv_file(emulator, credentials):
    with fsspec.open("memory://inputs/prompts.jsonl", "w") as file:
        file.write('{"prompt": "a kite"}\n# a comment\n{"prompt": "a boat", "aspect_ratio": "1:1", "duration": "5", "idempotency_key": "boat-1"}\n')
    with fsspec.open("memory://inputs/prompts.csv", "w") as file:
        file.write("prompt,seconds,aspect_ratio\na hill,8,9:16\na lake,,\n")

    jsonl = await generate_videos("memory://inputs/prompts.jsonl", destination="memory://out", credentials=credentials, **FAST)
    csv = await generate_videos("memory://inputs/prompts.csv", destination="memory://out", credentials=credentials, **FAST)

    assert [o.provider for o in jsonl.outcomes] == ["omni", "kling"]
    assert jsonl.outcomes[1].idempotency_key == "boat-1"
    assert [(o.stored.width, o.stored.height) for o in csv.outcomes] == [(720, 1280), (1280, 720)]
    assert csv.outcomes[0].stored.duration_seconds == pytest.approx(8, abs=0.2)


async def test_an_invalid_line_fails_the_batch_before_any_request(emulator, credentials):
    with fsspec.open("memory://inputs/bad.jsonl", "w") as file:
        file.write('{"prompt": "fine"}\n{"prompt": "x", "aspect_ratio": "4:3"}\n')
    with pytest.raises(ValueError, match="line 2") as caught:
        await generate_videos("memory://inputs/bad.jsonl", destination="memory://out", credentials=credentials)
    assert "aspect_ratio" in str(caught.value)
    assert emulator.requests == []


async def test_one_failure_does_not_stop_the_others(emulator, credentials, tmp_path):
    requests = [OmniVideoRequest(prompt="fine 1"), OmniVideoRequest(prompt="broken [fail]"), OmniVideoRequest(prompt="fine 2")]

    with pytest.raises(BatchFailedError, match="1 of 3 jobs failed"):
        await generate_videos(requests, destination=str(tmp_path), credentials=credentials, **FAST)
    result = await generate_videos(
        requests, destination=str(tmp_path / "partial"), credentials=credentials, allow_partial=True, **FAST
    )

    assert [o.status for o in result.outcomes] == ["stored", "failed", "stored"]
    assert result.outcomes[1].error_type == "GenerationFailedError"


async def test_parallel_task_limit_shrinks_the_window_without_failures(credentials, tmp_path):
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=1.0, kling_parallel_limit=3) as emu:
        limited = credentials.model_copy(update={"base_url": emu.base_url})
        requests = [KlingOmniVideoRequest(prompt=f"boat {n}", aspect_ratio="16:9") for n in range(9)]
        state = await generate_videos(
            requests, destination=str(tmp_path), credentials=limited, max_in_flight=6, return_state=True, **FAST
        )
        result = await state.result()
        refused = sum(r.route == "kling.create" for r in emu.requests) - len(emu.jobs)
    assert result.failed_count == 0 and len(emu.jobs) == 9
    assert refused > 0  # the limit was met, and answered by waiting, not failing
    # One task run per job, and no refusal failed one (the server records them from events).
    runs = await _task_runs_of(state.state_details.flow_run_id, expected=9)
    assert sorted(run.name for run in runs) == sorted(f"video-{n}" for n in range(9))
    assert all(run.state.is_completed() for run in runs)


async def test_task_runs_start_once_the_creates_have_left(emulator, credentials, tmp_path):
    # One create's answer trickles in for about a second. A task run's start costs the event
    # loop and the Prefect server; started between the creates, they slowed the creates.
    emulator.add_fault("omni.create", "slow", delay=0.2, chunk_size=32)
    requests = [OmniVideoRequest(prompt=f"clip {n}") for n in range(6)]

    state = await generate_videos(
        requests, destination=str(tmp_path), credentials=credentials, max_in_flight=6, return_state=True, **FAST
    )

    assert (await state.result()).stored_count == 6
    slow = next(r for r in emulator.requests if r.route == "omni.create" and r.fault == "slow")
    runs = await _task_runs_of(state.state_details.flow_run_id, expected=6)
    first_start = min(run.start_time.timestamp() for run in runs)
    assert first_start >= slow.time + 0.8, f"a task run started {first_start - slow.time:.2f} s after the slow create"


async def _task_runs_of(flow_run_id, *, expected: int, timeout: float = 30.0) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            settled = [run for run in runs if run.state and run.state.is_final()]
            if len(settled) >= expected or asyncio.get_running_loop().time() > deadline:
                return runs
            await asyncio.sleep(0.2)


async def test_a_global_concurrency_limit_is_shared_by_concurrent_batches(emulator, credentials, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"comet-account-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=2))

    results = await asyncio.gather(*(
        generate_videos(
            [OmniVideoRequest(prompt=f"shared {batch}-{n}") for n in range(3)],
            destination=str(tmp_path / str(batch)),
            credentials=credentials,
            max_in_flight=3,
            concurrency_limit=name,
            **FAST,
        )
        for batch in range(2)
    ))

    assert [result.stored_count for result in results] == [3, 3]
    assert _max_unfinished(emulator) <= 2  # 2 batches x 3 in flight, held to the account's 2


async def test_an_unknown_concurrency_limit_is_refused_before_any_request(emulator, credentials, tmp_path):
    with pytest.raises(ValueError, match="concurrency_limit: no global concurrency limit is named 'no-such-limit'"):
        await generate_videos(
            [OmniVideoRequest(prompt="never sent")], destination=str(tmp_path), credentials=credentials,
            concurrency_limit="no-such-limit",
        )
    assert emulator.requests == []


async def test_same_batch_key_resumes_without_paying_again(emulator, credentials, tmp_path):
    requests = [OmniVideoRequest(prompt=f"resume {n}") for n in range(4)]
    first = await generate_videos(requests, destination=str(tmp_path), credentials=credentials, batch_key="b1", **FAST)
    jobs_before = len(emulator.jobs)

    again = await generate_videos(requests, destination=str(tmp_path), credentials=credentials, batch_key="b1", **FAST)

    assert len(emulator.jobs) == jobs_before == 4
    assert [o.stored.sha256 for o in again.outcomes] == [o.stored.sha256 for o in first.outcomes]


async def test_batch_runs_inside_a_users_flow(emulator, credentials, tmp_path):
    @flow
    async def nightly() -> int:
        result = await generate_videos(
            [OmniVideoRequest(prompt="nightly")], destination=str(tmp_path), credentials=credentials, **FAST
        )
        return result.stored_count

    assert await nightly() == 1
