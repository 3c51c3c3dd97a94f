"""Omni text-to-video through the real Prefect engine against the emulator over loopback."""

from __future__ import annotations

import hashlib
import json

import fsspec
import pytest
from prefect import flow
from pydantic import SecretStr

from prefect_comet import (
    CometAPICredentials,
    OmniVideoRequest,
    VideoJob,
    VideoStatus,
    create_video,
    generate_video,
    persist_video,
    wait_for_video,
)
from prefect_comet.exceptions import (
    AuthenticationError,
    GenerationFailedError,
    MissingAPIKeyError,
    OutputMismatchError,
    WaitTimeoutError,
)
from prefect_comet.media.probe import probe_video
from tests.conftest import API_KEY, FAST

SEED_FRAMES = [
    ("720p", "16:9", (1280, 720)),
    ("720p", "9:16", (720, 1280)),
    ("720p", "1:1", (1280, 720)),
    ("1080p", "16:9", (1280, 720)),
]


def _file_sha256(uri: str) -> str:
    with fsspec.open(uri, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


@pytest.mark.parametrize(("resolution", "aspect_ratio", "frame"), SEED_FRAMES)
async def test_frame_sizes_follow_the_seed_table(emulator, credentials, tmp_path, resolution, aspect_ratio, frame):
    request = OmniVideoRequest(prompt="Ocean waves", resolution=resolution, aspect_ratio=aspect_ratio)

    stored = await generate_video(request, destination=str(tmp_path), credentials=credentials, **FAST)

    assert (stored.width, stored.height) == frame
    assert stored.duration_seconds == pytest.approx(4.0, abs=0.2)
    assert stored.sha256 == emulator.sha256(stored.task_id) == _file_sha256(stored.uri)
    with open(stored.uri, "rb") as file:  # the file itself, measured again
        probe = probe_video(file)
    assert (probe.width, probe.height, probe.codec) == (*frame, "h264")


async def test_seconds_sets_the_duration(emulator, credentials):
    stored = await generate_video(
        OmniVideoRequest(prompt="A kite", seconds="8"), destination="memory://durations",
        credentials=credentials, **FAST,
    )
    assert stored.duration_seconds == pytest.approx(8.0, abs=0.2)


async def test_failed_generation_raises_with_server_message_and_writes_nothing(emulator, credentials, tmp_path):
    with pytest.raises(GenerationFailedError) as caught:
        await generate_video(
            OmniVideoRequest(prompt="please [fail]"), destination=str(tmp_path / "out"),
            credentials=credentials, **FAST,
        )
    assert "Emulated generation failure" in str(caught.value)
    assert caught.value.task_id and caught.value.task_id in str(caught.value)
    written = [p.name for p in (tmp_path / "out").iterdir()]
    assert written == [".comet-ledger"]  # no video, no partial file; only the job's record
    (record,) = (tmp_path / "out" / ".comet-ledger").iterdir()
    assert json.loads(record.read_text())["state"] == "failed"


async def test_wait_timeout_names_the_task_and_last_status(emulator, credentials, tmp_path):
    with pytest.raises(WaitTimeoutError) as caught:
        await generate_video(
            OmniVideoRequest(prompt="this one [hang]s"), destination=str(tmp_path),
            credentials=credentials, timeout_seconds=1.0, **FAST,
        )
    job_id = next(iter(emulator.jobs))
    assert caught.value.task_id == job_id
    assert job_id in str(caught.value) and "in_progress" in str(caught.value)
    assert caught.value.last_status == "in_progress"


async def test_poll_429_retry_after_is_honoured(emulator, credentials):
    emulator.add_fault("omni.retrieve", "http_429", times=2, retry_after=1)

    stored = await generate_video(
        OmniVideoRequest(prompt="Patience"), destination="memory://retry-after",
        credentials=credentials, **FAST,
    )

    polls = [r for r in emulator.requests if r.route == "omni.retrieve"]
    # Two refused polls, each followed by a wait of at least the advised second.
    gaps = [later.time - earlier.time for earlier, later in zip(polls, polls[1:3])]
    assert len(gaps) == 2 and all(gap >= 0.95 for gap in gaps)
    assert stored.sha256 == emulator.sha256(stored.task_id)


async def test_dropped_connection_during_download_is_resumed_intact(emulator, credentials, tmp_path):
    emulator.add_fault("omni.content", "truncate", times=2)

    stored = await generate_video(
        OmniVideoRequest(prompt="Waves"), destination=str(tmp_path), credentials=credentials, **FAST
    )

    assert stored.sha256 == emulator.sha256(stored.task_id) == _file_sha256(stored.uri)
    downloads = [r for r in emulator.requests if r.route == "omni.content"]
    assert len(downloads) == 3
    assert downloads[-1].headers.get("range", "").startswith("bytes=")  # resumed, not restarted
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


async def test_missing_key_is_a_clear_error(emulator, no_env_credentials):
    with pytest.raises(MissingAPIKeyError, match="COMETAPI_KEY"):
        await generate_video(OmniVideoRequest(prompt="x"), destination="memory://nokey", **FAST)
    assert emulator.requests == []


async def test_bad_key_is_a_clear_error(emulator):
    wrong = CometAPICredentials(api_key=SecretStr("sk-wrong"), base_url=emulator.base_url)
    with pytest.raises(AuthenticationError, match="API key") as caught:
        await generate_video(OmniVideoRequest(prompt="x"), destination="memory://badkey", credentials=wrong, **FAST)
    assert "sk-wrong" not in str(caught.value)
    assert emulator.jobs == {}


async def test_key_and_base_url_come_from_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("COMETAPI_KEY", API_KEY)
    monkeypatch.setenv("COMETAPI_BASE_URL", emulator.base_url)
    stored = await generate_video(OmniVideoRequest(prompt="env"), destination="memory://env", **FAST)
    assert stored.sha256 == emulator.sha256(stored.task_id)


@pytest.mark.parametrize("destination", ["memory://persisted/videos", "local"])
async def test_persist_video_records_request_and_no_secret(emulator, credentials, tmp_path, destination):
    destination = str(tmp_path / "videos") if destination == "local" else destination
    request = OmniVideoRequest(prompt="Sidecar check", aspect_ratio="9:16")

    @flow
    async def pipeline():
        job = await create_video(request, credentials)
        job = await wait_for_video(job, credentials, **FAST)
        return await persist_video(job, destination, credentials)

    stored = await pipeline()

    assert stored.sha256 == emulator.sha256(stored.task_id) == _file_sha256(stored.uri)
    with fsspec.open(stored.metadata_uri, "rb") as file:
        raw = file.read().decode()
    sidecar = json.loads(raw)
    assert sidecar["task_id"] == stored.task_id
    assert sidecar["request"] == request.model_dump()
    assert sidecar["videos"][0]["sha256"] == stored.sha256
    assert sidecar["videos"][0]["width"] == 720
    assert API_KEY not in raw and "signature=" not in raw


async def test_persisting_again_is_a_no_op(emulator, credentials):
    stored = await generate_video(OmniVideoRequest(prompt="twice"), destination="memory://again", credentials=credentials, **FAST)
    requests_before = len(emulator.requests)
    job = VideoJob(provider="omni", task_id=stored.task_id, status=VideoStatus.SUCCEEDED)

    again = await persist_video(job, "memory://again", credentials)

    assert again.model_dump() == stored.model_dump()
    assert len(emulator.requests) == requests_before  # no download, not even a lookup


def test_tasks_work_from_a_sync_flow(emulator, credentials):
    @flow
    def sync_pipeline() -> str:
        job = create_video.submit(OmniVideoRequest(prompt="sync"), credentials).result()
        job = wait_for_video.submit(job, credentials, **FAST).result()
        return persist_video.submit(job, "memory://sync", credentials).result().sha256

    sha = sync_pipeline()

    assert sha == emulator.sha256(next(iter(emulator.jobs)))


async def test_content_redirect_to_signed_storage_is_followed(credentials, tmp_path):
    from prefect_comet.testing.emulator import CometEmulator

    with CometEmulator(api_key=API_KEY, latency=0.2, content_redirect=True) as emu:
        redirected = credentials.model_copy(update={"base_url": emu.base_url})
        stored = await generate_video(
            OmniVideoRequest(prompt="redirected"), destination=str(tmp_path), credentials=redirected, **FAST
        )
        routes = [r.route for r in emu.requests]
    assert routes[-2:] == ["omni.content", "files"]
    assert stored.sha256 == emu.sha256(stored.task_id) == _file_sha256(stored.uri)


async def test_square_request_is_flagged_and_strict_output_fails(emulator, credentials, tmp_path):
    request = OmniVideoRequest(prompt="A square kite", aspect_ratio="1:1")

    stored = await generate_video(request, destination=str(tmp_path / "lenient"), credentials=credentials, **FAST)
    with pytest.raises(OutputMismatchError, match="1280x720") as caught:
        await generate_video(
            request, destination=str(tmp_path / "strict"), credentials=credentials, strict_output=True, **FAST
        )

    assert stored.mismatches == ["frame: asked for 720x720 (1:1, 720p), got 1280x720"]
    assert (stored.width, stored.height) == (1280, 720)
    strict_files = [p.name for p in (tmp_path / "strict").iterdir() if p.suffix == ".mp4"]
    assert strict_files == [f"{caught.value.task_id}.mp4"]  # paid for, so kept


async def test_repeating_create_in_one_flow_run_reuses_the_job(emulator, credentials):
    request = OmniVideoRequest(prompt="once only")

    @flow(retries=0)
    async def twice() -> tuple[str, str]:
        first = await create_video(request, credentials)
        again = await create_video(request, credentials)  # what a task or flow retry does
        return first.task_id, again.task_id

    first, again = await twice()

    assert first == again and len(emulator.jobs) == 1
