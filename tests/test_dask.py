"""The batch flow on a local multi-process Dask cluster: each job is a task in a worker process."""

from __future__ import annotations

import hashlib
import os
import textwrap
import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from pydantic import SecretStr

from prefect_comet import CometAPICredentials, KlingOmniVideoRequest, OmniVideoRequest, generate_videos
from prefect_comet.ui.progress import watch_progress
from tests.conftest import API_KEY, FAST

prefect_dask = pytest.importorskip("prefect_dask")
dask = pytest.importorskip("dask")

CLUSTER = {"n_workers": 2, "processes": True, "threads_per_worker": 1}

# Runs in every Dask worker process at start (Dask's documented preload hook): records the
# worker's pid, and the pid of each task it executes, in a file the test reads afterwards.
_PRELOAD = '''
import os

from distributed import WorkerPlugin

RECORD = {record!r}


class _RecordExecutions(WorkerPlugin):
    def transition(self, key, start, finish, **kwargs):
        if finish == "executing":
            with open(RECORD, "a") as file:
                file.write(f"task {{os.getpid()}} {{key}}\\n")


async def dask_setup(worker):
    with open(RECORD, "a") as file:
        file.write(f"worker {{os.getpid()}}\\n")
    await worker.plugin_add(_RecordExecutions(), name="comet-test-record-executions")
'''


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_batch_runs_on_a_multiprocess_dask_cluster(emulator, tmp_path):
    from prefect_dask import DaskTaskRunner

    await CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emulator.base_url).save(
        "dask-test", overwrite=True
    )
    credentials = await CometAPICredentials.aload("dask-test")
    record = tmp_path / "executions.txt"
    preload = tmp_path / "record_preload.py"
    preload.write_text(textwrap.dedent(_PRELOAD.format(record=str(record))))
    seen_here: list[str] = []
    requests = [OmniVideoRequest(prompt=f"dask clip {n}") for n in range(4)]
    limit = f"dask-account-{uuid.uuid4().hex[:8]}"
    async with get_client() as client:
        await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=1))

    # Callbacks are per process: a job run in this process would report here.
    with dask.config.set({"distributed.worker.preload": [str(preload)]}), watch_progress(
        lambda job: seen_here.append(job.task_id)
    ):
        result = await generate_videos.with_options(task_runner=DaskTaskRunner(cluster_kwargs=CLUSTER))(
            requests, destination=str(tmp_path / "videos"), credentials=credentials, concurrency_limit=limit,
            **FAST,
        )

    assert result.stored_count == 4 and result.failed_count == 0
    assert len(emulator.jobs) == 4
    created = sorted(job.created_at for job in emulator.jobs.values())
    # The account's limit of 1 holds across worker processes: each job starts after the last is done.
    assert all(later - earlier >= emulator.settings.latency for earlier, later in zip(created, created[1:]))
    for outcome in result.outcomes:
        assert outcome.stored.sha256 == emulator.sha256(outcome.stored.task_id)
        assert _sha256(outcome.stored.uri) == outcome.stored.sha256

    lines = [line.split() for line in record.read_text().splitlines()]
    worker_pids = {int(fields[1]) for fields in lines if fields[0] == "worker"}
    task_pids = [int(fields[1]) for fields in lines if fields[0] == "task" and "generate" in fields[2]]
    assert len(worker_pids) == 2 and os.getpid() not in worker_pids
    assert len(task_pids) == 4 and set(task_pids) <= worker_pids
    assert seen_here == []  # no job was polled in the test (flow) process
    # The key never travels: only the block's name does.
    assert all(API_KEY not in r.body.decode(errors="replace") for r in emulator.requests)


async def test_a_refused_create_waits_in_its_worker_instead_of_failing(tmp_path):
    # On Dask no window of the flow holds a job back. The account's one parallel task stays
    # taken for 17 s, longer than the client's own retries last (16 s at most): the refused
    # job must wait in its worker and resend, not fail.
    from prefect_dask import DaskTaskRunner

    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=17.0, kling_parallel_limit=1) as emu:
        await CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url).save(
            "dask-limited", overwrite=True
        )
        credentials = await CometAPICredentials.aload("dask-limited")
        requests = [KlingOmniVideoRequest(prompt=f"dask boat {n}", aspect_ratio="16:9") for n in range(2)]
        result = await generate_videos.with_options(task_runner=DaskTaskRunner(cluster_kwargs=CLUSTER))(
            requests, destination=str(tmp_path / "videos"), credentials=credentials, max_in_flight=2,
            allow_partial=True, **FAST,
        )
        creates = sorted(r.time for r in emu.requests if r.route == "kling.create")

    assert [outcome.error for outcome in result.outcomes] == [None, None]
    assert result.stored_count == 2 and len(emu.jobs) == 2
    refused = len(creates) - 2
    assert 0 < refused <= 17  # it was refused, and asked again at most once a second
    assert all(later - earlier >= 0.99 for earlier, later in zip(creates[1:], creates[2:]))


async def test_an_unsaved_credentials_block_is_refused(emulator, tmp_path):
    from prefect_dask import DaskTaskRunner

    unsaved = CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emulator.base_url)

    with pytest.raises(ValueError, match="saved block") as caught:
        await generate_videos.with_options(task_runner=DaskTaskRunner(cluster_kwargs=CLUSTER))(
            [OmniVideoRequest(prompt="never sent")], destination=str(tmp_path), credentials=unsaved, **FAST
        )

    assert "CometAPICredentials.load('NAME')" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert emulator.requests == []  # refused before any job was sent
