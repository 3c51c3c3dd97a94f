"""Odd data from the server never crashes a job: the field is dropped with a warning, the job goes on.

Times beyond what a datetime holds (milliseconds sent as seconds, 1e300, "inf"), progress that is
not a percentage, values of the wrong type; a wrapped Kling answer whose inner object is null or
missing; an Omni failure that names its reason outside an `error` object. Unit tests read each
value; end-to-end tests run `generate_video` (the real Prefect engine) against the emulator.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import fsspec
import httpx
import pytest

from prefect_comet import KlingOmniVideoRequest, OmniVideoRequest, generate_video
from prefect_comet.api.answers import (
    parse_progress,
    parse_seconds,
    parse_timestamp,
    reason_text,
    text_value,
)
from prefect_comet.api.kling import _job_from_data
from prefect_comet.api.omni import _job_from_task
from prefect_comet.exceptions import GenerationFailedError, ResponseFormatError
from prefect_comet.models import VideoStatus
from prefect_comet.testing.emulator import CometEmulator
from prefect_comet.ui.progress import watch_progress
from tests.conftest import API_KEY, FAST

# One event loop for the end-to-end cases: Prefect's clients then connect once, not once per case.
one_loop = pytest.mark.asyncio(loop_scope="session")

FAIL_REASON = "Emulated generation failure"
# Out of a datetime's range (year 1-9999) as seconds, or not a finite number at all.
UNUSABLE_SECONDS = [
    253402300800,  # 10000-01-01
    1e12,  # milliseconds where seconds are expected: year 33658
    1e300,
    float("inf"),  # a JSON 1e400 reads as this
    float("-inf"),
    float("nan"),
    "inf",
    "nan",
    "-Infinity",
    10**400,  # too large for a float
    -1e12,  # before year 1
]
WRONG_TYPES = [True, False, "abc", [1722769557], {"seconds": 1722769557}]
# What the server may put in created_at (and completed_at / updated_at) in create AND poll answers.
SERVER_TIMES = [253402300800, 253402300800000, 1e12, 1e300, "inf", -1, None]
KEPT_YEAR = {("omni", -1): 1969, ("kling", -1): 1969, ("kling", 253402300800): 1978, ("kling", 1e12): 2001}


def _short(value: object) -> str:
    return repr(value)[:24]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prefect_comet.api" and r.levelname == "WARNING"]


# -- the parsers ------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", UNUSABLE_SECONDS + WRONG_TYPES, ids=_short)
def test_an_unusable_timestamp_is_dropped_with_a_warning_naming_field_and_task(raw, caplog):
    with caplog.at_level(logging.WARNING, logger="prefect_comet.api"):
        assert parse_timestamp(raw, field="completed_at", task_id="task_7") is None
    [warning] = _warnings(caplog)
    assert "completed_at" in warning and "task_7" in warning


@pytest.mark.parametrize("raw", [253402300800000, 1e17, 1e300, float("inf"), "inf", "nan", True, "abc"], ids=_short)
def test_an_unusable_kling_timestamp_in_milliseconds_is_dropped(raw, caplog):
    with caplog.at_level(logging.WARNING, logger="prefect_comet.api"):
        assert parse_timestamp(raw, milliseconds=True, field="updated_at", task_id="k1") is None
    assert len(_warnings(caplog)) == 1


def test_plausible_values_are_read_as_before_and_quietly(caplog):
    with caplog.at_level(logging.WARNING, logger="prefect_comet.api"):
        assert parse_timestamp(-1) == datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
        assert parse_timestamp(None) is None
        assert parse_timestamp("") is None
        assert parse_timestamp(1722769557) == datetime(2024, 8, 4, 11, 5, 57, tzinfo=UTC)
        assert parse_timestamp("1722769557") == datetime(2024, 8, 4, 11, 5, 57, tzinfo=UTC)
        assert parse_timestamp(1722769557708, milliseconds=True) == datetime(2024, 8, 4, 11, 5, 57, 708000, tzinfo=UTC)
        assert parse_timestamp(1e12, milliseconds=True).year == 2001  # in milliseconds 1e12 is plausible
        assert [parse_progress(raw) for raw in (40, "40", "40%", " 40 % ", 39.9, 100.4, -0.3, 0, None, "")] == [
            40, 40, 40, 40, 39, 100, 0, 0, None, None,
        ]
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    "raw", ["inf", "-inf", "nan", "Infinity%", float("inf"), float("nan"), 10**400, 1e300, 150, -20, "abc",
            True, [40], {"value": 40}],
    ids=_short,
)
def test_unusable_progress_is_dropped_with_a_warning(raw, caplog):
    with caplog.at_level(logging.WARNING, logger="prefect_comet.api"):
        assert parse_progress(raw, task_id="task_7") is None
    [warning] = _warnings(caplog)
    assert "progress" in warning and "task_7" in warning


def test_seconds_text_and_reasons_drop_what_they_cannot_read():
    assert parse_seconds("5.0") == 5.0 and parse_seconds(10) == 10.0
    assert [parse_seconds(raw) for raw in ("inf", "nan", -5, True, [5], None)] == [None] * 6
    assert text_value("omni-fast", field="model") == "omni-fast"
    assert text_value(5, field="model") == "5"  # an id or a name sent as a number still reads
    assert [text_value(raw, field="model") for raw in ({}, [], ["x"], True, float("nan"), None, "")] == [None] * 7
    assert reason_text({"code": "blocked", "message": "Bad prompt"}, field="error") == "Bad prompt"
    assert reason_text({"code": "blocked"}, field="error") == "blocked"
    assert reason_text("  Image pixel is invalid ", field="fail_reason") == "Image pixel is invalid"
    assert [reason_text(raw, field="error") for raw in (["x"], {"message": {}}, {}, {"code": "", "message": ""}, "", True, None)] == [None] * 7


def test_a_warning_never_shows_a_url_query_string(caplog):
    with caplog.at_level(logging.WARNING, logger="prefect_comet.api"):
        parse_timestamp("https://cdn.example/v.mp4?X-Signature=s3cr3t&expires=1", task_id="t1")
        text_value(["https://cdn.example/v.mp4?token=s3cr3t"], field="model", task_id="t1")
    assert len(_warnings(caplog)) == 2
    assert not any("s3cr3t" in warning for warning in _warnings(caplog))


# -- whole answers ----------------------------------------------------------------------------
def test_an_omni_task_of_wrong_types_still_becomes_a_job():
    job = _job_from_task(
        {"id": "task_1", "status": {}, "model": [5], "progress": "abc", "error": ["x"],
         "created_at": True, "completed_at": "inf", "video_url": 7}
    )
    assert (job.task_id, job.status, job.raw_status) == ("task_1", VideoStatus.UNKNOWN, "")
    assert (job.model, job.progress, job.error, job.created_at, job.completed_at) == (None, None, None, None, None)
    assert job.outputs == []
    assert _job_from_task({"id": "task_1", "status": "queued", "model": 5}).model == "5"


@pytest.mark.parametrize("raw", UNUSABLE_SECONDS, ids=_short)
def test_an_omni_task_with_odd_times_still_becomes_a_job(raw):
    job = _job_from_task({"id": "task_1", "status": "completed", "created_at": raw, "completed_at": raw})
    assert (job.status, job.created_at, job.completed_at) == (VideoStatus.SUCCEEDED, None, None)


def test_a_kling_task_of_wrong_types_still_becomes_a_job():
    job = _job_from_data(
        {"task_id": "k1", "task_status": "succeed", "task_status_msg": {"detail": 1},
         "task_info": {"external_task_id": {"x": 1}}, "created_at": True, "updated_at": 1e300,
         "task_result": {"videos": [{"id": {}, "url": "https://cdn.example/v.mp4?sig=1", "duration": "inf"}, 5]}}
    )
    assert (job.task_id, job.status, job.error, job.external_task_id) == ("k1", VideoStatus.SUCCEEDED, None, None)
    assert (job.created_at, job.updated_at) == (None, None)
    [output] = job.outputs
    assert (output.url, output.video_id, output.duration_seconds) == ("https://cdn.example/v.mp4", None, None)
    for videos in (5, "abc", {"url": "x"}, None):
        assert _job_from_data({"task_id": "k1", "task_status": "processing", "task_result": {"videos": videos}}).outputs == []
    assert _job_from_data({"task_id": "k1", "task_status": ["succeed"]}).status is VideoStatus.UNKNOWN


def test_an_implausible_task_id_is_still_refused():
    with pytest.raises(ResponseFormatError, match="implausible task id"):
        _job_from_task({"id": "../../x", "status": "queued", "created_at": "inf"})
    with pytest.raises(ResponseFormatError, match="implausible task id"):
        _job_from_data({"status": "IN_PROGRESS", "progress": "40%", "data": None})


def test_an_omni_failure_without_an_error_object_keeps_its_reason():
    for field in ("fail_reason", "error_message"):
        job = _job_from_task({"id": "task_1", "status": "failed", field: "Image pixel is invalid"})
        assert (job.status, job.error) == (VideoStatus.FAILED, "Image pixel is invalid")
    job = _job_from_task({"id": "task_1", "status": "failed", "error": ["?"], "fail_reason": "Too long"})
    assert job.error == "Too long"
    job = _job_from_task({"id": "task_1", "status": "failed", "error": {"message": "Bad prompt"}, "fail_reason": "x"})
    assert job.error == "Bad prompt"


@pytest.mark.parametrize("inner", [{"data": None}, {}, {"data": {"code": 0, "message": "HTTP_OK", "data": None}}],
                         ids=["null", "missing", "null-inside-envelope"])
def test_a_wrapped_kling_answer_without_its_inner_object_reads_the_outer_state(inner):
    running = _job_from_data({"task_id": "t1", "status": "IN_PROGRESS", "progress": "40%", "fail_reason": "", **inner})
    assert (running.task_id, running.status, running.raw_status, running.progress, running.error) == (
        "t1", VideoStatus.RUNNING, "IN_PROGRESS", 40, None,
    )
    failed = _job_from_data(
        {"task_id": "t1", "status": "FAILURE", "progress": "100%", "fail_reason": "Image pixel is invalid", **inner}
    )
    assert (failed.status, failed.error) == (VideoStatus.FAILED, "Image pixel is invalid")


def test_a_wrapped_kling_failure_prefers_the_inner_reason_when_there_is_one():
    native = {"task_id": "t1", "task_status": "failed", "task_status_msg": "Image pixel is invalid"}
    wrapped = {"task_id": "t1", "status": "FAILURE", "progress": "100%", "fail_reason": "FAILURE",
               "data": {"code": 0, "message": "HTTP_OK", "data": native}}
    assert _job_from_data(wrapped).error == "Image pixel is invalid"
    blank = {**wrapped, "data": {"code": 0, "data": {**native, "task_status_msg": ""}}}
    assert _job_from_data(blank).error == "FAILURE"


def test_the_documented_kling_processing_answer_with_empty_objects():
    job = _job_from_data(
        {"task_id": "878106484537192522", "task_info": {}, "created_at": 1777385419126,
         "updated_at": 1777385430317, "task_result": {}, "task_status": "processing"}
    )
    assert (job.task_id, job.status, job.outputs, job.external_task_id) == (
        "878106484537192522", VideoStatus.RUNNING, [], None,
    )
    assert job.created_at == datetime.fromtimestamp(1777385419.126, tz=UTC)


# -- the emulator serves these shapes ---------------------------------------------------------
KLING = "/kling/v1/videos/omni-video"
KLING_BODY = {"prompt": "A paper boat drifts across a calm pond", "aspect_ratio": "16:9", "duration": "5"}


def _client(emu: CometEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10)


def _until(poll, done, seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + seconds
    while not done(body := poll()):
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    return body


def test_the_emulator_puts_odd_times_in_create_and_poll_answers(emulator):
    with _client(emulator) as client:
        emulator.add_fault("omni.create", "odd_times", value=1e300)
        created = client.post("/v1/videos", files={"model": (None, "omni-fast"), "prompt": (None, "A kite")}).json()
        assert created["created_at"] == 1e300
        emulator.add_fault("omni.retrieve", "odd_times", 10_000, value="inf")
        done = _until(lambda: client.get(f"/v1/videos/{created['id']}").json(), lambda b: b["status"] == "completed")
        assert done["created_at"] == done["completed_at"] == "inf"

        emulator.add_fault("kling.create", "odd_times", value=-1)
        data = client.post(KLING, json=KLING_BODY).json()["data"]
        assert data["created_at"] == data["updated_at"] == -1
        emulator.add_fault("kling.query", "odd_times", value=None)
        queried = client.get(f"{KLING}/{data['task_id']}").json()["data"]
        assert queried["created_at"] is queried["updated_at"] is None
        assert isinstance(client.get(f"{KLING}/{data['task_id']}").json()["data"]["created_at"], int)  # consumed


def test_the_emulator_answers_the_documented_processing_shape(emulator):
    with _client(emulator) as client:
        task_id = client.post(KLING, json=KLING_BODY).json()["data"]["task_id"]
        data = _until(lambda: client.get(f"{KLING}/{task_id}").json()["data"],
                      lambda d: d["task_status"] == "processing")
    assert (data["task_result"], data["task_info"]) == ({}, {})


@pytest.mark.parametrize("inner", ["null", "missing"])
def test_the_emulator_wraps_kling_answers_without_inner_object_until_success(inner):
    with CometEmulator(api_key=API_KEY, latency=0.5, kling_wrapped=True, kling_wrapped_inner=inner) as emu:
        with _client(emu) as client:
            task_id = client.post(KLING, json=KLING_BODY).json()["data"]["task_id"]
            running = _until(lambda: client.get(f"{KLING}/{task_id}").json()["data"],
                             lambda d: d["status"] == "IN_PROGRESS")
            done = _until(lambda: client.get(f"{KLING}/{task_id}").json()["data"], lambda d: d["status"] == "SUCCESS")
            failed_id = client.post(KLING, json={**KLING_BODY, "prompt": "boat [fail]"}).json()["data"]["task_id"]
            failed = _until(lambda: client.get(f"{KLING}/{failed_id}").json()["data"],
                            lambda d: d["status"] == "FAILURE")
    for outer in (running, failed):
        assert ("data" in outer) is (inner == "null") and outer.get("data") is None
    assert running["progress"].endswith("%") and FAIL_REASON in failed["fail_reason"]
    assert done["data"]["data"]["task_result"]["videos"][0]["url"]


def test_the_emulator_can_name_an_omni_failure_outside_an_error_object():
    with CometEmulator(api_key=API_KEY, latency=0.2, omni_failure_field="fail_reason") as emu, _client(emu) as client:
        form = {"model": (None, "omni-fast"), "prompt": (None, "kite [fail]")}
        task_id = client.post("/v1/videos", files=form).json()["id"]
        failed = _until(lambda: client.get(f"/v1/videos/{task_id}").json(), lambda b: b["status"] == "failed")
    assert "error" not in failed and FAIL_REASON in failed["fail_reason"]
    with pytest.raises(ValueError):
        CometEmulator(kling_wrapped_inner="null")  # without the wrapped shape it would mean nothing
    with pytest.raises(ValueError):
        CometEmulator(omni_failure_field="reason")


def test_the_emulator_cli_takes_the_new_shapes():
    command = [sys.executable, "-m", "prefect_comet.testing.emulator", "--latency", "5", "--api-key", API_KEY,
               "--kling-wrapped-inner", "null", "--omni-failure-field", "error_message"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        headers = {"Authorization": f"Bearer {API_KEY}"}
        task_id = httpx.post(f"{base_url}{KLING}", json=KLING_BODY, headers=headers).json()["data"]["task_id"]
        outer = httpx.get(f"{base_url}{KLING}/{task_id}", headers=headers).json()["data"]
        assert outer["status"] == "SUBMITTED" and outer["data"] is None
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


# -- end to end, against the emulator ---------------------------------------------------------
def _request(provider: str, prompt: str = "A paper boat drifts across a calm pond"):
    if provider == "omni":
        return OmniVideoRequest(prompt=prompt)
    return KlingOmniVideoRequest(prompt=prompt, aspect_ratio="16:9")


def _sidecar(uri: str) -> dict:
    with fsspec.open(uri, "rb") as file:
        return json.load(file)


@one_loop
@pytest.mark.parametrize("value", SERVER_TIMES, ids=_short)
@pytest.mark.parametrize("provider", ["omni", "kling"])
async def test_odd_server_times_in_every_answer_still_store_the_video(emulator, credentials, provider, value):
    emulator.add_fault(f"{provider}.create", "odd_times", value=value)
    emulator.add_fault("omni.retrieve" if provider == "omni" else "kling.query", "odd_times", 10_000, value=value)

    stored = await generate_video(
        _request(provider), destination=f"memory://odd-times/{provider}", credentials=credentials, **FAST
    )

    assert stored.sha256 == emulator.sha256(stored.task_id)
    created = _sidecar(stored.metadata_uri)["timings"]["created_at"]
    # Kept where plausible (Kling counts milliseconds), dropped rather than turned into a wrong date.
    assert (created and datetime.fromisoformat(created).year) == KEPT_YEAR.get((provider, value))
    assert {r.fault for r in emulator.requests if r.route in ("omni.retrieve", "kling.query")} == {"odd_times"}


@one_loop
@pytest.mark.parametrize("inner", ["null", "missing"])
async def test_a_wrapped_kling_job_without_inner_object_shows_its_progress(credentials, inner):
    seen: list[tuple[VideoStatus, int | None]] = []
    with CometEmulator(api_key=API_KEY, latency=1.0, kling_wrapped=True, kling_wrapped_inner=inner) as emu:
        wrapped = credentials.model_copy(update={"base_url": emu.base_url})
        with watch_progress(lambda job: seen.append((job.status, job.progress))):
            stored = await generate_video(
                _request("kling"), destination="memory://wrapped-inner", credentials=wrapped, **FAST
            )
        assert stored.sha256 == emu.sha256(stored.task_id)
    assert any(status is VideoStatus.RUNNING and 0 < (progress or 0) < 100 for status, progress in seen), seen


@one_loop
@pytest.mark.parametrize("inner", ["null", "missing"])
async def test_a_wrapped_kling_failure_without_inner_object_keeps_the_fail_reason(credentials, inner):
    with CometEmulator(api_key=API_KEY, latency=0.3, kling_wrapped=True, kling_wrapped_inner=inner) as emu:
        wrapped = credentials.model_copy(update={"base_url": emu.base_url})
        with pytest.raises(GenerationFailedError, match=FAIL_REASON) as caught:
            await generate_video(
                _request("kling", "boat [fail]"), destination="memory://wrapped-fail", credentials=wrapped, **FAST
            )
        assert caught.value.task_id in emu.jobs


@one_loop
@pytest.mark.parametrize("field", ["fail_reason", "error_message"])
async def test_an_omni_failure_with_only_a_plain_reason_field_keeps_it(credentials, field):
    with CometEmulator(api_key=API_KEY, latency=0.3, omni_failure_field=field) as emu:
        plain = credentials.model_copy(update={"base_url": emu.base_url})
        with pytest.raises(GenerationFailedError, match=FAIL_REASON) as caught:
            await generate_video(
                _request("omni", "kite [fail]"), destination="memory://omni-fail", credentials=plain, **FAST
            )
        assert caught.value.task_id in emu.jobs
