"""Kling callbacks end to end: the emulator calls back the `prefect-comet callbacks` receiver, which
wakes the waiting run through a Prefect event; polling stays the source of truth.

The receiver runs as a person runs it (the console script, its own process); the flows run in
this process against the session's Prefect server.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr

from prefect_comet import CometAPICredentials, KlingOmniVideoRequest, generate_video, generate_videos
from prefect_comet.callbacks.tokens import callback_url_for, token_for
from prefect_comet.testing.emulator import CometEmulator
from tests._resilience import ledger_records, uri_sha256
from tests._server import Background, free_port, http_ok, prefect_env, wait_until
from tests.conftest import API_KEY

CLI = str(Path(sys.executable).parent / "prefect-comet")
SECRET = "test-callback-secret"
SLOW_POLL = 40.0  # the default slow poll with callbacks: a job seen before it was woken by its callback


def _start_receiver(tmp_path: Path, emu: CometEmulator) -> tuple[str, Background]:
    port = free_port()
    env = prefect_env(
        tmp_path / "receiver-home", PREFECT_API_URL.value(),
        COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emu.base_url, COMETAPI_CALLBACK_SECRET=SECRET,
    )
    process = Background("receiver", [CLI, "callbacks", "--port", str(port)], env=env, log_dir=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/healthz"), timeout=60, what="the receiver", process=process)
    except BaseException:
        process.stop()
        raise
    return url, process


def _kling(prompt: str) -> KlingOmniVideoRequest:
    return KlingOmniVideoRequest(prompt=prompt, duration="5", aspect_ratio="16:9")


def _credentials(emu: CometEmulator) -> CometAPICredentials:
    return CometAPICredentials(api_key=SecretStr(API_KEY), base_url=emu.base_url)


def test_repeated_reordered_and_lost_callbacks_store_each_job_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMETAPI_CALLBACK_SECRET", SECRET)
    with CometEmulator(
        api_key=API_KEY, latency=3.0, callback_repeats=3, callback_reorder=True, callback_loss=0.3, callback_seed=5
    ) as emu:
        url, process = _start_receiver(tmp_path, emu)
        try:
            result = asyncio.run(
                generate_videos(
                    [_kling(f"kite {i}") for i in range(8)], destination=str(tmp_path / "videos"),
                    credentials=_credentials(emu), batch_key="called-back", callback_base_url=url,
                )
            )
        finally:
            process.stop()
        sent = emu.callbacks_sent
    assert result.stored_count == 8
    assert emu.created_per_key() == {f"called-back-{i}": 1 for i in range(8)}
    assert sorted(r["state"] for r in ledger_records(tmp_path / "videos")) == ["stored"] * 8
    for outcome in result.outcomes:
        assert uri_sha256(outcome.stored.uri) == outcome.stored.sha256
    # The plan really repeated, reordered and lost deliveries.
    assert any(d.dropped for d in sent) and any(not d.dropped for d in sent)
    by_task: dict[str, list[str]] = {}
    for delivery in sent:
        by_task.setdefault(delivery.task_id, []).append(delivery.task_status)
    assert any(statuses.index("succeed") < statuses.index("processing") for statuses in by_task.values())
    assert any(statuses.count("succeed") > 1 for statuses in by_task.values())


def test_a_waiting_job_wakes_on_its_callback_instead_of_its_slow_poll(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMETAPI_CALLBACK_SECRET", SECRET)
    with CometEmulator(api_key=API_KEY, latency=3.0) as emu:
        url, process = _start_receiver(tmp_path, emu)
        try:
            stored = asyncio.run(
                generate_video(
                    _kling("a paper boat"), destination=str(tmp_path / "videos"), credentials=_credentials(emu),
                    idempotency_key="woken", callback_base_url=url,
                )
            )
        finally:
            process.stop()
        [job] = emu.jobs.values()
        looks = [r for r in emu.requests if r.route == "kling.query" and job.task_id in r.path]
    assert stored.sha256 == emu.sha256(job.task_id)
    assert "token=" in job.request["callback_url"] and API_KEY not in job.request["callback_url"]
    token = token_for(SECRET, "woken")
    written = [p.read_text(errors="replace") for p in (tmp_path / "videos").rglob("*.json") if p.is_file()]
    assert written and not [text for text in written if token in text]  # sidecar and ledger: no token
    # Our looks: the first right after the create, the receiver's confirmation of each callback,
    # and ours after the wake-up. None of them waited for the slow poll.
    done_at = job.created_at + 3.0
    assert looks[-1].time - done_at < SLOW_POLL / 4, [round(r.time - job.created_at, 2) for r in looks]


def test_a_callback_that_claims_success_early_downloads_nothing_early(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMETAPI_CALLBACK_SECRET", SECRET)
    latency = 6.0
    with CometEmulator(api_key=API_KEY, latency=latency) as emu:
        url, process = _start_receiver(tmp_path, emu)
        forged: list[int] = []

        async def forge_success() -> None:
            while not emu.jobs:
                await asyncio.sleep(0.05)
            [job] = emu.jobs.values()
            body = {"task_id": job.task_id, "task_status": "succeed",
                    "task_result": {"videos": [{"id": "v", "url": f"{emu.base_url}/forged.mp4", "duration": "5"}]}}
            async with httpx.AsyncClient() as client:
                for _ in range(3):
                    answer = await client.post(callback_url_for(url, "early", SECRET, None), json=body)
                    forged.append(answer.status_code)
                    await asyncio.sleep(0.5)

        async def both() -> object:
            flow = generate_video(
                _kling("a red kite"), destination=str(tmp_path / "videos"), credentials=_credentials(emu),
                idempotency_key="early", callback_base_url=url,
            )
            stored, _ = await asyncio.gather(flow, forge_success())
            return stored

        try:
            stored = asyncio.run(both())
        finally:
            process.stop()
        [job] = emu.jobs.values()
        downloads = [r for r in emu.requests if r.route in ("files", "omni.content")]
    assert forged == [202, 202, 202]
    assert downloads and min(r.time for r in downloads) >= job.created_at + latency
    assert not [r for r in emu.requests if "forged" in r.path]
    assert stored.sha256 == emu.sha256(job.task_id)


@pytest.mark.parametrize(
    ("base_url", "secret", "rule"),
    [("ftp://hooks.example", SECRET, "must be an http"), ("https://hooks.example", None, "needs a callback secret")],
)
def test_callbacks_that_cannot_work_are_refused_before_paying(emulator, credentials, monkeypatch, base_url, secret, rule):
    if secret:
        monkeypatch.setenv("COMETAPI_CALLBACK_SECRET", secret)
    else:
        monkeypatch.delenv("COMETAPI_CALLBACK_SECRET", raising=False)
    with pytest.raises(ValueError, match=f"callback_base_url: {rule}"):
        asyncio.run(generate_videos([_kling("a kite")], credentials=credentials, callback_base_url=base_url))
    with pytest.raises(ValueError, match=f"callback_base_url: {rule}"):
        asyncio.run(generate_video(_kling("a kite"), credentials=credentials, callback_base_url=base_url))
    assert emulator.requests == []
