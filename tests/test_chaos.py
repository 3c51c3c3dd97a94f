"""Chaos: a batch of concurrent flows against a server that fails one request in five.

The promise under test: never pay twice, never lose a paid video. 32 jobs (Omni and Kling)
run as concurrent `generate_video` flows with explicit idempotency keys while the emulator
answers 429s, 5xx, dropped connections (before and after doing the work) and cut downloads
at random on every route. Then the user's loop: read the errors, run the same keys again.
A create whose outcome is unknown is sent again (`if_outcome_unknown="recreate"`) only for
keys the server never saw (the dashboard: `created_per_key()`); an Omni job the server did
create but whose answer was lost is resumed by its task id, as the error message advises.
At the end every key has exactly one job and one stored video that hashes as served.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from prefect import flow

from prefect_comet import (
    KlingOmniVideoRequest,
    OmniVideoRequest,
    StoredVideo,
    VideoJob,
    generate_video,
    persist_video,
    wait_for_video,
)
from prefect_comet.exceptions import CometAPIError, CreateOutcomeUnknownError
from prefect_comet.testing.emulator import CometEmulator
from tests._resilience import Starter, ledger_records, uri_sha256
from tests.conftest import API_KEY, FAST

JOBS = 32
FAULT_RATE = 0.2
MAX_ROUNDS = 6


class PaidTwice(AssertionError):
    """A key got more than one job: the one failure this test tolerates, while a library bug lasts."""


def _request(n: int) -> OmniVideoRequest | KlingOmniVideoRequest:
    if n % 2:
        return KlingOmniVideoRequest(prompt=f"Chaos boat number {n}", aspect_ratio="16:9")
    return OmniVideoRequest(prompt=f"Chaos waves number {n}")


async def test_a_batch_under_chaos_pays_once_and_stores_everything(credentials, tmp_path):
    destination = str(tmp_path / "videos")
    keys = {f"chaos-{n}": _request(n) for n in range(JOBS)}
    with CometEmulator(api_key=API_KEY, latency=0.5) as emu:
        chaotic = credentials.model_copy(update={"base_url": emu.base_url})
        emu.set_fault_rate(FAULT_RATE, seed=20261124)  # every route, the transient kinds
        # And for sure, on top: one create of each family taken by the server, its answer lost.
        emu.add_fault("omni.create", "reset_after")
        emu.add_fault("kling.create", "reset_after")
        resumed: list[str] = []

        @flow
        async def resume_by_task_id(task_id: str, provider: str) -> StoredVideo:
            """The documented remedy for a job the server created but whose id was lost."""
            job = await wait_for_video(VideoJob(provider=provider, task_id=task_id), chaotic, **FAST)
            return await persist_video(job, destination, chaotic)

        async def attempt(starter: Starter, key: str, last_error: Exception | None) -> StoredVideo | Exception:
            request = keys[key]
            on_server = [task for task, job in emu.jobs.items() if job.idempotency_key == key]
            unknown = isinstance(last_error, CreateOutcomeUnknownError)
            try:
                if unknown and request.provider == "omni" and on_server:
                    resumed.append(key)
                    return await starter.run(resume_by_task_id, on_server[0], "omni")
                return await starter.run(
                    generate_video, request, destination=destination, credentials=chaotic, idempotency_key=key,
                    if_outcome_unknown="recreate" if unknown and not on_server else "fail", **FAST,
                )
            except CometAPIError as error:
                return error

        stored: dict[str, StoredVideo] = {}
        errors: dict[str, Exception | None] = dict.fromkeys(keys)
        history: list[Counter[str]] = []
        started = time.monotonic()
        for _ in range(MAX_ROUNDS):
            pending = [key for key in keys if key not in stored]
            if not pending:
                break
            starter = Starter(len(pending))
            results = await asyncio.gather(*(attempt(starter, key, errors[key]) for key in pending))
            history.append(Counter(type(result).__name__ for result in results))
            for key, result in zip(pending, results):
                if isinstance(result, StoredVideo):
                    stored[key] = result
                else:
                    errors[key] = result
        elapsed = time.monotonic() - started

        faults = Counter(r.fault for r in emu.requests if r.fault)
        per_key = emu.created_per_key()
        jobs = dict(emu.jobs)
        served = {task_id: emu.sha256(task_id) for task_id in jobs if jobs[task_id].videos}

        # Everything stored under the ledger answers a re-run of the batch without any API call.
        rerun = [key for key in keys if key in stored and _ledger_state(destination, key) == "stored"]
        requests_before = len(emu.requests)
        starter = Starter(len(rerun))
        again = await asyncio.gather(*(
            starter.run(
                generate_video, keys[key], destination=destination, credentials=chaotic,
                idempotency_key=key, **FAST,
            )
            for key in rerun
        ))
        assert len(emu.requests) == requests_before

    summary = f"rounds {history}, faults {dict(faults)}, resumed by task id {resumed}, {elapsed:.1f} s"
    assert sorted(stored) == sorted(keys), f"not stored: {sorted(set(keys) - set(stored))}; {summary}"
    assert set(per_key) == set(keys) and len(jobs) == sum(per_key.values()), summary
    for key, video in stored.items():
        assert jobs[video.task_id].idempotency_key == key  # each key got its own job's video
        assert video.sha256 == served[video.task_id] == uri_sha256(video.uri), key
    assert [video.model_dump() for video in again] == [stored[key].model_dump() for key in rerun]
    assert sum(faults.values()) >= 20 and len(faults) >= 6, summary  # the chaos was real
    assert resumed and len(history) >= 2, summary  # some jobs were resumed by task id
    if twice := {key: count for key, count in per_key.items() if count != 1}:
        raise PaidTwice(f"jobs per key {twice}; {summary}")  # exactly one job per key: nobody paid twice

def _ledger_state(destination: str, key: str) -> str | None:
    return next((record["state"] for record in ledger_records(destination) if record["key"] == key), None)

