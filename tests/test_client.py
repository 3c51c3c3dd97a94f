"""Edge cases of the HTTP layer that a server cannot easily produce (respx mocks)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx

from prefect_comet import CometClient, RetryPolicy
from prefect_comet import exceptions as exc
from prefect_comet.api.retries import retry_after_seconds
from prefect_comet.models import VideoJob
from prefect_comet.steps.downloading import download
from prefect_comet.steps.poll_cadence import PollPolicy
from prefect_comet.steps.waiting import poll_until_terminal

BASE = "https://api.test"
KEY = "sk-secret-key-123"
QUICK = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100


@pytest.fixture
async def client():
    async with CometClient(BASE, KEY, retry=QUICK) as client:
        yield client


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds(httpx.Headers({"retry-after": "7"})) == 7
    when = datetime.now(UTC) + timedelta(seconds=30)
    parsed = retry_after_seconds(httpx.Headers({"retry-after": format_datetime(when, usegmt=True)}))
    assert 25 < parsed <= 30
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert RetryPolicy(max_retry_after=60).delay(0, retry_after=3600) == 60


def test_full_jitter_stays_under_the_exponential_cap():
    policy = RetryPolicy(base_delay=1, max_delay=8)
    assert all(0 <= policy.delay(attempt) <= min(8, 2**attempt) for attempt in range(6) for _ in range(50))


@respx.mock
async def test_create_is_not_resent_after_a_server_error(client):
    route = respx.post(f"{BASE}/v1/videos").respond(502, json={"error": {"message": "bad gateway"}})
    with pytest.raises(exc.CreateOutcomeUnknownError, match="may exist"):
        await client.create("/v1/videos", form={"prompt": "x"})
    assert route.call_count == 1


@respx.mock
async def test_create_is_not_resent_after_a_read_timeout(client):
    route = respx.post(f"{BASE}/v1/videos").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(exc.CreateOutcomeUnknownError):
        await client.create("/v1/videos", form={"prompt": "x"})
    assert route.call_count == 1


@respx.mock
async def test_create_is_not_resent_after_an_unreadable_success(client):
    route = respx.post(f"{BASE}/v1/videos").respond(200, content=b"{not json")
    with pytest.raises(exc.CreateOutcomeUnknownError):
        await client.create("/v1/videos", form={"prompt": "x"})
    assert route.call_count == 1


@respx.mock
async def test_create_is_resent_when_provably_not_taken(client):
    route = respx.post(f"{BASE}/v1/videos").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"Retry-After": "0"}),
            httpx.Response(200, json={"id": "task_1", "status": "queued"}),
        ]
    )
    response = await client.create("/v1/videos", form={"prompt": "x"})
    assert response.body["id"] == "task_1" and route.call_count == 3


@respx.mock
async def test_create_sends_multipart_form_fields_and_the_key(client):
    route = respx.post(f"{BASE}/v1/videos").respond(200, json={"id": "t"})
    await client.create("/v1/videos", form={"model": "omni-fast", "prompt": "waves"})
    request = route.calls.last.request
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="model"\r\n\r\nomni-fast' in request.content
    assert request.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": {"message": "prompt is required", "type": "comet_api_error"}}, exc.BadRequestError),
        (401, {"error": {"message": "Invalid token"}}, exc.AuthenticationError),
        (403, {"error": {"message": "no access"}}, exc.AuthenticationError),
        (500, {"error": {"message": "bad shape", "code": "invalid_request"}}, exc.BadRequestError),
        (400, {"code": 1201, "message": "duration invalid"}, exc.BadRequestError),
        (400, {"code": 1301, "message": "content refused"}, exc.ContentPolicyError),
        (429, {"code": 1101, "message": "balance not enough"}, exc.AccountError),
        (401, {"code": 1002, "message": "token expired"}, exc.AuthenticationError),
        (200, {"code": "1201", "message": "bad param"}, exc.BadRequestError),
    ],
)
@respx.mock
async def test_error_bodies_map_to_typed_errors_without_retry(client, status, body, error):
    route = respx.get(f"{BASE}/x").respond(status, json=body)
    with pytest.raises(error) as caught:
        await client.get_json("/x", task_id="task_9")
    assert route.call_count == 1
    assert "task_9" in str(caught.value) and "What to do" in str(caught.value)


@pytest.mark.parametrize(
    "body", [{"code": 1303, "message": "parallel limit"}, {"code": 5001, "message": "busy"}, {"error": {"message": "x"}}]
)
@respx.mock
async def test_transient_errors_are_retried_on_gets(client, body):
    status = 503 if "error" in body else 429
    route = respx.get(f"{BASE}/x").mock(
        side_effect=[httpx.Response(status, json=body), httpx.Response(200, json={"ok": True})]
    )
    assert (await client.get_json("/x")).body == {"ok": True}
    assert route.call_count == 2


@respx.mock
async def test_gets_give_up_after_the_policy_attempts(client):
    route = respx.get(f"{BASE}/x").respond(503, json={"error": {"message": "down"}})
    with pytest.raises(exc.ServerError):
        await client.get_json("/x")
    assert route.call_count == QUICK.attempts


def test_repr_hides_the_key():
    assert KEY not in repr(CometClient(BASE, KEY))


async def _download(client: CometClient, url: str, **kwargs) -> tuple[bytes, object]:
    sink = io.BytesIO()
    sink.close = lambda: None  # keep the bytes readable after download() closes it
    result = await download(client, [url], lambda: sink, task_id="task_1", **kwargs)
    return sink.getvalue(), result


@respx.mock
async def test_download_refuses_a_json_body(client):
    respx.get(f"{BASE}/v.mp4").respond(200, json={"error": "not ready"})
    with pytest.raises(exc.InvalidContentError, match="instead of a video"):
        await _download(client, "/v.mp4")


@respx.mock
async def test_download_refuses_bytes_that_are_not_mp4(client):
    respx.get(f"{BASE}/v.mp4").respond(200, content=b"GIF89a" + b"\x00" * 50, headers={"content-type": "video/mp4"})
    with pytest.raises(exc.InvalidContentError, match="not an MP4"):
        await _download(client, "/v.mp4")


@respx.mock
async def test_download_refuses_oversize_bodies(client):
    respx.get(f"{BASE}/v.mp4").respond(200, content=MP4_HEAD, headers={"content-type": "video/mp4"})
    with pytest.raises(exc.InvalidContentError, match="limit"):
        await _download(client, "/v.mp4", max_bytes=50)


@respx.mock
async def test_download_refuses_redirects_to_other_schemes(client):
    respx.get(f"{BASE}/v.mp4").respond(302, headers={"location": "file:///etc/passwd"})
    with pytest.raises(exc.InvalidContentError, match="non-http"):
        await _download(client, "/v.mp4")


@respx.mock
async def test_download_falls_back_to_the_next_url_and_keeps_the_key_home(client):
    respx.get(f"{BASE}/v1/videos/t/content").respond(404, json={"error": {"message": "no content route"}})
    cdn = respx.get("https://cdn.test/v.mp4").respond(200, content=MP4_HEAD, headers={"content-type": "video/mp4"})
    sink = io.BytesIO()
    sink.close = lambda: None
    result = await download(
        client, ["/v1/videos/t/content", "https://cdn.test/v.mp4?signature=s3cr3t"], lambda: sink, task_id="t"
    )
    assert sink.getvalue() == MP4_HEAD and result.source == "https://cdn.test/v.mp4"
    assert "authorization" not in cdn.calls.last.request.headers


@respx.mock
async def test_unknown_status_is_not_waited_on_forever(client):
    respx.get(f"{BASE}/v1/videos/t").respond(200, json={"id": "t", "status": "mystery"})
    job = VideoJob(provider="omni", task_id="t")
    policy = PollPolicy(initial_interval=0.01, max_interval=0.01, unknown_status_grace=0.1)
    with pytest.raises(exc.UnknownStatusError, match="mystery"):
        await poll_until_terminal(client, job, timeout_seconds=60, policy=policy)


@respx.mock
async def test_statuses_compare_case_insensitively_and_hints_are_honoured(client):
    route = respx.get(f"{BASE}/v1/videos/t").mock(
        side_effect=[
            httpx.Response(200, json={"id": "t", "status": "IN_PROGRESS"}, headers={"openai-poll-after-ms": "10"}),
            httpx.Response(200, json={"id": "t", "status": "SUCCESS", "progress": 100}),
        ]
    )
    job = await poll_until_terminal(
        client, VideoJob(provider="omni", task_id="t"), timeout_seconds=5,
        policy=PollPolicy(initial_interval=30, max_interval=30),  # the 10 ms hint wins over 30 s
    )
    assert job.status.value == "succeeded" and route.call_count == 2


@respx.mock
async def test_httpx_request_logs_drop_signed_query_strings(client, caplog):
    respx.get("https://cdn.test/v.mp4").respond(200, content=MP4_HEAD, headers={"content-type": "video/mp4"})
    with caplog.at_level("INFO", logger="httpx"):
        await _download(client, "https://cdn.test/v.mp4?signature=s3cr3t&expires=1")
    assert "cdn.test/v.mp4" in caplog.text and "s3cr3t" not in caplog.text


@pytest.mark.parametrize("task_id", ["../../x", "a/b", "", "..", "x" * 200, "task\n1", "%2e%2e"])
@respx.mock
async def test_implausible_task_ids_from_the_server_are_refused(client, task_id):
    from prefect_comet.api.omni import OmniProvider, OmniVideoRequest

    respx.post(f"{BASE}/v1/videos").respond(200, json={"id": task_id, "status": "queued"})
    with pytest.raises(exc.ResponseFormatError, match="implausible task id"):
        await OmniProvider().create(client, OmniVideoRequest(prompt="x"), idempotency_key=None)


@respx.mock
async def test_task_ids_are_quoted_into_paths(client):
    from prefect_comet.api.omni import OmniProvider

    route = respx.get(f"{BASE}/v1/videos/..%2Fx").respond(200, json={"id": "ok_1", "status": "queued"})
    await OmniProvider().retrieve(client, "../x")
    assert route.call_count == 1


def test_finish_estimate_follows_the_rate_of_progress():
    from prefect_comet.steps.poll_cadence import _FinishEstimate

    eta = _FinishEstimate()
    eta.observe(0.0, None)
    eta.observe(10.0, 10)
    assert eta.remaining(10.0) is None  # one point gives no rate
    eta.observe(20.0, 20)
    assert eta.remaining(20.0) == pytest.approx(80.0)
    assert eta.remaining(50.0) == pytest.approx(50.0)
    assert eta.remaining(200.0) == pytest.approx(-100.0)  # late: how late
