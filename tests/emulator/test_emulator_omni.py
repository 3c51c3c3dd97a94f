"""Omni routes (`/v1/videos`) and signed result files, over real HTTP."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from emulator_helpers import KEY, LATENCY, omni_done, omni_form, probe

from prefect_comet.testing.emulator import CometEmulator


def create(client: httpx.Client, **fields: str | None) -> httpx.Response:
    return client.post("/v1/videos", files=omni_form(**fields))


def completed(client: httpx.Client, **fields: str | None) -> dict:
    response = create(client, **fields)
    assert response.status_code == 200, response.text
    body = omni_done(client, response.json()["id"])
    assert body["status"] == "completed", body
    return body


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic test-key"}]
)
def test_bad_or_missing_key_is_401(emu: CometEmulator, headers: dict[str, str]) -> None:
    response = httpx.post(f"{emu.base_url}/v1/videos", files=omni_form(), headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"].startswith("Invalid token (request id: ")
    assert (error["type"], error["param"], error["code"]) == ("comet_api_error", "", "invalid_api_key")
    assert not emu.jobs


def test_any_key_accepted_without_api_key() -> None:
    with CometEmulator(latency=LATENCY) as emu:
        ok = httpx.post(f"{emu.base_url}/v1/videos", files=omni_form(), headers={"Authorization": "Bearer x"})
        missing = httpx.post(
            f"{emu.base_url}/v1/videos", files=omni_form(), headers={"Authorization": "Bearer"}
        )
    assert ok.status_code == 200 and missing.status_code == 401


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"model": None}, "model", "required"),
        ({"model": "sora-2"}, "model", "omni-fast"),
        ({"prompt": None}, "prompt", "required"),
        ({"prompt": "   "}, "prompt", "blank"),
        ({"seconds": "0"}, "seconds", "whole number of seconds from 1 to 60"),
        ({"seconds": "-4"}, "seconds", "whole number"),
        ({"seconds": "4.0"}, "seconds", "whole number"),
        ({"seconds": "four"}, "seconds", "whole number"),
        ({"seconds": "61"}, "seconds", "from 1 to 60"),
        ({"aspect_ratio": "4:3"}, "aspect_ratio", "16:9"),
        ({"resolution": "4k"}, "resolution", "like 720p"),
        ({"resolution": "720"}, "resolution", "followed by p"),
        ({"size": "1280x720"}, "size", "not a supported field"),
    ],
)
def test_create_validation(
    client: httpx.Client, emu: CometEmulator, fields: dict, param: str, words: str
) -> None:
    response = create(client, **fields)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"], error["code"]) == (param, "comet_api_error", "invalid_request")
    assert param in error["message"] and words in error["message"]
    assert not emu.jobs


def test_create_needs_multipart(client: httpx.Client) -> None:
    response = client.post("/v1/videos", json={"model": "omni-fast", "prompt": "x"})
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]


def test_create_answers_task_object_with_defaults(client: httpx.Client, emu: CometEmulator) -> None:
    before = int(time.time())
    body = create(client).json()
    assert body["id"] == body["task_id"] and body["id"].startswith("task_")
    assert {k: body[k] for k in ("object", "model", "status", "progress")} == {
        "object": "video", "model": "omni-fast", "status": "queued", "progress": 0,
    }  # fmt: skip
    assert before <= body["created_at"] <= time.time()
    job = emu.jobs[body["id"]]
    assert job.provider == "omni" and (job.width, job.height, job.duration_seconds) == (1280, 720, 4.0)
    assert job.request == {
        "model": "omni-fast", "prompt": "Ocean waves at golden hour", "seconds": "4",
        "aspect_ratio": "16:9", "resolution": "720p",
    }  # fmt: skip


def test_timeline_progress_then_completed(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = create(client).json()["id"]
    seen = []
    while True:
        body = client.get(f"/v1/videos/{task_id}").json()
        seen.append((body["status"], body["progress"]))
        if body["status"] == "completed":
            break
        time.sleep(0.02)
    statuses = [s for s, _ in seen]
    assert statuses[0] == "queued" and "in_progress" in statuses
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(0 <= p <= 99 for s, p in seen if s == "in_progress")
    assert len({p for s, p in seen if s == "in_progress"}) > 2  # rises, not a single step
    assert body["completed_at"] >= body["created_at"]
    assert body["video_url"].startswith(f"{emu.base_url}/files/{task_id}/")


def test_poll_after_ms_hint_on_retrieve_answers_only_when_set(client: httpx.Client) -> None:
    task_id = create(client).json()["id"]
    assert "openai-poll-after-ms" not in client.get(f"/v1/videos/{task_id}").headers
    with CometEmulator(api_key=KEY, latency=LATENCY, poll_after_ms=500) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as hinted:
            created = create(hinted)
            assert "openai-poll-after-ms" not in created.headers  # the retrieve route only
            task_id = created.json()["id"]
            assert hinted.get(f"/v1/videos/{task_id}").headers["openai-poll-after-ms"] == "500"
            body = omni_done(hinted, task_id)
            assert body["status"] == "completed"
            assert hinted.get(f"/v1/videos/{task_id}").headers["openai-poll-after-ms"] == "500"  # final too
    with pytest.raises(ValueError, match="poll_after_ms"):
        CometEmulator(poll_after_ms=-1)


def test_unknown_task_is_404(client: httpx.Client) -> None:
    for path in ("/v1/videos/task_nope", "/v1/videos/task_nope/content"):
        response = client.get(path)
        assert response.status_code == 404 and "error" in response.json()


def test_content_before_completion_is_invalid_request(client: httpx.Client) -> None:
    task_id = create(client).json()["id"]
    response = client.get(f"/v1/videos/{task_id}/content")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_content_full_and_ranges(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = completed(client)["id"]
    full = client.get(f"/v1/videos/{task_id}/content")
    assert full.status_code == 200
    assert full.headers["content-type"] == "video/mp4" and full.headers["accept-ranges"] == "bytes"
    data = full.content
    assert int(full.headers["content-length"]) == len(data) == emu.jobs[task_id].videos[0].size
    import hashlib

    assert hashlib.sha256(data).hexdigest() == emu.sha256(task_id)
    assert probe(data)[:2] == (1280, 720)

    tail = client.get(f"/v1/videos/{task_id}/content", headers={"Range": "bytes=100-"})
    assert tail.status_code == 206 and tail.content == data[100:]
    assert tail.headers["content-range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    middle = client.get(f"/v1/videos/{task_id}/content", headers={"Range": "bytes=10-19"})
    assert middle.status_code == 206 and middle.content == data[10:20]
    assert middle.headers["content-length"] == "10"
    for bad in (f"bytes={len(data)}-", "bytes=20-10", "items=0-1"):
        response = client.get(f"/v1/videos/{task_id}/content", headers={"Range": bad})
        assert response.status_code == 416, bad
        assert response.headers["content-range"] == f"bytes */{len(data)}"
    head = client.head(f"/v1/videos/{task_id}/content")
    assert (
        head.status_code == 200 and head.headers["content-length"] == str(len(data)) and head.content == b""
    )


def test_signed_file_url(client: httpx.Client, emu: CometEmulator) -> None:
    body = completed(client)
    url = body["video_url"]
    plain = httpx.get(url)  # no Authorization needed
    assert (
        plain.status_code == 200 and plain.content == client.get(f"/v1/videos/{body['id']}/content").content
    )
    assert httpx.get(url, headers={"Range": "bytes=5-9"}).status_code == 206
    base = url.split("?")[0]
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    for bad in (base, forged, base + "?expires=99999999999&signature=abc"):
        assert httpx.get(bad).status_code == 403, bad
    expired = emu.signed_url(body["id"], ttl=-5)
    assert httpx.get(expired).status_code == 403
    assert httpx.get(emu.signed_url(body["id"])).status_code == 200
    other = url.replace(f"/files/{body['id']}/", "/files/task_other/")  # signature bound to the path
    assert httpx.get(other).status_code == 403


def test_content_redirect_mode() -> None:
    with CometEmulator(api_key=KEY, latency=LATENCY, content_redirect=True) as emu:
        with httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {KEY}"}) as client:
            task_id = completed(client)["id"]
            response = client.get(f"/v1/videos/{task_id}/content")
            assert response.status_code == 302
            location = response.headers["location"]
            assert location.startswith(f"{emu.base_url}/files/{task_id}/") and "signature=" in location
            followed = client.get(f"/v1/videos/{task_id}/content", follow_redirects=True)
            assert followed.status_code == 200 and probe(followed.content)[:2] == (1280, 720)


FRAMES = [
    ("720p", "16:9", 1280, 720),
    ("720p", "9:16", 720, 1280),
    ("720p", "1:1", 1280, 720),
    ("1080p", "16:9", 1280, 720),
    ("1080p", "9:16", 720, 1280),
    ("1080p", "1:1", 1280, 720),
]


def test_rendered_frames_follow_the_seed_table(client: httpx.Client) -> None:
    def run(case: tuple[str, str, int, int]) -> tuple[int, int, float]:
        resolution, ratio, _, _ = case
        task_id = completed(client, resolution=resolution, aspect_ratio=ratio)["id"]
        return probe(client.get(f"/v1/videos/{task_id}/content").content)

    with ThreadPoolExecutor(len(FRAMES)) as pool:
        results = list(pool.map(run, FRAMES))
    for (_, _, width, height), (w, h, seconds) in zip(FRAMES, results, strict=True):
        assert (w, h) == (width, height)
        assert abs(seconds - 4) <= 0.2


def test_duration_follows_seconds(client: httpx.Client) -> None:
    task_id = completed(client, seconds="8")["id"]
    assert abs(probe(client.get(f"/v1/videos/{task_id}/content").content)[2] - 8) <= 0.2


def test_free_string_seconds_and_resolution_are_accepted(client: httpx.Client, emu: CometEmulator) -> None:
    # The create page types both as free strings: a length or height the docs never showed is
    # taken (the real API may still refuse it; the emulator cannot know, so it takes it).
    body = completed(client, seconds="6", resolution="480p")
    job = emu.jobs[body["id"]]
    assert job.request["seconds"] == "6" and job.request["resolution"] == "480p"
    assert (job.width, job.height) == (1280, 720)  # the docs show every resolution rendered at 720p
    assert abs(probe(client.get(f"/v1/videos/{body['id']}/content").content)[2] - 6) <= 0.2


def test_every_job_has_unique_bytes(client: httpx.Client, emu: CometEmulator) -> None:
    first, second = completed(client)["id"], completed(client)["id"]
    assert emu.sha256(first) != emu.sha256(second)


def test_prompt_markers(client: httpx.Client) -> None:
    failed = create(client, prompt="a cat [fail]").json()["id"]
    hang = create(client, prompt="a cat [hang]").json()["id"]
    unknown = create(client, prompt="a cat [unknown]").json()["id"]
    body = omni_done(client, failed)
    assert body["status"] == "failed"
    assert body["error"] == {
        "code": "generation_failed",
        "message": "Emulated generation failure (prompt asked for [fail])",
    }
    assert "video_url" not in body
    time.sleep(LATENCY)
    assert client.get(f"/v1/videos/{hang}").json()["status"] == "in_progress"
    assert client.get(f"/v1/videos/{unknown}").json()["status"] == "mystery"
    assert client.get(f"/v1/videos/{failed}/content").status_code == 400


def test_created_per_key_counts_without_deduplicating(client: httpx.Client, emu: CometEmulator) -> None:
    for key in ("k1", "k1", "k2"):
        assert (
            client.post("/v1/videos", files=omni_form(), headers={"Idempotency-Key": key}).status_code == 200
        )
    create(client)  # no key: not counted
    create(client, model="bad")  # rejected: not counted
    assert emu.created_per_key() == {"k1": 2, "k2": 1}
    assert len(emu.jobs) == 4
    assert emu.jobs[next(iter(emu.jobs))].idempotency_key == "k1"


def test_requests_are_recorded_with_redacted_auth(client: httpx.Client, emu: CometEmulator) -> None:
    task_id = create(client).json()["id"]
    client.get(f"/v1/videos/{task_id}?x=1")
    client.get("/nowhere")
    create_rec, retrieve_rec, other = emu.requests
    assert (create_rec.method, create_rec.path, create_rec.route) == ("POST", "/v1/videos", "omni.create")
    assert create_rec.headers["authorization"] == "REDACTED"
    assert (retrieve_rec.path, retrieve_rec.route, retrieve_rec.query) == (
        f"/v1/videos/{task_id}",
        "omni.retrieve",
        "x=1",
    )
    assert other.route is None
    assert KEY not in repr(emu.requests)


def test_keep_alive_serves_many_requests_per_connection(emu: CometEmulator) -> None:
    request = f"GET /v1/videos/task_x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as sock:
        sock.sendall(request * 3)  # pipelined on one connection
        received = b""
        while received.count(b"HTTP/1.1 404") < 3:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    assert len(emu.requests) == 3
