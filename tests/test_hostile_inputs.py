"""A hostile or broken server: every case ends in a typed error and writes nothing outside the destination.

Each case runs `generate_video` (the real Prefect engine) against an emulator told to answer
badly: ids that would climb out of a folder, redirects to other schemes or in circles, bodies
too large, mislabelled or not MP4 at all, unreadable JSON, unknown statuses, cut downloads.
Beside the destination lies a sentinel folder; after each case it must be untouched, and the
destination may hold nothing but ledger records: no video, no sidecar, no partial file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

import prefect_comet.api.client as client_module
from prefect_comet import (
    KlingOmniVideoRequest,
    OmniVideoRequest,
    RetryPolicy,
    create_video,
    generate_video,
    persist_video,
    wait_for_video,
)
from prefect_comet.exceptions import (
    CometAPIError,
    CreateOutcomeUnknownError,
    InvalidContentError,
    ResponseFormatError,
    ServerError,
    WaitTimeoutError,
)
from prefect_comet.testing.emulator import CometEmulator
from tests._resilience import ledger_records, leftovers, snapshot
from tests.conftest import API_KEY, FAST

# One event loop for the module: Prefect's clients then connect once, not once per case.
pytestmark = pytest.mark.asyncio(loop_scope="session")

# An id the server should never send may first be refused as a bad answer (ResponseFormatError)
# or, since the create itself went through, reported as a job whose id is unknown.
UNUSABLE_ID = (ResponseFormatError, CreateOutcomeUnknownError)


@dataclass(frozen=True)
class Case:
    """One hostile answer and the error it must end in."""

    provider: str
    faults: list[tuple[str, str, int, dict[str, Any]]]
    error: type[Exception] | tuple[type[Exception], ...]
    fragment: str
    emulator: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    prompt: str = "A hostile answer"
    after_wait: bool = False  # inject the faults once the job succeeded, before persisting


def fault(route: str, kind: str, times: int = 1, **opts: Any) -> tuple[str, str, int, dict[str, Any]]:
    return route, kind, times, opts


HOSTILE_IDS = {
    "parent-parent": "../../x",
    "etc-passwd": "/etc/passwd",
    "absolute-into-sentinel": "{tmp}/sentinel/owned",
    "dotdot": "..",
    "climb-inside": "a/../../b",
    "nul": "task\x00.mp4",
    "newline": "task\nInjected: header",
    "500-chars": "x" * 500,
    "division-slash": "task\u2215..\u2215x",
    "fullwidth-solidus": "task\uff0fx",
    "empty": "",
    "backslashes": "..\\..\\x",
    "percent-encoded": "%2e%2e%2fx",
    "option-like": "-rf",
}
KLING_HOSTILE_IDS = ["parent-parent", "etc-passwd", "climb-inside", "nul", "500-chars"]
OTHER_SCHEMES = {
    "file": "file://{tmp}/sentinel/secret.txt",
    "ftp": "ftp://127.0.0.1/video.mp4",
    "javascript": "javascript:alert(1)",
    "data": "data:video/mp4;base64,AAAAGGZ0eXBpc29t",
    "gopher": "gopher://127.0.0.1:70/1",
}
FAKE_MP4 = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\xde\xad\xbe\xef" * 4096

CASES = {
    **{
        f"omni-create-id-{name}": Case("omni", [fault("omni.create", "hostile_id", task_id=value)],
                                       UNUSABLE_ID, "implausible task id")
        for name, value in HOSTILE_IDS.items()
    },
    **{
        f"kling-create-id-{name}": Case("kling", [fault("kling.create", "hostile_id", task_id=HOSTILE_IDS[name])],
                                        UNUSABLE_ID, "implausible task id")
        for name in KLING_HOSTILE_IDS
    },
    # A poll that keeps answering a hostile id never steers anything; the deadline ends it.
    "omni-retrieve-id": Case("omni", [fault("omni.retrieve", "hostile_id", 10_000, task_id="../../x")],
                             WaitTimeoutError, "did not finish", options={"timeout_seconds": 1.0}),
    "kling-query-id": Case("kling", [fault("kling.query", "hostile_id", 10_000, task_id="/etc/passwd")],
                           WaitTimeoutError, "did not finish", options={"timeout_seconds": 1.0}),
    **{
        f"omni-redirect-{name}": Case("omni", [fault("omni.content", "redirect", location=location)],
                                      InvalidContentError, "non-http(s)")
        for name, location in OTHER_SCHEMES.items()
    },
    "kling-redirect-file": Case("kling", [fault("files", "redirect", location="file:///etc/passwd")],
                                InvalidContentError, "non-http(s)"),
    "omni-redirect-loop": Case("omni", [fault("omni.content", "redirect_loop")],
                               InvalidContentError, "redirected too often"),
    "kling-redirect-loop": Case("kling", [fault("files", "redirect_loop")],
                                InvalidContentError, "redirected too often"),
    "omni-oversize": Case("omni", [], InvalidContentError, "1000-byte limit",
                          options={"max_video_bytes": 1000}),
    "kling-oversize": Case("kling", [], InvalidContentError, "1000-byte limit",
                           options={"max_video_bytes": 1000}),
    "padded-oversize": Case("omni", [], InvalidContentError, "byte limit",
                            emulator={"pad_to_bytes": 3 << 20}, options={"max_video_bytes": 2 << 20}),
    "oversize-without-length": Case("omni", [fault("omni.content", "no_length")], InvalidContentError,
                                    "50000-byte limit", options={"max_video_bytes": 50_000}),
    "content-type-html": Case("omni", [fault("omni.content", "content_type", content_type="text/html")],
                              InvalidContentError, "instead of a video"),
    "content-type-json-body": Case(
        "omni", [fault("omni.content", "content_type", content_type="application/json",
                       body='{"error": {"message": "no video here"}}')],
        InvalidContentError, "instead of a video"),
    "content-type-xml": Case("omni", [fault("omni.content", "content_type", content_type="application/xml")],
                             InvalidContentError, "instead of a video"),
    "content-type-problem-json": Case(
        "omni", [fault("omni.content", "content_type", content_type="application/problem+json", body="{}")],
        InvalidContentError, "instead of a video"),
    "kling-content-type-text": Case(
        "kling", [fault("files", "content_type", content_type="text/plain; charset=utf-8")],
        InvalidContentError, "instead of a video"),
    "omni-not-mp4": Case("omni", [fault("omni.content", "not_mp4")], InvalidContentError, "not an MP4"),
    "kling-not-mp4": Case("kling", [fault("files", "not_mp4")], InvalidContentError, "not an MP4"),
    "empty-body": Case("omni", [fault("omni.content", "content_type", content_type="video/mp4", body="")],
                       InvalidContentError, "not an MP4"),
    "mp4-header-then-garbage": Case(
        "omni", [fault("omni.content", "content_type", content_type="video/mp4", body=FAKE_MP4)],
        InvalidContentError, "no decodable video"),
    "omni-create-malformed-json": Case("omni", [fault("omni.create", "malformed_json")],
                                       CreateOutcomeUnknownError, "unreadable body"),
    "kling-malformed-json-past-retries": Case(
        "kling", [fault("kling.query", "malformed_json", 6)], ResponseFormatError, "not a JSON object",
        after_wait=True),
    "omni-unknown-status": Case("omni", [], WaitTimeoutError, "'mystery'", prompt="A riddle [unknown]",
                                options={"timeout_seconds": 0.5}),
    "kling-unknown-status": Case("kling", [], WaitTimeoutError, "'mystery'", prompt="A riddle [unknown]",
                                 options={"timeout_seconds": 0.5}),
    "omni-truncated-past-retries": Case("omni", [fault("omni.content", "truncate", 6)], ServerError,
                                        "failed after"),
    "kling-truncated-past-retries": Case("kling", [fault("files", "truncate", 6)], ServerError, "failed after"),
}

# Library bugs these cases expose (kept strict: they pass once the library is fixed).
def _params() -> list[Any]:
    return [pytest.param(case, id=name) for name, case in CASES.items()]


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same number of attempts as by default, with millisecond back-off (timing only)."""
    fast = functools.partial(RetryPolicy, base_delay=0.005, max_delay=0.02, min_rate_limit_delay=0.01)
    monkeypatch.setattr(client_module, "RetryPolicy", fast)


