"""The Kling callback receiver: refuses what it cannot trust, confirms what it accepts, leaks nothing.

Real Kling jobs on the emulator, the receiver served by uvicorn in this process, callbacks
POSTed with httpx, and events read back from the session's Prefect server. The resume itself
(a suspended deployment run) is `tests/test_suspended_waiting.py`'s; here the call is recorded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.settings import PREFECT_API_URL

from prefect_comet import CometAPICredentials, KlingOmniVideoRequest, VideoJob
from prefect_comet.api.families import PROVIDERS
from prefect_comet.callbacks import confirming
from prefect_comet.callbacks.receiver import MAX_BODY_BYTES, create_receiver_app, receiver_server
from prefect_comet.callbacks.tokens import callback_url_for, token_for
from prefect_comet.steps.ledger import JobLedger
from prefect_comet.testing.emulator import CometEmulator
from prefect_comet.ui.events import video_resource_id
from tests._readback import wait_for_events
from tests._server import Background, wait_until
from tests.conftest import API_KEY

pytestmark = pytest.mark.timeout(300)

SECRET = "callback-secret-test-7d41"
EVENT = confirming.EVENT
CLI = Path(sys.executable).parent / "prefect-comet"


# -- helpers ----------------------------------------------------------------------------------


@asynccontextmanager
async def receiver(credentials: CometAPICredentials, ledger_uri: str | None = None) -> AsyncIterator[tuple[str, FastAPI]]:
    """The receiver served by uvicorn on a free loopback port of this loop, stopped at the end."""
    app = create_receiver_app(credentials, SECRET, ledger_uri)
    server = receiver_server(app)
    listening = socket.create_server(("127.0.0.1", 0))
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{listening.getsockname()[1]}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
        listening.close()


async def create_kling(credentials: CometAPICredentials, key: str) -> VideoJob:
    """A real Kling job on the emulator, created under `key`."""
    async with credentials.get_client() as client:
        request = KlingOmniVideoRequest(prompt=f"A paper kite over a field ({key})", aspect_ratio="16:9")
        return await PROVIDERS["kling"].create(client, request, idempotency_key=key)


async def finished(credentials: CometAPICredentials, task_id: str) -> VideoJob:
    """The job once the emulator says it is done (these GETs come before any callback)."""
    deadline = time.monotonic() + 60
    async with credentials.get_client() as client:
        while True:
            job, _ = await PROVIDERS["kling"].retrieve(client, task_id)
            if job.status.is_terminal or time.monotonic() > deadline:
                return job
            await asyncio.sleep(0.1)


def task_object(job: VideoJob, status: str = "succeed") -> dict:
    """What Kling POSTs: the task object (its claimed status is only a hint)."""
    return {
        "task_id": job.task_id,
        "task_status": status,
        "task_status_msg": "",
        "task_info": {"external_task_id": job.external_task_id},
        "task_result": {"videos": [{"id": "v1", "url": "https://cdn.example/v.mp4?sig=abc", "duration": "5.0"}]},
        "created_at": 1722769557708,
        "updated_at": 1722769557708,
    }


def gets(emulator: CometEmulator) -> int:
    return sum(request.route == "kling.query" for request in emulator.requests)


async def callback_events(resource_id: str) -> list[ReceivedEvent]:
    async with get_client() as client:
        page = await client.read_events(
            EventFilter(event=EventNameFilter(name=[EVENT]), resource=EventResourceFilter(id=[resource_id])), limit=50
        )
    return page.events


async def the_callback_event(resource_id: str) -> ReceivedEvent:
    async with get_client() as client:
        return (await wait_for_events(client, resource_id, {EVENT}))[EVENT]


def slow_gets(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every confirming GET waits `seconds` before it is sent (still a real GET to the emulator)."""
    kling = PROVIDERS["kling"]
    retrieve = kling.retrieve

    async def slowly(client, task_id):
        await asyncio.sleep(seconds)
        return await retrieve(client, task_id)

    monkeypatch.setattr(kling, "retrieve", slowly)


