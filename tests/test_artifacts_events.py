"""Posters, artifacts and events, recorded by a real Prefect server (the session test harness)."""

from __future__ import annotations

import asyncio
import io
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import fsspec
import pytest
from PIL import Image
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext, TaskRunContext

import prefect_comet.ui.events as events
import prefect_comet.ui.progress as progress_module
import prefect_comet.ui.summary as summary_module
from prefect_comet._files import redact_url
from prefect_comet.media.poster import extract_poster, store_poster
from prefect_comet.models import StoredVideo, VideoJob, VideoStatus
from prefect_comet.testing.emulator.render import encode
from prefect_comet.ui.events import emit_video_event, video_resource_id
from prefect_comet.ui.labels import artifact_key, artifact_slug, short_prompt
from prefect_comet.ui.progress import LiveProgress, start_progress, update_progress
from prefect_comet.ui.summary import MAX_INLINE_POSTER_BYTES, publish_video, summary_markdown
from tests._readback import artifacts_with_key, plain, related_roles, wait_for_events

PROMPT = "A paper boat drifting across a calm pond at dawn"
SIGNATURE = "sig=very-secret-signature"


@pytest.fixture(scope="module")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    encode(str(path), 1280, 720, 1.0, 12, "plain")
    return path


def _job(task_id: str, **changes: object) -> VideoJob:
    created = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict[str, object] = {
        "provider": "omni",
        "task_id": task_id,
        "status": VideoStatus.SUCCEEDED,
        "raw_status": "completed",
        "progress": 100,
        "model": "omni-fast",
        "created_at": created,
        "completed_at": created + timedelta(seconds=42),
        "request": {"prompt": PROMPT, "aspect_ratio": "1:1", "resolution": "720p", "seconds": "4"},
    }
    return VideoJob.model_validate({**fields, **changes})


def _stored(task_id: str, video: Path, poster_uri: str | None = None) -> StoredVideo:
    return StoredVideo(
        uri=str(video),
        sha256="ab" * 32,
        size_bytes=video.stat().st_size,
        task_id=task_id,
        provider="omni",
        model="omni-fast",
        width=1280,
        height=720,
        duration_seconds=4.0,
        codec="h264",
        fps=12.0,
        poster_uri=poster_uri,
        metadata_uri=str(video.with_suffix(".json")),
        mismatches=["frame 1280x720 is 16:9, requested 1:1"],
        extras=[
            StoredVideo(
                uri=f"https://cdn.example.com/{task_id}-watermarked.mp4?{SIGNATURE}",
                sha256="cd" * 32,
                size_bytes=1234,
                task_id=task_id,
                provider="omni",
                width=1280,
                height=720,
                watermarked=True,
            )
        ],
    )


# -- poster ------------------------------------------------------------------


def test_poster_is_a_small_jpeg_of_the_first_frame(video_file: Path) -> None:
    with video_file.open("rb") as file:
        jpeg = extract_poster(file, max_width=320)

    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    assert len(jpeg) < MAX_INLINE_POSTER_BYTES
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (320, 180)


def test_poster_keeps_small_frames_and_refuses_garbage(video_file: Path) -> None:
    with video_file.open("rb") as file:
        wide = extract_poster(file, max_width=4000)
    assert Image.open(io.BytesIO(wide)).size == (1280, 720)

    assert extract_poster(io.BytesIO(b"\x00\x00\x00\x18ftypmp42 not a video")) is None


def test_no_poster_without_the_media_extra(monkeypatch: pytest.MonkeyPatch, video_file: Path) -> None:
    import prefect_comet.media.poster as poster

    monkeypatch.setattr(poster, "av", None)
    with video_file.open("rb") as file:
        assert extract_poster(file) is None


def test_store_poster_writes_a_jpeg_beside_the_video(tmp_path: Path, video_file: Path) -> None:
    local = tmp_path / "task_1.mp4"
    shutil.copyfile(video_file, local)
    assert store_poster(str(local)) == str(tmp_path / "task_1.jpg")
    assert (tmp_path / "task_1.jpg").read_bytes()[:2] == b"\xff\xd8"

    with fsspec.open("memory://posters/task_2.mp4", "wb") as file:
        file.write(video_file.read_bytes())
    poster_uri = store_poster("memory://posters/task_2.mp4")
    assert poster_uri is not None and poster_uri.startswith("memory://") and poster_uri.endswith("/task_2.jpg")
    with fsspec.open(poster_uri, "rb") as file:
        assert file.read(2) == b"\xff\xd8"
    assert fsspec.filesystem("memory").ls("/posters", detail=False) == ["/posters/task_2.jpg", "/posters/task_2.mp4"]

    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    assert store_poster(str(tmp_path / "broken.mp4")) is None
    assert store_poster(str(tmp_path / "missing.mp4")) is None


# -- keys and markdown -------------------------------------------------------


