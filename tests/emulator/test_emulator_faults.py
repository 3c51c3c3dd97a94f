"""Fault injection, concurrency, padding and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import subprocess
import sys
import time

import httpx
import pytest
from emulator_helpers import KEY, KLING, LATENCY, kling_body, omni_done, omni_form, probe

from prefect_comet.testing.emulator import CometEmulator


def create(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post("/v1/videos", files=omni_form(), headers=headers)


def completed_id(client: httpx.Client) -> str:
    task_id = create(client).json()["id"]
    assert omni_done(client, task_id)["status"] == "completed"
    return task_id


def test_http_429_with_retry_after(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "http_429")
    emu.add_fault("omni.create", "http_429", retry_after=0.5)
    emu.add_fault("kling.create", "http_429", retry_after=2)
    first, second = create(client), create(client)
    assert (first.status_code, first.headers["retry-after"]) == (429, "1")
    assert (second.status_code, second.headers["retry-after"]) == (429, "0.5")
    assert first.json()["error"]["type"] == "comet_api_error"
    kling = client.post(KLING, json=kling_body())
    assert (kling.status_code, kling.headers["retry-after"], kling.json()["code"]) == (429, "2", 1302)
    assert not emu.jobs
    assert create(client).status_code == 200


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_http_5xx_use_gateway_error_shape(client: httpx.Client, emu: CometEmulator, status: int) -> None:
    emu.add_fault("omni.retrieve", f"http_{status}")
    emu.add_fault("kling.create", f"http_{status}")
    retrieve = client.get("/v1/videos/task_x")
    kling = client.post(KLING, json=kling_body())
    for response in (retrieve, kling):
        assert response.status_code == status
        error = response.json()["error"]
        assert error["type"] == "comet_api_error" and "request id" in error["message"]
    assert not emu.jobs


def test_faults_consumed_in_order_and_times(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "http_500", times=2)
    emu.add_fault("omni.create", "http_503")
    assert [create(client).status_code for _ in range(4)] == [500, 500, 503, 200]
    assert [r.fault for r in emu.requests] == ["http_500", "http_500", "http_503", None]


def test_reset_before_does_nothing(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "reset_before")
    with pytest.raises(httpx.TransportError):
        create(client, **{"Idempotency-Key": "k"})
    assert not emu.jobs and emu.created_per_key() == {}
    assert create(client, **{"Idempotency-Key": "k"}).status_code == 200  # same client recovers
    assert emu.created_per_key() == {"k": 1}


def test_reset_after_creates_the_job_but_loses_the_answer(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "reset_after")
    with pytest.raises(httpx.TransportError):
        create(client, **{"Idempotency-Key": "k"})
    assert len(emu.jobs) == 1 and emu.created_per_key() == {"k": 1}
    create(client, **{"Idempotency-Key": "k"})  # a blind retry: a second paid job
    assert emu.created_per_key() == {"k": 2}


def test_reset_after_on_kling_then_duplicate_then_lookup(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("kling.create", "reset_after")
    with pytest.raises(httpx.TransportError):
        client.post(KLING, json=kling_body(external_task_id="ext-1"))
    retry = client.post(KLING, json=kling_body(external_task_id="ext-1"))
    assert retry.status_code == 400 and "duplicate" in retry.json()["message"]
    found = client.get(KLING, params={"external_task_id": "ext-1"})
    assert found.status_code == 200 and found.json()["data"]["task_id"] in emu.jobs
    assert emu.created_per_key() == {"ext-1": 1}


@pytest.mark.parametrize("route", ["omni.content", "files"])
def test_truncate_sends_about_half(client: httpx.Client, emu: CometEmulator, route: str) -> None:
    task_id = completed_id(client)
    url = emu.signed_url(task_id) if route == "files" else f"{emu.base_url}/v1/videos/{task_id}/content"
    size = emu.jobs[task_id].videos[0].size
    emu.add_fault(route, "truncate")
    received = 0
    with pytest.raises(httpx.TransportError):
        with client.stream("GET", url) as response:
            assert response.status_code == 200 and response.headers["content-length"] == str(size)
            for chunk in response.iter_bytes():
                received += len(chunk)
    assert 0 < received < size and abs(received - size // 2) <= 1
    assert len(client.get(url).content) == size  # fault consumed


def test_slow_body_is_complete_but_slow(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed_id(client)
    size = emu.jobs[task_id].videos[0].size
    emu.add_fault("omni.content", "slow", delay=0.02, chunk_size=size // 5 + 1)
    started = time.perf_counter()
    data = client.get(f"/v1/videos/{task_id}/content").content
    assert time.perf_counter() - started >= 0.08  # 5 chunks, 4 pauses
    assert hashlib.sha256(data).hexdigest() == emu.sha256(task_id)


def test_slow_json_answer_is_complete_but_slow(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "slow", delay=0.05, chunk_size=16)
    started = time.perf_counter()
    response = create(client)
    assert time.perf_counter() - started >= 0.2  # a create answer is well over 5 chunks of 16 bytes
    assert response.json()["id"] in emu.jobs


def test_malformed_json(client: httpx.Client, emu: CometEmulator) -> None:
    emu.add_fault("omni.create", "malformed_json")
    response = create(client)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        response.json()
    assert len(emu.jobs) == 1  # the work was done


def test_unknown_status(client: httpx.Client, emu: CometEmulator) -> None:
    omni_id = create(client).json()["id"]
    kling_id = client.post(KLING, json=kling_body()).json()["data"]["task_id"]
    emu.add_fault("omni.retrieve", "unknown_status")
    emu.add_fault("kling.query", "unknown_status")
    assert client.get(f"/v1/videos/{omni_id}").json()["status"] == "mystery"
    assert client.get(f"{KLING}/{kling_id}").json()["data"]["task_status"] == "mystery"
    assert client.get(f"/v1/videos/{omni_id}").json()["status"] in ("queued", "in_progress", "completed")


def test_add_fault_rejects_nonsense(emu: CometEmulator) -> None:
    for route, kind in [
        ("omni.nope", "http_500"),
        ("omni.create", "truncate"),
        ("files", "unknown_status"),
        ("omni.content", "boom"),
    ]:
        with pytest.raises(ValueError):
            emu.add_fault(route, kind)
    with pytest.raises(ValueError):
        emu.set_fault_rate(1.5)


def _random_kinds(seed: int, **options: object) -> list[str | None]:
    with CometEmulator(api_key=KEY, latency=LATENCY) as emu:
        emu.set_fault_rate(0.5, seed=seed, **options)  # type: ignore[arg-type]
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            for _ in range(40):
                with contextlib.suppress(httpx.TransportError):
                    client.get("/v1/videos/task_x")
        return [r.fault for r in emu.requests]


def test_fault_rate_is_seeded_and_transient() -> None:
    kinds = _random_kinds(seed=3)
    assert kinds == _random_kinds(seed=3)
    drawn = {k for k in kinds if k}
    assert 8 <= sum(1 for k in kinds if k) <= 32
    assert drawn <= {
        "http_429",
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "reset_before",
        "reset_after",
    }
    assert {k for k in _random_kinds(seed=3, kinds=["http_503"]) if k} == {"http_503"}
    assert not any(_random_kinds(seed=3, routes=["files"]))


async def test_many_concurrent_clients() -> None:
    """100 concurrent creates, rounds of 200 concurrent polls on 200 connections, 50 downloads.

    Spread over 4 AsyncClients: httpcore's pool costs O(connections) per request, so one
    200-connection client spends seconds on its own bookkeeping; the server does not care.
    """
    async with CometEmulator(api_key=KEY, latency=3.0) as emu:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        headers = {"Authorization": f"Bearer {KEY}"}
        clients = [
            httpx.AsyncClient(base_url=emu.base_url, headers=headers, limits=limits, timeout=30)
            for _ in range(4)
        ]
        try:
            creates = await asyncio.gather(
                *(clients[i % 4].post("/v1/videos", files=omni_form(prompt=f"clip {i}")) for i in range(100))
            )
            ids = [r.json()["id"] for r in creates]
            assert len(set(ids)) == 100 == len(emu.jobs)
            statuses: set[str] = set()
            deadline = time.monotonic() + 40
            while True:  # rounds of 200 concurrent polls until every job completed
                polls = await asyncio.gather(
                    *(clients[i % 4].get(f"/v1/videos/{ids[i % 100]}") for i in range(200))
                )
                assert all(p.status_code == 200 for p in polls)
                round_statuses = {p.json()["status"] for p in polls}
                statuses |= round_statuses
                if round_statuses == {"completed"}:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            assert {"in_progress", "completed"} <= statuses
            downloads = await asyncio.gather(
                *(clients[i % 4].get(f"/v1/videos/{t}/content") for i, t in enumerate(ids[:50]))
            )
            for download, task_id in zip(downloads, ids, strict=False):
                assert hashlib.sha256(download.content).hexdigest() == emu.sha256(task_id)
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))


def test_pad_to_bytes_streams_a_large_valid_file() -> None:
    pad = 6 * 1024 * 1024
    with CometEmulator(api_key=KEY, latency=0.2, pad_to_bytes=pad) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            task_id = completed_id(client)
            digest, size = hashlib.sha256(), 0
            with client.stream("GET", f"/v1/videos/{task_id}/content") as response:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
            assert size >= pad and size == emu.jobs[task_id].videos[0].size
            assert digest.hexdigest() == emu.sha256(task_id)
            width, height, seconds = probe(client.get(f"/v1/videos/{task_id}/content").content)
            assert (width, height) == (1280, 720) and abs(seconds - 4) <= 0.2


def test_cli_serves_until_interrupted() -> None:
    command = [
        sys.executable,
        "-m",
        "prefect_comet.testing.emulator",
        "--port",
        "0",
        "--latency",
        "0.2",
        "--api-key",
        "k",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("CometAPI emulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        assert httpx.get(f"{base_url}/v1/videos/x").status_code == 401
        assert httpx.get(f"{base_url}/v1/videos/x", headers={"Authorization": "Bearer k"}).status_code == 404
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