def held_gets(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Every confirming GET waits until the returned event is set (then it is a real GET)."""
    kling = PROVIDERS["kling"]
    retrieve = kling.retrieve
    release = asyncio.Event()

    async def held(client, task_id):
        await release.wait()
        return await retrieve(client, task_id)

    monkeypatch.setattr(kling, "retrieve", held)
    return release


@pytest.fixture
def resumes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, set[str]]]:
    """Every resume the receiver asks for: (flow run id, task ids known done); each is accepted."""
    calls: list[tuple[str, set[str]]] = []

    async def recording(flow_run_id: str, done_task_ids: set[str]) -> bool:
        calls.append((flow_run_id, set(done_task_ids)))
        return True

    monkeypatch.setattr(confirming, "resume_if_ready", recording)
    return calls


# -- what is refused --------------------------------------------------------------------------


async def test_a_callback_without_the_keys_token_is_refused_and_changes_nothing(emulator, credentials, tmp_path, resumes):
    job = await finished(credentials, (await create_kling(credentials, "kite-a")).task_id)
    other = await create_kling(credentials, "kite-b")
    ledger = JobLedger(str(tmp_path / "ledger"))
    run = str(uuid.uuid4())
    body = task_object(job)
    refused = {
        "forged": {"key": "kite-a", "token": token_for("not-the-secret", "kite-a"), "run": run},
        "missing": {"key": "kite-a", "run": run},
        "empty": {"key": "kite-a", "token": "", "run": run},
        "another key's": {"key": "kite-a", "token": token_for(SECRET, "kite-b"), "run": run},
        "no key": {"token": token_for(SECRET, "kite-a"), "run": run},
    }
    before = gets(emulator)

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
        for what, query in refused.items():
            answer = await http.post(f"{url}/kling/callback", params=query, json=body)
            assert answer.status_code == 401, what
        await app.state.confirmer.drained()
        assert gets(emulator) == before  # nothing was asked of the API
        assert ledger.callback_note("kite-a") is None and not (tmp_path / "ledger").exists()
        assert resumes == []

        # The valid one, afterwards: its event is the only one the server gets for the job.
        accepted = await http.post(callback_url_for(url, "kite-a", SECRET, run), json=body)
        assert accepted.status_code == 202
        await the_callback_event(video_resource_id(job))
    assert [event.payload["confirmed"] for event in await callback_events(video_resource_id(job))] == [True]
    assert await callback_events(video_resource_id(other)) == []


async def test_oversize_and_unreadable_bodies_are_refused_before_the_api_is_asked(emulator, credentials):
    job = await create_kling(credentials, "kite-body")
    before = gets(emulator)

    async def chunks():
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            yield b" " * 4096

    async with receiver(credentials) as (url, app), httpx.AsyncClient() as http:
        target = callback_url_for(url, "kite-body", SECRET)
        declared = await http.post(target, content=b"{" + b" " * MAX_BODY_BYTES + b"}")
        streamed = await http.post(target, content=chunks())  # chunked: no Content-Length to go by
        bad_json = await http.post(target, content=b'{"task_id": "task_1", ')
        no_task = await http.post(target, json={"task_status": "succeed"})
        not_an_id = await http.post(target, json={"task_id": "../../etc/passwd"})
        bad_run = await http.post(f"{target}&run=not-a-run", json=task_object(job))
        health = await http.get(f"{url}/healthz")
        await app.state.confirmer.drained()

    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert (bad_json.status_code, no_task.status_code, not_an_id.status_code, bad_run.status_code) == (400,) * 4
    assert health.status_code == 200 and health.json() == {"ok": True}
    assert gets(emulator) == before


# -- what is confirmed ------------------------------------------------------------------------


async def test_a_valid_callback_is_answered_at_once_confirmed_by_one_get_and_told_as_an_event(
    emulator, credentials, tmp_path, resumes, monkeypatch
):
    job = await finished(credentials, (await create_kling(credentials, "kite-ok")).task_id)
    assert job.raw_status == "succeed"
    ledger = JobLedger(str(tmp_path / "ledger"))
    run = str(uuid.uuid4())
    before = gets(emulator)

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient(timeout=60) as http:
        release = held_gets(monkeypatch)  # the confirming GET waits until the answer has come
        answer = await http.post(callback_url_for(url, "kite-ok", SECRET, run), json=task_object(job))
        got_before_the_get = gets(emulator) == before
        release.set()
        await app.state.confirmer.drained()

    assert answer.status_code == 202 and got_before_the_get  # answered at once, not after the GET
    assert gets(emulator) == before + 1
    event = await the_callback_event(video_resource_id(job))
    assert event.payload == {
        "status": "succeeded", "raw_status": "succeed", "progress": 100, "claimed_status": "succeed", "confirmed": True
    }
    assert event.resource["comet.provider"] == "kling" and event.resource["comet.task-id"] == job.task_id
    assert event.resource["comet.key"] == "kite-ok"
    # The run the callback URL names (Prefect may add the test's own run context beside it).
    assert f"prefect.flow-run.{run}" in {r.id for r in event.related if r.role == "flow-run"}
    note = ledger.callback_note("kite-ok")
    assert (note["task_id"], note["status"]) == (job.task_id, "succeeded")
    assert resumes == [(run, {job.task_id})]


async def test_a_claimed_success_the_api_does_not_confirm_moves_nothing(credentials, tmp_path, resumes):
    with CometEmulator(api_key=API_KEY, latency=30) as slow:
        credentials = credentials.model_copy(update={"base_url": slow.base_url})
        job = await create_kling(credentials, "kite-early")
        ledger = JobLedger(str(tmp_path / "ledger"))
        run = str(uuid.uuid4())
        await asyncio.sleep(3.5)  # past the emulator's queued phase (10% of the latency)

        async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
            wrapped = {"code": 0, "data": task_object(job, "succeed")}  # also accepted wrapped
            answer = await http.post(callback_url_for(url, "kite-early", SECRET, run), json=wrapped)
            await app.state.confirmer.drained()

    assert answer.status_code == 202
    event = await the_callback_event(video_resource_id(job))
    assert event.payload["status"] == "running" and event.payload["raw_status"] == "processing"
    assert event.payload["claimed_status"] == "succeed" and event.payload["confirmed"] is True
    assert ledger.callback_note("kite-early")["status"] == "running"
    assert resumes == []  # the API says it is not done: no resume attempt


async def test_a_callback_that_claims_no_end_costs_no_get_and_wakes_no_one(emulator, credentials, tmp_path, resumes):
    job = await create_kling(credentials, "kite-busy-rendering")
    ledger = JobLedger(str(tmp_path / "ledger"))
    before = gets(emulator)

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
        target = callback_url_for(url, "kite-busy-rendering", SECRET, str(uuid.uuid4()))
        answers = [await http.post(target, json=task_object(job, status)) for status in ("submitted", "processing")]
        await app.state.confirmer.drained()

    assert [answer.status_code for answer in answers] == [202, 202]
    assert gets(emulator) == before  # only an end is worth a status request
    event = await the_callback_event(video_resource_id(job))
    assert event.payload["confirmed"] is False and "status" not in event.payload
    assert ledger.callback_note("kite-busy-rendering") is None and resumes == []


async def test_repeated_and_late_deliveries_cost_one_get(emulator, credentials, tmp_path, resumes, monkeypatch):
    job = await finished(credentials, (await create_kling(credentials, "kite-again")).task_id)
    ledger = JobLedger(str(tmp_path / "ledger"))
    run = str(uuid.uuid4())
    before = gets(emulator)

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
        target = callback_url_for(url, "kite-again", SECRET, run)
        slow_gets(monkeypatch, 1.0)  # the first is still in flight while the others come
        while_in_flight = [await http.post(target, json=task_object(job)) for _ in range(5)]
        await app.state.confirmer.drained()
        after_done = [await http.post(target, json=task_object(job, status)) for status in ("succeed", "processing")]
        await app.state.confirmer.drained()

    assert [answer.status_code for answer in while_in_flight + after_done] == [202] * 7
    assert gets(emulator) == before + 1
    assert ledger.callback_note("kite-again")["status"] == "succeeded"  # the late `processing` moved nothing
    assert resumes == [(run, {job.task_id})]


async def test_a_token_for_one_key_does_not_speak_for_another_keys_job(emulator, credentials, tmp_path, resumes, caplog):
    mine = await finished(credentials, (await create_kling(credentials, "kite-mine")).task_id)
    theirs = await finished(credentials, (await create_kling(credentials, "kite-theirs")).task_id)
    ledger = JobLedger(str(tmp_path / "ledger"))
    run = str(uuid.uuid4())

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
        answer = await http.post(callback_url_for(url, "kite-mine", SECRET, run), json=task_object(theirs))
        await app.state.confirmer.drained()
        assert answer.status_code == 202  # the token is right; only the GET shows whose job it is
        assert "not the job of the key" in caplog.text
        assert ledger.callback_note("kite-mine") is None and ledger.callback_note("kite-theirs") is None
        assert resumes == []
        # A valid callback afterwards is told; the dropped one never was.
        await http.post(callback_url_for(url, "kite-mine", SECRET, run), json=task_object(mine))
        await the_callback_event(video_resource_id(mine))
    assert await callback_events(video_resource_id(theirs)) == []


async def test_a_callback_the_api_cannot_confirm_is_told_as_unconfirmed_and_nothing_else(emulator, credentials, tmp_path, resumes):
    ledger = JobLedger(str(tmp_path / "ledger"))
    ghost = VideoJob(provider="kling", task_id=f"task_ghost_{uuid.uuid4().hex[:8]}", external_task_id="kite-ghost")

    async with receiver(credentials, ledger.uri) as (url, app), httpx.AsyncClient() as http:
        answer = await http.post(callback_url_for(url, "kite-ghost", SECRET, str(uuid.uuid4())), json=task_object(ghost))
        await app.state.confirmer.drained()

    assert answer.status_code == 202
    event = await the_callback_event(video_resource_id(ghost))
    assert event.payload == {"claimed_status": "succeed", "confirmed": False}
    assert ledger.callback_note("kite-ghost") is None and resumes == []


async def test_a_full_queue_answers_503(emulator, credentials, monkeypatch, resumes):
    monkeypatch.setattr(confirming, "QUEUE_SIZE", 1)
    monkeypatch.setattr(confirming, "WORKERS", 1)
    job = await create_kling(credentials, "kite-busy")
    slow_gets(monkeypatch, 1.0)

    async with receiver(credentials) as (url, app), httpx.AsyncClient() as http:
        target = callback_url_for(url, "kite-busy", SECRET)
        answers = [await http.post(target, json=task_object(job, status)) for status in ("succeed", "failed", "success")]
        await app.state.confirmer.drained()

    assert [answer.status_code for answer in answers] == [202, 202, 503]  # one confirming, one waiting


async def test_a_run_not_suspended_yet_is_asked_again(emulator, credentials, monkeypatch):
    calls: list[str] = []

    async def not_yet_then_yes(flow_run_id: str, done_task_ids: set[str]) -> bool:
        calls.append(flow_run_id)
        if len(calls) == 2:
            raise RuntimeError("the Prefect API hiccuped")  # logged, never fatal
        return len(calls) >= 3

    monkeypatch.setattr(confirming, "resume_if_ready", not_yet_then_yes)
    monkeypatch.setattr(confirming, "RESUME_RETRY_SECONDS", (0.1, 0.1, 0.1, 0.1))
    job = await finished(credentials, (await create_kling(credentials, "kite-later")).task_id)
    run = str(uuid.uuid4())

    async with receiver(credentials) as (url, app), httpx.AsyncClient() as http:
        await http.post(callback_url_for(url, "kite-later", SECRET, run), json=task_object(job))
        await app.state.confirmer.drained()
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)

    assert calls == [run] * 3  # refused, failed, accepted; then no more


# -- what is logged ---------------------------------------------------------------------------


async def test_no_token_key_or_query_string_in_any_log_line(emulator, credentials, tmp_path, caplog, monkeypatch, resumes):
    for name in ("", "prefect", "prefect_comet", "httpx", "httpcore", "uvicorn", "uvicorn.error", "uvicorn.access"):
        caplog.set_level(logging.DEBUG, logger=name)
    for name in ("uvicorn", "fastapi"):  # Prefect's logging setup keeps them from the root logger
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    job = await finished(credentials, (await create_kling(credentials, "kite-quiet")).task_id)
    theirs = await create_kling(credentials, "kite-loud")
    ghost = VideoJob(provider="kling", task_id="task_ghost_quiet")
    run = str(uuid.uuid4())

    async with receiver(credentials, str(tmp_path / "ledger")) as (url, app), httpx.AsyncClient() as http:
        target = callback_url_for(url, "kite-quiet", SECRET, run)
        answers = [
            await http.post(target, json=task_object(job)),
            await http.post(target, json=task_object(theirs)),
            await http.post(target, json=task_object(ghost)),
            await http.post(target, content=b"not json"),
            await http.post(target, content=b"x" * (MAX_BODY_BYTES + 1)),
            await http.post(target.replace("token=", "token=0"), json=task_object(job)),
            await http.get(f"{url}/healthz?token=abc"),
        ]
        await app.state.confirmer.drained()

    assert [answer.status_code for answer in answers] == [202, 202, 202, 400, 413, 401, 200]
    lines = [f"{caplog.handler.format(record)} {record.args!r} {record.exc_text or ''}" for record in caplog.records]
    assert any("POST /kling/callback 202" in line for line in lines)  # the access lines were caught
    assert any("POST /kling/callback 401" in line for line in lines)
    query = target.split("?", 1)[1]
    secrets = {token_for(SECRET, "kite-quiet"), SECRET, API_KEY, query, "token=", "sig=abc"}
    leaks = [(secret, line) for line in lines for secret in secrets if secret in line]
    assert not leaks, leaks


# -- the command ------------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "COMETAPI_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=PREFECT_API_URL.value(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="200",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@pytest.mark.parametrize("stop_with", ["SIGTERM", "SIGINT"])
def test_the_command_serves_on_a_free_port_and_exits_cleanly_on_a_signal(emulator, tmp_path, stop_with):
    env = _env(tmp_path, COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emulator.base_url, COMETAPI_CALLBACK_SECRET=SECRET)
    # SIGINT as a background shell leaves it (ignored): the command must still stop on it.
    shell = f"trap '' INT; exec {CLI} callbacks --port 0"
    server = Background("callbacks", ["sh", "-c", shell], env=env, log_dir=tmp_path)
    try:
        wait_until(lambda: "listening on http://" in server.log_path.read_text(), timeout=120,
                   what="the receiver's address", process=server)
        output = server.log_path.read_text()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", output).group(1)
        assert f"callback_base_url='{url}'" in output
        assert httpx.get(f"{url}/healthz", timeout=10).json() == {"ok": True}
        forged = httpx.post(f"{url}/kling/callback", params={"key": "k", "token": "t"}, json={}, timeout=10)
        assert forged.status_code == 401

        server.process.send_signal(getattr(signal, stop_with))
        assert server.process.wait(timeout=30) == 0, server.tail()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=5)
        assert SECRET not in server.log_path.read_text() and API_KEY not in server.log_path.read_text()
    finally:
        server.stop()


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)


def test_the_command_without_a_secret_says_how_to_set_one(emulator, tmp_path):
    result = _run(["callbacks", "--port", "0"], _env(tmp_path, COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emulator.base_url))

    line = _one_error_line(result)
    assert result.returncode == 2
    assert "COMETAPI_CALLBACK_SECRET" in line and "callback_secret" in line


def test_the_command_on_a_port_in_use_names_it_and_the_cure(emulator, tmp_path):
    env = _env(tmp_path, COMETAPI_KEY=API_KEY, COMETAPI_BASE_URL=emulator.base_url, COMETAPI_CALLBACK_SECRET=SECRET)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(["callbacks", "--port", str(port)], env)

    line = _one_error_line(result)
    assert result.returncode == 1
    assert f"port {port} " in line and "in use" in line and "--port 0" in line



def test_a_ledger_note_never_goes_back_and_never_touches_the_keys_record(tmp_path):
    ledger = JobLedger(str(tmp_path / "ledger"))

    assert ledger.note_callback("kite-note", "task_n1", "running")
    assert ledger.note_callback("kite-note", "task_n1", "succeeded")
    assert not ledger.note_callback("kite-note", "task_n1", "running")  # arrived late: kept as it was
    assert ledger.callback_note("kite-note")["status"] == "succeeded"
    assert ledger.note_callback("kite-note", "task_n2", "queued")  # another job under the key: a new note
    assert ledger.get("kite-note") is None and list(ledger.records()) == []  # the flow's records are its own
    assert [path.parent.name for path in (tmp_path / "ledger").rglob("*.json")] == ["callbacks"]