def test_keys_follow_prefect_rules_and_stay_unique() -> None:
    assert artifact_slug("task_8f2c") == "task-8f2c"
    assert artifact_key("progress", "task_8f2c") == "video-progress-task-8f2c"
    assert artifact_key("summary", "task_8f2c") == "video-summary-task-8f2c"
    assert artifact_key("file", "task_8f2c") == "video-file-task-8f2c"

    lossy = {artifact_slug(task_id) for task_id in ("Task_ABC", "task_abc", "task/abc", "x" * 200, "___")}
    assert len(lossy) == 5
    for slug in lossy:
        assert slug and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert len(slug) <= 70 and not slug.startswith("-") and not slug.endswith("-")


def test_short_prompt_is_one_line_and_falls_back_to_shots() -> None:
    assert short_prompt(_job("t", request={"prompt": "two\nlines  here"})) == "two lines here"
    assert short_prompt(_job("t", request={"prompt": "x" * 200}), max_chars=10) == "x" * 9 + "…"
    storyboard = {"multi_prompt": [{"index": 1, "prompt": "Leaving"}, {"index": 2, "prompt": "Arriving"}]}
    assert short_prompt(_job("t", request=storyboard)) == "Leaving / Arriving"
    assert short_prompt(_job("task_9", request={})) == "task_9"


def test_summary_shows_request_next_to_file_and_flags_mismatch(video_file: Path) -> None:
    job = _job("task_md", request={"prompt": "a | b <script>", "aspect_ratio": "1:1", "duration": "5"})
    markdown = summary_markdown(_stored("task_md", video_file), job, poster=b"\xff\xd8jpeg")

    assert "**MISMATCH**" in markdown and "frame 1280x720 is 16:9, requested 1:1" in markdown
    assert "| Frame | 1:1 | 1280x720 |" in markdown
    assert "| Duration | 5 s | 4 s |" in markdown
    assert "h264 / 12 fps" in markdown and "ab" * 32 in markdown and "omni-fast" in markdown
    assert "- **Prompt**: a | b &lt;script&gt;" in markdown and "<script>" not in markdown
    assert "2025-01-02T03:04:05+00:00" in markdown and "| 42 s |" in markdown
    assert "![poster](data:image/jpeg;base64,/9hqcGVn)" in markdown
    assert "https://cdn.example.com/task_md-watermarked.mp4" in markdown and SIGNATURE not in markdown


def test_summary_without_mismatch_has_no_flag(video_file: Path) -> None:
    stored = _stored("task_ok", video_file).model_copy(update={"mismatches": [], "extras": []})
    markdown = summary_markdown(stored, _job("task_ok"))
    assert "MISMATCH" not in markdown and "Further files" not in markdown and "![poster]" not in markdown


def test_redact_url_drops_credentials_from_any_uri() -> None:
    assert redact_url("https://user:pw@host/v.mp4?sig=abc#x") == "https://host/v.mp4"
    assert redact_url("s3://bucket/videos/task_1.mp4") == "s3://bucket/videos/task_1.mp4"
    assert redact_url("/tmp/videos/task_1.mp4") == "/tmp/videos/task_1.mp4"


# -- artifacts on the server -------------------------------------------------


async def test_artifacts_are_recorded_on_the_run(tmp_path: Path, video_file: Path) -> None:
    poster = tmp_path / "task_art.jpg"
    with video_file.open("rb") as file:
        poster.write_bytes(extract_poster(file))
    stored = _stored("task_art", video_file, poster_uri=str(poster))
    running = _job("task_art", status=VideoStatus.RUNNING, progress=40)

    @flow
    async def operate() -> UUID | None:
        artifact_id = await start_progress(_job("task_art", status=VideoStatus.QUEUED, progress=None))
        await update_progress(artifact_id, running)
        await update_progress(artifact_id, _job("task_art", progress=None))  # succeeded -> 100
        await publish_video(stored, _job("task_art"))
        return artifact_id

    artifact_id = await operate()

    async with get_client() as client:
        [progress] = await artifacts_with_key(client, "video-progress-task-art")
        [summary] = await artifacts_with_key(client, "video-summary-task-art")
        [link] = await artifacts_with_key(client, "video-file-task-art")
    assert progress.id == artifact_id and progress.type == "progress" and progress.data == 100
    assert PROMPT in progress.description
    assert summary.type == "markdown" and summary.flow_run_id == progress.flow_run_id
    assert "1280x720" in summary.data and "**MISMATCH**" in summary.data
    assert "![poster](data:image/jpeg;base64," in summary.data
    assert link.data == f"[{video_file}]({video_file.resolve().as_uri()})"  # Prefect links are markdown
    for artifact in (progress, summary, link):
        assert SIGNATURE not in f"{artifact.data} {artifact.description}"