def _request(case: Case):
    if case.provider == "omni":
        return OmniVideoRequest(prompt=case.prompt)
    return KlingOmniVideoRequest(prompt=case.prompt, aspect_ratio="16:9")


def _resolve(value: Any, tmp: Path) -> Any:
    return value.replace("{tmp}", str(tmp)) if isinstance(value, str) else value


@pytest.mark.parametrize("case", _params())
async def test_hostile_answer_ends_in_a_typed_error(case: Case, credentials, tmp_path, fast_retries):
    parent = tmp_path / "parent"
    destination = parent / "videos"
    sentinel = parent / "sentinel"
    sentinel.mkdir(parents=True)
    (sentinel / "secret.txt").write_text("must stay as it is")
    before = snapshot(tmp_path, skip=destination)
    faults = [
        (route, kind, times, {name: _resolve(value, parent) for name, value in opts.items()})
        for route, kind, times, opts in case.faults
    ]

    with CometEmulator(api_key=API_KEY, latency=0.1, **case.emulator) as emu:
        hostile = credentials.model_copy(update={"base_url": emu.base_url})

        @flow
        async def create_wait_then_persist():
            job = await create_video(
                _request(case), hostile, idempotency_key="hostile", ledger_uri=str(destination / ".comet-ledger")
            )
            job = await wait_for_video(job, hostile, **FAST)
            for route, kind, times, opts in faults:
                emu.add_fault(route, kind, times, **opts)
            return await persist_video(job, str(destination), hostile, **case.options)

        if not case.after_wait:
            for route, kind, times, opts in faults:
                emu.add_fault(route, kind, times, **opts)
        with pytest.raises(case.error) as caught:
            if case.after_wait:
                await create_wait_then_persist()
            else:
                await generate_video(
                    _request(case), destination=str(destination), credentials=hostile,
                    idempotency_key="hostile", **{**FAST, **case.options},
                )
        injected = [r.fault for r in emu.requests if r.fault]

    assert isinstance(caught.value, CometAPIError)
    assert case.fragment in str(caught.value), str(caught.value)
    assert injected or not case.faults  # the hostile answer was really given
    assert API_KEY not in str(caught.value) and "signature=" not in str(caught.value)
    assert snapshot(tmp_path, skip=destination) == before  # nothing outside the destination
    assert leftovers(destination) == []  # no video, no sidecar, no partial file
    assert all(record["state"] != "stored" for record in ledger_records(destination))


