"""Exactly once across processes: two runs of one key, on one ledger, end with one job.

Real separate processes are released at the same instant for each key, on a local ledger and
on S3 (the moto server), and call the create step directly. Two `generate_videos` runs with
one batch_key, and the file deployment run twice, are also checked by the emulator's count.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from prefect.settings import PREFECT_API_URL

from prefect_comet.testing.emulator import CometEmulator
from tests._resilience import leftovers
from tests._server import Background, prefect_env, wait_until
from tests.conftest import API_KEY
from tests.race_create import ROUNDS


def _race(tmp_path: Path, emu: CometEmulator, ledger_uri: str, destination: str) -> list[dict]:
    """Run both sides of the race; their results by key."""
    env = {**os.environ, "COMETAPI_KEY": API_KEY, "COMETAPI_BASE_URL": emu.base_url, "PYTHONUNBUFFERED": "1"}
    start_at = time.time() + 15  # both sides have imported everything by then, even on a busy machine
    sides = []
    try:
        for side in ("a", "b"):
            command = [sys.executable, "-m", "tests.race_create", ledger_uri, destination, str(start_at),
                       str(tmp_path / f"{side}.json")]
            sides.append(Background(f"race-{side}", command, env=env, log_dir=tmp_path))
        for side in sides:
            wait_until(side.exited, timeout=180, what=f"{side.name} to finish")
            assert side.process.returncode == 0, side.tail()
    finally:
        for side in sides:
            side.stop()
    return [json.loads((tmp_path / f"{side}.json").read_text()) for side in ("a", "b")]


def _assert_one_job_per_key(emu: CometEmulator, a: dict, b: dict) -> None:
    keys = [f"race-{index}" for index in range(ROUNDS)]
    assert not [(key, side[key]["error"]) for side in (a, b) for key in keys if "error" in side[key]]
    assert emu.created_per_key() == dict.fromkeys(keys, 1)  # every key paid exactly once
    for key in keys:
        assert a[key] == b[key]  # both sides return the same stored video
        assert a[key]["sha256"] == emu.sha256(a[key]["task_id"])


def test_two_processes_on_one_local_ledger_create_each_key_once(tmp_path):
    with CometEmulator(api_key=API_KEY, latency=0.5) as emu:
        a, b = _race(tmp_path, emu, str(tmp_path / "ledger"), str(tmp_path / "videos"))
        _assert_one_job_per_key(emu, a, b)
    assert not [name for name in leftovers(tmp_path / "videos") if "partial" in name]


def test_two_processes_on_one_s3_ledger_create_each_key_once(tmp_path, s3_server, s3_bucket):
    with CometEmulator(api_key=API_KEY, latency=0.5) as emu:
        a, b = _race(tmp_path, emu, f"s3://{s3_bucket}/ledger", f"s3://{s3_bucket}/videos")
        _assert_one_job_per_key(emu, a, b)
    names = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert not [name for name in names if "partial" in name]


def test_two_batch_runs_with_one_batch_key_pay_once_per_request(tmp_path):
    requests = tmp_path / "prompts.jsonl"
    requests.write_text("".join(json.dumps({"prompt": f"A lantern, take {n}"}) + "\n" for n in range(5)))
    script = (
        "import asyncio, sys\n"
        "from prefect_comet import generate_videos\n"
        "result = asyncio.run(generate_videos(sys.argv[1], destination=sys.argv[2], batch_key='lanterns',\n"
        "                                     poll_interval_seconds=0.1, max_poll_interval_seconds=0.3))\n"
        "print('STORED', result.stored_count)\n"
    )
    with CometEmulator(api_key=API_KEY, latency=1.0) as emu:
        env = prefect_env(tmp_path / "home", PREFECT_API_URL.value(), COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emu.base_url)
        command = [sys.executable, "-c", script, str(requests), str(tmp_path / "videos")]
        runs = [Background(f"batch-{n}", command, env=env, log_dir=tmp_path) for n in range(2)]
        try:
            for run in runs:
                wait_until(run.exited, timeout=240, what=f"{run.name} to finish")
                assert run.process.returncode == 0, run.tail()
                assert "STORED 5" in run.tail()
        finally:
            for run in runs:
                run.stop()
        assert emu.created_per_key() == {f"lanterns-{n}": 1 for n in range(5)}  # creates == requests


async def test_the_file_deployment_run_twice_pays_once_and_a_changed_file_is_a_new_batch(
    tmp_path, credentials, emulator, monkeypatch
):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))
    from batch_from_file import batch_from_file

    monkeypatch.setenv("COMETAPI_KEY", API_KEY)
    monkeypatch.setenv("COMETAPI_BASE_URL", emulator.base_url)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"A kite, take {n}"}) + "\n" for n in range(3)))
    destination = str(tmp_path / "videos")

    for _ in range(2):
        result = await batch_from_file(str(prompts), destination, poll_interval_seconds=0.05)
        assert result.stored_count == 3
    assert len(emulator.jobs) == 3  # the second run paid for nothing

    prompts.write_text(prompts.read_text() + json.dumps({"prompt": "A kite, take 3"}) + "\n")
    result = await batch_from_file(str(prompts), destination, poll_interval_seconds=0.05)
    assert result.stored_count == 4 and len(emulator.jobs) == 3 + 4  # a changed file is a new batch
    assert len({outcome.idempotency_key.rsplit("-", 1)[0] for outcome in result.outcomes}) == 1


async def test_a_new_destination_with_the_same_ledger_pays_nothing_again(tmp_path, credentials, emulator):
    from prefect_comet import OmniVideoRequest, generate_video

    ledger_uri = str(tmp_path / "ledger")
    request = OmniVideoRequest(prompt="A heron at dusk")
    first = await generate_video(
        request, destination=str(tmp_path / "a"), credentials=credentials, idempotency_key="heron",
        ledger_uri=ledger_uri, poll_interval_seconds=0.05,
    )
    Path(first.uri).unlink()  # the first copy is gone (a full disk, a cleanup): store it elsewhere

    second = await generate_video(
        request, destination=str(tmp_path / "b"), credentials=credentials, idempotency_key="heron",
        ledger_uri=ledger_uri, poll_interval_seconds=0.05,
    )

    assert emulator.created_per_key() == {"heron": 1}
    assert second.task_id == first.task_id and second.uri.startswith(str(tmp_path / "b"))
    assert second.sha256 == emulator.sha256(second.task_id)