async def test_live_progress_follows_sync_reports_in_order() -> None:
    sent: list[float] = []

    @flow
    async def follow() -> UUID | None:
        progress = await LiveProgress.start(_job("task_live", status=VideoStatus.QUEUED, progress=0))
        original = progress_module.aupdate_progress_artifact

        async def recording(artifact_id: UUID, progress: float) -> UUID:
            sent.append(progress)
            return await original(artifact_id=artifact_id, progress=progress)

        progress_module.aupdate_progress_artifact = recording
        try:
            for percent in (10, 20, 30, 40):  # from a sync callback, as poll_until_terminal calls it
                progress.report(_job("task_live", status=VideoStatus.RUNNING, progress=percent))
            await asyncio.sleep(0)
            progress.report(_job("task_live", status=VideoStatus.RUNNING, progress=50))
            await progress.finish(_job("task_live", progress=None))
        finally:
            progress_module.aupdate_progress_artifact = original
        return progress.artifact_id

    artifact_id = await follow()

    assert sent == sorted(sent) and sent[-1] == 100 and len(sent) < 6  # in order, newest wins
    async with get_client() as client:
        [progress] = await artifacts_with_key(client, "video-progress-task-live")
    assert progress.id == artifact_id and progress.data == 100


async def test_live_progress_without_artifact_does_nothing() -> None:
    progress = LiveProgress(None)
    progress.report(_job("task_none"))
    await progress.finish(_job("task_none"))


async def test_large_posters_are_not_inlined(tmp_path: Path, video_file: Path) -> None:
    poster = tmp_path / "big.jpg"
    poster.write_bytes(b"\xff\xd8" + bytes(MAX_INLINE_POSTER_BYTES))

    @flow
    async def publish() -> None:
        await publish_video(_stored("task_bigposter", video_file, str(poster)), _job("task_bigposter"))

    await publish()
    async with get_client() as client:
        [summary] = await artifacts_with_key(client, "video-summary-task-bigposter")
    assert "![poster]" not in summary.data and "1280x720" in summary.data


async def test_artifact_trouble_never_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, video_file: Path
) -> None:
    async def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("artifact API down")

    for module, name in ((progress_module, "acreate_progress_artifact"),
                         (progress_module, "aupdate_progress_artifact"),
                         (summary_module, "acreate_markdown_artifact"),
                         (summary_module, "acreate_link_artifact")):
        monkeypatch.setattr(module, name, refuse)

    @flow
    async def operate() -> str:
        artifact_id = await start_progress(_job("task_down"))
        await update_progress(UUID(int=1), _job("task_down"))
        await publish_video(_stored("task_down", video_file, "/no/such/poster.jpg"), _job("task_down"))
        return f"done {artifact_id}"

    assert await operate() == "done None"


# -- events on the server ----------------------------------------------------


async def test_events_name_the_job_and_relate_to_the_runs(video_file: Path) -> None:
    job = _job("task_evt", status=VideoStatus.QUEUED, progress=0)
    stored = _stored("task_evt", video_file)

    @task
    async def create_step() -> str:
        emit_video_event("created", job)
        return str(TaskRunContext.get().task_run.id)

    @flow
    async def operate() -> tuple[str, str]:
        task_run_id = await create_step()
        emit_video_event("completed", _job("task_evt"))
        emit_video_event("persisted", _job("task_evt"), stored=stored)
        return str(FlowRunContext.get().flow_run.id), task_run_id

    flow_run_id, task_run_id = await operate()

    names = {"comet.video.created", "comet.video.completed", "comet.video.persisted"}
    async with get_client() as client:
        seen = await wait_for_events(client, video_resource_id(job), names)

    created, persisted = seen["comet.video.created"], seen["comet.video.persisted"]
    assert created.resource.id == "cometapi.video.omni.task_evt"
    assert created.resource["prefect.resource.name"] == PROMPT
    assert created.resource["comet.provider"] == "omni"
    assert created.resource["comet.task-id"] == "task_evt"
    assert created.payload["status"] == "queued"
    assert related_roles(created)["flow-run"] == f"prefect.flow-run.{flow_run_id}"
    assert related_roles(created)["task-run"] == f"prefect.task-run.{task_run_id}"
    assert related_roles(seen["comet.video.completed"])["flow-run"] == f"prefect.flow-run.{flow_run_id}"
    assert persisted.payload["sha256"] == "ab" * 32 and persisted.payload["uri"] == str(video_file)
    assert persisted.payload["mismatches"] == ["frame 1280x720 is 16:9, requested 1:1"]
    assert SIGNATURE not in str(plain(persisted))


async def test_failed_event_carries_the_reason() -> None:
    job = _job("task_fail", status=VideoStatus.FAILED, progress=30, error="content policy")

    @flow
    async def operate() -> None:
        emit_video_event("failed", job)
        emit_video_event("failed", _job("task_fail2"), error="x" * 5000)

    await operate()
    async with get_client() as client:
        seen = await wait_for_events(client, video_resource_id(job), {"comet.video.failed"})
        long = await wait_for_events(client, "cometapi.video.omni.task_fail2", {"comet.video.failed"})
    assert seen["comet.video.failed"].payload == {
        "status": "failed", "raw_status": "completed", "progress": 30,
        "model": "omni-fast", "error": "content policy",
    }
    assert len(long["comet.video.failed"].payload["error"]) == events.MAX_ERROR_CHARS


def test_emitting_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: object) -> None:
        raise RuntimeError("events down")

    monkeypatch.setattr(events, "emit_event", refuse)
    emit_video_event("created", _job("task_quiet"))  # outside any run, with a broken API