async def test_an_omni_download_reads_no_status_so_hostile_status_answers_after_the_wait_cost_nothing(
    credentials, tmp_path, fast_retries
):
    destination = tmp_path / "videos"
    with CometEmulator(api_key=API_KEY, latency=0.1) as emu:
        hostile = credentials.model_copy(update={"base_url": emu.base_url})

        @flow
        async def create_wait_then_persist():
            job = await create_video(OmniVideoRequest(prompt="Calm"), hostile, idempotency_key="calm",
                                     ledger_uri=str(destination / ".comet-ledger"))
            job = await wait_for_video(job, hostile, **FAST)
            emu.add_fault("omni.retrieve", "malformed_json", 6)
            return await persist_video(job, str(destination), hostile)

        stored = await create_wait_then_persist()
        assert not [r for r in emu.requests if r.fault]  # the content route alone: no status read
        assert stored.sha256 == emu.sha256(stored.task_id)


async def test_a_create_answered_with_an_unusable_id_is_never_sent_again(emulator, credentials, tmp_path):
    emulator.add_fault("omni.create", "hostile_id", task_id="../../x")
    request = OmniVideoRequest(prompt="Paid once")
    with pytest.raises(UNUSABLE_ID):
        await generate_video(request, destination=str(tmp_path), credentials=credentials,
                             idempotency_key="paid-once", **FAST)
    assert emulator.created_per_key() == {"paid-once": 1}  # the server took (and bills) the job

    with pytest.raises(CometAPIError):  # the user runs the key again: no second job
        await generate_video(request, destination=str(tmp_path), credentials=credentials,
                             idempotency_key="paid-once", **FAST)
    assert emulator.created_per_key() == {"paid-once": 1}


async def test_a_status_answer_naming_another_task_is_never_adopted(emulator, credentials, tmp_path):
    other = await generate_video(OmniVideoRequest(prompt="Someone else's video"), destination=str(tmp_path),
                                 credentials=credentials, idempotency_key="other", **FAST)
    emulator.add_fault("omni.retrieve", "hostile_id", 10_000, task_id=other.task_id)

    with pytest.raises(CometAPIError):  # the job's own status is never learned: the deadline ends it
        await generate_video(OmniVideoRequest(prompt="My video"), destination=str(tmp_path),
                             credentials=credentials, idempotency_key="mine", timeout_seconds=1.0, **FAST)

    (mine,) = [record for record in ledger_records(tmp_path) if record["key"] == "mine"]
    assert mine["task_id"] != other.task_id and mine["state"] == "created"  # resumable by its own id
